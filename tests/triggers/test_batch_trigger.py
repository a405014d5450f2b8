"""WaveSpeedBatchTrigger (and its polling) against the emulator over loopback HTTP, in real event loops."""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from airflow_helpers import batch_trigger

from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient
from airflow_provider_wavespeed.api.defaults import POOL_SIZE
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers._shared_client import shared_pool_stats
from airflow_provider_wavespeed.triggers.batch import WaveSpeedBatchTrigger

FLUX = "wavespeed-ai/flux-dev"
CONN_ID = "wavespeed_default"


def _create(emulator: WaveSpeedEmulator, count: int, prompt: str = "batch item") -> list[str]:
    """Predictions created in the emulator's state directly (no HTTP, no submission budget)."""
    return [emulator.state.submit(FLUX, {"prompt": f"{prompt} {n}"}, None).id for n in range(count)]


def _trigger(ids: list[str], *, wait: float = 30.0, **kwargs: Any) -> WaveSpeedBatchTrigger:
    options: dict[str, Any] = {"poll_interval": 0.2, "first_poll_interval": 0.1, "end_time": time.time() + wait}
    return batch_trigger(ids, **{**options, **kwargs})


async def _events(trigger: WaveSpeedBatchTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def _polls(emulator: WaveSpeedEmulator) -> list[int]:
    return [status for _, name, status in emulator.request_log() if name == "result"]


def test_serialize_round_trips_and_names_no_key(wavespeed_emulator: WaveSpeedEmulator) -> None:
    trigger = batch_trigger(["a1", "b2"], wavespeed_conn_id="ws_other", poll_interval=3, end_time=1_900_000_000.5)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)  # what the triggerer does
    assert rebuilt == trigger and rebuilt.serialize() == (classpath, kwargs)
    assert kwargs == {
        "ids_xcom": trigger.ids_xcom,
        "count": 2,
        "wavespeed_conn_id": "ws_other",
        "poll_interval": 3.0,
        "end_time": 1_900_000_000.5,
        "first_poll_interval": 1.0,
    }
    assert "2 predictions" in repr(trigger) and "a1" not in repr(trigger)  # a log line, not a thousand ids


async def test_an_invalid_id_in_the_xcom_is_an_error_event(wavespeed_connection: WaveSpeedEmulator) -> None:
    (event,) = await _events(_trigger(["ok", "../balance"]))
    assert event.payload["status"] == "error" and "invalid prediction id" in event.payload["message"]


async def test_every_terminal_status_is_counted_in_one_small_event(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold(polls=1)  # each answers "processing" once, then its outcome
    wavespeed_connection.set_outcome("failed", prompt_contains="fails", error="emulated: GPU gave up")
    wavespeed_connection.set_outcome("cancelled", prompt_contains="cancel")
    ids = _create(wavespeed_connection, 4)
    ids += _create(wavespeed_connection, 2, "fails") + _create(wavespeed_connection, 1, "cancel")
    events = await _events(_trigger(ids))
    assert len(events) == 1
    payload = events[0].payload
    assert payload == {"status": "done", "total": 7, "counts": {"completed": 4, "failed": 2, "cancelled": 1}}
    assert Counter(_polls(wavespeed_connection)) == {200: 14}  # two polls each: processing, then the outcome
    assert shared_pool_stats() == {}  # the shared client was released


async def test_an_unreadable_prediction_does_not_end_the_wait_for_the_others(
    wavespeed_connection: WaveSpeedEmulator,
) -> None:
    wavespeed_connection.hold(polls=2)
    ids = _create(wavespeed_connection, 3)
    events = await _events(_trigger([*ids, "0123456789abcdef0123456789abcdef"]))
    assert [event.payload for event in events] == [
        {"status": "done", "total": 4, "counts": {"completed": 3, "unreadable": 1}}
    ]
    # The unknown id was read once (404 is final); the others until they finished.
    assert Counter(_polls(wavespeed_connection)) == {200: 9, 404: 1}


async def test_transient_errors_and_429s_keep_polling(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0)  # finished: the first answered poll of each is its last
    ids = _create(wavespeed_connection, 3)
    wavespeed_connection.add_fault("result", "rate_limit", times=3, retry_after=0)
    wavespeed_connection.add_fault("result", "http_error", status=503, times=2)
    events = await _events(_trigger(ids))
    assert [event.payload["status"] for event in events] == ["done"]
    assert events[0].payload["counts"] == {"completed": 3}
    assert Counter(_polls(wavespeed_connection)) == {429: 3, 503: 2, 200: 3}


async def test_a_refused_key_ends_the_wait_for_all_at_once(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold()
    ids = _create(wavespeed_connection, 5)
    wavespeed_connection.set_api_key("a-key-the-connection-does-not-have")
    events = await _events(_trigger(ids))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error" and payload["total"] == 5
    assert "401" in payload["message"] and f"Airflow connection {CONN_ID!r}" in payload["message"]
    assert len(_polls(wavespeed_connection)) <= 5  # one round at most, no retry storm against a bad key


async def test_deadline_reports_how_many_still_run(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0)
    done = _create(wavespeed_connection, 2)
    wavespeed_connection.hold()  # running past the deadline, however slow the machine
    running = _create(wavespeed_connection, 3, "slow")
    events = await _events(_trigger(done + running, wait=2.0))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "deadline" and payload["counts"] == {"completed": 2, "running": 3}
    assert "3 of 5" in payload["message"] and "may still finish" in payload["message"]


async def test_missing_credentials_are_an_error_event(wavespeed_emulator: WaveSpeedEmulator) -> None:
    events = await _events(_trigger(["abc"], wavespeed_conn_id="ws_missing"))
    assert [event.payload["status"] for event in events] == ["error"]
    assert "ws_missing" in events[0].payload["message"]
    assert wavespeed_emulator.counters()["total_requests"] == 0


async def test_a_thousand_predictions_one_trigger_bounded_polls_small_kwargs_and_event(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """N = 1,000: one poll each (all finished), never more than the pool's worth in flight, sizes measured."""
    wavespeed_connection.set_duration(0)
    wavespeed_connection.set_outcome("failed", prompt_contains="item 99", times=10)  # 99, 990-998 fail
    ids = _create(wavespeed_connection, 1000, "item")
    in_flight = peak = 0
    original = AsyncWaveSpeedClient.get_prediction

    async def counted(self: AsyncWaveSpeedClient, prediction_id: str) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(self, prediction_id)
        finally:
            in_flight -= 1

    monkeypatch.setattr(AsyncWaveSpeedClient, "get_prediction", counted)
    trigger = _trigger(ids)
    events = await _events(trigger)
    assert len(events) == 1
    payload = events[0].payload
    assert payload == {"status": "done", "total": 1000, "counts": {"completed": 990, "failed": 10}}
    assert Counter(_polls(wavespeed_connection)) == {200: 1000}
    assert peak == POOL_SIZE

    # What Airflow stores: the kwargs serialized and Fernet-encrypted in the trigger table (its own
    # function), the event in the task instance's next_kwargs.
    from airflow.models.trigger import Trigger

    kwargs_json = json.dumps(trigger.serialize()[1])
    from cryptography.fernet import Fernet

    stored = Trigger.encrypt_kwargs(trigger.serialize()[1])  # without a Fernet key (these tests): the JSON
    encrypted = Fernet(Fernet.generate_key()).encrypt(stored.encode()).decode()  # with one, as in a deployment
    event_json = json.dumps(payload)
    with capsys.disabled():
        print(
            f"\nbatch trigger at N=1000: kwargs {len(kwargs_json)} bytes as JSON, {len(stored)} as Airflow "
            f"serializes them, {len(encrypted)} encrypted in the trigger table; event {len(event_json)} bytes"
        )
    assert len(kwargs_json) < 40 * 1000  # the ids and four settings: ~36 bytes per prediction
    assert len(encrypted) < 60 * 1000  # encrypted: base64 of the JSON, a third more
    assert len(event_json) < 400  # counts only: the same size for any batch
    assert WaveSpeedHook().get_prediction(ids[0]).status == "completed"


async def test_an_unexpected_exception_is_one_retryable_error_event(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll answered with JSON nested deeper than the recursion limit (RecursionError, no WaveSpeed
    error): one ``error`` event the batch task understands, not an exception for Airflow."""
    from nesting_proxy import NestingProxy

    with NestingProxy(wavespeed_emulator.url) as proxy:
        connection = {"conn_type": "wavespeed", "host": proxy.url, "password": wavespeed_emulator.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
        ids = _create(wavespeed_emulator, 3)
        events = await _events(_trigger(ids))
    assert proxy.nested_sent == 1
    (event,) = events
    assert event.payload["status"] == "error" and event.payload["retryable"] is True
    assert event.payload["error_type"] == "RecursionError" and event.payload["total"] == 3
    assert "the 3 predictions of this batch stopped on an unexpected error (RecursionError" in event.payload["message"]
