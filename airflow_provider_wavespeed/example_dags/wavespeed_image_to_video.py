"""Chaining models: text to image, then image to video fed by the first image's URL via XCom."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

with DAG(
    dag_id="wavespeed_image_to_video",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "prompt": Param("a sailing boat on a calm sea at sunset", type="string"),
        "motion": Param("the boat drifts slowly, waves shimmer", type="string"),
    },
    tags=["wavespeed", "example"],
) as dag:
    # Submit and wait in one task (deferred), returning the completed prediction.
    image = WaveSpeedSubmitOperator(
        task_id="text_to_image",
        model="wavespeed-ai/flux-dev",
        inputs={"prompt": "{{ params.prompt }}", "size": "1024*576"},
        wait_for_completion=True,
        poll_interval=2,
    )

    video = WaveSpeedSubmitOperator(
        task_id="image_to_video",
        model="wavespeed-ai/wan-2.1/i2v-480p",
        inputs={
            "prompt": "{{ params.motion }}",
            "image": "{{ ti.xcom_pull(task_ids='text_to_image')['outputs'][0] }}",
            "duration": 5,
        },
    )
    image >> video

    wait_video = WaveSpeedTaskSensor(
        task_id="wait_for_video", prediction_id=video.output, poll_interval=5, timeout=1800
    )

    @task
    def report(image_prediction: dict, video_prediction: dict) -> dict:
        result = {"image": image_prediction["outputs"][0], "video": video_prediction["outputs"][0]}
        print(f"image {result['image']} became video {result['video']}")
        return result

    report(image.output, wait_video.output)
