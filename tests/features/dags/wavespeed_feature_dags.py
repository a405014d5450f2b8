"""DAGs for the content-pipeline feature tests (loaded and stored by feature_helpers.run_dag).

Everything a test varies comes in through params (``dag.test(run_conf=...)``), with short
poll intervals so each wait takes about a second against the emulator.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

FEATURE_ASSET = Asset(name="wavespeed_feature_images", uri="wavespeed://feature-tests/images")
START = pendulum.datetime(2026, 1, 1, tz="UTC")
INPUTS = "{{ params.inputs | tojson }}"  # validate_inputs accepts a JSON object string
OUT = "{{ params.output_dir }}"

with DAG(
    dag_id="wavespeed_feature_store",
    schedule=None,
    start_date=START,
    params={
        "model": Param("wavespeed-ai/flux-dev", type="string"),
        "inputs": Param({"prompt": "a red kite", "num_images": 2, "output_format": "png"}, type="object"),
        "output_dir": Param("/tmp/wavespeed-feature-store", type="string"),
    },
) as store_dag:
    # The four ways a completed prediction reaches a task, each storing its outputs.
    WaveSpeedSubmitOperator(
        task_id="submit_deferred",
        model="{{ params.model }}",
        inputs=INPUTS,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.5,
        output_path=f"{OUT}/submit_deferred",
        outlets=[FEATURE_ASSET],
    )
    WaveSpeedSubmitOperator(
        task_id="submit_blocking",
        model="{{ params.model }}",
        inputs=INPUTS,
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.5,
        output_path=f"file://{OUT}/submit_blocking/",
        outlets=[FEATURE_ASSET],
    )
    submitted = WaveSpeedSubmitOperator(task_id="submit_only", model="{{ params.model }}", inputs=INPUTS)
    WaveSpeedTaskSensor(
        task_id="sensor_deferred",
        prediction_id=submitted.output,
        poll_interval=0.5,
        timeout=60,
        output_path=f"{OUT}/sensor_deferred",
        outlets=[FEATURE_ASSET],
    )
    WaveSpeedTaskSensor(
        task_id="sensor_poke",
        prediction_id=submitted.output,
        poll_interval=0.5,
        timeout=60,
        deferrable=False,
        mode="poke",
        output_path=f"{OUT}/sensor_poke",
    )

with DAG(
    dag_id="wavespeed_feature_large_outputs",
    schedule=None,
    start_date=START,
    params={
        "inputs": Param(
            {"prompt": "a kite", "num_images": 4, "output_format": "png", "enable_base64_output": True},
            type="object",
        ),
        "output_dir": Param("/tmp/wavespeed-feature-large", type="string"),
    },
) as large_dag:
    WaveSpeedSubmitOperator(
        task_id="submit_stored",
        model="wavespeed-ai/flux-dev",
        inputs=INPUTS,
        wait_for_completion=True,
        poll_interval=0.5,
        output_path=f"{OUT}/submit",
    )
    WaveSpeedSubmitOperator(
        task_id="submit_unstored",
        model="wavespeed-ai/flux-dev",
        inputs=INPUTS,
        wait_for_completion=True,
        poll_interval=0.5,
    )
    large = WaveSpeedSubmitOperator(task_id="submit_only", model="wavespeed-ai/flux-dev", inputs=INPUTS)
    WaveSpeedTaskSensor(
        task_id="sensor_stored", prediction_id=large.output, poll_interval=0.5, timeout=60, output_path=f"{OUT}/sensor"
    )

with DAG(
    dag_id="wavespeed_feature_cost_guard",
    schedule=None,
    start_date=START,
    params={
        "model": Param("wavespeed-ai/flux-dev", type="string"),
        "inputs": Param({"prompt": "a lantern"}, type="object"),
        "max_cost_usd": Param(None, type=["null", "number"]),
        "min_balance_usd": Param(None, type=["null", "number"]),
    },
) as cost_dag:
    WaveSpeedSubmitOperator(
        task_id="submit",
        model="{{ params.model }}",
        inputs=INPUTS,
        max_cost_usd="{{ params.max_cost_usd }}",
        min_balance_usd="{{ params.min_balance_usd }}",
    )

with DAG(
    dag_id="wavespeed_feature_webhook",
    schedule=None,
    start_date=START,
    params={"webhook": Param("http://127.0.0.1:9/hook", type="string")},
) as webhook_dag:
    WaveSpeedSubmitOperator(
        task_id="submit",
        model="wavespeed-ai/flux-dev",
        inputs={"prompt": "a paper boat"},
        webhook="{{ params.webhook }}",
    )
