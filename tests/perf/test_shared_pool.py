"""The triggers' shared client per (event loop, connection): bounded, shared, closed, fair under 429s."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from perf_helpers import Connects

from airflow_provider_wavespeed.api import AsyncWaveSpeedClient
from airflow_provider_wavespeed.api.defaults import POOL_SIZE
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedCredentials, WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers._shared_client import (
    _acquire,
    _release,
    default_client_factory,
    set_client_factory,
    shared_pool_stats,
    shared_transport_stats,
)
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

CONN_ID = "wavespeed_default"
FLUX = "wavespeed-ai/flux-dev"


def _fast_connection(emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``wavespeed_default`` with a submission budget far above what the test sends (the default is 500/min)."""
    connection = {
        "conn_type": "wavespeed",
        "host": emulator.url,
        "password": emulator.api_key,
        "extra": {"max_submissions_per_minute": 30000},
    }
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))


def _submit(n: int) -> list[str]:
    hook = WaveSpeedHook()
    return [hook.submit(FLUX, {"prompt": f"prompt {index}"}).id for index in range(n)]


def _trigger(prediction_id: str) -> WaveSpeedTaskTrigger:
    return WaveSpeedTaskTrigger(prediction_id, poll_interval=0.3, first_poll_interval=0.1, end_time=time.time() + 60)


async def _statuses(trigger: WaveSpeedTaskTrigger) -> list[str]:
    return [event.payload["status"] async for event in trigger.run()]


async def test_many_triggers_share_a_bounded_pool_that_closes_after_the_last(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, connects: Connects
) -> None:
    _fast_connection(wavespeed_emulator, monkeypatch)
    wavespeed_emulator.hold()  # all 300 still waiting when the last one starts, however slow the machine
    ids = _submit(300)
    connects.clear()  # the submits' connections (requests) are not the triggers'
    seen: list[dict[str, dict[str, int]]] = []
    open_seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(shared_transport_stats())
            open_seen.append(connects.open_to(wavespeed_emulator.url))
            if seen[-1].get(CONN_ID, {}).get("users") == 300:
                wavespeed_emulator.release()
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(_statuses(_trigger(pid)) for pid in ids))
    done.set()
    await watcher
    assert results == [["completed"]] * 300
    stats = [entry[CONN_ID] for entry in seen if CONN_ID in entry]
    assert max(s["users"] for s in stats) == 300  # one client for all of them
    assert max(s["waiting"] for s in stats) > 0  # polls beyond the pool queued in the client
    assert connects.to(wavespeed_emulator.url) <= POOL_SIZE  # bounded by the pool, not by N
    assert max(open_seen) <= POOL_SIZE
    assert shared_transport_stats() == {}  # the last trigger closed it
    assert connects.open_to(wavespeed_emulator.url) == 0  # and its connections
    polls = sum(wavespeed_emulator.prediction_state(pid)["polls"] for pid in ids)
    assert polls >= 300


async def test_a_waiter_cancelled_during_creation_does_not_cancel_it_for_the_others(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = WaveSpeedHook.aget_credentials

    async def slow_credentials(self: WaveSpeedHook) -> Any:
        await asyncio.sleep(0.2)
        return await real(self)

    monkeypatch.setattr(WaveSpeedHook, "aget_credentials", slow_credentials)
    creator = asyncio.create_task(_acquire(CONN_ID))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(_acquire(CONN_ID))
    waiter = asyncio.create_task(_acquire(CONN_ID))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    client = await creator
    assert await waiter is client
    assert cancelled.cancelled()
    assert shared_pool_stats() == {CONN_ID: 2}
    await _release(CONN_ID)
    await _release(CONN_ID)
    assert shared_pool_stats() == {}


async def test_when_the_creating_trigger_is_cancelled_a_waiter_creates_it(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = WaveSpeedHook.aget_credentials

    async def slow_credentials(self: WaveSpeedHook) -> Any:
        await asyncio.sleep(0.2)
        return await real(self)

    monkeypatch.setattr(WaveSpeedHook, "aget_credentials", slow_credentials)
    creator = asyncio.create_task(_acquire(CONN_ID))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(_acquire(CONN_ID))
    await asyncio.sleep(0.01)
    creator.cancel()
    client = await waiter
    assert creator.cancelled()
    prediction_id = _submit(1)[0]
    assert (await client.get_prediction(prediction_id)).id == prediction_id
    assert shared_pool_stats() == {CONN_ID: 1}
    await _release(CONN_ID)
    assert shared_pool_stats() == {}


async def test_a_client_factory_builds_the_shared_client_and_the_registry_closes_it(
    wavespeed_connection: WaveSpeedEmulator,
) -> None:
    built: list[tuple[WaveSpeedCredentials, AsyncWaveSpeedClient]] = []
    closed: list[AsyncWaveSpeedClient] = []

    class Recorded(AsyncWaveSpeedClient):
        async def aclose(self) -> None:
            closed.append(self)
            await super().aclose()

    def factory(creds: WaveSpeedCredentials) -> AsyncWaveSpeedClient:
        client = Recorded(creds.api_key, creds.base_url, credential_source=creds.source)
        built.append((creds, client))
        return client

    set_client_factory(factory)
    try:
        first = await _acquire(CONN_ID)
        assert await _acquire(CONN_ID) is first  # built once for both users
        assert [client for _, client in built] == [first]
        assert built[0][0].base_url == wavespeed_connection.url  # from the connection, looked up once
        prediction_id = _submit(1)[0]
        assert (await first.get_prediction(prediction_id)).id == prediction_id
        await _release(CONN_ID)
        assert closed == []
        await _release(CONN_ID)
        assert closed == [first]  # the last user closed it
    finally:
        set_client_factory(None)
    shipped = await _acquire(CONN_ID)  # None: the shipped factory again
    try:
        assert type(shipped) is AsyncWaveSpeedClient and len(built) == 1
        assert default_client_factory is not factory
    finally:
        await _release(CONN_ID)


async def test_a_429_pauses_every_trigger_of_the_connection(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fast_connection(wavespeed_emulator, monkeypatch)
    wavespeed_emulator.hold()  # running until polling has resumed after the pause
    ids = _submit(20)
    since = time.time()

    def result_log() -> list[tuple[float, int]]:
        return [(stamp, status) for stamp, name, status in wavespeed_emulator.request_log(since) if name == "result"]

    async def refuse_once_polling_starts() -> float:
        while len(result_log()) < 20:
            await asyncio.sleep(0.02)
        wavespeed_emulator.add_fault("result", "rate_limit", retry_after=1, times=1)
        while not any(status == 429 for _, status in result_log()):
            await asyncio.sleep(0.02)
        refused_at = next(stamp for stamp, status in result_log() if status == 429)
        while not any(stamp >= refused_at + 0.95 for stamp, _ in result_log()):
            await asyncio.sleep(0.02)
        wavespeed_emulator.release()
        return time.time()

    results, _ = await asyncio.gather(
        asyncio.gather(*(_statuses(_trigger(pid)) for pid in ids)), refuse_once_polling_starts()
    )
    assert results == [["completed"]] * 20
    log = [(stamp, status) for stamp, name, status in wavespeed_emulator.request_log(since) if name == "result"]
    refused = [stamp for stamp, status in log if status == 429]
    assert len(refused) == 1
    # Retry-After 1 s held back all twenty pollers, not only the one that was refused: only
    # polls already on their way when the 429 went out reach the server during the pause.
    in_pause = [stamp - refused[0] for stamp, _ in log if refused[0] < stamp < refused[0] + 0.95]
    assert len(in_pause) <= POOL_SIZE
    assert all(delay < 0.5 for delay in in_pause)  # already on their way (loopback, with room for a busy machine)
    assert any(stamp >= refused[0] + 0.95 for stamp, _ in log)  # and polling resumed after it
