"""WaveSpeed API clients without Airflow: sync (requests) and async (httpx).

Both build requests and read answers through :class:`_Protocol`, and both retry through
:class:`RetryPolicy`; only the transport differs.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

import httpx
import requests

from airflow_provider_wavespeed.api.errors import (
    WaveSpeedError,
    WaveSpeedPredictionFailedError,
    WaveSpeedResponseError,
    WaveSpeedTimeoutError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api.limiter import FairSemaphore
from airflow_provider_wavespeed.api.models import Prediction, parse_envelope
from airflow_provider_wavespeed.api.retry import PollSchedule, RetryPolicy, submit_uncertain
from airflow_provider_wavespeed.api.validation import (
    DEFAULT_BASE_URL,
    validate_base_url,
    validate_inputs,
    validate_model,
    validate_prediction_id,
    validate_webhook_url,
)

__all__ = ["AsyncWaveSpeedClient", "RateLimiter", "WaveSpeedClient", "ensure_success"]

DEFAULT_TIMEOUT = 30.0
MediaSource = str | os.PathLike[str] | bytes | IO[bytes]


def ensure_success(prediction: Prediction) -> Prediction:
    """Return a completed prediction; raise for failed, cancelled or timed-out ones."""
    if prediction.is_terminal and not prediction.is_success:
        raise WaveSpeedPredictionFailedError(
            prediction_id=prediction.id, model=prediction.model, status=prediction.status, error=prediction.error
        )
    return prediction


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # below /api/v3
    what: str  # for messages: "submit to wavespeed-ai/flux-dev"
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    idempotent: bool = True


class RateLimiter(Protocol):
    """What the async client needs of a shared rate limiter (see the trigger's transport)."""

    async def acquire(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class _Protocol:
    """Request building and answer reading shared by both clients (no I/O here)."""

    def __init__(self, api_key: str, base_url: str, *, credential_source: str) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise WaveSpeedValidationError(f"no WaveSpeed API key in {credential_source}")
        self._api_key = api_key.strip()
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
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

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
        return _Request("GET", f"predictions/{prediction_id}/result", f"poll of prediction {prediction_id}")

    _balance_request = _Request("GET", "balance", "balance check")

    @staticmethod
    def _pricing_request(model: str, inputs: object) -> _Request:
        model = validate_model(model)
        body = {"model_id": model, "inputs": validate_inputs(inputs)}
        return _Request("POST", "model/pricing", f"pricing of {model}", json=body)

    def _read(self, request: _Request, status_code: int, body: bytes, retry_after: str | None) -> Any:
        return parse_envelope(
            status_code, body, retry_after_header=retry_after, context=request.what, auth_hint=self._auth_hint
        )

    @staticmethod
    def _prediction(data: Any, request: _Request) -> Prediction:
        try:
            return Prediction.from_dict(data, status_code=200, context=request.what)
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


def _requests_transport_error(exc: requests.RequestException, what: str) -> WaveSpeedTransportError:
    # Connection never made: refused, DNS, connect timeout. Everything else may have sent bytes.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    never_connected = isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError)
        and type(reason).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
    )
    return WaveSpeedTransportError(
        f"WaveSpeed {what}: network error ({type(exc).__name__}: {exc})", connected=not never_connected
    )


def _httpx_transport_error(exc: httpx.TransportError, what: str) -> WaveSpeedTransportError:
    never_connected = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return WaveSpeedTransportError(
        f"WaveSpeed {what}: network error ({type(exc).__name__}: {exc or 'no detail'})", connected=not never_connected
    )


class _MultipartFile:
    """A multipart/form-data body streamed from a file object, with a known length.

    requests streams any object with ``read`` and ``__len__`` and sends a Content-Length,
    so a large video is never held in memory.
    """

    def __init__(self, fileobj: IO[bytes], filename: str, size: int) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        self._parts: Iterator[IO[bytes]] = iter([io.BytesIO(head), fileobj, io.BytesIO(tail)])
        self._current: IO[bytes] | None = next(self._parts)
        self._len = len(head) + size + len(tail)

    def __len__(self) -> int:
        return self._len

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self._current is not None and (size < 0 or len(out) < size):
            chunk = self._current.read(-1 if size < 0 else size - len(out))
            if chunk:
                out += chunk
            else:
                self._current = next(self._parts, None)
        return out


def _open_media(source: MediaSource, filename: str | None) -> tuple[IO[bytes], str, int, bool]:
    """(file object, file name, size, whether we opened it) for an upload."""
    if isinstance(source, bytes):
        return io.BytesIO(source), filename or "upload.bin", len(source), True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise WaveSpeedValidationError(f"cannot upload {str(path)!r}: no such file")
        return path.open("rb"), filename or path.name, path.stat().st_size, True
    start = source.tell()
    size = source.seek(0, os.SEEK_END) - start
    source.seek(start)
    name = filename or os.path.basename(str(getattr(source, "name", "") or "upload.bin"))
    return source, name, size, False


class WaveSpeedClient(_Protocol):
    """Synchronous WaveSpeed client (one pooled ``requests`` session)."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credential_source: str = "the configured credentials",
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(api_key, base_url, credential_source=credential_source)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> WaveSpeedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, request: _Request, body: Callable[[], _MultipartFile] | None = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            headers = self._headers
            data = None
            if body is not None:
                data = body()  # a fresh stream per attempt: a sent stream is consumed
                headers = {**headers, "Content-Type": data.content_type}
            try:
                response = self._session.request(
                    request.method,
                    self._url(request.path),
                    json=request.json,
                    data=data,
                    params=request.params or None,
                    headers=headers,
                    timeout=self.timeout,
                )
                return self._read(request, response.status_code, response.content, response.headers.get("Retry-After"))
            except requests.RequestException as exc:
                error: WaveSpeedError = _requests_transport_error(exc, request.what)
            except WaveSpeedError as exc:
                error = exc
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
        self, prediction_id: str, *, poll_interval: float = 5.0, timeout: float = 1800.0
    ) -> Prediction:
        """Poll until terminal; return a completed prediction or raise.

        Raises :class:`WaveSpeedPredictionFailedError` for failed/cancelled/timeout and
        :class:`WaveSpeedTimeoutError` when ``timeout`` seconds pass first.
        """
        schedule = PollSchedule(poll_interval=poll_interval)
        deadline = time.monotonic() + timeout
        poll = 0
        status = "not yet read"
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
                status = repr(prediction.status)
            wait = max(schedule.interval(poll), server_wait)
            poll += 1
            if time.monotonic() + wait > deadline:
                raise WaveSpeedTimeoutError(
                    f"WaveSpeed prediction {prediction_id} still {status} after {timeout:g} s; "
                    "it may still finish: wait on it again with its prediction id"
                )
            time.sleep(wait)

    def run(
        self,
        model: str,
        inputs: object,
        *,
        webhook: str | None = None,
        poll_interval: float = 5.0,
        timeout: float = 1800.0,
    ) -> Prediction:
        """Submit and wait; return the completed prediction or raise."""
        prediction = self.submit(model, inputs, webhook=webhook)
        return self.wait_for_prediction(prediction.id, poll_interval=poll_interval, timeout=timeout)

    def upload_media(self, source: MediaSource, *, filename: str | None = None) -> str:
        """Upload a file (path, bytes or binary file object), streamed; return its download URL."""
        fileobj, name, size, opened = _open_media(source, filename)
        start = fileobj.tell()

        def body() -> _MultipartFile:
            fileobj.seek(start)
            return _MultipartFile(fileobj, name, size)

        # Uploading twice only stores a second copy (kept 7 days, not billed), so it is
        # treated as idempotent and retried like a read.
        request = _Request("POST", "media/upload/binary", f"upload of {name!r}")
        try:
            data = self._send(request, body)
        finally:
            if opened:
                fileobj.close()
        url = data.get("download_url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise WaveSpeedResponseError(f"WaveSpeed upload of {name!r} returned no 'download_url': {data!r:.200}")
        return url

    def get_balance(self) -> float:
        """The account balance in USD (``GET /api/v3/balance``)."""
        return self._float_field(self._send(self._balance_request), "balance", "balance check")

    def get_price(self, model: str, inputs: object) -> float:
        """The price in USD of one prediction with these inputs (``POST /api/v3/model/pricing``)."""
        request = self._pricing_request(model, inputs)
        return self._float_field(self._send(request), "unit_price", request.what)


class AsyncWaveSpeedClient(_Protocol):
    """Asynchronous WaveSpeed client for the triggerer (``httpx.AsyncClient``).

    Pass ``http_client`` to share one connection pool among many clients; it is then not
    closed by :meth:`aclose` and its own timeouts apply. ``limiter`` paces every request
    when given; ``max_in_flight`` bounds the requests sent at once (the others wait in order).
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credential_source: str = "the configured credentials",
        http_client: httpx.AsyncClient | None = None,
        limiter: RateLimiter | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(api_key, base_url, credential_source=credential_source)
        self.retry = retry or RetryPolicy()
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._limiter = limiter
        # Waiting callers queue here, in order and before any request object exists: a queued
        # poll costs one future. (In httpcore's own pool queue each waiting request costs
        # O(connections) on every request that ends: at thousands of pollers that scan, not
        # the network, used up the event loop.)
        self._gate = FairSemaphore(max_in_flight) if max_in_flight else None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncWaveSpeedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, request: _Request) -> Any:
        attempt = 0
        while True:
            attempt += 1
            if self._limiter is not None:
                await self._limiter.acquire()
            try:
                if self._gate is None:
                    response = await self._request(request)
                else:
                    async with self._gate:
                        response = await self._request(request)
                return self._read(request, response.status_code, response.content, response.headers.get("Retry-After"))
            except httpx.TransportError as exc:
                error: WaveSpeedError = _httpx_transport_error(exc, request.what)
            except WaveSpeedError as exc:
                error = exc
            server_wait = self.retry.server_wait(error)
            if self._limiter is not None and server_wait:
                # Before next_delay, which raises once retries are spent: the pause holds either way.
                self._limiter.pause(server_wait)  # a 429 slows every user of the limiter
            delay = self.retry.next_delay(attempt, error, idempotent=request.idempotent, what=request.what)
            await asyncio.sleep(delay)

    async def _request(self, request: _Request) -> httpx.Response:
        return await self._http.request(
            request.method,
            self._url(request.path),
            json=request.json,
            params=request.params or None,
            headers=self._headers,
        )  # the client's timeouts: ours when we made it, the owner's when shared

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
