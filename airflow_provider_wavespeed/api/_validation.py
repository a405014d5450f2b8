"""Input rules checked before any request, so bad DAG input never reaches the API.

Each function returns the value it accepted (normalised) or raises
:class:`WaveSpeedValidationError` naming the value and the rule; settings (the API key, the
base URL) raise :class:`WaveSpeedConfigError` instead: the fix is in the connection, not the DAG.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_wavespeed.api._times import parse_timestamp
from airflow_provider_wavespeed.api.errors import WaveSpeedConfigError, WaveSpeedValidationError

# A model id is a path of two or more segments (`owner/name[/more]`); it is put in the URL
# path as is, so every segment must be plain characters and may not start with a dot.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_MODEL_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})+")
# Prediction ids are hex today; allow any URL-safe token, nothing that can change the path.
_PREDICTION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_MODEL_LEN = 200


def validate_model(model: object) -> str:
    """Accept ``owner/name[/more]`` of letters, digits, ``._-``; no ``..``, ``?``, ``#``, ``%`` or spaces."""
    if not isinstance(model, str):
        raise WaveSpeedValidationError(
            f"model must be a string like 'wavespeed-ai/flux-dev', got {type(model).__name__}: {model!r}"
        )
    if len(model) > _MAX_MODEL_LEN or not _MODEL_RE.fullmatch(model) or ".." in model:
        raise WaveSpeedValidationError(
            f"invalid model id {model!r}: a model id is 'owner/name' with optional further "
            "'/segments' (e.g. 'wavespeed-ai/wan-2.1/t2v-480p'), made of letters, digits, '.', "
            "'_' and '-', with no leading '/', no '..', '?', '#', '%' or whitespace"
        )
    return model


def validate_prediction_id(prediction_id: object) -> str:
    """Accept a URL-safe token (letters, digits, ``_``, ``-``), since it goes into the URL path."""
    if not isinstance(prediction_id, str) or not _PREDICTION_ID_RE.fullmatch(prediction_id):
        shown = prediction_id if isinstance(prediction_id, str) else type(prediction_id).__name__
        raise WaveSpeedValidationError(
            f"invalid prediction id {shown!r}: expected 1-128 letters, digits, '_' or '-' "
            "(the id returned by submit); if it came from XCom, check the task id you pulled from"
        )
    return prediction_id


# Inputs nested deeper than this are refused: no model takes them, and a value that contains
# itself (a cycle) would otherwise never end.
MAX_INPUT_DEPTH = 64


def _json_safe(inputs: Mapping[str, Any]) -> None:
    """Refuse anything in ``inputs`` that JSON cannot carry; iterative, so depth cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(inputs, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if value is None or isinstance(value, (str, bool, int)):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise WaveSpeedValidationError(f"inputs{where} is {value!r}: JSON has no NaN or Infinity")
            continue
        if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_INPUT_DEPTH:
            raise WaveSpeedValidationError(
                f"inputs{where[:200]} is nested deeper than {MAX_INPUT_DEPTH} levels "
                "(or contains itself): model inputs are flat values, lists and small objects"
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise WaveSpeedValidationError(f"inputs{where} has a non-string key {key!r}: JSON keys are strings")
                stack.append((item, f"{where}[{key!r}]", depth + 1))
            continue
        if isinstance(value, (list, tuple)):
            stack.extend((item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value))
            continue
        raise WaveSpeedValidationError(
            f"inputs{where} is a {type(value).__name__} ({value!r:.80}), which is not JSON: "
            "use strings, numbers, booleans, lists and dicts"
        )


def rendered_json(value: object, refusal: Callable[[str], str]) -> object:
    """Parse a templated value that rendered to JSON text; return other values as they are.

    A template renders to text unless the DAG renders native objects. ``refusal(text)`` is the
    :class:`WaveSpeedValidationError`'s message for text that is not JSON (built only then).
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise WaveSpeedValidationError(refusal(value)) from None


def validate_inputs(inputs: object) -> dict[str, Any]:
    """Accept a mapping of JSON values (the model's inputs); a JSON object string is parsed."""
    inputs = rendered_json(
        inputs,
        lambda text: (
            f"inputs must be a dict of the model's inputs (or a JSON object string), got the string {text!r:.120}"
        ),
    )
    if not isinstance(inputs, Mapping):
        raise WaveSpeedValidationError(
            f"inputs must be a dict of the model's inputs, e.g. {{'prompt': '...'}}, got {type(inputs).__name__}"
        )
    _json_safe(inputs)
    return dict(inputs)


def validate_api_key(
    api_key: object,
    credential_source: str,
    *,
    fix: str = "pass the API key of your WaveSpeed account",
    field: str | None = None,
) -> str:
    """Accept a non-empty key (stripped) of visible ASCII characters, which an HTTP header carries as is.

    A missing key, or one with a line break, space, control or non-ASCII character inside, is a
    :class:`WaveSpeedConfigError`, raised before any request: it names where the key was looked
    for, ``fix`` (what to do when it is missing) or ``field`` (where to enter it again), never the value.
    """
    if not isinstance(api_key, str) or not api_key.strip():
        raise WaveSpeedConfigError(f"no WaveSpeed API key in {credential_source}: {fix}")
    key = api_key.strip()
    for position, char in enumerate(key, start=1):
        if "!" <= char <= "~":
            continue
        if len(f"a{char}a".splitlines()) > 1:
            what = "a line break"
        elif char.isspace():
            what = "a space"
        elif char.isprintable():
            what = "a character that is not plain ASCII"
        else:
            what = "a control character"
        raise WaveSpeedConfigError(
            f"the WaveSpeed API key in {credential_source} has {what} at character {position}, which an "
            f"HTTP header cannot carry: enter it again in {field or credential_source} as one line, exactly "
            "as wavespeed.ai shows it"
        )
    return key


def is_loopback_host(host: str) -> bool:
    """Tell whether ``host`` is localhost or a loopback IP address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_url(url: object, what: str) -> tuple[str, str]:
    """Return (scheme, host) of an http(s) URL; https is required unless the host is loopback."""
    if not isinstance(url, str) or not url.strip():
        raise WaveSpeedConfigError(f"{what} must be a URL string, got {url!r}")
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise WaveSpeedConfigError(f"{what} {url!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018  # parsed on access: raises for a port that is not 0-65535
    except ValueError:
        raise WaveSpeedConfigError(f"{what} {url!r} has a port that is not a number from 1 to 65535") from None
    if parts.username or parts.password:
        raise WaveSpeedConfigError(f"{what} must not carry credentials; put the API key in the password field")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise WaveSpeedConfigError(
            f"{what} {url!r} uses plain http to a non-loopback host: the API key would travel in "
            "clear text. Use https (plain http is allowed only for localhost, e.g. the emulator)"
        )
    return parts.scheme, host


def validate_base_url(base_url: object) -> str:
    """Normalise the API base URL: https (or loopback http), no query, no trailing ``/api/v3``."""
    _validate_url(base_url, "base URL")
    assert isinstance(base_url, str)
    parts = urlsplit(base_url.strip())
    if parts.query or parts.fragment:
        raise WaveSpeedConfigError(f"base URL {base_url!r} must not have a query or fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v3"):
        path = path[: -len("/api/v3")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def validate_webhook_url(webhook: object) -> str:
    """Accept an https URL (http only for loopback, for local tests)."""
    try:
        _validate_url(webhook, "webhook URL")
    except WaveSpeedConfigError as exc:
        raise WaveSpeedValidationError(str(exc)) from None
    assert isinstance(webhook, str)
    return webhook.strip()


# The history lists at most 100 per page; its status filter takes the API's status words.
MAX_PAGE_SIZE = 100


def _history_time(value: object, name: str) -> str | None:
    """Write an aware datetime, or ISO 8601 text (no zone: UTC, the API's own), as RFC 3339 UTC text.

    A naive datetime is refused: read as UTC or as local time it could be hours off, and the
    history's time filters are what find a prediction whose submit answer was lost.
    """
    if value is None:
        return None
    if isinstance(value, str):
        parsed = parse_timestamp(value)
        if parsed is None:
            raise WaveSpeedValidationError(f"{name} {value!r} is not an ISO 8601 date-time")
        value = parsed
    if not isinstance(value, datetime.datetime):
        raise WaveSpeedValidationError(f"{name} must be a datetime or ISO 8601 text, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise WaveSpeedValidationError(f"{name} {value!r} has no time zone: pass an aware datetime (e.g. UTC)")
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_history_query(
    *,
    page: object,
    page_size: object,
    model: object = None,
    status: object = None,
    created_after: object = None,
    created_before: object = None,
) -> dict[str, Any]:
    """Build the body of ``POST /api/v3/predictions``: page >= 1, 1 <= page_size <= 100, optional filters."""
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise WaveSpeedValidationError(f"page must be an integer >= 1, got {page!r}")
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise WaveSpeedValidationError(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}, got {page_size!r}")
    body: dict[str, Any] = {"page": page, "page_size": page_size}
    if model is not None:
        body["model"] = validate_model(model)
    if status is not None:
        if not isinstance(status, str) or not status:
            raise WaveSpeedValidationError(f"status must be a status word such as 'completed', got {status!r}")
        body["status"] = status
    for name, value in (("created_after", created_after), ("created_before", created_before)):
        text = _history_time(value, name)
        if text is not None:
            body[name] = text
    return body
