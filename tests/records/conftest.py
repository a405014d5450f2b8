"""The records' tests' fixtures: the stand-in supervisor (record_helpers.py) and a hook on the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from record_helpers import Supervisor

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisor]:
    """Install the stand-in supervisor as the task's comms (``SUPERVISOR_COMMS``), as a task process has."""
    from airflow.sdk.execution_time import task_runner

    stand_in = Supervisor()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", stand_in, raising=False)
    yield stand_in


@pytest.fixture
def emulator_hook(wavespeed_connection: WaveSpeedEmulator) -> WaveSpeedHook:
    """A WaveSpeedHook on the emulator (the ``wavespeed_default`` connection points at it)."""
    return WaveSpeedHook()
