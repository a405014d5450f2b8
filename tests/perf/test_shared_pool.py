"""The triggers' shared client per (event loop, connection): bounded, shared, closed, fair under 429s."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers import wavespeed
from airflow_provider_wavespeed.triggers.wavespeed import (
    POOL_SIZE,
    WaveSpeedTaskTrigger,
    acquire_shared_client,
    release_shared_client,
    shared_pool_stats,
    shared_transport_stats,
)

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
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fast_connection(wavespeed_emulator, monkeypatch)
    wavespeed_emulator.hold()  # all 300 still waiting when the last one starts, however slow the machine
    ids = _submit(300)
    seen: list[dict[str, dict[str, int]]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(shared_transport_stats())
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
    assert max(s["connections_opened"] for s in stats) <= POOL_SIZE  # bounded by the pool, not by N
    assert max(s["open_connections"] for s in stats) <= POOL_SIZE
    assert shared_transport_stats() == {}  # the last trigger closed it
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
    creator = asyncio.create_task(acquire_shared_client(CONN_ID))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(acquire_shared_client(CONN_ID))
    waiter = asyncio.create_task(acquire_shared_client(CONN_ID))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    client = await creator
    assert await waiter is client
    assert cancelled.cancelled()
    assert shared_pool_stats() == {CONN_ID: 2}
    await release_shared_client(CONN_ID)
    await release_shared_client(CONN_ID)
    assert shared_pool_stats() == {}


async def test_when_the_creating_trigger_is_cancelled_a_waiter_creates_it(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = WaveSpeedHook.aget_credentials

    async def slow_credentials(self: WaveSpeedHook) -> Any:
        await asyncio.sleep(0.2)
        return await real(self)

    monkeypatch.setattr(WaveSpeedHook, "aget_credentials", slow_credentials)
    creator = asyncio.create_task(acquire_shared_client(CONN_ID))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(acquire_shared_client(CONN_ID))
    await asyncio.sleep(0.01)
    creator.cancel()
    client = await waiter
    assert creator.cancelled()
    prediction_id = _submit(1)[0]
    assert (await client.get_prediction(prediction_id)).id == prediction_id
    assert shared_pool_stats() == {CONN_ID: 1}
    await release_shared_client(CONN_ID)
    assert shared_pool_stats() == {}


async def test_a_proxy_in_the_environment_keeps_httpx_own_transport(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    await acquire_shared_client(CONN_ID)
    try:
        assert shared_transport_stats()[CONN_ID]["open_connections"] == -1  # not the keep-alive transport
        assert wavespeed._current_shared()[CONN_ID].http is not None
    finally:
        await release_shared_client(CONN_ID)


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
