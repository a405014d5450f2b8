"""When to retry a request and how long to wait: decided here, used by the sync and async clients.

Rules:
- 400/401/403/404 and malformed bodies are permanent: never retried.
- 429 is retried after ``Retry-After`` when sent, else after the backoff delay, and with
  more patience than other errors (``rate_limit_retries``): nothing was created, and a
  worker's submit must outlast a busy minute, not fail it. A ``Retry-After`` longer than
  ``retry_after_max`` gives up at once, and no request waits more than ``total_wait_max``
  between its attempts in all.
- 5xx, resets and timeouts are retried for reads with jittered exponential backoff.
- A submit (a non-idempotent POST) is retried only when the request cannot have created
  a task: after a 429, or when the connection was never established. Any other failure
  after the request may have reached the server becomes
  :class:`WaveSpeedSubmitUncertainError`, because a blind retry could pay twice; so does an
  answer under HTTP 2xx whose envelope code is not a refusal we know (:func:`may_have_created`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT_RETRIES,
    DEFAULT_RETRY_AFTER_MAX,
    DEFAULT_TOTAL_WAIT_MAX,
)
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedAuthError,
    WaveSpeedBadRequestError,
    WaveSpeedError,
    WaveSpeedNotFoundError,
    WaveSpeedRateLimitError,
    WaveSpeedServerError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTransportError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff for one request."""

    max_retries: int = DEFAULT_MAX_RETRIES
    # 429s are counted apart: about 45-90 s of growing waits before giving up.
    rate_limit_retries: int = DEFAULT_RATE_LIMIT_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    # Longest Retry-After we obey; past it we give up and let the caller decide.
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    # The most one request waits between its attempts, all waits together; past it we give up.
    total_wait_max: float = DEFAULT_TOTAL_WAIT_MAX

    def is_transient(self, exc: WaveSpeedError, *, idempotent: bool) -> bool:
        """Whether ``exc`` may be retried for a request of this kind."""
        if isinstance(exc, WaveSpeedRateLimitError):
            return True
        if isinstance(exc, WaveSpeedTransportError):
            return idempotent or not exc.connected
        if isinstance(exc, WaveSpeedServerError):
            return idempotent
        return False

    def delay(self, attempt: int, exc: WaveSpeedError | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        backoff = random.uniform(ceiling / 2, ceiling)  # "equal jitter": never near zero
        if isinstance(exc, WaveSpeedRateLimitError) and exc.retry_after is not None:
            # Never sooner than asked; but a crowd told "1 s" again and again (workers, each with
            # its own budget) backs off further, and a little jitter keeps it from one burst.
            return max(min(exc.retry_after, self.retry_after_max), backoff) + random.uniform(0, 0.25)
        return backoff

    def server_wait(self, exc: WaveSpeedError) -> float:
        """Seconds the server asked us to wait (``Retry-After`` of a 429), 0 when it did not.

        Pollers use it as the floor of their next wait once a request's own retries are spent.
        """
        if isinstance(exc, WaveSpeedRateLimitError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_max)
        return 0.0

    def next_delay(
        self, attempt: int, exc: WaveSpeedError, *, idempotent: bool, what: str, waited: float = 0.0
    ) -> float:
        """Return the wait before retry ``attempt``, or raise ``exc`` when it is final.

        ``waited``: the seconds this request has already waited between its attempts. It is final
        when retries are spent, when it is not transient, when the server asks for a longer wait
        than ``retry_after_max``, or when this wait would take the total past ``total_wait_max``.
        A submit that failed after it may have reached the server raises
        :class:`WaveSpeedSubmitUncertainError` instead of ``exc``.
        """
        limit = self.rate_limit_retries if isinstance(exc, WaveSpeedRateLimitError) else self.max_retries
        if attempt <= limit and self.is_transient(exc, idempotent=idempotent):
            asked = exc.retry_after if isinstance(exc, WaveSpeedRateLimitError) else None
            delay = self.delay(attempt, exc)
            if (asked is None or asked <= self.retry_after_max) and waited + delay <= self.total_wait_max:
                return delay
        if not idempotent and may_have_created(exc):
            raise submit_uncertain(what, exc) from exc
        raise exc


def submit_uncertain(what: str, exc: WaveSpeedError) -> WaveSpeedSubmitUncertainError:
    """Return the error for a submit whose outcome is unknown (``exc`` says why)."""
    return WaveSpeedSubmitUncertainError(
        f"WaveSpeed {what}: the outcome is unknown ({exc}). The request may have reached "
        "the API and created a paid prediction, so it was not repeated automatically. "
        "Check your recent predictions (WaveSpeed dashboard or history) before re-running, "
        "or a second prediction may be created and billed."
    )


# Envelope codes that say the API refused a request (under HTTP 200 as under their own status).
_REFUSALS = (WaveSpeedAuthError, WaveSpeedBadRequestError, WaveSpeedNotFoundError, WaveSpeedRateLimitError)


def may_have_created(exc: WaveSpeedError) -> bool:
    """Whether a failed submit may still have created the prediction.

    Yes after a transport failure once connected, a 5xx, and any answer under HTTP 2xx (or
    none read) but a known refusal: the API accepted the request, and an envelope code or a
    body we cannot read (a 201, a 202, a truncated body) is no proof that nothing was created.
    An HTTP 3xx or 4xx status, and a failure before any byte was sent, created nothing.
    """
    if isinstance(exc, WaveSpeedTransportError):
        return exc.connected
    if isinstance(exc, WaveSpeedServerError):
        return True
    if isinstance(exc, WaveSpeedAPIError):
        accepted = exc.status_code is None or 200 <= exc.status_code < 300
        return accepted and not isinstance(exc, _REFUSALS)
    return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110).

    None when the header is missing or unreadable; never negative (a date in the past is 0).
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT; a zone-less one means the same
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN: unreadable
