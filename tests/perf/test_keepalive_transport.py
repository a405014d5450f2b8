"""The async client's HTTP stack (aiohttp): reuse, bounds, stale keep-alive, timeouts, proxies, failures.

What the hand-written keep-alive transport promised before issue 12 (it now lives in
``benchmarks/legacy_transport.py`` as the benchmark's baseline) must hold on aiohttp too:
requests reuse pooled connections, never more than the pool are open, waiters are served in
order, a GET whose kept-alive connection the server closed is sent once more on a new one (a
submit never is), timeouts are per read, and every failure is a ``WaveSpeedTransportError``
whose ``connected`` says whether the request may have arrived.

Against the emulator over loopback, and against tiny asyncio servers for what the emulator never
does (chunked and gzip bodies, a connection closed under a reused request, a dribbled answer, a proxy).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from perf_helpers import Connects

from airflow_provider_wavespeed.api import (
    AsyncWaveSpeedClient,
    RetryPolicy,
    WaveSpeedConfigError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTransportError,
)
from airflow_provider_wavespeed.api._transport import create_session
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers._shared_client import shared_client

FLUX = "wavespeed-ai/flux-dev"
ONCE = RetryPolicy(max_retries=0, rate_limit_retries=0)  # one attempt: what the HTTP stack itself did
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ServerFactory = Callable[[Handler], Awaitable[str]]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def raw_server() -> AsyncIterator[ServerFactory]:
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


def _balance_body(balance: float = 1.5, pad: int = 0) -> bytes:
    return json.dumps({"code": 200, "message": "success", "data": {"balance": balance, "pad": "x" * pad}}).encode()


async def test_sequential_requests_reuse_one_connection(
    wavespeed_emulator: WaveSpeedEmulator, connects: Connects, no_proxy_env: None
) -> None:
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, max_in_flight=4) as client:
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        for _ in range(30):
            assert (await client.get_prediction(prediction_id)).id == prediction_id
        assert connects.open_to(wavespeed_emulator.url) == 1
    assert connects.to(wavespeed_emulator.url) == 1
    assert connects.open_to(wavespeed_emulator.url) == 0  # closed with the client
    assert wavespeed_emulator.prediction_state(prediction_id)["polls"] == 30


async def test_concurrent_requests_never_open_more_than_the_pool(
    wavespeed_emulator: WaveSpeedEmulator, connects: Connects, no_proxy_env: None
) -> None:
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, max_in_flight=4) as client:
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        seen_waiting: list[int] = []
        seen_open: list[int] = []

        async def poll() -> str:
            seen_waiting.append(client.waiting)
            return (await client.get_prediction(prediction_id)).id

        async def watch() -> None:
            while True:
                seen_open.append(connects.open_to(wavespeed_emulator.url))
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        ids = await asyncio.gather(*(poll() for _ in range(300)))
        watcher.cancel()
    assert ids == [prediction_id] * 300
    assert connects.to(wavespeed_emulator.url) <= 4
    assert max(seen_open) <= 4
    assert max(seen_waiting) > 0  # requests really queued for the 4 connections
    assert wavespeed_emulator.prediction_state(prediction_id)["polls"] == 300


async def test_waiters_are_served_in_arrival_order(wavespeed_emulator: WaveSpeedEmulator, no_proxy_env: None) -> None:
    wavespeed_emulator.add_fault("result", "slow", delay=0.02, times=None)
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, max_in_flight=1) as client:
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        done: list[int] = []

        async def poll(index: int) -> None:
            await client.get_prediction(prediction_id)
            done.append(index)

        tasks = []
        for index in range(15):
            tasks.append(asyncio.create_task(poll(index)))
            await asyncio.sleep(0)  # each one reaches the queue before the next starts
        await asyncio.gather(*tasks)
    assert done == list(range(15))


async def test_a_cancelled_waiter_gives_its_turn_away(
    wavespeed_emulator: WaveSpeedEmulator, no_proxy_env: None
) -> None:
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, max_in_flight=1) as client:
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        wavespeed_emulator.add_fault("result", "slow", delay=1.0, times=1)
        holder = asyncio.create_task(client.get_prediction(prediction_id))
        await asyncio.sleep(0)  # the holder takes the free place at once and waits for its answer
        waiters = [asyncio.create_task(client.get_prediction(prediction_id)) for _ in range(5)]
        await asyncio.sleep(0)  # each waiter queues on its first step
        assert client.waiting == 5 and not holder.done()
        for waiter in waiters:
            waiter.cancel()
        assert (await holder).id == prediction_id
        # The only place is free again: later requests are not stuck behind the cancelled ones.
        reads = await asyncio.gather(*(client.get_prediction(prediction_id) for _ in range(3)))
        assert [read.id for read in reads] == [prediction_id] * 3
    assert all(waiter.cancelled() for waiter in waiters)


async def test_a_read_timeout_is_a_transport_error_that_may_have_arrived(
    wavespeed_emulator: WaveSpeedEmulator, no_proxy_env: None
) -> None:
    async with AsyncWaveSpeedClient(
        wavespeed_emulator.api_key, wavespeed_emulator.url, timeout=0.2, retry=ONCE
    ) as client:
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        wavespeed_emulator.add_fault("result", "slow", delay=1.0, times=1)
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.get_prediction(prediction_id)
        assert info.value.connected is True and "Timeout" in str(info.value)
        assert (await client.get_prediction(prediction_id)).id == prediction_id  # the pool still works
        wavespeed_emulator.add_fault("submit", "slow", delay=1.0, times=1)
        with pytest.raises(WaveSpeedSubmitUncertainError):  # it may have been created: never resent
            await client.submit(FLUX, {"prompt": "a second lighthouse"})


async def test_the_timeout_is_per_read_so_a_slow_but_moving_answer_succeeds(
    raw_server: ServerFactory, no_proxy_env: None
) -> None:
    # 1 MB in 16 pieces, one every 0.2 s: 3 s in all, over the 2 s timeout, but no read waits
    # more than 0.2 s of it (a tenth of the timeout, whatever the machine's speed).
    body = _balance_body(pad=1024 * 1024)
    pieces = [body[i : i + len(body) // 16 + 1] for i in range(0, len(body), len(body) // 16 + 1)]

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.close()

    url = await raw_server(dribble)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with AsyncWaveSpeedClient("k", url, timeout=2.0, retry=ONCE) as client:
        assert await client.get_balance() == 1.5
    assert loop.time() - started > 2.0  # longer than the timeout in all: it is not a total


async def test_no_pooled_connection_in_time_is_a_transport_error_that_never_arrived(
    raw_server: ServerFactory, no_proxy_env: None
) -> None:
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        arrived.set()
        await answer.wait()  # the only connection stays busy until the test says so
        body = _balance_body()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    url = await raw_server(handler)
    async with create_session(max_connections=1, pool_timeout=0.1) as session:
        client = AsyncWaveSpeedClient("k", url, session=session, retry=ONCE)
        holder = asyncio.create_task(client.get_balance())
        await arrived.wait()
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.submit(FLUX, {"prompt": "x"})
        assert info.value.connected is False  # it never left: not uncertain, safe to send again
        answer.set()
        assert await holder == 1.5


async def test_connection_refused_is_a_transport_error_that_never_arrived(no_proxy_env: None) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AsyncWaveSpeedClient("k", f"http://127.0.0.1:{port}", retry=ONCE) as client:
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.submit(FLUX, {"prompt": "x"})  # not uncertain: it never left
        assert info.value.connected is False and f"submit to {FLUX}" in str(info.value)


async def test_a_dropped_connection_without_answer_may_have_arrived(
    wavespeed_emulator: WaveSpeedEmulator, no_proxy_env: None
) -> None:
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=ONCE) as client:
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        wavespeed_emulator.add_fault("result", "drop", times=2)  # aiohttp's one resend of a GET too
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.get_prediction(prediction_id)
        assert info.value.connected is True
        assert (await client.get_prediction(prediction_id)).id == prediction_id


async def test_chunked_gzip_and_close_delimited_bodies(
    raw_server: ServerFactory, connects: Connects, no_proxy_env: None
) -> None:
    payload = _balance_body(2.5)
    packed = gzip.compress(payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:10], payload[10:])) + b"0\r\n\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        await _read_request(reader)  # the same connection is reused
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed))
        writer.write(packed)
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload)
        await writer.drain()
        writer.close()

    url = await raw_server(handler)
    async with AsyncWaveSpeedClient("k", url, retry=ONCE) as client:
        assert [await client.get_balance() for _ in range(3)] == [2.5] * 3
    assert connects.to(url) == 1


async def test_a_reused_connection_closed_by_the_server_is_resent_for_reads_only(
    raw_server: ServerFactory, connects: Connects, no_proxy_env: None
) -> None:
    """The keep-alive race: the server closes the idle connection as the next request goes out."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _read_request(reader))
        body = _balance_body()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        received.append(await _read_request(reader))  # read the next request, then hang up without a word
        writer.close()

    def methods() -> list[bytes]:
        return [head.split(b" ", 1)[0] for head in received]

    url = await raw_server(handler)
    async with AsyncWaveSpeedClient("k", url, retry=ONCE) as client:
        assert await client.get_balance() == 1.5
        assert await client.get_balance() == 1.5  # resent once on a new connection, no retry spent
        assert connects.to(url) == 2 and methods() == [b"GET", b"GET", b"GET"]
        with pytest.raises(WaveSpeedSubmitUncertainError):  # a submit may have been acted on: never resent
            await client.submit(FLUX, {"prompt": "x"})
    assert methods() == [b"GET", b"GET", b"GET", b"POST"]


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    raw_server: ServerFactory, no_proxy_env: None
) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(100))
        writer.close()

    url = await raw_server(handler)
    # Refused when the client is built (issue 28), naming the problem, never the key.
    with pytest.raises(WaveSpeedConfigError, match="line break") as info:
        AsyncWaveSpeedClient("a\r\nInjected: yes", url, retry=ONCE)
    assert "Injected" not in str(info.value)
    assert not any(received)


# -- proxies from the environment ---------------------------------------------------------------


@pytest.fixture
async def http_proxy(raw_server: ServerFactory) -> tuple[str, list[bytes]]:
    """A forward HTTP proxy (absolute-form requests, one per connection); returns its URL and the request lines."""
    seen: list[bytes] = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        seen.append(lines[0])
        method, target, version = lines[0].split(b" ")
        host_port, _, path = target.split(b"://", 1)[1].partition(b"/")
        host, _, port = host_port.partition(b":")
        headers = [line for line in lines[1:] if not line.lower().startswith((b"connection:", b"proxy-"))]
        length = next((int(line.split(b":")[1]) for line in headers if line.lower().startswith(b"content-length:")), 0)
        body = await reader.readexactly(length)
        up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port or 80))
        up_writer.write(b"\r\n".join([b"%s /%s %s" % (method, path, version), *headers, b"Connection: close"]))
        up_writer.write(b"\r\n\r\n" + body)
        writer.write(await up_reader.read())  # the answer says "connection: close": one request per connection
        up_writer.close()
        await writer.drain()
        writer.close()

    return await raw_server(forward), seen


async def test_a_proxy_from_the_environment_carries_the_requests(
    wavespeed_connection: WaveSpeedEmulator,
    http_proxy: tuple[str, list[bytes]],
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy_url, seen = http_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    emulator = wavespeed_connection
    async with shared_client("wavespeed_default") as client:  # the triggers' client: the same one path
        prediction_id = (await client.submit(FLUX, {"prompt": "a lighthouse"})).id
        assert (await client.get_prediction(prediction_id)).id == prediction_id
    assert [line.split(b" ")[0] for line in seen] == [b"POST", b"GET"]
    assert seen[1] == b"GET %s/api/v3/predictions/%s/result HTTP/1.1" % (emulator.url.encode(), prediction_id.encode())

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # and NO_PROXY exempts a host from it
    async with AsyncWaveSpeedClient(emulator.api_key, emulator.url) as direct:
        assert (await direct.get_prediction(prediction_id)).id == prediction_id
    assert len(seen) == 2


async def test_an_unreachable_proxy_is_a_transport_error_that_never_arrived(
    wavespeed_emulator: WaveSpeedEmulator, no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{probe.getsockname()[1]}")
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=ONCE) as client:
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.submit(FLUX, {"prompt": "x"})
    assert info.value.connected is False
    assert wavespeed_emulator.counters()["total_requests"] == 0


async def test_a_malformed_answer_is_a_transport_error_that_may_have_arrived_and_hides_the_key(
    raw_server: ServerFactory, no_proxy_env: None
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 2x0 Nonsense\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    url = await raw_server(garbage)
    async with AsyncWaveSpeedClient("secret-key-123", url, retry=ONCE) as client:
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.get_balance()
        assert info.value.connected is True
        with pytest.raises(WaveSpeedSubmitUncertainError) as uncertain:
            await client.submit(FLUX, {"prompt": "x"})
    for error in (info.value, uncertain.value):
        assert "secret-key-123" not in str(error) and "secret-key-123" not in repr(error)
