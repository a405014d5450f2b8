"""What you stop, stops, in a real deployment (Airflow 3.3: scheduler, two triggerers, REST API).

A deferred sensor marked success, and one whose DAG run is marked failed, cancel their running prediction once.

The verdicts are what the emulator saw (one ``DELETE`` of the running prediction) and the states Airflow
shows; the seconds from the user's action to the cancel are printed, never bounded.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from deployment_harness import Deployment

pytestmark = pytest.mark.deployment

SENSOR_DAG = "wsdeploy_cancel_sensor"  # a submit, then a deferrable sensor (cancel_on_kill by default), no retries


def _ti(deployment: Deployment, run_id: str, task_id: str) -> dict[str, Any]:
    (ti,) = [t for t in deployment.airflow.task_instances(SENSOR_DAG, run_id) if t["task_id"] == task_id]
    return ti


def _sensor_waiting(deployment: Deployment) -> tuple[str, str]:
    """Trigger a run and wait until its sensor's trigger polls the held prediction: (run id, prediction id)."""
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # the prediction runs for as long as the scenario lasts
    run_id = deployment.trigger(SENSOR_DAG)
    deployment.wait_deferred(SENSOR_DAG, run_id, 1)
    (submission,) = deployment.submissions_of(run_id)
    prediction_id = submission["id"]
    deployment.wait_until(
        lambda: control.prediction_state(prediction_id)["polls"] >= 2, 60, "the sensor's trigger polling", 0.5
    )
    assert control.counters()["delete_requests"] == {}
    return run_id, prediction_id


def _assert_cancelled_once(deployment: Deployment, prediction_id: str, acted: float, what: str) -> None:
    control = deployment.control
    deployment.wait_until(lambda: control.counters()["cancelled"] >= 1, 60, "the prediction cancelled", 0.2)
    (cancelled,) = control.cancellations()
    print(f"\n{what}: prediction cancelled {cancelled['cancelled_at'] - acted:.1f} s after the REST API answered")
    assert cancelled["id"] == prediction_id and cancelled["status"] == "processing"
    assert control.counters()["delete_requests"] == {prediction_id: 1}
    assert control.prediction_state(prediction_id)["status"] == "deleted"


def test_a_deferred_sensor_marked_success_cancels_its_prediction(deployment: Deployment) -> None:
    run_id, prediction_id = _sensor_waiting(deployment)
    deployment.airflow.api(
        "PATCH", f"dags/{SENSOR_DAG}/dagRuns/{run_id}/taskInstances/wait", json={"new_state": "success"}
    )
    _assert_cancelled_once(deployment, prediction_id, time.time(), "mark success")
    assert _ti(deployment, run_id, "wait")["state"] == "success"
    log = deployment.task_log(SENSOR_DAG, run_id, "wait")
    assert "Cancelling 1 unfinished WaveSpeed prediction(s): the task was killed by a user" in log, log[-3000:]
    deployment.assert_healthy()


def test_a_dag_run_marked_failed_cancels_its_waiting_sensor_s_prediction(deployment: Deployment) -> None:
    run_id, prediction_id = _sensor_waiting(deployment)
    deployment.airflow.api("PATCH", f"dags/{SENSOR_DAG}/dagRuns/{run_id}", json={"state": "failed"})
    _assert_cancelled_once(deployment, prediction_id, time.time(), "DAG run failed")
    assert _ti(deployment, run_id, "wait")["state"] == "failed"
    deployment.assert_healthy()
