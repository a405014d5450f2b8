"""Airflow DAG: one waiting submit whose trigger meets a non-WaveSpeed exception in the real triggerer.

Its connection (``wavespeed_deploy_nesting``, created by the scenario through the REST API) points at a
loopback proxy in front of the emulator that answers the first result poll with JSON nested deeper
than Python's recursion limit: the trigger's decode raises ``RecursionError``. With ``retries=1`` the
retry must resume the same prediction, never submit a second one.
"""

from __future__ import annotations

from datetime import timedelta

from deployment_dag_factory import MODEL, PROMPT, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

NESTING_CONN_ID = "wavespeed_deploy_nesting"

with deployment_dag("wsdeploy_trigger_crash", retries=1, retry_delay=timedelta(seconds=1)):
    WaveSpeedSubmitOperator(
        task_id="submit",
        model=MODEL,
        inputs={"prompt": PROMPT, "seed": 1},
        wavespeed_conn_id=NESTING_CONN_ID,
        wait_for_completion=True,
        poll_interval=1.0,
        timeout=120,
    )
