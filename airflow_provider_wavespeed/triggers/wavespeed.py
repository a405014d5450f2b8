"""WaveSpeedTaskTrigger: waits for a prediction in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_wavespeed.api._transport import KeepAliveTransport, proxy_configured
from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient, note_unknown_status
from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedError
from airflow_provider_wavespeed.api.limiter import AdaptiveLimiter
from airflow_provider_wavespeed.api.retry import PollSchedule, RetryPolicy
from airflow_provider_wavespeed.api.validation import validate_prediction_id
from airflow_provider_wavespeed.events import deadline_event, error_event, terminal_event
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

# Connections (and requests in flight) per connection id and event loop. 16 connections carry
# about 80 polls/s at round trips up to ~190 ms; on loopback thousands per second
# (docs/benchmarks.md).
POOL_SIZE = 16
POOL_TIMEOUT = 120.0  # seconds a request may wait for a connection once it is let through


@dataclass
class _Shared:
    """One pooled HTTP client and 429 back-off for all triggers of a connection in a loop."""

    client: AsyncWaveSpeedClient
    http: httpx.AsyncClient
    transport: KeepAliveTransport | None
    users: int = 0


# loop -> conn id -> shared transport (None while a trigger that was creating it got cancelled);
# a closed, collected loop drops its entries.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[_Shared | None]]] = (
    weakref.WeakKeyDictionary()
)


async def _create_shared(conn_id: str) -> _Shared:
    creds = await WaveSpeedHook(conn_id).aget_credentials()
    timeout = httpx.Timeout(DEFAULT_REQUEST_TIMEOUT, pool=POOL_TIMEOUT)
    transport = None
    if proxy_configured(creds.base_url):
        limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
        http = httpx.AsyncClient(timeout=timeout, limits=limits)  # httpx's own transport honours the proxy
    else:
        transport = KeepAliveTransport(max_connections=POOL_SIZE)
        http = httpx.AsyncClient(timeout=timeout, transport=transport)
    client = AsyncWaveSpeedClient(
        creds.api_key,
        creds.base_url,
        credential_source=creds.source,
        http_client=http,
        # No tier limits result polls, so no fixed budget: polls back off together only once the
        # API answers 429 (shared pause, rate halved per 429, grown back, then unlimited again).
        limiter=AdaptiveLimiter(),
        retry=RetryPolicy(max_retries=2, rate_limit_retries=2),  # the trigger's own loop keeps trying after that
        # Polls beyond the pool wait in the client's queue (a future each), not as built requests.
        max_in_flight=POOL_SIZE,
    )
    return _Shared(client=client, http=http, transport=transport)


async def acquire_shared_client(conn_id: str) -> AsyncWaveSpeedClient:
    """The loop's shared client for ``conn_id``; credentials are looked up once, not per trigger."""
    loop = asyncio.get_running_loop()
    per_loop = _SHARED.setdefault(loop, {})
    while True:
        future = per_loop.get(conn_id)
        if future is None:
            future = loop.create_future()
            per_loop[conn_id] = future
            try:
                shared = await _create_shared(conn_id)
            except asyncio.CancelledError:
                per_loop.pop(conn_id, None)
                future.set_result(None)  # the triggers waiting for it try again themselves
                raise
            except BaseException as exc:
                per_loop.pop(conn_id, None)
                future.set_exception(exc)
                future.exception()  # mark retrieved: other waiters get it through await
                raise
            future.set_result(shared)
        # shield: a waiter being cancelled must not cancel the creation for everyone.
        result = await asyncio.shield(future)
        if result is not None and per_loop.get(conn_id) is future:
            result.users += 1
            return result.client
        # Creation was cancelled, or the last user closed this one before we woke: start over.


async def release_shared_client(conn_id: str) -> None:
    """Drop one user; the last one closes the pool."""
    loop = asyncio.get_running_loop()
    per_loop = _SHARED.get(loop, {})
    future = per_loop.get(conn_id)
    if future is None or not future.done() or future.exception() is not None:
        return
    shared = future.result()
    if shared is None:
        return
    shared.users -= 1
    if shared.users <= 0:
        per_loop.pop(conn_id, None)
        await shared.http.aclose()


def _current_shared() -> dict[str, _Shared]:
    per_loop = _SHARED.get(asyncio.get_running_loop(), {})
    shared = {cid: f.result() for cid, f in per_loop.items() if f.done() and f.exception() is None}
    return {cid: s for cid, s in shared.items() if s is not None}


def shared_pool_stats() -> dict[str, int]:
    """Users per connection id of the running loop's shared clients (for tests and benchmarks)."""
    return {cid: shared.users for cid, shared in _current_shared().items()}


def shared_transport_stats() -> dict[str, dict[str, int]]:
    """Per connection id: users, open connections, connections opened so far (-1: httpx's transport)."""
    stats = {}
    for cid, shared in _current_shared().items():
        transport = shared.transport
        stats[cid] = {
            "users": shared.users,
            "open_connections": transport.open_connections if transport else -1,
            "connections_opened": transport.connections_opened if transport else -1,
        }
    return stats


class WaveSpeedTaskTrigger(BaseTrigger):
    """Poll ``GET /api/v3/predictions/<id>/result`` until the prediction is terminal.

    Polling policy: the first poll ``first_poll_interval`` (1 s) after the trigger starts,
    then each wait doubles up to ``poll_interval`` (default 5 s: the API asks for no
    faster than 2 s for images and 5 s for video); every trigger of a connection shares one
    connection pool. Polls have no fixed budget (the account tiers limit submissions, not
    polls): when the API answers 429, every trigger of the connection pauses for its
    ``Retry-After`` and polls at a reduced rate until the 429s stop.

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
