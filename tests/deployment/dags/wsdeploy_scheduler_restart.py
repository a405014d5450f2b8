"""Airflow DAG: Scheduler restarted while generations are submitted and deferred."""

from deployment_dag_factory import add_generations, deployment_dag

with deployment_dag("wsdeploy_scheduler_restart"):
    add_generations(20, poll_interval=2.0)
