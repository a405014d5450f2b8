"""Cancel options of the operators and the sensor: what they hand their triggers, cancel at the wait
limit in real runs (dag.test()), and on_kill in a worker, against the emulator over loopback HTTP."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, task_output, ti_states

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers import _cancel

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"cancel_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


def test_the_sensor_hands_its_trigger_the_options_only_when_set() -> None:
    on = WaveSpeedTaskSensor(task_id="a", prediction_id="abc123")
    off = WaveSpeedTaskSensor(task_id="b", prediction_id="abc123", cancel_on_kill=False, cancel_on_timeout=False)
    if on.start_from_trigger:  # Airflow 3.3+: it starts in the triggerer with these kwargs
        assert on.start_trigger_args.trigger_kwargs["cancel_on_kill"] is True
        assert on.start_trigger_args.trigger_kwargs["cancel_on_timeout"] is True
        assert "cancel_on_kill" not in off.start_trigger_args.trigger_kwargs
        assert "cancel_on_timeout" not in off.start_trigger_args.trigger_kwargs


def test_only_a_waiting_submit_owns_its_prediction() -> None:
    waiting = WaveSpeedSubmitOperator(task_id="a", model=FLUX, inputs={"prompt": "x"}, wait_for_completion=True)
    assert (waiting.cancel_on_kill, waiting.cancel_on_timeout) == (True, True)
    fire_and_forget = WaveSpeedSubmitOperator(task_id="b", model=FLUX, inputs={"prompt": "x"})
    assert (fire_and_forget.cancel_on_kill, fire_and_forget.cancel_on_timeout) == (False, False)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_the_waiting_submit_cancels_at_its_timeout(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
    cancel_status: str,
) -> None:
    wavespeed_connection.set_cancel_status(cancel_status)
    wavespeed_connection.hold()
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "x"},
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=0.2,
            timeout=0.8,
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "failed"}
    [submission] = wavespeed_connection.submissions()
    assert f"{submission['id']} did not finish" in (log := task_output(capfd)) and "was cancelled" in log
    assert wavespeed_connection.prediction_state(submission["id"])["status"] == cancel_status
    assert wavespeed_connection.counters()["delete_requests"] == {submission["id"]: 1}


def test_without_cancel_on_timeout_the_prediction_runs_on(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.hold()
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "x"},
            wait_for_completion=True,
            poll_interval=0.2,
            timeout=0.8,
            cancel_on_timeout=False,
        )
    dag_test(dag)
    [submission] = wavespeed_connection.submissions()
    assert wavespeed_connection.prediction_state(submission["id"])["status"] == "processing"
    assert wavespeed_connection.counters()["delete_requests"] == {}


# -- on_kill in a worker ---------------------------------------------------------------------------


@pytest.fixture
def server_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task instance's state as the API server has it: from the fake TI (no API server here)."""
    monkeypatch.setattr(_cancel, "task_instance_state", lambda ti: ti.state_on_server)


def _ti(state: str | None) -> SimpleNamespace:
    return SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, state_on_server=state)


@pytest.mark.parametrize(
    ("state", "cancelled"), [("failed", True), ("success", True), ("running", False), (None, False)]
)
def test_a_worker_on_kill_cancels_only_after_a_users_kill(
    wavespeed_connection: WaveSpeedEmulator, server_state: None, state: str | None, cancelled: bool
) -> None:
    """A user's kill changed the state first; a worker shutdown (3.3) or execution_timeout leaves it running."""
    wavespeed_connection.hold()
    hook = WaveSpeedHook()
    ids = [hook.submit(FLUX, {"prompt": f"p{n}"}).id for n in range(4)]
    wavespeed_connection.release(ids[3])  # completed: never cancelled
    sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=ids[0], deferrable=False)
    submit = WaveSpeedSubmitOperator(task_id="gen", model=FLUX, inputs={"prompt": "x"}, wait_for_completion=True)
    batch = WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=[{"prompt": "x"}], deferrable=False)
    sensor._waiting_in_worker = (_ti(state), ids[0])
    submit._waiting_in_worker = (_ti(state), ids[1])
    # The batch's record as its submits left it (the record itself is tested in test_batch.py/test_resume.py).
    record = SimpleNamespace(accepted_ids=lambda: [ids[2], ids[3]])
    batch._waiting_in_worker = (_ti(state), record, set())  # type: ignore[assignment]
    started = time.monotonic()
    for task in (sensor, submit, batch):
        task.on_kill()
    assert time.monotonic() - started < 3 * _cancel.WORKER_KILL_BUDGET
    expected = {i: 1 for i in ids[:3]} if cancelled else {}
    assert wavespeed_connection.counters()["delete_requests"] == expected
    assert wavespeed_connection.prediction_state(ids[3])["status"] == "completed"
    idle = WaveSpeedTaskSensor(task_id="idle", prediction_id=ids[0], cancel_on_kill=False, deferrable=False)
    idle._waiting_in_worker = (_ti("failed"), ids[0])
    idle.on_kill()  # the option off: nothing more
    assert wavespeed_connection.counters()["delete_requests"] == expected


def test_batch_trigger_gets_the_options(wavespeed_connection: WaveSpeedEmulator) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    operator = WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=[{"prompt": "x"}], cancel_on_timeout=False)
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="d", task_id="batch", run_id="r", map_index=-1, xcom_push=lambda key, value: pushed.update({key: value})
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator._defer({"ti": ti}, ["abc123"])  # type: ignore[arg-type]
    assert pushed == {"wavespeed_batch_ids": "abc123"}  # the ids go to XCom, the kwargs say where
    kwargs: dict[str, Any] = deferred.value.trigger.serialize()[1]
    assert kwargs["cancel_on_kill"] is True and "cancel_on_timeout" not in kwargs
