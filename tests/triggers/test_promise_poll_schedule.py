"""The README's polling policy, end to end: 1 s, 2 s, 4 s, then every ``poll_interval``, ±10 % jitter.

A real sensor in ``dag.test()`` defers to its real trigger, which polls the emulator over loopback HTTP.

The shape is read from the waits the trigger itself asked for (its ``asyncio.sleep`` calls, recorded and
shortened a hundredfold so the test takes no seconds) and matched one for one against the polls the
emulator logged: no verdict depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import re
import types
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, ti_states

from airflow_provider_wavespeed.api import polling
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def trigger_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the seconds of every wait the polling engine asks for (it then sleeps a hundredth of it)."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float, result: Any = None) -> Any:
        waits.append(delay)
        return await real_sleep(delay / 100, result)

    shim = types.SimpleNamespace(**{name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("__")})
    shim.sleep = recorded_sleep
    monkeypatch.setattr(polling, "asyncio", shim)
    return waits


def _result_polls(emulator: WaveSpeedEmulator) -> int:
    return sum(1 for _, endpoint, _status in emulator.request_log() if endpoint == "result")


def _run_sensor(request: pytest.FixtureRequest, prediction_id: str, **kwargs: Any) -> Any:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"promise_{request.node.name}")
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, retries=0, **kwargs)
    return dag_test(dag)


def _assert_shape(waits: list[float], bases: list[float]) -> None:
    assert len(waits) == len(bases), (waits, bases)
    for wait, base in zip(waits, bases, strict=True):
        assert base * 0.9 <= wait <= base * 1.1, f"wait {wait:.3f} s is not {base} s ±10 %: {waits}"
    # Jitter: the waits are not the bare schedule, and two waits of the same base differ.
    assert all(wait != base for wait, base in zip(waits, bases, strict=True)), waits
    capped = [wait for wait, base in zip(waits, bases, strict=True) if base == bases[-1]]
    assert len(set(capped)) == len(capped), f"waits of one base repeat (no jitter): {capped}"


def test_a_deferred_sensor_polls_at_1_2_4_then_every_poll_interval_with_jitter(
    wavespeed_connection: WaveSpeedEmulator, trigger_waits: list[float], request: pytest.FixtureRequest
) -> None:
    """Defaults (``poll_interval=5``): waits 1, 2, 4, 5, 5, 5, 5 s, one poll after each."""
    wavespeed_connection.hold(polls=7)  # the sensor's own poll and six of the trigger's: the 8th completes
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "a lighthouse"}).id
    run = _run_sensor(request, prediction_id)
    assert ti_states(run) == {("wait", -1): "success"}
    assert _result_polls(wavespeed_connection) == 8  # the worker's first look, then one poll per wait
    _assert_shape(trigger_waits, [1, 2, 4, 5, 5, 5, 5])


def test_a_short_poll_interval_caps_the_doubling(
    wavespeed_connection: WaveSpeedEmulator, trigger_waits: list[float], request: pytest.FixtureRequest
) -> None:
    """``poll_interval=2``: waits 1, 2, 2, 2 s (the cap comes before the doubling passes it)."""
    wavespeed_connection.hold(polls=4)
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "a lighthouse"}).id
    run = _run_sensor(request, prediction_id, poll_interval=2)
    assert ti_states(run) == {("wait", -1): "success"}
    assert _result_polls(wavespeed_connection) == 5
    _assert_shape(trigger_waits, [1, 2, 2, 2])


def test_a_wait_in_a_worker_polls_on_the_same_schedule(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """``deferrable=False``: a first read at once, then the same waits (recorded, not slept)."""
    from airflow_provider_wavespeed.api import client as client_module
    from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

    waits: list[float] = []
    shim = types.SimpleNamespace(**{name: getattr(client_module.time, name) for name in dir(client_module.time)})
    shim.sleep = waits.append
    monkeypatch.setattr(client_module, "time", shim)
    wavespeed_connection.hold(polls=5)  # the 6th poll completes
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"promise_{request.node.name}")
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate", model=FLUX, inputs={"prompt": "x"}, wait_for_completion=True, deferrable=False
        )
    run = dag_test(dag)
    assert ti_states(run) == {("generate", -1): "success"}
    assert _result_polls(wavespeed_connection) == 6
    _assert_shape(waits, [1, 2, 4, 5, 5])
