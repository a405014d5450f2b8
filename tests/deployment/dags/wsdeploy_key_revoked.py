"""Airflow DAG: Key revoked mid-run. Retries are on: a bad key must still fail at once (no retry can fix it)."""

from datetime import timedelta

from deployment_dag_factory import add_generations, deployment_dag

with deployment_dag("wsdeploy_key_revoked", retries=3, retry_delay=timedelta(seconds=5)):
    add_generations(10, poll_interval=2.0)
