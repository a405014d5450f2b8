"""Cancelling what a task owns: the cancel engine, the triggers' on_kill (3.3+), their CancelledError
fallback (3.0-3.2) and cancel at the deadline, against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import importlib
import time
from types import SimpleNamespace
from typing import Any

import pytest
from airflow_helpers import batch_trigger

from airflow_provider_wavespeed._compat import trigger_on_kill_supported
from airflow_provider_wavespeed.api.polling import cancel_unfinished
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers import _cancel
from airflow_provider_wavespeed.triggers._shared_client import shared_pool_stats
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
CANCEL_STATUSES = ["deleted", "cancelled"]  # the emulator's default answer, and the word


def _create(emulator: WaveSpeedEmulator, count: int, prompt: str) -> list[str]:
    return [emulator.state.submit(FLUX, {"prompt": f"{prompt} {n}"}, None).id for n in range(count)]


def _ti(state: str | None) -> SimpleNamespace:
    return SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, state_on_server=state)


def _held(emulator: WaveSpeedEmulator, status: str) -> None:
    emulator.set_cancel_status(status)
    emulator.hold(prompt_contains="slow")


async def _run_until_polled(trigger: Any, emulator: WaveSpeedEmulator, polls: int = 1) -> asyncio.Task[Any]:
    """Run the trigger as the triggerer does (a task), until it has polled ``polls`` times."""

    async def consume() -> list[Any]:
        return [event async for event in trigger.run()]

    task = asyncio.ensure_future(consume())
    deadline = time.monotonic() + 20
    while emulator.counters()["requests"].get("result", 0) < polls:
        assert time.monotonic() < deadline, "the trigger never polled"
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)
    return task


# -- the engine ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", CANCEL_STATUSES)
async def test_cancel_unfinished_cancels_only_what_runs(wavespeed_connection: WaveSpeedEmulator, status: str) -> None:
    _held(wavespeed_connection, status)
    running = _create(wavespeed_connection, 3, "slow")
    done = _create(wavespeed_connection, 2, "slow")
    for prediction_id in done:
        wavespeed_connection.release(prediction_id)
    async with await WaveSpeedHook().aget_client() as client:
        outcome = await cancel_unfinished(client, [*running, *done, "0123456789abcdef0123456789abcdef"])
    assert outcome.cancelled == dict.fromkeys(running, status)
    assert sorted(outcome.finished) == sorted(done) and outcome.gone == ["0123456789abcdef0123456789abcdef"]
    assert outcome.errors == {}
    counters = wavespeed_connection.counters()
    assert counters["cancelled"] == 3 and counters["delete_requests"] == dict.fromkeys(running, 1)
    for prediction_id in done:  # a completed prediction is never sent a DELETE (it would delete its record)
        assert wavespeed_connection.prediction_state(prediction_id)["status"] == "completed"


# -- the single trigger -----------------------------------------------------------------------------


def test_cancel_options_serialize_only_when_set() -> None:
    plain = WaveSpeedTaskTrigger("p1", end_time=1_900_000_000.0)
    assert "cancel_on_kill" not in plain.serialize()[1] and "cancel_on_timeout" not in plain.serialize()[1]
    both = WaveSpeedTaskTrigger("p1", end_time=1_900_000_000.0, cancel_on_kill=True, cancel_on_timeout=True)
    classpath, kwargs = both.serialize()
    assert kwargs["cancel_on_kill"] is True and kwargs["cancel_on_timeout"] is True
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**kwargs) == both
    batch = batch_trigger(["a1"], end_time=1_900_000_000.0)
    assert set(batch.serialize()[1]) == {
        "ids_xcom",
        "count",
        "wavespeed_conn_id",
        "poll_interval",
        "end_time",
        "first_poll_interval",
    }
    assert batch_trigger(["a1"], end_time=1.0, cancel_on_kill=True).serialize()[1]["cancel_on_kill"] is True


@pytest.mark.parametrize("status", CANCEL_STATUSES)
async def test_on_kill_cancels_the_running_prediction_of_a_killed_task(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], status: str
) -> None:
    _held(wavespeed_connection, status)
    (prediction_id,) = _create(wavespeed_connection, 1, "slow")
    trigger = WaveSpeedTaskTrigger(prediction_id, poll_interval=0.2, first_poll_interval=0.05, cancel_on_kill=True)
    trigger.task_instance = _ti("failed")  # type: ignore[assignment]  # marked failed by a user
    task = await _run_until_polled(trigger, wavespeed_connection)
    task.cancel()  # what the triggerer does first; on 3.3+ it then awaits on_kill()
    with pytest.raises(asyncio.CancelledError):
        await task
    if trigger_on_kill_supported():
        assert wavespeed_connection.counters()["cancelled"] == 0  # the fallback leaves it to on_kill
        started = time.monotonic()
        await trigger.on_kill()
        assert time.monotonic() - started < 5
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == status
    assert [c["id"] for c in wavespeed_connection.cancellations()] == [prediction_id]
    assert len(server_state) == 1  # it asked the task instance's state once
    assert shared_pool_stats() == {}


@pytest.mark.parametrize(
    ("ti_state", "cancel_on_kill"),
    [("deferred", True), ("unreadable", True), ("failed", False)],
    ids=["still-deferred", "state-unreadable", "option-off"],
)
async def test_the_fallback_cancels_nothing_unless_the_task_is_known_killed(
    wavespeed_connection: WaveSpeedEmulator,
    server_state: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    ti_state: str,
    cancel_on_kill: bool,
) -> None:
    """Airflow 3.0-3.2 (forced here): a triggerer shutdown leaves the task deferred; then nothing is cancelled."""
    monkeypatch.setattr(_cancel, "trigger_on_kill_supported", lambda: False)
    _held(wavespeed_connection, "deleted")
    (prediction_id,) = _create(wavespeed_connection, 1, "slow")
    trigger = WaveSpeedTaskTrigger(
        prediction_id, poll_interval=0.2, first_poll_interval=0.05, cancel_on_kill=cancel_on_kill
    )
    trigger.task_instance = _ti(ti_state)  # type: ignore[assignment]
    task = await _run_until_polled(trigger, wavespeed_connection)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wavespeed_connection.counters()["delete_requests"] == {}
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == "processing"


async def test_the_fallback_on_old_airflow_cancels_a_killed_task(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cancel, "trigger_on_kill_supported", lambda: False)
    _held(wavespeed_connection, "cancelled")
    (prediction_id,) = _create(wavespeed_connection, 1, "slow")
    trigger = WaveSpeedTaskTrigger(prediction_id, poll_interval=0.2, first_poll_interval=0.05, cancel_on_kill=True)
    trigger.task_instance = _ti("failed")  # type: ignore[assignment]
    task = await _run_until_polled(trigger, wavespeed_connection)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == "cancelled"
    await trigger.on_kill()  # were it called too (3.3), nothing is cancelled twice: it re-reads first
    assert wavespeed_connection.counters()["delete_requests"] == {prediction_id: 1}


async def test_on_kill_of_a_still_deferred_task_or_a_finished_wait_cancels_nothing(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any]
) -> None:
    _held(wavespeed_connection, "deleted")
    (running,) = _create(wavespeed_connection, 1, "slow")
    trigger = WaveSpeedTaskTrigger(running, poll_interval=0.2, first_poll_interval=0.05, cancel_on_kill=True)
    trigger.task_instance = _ti("deferred")  # type: ignore[assignment]  # another triggerer runs it now
    task = await _run_until_polled(trigger, wavespeed_connection)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.on_kill()
    # A wait that ended (its event sent) owns nothing any more.
    (done,) = _create(wavespeed_connection, 1, "slow")
    wavespeed_connection.release(done)
    finished = WaveSpeedTaskTrigger(done, first_poll_interval=0.05, cancel_on_kill=True)
    finished.task_instance = _ti("failed")  # type: ignore[assignment]
    events = [event async for event in finished.run()]
    assert events[0].payload["status"] == "completed"
    await finished.on_kill()
    assert wavespeed_connection.counters()["delete_requests"] == {}
    assert wavespeed_connection.prediction_state(done)["status"] == "completed"


@pytest.mark.parametrize("status", CANCEL_STATUSES)
async def test_the_deadline_cancels_with_cancel_on_timeout(
    wavespeed_connection: WaveSpeedEmulator, status: str
) -> None:
    _held(wavespeed_connection, status)
    kept, cancelled = _create(wavespeed_connection, 2, "slow")
    options: dict[str, Any] = {"poll_interval": 0.1, "first_poll_interval": 0.05}
    (kept_event,) = [e async for e in WaveSpeedTaskTrigger(kept, end_time=time.time() + 0.4, **options).run()]
    assert kept_event.payload["status"] == "deadline" and "it may still finish" in kept_event.payload["message"]
    trigger = WaveSpeedTaskTrigger(cancelled, end_time=time.time() + 0.4, cancel_on_timeout=True, **options)
    (event,) = [e async for e in trigger.run()]
    assert event.payload["status"] == "deadline" and event.payload["cancelled"] == status
    assert f"{cancelled} did not finish before the wait limit and was cancelled" in event.payload["message"]
    assert wavespeed_connection.prediction_state(kept)["status"] == "processing"
    assert wavespeed_connection.counters()["delete_requests"] == {cancelled: 1}


# -- the batch trigger -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", CANCEL_STATUSES)
async def test_batch_on_kill_cancels_its_50_unfinished_predictions_only(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], status: str
) -> None:
    _held(wavespeed_connection, status)
    ids = _create(wavespeed_connection, 50, "slow")
    done = ids[:10]
    for prediction_id in done:
        wavespeed_connection.release(prediction_id)
    other = _create(wavespeed_connection, 1, "slow another task's")
    trigger = batch_trigger(ids, poll_interval=0.2, first_poll_interval=0.05, cancel_on_kill=True)
    trigger.task_instance = _ti("failed")  # type: ignore[assignment]
    task = await _run_until_polled(trigger, wavespeed_connection, polls=50)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.monotonic()
    await trigger.on_kill()  # on 3.0-3.2 the fallback already cancelled: this re-reads and finds them ended
    elapsed = time.monotonic() - started
    counters = wavespeed_connection.counters()
    assert counters["cancelled"] == 40
    assert sorted(counters["delete_requests"]) == sorted(ids[10:])  # never a completed one, never another task's
    assert all(n == 1 for n in counters["delete_requests"].values())
    assert {wavespeed_connection.prediction_state(i)["status"] for i in ids[10:]} == {status}
    assert {wavespeed_connection.prediction_state(i)["status"] for i in done} == {"completed"}
    assert wavespeed_connection.prediction_state(other[0])["status"] == "processing"
    assert elapsed < _cancel.KILL_CANCEL_BUDGET


@pytest.mark.parametrize("status", CANCEL_STATUSES)
async def test_batch_deadline_cancels_the_unfinished_and_counts_them(
    wavespeed_connection: WaveSpeedEmulator, status: str
) -> None:
    _held(wavespeed_connection, status)
    ids = _create(wavespeed_connection, 6, "slow")
    for prediction_id in ids[:2]:
        wavespeed_connection.release(prediction_id)
    trigger = batch_trigger(
        ids, poll_interval=0.1, first_poll_interval=0.05, end_time=time.time() + 0.5, cancel_on_timeout=True
    )
    (event,) = [e async for e in trigger.run()]
    payload = event.payload
    assert payload["status"] == "deadline" and payload["cancelled"] == 4
    assert payload["counts"] == {"completed": 2, "cancelled_at_deadline": 4}
    assert "4 cancelled (cancel_on_timeout)" in payload["message"]
    assert sorted(wavespeed_connection.counters()["delete_requests"]) == sorted(ids[2:])


async def test_the_fallback_decides_to_its_end_though_the_triggerer_cancels_again(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow 3.0-3.2 cancel a trigger's task again while it decides; a state lookup cut off half-way
    # on 3.0 leaves its answer unread on the supervisor channel, and the next reader stops the triggerer.
    import threading

    monkeypatch.setattr(_cancel, "trigger_on_kill_supported", lambda: False)
    looked_up, answer = threading.Event(), threading.Event()

    def slow_lookup(ti: Any) -> str:
        looked_up.set()
        answer.wait(20)
        return "failed"

    monkeypatch.setattr(_cancel, "task_instance_state", slow_lookup)
    _held(wavespeed_connection, "cancelled")
    (prediction_id,) = _create(wavespeed_connection, 1, "slow")
    trigger = WaveSpeedTaskTrigger(prediction_id, poll_interval=0.2, first_poll_interval=0.05, cancel_on_kill=True)
    trigger.task_instance = _ti("failed")  # type: ignore[assignment]
    task = await _run_until_polled(trigger, wavespeed_connection)
    task.cancel()
    while not looked_up.is_set():
        await asyncio.sleep(0.01)
    for _ in range(3):  # as the triggerer's loop does while the task has not ended
        task.cancel()
        await asyncio.sleep(0.05)
    assert not task.done()  # still deciding: the lookup's answer is awaited, not dropped
    answer.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == "cancelled"
    assert wavespeed_connection.counters()["delete_requests"] == {prediction_id: 1}
