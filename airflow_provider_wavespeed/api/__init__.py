"""An Airflow-free WaveSpeed API client: models, errors, validation, retry policy, clients."""

from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient, WaveSpeedClient, ensure_success
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
from airflow_provider_wavespeed.api.models import TERMINAL_STATUSES, Prediction
from airflow_provider_wavespeed.api.retry import PollSchedule, RetryPolicy
from airflow_provider_wavespeed.api.webhooks import verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "TERMINAL_STATUSES",
    "AsyncWaveSpeedClient",
    "PollSchedule",
    "Prediction",
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
