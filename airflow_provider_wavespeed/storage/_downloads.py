"""Fetching an output URL: where it may point (:class:`DownloadPolicy`), checked connections, retries.

Output URLs come from an answer, so a download is held to what outputs are: https to a public
address (checked on the address connected to, on every redirect hop), a size cap and a deadline.
Plain http and loopback addresses are allowed only when the API itself is on loopback (the
emulator); a connection whose API sits behind an internal proxy opts out of the address check
explicitly. A download that fails is tried again when :class:`RetryPolicy` calls its error
transient; the body streams in chunks into a destination's temporary file.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.connection import allowed_gai_family, create_connection

from airflow_provider_wavespeed.api._transport import no_ambient_credentials, without_queries
from airflow_provider_wavespeed.api._validation import is_loopback_host
from airflow_provider_wavespeed.api.defaults import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_OUTPUT_DOWNLOAD_TIMEOUT
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedError,
    WaveSpeedStorageError,
    WaveSpeedTransportError,
    error_for_status,
)
from airflow_provider_wavespeed.api.retry import RetryPolicy, parse_retry_after
from airflow_provider_wavespeed.storage._files import Destination, output_extension, safe_url, write_file

# -- where outputs may come from --------------------------------------------------------

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class DownloadPolicy:
    """Where output URLs may point and how much a download may take.

    :param api_base_url: The API's base URL. Only when it is on loopback (the emulator) may outputs
        come over plain http and from loopback addresses.
    :param allow_private_addresses: Fetch from private, loopback, link-local and reserved addresses
        too (a connection's ``allow_private_output_urls`` extra, for an API behind an internal proxy).
    :param max_bytes: The largest output file.
    :param timeout: Seconds one output's download may take, retries included.
    """

    api_base_url: str | None = None
    allow_private_addresses: bool = False
    max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    timeout: float = DEFAULT_OUTPUT_DOWNLOAD_TIMEOUT

    @property
    def local_api(self) -> bool:
        return bool(self.api_base_url) and is_loopback_host(urlsplit(str(self.api_base_url)).hostname or "")

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be fetched (its scheme), or None."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "https" or (scheme == "http" and self.local_api):
            return None
        if scheme == "http":
            return "outputs are fetched over https only (plain http only when the API itself is on loopback)"
        return f"{scheme or 'no'} scheme: outputs are https URLs"

    def address_refusal(self, address: str) -> str | None:
        """Why a connection to the IP ``address`` may not carry the download, or None."""
        if self.allow_private_addresses:
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback and self.local_api:
            return None
        if ip.is_global and not (ip.is_multicast or ip.is_reserved):
            return None
        kind = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private or reserved"
        return f"its host resolves to {ip}, a {kind} address"


class _RefusedAddress(Exception):  # a signal inside the HTTP stack, not an error users see
    """A connection refused after resolving, before any byte was sent (becomes a WaveSpeedStorageError)."""


def _checked_connection(base: type[urllib3.connection.HTTPConnection], policy: DownloadPolicy) -> type:
    """Make ``base`` resolve its host once, check every address, and connect to a checked one.

    Connecting to the address that was checked (not resolving the name a second time) keeps a
    name that answers differently the next time (DNS rebinding) from slipping past the check, and
    nothing, not even a TCP handshake, goes to a refused address. Every connection, so every
    redirect hop, goes through it.
    """

    class Checked(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            try:
                found = socket.getaddrinfo(self.host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
            addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
            for address in addresses:
                reason = policy.address_refusal(address)
                if reason is not None:
                    raise _RefusedAddress(f"{self.host}: {reason}")
            try:
                return create_connection(
                    (addresses[0], self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                raise urllib3.exceptions.NewConnectionError(
                    self, f"Failed to establish a new connection: {exc}"
                ) from exc

    return Checked


class _CheckedAdapter(HTTPAdapter):
    """requests' adapter whose connections are :func:`_checked_connection` ones."""

    def __init__(self, policy: DownloadPolicy) -> None:
        self._policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool in self.poolmanager.pool_classes_by_scheme.items():
            connection = _checked_connection(pool.ConnectionCls, self._policy)
            checked = type(f"Checked{pool.__name__}", (pool,), {"ConnectionCls": connection})
            pools[scheme] = checked
        self.poolmanager.pool_classes_by_scheme = pools


def download_session(policy: DownloadPolicy) -> requests.Session:
    session = requests.Session()
    if not policy.allow_private_addresses:
        # A proxy from the environment would connect for us, out of the address check's sight.
        session.trust_env = False
        adapter = _CheckedAdapter(policy)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


# -- downloading --------------------------------------------------------------------------


def _http_error(response: requests.Response, what: str) -> WaveSpeedAPIError:
    status = response.status_code
    text = f"{what} failed with HTTP {status}"
    if status == 404:
        text += ": the file is gone (WaveSpeed keeps outputs 7 days) or the URL is wrong"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error_for_status(status, text, retry_after=retry_after, from_api=False, status_code=status)


def _deadline_error(what: str, policy: DownloadPolicy) -> WaveSpeedTransportError:
    return WaveSpeedTransportError(
        f"{what}: the download did not finish within {policy.timeout:g} s (retries included)", connected=True
    )


def _body_chunks(
    response: requests.Response, chunk_size: int, what: str, policy: DownloadPolicy, deadline: float
) -> Iterator[bytes]:
    """Yield the response body in chunks of at most ``chunk_size``, within the size cap and the deadline.

    Each read takes what has arrived (one socket read), so a server that trickles bytes meets
    the deadline between two reads. A connection lost mid-body is a transient transport error.
    """
    total = 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise _deadline_error(what, policy)
            chunk = response.raw.read1(chunk_size, decode_content=True)
            if not chunk:
                return
            total += len(chunk)
            if total > policy.max_bytes:
                raise too_large(what, policy)
            yield chunk
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        reason = without_queries(f"{type(exc).__name__}: {exc}", response.url)  # a signed URL's query is a credential
        raise WaveSpeedTransportError(f"{what}: download interrupted ({reason})", connected=True) from None


def too_large(what: str, policy: DownloadPolicy) -> WaveSpeedStorageError:
    return WaveSpeedStorageError(
        f"{what} is larger than the {policy.max_bytes:,} bytes an output may be; raise the connection's "
        "max_output_bytes extra if your model makes larger files"
    )


def _download_once(
    session: requests.Session,
    url: str,
    dest: Destination,
    temp_name: str,
    *,
    what: str,
    policy: DownloadPolicy,
    deadline: float,
    timeout: float | tuple[float, float],
    chunk_size: int,
) -> str:
    """One streamed download into ``temp_name``, redirects followed hop by hop; returns the file extension."""
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        reason = policy.refusal(current)
        if reason is not None:
            raise WaveSpeedStorageError(f"{what}: refused to fetch {safe_url(current)}: {reason}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _deadline_error(what, policy)
        try:
            response = session.get(
                current,
                stream=True,
                allow_redirects=False,
                timeout=(min(connect, remaining), min(read, remaining)),
                auth=no_ambient_credentials,  # never ~/.netrc's credentials, whatever the session trusts
            )
        except _RefusedAddress as exc:
            raise WaveSpeedStorageError(
                f"{what}: refused to fetch {safe_url(current)}: {exc}. If your WaveSpeed API is reached through "
                "an internal proxy that serves outputs, set the connection extra allow_private_output_urls"
            ) from None
        except requests.RequestException as exc:
            reason = without_queries(f"{type(exc).__name__}: {exc}", current)
            raise WaveSpeedTransportError(f"{what}: network error ({reason})", connected=True) from None
        with response:
            if 300 <= response.status_code < 400:
                location = response.headers.get("Location")
                if not location:
                    raise WaveSpeedStorageError(f"{what}: HTTP {response.status_code} without a Location")
                current = urljoin(current, location)  # checked like the first URL on the next hop
                continue
            if response.status_code >= 400:
                raise _http_error(response, what)
            expected = response.headers.get("Content-Length")
            if expected is not None and expected.isdigit() and int(expected) > policy.max_bytes:
                raise too_large(what, policy)
            ext = output_extension(response.headers.get("Content-Type"), current)
            written = write_file(dest, temp_name, _body_chunks(response, chunk_size, what, policy, deadline), what)
            # Compressed bodies are counted after decoding, so only plain ones can be checked.
            plain = not response.headers.get("Content-Encoding")
            if plain and expected is not None and expected.isdigit() and written != int(expected):
                raise WaveSpeedTransportError(
                    f"{what}: the body ended after {written} of {expected} bytes", connected=True
                )
            return ext
    raise WaveSpeedStorageError(f"{what}: more than {MAX_REDIRECTS} redirects")


def download(
    session: requests.Session,
    url: str,
    dest: Destination,
    temp_name: str,
    *,
    what: str,
    retry: RetryPolicy,
    policy: DownloadPolicy,
    timeout: float | tuple[float, float],
    chunk_size: int,
) -> str:
    deadline = time.monotonic() + policy.timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            return _download_once(
                session,
                url,
                dest,
                temp_name,
                what=what,
                policy=policy,
                deadline=deadline,
                timeout=timeout,
                chunk_size=chunk_size,
            )
        except WaveSpeedStorageError:
            raise  # refused, too large, or the destination failed: downloading again cannot help
        except WaveSpeedError as exc:
            delay = retry.next_delay(attempt, exc, idempotent=True, what=what)  # raises when final
            if time.monotonic() + delay > deadline:
                raise _deadline_error(what, policy) from exc
        time.sleep(delay)
