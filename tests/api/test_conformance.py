"""The client against the real API's behaviour (issue 10): statuses, failure codes, tolerant reading,
the two-step upload, and transport errors below the HTTP libraries' own types.

Everything runs against the emulator over loopback HTTP, except what no server produces on
demand: a scripted loopback server serves statuses the API may add later, and a client middleware
raises a raw ``ssl.SSLError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from hostile_http import self_signed
from scripted_api import ScriptedAPI

from airflow_provider_wavespeed.api import (
    AsyncWaveSpeedClient,
    Prediction,
    RetryPolicy,
    WaveSpeedClient,
    WaveSpeedPredictionFailedError,
    WaveSpeedResponseError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api._uploads import MB
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
FAST = RetryPolicy(max_retries=2, rate_limit_retries=2, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def client(wavespeed_emulator: WaveSpeedEmulator) -> WaveSpeedClient:
    wavespeed_emulator.set_duration(0.2)
    return WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=FAST)


# -- statuses and failure codes --------------------------------------------------------------


def test_a_deleted_prediction_ends_the_wait_and_says_it_was_deleted(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    wavespeed_emulator.hold(times=1)  # processing until we delete it, however slow the machine
    prediction = client.submit(FLUX, {"prompt": "x"})
    response = requests.delete(
        f"{wavespeed_emulator.url}/api/v3/predictions/{prediction.id}",
        headers={"Authorization": f"Bearer {wavespeed_emulator.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    with pytest.raises(WaveSpeedPredictionFailedError) as info:
        client.wait_for_prediction(prediction.id, poll_interval=0.1, timeout=600)
    assert info.value.status == "deleted"
    assert "was deleted" in str(info.value) and prediction.id in str(info.value)


@pytest.mark.parametrize(
    ("code", "needles", "server_side", "input_side"),
    [
        (1200, ("moderation", "change the prompt"), False, True),
        (1401, ("refused the input", "fix the inputs"), False, True),
        (5003, ("server-side", "retry later"), True, False),
    ],
)
def test_a_failure_code_is_kept_and_explained(
    client: WaveSpeedClient,
    wavespeed_emulator: WaveSpeedEmulator,
    code: int,
    needles: tuple[str, ...],
    server_side: bool,
    input_side: bool,
) -> None:
    wavespeed_emulator.set_outcome("failed", error="upstream said no", code=code)
    prediction = client.submit(FLUX, {"prompt": "x"})
    with pytest.raises(WaveSpeedPredictionFailedError) as info:
        client.wait_for_prediction(prediction.id, poll_interval=0.1, timeout=600)
    error = info.value
    assert error.code == code and error.status == "failed"
    assert error.is_server_failure is server_side and error.is_input_failure is input_side
    assert "upstream said no" in str(error) and f"code {code}" in str(error)
    for needle in needles:
        assert needle in str(error)
    read = client.get_prediction(prediction.id)
    assert read.code == code
    assert Prediction.from_dict(json.loads(json.dumps(read.to_dict()))) == read  # events/XCom keep it


@pytest.fixture
def future_api() -> Iterator[ScriptedAPI]:
    """Three polls answer a status from a newer API, then the prediction completes."""
    new = {"id": "abc123", "model": FLUX, "status": "queued_in_region", "outputs": None}
    done = {"id": "abc123", "model": FLUX, "status": "completed", "outputs": ["https://x/1.png"]}
    api = ScriptedAPI([new, new, new, done])
    yield api
    api.close()


def test_an_unknown_status_is_logged_once_and_the_wait_goes_on(
    future_api: ScriptedAPI, caplog: pytest.LogCaptureFixture
) -> None:
    client = WaveSpeedClient("k", future_api.url, retry=FAST)
    with caplog.at_level(logging.WARNING):
        done = client.wait_for_prediction("abc123", poll_interval=0.05, timeout=600)
    assert done.is_success and future_api.polls == 4
    warnings = [r.getMessage() for r in caplog.records if "queued_in_region" in r.getMessage()]
    assert len(warnings) == 1 and "abc123" in warnings[0] and "unknown" in warnings[0]


def test_the_trigger_logs_an_unknown_status_once_and_keeps_polling(
    future_api: ScriptedAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

    connection = {"conn_type": "wavespeed", "host": future_api.url, "password": "k"}
    monkeypatch.setenv("AIRFLOW_CONN_WS_FUTURE", json.dumps(connection))
    trigger = WaveSpeedTaskTrigger("abc123", "ws_future", poll_interval=0.05, first_poll_interval=0.01)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "completed" and future_api.polls == 4
    logged = capsys.readouterr().out  # the trigger logs through Airflow's structlog, to stdout
    assert logged.count("has status 'queued_in_region'") == 1


# -- the tolerant reader ----------------------------------------------------------------------

COMPLETED = {
    "id": "p1",
    "model": FLUX,
    "status": "completed",
    "outputs": ["https://example.com/a.png"],
    "error": "",
    "created_at": "2025-05-19T06:09:15.948268264Z",
    "timings": {"inference": 1234},
    "urls": {"get": "https://api.wavespeed.ai/api/v3/predictions/p1/result"},
    "has_nsfw_contents": [False],
}
ODD_VALUES = [None, "text", 7, True, [1, "x"], {"nested": {"deeper": [None]}}]
OPTIONAL = ["model", "error", "created_at", "timings", "urls", "has_nsfw_contents", "code"]


@pytest.mark.parametrize("name", OPTIONAL)
@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_an_optional_field_of_any_shape_never_fails_a_completed_prediction(name: str, value: object) -> None:
    prediction = Prediction.from_dict({**COMPLETED, name: value})
    assert prediction.is_success and prediction.outputs == COMPLETED["outputs"] and prediction.id == "p1"
    assert json.loads(json.dumps(prediction.to_dict()))  # still JSON-safe for events and XCom


@pytest.mark.parametrize("name", OPTIONAL)
def test_a_missing_optional_field_never_fails_a_completed_prediction(name: str) -> None:
    data = {k: v for k, v in COMPLETED.items() if k != name}
    assert Prediction.from_dict(data).is_success


def test_usable_parts_of_new_shapes_are_kept_and_new_keys_ignored() -> None:
    prediction = Prediction.from_dict(
        {
            **COMPLETED,
            "timings": {"inference": 12, "queue": None, "stages": {"a": 1}},
            "urls": {"get": "https://g", "stream": {"ws": "wss://x"}},
            "error": {"message": "structured", "type": "x"},
            "code": "5003",
            "brand_new_field": {"anything": [1, 2]},
        }
    )
    assert prediction.timings == {"inference": 12.0}
    assert prediction.urls == {"get": "https://g"}
    assert prediction.error == "structured" and prediction.code == 5003


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"id": None}, "'id'"),
        ({"id": 5}, "'id'"),
        ({"status": None}, "'status'"),
        ({"status": ["completed"]}, "'status'"),
        ({"outputs": None}, "'outputs' is missing"),
        ({"outputs": "https://a.png"}, "'outputs' is not a list"),
        ({"outputs": [1, 2]}, "'outputs' is not a list"),
    ],
)
def test_what_a_result_needs_is_still_checked(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(WaveSpeedResponseError, match=needle):
        Prediction.from_dict({**COMPLETED, **change}, context="poll of prediction p1")


def test_outputs_of_an_unfinished_prediction_are_not_read() -> None:
    prediction = Prediction.from_dict({**COMPLETED, "status": "processing", "outputs": "not yet"})
    assert prediction.outputs == [] and not prediction.is_terminal


# -- the two-step upload ----------------------------------------------------------------------


def test_upload_is_a_ticket_then_a_put_without_the_api_key(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, tmp_path: Any
) -> None:
    path = tmp_path / "frame.png"
    payload = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)
    path.write_bytes(payload)
    url = client.upload_media(path)
    assert requests.get(url, timeout=10).content == payload
    with path.open("rb") as stream:  # a file object: streamed from where it stands
        stream.seek(8)
        assert requests.get(client.upload_media(stream), timeout=10).content == payload[8:]
    counters = wavespeed_emulator.counters()
    assert counters["requests"].get("upload_ticket") == 2 and counters["requests"].get("upload_put") == 2
    assert counters["upload_put_with_authorization"] == 0  # the key never went to the pre-signed URL
    assert "upload" not in counters["requests"]  # not the older one-step flow


def test_a_failed_put_is_sent_again_from_the_start_of_the_file(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, tmp_path: Any
) -> None:
    path = tmp_path / "clip.mp4"
    payload = os.urandom(200_000)
    path.write_bytes(payload)
    wavespeed_emulator.add_fault("upload_put", "http_error", status=503, times=1)
    url = client.upload_media(path)
    assert requests.get(url, timeout=10).content == payload  # the whole file, not its unsent rest
    assert wavespeed_emulator.counters()["requests"]["upload_put"] == 2


def test_a_put_that_keeps_failing_names_the_storage_host_not_the_signed_url(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    from airflow_provider_wavespeed.api import WaveSpeedServerError

    wavespeed_emulator.add_fault("upload_put", "http_error", status=503, times=None)
    with pytest.raises(WaveSpeedServerError) as info:
        client.upload_media(b"abc", filename="a.png")
    assert "PUT to 127.0.0.1" in str(info.value) and "signature" not in str(info.value)
    assert wavespeed_emulator.counters()["requests"]["upload_put"] == FAST.max_retries + 1


def test_an_unseekable_stream_is_read_then_uploaded(client: WaveSpeedClient) -> None:
    read_end, write_end = os.pipe()
    payload = os.urandom(70_000)
    writer = threading.Thread(target=lambda: (os.write(write_end, payload), os.close(write_end)))
    writer.start()
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        url = client.upload_media(pipe, filename="clip.wav")
    writer.join()
    assert requests.get(url, timeout=10).content == payload


class _Huge(io.RawIOBase):
    """A seekable stream that claims ``size`` bytes without holding them."""

    def __init__(self, size: int) -> None:
        self.size, self.pos = size, 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos


@pytest.mark.parametrize(
    ("name", "size", "needle"),
    [
        ("big.png", 20 * MB + 1, "20 MB limit for image"),
        ("big.mp4", 100 * MB + 1, "100 MB limit for video"),
        ("big.mp3", 50 * MB + 1, "50 MB limit for audio"),
    ],
)
def test_files_over_the_size_limits_are_refused_before_any_request(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator, name: str, size: int, needle: str
) -> None:
    with pytest.raises(WaveSpeedValidationError, match=needle):
        client.upload_media(_Huge(size), filename=name)  # type: ignore[arg-type]
    assert wavespeed_emulator.counters()["total_requests"] == 0


def test_an_unseekable_stream_over_200_mb_is_refused(
    client: WaveSpeedClient, wavespeed_emulator: WaveSpeedEmulator
) -> None:
    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def tell(self) -> int:
            raise io.UnsupportedOperation("not seekable")

        def read(self, size: int = -1) -> bytes:
            return bytes(size if size >= 0 else MB)

    with pytest.raises(WaveSpeedValidationError, match="cannot seek and is over the 200 MB"):
        client.upload_media(Endless(), filename="stream.bin")  # type: ignore[arg-type]
    assert wavespeed_emulator.counters()["total_requests"] == 0


# -- transport errors below the HTTP libraries' own types --------------------------------------


@pytest.fixture
def garbage_tls_server() -> Iterator[str]:
    """A loopback server that answers a TLS handshake with bytes that are not TLS."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"\x16\x03\x01\x00\x05garbage-not-a-tls-record" * 4)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def _corrupt_after_the_request(raw: socket.socket, context: ssl.SSLContext) -> None:
    """Complete the TLS handshake, read the request, answer with a record whose MAC cannot verify."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    handshaken = False
    while True:
        try:
            if not handshaken:
                tls.do_handshake()
                handshaken = True
            tls.read(65536)  # the request (small: one record)
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                raw.sendall(outgoing.read())
            data = raw.recv(65536)
            if not data:
                return
            incoming.write(data)
    if outgoing.pending:
        raw.sendall(outgoing.read())
    raw.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))  # application data, garbled in transit
    raw.recv(1)  # until the client gives up on the connection


@pytest.fixture
def corrupting_tls_server(tmp_path: Any) -> Iterator[tuple[str, str]]:
    """(base URL, CA file) of a TLS server whose answers arrive corrupted, as seen behind nginx."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(10)

            def answer(conn: socket.socket = conn) -> None:
                with conn, contextlib.suppress(OSError):
                    _corrupt_after_the_request(conn, context)

            threading.Thread(target=answer, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", cert
    stop.set()
    thread.join()
    listener.close()


def test_a_corrupted_tls_record_is_a_transport_error_that_may_have_arrived(
    corrupting_tls_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_wavespeed.api import WaveSpeedSubmitUncertainError

    url, ca_file = corrupting_tls_server
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the async client trusts what the environment names

    async def call(submit: bool) -> None:
        async with AsyncWaveSpeedClient("k", url, retry=FAST) as client:
            await (client.submit(FLUX, {"prompt": "x"}) if submit else client.get_prediction("abc"))

    with pytest.raises(WaveSpeedTransportError) as info:
        asyncio.run(call(submit=False))
    assert info.value.connected is True and "SSL" in str(info.value)
    with pytest.raises(WaveSpeedSubmitUncertainError):  # the request went out: it may have created one
        asyncio.run(call(submit=True))

    # requests lets REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) from the environment override a session's
    # verify: point it at the CA too, or the handshake fails first (a certificate error, never sent).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = requests.Session()
    session.verify = ca_file
    with pytest.raises(WaveSpeedTransportError) as sync_info:
        WaveSpeedClient("k", url, retry=FAST, session=session).get_prediction("abc")
    assert sync_info.value.connected is True


def test_the_trigger_rides_out_corrupted_tls_records_until_its_deadline(
    corrupting_tls_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

    url, ca_file = corrupting_tls_server
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the shared client trusts what the environment names
    monkeypatch.setenv("AIRFLOW_CONN_WS_CORRUPT", json.dumps({"conn_type": "wavespeed", "host": url, "password": "k"}))
    trigger = WaveSpeedTaskTrigger(
        "abc", "ws_corrupt", poll_interval=0.2, first_poll_interval=0.05, end_time=time.time() + 2.0
    )

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())  # no exception escapes: one event, the wait's own deadline
    assert event["status"] == "deadline"


def test_garbage_tls_is_a_transport_error_in_both_clients(garbage_tls_server: str) -> None:
    with pytest.raises(WaveSpeedTransportError, match="network error"):
        WaveSpeedClient("k", garbage_tls_server, retry=FAST).get_prediction("abc")

    async def poll() -> None:
        async with AsyncWaveSpeedClient("k", garbage_tls_server, retry=FAST) as client:
            await client.get_prediction("abc")

    with pytest.raises(WaveSpeedTransportError, match="network error"):
        asyncio.run(poll())


def test_the_trigger_rides_out_garbage_tls_until_its_deadline(
    garbage_tls_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

    connection = {"conn_type": "wavespeed", "host": garbage_tls_server, "password": "k"}
    monkeypatch.setenv("AIRFLOW_CONN_WS_GARBLED", json.dumps(connection))
    trigger = WaveSpeedTaskTrigger(
        "abc", "ws_garbled", poll_interval=0.2, first_poll_interval=0.05, end_time=time.time() + 2.0
    )

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())  # no exception escapes: one event, the wait's own deadline
    assert event["status"] == "deadline"


async def _corrupted(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    raise ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed or bad record mac")


def test_a_raw_ssl_error_mid_answer_is_a_transport_error_that_may_have_arrived() -> None:
    # A corrupted TLS record after the request went out can reach the HTTP library as a raw
    # ssl.SSLError (seen against nginx); nothing local produces it on demand, so a client
    # middleware (where the request is sent) raises it.
    async def submit() -> None:
        async with aiohttp.ClientSession(middlewares=(_corrupted,)) as session:
            client = AsyncWaveSpeedClient("k", "https://api.wavespeed.ai", retry=FAST, session=session)
            await client.submit(FLUX, {"prompt": "x"})

    from airflow_provider_wavespeed.api import WaveSpeedSubmitUncertainError

    with pytest.raises(WaveSpeedSubmitUncertainError, match="SSLError"):  # connected: may have created it
        asyncio.run(submit())

    async def poll() -> None:
        async with aiohttp.ClientSession(middlewares=(_corrupted,)) as session:
            client = AsyncWaveSpeedClient("k", "https://api.wavespeed.ai", retry=FAST, session=session)
            await client.get_prediction("abc")

    with pytest.raises(WaveSpeedTransportError) as info:
        asyncio.run(poll())
    assert info.value.connected is True and "SSLError" in str(info.value)


def test_a_raw_ssl_error_in_the_sync_client_is_a_transport_error() -> None:
    class Corrupted(requests.adapters.HTTPAdapter):
        def send(self, *args: object, **kwargs: object) -> requests.Response:
            raise ssl.SSLError(1, "[SSL: BAD_RECORD_MAC] bad record mac")

    session = requests.Session()
    session.mount("https://", Corrupted())
    client = WaveSpeedClient("k", "https://api.wavespeed.ai", retry=FAST, session=session)
    with pytest.raises(WaveSpeedTransportError) as info:
        client.get_prediction("abc")
    assert info.value.connected is True and "SSLError" in str(info.value)
