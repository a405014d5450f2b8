"""OpenLineage: each WaveSpeed task reports its model (job facet), predictions (run facet) and stored files.

A listener registered as OpenLineage's is, asking each finished task for its facets the way the
OpenLineage extractor does (``get_openlineage_facets_on_complete``), in real dag.test() runs
against the emulator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, ti_states
from openlineage.client.serde import Serde  # the openlineage extra, part of dev

from airflow_provider_wavespeed._outcome import dataset_name
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


class _LineageListener:
    """Asks each task that succeeded for its OpenLineage facets, as the OpenLineage listener does."""

    def __init__(self) -> None:
        self.facets: dict[str, dict[str, Any]] = {}

    from airflow.listeners import hookimpl

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        method = getattr(task_instance.task, "get_openlineage_facets_on_complete", None)
        if method is not None:
            lineage = method(task_instance)
            self.facets[task_instance.task_id] = {
                "outputs": [Serde.to_dict(dataset) for dataset in lineage.outputs],
                "job_facets": {name: Serde.to_dict(facet) for name, facet in lineage.job_facets.items()},
                "run_facets": {name: Serde.to_dict(facet) for name, facet in lineage.run_facets.items()},
            }


@pytest.fixture
def lineage_listener() -> Any:
    try:  # Airflow 3.1+: the task runner has the task SDK's own listener manager
        from airflow.sdk.listener import get_listener_manager
    except ImportError:
        from airflow.listeners.listener import get_listener_manager

    manager, listener = get_listener_manager(), _LineageListener()
    manager.add_listener(listener)
    yield listener
    manager.pm.unregister(listener)


def test_submit_sensor_and_batch_report_model_predictions_and_stored_files(
    wavespeed_connection: WaveSpeedEmulator,
    lineage_listener: _LineageListener,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    wavespeed_connection.hold(polls=1)  # each prediction finishes on its second poll
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"lineage_{request.node.name}")[:200]
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "a fox"})
        WaveSpeedTaskSensor(
            task_id="wait", prediction_id=submit.output, poll_interval=0.2, output_path=str(tmp_path / "wait")
        )
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "an owl"},
            wait_for_completion=True,
            poll_interval=0.2,
            output_path=str(tmp_path / "generate"),
        )
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=[{"prompt": "a bear"}, {"prompt": "a wolf"}],
            poll_interval=0.2,
            output_path=str(tmp_path / "batch"),
        )
    dag_run = dag_test(dag)
    assert set(ti_states(dag_run).values()) == {"success"}
    xcoms = dag_xcoms(dag_run)
    facets = lineage_listener.facets
    assert set(facets) == {"submit", "wait", "generate", "batch"}

    for task_id in facets:
        (job_facet,) = facets[task_id]["job_facets"].values()
        assert job_facet["model"] == FLUX and job_facet["_schemaURL"].endswith("WaveSpeedJobFacet")

    # The submit that does not wait stores nothing: its prediction, no output dataset.
    submitted = xcoms[("submit", -1, "return_value")]
    assert facets["submit"]["run_facets"]["wavespeed"]["prediction_ids"] == [submitted]
    assert facets["submit"]["outputs"] == []

    # The others: their stored files (final names, never the .part temporaries) as output datasets.
    for task_id, results in (
        ("wait", [xcoms[("wait", -1, "return_value")]]),
        ("generate", [xcoms[("generate", -1, "return_value")]]),
        ("batch", xcoms[("batch", -1, "return_value")]["predictions"]),
    ):
        stored = [path for result in results for path in result["stored_paths"]]
        assert stored and all(Path(path).is_file() for path in stored)
        datasets = [(dataset["namespace"], dataset["name"]) for dataset in facets[task_id]["outputs"]]
        assert datasets == [("file", path) for path in stored]
        assert not any(name.endswith(".part") or "/." in name for _, name in datasets)
        ids = facets[task_id]["run_facets"]["wavespeed"]["prediction_ids"]
        assert ids == [result["id"] for result in results]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/out/abc_0.png", ("file", "/data/out/abc_0.png")),
        ("file:///data/out/abc_0.png", ("file", "/data/out/abc_0.png")),
        ("s3://bucket/generated/abc_0.png", ("s3://bucket", "generated/abc_0.png")),
        ("s3://aws_default@bucket/generated/abc_0.png", ("s3://bucket", "generated/abc_0.png")),
        ("gs://media/x/abc_0.mp4", ("gs://media", "x/abc_0.mp4")),
    ],
)
def test_dataset_names_follow_openlineage_naming(path: str, expected: tuple[str, str]) -> None:
    assert dataset_name(path) == expected


def test_the_run_facet_says_what_the_completed_generations_cost(
    wavespeed_connection: WaveSpeedEmulator, lineage_listener: _LineageListener, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"lineage_{request.node.name}")[:200]
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate", model=FLUX, inputs={"prompt": "an owl", "num_images": 2}, wait_for_completion=True
        )
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=[{"prompt": "a bear"}, {"prompt": "a wolf"}])
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "a fox"})
        WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output, poll_interval=0.2)
    dag_run = dag_test(dag)
    assert set(ti_states(dag_run).values()) == {"success"}
    costs = {
        task_id: facets["run_facets"]["wavespeed"].get("cost_usd")
        for task_id, facets in lineage_listener.facets.items()
    }
    assert costs == {"generate": pytest.approx(0.006), "batch": pytest.approx(0.006), "submit": None, "wait": None}
