"""Text to image: submit a prompt to FLUX, wait in the triggerer, then use the image URLs."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

with DAG(
    dag_id="wavespeed_text_to_image",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"prompt": Param("a lighthouse on a cliff at dawn, watercolor", type="string")},
    tags=["wavespeed", "example"],
) as dag:
    submit = WaveSpeedSubmitOperator(
        task_id="submit",
        model="wavespeed-ai/flux-dev",
        inputs={"prompt": "{{ params.prompt }}", "size": "1024*1024", "num_images": 1},
    )

    # Deferrable by default: the wait runs in the triggerer, not in a worker slot.
    wait = WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output, poll_interval=2, timeout=600)

    @task
    def use_outputs(prediction: dict) -> list[str]:
        """Stand-in for the next step of a pipeline (publish, resize, store...)."""
        urls = [url for url in prediction["outputs"] if isinstance(url, str)]
        for url in urls:
            print(f"generated image: {url}")
        return urls

    use_outputs(wait.output)
