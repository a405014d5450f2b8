"""The WaveSpeed error hierarchy: one class per failure mode, so callers catch what they mean.

```
WaveSpeedError                      .prediction_id: the prediction concerned, None when none is
├── WaveSpeedConfigError            bad settings (connection, base URL, missing API key, webhook secret)
├── WaveSpeedValidationError        bad input, refused before any request
├── WaveSpeedAPIError               the API answered with an error (.status_code, .code)
│   ├── WaveSpeedAuthError          401/403: key or account; never retried
│   ├── WaveSpeedBadRequestError    400: the API's own message; never retried
│   ├── WaveSpeedNotFoundError      404
│   ├── WaveSpeedRateLimitError     429: retried, honouring Retry-After (.retry_after)
│   ├── WaveSpeedServerError        5xx: reads retried with backoff
│   └── WaveSpeedResponseError      a body that is not the documented envelope
├── WaveSpeedTransportError         no HTTP answer: refused, reset, timed out, TLS/protocol garbage
├── WaveSpeedSubmitUncertainError   a submit that may have created a paid task
├── WaveSpeedPredictionFailedError  the prediction ended failed/cancelled/timeout/deleted (.code)
├── WaveSpeedTimeoutError           our own wait limit passed
├── WaveSpeedStorageError           an output could not be written (bad output_path, permissions)
└── WaveSpeedWebhookError           a webhook request refused: answer 4xx, do not act on it
    ├── WaveSpeedWebhookSignatureError  headers missing or no signature matches
    ├── WaveSpeedWebhookTimestampError  timestamp malformed or outside the tolerance (a replay?)
    └── WaveSpeedWebhookPayloadError    signed, but the body is not a prediction
```
The facts a caller may act on are attributes, not only words in the message:
``prediction_id`` (every error; set when the failure concerns one prediction), ``status_code``
(the HTTP status) and ``code`` (the API's envelope or failure code) where the API gave them.
No message ever contains the API key: the client never puts it anywhere but a header.
"""

from __future__ import annotations

from typing import Any

_EXCERPT_CHARS = 200
# Only the start of a body is read for its excerpt: an answer of many MB costs no more than a short one.
_EXCERPT_SOURCE = 1024


def body_excerpt(body: bytes | str) -> str:
    """Return a short, single-line excerpt of a response body's start for error messages (on error only)."""
    head = body[:_EXCERPT_SOURCE]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    text = " ".join(text.split())
    if len(text) > _EXCERPT_CHARS:
        return text[:_EXCERPT_CHARS] + "..."
    return text + "..." if len(body) > _EXCERPT_SOURCE else text


class WaveSpeedError(Exception):
    """Base class of every error raised by this provider.

    ``prediction_id`` names the prediction the failure concerns (a poll's, a wait's, a
    failed prediction's), None when it concerns none or none is known yet.
    """

    def __init__(self, *args: object, prediction_id: str | None = None) -> None:
        super().__init__(*args)
        self.prediction_id = prediction_id


class WaveSpeedConfigError(WaveSpeedError):
    """The client cannot be built: missing API key, unsafe base URL, bad connection extra."""


class WaveSpeedValidationError(WaveSpeedError, ValueError):
    """An argument breaks a rule of the API; raised before any request is sent."""


class WaveSpeedAPIError(WaveSpeedError):
    """The API answered, with an error (HTTP status or envelope code).

    ``status_code`` is the HTTP status; ``code`` the envelope's ``code`` (which may say
    401 or 500 under HTTP 200), or the HTTP status when the body had none; ``api_message``
    the API's own text; ``excerpt`` the start of the body.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: int | None = None,
        api_message: str | None = None,
        excerpt: str | None = None,
        prediction_id: str | None = None,
    ) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.status_code = status_code
        self.code = code
        self.api_message = api_message
        self.excerpt = excerpt


class WaveSpeedAuthError(WaveSpeedAPIError):
    """401 (invalid key) or 403 (account problem such as no balance)."""


class WaveSpeedBadRequestError(WaveSpeedAPIError):
    """400: the inputs were refused by the API."""


class WaveSpeedNotFoundError(WaveSpeedAPIError):
    """404: no such prediction (or model)."""


class WaveSpeedRateLimitError(WaveSpeedAPIError):
    """429: too many requests for the account's tier."""

    def __init__(self, message: str, *, retry_after: float | None = None, **facts: Any) -> None:
        super().__init__(message, **facts)  # status_code, code, api_message, excerpt, prediction_id
        self.retry_after = retry_after


class WaveSpeedServerError(WaveSpeedAPIError):
    """5xx, or an envelope code of 5xx under HTTP 200."""


class WaveSpeedResponseError(WaveSpeedAPIError):
    """A body that is not the documented envelope: HTML, truncated JSON, wrong field types."""


class WaveSpeedTransportError(WaveSpeedError):
    """No HTTP answer at all.

    ``connected`` says whether the request may have reached the server: False only when
    the connection was never established, which is what makes a submit safe to retry.
    """

    def __init__(self, message: str, *, connected: bool, prediction_id: str | None = None) -> None:
        super().__init__(message, prediction_id=prediction_id)
        self.connected = connected


class WaveSpeedSubmitUncertainError(WaveSpeedError):
    """A submit whose outcome is unknown: the API may already have created (and billed) it.

    Its ``prediction_id`` is always None: the id is what the answer would have carried, and
    no readable answer came (find the prediction in the account's history instead).
    """


def failure_advice(status: str, code: int | None) -> str:
    """Say what a prediction's terminal status and failure ``code`` mean, and what to do (the one place)."""
    if status == "deleted":
        return "the prediction was deleted (through the API or the dashboard) before it completed; submit it again"
    if code == 1200:
        return f"content moderation rejected it (code {code}): change the prompt or the input media"
    if code is not None and 1000 <= code < 2000:
        return f"the API refused the input (code {code}): fix the inputs; the same inputs will fail again"
    if code is not None and 5000 <= code < 6000:
        return f"a server-side failure (code {code}): not caused by the inputs; retry later"
    if code is not None:
        return f"failure code {code}"
    return ""


class WaveSpeedPredictionFailedError(WaveSpeedError):
    """The prediction reached a terminal status other than ``completed``.

    ``code`` is the API's failure class when it gave one (1xxx: the input, 1200: content
    moderation; 5xxx: server side, worth retrying later).
    """

    def __init__(self, *, prediction_id: str, model: str, status: str, error: str, code: int | None = None) -> None:
        reason = error or "the API gave no error text"
        message = f"WaveSpeed prediction {prediction_id} ({model}) ended {status!r}: {reason}"
        advice = failure_advice(status, code)
        if advice:
            message += f" ({advice})"
        super().__init__(message, prediction_id=prediction_id)
        self.model = model
        self.status = status
        self.error = error
        self.code = code

    @property
    def is_server_failure(self) -> bool:
        """A confirmed failure on the server's side (5xxx): the same inputs may well succeed later."""
        return self.status == "failed" and self.code is not None and 5000 <= self.code < 6000

    @property
    def is_input_failure(self) -> bool:
        """A failure the inputs caused (1xxx, 1200 moderation): running them again fails again."""
        return self.code is not None and 1000 <= self.code < 2000


class WaveSpeedTimeoutError(WaveSpeedError):
    """Our own wait for a prediction passed its limit (the prediction may still finish).

    ``prediction_id`` names the prediction waited for: wait on it again rather than resubmit.
    """


class WaveSpeedStorageError(WaveSpeedError):
    """An output could not be written: bad ``output_path``, permissions, missing bucket or filesystem."""


class WaveSpeedWebhookError(WaveSpeedError):
    """A webhook request was refused: answer it with 4xx and do not act on it."""


class WaveSpeedWebhookSignatureError(WaveSpeedWebhookError):
    """Headers missing, or no signature matches: not sent by WaveSpeed with this secret, or altered."""


class WaveSpeedWebhookTimestampError(WaveSpeedWebhookError):
    """The signed timestamp is malformed or outside the tolerance: possibly a replay."""


class WaveSpeedWebhookPayloadError(WaveSpeedWebhookError):
    """The signature is valid but the body is not a prediction object."""


def error_for_status(
    status: int, text: str, *, retry_after: float | None = None, from_api: bool = True, **facts: Any
) -> WaveSpeedAPIError:
    """Return the error an HTTP status (or the API's envelope code) stands for: the one mapping.

    ``from_api=False`` for a storage host's answer (an upload's PUT, an output's download): its
    401/403/400 say nothing about the API key or the inputs. ``facts``: ``status_code``, ``code``,
    ``api_message``, ``excerpt``, ``prediction_id``, carried by the error as attributes.
    """
    if status == 429:
        return WaveSpeedRateLimitError(text, retry_after=retry_after, **facts)
    kind = WaveSpeedAPIError
    if from_api and status in (401, 403):
        kind = WaveSpeedAuthError
    elif from_api and status in (400, 422):
        kind = WaveSpeedBadRequestError
    elif status == 404:
        kind = WaveSpeedNotFoundError
    elif status >= 500:
        kind = WaveSpeedServerError
    return kind(text, **facts)
