"""WaveSpeedBatchTrigger: waits in the triggerer for every prediction of a batch, in one trigger.

The polling is :func:`~airflow_provider_wavespeed.api.polling.wait_for_predictions`, the same
engine the single trigger and the batch task waiting in its worker use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedError
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.polling import cancel_unfinished, wait_for_predictions
from airflow_provider_wavespeed.api.validation import validate_prediction_id
from airflow_provider_wavespeed.events import batch_event
from airflow_provider_wavespeed.hooks.shared_client import acquire_shared_client, release_shared_client
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.triggers._cancel import CancellingTrigger

__all__ = ["WaveSpeedBatchTrigger"]


class WaveSpeedBatchTrigger(CancellingTrigger):
    """Poll every prediction of a batch until all are terminal, in one trigger.

    All predictions of the batch are polled through the triggerer's shared client of the
    connection (:mod:`~airflow_provider_wavespeed.hooks.shared_client`: one pool, one 429
    back-off), at most ``READ_CONCURRENCY`` at a time, by the same engine as
    :class:`~airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger`
    (:mod:`~airflow_provider_wavespeed.api.polling`). Its kwargs are the prediction ids and the
    settings; its one event is a status (``done``, ``deadline`` or ``error``) with counts, the same few
    hundred bytes for 10 predictions or 10,000: the task reads the predictions themselves
    when it resumes. ``end_time`` is absolute epoch seconds, so a trigger resumed by another
    triggerer keeps its deadline. The trigger never submits anything.

    :param prediction_ids: The predictions to wait for.
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
        prediction_ids: Sequence[str],
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
        cancel_on_kill: bool = False,
        cancel_on_timeout: bool = False,
    ) -> None:
        super().__init__()
        self.prediction_ids = [validate_prediction_id(prediction_id) for prediction_id in prediction_ids]
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
            "prediction_ids": list(self.prediction_ids),
            "wavespeed_conn_id": self.wavespeed_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
            "first_poll_interval": self.first_poll_interval,
        }
        # Only when set: a trigger stored before these options existed serializes as it did.
        options = {"cancel_on_kill": self.cancel_on_kill, "cancel_on_timeout": self.cancel_on_timeout}
        kwargs.update({name: True for name, value in options.items() if value})
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def unfinished_ids(self) -> list[str]:
        if not self._waiting:
            return []
        return [prediction_id for prediction_id in self.prediction_ids if prediction_id not in self._finished]

    def _seen_finished(self, prediction: Prediction) -> None:
        self._finished.add(prediction.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WaveSpeedBatchTrigger) and self.serialize() == other.serialize()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # the ids can be thousands: the log line names how many
        return (
            f"<{type(self).__name__} {len(self.prediction_ids)} predictions, "
            f"conn {self.wavespeed_conn_id!r}, until {self.end_time:.0f}>"
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in self._run():
                self._waiting = False  # the event is sent: the task decides from here
                yield event
        except asyncio.CancelledError:
            await self.cancelled_from_outside()
            raise

    async def _run(self) -> AsyncIterator[TriggerEvent]:
        total = len(self.prediction_ids)
        try:
            client = await acquire_shared_client(self.wavespeed_conn_id)
        except WaveSpeedError as exc:
            yield TriggerEvent(batch_event(total, {}, error=exc))
            return
        try:
            self.log.info("Waiting for %d WaveSpeed predictions", total)
            self._waiting = True
            wait = await wait_for_predictions(
                client,
                self.prediction_ids,
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
            yield TriggerEvent(event)
        finally:
            await release_shared_client(self.wavespeed_conn_id)
