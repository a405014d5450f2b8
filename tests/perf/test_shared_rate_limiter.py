"""TokenBucket: the request budget shared by every trigger of a connection."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_wavespeed.api import _limiter as limiter_module
from airflow_provider_wavespeed.api._limiter import FairSemaphore, TokenBucket


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_slots_follow_the_rate_in_call_order(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(limiter_module.time, "monotonic", clock)
    bucket = TokenBucket(10, burst=2)
    delays = [bucket._reserve() for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])  # a burst of 2, then 10 per second


def test_a_pause_moves_the_schedule_after_it_without_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(limiter_module.time, "monotonic", clock)
    bucket = TokenBucket(10, burst=5)
    bucket.pause(2.0)
    delays = [bucket._reserve() for _ in range(3)]
    assert delays == pytest.approx([2.0, 2.2, 2.4])  # no burst when the pause ends, at half the rate


def test_a_429_halves_the_rate_once_per_pause_then_it_grows_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(limiter_module.time, "monotonic", clock)
    bucket = TokenBucket(8)
    bucket.pause(1.0)
    bucket.pause(1.0)  # another request of the same burst refused: no second cut
    assert bucket.current_rate == 4
    clock.now += 1.5
    bucket.pause(1.0)  # refused again after the pause: the limit is lower still
    assert bucket.current_rate == 2
    for _ in range(10):
        bucket.pause(1.0)
        clock.now += 1.5
    assert bucket.current_rate == pytest.approx(8 / 32)  # a storm slows polling, never stops it
    # No 429 for a while: one step of rate / 20 per recovery period, up to the budget and no further.
    clock.now += 1.0 + TokenBucket.recovery_seconds
    bucket._reserve()
    assert bucket.current_rate == pytest.approx(8 / 32 + 8 / 20)
    bucket._reserve()  # within the same period: no second step
    assert bucket.current_rate == pytest.approx(8 / 32 + 8 / 20)
    for _ in range(40):
        clock.now += TokenBucket.recovery_seconds
        bucket._reserve()
    assert bucket.current_rate == 8


async def test_callers_proceed_in_the_order_they_asked() -> None:
    # Slots 50 ms apart: far more than a loaded machine's scheduling jitter between two callers.
    bucket = TokenBucket(20, burst=1)
    order: list[int] = []

    async def caller(index: int) -> None:
        await bucket.acquire()
        order.append(index)

    await asyncio.gather(*(caller(index) for index in range(12)))
    assert order == list(range(12))


async def test_a_pause_during_the_wait_holds_sleepers_back_and_keeps_their_order() -> None:
    bucket = TokenBucket(50, burst=1)
    loop = asyncio.get_running_loop()
    released: list[tuple[int, float]] = []

    async def caller(index: int) -> None:
        await bucket.acquire()
        released.append((index, loop.time()))

    tasks = [asyncio.create_task(caller(index)) for index in range(10)]
    await asyncio.sleep(0.05)  # a few got through; the rest sleep towards their slots
    paused_at = loop.time()
    bucket.pause(0.5)
    await asyncio.gather(*tasks)
    held = [(index, at) for index, at in released if at > paused_at]
    assert held, "some callers were still waiting when the pause began"
    assert all(at >= paused_at + 0.5 for _, at in held)  # none went before the pause ended
    assert [index for index, _ in released] == list(range(10))  # and the order was kept
    # After the pause they come back one slot (20 ms) apart, not all at once.
    assert held[-1][1] - held[0][1] >= 0.02 * (len(held) - 1) * 0.9


async def test_fair_semaphore_serves_waiters_in_order_and_never_lets_a_newcomer_overtake() -> None:
    gate = FairSemaphore(2)
    order: list[int] = []
    release = asyncio.Event()

    async def holder(index: int) -> None:
        async with gate:
            order.append(index)
            await release.wait()

    tasks = [asyncio.create_task(holder(index)) for index in range(6)]
    await asyncio.sleep(0.01)
    assert order == [0, 1] and gate.waiting == 4
    release.set()
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    # Free again: two places, taken at once.
    await gate.acquire()
    await gate.acquire()
    assert gate.waiting == 0


async def test_fair_semaphore_wait_can_time_out_and_a_cancelled_waiter_passes_its_place_on() -> None:
    gate = FairSemaphore(1)
    await gate.acquire()
    with pytest.raises(asyncio.TimeoutError):
        await gate.acquire(timeout=0.05)
    cancelled = asyncio.create_task(gate.acquire())
    behind = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    gate.release()  # handed to `cancelled`...
    cancelled.cancel()  # ...which is cancelled before it runs: the place must reach `behind`
    await asyncio.wait_for(behind, 1.0)
    assert cancelled.cancelled()
