"""The example DAGs parse cleanly and run end to end; and the API key never leaves the connection."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pendulum
import pytest
import requests
from airflow.sdk import DAG
from airflow.triggers.base import TriggerEvent
from airflow_helpers import dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLE_FILES = sorted(path for path in EXAMPLE_DAGS.glob("*.py") if path.name != "__init__.py")
FLUX = "wavespeed-ai/flux-dev"
WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
pytestmark = pytest.mark.usefixtures("airflow_db")


def _load(path: Path) -> ModuleType:
    """Import a DAG file by path, as the DAG processor does."""
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _file_prompts() -> list[str]:
    lines = (EXAMPLE_DAGS / "prompts.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# -- parsing ------------------------------------------------------------------------------------


def test_example_dags_parse_without_errors_or_network(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle: dict[str, Any] = {"bundle_path": EXAMPLE_DAGS, "bundle_name": "dags-folder"}
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0: DagBag has no bundle_name (bundles are named by the DAG processor)
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        del bundle["bundle_name"]

    attempts: list[Any] = []

    def no_network(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError(f"network access while parsing DAG files: {address!r}")

    # A DAG file that calls the API (or anything else) at parse time fails to import here.
    monkeypatch.setattr(socket.socket, "connect", no_network)
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS), **bundle)
    monkeypatch.undo()
    assert bag.import_errors == {}
    assert {"wavespeed_text_to_image", "wavespeed_image_to_video", "wavespeed_content_pipeline"} <= set(bag.dag_ids)
    assert {Path(dag.fileloc).name for dag in bag.dags.values()} == {path.name for path in EXAMPLE_FILES}
    assert attempts == [] and wavespeed_connection.counters()["total_requests"] == 0
    for dag in bag.dags.values():
        assert "example" in dag.tags and dag.tasks


# -- running ------------------------------------------------------------------------------------


def test_text_to_image_runs_end_to_end(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0.3)
    dag = _load(EXAMPLE_DAGS / "wavespeed_text_to_image.py").dag
    dag_run = dag.test()
    assert dag_run.state == "success", ti_states(dag_run)
    [submission] = wavespeed_connection.submissions()
    assert submission["inputs"]["prompt"] == dag.params["prompt"]
    urls = dag_xcoms(dag_run)[("use_outputs", -1, "return_value")]
    assert urls and all(url.startswith(f"{wavespeed_connection.url}/_emulator/files/") for url in urls)
    assert [url.rsplit("/", 1)[-1] for url in urls] == wavespeed_connection.prediction_state(submission["id"])[
        "outputs"
    ]


def test_image_to_video_feeds_the_image_url_to_the_video_model(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0.3)
    dag = _load(EXAMPLE_DAGS / "wavespeed_image_to_video.py").dag
    dag_run = dag.test()
    assert dag_run.state == "success", ti_states(dag_run)
    image, video = wavespeed_connection.submissions()
    assert (image["model"], video["model"]) == (FLUX, WAN_I2V)
    xcoms = dag_xcoms(dag_run)
    image_url = xcoms[("text_to_image", -1, "return_value")]["outputs"][0]
    assert video["inputs"] == {"prompt": dag.params["motion"], "image": image_url, "duration": 5}
    report = xcoms[("report", -1, "return_value")]
    assert report["image"] == image_url and report["video"].endswith(f"/{video['id']}_0.mp4")


def test_content_pipeline_writes_one_output_per_prompt(
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    wavespeed_connection.set_duration(0.3)
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path))
    dag = _load(EXAMPLE_DAGS / "wavespeed_content_pipeline.py").dag
    capfd.readouterr()
    dag_run = dag.test()
    assert dag_run.state == "success", ti_states(dag_run)
    # A successful run logs no error-level line (e.g. Airflow's "XCom not found" for a lazy sequence read past its end).
    errors = [line for line in task_output(capfd).splitlines() if "[error" in line]
    assert errors == []
    prompts = _file_prompts()
    submissions = wavespeed_connection.submissions()
    assert Counter(entry["inputs"]["prompt"] for entry in submissions) == Counter(prompts)  # one submit per prompt
    gallery = Path(dag_xcoms(dag_run)[("write_manifest", -1, "return_value")])
    run_dir = tmp_path / "".join(c if c.isalnum() or c in "-_." else "_" for c in dag_run.run_id)
    assert gallery == run_dir / "index.html"
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest) == len(prompts) == len(submissions)
    by_id = {entry["id"]: entry for entry in submissions}
    assert sorted(entry["prediction_id"] for entry in manifest) == sorted(by_id)
    page = gallery.read_text(encoding="utf-8")
    for entry in manifest:
        [url] = entry["outputs"]
        assert url.startswith(wavespeed_connection.url) and entry["prediction_id"] in url
        assert entry["model"] == FLUX
        assert entry["prompt"] == by_id[entry["prediction_id"]]["inputs"]["prompt"]  # each caption names its prompt
        # The sensor's output_path copied the file into the run's folder; the page shows it with its prompt.
        assert entry["files"] == [f"{entry['prediction_id']}_0.png"]
        assert (run_dir / entry["files"][0]).read_bytes() == requests.get(url, timeout=10).content
        assert f"src='{entry['files'][0]}'" in page and entry["prediction_id"] in page
        assert html.escape(entry["prompt"]) in page


# -- the API key stays in the connection ----------------------------------------------------------


def _metadata_files() -> list[Path]:
    home = Path(os.environ["AIRFLOW_HOME"])
    return [path for path in home.rglob("*") if path.is_file()]


def test_the_api_key_appears_in_no_log_xcom_trigger_or_database(
    wavespeed_emulator: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"sk-audit-{uuid.uuid4().hex}"
    wavespeed_emulator.set_api_key(key)
    # Running when each wait polls first (so the sensors defer), finished at the next poll.
    wavespeed_emulator.hold(polls=1)
    conn = {"conn_type": "wavespeed", "host": wavespeed_emulator.url, "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(conn))
    serialized: list[dict[str, Any]] = []
    original_serialize = WaveSpeedTaskTrigger.serialize

    def recording_serialize(self: WaveSpeedTaskTrigger) -> tuple[str, dict[str, Any]]:
        result = original_serialize(self)
        serialized.append(result[1])
        return result

    monkeypatch.setattr(WaveSpeedTaskTrigger, "serialize", recording_serialize)
    start = pendulum.datetime(2026, 1, 1, tz="UTC")

    # 1. Paths that succeed: an example DAG (deferred sensor), a deferred wait and in-worker waits.
    runs = [_load(EXAMPLE_DAGS / "wavespeed_text_to_image.py").dag.test()]
    with DAG("wavespeed_audit_success", schedule=None, start_date=start) as dag:
        deferred = WaveSpeedSubmitOperator(
            task_id="deferred", model=FLUX, inputs={"prompt": "x"}, wait_for_completion=True, poll_interval=0.2
        )
        in_worker = WaveSpeedSubmitOperator(
            task_id="in_worker", model=FLUX, inputs={"prompt": "y"}, wait_for_completion=True, deferrable=False
        )
        poke = WaveSpeedTaskSensor(
            task_id="poke", prediction_id="{{ ti.xcom_pull(task_ids='deferred')['id'] }}", deferrable=False
        )
        [deferred, in_worker] >> poke
    runs.append(dag_test(dag))
    assert [run.state for run in runs] == ["success", "success"]
    existing_id = dag_xcoms(runs[-1])[("deferred", -1, "prediction_id")]

    # 2. Paths that fail, whose messages quote the API: the account's key is rotated while a sensor
    # is deferred (its trigger gets the 401), then the other tasks meet the new key too.
    wavespeed_emulator.release()  # ends the hold above; this one runs until the test ends
    wavespeed_emulator.hold(prompt_contains="still running")
    running_id = WaveSpeedHook().submit(FLUX, {"prompt": "still running"}).id
    original_run = WaveSpeedTaskTrigger.run

    async def rotate_then_run(self: WaveSpeedTaskTrigger) -> AsyncIterator[TriggerEvent]:
        wavespeed_emulator.set_api_key("sk-the-new-key")
        async for event in original_run(self):
            yield event

    monkeypatch.setattr(WaveSpeedTaskTrigger, "run", rotate_then_run)
    with DAG("wavespeed_audit_failure", schedule=None, start_date=start) as dag:
        deferred_wait = WaveSpeedTaskSensor(task_id="deferred_wait", prediction_id=running_id, poll_interval=0.2)
        deferred_wait >> [
            WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "z"}, trigger_rule="all_done"),
            WaveSpeedTaskSensor(
                task_id="poke_wait", prediction_id=existing_id, deferrable=False, trigger_rule="all_done"
            ),
        ]
    runs.append(dag_test(dag))
    assert set(ti_states(runs[-1]).values()) == {"failed"}

    # Logs are audited at the level a deployment runs at, Airflow's default [logging] logging_level
    # INFO (3.1+ configure their task logging so; tests/conftest.py does the same on 3.0). At DEBUG,
    # Airflow itself writes the key: the task SDK logs each request to its supervisor, including the
    # MaskSecret(value=<key>) that registers the connection password for masking. That is Airflow's
    # code and its debug output, the same on 3.0 and 3.3, not something this provider can change.
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    xcoms = [value for run in runs for value in dag_xcoms(run).values()]
    # The audit saw the real material: task logs, 401 messages, prediction XComs and trigger kwargs.
    assert logs.count("HTTP 401") >= 3 and "Airflow connection 'wavespeed_default'" in logs
    assert sum(isinstance(value, dict) and value.get("status") == "completed" for value in xcoms) >= 3
    assert len(serialized) >= 3  # the example's sensor, the deferred submit, the failing deferred sensor
    assert key not in logs
    assert key not in json.dumps(xcoms, default=str)
    assert key not in json.dumps(serialized)
    leaking = [str(path) for path in _metadata_files() if key.encode() in path.read_bytes()]
    assert leaking == []  # the metadata database, task logs, anything else under AIRFLOW_HOME
