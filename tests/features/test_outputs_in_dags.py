"""output_path on the submit operator and the sensor, in real DAG runs (dag.test) against the emulator."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import requests
from feature_helpers import FEATURE_DAGS, asset_events, load_dag, run_dag, task_states, xcom_value

from airflow_provider_wavespeed.testing import WaveSpeedEmulator

DAG_FILE = FEATURE_DAGS / "wavespeed_feature_dags.py"
STORING_TASKS = ("submit_deferred", "submit_blocking", "sensor_deferred", "sensor_poke")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fast(wavespeed_connection: WaveSpeedEmulator) -> WaveSpeedEmulator:
    wavespeed_connection.set_duration(0.2)
    return wavespeed_connection


def test_every_waiting_task_stores_its_outputs(airflow_db: Path, fast: WaveSpeedEmulator, tmp_path: Path) -> None:
    dag = load_dag(DAG_FILE, "wavespeed_feature_store")
    run = run_dag(dag, run_conf={"output_dir": str(tmp_path)})
    assert set(task_states(run).values()) == {"success"}, task_states(run)

    for task_id in STORING_TASKS:
        result: dict[str, Any] = xcom_value(run, task_id)
        prediction_id = result["id"]
        names = [f"{prediction_id}_0.png", f"{prediction_id}_1.png"]
        assert result["stored_paths"] == [str(tmp_path / task_id / name) for name in names], task_id
        assert sorted(p.name for p in (tmp_path / task_id).iterdir()) == names
        for path, url in zip(result["stored_paths"], result["outputs"], strict=True):
            assert Path(path).read_bytes() == requests.get(url, timeout=5).content
    # The sensors waited on the prediction the plain submit made; nothing else was submitted.
    assert xcom_value(run, "sensor_deferred")["id"] == xcom_value(run, "submit_only")
    assert sum(fast.counters()["submissions"].values()) == 3


def test_stored_generations_annotate_their_asset_events(
    airflow_db: Path, fast: WaveSpeedEmulator, tmp_path: Path
) -> None:
    dag = load_dag(DAG_FILE, "wavespeed_feature_store")
    run = run_dag(dag, run_conf={"output_dir": str(tmp_path)})
    events = asset_events("wavespeed_feature_images", run.run_id)
    # sensor_poke declares no outlet: three tasks, three events.
    assert sorted(events) == ["sensor_deferred", "submit_blocking", "submit_deferred"]
    for task_id, extra in events.items():
        result = xcom_value(run, task_id)
        assert extra == {
            "prediction_id": result["id"],
            "model": "wavespeed-ai/flux-dev",
            "stored_paths": result["stored_paths"],
        }


def test_large_base64_outputs_are_read_again_and_stored_instead_of_failing(
    airflow_db: Path, fast: WaveSpeedEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator's images are tiny; lower the event/XCom limit so four of them count as "large"
    # (the trigger then leaves them out of its event, as it does past 64 KiB in production).
    from airflow_provider_wavespeed import _events, _outcome

    monkeypatch.setattr(_events, "MAX_OUTPUTS_BYTES", 256)
    monkeypatch.setattr(_outcome, "MAX_OUTPUTS_BYTES", 256)
    dag = load_dag(DAG_FILE, "wavespeed_feature_large_outputs")
    run = run_dag(dag, run_conf={"output_dir": str(tmp_path)})
    states = task_states(run)
    assert states == {
        "submit_stored": "success",
        "submit_only": "success",
        "sensor_stored": "success",
        "submit_unstored": "failed",  # no output_path: still refused, as before
    }
    for task_id, folder in (("submit_stored", "submit"), ("sensor_stored", "sensor")):
        result = xcom_value(run, task_id)
        assert result["outputs"] == [] and result["outputs_omitted_bytes"] > 256  # no base64 in XCom
        assert [Path(p).name for p in result["stored_paths"]] == [f"{result['id']}_{i}.png" for i in range(4)]
        for path in result["stored_paths"]:
            assert Path(path).read_bytes().startswith(PNG_MAGIC)
            assert Path(path).parent == tmp_path / folder
        # What was stored is exactly what the API returns for the prediction.
        api = requests.get(
            f"{fast.url}/api/v3/predictions/{result['id']}/result",
            headers={"Authorization": f"Bearer {fast.api_key}"},
            timeout=5,
        ).json()["data"]
        stored = [Path(p).read_bytes() for p in result["stored_paths"]]
        assert stored == [base64.b64decode(data) for data in api["outputs"]]


def test_output_path_without_waiting_is_refused_when_the_dag_is_defined() -> None:
    from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

    with pytest.raises(ValueError, match="wait_for_completion=True"):
        WaveSpeedSubmitOperator(task_id="x", model="a/b", inputs={}, output_path="/tmp/out")
