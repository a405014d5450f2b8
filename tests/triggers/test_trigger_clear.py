"""A clear of a deferred task cancels the old try's predictions, though its next try may be deferred
already when the old trigger is stopped: the tries are told apart by the try number the waiting try
records in XCom (``wavespeed_waiting_try``), never a triggerer restart or a trigger moved elsewhere.

The tasks run for real under ``dag.test()`` (the worker records its try before it defers); the killed
trigger reads that record from the metadata database. Only the task instance's state is answered
from the test (there is no API server), as in test_trigger_cancel.py.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import batch_trigger, dag_test, dag_xcoms, ti_states

from airflow_provider_wavespeed._compat import trigger_on_kill_supported
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers import _cancel
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def server_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task instance's state as the API server has it: from the fake TI; XComs from the database."""
    monkeypatch.setattr(_cancel, "task_instance_state", lambda ti: ti.state_on_server)
    monkeypatch.setattr(_cancel, "task_instance_state", lambda ti: ti.state_on_server)
    # The trigger reads XCom through its supervisor in a triggerer; here (no supervisor) from the database.
    from airflow.sdk.execution_time import task_runner

    monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS", raising=False)


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"clear_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


@pytest.fixture
def dag_run(wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest) -> Any:
    """A real run of a waiting submit and a sensor started in a worker, both deferred once (dag.test())."""
    wavespeed_connection.hold(polls=2)  # processing when the worker looks, so both tasks defer
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate", model=FLUX, inputs={"prompt": "a"}, wait_for_completion=True, poll_interval=0.2
        )
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "b"})
        WaveSpeedTaskSensor(
            task_id="wait", prediction_id=submit.output, poll_interval=0.2, start_from_trigger=False, retries=0
        )
    run = dag_test(dag)
    assert set(ti_states(run).values()) == {"success"}
    wavespeed_connection.release()
    wavespeed_connection.hold()  # the predictions of the test itself run until cancelled
    return run


def _set_waiting_try(dag_run: Any, task_id: str, try_number: int) -> None:
    """What a newer try records when it defers (or its trigger, started in the triggerer, when it starts)."""
    from airflow.models.xcom import XComModel

    XComModel.set(_cancel.WAITING_TRY_KEY, try_number, dag_id=dag_run.dag_id, task_id=task_id, run_id=dag_run.run_id)


def _old_try(dag_run: Any, task_id: str, state: str, *, started_in_triggerer: bool = False) -> SimpleNamespace:
    """The task instance as the triggerer gave it to the trigger of try 1, with its state on the server now."""
    ti = SimpleNamespace(
        dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=-1, try_number=1, state_on_server=state
    )
    if started_in_triggerer:  # Airflow 3.3+ hands such a trigger its whole task
        ti.task = WaveSpeedTaskSensor(task_id=task_id, prediction_id="abc123", poll_interval=0.2)
        assert ti.task.start_from_trigger
    return ti


async def _consume(trigger: Any) -> list[Any]:
    return [event async for event in trigger.run()]


async def _killed(trigger: Any, emulator: WaveSpeedEmulator) -> None:
    """Run the trigger until it polled, then stop it as the triggerer does for a user's action."""

    polls = emulator.counters()["requests"].get("result", 0)
    task = asyncio.ensure_future(_consume(trigger))
    deadline = time.monotonic() + 20
    while emulator.counters()["requests"].get("result", 0) <= polls:
        assert time.monotonic() < deadline, "the trigger never polled"
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if trigger_on_kill_supported():
        await trigger.on_kill()


def test_a_task_records_its_try_in_xcom_before_it_defers(dag_run: Any) -> None:
    xcoms = dag_xcoms(dag_run)
    assert xcoms[("generate", -1, _cancel.WAITING_TRY_KEY)] == 1
    assert xcoms[("wait", -1, _cancel.WAITING_TRY_KEY)] == 1


def _trigger(kind: str, emulator: WaveSpeedEmulator) -> tuple[Any, list[str]]:
    ids = [emulator.state.submit(FLUX, {"prompt": f"slow {n}"}, None).id for n in range(3 if kind == "batch" else 1)]
    options: dict[str, Any] = {"poll_interval": 0.2, "first_poll_interval": 0.05, "cancel_on_kill": True}
    if kind == "batch":
        return batch_trigger(ids, **options), ids
    return WaveSpeedTaskTrigger(ids[0], **options), ids


PATHS = pytest.mark.parametrize("fallback", [False, True], ids=["on-kill", "3.0-3.2-fallback"])


@PATHS
@pytest.mark.parametrize(("task_id", "kind"), [("generate", "single"), ("wait", "single"), ("generate", "batch")])
async def test_a_clear_whose_next_try_deferred_already_cancels_the_old_predictions(
    wavespeed_connection: WaveSpeedEmulator,
    dag_run: Any,
    server_state: None,
    monkeypatch: pytest.MonkeyPatch,
    task_id: str,
    kind: str,
    fallback: bool,
) -> None:
    """The bug: the old trigger read ``deferred`` (the next try's) and cancelled nothing."""
    if fallback:
        monkeypatch.setattr(_cancel, "trigger_on_kill_supported", lambda: False)
    trigger, ids = _trigger(kind, wavespeed_connection)
    trigger.task_instance = _old_try(dag_run, task_id, "deferred")
    _set_waiting_try(dag_run, task_id, 2)  # the cleared task's try 2 deferred before try 1's trigger stopped
    await _killed(trigger, wavespeed_connection)
    assert wavespeed_connection.counters()["delete_requests"] == dict.fromkeys(ids, 1)
    assert {wavespeed_connection.prediction_state(i)["status"] for i in ids} == {"deleted"}


@PATHS
@pytest.mark.parametrize("task_id", ["generate", "wait"])
async def test_the_same_try_still_deferred_cancels_nothing(
    wavespeed_connection: WaveSpeedEmulator,
    dag_run: Any,
    server_state: None,
    monkeypatch: pytest.MonkeyPatch,
    task_id: str,
    fallback: bool,
) -> None:
    """A triggerer restart (3.0-3.2) or a trigger moved to another triggerer (3.3+): its own try still waits."""
    if fallback:
        monkeypatch.setattr(_cancel, "trigger_on_kill_supported", lambda: False)
    trigger, ids = _trigger("single", wavespeed_connection)
    trigger.task_instance = _old_try(dag_run, task_id, "deferred")  # XCom: try 1, recorded by dag.test()'s worker
    await _killed(trigger, wavespeed_connection)
    assert wavespeed_connection.counters()["delete_requests"] == {}
    assert wavespeed_connection.prediction_state(ids[0])["status"] == "processing"


on_kill_only = pytest.mark.skipif(not trigger_on_kill_supported(), reason="tasks start in the triggerer on 3.3+")


@on_kill_only
async def test_a_task_started_in_the_triggerer_waits_for_its_next_try_to_say_so(
    wavespeed_connection: WaveSpeedEmulator, dag_run: Any, server_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker records the next try of a task started in the triggerer: its trigger does when it starts,
    which may be after the old trigger is stopped: the old one looks again until it sees it."""
    read = _cancel.waiting_try
    reads: list[int | None] = []

    async def then_the_next_try_starts(ti: Any) -> int | None:
        reads.append(await read(ti))
        if len(reads) == 1:  # the next try's trigger starts just after the first look
            _set_waiting_try(dag_run, "wait", 2)
        return reads[-1]

    monkeypatch.setattr(_cancel, "waiting_try", then_the_next_try_starts)
    trigger, ids = _trigger("single", wavespeed_connection)
    trigger.task_instance = _old_try(dag_run, "wait", "deferred", started_in_triggerer=True)
    await _killed(trigger, wavespeed_connection)
    assert reads == [1, 2]
    assert wavespeed_connection.counters()["delete_requests"] == {ids[0]: 1}


@on_kill_only
async def test_a_task_started_in_the_triggerer_moved_elsewhere_cancels_nothing(
    wavespeed_connection: WaveSpeedEmulator, dag_run: Any, server_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cancel, "NEWER_TRY_PATIENCE", 0.6)
    trigger, ids = _trigger("single", wavespeed_connection)
    trigger.task_instance = _old_try(dag_run, "wait", "deferred", started_in_triggerer=True)
    await _killed(trigger, wavespeed_connection)
    assert wavespeed_connection.counters()["delete_requests"] == {}
    assert wavespeed_connection.prediction_state(ids[0])["status"] == "processing"


@on_kill_only
async def test_on_kill_finishes_though_the_triggerer_cancels_it_again(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow 3.3's triggerer cancels a trigger's task again at each of its loops until it ends, while
    on_kill runs too (seen in the deployment tier: a kill decision cut off before it asked anything)."""
    asked, may_answer = threading.Event(), threading.Event()

    def lookup(ti: Any) -> str:
        asked.set()
        may_answer.wait(20)
        return "failed"  # marked failed by a user

    monkeypatch.setattr(_cancel, "task_instance_state", lookup)
    trigger, ids = _trigger("single", wavespeed_connection)
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)
    polls = wavespeed_connection.counters()["requests"].get("result", 0)
    running = asyncio.ensure_future(_consume(trigger))
    while wavespeed_connection.counters()["requests"].get("result", 0) <= polls:
        assert not running.done(), running.result()
        await asyncio.sleep(0.02)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    killing = asyncio.ensure_future(trigger.on_kill())
    assert await asyncio.to_thread(asked.wait, 20)
    killing.cancel()  # the triggerer's next loop
    await asyncio.sleep(0)
    may_answer.set()
    await killing  # on_kill ends when its decision and cancels did
    assert wavespeed_connection.counters()["delete_requests"] == {ids[0]: 1}
