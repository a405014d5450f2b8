"""WaveSpeed API clients without Airflow: sync (requests) and async (aiohttp).

Both build requests and read answers through :class:`_Protocol`, and both retry through
:class:`RetryPolicy`; only the transport differs.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import io
import json
import logging
import mimetypes
import os
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import certifi
import requests
import urllib3
from aiohttp.http_exceptions import HttpProcessingError

from airflow_provider_wavespeed.api.defaults import (
    CLIENT_HEADERS,
    DEFAULT_BASE_URL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
)
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedError,
    WaveSpeedPredictionFailedError,
    WaveSpeedRateLimitError,
    WaveSpeedResponseError,
    WaveSpeedServerError,
    WaveSpeedTimeoutError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api.limiter import FairSemaphore
from airflow_provider_wavespeed.api.models import KNOWN_STATUSES, Prediction, body_excerpt, parse_envelope
from airflow_provider_wavespeed.api.retry import PollSchedule, RetryPolicy, parse_retry_after, submit_uncertain
from airflow_provider_wavespeed.api.times import in_words
from airflow_provider_wavespeed.api.validation import (
    validate_api_key,
    validate_base_url,
    validate_inputs,
    validate_model,
    validate_prediction_id,
    validate_webhook_url,
)

__all__ = [
    "AsyncWaveSpeedClient",
    "RateLimiter",
    "SyncRateLimiter",
    "WaveSpeedClient",
    "create_session",
    "ensure_success",
]

MediaSource = str | os.PathLike[str] | bytes | IO[bytes]

_log = logging.getLogger(__name__)

MB = 1024 * 1024
# The API's documented upload limits, by the kind of media (content type); other files are
# held to the largest. An unseekable stream is read into memory first: at most this much.
UPLOAD_LIMITS = {"image": 20 * MB, "video": 100 * MB, "audio": 50 * MB}
MAX_UNSEEKABLE_UPLOAD = 200 * MB

# What the HTTP stacks can raise beneath their own exception types (a corrupted TLS record
# surfaces as a raw ssl.SSLError, an OSError; undecodable header bytes as a UnicodeError).
# Each is a failed exchange, nothing else.
_RAW_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # ssl.SSLError, ConnectionError, TimeoutError...
    UnicodeError,
    http.client.HTTPException,
    urllib3.exceptions.HTTPError,
)
_SYNC_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (requests.RequestException, *_RAW_TRANSPORT_ERRORS)
# aiohttp's own errors, its HTTP parser's (a malformed answer), and anything raw below them
# (asyncio.TimeoutError is an OSError subclass on Python >= 3.11 only, hence listed).
_ASYNC_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
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


def ensure_success(prediction: Prediction) -> Prediction:
    """Return a completed prediction; raise for failed, cancelled, timed-out or deleted ones."""
    if prediction.is_terminal and not prediction.is_success:
        raise WaveSpeedPredictionFailedError(
            prediction_id=prediction.id,
            model=prediction.model,
            status=prediction.status,
            error=prediction.error,
            code=prediction.code,
        )
    return prediction


def note_unknown_status(prediction: Prediction, seen: set[str], log: Any = _log) -> None:
    """Log a status this client does not know, once per prediction (``seen`` remembers); polling goes on.

    A newer API may add statuses: an unknown one is not a reason to fail a paid generation,
    but it must not make a wait silently run to its deadline either.
    """
    if prediction.status in KNOWN_STATUSES or prediction.id in seen:
        return
    seen.add(prediction.id)
    log.warning(
        "WaveSpeed prediction %s (%s) has status %r, unknown to this provider version; treating it as "
        "still running and polling on until a known terminal status or the wait limit",
        prediction.id,
        prediction.model or "unknown model",
        prediction.status,
    )


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # below /api/v3
    what: str  # for messages: "submit to wavespeed-ai/flux-dev"
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    idempotent: bool = True
    prediction_id: str | None = None  # the prediction the request concerns: its errors carry it

    @property
    def is_submit(self) -> bool:
        """Starts a generation: what the account tier's starts-per-minute limit counts."""
        return not self.idempotent


class RateLimiter(Protocol):
    """What the async client needs of a shared rate limiter (see the trigger's transport)."""

    async def acquire(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class SyncRateLimiter(Protocol):
    """What the sync client needs of a submission limiter (:class:`~.limiter.TokenBucket`)."""

    def acquire_sync(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class _Protocol:
    """Request building and answer reading shared by both clients (no I/O here)."""

    def __init__(self, api_key: str, base_url: str, *, credential_source: str) -> None:
        self._api_key = validate_api_key(api_key, credential_source)
        self.base_url = validate_base_url(base_url)
        self.credential_source = credential_source
        self._auth_hint = (
            f"Check the API key in {credential_source} (401: invalid key) "
            "or the account's balance and status on wavespeed.ai (403)"
        )

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self.base_url!r}, credentials={self.credential_source!r})"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json", **CLIENT_HEADERS}

    def _url(self, path: str) -> str:
        return f"{self.base_url}/api/v3/{path}"

    @staticmethod
    def _submit_request(model: str, inputs: object, webhook: str | None) -> _Request:
        model = validate_model(model)
        body = validate_inputs(inputs)
        params = {"webhook": validate_webhook_url(webhook)} if webhook is not None else {}
        return _Request("POST", quote(model), f"submit to {model}", json=body, params=params, idempotent=False)

    @staticmethod
    def _prediction_request(prediction_id: str) -> _Request:
        prediction_id = validate_prediction_id(prediction_id)
        return _Request(
            "GET",
            f"predictions/{prediction_id}/result",
            f"poll of prediction {prediction_id}",
            prediction_id=prediction_id,
        )

    _balance_request = _Request("GET", "balance", "balance check")

    @staticmethod
    def _pricing_request(model: str, inputs: object) -> _Request:
        model = validate_model(model)
        body = {"model_id": model, "inputs": validate_inputs(inputs)}
        return _Request("POST", "model/pricing", f"pricing of {model}", json=body)

    def _read(self, request: _Request, status_code: int, body: bytes, retry_after: str | None) -> Any:
        return parse_envelope(
            status_code,
            body,
            retry_after_header=retry_after,
            context=request.what,
            auth_hint=self._auth_hint,
            prediction_id=request.prediction_id,
        )

    @staticmethod
    def _prediction(data: Any, request: _Request) -> Prediction:
        try:
            return Prediction.from_dict(
                data, status_code=200, context=request.what, prediction_id=request.prediction_id
            )
        except WaveSpeedResponseError as exc:
            if request.idempotent:
                raise
            # Accepted (HTTP 200) but unreadable: the prediction probably exists, unseen.
            raise submit_uncertain(request.what, exc) from exc

    @staticmethod
    def _float_field(data: Any, name: str, what: str) -> float:
        value = data.get(name) if isinstance(data, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise WaveSpeedResponseError(f"WaveSpeed {what} returned no numeric {name!r}: {data!r:.200}")
        return float(value)


def _requests_transport_error(exc: BaseException, what: str) -> WaveSpeedTransportError:
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


@dataclass
class _Media:
    """A file to upload: its stream (rewound for each attempt), name, size and content type."""

    stream: IO[bytes]
    name: str
    size: int
    content_type: str
    close: bool  # we opened it
    start: int = 0

    def rewind(self) -> IO[bytes]:
        self.stream.seek(self.start)
        return self.stream


def _open_media(source: MediaSource, filename: str | None) -> _Media:
    """The upload's stream and facts, size limits checked: nothing is sent for a file over them."""
    opened = False
    if isinstance(source, bytes):
        stream: IO[bytes] = io.BytesIO(source)
        name, size = filename or "upload.bin", len(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise WaveSpeedValidationError(f"cannot upload {str(path)!r}: no such file")
        name, size = filename or path.name, path.stat().st_size
        stream, opened = path.open("rb"), True
    else:
        own_name = getattr(source, "name", None)  # a pipe's is its descriptor number: no name
        name = filename or (os.path.basename(own_name) if isinstance(own_name, str) and own_name else "upload.bin")
        try:
            start = source.tell()
            size = source.seek(0, os.SEEK_END) - start
            source.seek(start)
            stream = source
        except (AttributeError, OSError, io.UnsupportedOperation):
            # A pipe or socket: read it (the size must be known first), at most the SDK's limit.
            data = _read_at_most(source, MAX_UNSEEKABLE_UPLOAD + 1)
            if len(data) > MAX_UNSEEKABLE_UPLOAD:
                raise WaveSpeedValidationError(
                    f"cannot upload {name!r}: it is a stream that cannot seek and is over the "
                    f"{MAX_UNSEEKABLE_UPLOAD // MB} MB such streams may hold; upload it from a file instead"
                ) from None
            stream, size = io.BytesIO(data), len(data)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    kind = content_type.split("/", 1)[0]
    limit = UPLOAD_LIMITS.get(kind, max(UPLOAD_LIMITS.values()))
    if size > limit:
        if opened:
            stream.close()
        raise WaveSpeedValidationError(
            f"cannot upload {name!r}: it is {size / MB:.1f} MB, over WaveSpeed's {limit // MB} MB limit for "
            f"{kind if kind in UPLOAD_LIMITS else 'other'} files ({content_type}); make it smaller "
            "(compress, resize, shorten) or pass a URL the model can fetch instead"
        )
    return _Media(stream, name, size, content_type, opened, stream.tell())


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes: a pipe or socket gives them in short reads, until its end."""
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = stream.read(min(limit - len(buffer), MB))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


def _upload_instruction(data: Any, what: str) -> tuple[str, str, dict[str, str]]:
    """(download URL, PUT URL, headers) from an upload ticket, or a clear error."""
    upload = data.get("upload") if isinstance(data, dict) else None
    download_url = data.get("download_url") if isinstance(data, dict) else None
    url = upload.get("url") if isinstance(upload, dict) else None
    method = upload.get("method", "PUT") if isinstance(upload, dict) else None
    headers = upload.get("headers") if isinstance(upload, dict) else None
    if headers is None:
        headers = {}
    if (
        not isinstance(download_url, str)
        or not download_url
        or not isinstance(url, str)
        or urlsplit(url).scheme not in ("http", "https")
        or not isinstance(method, str)
        or method.upper() != "PUT"
        or not isinstance(headers, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise WaveSpeedResponseError(
            f"WaveSpeed {what} returned an upload ticket without a usable 'download_url' and "
            f"'upload' {{method: PUT, url, headers}}: {body_excerpt(repr(data))}"
        )
    return download_url, url, headers


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    # An explicit auth that adds nothing: requests would otherwise add ~/.netrc credentials.
    return request


class WaveSpeedClient(_Protocol):
    """Synchronous WaveSpeed client (one pooled ``requests`` session).

    ``submit_limiter`` (a :class:`~.limiter.TokenBucket`, shared by the process's clients of
    one account) paces submissions to the account tier's starts per minute; a 429 on a
    submit pauses it for everyone who shares it.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        retry: RetryPolicy | None = None,
        credential_source: str = "the configured credentials",
        session: requests.Session | None = None,
        submit_limiter: SyncRateLimiter | None = None,
    ) -> None:
        super().__init__(api_key, base_url, credential_source=credential_source)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.submit_limiter = submit_limiter
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> WaveSpeedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, request: _Request) -> Any:
        limiter = self.submit_limiter if request.is_submit else None
        attempt = 0
        while True:
            attempt += 1
            if limiter is not None:
                limiter.acquire_sync()
            try:
                response = self._session.request(
                    request.method,
                    self._url(request.path),
                    json=request.json,
                    params=request.params or None,
                    headers=self._headers,
                    timeout=self.timeout,
                )
                return self._read(request, response.status_code, response.content, response.headers.get("Retry-After"))
            except _SYNC_TRANSPORT_ERRORS as exc:
                error: WaveSpeedError = _requests_transport_error(exc, request.what)
            except WaveSpeedError as exc:
                error = exc
            server_wait = self.retry.server_wait(error)
            if limiter is not None and server_wait:
                limiter.pause(server_wait)  # before next_delay, which raises once retries are spent
            time.sleep(self.retry.next_delay(attempt, error, idempotent=request.idempotent, what=request.what))

    def submit(self, model: str, inputs: object, *, webhook: str | None = None) -> Prediction:
        """Create a prediction (``POST /api/v3/<model>``); never repeated once it may have arrived."""
        request = self._submit_request(model, inputs, webhook)
        return self._prediction(self._send(request), request)

    def get_prediction(self, prediction_id: str) -> Prediction:
        """Read a prediction (``GET /api/v3/predictions/<id>/result``)."""
        request = self._prediction_request(prediction_id)
        return self._prediction(self._send(request), request)

    def wait_for_prediction(
        self, prediction_id: str, *, poll_interval: float = DEFAULT_POLL_INTERVAL, timeout: float = DEFAULT_WAIT_TIMEOUT
    ) -> Prediction:
        """Poll until terminal; return a completed prediction or raise.

        Raises :class:`WaveSpeedPredictionFailedError` for failed/cancelled/timeout/deleted and
        :class:`WaveSpeedTimeoutError` when ``timeout`` seconds pass first. An unknown status
        is logged once and polling goes on.
        """
        schedule = PollSchedule(poll_interval=poll_interval)
        deadline = time.monotonic() + timeout
        poll = 0
        status = "not yet read"
        unknown: set[str] = set()
        while True:
            server_wait = 0.0
            try:
                prediction = self.get_prediction(prediction_id)
            except WaveSpeedError as exc:
                # An outage outlasting one request's retries must not end a long wait.
                if not self.retry.is_retryable(exc, idempotent=True):
                    raise
                status = f"unreadable ({exc})"
                server_wait = self.retry.server_wait(exc)
            else:
                if prediction.is_terminal:
                    return ensure_success(prediction)
                note_unknown_status(prediction, unknown)
                status = repr(prediction.status)
            wait = max(schedule.interval(poll), server_wait)
            poll += 1
            if time.monotonic() + wait > deadline:
                raise WaveSpeedTimeoutError(
                    f"WaveSpeed prediction {prediction_id} still {status} after {in_words(timeout)}; "
                    "it may still finish: wait on it again with its prediction id",
                    prediction_id=prediction_id,
                )
            time.sleep(wait)

    def run(
        self,
        model: str,
        inputs: object,
        *,
        webhook: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> Prediction:
        """Submit and wait; return the completed prediction or raise."""
        prediction = self.submit(model, inputs, webhook=webhook)
        return self.wait_for_prediction(prediction.id, poll_interval=poll_interval, timeout=timeout)

    def upload_media(self, source: MediaSource, *, filename: str | None = None) -> str:
        """Upload a file (path, bytes or binary file object); return its download URL.

        The official SDK's two steps: ``POST /api/v3/media/uploads`` for a ticket, then a
        ``PUT`` of the bytes, streamed, to the ticket's pre-signed URL with exactly its
        headers, and never the API key (that URL is a storage host's, not the API's).
        Files over the API's size limits are refused before any request.
        """
        media = _open_media(source, filename)
        what = f"upload of {media.name!r}"
        try:
            # A second ticket or PUT only stores another copy (kept 7 days, not billed), so both
            # are retried like reads.
            ticket = _Request(
                "POST",
                "media/uploads",
                f"{what} (ticket)",
                json={"filename": media.name, "size": media.size, "content_type": media.content_type},
            )
            download_url, put_url, put_headers = _upload_instruction(self._send(ticket), ticket.what)
            self._put(media, put_url, put_headers, what)
        finally:
            if media.close:
                media.stream.close()
        return download_url

    def _put(self, media: _Media, url: str, headers: dict[str, str], what: str) -> None:
        host = urlsplit(url).hostname or "the storage host"
        what = f"{what} (PUT to {host})"  # never the URL itself: its query is a signature
        attempt = 0
        while True:
            attempt += 1
            try:
                response = requests.request(  # no session: none of its headers or cookies go to a foreign host
                    "PUT",
                    url,
                    data=media.rewind(),  # streamed with this length, never read whole
                    headers={**headers, "Content-Length": str(media.size)},
                    auth=_no_auth,
                    timeout=self.timeout,
                )
                if 200 <= response.status_code < 300:
                    return
                error: WaveSpeedError = _put_error(response, what)
            except _SYNC_TRANSPORT_ERRORS as exc:
                error = _requests_transport_error(exc, what)
            time.sleep(self.retry.next_delay(attempt, error, idempotent=True, what=what))

    def get_balance(self) -> float:
        """The account balance in USD (``GET /api/v3/balance``)."""
        return self._float_field(self._send(self._balance_request), "balance", "balance check")

    def get_price(self, model: str, inputs: object) -> float:
        """The price in USD of one prediction with these inputs (``POST /api/v3/model/pricing``)."""
        request = self._pricing_request(model, inputs)
        return self._float_field(self._send(request), "unit_price", request.what)


def _put_error(response: requests.Response, what: str) -> WaveSpeedError:
    excerpt = body_excerpt(response.content)
    text = f"WaveSpeed {what} failed with HTTP {response.status_code}: {excerpt or 'no message'}"
    kwargs: dict[str, Any] = {"status_code": response.status_code, "excerpt": excerpt}
    if response.status_code == 429:
        return WaveSpeedRateLimitError(
            text, retry_after=parse_retry_after(response.headers.get("Retry-After")), **kwargs
        )
    if response.status_code >= 500:
        return WaveSpeedServerError(text, **kwargs)
    # 403 here is the pre-signed URL refused (expired, or headers not as signed), not the API key.
    return WaveSpeedAPIError(text + "; upload the file again for a new upload URL", **kwargs)


# How long a request may wait for a pooled connection and connect (aiohttp's ``connect``
# timeout, which includes the TCP/TLS connect, itself bounded by the request timeout).
POOL_TIMEOUT = 120.0
# Idle keep-alive connections are closed after this long (the servers' own idle limits are longer).
KEEPALIVE_EXPIRY = 15.0
DEFAULT_MAX_CONNECTIONS = 100


def _ssl_context() -> ssl.SSLContext:
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
    # Certificates: the client passes its own context with each https request (see _exchange).
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=pool_timeout, sock_connect=timeout, sock_read=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        # The environment's proxy is read once per client (environment_proxy), not per request.
        trust_env=False,
    )


class AsyncWaveSpeedClient(_Protocol):
    """Asynchronous WaveSpeed client for the triggerer (one ``aiohttp.ClientSession``).

    Pass ``session`` to share one connection pool among many clients; it is then not closed
    by :meth:`aclose` and its own timeouts apply. Without one, the client creates its own
    (:func:`create_session`, at most ``max_in_flight`` or 100 connections) on first use.
    ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from the environment are honoured; TLS
    certificates are checked against certifi's bundle (as the sync client's), or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set.
    ``limiter`` paces every request but submissions (the triggerer's polls: an
    :class:`~.limiter.AdaptiveLimiter`, which only engages after a 429); ``submit_limiter``
    paces submissions (the tier's starts per minute). A 429 pauses the limiter that paced the
    refused request. ``max_in_flight`` bounds the requests sent at once (the others wait in order).

    A read (GET) whose pooled connection turns out closed by the server is sent once more on
    a new connection by aiohttp itself (not counted as a retry, no wait); a submit never is.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        retry: RetryPolicy | None = None,
        credential_source: str = "the configured credentials",
        session: aiohttp.ClientSession | None = None,
        limiter: RateLimiter | None = None,
        submit_limiter: RateLimiter | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(api_key, base_url, credential_source=credential_source)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._owns_session = session is None
        self._session = session
        self._max_connections = max_in_flight or DEFAULT_MAX_CONNECTIONS
        self._proxy, self._proxy_auth = environment_proxy(self.base_url)
        self._ssl: ssl.SSLContext | bool | None = None  # made on the first request (loading CAs takes ~50 ms)
        self._limiter = limiter
        self._submit_limiter = submit_limiter
        # Waiting callers queue here, in order and before any request object exists: a queued
        # poll costs one future (a connector's own queue is rescanned as requests end).
        self._gate = FairSemaphore(max_in_flight) if max_in_flight else None

    @property
    def waiting(self) -> int:
        """Requests queued for a place among the ``max_in_flight`` (0 without a bound)."""
        return self._gate.waiting if self._gate is not None else 0

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> AsyncWaveSpeedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, request: _Request) -> Any:
        limiter = self._submit_limiter if request.is_submit else self._limiter
        attempt = 0
        while True:
            attempt += 1
            if limiter is not None:
                await limiter.acquire()
            try:
                if self._gate is None:
                    status, body, retry_after = await self._exchange(request)
                else:
                    async with self._gate:
                        status, body, retry_after = await self._exchange(request)
                return self._read(request, status, body, retry_after)
            except WaveSpeedError as exc:
                error = exc
            server_wait = self.retry.server_wait(error)
            if limiter is not None and server_wait:
                # Before next_delay, which raises once retries are spent: the pause holds either way.
                limiter.pause(server_wait)  # a 429 slows every user of the limiter
            delay = self.retry.next_delay(attempt, error, idempotent=request.idempotent, what=request.what)
            await asyncio.sleep(delay)

    async def _exchange(self, request: _Request) -> tuple[int, bytes, str | None]:
        """One HTTP exchange: (status, whole body, Retry-After); a failed one as WaveSpeedTransportError.

        The body is read whole here, so the connection goes back to the pool at once.
        """
        if self._session is None:
            self._session = create_session(max_connections=self._max_connections, timeout=self.timeout)
        if self._ssl is None:
            self._ssl = _ssl_context() if self.base_url.startswith("https:") else True
        headers = self._headers
        data = None
        if request.json is not None:
            data = json.dumps(request.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        # The keep-alive race (the server closes an idle connection as a request goes out) is
        # aiohttp's own: ClientSession._request (aiohttp >= 3.9, "retry_persistent_connection")
        # sends a GET once more on a new connection after a ClientOSError/ServerDisconnectedError
        # that came before the answer's headers, without a wait and not counted by our retry
        # policy; a POST (a submit) never. tests/perf/test_keepalive_transport.py holds it to that.
        try:
            async with self._session.request(
                request.method,
                self._url(request.path),
                params=request.params or None,
                data=data,
                headers=headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                return response.status, await response.read(), response.headers.get("Retry-After")
        except _ASYNC_TRANSPORT_ERRORS as exc:
            raise aiohttp_transport_error(exc, request.what) from exc

    async def submit(self, model: str, inputs: object, *, webhook: str | None = None) -> Prediction:
        """Create a prediction; the same submit rule as the sync client."""
        request = self._submit_request(model, inputs, webhook)
        return self._prediction(await self._send(request), request)

    async def get_prediction(self, prediction_id: str) -> Prediction:
        """Read a prediction (``GET /api/v3/predictions/<id>/result``)."""
        request = self._prediction_request(prediction_id)
        return self._prediction(await self._send(request), request)

    async def get_balance(self) -> float:
        """The account balance in USD."""
        return self._float_field(await self._send(self._balance_request), "balance", "balance check")
