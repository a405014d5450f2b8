"""resubmit_on_server_failure: a generation whose prediction failed server-side (5xxx) is submitted again."""

from __future__ import annotations

import re
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")
MODES = pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])


def _dag(request: pytest.FixtureRequest, **kwargs: Any) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"resubmit_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, **kwargs)


def _generate(deferrable: bool, resubmits: int) -> WaveSpeedSubmitOperator:
    return WaveSpeedSubmitOperator(
        task_id="generate",
        model=FLUX,
        inputs={"prompt": "a lighthouse"},
        wait_for_completion=True,
        deferrable=deferrable,
        poll_interval=0.2,
        timeout=120,
        resubmit_on_server_failure=resubmits,
    )


@MODES
def test_a_server_side_failure_is_submitted_again_and_the_result_lists_every_try(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: Any, deferrable: bool
) -> None:
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", error="emulated: GPU lost", code=5003, times=2)
    with _dag(request) as dag:
        _generate(deferrable, resubmits=2)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "success"}
    first, second, third = wavespeed_connection.submissions()
    assert [wavespeed_connection.prediction_state(s["id"])["status"] for s in (first, second)] == ["failed"] * 2
    result = dag_xcoms(dag_run)[("generate", -1, "return_value")]
    assert result["id"] == third["id"] and result["status"] == "completed"
    assert result["prediction_ids_tried"] == [first["id"], second["id"], third["id"]]
    output = task_output(capfd)
    assert f"WaveSpeed prediction {first['id']} failed on the server's side (code 5003)" in output


@MODES
def test_resubmissions_stop_at_the_limit_and_the_failure_names_every_prediction(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: Any, deferrable: bool
) -> None:
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", error="emulated: overloaded", code=5000)
    with _dag(request) as dag:
        _generate(deferrable, resubmits=1)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "failed"}
    first, second = wavespeed_connection.submissions()  # one resubmission, no more
    output = task_output(capfd)
    assert f"predictions tried, in order: {first['id']}, {second['id']}" in output
    assert "server-side failure (code 5000)" in output


@MODES
@pytest.mark.parametrize("code", [1200, 1401])
def test_an_input_or_moderation_failure_is_never_resubmitted(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: Any, deferrable: bool, code: int
) -> None:
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", error="emulated: refused", code=code)
    with _dag(request) as dag:
        _generate(deferrable, resubmits=3)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "failed"}
    assert len(wavespeed_connection.submissions()) == 1
    assert f"code {code}" in task_output(capfd)


def test_resubmission_needs_a_waiting_task() -> None:
    with pytest.raises(ValueError, match="needs wait_for_completion=True"):
        WaveSpeedSubmitOperator(task_id="t", model=FLUX, inputs={}, resubmit_on_server_failure=1)
