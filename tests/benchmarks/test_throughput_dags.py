"""The throughput DAG files build only the designs asked for, Airflow's floor designs wait without WaveSpeed
code, and the loop-lag probe's trigger reports."""

from __future__ import annotations

import ast
import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from benchmarks.loop_probe import LoopLagProbeTrigger
from benchmarks.throughput import DAGS, DESIGNS

FLOORS = {name: design for name, design in DESIGNS.items() if not design.submits}

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


def _mapped_over(dag: Any, task_id: str) -> Any:
    """What a mapped task (or the mapped task group it is in) expands over."""
    task = dag.get_task(task_id)
    group = task.get_closest_mapped_task_group()
    return (group._expand_input if group is not None else task.expand_input).value


def _rule(weight_rule: object) -> str:
    """A task's weight rule by name: Airflow 3.1+ give its name (a str), 3.0 a strategy object (its class)."""
    return weight_rule if isinstance(weight_rule, str) else type(weight_rule).__name__


def test_each_mapped_design_has_a_floor_of_its_shape_built_from_the_same_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert {DESIGNS[name].floor for name in ("mapped-sensor", "mapped-waiting-submit")} == set(FLOORS)
    wanted = [design.dag_id for name, design in DESIGNS.items() if name in FLOORS or design.floor]
    bag = _bag(
        monkeypatch,
        WAVESPEED_THROUGHPUT_N="7",
        WAVESPEED_THROUGHPUT_DURATION="12.5",
        WAVESPEED_THROUGHPUT_DAGS=",".join(wanted),
    )
    assert bag.import_errors == {}
    for name in ("mapped-sensor", "mapped-waiting-submit"):
        ours, floor = bag.dags[DESIGNS[name].dag_id], bag.dags[DESIGNS[str(DESIGNS[name].floor)].dag_id]
        # The same task ids, the same mapping over the same 7 inputs, the same weight rule.
        assert sorted(floor.task_ids) == sorted(ours.task_ids)
        for task_id in ours.task_ids:
            mine, theirs = ours.get_task(task_id), floor.get_task(task_id)
            assert _rule(theirs.weight_rule) == _rule(mine.weight_rule)
        expand = _mapped_over(ours, ours.task_ids[0])
        assert _mapped_over(floor, ours.task_ids[0]) == expand and len(expand["inputs"]) == 7
    wait = bag.dags[FLOORS["floor-sensor"].dag_id].get_task("generation.wait")
    assert type(wait).__name__ == "FloorWaitOperator" and wait.seconds == 12.5
    waiting = bag.dags[FLOORS["floor-waiting-submit"].dag_id].get_task("generate")
    assert waiting.partial_kwargs["seconds"] == 12.5
    # The retries WaveSpeedTaskSensor takes by default (Airflow may fail a task resumed at once, #72716).
    sensor = bag.dags[DESIGNS["mapped-sensor"].dag_id].get_task("generation.wait")
    assert (wait.retries, wait.retry_delay) == (sensor.retries, sensor.retry_delay) == (2, timedelta(seconds=30))
    assert (waiting.partial_kwargs["retries"], waiting.partial_kwargs["retry_delay"]) == (2, timedelta(seconds=30))


def test_the_floor_file_imports_no_wavespeed_code() -> None:
    # A task parses the file its DAG is in: the floor's must not import this provider (nor benchmarks/).
    tree = ast.parse((DAGS / "airflow_floor.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert imported and not [name for name in imported if name.startswith(("airflow_provider_wavespeed", "benchmarks"))]
