"""The throughput DAG file builds only the designs asked for, and the loop-lag probe's trigger reports."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from benchmarks.loop_probe import LoopLagProbeTrigger
from benchmarks.throughput import DAGS, DESIGNS

PROBE = "wavespeed_throughput_loop_probe"


def _bag(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bundle: dict[str, Any] = {"bundle_path": DAGS, "bundle_name": "dags-folder"}
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0: DagBag has no bundle_name
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        del bundle["bundle_name"]
    return DagBag(dag_folder=str(DAGS), **bundle)


def test_only_the_designs_asked_for_are_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wanted = [DESIGNS["batch-1-task"].dag_id, DESIGNS["batch-10-tasks"].dag_id]
    bag = _bag(
        monkeypatch,
        WAVESPEED_THROUGHPUT_N="10000",
        WAVESPEED_THROUGHPUT_DAGS=",".join(wanted),
        WAVESPEED_THROUGHPUT_MANIFESTS=str(tmp_path),
    )
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {PROBE, *wanted}
    batch = bag.dags[DESIGNS["batch-10-tasks"].dag_id].get_task("batch")
    slices = batch.expand_input.value["inputs"]
    assert [len(part) for part in slices] == [1000] * 10
    assert slices[9][-1] == {"prompt": "throughput image 9999"}
    manifest = batch.partial_kwargs.get("manifest_path")
    if "manifest_path" in WaveSpeedBatchOperator.template_fields:  # the operator's parameter, once it exists
        assert manifest == os.path.join(str(tmp_path), "{{ run_id }}-{{ ti.map_index }}.json")
    else:  # the DAG file still parses before it exists
        assert manifest is None


def test_every_design_by_default_and_no_manifest_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAVESPEED_THROUGHPUT_MANIFESTS", raising=False)
    bag = _bag(monkeypatch, WAVESPEED_THROUGHPUT_N="20", WAVESPEED_THROUGHPUT_DAGS="")
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {PROBE, *(design.dag_id for design in DESIGNS.values())}
    batch = bag.dags[DESIGNS["batch-1-task"].dag_id].get_task("batch")
    assert "manifest_path" not in batch.partial_kwargs


def test_the_probe_trigger_reports_its_lag_when_the_stop_file_appears(tmp_path: Path) -> None:
    trigger = LoopLagProbeTrigger(str(tmp_path), interval=0.01)
    classpath, kwargs = trigger.serialize()
    assert classpath == "benchmarks.loop_probe.LoopLagProbeTrigger"  # importable by the triggerer by this path
    assert kwargs == {"folder": str(tmp_path), "interval": 0.01}

    async def run() -> Any:
        events = trigger.run()
        first = asyncio.ensure_future(events.__anext__())
        while not (tmp_path / "started").exists():  # the loop runs: now ask it to stop
            await asyncio.sleep(0.01)
        (tmp_path / "stop").write_text("")
        return await first

    event = asyncio.run(run())
    assert int((tmp_path / "started").read_text()) == os.getpid()
    assert event.payload == json.loads((tmp_path / "lag.json").read_text())
    assert event.payload["samples"] >= 1 and event.payload["pid"] == os.getpid()
    assert 0 <= event.payload["p99_ms"] <= event.payload["max_ms"]
