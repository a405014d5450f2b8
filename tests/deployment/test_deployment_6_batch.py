"""A batch in a real deployment: its worker killed with kill -9 halfway through its submissions."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from deployment_harness import Deployment

from airflow_provider_wavespeed.operators.batch import record_key

pytestmark = pytest.mark.deployment

BATCH_DAG = "wsdeploy_batch_kill"
BATCH_COUNT, SUBMIT_WINDOW = 20, 5  # as in dags/wsdeploy_batch_kill.py
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
