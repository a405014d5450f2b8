"""Airflow DAG: a deferred sensor the scenario marks failed through the REST API: its prediction is cancelled."""

from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

# No retries: a failed try must not start another wait (nor a second cancel).
with deployment_dag("wsdeploy_cancel_sensor", retries=0):
    submit = WaveSpeedSubmitOperator(
        task_id="submit",
        model=MODEL,
        inputs={"prompt": "deployment {{ run_id }} index 0"},
        wavespeed_conn_id=CONN_ID,
    )
    WaveSpeedTaskSensor(
        task_id="wait", prediction_id=submit.output, wavespeed_conn_id=CONN_ID, poll_interval=2.0, timeout=600
    )
