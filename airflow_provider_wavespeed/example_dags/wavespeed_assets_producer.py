"""A scheduled content pipeline that publishes an Asset: prompts in, stored images out.

Every day each prompt of ``prompts.txt`` becomes one generation (a mapped task that waits
in the triggerer). Its images are copied to ``output_dir``/<date>/ (WaveSpeed deletes its
own copies after 7 days) and each generation emits an event on the ``wavespeed_generated_images``
Asset whose extra holds ``prediction_id``, ``model`` and ``stored_paths``.
``wavespeed_assets_consumer`` is scheduled on that Asset and picks the new files up.
"""

from __future__ import annotations

import os
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

# Declared identically in wavespeed_assets_consumer.py: an Asset is matched by name and URI.
GENERATED_IMAGES = Asset(name="wavespeed_generated_images", uri="wavespeed://generated-images")
# The prompts.txt beside this file; a copy of this DAG without one uses the file installed with the provider.
_BESIDE = Path(__file__).with_name("prompts.txt")
PROMPTS_FILE = str(_BESIDE if _BESIDE.is_file() else files("airflow_provider_wavespeed.example_dags") / "prompts.txt")
OUTPUT_DIR = os.environ.get("WAVESPEED_OUTPUT_DIR", os.path.join(tempfile.gettempdir(), "wavespeed-output"))

with DAG(
    dag_id="wavespeed_assets_producer",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "prompts_file": Param(PROMPTS_FILE, type="string"),
        "output_dir": Param(OUTPUT_DIR, type="string", description="Local directory or URL (s3://bucket/images)"),
        "size": Param("1024*1024", type="string"),
        "max_cost_usd": Param(0.05, type="number", description="Refuse any generation that costs more"),
    },
    tags=["wavespeed", "example"],
) as dag:

    @task
    def load_prompts(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One model-inputs dict per non-empty, non-comment line of the prompts file."""
        assert params is not None
        lines = Path(params["prompts_file"]).read_text(encoding="utf-8").splitlines()
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [{"prompt": prompt, "size": params["size"], "output_format": "png"} for prompt in prompts]

    WaveSpeedSubmitOperator.partial(
        task_id="generate",
        model="wavespeed-ai/flux-dev",
        wait_for_completion=True,
        poll_interval=2,
        timeout=900,
        max_cost_usd="{{ params.max_cost_usd }}",
        output_path="{{ params.output_dir }}/{{ ds }}",
        outlets=[GENERATED_IMAGES],  # one asset event per generation, with the stored paths as extra
    ).expand(inputs=load_prompts())
