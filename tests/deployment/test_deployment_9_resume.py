"""Resume and reconcile of WaveSpeedSubmitOperator in a real deployment: one prediction per generation.

(d) the task's process killed (kill -9) between the submit's answer and XCom: the retry resumes the
    same prediction (on Airflow 3.3+ through the task state store);
(e) the submit's answer dropped after the prediction was created: adopted from the history.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from deployment_harness import Deployment, task_record

pytestmark = pytest.mark.deployment

KILL_DAG = "wsdeploy_resume_kill"
DROPPED_DAG = "wsdeploy_submit_dropped"


def _submit_requests(deployment: Deployment, since: float) -> list[int]:
    return [status for _, endpoint, status in deployment.control.request_log(since=since) if endpoint == "submit"]


def test_worker_killed_between_the_answer_and_xcom_the_retry_resumes_the_same_prediction(
    deployment: Deployment,
) -> None:
    control = deployment.control
    deployment.reset_emulator(duration=2.0)
    since = time.time()
    run_id = deployment.trigger(KILL_DAG)
    started = time.monotonic()

    def recorded() -> bool:
        record = task_record(deployment, KILL_DAG, run_id, "submit", "wavespeed_submit")
        return record is not None and record.get("state") == "sent"

    # By state: the first try pauses right after writing "sent" (dags/wsdeploy_resume_kill.py).
    deployment.wait_until(recorded, 120, "the submit's prediction id recorded", interval=0.5)
    record = task_record(deployment, KILL_DAG, run_id, "submit", "wavespeed_submit")
    assert record is not None
    (created,) = deployment.submissions_of(run_id)
    assert record["prediction_id"] == created["id"], (record, created)
    (ti,) = deployment.airflow.task_instances(KILL_DAG, run_id)
    assert ti["state"] == "running" and ti["try_number"] == 1 and ti["pid"], ti
    title = Path(f"/proc/{ti['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert f"airflow worker -- {ti['id']}" in title, f"pid {ti['pid']} is not the task's process: {title!r}"
    os.kill(int(ti["pid"]), signal.SIGKILL)
    killed = time.monotonic()

    result = deployment.finish(KILL_DAG, run_id, timeout=120, started=started)
    (ti,) = result.of("submit")
    log = deployment.task_log(KILL_DAG, run_id, "submit")
    submits = _submit_requests(deployment, since)
    print(
        f"\nresume kill: killed {killed - started:.0f} s into the run; run ended {result.seconds:.0f} s, state "
        f"{result.state}, tries {ti['try_number']}; submit requests {len(submits)}; predictions per index "
        f"{dict(deployment.submissions_per_index(run_id))}"
    )
    assert (result.state, ti["state"], ti["try_number"]) == ("success", "success", 2), log[-3000:]
    assert submits == [200]  # one submit request: the retry sent none
    assert deployment.submissions_per_index(run_id) == {-1: 1}
    value = deployment.airflow.xcom(KILL_DAG, run_id, "submit")
    assert value["id"] == created["id"] and value["status"] == "completed"
    assert f"Resuming WaveSpeed prediction {created['id']}" in log
    assert control.prediction_state(created["id"])["status"] == "completed"
    # Ended in the triggerer: the record stays, marked "waiting" at the run's clear count, so a later
    # clear submits anew (test_deployment_9_trigger_crash clears one).
    kept = task_record(deployment, KILL_DAG, run_id, "submit", "wavespeed_submit")
    assert kept is not None and (kept["state"], kept["prediction_id"]) == ("waiting", created["id"]), kept


def test_a_dropped_submit_answer_is_adopted_from_the_history(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator(duration=2.0)
    control.add_fault("submit", "drop_after_submit", times=1)  # the prediction is created, the answer lost
    since = time.time()
    run_id = deployment.trigger(DROPPED_DAG)
    result = deployment.finish(DROPPED_DAG, run_id, timeout=120)
    (ti,) = result.of("submit")
    log = deployment.task_log(DROPPED_DAG, run_id, "submit")
    submits = _submit_requests(deployment, since)
    print(
        f"\ndropped answer: run ended {result.seconds:.0f} s, state {result.state}, tries {ti['try_number']}; "
        f"submit requests {len(submits)}; predictions per index {dict(deployment.submissions_per_index(run_id))}"
    )
    assert (result.state, ti["state"], ti["try_number"]) == ("success", "success", 1), log[-3000:]
    assert len(submits) == 1  # the dropped one: never sent again
    (created,) = deployment.submissions_of(run_id)
    assert deployment.submissions_per_index(run_id) == {-1: 1}
    assert f"Adopted WaveSpeed prediction {created['id']} from the history" in log
    value = deployment.airflow.xcom(DROPPED_DAG, run_id, "submit")
    assert value["id"] == created["id"] and value["status"] == "completed"
    kept = task_record(deployment, DROPPED_DAG, run_id, "submit", "wavespeed_submit")
    assert kept is not None and (kept["state"], kept["prediction_id"]) == ("waiting", created["id"]), kept
