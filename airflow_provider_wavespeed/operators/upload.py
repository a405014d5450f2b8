"""WaveSpeedUploadOperator: local or object-store media uploaded to WaveSpeed, for the models that take a URL."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_wavespeed._outcome import RETRYABLE_ERRORS, airflow_error
from airflow_provider_wavespeed.api import WaveSpeedError, WaveSpeedStorageError
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.storage._files import Location, open_source

if TYPE_CHECKING:
    from airflow.sdk import Context

# Uploading again only stores another copy (free, kept 7 days): a storage error is retryable too.
_UPLOAD_RETRYABLE: tuple[type[WaveSpeedError], ...] = (*RETRYABLE_ERRORS, WaveSpeedStorageError)


class WaveSpeedUploadOperator(BaseOperator):
    """Upload a file to WaveSpeed (``/media/uploads`` ticket, then a ``PUT``) and return its download URL.

    The URL feeds image-to-image and image-to-video models (their ``image`` input); WaveSpeed
    keeps uploads 7 days. The file is streamed, never read whole into memory, and refused before
    any request when over the API's size limits (images 20 MB, video 100 MB, audio 50 MB).

    :param path: The file (templated): a local path, a URL such as ``file:///data/in/cat.png``
        or ``s3://bucket/in/cat.png``, or an ``ObjectStoragePath``.
    :param filename: The name to upload it under (default: the file's own name).
    :param wavespeed_conn_id: The WaveSpeed connection id (templated).
    """

    template_fields: Sequence[str] = ("path", "filename", "wavespeed_conn_id")
    ui_color = "#b3e5ff"

    def __init__(
        self,
        *,
        path: Location,
        filename: str | None = None,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.filename = filename
        self.wavespeed_conn_id = wavespeed_conn_id

    @cached_property
    def hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id)

    def execute(self, context: Context) -> str:
        try:
            with open_source(self.path) as (source, name):
                url = self.hook.upload_media(source, filename=self.filename or name)
        except WaveSpeedError as exc:
            raise airflow_error(exc, _UPLOAD_RETRYABLE) from None
        self.log.info("Uploaded %s to WaveSpeed: %s", self.filename or name, url)
        return url
