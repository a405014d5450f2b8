"""Airflow DAG: one submit whose answer the emulator drops (the prediction is created): adopted from the history."""

from __future__ import annotations

from datetime import timedelta

from deployment_dag_factory import CONN_ID, MODEL, PROMPT, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

with deployment_dag("wsdeploy_submit_dropped", retries=1, retry_delay=timedelta(seconds=1)):
    WaveSpeedSubmitOperator(
        task_id="submit",
        model=MODEL,
        inputs={"prompt": PROMPT, "seed": 2},
        wavespeed_conn_id=CONN_ID,
        wait_for_completion=True,
        poll_interval=1.0,
        timeout=120,
    )
