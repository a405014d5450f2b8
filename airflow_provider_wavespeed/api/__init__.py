"""An Airflow-free WaveSpeed API client: models, errors, validation, retry policy, clients."""

# The names below are loaded on first use (PEP 562), not at import: Airflow imports
# `api.defaults` through this package in every process (the provider-info entry point), and
# importing the clients here would load aiohttp and requests there too (~0.45 s per process).
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient, WaveSpeedClient
    from airflow_provider_wavespeed.api.defaults import DEFAULT_BASE_URL
    from airflow_provider_wavespeed.api.errors import (
        WaveSpeedAPIError,
        WaveSpeedAuthError,
        WaveSpeedBadRequestError,
        WaveSpeedConfigError,
        WaveSpeedError,
        WaveSpeedNotFoundError,
        WaveSpeedPredictionFailedError,
        WaveSpeedRateLimitError,
        WaveSpeedResponseError,
        WaveSpeedServerError,
        WaveSpeedStorageError,
        WaveSpeedSubmitUncertainError,
        WaveSpeedTimeoutError,
        WaveSpeedTransportError,
        WaveSpeedValidationError,
        WaveSpeedWebhookError,
        WaveSpeedWebhookPayloadError,
        WaveSpeedWebhookSignatureError,
        WaveSpeedWebhookTimestampError,
    )
    from airflow_provider_wavespeed.api.models import (
        TERMINAL_STATUSES,
        HistoryItem,
        Prediction,
        PredictionPage,
        ensure_success,
    )
    from airflow_provider_wavespeed.api.polling import PollSchedule
    from airflow_provider_wavespeed.api.retry import RetryPolicy
    from airflow_provider_wavespeed.api.webhooks import verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "TERMINAL_STATUSES",
    "AsyncWaveSpeedClient",
    "HistoryItem",
    "PollSchedule",
    "Prediction",
    "PredictionPage",
    "RetryPolicy",
    "WaveSpeedAPIError",
    "WaveSpeedAuthError",
    "WaveSpeedBadRequestError",
    "WaveSpeedClient",
    "WaveSpeedConfigError",
    "WaveSpeedError",
    "WaveSpeedNotFoundError",
    "WaveSpeedPredictionFailedError",
    "WaveSpeedRateLimitError",
    "WaveSpeedResponseError",
    "WaveSpeedServerError",
    "WaveSpeedStorageError",
    "WaveSpeedSubmitUncertainError",
    "WaveSpeedTimeoutError",
    "WaveSpeedTransportError",
    "WaveSpeedValidationError",
    "WaveSpeedWebhookError",
    "WaveSpeedWebhookPayloadError",
    "WaveSpeedWebhookSignatureError",
    "WaveSpeedWebhookTimestampError",
    "ensure_success",
    "verify_webhook",
]

# Where __getattr__ looks for a name, lightest module first (the clients load aiohttp and requests).
_MODULES = ("defaults", "errors", "models", "retry", "polling", "webhooks", "client")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
            if value is not None:
                globals()[name] = value  # later lookups skip this function
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
