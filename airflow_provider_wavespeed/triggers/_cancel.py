"""When a trigger cancels the predictions its task owns: a user's kill, never a restart or a retry.

The rule, written once for both triggers (:class:`CancellingTrigger`):

- Airflow 3.3+: the triggerer calls :meth:`CancellingTrigger.on_kill` only when a user acted on the
  deferred task (mark failed/success, clear, DAG run failed); never on a triggerer restart, a
  trigger moved to another triggerer, Airflow's deferral timeout, or a normal end. A slow (not
  dead) triggerer whose trigger went to another one can still get it: so it cancels only when
  the task instance is no longer ``deferred``.
- Airflow 3.0-3.2: no ``on_kill``; a user's kill and a triggerer shutting down both cancel the
  trigger's task. On that ``CancelledError`` the trigger asks the task instance's state and
  cancels only when it could read it and it is no longer ``deferred`` (a shutdown leaves it
  deferred, and so does a lost answer: then nothing is cancelled).

Only unfinished predictions are cancelled (:func:`~..api.polling.cancel_unfinished`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger

from airflow_provider_wavespeed._compat import task_instance_state, trigger_on_kill_supported
from airflow_provider_wavespeed.api.errors import WaveSpeedError
from airflow_provider_wavespeed.api.polling import CancelOutcome, cancel_unfinished
from airflow_provider_wavespeed.hooks.shared_client import acquire_shared_client, release_shared_client

_log = logging.getLogger(__name__)

DEFERRED = "deferred"
# Airflow gives on_kill 30 s ([triggerer] on_kill_timeout); the cancels stop a little before.
KILL_CANCEL_BUDGET = 25.0


async def ti_state(ti: Any) -> str | None:
    """The task instance's state per the API server, off the event loop; None when it cannot be read."""
    from asgiref.sync import sync_to_async

    try:
        return await sync_to_async(task_instance_state)(ti)
    except Exception as exc:  # a triggerer shutting down may no longer answer
        _log.warning("Could not read the state of task instance %s: %s", getattr(ti, "task_id", "?"), exc)
        return None


async def cancel_with_shared_client(
    conn_id: str, prediction_ids: Sequence[str], *, log: Any, budget: float = KILL_CANCEL_BUDGET
) -> CancelOutcome | None:
    """Cancel the unfinished ones of ``prediction_ids`` through the loop's shared client, within ``budget`` s."""
    try:
        client = await acquire_shared_client(conn_id)
    except WaveSpeedError as exc:
        log.warning("Could not cancel %d WaveSpeed prediction(s): %s", len(prediction_ids), exc)
        return None
    try:
        return await asyncio.wait_for(cancel_unfinished(client, prediction_ids, log=log), timeout=budget)
    except TimeoutError:
        log.warning("Cancelling %d WaveSpeed prediction(s) took over %.0f s; stopped", len(prediction_ids), budget)
        return None
    finally:
        await release_shared_client(conn_id)


class CancellingTrigger(BaseTrigger):
    """A trigger whose task owns its predictions: on a user's kill, it cancels the unfinished ones.

    Subclasses set ``cancel_on_kill`` and ``wavespeed_conn_id``, implement :meth:`unfinished_ids`,
    and call :meth:`cancelled_from_outside` when their ``run`` gets ``CancelledError``.
    """

    cancel_on_kill: bool = False
    wavespeed_conn_id: str

    def unfinished_ids(self) -> list[str]:
        """The predictions of this wait not yet seen terminal."""
        raise NotImplementedError

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user killed the task; cancel what is still running, unless it is still deferred."""
        if not self.cancel_on_kill or not self.unfinished_ids():
            return
        ti = self.task_instance
        if ti is not None and await ti_state(ti) == DEFERRED:
            self.log.info("The task is still deferred (its trigger runs elsewhere): nothing cancelled")
            return
        await self._cancel("the task was killed by a user")

    async def cancelled_from_outside(self) -> None:
        """Airflow 3.0-3.2: ``run`` was cancelled; cancel only when the task is known to be no longer deferred."""
        if not self.cancel_on_kill or trigger_on_kill_supported() or not self.unfinished_ids():
            return
        ti = self.task_instance
        if ti is None or self._past_airflow_timeout():
            return
        state = await ti_state(ti)
        if state is None or state == DEFERRED:
            return  # a triggerer shutting down (or no answer): the wait resumes elsewhere
        await self._cancel(f"the task is {state}: killed by a user")

    def _past_airflow_timeout(self) -> bool:
        """Whether Airflow's deferral timeout passed (it cancels the trigger then: not a kill)."""
        timeout_after = getattr(self, "timeout_after", None)
        if not isinstance(timeout_after, datetime):
            return False
        if timeout_after.tzinfo is None:
            timeout_after = timeout_after.replace(tzinfo=timezone.utc)
        return timeout_after <= datetime.now(timezone.utc)

    async def _cancel(self, why: str) -> None:
        ids = self.unfinished_ids()
        self.log.info("Cancelling %d unfinished WaveSpeed prediction(s): %s", len(ids), why)
        await cancel_with_shared_client(self.wavespeed_conn_id, ids, log=self.log)
