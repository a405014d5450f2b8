"""A scheduled content pipeline: prompts in, one mapped generation per prompt, a gallery out.

Prompts come from ``prompts.txt`` beside this file (else the one installed with the provider; or
the ``prompts_file`` param); each becomes a mapped submit + deferrable sensor pair. The sensor
copies the generated files to ``<WAVESPEED_OUTPUT_DIR>/<run id>/`` (its ``output_path``; default:
the temp directory), and the last step writes ``manifest.json`` and a static ``index.html`` gallery beside them:
each image with its prompt, model, prediction id and timings.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

# The prompts.txt beside this file; a copy of this DAG without one uses the file installed with the provider.
_BESIDE = Path(__file__).with_name("prompts.txt")
PROMPTS_FILE = str(_BESIDE if _BESIDE.is_file() else files("airflow_provider_wavespeed.example_dags") / "prompts.txt")
OUTPUT_DIR = os.environ.get("WAVESPEED_OUTPUT_DIR", os.path.join(tempfile.gettempdir(), "wavespeed-output"))
IMAGE_EXTENSIONS = (".png", ".jpeg", ".jpg", ".webp", ".gif")


def safe_name(text: str | None) -> str:
    """Return a run id as a folder name.

    ``scheduled__2026-01-01T00:00:00+00:00`` becomes ``scheduled__2026-01-01T00_00_00_00_00``.
    """
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in (text or "manual"))


def gallery_html(title: str, subtitle: str, entries: list[dict[str, Any]]) -> str:
    """Return a self-contained page: one figure per stored output, captioned with where it came from."""
    figures = []
    for entry in entries:
        timings = ", ".join(f"{name} {value:g} ms" for name, value in (entry["timings"] or {}).items()) or "n/a"
        caption = (
            f"<figcaption><p class='prompt'>{html.escape(entry['prompt'])}</p>"
            f"<dl><dt>model</dt><dd>{html.escape(entry['model'])}</dd>"
            f"<dt>size</dt><dd>{html.escape(str(entry.get('size') or 'default'))}</dd>"
            f"<dt>prediction</dt><dd><code>{html.escape(entry['prediction_id'])}</code></dd>"
            f"<dt>timings</dt><dd>{html.escape(timings)}</dd></dl></figcaption>"
        )
        for name in entry["files"]:
            src = html.escape(name, quote=True)
            media = (
                f"<a href='{src}'><img src='{src}' alt='{html.escape(entry['prompt'], quote=True)}'></a>"
                if name.lower().endswith(IMAGE_EXTENSIONS)
                else f"<a href='{src}'>{html.escape(name)}</a>"
            )
            figures.append(f"<figure>{media}{caption}</figure>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; background: #f4f4f6; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }}
header p {{ margin: 0 0 16px; color: #555; font-size: 13px; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 16px; }}
figure {{ margin: 0; background: #fff; border-radius: 8px; padding: 10px; box-shadow: 0 1px 3px #0002; }}
img {{ width: 100%; height: auto; display: block; border-radius: 4px; }}
.prompt {{ font-weight: 600; margin: 8px 0 4px; }}
dl {{ display: grid; grid-template-columns: auto 1fr; gap: 2px 8px; margin: 0; font-size: 12px; color: #555; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; overflow-wrap: anywhere; }}
</style></head>
<body><header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header><main>
{chr(10).join(figures)}
</main></body></html>
"""


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
    user_defined_filters={"safe_name": safe_name},
    tags=["wavespeed", "example"],
) as dag:

    @task
    def load_prompts(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One model-inputs dict per non-empty, non-comment line of the prompts file."""
        assert params is not None
        lines = Path(params["prompts_file"]).read_text(encoding="utf-8").splitlines()
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [{"prompt": prompt, "size": params["size"], "output_format": "png"} for prompt in prompts]

    inputs = load_prompts()
    submit = WaveSpeedSubmitOperator.partial(task_id="submit", model="wavespeed-ai/flux-dev").expand(inputs=inputs)
    # The provider copies each prediction's files into this run's folder (WaveSpeed deletes them after 7 days).
    # Retries are given here because a mapped task's are fixed by .partial(), not by the sensor's
    # own default: they cover Airflow's scheduler failing a resumed sensor whose trigger fired
    # before the deferring worker's exit was processed (apache/airflow#72716, seen on a busy
    # machine). A retry only waits on the same prediction again: nothing is submitted twice.
    wait = WaveSpeedTaskSensor.partial(
        task_id="wait",
        poll_interval=2,
        timeout=900,
        output_path=OUTPUT_DIR + "/{{ run_id | safe_name }}",
        retries=2,
        retry_delay=timedelta(seconds=5),
    ).expand(prediction_id=submit.output)

    @task
    def write_manifest(
        inputs: list[dict[str, Any]], predictions: list[dict[str, Any]], run_id: str | None = None
    ) -> str:
        """Write manifest.json and the index.html gallery beside the stored outputs; return the gallery's path."""
        run_dir = Path(OUTPUT_DIR) / safe_name(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = [
            {
                "prompt": model_inputs["prompt"],
                "size": model_inputs["size"],
                "prediction_id": p["id"],
                "model": p["model"],
                "timings": p.get("timings") or {},
                "outputs": p["outputs"],
                "files": [Path(path).name for path in p.get("stored_paths", [])],
            }
            # Both in map-index order. predictions[:] reads every value in one request; iterating the lazy
            # sequence itself asks for one item past its end, which Airflow logs as an error.
            for model_inputs, p in zip(inputs, predictions[:], strict=True)
        ]
        (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        gallery = run_dir / "index.html"
        subtitle = (
            f"{len(manifest)} generations, copied here by WaveSpeedTaskSensor(output_path=...); "
            "the list with the output URLs is manifest.json"
        )
        page = gallery_html(f"wavespeed_content_pipeline: {run_id}", subtitle, manifest)
        gallery.write_text(page, encoding="utf-8")
        print(f"{len(manifest)} generations stored in {run_dir}; gallery: {gallery}")
        for entry in manifest:
            print(f"{entry['prediction_id']}: {', '.join(entry['files'])} <- {entry['prompt']!r}")
        return str(gallery)

    write_manifest(inputs, wait.output)
