"""WaveSpeedUploadOperator and the upload-and-animate example DAG."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from airflow.exceptions import AirflowException, AirflowFailException
from feature_helpers import EXAMPLE_DAGS, load_dag, needs_object_storage, run_dag, task_states, xcom_value

from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.operators.upload import WaveSpeedUploadOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

EXAMPLE_IMAGE = EXAMPLE_DAGS / "wavespeed_example_input.png"
I2V = "wavespeed-ai/wan-2.1/i2v-480p"


def _download(url: str) -> bytes:
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    return response.content


def test_upload_and_animate_runs_end_to_end(
    airflow_db: Path, wavespeed_connection: WaveSpeedEmulator, tmp_path: Path
) -> None:
    wavespeed_connection.set_duration(0.2)
    dag = load_dag(EXAMPLE_DAGS / "wavespeed_upload_and_animate.py", "wavespeed_upload_and_animate")
    run = run_dag(dag, run_conf={"output_dir": str(tmp_path)})
    assert task_states(run) == {"upload_image": "success", "animate": "success", "report": "success"}

    url = xcom_value(run, "upload_image")
    assert _download(url) == EXAMPLE_IMAGE.read_bytes()  # the exact file went up
    (submission,) = wavespeed_connection.submissions()
    assert submission["model"] == I2V and submission["inputs"]["image"] == url
    counters = wavespeed_connection.counters()
    # The SDK's two-step flow (ticket, then PUT); the cost guard asked first.
    assert counters["requests"]["upload_ticket"] == counters["requests"]["upload_put"] == 1
    assert counters["requests"]["pricing"] == 1 and counters["upload_put_with_authorization"] == 0

    prediction = xcom_value(run, "animate")
    video = tmp_path / "videos" / f"{prediction['id']}_0.mp4"
    assert prediction["stored_paths"] == [str(video)]
    assert video.read_bytes()[4:8] == b"ftyp"
    assert xcom_value(run, "report") == str(video)


@needs_object_storage
def test_upload_from_object_storage(wavespeed_connection: WaveSpeedEmulator, memory_store: None) -> None:
    from airflow.sdk import ObjectStoragePath

    source = ObjectStoragePath("memory://inbox/frames/cat.png")
    source.write_bytes(EXAMPLE_IMAGE.read_bytes())
    url = WaveSpeedUploadOperator(task_id="up", path=source).execute({})
    assert url.endswith("_cat.png") and _download(url) == EXAMPLE_IMAGE.read_bytes()
    url = WaveSpeedUploadOperator(task_id="up2", path="memory://inbox/frames/cat.png", filename="kitten.png").execute(
        {}
    )
    assert url.endswith("_kitten.png") and _download(url) == EXAMPLE_IMAGE.read_bytes()


def test_upload_of_a_local_path_or_file_url(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    clip = tmp_path / "clip.bin"
    clip.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    for path in (str(clip), f"file://{clip}", clip):
        url = WaveSpeedUploadOperator(task_id="up", path=path).execute({})
        assert _download(url) == clip.read_bytes()
    assert wavespeed_connection.counters()["requests"]["upload_ticket"] == 3


def test_a_missing_file_fails_with_its_path(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(AirflowFailException, match=r"nope\.png"):
        WaveSpeedUploadOperator(task_id="up", path=str(missing)).execute({})
    assert wavespeed_connection.counters()["total_requests"] == 0


def test_a_transient_upload_failure_may_be_retried_by_airflow(
    wavespeed_connection: WaveSpeedEmulator, tmp_path: Path
) -> None:
    wavespeed_connection.add_fault("upload_ticket", "http_error", status=503, times=None)
    image = tmp_path / "a.png"
    image.write_bytes(EXAMPLE_IMAGE.read_bytes())
    operator = WaveSpeedUploadOperator(task_id="up", path=str(image))
    operator.hook.retry = RetryPolicy(max_retries=1, backoff_base=0.01)
    with pytest.raises(AirflowException) as info:
        operator.execute({})
    assert not isinstance(info.value, AirflowFailException)  # an upload is safe to repeat
