"""The transports beneath the clients: which failures are a failed exchange, reading answers, the aiohttp session.

Airflow-free. The sync client sends through ``requests``, the async one through ``aiohttp``:
here is what each can raise (mapped to :class:`WaveSpeedTransportError`, with whether the
request may have reached the server, and never a URL's query), how an answer is read (with a
size cap), TLS, the environment's proxy (and never its ``~/.netrc``) and the session's limits.

``aiohttp`` is imported where an async exchange needs it, not with this module: a task process
imports this module (the operators and the sensor do) and sends through ``requests`` only, and
importing ``aiohttp`` costs it ~0.1-0.2 s of CPU per process (its TLS contexts, its parsers).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import logging
import os
import ssl
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import certifi
import requests
import urllib3

from airflow_provider_wavespeed.api.defaults import DEFAULT_REQUEST_TIMEOUT, OWN_SESSION_MAX_CONNECTIONS, POOL_TIMEOUT
from airflow_provider_wavespeed.api.errors import WaveSpeedResponseError, WaveSpeedTransportError, body_excerpt

if TYPE_CHECKING:
    import aiohttp

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


@functools.cache
def async_transport_errors() -> tuple[type[BaseException], ...]:
    """Return what a failed async exchange raises: aiohttp's errors, its parser's, anything raw below them.

    A function, so that ``aiohttp`` is imported by the first async exchange that fails (an
    ``except`` clause evaluates it only then), not by every process that imports this module.
    """
    import aiohttp
    from aiohttp.http_exceptions import HttpProcessingError

    # asyncio.TimeoutError is an OSError subclass on Python >= 3.11 only, hence listed.
    return (aiohttp.ClientError, HttpProcessingError, asyncio.TimeoutError, *_RAW_TRANSPORT_ERRORS)


@functools.cache
def _never_sent() -> tuple[type[BaseException], ...]:
    """Return the aiohttp errors that prove the request never left.

    No connection to the API was made (refused, DNS, TLS handshake, proxy connect, connect timeout
    or no pooled connection in time), the proxy refused the tunnel, or the URL was unusable.
    Anything else may have reached the server.
    """
    import aiohttp

    return (
        aiohttp.ClientConnectorError,  # incl. DNS, SSL/certificate on connect, proxy connection errors
        aiohttp.ConnectionTimeoutError,  # connect phase only; a read timeout is SocketTimeoutError
        aiohttp.ClientHttpProxyError,  # the proxy answered CONNECT with an error
        aiohttp.InvalidURL,
        UnicodeEncodeError,  # a header or URL that cannot be encoded: raised before anything is written
    )


# requests errors raised before any byte leaves: the request could not be built (URL, header,
# body, proxy URL), the proxy could not be reached (urllib3 says ProxyError only before it is
# connected to), or the connection to the server was never made (refused, DNS, connect timeout,
# a certificate that is not trusted).
_REQUESTS_NEVER_SENT: tuple[type[BaseException], ...] = (
    requests.exceptions.InvalidURL,  # incl. InvalidProxyURL
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidJSONError,
    requests.exceptions.ProxyError,
    requests.exceptions.ConnectTimeout,
    UnicodeEncodeError,  # a header or URL http.client cannot encode: raised before it sends anything
)
_URLLIB3_NEVER_CONNECTED = (
    urllib3.exceptions.NewConnectionError,  # incl. NameResolutionError
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.ProxyError,
)


def without_queries(text: str, *urls: str | None) -> str:
    """``text`` with the query of each of ``urls`` replaced: a signed URL's query is its credential."""
    for url in urls:
        query = urlsplit(url).query if url else ""
        if query:
            text = text.replace(query, "<query hidden>")
    return text


def requests_transport_error(exc: BaseException, what: str, url: str | None = None) -> WaveSpeedTransportError:
    """Any failed sync exchange as a :class:`WaveSpeedTransportError`; the query of ``url`` is kept out of the text.

    ``connected`` is False only for what proves the request never left (``_REQUESTS_NEVER_SENT``,
    or a connection never made); anything else may have reached the server.
    """
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    never_sent = (
        isinstance(exc, _REQUESTS_NEVER_SENT)
        or (isinstance(exc, requests.ConnectionError) and isinstance(reason, _URLLIB3_NEVER_CONNECTED))
        # The server's certificate is checked in the TLS handshake, before the request is written
        # (other TLS errors may come after it: those stay uncertain).
        or (
            isinstance(reason, urllib3.exceptions.SSLError)
            and bool(reason.args)
            and isinstance(reason.args[0], ssl.SSLCertVerificationError)
        )
    )
    if isinstance(exc, requests.exceptions.InvalidHeader):
        detail = "a header value has a line break, or leading whitespace"  # its text quotes the value
    else:
        sent = getattr(getattr(exc, "request", None), "url", None)  # as requests re-encoded it
        detail = without_queries(str(exc) or "no detail", url, sent if isinstance(sent, str) else None)
    return WaveSpeedTransportError(
        f"WaveSpeed {what}: network error ({type(exc).__name__}: {detail})", connected=not never_sent
    )


def _describe(exc: BaseException) -> str:
    """``Type: detail``, and the underlying error when the library wrapped one (e.g. an SSLError)."""
    text = f"{type(exc).__name__}: {exc or 'no detail'}"
    cause = exc.__cause__
    if cause is not None and type(cause) is not type(exc):
        text += f"; caused by {type(cause).__name__}: {cause or 'no detail'}"
    return " ".join(text.split())  # aiohttp's parser errors span lines: one line in logs


def aiohttp_transport_error(exc: BaseException, what: str, url: str | None = None) -> WaveSpeedTransportError:
    """Any failed async exchange as a :class:`WaveSpeedTransportError` (the one mapping); ``url``'s query kept out.

    ``connected`` is False only for what proves the request never reached the server
    (:func:`_never_sent`); a disconnect, reset, read timeout or malformed answer may have come
    after the server acted on it, so a submit that failed that way is never resent.
    """
    return WaveSpeedTransportError(
        f"WaveSpeed {what}: network error ({without_queries(_describe(exc), url)})",
        connected=not isinstance(exc, _never_sent()),
    )


def no_ambient_credentials(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Add nothing to a request: requests' ``auth`` for everything we send, so it never adds ``~/.netrc``'s.

    With no ``auth``, a session that trusts the environment (requests' default, which is also what
    makes ``HTTPS_PROXY``/``NO_PROXY`` work) puts a ``~/.netrc`` entry for the host (or its
    ``default`` entry) in the Authorization header, over the API key and on any other host.
    """
    return request


def _too_large(status: int, limit: int, what: str, head: bytes, prediction_id: str | None) -> WaveSpeedResponseError:
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit / 1024:g} KiB"
    excerpt = body_excerpt(head)
    return WaveSpeedResponseError(
        f"WaveSpeed {what} returned an answer larger than {size} (HTTP {status}), read no further: "
        f"{excerpt or 'no excerpt'}",
        status_code=status,
        excerpt=excerpt,
        prediction_id=prediction_id,
    )


def read_answer(response: requests.Response, limit: int, what: str, prediction_id: str | None = None) -> bytes:
    """Read the body of a streamed answer (``stream=True``), at most ``limit`` bytes (else WaveSpeedResponseError)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(response.status_code, limit, what, b"", prediction_id)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _too_large(response.status_code, limit, what, chunks[0], prediction_id)
    return b"".join(chunks)


async def aread_answer(
    response: aiohttp.ClientResponse, limit: int, what: str, prediction_id: str | None = None
) -> bytes:
    """Read the body of an aiohttp answer, at most ``limit`` bytes (else WaveSpeedResponseError)."""
    if response.content_length is not None and response.content_length > limit:
        raise _too_large(response.status, limit, what, b"", prediction_id)
    body = bytearray()
    while chunk := await response.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise _too_large(response.status, limit, what, bytes(body[:1024]), prediction_id)
    return bytes(body)


# Idle keep-alive connections are closed after this long (the servers' own idle limits are longer).
KEEPALIVE_EXPIRY = 15.0


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
    """Return the proxy (and its credentials) that ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` choose for ``url``.

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
        import aiohttp

        auth = aiohttp.BasicAuth(unquote(proxy_parts.username), unquote(proxy_parts.password or ""))
        proxy = proxy_parts._replace(netloc=proxy_parts.netloc.rsplit("@", 1)[1]).geturl()
    return proxy, auth


def create_session(
    *,
    max_connections: int = OWN_SESSION_MAX_CONNECTIONS,
    timeout: float = DEFAULT_REQUEST_TIMEOUT,
    pool_timeout: float = POOL_TIMEOUT,
) -> aiohttp.ClientSession:
    """Create the aiohttp session the async client uses (call inside the event loop that will use it).

    At most ``max_connections`` connections, kept alive for reuse; ``timeout`` bounds the
    TCP/TLS connect and each read of the answer (per read: a slow but moving answer is not
    cut off); waiting for a free pooled connection and connecting take at most ``pool_timeout``.
    No cookies are kept and redirects are not followed (the API sends neither).
    """
    import aiohttp

    # Certificates: the client passes its own context with each https request (ssl_context()).
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=pool_timeout, sock_connect=timeout, sock_read=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        # The environment's proxy is read once per client (environment_proxy), not per request.
        trust_env=False,
    )
