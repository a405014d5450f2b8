"""An Airflow-free WaveSpeed API client: models, errors, validation, retry policy, polling, clients.

The Airflow layer (hook, triggers, operators) imports what it uses from here, one layer.
"""

# The names below are loaded on first use (PEP 562), not at import: Airflow imports
# `api.defaults` through this package in every process (the provider-info entry point), and
# importing the clients here would load aiohttp and requests there too (~0.45 s per process).
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_wavespeed.api._batch import batch_inputs
    from airflow_provider_wavespeed.api._times import in_words
    from airflow_provider_wavespeed.api._validation import (
        validate_inputs,
        validate_model,
        validate_prediction_id,
        validate_webhook_url,
    )
    from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient, WaveSpeedClient
    from airflow_provider_wavespeed.api.defaults import (
        DEFAULT_BASE_URL,
        DEFAULT_FIRST_POLL_INTERVAL,
        DEFAULT_POLL_INTERVAL,
        DEFAULT_WAIT_TIMEOUT,
    )
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
    from airflow_provider_wavespeed.api.polling import (
        CancelOutcome,
        PollSchedule,
        WaitOutcome,
        cancel_unfinished,
        note_unknown_status,
        read_predictions,
        wait_for_predictions,
    )
    from airflow_provider_wavespeed.api.retry import RetryPolicy
    from airflow_provider_wavespeed.api.webhooks import verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FIRST_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_WAIT_TIMEOUT",
    "TERMINAL_STATUSES",
    "AsyncWaveSpeedClient",
    "CancelOutcome",
    "HistoryItem",
    "PollSchedule",
    "Prediction",
    "PredictionPage",
    "RetryPolicy",
    "WaitOutcome",
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
    "batch_inputs",
    "cancel_unfinished",
    "ensure_success",
    "in_words",
    "note_unknown_status",
    "read_predictions",
    "validate_inputs",
    "validate_model",
    "validate_prediction_id",
    "validate_webhook_url",
    "verify_webhook",
    "wait_for_predictions",
]

# Where __getattr__ looks for a name, lightest module first (the clients load aiohttp and requests).
_MODULES = ("defaults", "errors", "models", "retry", "_times", "_validation", "polling", "_batch", "webhooks", "client")


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
