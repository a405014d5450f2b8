"""The triggerer's event-loop lag, measured inside the real triggerer during a throughput run.

:class:`LoopLagProbeTrigger` sleeps ``interval`` s in a loop in the triggerer's event loop and
records how late each wake-up is, until a ``stop`` file appears in its folder; then it writes
the lag's max and p99 to ``lag.json`` there and fires. :class:`LoopLagProbeOperator` defers to
it at once. The trigger lives in this module, not in a DAG file: the triggerer imports a trigger
by its class path, and a class defined in a DAG file never runs there (the DAG file is imported
under a mangled name), so the deployment runs with the repository root on ``PYTHONPATH``.

Files in the folder: ``started`` (the process id running the trigger, written when the loop
starts: the benchmark checks it is the triggerer's), ``stop`` (written by the benchmark),
``lag.json`` (the summary, also the trigger's event and so the task's XCom).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow.sdk import Context

# Airflow's own triggerer watchdog sleeps 0.1 s too.
PROBE_INTERVAL = 0.1


def lag_summary(lags: Sequence[float]) -> dict[str, Any]:
    """Max and p99 (nearest rank) of the lags in s, as ms; ``samples`` how many."""
    if not lags:
        return {"samples": 0, "max_ms": None, "p99_ms": None}
    ordered = sorted(lags)
    rank = max(1, math.ceil(0.99 * len(ordered)))  # nearest rank: the smallest value >= 99 % of them
    return {
        "samples": len(ordered),
        "max_ms": round(ordered[-1] * 1000, 1),
        "p99_ms": round(ordered[rank - 1] * 1000, 1),
    }


class LoopLagProbeTrigger(BaseTrigger):
    """Sleeps ``interval`` s in a loop, recording how late it wakes, until ``<folder>/stop`` exists."""

    def __init__(self, folder: str, interval: float = PROBE_INTERVAL) -> None:
        super().__init__()
        self.folder = folder
        self.interval = interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"folder": self.folder, "interval": self.interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        folder = Path(self.folder)
        stop = folder / "stop"
        (folder / "started").write_text(str(os.getpid()))
        lags: list[float] = []
        while not stop.exists():  # a stat() every 0.1 s: no load worth measuring
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            lags.append(max(0.0, time.monotonic() - before - self.interval))
        summary = {**lag_summary(lags), "interval_s": self.interval, "pid": os.getpid()}
        (folder / "lag.json").write_text(json.dumps(summary))
        yield TriggerEvent(summary)


class LoopLagProbeOperator(BaseOperator):
    """Defers to :class:`LoopLagProbeTrigger` at once; returns its summary."""

    template_fields: Sequence[str] = ("folder",)

    def __init__(self, *, folder: str, interval: float = PROBE_INTERVAL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder
        self.interval = interval

    def execute(self, context: Context) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        self.defer(trigger=LoopLagProbeTrigger(self.folder, self.interval), method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        return event
