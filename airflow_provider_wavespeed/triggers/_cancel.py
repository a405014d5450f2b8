"""When a task's predictions are cancelled: a user's kill, never a restart, a shutdown or a retry.

In a worker (:func:`cancel_on_worker_kill`, from every task's ``on_kill``:
:class:`~airflow_provider_wavespeed._wait.WaitingTask`): a user's kill (mark
failed/success, clear) has already changed the task instance's state on the API server when the
supervisor sends SIGTERM; a worker shutting down (Airflow 3.3 forwards its SIGTERM) or
``execution_timeout`` leaves it ``running`` (:data:`NOT_KILLED_IN_WORKER`): then nothing is
cancelled. The wait's timeout cancels from where the wait runs (``cancel_on_timeout``:
:func:`cancel_now` in a worker).

In the triggerer, the rule is written once for both triggers (:class:`CancellingTrigger`):

- Airflow 3.3+: the triggerer calls :meth:`CancellingTrigger.on_kill` only when a user acted on the
  deferred task (mark failed/success, clear, DAG run failed); never on a triggerer restart, a
  trigger moved to another triggerer, Airflow's deferral timeout, or a normal end. A slow (not
  dead) triggerer whose trigger went to another one can still get it: so it cancels only when
  the task instance is no longer ``deferred`` for this trigger's try.
- Airflow 3.0-3.2: no ``on_kill``; a user's kill and a triggerer shutting down both cancel the
  trigger's task. On that ``CancelledError`` the trigger asks the task instance's state and
  cancels only when it could read it and it is no longer ``deferred`` for this try (a shutdown
  leaves it deferred, and so does a lost answer: then nothing is cancelled).
  ``deferred`` is :data:`NOT_KILLED_IN_TRIGGERER`.

A clear makes a new try, which may be deferred again (a task that starts in the triggerer at once,
another within seconds) by the time the old try's trigger is stopped: ``deferred`` alone cannot
tell the two tries apart. So the try that waits records its try number in an XCom of the task
instance (:data:`WAITING_TRY_KEY`): the worker just before the task defers
(:func:`note_waiting_try`), the trigger itself when its task started in the triggerer (no worker
ran). A new try starting in a worker deletes the task instance's XComs first, and overwrites the
key when it defers; one starting in the triggerer overwrites it when its trigger starts. An old
trigger that reads a try number above its own cancels: the task was cleared. Reading its own (or
none), it cancels nothing: the same try waits elsewhere. A task started in the triggerer gives the
new try's trigger a few seconds (:data:`NEWER_TRY_PATIENCE`) to start and say so.

Only unfinished predictions are cancelled (:func:`~..api.polling.cancel_unfinished`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger

from airflow_provider_wavespeed._compat import read_xcom, task_instance_state, trigger_on_kill_supported
from airflow_provider_wavespeed.api.errors import WaveSpeedError
from airflow_provider_wavespeed.api.polling import CancelOutcome, cancel_unfinished
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.triggers._shared_client import shared_client

if TYPE_CHECKING:
    from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient

_log = logging.getLogger(__name__)

# The task instance states in which a stopped wait was no user's kill. In the triggerer: still deferred
# (a triggerer restart, the trigger moved elsewhere; the same try waits on). In a worker: still running
# (on Airflow 3.3 a worker shut down forwards its SIGTERM to the task, and an execution_timeout kills a
# task that is still running too; a retry or another worker resumes it); unknown (None) cancels nothing.
NOT_KILLED_IN_TRIGGERER = "deferred"
NOT_KILLED_IN_WORKER = (None, "running")
# A task killed in a worker gets SIGKILL about 5 s after its on_kill starts: its cancels stop sooner.
WORKER_KILL_BUDGET = 4.0
# Airflow gives on_kill 30 s ([triggerer] on_kill_timeout); the cancels stop a little before.
KILL_CANCEL_BUDGET = 25.0
# The XCom of a task instance naming the try (its number) that waits for its predictions now.
WAITING_TRY_KEY = "wavespeed_waiting_try"
# Airflow 3.3+, a task started in the triggerer: how long a killed trigger of a still deferred task
# looks for a newer try's trigger to record itself before concluding its own try waits elsewhere.
NEWER_TRY_PATIENCE = 20.0
_NEWER_TRY_POLL = 0.5


async def ti_state(ti: Any) -> str | None:
    """Return the task instance's state per the API server, off the event loop; None when it cannot be read."""
    from asgiref.sync import sync_to_async

    try:
        return await sync_to_async(task_instance_state)(ti)
    except Exception as exc:  # a triggerer shutting down may no longer answer
        _log.warning("Could not read the state of task instance %s: %s", getattr(ti, "task_id", "?"), exc)
        return None


def _xcom_address(ti: Any) -> dict[str, Any]:
    map_index = getattr(ti, "map_index", None)
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": -1 if map_index is None else int(map_index),
    }


def _try_number(ti: Any) -> int | None:
    number = getattr(ti, "try_number", None)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def note_waiting_try(log: Any) -> None:
    """In a worker, just before the running task defers: record its try as the one waiting (never raises).

    Without it a clear of the deferred task may cancel nothing (the old trigger cannot tell the new
    try from its own); deferring must not fail for it (a submit was already handed on).
    """
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        ti.xcom_push(key=WAITING_TRY_KEY, value=int(ti.try_number))
    except Exception as exc:
        log.warning(
            "Could not record this try as the waiting one (XCom %r: %s): a clear of this deferred task may not "
            "cancel its predictions",
            WAITING_TRY_KEY,
            exc,
        )


async def waiting_try(ti: Any) -> int | None:
    """Return the try number :data:`WAITING_TRY_KEY` holds for ``ti``, read off the event loop; None: unknown."""
    from asgiref.sync import sync_to_async

    try:
        value = await sync_to_async(read_xcom)(**_xcom_address(ti), key=WAITING_TRY_KEY)
    except Exception as exc:
        _log.warning("Could not read which try of %s waits now: %s", getattr(ti, "task_id", "?"), exc)
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def cancel_with_shared_client(
    conn_id: str, prediction_ids: Sequence[str], *, log: Any, budget: float = KILL_CANCEL_BUDGET
) -> CancelOutcome | None:
    """Cancel the unfinished ones of ``prediction_ids`` through the loop's shared client, within ``budget`` s."""
    try:
        async with shared_client(conn_id) as client:
            return await asyncio.wait_for(cancel_unfinished(client, prediction_ids, log=log), timeout=budget)
    except WaveSpeedError as exc:
        log.warning("Could not cancel %d WaveSpeed prediction(s): %s", len(prediction_ids), exc)
        return None
    except TimeoutError:
        log.warning("Cancelling %d WaveSpeed prediction(s) took over %.0f s; stopped", len(prediction_ids), budget)
        return None


def cancel_now(conn_id: str, prediction_ids: Sequence[str], *, log: Any) -> CancelOutcome:
    """Cancel the unfinished ones of ``prediction_ids`` from a worker (blocking; concurrent, paced like polls)."""

    async def cancel() -> CancelOutcome:
        async with await WaveSpeedHook(conn_id).aget_client() as client:
            return await cancel_unfinished(client, prediction_ids, log=log)

    return asyncio.run(cancel())


def cancel_on_worker_kill(task: Any, ti: Any, conn_id: str, prediction_ids: Sequence[str]) -> None:
    """Cancel a task's unfinished predictions from its ``on_kill`` in a worker, when a user killed it.

    Nothing is cancelled while the task instance is still ``running`` (:data:`NOT_KILLED_IN_WORKER`).
    Runs in a thread given :data:`WORKER_KILL_BUDGET` seconds: SIGKILL follows soon, and the signal
    handler may have interrupted an event loop on this thread.
    """
    ids = list(prediction_ids)
    if not ids or ti is None:
        return
    try:
        state = task_instance_state(ti)
    except Exception as exc:
        task.log.warning("Could not read this task's state (%s): the WaveSpeed predictions are not cancelled", exc)
        return
    if state in NOT_KILLED_IN_WORKER:
        task.log.info("The task is still %s (a worker shutdown or timeout): its predictions are not cancelled", state)
        return
    task.log.info("The task is %s: cancelling its %d unfinished WaveSpeed prediction(s)", state, len(ids))

    def run() -> None:
        try:
            cancel_now(conn_id, ids, log=task.log)
        except Exception as exc:  # the task is ending anyway: say what was not cancelled
            task.log.warning("Cancelling WaveSpeed predictions %s failed: %s", ", ".join(ids), exc)

    worker = threading.Thread(target=run, name="wavespeed-cancel", daemon=True)
    worker.start()
    worker.join(WORKER_KILL_BUDGET)


_SHIELDED: set[asyncio.Future[None]] = set()  # kill decisions under way (a reference keeps each alive)


async def _to_its_end(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` (within :data:`KILL_CANCEL_BUDGET`) to its end, though the caller is cancelled again.

    Airflow 3.3's triggerer cancels a trigger's task again at each of its loops (about every second)
    until it ends, also while ``on_kill`` runs, and its ``wait_for`` passes that on without the reason:
    it would stop a decision and its cancels half-way (and the trigger's log closes once it ends).
    So ``on_kill`` waits ``work`` out; the wait is bounded, as Airflow's own 30 s for ``on_kill``.
    """
    task = asyncio.ensure_future(asyncio.wait_for(work, timeout=KILL_CANCEL_BUDGET))
    _SHIELDED.add(task)
    task.add_done_callback(_SHIELDED.discard)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()  # waited out here, not passed on
        except Exception:  # the work failed or ran out of its budget: told below, never raised to the triggerer
            break
    if not task.cancelled() and task.exception() is not None:
        _log.warning("Deciding whether to cancel the predictions failed: %s", task.exception())


class CancellingTrigger(BaseTrigger):
    """A trigger whose task owns its predictions: on a user's kill, it cancels the unfinished ones.

    The base of both WaveSpeed triggers. Subclasses set ``cancel_on_kill`` and ``wavespeed_conn_id``,
    poll through :meth:`shared_client`, implement :meth:`unfinished_ids`, await :meth:`note_started`
    when their ``run`` starts and call :meth:`cancelled_from_outside` when it gets ``CancelledError``.
    """

    default_conn_name = WaveSpeedHook.default_conn_name
    cancel_on_kill: bool = False
    wavespeed_conn_id: str

    def shared_client(self) -> AbstractAsyncContextManager[AsyncWaveSpeedClient]:
        """Return the loop's shared client of this trigger's connection, for ``async with``."""
        return shared_client(self.wavespeed_conn_id)

    def unfinished_ids(self) -> list[str]:
        """Return the predictions of this wait not yet seen terminal."""
        raise NotImplementedError

    def _started_in_triggerer(self) -> bool:
        """Whether the task started in the triggerer (Airflow 3.3+ gives the trigger its whole task then)."""
        task = getattr(self.task_instance, "task", None)
        return getattr(task, "start_from_trigger", False) is True

    async def note_started(self) -> None:
        """Record this try as the waiting one, for a task started in the triggerer (no worker did; never raises)."""
        ti = self.task_instance
        if not self.cancel_on_kill or ti is None or _try_number(ti) is None or not self._started_in_triggerer():
            return
        from airflow.providers.common.compat.sdk import XCom

        try:  # Airflow 3.3+ (only it starts tasks in the triggerer): the SDK's async XCom, on this loop
            await XCom.aset(key=WAITING_TRY_KEY, value=_try_number(ti), **_xcom_address(ti))
        except Exception as exc:
            self.log.warning(
                "Could not record try %s as the waiting one (%s): a clear of this task may not cancel its predictions",
                _try_number(ti),
                exc,
            )

    async def _newer_try(self, patience: float) -> int | None:
        """Return the try of this deferred task instance waiting now, when newer than this trigger's; else None.

        Looks again for ``patience`` seconds (a newer try's trigger records itself when it starts).
        """
        ti = self.task_instance
        own = _try_number(ti)
        if own is None:
            return None  # nothing to compare with: the task waits here, as far as can be known
        give_up = time.monotonic() + patience
        while True:
            waiting = await waiting_try(ti)
            if waiting is not None and waiting > own:
                return waiting
            if time.monotonic() >= give_up:
                return None
            await asyncio.sleep(_NEWER_TRY_POLL)

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user killed the task; cancel what is still running, unless this try still waits."""
        if not self.cancel_on_kill or not self.unfinished_ids():
            return
        await _to_its_end(self._cancel_if_killed())

    async def _cancel_if_killed(self) -> None:
        started = time.monotonic()
        why = "the task was killed by a user"
        ti = self.task_instance
        if ti is not None and await ti_state(ti) == NOT_KILLED_IN_TRIGGERER:
            newer = await self._newer_try(NEWER_TRY_PATIENCE if self._started_in_triggerer() else 0.0)
            if newer is None:
                self.log.info("The task is still deferred for this try (its trigger runs elsewhere): nothing cancelled")
                return
            why = f"a newer try ({newer}) of the task waits now: it was cleared"
        await self._cancel(why, budget=KILL_CANCEL_BUDGET - (time.monotonic() - started))

    async def cancelled_from_outside(self) -> None:
        """Airflow 3.0-3.2: ``run`` was cancelled; cancel only when this try is known to wait no more.

        Waited out as ``on_kill`` is (:func:`_to_its_end`): the triggerer cancels the task again while
        it decides, and on Airflow 3.0 a state lookup cut off between its request and its answer
        leaves that answer unread on the supervisor channel, which then stops the whole triggerer
        ("Response read out of order").
        """
        if not self.cancel_on_kill or trigger_on_kill_supported() or not self.unfinished_ids():
            return
        await _to_its_end(self._cancel_if_gone())

    async def _cancel_if_gone(self) -> None:
        ti = self.task_instance
        if ti is None or self._past_airflow_timeout():
            return
        state = await ti_state(ti)
        if state is None:
            return  # no answer (a triggerer shutting down?): the wait may resume elsewhere
        if state == NOT_KILLED_IN_TRIGGERER:
            # A triggerer shutting down (the wait resumes elsewhere), unless a newer try waits now.
            newer = await self._newer_try(0.0)
            if newer is None:
                return
            await self._cancel(f"a newer try ({newer}) of the task waits now: it was cleared")
            return
        await self._cancel(f"the task is {state}: killed by a user")

    def _past_airflow_timeout(self) -> bool:
        """Whether Airflow's deferral timeout passed (it cancels the trigger then: not a kill)."""
        timeout_after = getattr(self, "timeout_after", None)
        if not isinstance(timeout_after, datetime):
            return False
        if timeout_after.tzinfo is None:
            timeout_after = timeout_after.replace(tzinfo=timezone.utc)
        return timeout_after <= datetime.now(timezone.utc)

    async def _cancel(self, why: str, budget: float = KILL_CANCEL_BUDGET) -> None:
        ids = self.unfinished_ids()
        self.log.info("Cancelling %d unfinished WaveSpeed prediction(s): %s", len(ids), why)
        await cancel_with_shared_client(self.wavespeed_conn_id, ids, log=self.log, budget=max(budget, 1.0))
