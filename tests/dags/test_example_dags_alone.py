"""Each example DAG as a user takes it: copied alone into an empty dags folder, run against the emulator.

The copy has nothing beside it (no ``prompts.txt``, no example image): it runs all the same, reading
the files installed with the provider. And a task log shows an error-level line only when something
is wrong: none in a successful run; in a run that fails on purpose, only the lines that report that
failure (no ``XCom not found`` for the extra links of a task that never submitted, for instance).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow_helpers import dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed.testing import WaveSpeedEmulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from feature_helpers import run_dag

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLE_FILES = sorted(path for path in EXAMPLE_DAGS.glob("*.py") if path.name != "__init__.py")
pytestmark = pytest.mark.usefixtures("airflow_db")

# An error-level line as the task logs render it: structlog's "[error    ]", stdlib logging's "ERROR".
_ERROR_LINE = re.compile(r"\[(error|critical)\s*\]|\b(ERROR|CRITICAL)\b")


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if _ERROR_LINE.search(line)]


def _copy_alone(path: Path, tmp_path: Path) -> Any:
    """Copy ``path`` alone into an empty dags folder and return its DAG, imported from there."""
    dags = tmp_path / "dags"
    dags.mkdir()
    copy = dags / path.name
    shutil.copyfile(path, copy)
    name = f"wavespeed_alone_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, copy)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.dag


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[path.stem for path in EXAMPLE_FILES])
def test_example_dag_copied_alone_runs_and_logs_no_error(
    path: Path,
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path / "outputs"))  # read when the DAG file is imported
    wavespeed_connection.set_duration(0.3)
    dag = _copy_alone(path, tmp_path)
    capfd.readouterr()
    dag_run = run_dag(dag)
    output = task_output(capfd)
    assert dag_run.state == "success", (ti_states(dag_run), output[-4000:])
    assert _error_lines(output) == []


# Runs that fail on purpose: (example, run conf, the generations that fail, the failed task, what its error says).
FAILURES: dict[str, tuple[str, dict[str, Any], dict[str, Any] | None, str, str]] = {
    # Refused by the cost guard before anything is submitted.
    "batch_over_its_cost_limit": ("wavespeed_batch", {"max_cost_usd": 0}, None, "generate", "max_cost_usd"),
    "video_over_its_cost_limit": (
        "wavespeed_upload_and_animate",
        {"max_cost_usd": 0.0001},
        None,
        "animate",
        "max_cost_usd",
    ),
    # Submitted, then the generation fails on the server.
    "generation_failed": ("wavespeed_text_to_image", {}, {}, "wait", "failed"),
    # One mapped generation of several fails; the others succeed.
    "one_mapped_generation_failed": ("wavespeed_content_pipeline", {}, {"prompt_contains": "ramen"}, "wait", "failed"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_an_example_run_that_fails_logs_errors_only_about_its_failure(
    case: str,
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    stem, conf, failing, failed_task, reason = FAILURES[case]
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path / "outputs"))
    wavespeed_connection.set_duration(0.3)
    if failing is not None:
        wavespeed_connection.set_outcome("failed", **failing)
    dag = _copy_alone(EXAMPLE_DAGS / f"{stem}.py", tmp_path)
    capfd.readouterr()
    dag_run = run_dag(dag, run_conf=conf)
    output = task_output(capfd)
    states = ti_states(dag_run)
    failed = {key for key, state in states.items() if state == "failed"}
    assert dag_run.state == "failed" and {task_id for task_id, _ in failed} == {failed_task}, (states, output[-4000:])
    errors = _error_lines(output)
    # The failure itself is reported at error level (its exception, with the reason, follows the line).
    assert errors and reason in output, output[-4000:]
    assert [line for line in errors if "Task failed with exception" not in line] == [], errors


def test_a_batch_with_a_failed_generation_within_max_failed_succeeds_and_logs_no_error(
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # wavespeed_batch allows one failed input (max_failed=1): the run is a success, the failure a warning.
    monkeypatch.setenv("WAVESPEED_OUTPUT_DIR", str(tmp_path / "outputs"))
    wavespeed_connection.set_duration(0.3)
    wavespeed_connection.set_outcome("failed", prompt_contains="ramen")
    dag = _copy_alone(EXAMPLE_DAGS / "wavespeed_batch.py", tmp_path)
    capfd.readouterr()
    dag_run = run_dag(dag)
    output = task_output(capfd)
    assert dag_run.state == "success", (ti_states(dag_run), output[-4000:])
    assert dag_xcoms(dag_run)[("report", -1, "return_value")]["failed"] == 1
    assert _error_lines(output) == []
