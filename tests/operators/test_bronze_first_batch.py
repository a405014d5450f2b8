"""A new (Bronze) account's first batch with no tier chosen: the 429s slow it down, nothing fails.

Bronze starts 2 generations a minute; the default budget is Silver's 500. Twenty inputs need
about nine minutes of the account's time, so the test runs the emulator and the provider's
client on one clock that goes ``SPEED`` times faster than the real one (emulator: its sliding
start window, ``Retry-After`` and task times; client: its retry waits and submission limiter).
Nothing is asserted about durations: the verdict is what the emulator recorded and what
Airflow says of the task, so a slow machine only makes the test take longer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, ti_states

import airflow_provider_wavespeed.api._limiter as limiter_module
import airflow_provider_wavespeed.api._shared_budget as shared_budget_module
import airflow_provider_wavespeed.api.client as client_module
import airflow_provider_wavespeed.testing._app as emulator_app
import airflow_provider_wavespeed.testing._state as emulator_state
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

pytestmark = pytest.mark.usefixtures("airflow_db")

# Nine account minutes in about a real minute. Not faster: the client steps its pace back up every
# 5 account seconds after a 429 (AIMD), so each real second the machine is slow is SPEED account
# seconds of recovery and more 429s; at 40x a loaded CI machine ran one input out of retries.
SPEED = 10.0
_real_sleep = time.sleep
_real_async_sleep = asyncio.sleep


class _FastClock:
    """``time`` as the patched modules see it: every clock SPEED times faster, sleeps SPEED times shorter."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = time.time()

    def _elapsed(self) -> float:
        return (time.monotonic() - self._mono0) * SPEED

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed()

    def time(self) -> float:
        return self._wall0 + self._elapsed()

    def time_ns(self) -> int:
        return int(self.time() * 1e9)

    def sleep(self, seconds: float) -> None:
        _real_sleep(max(0.0, seconds) / SPEED)

    def __getattr__(self, name: str) -> Any:  # strftime, gmtime...: the real ones
        return getattr(time, name)


class _FastAsyncio:
    """``asyncio`` with the fast clock's ``sleep``."""

    @staticmethod
    async def sleep(seconds: float, result: Any = None) -> Any:
        return await _real_async_sleep(max(0.0, seconds) / SPEED, result)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def test_bronze_account_first_batch_of_20_succeeds_with_no_tier_chosen(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    clock = _FastClock()
    for module in (emulator_state, emulator_app, client_module, limiter_module):
        monkeypatch.setattr(module, "time", clock)
    for module in (client_module, limiter_module):
        monkeypatch.setattr(module, "asyncio", _FastAsyncio())
    # A fresh process-wide submission budget, created on the fast clock.
    monkeypatch.setattr(shared_budget_module, "_SUBMIT_LIMITERS", {})
    wavespeed_connection.set_tier("bronze")
    wavespeed_connection.set_duration(5)  # account seconds

    inputs = [{"prompt": f"first batch, picture {n}"} for n in range(20)]
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"bronze_{request.node.name}")[:200]
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        # The connection (wavespeed_connection's) names no tier and no budget: the default applies.
        WaveSpeedBatchOperator(task_id="batch", model="wavespeed-ai/flux-dev", inputs=inputs, poll_interval=0.5)
    dag_run = dag_test(dag)

    counters = wavespeed_connection.counters()
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert (result["completed"], result["failed"]) == (20, 0)
    # One prediction per input, none lost, none twice.
    per_prompt = Counter(entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions())
    assert per_prompt == Counter(item["prompt"] for item in inputs)
    assert [entry["index"] for entry in result["predictions"]] == list(range(20))
    assert all(entry["status"] == "completed" for entry in result["predictions"])
    # The tier did refuse starts (the default budget is above Bronze's): the 429s set the pace.
    assert counters["rate_limited"].get("submit", 0) > 0, counters
    assert counters["tier"]["rejected"] > 0, counters
