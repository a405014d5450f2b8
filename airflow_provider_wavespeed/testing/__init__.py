"""A local WaveSpeedAI API emulator for demos, tests and benchmarks.

No Airflow imports here: the emulator is plain Starlette served by uvicorn.
"""

from __future__ import annotations

from .control import EmulatorControl
from .emulator import WaveSpeedEmulator
from .process import EmulatorProcess

__all__ = ["EmulatorControl", "EmulatorProcess", "WaveSpeedEmulator"]
