"""Airflow DAG: a batch waiting in one trigger, whose triggerer the scenario kills (kill -9)."""

from deployment_dag_factory import add_batch, deployment_dag

BATCH_COUNT = 20  # must match test_deployment_6_batch.py

# No retries: the other triggerer must finish the wait, not a second try of the task.
with deployment_dag("wsdeploy_batch_triggerer_kill", retries=0):
    add_batch(BATCH_COUNT, timeout=600)
