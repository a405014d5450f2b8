"""The triggers' shared async client: one per event loop and connection id (not a hook: no connection of its own).

Every trigger of a connection in one triggerer loop polls through the same
:class:`AsyncWaveSpeedClient`, used as ``async with shared_client(conn_id) as client:``: one
``aiohttp`` session with at most :data:`POOL_SIZE` keep-alive connections, the requests beyond
them queued in arrival order, and one 429 back-off. Credentials are looked up once (through
the hook, without blocking the loop), users are counted, and the last one out closes the pool.

:func:`set_client_factory` replaces how the shared client is built (tests and benchmarks:
e.g. the benchmarks' baseline on the old transport); :func:`default_client_factory` is the
shipped one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from airflow_provider_wavespeed.api._limiter import AdaptiveLimiter
from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient
from airflow_provider_wavespeed.api.defaults import POOL_SIZE
from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedCredentials, WaveSpeedHook

__all__ = [
    "POLL_RETRY",
    "ClientFactory",
    "default_client_factory",
    "set_client_factory",
    "shared_client",
    "shared_pool_stats",
    "shared_transport_stats",
]

# One retry of our own per poll: the trigger's loop keeps polling after that anyway, and
# aiohttp already sends a GET whose connection was dropped once more itself, so two
# retries made up to six requests of each poll in an outage (deployment tier: 1.45/s per
# sensor while connections were cut, against 0.2/s when all is well).
POLL_RETRY = RetryPolicy(max_retries=1, rate_limit_retries=2)

# Builds the shared client from the connection's credentials, inside the loop that will use it.
# The registry closes it (``aclose``) when its last user releases it.
ClientFactory = Callable[[WaveSpeedCredentials], AsyncWaveSpeedClient]


def default_client_factory(creds: WaveSpeedCredentials) -> AsyncWaveSpeedClient:
    """Return the shipped shared client: aiohttp, ``POOL_SIZE`` connections, polls back off only after a 429."""
    return AsyncWaveSpeedClient(
        creds.api_key,
        creds.base_url,
        credential_source=creds.source,
        # No tier limits result polls, so no fixed budget: polls back off together only once the
        # API answers 429 (shared pause, rate halved per 429, grown back, then unlimited again).
        limiter=AdaptiveLimiter(),
        retry=POLL_RETRY,
        # Polls beyond the pool wait in the client's queue (a future each), not as built requests;
        # the client's session holds as many connections as this.
        max_in_flight=POOL_SIZE,
    )


_factory: ClientFactory = default_client_factory


def set_client_factory(factory: ClientFactory | None) -> None:
    """Build shared clients created from now on with ``factory`` (None: the shipped one).

    Clients already shared stay as they are until their last user releases them.
    """
    global _factory
    _factory = factory or default_client_factory


@dataclass
class _Shared:
    """One client (its pool and 429 back-off) for all triggers of a connection in a loop."""

    client: AsyncWaveSpeedClient
    users: int = 0


# loop -> conn id -> shared client (None while a trigger that was creating it got cancelled);
# a closed, collected loop drops its entries.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[_Shared | None]]] = (
    weakref.WeakKeyDictionary()
)


async def _create_shared(conn_id: str) -> _Shared:
    creds = await WaveSpeedHook(conn_id).aget_credentials()
    return _Shared(client=_factory(creds))


@asynccontextmanager
async def shared_client(conn_id: str) -> AsyncIterator[AsyncWaveSpeedClient]:
    """Use the loop's shared client for ``conn_id`` inside the ``async with``; credentials are looked up once.

    A connection that cannot be used raises its ``WaveSpeedError`` on entry.
    """
    client = await _acquire(conn_id)
    try:
        yield client
    finally:
        await _release(conn_id)


async def _acquire(conn_id: str) -> AsyncWaveSpeedClient:
    """Return the loop's shared client for ``conn_id`` and count one more user."""
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


async def _release(conn_id: str) -> None:
    """Drop one user; the last one closes the client and its connections."""
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
        await shared.client.aclose()


def _current_shared() -> dict[str, _Shared]:
    per_loop = _SHARED.get(asyncio.get_running_loop(), {})
    shared = {cid: f.result() for cid, f in per_loop.items() if f.done() and f.exception() is None}
    return {cid: s for cid, s in shared.items() if s is not None}


def shared_pool_stats() -> dict[str, int]:
    """Users per connection id of the running loop's shared clients (for tests and benchmarks)."""
    return {cid: shared.users for cid, shared in _current_shared().items()}


def shared_transport_stats() -> dict[str, dict[str, int]]:
    """Per connection id of the running loop's shared clients: users, and requests queued for the pool."""
    return {cid: {"users": s.users, "waiting": s.client.waiting} for cid, s in _current_shared().items()}
