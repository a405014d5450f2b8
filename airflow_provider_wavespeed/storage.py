"""Copy a prediction's outputs to a local directory or Airflow object storage.

WaveSpeed deletes predictions and their files after 7 days, so a pipeline that keeps its
results copies them. :func:`store_outputs` writes each output as
``<prediction id>_<index>.<ext>``: URL outputs are streamed in chunks (never held whole in
memory), base64 outputs are decoded, and every file is written under a temporary name and
moved into place, so a reader never sees a partial file and a re-run overwrites the same
names. A download that fails is tried again when :class:`RetryPolicy` calls its error retryable.

Output URLs come from an answer, so a download is held to what outputs are (:class:`DownloadPolicy`):
https to a public address (checked on the address connected to, on every redirect hop), a size
cap and a deadline. Plain http and loopback addresses are allowed only when the API itself is on
loopback (the emulator); a connection whose API sits behind an internal proxy opts out of the
address check explicitly.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import mimetypes
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Union
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.connection import allowed_gai_family, create_connection

from airflow_provider_wavespeed.api.defaults import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_OUTPUT_DOWNLOAD_TIMEOUT
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedError,
    WaveSpeedStorageError,  # defined with the other errors; re-exported here
    WaveSpeedTransportError,
    error_for_status,
)
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.retry import RetryPolicy, parse_retry_after
from airflow_provider_wavespeed.api.transport import no_ambient_credentials, without_queries
from airflow_provider_wavespeed.api.validation import is_loopback_host, validate_prediction_id

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = [
    "DownloadPolicy",
    "Location",
    "OutputPath",
    "WaveSpeedStorageError",
    "open_source",
    "output_extension",
    "resolve_output_path",
    "store_outputs",
    "write_json",
]

# Where a file is or goes: a local path, a URL (file://, s3://...) or an ObjectStoragePath.
Location = Union[str, "os.PathLike[str]", "ObjectStoragePath"]
OutputPath = Location  # where outputs are copied (output_path)

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20  # 1 MiB per read and write: videos stream through a small buffer
# (connect, read) seconds; the read timeout is per chunk, so long videos are not cut off.
DOWNLOAD_TIMEOUT = (10.0, 60.0)
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
# The names WaveSpeed itself uses (its `output_format` says "jpeg"), ahead of mimetypes' guesses.
_EXTENSIONS = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "model/gltf-binary": "glb",
    "application/json": "json",
    "text/plain": "txt",
}
_EXT_RE = re.compile(r"[a-z0-9]{1,8}")


# -- where the files go ---------------------------------------------------------------


class _Destination:
    """A directory that files are written into atomically (temporary name, then a move)."""

    def __init__(self, description: str) -> None:
        self.description = description

    def open_temp(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def commit(self, temp_name: str, final_name: str) -> str:
        """Move ``temp_name`` over ``final_name``; return the stored file's path or URL."""
        raise NotImplementedError

    def discard(self, temp_name: str) -> None:
        raise NotImplementedError


class _LocalDirectory(_Destination):
    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.directory = directory

    def prepare(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        _warn_if_shared(self.directory)

    def open_temp(self, name: str) -> IO[bytes]:
        return open(os.path.join(self.directory, name), "wb")  # the caller closes it

    def commit(self, temp_name: str, final_name: str) -> str:
        final = os.path.join(self.directory, final_name)
        os.replace(os.path.join(self.directory, temp_name), final)  # atomic within one filesystem
        return final

    def discard(self, temp_name: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.directory, temp_name))


_WARNED_DIRECTORIES: set[str] = set()


def _warn_if_shared(directory: str) -> None:
    """Warn (once per directory and process) when another user could swap or plant files in ``directory``.

    That is: it or a directory above it belongs to another user (not root), or is writable by group
    or others without the sticky bit (``/tmp`` itself has it; a folder someone else made in it is theirs).
    """
    if directory in _WARNED_DIRECTORIES or not hasattr(os, "geteuid"):
        return
    me = os.geteuid()
    path = os.path.realpath(directory)
    while True:
        try:
            info = os.stat(path)
        except OSError:
            return
        problem = ""
        if info.st_uid not in (me, 0):
            problem = f"belongs to another user (uid {info.st_uid})"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o}, no sticky bit)"
        if problem:
            _WARNED_DIRECTORIES.add(directory)
            log.warning(
                "output_path %s: %s %s, who could replace or read the stored outputs. Use a directory only "
                "this user can write to",
                directory,
                "it" if path == os.path.realpath(directory) else f"the directory {path} above it",
                problem,
            )
            return
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


class _ObjectStore(_Destination):
    """Any fsspec filesystem through Airflow's ObjectStoragePath (S3, GCS, Azure, memory...).

    Object stores publish an object only when its upload completes, and ``mv`` there is a
    server-side copy, so the final name is never seen half written. Buckets are not created:
    creating storage is the deployment's decision, not a task's.
    """

    def __init__(self, root: ObjectStoragePath) -> None:
        super().__init__(str(root))
        self.root = root

    def prepare(self) -> None:
        pass

    def open_temp(self, name: str) -> IO[bytes]:
        return (self.root / name).open("wb")

    def commit(self, temp_name: str, final_name: str) -> str:
        temp, final = self.root / temp_name, self.root / final_name
        temp.fs.mv(temp.path, final.path)
        return str(final)

    def discard(self, temp_name: str) -> None:
        temp = self.root / temp_name
        with contextlib.suppress(Exception):
            temp.fs.rm(temp.path)


def _locate(location: Location, what: str) -> str | ObjectStoragePath:
    """A local absolute path, or an ObjectStoragePath for anything that is not local.

    Accepts an ``ObjectStoragePath``, a URL string (``file:///data/out/``,
    ``s3://bucket/prefix/``, ``s3://conn_id@bucket/prefix/``) or a local path.
    """
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError:  # without Airflow's object storage only local paths work
        ObjectStoragePath = None  # type: ignore[assignment,misc]

    if ObjectStoragePath is not None and isinstance(location, ObjectStoragePath):
        if location.protocol in _LOCAL_PROTOCOLS:
            return os.path.abspath(location.path)
        return location
    if isinstance(location, os.PathLike):
        return os.path.abspath(os.fspath(location))
    if not isinstance(location, str) or not location.strip():
        raise WaveSpeedStorageError(
            f"{what} must be a local path, a URL such as 'file:///data/out/' or 's3://bucket/prefix/', "
            f"or an ObjectStoragePath; got {location!r}"
        )
    text = location.strip()
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    parts = urlsplit(text)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise WaveSpeedStorageError(f"{what} {text!r}: a file:// URL must name a local path (file:///dir/)")
        return os.path.abspath(url2pathname(parts.path))
    if ObjectStoragePath is None:
        raise WaveSpeedStorageError(f"{what} {text!r} needs Airflow's ObjectStoragePath (airflow.sdk)")
    try:
        return ObjectStoragePath(text)
    except Exception as exc:
        raise WaveSpeedStorageError(
            f"cannot use {what} {text!r}: {type(exc).__name__}: {exc}. Object storage needs the "
            "filesystem's package (e.g. s3fs via apache-airflow-providers-amazon, gcsfs via "
            "apache-airflow-providers-google) installed on the workers"
        ) from None


def resolve_output_path(output_path: OutputPath) -> _LocalDirectory | _ObjectStore:
    """The destination ``output_path`` names: a local directory or an object-store prefix."""
    location = _locate(output_path, "output_path")
    return _LocalDirectory(location) if isinstance(location, str) else _ObjectStore(location)


# -- what the files are called -----------------------------------------------------------


def output_extension(content_type: str | None, url: str = "") -> str:
    """The file extension for a download, from its Content-Type or its URL (``bin`` if neither says).

    The URL's extension wins when the Content-Type agrees with it or says nothing specific
    (``application/octet-stream``), so ``x.jpeg`` served as ``image/jpeg`` stays ``jpeg``.
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    suffix = PurePosixPath(urlsplit(url).path).suffix.lstrip(".").lower() if url else ""
    url_ext = suffix if _EXT_RE.fullmatch(suffix) else ""
    if url_ext and (mime in _GENERIC_TYPES or mimetypes.guess_type(f"x.{url_ext}")[0] == mime):
        return url_ext
    if mime not in _GENERIC_TYPES:
        guessed = _EXTENSIONS.get(mime) or (mimetypes.guess_extension(mime) or "").lstrip(".")
        if _EXT_RE.fullmatch(guessed):
            return guessed
    return url_ext or "bin"


_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"GIF8", "gif"),
    (4, b"ftypqt", "mov"),
    (4, b"ftyp", "mp4"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"ID3", "mp3"),
    (0, b"glTF", "glb"),
)


def _sniff_extension(data: bytes) -> str:
    """The extension of decoded base64 bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE"):
        return "webp" if data[8:12] == b"WEBP" else "wav"
    for offset, magic, ext in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return ext
    return "bin"


def _decode_inline(output: str, what: str) -> tuple[bytes, str]:
    """Bytes and extension of a base64 output (bare, as the API sends it, or a ``data:`` URL)."""
    mime = ""
    payload = output
    if output.startswith("data:"):
        header, sep, payload = output.partition(",")
        if not sep or not header.endswith(";base64"):
            raise WaveSpeedStorageError(f"{what} is a data: URL that is not base64")
        mime = header[len("data:") : -len(";base64")]
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise WaveSpeedStorageError(f"{what} is neither an http(s) URL nor base64 data: {output[:60]!r}") from None
    ext = output_extension(mime) if mime else "bin"
    return data, ext if ext != "bin" else _sniff_extension(data)


def _safe_url(url: str) -> str:
    """The URL without query and fragment: signed URLs carry tokens that do not belong in logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


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
    """``base`` that resolves its host once, checks every address, and connects to a checked one.

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


def _download_session(policy: DownloadPolicy) -> requests.Session:
    session = requests.Session()
    if not policy.allow_private_addresses:
        # A proxy from the environment would connect for us, out of the address check's sight.
        session.trust_env = False
        adapter = _CheckedAdapter(policy)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


# -- copying --------------------------------------------------------------------------


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
    """The response body in chunks of at most ``chunk_size``, within the size cap and the deadline.

    Each read takes what has arrived (one socket read), so a server that trickles bytes meets
    the deadline between two reads. A connection lost mid-body is a retryable transport error.
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
                raise _too_large(what, policy)
            yield chunk
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        reason = without_queries(f"{type(exc).__name__}: {exc}", response.url)  # a signed URL's query is a credential
        raise WaveSpeedTransportError(f"{what}: download interrupted ({reason})", connected=True) from None


def _too_large(what: str, policy: DownloadPolicy) -> WaveSpeedStorageError:
    return WaveSpeedStorageError(
        f"{what} is larger than the {policy.max_bytes:,} bytes an output may be; raise the connection's "
        "max_output_bytes extra if your model makes larger files"
    )


def _write(dest: _Destination, temp_name: str, chunks: Iterator[bytes], what: str) -> int:
    """Write ``chunks`` to ``temp_name``; return the byte count. Storage failures become WaveSpeedStorageError."""
    written = 0
    try:
        with dest.open_temp(temp_name) as handle:
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
    except WaveSpeedError:
        raise
    except Exception as exc:  # fsspec backends raise their own types, not only OSError
        raise WaveSpeedStorageError(
            f"{what}: cannot write to {dest.description}: {type(exc).__name__}: {exc}"
        ) from None
    return written


def _commit(dest: _Destination, temp_name: str, final_name: str, what: str) -> str:
    try:
        return dest.commit(temp_name, final_name)
    except Exception as exc:
        raise WaveSpeedStorageError(
            f"{what}: cannot move the file into place as {final_name} in {dest.description}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _download_once(
    session: requests.Session,
    url: str,
    dest: _Destination,
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
            raise WaveSpeedStorageError(f"{what}: refused to fetch {_safe_url(current)}: {reason}")
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
                f"{what}: refused to fetch {_safe_url(current)}: {exc}. If your WaveSpeed API is reached through "
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
                raise _too_large(what, policy)
            ext = output_extension(response.headers.get("Content-Type"), current)
            written = _write(dest, temp_name, _body_chunks(response, chunk_size, what, policy, deadline), what)
            # Compressed bodies are counted after decoding, so only plain ones can be checked.
            plain = not response.headers.get("Content-Encoding")
            if plain and expected is not None and expected.isdigit() and written != int(expected):
                raise WaveSpeedTransportError(
                    f"{what}: the body ended after {written} of {expected} bytes", connected=True
                )
            return ext
    raise WaveSpeedStorageError(f"{what}: more than {MAX_REDIRECTS} redirects")


def _download(
    session: requests.Session,
    url: str,
    dest: _Destination,
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


def store_outputs(
    prediction: Prediction,
    output_path: OutputPath,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | tuple[float, float] = DOWNLOAD_TIMEOUT,
    chunk_size: int = CHUNK_SIZE,
    downloads: DownloadPolicy | None = None,
) -> list[str]:
    """Copy every output of ``prediction`` into ``output_path``; return the stored paths, in order.

    Names are ``<prediction id>_<index>.<ext>``; an existing file of that name is replaced
    (a re-run overwrites, it does not duplicate). Local destinations give absolute paths,
    object stores give URLs (``s3://bucket/prefix/<id>_0.png``). ``downloads`` says where output
    URLs may point and bounds each download (default: https to public addresses only; pass the
    API's base URL, as ``WaveSpeedHook.download_policy()`` does, for the emulator's loopback URLs).

    Raises :class:`WaveSpeedStorageError` when the destination cannot be written or a download is
    refused (its URL or address, its size), and the download's own error (transport, 5xx, 429,
    404, its deadline...) once ``retry`` gives up on it; either names the prediction in
    ``prediction_id``. No API key is sent: output URLs are public CDN links.
    """
    prediction_id = validate_prediction_id(prediction.id)  # it becomes a file name
    dest = resolve_output_path(output_path)
    policy = retry or RetryPolicy()
    limits = downloads or DownloadPolicy()
    try:
        dest.prepare()
    except Exception as exc:
        raise WaveSpeedStorageError(f"cannot create output directory {dest.description}: {exc}") from None
    http = _download_session(limits)
    stored: list[str] = []
    try:
        for index, output in enumerate(prediction.outputs):
            stem = f"{prediction_id}_{index}"
            what = f"WaveSpeed output {index} of prediction {prediction_id}"
            temp_name = f".{stem}.{uuid.uuid4().hex[:12]}.part"  # hidden, unique per attempt of the task
            try:
                if isinstance(output, dict):
                    url = output.get("url")
                    if isinstance(url, str) and url.startswith(("http://", "https://")):
                        output = url
                    else:  # an object output without a file: keep it as JSON
                        _write(dest, temp_name, iter([json.dumps(output).encode()]), what)
                        stored.append(_commit(dest, temp_name, f"{stem}.json", what))
                        continue
                if output.startswith(("http://", "https://")):
                    what = f"{what} ({_safe_url(output)})"
                    ext = _download(
                        http,
                        output,
                        dest,
                        temp_name,
                        what=what,
                        retry=policy,
                        policy=limits,
                        timeout=timeout,
                        chunk_size=chunk_size,
                    )
                else:
                    data, ext = _decode_inline(output, what)
                    if len(data) > limits.max_bytes:
                        raise _too_large(what, limits)
                    _write(dest, temp_name, iter([data]), what)
                stored.append(_commit(dest, temp_name, f"{stem}.{ext}", what))
            except BaseException as exc:
                dest.discard(temp_name)
                if isinstance(exc, WaveSpeedError) and exc.prediction_id is None:
                    exc.prediction_id = prediction_id  # whatever failed, it failed storing this prediction
                raise
    finally:
        http.close()
    return stored


def write_json(location: Location, value: object, *, what: str) -> str:
    """Write ``value`` as JSON to the file ``location`` (a path, a URL or an ObjectStoragePath), atomically
    (a hidden temporary name, then a move); return where it is, as a string. Raises WaveSpeedStorageError."""
    target = _locate(location, what)
    if isinstance(target, str):
        directory, name = os.path.split(target)
        dest: _LocalDirectory | _ObjectStore = _LocalDirectory(directory)
    else:
        dest, name = _ObjectStore(target.parent), target.name
    if not name:
        raise WaveSpeedStorageError(f"{what} {location!r} names a directory; give a file name, e.g. .../manifest.json")
    temp_name = f".{name}.{uuid.uuid4().hex[:12]}.part"
    try:
        dest.prepare()
    except Exception as exc:
        raise WaveSpeedStorageError(f"{what}: cannot create the directory {dest.description}: {exc}") from None
    try:
        _write(dest, temp_name, iter([json.dumps(value, separators=(",", ":")).encode()]), what)
        return _commit(dest, temp_name, name, what)
    except BaseException:
        dest.discard(temp_name)
        raise


@contextlib.contextmanager
def open_source(source: Location) -> Iterator[tuple[str | IO[bytes], str]]:
    """What to upload for ``source`` and its file name: a local path as is, or an open object-store file."""
    location = _locate(source, "path")
    if isinstance(location, str):
        yield location, os.path.basename(location)
        return
    try:
        handle = location.open("rb")
    except Exception as exc:
        raise WaveSpeedStorageError(f"cannot open {location}: {type(exc).__name__}: {exc}") from None
    with handle:
        yield handle, location.name
