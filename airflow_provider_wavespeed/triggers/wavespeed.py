"""WaveSpeedTaskTrigger: waits for a prediction in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_wavespeed.api.client import note_unknown_status
from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedError
from airflow_provider_wavespeed.api.retry import PollSchedule
from airflow_provider_wavespeed.api.validation import validate_prediction_id
from airflow_provider_wavespeed.events import deadline_event, error_event, terminal_event
from airflow_provider_wavespeed.hooks.shared_client import acquire_shared_client, release_shared_client
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook


class WaveSpeedTaskTrigger(BaseTrigger):
    """Poll ``GET /api/v3/predictions/<id>/result`` until the prediction is terminal.

    Polling policy: the first poll ``first_poll_interval`` (1 s) after the trigger starts,
    then each wait doubles up to ``poll_interval`` (default 5 s: the API asks for no
    faster than 2 s for images and 5 s for video); every trigger of a connection shares one
    connection pool (:mod:`airflow_provider_wavespeed.hooks.shared_client`). Polls have no
    fixed budget (the account tiers limit submissions, not polls): when the API answers 429,
    every trigger of the connection pauses for its ``Retry-After`` and polls at a reduced
    rate until the 429s stop.

    A status this provider does not know is logged once and polling goes on; ``completed``,
    ``failed``, ``cancelled``, ``timeout`` and ``deleted`` end the wait.

    Transient errors (429, 5xx, resets, timeouts) are retried until ``end_time``;
    permanent ones (401/403, 404, malformed answers) end the wait at once. Exactly one
    event is yielded. ``end_time`` is an absolute epoch time, so a trigger resumed by
    another triggerer keeps its deadline. The trigger never submits anything.

    :param prediction_id: The prediction to wait for.
    :param wavespeed_conn_id: The WaveSpeed connection id (the key is looked up, never stored).
    :param poll_interval: The longest wait between polls, in seconds.
    :param end_time: Epoch seconds after which the wait ends with a ``deadline`` event.
    :param first_poll_interval: The wait before the first poll.
    """

    def __init__(
        self,
        prediction_id: str,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
    ) -> None:
        super().__init__()
        self.prediction_id = validate_prediction_id(prediction_id)
        self.wavespeed_conn_id = wavespeed_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time) if end_time is not None else time.time() + DEFAULT_WAIT_TIMEOUT
        self.first_poll_interval = float(first_poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_id": self.prediction_id,
                "wavespeed_conn_id": self.wavespeed_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "first_poll_interval": self.first_poll_interval,
            },
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WaveSpeedTaskTrigger) and self.serialize() == other.serialize()

    __hash__ = None  # type: ignore[assignment]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        schedule = PollSchedule(poll_interval=self.poll_interval, first_interval=self.first_poll_interval)
        try:
            client = await acquire_shared_client(self.wavespeed_conn_id)
        except WaveSpeedError as exc:
            yield TriggerEvent(error_event(self.prediction_id, str(exc), type(exc).__name__))
            return
        try:
            poll = 0
            unknown: set[str] = set()
            server_wait = 0.0  # Retry-After of a 429 that outlasted the request's own retries
            while True:
                wait = min(max(schedule.interval(poll), server_wait), self.end_time - time.time())
                server_wait = 0.0
                if wait > 0:
                    await asyncio.sleep(wait)
                poll += 1
                if time.time() >= self.end_time:
                    message = (
                        f"WaveSpeed prediction {self.prediction_id} did not finish before the wait "
                        "limit; it may still finish: wait on it again with the same prediction id"
                    )
                    yield TriggerEvent(deadline_event(self.prediction_id, message))
                    return
                try:
                    prediction = await client.get_prediction(self.prediction_id)
                except WaveSpeedError as exc:
                    if client.retry.is_retryable(exc, idempotent=True):
                        self.log.warning("Poll of %s failed, will retry: %s", self.prediction_id, exc)
                        server_wait = client.retry.server_wait(exc)
                        continue
                    yield TriggerEvent(error_event(self.prediction_id, str(exc), type(exc).__name__))
                    return
                if prediction.is_terminal:
                    yield TriggerEvent(terminal_event(prediction))
                    return
                note_unknown_status(prediction, unknown, self.log)
                self.log.debug("Prediction %s is %s", self.prediction_id, prediction.status)
        finally:
            await release_shared_client(self.wavespeed_conn_id)
