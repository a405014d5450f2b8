"""A batch in a real deployment: its worker killed (kill -9) mid-submissions; its triggerer killed while it waits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from deployment_harness import (
    BATCH_KILL_DAG,
    TRIGGERER_HEALTH_THRESHOLD,
    Deployment,
    assert_batch_kill_outcome,
    start_batch_to_kill,
)

pytestmark = pytest.mark.deployment

BATCH_COUNT = 20  # as in dags/wsdeploy_batch_triggerer_kill.py


def test_worker_killed_mid_batch_the_retry_finishes_it_and_nothing_is_submitted_twice(
    deployment: Deployment,
) -> None:
    run = start_batch_to_kill(deployment)
    # The task's own process: the supervisor's child, titled "airflow worker -- <ti id>".
    ti = run.ti
    title = Path(f"/proc/{ti['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert f"airflow worker -- {ti['id']}" in title, f"pid {ti['pid']} is not the task's process: {title!r}"
    os.kill(int(ti["pid"]), signal.SIGKILL)
    killed = time.monotonic()

    result = deployment.finish(BATCH_KILL_DAG, run.run_id, timeout=180, started=run.started)
    (ti,) = result.of("batch")
    print(
        f"\nbatch kill: killed {killed - run.started:.0f} s into the run; run ended {result.seconds:.0f} s, "
        f"state {result.state}, tries {ti['try_number']}; emulator {deployment.control.counters()['submissions']}"
    )
    assert_batch_kill_outcome(deployment, run, result)


TRIGGERER_KILL_DAG = "wsdeploy_batch_triggerer_kill"


def _two_triggerers(deployment: Deployment) -> dict[int, str]:
    """Job id -> name of the two live triggerers, starting again one an earlier scenario killed."""
    airflow = deployment.airflow
    for name in ("triggerer-1", "triggerer-2"):
        if name not in airflow.processes:
            airflow.start_again(name)  # with its new job id
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
    # One trigger waits for all: its kwargs name the XCom holding the ids (they do not carry them).
    assert len(ids) == BATCH_COUNT and before["kwargs"]["count"] == BATCH_COUNT, before
    where = before["kwargs"]["ids_xcom"]
    (value,) = deployment.pg.query(
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index = %s AND key = %s",
        (where["dag_id"], where["run_id"], where["task_id"], where["map_index"], where["key"]),
    )[0]
    assert set(str(value).strip('"').split(",")) == ids, value
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
    # The kill and the takeover cancelled nothing (the batch's cancel_on_kill is on by default).
    assert control.counters()["delete_requests"] == {}
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
    assert (control.counters()["delete_requests"], control.counters()["cancelled"]) == ({}, 0)
    value = airflow.xcom(TRIGGERER_KILL_DAG, run_id, "batch")
    assert (value["completed"], value["failed"]) == (BATCH_COUNT, 0)
    assert sorted(entry["id"] for entry in value["predictions"]) == sorted(ids)
    directory = deployment.task_log_dir(TRIGGERER_KILL_DAG, run_id, "batch")
    assert list(directory.glob(f"attempt=*.log.trigger.{survivor_job}.log")), "the batch never waited on the survivor"
    deployment.assert_healthy()
