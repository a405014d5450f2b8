"""Verify a WaveSpeed webhook and read its prediction (no Airflow imports).

WaveSpeed POSTs the bare prediction object (no envelope) when a prediction submitted with
``?webhook=<url>`` completes or fails, with three headers:

- ``webhook-id`` and ``webhook-timestamp`` (epoch seconds),
- ``webhook-signature``: ``v3,<hex>``, possibly several separated by spaces (while a secret
  is being rotated), where ``<hex>`` is HMAC-SHA256 over ``"{id}.{timestamp}.{raw body}"``
  keyed with the account's webhook secret minus its ``whsec_`` prefix (used as is).

Use :func:`verify_webhook` in the web handler that receives it, on the raw body bytes
(before any JSON parsing), and answer 2xx only when it returns. A delivery may come more than
once (retries, a replay within the tolerance): act on each ``webhook-id`` once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Mapping

from airflow_provider_wavespeed.api._times import in_words
from airflow_provider_wavespeed.api.defaults import DEFAULT_WEBHOOK_TOLERANCE
from airflow_provider_wavespeed.api.errors import (  # the webhook errors live there; re-exported here
    WaveSpeedConfigError,
    WaveSpeedError,
    WaveSpeedWebhookError,
    WaveSpeedWebhookPayloadError,
    WaveSpeedWebhookSignatureError,
    WaveSpeedWebhookTimestampError,
)
from airflow_provider_wavespeed.api.models import Prediction

__all__ = [
    "SIGNATURE_VERSION",
    "WaveSpeedWebhookError",
    "WaveSpeedWebhookPayloadError",
    "WaveSpeedWebhookSignatureError",
    "WaveSpeedWebhookTimestampError",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_VERSION = "v3"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")  # epoch seconds; 12 digits reach the year 33658


def _key(secret: str) -> bytes:
    if not isinstance(secret, str):
        raise WaveSpeedConfigError(f"the webhook secret must be a string, got {type(secret).__name__}")
    key = secret.strip().removeprefix(SECRET_PREFIX)
    if not key:
        raise WaveSpeedConfigError("the webhook secret is empty: copy it from the WaveSpeed dashboard (whsec_...)")
    return key.encode()


def sign_webhook(body: bytes, webhook_id: str, timestamp: int | str, secret: str) -> str:
    """Return the hex HMAC-SHA256 WaveSpeed puts after ``v3,`` (for sending test webhooks)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return hmac.new(_key(secret), signed, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # HTTP header names are case-insensitive; a plain dict is not
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if value is None or not str(value).strip():
        raise WaveSpeedWebhookSignatureError(
            f"WaveSpeed webhook refused: header {name!r} is missing (expected webhook-id, "
            "webhook-timestamp and webhook-signature; was the request sent by WaveSpeed?)"
        )
    return str(value).strip()


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = DEFAULT_WEBHOOK_TOLERANCE,
    now: float | None = None,
) -> Prediction:
    """Check a webhook's signature and timestamp; return the prediction it carries.

    :param body: The raw request body, exactly as received (a str is UTF-8 encoded).
    :param headers: The request headers (any mapping; names are matched case-insensitively).
    :param secret: The account's webhook secret, with or without its ``whsec_`` prefix.
    :param tolerance: Seconds the timestamp may differ from ``now`` (default 300; finite, >= 0).
    :param now: The current epoch time (for tests); default ``time.time()``.
    :raises WaveSpeedWebhookSignatureError: headers missing or no signature matches.
    :raises WaveSpeedWebhookTimestampError: the timestamp is not 1-12 digits, or too old/new.
    :raises WaveSpeedWebhookError: ``tolerance`` is not a finite number >= 0.
    :raises WaveSpeedWebhookPayloadError: the body is not a prediction object.
    :raises WaveSpeedConfigError: the secret is empty.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        # An infinite (or NaN) tolerance would accept every replay; refuse rather than let it through.
        raise WaveSpeedWebhookError(
            f"WaveSpeed webhook refused: tolerance must be a finite number of seconds >= 0, got {tolerance!r}"
        )
    key = _key(secret)
    raw = body.encode() if isinstance(body, str) else bytes(body)
    webhook_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")

    # Plain ASCII digits of a plausible length: int() would also take signs, underscores, other
    # scripts' digits, and numbers too large to compare with the clock.
    if not _TIMESTAMP_RE.fullmatch(timestamp_text):
        raise WaveSpeedWebhookTimestampError(
            f"WaveSpeed webhook {webhook_id!r} refused: webhook-timestamp {timestamp_text[:40]!r} is not epoch seconds"
        )
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        age = "old" if timestamp < current else "far in the future"
        raise WaveSpeedWebhookTimestampError(
            f"WaveSpeed webhook {webhook_id!r} refused: its timestamp is {in_words(abs(current - timestamp))} {age} "
            f"(tolerance {in_words(tolerance)}); a replayed request, or this server's clock is wrong"
        )

    signed = f"{webhook_id}.{timestamp_text}.".encode() + raw
    expected = hmac.new(key, signed, hashlib.sha256).hexdigest().encode()
    matched = False
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue  # other schemes may sit beside ours; they are not ours to check
        # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
        candidate = value.strip().lower().encode("utf-8", "replace")
        matched |= hmac.compare_digest(expected, candidate)  # no early exit
    if not matched:
        raise WaveSpeedWebhookSignatureError(
            f"WaveSpeed webhook {webhook_id!r} refused: no {SIGNATURE_VERSION} signature matches. Check the webhook "
            "secret (the whsec_... value of the account that submitted the prediction) and that the body is the "
            "raw request body, not re-encoded JSON"
        )

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise WaveSpeedWebhookPayloadError(
            f"WaveSpeed webhook {webhook_id!r} is signed but its body is not JSON: {raw[:80]!r}"
        ) from None
    try:
        return Prediction.from_dict(data, raw=raw)
    except WaveSpeedError as exc:
        raise WaveSpeedWebhookPayloadError(
            f"WaveSpeed webhook {webhook_id!r} is signed but its body is not a prediction: {exc}"
        ) from None
