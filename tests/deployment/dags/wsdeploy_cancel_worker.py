"""Airflow DAG: a sensor poking in a worker (deferrable=False), marked failed through the REST API: its
on_kill cancels the prediction."""

from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

with deployment_dag("wsdeploy_cancel_worker", retries=0):
    submit = WaveSpeedSubmitOperator(
        task_id="submit",
        model=MODEL,
        inputs={"prompt": "deployment {{ run_id }} index 0"},
        wavespeed_conn_id=CONN_ID,
    )
    WaveSpeedTaskSensor(
        task_id="wait",
        prediction_id=submit.output,
        wavespeed_conn_id=CONN_ID,
        poll_interval=2.0,
        timeout=600,
        deferrable=False,
    )
