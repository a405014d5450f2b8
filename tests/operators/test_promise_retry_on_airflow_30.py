"""Airflow 3.0's retry of a deferred task resumes on the previous try's event (apache/airflow#56704).

The reproduction is the strict xfail of ``test_wavespeed_operator.py::test_failed_generation_is_retried_by_
airflow_retries[deferred]``: on 3.0 a waiting submit whose prediction failed is not submitted again by
Airflow's retry. What this module proves on 3.0 (and 3.3, where nothing differs): that retry costs nothing
(it fails again, sending nothing), and ``resubmit_on_server_failure`` submits again within the try.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import AIRFLOW_3_0, dag_test, dag_xcoms, ti_states

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"retry30_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


@pytest.mark.skipif(not AIRFLOW_3_0, reason="Airflow 3.1+ clear the stale event (apache/airflow#56731)")
def test_on_airflow_3_0_the_retry_fails_again_on_the_old_event_and_sends_nothing(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", error="emulated: GPU lost", code=5003, times=1)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "x"},
            wait_for_completion=True,
            poll_interval=0.2,
            retries=1,
            retry_delay=timedelta(0),
        )
    run = dag_test(dag)
    assert ti_states(run) == {("generate", -1): "failed"}
    assert run.get_task_instances()[0].try_number == 2  # Airflow did retry
    [submission] = wavespeed_connection.submissions()  # and the retry sent nothing: never paid twice
    assert wavespeed_connection.prediction_state(submission["id"])["status"] == "failed"


def test_resubmit_on_server_failure_submits_again_within_the_try(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    """What works on 3.0 as on 3.3 for a deferrable waiting submit: no Airflow retry needed."""
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", error="emulated: GPU lost", code=5003, times=1)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "x"},
            wait_for_completion=True,
            poll_interval=0.2,
            resubmit_on_server_failure=1,
            retries=0,
        )
    run = dag_test(dag)
    assert ti_states(run) == {("generate", -1): "success"}
    assert run.get_task_instances()[0].try_number == 1
    first, second = wavespeed_connection.submissions()
    assert wavespeed_connection.prediction_state(first["id"])["status"] == "failed"
    assert dag_xcoms(run)[("generate", -1, "return_value")]["id"] == second["id"]
