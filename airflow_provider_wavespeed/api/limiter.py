"""Fair asyncio limiters shared by every poller of one connection: a rate and a concurrency."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType


class FairSemaphore:
    """At most ``size`` holders; waiters are served strictly in arrival order.

    A freed place goes straight to the oldest waiter, so a newcomer never overtakes one
    (``asyncio.Semaphore`` lets it on Python 3.10). A wait costs one future, no task, and
    can time out (:class:`asyncio.TimeoutError`) without ``wait_for``.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, timeout: float | None = None) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        except asyncio.CancelledError:
            # The place may have been handed over just as we were cancelled: pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        """Callers queued now."""
        return sum(not waiter.done() for waiter in self._waiters)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class TokenBucket:
    """At most ``rate`` requests per second, with bursts of up to ``burst``.

    Slots are handed out in call order (a virtual schedule, GCRA), so no caller starves.
    :meth:`pause` (after a 429 with ``Retry-After``) holds back every caller, not only
    the one that was refused, and halves the rate: the server's limit is below the budget
    (other clients share the account), so the budget adapts to it. The rate then grows
    back by a twentieth of ``rate`` every ``recovery_seconds`` (AIMD, as TCP does), so
    several processes sharing one limit settle under it instead of each bursting into it.
    """

    #: Seconds between two steps back up towards ``rate`` after a 429 cut it.
    recovery_seconds = 5.0

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._floor = rate / 32  # a 429 storm slows polling down, never to a stop
        self._burst = max(1.0, burst if burst is not None else rate)
        self._set_rate(rate)
        self._tat = 0.0  # theoretical arrival time of the next request
        self._paused_until = 0.0
        self._grow_at = 0.0

    @property
    def current_rate(self) -> float:
        """The rate in force now: ``rate``, or less after a 429."""
        return self._rate

    def _set_rate(self, rate: float) -> None:
        self._rate = rate
        self._interval = 1.0 / rate
        # The burst shrinks with the rate: a cut rate must not come back as a burst.
        self._tolerance = (min(self._burst, max(1.0, rate)) - 1.0) * self._interval

    def _reserve(self) -> float:
        """Reserve the next slot; return seconds until it."""
        now = time.monotonic()
        if self._rate < self.rate and now >= self._grow_at:
            self._set_rate(min(self.rate, self._rate + self.rate / 20))
            self._grow_at = now + self.recovery_seconds
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
        """Hold every caller back for ``seconds`` (the server said so) and halve the rate."""
        now = time.monotonic()
        until = now + max(0.0, seconds)
        if now >= self._paused_until:
            # One cut per pause: the other requests already in flight when the limit was hit
            # get their 429s during it, and say nothing new.
            self._set_rate(max(self._floor, self._rate / 2))
        if until > self._paused_until:
            self._paused_until = until
            # Restart the schedule after the pause at the (new) rate, without a burst.
            self._tat = max(self._tat, until + self._tolerance)
        self._grow_at = max(self._grow_at, until + self.recovery_seconds)
