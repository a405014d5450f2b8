"""The "WaveSpeed model" extra link: persisted to XCom by the generation task, read back by the link."""

from __future__ import annotations

from pathlib import Path

from feature_helpers import EXAMPLE_DAGS, load_dag, run_dag, task_states, xcom_value

from airflow_provider_wavespeed.links import WaveSpeedModelLink
from airflow_provider_wavespeed.testing import WaveSpeedEmulator


def test_the_submit_task_links_to_its_model_page(airflow_db: Path, wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0.2)
    dag = load_dag(EXAMPLE_DAGS / "wavespeed_text_to_image.py", "wavespeed_text_to_image")
    run = run_dag(dag)
    assert set(task_states(run).values()) == {"success"}
    link = WaveSpeedModelLink()
    assert xcom_value(run, "submit", key=link.xcom_key) == "https://wavespeed.ai/models/wavespeed-ai/flux-dev"
    assert link in dag.get_task("submit").operator_extra_links
