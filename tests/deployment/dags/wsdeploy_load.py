"""Airflow DAG: Load and secret audit: 200 generations in one run, predictions 10-40 s (set on the emulator)."""

from deployment_dag_factory import add_generations, deployment_dag

with deployment_dag("wsdeploy_load"):
    add_generations(200, poll_interval=5.0)
