"""The sync and async clients against the emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import time
from types import SimpleNamespace

import aiohttp
import pytest
import requests
from aiohttp.http_exceptions import BadStatusLine
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from airflow_provider_wavespeed.api import (
    AsyncWaveSpeedClient,
    RetryPolicy,
    WaveSpeedAuthError,
    WaveSpeedBadRequestError,
    WaveSpeedClient,
    WaveSpeedNotFoundError,
    WaveSpeedPredictionFailedError,
    WaveSpeedRateLimitError,
    WaveSpeedResponseError,
    WaveSpeedServerError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTimeoutError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api._transport import aiohttp_transport_error
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
FAST = RetryPolicy(max_retries=3, rate_limit_retries=5, backoff_base=0.05, backoff_max=0.2)


@pytest.fixture
def client(wavespeed_emulator: WaveSpeedEmulator) -> WaveSpeedClient:
    wavespeed_emulator.set_duration(0.3)
    return WaveSpeedClient(
        wavespeed_emulator.api_key, wavespeed_emulator.url, retry=FAST, credential_source="test connection 'ws'"
    )


def test_submit_poll_and_download_real_outputs(client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator) -> None:
    created = client.submit(FLUX, {"prompt": "a cat", "num_images": 2, "output_format": "png"})
    assert created.status in ("created", "processing") and created.model == FLUX and len(created.id) == 32
    done = client.wait_for_prediction(created.id, poll_interval=0.1, timeout=10)
    assert done.is_success and done.is_terminal and done.id == created.id
    assert len(done.outputs) == 2 and done.timings["inference"] > 0
    assert done.urls["get"].endswith(f"/api/v3/predictions/{created.id}/result")
    body = requests.get(str(done.outputs[0]), timeout=5).content
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    assert wavespeed_emulator.counters()["submissions"] == {FLUX: 1}


def test_models_of_any_depth_are_submitted_to_their_own_path(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    for model in ("wavespeed-ai/wan-2.1/t2v-480p", "bytedance/seedream-v4/edit"):
        assert client.submit(model, {"prompt": "x", "images": ["https://example.com/a.png"]}).model == model
    assert set(wavespeed_emulator.counters()["submissions"]) == {
        "wavespeed-ai/wan-2.1/t2v-480p",
        "bytedance/seedream-v4/edit",
    }


def test_run_returns_base64_outputs_that_decode(client: WaveSpeedClient) -> None:
    done = client.run(FLUX, {"prompt": "x", "enable_base64_output": True}, poll_interval=0.1, timeout=10)
    assert base64.b64decode(str(done.outputs[0])).startswith(b"\xff\xd8")  # JPEG by default


def test_prediction_to_dict_is_json_safe_and_round_trips(client: WaveSpeedClient) -> None:
    import json

    from airflow_provider_wavespeed.api import Prediction

    done = client.run(FLUX, {"prompt": "x"}, poll_interval=0.1, timeout=10)
    data = json.loads(json.dumps(done.to_dict()))
    assert Prediction.from_dict(data) == done
    assert set(data) == {
        "id",
        "model",
        "status",
        "outputs",
        "error",
        "code",
        "created_at",
        "timings",
        "urls",
        "has_nsfw_contents",
    }


@pytest.mark.parametrize("status", ["failed", "cancelled", "timeout"])
def test_non_completed_terminal_statuses_raise_with_the_api_error(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, status: str
) -> None:
    wavespeed_emulator.set_outcome(status, error=f"model said {status}")
    prediction = client.submit(FLUX, {"prompt": "x"})
    with pytest.raises(WaveSpeedPredictionFailedError) as info:
        client.wait_for_prediction(prediction.id, poll_interval=0.1, timeout=10)
    assert info.value.status == status and info.value.prediction_id == prediction.id
    assert f"model said {status}" in str(info.value) and prediction.id in str(info.value) and FLUX in str(info.value)


def test_wait_timeout_says_the_prediction_may_still_finish(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.hold()  # still running at the timeout, however slow the machine
    prediction = client.submit(FLUX, {"prompt": "x"})
    with pytest.raises(WaveSpeedTimeoutError, match="may still finish"):
        client.wait_for_prediction(prediction.id, poll_interval=0.1, timeout=0.5)


def test_wrong_key_fails_once_naming_the_credentials_without_the_key(wavespeed_emulator: WaveSpeedEmulator) -> None:
    secret = "sk-this-is-a-wrong-secret-key-1234"
    client = WaveSpeedClient(secret, wavespeed_emulator.url, retry=FAST, credential_source="Airflow connection 'ws'")
    with pytest.raises(WaveSpeedAuthError) as info:
        client.get_balance()
    assert "Airflow connection 'ws'" in str(info.value) and "401" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(client)
    assert wavespeed_emulator.counters()["requests"]["balance"] == 1  # never retried


def test_bad_request_carries_the_api_message_and_is_not_retried(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    with pytest.raises(WaveSpeedBadRequestError) as info:
        client.submit(FLUX, {"prompt": "x", "num_images": 9})
    assert "num_images" in str(info.value)
    assert wavespeed_emulator.counters()["requests"]["submit"] == 1


def test_unknown_prediction_is_not_found(client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator) -> None:
    with pytest.raises(WaveSpeedNotFoundError):
        client.get_prediction("0" * 32)
    assert wavespeed_emulator.counters()["requests"]["result"] == 1


def test_bad_input_sends_nothing(client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator) -> None:
    for call in (
        lambda: client.submit("wavespeed-ai/../balance", {"prompt": "x"}),
        lambda: client.submit(FLUX, ["not", "a", "mapping"]),
        lambda: client.get_prediction("../../balance"),
        lambda: client.submit(FLUX, {"prompt": "x"}, webhook="http://example.com/hook"),
    ):
        with pytest.raises(WaveSpeedValidationError):
            call()
    assert wavespeed_emulator.counters()["total_requests"] == 0


def test_rate_limit_is_retried_after_retry_after(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.add_fault("balance", "rate_limit", times=2, retry_after=1)
    started = time.monotonic()
    assert client.get_balance() == pytest.approx(100.0)
    assert time.monotonic() - started >= 2.0  # two Retry-After: 1 waits, not the 0.05 s backoff
    assert wavespeed_emulator.counters()["requests"]["balance"] == 3


def test_rate_limit_gives_up_after_the_retry_budget(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.add_fault("balance", "rate_limit", times=None, retry_after=0)
    with pytest.raises(WaveSpeedRateLimitError):
        client.get_balance()
    assert wavespeed_emulator.counters()["requests"]["balance"] == FAST.rate_limit_retries + 1


@pytest.mark.parametrize("kind", ["http_error", "drop", "envelope_error"])
def test_reads_are_retried_through_server_errors_and_resets(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, kind: str
) -> None:
    prediction = client.submit(FLUX, {"prompt": "x"})
    wavespeed_emulator.add_fault("result", kind, times=2, status=503)
    assert client.get_prediction(prediction.id).id == prediction.id
    assert wavespeed_emulator.counters()["requests"]["result"] == 3


def test_server_errors_give_up_after_the_retry_budget(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.add_fault("balance", "http_error", times=None, status=502)
    with pytest.raises(WaveSpeedServerError) as info:
        client.get_balance()
    assert "502" in str(info.value) and "<html" in str(info.value).lower()  # a short excerpt of the HTML body
    assert wavespeed_emulator.counters()["requests"]["balance"] == FAST.max_retries + 1


@pytest.mark.parametrize(
    "kind", ["http_error", "drop", "drop_after_submit", "envelope_error", "html", "truncated", "wrong_types"]
)
def test_a_submit_that_may_have_reached_the_server_is_never_repeated(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, kind: str
) -> None:
    wavespeed_emulator.add_fault("submit", kind, times=1, status=500)
    with pytest.raises(WaveSpeedSubmitUncertainError) as info:
        client.submit(FLUX, {"prompt": "x"})
    assert "outcome is unknown" in str(info.value) and "billed" in str(info.value)
    assert wavespeed_emulator.counters()["requests"]["submit"] == 1


def test_submit_is_retried_after_429(client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.add_fault("submit", "rate_limit", times=2, retry_after=0)
    client.submit(FLUX, {"prompt": "x"})
    counters = wavespeed_emulator.counters()
    assert counters["requests"]["submit"] == 3 and counters["submissions"] == {FLUX: 1}


def test_a_submit_outlasts_more_429s_than_other_errors(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    # More 429s in a row than max_retries allows for other errors: a busy minute must not fail a
    # worker's submit (a deployment's workers each have their own budget, so they collide).
    wavespeed_emulator.add_fault("submit", "rate_limit", times=FAST.rate_limit_retries, retry_after=0)
    client.submit(FLUX, {"prompt": "x"})
    counters = wavespeed_emulator.counters()
    assert counters["requests"]["submit"] == FAST.rate_limit_retries + 1 > FAST.max_retries + 1
    assert counters["submissions"] == {FLUX: 1}


def test_repeated_429s_back_off_beyond_retry_after() -> None:
    policy = RetryPolicy()
    limited = WaveSpeedRateLimitError("slow down", status_code=429, retry_after=1.0)
    first = [policy.delay(1, limited) for _ in range(50)]
    later = [policy.delay(7, limited) for _ in range(50)]
    assert all(1.0 <= wait <= 1.25 for wait in first)  # the server's word first
    assert min(later) >= policy.backoff_max / 2  # then the backoff grows past it
    assert max(later) <= policy.backoff_max + 0.25


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_submit_is_retried_when_the_connection_was_never_established() -> None:
    port = _free_port()
    emulator = WaveSpeedEmulator(port=port, duration=0.2)
    # Nothing listens yet: the first attempts are refused; the server comes up during the backoff.
    timer = threading.Timer(0.3, emulator.start)
    timer.start()
    try:
        client = WaveSpeedClient(
            emulator.api_key,
            f"http://127.0.0.1:{port}",
            retry=RetryPolicy(max_retries=8, backoff_base=0.2, backoff_max=0.4),
        )
        assert client.submit(FLUX, {"prompt": "x"}).model == FLUX
        assert emulator.counters()["submissions"] == {FLUX: 1}
    finally:
        timer.join()
        emulator.stop()


def test_connection_refused_everywhere_is_a_transport_error_that_names_the_call() -> None:
    client = WaveSpeedClient(
        "k", f"http://127.0.0.1:{_free_port()}", retry=RetryPolicy(max_retries=1, backoff_base=0.01)
    )
    with pytest.raises(WaveSpeedTransportError) as info:
        client.submit(FLUX, {"prompt": "x"})
    assert info.value.connected is False and f"submit to {FLUX}" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("html", "not a JSON envelope"),
        ("truncated", "not a JSON envelope"),
        ("wrong_types", "malformed prediction"),
        ("missing_outputs", "'outputs' is missing"),
    ],
)
def test_garbage_bodies_give_a_clear_error_with_status_and_excerpt(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, kind: str, needle: str
) -> None:
    prediction = client.submit(FLUX, {"prompt": "x"})
    wavespeed_emulator.add_fault("result", kind, times=1)
    with pytest.raises(WaveSpeedResponseError) as info:
        client.get_prediction(prediction.id)
    assert needle in str(info.value) and "HTTP 200" in str(info.value)
    assert f"poll of prediction {prediction.id}" in str(info.value)  # which request got it
    assert len(str(info.value)) < 600
    assert wavespeed_emulator.counters()["requests"]["result"] == 1  # not retried


def test_upload_streams_a_file_and_returns_a_working_url(
    client: WaveSpeedClient, tmp_path: pytest.TempPathFactory
) -> None:
    path = tmp_path / "frame.png"  # type: ignore[operator]
    payload = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    path.write_bytes(payload)
    url = client.upload_media(path)
    assert requests.get(url, timeout=5).content == payload
    assert requests.get(client.upload_media(payload, filename="x.bin"), timeout=5).content == payload


def test_upload_of_a_missing_file_is_refused(client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator) -> None:
    with pytest.raises(WaveSpeedValidationError, match="no such file"):
        client.upload_media("/nonexistent/file.png")
    assert wavespeed_emulator.counters()["total_requests"] == 0


def test_balance_and_price(client: WaveSpeedClient) -> None:
    assert client.get_balance() == pytest.approx(100.0)
    assert client.get_price(FLUX, {"prompt": "x", "num_images": 2}) > 0


async def test_async_client_polls_to_completion_and_maps_errors(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.set_duration(0.2)
    async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=FAST) as client:
        created = await client.submit(FLUX, {"prompt": "x"})
        wavespeed_emulator.add_fault("result", "drop", times=1)
        wavespeed_emulator.add_fault("result", "rate_limit", times=1, retry_after=0)
        seen = await client.get_prediction(created.id)
        assert seen.id == created.id
        while not (seen := await client.get_prediction(created.id)).is_terminal:
            pass
        assert seen.is_success and await client.get_balance() > 0
        wavespeed_emulator.add_fault("submit", "drop_after_submit", times=1)
        with pytest.raises(WaveSpeedSubmitUncertainError):
            await client.submit(FLUX, {"prompt": "y"})
    async with AsyncWaveSpeedClient("wrong", wavespeed_emulator.url, retry=FAST) as bad:
        with pytest.raises(WaveSpeedAuthError):
            await bad.get_prediction(created.id)
    assert wavespeed_emulator.counters()["submissions"] == {FLUX: 2}


async def test_async_connection_refused_is_a_transport_error_that_names_the_call() -> None:
    async with AsyncWaveSpeedClient(
        "k", f"http://127.0.0.1:{_free_port()}", retry=RetryPolicy(max_retries=1, backoff_base=0.01)
    ) as client:
        with pytest.raises(WaveSpeedTransportError) as info:
            await client.submit(FLUX, {"prompt": "x"})
    assert info.value.connected is False and f"submit to {FLUX}" in str(info.value)


_KEY = SimpleNamespace(host="api.wavespeed.ai", port=443, ssl=True, is_ssl=True)  # what aiohttp's connector errors name
_INFO = aiohttp.RequestInfo(URL("http://proxy:3128"), "CONNECT", CIMultiDictProxy(CIMultiDict()), URL("http://proxy"))


@pytest.mark.parametrize(
    ("exc", "connected"),
    [
        # No connection to the API was ever made: the request certainly did not arrive.
        (aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "Connection refused")), False),
        (aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")), False),
        (aiohttp.ClientProxyConnectionError(_KEY, ConnectionRefusedError(111, "Connection refused")), False),
        (aiohttp.ClientConnectorSSLError(_KEY, ssl.SSLError(1, "handshake failure")), False),
        (aiohttp.ClientConnectorCertificateError(_KEY, ssl.SSLCertVerificationError(1, "bad cert")), False),
        (aiohttp.ConnectionTimeoutError("Connection timeout to host"), False),
        (aiohttp.ClientHttpProxyError(_INFO, (), status=407, message="Proxy Authentication Required"), False),
        (aiohttp.InvalidURL("http://"), False),
        # Sent, or maybe sent: the server may have acted on it.
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), True),
        (aiohttp.ServerTimeoutError("timeout"), True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), True),
        (aiohttp.ClientResponseError(_INFO, (), status=200, message="bad header"), True),
        (BadStatusLine("garbage"), True),
        (asyncio.TimeoutError(), True),
        (ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed"), True),
        (ConnectionResetError(104, "reset"), True),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_every_aiohttp_error_is_a_transport_error_that_says_whether_it_may_have_arrived(
    exc: BaseException, connected: bool
) -> None:
    error = aiohttp_transport_error(exc, "poll of prediction abc")
    assert isinstance(error, WaveSpeedTransportError)
    assert error.connected is connected
    assert str(error).startswith("WaveSpeed poll of prediction abc: network error (") and type(exc).__name__ in str(
        error
    )
