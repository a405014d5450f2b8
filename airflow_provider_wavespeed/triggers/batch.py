"""WaveSpeedBatchTrigger: waits in the triggerer for every prediction of a batch, in one trigger.

The polling itself (:func:`wait_for_predictions`) and the bounded reads
(:func:`read_predictions`) take any async client: the trigger passes the triggerer's shared
one, :class:`~airflow_provider_wavespeed.operators.batch.WaveSpeedBatchOperator` its own when it
waits in the worker (``deferrable=False``) and when it reads the finished predictions. One
polling policy, wherever the wait runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient, note_unknown_status
from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedAuthError, WaveSpeedError
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.retry import PollSchedule
from airflow_provider_wavespeed.api.validation import validate_prediction_id
from airflow_provider_wavespeed.events import batch_event
from airflow_provider_wavespeed.hooks.shared_client import POOL_SIZE, acquire_shared_client, release_shared_client
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

__all__ = [
    "READ_CONCURRENCY",
    "BatchWait",
    "WaveSpeedBatchTrigger",
    "read_predictions",
    "wait_for_predictions",
]

_log = logging.getLogger(__name__)

# Requests of one batch in flight at once: as many as the shared pool has connections, so a
# batch of 1,000 queues its polls in its own few coroutines instead of 1,000 futures in the pool.
READ_CONCURRENCY = POOL_SIZE


async def read_predictions(
    client: AsyncWaveSpeedClient, prediction_ids: Sequence[str], *, concurrency: int = READ_CONCURRENCY
) -> dict[str, Prediction | WaveSpeedError]:
    """Read each prediction once, at most ``concurrency`` at a time: id -> prediction, or the error met.

    Each read has the client's own retries; what still fails is returned, not raised, so one
    unreadable prediction does not hide the others.
    """
    results: dict[str, Prediction | WaveSpeedError] = {}
    queue = iter(prediction_ids)

    async def reader() -> None:
        for prediction_id in queue:  # a shared iterator: each id goes to exactly one reader
            try:
                results[prediction_id] = await client.get_prediction(prediction_id)
            except WaveSpeedError as exc:
                results[prediction_id] = exc

    await asyncio.gather(*(reader() for _ in range(max(1, min(concurrency, len(prediction_ids))))))
    return results


@dataclass
class BatchWait:
    """How a wait for many predictions ended.

    ``statuses`` holds the terminal status of each finished prediction, ``last_status`` the
    last one read of each still running (``deadline``), ``unreadable`` the error of each one
    that could not be read for good (e.g. 404); ``error`` ends the wait for all (a refused key).
    """

    statuses: dict[str, str] = field(default_factory=dict)
    last_status: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    deadline: bool = False
    error: WaveSpeedError | None = None

    def counts(self) -> dict[str, int]:
        counts = Counter(self.statuses.values())
        if self.last_status:
            counts["running"] = len(self.last_status)
        if self.unreadable:
            counts["unreadable"] = len(self.unreadable)
        return dict(counts)


async def wait_for_predictions(
    client: AsyncWaveSpeedClient,
    prediction_ids: Sequence[str],
    *,
    poll_interval: float,
    end_time: float,
    first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
    on_finished: Callable[[Prediction], None] | None = None,
    log: Any = _log,
    concurrency: int = READ_CONCURRENCY,
) -> BatchWait:
    """Poll every prediction not yet terminal, round after round, until all are (or ``end_time``).

    The rounds follow :class:`PollSchedule` (1 s, 2 s, 4 s, then every ``poll_interval``); a
    round reads the pending predictions at most ``concurrency`` at a time. Transient errors
    (429, 5xx, resets) keep a prediction pending, and a 429's ``Retry-After`` delays the next
    round; a refused key (401/403) ends the wait for all; any other permanent error (404, a
    malformed answer) ends the wait for that prediction only. ``on_finished`` gets each
    terminal prediction once (the trigger keeps only its status: outputs may be large).
    """
    schedule = PollSchedule(poll_interval=poll_interval, first_interval=first_poll_interval)
    result = BatchWait()
    pending = list(dict.fromkeys(prediction_ids))
    last = dict.fromkeys(pending, "not yet read")
    unknown: set[str] = set()
    server_wait = 0.0
    poll_round = 0
    while pending:
        wait = min(max(schedule.interval(poll_round), server_wait), end_time - time.time())
        if wait > 0:
            await asyncio.sleep(wait)
        poll_round += 1
        if time.time() >= end_time:
            result.deadline = True
            result.last_status = {prediction_id: last[prediction_id] for prediction_id in pending}
            return result
        server_wait = 0.0
        answers = await read_predictions(client, pending, concurrency=concurrency)
        still: list[str] = []
        for prediction_id in pending:
            answer = answers[prediction_id]
            if isinstance(answer, Prediction):
                if answer.is_terminal:
                    result.statuses[prediction_id] = answer.status
                    if on_finished is not None:
                        on_finished(answer)
                    continue
                note_unknown_status(answer, unknown, log)
                last[prediction_id] = answer.status
            elif client.retry.is_retryable(answer, idempotent=True):
                server_wait = max(server_wait, client.retry.server_wait(answer))
                last[prediction_id] = f"unreadable ({answer})"
            elif isinstance(answer, WaveSpeedAuthError):
                result.error = answer
                return result
            else:
                result.unreadable[prediction_id] = str(answer)
                continue
            still.append(prediction_id)
        if still:
            log.debug("WaveSpeed batch: %d of %d predictions still running", len(still), len(last))
        pending = still
    return result


class WaveSpeedBatchTrigger(BaseTrigger):
    """Poll every prediction of a batch until all are terminal, in one trigger.

    All predictions of the batch are polled through the triggerer's shared client of the
    connection (:mod:`~airflow_provider_wavespeed.hooks.shared_client`: one pool, one 429
    back-off), at most :data:`READ_CONCURRENCY` at a time, with the same schedule and retry
    rules as :class:`~airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger`
    (see :func:`wait_for_predictions`). Its kwargs are the prediction ids and the settings;
    its one event is a status (``done``, ``deadline`` or ``error``) with counts, the same few
    hundred bytes for 10 predictions or 10,000: the task reads the predictions themselves
    when it resumes. ``end_time`` is absolute epoch seconds, so a trigger resumed by another
    triggerer keeps its deadline. The trigger never submits anything.

    :param prediction_ids: The predictions to wait for.
    :param wavespeed_conn_id: The WaveSpeed connection id (the key is looked up, never stored).
    :param poll_interval: The longest wait between two polls of a prediction, in seconds.
    :param end_time: Epoch seconds after which the wait ends with a ``deadline`` event.
    :param first_poll_interval: The wait before the first round of polls.
    """

    def __init__(
        self,
        prediction_ids: Sequence[str],
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
    ) -> None:
        super().__init__()
        self.prediction_ids = [validate_prediction_id(prediction_id) for prediction_id in prediction_ids]
        self.wavespeed_conn_id = wavespeed_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else time.time() + DEFAULT_WAIT_TIMEOUT
        self.first_poll_interval = float(first_poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_ids": list(self.prediction_ids),
                "wavespeed_conn_id": self.wavespeed_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "first_poll_interval": self.first_poll_interval,
            },
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WaveSpeedBatchTrigger) and self.serialize() == other.serialize()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # the ids can be thousands: the log line names how many
        return (
            f"<{type(self).__name__} {len(self.prediction_ids)} predictions, "
            f"conn {self.wavespeed_conn_id!r}, until {self.end_time:.0f}>"
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        total = len(self.prediction_ids)
        try:
            client = await acquire_shared_client(self.wavespeed_conn_id)
        except WaveSpeedError as exc:
            yield TriggerEvent(batch_event(total, {}, error=exc))
            return
        try:
            self.log.info("Waiting for %d WaveSpeed predictions", total)
            wait = await wait_for_predictions(
                client,
                self.prediction_ids,
                poll_interval=self.poll_interval,
                end_time=self.end_time,
                first_poll_interval=self.first_poll_interval,
                log=self.log,
            )
            self.log.info("WaveSpeed batch wait ended: %s", wait.counts())
            yield TriggerEvent(batch_event(total, wait.counts(), error=wait.error, running=len(wait.last_status)))
        finally:
            await release_shared_client(self.wavespeed_conn_id)
