"""Test set-up: a private AIRFLOW_HOME whose dags folder is example_dags/, made before Airflow loads."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO / "example_dags"

# Airflow reads these once, at import: they must be set before any test imports it.
_HOME = Path(tempfile.mkdtemp(prefix="wavespeed-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ.pop("WAVESPEED_API_KEY", None)  # tests decide where credentials come from
os.environ.pop("AIRFLOW_CONN_WAVESPEED_DEFAULT", None)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the test AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ)
    return _HOME
