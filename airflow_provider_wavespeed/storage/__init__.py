"""Copy a prediction's outputs to a local directory or Airflow object storage.

WaveSpeed deletes predictions and their files after 7 days, so a pipeline that keeps its
results copies them. :func:`store_outputs` writes each output as
``<prediction id>_<index>.<ext>``: URL outputs are streamed in chunks (never held whole in
memory), base64 outputs are decoded, and every file is written under a temporary name and
moved into place, so a reader never sees a partial file and a re-run overwrites the same
names. A download that fails is tried again when :class:`RetryPolicy` calls its error transient.

Output URLs come from an answer, so a download is held to what outputs are (:class:`DownloadPolicy`):
https to a public address (checked on the address connected to, on every redirect hop), a size
cap and a deadline. Plain http and loopback addresses are allowed only when the API itself is on
loopback (the emulator); a connection whose API sits behind an internal proxy opts out of the
address check explicitly.

The public names are here; the private modules hold the rest: ``_files`` where files go and what
they are called, ``_downloads`` fetching an output URL.
"""

from __future__ import annotations

import json
import uuid

from airflow_provider_wavespeed.api._validation import validate_prediction_id
from airflow_provider_wavespeed.api.defaults import DEFAULT_DOWNLOAD_CHUNK_SIZE, DEFAULT_DOWNLOAD_REQUEST_TIMEOUT
from airflow_provider_wavespeed.api.errors import WaveSpeedError, WaveSpeedStorageError
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.storage._downloads import DownloadPolicy, download, download_session, too_large
from airflow_provider_wavespeed.storage._files import (
    Location,
    OutputPath,
    commit_file,
    decode_inline,
    resolve_output_path,
    safe_url,
    write_file,
)

__all__ = [
    "DownloadPolicy",
    "Location",
    "OutputPath",
    "WaveSpeedStorageError",
    "store_outputs",
]


def store_outputs(
    prediction: Prediction,
    output_path: OutputPath,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | tuple[float, float] = DEFAULT_DOWNLOAD_REQUEST_TIMEOUT,
    chunk_size: int = DEFAULT_DOWNLOAD_CHUNK_SIZE,
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
    http = download_session(limits)
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
                        write_file(dest, temp_name, iter([json.dumps(output).encode()]), what)
                        stored.append(commit_file(dest, temp_name, f"{stem}.json", what))
                        continue
                if output.startswith(("http://", "https://")):
                    what = f"{what} ({safe_url(output)})"
                    ext = download(
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
                    data, ext = decode_inline(output, what)
                    if len(data) > limits.max_bytes:
                        raise too_large(what, limits)
                    write_file(dest, temp_name, iter([data]), what)
                stored.append(commit_file(dest, temp_name, f"{stem}.{ext}", what))
            except BaseException as exc:
                dest.discard(temp_name)
                if isinstance(exc, WaveSpeedError) and exc.prediction_id is None:
                    exc.prediction_id = prediction_id  # whatever failed, it failed storing this prediction
                raise
    finally:
        http.close()
    return stored
