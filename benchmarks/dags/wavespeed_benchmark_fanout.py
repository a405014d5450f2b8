"""The real-Airflow benchmark: N mapped generations with 20 s predictions, waited on two ways.

Four DAGs (N from ``WAVESPEED_BENCH_TASKS``, default 200; started by ``python -m benchmarks``):

- ``wavespeed_benchmark_deferrable`` / ``wavespeed_benchmark_poke``: a mapped task group per
  generation, a submit then a ``WaveSpeedTaskSensor`` that defers to the triggerer, or pokes
  in its worker slot (``deferrable=False, mode="poke"``). Waits outrank submits
  (``weight_rule="upstream"``) so each wait starts as soon as its own submit is done.
- ``wavespeed_benchmark_task_deferrable`` / ``wavespeed_benchmark_task_blocking``: one mapped
  ``WaveSpeedSubmitOperator(wait_for_completion=True)`` per generation that defers, or waits in
  its worker slot; here the wait always covers the whole prediction.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

TASKS = int(os.environ.get("WAVESPEED_BENCH_TASKS", "200"))
POLL_INTERVAL = float(os.environ.get("WAVESPEED_BENCH_POLL_INTERVAL", "5"))
FLUX = "wavespeed-ai/flux-dev"
INPUTS = [{"prompt": f"benchmark image {index}"} for index in range(TASKS)]
DAG_ARGS = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_tasks": 1024,  # the executor's parallelism is the only limit
    "default_args": {"weight_rule": "upstream"},
    "tags": ["wavespeed", "benchmark"],
}

for mode, deferrable in (("deferrable", True), ("poke", False)):
    with DAG(dag_id=f"wavespeed_benchmark_{mode}", **DAG_ARGS):  # type: ignore[arg-type]

        @task_group(group_id="generation")
        def generation(inputs: dict[str, str], deferrable: bool = deferrable) -> None:
            submit = WaveSpeedSubmitOperator(task_id="generate", model=FLUX, inputs=inputs)
            WaveSpeedTaskSensor(
                task_id="wait",
                prediction_id=submit.output,  # type: ignore[arg-type]  # rendered from XCom
                poll_interval=POLL_INTERVAL,
                timeout=1800,
                deferrable=deferrable,
                mode="poke",
            )

        generation.expand(inputs=INPUTS)

for mode, deferrable in (("task_deferrable", True), ("task_blocking", False)):
    with DAG(dag_id=f"wavespeed_benchmark_{mode}", **DAG_ARGS):  # type: ignore[arg-type]
        WaveSpeedSubmitOperator.partial(
            task_id="generate",
            model=FLUX,
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=POLL_INTERVAL,
            timeout=1800,
        ).expand(inputs=INPUTS)
