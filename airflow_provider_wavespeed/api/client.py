"""The WaveSpeed API clients without Airflow: sync (requests) and async (aiohttp).

Both build requests and read answers through :class:`~._base.BaseClient`, and both retry
through :class:`~.retry.RetryPolicy`; only the transport (:mod:`._transport`) differs. Waiting
for a prediction follows :mod:`.polling`; uploads :mod:`._uploads`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_wavespeed.api._base import (
    ApiRequest,
    BaseClient,
    ClientOptions,
    HistoryQuery,
    RateLimiter,
    SyncRateLimiter,
)
from airflow_provider_wavespeed.api._limiter import FairSemaphore
from airflow_provider_wavespeed.api._times import in_words
from airflow_provider_wavespeed.api._transport import (
    SYNC_TRANSPORT_ERRORS,
    aiohttp_transport_error,
    aread_answer,
    async_transport_errors,
    create_session,
    environment_proxy,
    no_ambient_credentials,
    read_answer,
    requests_transport_error,
    ssl_context,
)
from airflow_provider_wavespeed.api._uploads import MediaSource, open_media, put_media, upload_instruction
from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    OWN_SESSION_MAX_CONNECTIONS,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedConfigError, WaveSpeedError, WaveSpeedTimeoutError
from airflow_provider_wavespeed.api.models import Prediction, PredictionPage, ensure_success
from airflow_provider_wavespeed.api.polling import PollRounds, PollSchedule, WaitOptions

if TYPE_CHECKING:
    import aiohttp  # imported by the async exchange itself (_transport.create_session), not for the sync client
    from typing_extensions import Unpack  # typing's own from Python 3.12

__all__ = ["AsyncWaveSpeedClient", "WaveSpeedClient"]


class WaveSpeedClient(BaseClient):
    """Synchronous WaveSpeed client (one pooled ``requests`` session).

    ``submit_limiter`` (a :class:`~._limiter.TokenBucket`, shared by the host's clients of
    one account) paces submissions to the account tier's starts per minute; a 429 on a
    submit pauses it for everyone who shares it.
    ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` and ``REQUESTS_CA_BUNDLE`` from the environment
    are honoured as requests does; ``~/.netrc`` never is, and no redirect is followed.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        session: requests.Session | None = None,
        submit_limiter: SyncRateLimiter | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(api_key, base_url, **options)
        self.submit_limiter = submit_limiter
        self._session = session or requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> WaveSpeedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, request: ApiRequest) -> Any:
        limiter = self.submit_limiter if request.is_submit else None
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            if limiter is not None:
                limiter.acquire_sync()
            try:
                return self._envelope_data(request, *self._exchange(request))
            except WaveSpeedError as exc:
                error = exc
            server_wait = self.retry.server_wait(error)
            if limiter is not None and server_wait:
                limiter.pause(server_wait)  # before next_delay, which raises once retries are spent
            delay = self.retry.next_delay(
                attempt, error, idempotent=request.idempotent, what=request.what, waited=waited
            )
            waited += delay
            time.sleep(delay)

    def _exchange(self, request: ApiRequest) -> tuple[int, bytes, str | None]:
        """One HTTP exchange: (status, body, Retry-After); a failed one as WaveSpeedTransportError."""
        url = self._url(request.path)
        try:
            with self._session.request(
                request.method,
                url,
                json=request.json,
                params=request.params or None,
                headers=self._headers,
                timeout=self.timeout,
                auth=no_ambient_credentials,
                allow_redirects=False,  # a redirected submit could be sent twice, or elsewhere
                stream=True,  # read by read_answer, with its size cap
            ) as response:
                return (
                    response.status_code,
                    read_answer(response, self.max_answer_bytes, request.what, request.prediction_id),
                    response.headers.get("Retry-After"),
                )
        except SYNC_TRANSPORT_ERRORS as exc:
            error = requests_transport_error(exc, request.what, url)
        raise error  # outside the except: no chained library error repeats the URL

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
        found: list[Prediction] = []
        rounds = PollRounds(
            [prediction_id],
            schedule=PollSchedule(poll_interval=poll_interval),
            end_time=time.monotonic() + timeout,
            retry=self.retry,
            clock=time.monotonic,
            on_finished=found.append,
        )
        while True:  # the first read at once: the prediction may be done already
            try:
                answer: Prediction | WaveSpeedError = self.get_prediction(prediction_id)
            except WaveSpeedError as exc:
                answer = exc
            rounds.record({prediction_id: answer})
            if found:
                return ensure_success(found[0])
            if not rounds.pending:  # a permanent error
                raise rounds.outcome.error or rounds.outcome.unreadable[prediction_id]
            time.sleep(rounds.next_wait())
            if rounds.expired():
                status = rounds.outcome.last_status[prediction_id]
                raise WaveSpeedTimeoutError(
                    f"WaveSpeed prediction {prediction_id} still "
                    f"{status if status.startswith('unreadable') else repr(status)} after {in_words(timeout)}; "
                    "it may still finish: wait on it again with its prediction id",
                    prediction_id=prediction_id,
                )

    def run(self, model: str, inputs: object, *, webhook: str | None = None, **wait: Unpack[WaitOptions]) -> Prediction:
        """Submit and wait (:meth:`wait_for_prediction`); return the completed prediction or raise."""
        prediction = self.submit(model, inputs, webhook=webhook)
        return self.wait_for_prediction(prediction.id, **wait)

    def upload_media(self, source: MediaSource, *, filename: str | None = None) -> str:
        """Upload a file (path, bytes or binary file object); return its download URL.

        The official SDK's two steps: ``POST /api/v3/media/uploads`` for a ticket, then a
        ``PUT`` of the bytes, streamed, to the ticket's pre-signed URL with exactly its
        headers, and never the API key (that URL is a storage host's, not the API's).
        Files over the API's size limits are refused before any request.
        """
        media = open_media(source, filename)
        what = f"upload of {media.name!r}"
        try:
            # A second ticket or PUT only stores another copy (kept 7 days, not billed), so both
            # are retried like reads.
            ticket = ApiRequest(
                "POST",
                "media/uploads",
                f"{what} (ticket)",
                json={"filename": media.name, "size": media.size, "content_type": media.content_type},
            )
            download_url, put_url, put_headers = upload_instruction(self._send(ticket), ticket.what)
            put_media(media, put_url, put_headers, what, retry=self.retry, timeout=self.timeout)
        finally:
            if media.close:
                media.stream.close()
        return download_url

    def cancel_prediction(self, prediction_id: str) -> Prediction | None:
        """Cancel (delete) a prediction: ``DELETE /api/v3/predictions/<id>``.

        An unfinished prediction stops (it then reads ``deleted``, or ``cancelled``); a finished one
        is deleted from the history. Returns the prediction as answered (None when the answer
        carried none readable). Retried like a read, being idempotent; a 404 (unknown, or gone
        after 7 days) raises :class:`~.errors.WaveSpeedNotFoundError`.
        """
        request = self._cancel_request(prediction_id)
        return self._cancelled(self._send(request), request)

    def list_predictions(self, **query: Unpack[HistoryQuery]) -> PredictionPage:
        """One page of the account's prediction history (``POST /api/v3/predictions``), newest first.

        Each entry carries the inputs it was submitted with when the API gives them. The docs say
        not to poll this for a prediction's status.
        """
        request = self._history_request(query)
        return PredictionPage.from_dict(self._send(request), page=query.get("page", 1), context=request.what)

    def get_balance(self) -> float:
        """Return the account balance in USD (``GET /api/v3/balance``)."""
        return self._float_field(self._send(self._balance_request), "balance", "balance check")

    def get_price(self, model: str, inputs: object) -> float:
        """Return the price in USD of one prediction with these inputs (``POST /api/v3/model/pricing``)."""
        request = self._pricing_request(model, inputs)
        return self._float_field(self._send(request), "unit_price", request.what)


class AsyncWaveSpeedClient(BaseClient):
    """Asynchronous WaveSpeed client for the triggerer (one ``aiohttp.ClientSession``).

    Pass ``session`` to share one connection pool among many clients; it is then not closed
    by :meth:`aclose` and its own timeouts apply. Without one, the client creates its own
    (:func:`create_session`, at most ``max_in_flight`` or ``OWN_SESSION_MAX_CONNECTIONS`` connections) on first use.
    ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from the environment are honoured (``~/.netrc``
    never: a ``session`` must not trust the environment); TLS certificates are checked against
    certifi's bundle (as the sync client's), or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set.
    ``limiter`` paces every request but submissions (the triggerer's polls: an
    :class:`~._limiter.AdaptiveLimiter`, which only engages after a 429); ``submit_limiter``
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
        session: aiohttp.ClientSession | None = None,
        limiter: RateLimiter | None = None,
        submit_limiter: RateLimiter | None = None,
        max_in_flight: int | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(api_key, base_url, **options)
        if session is not None and session.trust_env:
            raise WaveSpeedConfigError(
                "the aiohttp session given to the WaveSpeed client trusts the environment (trust_env=True): "
                "aiohttp would then send ~/.netrc credentials in place of the API key. Create it with "
                "trust_env=False (or use create_session()); the client applies HTTP(S)_PROXY and NO_PROXY itself"
            )
        self._owns_session = session is None
        self._session = session
        self._max_connections = max_in_flight or OWN_SESSION_MAX_CONNECTIONS
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

    async def _send(self, request: ApiRequest) -> Any:
        limiter = self._submit_limiter if request.is_submit else self._limiter
        attempt, waited = 0, 0.0
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
                return self._envelope_data(request, status, body, retry_after)
            except WaveSpeedError as exc:
                error = exc
            server_wait = self.retry.server_wait(error)
            if limiter is not None and server_wait:
                # Before next_delay, which raises once retries are spent: the pause holds either way.
                limiter.pause(server_wait)  # a 429 slows every user of the limiter
            delay = self.retry.next_delay(
                attempt, error, idempotent=request.idempotent, what=request.what, waited=waited
            )
            waited += delay
            await asyncio.sleep(delay)

    async def _exchange(self, request: ApiRequest) -> tuple[int, bytes, str | None]:
        """One HTTP exchange: (status, whole body, Retry-After); a failed one as WaveSpeedTransportError.

        The body is read whole here (up to the size cap), so the connection goes back to the pool at once.
        """
        if self._session is None:
            self._session = create_session(max_connections=self._max_connections, timeout=self.timeout)
        if self._ssl is None:
            self._ssl = ssl_context() if self.base_url.startswith("https:") else True
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
        url = self._url(request.path)
        try:
            async with self._session.request(
                request.method,
                url,
                params=request.params or None,
                data=data,
                headers=headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                body = await aread_answer(response, self.max_answer_bytes, request.what, request.prediction_id)
                return response.status, body, response.headers.get("Retry-After")
        except async_transport_errors() as exc:
            raise aiohttp_transport_error(exc, request.what, url) from exc

    async def submit(self, model: str, inputs: object, *, webhook: str | None = None) -> Prediction:
        """Create a prediction; the same submit rule as the sync client."""
        request = self._submit_request(model, inputs, webhook)
        return self._prediction(await self._send(request), request)

    async def get_prediction(self, prediction_id: str) -> Prediction:
        """Read a prediction (``GET /api/v3/predictions/<id>/result``)."""
        request = self._prediction_request(prediction_id)
        return self._prediction(await self._send(request), request)

    async def cancel_prediction(self, prediction_id: str) -> Prediction | None:
        """Cancel (delete) a prediction, as the sync client's; paced by ``limiter`` like a poll."""
        request = self._cancel_request(prediction_id)
        return self._cancelled(await self._send(request), request)

    async def list_predictions(self, **query: Unpack[HistoryQuery]) -> PredictionPage:
        """One page of the prediction history, as the sync client's."""
        request = self._history_request(query)
        return PredictionPage.from_dict(await self._send(request), page=query.get("page", 1), context=request.what)

    async def get_balance(self) -> float:
        """Return the account balance in USD."""
        return self._float_field(await self._send(self._balance_request), "balance", "balance check")

    async def get_price(self, model: str, inputs: object) -> float:
        """Return the price in USD of one prediction with these inputs; retried and paced like a poll, not a submit."""
        request = self._pricing_request(model, inputs)
        return self._float_field(await self._send(request), "unit_price", request.what)
