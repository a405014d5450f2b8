"""verify_webhook: vectors computed here with hmac directly, then a real delivery from the emulator."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from feature_helpers import FEATURE_DAGS, LocalHTTPServer, load_dag, run_dag, task_states, xcom_value

from airflow_provider_wavespeed.api.errors import WaveSpeedConfigError
from airflow_provider_wavespeed.api.webhooks import (
    WaveSpeedWebhookError,
    WaveSpeedWebhookPayloadError,
    WaveSpeedWebhookSignatureError,
    WaveSpeedWebhookTimestampError,
    verify_webhook,
)
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.testing.emulator import DEFAULT_WEBHOOK_SECRET

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the secret minus "whsec_", used as is (not base64-decoded)
WEBHOOK_ID = "b5d6a1f0c1e24c87a3b0f1d2e3c4b5a6"
TIMESTAMP = 1_764_000_000
BODY = json.dumps(
    {
        "id": WEBHOOK_ID,
        "model": "wavespeed-ai/flux-dev",
        "status": "completed",
        "outputs": ["https://cdn.example/out_0.jpeg"],
        "has_nsfw_contents": [False],
        "created_at": "2025-11-24T16:00:00.123456789Z",
        "error": "",
        "timings": {"inference": 1234},
    }
).encode()


def _sign(body: bytes = BODY, webhook_id: str = WEBHOOK_ID, timestamp: int | str = TIMESTAMP, key: bytes = KEY) -> str:
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _headers(signature: str | None = None, **overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": WEBHOOK_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": f"v3,{signature or _sign()}",
    }
    headers.update(overrides)
    return headers


def test_a_valid_webhook_returns_its_prediction() -> None:
    prediction = verify_webhook(BODY, _headers(), SECRET, now=TIMESTAMP + 5)
    assert prediction.id == WEBHOOK_ID and prediction.status == "completed"
    assert prediction.outputs == ["https://cdn.example/out_0.jpeg"] and prediction.timings == {"inference": 1234}


def test_the_secret_works_with_or_without_its_prefix_and_header_case_does_not_matter() -> None:
    headers = {"Webhook-Id": WEBHOOK_ID, "WEBHOOK-TIMESTAMP": str(TIMESTAMP), "Webhook-Signature": f"v3,{_sign()}"}
    assert verify_webhook(BODY, headers, SECRET.removeprefix("whsec_"), now=TIMESTAMP).id == WEBHOOK_ID
    assert verify_webhook(BODY.decode(), _headers(), SECRET, now=TIMESTAMP).id == WEBHOOK_ID


def test_a_failed_prediction_is_returned_too() -> None:
    body = json.dumps({"id": "f1", "model": "a/b", "status": "failed", "error": "NSFW", "outputs": []}).encode()
    prediction = verify_webhook(body, _headers(_sign(body, "f1"), **{"webhook-id": "f1"}), SECRET, now=TIMESTAMP)
    assert prediction.status == "failed" and prediction.error == "NSFW"


@pytest.mark.parametrize(
    ("now", "accepted"),
    [(TIMESTAMP + 299, True), (TIMESTAMP + 300, True), (TIMESTAMP + 301, False), (TIMESTAMP - 301, False)],
)
def test_timestamps_outside_the_tolerance_are_refused(now: int, accepted: bool) -> None:
    if accepted:
        assert verify_webhook(BODY, _headers(), SECRET, now=now).id == WEBHOOK_ID
    else:
        with pytest.raises(WaveSpeedWebhookTimestampError, match="tolerance 5 minutes"):
            verify_webhook(BODY, _headers(), SECRET, now=now)


def test_the_tolerance_can_be_changed() -> None:
    with pytest.raises(WaveSpeedWebhookTimestampError):
        verify_webhook(BODY, _headers(), SECRET, now=TIMESTAMP + 61, tolerance=60)


def test_a_timestamp_that_is_not_a_number_is_refused() -> None:
    timestamp = "yesterday"
    headers = _headers(_sign(timestamp=timestamp), **{"webhook-timestamp": timestamp})
    with pytest.raises(WaveSpeedWebhookTimestampError, match="not epoch seconds"):
        verify_webhook(BODY, headers, SECRET, now=TIMESTAMP)


@pytest.mark.parametrize(
    "timestamp",
    ["9" * 5000, "1" * 400, "1" * 13, "+1764000000", "1_764_000_000", "\u0661\u0667\u0666\u0664", "-1", " 1764000000x"],
)
def test_a_timestamp_of_absurd_length_or_form_is_refused(timestamp: str) -> None:
    headers = _headers(_sign(timestamp=timestamp), **{"webhook-timestamp": timestamp})
    with pytest.raises(WaveSpeedWebhookTimestampError, match="not epoch seconds"):
        verify_webhook(BODY, headers, SECRET, now=TIMESTAMP)


@pytest.mark.parametrize("tolerance", [float("inf"), float("nan"), -1.0, "300"])
def test_a_tolerance_that_is_not_a_finite_number_is_refused(tolerance: object) -> None:
    with pytest.raises(WaveSpeedWebhookError, match="tolerance must be a finite number"):
        verify_webhook(BODY, _headers(), SECRET, now=TIMESTAMP + 10**9, tolerance=tolerance)  # type: ignore[arg-type]


GOOD = _sign()
OFF_BY_ONE_DIGIT = GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1")


@pytest.mark.parametrize(
    ("body", "headers", "secret"),
    [
        pytest.param(
            BODY, _headers(_sign()[:-1] + ("0" if _sign()[-1] != "0" else "1")), SECRET, id="one-hex-digit-off"
        ),
        pytest.param(BODY.replace(b"1234", b"1235"), _headers(), SECRET, id="body-changed"),
        pytest.param(BODY, _headers(), "whsec_another-secret", id="wrong-secret"),
        pytest.param(BODY, _headers(**{"webhook-id": "someone-else"}), SECRET, id="id-changed"),
        pytest.param(BODY, _headers(**{"webhook-signature": f"v1,{_sign()}"}), SECRET, id="wrong-version"),
        pytest.param(BODY, _headers(**{"webhook-signature": _sign()}), SECRET, id="no-version"),
        pytest.param(BODY, _headers(_sign(key=SECRET.encode())), SECRET, id="signed-with-prefix-kept"),
    ],
)
def test_bad_signatures_are_refused(body: bytes, headers: dict[str, str], secret: str) -> None:
    with pytest.raises(WaveSpeedWebhookSignatureError, match="no v3 signature matches"):
        verify_webhook(body, headers, secret, now=TIMESTAMP)


def test_any_matching_signature_of_several_is_accepted() -> None:
    rotated = hmac.new(b"old-key", f"{WEBHOOK_ID}.{TIMESTAMP}.".encode() + BODY, hashlib.sha256).hexdigest()
    signatures = f"v3,{rotated} v1,{'ab' * 32} v3,{_sign()}"
    assert verify_webhook(BODY, _headers(**{"webhook-signature": signatures}), SECRET, now=TIMESTAMP).id == WEBHOOK_ID
    with pytest.raises(WaveSpeedWebhookSignatureError):
        verify_webhook(BODY, _headers(**{"webhook-signature": f"v3,{rotated} v2,{_sign()}"}), SECRET, now=TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_refused(missing: str) -> None:
    headers = _headers()
    del headers[missing]
    with pytest.raises(WaveSpeedWebhookSignatureError, match=f"header '{missing}' is missing"):
        verify_webhook(BODY, headers, SECRET, now=TIMESTAMP)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>hello</html>", id="not-json"),
        pytest.param(b'{"hello": "world"}', id="json-without-prediction"),
        pytest.param(b'{"code": 200, "message": "success", "data": {"id": "x", "status": "completed"}}', id="envelope"),
        pytest.param(b'["a list"]', id="list"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="nested-past-the-parser"),
    ],
)
def test_a_signed_body_that_is_not_a_prediction_is_refused(body: bytes) -> None:
    with pytest.raises(WaveSpeedWebhookPayloadError, match="is signed but its body is not"):
        verify_webhook(body, _headers(_sign(body)), SECRET, now=TIMESTAMP)


@pytest.mark.parametrize("secret", ["", "whsec_", "   "])
def test_an_empty_secret_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(WaveSpeedConfigError, match="webhook secret is empty"):
        verify_webhook(BODY, _headers(), secret, now=TIMESTAMP)


def test_a_real_delivery_from_a_dag_run_verifies(
    airflow_db: Path, wavespeed_connection: WaveSpeedEmulator, local_http: LocalHTTPServer
) -> None:
    wavespeed_connection.set_duration(0.2)
    receiver = local_http.url("/wavespeed/hook")
    dag = load_dag(FEATURE_DAGS / "wavespeed_feature_dags.py", "wavespeed_feature_webhook")
    run = run_dag(dag, run_conf={"webhook": receiver})
    assert task_states(run) == {"submit": "success"}
    prediction_id = xcom_value(run, "submit")
    assert wavespeed_connection.prediction_state(prediction_id)["webhook"] == receiver  # passed as ?webhook=

    assert local_http.received_event.wait(10), "the emulator delivered no webhook"
    path, headers, body = local_http.received[0]
    assert path == "/wavespeed/hook"
    prediction = verify_webhook(body, headers, DEFAULT_WEBHOOK_SECRET)
    assert prediction.id == prediction_id and prediction.status == "completed" and prediction.outputs
    with pytest.raises(WaveSpeedWebhookSignatureError):
        verify_webhook(body.replace(b"completed", b"failed"), headers, DEFAULT_WEBHOOK_SECRET)
    with pytest.raises(WaveSpeedWebhookSignatureError):
        verify_webhook(body, headers, "whsec_not-the-account-secret")
