"""pytest fixtures for DAG and hook tests against the local WaveSpeed emulator.

The plugin is opt-in: installing the package does not load it. Enable it in your ``conftest.py``::

    pytest_plugins = ["airflow_provider_wavespeed.testing.pytest_plugin"]

or on the command line: ``pytest -p airflow_provider_wavespeed.testing.pytest_plugin``. It needs the
``testing`` extra (``pip install "airflow-provider-wavespeed[testing]"``).

One emulator serves the whole session; each test gets it freshly ``reset()``. It knows the model ids of
its catalog and answers any other with 404, as the API does. To use other ids, override
``wavespeed_emulator_options`` (the keyword arguments of :class:`WaveSpeedEmulator`) in your ``conftest.py``::

    @pytest.fixture(scope="session")
    def wavespeed_emulator_options():
        return {"models": {"acme/upscaler": "image-to-image"}}  # or {"allow_any_model": True}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .emulator import WaveSpeedEmulator


@pytest.fixture(scope="session")
def wavespeed_emulator_options() -> dict[str, Any]:
    """Keyword arguments for the session's :class:`WaveSpeedEmulator`; none by default (override to change)."""
    return {}


@pytest.fixture(scope="session")
def wavespeed_emulator_server(wavespeed_emulator_options: dict[str, Any]) -> Iterator[WaveSpeedEmulator]:
    """Run the session's emulator (prefer ``wavespeed_emulator``, which resets it)."""
    with WaveSpeedEmulator(**wavespeed_emulator_options) as emulator:
        yield emulator


@pytest.fixture
def wavespeed_emulator(wavespeed_emulator_server: WaveSpeedEmulator) -> WaveSpeedEmulator:
    """Return the running emulator, reset: no predictions, faults or counters; its start settings."""
    wavespeed_emulator_server.reset()
    return wavespeed_emulator_server


@pytest.fixture
def wavespeed_connection(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WaveSpeedEmulator]:
    """Point Airflow's ``wavespeed_default`` connection at the reset emulator, and return it."""
    connection = {"conn_type": "wavespeed", "host": wavespeed_emulator.url, "password": wavespeed_emulator.api_key}
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
    yield wavespeed_emulator
