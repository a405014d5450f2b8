"""WaveSpeedHook: an Airflow connection (or ``WAVESPEED_API_KEY``) turned into a WaveSpeed client."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook, mask_secret

from airflow_provider_wavespeed.api._base import RateLimiter
from airflow_provider_wavespeed.api._shared_budget import submission_limiter
from airflow_provider_wavespeed.api._validation import is_loopback_host, validate_api_key, validate_base_url
from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient, WaveSpeedClient
from airflow_provider_wavespeed.api.defaults import (
    ACCOUNT_TIERS,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_SUBMISSIONS_PER_MINUTE,
    DEFAULT_REQUEST_TIMEOUT,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedConfigError, WaveSpeedError
from airflow_provider_wavespeed.api.models import Prediction, PredictionPage
from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.get_provider_info import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_wavespeed.storage import DownloadPolicy

if TYPE_CHECKING:
    import aiohttp
    from typing_extensions import Unpack  # typing's own from Python 3.12

    from airflow_provider_wavespeed.api._base import HistoryQuery
    from airflow_provider_wavespeed.api._uploads import MediaSource
    from airflow_provider_wavespeed.api.polling import WaitOptions

API_KEY_ENV = "WAVESPEED_API_KEY"


@dataclass(frozen=True)
class WaveSpeedCredentials:
    """What a client needs from a connection. The key is kept out of ``repr``."""

    api_key: str = field(repr=False)
    base_url: str
    source: str
    # The account tier's start rate, paced across the host's processes that submit; None: no budget.
    max_submissions_per_minute: float | None = DEFAULT_MAX_SUBMISSIONS_PER_MINUTE
    # Copying outputs (storage): fetch from private addresses too (an API behind an internal proxy),
    # and the largest output file.
    allow_private_output_urls: bool = False
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES


def _extra_value(extra: dict[str, Any], name: str) -> Any:
    # The UI stores form fields as `extra__<type>__<name>`; JSON/env connections use `<name>`.
    return extra.get(name, extra.get(f"extra__{CONN_TYPE}__{name}"))


def credentials_from_connection(conn: Any | None, conn_id: str) -> WaveSpeedCredentials:
    """Resolve credentials from a connection, or from ``WAVESPEED_API_KEY`` when ``conn`` is None.

    The one place that decides where the key and base URL come from. Every mistake in them (no
    key, a key no HTTP header can carry, a host without scheme, two ports) is a
    :class:`WaveSpeedConfigError` naming the field and the fix, before any request.
    """
    if conn is None:
        source = f"the {API_KEY_ENV} environment variable"
        fix = (
            f"there is no Airflow connection {conn_id!r} either: create a connection of type 'wavespeed' "
            f"named {conn_id!r} with your API key as its password (UI, or AIRFLOW_CONN_{conn_id.upper()}), "
            f"or set {API_KEY_ENV}"
        )
        api_key = validate_api_key(os.environ.get(API_KEY_ENV), source, fix=fix, field=API_KEY_ENV)
        return WaveSpeedCredentials(api_key, DEFAULT_BASE_URL, source)
    source = f"Airflow connection {conn_id!r}"
    api_key = validate_api_key(
        conn.password,
        source,
        fix="put your WaveSpeed API key in its password field",
        field=f"the password field of {source}",
    )
    try:
        extra = conn.extra_dejson if conn.extra else {}
    except (TypeError, ValueError) as exc:
        raise WaveSpeedConfigError(f"{source} has extra that is not a JSON object: {exc}") from None
    rate = _submission_budget(extra, source)
    try:
        base_url = validate_base_url(_base_url(conn.host, conn.port, source))
    except WaveSpeedConfigError as exc:
        raise WaveSpeedConfigError(f"{source}: {exc}") from None
    allow_private = _extra_value(extra, "allow_private_output_urls")
    allow_private = allow_private.strip().lower() if isinstance(allow_private, str) else allow_private
    if allow_private not in (None, "", True, False, "true", "false"):
        raise WaveSpeedConfigError(f"{source}: extra 'allow_private_output_urls' must be true or false")
    max_output = _number_extra(extra, "max_output_bytes", source)
    if max_output is not None and max_output < 1:
        raise WaveSpeedConfigError(f"{source}: extra 'max_output_bytes' must be a positive number of bytes")
    return WaveSpeedCredentials(
        api_key,
        base_url,
        source,
        rate,
        allow_private_output_urls=allow_private in (True, "true"),
        max_output_bytes=int(max_output) if max_output is not None else DEFAULT_MAX_OUTPUT_BYTES,
    )


def _base_url(host: str | None, port: object, source: str) -> str:
    """Return the base URL of a connection: its Host field (a whole URL), with its Port field when set."""
    host = (host or "").strip()
    port = _port_field(port, source)
    if not host:
        if port:
            raise WaveSpeedConfigError(
                f"{source}: its Port field is {port} but its Host field is empty: put the whole base URL "
                f"in Host (e.g. http://localhost:{port} for a local emulator), or clear Port to use {DEFAULT_BASE_URL}"
            )
        return DEFAULT_BASE_URL
    if "://" not in host:
        hostname = urlsplit(f"//{host}").hostname or ""
        scheme = "http" if is_loopback_host(hostname) else "https"
        raise WaveSpeedConfigError(
            f"{source}: its Host field {host!r} has no scheme: write the whole base URL, "
            f"e.g. {scheme}://{host} (https:// for the API; http:// only for a local emulator on loopback)"
        )
    if not port:
        return host
    parts = urlsplit(host)
    try:
        own_port = parts.port
    except ValueError:
        own_port = None  # not a port: validate_base_url refuses the URL
    if own_port is None and parts.netloc:
        return parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    if own_port != port:
        raise WaveSpeedConfigError(
            f"{source}: its Host field {host!r} names port {own_port} and its Port field {port}: "
            "keep one of them (clear the Port field, or the port in the Host's URL)"
        )
    return host


def _port_field(port: object, source: str) -> int | None:
    """Read the Port field as a TCP port, None when empty (a connection from JSON may give it as text)."""
    if port in (None, "", 0):
        return None
    try:
        number = int(str(port).strip())
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise WaveSpeedConfigError(f"{source}: its Port field {port!r} is not a TCP port (1-65535)")
    return number


def _number_extra(extra: dict[str, Any], name: str, source: str) -> float | None:
    value = _extra_value(extra, name)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")):
        raise WaveSpeedConfigError(f"{source}: extra {name!r} must be a number, got {value!r}")
    return number


def _submission_budget(extra: dict[str, Any], source: str) -> float | None:
    """Submissions per minute from the extra (None: no budget): the account tier's rate, else the number.

    The one place the budget is decided: ``account_tier`` (a preset, or ``custom``), then
    ``max_submissions_per_minute``, then the default.
    """
    tier = _extra_value(extra, "account_tier")
    tier = tier.strip().lower() if isinstance(tier, str) else tier
    if tier not in (None, "", "custom"):
        if tier not in ACCOUNT_TIERS:
            choices = ", ".join([*ACCOUNT_TIERS, "custom"])
            raise WaveSpeedConfigError(f"{source}: extra 'account_tier' must be one of {choices}, got {tier!r}")
        return float(ACCOUNT_TIERS[tier])
    per_minute = _number_extra(extra, "max_submissions_per_minute", source)
    if per_minute is None:
        per_minute = DEFAULT_MAX_SUBMISSIONS_PER_MINUTE
    return per_minute if per_minute > 0 else None


async def _amask_secret(secret: str) -> None:
    """``mask_secret`` from a coroutine: a sync call to the supervisor would block (or refuse) the event loop."""
    try:
        from airflow.sdk.log import amask_secret  # in Airflow 3.3, not in 3.0
    except ImportError:  # the sync call, in a thread, as the older releases' own connection lookup does
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret)
        return
    await amask_secret(secret)


class WaveSpeedHook(BaseHook):
    """Interact with the WaveSpeedAI API through an Airflow connection of type ``wavespeed``.

    The API key is the connection's password and the base URL its host (default
    ``https://api.wavespeed.ai``). When no connection named ``wavespeed_conn_id`` exists,
    the key comes from the ``WAVESPEED_API_KEY`` environment variable.

    :param wavespeed_conn_id: The connection id.
    :param timeout: Seconds per HTTP request.
    :param retry: The retry policy of each request.
    """

    conn_name_attr = "wavespeed_conn_id"
    default_conn_name = "wavespeed_default"
    conn_type = CONN_TYPE
    hook_name = "WaveSpeed"

    def __init__(
        self,
        wavespeed_conn_id: str = default_conn_name,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.wavespeed_conn_id = wavespeed_conn_id
        self.timeout = timeout
        self.retry = retry

    def __repr__(self) -> str:
        return f"WaveSpeedHook(wavespeed_conn_id={self.wavespeed_conn_id!r})"

    # -- the connection form (Airflow 3.0/3.1 read these; 3.2+ reads get_provider_info) --
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel and hide connection form fields."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra form fields; needs wtforms, which only the FAB-based UI has."""
        from flask_babel import lazy_gettext
        from wtforms import StringField

        return {
            name: StringField(lazy_gettext(spec["label"]), description=spec["description"])
            for name, spec in CONN_FIELDS.items()
        }

    # -- credentials and clients --
    def get_credentials(self) -> WaveSpeedCredentials:
        """Credentials from the connection (sync lookup; not for use inside a trigger); the key masked in logs."""
        creds = self._credentials_from_lookup()
        # Airflow masks the password field as stored; the key sent is stripped of surrounding whitespace,
        # and a key from WAVESPEED_API_KEY is masked by no one else.
        mask_secret(creds.api_key)
        return creds

    async def aget_credentials(self) -> WaveSpeedCredentials:
        """Credentials without blocking the event loop (for triggers); the key masked in logs."""
        aget = getattr(BaseHook, "aget_connection", None)
        if aget is None:
            # Airflow 3.0: the sync lookup, and the reading of the connection, in a thread: its
            # Connection's extra_dejson masks the extra through a sync call to the triggerer's
            # supervisor, which raises RuntimeError in the event loop's thread.
            from asgiref.sync import sync_to_async

            creds = await sync_to_async(self._credentials_from_lookup)()
        else:
            try:
                conn = await aget(self.wavespeed_conn_id)
            except AirflowNotFoundException:
                conn = None
            creds = credentials_from_connection(conn, self.wavespeed_conn_id)
        await _amask_secret(creds.api_key)
        return creds

    def _credentials_from_lookup(self) -> WaveSpeedCredentials:
        """Credentials from the sync connection lookup, unmasked (the callers mask the key)."""
        try:
            conn = self.get_connection(self.wavespeed_conn_id)
        except AirflowNotFoundException:
            conn = None
        return credentials_from_connection(conn, self.wavespeed_conn_id)

    def download_policy(self) -> DownloadPolicy:
        """Where this connection's output URLs may point and how large they may be (for store_outputs)."""
        creds = self.get_credentials()
        return DownloadPolicy(
            api_base_url=creds.base_url,
            allow_private_addresses=creds.allow_private_output_urls,
            max_bytes=creds.max_output_bytes,
        )

    def _client_options(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "retry": self.retry}

    @cached_property
    def client(self) -> WaveSpeedClient:
        """The sync client, built once per hook."""
        creds = self.get_credentials()
        return WaveSpeedClient(
            creds.api_key,
            creds.base_url,
            credential_source=creds.source,
            submit_limiter=submission_limiter(creds),
            **self._client_options(),
        )

    def get_conn(self) -> WaveSpeedClient:
        """Return the sync WaveSpeed client."""
        return self.client

    async def aget_client(
        self, *, session: aiohttp.ClientSession | None = None, limiter: RateLimiter | None = None
    ) -> AsyncWaveSpeedClient:
        """Return an async client (aiohttp); pass ``session`` to share a connection pool (``trust_env=False``).

        Without one the client opens its own, closed with it (``async with``).
        Its submissions draw from the host's submission budget; ``limiter`` paces its other requests.
        """
        creds = await self.aget_credentials()
        return AsyncWaveSpeedClient(
            creds.api_key,
            creds.base_url,
            credential_source=creds.source,
            session=session,
            limiter=limiter,
            submit_limiter=submission_limiter(creds),
            **self._client_options(),
        )

    # -- the API, in its own words --
    def submit(self, model: str, inputs: object, *, webhook: str | None = None) -> Prediction:
        """Submit a prediction; returns it with its id (status ``created``)."""
        return self.client.submit(model, inputs, webhook=webhook)

    def get_prediction(self, prediction_id: str) -> Prediction:
        """Read a prediction's current state."""
        return self.client.get_prediction(prediction_id)

    def wait_for_prediction(self, prediction_id: str, **wait: Unpack[WaitOptions]) -> Prediction:
        """Block until the prediction completes (raises if it fails or ``timeout`` passes).

        ``poll_interval`` and ``timeout`` as :meth:`WaveSpeedClient.wait_for_prediction` takes them.
        """
        return self.client.wait_for_prediction(prediction_id, **wait)

    def run(self, model: str, inputs: object, *, webhook: str | None = None, **wait: Unpack[WaitOptions]) -> Prediction:
        """Submit and wait for the completed prediction (``poll_interval``, ``timeout``: as for the wait)."""
        return self.client.run(model, inputs, webhook=webhook, **wait)

    def upload_media(self, path_or_bytes: MediaSource, *, filename: str | None = None) -> str:
        """Upload a local file, bytes or binary file object; returns the download URL."""
        return self.client.upload_media(path_or_bytes, filename=filename)

    def get_balance(self) -> float:
        """Return the account balance in USD."""
        return self.client.get_balance()

    def get_price(self, model: str, inputs: object) -> float:
        """Return the price in USD of one prediction of ``model`` with ``inputs``."""
        return self.client.get_price(model, inputs)

    def cancel_prediction(self, prediction_id: str) -> Prediction | None:
        """Cancel (delete) a prediction (``DELETE``); returns it as answered, None when unreadable."""
        return self.client.cancel_prediction(prediction_id)

    def list_predictions(self, **query: Unpack[HistoryQuery]) -> PredictionPage:
        """One page of the prediction history; ``query``: page, page_size, model, status, created_after/before."""
        return self.client.list_predictions(**query)

    async def aget_prediction(self, prediction_id: str) -> Prediction:
        """Read a prediction without blocking the event loop (one-off client)."""
        async with await self.aget_client() as client:
            return await client.get_prediction(prediction_id)

    async def acancel_prediction(self, prediction_id: str) -> Prediction | None:
        """Cancel a prediction without blocking the event loop (one-off client)."""
        async with await self.aget_client() as client:
            return await client.cancel_prediction(prediction_id)

    async def alist_predictions(self, **query: Unpack[HistoryQuery]) -> PredictionPage:
        """One page of the prediction history without blocking the event loop (one-off client)."""
        async with await self.aget_client() as client:
            return await client.list_predictions(**query)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key by reading the balance; the message never contains the key."""
        try:
            balance = self.get_balance()
        except WaveSpeedError as exc:
            return False, str(exc)
        return True, f"Connection to {self.client.base_url} works; account balance {balance:.2f} USD"
