"""Airflow DAGs: a waiting task the scenario clears through the REST API while it is deferred
(tests/deployment/test_deployment_10_clear.py): the old try's prediction is cancelled."""

from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

PROMPT = "deployment {{ run_id }} index 0"

# No retries: only the clear starts another try.
with deployment_dag("wsdeploy_clear_sensor", retries=0):  # the sensor starts in the triggerer (3.3+)
    submit = WaveSpeedSubmitOperator(
        task_id="submit", model=MODEL, inputs={"prompt": PROMPT}, wavespeed_conn_id=CONN_ID
    )
    WaveSpeedTaskSensor(
        task_id="wait", prediction_id=submit.output, wavespeed_conn_id=CONN_ID, poll_interval=2.0, timeout=600
    )

with deployment_dag("wsdeploy_clear_worker_sensor", retries=0):  # starts in a worker, then defers
    submit = WaveSpeedSubmitOperator(
        task_id="submit", model=MODEL, inputs={"prompt": PROMPT}, wavespeed_conn_id=CONN_ID
    )
    WaveSpeedTaskSensor(
        task_id="wait",
        prediction_id=submit.output,
        wavespeed_conn_id=CONN_ID,
        poll_interval=2.0,
        timeout=600,
        start_from_trigger=False,
    )

with deployment_dag("wsdeploy_clear_submit", retries=0):  # submits, then defers its wait
    WaveSpeedSubmitOperator(
        task_id="generate",
        model=MODEL,
        inputs={"prompt": PROMPT},
        wavespeed_conn_id=CONN_ID,
        wait_for_completion=True,
        poll_interval=2.0,
        timeout=600,
    )
