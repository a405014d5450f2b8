"""Airflow DAG: Rate limit: the emulator runs a low account tier; every task must still succeed.

The connection keeps the default submission budget (500/min per process), far above the tier:
the submits, which run in separate worker processes, get 429 + Retry-After and wait it out; they
go through a small Airflow pool. Polls are not tier-limited and have no budget.
"""

from deployment_dag_factory import LIMITED_CONN_ID, add_generations, deployment_dag

SUBMIT_POOL = "wavespeed_rate_limited"  # created by the test (4 slots)

with deployment_dag("wsdeploy_rate_limit"):
    add_generations(12, poll_interval=1.0, conn_id=LIMITED_CONN_ID, submit_pool=SUBMIT_POOL)
