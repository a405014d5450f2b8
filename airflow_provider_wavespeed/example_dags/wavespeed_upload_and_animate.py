"""Animate a local image: upload it to WaveSpeed, turn it into a video, keep the video.

``WaveSpeedUploadOperator`` streams the file to WaveSpeed (an upload ticket, then a ``PUT``) and returns its
download URL, which the image-to-video model takes as its ``image`` input. The video is
copied to ``output_dir`` (a local directory or a URL such as ``s3://bucket/videos/``), since
WaveSpeed deletes generated files after 7 days. The cost guard refuses to submit a video
that would cost more than ``max_cost_usd``.
"""

from __future__ import annotations

import os
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_wavespeed.operators.upload import WaveSpeedUploadOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

# The image beside this file; a copy of this DAG without one uses the image installed with the provider.
_NAME = "wavespeed_example_input.png"
_BESIDE = Path(__file__).with_name(_NAME)
EXAMPLE_IMAGE = str(_BESIDE if _BESIDE.is_file() else files("airflow_provider_wavespeed.example_dags") / _NAME)
OUTPUT_DIR = os.environ.get("WAVESPEED_OUTPUT_DIR", os.path.join(tempfile.gettempdir(), "wavespeed-output"))

with DAG(
    dag_id="wavespeed_upload_and_animate",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "image_path": Param(EXAMPLE_IMAGE, type="string", description="Local path or URL of the image"),
        "motion": Param("the colours drift slowly like a sunrise", type="string"),
        "output_dir": Param(OUTPUT_DIR, type="string", description="Where the video is stored"),
        "max_cost_usd": Param(1.0, type="number", description="Refuse videos that cost more"),
    },
    tags=["wavespeed", "example"],
) as dag:
    upload = WaveSpeedUploadOperator(task_id="upload_image", path="{{ params.image_path }}")

    animate = WaveSpeedSubmitOperator(
        task_id="animate",
        model="wavespeed-ai/wan-2.1/i2v-480p",
        inputs={
            "prompt": "{{ params.motion }}",
            "image": upload.output,  # the download URL returned by the upload
            "size": "832*480",
            "duration": 5,
        },
        max_cost_usd="{{ params.max_cost_usd }}",
        wait_for_completion=True,  # deferred: waits in the triggerer, not in a worker slot
        poll_interval=5,
        timeout=1800,
        output_path="{{ params.output_dir }}/videos",
    )

    @task
    def report(prediction: dict[str, Any]) -> str:
        """Stand-in for publishing: the stored video's path."""
        video = prediction["stored_paths"][0]
        print(f"prediction {prediction['id']}: video stored at {video}")
        return str(video)

    report(animate.output)
