"""Airflow DAG: Rate limit: the emulator answers 429 + Retry-After beyond its limit; every task must still succeed.

Configured as a rate-limited account should be: the connection's request budget (per
triggerer) is the account's limit split between the two triggerers, and the submits, which
run in separate worker processes that cannot share a budget, go through a small Airflow pool.
"""

from deployment_dag_factory import LIMITED_CONN_ID, add_generations, deployment_dag

SUBMIT_POOL = "wavespeed_rate_limited"  # created by the test (4 slots)

with deployment_dag("wsdeploy_rate_limit"):
    add_generations(24, poll_interval=1.0, conn_id=LIMITED_CONN_ID, submit_pool=SUBMIT_POOL)
