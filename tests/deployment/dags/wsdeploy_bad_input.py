"""Bad DAG input: every task must fail before a single request reaches the API.

Retries are on, to show that input errors are final (a retry would only fail again).
"""

from datetime import timedelta

from deployment_dag_factory import CONN_ID, HTTP_CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

BAD_MODELS = {
    "model_traversal": "../../balance",
    "model_query": "wavespeed-ai/flux-dev?webhook=x",
    "model_space": "wavespeed-ai/flux dev",
}
BAD_INPUTS = {"inputs_not_json": "prompt=a cat", "inputs_not_object": "[1, 2, 3]"}
BAD_PREDICTION_IDS = {"prediction_id_traversal": "../../balance", "prediction_id_path": "abc/def?x=1"}

with deployment_dag("wsdeploy_bad_input", retries=2, retry_delay=timedelta(seconds=5)):
    for task_id, model in BAD_MODELS.items():
        WaveSpeedSubmitOperator(task_id=task_id, model=model, inputs={"prompt": "x"}, wavespeed_conn_id=CONN_ID)
    for task_id, inputs in BAD_INPUTS.items():
        WaveSpeedSubmitOperator(task_id=task_id, model=MODEL, inputs=inputs, wavespeed_conn_id=CONN_ID)
    for task_id, prediction_id in BAD_PREDICTION_IDS.items():
        WaveSpeedTaskSensor(task_id=task_id, prediction_id=prediction_id, wavespeed_conn_id=CONN_ID)
    WaveSpeedSubmitOperator(
        task_id="http_base_url_submit", model=MODEL, inputs={"prompt": "x"}, wavespeed_conn_id=HTTP_CONN_ID
    )
    WaveSpeedTaskSensor(
        task_id="http_base_url_sensor", prediction_id="0123456789abcdef", wavespeed_conn_id=HTTP_CONN_ID
    )
