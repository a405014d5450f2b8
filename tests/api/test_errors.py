"""The error hierarchy: every error in api/errors.py, and the facts a caller acts on as attributes.

Each error is made real by the emulator's faults over loopback HTTP; the attributes asserted
(``prediction_id``, ``status_code``, ``code``) are the ones the error's situation has.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_wavespeed import api, storage
from airflow_provider_wavespeed.api import AsyncWaveSpeedClient, RetryPolicy, WaveSpeedClient, errors, webhooks
from airflow_provider_wavespeed.api.models import parse_envelope
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
UNKNOWN = "0" * 32
QUICK = RetryPolicy(max_retries=1, rate_limit_retries=1, backoff_base=0.01, backoff_max=0.02)


@pytest.fixture
def client(wavespeed_emulator: WaveSpeedEmulator) -> WaveSpeedClient:
    return WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=QUICK, credential_source="test")


def test_every_error_is_defined_in_errors_and_the_old_imports_still_work() -> None:
    assert storage.WaveSpeedStorageError is errors.WaveSpeedStorageError is api.WaveSpeedStorageError
    for name in (
        "WaveSpeedWebhookError",
        "WaveSpeedWebhookSignatureError",
        "WaveSpeedWebhookTimestampError",
        "WaveSpeedWebhookPayloadError",
    ):
        cls = getattr(errors, name)
        assert getattr(webhooks, name) is cls is getattr(api, name) and cls.__module__ == errors.__name__
        assert issubclass(cls, errors.WaveSpeedWebhookError) and issubclass(cls, errors.WaveSpeedError)
    defined_elsewhere = [
        f"{module.__name__}.{name}"
        for module in (
            api._base,
            api.client,
            api.models,
            api.polling,
            api.retry,
            api._transport,
            api._uploads,
            api._validation,
            webhooks,
            storage,
            storage._files,
            storage._downloads,
        )
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, errors.WaveSpeedError) and value.__module__ != errors.__name__
    ]
    assert defined_elsewhere == []


def test_a_404_on_a_prediction_names_it(client: WaveSpeedClient) -> None:
    with pytest.raises(errors.WaveSpeedNotFoundError) as info:
        client.get_prediction(UNKNOWN)
    error = info.value
    assert error.prediction_id == UNKNOWN and error.status_code == 404 and error.code == 404


async def test_the_async_client_names_the_prediction_too(wavespeed_emulator: WaveSpeedEmulator) -> None:
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=QUICK) as client:
        with pytest.raises(errors.WaveSpeedNotFoundError) as info:
            await client.get_prediction(UNKNOWN)
    assert info.value.prediction_id == UNKNOWN and info.value.status_code == 404


@pytest.mark.parametrize(
    ("fault", "expected", "status_code", "code"),
    [
        ({"kind": "envelope_error"}, errors.WaveSpeedServerError, 200, 500),  # HTTP 200 carrying code 500: both kept
        ({"kind": "wrong_types"}, errors.WaveSpeedResponseError, 200, None),  # a malformed prediction
        ({"kind": "rate_limit", "retry_after": 0}, errors.WaveSpeedRateLimitError, 429, 429),
        ({"kind": "http_error", "status": 503}, errors.WaveSpeedServerError, 503, 503),
    ],
)
def test_a_failed_poll_names_the_prediction_it_asked_for(
    client: WaveSpeedClient,
    wavespeed_emulator: WaveSpeedEmulator,
    fault: dict[str, Any],
    expected: type[errors.WaveSpeedAPIError],
    status_code: int,
    code: int | None,
) -> None:
    wavespeed_emulator.hold()
    prediction = client.submit(FLUX, {"prompt": "x"})
    wavespeed_emulator.add_fault("result", times=None, **fault)
    with pytest.raises(expected) as info:
        client.get_prediction(prediction.id)
    error = info.value
    assert type(error) is expected and error.prediction_id == prediction.id
    assert error.status_code == status_code and error.code == code
    if isinstance(error, errors.WaveSpeedRateLimitError):
        assert error.retry_after == 0.0


@pytest.mark.parametrize(
    ("fault", "expected", "created"),
    [
        ({"kind": "http_error", "status": 400}, errors.WaveSpeedBadRequestError, {}),
        # The answer that would have carried the id never came, yet the prediction exists.
        ({"kind": "drop_after_submit"}, errors.WaveSpeedSubmitUncertainError, {FLUX: 1}),
    ],
)
def test_a_failed_submit_has_no_prediction_id(
    client: WaveSpeedClient,
    wavespeed_emulator: WaveSpeedEmulator,
    fault: dict[str, Any],
    expected: type[errors.WaveSpeedError],
    created: dict[str, int],
) -> None:
    wavespeed_emulator.add_fault("submit", **fault)
    with pytest.raises(expected) as info:
        client.submit(FLUX, {"prompt": "x"})
    assert info.value.prediction_id is None
    if isinstance(info.value, errors.WaveSpeedBadRequestError):
        assert info.value.status_code == 400 and info.value.code == 400
    assert wavespeed_emulator.counters()["submissions"] == created


def test_a_failed_prediction_carries_its_id_and_failure_code(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.set_outcome("failed", code=5003)
    prediction = client.submit(FLUX, {"prompt": "x"})
    with pytest.raises(errors.WaveSpeedPredictionFailedError) as info:
        client.wait_for_prediction(prediction.id, poll_interval=0.05, timeout=30)
    assert info.value.prediction_id == prediction.id and info.value.code == 5003 and info.value.is_server_failure


def test_a_wait_timeout_names_the_prediction_and_the_wait_in_words(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.hold()
    prediction = client.submit(FLUX, {"prompt": "x"})
    with pytest.raises(errors.WaveSpeedTimeoutError, match=r"after 0\.3 seconds") as info:
        client.wait_for_prediction(prediction.id, poll_interval=0.05, timeout=0.3)
    assert info.value.prediction_id == prediction.id


@pytest.mark.parametrize("key", ["", "   ", None])
def test_a_missing_api_key_is_a_configuration_error(key: object) -> None:
    for make in (WaveSpeedClient, AsyncWaveSpeedClient):
        with pytest.raises(errors.WaveSpeedConfigError, match="no WaveSpeed API key in the test connection"):
            make(key, credential_source="the test connection")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status_code", "body", "expected", "code"),
    [
        (404, b"<html>not found</html>", errors.WaveSpeedNotFoundError, 404),
        (503, b'{"code": 503, "message": "busy"}', errors.WaveSpeedServerError, 503),
        (200, b'{"code": 401, "message": "bad key"}', errors.WaveSpeedAuthError, 401),
        (200, b"<html>", errors.WaveSpeedResponseError, None),
        (200, b'{"code": "200"}', errors.WaveSpeedResponseError, None),
        (200, b'{"code": 200}', errors.WaveSpeedResponseError, None),
    ],
)
def test_every_envelope_error_carries_the_request_facts(
    status_code: int, body: bytes, expected: type[errors.WaveSpeedAPIError], code: int | None
) -> None:
    with pytest.raises(expected) as info:
        parse_envelope(status_code, body, context="poll of prediction abc", prediction_id="abc")
    assert type(info.value) is expected
    assert info.value.prediction_id == "abc" and info.value.status_code == status_code and info.value.code == code
