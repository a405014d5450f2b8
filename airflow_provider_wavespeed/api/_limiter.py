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
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol


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


@dataclass
class BucketState:
    """A :class:`TokenBucket`'s state, as a store keeps it (times on the bucket's clock)."""

    tat: float  # theoretical arrival time of the next request (GCRA)
    paused_until: float
    rate: float  # the rate in force: the bucket's rate, or less after a 429
    grow_at: float  # when the rate may next step back up
    written_at: float  # the last change: tells a clock stepped back, or a long-idle budget


class BucketStore(Protocol):
    """Where a :class:`TokenBucket` keeps its state; ``locked()`` gives read-modify-write under a lock.

    ``shared``: the state is shared by processes, so its times are wall-clock (``time.time()``:
    comparable across processes), else monotonic.
    """

    shared: bool

    def locked(self) -> AbstractContextManager[StateCell]: ...


class StateCell:
    """The state read under a store's lock; set ``state`` to write it back."""

    __slots__ = ("state",)

    def __init__(self, state: BucketState | None) -> None:
        self.state = state


class MemoryStore:
    """The state in this process: shared by its threads and coroutines."""

    shared = False

    def __init__(self) -> None:
        self._cell = StateCell(None)
        # Threads of one worker share a bucket (sync submits); uncontended in an event loop.
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[StateCell]:
        with self._lock:
            yield self._cell


class TokenBucket:
    """At most ``rate`` requests per second, with bursts of up to ``burst``.

    Slots are handed out in call order (a virtual schedule, GCRA), so no caller starves.
    :meth:`pause` (after a 429 with ``Retry-After``) holds back every caller, not only
    the one that was refused, and halves the rate: the server's limit is below the budget
    (other clients share the account), so the budget adapts to it. The rate then grows
    back by a twentieth of ``rate`` every ``recovery_seconds`` (AIMD, as TCP does), so
    several processes sharing one limit settle under it instead of each bursting into it.

    The state lives in ``store``: this process's memory by default, or a file every process
    on the host shares (:mod:`._shared_budget`), so the pace, the pauses and the cuts are theirs
    together. ``start_full=False``: a new (or long-idle) bucket has no burst credit yet; it earns
    it while its callers fall behind the schedule, and spends it catching up. ``clock``: for tests.
    """

    #: Seconds between two steps back up towards ``rate`` after a 429 cut it.
    recovery_seconds = 5.0
    #: A state last changed longer ago than this is a new start (full rate, fresh schedule).
    stale_after = 600.0
    #: The longest pause, and the longest schedule past it; a state further ahead is foreign (see :meth:`_load`).
    max_lead = 3600.0

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        store: BucketStore | None = None,
        start_full: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._floor = rate / 32  # a 429 storm slows polling down, never to a stop
        self._burst = max(1.0, burst if burst is not None else rate)
        self._store: BucketStore = store if store is not None else MemoryStore()
        self._start_full = start_full
        self._clock = clock

    @property
    def burst(self) -> float:
        """Requests that may go at once after a lull (at the full rate)."""
        return self._burst

    @property
    def store(self) -> BucketStore:
        """Where the state lives."""
        return self._store

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        # Looked up at each call: tests run this module on a faster clock.
        return time.time() if self._store.shared else time.monotonic()

    def _pace(self, rate: float) -> tuple[float, float]:
        """(interval, tolerance) at ``rate``: the burst shrinks with the rate, a cut must not come back as one."""
        interval = 1.0 / rate
        return interval, (min(self._burst, max(1.0, rate)) - 1.0) * interval

    def _fresh(self, now: float) -> BucketState:
        tat = float("-inf") if self._start_full else now + self._pace(self.rate)[1]
        return BucketState(tat=tat, paused_until=now, rate=self.rate, grow_at=now, written_at=now)

    def _load(self, state: BucketState | None, now: float) -> BucketState:
        """Return the stored state made safe to use at ``now``.

        Changed "in the future": the (wall) clock stepped back since, so the schedule moves back
        with it. Then a state that no bucket of ours could have written is a new start, as if there
        were none: unreadable or infinite times, a rate above ours (foreign) or below the floor a
        429 storm can cut it to, a slot or pause more than ``max_lead`` ahead (a real lead that long
        needs thousands of callers queued, Gold: 180,000 slots an hour), or idle for ``stale_after``
        (no change, no slot and no pause for that long). A torn or foreign file must not stall every
        submit; starting afresh only lets a caller go early, which a 429 corrects (AIMD).
        """
        if state is None:
            return self._fresh(now)
        shift = min(0.0, now - state.written_at)
        limit = now + self.max_lead
        # tat is -inf in a full bucket that has not handed out a slot yet; every other time is finite.
        # A pause is at most max_lead (pause() caps it), and the schedule at most max_lead past it.
        times = (state.paused_until, state.grow_at - self.recovery_seconds, state.written_at)
        if (
            not all(math.isfinite(value) for value in (*times, state.rate))
            or math.isnan(state.tat)
            or state.tat == math.inf
            or not self._floor * (1 - 1e-9) <= state.rate <= self.rate * (1 + 1e-9)
            or max(times) + shift > limit
            or state.tat + shift > limit + self.max_lead
            or now - max(state.written_at, state.tat, state.paused_until) > self.stale_after
        ):
            return self._fresh(now)
        return BucketState(
            tat=state.tat + shift,
            paused_until=state.paused_until + shift,
            rate=state.rate,
            grow_at=state.grow_at + shift,
            written_at=now,
        )

    @property
    def current_rate(self) -> float:
        """The rate in force now: ``rate``, or less after a 429."""
        with self._store.locked() as cell:
            return self._load(cell.state, self._now()).rate

    def _reserve(self) -> float:
        """Reserve the next slot; return seconds until it."""
        return self._reserve_slot()[0]

    def _reserve_slot(self) -> tuple[float, float]:
        """Reserve the next slot: (seconds until it, the pause in force then)."""
        with self._store.locked() as cell:
            now = self._now()
            state = self._load(cell.state, now)
            if state.rate < self.rate and now >= state.grow_at:
                state.rate = min(self.rate, state.rate + self.rate / 20)
                state.grow_at = now + self.recovery_seconds
            interval, tolerance = self._pace(state.rate)
            base = max(now, state.paused_until)
            tat = max(state.tat, base)
            state.tat = tat + interval
            cell.state = state
        delay = max(tat - tolerance, base) - now
        # tat - tolerance can miss `now` by a rounding error (wall-clock times are ~1e9): no wait.
        return (delay if delay > 1e-6 else 0.0), state.paused_until

    def _paused_until(self) -> float:
        with self._store.locked() as cell:
            return self._load(cell.state, self._now()).paused_until

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        delay, paused_until = self._reserve_slot()
        while delay > 0:
            await asyncio.sleep(delay)
            if self._paused_until() <= paused_until:
                return
            # A pause began while we slept: our slot is void. Take a new one on the schedule
            # after the pause, so the callers it held back come back at the rate, not at once
            # (sleepers wake in slot order, so they keep their order).
            delay, paused_until = self._reserve_slot()

    def acquire_sync(self) -> None:
        """Wait for this caller's slot, blocking the thread (the sync client)."""
        delay, paused_until = self._reserve_slot()
        while delay > 0:
            time.sleep(delay)
            if self._paused_until() <= paused_until:
                return
            delay, paused_until = self._reserve_slot()  # as in acquire: a pause began while we slept

    def recovered(self) -> bool:
        """Back at the full rate, with no 429 for a recovery period."""
        with self._store.locked() as cell:
            now = self._now()
            state = self._load(cell.state, now)
        return state.rate >= self.rate and now >= state.paused_until and now >= state.grow_at

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the server said so) and halve the rate."""
        with self._store.locked() as cell:
            now = self._now()
            state = self._load(cell.state, now)
            until = now + min(max(0.0, seconds), self.max_lead)  # longer would read as a foreign state
            if now >= state.paused_until:
                # One cut per pause: the other requests already in flight when the limit was hit
                # get their 429s during it, and say nothing new.
                state.rate = max(self._floor, state.rate / 2)
            if until > state.paused_until:
                state.paused_until = until
                # Restart the schedule after the pause at the (new) rate, without a burst.
                state.tat = max(state.tat, until + self._pace(state.rate)[1])
            state.grow_at = max(state.grow_at, until + self.recovery_seconds)
            cell.state = state


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
        """Engage the bucket after a 429 (at the measured rate, halved), or pause it again."""
        if self._bucket is None:
            self._bucket = TokenBucket(self._measured_rate(time.monotonic()))
        self._bucket.pause(seconds)
