"""The WaveSpeed protocol's data: the response envelope and the prediction object."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_wavespeed.api._times import parse_timestamp
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedPredictionFailedError,
    WaveSpeedResponseError,
    body_excerpt,
    error_for_status,
)
from airflow_provider_wavespeed.api.retry import parse_retry_after

if TYPE_CHECKING:
    import pendulum

SUCCESS_STATUS = "completed"
# The official SDK stops polling on all five; only `completed` is a success. `deleted` is what a
# prediction deleted through the API (or the dashboard) answers.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout", "deleted"})
PENDING_STATUSES = frozenset({"created", "processing"})
KNOWN_STATUSES = TERMINAL_STATUSES | PENDING_STATUSES

Output = str | dict[str, Any]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """A WaveSpeed prediction (the API's task object).

    ``code`` is the failure class the API gives a failed prediction (1xxx: the input,
    1200: content moderation; 5xxx: server side), None when it gave none. ``created_at`` is
    the API's timestamp text as sent (it round-trips through XCom); :attr:`created` reads it.
    """

    id: str
    model: str
    status: str
    outputs: list[Output] = field(default_factory=list)
    error: str = ""
    created_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    code: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_success(self) -> bool:
        return self.status == SUCCESS_STATUS

    @property
    def created(self) -> pendulum.DateTime | None:
        """When the API created the prediction (aware), None when it gave no readable timestamp."""
        return parse_timestamp(self.created_at)

    @property
    def is_known_status(self) -> bool:
        """False for a status this client does not know (a newer API): it is treated as still running."""
        return self.status in KNOWN_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (for XCom and trigger events); `from_dict` reads it back."""
        return {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "outputs": list(self.outputs),
            "error": self.error,
            "code": self.code,
            "created_at": self.created_at,
            "timings": dict(self.timings),
            "urls": dict(self.urls),
            "has_nsfw_contents": list(self.has_nsfw_contents),
        }

    @classmethod
    def from_dict(
        cls,
        data: object,
        *,
        status_code: int | None = None,
        raw: bytes | str = b"",
        context: str = "",
        prediction_id: str | None = None,
    ) -> Prediction:
        """Build from the API's ``data`` object: a tolerant reader.

        Strict only on what a result needs: ``id`` and ``status`` (strings), and ``outputs``
        (a list of strings or objects) once ``completed``; a breach raises
        :class:`WaveSpeedResponseError` naming the field and ``context`` (the request, e.g.
        ``"poll of prediction <id>"``), with ``prediction_id`` (the one asked for, else the
        body's own ``id`` when readable). Every optional field may be missing, null or of a
        new shape: what cannot be read is dropped (debug log), so a harmless API change never
        fails a completed generation. Unknown keys are ignored.
        """

        def bad(what: str) -> WaveSpeedResponseError:
            excerpt = body_excerpt(raw) if raw else body_excerpt(repr(data))
            source = f" to the {context}" if context else ""
            own_id = data.get("id") if isinstance(data, Mapping) else None
            return WaveSpeedResponseError(
                f"WaveSpeed returned a malformed prediction{source} (HTTP {status_code}): {what}; body: {excerpt}",
                status_code=status_code,
                excerpt=excerpt,
                prediction_id=prediction_id or (own_id if isinstance(own_id, str) and own_id else None),
            )

        if not isinstance(data, Mapping):
            raise bad(f"'data' is {type(data).__name__}, not an object")
        for name in ("id", "status"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise bad(f"field {name!r} is missing or not a string")
        read_id: str = data["id"]
        status: str = data["status"]

        def dropped(name: str, why: str) -> None:
            _log.debug("WaveSpeed prediction %s: ignoring field %r (%s): %.200r", read_id, name, why, data[name])

        raw_outputs = data.get("outputs")
        if isinstance(raw_outputs, list) and all(isinstance(o, (str, dict)) for o in raw_outputs):
            outputs: list[Output] = list(raw_outputs)
        elif status == SUCCESS_STATUS:
            what = "missing" if raw_outputs is None else "not a list of strings or objects"
            raise bad(f"status is 'completed' but 'outputs' is {what}")
        else:
            outputs = []  # nothing to read before completion: whatever stands there is not a result
            if raw_outputs not in (None, []):
                dropped("outputs", "not a list of strings or objects")
        return cls(
            id=read_id,
            model=_text(data, "model", dropped) or "",
            status=status,
            outputs=outputs,
            error=_error_text(data, dropped),
            code=_code(data, dropped),
            created_at=_timestamp(data, "created_at", dropped),
            timings=_mapping(data, "timings", _number, dropped),
            urls=_mapping(data, "urls", lambda v: v if isinstance(v, str) else None, dropped),
            has_nsfw_contents=_flags(data, dropped),
        )


@dataclass(frozen=True)
class HistoryItem:
    """One entry of the prediction history: the prediction, and the inputs it was submitted with.

    ``input`` is None when the entry carried none (the public docs' example shows no inputs; the
    API's own CLI reads ``input`` or ``inputs``, and so does this).
    """

    prediction: Prediction
    input: dict[str, Any] | None


@dataclass(frozen=True)
class PredictionPage:
    """One page of ``POST /api/v3/predictions``: the account's last 7 days, newest first.

    ``total`` is the number of matching predictions when the API said (None otherwise);
    ``unreadable`` counts entries skipped because they were not a readable prediction, so a
    caller matching entries (adopting one as "the" prediction) knows the page was not whole.
    """

    page: int
    total: int | None
    items: list[HistoryItem]
    unreadable: int = 0

    @classmethod
    def from_dict(cls, data: object, *, page: int, context: str) -> PredictionPage:
        """Read the ``data`` of a history answer; ``items`` must be a list, each entry is read tolerantly."""
        raw_items = data.get("items") if isinstance(data, Mapping) else None
        if raw_items is None and isinstance(data, Mapping) and data.get("total") == 0:
            raw_items = []  # an empty page may come without its list
        if not isinstance(raw_items, list):
            excerpt = body_excerpt(repr(data))
            raise WaveSpeedResponseError(
                f"WaveSpeed {context} returned no 'items' list: {excerpt}", status_code=200, excerpt=excerpt
            )
        items: list[HistoryItem] = []
        unreadable = 0
        for raw in raw_items:
            try:
                prediction = Prediction.from_dict(raw, status_code=200, context=context)
            except WaveSpeedResponseError as exc:
                _log.debug("WaveSpeed %s: skipping an unreadable entry: %s", context, exc)
                unreadable += 1
                continue
            assert isinstance(raw, Mapping)  # from_dict accepted it
            given = raw.get("input", raw.get("inputs"))
            items.append(HistoryItem(prediction, dict(given) if isinstance(given, Mapping) else None))
        total = data.get("total") if isinstance(data, Mapping) else None
        read_page = data.get("page") if isinstance(data, Mapping) else None
        return cls(
            page=read_page if isinstance(read_page, int) and not isinstance(read_page, bool) else page,
            total=total if isinstance(total, int) and not isinstance(total, bool) else None,
            items=items,
            unreadable=unreadable,
        )


# Readers of the optional fields: each returns the usable part and reports the rest to `dropped`.
_Dropped = Callable[[str, str], None]


def _text(data: Mapping[str, Any], name: str, dropped: _Dropped) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    dropped(name, "not a string")
    return None


def _timestamp(data: Mapping[str, Any], name: str, dropped: _Dropped) -> str | None:
    # Kept as sent when readable, dropped (never an error) when not: `created` is then None or right.
    text = _text(data, name, dropped)
    if text is not None and parse_timestamp(text) is None:
        dropped(name, "not an ISO 8601 timestamp")
        return None
    return text


def _error_text(data: Mapping[str, Any], dropped: _Dropped) -> str:
    value = data.get("error")
    if not value:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("message"), str):
        return str(value["message"])  # a structured error of a newer API: its message is the text
    # Still a failure's reason: kept as text rather than lost.
    return json.dumps(value, default=str)[:1000]


def _code(data: Mapping[str, Any], dropped: _Dropped) -> int | None:
    value = data.get("code")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    dropped("code", "not an integer")
    return None


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _mapping(data: Mapping[str, Any], name: str, read: Callable[[object], Any], dropped: _Dropped) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        dropped(name, "not an object")
        return {}
    kept = {str(k): read(v) for k, v in value.items()}
    kept = {k: v for k, v in kept.items() if v is not None}
    if len(kept) != len(value):
        dropped(name, "some values of an unexpected type")
    return kept


def _flags(data: Mapping[str, Any], dropped: _Dropped) -> list[bool]:
    value = data.get("has_nsfw_contents")
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, bool) for v in value):
        return list(value)
    dropped("has_nsfw_contents", "not a list of booleans")
    return []


def _error_for(
    code: int, message: str, *, retry_after: float | None, context: str, auth_hint: str, **facts: Any
) -> WaveSpeedAPIError:
    """Return the error for an HTTP status or envelope code, naming the request (classes: ``error_for_status``).

    ``facts``: ``status_code``, ``excerpt`` and ``prediction_id``, carried by the error as attributes.
    """
    status_code, excerpt = facts["status_code"], facts["excerpt"]
    text = f"WaveSpeed {context} failed with HTTP {status_code}"
    if code != status_code:
        text += f" (API code {code})"
    text += f": {message or excerpt or 'no message'}"
    if code in (401, 403):
        text += f". {auth_hint}"
    if retry_after is not None:
        text += f" (Retry-After: {retry_after:g} s)"
    return error_for_status(code, text, retry_after=retry_after, **facts, code=code, api_message=message or None)


def parse_envelope(
    status_code: int,
    body: bytes,
    *,
    retry_after_header: str | None = None,
    context: str = "request",
    auth_hint: str = "Check the API key (401) or the account's balance and status (403)",
    prediction_id: str | None = None,
) -> Any:
    """Return the ``data`` of a ``{code, message, data}`` envelope, or raise the matching error.

    An envelope whose ``code`` is not 200 is an error even under HTTP 200; a body that is
    not such an envelope (HTML, truncated JSON) is a :class:`WaveSpeedResponseError`,
    except under an HTTP error status, where the status decides. A redirect (3xx, never
    followed) is no answer: an error whatever its body. Every error carries ``status_code``,
    ``code`` (when the body had one) and ``prediction_id`` (the prediction the request
    concerned, as the caller passes it; None for a submit or the balance).
    """

    def facts() -> dict[str, Any]:  # on error only: the excerpt of a large answer is not free
        return {"status_code": status_code, "excerpt": body_excerpt(body), "prediction_id": prediction_id}

    def error(code: int, message: str) -> WaveSpeedAPIError:
        retry_after = parse_retry_after(retry_after_header)
        return _error_for(code, message, retry_after=retry_after, context=context, auth_hint=auth_hint, **facts())

    def malformed(what: str) -> WaveSpeedResponseError:
        known = facts()
        return WaveSpeedResponseError(
            f"WaveSpeed {context} returned {what} (HTTP {status_code}): {known['excerpt']}", **known
        )

    if status_code < 200 or 300 <= status_code < 400:
        # The request went no further than here: whatever the body says, nothing was created or read.
        kind = "a redirect, which is never followed" if status_code >= 300 else "not a final answer"
        raise error_for_status(
            status_code,
            f"WaveSpeed {context} was answered HTTP {status_code}, {kind}: check the connection's "
            "base URL (its scheme, host and path, e.g. https://api.wavespeed.ai)",
            **facts(),
        )
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        if status_code >= 400:
            raise error(status_code, "")
        raise malformed("a body that is not a JSON envelope")
    code = payload.get("code", status_code)
    message = payload.get("message")
    message = message if isinstance(message, str) else ""
    if not isinstance(code, int) or isinstance(code, bool):
        raise malformed("an envelope whose 'code' is not an integer")
    if status_code >= 400 or code != 200:
        raise error(code if status_code < 400 else status_code, message)
    if "data" not in payload:
        raise malformed("an envelope without 'data'")
    return payload["data"]


def ensure_success(prediction: Prediction) -> Prediction:
    """Return a completed prediction; raise for failed, cancelled, timed-out or deleted ones."""
    if prediction.is_terminal and not prediction.is_success:
        raise WaveSpeedPredictionFailedError(
            prediction_id=prediction.id,
            model=prediction.model,
            status=prediction.status,
            error=prediction.error,
            code=prediction.code,
        )
    return prediction
