"""The WaveSpeed error hierarchy: one class per failure mode, so callers catch what they mean.

```
WaveSpeedError
├── WaveSpeedConfigError            bad settings (connection, base URL, missing key)
├── WaveSpeedValidationError        bad input, refused before any request
├── WaveSpeedAPIError               the API answered with an error
│   ├── WaveSpeedAuthError          401/403: key or account; never retried
│   ├── WaveSpeedBadRequestError    400: the API's own message; never retried
│   ├── WaveSpeedNotFoundError      404
│   ├── WaveSpeedRateLimitError     429: retried, honouring Retry-After
│   ├── WaveSpeedServerError        5xx: reads retried with backoff
│   └── WaveSpeedResponseError      a body that is not the documented envelope
├── WaveSpeedTransportError         no HTTP answer: refused, reset, timed out, TLS/protocol garbage
├── WaveSpeedSubmitUncertainError   a submit that may have created a paid task
├── WaveSpeedPredictionFailedError  the prediction ended failed/cancelled/timeout/deleted (.code)
└── WaveSpeedTimeoutError           our own wait limit passed
```
No message ever contains the API key: the client never puts it anywhere but a header.
"""

from __future__ import annotations

_EXCERPT_CHARS = 200


def body_excerpt(body: bytes | str) -> str:
    """A short, single-line excerpt of a response body for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


class WaveSpeedError(Exception):
    """Base class of every error raised by this provider."""


class WaveSpeedConfigError(WaveSpeedError):
    """The client cannot be built: missing API key, unsafe base URL, bad connection extra."""


class WaveSpeedValidationError(WaveSpeedError, ValueError):
    """An argument breaks a rule of the API; raised before any request is sent."""


class WaveSpeedAPIError(WaveSpeedError):
    """The API answered, with an error (HTTP status or envelope code)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        api_code: int | None = None,
        api_message: str | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.api_code = api_code
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

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
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

    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.connected = connected


class WaveSpeedSubmitUncertainError(WaveSpeedError):
    """A submit whose outcome is unknown: the API may already have created (and billed) it."""


def failure_advice(status: str, code: int | None) -> str:
    """What a prediction's terminal status and failure ``code`` mean, and what to do (the one place)."""
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
        super().__init__(message)
        self.prediction_id = prediction_id
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
    """Our own wait for a prediction passed its limit (the prediction may still finish)."""
