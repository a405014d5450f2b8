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

This folder is left out of ``benchmarks/dags`` by its ``.airflowignore``: the throughput run
points its deployment here, the fan-out benchmark does not parse these.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

N = int(os.environ.get("WAVESPEED_THROUGHPUT_N", "1000"))
FLUX = "wavespeed-ai/flux-dev"
INPUTS = [{"prompt": f"throughput image {index}"} for index in range(N)]
DAG_ARGS = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_tasks": 4096,  # the executor's parallelism is the only limit
    "tags": ["wavespeed", "benchmark", "throughput"],
}


def slices(items: list[dict[str, str]], count: int) -> list[list[dict[str, str]]]:
    """``items`` cut into ``count`` consecutive slices of (nearly) equal size, none empty."""
    count = max(1, min(count, len(items)))
    return [items[part * len(items) // count : (part + 1) * len(items) // count] for part in range(count)]


with DAG(dag_id="wavespeed_throughput_sensor", default_args={"weight_rule": "upstream"}, **DAG_ARGS):  # type: ignore[arg-type]

    @task_group(group_id="generation")
    def generation(inputs: dict[str, str]) -> None:
        submit = WaveSpeedSubmitOperator(task_id="generate", model=FLUX, inputs=inputs)
        WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output)  # type: ignore[arg-type]

    generation.expand(inputs=INPUTS)

with DAG(dag_id="wavespeed_throughput_waiting_submit", **DAG_ARGS):  # type: ignore[arg-type]
    WaveSpeedSubmitOperator.partial(task_id="generate", model=FLUX, wait_for_completion=True).expand(inputs=INPUTS)

for tasks in (10, 1):
    with DAG(dag_id=f"wavespeed_throughput_batch_{tasks}", **DAG_ARGS):  # type: ignore[arg-type]
        WaveSpeedBatchOperator.partial(task_id="batch", model=FLUX).expand(inputs=slices(INPUTS, tasks))
