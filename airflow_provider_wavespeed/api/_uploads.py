"""Uploading a file to WaveSpeed's media storage, as the official SDK does: limits, ticket, PUT.

Airflow-free. The client asks the API for an upload ticket (``POST /api/v3/media/uploads``);
everything else, the file's facts and limits and the PUT to the storage host, is here.
"""

from __future__ import annotations

import io
import mimetypes
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import requests

from airflow_provider_wavespeed.api._transport import (
    SYNC_TRANSPORT_ERRORS,
    no_ambient_credentials,
    requests_transport_error,
    without_queries,
)
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedError,
    WaveSpeedResponseError,
    WaveSpeedValidationError,
    body_excerpt,
    error_for_status,
)
from airflow_provider_wavespeed.api.retry import RetryPolicy, parse_retry_after

MediaSource = str | os.PathLike[str] | bytes | IO[bytes]

MB = 1024 * 1024
# The API's documented upload limits, by the kind of media (content type); other files are
# held to the largest. An unseekable stream is read into memory first: at most this much.
UPLOAD_LIMITS = {"image": 20 * MB, "video": 100 * MB, "audio": 50 * MB}
MAX_UNSEEKABLE_UPLOAD = 200 * MB


@dataclass
class Media:
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


def open_media(source: MediaSource, filename: str | None) -> Media:
    """Open the upload's stream and read its facts, size limits checked: nothing is sent for a file over them."""
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
    return Media(stream, name, size, content_type, opened, stream.tell())


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes: a pipe or socket gives them in short reads, until its end."""
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = stream.read(min(limit - len(buffer), MB))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


def upload_instruction(data: Any, what: str) -> tuple[str, str, dict[str, str]]:
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
        urls = [u for u in (url, download_url) if isinstance(u, str)]  # signed: their queries stay out
        raise WaveSpeedResponseError(
            f"WaveSpeed {what} returned an upload ticket without a usable 'download_url' and "
            f"'upload' {{method: PUT, url, headers}}: {body_excerpt(without_queries(repr(data), *urls))}"
        )
    return download_url, url, headers


def put_media(
    media: Media, url: str, headers: dict[str, str], what: str, *, retry: RetryPolicy, timeout: float
) -> None:
    """PUT the file to the ticket's pre-signed URL with exactly its headers, streamed, retried like a read.

    A second PUT only stores another copy (kept 7 days, not billed). Never the API key, nor any
    ``~/.netrc`` credential: the URL is a storage host's, not the API's. No redirect is followed.
    """
    host = urlsplit(url).hostname or "the storage host"
    what = f"{what} (PUT to {host})"  # never the URL itself: its query is a signature
    attempt, waited = 0, 0.0
    while True:
        attempt += 1
        try:
            with requests.request(  # no session: none of its headers or cookies go to a foreign host
                "PUT",
                url,
                data=media.rewind(),  # streamed with this length, never read whole
                headers={**headers, "Content-Length": str(media.size)},
                auth=no_ambient_credentials,
                allow_redirects=False,  # a redirect would be sent ~/.netrc's credentials by requests
                stream=True,  # an error's body: only its start is read
                timeout=timeout,
            ) as response:
                if 200 <= response.status_code < 300:
                    return
                error: WaveSpeedError = _put_error(response, what)
        except SYNC_TRANSPORT_ERRORS as exc:
            error = requests_transport_error(exc, what, url)
        delay = retry.next_delay(attempt, error, idempotent=True, what=what, waited=waited)
        waited += delay
        time.sleep(delay)


def _put_error(response: requests.Response, what: str) -> WaveSpeedError:
    status = response.status_code
    excerpt = body_excerpt(next(response.iter_content(1024), b""))
    text = f"WaveSpeed {what} failed with HTTP {status}: {excerpt or 'no message'}"
    if status != 429 and status < 500:
        # 403 here is the pre-signed URL refused (expired, or headers not as signed), not the API key.
        text += "; upload the file again for a new upload URL"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error_for_status(status, text, retry_after=retry_after, from_api=False, status_code=status, excerpt=excerpt)
