"""Assets: the producer's generations emit asset events with their stored paths; the consumer reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from feature_helpers import EXAMPLE_DAGS, asset_events, load_dag, run_dag, task_states, xcom_value

from airflow_provider_wavespeed.testing import WaveSpeedEmulator

ASSET = "wavespeed_generated_images"
FLUX = "wavespeed-ai/flux-dev"


def _produce(tmp_path: Path, prompts: list[str]) -> tuple[Any, dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("# test prompts\n" + "\n".join(prompts) + "\n", encoding="utf-8")
    producer = load_dag(EXAMPLE_DAGS / "wavespeed_assets_producer.py", "wavespeed_assets_producer")
    run = run_dag(producer, run_conf={"prompts_file": str(prompts_file), "output_dir": str(tmp_path / "images")})
    return run, asset_events(ASSET, run.run_id)


def _consume(consumed_run_id: str | None) -> Any:
    """Run the consumer; with ``consumed_run_id``, as the scheduler would after that producer run's events."""
    from airflow.models import dag as dag_module
    from airflow.models import dagrun as dagrun_module
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    # dag.test() makes its run with this helper (in airflow.models.dag on Airflow 3.0).
    module, name = (
        (dagrun_module, "get_or_create_dagrun")
        if hasattr(dagrun_module, "get_or_create_dagrun")
        else (dag_module, "_get_or_create_dagrun")
    )
    create = getattr(module, name)

    def asset_triggered(**kwargs: Any) -> Any:
        # What the scheduler does for an asset-triggered run: the run consumes the queued events.
        run = create(**kwargs)
        session = kwargs["session"]
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == consumed_run_id)).all()
        run.consumed_asset_events.extend(events)
        session.commit()
        return run

    consumer = load_dag(EXAMPLE_DAGS / "wavespeed_assets_consumer.py", "wavespeed_assets_consumer")
    with pytest.MonkeyPatch.context() as patch:
        if consumed_run_id is not None:
            patch.setattr(module, name, asset_triggered)
        return run_dag(consumer)


def test_producer_events_carry_the_stored_paths_and_the_consumer_collects_them(
    airflow_db: Path, wavespeed_connection: WaveSpeedEmulator, tmp_path: Path
) -> None:
    wavespeed_connection.set_duration(0.2)
    run, events = _produce(tmp_path / "first", ["a lighthouse", "a harbour at dusk"])
    assert task_states(run) == {"load_prompts": "success", "generate[0]": "success", "generate[1]": "success"}

    # One asset event per generation, and its extra says what was made and where it is.
    assert sorted(events) == ["generate[0]", "generate[1]"]
    submitted = {entry["id"]: entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()}
    assert sorted(submitted.values()) == ["a harbour at dusk", "a lighthouse"]
    stored: list[str] = []
    for index in (0, 1):
        extra = events[f"generate[{index}]"]
        result = xcom_value(run, "generate", map_index=index)
        assert extra["prediction_id"] == result["id"] and extra["prediction_id"] in submitted
        assert extra["model"] == FLUX
        assert extra["stored_paths"] == result["stored_paths"]
        (path,) = extra["stored_paths"]
        assert Path(path).name == f"{result['id']}_0.png" and Path(path).parent.parent == tmp_path / "first" / "images"
        assert Path(path).read_bytes().startswith(b"\x89PNG")
        stored.append(path)

    # A later producer run; then the consumer, run as the scheduler runs it for the first run's
    # events, reads exactly those events' extra.
    _, later_events = _produce(tmp_path / "later", ["a new prompt"])
    consumer_run = _consume(run.run_id)
    assert task_states(consumer_run) == {"collect_new_images": "success"}
    images = xcom_value(consumer_run, "collect_new_images")
    assert sorted(image["path"] for image in images) == sorted(stored)
    assert {image["prediction_id"] for image in images} == set(submitted)
    assert all(image["model"] == FLUX and image["bytes"] == Path(image["path"]).stat().st_size for image in images)

    # Triggered by hand, with no triggering events, it takes the producer's latest run.
    manual_run = _consume(None)
    images = xcom_value(manual_run, "collect_new_images")
    assert [image["path"] for image in images] == later_events["generate[0]"]["stored_paths"]
