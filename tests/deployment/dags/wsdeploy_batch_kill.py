"""Airflow DAG: a batch of generations in one task, whose worker the scenario kills (kill -9) mid-batch."""

from datetime import timedelta

from deployment_dag_factory import add_batch, deployment_dag

BATCH_COUNT = 20  # these two must match deployment_harness.py (BATCH_KILL_COUNT, BATCH_KILL_WINDOW)
SUBMIT_WINDOW = 5

with deployment_dag("wsdeploy_batch_kill", retries=1, retry_delay=timedelta(seconds=1)):
    add_batch(
        BATCH_COUNT,
        submit_window=SUBMIT_WINDOW,
        max_failed=SUBMIT_WINDOW,  # the window in flight at the kill is adopted from the history (else: uncertain)
        timeout=300,
    )
