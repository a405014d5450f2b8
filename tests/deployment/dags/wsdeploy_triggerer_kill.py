"""Airflow DAG: Triggerer killed: generations that outlive the takeover, and probes whose predictions never
finish in time, so their wait limit (an absolute end_time) must hold across the move."""

from deployment_dag_factory import add_generations, deployment_dag

PROBE_MODEL = "deploy-test/long-running"
PROBE_TIMEOUT = 240.0

with deployment_dag("wsdeploy_triggerer_kill"):
    add_generations(30, poll_interval=3.0)
    add_generations(6, group_id="probe", model=PROBE_MODEL, poll_interval=3.0, timeout=PROBE_TIMEOUT)
