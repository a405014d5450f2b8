"""Times as the provider handles them, with pendulum: the API's timestamps, deadlines, durations in words.

Elapsed time is measured with ``time.monotonic()`` where it is measured; this module is for
times that are shown to people or cross a process boundary (an absolute deadline).
"""

from __future__ import annotations

import pendulum


def parse_timestamp(value: object) -> pendulum.DateTime | None:
    """Parse the API's timestamp (ISO 8601, e.g. ``created_at``) as an aware datetime; None when unreadable.

    Tolerant on purpose: a timestamp of a new shape must never fail a completed prediction.
    A timestamp without a zone is read as UTC (what the API uses).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        # exact: a bare date, a time of day or a duration stays what it is (none is an instant).
        parsed = pendulum.parse(value.strip(), exact=True)
    except (ValueError, TypeError, OverflowError):
        return None
    return parsed if isinstance(parsed, pendulum.DateTime) else None


def in_words(seconds: float) -> str:
    """Write a duration for messages: ``30 minutes``, ``1 minute 30 seconds``; under a second, ``0.25 seconds``."""
    if seconds < 1:
        return f"{max(seconds, 0.0):.2g} seconds"
    return str(pendulum.duration(seconds=round(seconds)).in_words())


def deadline_after(seconds: float) -> pendulum.DateTime:
    """Return the aware UTC instant ``seconds`` from now: an absolute deadline survives a move to another process."""
    return pendulum.now("UTC").add(seconds=seconds)


def utc_text(epoch: float | None = None) -> str:
    """Write an instant for messages and logs, ``2026-01-31 12:00:00 UTC`` (now when ``epoch`` is None)."""
    instant = pendulum.now("UTC") if epoch is None else pendulum.from_timestamp(epoch, tz="UTC")
    return instant.format("YYYY-MM-DD HH:mm:ss zz")
