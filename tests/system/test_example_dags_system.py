"""The shipped example DAGs as system tests, the way Airflow's providers run theirs: ``dag.test()``.

Each example DAG runs by target (tests/live_targets.py): ``[emulator]`` always, so the DAGs cannot
rot; ``[api]`` against the real WaveSpeed API with ``WAVESPEED_API_KEY`` and ``-m live``. What a
DAG submits with its default params is written down in :data:`PLANS`; it is priced through
``/model/pricing`` first and refused (skipped, nothing submitted) when it would take the run over
its cost ceiling (``WAVESPEED_LIVE_MAX_USD``, default 0.10 USD), so against the API the video DAGs
run only with a higher ceiling (the emulator's target has none unless it is set). On the emulator
the run's submissions must be the plan's, so the price asked is the price of what is sent.
tests/dags and tests/features check each DAG's results in detail against the emulator; these tests
check that each one runs, the same way on both targets.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import ti_states
from live_targets import CostCeilingExceeded, Target

# run_dag (dag.test() after writing the DAG and its assets to the database, which Airflow 3.0 needs for
# the asset DAGs) is tests/features' helper; its folder is on sys.path only once pytest collected it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from feature_helpers import run_dag

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("airflow_db")]

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLE_FILES = sorted(path for path in EXAMPLE_DAGS.glob("*.py") if path.name != "__init__.py")
FLUX = "wavespeed-ai/flux-dev"
WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
# An image input only known once the DAG runs (an earlier task's output): priced with this URL.
IMAGE = "https://example.com/airflow-provider-wavespeed/example-input.png"

Plan = list[tuple[str, dict[str, Any]]]


def _prompts() -> list[str]:
    lines = (EXAMPLE_DAGS / "prompts.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _one_per_prompt(size: str) -> Plan:
    return [(FLUX, {"prompt": prompt, "size": size, "output_format": "png"}) for prompt in _prompts()]


# What each example DAG submits with its default params: (model, inputs) per generation.
PLANS: dict[str, Callable[[Any], Plan]] = {
    "wavespeed_assets_consumer": lambda dag: [],
    "wavespeed_assets_producer": lambda dag: _one_per_prompt(dag.params["size"]),
    "wavespeed_batch": lambda dag: _one_per_prompt("1024*1024"),
    "wavespeed_content_pipeline": lambda dag: _one_per_prompt(dag.params["size"]),
    "wavespeed_image_to_video": lambda dag: [
        (FLUX, {"prompt": dag.params["prompt"], "size": "1024*576"}),
        (WAN_I2V, {"prompt": dag.params["motion"], "image": IMAGE, "duration": 5}),
    ],
    "wavespeed_text_to_image": lambda dag: [
        (FLUX, {"prompt": dag.params["prompt"], "size": "1024*1024", "num_images": 1})
    ],
    "wavespeed_upload_and_animate": lambda dag: [
        (WAN_I2V, {"prompt": dag.params["motion"], "image": IMAGE, "size": "832*480", "duration": 5})
    ],
}


def _load(path: Path) -> Any:
    """The DAG of an example file, imported as the DAG processor does."""
    name = f"wavespeed_system_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.dag


def _comparable(model: str, inputs: dict[str, Any]) -> str:
    # An image URL is the run's own (an upload, an earlier output): compared as "an image".
    return json.dumps([model, {**inputs, **({"image": IMAGE} if "image" in inputs else {})}], sort_keys=True)


def _operator_models(dag: Any) -> set[str]:
    models = set()
    for task in dag.tasks:
        partial = getattr(task, "partial_kwargs", None)  # a mapped operator keeps .partial()'s arguments here
        model = partial.get("model") if isinstance(partial, dict) else getattr(task, "model", None)
        if isinstance(model, str):
            models.add(model)
    return models


def test_every_example_dag_has_a_plan_of_its_operators_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path))
    dags = {path.stem: _load(path) for path in EXAMPLE_FILES}
    assert sorted(PLANS) == sorted(dag.dag_id for dag in dags.values())
    for dag in dags.values():
        assert {model for model, _ in PLANS[dag.dag_id](dag)} == _operator_models(dag), dag.dag_id


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[path.stem for path in EXAMPLE_FILES])
def test_example_dag_runs(
    path: Path, wavespeed_target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path))  # read when the DAG file is imported
    dag = _load(path)
    plan = PLANS[dag.dag_id](dag)
    emulator = wavespeed_target.emulator
    if emulator is not None:
        emulator.reset()
        emulator.set_duration(0.3)
    client, _ = wavespeed_target.client()
    with client:
        try:
            priced = wavespeed_target.ceiling.reserve(f"example DAG {dag.dag_id}", client, plan)
        except CostCeilingExceeded as exc:
            pytest.skip(str(exc))
        wavespeed_target.connect(monkeypatch)
        dag_run = run_dag(dag)
        print(f"[{wavespeed_target.name}] {dag.dag_id}: {len(plan)} generation(s) priced {priced:.4f} USD")
        assert dag_run.state == "success", ti_states(dag_run)
        if emulator is None:
            return
        submitted = emulator.submissions()
        assert Counter(_comparable(entry["model"], entry["inputs"]) for entry in submitted) == Counter(
            _comparable(model, inputs) for model, inputs in plan
        )
        paid = sum(client.get_price(entry["model"], entry["inputs"]) for entry in submitted)
        assert paid == pytest.approx(priced)
