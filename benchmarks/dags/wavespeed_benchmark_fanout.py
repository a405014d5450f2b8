"""The real-Airflow benchmark: N mapped generations, each a submit then a wait on its prediction.

Two DAGs differ only in the wait: ``wavespeed_benchmark_deferrable`` defers it to the
triggerer, ``wavespeed_benchmark_poke`` pokes in a worker slot (``mode="poke"``). N comes
from ``WAVESPEED_BENCH_TASKS`` (default 200); started by ``python -m benchmarks``.

The pair is a mapped task group, so each wait starts as soon as its own submit is done
(mapping the sensor over the submit's output would start every wait only after the last
submit, when most predictions are already finished and there is nothing left to wait for).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

TASKS = int(os.environ.get("WAVESPEED_BENCH_TASKS", "200"))
POLL_INTERVAL = float(os.environ.get("WAVESPEED_BENCH_POLL_INTERVAL", "5"))

for mode, deferrable in (("deferrable", True), ("poke", False)):
    with DAG(
        dag_id=f"wavespeed_benchmark_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_tasks=1024,  # the executor's parallelism is the only limit
        tags=["wavespeed", "benchmark"],
    ):

        @task_group(group_id="generation")
        def generation(inputs: dict[str, str], deferrable: bool = deferrable) -> None:
            submit = WaveSpeedSubmitOperator(task_id="generate", model="wavespeed-ai/flux-dev", inputs=inputs)
            WaveSpeedTaskSensor(
                task_id="wait",
                prediction_id=submit.output,  # type: ignore[arg-type]  # rendered from XCom
                poll_interval=POLL_INTERVAL,
                timeout=1800,
                deferrable=deferrable,
                mode="poke",
            )

        generation.expand(inputs=[{"prompt": f"benchmark image {index}"} for index in range(TASKS)])
