"""Airflow DAG: API outage: the emulator fails every poll for 60 s while the sensors are deferred."""

from deployment_dag_factory import add_generations, deployment_dag

with deployment_dag("wsdeploy_api_outage"):
    add_generations(10, poll_interval=3.0)
