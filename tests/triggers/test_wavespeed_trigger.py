"""WaveSpeedTaskTrigger against the emulator over loopback HTTP, in real event loops."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import itertools
import json
import logging
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_wavespeed._events import MAX_OUTPUTS_BYTES
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator, _media
from airflow_provider_wavespeed.triggers._shared_client import (
    _acquire,
    _release,
    shared_pool_stats,
)
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
CONN_ID = "wavespeed_default"


def _submit(inputs: dict[str, Any] | None = None) -> str:
    """Create a prediction through the sync hook (the trigger itself never submits)."""
    return WaveSpeedHook().submit(FLUX, inputs or {"prompt": "a lighthouse"}).id


def _trigger(prediction_id: str, *, wait: float = 30.0, **kwargs: Any) -> WaveSpeedTaskTrigger:
    options: dict[str, Any] = {"poll_interval": 0.2, "first_poll_interval": 0.1, "end_time": time.time() + wait}
    return WaveSpeedTaskTrigger(prediction_id=prediction_id, **{**options, **kwargs})


async def _events(trigger: WaveSpeedTaskTrigger) -> list[TriggerEvent]:
    """Every event the trigger yields before its generator ends."""
    return [event async for event in trigger.run()]


def _statuses(emulator: WaveSpeedEmulator, endpoint: str = "result") -> list[int]:
    return [status for _, name, status in emulator.request_log() if name == endpoint]


def test_serialize_round_trips_to_an_equal_trigger() -> None:
    trigger = WaveSpeedTaskTrigger(
        "abc123", "ws_other", poll_interval=3, end_time=1_900_000_000.5, first_poll_interval=2
    )
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)  # what the triggerer does
    assert type(rebuilt) is WaveSpeedTaskTrigger
    assert rebuilt == trigger and rebuilt.serialize() == (classpath, kwargs)
    assert kwargs == {
        "prediction_id": "abc123",
        "wavespeed_conn_id": "ws_other",
        "poll_interval": 3.0,
        "end_time": 1_900_000_000.5,
        "first_poll_interval": 2.0,
    }
    assert rebuilt != WaveSpeedTaskTrigger("abc123", "ws_other", poll_interval=3, end_time=1_900_000_001)


def test_serialized_kwargs_are_primitives_and_never_hold_the_key(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-trigger-kwargs-audit-7f3a9c"
    wavespeed_emulator.set_api_key(key)
    conn = {"conn_type": "wavespeed", "host": wavespeed_emulator.url, "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(conn))
    trigger = _trigger(_submit())
    _, kwargs = trigger.serialize()
    assert all(type(value) in (str, float) for value in kwargs.values())
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON round trip: nothing needs a custom encoder
    assert key not in json.dumps(kwargs) and key not in repr(trigger)


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "timeout"])
async def test_each_terminal_status_ends_in_exactly_one_event(
    wavespeed_connection: WaveSpeedEmulator, status: str
) -> None:
    wavespeed_connection.hold(polls=1)  # one "processing" answer, then the outcome
    if status != "completed":
        wavespeed_connection.set_outcome(status, error=f"emulated {status}: the GPU gave up")
    prediction_id = _submit()
    events = await _events(_trigger(prediction_id))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == status and payload["prediction_id"] == prediction_id
    assert wavespeed_connection.prediction_state(prediction_id)["polls"] == 2
    prediction = payload["prediction"]
    assert prediction["id"] == prediction_id and prediction["status"] == status
    if status == "completed":
        assert prediction["outputs"] and all(url.startswith(wavespeed_connection.url) for url in prediction["outputs"])
        assert "outputs_omitted_bytes" not in payload
    else:
        assert prediction["error"] == f"emulated {status}: the GPU gave up"
    json.dumps(payload)  # events are stored in the metadata database as JSON


async def test_transient_errors_while_polling_are_survived(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0)  # finished, so the first answered poll is the last
    prediction_id = _submit()
    # Faults are used in the order they were added: a 429 storm, then 503 gateway pages, then resets.
    wavespeed_connection.add_fault("result", "rate_limit", times=3, retry_after=1)
    wavespeed_connection.add_fault("result", "http_error", status=503, times=2)
    wavespeed_connection.add_fault("result", "drop", times=2)
    events = await _events(_trigger(prediction_id))
    assert [event.payload["status"] for event in events] == ["completed"]
    assert events[0].payload["prediction"]["outputs"]
    assert _statuses(wavespeed_connection) == [429, 429, 429, 503, 503, 0, 0, 200]


async def test_retry_after_is_honoured_through_a_429_storm(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0)  # finished, so the first answered poll is the last
    prediction_id = _submit()
    wavespeed_connection.add_fault("result", "rate_limit", times=4, retry_after=1)
    events = await _events(_trigger(prediction_id))
    assert [event.payload["status"] for event in events] == ["completed"]
    log = [(at, status) for at, name, status in wavespeed_connection.request_log() if name == "result"]
    assert [status for _, status in log] == [429, 429, 429, 429, 200]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(log)]
    # Every request after a 429 waits the second the server asked for (minus scheduling slack).
    assert min(gaps) >= 0.95, gaps


async def test_wrong_key_ends_at_once_naming_the_connection(wavespeed_connection: WaveSpeedEmulator) -> None:
    prediction_id = _submit()
    wavespeed_connection.set_api_key("a-key-the-connection-does-not-have")
    before = wavespeed_connection.counters()["requests"]
    events = await _events(_trigger(prediction_id, poll_interval=0.1))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error" and payload["prediction_id"] == prediction_id
    assert "401" in payload["message"] and f"Airflow connection {CONN_ID!r}" in payload["message"]
    after = wavespeed_connection.counters()["requests"]
    assert after.get("result", 0) - before.get("result", 0) == 1  # no retry storm against a bad key


async def test_unknown_prediction_is_an_error_event(wavespeed_connection: WaveSpeedEmulator) -> None:
    events = await _events(_trigger("0123456789abcdef0123456789abcdef"))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error" and payload["prediction_id"] == "0123456789abcdef0123456789abcdef"
    assert "404" in payload["message"] and "0123456789abcdef0123456789abcdef" in payload["message"]
    assert _statuses(wavespeed_connection) == [404]


async def test_missing_credentials_are_an_error_event(wavespeed_emulator: WaveSpeedEmulator) -> None:
    events = await _events(_trigger("abc", wavespeed_conn_id="ws_missing"))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error" and "ws_missing" in payload["message"]
    assert wavespeed_emulator.counters()["total_requests"] == 0
    assert shared_pool_stats() == {}


async def test_end_time_in_the_past_is_a_deadline_without_any_poll(wavespeed_connection: WaveSpeedEmulator) -> None:
    prediction_id = _submit()
    events = await _events(_trigger(prediction_id, end_time=time.time() - 5))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "deadline" and prediction_id in payload["message"]
    assert "result" not in wavespeed_connection.counters()["requests"]


async def test_short_end_time_is_a_deadline_while_the_prediction_runs(
    wavespeed_connection: WaveSpeedEmulator,
) -> None:
    wavespeed_connection.hold()  # running past the deadline, however slow the machine
    prediction_id = _submit()
    started = time.time()
    events = await _events(_trigger(prediction_id, wait=0.6))
    assert [event.payload["status"] for event in events] == ["deadline"]
    assert "may still finish" in events[0].payload["message"]
    assert time.time() - started >= 0.55
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == "processing"
    assert wavespeed_connection.prediction_state(prediction_id)["polls"] >= 1


async def test_a_resumed_trigger_keeps_its_deadline_and_never_submits(
    wavespeed_connection: WaveSpeedEmulator,
) -> None:
    wavespeed_connection.set_duration(0.4)
    prediction_id = _submit()
    original = _trigger(prediction_id, wait=20)
    _, kwargs = original.serialize()
    await asyncio.sleep(0.2)  # "another triggerer" picks it up later: the deadline must not move
    resumed = WaveSpeedTaskTrigger(**kwargs)
    assert resumed.end_time == original.end_time
    submissions_before = wavespeed_connection.counters()["submissions"]
    events = await _events(resumed)
    assert [event.payload["status"] for event in events] == ["completed"]
    counters = wavespeed_connection.counters()
    assert counters["submissions"] == submissions_before == {FLUX: 1}
    assert counters["requests"]["submit"] == 1  # only the test's own submit


async def test_triggers_of_one_connection_share_one_client(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold()  # all twenty still waiting when the last one starts
    ids = [_submit({"prompt": f"prompt {n}"}) for n in range(20)]
    seen: list[dict[str, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(shared_pool_stats())
            if seen[-1] == {CONN_ID: 20}:
                wavespeed_connection.release()
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(_events(_trigger(pid)) for pid in ids))
    done.set()
    await watcher
    assert [[event.payload["status"] for event in events] for events in results] == [["completed"]] * 20
    assert {"wavespeed_default": 20} in seen  # one shared client, used by all 20 at once
    assert all(set(stats) <= {CONN_ID} for stats in seen)
    assert shared_pool_stats() == {}  # the last trigger closed it


async def test_acquire_returns_the_same_client_until_released(wavespeed_connection: WaveSpeedEmulator) -> None:
    first = await _acquire(CONN_ID)
    second = await _acquire(CONN_ID)
    assert first is second and shared_pool_stats() == {CONN_ID: 2}
    await _release(CONN_ID)
    assert shared_pool_stats() == {CONN_ID: 1}
    await _release(CONN_ID)
    assert shared_pool_stats() == {}
    assert await _acquire(CONN_ID) is not first  # a fresh pool after the last release
    await _release(CONN_ID)


async def test_large_base64_outputs_are_left_out_of_the_event(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator's outputs are tiny; make each one 48 KiB so four of them, as base64, pass the limit.
    monkeypatch.setattr(_media, "output_bytes", lambda pid, *_: hashlib.sha256(pid.encode()).digest() * 1536)
    wavespeed_connection.set_duration(0.2)
    prediction_id = _submit({"prompt": "big", "num_images": 4, "enable_base64_output": True})
    events = await _events(_trigger(prediction_id))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "completed" and payload["prediction"]["outputs"] == []
    real_size = len(json.dumps(WaveSpeedHook().get_prediction(prediction_id).outputs))
    assert payload["outputs_omitted_bytes"] == real_size > MAX_OUTPUTS_BYTES
    assert len(json.dumps(payload)) < 4096


def test_run_does_no_blocking_io_on_the_event_loop(
    wavespeed_connection: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Each poll takes 0.5 s at the server: blocking I/O would hold one loop step that long.

    A blocking poll holds one step for at least 0.5 s; the 0.4 s threshold leaves a busy machine room.
    """
    wavespeed_connection.set_duration(0)
    asyncio.run(_events(_trigger(_submit())))  # warm-up: one-off imports are not what we measure
    wavespeed_connection.hold(polls=2)  # three slow polls: two "processing", then "completed"
    prediction_id = _submit()
    wavespeed_connection.add_fault("result", "slow", delay=0.5, times=None)

    async def watched() -> list[TriggerEvent]:
        asyncio.get_running_loop().slow_callback_duration = 0.4
        return await _events(_trigger(prediction_id))

    caplog.set_level(logging.WARNING, logger="asyncio")
    events = asyncio.run(watched(), debug=True)
    assert [event.payload["status"] for event in events] == ["completed"]
    assert wavespeed_connection.prediction_state(prediction_id)["polls"] == 3  # several slow polls happened
    slow_steps = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert slow_steps == []


async def test_an_unexpected_exception_is_one_retryable_error_event_naming_the_prediction(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll answered with JSON nested deeper than the recursion limit raises RecursionError (no
    WaveSpeed error): the trigger ends with an event its task understands instead of raising, which
    Airflow would turn into a bare TaskDeferralError."""
    from nesting_proxy import NestingProxy

    with NestingProxy(wavespeed_emulator.url) as proxy:
        connection = {"conn_type": "wavespeed", "host": proxy.url, "password": wavespeed_emulator.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
        prediction_id = _submit()
        events = await _events(_trigger(prediction_id))
    assert proxy.nested_sent == 1
    assert [event.payload["status"] for event in events] == ["error"]
    payload = events[0].payload
    assert payload["prediction_id"] == prediction_id and payload["retryable"] is True
    assert payload["error_type"] == "RecursionError"
    assert f"prediction {prediction_id} stopped on an unexpected error (RecursionError" in payload["message"]
    assert wavespeed_emulator.prediction_state(prediction_id)["status"] != "deleted"  # never cancelled


async def test_an_unexpected_exception_s_text_stays_out_of_the_event(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A foreign exception's text may quote what it was given (a secrets backend's, a connection with its
    key): the event, stored unmasked in the metadata database, carries its type only."""
    from airflow_provider_wavespeed.triggers import _shared_client

    key = wavespeed_connection.api_key

    async def failing_lookup(conn_id: str) -> Any:
        raise RuntimeError(f"secrets backend: cannot parse wavespeed://:{key}@api.wavespeed.ai for {conn_id}")

    monkeypatch.setattr(_shared_client, "_create_shared", failing_lookup)
    (event,) = await _events(_trigger("0123456789abcdef0123456789abcdef"))
    assert event.payload["status"] == "error" and event.payload["error_type"] == "RuntimeError"
    assert "RuntimeError" in event.payload["message"]
    assert key not in json.dumps(event.payload)
