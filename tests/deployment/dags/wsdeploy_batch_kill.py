"""Airflow DAG: a batch of generations in one task, whose worker the scenario kills (kill -9) mid-batch."""

from datetime import timedelta

from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator

BATCH_COUNT = 20  # these two must match test_deployment_6_batch.py
SUBMIT_WINDOW = 5

with deployment_dag("wsdeploy_batch_kill", retries=1, retry_delay=timedelta(seconds=1)):
    WaveSpeedBatchOperator(
        task_id="batch",
        model=MODEL,
        # The prompt names the run and the index, so the emulator's log proves one submission per input.
        inputs=[{"prompt": f"deployment {{{{ run_id }}}} index {index}"} for index in range(BATCH_COUNT)],
        wavespeed_conn_id=CONN_ID,
        submit_window=SUBMIT_WINDOW,
        max_failed=SUBMIT_WINDOW,  # the window in flight at the kill is uncertain: reported, never resent
        poll_interval=1.0,
        timeout=300,
    )
