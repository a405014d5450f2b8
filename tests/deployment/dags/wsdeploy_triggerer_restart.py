"""Airflow DAG: a deferred sensor and a batch waiting while the scenario stops every triggerer and starts them again."""

from deployment_dag_factory import CONN_ID, MODEL, add_batch, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

BATCH_COUNT = 5  # must match test_deployment_11_triggerer_restart.py

# No retries: the restarted triggerers must finish the waits, not a second try of a task.
with deployment_dag("wsdeploy_triggerer_restart", retries=0):
    submit = WaveSpeedSubmitOperator(
        task_id="submit",
        model=MODEL,
        inputs={"prompt": "deployment {{ run_id }} index 100"},
        wavespeed_conn_id=CONN_ID,
    )
    WaveSpeedTaskSensor(
        task_id="wait", prediction_id=submit.output, wavespeed_conn_id=CONN_ID, poll_interval=1.0, timeout=600
    )
    add_batch(BATCH_COUNT, timeout=600)
