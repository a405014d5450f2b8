"""Triggerers stopped and started again while a sensor and a batch are deferred: nothing is cancelled.

Every triggerer is stopped as a service manager stops it (SIGTERM), then started again; the waits
resume in the new triggerer processes.

On Airflow 3.0-3.2 a triggerer shutting down cancels its triggers exactly as a user's kill does (a
``CancelledError`` in ``run``); the provider tells the two apart by the task instance's state, which a
shutdown leaves ``deferred``. On 3.3+ a shutdown calls no ``on_kill``. Either way: no DELETE.
"""

from __future__ import annotations

import time

import pytest
from deployment_harness import Deployment

from airflow_provider_wavespeed._compat import triggerer_renders_start_trigger_args

pytestmark = pytest.mark.deployment

DAG_ID = "wsdeploy_triggerer_restart"
BATCH_COUNT = 5  # as in dags/wsdeploy_triggerer_restart.py
SENSOR_INDEX = 100  # the sensor's prompt index (the batch's are 0-4)


def test_triggerers_stopped_and_started_again_cancel_nothing_and_the_waits_resume(deployment: Deployment) -> None:
    airflow, control = deployment.airflow, deployment.control
    triggerers = sorted(name for name in airflow.processes if name.startswith("triggerer-"))
    assert len(triggerers) == 2, triggerers
    deployment.reset_emulator()
    control.hold()  # every prediction runs until the scenario releases it
    run_id = deployment.trigger(DAG_ID)
    started = time.monotonic()
    deployment.wait_deferred(DAG_ID, run_id, 2)
    # The scheduler has processed each worker's deferral exit (Airflow's defer/resume race, see
    # Deployment.executor_events); on 3.3+ the sensor starts in the triggerer, with no worker run.
    for task_id in ("batch",) if triggerer_renders_start_trigger_args() else ("wait", "batch"):
        deployment.wait_settled(DAG_ID, run_id, task_id, 1)
    ids = {int(str(s["inputs"]["prompt"]).rsplit(" ", 1)[1]): s["id"] for s in deployment.submissions_of(run_id)}
    assert sorted(ids) == [*range(BATCH_COUNT), SENSOR_INDEX], ids
    # Both triggers are running (each has polled its predictions), so the stop reaches live triggers.
    deployment.wait_until(
        lambda: all(control.prediction_state(i)["polls"] >= 2 for i in ids.values()), 60, "every prediction polled"
    )
    old_jobs = {airflow.job_ids[name] for name in triggerers}

    codes = {name: airflow.stop_component(name) for name in triggerers}
    stopped = time.time()
    polls_at_stop = {i: control.prediction_state(i)["polls"] for i in ids.values()}
    # A shutdown is no user's kill: nothing cancelled, both tasks still deferred, every prediction running.
    counters = control.counters()
    assert (counters["delete_requests"], counters["cancelled"]) == ({}, 0)
    assert deployment.count(DAG_ID, run_id, "deferred") == 2
    assert {control.prediction_state(i)["status"] for i in ids.values()} == {"processing"}

    for name in triggerers:
        airflow.start_again(name)
    new_jobs = {airflow.job_ids[name] for name in triggerers}
    assert not new_jobs & old_jobs, (old_jobs, new_jobs)

    # The waits resume: the new triggerers poll every prediction again.
    deployment.wait_until(
        lambda: all(control.prediction_state(i)["polls"] > polls_at_stop[i] for i in ids.values()),
        120,
        "every prediction polled by the restarted triggerers",
    )
    resumed = time.time()
    assert control.release() == len(ids)
    result = deployment.finish(DAG_ID, run_id, timeout=240, started=started)
    counters = control.counters()
    print(
        f"\ntriggerer restart: stop exit codes {codes}; polled again {resumed - stopped:.0f} s after the stop; run "
        f"ended {result.seconds:.0f} s, state {result.state}; DELETE requests "
        f"{sum(counters['delete_requests'].values())}, submissions {counters['submissions']}"
    )
    for task_id in ("submit", "wait", "batch"):
        result.assert_states(task_id, {"success": 1})
    assert result.state == "success"
    assert (counters["delete_requests"], counters["cancelled"]) == ({}, 0)
    assert deployment.submissions_per_index(run_id) == {index: 1 for index in ids}
    assert airflow.xcom(DAG_ID, run_id, "wait")["id"] == ids[SENSOR_INDEX]
    value = airflow.xcom(DAG_ID, run_id, "batch")
    assert (value["completed"], value["failed"]) == (BATCH_COUNT, 0)
    # Each wait ran in a stopped triggerer, then in a new one.
    for task_id in ("wait", "batch"):
        directory = deployment.task_log_dir(DAG_ID, run_id, task_id)
        jobs = {int(path.name.rsplit(".", 2)[-2]) for path in directory.glob("attempt=*.log.trigger.*.log")}
        assert jobs & old_jobs and jobs & new_jobs, f"{task_id} trigger logs of jobs {jobs}: {old_jobs} -> {new_jobs}"
    deployment.assert_healthy()
