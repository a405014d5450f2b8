"""A batch in a real deployment: its worker killed (kill -9) mid-submissions; its triggerer killed while it waits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from deployment_harness import TRIGGERER_HEALTH_THRESHOLD, Deployment

from airflow_provider_wavespeed.operators.batch import record_key

pytestmark = pytest.mark.deployment

BATCH_DAG = "wsdeploy_batch_kill"
BATCH_COUNT, SUBMIT_WINDOW = 20, 5  # as in dags/wsdeploy_batch_kill.py and wsdeploy_batch_triggerer_kill.py
KILLED_WINDOW = list(range(2 * SUBMIT_WINDOW, 3 * SUBMIT_WINDOW))  # the third window: 10-14
LATE_ANSWER = 25.0


def _record(deployment: Deployment, run_id: str) -> dict | None:
    """The batch record, read from the Variable through Airflow's REST API (None: no such Variable)."""
    import json

    key = record_key(BATCH_DAG, run_id, "batch", -1)
    found = deployment.airflow.api("GET", f"variables/{key}", ok_statuses=(404,))
    if not isinstance(found, dict) or "value" not in found:
        return None
    return json.loads(found["value"])


def test_worker_killed_mid_batch_the_retry_finishes_it_and_nothing_is_submitted_twice(
    deployment: Deployment,
) -> None:
    control = deployment.control
    deployment.reset_emulator(duration=2.0)
    # Halfway by count, not by time: the first two windows are answered at once; the third window's
    # submits create their predictions, then their answers wait (while the worker is killed).
    control.add_fault("submit", "slow", delay=0, times=2 * SUBMIT_WINDOW)
    # 25 s: far longer than finding and killing the task takes, shorter than the client's 30 s read timeout.
    control.add_fault("submit", "slow_after_submit", delay=LATE_ANSWER, times=SUBMIT_WINDOW)
    since = time.time()
    run_id = deployment.trigger(BATCH_DAG)
    started = time.monotonic()
    deployment.wait_until(
        lambda: len(deployment.submissions_of(run_id)) >= 3 * SUBMIT_WINDOW,
        180,
        "the batch's first three windows created",
        interval=0.5,
    )
    # The task's own process: the supervisor's child, titled "airflow worker -- <ti id>".
    (ti,) = deployment.airflow.task_instances(BATCH_DAG, run_id)
    assert ti["state"] == "running" and ti["try_number"] == 1 and ti["pid"], ti
    title = Path(f"/proc/{ti['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert f"airflow worker -- {ti['id']}" in title, f"pid {ti['pid']} is not the task's process: {title!r}"
    # The record already says which inputs are in flight: it was written before their submits left.
    record = _record(deployment, run_id)
    assert record is not None and record["in_flight"] == KILLED_WINDOW, record
    assert all(record["ids"][: 2 * SUBMIT_WINDOW]) and not any(record["ids"][2 * SUBMIT_WINDOW :])
    os.kill(int(ti["pid"]), signal.SIGKILL)
    killed = time.monotonic()

    result = deployment.finish(BATCH_DAG, run_id, timeout=180, started=started)
    (ti,) = result.of("batch")
    log = deployment.task_log(BATCH_DAG, run_id, "batch")
    print(
        f"\nbatch kill: killed {killed - started:.0f} s into the run; run ended {result.seconds:.0f} s, "
        f"state {result.state}, tries {ti['try_number']}; emulator {control.counters()['submissions']}"
    )
    assert (result.state, ti["state"], ti["try_number"]) == ("success", "success", 2), log[-3000:]
    # Every input has exactly one prediction (the killed window's were created before the kill), and
    # no submit was sent twice: 20 requests in all.
    assert deployment.submissions_per_index(run_id) == {index: 1 for index in range(BATCH_COUNT)}
    # The emulator logs a request once answered: the killed window's answers come LATE_ANSWER s after
    # they were created (to a dead worker). Then exactly 20 submit requests: the retry sent only 15-19.
    deployment.wait_until(
        lambda: sum(entry[1] == "submit" for entry in control.request_log(since=since)) >= BATCH_COUNT,
        LATE_ANSWER + 60,
        "the killed window's late answers",
    )
    submits = [entry for entry in control.request_log(since=since) if entry[1] == "submit"]
    assert [status for _, _, status in submits] == [200] * BATCH_COUNT
    value = deployment.airflow.xcom(BATCH_DAG, run_id, "batch")
    statuses = [entry["status"] for entry in value["predictions"]]
    assert statuses == ["completed"] * 10 + ["uncertain"] * 5 + ["completed"] * 5, statuses
    assert (value["completed"], value["failed"]) == (15, 5)
    for entry in value["predictions"][10:15]:
        assert entry["id"] is None and "prediction history" in entry["error"], entry
    by_index = {int(str(s["inputs"]["prompt"]).rsplit(" ", 1)[1]): s["id"] for s in deployment.submissions_of(run_id)}
    assert [entry["id"] for entry in value["predictions"] if entry["id"]] == [
        by_index[index] for index in range(BATCH_COUNT) if index not in KILLED_WINDOW
    ]
    assert "reported uncertain and not submitted again" in log
    assert _record(deployment, run_id) is None  # deleted once the retry succeeded


TRIGGERER_KILL_DAG = "wsdeploy_batch_triggerer_kill"


def _two_triggerers(deployment: Deployment) -> dict[int, str]:
    """Job id -> name of the two live triggerers, starting again one an earlier scenario killed."""
    airflow = deployment.airflow
    for name in ("triggerer-1", "triggerer-2"):
        if name not in airflow.processes:
            known = {job["id"] for job in airflow.jobs("TriggererJob")}
            airflow.start_component(name, "triggerer")
            airflow.job_ids[name] = airflow._wait_for_new_job("TriggererJob", known, 120)
    return {job_id: name for name, job_id in airflow.job_ids.items() if name in airflow.processes}


def test_triggerer_killed_while_a_batch_waits_the_other_one_finishes_it(deployment: Deployment) -> None:
    airflow, control = deployment.airflow, deployment.control
    names = _two_triggerers(deployment)
    deployment.reset_emulator()
    control.hold()  # every prediction runs until the takeover is over, however slow the machine
    run_id = deployment.trigger(TRIGGERER_KILL_DAG)
    started = time.monotonic()
    deployment.wait_deferred(TRIGGERER_KILL_DAG, run_id, 1)

    def trigger_row() -> dict | None:
        rows = deployment.deferred_triggers(TRIGGERER_KILL_DAG, run_id)
        row = rows.get("batch[-1]")
        return row if row is not None and row["triggerer_id"] is not None else None

    deployment.wait_until(lambda: trigger_row() is not None, 60, "the batch's trigger assigned to a triggerer")
    before = trigger_row()
    assert before is not None and before["classpath"].endswith("WaveSpeedBatchTrigger"), before
    victim_job = before["triggerer_id"]
    assert victim_job in names, (victim_job, names)
    survivor_job = next(job for job in names if job != victim_job)
    # The trigger has polled every prediction at least once (each "processing") before the kill.
    ids = {s["id"] for s in deployment.submissions_of(run_id)}
    assert len(ids) == BATCH_COUNT and all(i in before["kwargs_text"] for i in ids)  # one trigger waits for all
    deployment.wait_until(
        lambda: all(control.prediction_state(i)["polls"] >= 1 for i in ids), 60, "every prediction polled"
    )
    airflow.kill(names[victim_job])  # kill -9, process group included
    killed = time.monotonic()

    def taken_over() -> bool:
        row = trigger_row()
        return row is not None and row["triggerer_id"] == survivor_job

    takeover = deployment.wait_until(taken_over, 120, "the surviving triggerer to take the batch's trigger over")
    after = trigger_row()
    assert after is not None and (after["id"], after["kwargs_text"]) == (before["id"], before["kwargs_text"])
    assert control.release() == BATCH_COUNT
    result = deployment.finish(TRIGGERER_KILL_DAG, run_id, timeout=240, started=started)
    (ti,) = result.of("batch")
    log = deployment.task_log(TRIGGERER_KILL_DAG, run_id, "batch")
    print(
        f"\nbatch triggerer kill: {names[victim_job]} killed {killed - started:.0f} s into the run, trigger taken "
        f"over {takeover:.0f} s later (threshold {TRIGGERER_HEALTH_THRESHOLD} s); run ended {result.seconds:.0f} s, "
        f"state {result.state}; emulator {control.counters()['submissions']}"
    )
    assert (result.state, ti["state"], ti["try_number"]) == ("success", "success", 1), log[-3000:]
    assert deployment.submissions_per_index(run_id) == {index: 1 for index in range(BATCH_COUNT)}
    value = airflow.xcom(TRIGGERER_KILL_DAG, run_id, "batch")
    assert (value["completed"], value["failed"]) == (BATCH_COUNT, 0)
    assert sorted(entry["id"] for entry in value["predictions"]) == sorted(ids)
    directory = deployment.task_log_dir(TRIGGERER_KILL_DAG, run_id, "batch")
    assert list(directory.glob(f"attempt=*.log.trigger.{survivor_job}.log")), "the batch never waited on the survivor"
    deployment.assert_healthy()
