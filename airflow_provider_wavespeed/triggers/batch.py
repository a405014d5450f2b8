"""WaveSpeedBatchTrigger: waits in the triggerer for every prediction of a batch, in one trigger.

The polling is :func:`~airflow_provider_wavespeed.api.polling.wait_for_predictions`, the same
engine the single trigger and the batch task waiting in its worker use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import TriggerEvent
from asgiref.sync import sync_to_async

from airflow_provider_wavespeed._compat import read_xcom
from airflow_provider_wavespeed._events import batch_event, crash_message
from airflow_provider_wavespeed.api import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    Prediction,
    WaveSpeedError,
    cancel_unfinished,
    validate_prediction_id,
    wait_for_predictions,
)
from airflow_provider_wavespeed.triggers._cancel import CancellingTrigger

__all__ = ["IDS_XCOM_FIELDS", "IDS_XCOM_KEY", "WaveSpeedBatchTrigger", "ids_for_xcom", "ids_from_xcom"]

IDS_XCOM_KEY = "wavespeed_batch_ids"  # the XCom the batch task pushes its prediction ids to before deferring
IDS_XCOM_FIELDS = ("dag_id", "run_id", "task_id", "map_index", "key")


def ids_for_xcom(prediction_ids: Sequence[str]) -> str:
    """Return the ids as one compact XCom value: comma-separated (an id is letters, digits, ``_`` and ``-``)."""
    return ",".join(prediction_ids)


def ids_from_xcom(value: object, count: int) -> list[str]:
    """Return the ids :func:`ids_for_xcom` wrote, checked: ``count`` valid prediction ids."""
    if value is None:
        raise LookupError("there is no such XCom")
    if not isinstance(value, str):
        raise TypeError(f"expected a comma-separated string of ids, got {type(value).__name__}")
    ids = [validate_prediction_id(prediction_id) for prediction_id in value.split(",")] if value else []
    if len(ids) != count:
        raise ValueError(f"it holds {len(ids)} ids, the task deferred for {count}")
    return ids


class WaveSpeedBatchTrigger(CancellingTrigger):
    """Poll every prediction of a batch until all are terminal, in one trigger.

    All predictions of the batch are polled through the triggerer's shared client of the
    connection (:mod:`~airflow_provider_wavespeed.triggers._shared_client`: one pool, one 429
    back-off), at most ``POOL_SIZE`` at a time, by the same engine as
    :class:`~airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger`
    (:mod:`~airflow_provider_wavespeed.api.polling`). Its one event is a status (``done``,
    ``deadline`` or ``error``) with counts, the same few hundred bytes for 10 predictions or 10,000:
    the task reads the predictions themselves when it resumes. An unexpected exception ends the wait
    with a ``retryable`` ``error`` event. ``end_time`` is absolute epoch
    seconds, so a trigger resumed by another triggerer keeps its deadline. The trigger never
    submits anything.

    Its kwargs do not grow with the batch: :class:`~airflow_provider_wavespeed.operators.batch.WaveSpeedBatchOperator`
    pushes the ids to one XCom (:data:`IDS_XCOM_KEY`, :func:`ids_for_xcom`) before it defers and gives
    the trigger ``ids_xcom`` (where that XCom is: ``dag_id``, ``run_id``, ``task_id``, ``map_index``,
    ``key``) and ``count``; ``run`` reads it off the event loop (a deferred task's XComs are kept
    until it resumes). An XCom that is missing or unreadable ends the wait with an ``error``
    event saying so.

    :param ids_xcom: Where to read the prediction ids.
    :param count: How many ids ``ids_xcom`` holds.
    :param wavespeed_conn_id: The WaveSpeed connection id (the key is looked up, never stored).
    :param poll_interval: The longest wait between two polls of a prediction, in seconds.
    :param end_time: Epoch seconds after which the wait ends with a ``deadline`` event.
    :param first_poll_interval: The wait before the first round of polls.
    :param cancel_on_kill: When a user kills the task, cancel its unfinished predictions
        (concurrently, paced like polls; see :mod:`~._cancel`: never on a triggerer restart).
    :param cancel_on_timeout: At the deadline, cancel the unfinished predictions; the ``deadline``
        event counts them (``cancelled``).
    """

    def __init__(
        self,
        ids_xcom: Mapping[str, Any],
        count: int,
        wavespeed_conn_id: str = CancellingTrigger.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
        cancel_on_kill: bool = False,
        cancel_on_timeout: bool = False,
    ) -> None:
        super().__init__()
        missing = [name for name in IDS_XCOM_FIELDS if name not in (ids_xcom or {})]
        if missing or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"WaveSpeedBatchTrigger: ids_xcom must name {', '.join(IDS_XCOM_FIELDS)} (missing: "
                f"{', '.join(missing) or 'none'}) and count must be a whole number >= 0, got {count!r}"
            )
        self.ids_xcom = {name: ids_xcom[name] for name in IDS_XCOM_FIELDS}
        self.count = count
        self._ids: list[str] = []  # read from the XCom when the wait starts
        self.wavespeed_conn_id = wavespeed_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else time.time() + DEFAULT_WAIT_TIMEOUT
        self.first_poll_interval = float(first_poll_interval)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self._finished: set[str] = set()  # seen terminal by this run
        self._waiting = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "ids_xcom": dict(self.ids_xcom),
            "count": self.count,
            "wavespeed_conn_id": self.wavespeed_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
            "first_poll_interval": self.first_poll_interval,
        }
        # Only when set: the row stays as small as the defaults allow.
        options = {"cancel_on_kill": self.cancel_on_kill, "cancel_on_timeout": self.cancel_on_timeout}
        kwargs.update({name: True for name, value in options.items() if value})
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def unfinished_ids(self) -> list[str]:
        if not self._waiting:
            return []
        return [prediction_id for prediction_id in self._ids if prediction_id not in self._finished]

    def _seen_finished(self, prediction: Prediction) -> None:
        self._finished.add(prediction.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WaveSpeedBatchTrigger) and self.serialize() == other.serialize()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # the ids can be thousands: the log line names how many
        return (
            f"<{type(self).__name__} {self.count} predictions, "
            f"conn {self.wavespeed_conn_id!r}, until {self.end_time:.0f}>"
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        sent = False
        await self.note_started()
        try:
            async for event in self._run():
                self._waiting = False  # the event is sent: the task decides from here
                sent = True
                yield event
        except asyncio.CancelledError:
            await self.cancelled_from_outside()
            raise
        except Exception as exc:
            # Anything else: an event the task understands (raised, Airflow would fail it with a bare
            # TaskDeferralError); the task names the predictions from its record.
            self._waiting = False
            if sent:
                self.log.exception("Error after the WaveSpeed batch wait's event was sent (ignored)")
                return
            self.log.exception("The WaveSpeed batch wait for %d predictions stopped on an unexpected error", self.count)
            message = crash_message(f"the {self.count} predictions of this batch", exc)
            yield TriggerEvent(batch_event(self.count, {}, error=exc, message=message, retryable=True))

    async def _load_ids(self) -> list[str]:
        """Return the prediction ids, read from the XCom the task pushed before deferring (off the loop)."""
        where = self.ids_xcom
        named = (
            f"XCom {where['key']!r} of task {where['task_id']!r} (map index {where['map_index']}) in run "
            f"{where['run_id']!r} of DAG {where['dag_id']!r}"
        )
        try:
            value = await sync_to_async(read_xcom)(**where)
            ids = ids_from_xcom(value, self.count)
        except Exception as exc:  # the XCom backend, the API server, or a value that is not ours
            raise WaveSpeedError(
                f"The WaveSpeed batch trigger could not read the ids of the {self.count} predictions it waits for "
                f"from {named}: {type(exc).__name__}: {exc}. Was the XCom deleted, or is the XCom backend "
                "unreachable from the triggerer? The batch record is kept: clear the task to run it again; it "
                "pushes the ids again and waits for the same predictions (nothing is submitted again)"
            ) from None
        self._ids = ids
        return ids

    async def _run(self) -> AsyncIterator[TriggerEvent]:
        total = self.count
        try:
            ids = await self._load_ids()
        except WaveSpeedError as exc:
            yield TriggerEvent(batch_event(total, {}, error=exc))
            return
        polling = False
        try:
            async with self.shared_client() as client:
                polling = True
                self.log.info("Waiting for %d WaveSpeed predictions", total)
                self._waiting = True
                wait = await wait_for_predictions(
                    client,
                    ids,
                    poll_interval=self.poll_interval,
                    end_time=self.end_time,
                    first_poll_interval=self.first_poll_interval,
                    on_finished=self._seen_finished,
                    log=self.log,
                )
                self.log.info("WaveSpeed batch wait ended: %s", wait.counts())
                counts = wait.counts()
                event = batch_event(total, counts, error=wait.error, running=len(wait.last_status))
                if wait.deadline and wait.last_status and self.cancel_on_timeout:
                    cancelled = await cancel_unfinished(client, list(wait.last_status), log=self.log)
                    # What the cancel found finished counts as finished; the rest stays "running" (not cancelled).
                    for prediction in cancelled.finished.values():
                        counts[prediction.status] = counts.get(prediction.status, 0) + 1
                    stopped = len(cancelled.cancelled) + len(cancelled.gone)
                    counts["running"] = len(wait.last_status) - stopped - len(cancelled.finished)
                    counts["cancelled_at_deadline"] = stopped
                    event = {**event, "counts": {k: v for k, v in counts.items() if v}, "cancelled": stopped}
                    event["message"] = (
                        f"{len(wait.last_status)} of {total} WaveSpeed predictions did not finish before the wait "
                        f"limit: {stopped} cancelled (cancel_on_timeout), {len(cancelled.finished)} finished meanwhile"
                        + (f", {len(cancelled.errors)} could not be cancelled" if cancelled.errors else "")
                    )
        except WaveSpeedError as exc:
            if polling:
                raise
            # The connection could not be used: nothing was polled.
            yield TriggerEvent(batch_event(total, {}, error=exc))
            return
        yield TriggerEvent(event)
