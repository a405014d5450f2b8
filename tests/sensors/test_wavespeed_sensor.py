"""WaveSpeedTaskSensor in real Airflow runs (dag.test()) against the emulator."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pendulum
import pytest
from airflow.exceptions import AirflowFailException, AirflowSensorTimeout
from airflow.sdk import DAG
from airflow_helpers import AIRFLOW_3_0, dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator, _media

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


# -- running a DAG built in a test ------------------------------------------------------------


def _sensor_dag(request: pytest.FixtureRequest, prediction_id: str, **sensor_kwargs: Any) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"sensor_{request.node.name}")
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, **{"poll_interval": 0.2, **sensor_kwargs})
    return dag


def _submit(inputs: dict[str, Any] | None = None) -> str:
    return WaveSpeedHook().submit(FLUX, inputs or {"prompt": "a fox in the snow"}).id


# -- outcomes -----------------------------------------------------------------------------


def test_completed_prediction_is_the_xcom_value(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    # Running at the sensor's first poll (in the worker), so it defers; finished at the trigger's.
    wavespeed_connection.hold(polls=1)
    prediction_id = _submit({"prompt": "two images", "num_images": 2})
    dag_run = dag_test(_sensor_dag(request, prediction_id))
    assert dag_run.state == "success" and ti_states(dag_run) == {("wait", -1): "success"}
    value = dag_xcoms(dag_run)[("wait", -1, "return_value")]
    assert value["id"] == prediction_id and value["status"] == "completed" and value["model"] == FLUX
    assert len(value["outputs"]) == 2
    assert all(url.startswith(f"{wavespeed_connection.url}/_emulator/files/") for url in value["outputs"])
    assert "Deferring until WaveSpeed prediction" in task_output(capfd)  # it deferred (the default)
    assert wavespeed_connection.prediction_state(prediction_id)["polls"] == 2  # one before deferring


def test_wait_that_starts_after_the_prediction_finished_does_not_defer(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.set_duration(0)
    prediction_id = _submit()
    dag_run = dag_test(_sensor_dag(request, prediction_id))
    assert ti_states(dag_run) == {("wait", -1): "success"}
    assert dag_xcoms(dag_run)[("wait", -1, "return_value")]["id"] == prediction_id
    assert "Deferring until" not in task_output(capfd)  # no deferral, no second worker run
    assert wavespeed_connection.prediction_state(prediction_id)["polls"] == 1


def test_a_rate_limited_first_poll_defers_instead_of_sleeping_in_the_slot(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.set_duration(0)  # finished: a patient first poll would end the wait in the worker
    prediction_id = _submit()
    wavespeed_connection.add_fault("result", "rate_limit", times=2, retry_after=0)
    dag_run = dag_test(_sensor_dag(request, prediction_id))
    assert ti_states(dag_run) == {("wait", -1): "success"}
    output = task_output(capfd)
    assert "will poke again" in output and "Deferring until" in output  # one retry, then the triggerer
    assert wavespeed_connection.counters()["requests"]["result"] == 3  # two 429s, then the trigger's poll


@pytest.mark.parametrize("in_triggerer", [False, True], ids=["before-deferring", "in-triggerer"])
@pytest.mark.parametrize("status", ["failed", "cancelled", "timeout"])
def test_unsuccessful_prediction_fails_with_the_api_error(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    status: str,
    in_triggerer: bool,
) -> None:
    wavespeed_connection.set_duration(0)  # over at the first poll, unless held for it
    if in_triggerer:
        wavespeed_connection.hold(polls=1)  # the worker's poll sees it running: the trigger sees it end
    wavespeed_connection.set_outcome(status, error=f"emulated {status}: out of GPU memory")
    prediction_id = _submit()
    dag = _sensor_dag(request, prediction_id, retries=2, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    assert dag_run.state == "failed" and ti_states(dag_run) == {("wait", -1): "failed"}
    log = task_output(capfd)
    assert (
        f"WaveSpeed prediction {prediction_id} ({FLUX}) ended {status!r}: emulated {status}: out of GPU memory" in log
    )
    assert ("Deferring until" in log) is in_triggerer
    assert "AirflowFailException" in log  # final: Airflow's retries cannot change the outcome
    assert dag_run.get_task_instances()[0].try_number == 1


@pytest.mark.parametrize(("soft_fail", "state"), [(False, "failed"), (True, "skipped")])
def test_sensor_timeout_fails_or_skips(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    soft_fail: bool,
    state: str,
) -> None:
    wavespeed_connection.hold()  # running for as long as the test lasts
    prediction_id = _submit()
    # cancel_on_timeout=False: the prediction is left running, as before the option existed.
    dag_run = dag_test(_sensor_dag(request, prediction_id, timeout=0.8, soft_fail=soft_fail, cancel_on_timeout=False))
    assert ti_states(dag_run) == {("wait", -1): state}
    log = task_output(capfd)
    if soft_fail:
        assert "Skipping task." in log
        if AIRFLOW_3_0:  # 3.0's BaseSensorOperator skips with the timeout's own message as the reason
            assert f"WaveSpeed prediction {prediction_id} did not finish before the wait limit" in log
        else:
            assert "Skipping due to soft_fail" in log
    else:
        assert f"WaveSpeed prediction {prediction_id} did not finish before the wait limit" in log
        assert "AirflowSensorTimeout" in log
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == "processing"


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_sensor_timeout_cancels_the_prediction_by_default(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
    cancel_status: str,
) -> None:
    wavespeed_connection.set_cancel_status(cancel_status)
    wavespeed_connection.hold()  # running for as long as the test lasts
    prediction_id = _submit()
    dag_run = dag_test(_sensor_dag(request, prediction_id, timeout=0.8, deferrable=deferrable, retries=0))
    assert ti_states(dag_run) == {("wait", -1): "failed"}
    log = task_output(capfd)
    assert "AirflowSensorTimeout" in log
    assert f"WaveSpeed prediction {prediction_id} " in log and "was cancelled (cancel_on_timeout" in log
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == cancel_status
    assert wavespeed_connection.counters()["delete_requests"] == {prediction_id: 1}


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
def test_transient_errors_while_polling_still_succeed(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, deferrable: bool
) -> None:
    wavespeed_connection.hold(polls=1)  # one answer "processing" among the faults, then "completed"
    prediction_id = _submit()
    wavespeed_connection.add_fault("result", "rate_limit", times=3, retry_after=0)
    wavespeed_connection.add_fault("result", "http_error", status=503, times=2)
    wavespeed_connection.add_fault("result", "drop", times=2)
    dag_run = dag_test(_sensor_dag(request, prediction_id, deferrable=deferrable, mode="poke"))
    assert ti_states(dag_run) == {("wait", -1): "success"}
    assert dag_xcoms(dag_run)[("wait", -1, "return_value")]["id"] == prediction_id
    statuses = [status for _, name, status in wavespeed_connection.request_log() if name == "result"]
    assert statuses == [429, 429, 429, 503, 503, 0, 0, 200, 200]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
def test_wrong_key_fails_fast_with_few_requests(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
) -> None:
    prediction_id = _submit()
    wavespeed_connection.set_api_key("the-key-was-rotated")
    # A wrong key retried until the timeout would hang here for 120 s; it must fail on the first answer.
    dag = _sensor_dag(request, prediction_id, deferrable=deferrable, timeout=120, retries=2, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("wait", -1): "failed"}
    assert wavespeed_connection.counters()["requests"]["result"] == 1
    log = task_output(capfd)
    assert "HTTP 401" in log and "Airflow connection 'wavespeed_default'" in log


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_non_deferrable_modes_work_without_the_triggerer(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    # Running at the sensor's first poke and finished at its second, however late the task starts:
    # one reschedule only, as Airflow 3.0's dag.test() breaks on a second (first_reschedule_date is a str).
    wavespeed_connection.hold(polls=1)
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"sensor_{request.node.name}")
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        # Submitted in the run, so the sensor starts while the prediction is still running.
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "a heron"})
        WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output, poll_interval=0.2, deferrable=False, mode=mode)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success", ("wait", -1): "success"}
    prediction_id = dag_xcoms(dag_run)[("submit", -1, "return_value")]
    value = dag_xcoms(dag_run)[("wait", -1, "return_value")]
    assert value["id"] == prediction_id and value["status"] == "completed" and value["outputs"]
    log = task_output(capfd)
    assert f"WaveSpeed prediction {prediction_id} is processing" in log and "Deferring until" not in log
    assert wavespeed_connection.prediction_state(prediction_id)["polls"] == 2  # it poked until done


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
def test_invalid_prediction_id_fails_before_any_request(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
) -> None:
    dag_run = dag_test(_sensor_dag(request, "../../balance?x=1", deferrable=deferrable, mode="poke"))
    assert ti_states(dag_run) == {("wait", -1): "failed"}
    assert "invalid prediction id '../../balance?x=1'" in task_output(capfd)
    assert wavespeed_connection.counters()["total_requests"] == 0


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
def test_base64_outputs_too_large_for_xcom_fail_clearly(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    deferrable: bool,
) -> None:
    # The emulator's outputs are tiny; make each one 48 KiB so four of them, as base64, pass the XCom limit.
    monkeypatch.setattr(_media, "output_bytes", lambda pid, *_: hashlib.sha256(pid.encode()).digest() * 1536)
    wavespeed_connection.hold(polls=1)  # the outputs arrive in the triggerer (deferred) or a later poke
    prediction_id = _submit({"prompt": "big", "num_images": 4, "enable_base64_output": True})
    dag_run = dag_test(_sensor_dag(request, prediction_id, deferrable=deferrable, mode="poke"))
    assert ti_states(dag_run) == {("wait", -1): "failed"}
    log = task_output(capfd)
    assert f"WaveSpeed prediction {prediction_id} ({FLUX}) completed, but its outputs are" in log
    assert "too large for XCom" in log and "Drop 'enable_base64_output'" in log
    assert "WaveSpeedHook().get_prediction(prediction_id)" in log
    assert ("wait", -1, "return_value") not in dag_xcoms(dag_run)


# -- the event handler, given events a healthy trigger never sends ---------------------------


def _handler_sensor() -> WaveSpeedTaskSensor:
    return WaveSpeedTaskSensor(task_id="wait", prediction_id="abc123")


def _prediction(**fields: Any) -> dict[str, Any]:
    return {"id": "abc123", "model": FLUX, "status": "completed", "outputs": ["https://x/1.png"], **fields}


@pytest.mark.parametrize(
    "event",
    [None, {}, {"status": None}, {"status": "done"}, {"prediction_id": "abc123"}, "completed", ["completed"]],
)
def test_event_without_a_known_status_fails_clearly(event: Any) -> None:
    with pytest.raises(AirflowFailException, match="unknown or missing status") as info:
        _handler_sensor().execute_complete({}, event)  # type: ignore[arg-type]
    assert "abc123" in str(info.value)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"status": "completed", "prediction": "not a dict"}, "is invalid"),
        ({"status": "completed"}, "is invalid"),
        ({"status": "completed", "prediction": _prediction(id="other")}, "does not match"),
        ({"status": "completed", "prediction": _prediction(status="failed")}, "does not match"),
        ({"status": "error", "message": "WaveSpeed poll failed with HTTP 404"}, "HTTP 404"),
    ],
)
def test_malformed_or_error_events_fail_clearly(event: dict[str, Any], message: str) -> None:
    with pytest.raises(AirflowFailException, match=message):
        _handler_sensor().execute_complete({}, event)  # type: ignore[arg-type]


def test_deadline_event_is_a_sensor_timeout() -> None:
    with pytest.raises(AirflowSensorTimeout, match="wait limit"):
        _handler_sensor().execute_complete({}, {"status": "deadline", "message": "past the wait limit"})  # type: ignore[arg-type]


def test_completed_event_returns_the_prediction() -> None:
    result = _handler_sensor().execute_complete({}, {"status": "completed", "prediction": _prediction()})  # type: ignore[arg-type]
    assert result["id"] == "abc123" and result["outputs"] == ["https://x/1.png"]


# -- retries: a wait is safe to retry -------------------------------------------------------


def test_retries_default_to_two_unless_the_dag_or_the_task_sets_them() -> None:
    start = pendulum.datetime(2026, 1, 1, tz="UTC")
    with DAG("sensor_retries_default", schedule=None, start_date=start):
        ours = WaveSpeedTaskSensor(task_id="ours", prediction_id="abc123")
        explicit = WaveSpeedTaskSensor(task_id="explicit", prediction_id="abc123", retries=0)
    with DAG("sensor_retries_dag", schedule=None, start_date=start, default_args={"retries": 5}):
        from_dag = WaveSpeedTaskSensor(task_id="from_dag", prediction_id="abc123")
    assert (ours.retries, ours.retry_delay) == (2, timedelta(seconds=30))
    assert explicit.retries == 0
    assert from_dag.retries == 5 and from_dag.retry_delay == timedelta(seconds=300)  # Airflow's default delay


def test_retries_follow_the_deployment_default_when_it_sets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__DEFAULT_TASK_RETRIES", "4")
    with DAG("sensor_retries_conf", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id="abc123")
    assert sensor.retries != 2  # ours stand back; Airflow's own default applies
