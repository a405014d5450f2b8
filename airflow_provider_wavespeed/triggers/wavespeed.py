"""WaveSpeedTaskTrigger: waits for a prediction in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from airflow_provider_wavespeed._events import (
    NOT_PRICED,
    crash_message,
    deadline_event,
    error_event,
    plain_return_value,
    terminal_event,
)
from airflow_provider_wavespeed._wait import WaitTimeout
from airflow_provider_wavespeed.api import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    CancelOutcome,
    Prediction,
    WaveSpeedError,
    cancel_unfinished,
    validate_prediction_id,
    wait_for_predictions,
)
from airflow_provider_wavespeed.triggers._cancel import CancellingTrigger


class WaveSpeedTaskTrigger(CancellingTrigger):
    """Poll ``GET /api/v3/predictions/<id>/result`` until the prediction is terminal.

    Polling policy: the first poll ``first_poll_interval`` (1 s) after the trigger starts,
    then each wait doubles up to ``poll_interval`` (default 5 s: the API asks for no
    faster than 2 s for images and 5 s for video); every trigger of a connection shares one
    connection pool (:mod:`~airflow_provider_wavespeed.triggers._shared_client`). Polls have no
    fixed budget (the account tiers limit submissions, not polls): when the API answers 429,
    every trigger of the connection pauses for its ``Retry-After`` and polls at a reduced
    rate until the 429s stop.

    A status this provider does not know is logged once and polling goes on; ``completed``,
    ``failed``, ``cancelled``, ``timeout`` and ``deleted`` end the wait.

    Transient errors (429, 5xx, resets, timeouts) are retried until ``end_time``;
    permanent ones (401/403, 404, malformed answers) end the wait at once; any other exception
    ends it with a ``retryable`` ``error`` event naming the prediction. Exactly one event is
    yielded. ``end_time`` is an absolute epoch time, so a trigger resumed by another triggerer
    keeps its deadline. The trigger never submits anything.

    With ``end_from_trigger``, a trigger running in a triggerer for a task ends that task itself
    when its prediction completed with outputs that fit the event: ``success``, with the prediction
    in XCom (``return_value``, the dict ``execute_complete`` returns). Everything else, failures
    included, goes to the worker as a plain event, as without it: a failure costs one worker run,
    and the worker's retry rules apply unchanged on every Airflow version.

    :param prediction_id: The prediction to wait for (a template when the task starts in the
        triggerer: Airflow renders it there before ``run``; it is validated in ``run``).
    :param wavespeed_conn_id: The WaveSpeed connection id (the key is looked up, never stored).
    :param poll_interval: The longest wait between polls, in seconds.
    :param end_time: Epoch seconds after which the wait ends with a ``deadline`` event.
    :param first_poll_interval: The wait before the first poll.
    :param end_from_trigger: End the task from the triggerer when its prediction completed.
    :param timeout: Without ``end_time`` (a task started in the triggerer): the wait's timeout in seconds.
        The wait then ends with Airflow's trigger timeout of the task instance (stored with it, so a
        trigger moved to another triggerer keeps it), less its grace
        (:meth:`~airflow_provider_wavespeed._wait.WaitTimeout.from_airflow_timeout`).
    :param cancel_on_kill: When a user kills the task (mark failed/success, clear), cancel the
        prediction if it is unfinished (see :mod:`~._cancel`: never on a triggerer restart).
    :param cancel_on_timeout: At the deadline, cancel the prediction if it is unfinished; the
        ``deadline`` event then says so (``cancelled``: the status the API answered).
    :param result_extra: Fields the task's result adds to the prediction when the trigger ends the
        task: its cost (``unit_price_usd``, ``cost_usd``); default
        :data:`~airflow_provider_wavespeed._events.NOT_PRICED`, what a task that waited on a prediction
        id alone knows.
    """

    def __init__(
        self,
        prediction_id: str,
        wavespeed_conn_id: str = CancellingTrigger.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
        *,
        end_from_trigger: bool = False,
        timeout: float | None = None,
        cancel_on_kill: bool = False,
        cancel_on_timeout: bool = False,
        result_extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Not validated here: a task started in the triggerer passes its template, rendered after
        # this (and an error raised while Airflow builds the trigger would not name the task).
        self.prediction_id = prediction_id
        self.wavespeed_conn_id = wavespeed_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout) if timeout is not None else None
        if end_time is None and self.timeout is None:
            end_time = time.time() + DEFAULT_WAIT_TIMEOUT
        self.end_time = float(end_time) if end_time is not None else None
        self.first_poll_interval = float(first_poll_interval)
        self.end_from_trigger = bool(end_from_trigger)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self.result_extra = dict(NOT_PRICED if result_extra is None else result_extra)
        self._waiting: list[str] = []  # the prediction while it is not known to be terminal

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "prediction_id": self.prediction_id,
            "wavespeed_conn_id": self.wavespeed_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
            "first_poll_interval": self.first_poll_interval,
        }
        # Only what differs from the defaults: the row stays as small as the defaults allow.
        options: dict[str, tuple[Any, Any]] = {
            "end_from_trigger": (self.end_from_trigger, False),
            "timeout": (self.timeout, None),
            "cancel_on_kill": (self.cancel_on_kill, False),
            "cancel_on_timeout": (self.cancel_on_timeout, False),
            "result_extra": (self.result_extra, NOT_PRICED),
        }
        kwargs.update({name: value for name, (value, default) in options.items() if value != default})
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WaveSpeedTaskTrigger) and self.serialize() == other.serialize()

    __hash__ = None  # type: ignore[assignment]

    def _end_time(self) -> float:
        """Return the epoch seconds when the wait ends: ``end_time``, else from the task instance's Airflow timeout."""
        if self.end_time is None:
            assert self.timeout is not None
            # Set by the triggerer for a task started there (no worker computed an end time).
            timeout_after = getattr(self, "timeout_after", None)
            self.end_time = WaitTimeout.from_airflow_timeout(self.timeout, timeout_after).end_time
        return self.end_time

    def unfinished_ids(self) -> list[str]:
        return list(self._waiting)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sent = False
        await self.note_started()
        try:
            async for event in self._run():
                self._waiting = []  # an event was sent: nothing of this wait is ours to cancel any more
                sent = True
                yield event
        except asyncio.CancelledError:
            await self.cancelled_from_outside()
            raise
        except Exception as exc:
            # Anything else (a RecursionError from a deeply nested answer, a secrets backend failing the
            # connection lookup): an event the task understands. Raised, Airflow would fail the task with
            # a bare TaskDeferralError, naming no prediction.
            self._waiting = []
            if sent:
                self.log.exception("Error after the WaveSpeed wait's event was sent (ignored)")
                return
            prediction_id = str(self.prediction_id)
            self.log.exception("The WaveSpeed wait for prediction %s stopped on an unexpected error", prediction_id)
            message = crash_message(f"prediction {prediction_id}", exc)
            yield TriggerEvent(error_event(prediction_id, message, type(exc).__name__, retryable=True))

    async def _run(self) -> AsyncIterator[TriggerEvent]:
        try:
            prediction_id = validate_prediction_id(self.prediction_id)
        except WaveSpeedError as exc:
            yield TriggerEvent(error_event(str(self.prediction_id), str(exc), type(exc).__name__))
            return
        end_time = self._end_time()
        found: list[Prediction] = []
        cancelled: CancelOutcome | None = None
        polling = False
        try:
            async with self.shared_client() as client:
                polling = True
                self._waiting = [prediction_id]
                outcome = await wait_for_predictions(
                    client,
                    [prediction_id],
                    poll_interval=self.poll_interval,
                    end_time=end_time,
                    first_poll_interval=self.first_poll_interval,
                    on_finished=found.append,
                    log=self.log,
                )
                if found:
                    self._waiting = []
                elif outcome.deadline and self.cancel_on_timeout:
                    cancelled = await cancel_unfinished(client, [prediction_id], log=self.log)
                    found.extend(cancelled.finished.values())  # it finished at the last moment: that is the result
        except WaveSpeedError as exc:
            if polling:
                raise
            # The connection could not be used: nothing was polled.
            yield TriggerEvent(error_event(prediction_id, str(exc), type(exc).__name__))
            return
        error = outcome.error or outcome.unreadable.get(prediction_id)
        if found:
            yield await self._terminal(found[0])
        elif error is not None:
            yield TriggerEvent(error_event(prediction_id, str(error), type(error).__name__))
        else:
            yield TriggerEvent(self._timeout_event(prediction_id, cancelled))

    def _timeout_event(self, prediction_id: str, cancelled: CancelOutcome | None) -> dict[str, Any]:
        """Return the ``deadline`` event: the prediction may still finish, unless it was cancelled here."""
        if cancelled is None:
            message = (
                f"WaveSpeed prediction {prediction_id} did not finish before the wait "
                "limit; it may still finish: wait on it again with the same prediction id"
            )
            return deadline_event(prediction_id, message)
        if prediction_id in cancelled.cancelled or prediction_id in cancelled.gone:
            status = cancelled.cancelled.get(prediction_id, "gone")
            message = (
                f"WaveSpeed prediction {prediction_id} did not finish before the wait limit and was "
                f"cancelled (cancel_on_timeout; the API answered {status!r})"
            )
            return {**deadline_event(prediction_id, message), "cancelled": status}
        error = cancelled.errors.get(prediction_id)
        message = (
            f"WaveSpeed prediction {prediction_id} did not finish before the wait limit, and cancelling it "
            f"failed ({error}); it may still finish (and be billed): wait on it again with the same "
            "prediction id, or cancel it yourself"
        )
        return deadline_event(prediction_id, message)

    def _ends_task(self) -> bool:
        # A trigger ends its task only in a triggerer, where it runs for a task instance; dag.test()
        # runs it inline without one and resumes the task with whatever it yields.
        if not (self.end_from_trigger and self.task_instance is not None):
            return False
        # A task started in the triggerer decided this when its DAG file was parsed, before its
        # downstream tasks existed: the whole DAG's task is known here (Airflow 3.3+), check again.
        task = getattr(self.task_instance, "task", None)
        return task is None or plain_return_value(task)

    async def _terminal(self, prediction: Prediction) -> TriggerEvent:
        """Return the event for a terminal prediction: a completed one may end the task here, its XCom pushed first."""
        payload = terminal_event(prediction)
        # Outputs too large for XCom stay for the worker to decide (it stores them, or fails clearly).
        if not (prediction.is_success and self._ends_task() and "outputs_omitted_bytes" not in payload):
            return TriggerEvent(payload)
        try:
            await self._push_return_value({**prediction.to_dict(), **self.result_extra})
        except Exception as exc:  # the worker can still push it: nothing is lost by resuming there
            self.log.warning("Could not push the result to XCom from the triggerer (%s); resuming in a worker", exc)
            return TriggerEvent(payload)
        self.log.info(
            "WaveSpeed prediction %s completed with %d output(s); the task ends here, in the triggerer",
            prediction.id,
            len(prediction.outputs),
        )
        return TaskSuccessEvent()

    async def _push_return_value(self, value: dict[str, Any]) -> None:
        """Push the task's return value through the task SDK's XCom, exactly as its worker would.

        Not through ``TaskSuccessEvent(xcoms=...)``: Airflow 3.0-3.3 store those with the metadata
        database's own encoder (a JSON text), so a downstream task's ``xcom_pull`` would get a
        string, not the dict. The SDK's ``XCom.set`` goes through the triggerer's supervisor to the
        same Execution API (and XCom backend) as a worker's return value.
        """
        from airflow.providers.common.compat.sdk import XCom

        ti: Any = self.task_instance  # set by the triggerer (checked by _ends_task)
        where = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": ti.map_index}
        if hasattr(XCom, "aset"):  # Airflow 3.1+: async, on this loop
            await XCom.aset(key="return_value", value=value, **where)
        else:  # Airflow 3.0: its sync call hops back onto this loop (asgiref), so run it off it
            from asgiref.sync import sync_to_async

            await sync_to_async(XCom.set)(key="return_value", value=value, **where)
