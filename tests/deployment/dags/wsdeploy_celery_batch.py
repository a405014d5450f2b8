"""Airflow DAG: a batch of 50 generations in one task, on the CeleryExecutor's workers (load scenario)."""

from deployment_dag_factory import add_batch, deployment_dag

BATCH_COUNT = 50  # must match test_deployment_7_celery.py

with deployment_dag("wsdeploy_celery_batch"):
    add_batch(BATCH_COUNT, timeout=300)
