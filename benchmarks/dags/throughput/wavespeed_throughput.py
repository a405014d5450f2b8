"""The throughput benchmark's DAGs (``python -m benchmarks throughput``): N generations, four designs.

N from ``WAVESPEED_THROUGHPUT_N`` (default 1,000); every operator keeps the provider's defaults
(poll interval, timeouts, deferrable) and the ``wavespeed_default`` connection. Input ``i`` is
``{"prompt": "throughput image <i>"}`` in every design, so the emulator's submission log tells
how many predictions each input got.

- ``wavespeed_throughput_sensor``: a mapped task group per generation, a submit then a
  deferrable ``WaveSpeedTaskSensor`` (waits outrank submits, as in the fan-out benchmark).
- ``wavespeed_throughput_waiting_submit``: one mapped ``WaveSpeedSubmitOperator(wait_for_completion=True)``
  per generation.
- ``wavespeed_throughput_batch_10`` / ``wavespeed_throughput_batch_1``: ``WaveSpeedBatchOperator``
  mapped over 10 slices of the inputs, or one task for all of them.
- ``wavespeed_throughput_loop_probe``: one task deferred to :class:`benchmarks.loop_probe.LoopLagProbeTrigger`
  while a design runs (the triggerer's event-loop lag); its folder comes in the run's conf.

``WAVESPEED_THROUGHPUT_DAGS`` (comma-separated DAG ids; default all) limits the designs built: at
N = 10,000 every design carries its 10,000 inputs in the serialized DAG, so the benchmark builds
only the ones it runs. ``WAVESPEED_THROUGHPUT_MANIFESTS`` (a folder; set at Gold and Ultra) makes the batch
tasks write their full result there as JSON and keep a small summary in XCom, where the operator
has ``manifest_path``. Needs the repository root on ``PYTHONPATH`` (the probe's module).

Airflow's floor designs (the mapped shapes with no WaveSpeed code) are in ``airflow_floor.py``
beside this file: a task parses the file of its DAG, and the floor's must not import this provider.

This folder is left out of ``benchmarks/dags`` by its ``.airflowignore``: the throughput run
points its deployment here, the fan-out benchmark does not parse these.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from benchmarks.loop_probe import LoopLagProbeOperator

N = int(os.environ.get("WAVESPEED_THROUGHPUT_N", "1000"))
WANTED = {name.strip() for name in os.environ.get("WAVESPEED_THROUGHPUT_DAGS", "").split(",") if name.strip()}
MANIFESTS = os.environ.get("WAVESPEED_THROUGHPUT_MANIFESTS", "")
FLUX = "wavespeed-ai/flux-dev"
INPUTS = [{"prompt": f"throughput image {index}"} for index in range(N)]
DAG_ARGS = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_tasks": 4096,  # the executor's parallelism is the only limit
    "tags": ["wavespeed", "benchmark", "throughput"],
}


def wanted(dag_id: str) -> bool:
    return not WANTED or dag_id in WANTED


def slices(items: list[dict[str, str]], count: int) -> list[list[dict[str, str]]]:
    """``items`` cut into ``count`` consecutive slices of (nearly) equal size, none empty."""
    count = max(1, min(count, len(items)))
    return [items[part * len(items) // count : (part + 1) * len(items) // count] for part in range(count)]


def batch_options() -> dict[str, Any]:
    """``manifest_path`` when asked for and the operator has it (the DAG file parses either way)."""
    if MANIFESTS and "manifest_path" in WaveSpeedBatchOperator.template_fields:
        return {"manifest_path": os.path.join(MANIFESTS, "{{ run_id }}-{{ ti.map_index }}.json")}
    return {}


with DAG(dag_id="wavespeed_throughput_loop_probe", **DAG_ARGS):  # type: ignore[arg-type]
    LoopLagProbeOperator(task_id="probe", folder="{{ dag_run.conf['folder'] }}")

if wanted("wavespeed_throughput_sensor"):
    with DAG(dag_id="wavespeed_throughput_sensor", default_args={"weight_rule": "upstream"}, **DAG_ARGS):  # type: ignore[arg-type]

        @task_group(group_id="generation")
        def generation(inputs: dict[str, str]) -> None:
            submit = WaveSpeedSubmitOperator(task_id="generate", model=FLUX, inputs=inputs)
            WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output)  # type: ignore[arg-type]

        generation.expand(inputs=INPUTS)

if wanted("wavespeed_throughput_waiting_submit"):
    with DAG(dag_id="wavespeed_throughput_waiting_submit", **DAG_ARGS):  # type: ignore[arg-type]
        WaveSpeedSubmitOperator.partial(task_id="generate", model=FLUX, wait_for_completion=True).expand(inputs=INPUTS)

for tasks in (10, 1):
    if wanted(f"wavespeed_throughput_batch_{tasks}"):
        with DAG(dag_id=f"wavespeed_throughput_batch_{tasks}", **DAG_ARGS):  # type: ignore[arg-type]
            WaveSpeedBatchOperator.partial(task_id="batch", model=FLUX, **batch_options()).expand(
                inputs=slices(INPUTS, tasks)
            )
