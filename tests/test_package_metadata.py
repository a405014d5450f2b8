"""What the package tells Airflow and PyPI: provider info, one version, the example DAGs in the package."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from pathlib import Path

import pytest

import airflow_provider_wavespeed
from airflow_provider_wavespeed.get_provider_info import CONN_FIELDS, get_provider_info

REPO = Path(__file__).resolve().parents[1]


def _modules(kind: str) -> set[str]:
    package = importlib.import_module(f"airflow_provider_wavespeed.{kind}")
    return {f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)}


def test_provider_info_lists_every_operator_sensor_trigger_and_hook_module() -> None:
    info = get_provider_info()
    for kind in ("operators", "sensors", "triggers", "hooks"):
        listed = {module for entry in info[kind] for module in entry["python-modules"]}
        expected = {name for name in _modules(kind) if not name.rsplit(".", 1)[1].startswith("_")}
        assert listed == expected, kind
        for module in listed:
            importlib.import_module(module)
    assert "airflow_provider_wavespeed.operators.batch" in {m for e in info["operators"] for m in e["python-modules"]}
    for link in info["extra-links"]:
        module, name = link.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name)
    tags = info["integrations"][0]["tags"]
    assert {"genai", "image-generation", "video-generation"} <= set(tags)


def test_one_version_source() -> None:
    assert get_provider_info()["versions"] == [airflow_provider_wavespeed.__version__]
    assert importlib.metadata.version("airflow-provider-wavespeed") == airflow_provider_wavespeed.__version__
    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text()


def test_the_example_dags_are_a_package_and_the_top_level_folder_points_at_it() -> None:
    examples = importlib.import_module("airflow_provider_wavespeed.example_dags")
    folder = Path(examples.__path__[0])
    assert (folder / "wavespeed_text_to_image.py").is_file() and (folder / "prompts.txt").is_file()
    assert (REPO / "example_dags").resolve() == folder.resolve()


def test_the_connection_form_and_the_readme_say_the_same_about_where_the_budget_applies() -> None:
    # api/shared_budget.py: one budget file per account on a host, so every process of the host draws from it.
    form = CONN_FIELDS["max_submissions_per_minute"]["description"]
    assert "every process on a host together" in form and "each host has its own" in form
    assert "each worker or triggerer process" not in form
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "**every process on a host that submits for the same account shares one\nbudget**" in readme


def test_with_load_examples_airflow_3_3_loads_the_installed_examples_as_a_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the README's "The example DAGs" says: a bundle of the installed folder on 3.3, none before."""
    from airflow import __version__ as airflow_version
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from packaging.version import Version

    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "True")
    bundles = {bundle.name: bundle for bundle in DagBundlesManager().get_all_dag_bundles()}
    ours = bundles.get("airflow-provider-wavespeed-example-dags")
    if Version(airflow_version).release[:2] < (3, 3):
        assert ours is None
        return
    examples = importlib.import_module("airflow_provider_wavespeed.example_dags")
    assert ours is not None and Path(ours.path).resolve() == Path(examples.__path__[0]).resolve()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "as the DAG bundle `airflow-provider-wavespeed-example-dags`" in readme
