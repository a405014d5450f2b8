"""The extra links ("WaveSpeed model", "WaveSpeed prediction"): persisted to XCom by the task, read back by the UI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, task_output, ti_states
from feature_helpers import EXAMPLE_DAGS, load_dag, run_dag, task_states, xcom_value

from airflow_provider_wavespeed.links import WaveSpeedModelLink, WaveSpeedPredictionLink
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator


def test_the_submit_task_links_to_its_model_page(airflow_db: Path, wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0.2)
    dag = load_dag(EXAMPLE_DAGS / "wavespeed_text_to_image.py", "wavespeed_text_to_image")
    run = run_dag(dag)
    assert set(task_states(run).values()) == {"success"}
    link = WaveSpeedModelLink()
    assert xcom_value(run, "submit", key=link.xcom_key) == "https://wavespeed.ai/models/wavespeed-ai/flux-dev"
    assert link in dag.get_task("submit").operator_extra_links


def test_the_submit_task_links_to_its_prediction_through_a_templated_connection_id(
    airflow_db: Path,
    wavespeed_emulator: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # Only the connection named by the rendered template exists: a DAG param picks it.
    connection = {"conn_type": "wavespeed", "host": wavespeed_emulator.url, "password": wavespeed_emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_WS_PICKED_BY_PARAM", json.dumps(connection))
    monkeypatch.delenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", raising=False)
    monkeypatch.delenv("WAVESPEED_API_KEY", raising=False)
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"links_{request.node.name}")[:200]
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"conn": "ws_picked_by_param"},
    ) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit",
            model="wavespeed-ai/flux-dev",
            inputs={"prompt": "a linked fox"},
            wavespeed_conn_id="{{ params.conn }}",
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    (submitted,) = wavespeed_emulator.submissions()
    xcoms = dag_xcoms(dag_run)
    assert xcoms[("submit", -1, "return_value")] == submitted["id"]
    link = WaveSpeedPredictionLink()
    assert xcoms[("submit", -1, link.xcom_key)] == f"https://wavespeed.ai/predictions?id={submitted['id']}"
    assert link in dag.get_task("submit").operator_extra_links
    assert "wavespeed_conn_id" in WaveSpeedSubmitOperator.template_fields


def _dag_id(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", f"links_{request.node.name}")[:200]


def test_a_task_that_fails_before_submitting_logs_no_missing_link_xcom(
    airflow_db: Path,
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # At its end the task runner asks each link for its URL; asking XCom for one the task never stored
    # logs "[error] XCom not found" in the task log of a task whose only problem is its own model id.
    with DAG(_dag_id(request), schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        WaveSpeedSubmitOperator(task_id="submit", model="not a model id", inputs={"prompt": "a fox"})
        WaveSpeedBatchOperator(task_id="batch", model="not a model id", inputs=[{"prompt": "a fox"}])
    capfd.readouterr()
    dag_run = dag_test(dag)
    output = task_output(capfd)
    assert ti_states(dag_run) == {("submit", -1): "failed", ("batch", -1): "failed"}
    assert "not a model id" in output  # the tasks ran and failed on the model id
    assert "XCom not found" not in output
    assert wavespeed_connection.submissions() == []


def test_a_wait_resumed_in_a_worker_keeps_both_links(
    airflow_db: Path, wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # output_path makes the wait resume in a worker (execute_complete), a run that did not persist the
    # links itself: it must store back the URLs the first run persisted, not empty ones.
    wavespeed_connection.set_duration(0.2)
    with DAG(_dag_id(request), schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit",
            model="wavespeed-ai/flux-dev",
            inputs={"prompt": "a linked fox"},
            wait_for_completion=True,
            output_path=str(tmp_path),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    (submitted,) = wavespeed_connection.submissions()
    xcoms = dag_xcoms(dag_run)
    assert xcoms[("submit", -1, WaveSpeedModelLink().xcom_key)] == "https://wavespeed.ai/models/wavespeed-ai/flux-dev"
    assert xcoms[("submit", -1, WaveSpeedPredictionLink().xcom_key)] == (
        f"https://wavespeed.ai/predictions?id={submitted['id']}"
    )


@pytest.mark.parametrize(
    ("options", "pushes"),
    [
        ({}, 1),  # the id handed on: the run ends at once
        # Deferred: stored as the run defers, and as the resumed run ends (dag.test() resumes the task in a
        # worker run, where a deployment's trigger ends it: then one run, one push).
        ({"wait_for_completion": True}, 2),
        ({"wait_for_completion": True, "deferrable": False}, 2),  # a wait in the worker: shown during it too
    ],
    ids=["no-wait", "deferred-wait", "wait-in-worker"],
)
def test_each_link_reaches_xcom_once_per_run_unless_the_run_waits_in_the_worker(
    airflow_db: Path,
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    pushes: int,
) -> None:
    # The task runner stores every link as a run ends (a deferral too): a push of the task's own before
    # that is one more execution-API call per link and generation (issue 34), worth it only while the
    # run goes on in the worker for long.
    from airflow.sdk.api.client import XComOperations

    wavespeed_connection.set_duration(0.2)
    stored: list[tuple[str, object]] = []  # every XCom the execution API was asked to store
    post = XComOperations.set

    def counted(self: XComOperations, dag_id: str, run_id: str, task_id: str, key: str, *args: Any, **kw: Any) -> Any:
        stored.append((key, args[0] if args else kw.get("value")))
        return post(self, dag_id, run_id, task_id, key, *args, **kw)

    monkeypatch.setattr(XComOperations, "set", counted)
    with DAG(_dag_id(request), schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit", model="wavespeed-ai/flux-dev", inputs={"prompt": "a linked fox"}, **options
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    (submitted,) = wavespeed_connection.submissions()
    model, prediction = WaveSpeedModelLink().xcom_key, WaveSpeedPredictionLink().xcom_key
    assert [value for key, value in stored if key == model] == [
        "https://wavespeed.ai/models/wavespeed-ai/flux-dev"
    ] * pushes
    assert [value for key, value in stored if key == prediction] == [
        f"https://wavespeed.ai/predictions?id={submitted['id']}"
    ] * pushes
    xcoms = dag_xcoms(dag_run)
    assert xcoms[("submit", -1, prediction)] == f"https://wavespeed.ai/predictions?id={submitted['id']}"
