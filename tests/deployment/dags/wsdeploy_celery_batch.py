"""Airflow DAG: a batch of 50 generations in one task, on the CeleryExecutor's workers (load scenario)."""

from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator

BATCH_COUNT = 50  # must match test_deployment_7_celery.py

with deployment_dag("wsdeploy_celery_batch"):
    WaveSpeedBatchOperator(
        task_id="batch",
        model=MODEL,
        # The prompt names the run and the index, so the emulator's log proves one submission per input.
        inputs=[{"prompt": f"deployment {{{{ run_id }}}} index {index}"} for index in range(BATCH_COUNT)],
        wavespeed_conn_id=CONN_ID,
        poll_interval=1.0,
        timeout=300,
    )
