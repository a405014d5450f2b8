"""Baseline triggers: the way older providers poll, with our polling policy and events.

Both wait on a prediction exactly like :class:`WaveSpeedTaskTrigger` (same kwargs, same
:class:`PollSchedule`, same event payloads, same error handling); only the transport of one
poll differs, so the benchmark measures the transport and nothing else:

- :class:`NewClientPerPollTrigger` opens a new ``httpx.AsyncClient`` for every poll, as the dbt
  Cloud and Fivetran triggers open a new HTTP session per poll. (httpx, as before issue 12, so the
  row stays comparable: a new one loads its CA bundle each time. A new ``aiohttp.ClientSession``
  per poll, whose default TLS context aiohttp caches, cost 1.6x the shared client's CPU per poll
  in a ``--smoke`` run, N = 200: plain HTTP on loopback has no TLS handshakes to pay for.)
- :class:`ThreadedRequestsTrigger` runs a sync ``requests`` call in a thread per poll
  (``asyncio.to_thread``, the loop's default executor), as triggers wrapping a sync SDK or
  ``HttpHook.run`` do; each call uses a new ``requests.Session``, like ``HttpHook.run``.

Both look the connection up once per trigger (not per poll), which is kinder than the
providers they stand for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from airflow.triggers.base import TriggerEvent

from airflow_provider_wavespeed._events import deadline_event, error_event, terminal_event
from airflow_provider_wavespeed.api.client import WaveSpeedClient
from airflow_provider_wavespeed.api.defaults import DEFAULT_REQUEST_TIMEOUT
from airflow_provider_wavespeed.api.errors import WaveSpeedError
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.polling import PollSchedule
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedCredentials, WaveSpeedHook
from airflow_provider_wavespeed.triggers._shared_client import POLL_RETRY
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger
from benchmarks.legacy_transport import HttpxWaveSpeedClient


class _BaselineTrigger(WaveSpeedTaskTrigger):
    """WaveSpeedTaskTrigger's wait loop with a pluggable one-poll transport."""

    def _poller(self, creds: WaveSpeedCredentials) -> Callable[[], Awaitable[Prediction]]:
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        schedule = PollSchedule(poll_interval=self.poll_interval, first_interval=self.first_poll_interval)
        try:
            creds = await WaveSpeedHook(self.wavespeed_conn_id).aget_credentials()
        except WaveSpeedError as exc:
            yield TriggerEvent(error_event(self.prediction_id, str(exc), type(exc).__name__))
            return
        poll_once = self._poller(creds)
        poll = 0
        while True:
            wait = min(schedule.interval(poll), self.end_time - time.time())
            if wait > 0:
                await asyncio.sleep(wait)
            poll += 1
            if time.time() >= self.end_time:
                yield TriggerEvent(
                    deadline_event(self.prediction_id, f"prediction {self.prediction_id} did not finish in time")
                )
                return
            try:
                prediction = await poll_once()
            except WaveSpeedError as exc:
                if POLL_RETRY.is_transient(exc, idempotent=True):
                    continue
                yield TriggerEvent(error_event(self.prediction_id, str(exc), type(exc).__name__))
                return
            if prediction.is_terminal:
                yield TriggerEvent(terminal_event(prediction))
                return


class NewClientPerPollTrigger(_BaselineTrigger):
    """A new ``httpx.AsyncClient`` (new connection, new TLS context) for every poll."""

    def _poller(self, creds: WaveSpeedCredentials) -> Callable[[], Awaitable[Prediction]]:
        async def poll_once() -> Prediction:
            http = httpx.AsyncClient(timeout=DEFAULT_REQUEST_TIMEOUT)
            async with HttpxWaveSpeedClient(
                creds.api_key, creds.base_url, credential_source=creds.source, http_client=http, retry=POLL_RETRY
            ) as client:  # closes its httpx client
                return await client.get_prediction(self.prediction_id)

        return poll_once


class ThreadedRequestsTrigger(_BaselineTrigger):
    """A sync ``requests`` poll (new session) in the loop's default thread pool."""

    def _poller(self, creds: WaveSpeedCredentials) -> Callable[[], Awaitable[Prediction]]:
        def poll_sync() -> Prediction:
            with WaveSpeedClient(
                creds.api_key, creds.base_url, credential_source=creds.source, retry=POLL_RETRY
            ) as client:
                return client.get_prediction(self.prediction_id)

        async def poll_once() -> Prediction:
            return await asyncio.to_thread(poll_sync)

        return poll_once
