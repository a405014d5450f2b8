"""The WaveSpeed protocol's data: the response envelope and the prediction object."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedAuthError,
    WaveSpeedBadRequestError,
    WaveSpeedNotFoundError,
    WaveSpeedRateLimitError,
    WaveSpeedResponseError,
    WaveSpeedServerError,
    body_excerpt,
)

SUCCESS_STATUS = "completed"
# The official clients stop polling on all four; only `completed` is a success.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout"})
PENDING_STATUSES = frozenset({"created", "processing"})
KNOWN_STATUSES = TERMINAL_STATUSES | PENDING_STATUSES

Output = str | dict[str, Any]


@dataclass(frozen=True)
class Prediction:
    """A WaveSpeed prediction (the API's task object)."""

    id: str
    model: str
    status: str
    outputs: list[Output] = field(default_factory=list)
    error: str = ""
    created_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    has_nsfw_contents: list[bool] = field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_success(self) -> bool:
        return self.status == SUCCESS_STATUS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for XCom and trigger events); `from_dict` reads it back."""
        return {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "outputs": list(self.outputs),
            "error": self.error,
            "created_at": self.created_at,
            "timings": dict(self.timings),
            "urls": dict(self.urls),
            "has_nsfw_contents": list(self.has_nsfw_contents),
        }

    @classmethod
    def from_dict(
        cls, data: object, *, status_code: int | None = None, raw: bytes | str = b"", context: str = ""
    ) -> Prediction:
        """Build from the API's ``data`` object, checking every field's type.

        A missing or mistyped field raises :class:`WaveSpeedResponseError` naming it and
        ``context`` (the request, e.g. ``"poll of prediction <id>"``).
        """

        def bad(what: str) -> WaveSpeedResponseError:
            excerpt = body_excerpt(raw) if raw else body_excerpt(repr(data))
            source = f" to the {context}" if context else ""
            return WaveSpeedResponseError(
                f"WaveSpeed returned a malformed prediction{source} (HTTP {status_code}): {what}; body: {excerpt}",
                status_code=status_code,
                excerpt=excerpt,
            )

        if not isinstance(data, Mapping):
            raise bad(f"'data' is {type(data).__name__}, not an object")
        for name in ("id", "status"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise bad(f"field {name!r} is missing or not a string")
        status = data["status"]
        model = data.get("model", "")
        error = data.get("error") or ""
        created_at = data.get("created_at")
        if not isinstance(model, str):
            raise bad("field 'model' is not a string")
        if not isinstance(error, str):
            raise bad("field 'error' is not a string")
        if created_at is not None and not isinstance(created_at, str):
            raise bad("field 'created_at' is not a string")
        if "outputs" not in data or data["outputs"] is None:
            if status == SUCCESS_STATUS:
                raise bad("status is 'completed' but 'outputs' is missing")
            outputs: list[Output] = []
        elif isinstance(data["outputs"], list) and all(isinstance(o, (str, dict)) for o in data["outputs"]):
            outputs = list(data["outputs"])
        else:
            raise bad("field 'outputs' is not a list of strings or objects")
        timings = data.get("timings") or {}
        if not isinstance(timings, Mapping) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in timings.values()
        ):
            raise bad("field 'timings' is not an object of numbers")
        urls = data.get("urls") or {}
        if not isinstance(urls, Mapping) or not all(isinstance(v, str) for v in urls.values()):
            raise bad("field 'urls' is not an object of strings")
        nsfw = data.get("has_nsfw_contents") or []
        if not isinstance(nsfw, list) or not all(isinstance(v, bool) for v in nsfw):
            raise bad("field 'has_nsfw_contents' is not a list of booleans")
        return cls(
            id=data["id"],
            model=model,
            status=status,
            outputs=outputs,
            error=error,
            created_at=created_at,
            timings=dict(timings),
            urls=dict(urls),
            has_nsfw_contents=list(nsfw),
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; dates are rare and ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _error_for(
    code: int,
    message: str,
    *,
    status_code: int,
    excerpt: str,
    retry_after: float | None,
    context: str,
    auth_hint: str,
) -> WaveSpeedAPIError:
    """Map an HTTP status or envelope code to its error class (the one place this is decided)."""
    text = f"WaveSpeed {context} failed with HTTP {status_code}"
    if code != status_code:
        text += f" (API code {code})"
    text += f": {message or excerpt or 'no message'}"
    if code in (401, 403):
        text += f". {auth_hint}"
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "api_code": code,
        "api_message": message or None,
        "excerpt": excerpt,
    }
    if code in (401, 403):
        return WaveSpeedAuthError(text, **kwargs)
    if code == 400 or code == 422:
        return WaveSpeedBadRequestError(text, **kwargs)
    if code == 404:
        return WaveSpeedNotFoundError(text, **kwargs)
    if code == 429:
        return WaveSpeedRateLimitError(text, retry_after=retry_after, **kwargs)
    if code >= 500:
        return WaveSpeedServerError(text, **kwargs)
    return WaveSpeedAPIError(text, **kwargs)


def parse_envelope(
    status_code: int,
    body: bytes,
    *,
    retry_after_header: str | None = None,
    context: str = "request",
    auth_hint: str = "Check the API key (401) or the account's balance and status (403)",
) -> Any:
    """Return the ``data`` of a ``{code, message, data}`` envelope, or raise the matching error.

    An envelope whose ``code`` is not 200 is an error even under HTTP 200; a body that is
    not such an envelope (HTML, truncated JSON) is a :class:`WaveSpeedResponseError`,
    except under an HTTP error status, where the status decides.
    """
    excerpt = body_excerpt(body)
    retry_after = _retry_after(retry_after_header)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        if status_code >= 400:
            raise _error_for(
                status_code,
                "",
                status_code=status_code,
                excerpt=excerpt,
                retry_after=retry_after,
                context=context,
                auth_hint=auth_hint,
            )
        raise WaveSpeedResponseError(
            f"WaveSpeed {context} returned a body that is not a JSON envelope (HTTP {status_code}): {excerpt}",
            status_code=status_code,
            excerpt=excerpt,
        )
    code = payload.get("code", status_code)
    message = payload.get("message")
    message = message if isinstance(message, str) else ""
    if not isinstance(code, int) or isinstance(code, bool):
        raise WaveSpeedResponseError(
            f"WaveSpeed {context} returned an envelope whose 'code' is not an integer (HTTP {status_code}): {excerpt}",
            status_code=status_code,
            excerpt=excerpt,
        )
    if status_code >= 400 or code != 200:
        error_code = code if status_code < 400 else status_code
        raise _error_for(
            error_code,
            message,
            status_code=status_code,
            excerpt=excerpt,
            retry_after=retry_after,
            context=context,
            auth_hint=auth_hint,
        )
    if "data" not in payload:
        raise WaveSpeedResponseError(
            f"WaveSpeed {context} returned an envelope without 'data' (HTTP {status_code}): {excerpt}",
            status_code=status_code,
            excerpt=excerpt,
        )
    return payload["data"]
