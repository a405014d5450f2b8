"""A scheduled content pipeline: prompts in, one mapped generation per prompt, a manifest out.

Prompts come from ``prompts.txt`` beside this file (or the ``prompts_file`` param); each
becomes a mapped submit + deferrable sensor pair, and the last step writes the generated
output URLs to a JSON manifest in ``WAVESPEED_OUTPUT_DIR`` (default: the temp directory).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

PROMPTS_FILE = str(Path(__file__).with_name("prompts.txt"))

with DAG(
    dag_id="wavespeed_content_pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "prompts_file": Param(PROMPTS_FILE, type="string"),
        "size": Param("1024*1024", type="string"),
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

    submit = WaveSpeedSubmitOperator.partial(task_id="submit", model="wavespeed-ai/flux-dev").expand(
        inputs=load_prompts()
    )
    wait = WaveSpeedTaskSensor.partial(task_id="wait", poll_interval=2, timeout=900).expand(prediction_id=submit.output)

    @task
    def write_manifest(predictions: list[dict[str, Any]], run_id: str | None = None) -> str:
        """Collect every generated output URL into a manifest file; return its path."""
        out_dir = Path(os.environ.get("WAVESPEED_OUTPUT_DIR", Path(tempfile.gettempdir()) / "wavespeed-output"))
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = [
            {"prediction_id": p["id"], "model": p["model"], "outputs": p["outputs"], "timings": p["timings"]}
            for p in predictions
        ]
        safe_run_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in (run_id or "manual"))
        path = out_dir / f"manifest_{safe_run_id}.json"
        path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        print(f"manifest of {len(manifest)} generations written to {path}")
        for entry in manifest:
            print(f"{entry['prediction_id']}: {', '.join(map(str, entry['outputs']))}")
        return str(path)

    write_manifest(wait.output)
