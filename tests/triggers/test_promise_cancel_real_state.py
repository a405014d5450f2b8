"""What you stop, stops; a restart, a worker shutdown or a timeout never cancels: decided on the real state.

Every other cancel test answers the task instance's state lookup from the test. Here nothing is faked
between the provider and Airflow's metadata database: the lookup (``GetTaskStates``) and the XCom read
go through the task SDK's supervisor comms to Airflow's own in-process Execution API (what a 3.0-3.2
triggerer's supervisor serves them with, and ``dag.test()`` on every version), which reads the task
instance of a real DAG run. The user's action is Airflow's own function behind the UI and REST API
(``TaskInstance.set_state`` for mark failed/success, ``clear_task_instances``,
``set_dag_run_state_to_failed``); the predictions are the emulator's, over loopback HTTP.

On Airflow 3.0-3.2 the trigger decides when its ``run`` is cancelled (the fallback); on 3.3+ in
``on_kill``, which the triggerer calls only on a user's action (a restart calls none: nothing to test).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, ti_states

from airflow_provider_wavespeed._compat import NO_STATE, task_instance_state, trigger_on_kill_supported
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers import _cancel
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def supervisor_comms() -> Iterator[None]:
    """Serve the task SDK's requests (state lookups, XCom reads) from the real metadata database.

    Airflow's in-process supervisor and Execution API, as ``dag.test()`` runs tasks with; a 3.0-3.2
    triggerer's supervisor answers the same messages through the same in-process API.
    """
    import psutil
    import structlog
    from airflow.sdk.execution_time.supervisor import (
        InProcessSupervisorComms,
        InProcessTestSupervisor,
        set_supervisor_comms,
    )
    from uuid6 import uuid7

    supervisor = InProcessTestSupervisor(
        id=uuid7(),
        pid=os.getpid(),
        process=psutil.Process(),
        process_log=structlog.get_logger(logger_name="task").bind(),
        client=InProcessTestSupervisor._api_client(),
    )
    supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
    with set_supervisor_comms(supervisor.comms):
        yield


@pytest.fixture
def dag_run(wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest) -> Any:
    """Run a deferrable sensor for real (``dag.test()``), then put its task instance back in ``deferred``.

    ``deferred`` at try 1 stands for the wait in a triggerer; the test's own prediction is held running.
    """
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"real_state_{request.node.name}")[:200]
    wavespeed_connection.hold(polls=1)
    own = WaveSpeedHook().submit(FLUX, {"prompt": "the DAG's own"}).id
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        WaveSpeedTaskSensor(task_id="wait", prediction_id=own, poll_interval=0.2)
    run = dag_test(dag)
    assert ti_states(run)[("wait", -1)] == "success"
    wavespeed_connection.release()
    _set_state(run, "wait", "deferred")
    wavespeed_connection.hold(prompt_contains="slow")  # the predictions of the test run until cancelled
    run.test_dag = dag
    return run


def _orm_ti(session: Any, run: Any, task_id: str) -> Any:
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    return session.scalar(
        select(TaskInstance).where(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id, TaskInstance.task_id == task_id
        )
    )


def _set_state(run: Any, task_id: str, state: str | None) -> None:
    """Set the task instance's state as mark failed/success (the REST API's PATCH) ends: ``TaskInstance.set_state``."""
    from airflow.utils.session import create_session

    with create_session() as session:
        _orm_ti(session, run, task_id).set_state(state, session=session)


def _next_try_deferred(run: Any, task_id: str) -> None:
    """Start the cleared task's next try, as the scheduler does (its try number + 1), and defer it."""
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = _orm_ti(session, run, task_id)
        ti.try_number += 1
        ti.set_state("deferred", session=session)


def _record_waiting_try(run: Any, try_number: int) -> None:
    """Record the waiting try as the worker does before it defers: the task SDK's XCom, through the comms."""
    from airflow.sdk.execution_time.xcom import XCom

    XCom.set(key=_cancel.WAITING_TRY_KEY, value=try_number, dag_id=run.dag_id, task_id="wait", run_id=run.run_id)


def _clear(run: Any, task_id: str) -> None:
    """Clear the task instance as the UI's clear does (``clear_task_instances``): a new try."""
    from airflow.models.taskinstance import clear_task_instances
    from airflow.utils.session import create_session

    with create_session() as session:
        clear_task_instances([_orm_ti(session, run, task_id)], session)


def _fail_the_dag_run(run: Any) -> None:
    """Mark the DAG run failed as the UI does: its running and deferred task instances fail."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.utils.session import create_session

    with create_session() as session:
        dag: Any
        try:  # Airflow 3.1+: the scheduler's (serialized) DAG, stored by dag_test()
            from airflow.models.dagbag import DBDagBag

            dag = DBDagBag().get_latest_version_of_dag(run.dag_id, session=session)
        except ImportError:  # Airflow 3.0: dag.test() stores none; serialized as its API server reads it
            from airflow.serialization.serialized_objects import SerializedDAG

            dag = SerializedDAG.from_dict(SerializedDAG.to_dict(run.test_dag))
        set_dag_run_state_to_failed(dag=dag, run_id=run.run_id, commit=True, session=session)


def _triggerer_ti(run: Any, task_id: str = "wait") -> Any:
    """Return the task instance as a triggerer hands it to the trigger (its workload's model of the row)."""
    from airflow.utils.session import create_session

    try:
        from airflow.executors.workloads.task import TaskInstanceDTO as Model  # Airflow 3.2+
    except ImportError:
        from airflow.executors.workloads import TaskInstance as Model  # type: ignore[no-redef]
    with create_session() as session:
        return Model.model_validate(_orm_ti(session, run, task_id), from_attributes=True)


def _trigger(prediction_id: str, ti: Any, **kwargs: Any) -> WaveSpeedTaskTrigger:
    trigger = WaveSpeedTaskTrigger(
        prediction_id, poll_interval=0.2, first_poll_interval=0.05, end_time=time.time() + 60, cancel_on_kill=True
    )
    trigger.task_instance = ti
    for name, value in kwargs.items():
        setattr(trigger, name, value)
    return trigger


async def _stop(trigger: WaveSpeedTaskTrigger, emulator: WaveSpeedEmulator) -> None:
    """Run the trigger until it polled, then stop it as the triggerer does (cancel; 3.3+: then ``on_kill``)."""
    polls = emulator.counters()["requests"].get("result", 0)

    async def consume() -> list[Any]:
        return [event async for event in trigger.run()]

    task = asyncio.ensure_future(consume())
    deadline = time.monotonic() + 30
    while emulator.counters()["requests"].get("result", 0) <= polls:
        assert time.monotonic() < deadline, "the trigger never polled"
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if trigger_on_kill_supported():
        await trigger.on_kill()


def _held_prediction(emulator: WaveSpeedEmulator) -> str:
    return emulator.state.submit(FLUX, {"prompt": "slow"}, None).id


def _cancelled(emulator: WaveSpeedEmulator, prediction_id: str) -> bool:
    return emulator.counters()["delete_requests"].get(prediction_id, 0) == 1


def test_the_lookup_reads_the_database(dag_run: Any, supervisor_comms: None) -> None:
    """The lookup itself (no fake): what the metadata database holds, through the Execution API."""
    ti = _triggerer_ti(dag_run)
    assert task_instance_state(ti) == "deferred"
    _set_state(dag_run, "wait", "failed")
    assert task_instance_state(ti) == "failed"
    _clear(dag_run, "wait")
    assert task_instance_state(ti) == NO_STATE  # no state: not "unknown" (None), which cancels nothing
    assert task_instance_state(ti.model_copy(update={"task_id": "no_such_task"})) is None


@pytest.mark.parametrize("action", ["mark_failed", "mark_success", "dag_run_failed", "clear"])
async def test_a_users_action_on_the_deferred_task_cancels_its_prediction(
    dag_run: Any, supervisor_comms: None, wavespeed_connection: WaveSpeedEmulator, action: str
) -> None:
    prediction_id = _held_prediction(wavespeed_connection)
    trigger = _trigger(prediction_id, _triggerer_ti(dag_run))
    if action == "mark_failed":
        _set_state(dag_run, "wait", "failed")
    elif action == "mark_success":
        _set_state(dag_run, "wait", "success")
    elif action == "dag_run_failed":
        _fail_the_dag_run(dag_run)
        assert ti_states(dag_run)[("wait", -1)] == "failed"
    else:
        _clear(dag_run, "wait")
        assert ti_states(dag_run)[("wait", -1)] != "deferred"
    await _stop(trigger, wavespeed_connection)
    assert _cancelled(wavespeed_connection, prediction_id)
    assert wavespeed_connection.prediction_state(prediction_id)["status"] in ("deleted", "cancelled")


async def test_a_clear_whose_next_try_deferred_already_cancels(
    dag_run: Any, supervisor_comms: None, wavespeed_connection: WaveSpeedEmulator
) -> None:
    """The next try is ``deferred`` too: the try number it recorded in XCom (read for real) tells them apart."""
    prediction_id = _held_prediction(wavespeed_connection)
    old = _triggerer_ti(dag_run)
    _clear(dag_run, "wait")
    _next_try_deferred(dag_run, "wait")
    new_try = _triggerer_ti(dag_run).try_number
    assert new_try == old.try_number + 1
    _record_waiting_try(dag_run, new_try)
    await _stop(_trigger(prediction_id, old), wavespeed_connection)
    assert _cancelled(wavespeed_connection, prediction_id)


async def test_a_still_deferred_task_is_never_cancelled(
    dag_run: Any, supervisor_comms: None, wavespeed_connection: WaveSpeedEmulator
) -> None:
    """A triggerer shutting down (3.0-3.2), or a trigger moved to another triggerer (3.3+): still deferred."""
    prediction_id = _held_prediction(wavespeed_connection)
    ti = _triggerer_ti(dag_run)
    _record_waiting_try(dag_run, ti.try_number)
    await _stop(_trigger(prediction_id, ti), wavespeed_connection)
    assert wavespeed_connection.counters()["delete_requests"] == {}
    assert wavespeed_connection.prediction_state(prediction_id)["status"] == "processing"


@pytest.mark.skipif(trigger_on_kill_supported(), reason="3.3+ calls no on_kill on Airflow's deferral timeout")
async def test_airflow_s_deferral_timeout_is_no_kill(
    dag_run: Any, supervisor_comms: None, wavespeed_connection: WaveSpeedEmulator
) -> None:
    """3.0-3.2: past its deferral timeout Airflow fails the task (a retry waits again) and stops the trigger."""
    prediction_id = _held_prediction(wavespeed_connection)
    trigger = _trigger(
        prediction_id, _triggerer_ti(dag_run), timeout_after=datetime.now(timezone.utc) + timedelta(seconds=0.5)
    )
    polls = wavespeed_connection.counters()["requests"].get("result", 0)
    task = asyncio.ensure_future(trigger.run().__anext__())
    while wavespeed_connection.counters()["requests"].get("result", 0) <= polls:
        await asyncio.sleep(0.02)
    while datetime.now(timezone.utc) <= trigger.timeout_after:  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
    _set_state(dag_run, "wait", "up_for_retry")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wavespeed_connection.counters()["delete_requests"] == {}


@pytest.mark.parametrize(("state", "cancelled"), [("running", False), ("failed", True), ("success", True)])
def test_a_worker_s_on_kill_cancels_only_after_a_users_action(
    dag_run: Any, supervisor_comms: None, wavespeed_connection: WaveSpeedEmulator, state: str, cancelled: bool
) -> None:
    """A worker shut down leaves the task ``running`` (nothing cancelled); mark failed/success changed it first."""
    prediction_id = _held_prediction(wavespeed_connection)
    _set_state(dag_run, "wait", state)
    sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, deferrable=False)
    # What the poke loop holds while it waits in the worker (renamed by the operators' refactor).
    waiting = "_waiting_in_worker" if hasattr(sensor, "_waiting_in_worker") else "_poking"
    setattr(sensor, waiting, (_triggerer_ti(dag_run), prediction_id))
    sensor.on_kill()
    assert _cancelled(wavespeed_connection, prediction_id) is cancelled
