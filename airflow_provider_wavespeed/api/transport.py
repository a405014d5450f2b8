"""The transports beneath the clients: which failures are a failed exchange, and the aiohttp session.

Airflow-free. The sync client sends through ``requests``, the async one through ``aiohttp``:
here is what each can raise (mapped to :class:`WaveSpeedTransportError`, with whether the
request may have reached the server), TLS, the environment's proxy and the session's limits.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import logging
import os
import ssl
import urllib.request
from urllib.parse import unquote, urlsplit

import aiohttp
import certifi
import requests
import urllib3
from aiohttp.http_exceptions import HttpProcessingError

from airflow_provider_wavespeed.api.defaults import DEFAULT_REQUEST_TIMEOUT
from airflow_provider_wavespeed.api.errors import WaveSpeedTransportError

_log = logging.getLogger(__name__)

# What the HTTP stacks can raise beneath their own exception types (a corrupted TLS record
# surfaces as a raw ssl.SSLError, an OSError; undecodable header bytes as a UnicodeError).
# Each is a failed exchange, nothing else.
_RAW_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ssl.SSLError, ConnectionError, TimeoutError...
    UnicodeError,
    http.client.HTTPException,
    urllib3.exceptions.HTTPError,
)
SYNC_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (requests.RequestException, *_RAW_TRANSPORT_ERRORS)
# aiohttp's own errors, its HTTP parser's (a malformed answer), and anything raw below them
# (asyncio.TimeoutError is an OSError subclass on Python >= 3.11 only, hence listed).
ASYNC_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    HttpProcessingError,
    asyncio.TimeoutError,
    *_RAW_TRANSPORT_ERRORS,
)
# aiohttp errors that prove the request never left: no connection to the API was made (refused,
# DNS, TLS handshake, proxy connect, connect timeout or no pooled connection in time), the proxy
# refused the tunnel, or the URL was unusable. Anything else may have reached the server.
_NEVER_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,  # incl. DNS, SSL/certificate on connect, proxy connection errors
    aiohttp.ConnectionTimeoutError,  # connect phase only; a read timeout is SocketTimeoutError
    aiohttp.ClientHttpProxyError,  # the proxy answered CONNECT with an error
    aiohttp.InvalidURL,
)


def requests_transport_error(exc: BaseException, what: str) -> WaveSpeedTransportError:
    # Connection never made: refused, DNS, connect timeout. Everything else may have sent bytes.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    never_connected = isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError)
        and type(reason).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
    )
    return WaveSpeedTransportError(
        f"WaveSpeed {what}: network error ({type(exc).__name__}: {exc or 'no detail'})", connected=not never_connected
    )


def _describe(exc: BaseException) -> str:
    """``Type: detail``, and the underlying error when the library wrapped one (e.g. an SSLError)."""
    text = f"{type(exc).__name__}: {exc or 'no detail'}"
    cause = exc.__cause__
    if cause is not None and type(cause) is not type(exc):
        text += f"; caused by {type(cause).__name__}: {cause or 'no detail'}"
    return " ".join(text.split())  # aiohttp's parser errors span lines: one line in logs


def aiohttp_transport_error(exc: BaseException, what: str) -> WaveSpeedTransportError:
    """Any failed async exchange as a :class:`WaveSpeedTransportError` (the one mapping).

    ``connected`` is False only for what proves the request never reached the server
    (``_NEVER_SENT``); a disconnect, reset, read timeout or malformed answer may have come
    after the server acted on it, so a submit that failed that way is never resent.
    """
    return WaveSpeedTransportError(
        f"WaveSpeed {what}: network error ({_describe(exc)})", connected=not isinstance(exc, _NEVER_SENT)
    )


# How long a request may wait for a pooled connection and connect (aiohttp's ``connect``
# timeout, which includes the TCP/TLS connect, itself bounded by the request timeout).
POOL_TIMEOUT = 120.0
# Idle keep-alive connections are closed after this long (the servers' own idle limits are longer).
KEEPALIVE_EXPIRY = 15.0
DEFAULT_MAX_CONNECTIONS = 100


def ssl_context() -> ssl.SSLContext:
    """Certificates as the sync client (``requests``: certifi) trusts, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``."""
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@functools.lru_cache(maxsize=8)
def _ssl_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # Loading a CA bundle costs tens of milliseconds of CPU: once per process and setting, not
    # per session (a one-off client per call, like the hook's aget_prediction, would pay it each time).
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def environment_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy (and its credentials) that ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` choose for ``url``.

    Read once per client: aiohttp's ``trust_env`` would read them (and ``~/.netrc``) in a
    worker thread on every request, which at thousands of polls is most of a poll's cost.
    """
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None, None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return None, None
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    proxy_parts = urlsplit(proxy)
    if proxy_parts.scheme != "http":
        _log.warning("Ignoring the %s proxy from the environment: only http:// proxies are supported", parts.scheme)
        return None, None
    auth = None
    if proxy_parts.username is not None:
        auth = aiohttp.BasicAuth(unquote(proxy_parts.username), unquote(proxy_parts.password or ""))
        proxy = proxy_parts._replace(netloc=proxy_parts.netloc.rsplit("@", 1)[1]).geturl()
    return proxy, auth


def create_session(
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout: float = DEFAULT_REQUEST_TIMEOUT,
    pool_timeout: float = POOL_TIMEOUT,
) -> aiohttp.ClientSession:
    """The aiohttp session the async client uses (call inside the event loop that will use it).

    At most ``max_connections`` connections, kept alive for reuse; ``timeout`` bounds the
    TCP/TLS connect and each read of the answer (per read: a slow but moving answer is not
    cut off); waiting for a free pooled connection and connecting take at most ``pool_timeout``.
    No cookies are kept and redirects are not followed (the API sends neither).
    """
    # Certificates: the client passes its own context with each https request (ssl_context()).
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=pool_timeout, sock_connect=timeout, sock_read=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        # The environment's proxy is read once per client (environment_proxy), not per request.
        trust_env=False,
    )
