"""Airflow DAG: a batch waiting in one trigger, whose triggerer the scenario kills (kill -9)."""

from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator

BATCH_COUNT = 20  # must match test_deployment_6_batch.py

# No retries: the other triggerer must finish the wait, not a second try of the task.
with deployment_dag("wsdeploy_batch_triggerer_kill", retries=0):
    WaveSpeedBatchOperator(
        task_id="batch",
        model=MODEL,
        inputs=[{"prompt": f"deployment {{{{ run_id }}}} index {index}"} for index in range(BATCH_COUNT)],
        wavespeed_conn_id=CONN_ID,
        poll_interval=1.0,
        timeout=600,
    )
