"""Limiters: a fair concurrency gate, a rate (submissions), and a rate that only a 429 engages (polls).

- :class:`FairSemaphore`: at most N requests in flight, in arrival order (the triggerer's pool).
- :class:`TokenBucket`: at most ``rate`` per second, shared by threads (``acquire_sync``) and
  coroutines (``acquire``) of one process; a 429 pauses it and halves its rate (AIMD). It paces
  submissions: the account tier caps generations started per minute.
- :class:`AdaptiveLimiter`: no limit at all until the API answers 429, then a :class:`TokenBucket`
  at the rate measured before the 429 (halved at once) until it has grown back. It guards polls,
  which no tier limits, so they only slow down when the API itself says so.
"""

from __future__ import annotations

import asyncio
import threading
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
        # Threads of one worker share a bucket (sync submits); uncontended in an event loop.
        self._lock = threading.Lock()

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
        with self._lock:
            return self._reserve_locked()

    def _reserve_locked(self) -> float:
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

    def acquire_sync(self) -> None:
        """Wait for this caller's slot, blocking the thread (the sync client)."""
        delay = self._reserve()
        while delay > 0:
            paused_until = self._paused_until
            time.sleep(delay)
            if self._paused_until <= paused_until:
                return
            delay = self._reserve()  # as in acquire: a pause began while we slept

    def recovered(self) -> bool:
        """Back at the full rate, with no 429 for a recovery period."""
        now = time.monotonic()
        return self._rate >= self.rate and now >= self._paused_until and now >= self._grow_at

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server said so) and halve the rate."""
        with self._lock:
            self._pause_locked(seconds)

    def _pause_locked(self, seconds: float) -> None:
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


class AdaptiveLimiter:
    """No limit until the API answers 429; then the shared pause and AIMD of a :class:`TokenBucket`.

    Result polls are not limited by any tier, so a fixed budget would only delay noticing
    completions. This one measures the rate of the last ``window`` seconds; the first
    :meth:`pause` (a 429's ``Retry-After``) engages a bucket at that rate, which the pause
    halves at once, so every caller backs off together; once the bucket has grown back to the
    measured rate with no 429 for a recovery period, the limiter steps aside again.
    """

    def __init__(self, *, window: float = 10.0, min_rate: float = 1.0) -> None:
        self._window = window
        self._min_rate = min_rate
        self._recent: deque[float] = deque()  # monotonic times of recent requests
        self._bucket: TokenBucket | None = None

    @property
    def engaged(self) -> bool:
        """Whether a 429 has put a rate in force."""
        return self._bucket is not None

    @property
    def current_rate(self) -> float | None:
        """The rate in force, None while unlimited."""
        return self._bucket.current_rate if self._bucket is not None else None

    def _measured_rate(self, now: float) -> float:
        recent = self._recent
        while recent and recent[0] < now - self._window:
            recent.popleft()
        if not recent:
            return self._min_rate
        span = max(1.0, now - recent[0])
        return max(self._min_rate, len(recent) / span)

    async def acquire(self) -> None:
        """Return at once while unlimited; else wait for a slot of the bucket."""
        now = time.monotonic()
        self._recent.append(now)
        if len(self._recent) > 1024 and self._recent[0] < now - self._window:
            self._measured_rate(now)  # prune now and then; the deque stays one window long
        bucket = self._bucket
        if bucket is None:
            return
        if bucket.recovered():
            self._bucket = None
            return
        await bucket.acquire()

    def pause(self, seconds: float) -> None:
        """The API answered 429: engage (at the measured rate, halved) or pause the bucket again."""
        if self._bucket is None:
            self._bucket = TokenBucket(self._measured_rate(time.monotonic()))
        self._bucket.pause(seconds)
