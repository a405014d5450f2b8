"""A fair asyncio rate limiter shared by every poller of one connection."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """At most ``rate`` requests per second, with bursts of up to ``burst``.

    Slots are handed out in call order (a virtual schedule, GCRA), so no caller starves.
    :meth:`pause` (after a 429 with ``Retry-After``) holds back every caller, not only
    the one that was refused.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._interval = 1.0 / rate
        self._tolerance = (max(1.0, burst if burst is not None else rate) - 1.0) * self._interval
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0

    def _reserve(self) -> float:
        """Reserve the next slot; return seconds until it."""
        now = time.monotonic()
        base = max(now, self._paused_until)
        tat = max(self._tat, base)
        self._tat = tat + self._interval
        return max(tat - self._tolerance, base) - now

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        delay = self._reserve()
        while delay > 0:
            paused_until = self._paused_until
            await asyncio.sleep(delay)
            if self._paused_until <= paused_until:
                return
            # A pause began while we slept: our slot is void. Take a new one on the schedule
            # after the pause, so the callers it held back come back at the rate, not at once
            # (sleepers wake in slot order, so they keep their order).
            delay = self._reserve()

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server said so)."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            # Restart the schedule after the pause at the configured rate, without a burst.
            self._tat = max(self._tat, until + self._tolerance)
