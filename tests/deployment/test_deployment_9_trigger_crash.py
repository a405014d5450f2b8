"""A waiting submit whose trigger crashes in a real triggerer: the retry resumes the same prediction.

The trigger's first poll is answered (by a loopback proxy in front of the emulator, ``nesting_proxy``)
with JSON nested deeper than Python's recursion limit: ``RecursionError`` in the triggerer, no WaveSpeed
error. The task (``retries=1``) must fail that try naming its prediction and resume that prediction on
the retry: the emulator sees exactly one submit for the task across the crash and the retry. A clear
of the delivered task then asks to run again: the next try submits anew.
"""

from __future__ import annotations

import time

import pytest
from airflow import __version__ as airflow_version
from deployment_harness import Deployment, log_events, task_record
from nesting_proxy import NestingProxy
from packaging.version import Version

pytestmark = pytest.mark.deployment

AIRFLOW_3_3 = Version(airflow_version).release[:2] >= (3, 3)
DAG_ID = "wsdeploy_trigger_crash"
CONN_ID = "wavespeed_deploy_nesting"  # as in dags/wsdeploy_trigger_crash.py


def test_a_trigger_crash_ends_in_a_retry_that_resumes_the_same_prediction(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator(duration=2.0)
    assert deployment.emulator is not None
    with NestingProxy(deployment.emulator.url) as proxy:
        connection = {
            "connection_id": CONN_ID,
            "conn_type": "wavespeed",
            "host": proxy.url,
            "password": deployment.api_key,
        }
        deployment.airflow.api("DELETE", f"connections/{CONN_ID}", ok_statuses=(404,))
        deployment.airflow.api("POST", "connections", json=connection)
        try:
            since = time.time()
            run_id = deployment.trigger(DAG_ID)
            result = deployment.finish(DAG_ID, run_id, timeout=180)
            delivered = task_record(deployment, DAG_ID, run_id, "submit", "wavespeed_submit")
            requests = control.request_log(since=since)
            log = deployment.task_log(DAG_ID, run_id, "submit")
            value = deployment.airflow.xcom(DAG_ID, run_id, "submit")
            first = deployment.submissions_of(run_id)
            if result.state == "success":
                # A clear asks to run again (the UI's clear, through the REST API it calls).
                body = {"dry_run": False, "only_failed": False, "task_ids": ["submit"], "dag_run_id": run_id}
                deployment.airflow.api("POST", f"dags/{DAG_ID}/clearTaskInstances", json=body)
                again = deployment.finish(DAG_ID, run_id, timeout=180)
        finally:
            deployment.airflow.api("DELETE", f"connections/{CONN_ID}", ok_statuses=(404,))
    (ti,) = result.of("submit")
    submits = [status for _, endpoint, status in requests if endpoint == "submit"]
    print(
        f"\ntrigger crash: run ended {result.seconds:.0f} s, state {result.state}, tries {ti['try_number']}; "
        f"nested answers {proxy.nested_sent}; submit requests {len(submits)}; predictions {len(first)}"
    )
    assert proxy.nested_sent == 1
    assert (result.state, ti["state"], ti["try_number"]) == ("success", "success", 2), log[-3000:]
    seen = [(round(moment - since, 1), endpoint, status) for moment, endpoint, status in requests]
    # One submit request across the crash and the retry.
    assert submits == [200], f"requests (s, endpoint, status): {seen}; the tries' logs:\n{log_events(log)}"
    (created,) = first
    assert "RecursionError" in log
    assert f"This task keeps prediction {created['id']} in its record" in log
    assert f"Resuming WaveSpeed prediction {created['id']}" in log
    assert value["id"] == created["id"] and value["status"] == "completed"
    # Ended in the triggerer, where the record cannot be deleted: it says the wait was handed on, at the
    # run's clear count (below Airflow 3.3 such a record is deleted at the hand-off: no Variable stays).
    if AIRFLOW_3_3:
        assert delivered is not None and (delivered["state"], delivered["prediction_id"]) == ("waiting", created["id"])
    else:
        assert delivered is None
    # The clear after the delivery: the next try submits anew, not resuming the delivered prediction.
    (cleared,) = again.of("submit")
    assert (again.state, cleared["state"], cleared["try_number"]) == ("success", "success", 3)
    assert deployment.submissions_per_index(run_id) == {-1: 2}
    second = deployment.submissions_of(run_id)[1]
    assert deployment.airflow.xcom(DAG_ID, run_id, "submit")["id"] == second["id"]
    if AIRFLOW_3_3:
        assert "The DAG run was cleared after prediction" in deployment.task_log(DAG_ID, run_id, "submit")
