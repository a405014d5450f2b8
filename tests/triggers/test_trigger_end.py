"""The trigger ending its task in the triggerer: which event for which outcome, against the emulator.

A triggerer gives each trigger its task instance before ``run``; these tests do the same with a
stand-in (the fields Airflow's workload carries), and record the XCom push the triggerer's
supervisor would carry out (a real push is proven in tests/deployment/test_deployment_5_trigger_end.py).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from airflow_provider_wavespeed.api.defaults import DEFERRAL_GRACE
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator, _media
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
TI = SimpleNamespace(dag_id="d", task_id="wait", run_id="r", map_index=3, try_number=1)


def _submit(inputs: dict[str, Any] | None = None) -> str:
    return WaveSpeedHook().submit(FLUX, inputs or {"prompt": "a heron"}).id


def _trigger(prediction_id: str, *, in_triggerer: bool = True, **kwargs: Any) -> WaveSpeedTaskTrigger:
    options: dict[str, Any] = {"poll_interval": 0.2, "first_poll_interval": 0.05, "end_time": time.time() + 30}
    trigger = WaveSpeedTaskTrigger(prediction_id=prediction_id, **{**options, **kwargs})
    if in_triggerer:
        trigger.task_instance = TI  # what the triggerer sets before run()
    return trigger


@pytest.fixture
def pushed(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Return values the trigger pushed (the triggerer's supervisor would store them through the Execution API)."""
    values: list[dict[str, Any]] = []

    async def record(self: WaveSpeedTaskTrigger, value: dict[str, Any]) -> None:
        values.append(value)

    monkeypatch.setattr(WaveSpeedTaskTrigger, "_push_return_value", record)
    return values


def _logged(capfd: pytest.CaptureFixture[str]) -> str:
    """The trigger's log lines (structlog on Airflow 3.1+, stdlib logging on 3.0: both reach the console)."""
    out, err = capfd.readouterr()
    return str(out) + str(err)


async def _only_event(trigger: WaveSpeedTaskTrigger) -> TriggerEvent:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


async def test_completed_ends_the_task_with_the_dict_execute_complete_returns(
    wavespeed_connection: WaveSpeedEmulator, pushed: list[dict[str, Any]], capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.hold(polls=1)
    prediction_id = _submit({"prompt": "two", "num_images": 2})
    event = await _only_event(_trigger(prediction_id, end_from_trigger=True))
    assert isinstance(event, TaskSuccessEvent) and event.xcoms is None  # the value went through XCom.set
    assert len(pushed) == 1
    # Today's path: the plain event, validated by the sensor's execute_complete in a worker.
    plain = await _only_event(_trigger(prediction_id, in_triggerer=False, end_from_trigger=True))
    assert type(plain) is TriggerEvent
    sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id)
    assert pushed[0] == sensor.execute_complete({}, plain.payload)
    assert pushed[0]["id"] == prediction_id and len(pushed[0]["outputs"]) == 2
    assert f"WaveSpeed prediction {prediction_id} completed with 2 output(s)" in _logged(capfd)


async def test_without_a_task_instance_it_never_ends_the_task(
    wavespeed_connection: WaveSpeedEmulator, pushed: list[dict[str, Any]]
) -> None:
    """dag.test() runs the trigger inline, with no task instance, and resumes the task with the event."""
    wavespeed_connection.set_duration(0)
    event = await _only_event(_trigger(_submit(), in_triggerer=False, end_from_trigger=True))
    assert type(event) is TriggerEvent and event.payload["status"] == "completed"
    assert pushed == []


async def test_without_end_from_trigger_it_resumes_the_worker(
    wavespeed_connection: WaveSpeedEmulator, pushed: list[dict[str, Any]]
) -> None:
    wavespeed_connection.set_duration(0)
    event = await _only_event(_trigger(_submit()))
    assert type(event) is TriggerEvent and event.payload["status"] == "completed" and pushed == []


async def test_oversized_outputs_resume_the_worker(
    wavespeed_connection: WaveSpeedEmulator, pushed: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_media, "output_bytes", lambda pid, *_: hashlib.sha256(pid.encode()).digest() * 1536)
    wavespeed_connection.set_duration(0)
    prediction_id = _submit({"prompt": "big", "num_images": 4, "enable_base64_output": True})
    event = await _only_event(_trigger(prediction_id, end_from_trigger=True))
    assert type(event) is TriggerEvent and event.payload["outputs_omitted_bytes"] > 0 and pushed == []


async def test_a_failed_push_resumes_the_worker(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: WaveSpeedTaskTrigger, value: dict[str, Any]) -> None:
        raise RuntimeError("the supervisor is gone")

    monkeypatch.setattr(WaveSpeedTaskTrigger, "_push_return_value", refused)
    wavespeed_connection.set_duration(0)
    event = await _only_event(_trigger(_submit(), end_from_trigger=True))
    assert type(event) is TriggerEvent and event.payload["status"] == "completed"


# -- failures: always resumed in the worker (its retry rules, on every Airflow version) ---------------


async def test_a_failed_prediction_resumes_the_worker(
    wavespeed_connection: WaveSpeedEmulator, pushed: list[dict[str, Any]]
) -> None:
    wavespeed_connection.set_outcome("failed", error="emulated: the GPU ran out of memory", code=5000)
    wavespeed_connection.set_duration(0)
    prediction_id = _submit()
    event = await _only_event(_trigger(prediction_id, end_from_trigger=True))
    assert type(event) is TriggerEvent and event.payload["status"] == "failed"
    assert event.payload["prediction"]["error"] == "emulated: the GPU ran out of memory" and pushed == []


async def test_the_deadline_resumes_the_worker(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold()
    event = await _only_event(_trigger(_submit(), end_from_trigger=True, end_time=time.time()))
    assert type(event) is TriggerEvent and event.payload["status"] == "deadline"


async def test_an_error_resumes_the_worker(wavespeed_connection: WaveSpeedEmulator) -> None:
    prediction_id = _submit()
    wavespeed_connection.set_api_key("not-the-connection-key")  # the key is revoked while it waits
    event = await _only_event(_trigger(prediction_id, end_from_trigger=True))
    assert type(event) is TriggerEvent and event.payload["status"] == "error"
    assert "401" in event.payload["message"] and "wavespeed_default" in event.payload["message"]


# -- kwargs: stored with the trigger row; rows from before these options still load ----------------


def test_defaults_serialize_as_before_and_options_round_trip() -> None:
    plain = WaveSpeedTaskTrigger("abc123", end_time=1_900_000_000.0)
    assert set(plain.serialize()[1]) == {
        "prediction_id",
        "wavespeed_conn_id",
        "poll_interval",
        "end_time",
        "first_poll_interval",
    }
    ending = WaveSpeedTaskTrigger("abc123", end_time=1_900_000_000.0, end_from_trigger=True)
    classpath, kwargs = ending.serialize()
    assert kwargs["end_from_trigger"] is True
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**kwargs) == ending
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_a_row_stored_before_the_options_loads_and_resumes_the_worker() -> None:
    old = {
        "prediction_id": "abc",
        "wavespeed_conn_id": "c",
        "poll_interval": 5.0,
        "end_time": 1.0,
        "first_poll_interval": 1.0,
    }
    trigger = WaveSpeedTaskTrigger(**old)
    assert trigger.end_from_trigger is False and trigger.serialize()[1] == old


def test_an_unknown_kwarg_is_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        WaveSpeedTaskTrigger("abc", explode=True)


# -- started in the triggerer: a relative timeout, anchored on the task instance's trigger timeout ----


async def test_the_deadline_is_the_trigger_timeout_less_the_grace(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold()
    prediction_id = _submit()
    trigger = _trigger(prediction_id, end_time=None, timeout=600.0)
    # The triggerer sets it from the task instance (fixed when Airflow deferred it): here, passed already.
    trigger.timeout_after = datetime.now(timezone.utc) + timedelta(seconds=DEFERRAL_GRACE - 1)
    started = time.monotonic()
    event = await _only_event(trigger)
    assert type(event) is TriggerEvent and event.payload["status"] == "deadline"
    assert time.monotonic() - started < 5  # not 600 s from now: the stored instant holds
    assert trigger.end_time is not None and trigger.end_time <= time.time()


def test_without_a_trigger_timeout_the_limit_starts_at_the_first_run() -> None:
    trigger = WaveSpeedTaskTrigger("abc", timeout=100.0)
    assert trigger.end_time is None  # not fixed at construction: the triggerer builds it
    before = time.time()
    assert before + 100 <= trigger._end_time() <= time.time() + 100


async def test_a_template_is_checked_once_rendered(wavespeed_connection: WaveSpeedEmulator) -> None:
    """The triggerer builds the trigger with the template, then renders it; an invalid result is an error event."""
    trigger = WaveSpeedTaskTrigger("{{ ti.xcom_pull(task_ids='submit') }}", timeout=60.0)
    assert trigger.prediction_id.startswith("{{")
    trigger.prediction_id = "../predictions"  # rendered: not an id
    event = await _only_event(trigger)
    payload = event.payload
    assert payload["status"] == "error" and "invalid prediction id '../predictions'" in payload["message"]
    assert wavespeed_connection.counters()["total_requests"] == 0
