"""The operator and the sensor defer through one helper: the same deadline, grace and trigger."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

try:  # Airflow 3.1+
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.0
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

from airflow_helpers import deferring_context

from airflow_provider_wavespeed.api.defaults import DEFERRAL_GRACE
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
TIMEOUT = 1234.0


def _deferred(defer: Any) -> tuple[TaskDeferred, float, float]:
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        defer()
    return info.value, before, time.time()


def _assert_airflow_can_send(deferred: TaskDeferred) -> None:
    """Encode the deferral as Airflow's task runner sends it to its supervisor (msgspec, Airflow's types only)."""

    from airflow.sdk.execution_time.comms import _new_encoder
    from airflow.sdk.execution_time.task_runner import _defer_task

    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", task=SimpleNamespace(queue="default"))
    message, _ = _defer_task(deferred, ti, SimpleNamespace(info=lambda *a, **k: None))  # type: ignore[arg-type]
    assert _new_encoder().encode(message.model_dump())


def _assert_deadline(deferred: TaskDeferred, prediction_id: str, before: float, after: float) -> None:
    trigger = deferred.trigger
    assert isinstance(trigger, WaveSpeedTaskTrigger) and trigger.prediction_id == prediction_id
    # An absolute epoch deadline (JSON-simple: what already-deferred tasks stored), TIMEOUT from now.
    assert isinstance(trigger.end_time, float) and before + TIMEOUT <= trigger.end_time <= after + TIMEOUT
    assert deferred.timeout == timedelta(seconds=TIMEOUT + DEFERRAL_GRACE)  # Airflow's backstop comes later
    assert deferred.method_name == "execute_complete"
    _assert_airflow_can_send(deferred)


def test_the_operator_defers_with_the_shared_deadline(capfd: pytest.CaptureFixture[str]) -> None:
    operator = WaveSpeedSubmitOperator(
        task_id="submit", model=FLUX, inputs={"prompt": "x"}, wait_for_completion=True, timeout=TIMEOUT
    )
    context = deferring_context(clear_number=3)
    deferred, before, after = _deferred(lambda: operator._defer(context, "abc123"))
    _assert_deadline(deferred, "abc123", before, after)
    assert deferred.kwargs == {"prediction_id": "abc123"}
    # The trigger may end the task in the triggerer: the record stays, marked with the run's clear count.
    record = context["task_state_store"]["wavespeed_submit"]
    assert (record["state"], record["prediction_id"], record["clear_number"]) == ("waiting", "abc123", 3)
    logged = capfd.readouterr().out
    assert re.search(r"at the latest \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(20 minutes 34 seconds from now\)", logged)


def test_the_sensor_defers_with_the_same_deadline(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold()  # still running at the sensor's first poll, so it defers
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "x"}).id
    sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, timeout=TIMEOUT, deferrable=True)
    deferred, before, after = _deferred(lambda: sensor.execute({}))
    _assert_deadline(deferred, prediction_id, before, after)


# -- what the trigger may end itself (tests/triggers/test_trigger_end.py: what it then does) ---------


def _end_options(trigger: Any) -> dict[str, Any]:
    return {name: value for name, value in trigger.serialize()[1].items() if name == "end_from_trigger"}


def _submit_operator(**kwargs: Any) -> WaveSpeedSubmitOperator:
    return WaveSpeedSubmitOperator(
        **{"task_id": "submit", **kwargs}, model=FLUX, inputs={"prompt": "x"}, wait_for_completion=True
    )


ENDS = {"end_from_trigger": True}  # failures resume the worker: nothing about them is stored


@pytest.mark.parametrize(
    ("kwargs", "context", "expected"),
    [
        # Whatever the try: a completed prediction ends the task in the triggerer.
        ({"retries": 2}, deferring_context(1, 2), ENDS),
        ({"retries": 2}, deferring_context(3, 2), ENDS),
        ({"retries": 0}, deferring_context(), ENDS),
        # The worker has work left: storing outputs, submitting again; or the user said no.
        ({"output_path": "/tmp/out"}, deferring_context(), {"end_from_trigger": False}),
        ({"resubmit_on_server_failure": 1}, deferring_context(), {"end_from_trigger": False}),
        ({"end_from_trigger": False}, deferring_context(), {"end_from_trigger": False}),
        ({"do_xcom_push": False}, deferring_context(), {"end_from_trigger": False}),
    ],
)
def test_the_operator_lets_its_trigger_end_it_when_the_worker_has_nothing_left(
    kwargs: dict[str, Any], context: dict[str, Any], expected: dict[str, Any]
) -> None:
    deferred, _, _ = _deferred(lambda: _submit_operator(**kwargs)._defer(context, "abc123"))
    assert _end_options(deferred.trigger) == ({} if expected == {"end_from_trigger": False} else expected)
    _assert_airflow_can_send(deferred)
    # Only a trigger that may end the task gets the record marked "waiting"; a worker that resumes finds it as it was.
    marked = context["task_state_store"].get("wavespeed_submit")
    assert (marked or {}).get("state") == ("waiting" if expected == ENDS else None)


class _Listener:
    """A plugin listener, as OpenLineage's provider registers one."""


@pytest.fixture
def listener() -> Any:
    from airflow.listeners.listener import get_listener_manager

    manager, registered = get_listener_manager(), _Listener()
    manager.add_listener(registered)
    yield registered
    manager.pm.unregister(registered)


def test_with_listeners_a_dag_of_these_tasks_still_loads_and_their_waits_resume_in_a_worker(listener: Any) -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    from airflow.sdk import DAG

    with DAG("wavespeed_with_listeners", schedule=None) as dag:
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "x"})
        WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output)  # type: ignore[arg-type]
        _submit_operator(task_id="generate")
    # Airflow's DAG bag refuses a task whose end_from_trigger attribute is true while listeners exist.
    bag = DagBag(dag_folder="/nonexistent")
    bag.bag_dag(dag)
    assert "wavespeed_with_listeners" in bag.dags
    # Listeners hear nothing of a task ended in the triggerer: the worker resumes and ends it.
    deferred, _, _ = _deferred(lambda: _submit_operator()._defer(deferring_context(), "abc123"))
    assert deferred.trigger.end_from_trigger is False


def test_an_operator_with_outlets_resumes_its_worker_for_the_asset_events() -> None:
    from airflow.sdk import Asset

    operator = _submit_operator(outlets=[Asset("s3://bucket/generated")])
    deferred, _, _ = _deferred(lambda: operator._defer(deferring_context(), "abc123"))
    assert deferred.trigger.end_from_trigger is False  # a task ended by its trigger emits no asset events


@pytest.mark.parametrize("kwargs", [{}, {"soft_fail": True}, {"never_fail": True}])
def test_the_sensor_lets_its_trigger_end_it(wavespeed_connection: WaveSpeedEmulator, kwargs: dict[str, Any]) -> None:
    wavespeed_connection.hold()
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "x"}).id
    sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, retries=0, **kwargs)
    deferred, _, _ = _deferred(lambda: sensor.execute(deferring_context(1, 0)))
    assert _end_options(deferred.trigger) == ENDS  # its failures (soft_fail, never_fail) are the worker's
    _assert_airflow_can_send(deferred)


def test_a_sensor_that_stores_outputs_resumes_its_worker(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.hold()
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "x"}).id
    sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, output_path="/tmp/out")
    deferred, _, _ = _deferred(lambda: sensor.execute(deferring_context(1, 2)))
    assert deferred.trigger.end_from_trigger is False
