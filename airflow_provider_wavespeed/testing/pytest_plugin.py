"""pytest fixtures for DAG and hook tests against the local WaveSpeed emulator.

The plugin is opt-in: installing the package does not load it. Enable it in your ``conftest.py``::

    pytest_plugins = ["airflow_provider_wavespeed.testing.pytest_plugin"]

or on the command line: ``pytest -p airflow_provider_wavespeed.testing.pytest_plugin``. It needs the
``testing`` extra (``pip install "airflow-provider-wavespeed[testing]"``).

One emulator serves the whole session; each test gets it freshly ``reset()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .emulator import WaveSpeedEmulator


@pytest.fixture(scope="session")
def wavespeed_emulator_server() -> Iterator[WaveSpeedEmulator]:
    """The session's running emulator (prefer ``wavespeed_emulator``, which resets it)."""
    with WaveSpeedEmulator() as emulator:
        yield emulator


@pytest.fixture
def wavespeed_emulator(wavespeed_emulator_server: WaveSpeedEmulator) -> WaveSpeedEmulator:
    """The running emulator, reset: no predictions, faults or counters; default key and balance."""
    wavespeed_emulator_server.reset()
    return wavespeed_emulator_server


@pytest.fixture
def wavespeed_connection(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WaveSpeedEmulator]:
    """The emulator, with Airflow's ``wavespeed_default`` connection pointing at it."""
    connection = {"conn_type": "wavespeed", "host": wavespeed_emulator.url, "password": wavespeed_emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
    yield wavespeed_emulator
