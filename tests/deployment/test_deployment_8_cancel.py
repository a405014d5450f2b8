"""Cancel on a user's kill in a real deployment (scheduler, two triggerers, REST API).

A deferred sensor and a batch of 50 marked failed cancel their unfinished predictions, and nothing else.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from deployment_harness import Deployment

pytestmark = pytest.mark.deployment

SENSOR_DAG = "wsdeploy_cancel_sensor"
BATCH_DAG = "wsdeploy_cancel_batch"
BATCH_COUNT = 50  # as in dags/wsdeploy_cancel_batch.py
COMPLETED = 20  # of the batch, finished before the kill
# The trigger's last line once its cancel is done (api/polling.py's cancel_unfinished): every DELETE it sends
# is answered by then, so the counts read after it are final.
CANCEL_DONE = "WaveSpeed cancel of {count} unfinished prediction(s): {count} cancelled, 0 already finished"
# Timings are printed, never asserted: how soon a cancel lands depends on the machine. Asserted is the
# mechanism: the cancel follows the user's kill, comes from the trigger's kill path, and ends (its log line).


def _mark_failed(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> tuple[float, float]:
    """Mark a task instance failed as a user does (the REST API the UI calls).

    Returns when it was asked and when it answered (epoch).
    """
    asked = time.time()
    deployment.airflow.api(
        "PATCH", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json={"new_state": "failed"}
    )
    return asked, time.time()


def _ti(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    (ti,) = [t for t in deployment.airflow.task_instances(dag_id, run_id) if t["task_id"] == task_id]
    return ti


def test_a_deferred_sensor_marked_failed_cancels_its_prediction(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # the prediction runs for as long as the scenario lasts
    run_id = deployment.trigger(SENSOR_DAG)
    deployment.wait_deferred(SENSOR_DAG, run_id, 1)
    (submission,) = deployment.submissions_of(run_id)
    prediction_id = submission["id"]
    # The trigger is running (it has polled), so the kill reaches a live trigger.
    deployment.wait_until(
        lambda: control.prediction_state(prediction_id)["polls"] >= 2, 60, "the sensor's trigger polling", 0.5
    )
    assert control.counters()["delete_requests"] == {}
    asked, marked = _mark_failed(deployment, SENSOR_DAG, run_id, "wait")
    done = CANCEL_DONE.format(count=1)
    deployment.wait_until(
        lambda: done in deployment.task_log(SENSOR_DAG, run_id, "wait"), 300, "the trigger's cancel done", 0.5
    )
    (cancelled,) = control.cancellations()
    seconds = cancelled["cancelled_at"] - marked
    counters = control.counters()
    print(
        f"\ncancel sensor: cancelled {seconds:.1f} s after the mark-failed answer; DELETE requests "
        f"{sum(counters['delete_requests'].values())}, cancelled {counters['cancelled']}"
    )
    assert cancelled["id"] == prediction_id and cancelled["status"] == "processing"
    assert cancelled["cancelled_at"] >= asked, "cancelled before the user's kill"
    assert counters["delete_requests"] == {prediction_id: 1}
    assert control.prediction_state(prediction_id)["status"] == "deleted"
    assert _ti(deployment, SENSOR_DAG, run_id, "wait")["state"] == "failed"
    log = deployment.task_log(SENSOR_DAG, run_id, "wait")
    # 3.3+: "the task was killed by a user" (on_kill); 3.0-3.2: "the task is failed: killed by a user" (its state).
    assert re.search(
        r"Cancelling 1 unfinished WaveSpeed prediction\(s\): the task (was|is failed:) killed by a user", log
    ), log[-3000:]
    deployment.assert_healthy()


def test_a_batch_of_50_marked_failed_cancels_only_its_unfinished_predictions(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()
    run_id = deployment.trigger(BATCH_DAG)
    deployment.wait_deferred(BATCH_DAG, run_id, 1)
    ids = [s["id"] for s in deployment.submissions_of(run_id)]
    assert len(ids) == BATCH_COUNT
    deployment.wait_until(
        lambda: all(control.prediction_state(i)["polls"] >= 1 for i in ids), 60, "every prediction polled", 0.5
    )
    done, running = ids[:COMPLETED], ids[COMPLETED:]
    for prediction_id in done:
        assert control.release(prediction_id) == 1
    # The trigger saw them completed (a poll after the release): what it knows finished, it never reads again.
    deployment.wait_until(
        lambda: all(control.prediction_state(i)["polls"] >= 2 for i in done), 60, "the completed ones polled", 0.5
    )
    asked, marked = _mark_failed(deployment, BATCH_DAG, run_id, "batch")
    # Its last line says the trigger's cancel is over: a second DELETE or a completed one deleted shows by then.
    finished = CANCEL_DONE.format(count=len(running))
    deployment.wait_until(
        lambda: finished in deployment.task_log(BATCH_DAG, run_id, "batch"), 300, "the trigger's cancel done", 0.5
    )
    counters = control.counters()
    last = max(c["cancelled_at"] for c in control.cancellations())
    print(
        f"\ncancel batch: {counters['cancelled']} of {BATCH_COUNT} cancelled, the last {last - marked:.1f} s after "
        f"the mark-failed answer; DELETE requests {sum(counters['delete_requests'].values())}"
    )
    assert counters["cancelled"] == len(running)
    assert sorted(counters["delete_requests"]) == sorted(running)  # never a completed one
    assert all(n == 1 for n in counters["delete_requests"].values())
    assert {control.prediction_state(i)["status"] for i in done} == {"completed"}
    assert {control.prediction_state(i)["status"] for i in running} == {"deleted"}
    assert min(c["cancelled_at"] for c in control.cancellations()) >= asked, "cancelled before the user's kill"
    log = deployment.task_log(BATCH_DAG, run_id, "batch")
    # 3.3+: "the task was killed by a user" (on_kill); 3.0-3.2: "the task is failed: killed by a user" (its state).
    assert re.search(r"the task (was|is failed:) killed by a user", log), log[-3000:]
    assert "took over" not in log, "the cancel ran out of its budget"  # triggers/_cancel.py's KILL_CANCEL_BUDGET
    assert _ti(deployment, BATCH_DAG, run_id, "batch")["state"] == "failed"
    deployment.assert_healthy()


WORKER_DAG = "wsdeploy_cancel_worker"


def test_a_sensor_poking_in_a_worker_marked_failed_cancels_from_on_kill(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()
    run_id = deployment.trigger(WORKER_DAG)
    deployment.wait_until(lambda: len(deployment.submissions_of(run_id)) == 1, 120, "the submit", 0.5)
    (submission,) = deployment.submissions_of(run_id)
    prediction_id = submission["id"]
    deployment.wait_until(
        lambda: control.prediction_state(prediction_id)["polls"] >= 2, 120, "the sensor poking in its worker", 0.5
    )
    assert _ti(deployment, WORKER_DAG, run_id, "wait")["state"] == "running"
    asked, marked = _mark_failed(deployment, WORKER_DAG, run_id, "wait")
    # The supervisor learns of it at its next heartbeat, sends SIGTERM, and the task's on_kill cancels.
    deployment.wait_until(lambda: control.counters()["cancelled"] >= 1, 300, "the prediction cancelled", 0.2)
    (cancelled,) = control.cancellations()
    counters = control.counters()
    print(
        f"\ncancel worker: cancelled {cancelled['cancelled_at'] - marked:.1f} s after the mark-failed answer; "
        f"DELETE requests {sum(counters['delete_requests'].values())}"
    )
    assert cancelled["id"] == prediction_id and counters["delete_requests"] == {prediction_id: 1}
    assert cancelled["cancelled_at"] >= asked, "cancelled before the user's kill"
    assert _ti(deployment, WORKER_DAG, run_id, "wait")["state"] == "failed"
    deployment.assert_healthy()
