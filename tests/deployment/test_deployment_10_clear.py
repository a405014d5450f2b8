"""A clear while deferred cancels the old try's prediction in a real deployment (scheduler, two
triggerers, REST API): the sensor started in the triggerer, the sensor started in a worker, and the
waiting submit operator, whose next try then submits anew (a clear is "run again").

The old try's trigger is stopped when its triggerer next loads its triggers. A sensor started in
the triggerer is deferred again by the scheduler at once, before that. A task that starts in a
worker needs seconds to defer again, so its race is made certain: the triggerer running the old
trigger is frozen (SIGSTOP) from just before the clear until the next try is deferred.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from deployment_harness import Deployment

pytestmark = pytest.mark.deployment

NEWER_TRY = "Cancelling 1 unfinished WaveSpeed prediction(s): a newer try (2) of the task waits now"
CANCEL_LIMIT = 120.0  # generous: the verdict is the emulator's DELETE count, not how fast it came


def _ti(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    (ti,) = [t for t in deployment.airflow.task_instances(dag_id, run_id) if t["task_id"] == task_id]
    return ti


def _clear(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> float:
    """Clear one task instance as a user does (the REST API the UI calls); returns when it answered (epoch)."""
    body = {"dry_run": False, "only_failed": False, "task_ids": [task_id], "dag_run_id": run_id}
    cleared = deployment.airflow.api("POST", f"dags/{dag_id}/clearTaskInstances", json=body)
    assert [ti["task_id"] for ti in cleared["task_instances"]] == [task_id], cleared
    return time.time()


def _deferred_and_polling(deployment: Deployment, dag_id: str, task_id: str) -> tuple[str, str, int]:
    """Start a run whose one prediction runs until released; return (run id, prediction id, try number)
    once ``task_id`` is deferred and its trigger has polled twice."""
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # every prediction runs until the scenario releases it
    run_id = deployment.trigger(dag_id)
    deployment.wait_until(
        lambda: _ti(deployment, dag_id, run_id, task_id)["state"] == "deferred", 180, f"{task_id} deferred", 0.5
    )
    (submission,) = deployment.submissions_of(run_id)
    prediction_id = submission["id"]
    deployment.wait_until(lambda: control.prediction_state(prediction_id)["polls"] >= 2, 60, "the trigger polling", 0.5)
    return run_id, prediction_id, int(_ti(deployment, dag_id, run_id, task_id)["try_number"])


@contextmanager
def _frozen_triggerer_of(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> Iterator[str]:
    """Freeze (SIGSTOP) the triggerer running the task's trigger, both its processes; thaw it on exit."""
    (row,) = [row for key, row in deployment.deferred_triggers(dag_id, run_id).items() if key == f"{task_id}[-1]"]
    (name,) = [name for name, job_id in deployment.airflow.job_ids.items() if job_id == row["triggerer_id"]]
    pids = list(deployment.process_tree_of(name))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield name
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _wait_cancelled(deployment: Deployment, prediction_id: str, cleared: float) -> float:
    """Wait (by the emulator's DELETE count) until ``prediction_id`` was cancelled; seconds after the clear."""
    control = deployment.control
    deployment.wait_until(
        lambda: control.counters()["delete_requests"].get(prediction_id, 0) >= 1,
        CANCEL_LIMIT,
        f"prediction {prediction_id} cancelled after the clear",
        0.2,
    )
    (cancelled,) = [c for c in control.cancellations() if c["id"] == prediction_id]
    return float(cancelled["cancelled_at"]) - cleared


@pytest.mark.parametrize(
    ("dag_id", "freeze"),
    [("wsdeploy_clear_sensor", False), ("wsdeploy_clear_worker_sensor", True)],
    ids=["started-in-triggerer", "started-in-worker"],
)
def test_clearing_a_deferred_sensor_cancels_its_prediction(deployment: Deployment, dag_id: str, freeze: bool) -> None:
    run_id, prediction_id, tried = _deferred_and_polling(deployment, dag_id, "wait")
    if freeze:
        with _frozen_triggerer_of(deployment, dag_id, run_id, "wait"):
            cleared = _clear(deployment, dag_id, run_id, "wait")
            _wait_next_try_deferred(deployment, dag_id, run_id, "wait", tried + 1)
    else:
        cleared = _clear(deployment, dag_id, run_id, "wait")
    seconds = _wait_cancelled(deployment, prediction_id, cleared)
    # The next try waits on the same prediction, now cancelled: it fails (a cancelled prediction is never
    # a success), and nothing is cancelled twice.
    result = deployment.finish(dag_id, run_id, timeout=180)
    counters = deployment.control.counters()
    (ti,) = result.of("wait")
    log = deployment.task_log(dag_id, run_id, "wait")
    reason = "a newer try" if NEWER_TRY in log else "not in the old trigger's log"
    print(
        f"\nclear {dag_id}: prediction cancelled {seconds:.1f} s after the clear answered (reason: {reason}); "
        f"the next try (try {ti['try_number']}) ended {ti['state']}; DELETE requests {counters['delete_requests']}"
    )
    assert counters["delete_requests"] == {prediction_id: 1}
    assert len(deployment.submissions_of(run_id)) == 1  # a sensor never submits
    assert ti["try_number"] == tried + 1 and ti["state"] == "failed"
    if freeze:  # the old trigger was stopped with the next try deferred: only the try numbers told them apart
        assert NEWER_TRY in log, log[-3000:]
    # Otherwise the line may be missing: Airflow 3.3's triggerer cancels a trigger again at each loop, so a
    # decision that waits for the next try's trigger (a task started in the triggerer) ends after the
    # trigger did, and its log with it. The DELETE count above is the verdict.
    deployment.assert_healthy()


def _wait_next_try_deferred(deployment: Deployment, dag_id: str, run_id: str, task_id: str, try_number: int) -> None:
    def deferred() -> bool:
        ti = _ti(deployment, dag_id, run_id, task_id)
        return bool(ti["state"] == "deferred" and ti["try_number"] == try_number)

    deployment.wait_until(deferred, 180, f"try {try_number} of {task_id} deferred", 0.5)


@pytest.mark.parametrize("freeze", [False, True], ids=["as-it-comes", "next-try-deferred-first"])
def test_clearing_the_waiting_submit_cancels_the_first_prediction(deployment: Deployment, freeze: bool) -> None:
    dag_id = "wsdeploy_clear_submit"
    control = deployment.control
    run_id, first, tried = _deferred_and_polling(deployment, dag_id, "generate")
    if freeze:
        with _frozen_triggerer_of(deployment, dag_id, run_id, "generate"):
            cleared = _clear(deployment, dag_id, run_id, "generate")
            _wait_next_try_deferred(deployment, dag_id, run_id, "generate", tried + 1)
    else:
        cleared = _clear(deployment, dag_id, run_id, "generate")
    seconds = _wait_cancelled(deployment, first, cleared)
    # The next try runs again: it submits anew (the first one is cancelled, never reused) and waits.
    deployment.wait_until(lambda: len(deployment.submissions_of(run_id)) == 2, 180, "the next try's submit", 0.5)
    _, second = deployment.submissions_of(run_id)
    (cancelled,) = [c for c in control.cancellations() if c["id"] == first]
    overlap = float(cancelled["cancelled_at"]) - float(second["submitted_at"])
    deployment.wait_until(
        lambda: _ti(deployment, dag_id, run_id, "generate")["state"] == "deferred", 180, "the next try deferred", 0.5
    )
    assert control.release(second["id"]) == 1
    result = deployment.finish(dag_id, run_id, timeout=180)
    (ti,) = result.of("generate")
    counters = control.counters()
    order = f"both ran for {overlap:.1f} s" if overlap > 0 else f"{-overlap:.1f} s after the cancel"
    print(
        f"\nclear submit ({'next try deferred first' if freeze else 'as it comes'}): first prediction cancelled "
        f"{seconds:.1f} s after the clear answered; the next try submitted {second['id']} "
        f"{float(second['submitted_at']) - cleared:.1f} s after it ({order}); it ended {ti['state']} "
        f"(try {ti['try_number']}); DELETE requests {counters['delete_requests']}"
    )
    assert counters["delete_requests"] == {first: 1}
    if freeze:
        log = deployment.task_log(dag_id, run_id, "generate")
        assert NEWER_TRY in log, log[-3000:]
    assert len(deployment.submissions_of(run_id)) == 2
    assert control.prediction_state(second["id"])["status"] == "completed"
    assert ti["try_number"] == tried + 1 and ti["state"] == "success"
    deployment.assert_healthy()
