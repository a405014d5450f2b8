"""The batch example DAG runs end to end: one task, one submission per prompt, files stored."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
from airflow_helpers import dag_xcoms, ti_states

from airflow_provider_wavespeed.testing import WaveSpeedEmulator

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "wavespeed_batch.py"
pytestmark = pytest.mark.usefixtures("airflow_db")


def test_batch_example_generates_every_prompt_once(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", prompt_contains="ramen", code=1200, error="emulated moderation")
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("wavespeed_batch", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag_run = module.dag.test()
    assert dag_run.state == "success", ti_states(dag_run)
    lines = (EXAMPLE.parent / "prompts.txt").read_text(encoding="utf-8").splitlines()
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    submissions = wavespeed_connection.submissions()
    assert Counter(entry["inputs"]["prompt"] for entry in submissions) == Counter(prompts)
    xcoms = dag_xcoms(dag_run)
    result = xcoms[("generate", -1, "return_value")]
    assert xcoms[("report", -1, "return_value")] == {"completed": len(prompts) - 1, "failed": 1}
    run_dir = tmp_path / "batch" / module.safe_name(dag_run.run_id)
    for entry, prompt in zip(result["predictions"], prompts, strict=True):
        if "ramen" in prompt:
            assert entry["status"] == "failed" and entry["code"] == 1200 and entry["stored_paths"] == []
        else:
            assert [Path(path) for path in entry["stored_paths"]] == [run_dir / f"{entry['id']}_0.png"]
            assert (run_dir / f"{entry['id']}_0.png").is_file()


def test_batch_example_refuses_a_batch_over_its_max_cost_param_before_any_submit(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("wavespeed_batch", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The prompts cost 0.003 USD each in the emulator: two of them are over 0.005.
    dag_run = module.dag.test(run_conf={"max_cost_usd": 0.005})
    assert ti_states(dag_run)[("generate", -1)] == "failed"
    [generate] = [ti for ti in dag_run.get_task_instances() if ti.task_id == "generate"]
    assert generate.try_number == 1  # refused for good: its retries would refuse again
    counters = wavespeed_connection.counters()
    assert counters["submissions"] == {} and "submit" not in counters["requests"]
    lines = (EXAMPLE.parent / "prompts.txt").read_text(encoding="utf-8").splitlines()
    prompts = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    assert counters["requests"]["pricing"] == len(prompts)  # one per distinct input
