"""KeepAliveTransport (the triggers' shared HTTP/1.1 transport): framing, reuse, bounds, failures.

Against the emulator over loopback, and against tiny raw-socket servers for what the
emulator never sends (chunked and gzip bodies, a connection closed under a reused request).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from airflow_provider_wavespeed.api._transport import KeepAliveTransport, proxy_configured
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _client(transport: KeepAliveTransport, emulator: WaveSpeedEmulator, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport,
        base_url=emulator.url,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=httpx.Timeout(10.0, **timeouts),
    )


async def _submit(client: httpx.AsyncClient) -> str:
    response = await client.post(f"/api/v3/{FLUX}", json={"prompt": "a lighthouse"})
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["id"])


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start an asyncio server with a given connection handler; returns its base URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def test_sequential_requests_reuse_one_connection(wavespeed_emulator: WaveSpeedEmulator) -> None:
    transport = KeepAliveTransport(max_connections=4)
    async with _client(transport, wavespeed_emulator) as client:
        prediction_id = await _submit(client)
        for _ in range(30):
            response = await client.get(f"/api/v3/predictions/{prediction_id}/result")
            assert response.status_code == 200 and response.json()["data"]["id"] == prediction_id
    assert transport.connections_opened == 1
    assert transport.open_connections == 0  # closed with the client
    assert wavespeed_emulator.prediction_state(prediction_id)["polls"] == 30


async def test_concurrent_requests_never_open_more_than_the_pool(wavespeed_emulator: WaveSpeedEmulator) -> None:
    transport = KeepAliveTransport(max_connections=4)
    async with _client(transport, wavespeed_emulator) as client:
        prediction_id = await _submit(client)
        seen_waiting = []

        async def poll() -> int:
            seen_waiting.append(transport.waiting)
            return (await client.get(f"/api/v3/predictions/{prediction_id}/result")).status_code

        statuses = await asyncio.gather(*(poll() for _ in range(300)))
    assert statuses == [200] * 300
    assert transport.connections_opened <= 4
    assert max(seen_waiting) > 0  # requests really queued for the 4 connections
    assert wavespeed_emulator.prediction_state(prediction_id)["polls"] == 300


async def test_waiters_are_served_in_arrival_order(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.add_fault("result", "slow", delay=0.02, times=None)
    transport = KeepAliveTransport(max_connections=1)
    async with _client(transport, wavespeed_emulator) as client:
        prediction_id = await _submit(client)
        done: list[int] = []

        async def poll(index: int) -> None:
            await client.get(f"/api/v3/predictions/{prediction_id}/result")
            done.append(index)

        tasks = []
        for index in range(15):
            tasks.append(asyncio.create_task(poll(index)))
            await asyncio.sleep(0)  # each one reaches the queue before the next starts
        await asyncio.gather(*tasks)
    assert done == list(range(15))


async def test_a_cancelled_waiter_gives_its_turn_away(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.add_fault("result", "slow", delay=0.2, times=1)
    transport = KeepAliveTransport(max_connections=1)
    async with _client(transport, wavespeed_emulator) as client:
        prediction_id = await _submit(client)
        url = f"/api/v3/predictions/{prediction_id}/result"
        holder = asyncio.create_task(client.get(url))
        await asyncio.sleep(0.05)
        waiters = [asyncio.create_task(client.get(url)) for _ in range(5)]
        await asyncio.sleep(0.01)
        for waiter in waiters:
            waiter.cancel()
        assert (await holder).status_code == 200
        # The only slot is free again: later requests are not stuck behind the cancelled ones.
        assert [r.status_code for r in await asyncio.gather(*(client.get(url) for _ in range(3)))] == [200] * 3
    assert all(waiter.cancelled() for waiter in waiters)


async def test_read_timeout_drops_the_connection(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.add_fault("result", "slow", delay=1.0, times=1)
    transport = KeepAliveTransport(max_connections=2)
    async with _client(transport, wavespeed_emulator, read=0.2) as client:
        prediction_id = await _submit(client)
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"/api/v3/predictions/{prediction_id}/result")
        assert transport.open_connections == 0
        assert (await client.get(f"/api/v3/predictions/{prediction_id}/result")).status_code == 200


async def test_pool_timeout_when_no_slot_frees_up(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.add_fault("result", "slow", delay=1.0, times=1)
    transport = KeepAliveTransport(max_connections=1)
    async with _client(transport, wavespeed_emulator, pool=0.1) as client:
        prediction_id = await _submit(client)
        url = f"/api/v3/predictions/{prediction_id}/result"
        holder = asyncio.create_task(client.get(url))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await client.get(url)
        assert (await holder).status_code == 200


async def test_connection_refused_is_a_connect_error() -> None:
    transport = KeepAliveTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/api/v3/balance")
    assert transport.open_connections == 0


async def test_dropped_connection_without_answer_is_a_protocol_error(wavespeed_emulator: WaveSpeedEmulator) -> None:
    transport = KeepAliveTransport()
    async with _client(transport, wavespeed_emulator) as client:
        prediction_id = await _submit(client)
        wavespeed_emulator.add_fault("result", "drop", times=2)  # the one retry on a fresh connection too
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/api/v3/predictions/{prediction_id}/result")


async def test_chunked_gzip_and_close_delimited_bodies(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    payload = json.dumps({"code": 200, "data": {"n": list(range(50))}}).encode()
    packed = gzip.compress(payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_request(reader)
        if b"/chunked" in head:
            body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:10], payload[10:])) + b"0\r\n\r\n"
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            head = await _read_request(reader)  # the same connection is reused
        if b"/gzip" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed))
            writer.write(packed)
            head = await _read_request(reader)
        if b"/close" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload)
        await writer.drain()
        writer.close()

    url = await raw_server(handler)
    transport = KeepAliveTransport()
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:
        assert (await client.get("/chunked")).json() == json.loads(payload)
        assert (await client.get("/gzip")).json() == json.loads(payload)
        assert (await client.get("/close")).json() == json.loads(payload)
    assert transport.connections_opened == 1


async def test_reused_connection_closed_by_the_server_is_retried_for_gets_only(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    """The keep-alive race: the server closes the idle connection as the next request goes out."""
    answers = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answers
        await _read_request(reader)
        answers += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await _read_request(reader)  # read the next request, then hang up without a word
        writer.close()

    url = await raw_server(handler)
    transport = KeepAliveTransport()
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:
        assert (await client.get("/a")).text == "ok"
        assert (await client.get("/b")).text == "ok"  # resent once on a new connection
        assert transport.connections_opened == 2 and answers == 2
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/c", content=b"{}")  # a POST may have been acted on: never resent
    assert answers == 2


async def test_header_injection_is_refused() -> None:
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get("http://127.0.0.1:9/", headers={"X-Bad": "a\r\nInjected: yes"})


def test_proxy_detection_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert not proxy_configured("https://api.wavespeed.ai")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_configured("https://api.wavespeed.ai")
    assert not proxy_configured("http://127.0.0.1:8000")  # no http proxy set
    monkeypatch.setenv("NO_PROXY", "api.wavespeed.ai")
    assert not proxy_configured("https://api.wavespeed.ai")
