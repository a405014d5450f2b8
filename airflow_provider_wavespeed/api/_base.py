"""What the sync and async clients share, without I/O: requests, answers, credentials.

Both clients build their requests and read the answers through :class:`BaseClient`; only the
transport differs (:mod:`.client`).
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict
from urllib.parse import quote

from airflow_provider_wavespeed.api._validation import (
    validate_api_key,
    validate_base_url,
    validate_history_query,
    validate_inputs,
    validate_model,
    validate_prediction_id,
    validate_webhook_url,
)
from airflow_provider_wavespeed.api.defaults import (
    CLIENT_HEADERS,
    DEFAULT_BASE_URL,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_ANSWER_BYTES,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedResponseError
from airflow_provider_wavespeed.api.models import Prediction, parse_envelope
from airflow_provider_wavespeed.api.retry import RetryPolicy, submit_uncertain

_log = logging.getLogger(__name__)


class ClientOptions(TypedDict, total=False):
    """The options both clients take beside their transport's own (defaults: :class:`BaseClient`)."""

    timeout: float  # seconds one HTTP request may take
    retry: RetryPolicy | None
    credential_source: str  # where the key came from, for messages (never the key)


class HistoryQuery(TypedDict, total=False):
    """A page of ``POST /api/v3/predictions`` (the history, newest first; the API keeps 7 days)."""

    page: int  # from 1 (default 1)
    page_size: int  # 1 to 100 (default 100)
    model: str | None
    status: str | None
    created_after: datetime.datetime | str | None  # at or after; aware datetimes or ISO 8601 text
    created_before: datetime.datetime | str | None  # before


@dataclass(frozen=True)
class ApiRequest:
    """One API request, before any transport: what, where, and whether it may be sent again."""

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
    """What the sync client needs of a submission limiter (:class:`~._limiter.TokenBucket`)."""

    def acquire_sync(self) -> None: ...

    def pause(self, seconds: float) -> None: ...


class BaseClient:
    """Request building and answer reading shared by both clients (no I/O here).

    An answer over ``max_answer_bytes`` is refused unread (:class:`WaveSpeedResponseError`; for a
    submit under HTTP 2xx, uncertain).
    """

    max_answer_bytes: int = MAX_ANSWER_BYTES

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        retry: RetryPolicy | None = None,
        credential_source: str = "the configured credentials",
    ) -> None:
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
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
    def _submit_request(model: str, inputs: object, webhook: str | None) -> ApiRequest:
        model = validate_model(model)
        body = validate_inputs(inputs)
        params = {"webhook": validate_webhook_url(webhook)} if webhook is not None else {}
        return ApiRequest("POST", quote(model), f"submit to {model}", json=body, params=params, idempotent=False)

    @staticmethod
    def _prediction_request(prediction_id: str) -> ApiRequest:
        prediction_id = validate_prediction_id(prediction_id)
        return ApiRequest(
            "GET",
            f"predictions/{prediction_id}/result",
            f"poll of prediction {prediction_id}",
            prediction_id=prediction_id,
        )

    @staticmethod
    def _cancel_request(prediction_id: str) -> ApiRequest:
        prediction_id = validate_prediction_id(prediction_id)
        # Idempotent: a second DELETE of the same prediction deletes nothing more, so an attempt
        # whose answer was lost is retried like a read (a submit never is).
        what = f"cancel of prediction {prediction_id}"
        return ApiRequest("DELETE", f"predictions/{prediction_id}", what, prediction_id=prediction_id)

    @staticmethod
    def _history_request(query: HistoryQuery) -> ApiRequest:
        # A read, though a POST: retried like one.
        body = validate_history_query(**{"page": 1, "page_size": 100, **query})
        return ApiRequest("POST", "predictions", "prediction history listing", json=body)

    @staticmethod
    def _cancelled(data: Any, request: ApiRequest) -> Prediction | None:
        """Return the prediction a DELETE answered, None when its answer carried none readable.

        The HTTP/envelope status already said the delete was accepted; the docs' example answer
        is only ``{id, status}``, so a thinner or newer shape is no reason to fail a cancel.
        """
        try:
            return Prediction.from_dict(
                data, status_code=200, context=request.what, prediction_id=request.prediction_id
            )
        except WaveSpeedResponseError as exc:
            _log.debug("WaveSpeed %s: accepted, answer unreadable: %s", request.what, exc)
            return None

    _balance_request = ApiRequest("GET", "balance", "balance check")

    @staticmethod
    def _pricing_request(model: str, inputs: object) -> ApiRequest:
        model = validate_model(model)
        body = {"model_id": model, "inputs": validate_inputs(inputs)}
        return ApiRequest("POST", "model/pricing", f"pricing of {model}", json=body)

    def _envelope_data(self, request: ApiRequest, status_code: int, body: bytes, retry_after: str | None) -> Any:
        return parse_envelope(
            status_code,
            body,
            retry_after_header=retry_after,
            context=request.what,
            auth_hint=self._auth_hint,
            prediction_id=request.prediction_id,
        )

    @staticmethod
    def _prediction(data: Any, request: ApiRequest) -> Prediction:
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
        # NaN and infinity parse from JSON, but compare false with any limit: a guard would let them pass.
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise WaveSpeedResponseError(f"WaveSpeed {what} returned no finite numeric {name!r}: {data!r:.200}")
        return float(value)
