"""Airflow DAG: a batch of 50 waiting in its trigger, marked failed through the REST API: its unfinished
predictions are cancelled, its completed ones left alone."""

from deployment_dag_factory import add_batch, deployment_dag

BATCH_COUNT = 50  # must match test_deployment_8_cancel.py

with deployment_dag("wsdeploy_cancel_batch", retries=0):
    add_batch(BATCH_COUNT, timeout=600)
