"""Shared building blocks of the deployment-tier DAGs (not a DAG file: see .airflowignore).

A generation is a mapped task group `generate` of submit -> deferrable sensor, so sensor i
starts as soon as submit i is done. Every prompt names the run and the map index, so the
emulator's submission log proves exactly one submission per index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

CONN_ID = "wavespeed_deploy"  # the harness sets AIRFLOW_CONN_WAVESPEED_DEPLOY (emulator URL + key)
LIMITED_CONN_ID = "wavespeed_deploy_limited"  # the same, with a request budget for the rate-limit scenario
HTTP_CONN_ID = "wavespeed_deploy_http"  # plain http to a non-loopback host: must be refused
MODEL = "wavespeed-ai/flux-dev"
PROMPT = "deployment {{ run_id }} index {{ ti.map_index }}"


def deployment_dag(dag_id: str, **default_args: Any) -> DAG:
    """A manually triggered DAG; sensors outrank submits so they defer while predictions run.

    Retries stay at the operators' own defaults unless a scenario sets them.
    """
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=1000,
        default_args={"weight_rule": "upstream", **default_args},
        tags=["wavespeed-deployment-test"],
    )


def add_generations(
    count: int,
    *,
    group_id: str = "generate",
    model: str = MODEL,
    poll_interval: float = 2.0,
    timeout: float = 600.0,
    conn_id: str = CONN_ID,
    submit_pool: str | None = None,
) -> None:
    """``count`` mapped submit -> sensor pairs in the current DAG (submits in ``submit_pool``, if given)."""

    @task_group(group_id=group_id)
    def generate(seed: int) -> None:
        submit = WaveSpeedSubmitOperator(
            task_id="submit",
            model=model,
            inputs={"prompt": PROMPT, "seed": seed},
            wavespeed_conn_id=conn_id,
            **({"pool": submit_pool} if submit_pool else {}),
        )
        WaveSpeedTaskSensor(
            task_id="wait",
            prediction_id=submit.output,
            wavespeed_conn_id=conn_id,
            poll_interval=poll_interval,
            timeout=timeout,
        )

    generate.expand(seed=list(range(count)))


def add_batch(count: int, **kwargs: Any) -> WaveSpeedBatchOperator:
    """A ``WaveSpeedBatchOperator`` ``batch`` of ``count`` inputs in the current DAG (``kwargs``: its options).

    Input ``i``'s prompt names the run and ``i``, as the generations' prompts do, so the emulator's
    log proves one submission per input.
    """
    return WaveSpeedBatchOperator(
        task_id="batch",
        model=MODEL,
        inputs=[{"prompt": f"deployment {{{{ run_id }}}} index {index}"} for index in range(count)],
        wavespeed_conn_id=CONN_ID,
        poll_interval=1.0,
        **kwargs,
    )
