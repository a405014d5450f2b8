"""The issue 12 baseline: the triggers' shared client as it was before aiohttp.

Until issue 12 the shipped package polled through this hand-written httpx transport
(``airflow_provider_wavespeed/api/_transport.py``, moved here unchanged apart from its imports,
this docstring's first lines and the client and factories at the end). The benchmark runs it beside
the shipped aiohttp stack, through :func:`~airflow_provider_wavespeed.triggers._shared_client.set_client_factory`,
so both are measured in the same run. Not part of the package: httpx is a dev dependency.

The original description follows.

A lean keep-alive HTTP/1.1 transport for httpx: thousands of small polls in one event loop.

The triggerer's loop is shared by every trigger of a deployment, so the CPU one poll costs
is what decides how many pollers a triggerer holds. httpx's default transport (httpcore)
checks every pooled connection (a ``poll()`` system call each) and rescans every waiting
request each time a request ends, and spends most of a small poll's CPU in its layers
(h11, anyio). This transport speaks plain HTTP/1.1 over asyncio streams; what that saves
per poll, and in loop lag, is measured in ``docs/benchmarks.md`` (``benchmarks/``):

- at most ``max_connections`` requests in flight and connections open: callers wait in a
  FIFO queue (each wake-up O(1)) and a freed slot goes straight to the oldest waiter;
- idle connections are reused most-recent first and dropped after ``keepalive_expiry`` or
  once the server has closed them; a GET that finds its reused connection closed by the
  server before any answer byte is sent again once on a new connection (the keep-alive race);
- bodies are framed by Content-Length, chunked encoding or the connection's end;
  content encodings are left to httpx, which decodes them;
- timeouts come from the request (httpx's connect/read/pool); one timer per exchange;
- failures are raised as httpx's own exceptions, so callers handle them as before.

It does not do proxies, HTTP/2 or upgrades: the shared client uses httpx's default transport
when a proxy is configured (see :func:`proxy_configured`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections import deque

import h11
import httpcore
import httpx

from airflow_provider_wavespeed.api._base import ApiRequest
from airflow_provider_wavespeed.api._limiter import AdaptiveLimiter, FairSemaphore
from airflow_provider_wavespeed.api._transport import _RAW_TRANSPORT_ERRORS, _describe
from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient
from airflow_provider_wavespeed.api.defaults import DEFAULT_REQUEST_TIMEOUT, POOL_SIZE
from airflow_provider_wavespeed.api.errors import WaveSpeedTransportError
from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedCredentials
from airflow_provider_wavespeed.triggers._shared_client import POLL_RETRY

_RETRY_ON_STALE = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_HEAD = 64 * 1024

Origin = tuple[str, str, int]


def proxy_configured(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy (httpx would honour it)."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parsed.host)


class _Stale(Exception):
    """A reused connection turned out closed before the server sent anything."""


class _Connection:
    __slots__ = ("idle_since", "origin", "reader", "timed_out", "writer")

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.timed_out = False

    def reusable(self, now: float, expiry: float) -> bool:
        return now - self.idle_since < expiry and not self.reader.at_eof() and not self.writer.transport.is_closing()

    def time_out(self) -> None:
        self.timed_out = True
        self.writer.transport.abort()

    def close(self) -> None:
        if self.timed_out:
            self.writer.transport.abort()
        else:
            self.writer.close()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 keep-alive connections, at most ``max_connections`` of them.

    :param max_connections: Requests in flight and connections open, at most.
    :param keepalive_expiry: Seconds an idle connection is kept.
    :param ssl_context: For ``https``; by default httpx's (certifi, ``SSL_CERT_FILE``).
    """

    def __init__(
        self, *, max_connections: int = 8, keepalive_expiry: float = 15.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._slots = FairSemaphore(max_connections)
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._closed = False
        self.connections_opened = 0  # for tests and benchmarks

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return self._slots.waiting

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and TLS want it
        origin: Origin = (url.scheme, host, url.port or (443 if url.scheme == "https" else 80))
        head = _request_head(request, await request.aread())
        try:
            await self._slots.acquire(timeouts.get("pool"))
        except asyncio.TimeoutError:
            raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        try:
            for attempt in (1, 2):
                conn = self._take_idle(origin)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(origin, timeouts.get("connect"))
                try:
                    return await self._exchange(conn, request, head, timeouts.get("read"), reused)
                except _Stale:
                    if attempt == 1 and request.method in _RETRY_ON_STALE:
                        continue
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from None
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def _take_idle(self, origin: Origin) -> _Connection | None:
        now = time.monotonic()
        idle = self._idle
        for index in range(len(idle) - 1, -1, -1):  # the most recent first: warm, lets the others expire
            conn = idle[index]
            if conn.origin != origin:
                continue
            del idle[index]
            if conn.reusable(now, self.keepalive_expiry):
                return conn
            self._discard(conn)
        return None

    def _put_idle(self, conn: _Connection) -> None:
        conn.idle_since = now = time.monotonic()
        self._idle.append(conn)
        oldest = self._idle[0]
        if not oldest.reusable(now, self.keepalive_expiry):  # one sweep per request keeps the pool clean
            self._discard(self._idle.popleft())

    def _discard(self, conn: _Connection) -> None:
        self._open -= 1
        conn.close()

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        while self._open >= self.max_connections and self._idle:
            self._discard(self._idle.popleft())  # make room: the oldest idle connection (another origin)
        context = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            context = self._ssl_context
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, limit=_MAX_HEAD), timeout
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open += 1
        self.connections_opened += 1
        return _Connection(origin, reader, writer)

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, head: bytes, timeout: float | None, reused: bool
    ) -> httpx.Response:
        timer = asyncio.get_running_loop().call_later(timeout, conn.time_out) if timeout is not None else None
        keep = False
        received = False
        try:
            conn.writer.write(head)
            if len(head) > _MAX_HEAD:
                await conn.writer.drain()
            try:
                status, reason, headers, keep = await _read_head(conn.reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if reused and not conn.timed_out and not getattr(exc, "partial", b""):
                    raise _Stale() from None
                raise
            received = True
            body = await _read_body(conn.reader, request.method, status, headers)
            if body is None:  # framed by the end of the connection
                body, keep = await conn.reader.read(), False
        except _Stale:
            self._discard(conn)
            raise
        except BaseException as exc:
            self._discard(conn)
            if conn.timed_out:
                raise httpx.ReadTimeout(f"no complete answer within {timeout:g} s") from None
            if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                if not received:
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from None
                raise httpx.ReadError(f"connection lost while reading the answer: {exc!r}") from None
            if isinstance(exc, (asyncio.LimitOverrunError, ValueError)):
                raise httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}") from None
            if isinstance(exc, OSError):  # e.g. ssl.SSLError from a corrupted TLS record
                raise httpx.ReadError(f"the connection failed: {exc!r}") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if keep and not self._closed:
            self._put_idle(conn)
        else:
            self._discard(conn)
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is read whole and sent with a length
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
            raise httpx.LocalProtocolError(f"invalid header {name!r}")
        has_length = has_length or lowered == b"content-length"
        lines.append(name + b": " + value)
    if body and not has_length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        status_text, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(status_text) != 3 or not status_text.isdigit():
            raise ValueError(f"bad status line {lines[0][:100]!r}")
        status = int(status_text)
        if 100 <= status < 200:
            continue  # an interim answer (we never ask for 100-continue or upgrades)
        headers = []
        tokens = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ValueError(f"bad header line {line[:100]!r}")
            value = value.strip()
            headers.append((name, value))
            if name.lower() == b"connection":
                tokens += b"," + value.lower()
        keep = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
        return status, reason, headers, keep


async def _read_body(
    reader: asyncio.StreamReader, method: str, status: int, headers: list[tuple[bytes, bytes]]
) -> bytes | None:
    """The body; None when it ends with the connection."""
    if method == "HEAD" or status in _NO_BODY_STATUSES:
        return b""
    lengths = set()
    chunked = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            chunked = chunked or value.lower().split(b",")[-1].strip() == b"chunked"
        elif lowered == b"content-length":
            lengths.add(value)
    if chunked:
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("bad chunk framing")
    if lengths:
        if len(lengths) > 1:
            raise ValueError("conflicting Content-Length headers")
        length = int(lengths.pop())
        if length < 0:
            raise ValueError("negative Content-Length")
        return await reader.readexactly(length)
    return None


# -- the async client on httpx, as it was (the protocol, retries, gate and limiters are the shipped ones) --

POOL_TIMEOUT = 120.0  # the old shared client's wait for a connection once let through the gate

_HTTPX_ERRORS: tuple[type[BaseException], ...] = (
    httpx.RequestError,
    httpx.StreamError,
    h11.ProtocolError,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    *_RAW_TRANSPORT_ERRORS,
)


class HttpxWaveSpeedClient(AsyncWaveSpeedClient):
    """:class:`AsyncWaveSpeedClient` with its one HTTP exchange on an ``httpx.AsyncClient`` (the old stack)."""

    def __init__(self, *args: object, http_client: httpx.AsyncClient, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._http = http_client

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _exchange(self, request: ApiRequest) -> tuple[int, bytes, str | None]:
        try:
            response = await self._http.request(
                request.method,
                self._url(request.path),
                json=request.json,
                params=request.params or None,
                headers=self._headers,
            )
        except _HTTPX_ERRORS as exc:
            # Only httpx's own connect-phase errors prove the request never left; anything raw may have.
            never = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
            raise WaveSpeedTransportError(
                f"WaveSpeed {request.what}: network error ({_describe(exc)})", connected=not never
            ) from exc
        return response.status_code, response.content, response.headers.get("Retry-After")


def keepalive_transport_client(creds: WaveSpeedCredentials) -> AsyncWaveSpeedClient:
    """The shared client before issue 12: httpx on :class:`KeepAliveTransport` (``POOL_SIZE``), the gate."""
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(DEFAULT_REQUEST_TIMEOUT, pool=POOL_TIMEOUT),
        transport=KeepAliveTransport(max_connections=POOL_SIZE),
    )
    return HttpxWaveSpeedClient(
        creds.api_key,
        creds.base_url,
        credential_source=creds.source,
        http_client=http,
        limiter=AdaptiveLimiter(),
        retry=POLL_RETRY,  # the shipped shared client's, so only the transport differs
        max_in_flight=POOL_SIZE,
    )


def httpx_pool_client(creds: WaveSpeedCredentials) -> AsyncWaveSpeedClient:
    """The shared client as first written: httpx's own pool of 32 connections, no gate."""
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(DEFAULT_REQUEST_TIMEOUT, pool=POOL_TIMEOUT),
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
    )
    return HttpxWaveSpeedClient(
        creds.api_key,
        creds.base_url,
        credential_source=creds.source,
        http_client=http,
        limiter=AdaptiveLimiter(),  # as the shipped shared client: no poll budget until a 429
        retry=RetryPolicy(max_retries=2),
    )
