"""Airflow DAG: Rate limit: the emulator answers 429 + Retry-After beyond its limit; every task must still succeed.

The connection keeps the default request budget (8/s per triggerer), four times the account's
limit for two triggerers: the 429s must teach the triggerers' shared limiters the real limit.
The submits, which run in separate worker processes that cannot share a budget, go through a
small Airflow pool, as the README advises for rate-limited accounts.
"""

from deployment_dag_factory import LIMITED_CONN_ID, add_generations, deployment_dag

SUBMIT_POOL = "wavespeed_rate_limited"  # created by the test (4 slots)

with deployment_dag("wsdeploy_rate_limit"):
    add_generations(24, poll_interval=1.0, conn_id=LIMITED_CONN_ID, submit_pool=SUBMIT_POOL)
