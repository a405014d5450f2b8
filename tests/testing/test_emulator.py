"""The WaveSpeed emulator, exercised over real loopback HTTP as a client sees it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess, WaveSpeedEmulator
from airflow_provider_wavespeed.testing._control_api import CONTROL_METHODS
from airflow_provider_wavespeed.testing._state import EmulatorState

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_DURATION = 0.3  # the module's emulator (conftest.py)
# The tests' own model ids beyond the catalog, registered for the module's emulator (conftest.py).
EMULATOR_MODELS = {
    "acme/any-image": "text-to-image",
    "acme/model": "text-to-image",
    "acme/pricey": "text-to-image",
    "someone/else": "text-to-image",
    "someone/new-model/v2/fast": "text-to-image",
}


# -- fixtures and helpers -----------------------------------------------------------------


class Api:
    """A tiny authenticated client, so tests read like API calls."""

    def __init__(self, emulator: WaveSpeedEmulator) -> None:
        self.base = emulator.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emulator.api_key}"

    def submit(self, model: str, inputs: dict[str, Any], **kwargs: Any) -> requests.Response:
        return self.session.post(f"{self.base}/api/v3/{model}", json=inputs, **kwargs)

    def result(self, prediction_id: str) -> requests.Response:
        return self.session.get(f"{self.base}/api/v3/predictions/{prediction_id}/result")

    def create(self, model: str = FLUX, inputs: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        response = self.submit(model, {"prompt": "a cat"} if inputs is None else inputs, **kwargs)
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def wait(self, prediction_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = dict(self.result(prediction_id).json()["data"])
            if data["status"] not in ("created", "processing"):
                return data
            time.sleep(0.05)
        raise AssertionError(f"{prediction_id} did not finish in {timeout}s")


@pytest.fixture
def api(emulator: WaveSpeedEmulator) -> Api:
    return Api(emulator)


def assert_envelope_error(response: requests.Response, status: int, text: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["code"] == status
    assert text.lower() in body["message"].lower()


# -- auth and submission --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/api/v3/{FLUX}"),
        ("GET", "/api/v3/predictions/0123/result"),
        ("GET", "/api/v3/balance"),
        ("POST", "/api/v3/model/pricing"),
        ("POST", "/api/v3/media/upload/binary"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic d2F2ZXNwZWVk"])
def test_every_api_route_needs_the_bearer_key(
    emulator: WaveSpeedEmulator, method: str, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = requests.request(method, emulator.url + path, headers=headers, json={"prompt": "x"})
    assert_envelope_error(response, 401, "Invalid API key")
    assert emulator.api_key not in response.text
    assert emulator.submissions() == []


@pytest.mark.parametrize("model", [FLUX, WAN_T2V, "bytedance/seedream-v4/edit", "someone/new-model/v2/fast"])
def test_submit_accepts_model_ids_of_any_depth(api: Api, model: str) -> None:
    inputs = {"prompt": "a lighthouse", "images": ["https://example.com/a.png"], "extra": [1, 2]}
    response = api.submit(model, inputs)
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["message"]) == (200, "success")
    data = body["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["model"] == model
    assert data["status"] == "created"
    assert data["outputs"] == [] and data["has_nsfw_contents"] == []
    assert data["urls"]["get"] == f"{api.base}/api/v3/predictions/{data['id']}/result"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", data["created_at"])
    assert data["error"] == "" and data["timings"] == {"inference": 0}


def test_status_is_a_function_of_the_clock() -> None:
    state = EmulatorState(api_key="k", duration=1.0, balance=100.0, webhook_secret="whsec_x")
    prediction = state.submit(FLUX, {"prompt": "x"}, None)
    assert prediction.processing_at - prediction.submitted_at == pytest.approx(0.1)  # 10 % of a short duration
    times = [prediction.submitted_at, prediction.processing_at, prediction.completes_at - 1e-3, prediction.completes_at]
    assert [prediction.status(at) for at in times] == ["created", "processing", "processing", "completed"]
    state.close()


def test_prediction_moves_created_processing_completed_with_downloadable_outputs(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    emulator.set_duration(1.0)
    prediction = api.create(FLUX, {"prompt": "two cats", "num_images": 2, "output_format": "png"})
    assert prediction["status"] == "created"  # the submit answer describes the task as it was created
    # Every status a poll sees is the one the clock gave while the poll was on its way.
    state = emulator.prediction_state(prediction["id"])
    seen = []
    while not seen or seen[-1] != "completed":
        before = time.time()
        status = api.result(prediction["id"]).json()["data"]["status"]
        after = time.time()
        expected = {"created", "processing", "completed"}
        if after < state["processing_at"]:
            expected = {"created"}
        elif before >= state["completes_at"]:
            expected = {"completed"}
        elif before >= state["processing_at"] and after < state["completes_at"]:
            expected = {"processing"}
        assert status in expected, (status, before, after, state)
        seen.append(status)
        time.sleep(0.05)
    assert seen == sorted(seen, key=["created", "processing", "completed"].index)  # never backwards
    done = api.wait(prediction["id"])
    assert done["status"] == "completed"
    assert len(done["outputs"]) == 2 and done["has_nsfw_contents"] == [False, False]
    assert done["timings"]["inference"] == 1000
    # The other documented read route answers the same object.
    same = api.session.get(f"{api.base}/api/v3/predictions/{prediction['id']}").json()["data"]
    assert same["outputs"] == done["outputs"]
    for url in done["outputs"]:
        assert url.startswith(f"{api.base}/_emulator/files/") and url.endswith(".png")
        download = requests.get(url)  # public, like a CDN URL: no key
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/png"
        assert download.content.startswith(PNG_SIGNATURE)
    state = emulator.prediction_state(prediction["id"])
    assert state["completes_at"] - state["submitted_at"] == pytest.approx(1.0)
    assert state["polls"] >= 2


def test_jpeg_and_video_outputs_have_real_headers(api: Api) -> None:
    image = api.wait(api.create(FLUX, {"prompt": "x"})["id"])  # flux-dev defaults to jpeg
    jpeg = requests.get(image["outputs"][0])
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content[:2] == b"\xff\xd8" and jpeg.content[-2:] == b"\xff\xd9"
    video = api.wait(api.create(WAN_T2V, {"prompt": "waves", "duration": 5})["id"])
    assert len(video["outputs"]) == 1 and video["outputs"][0].endswith(".mp4")
    mp4 = requests.get(video["outputs"][0])
    assert mp4.headers["content-type"] == "video/mp4"
    assert mp4.content[4:8] == b"ftyp"


def test_base64_outputs_decode_to_the_file_bytes(api: Api) -> None:
    prediction = api.create("acme/any-image", {"prompt": "x", "enable_base64_output": True})
    done = api.wait(prediction["id"])
    assert len(done["outputs"]) == 1
    assert not done["outputs"][0].startswith("data:")
    assert base64.b64decode(done["outputs"][0], validate=True).startswith(PNG_SIGNATURE)


def test_sync_mode_answers_when_done(emulator: WaveSpeedEmulator, api: Api) -> None:
    data = api.create("acme/model", {"prompt": "x", "enable_sync_mode": True})
    assert data["status"] == "completed" and len(data["outputs"]) == 1


@pytest.mark.parametrize(
    ("model", "inputs", "field"),
    [
        (FLUX, {}, "prompt"),
        (FLUX, {"prompt": "x", "size": "256*256"}, "size"),
        (FLUX, {"prompt": "x", "size": "1024x1024"}, "size"),
        (FLUX, {"prompt": "x", "num_inference_steps": 51}, "num_inference_steps"),
        (FLUX, {"prompt": "x", "num_images": 5}, "num_images"),
        (FLUX, {"prompt": "x", "num_images": True}, "num_images"),
        (FLUX, {"prompt": "x", "output_format": "gif"}, "output_format"),
        (WAN_T2V, {"prompt": "x", "size": "1280*720"}, "size"),
        (WAN_T2V, {"prompt": "x", "duration": 7}, "duration"),
        (WAN_I2V, {"prompt": "x"}, "image"),
    ],
)
def test_invalid_inputs_answer_400_naming_the_field(
    emulator: WaveSpeedEmulator, api: Api, model: str, inputs: dict[str, Any], field: str
) -> None:
    response = api.submit(model, inputs)
    assert_envelope_error(response, 400, field)
    assert emulator.submissions() == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b""])
def test_submit_body_must_be_a_json_object(api: Api, body: bytes) -> None:
    response = api.session.post(f"{api.base}/api/v3/{FLUX}", data=body)
    assert_envelope_error(response, 400, "JSON object")


def test_base64_output_with_webhook_and_bad_model_ids_are_rejected(api: Api) -> None:
    inputs = {"prompt": "x", "enable_base64_output": True}
    response = api.submit(FLUX, inputs, params={"webhook": "http://127.0.0.1:9/hook"})
    assert_envelope_error(response, 400, "enable_base64_output")
    assert_envelope_error(api.submit("bad model/x!", {"prompt": "x"}), 400, "model id")


def test_unknown_prediction_and_route_are_404_envelopes(api: Api) -> None:
    assert_envelope_error(api.result("f" * 32), 404, "not found")
    assert_envelope_error(api.session.get(f"{api.base}/api/v3/predictions/{'f' * 32}"), 404, "not found")
    assert_envelope_error(api.session.post(f"{api.base}/api/v3/predictions/x/result", json={}), 404, "not found")
    assert_envelope_error(api.session.get(f"{api.base}/api/v2/anything"), 404, "not found")
    assert api.session.get(f"{api.base}/api/v3/{FLUX}").json()["code"] == 405


def test_submissions_are_charged_until_the_balance_runs_out(emulator: WaveSpeedEmulator, api: Api) -> None:
    api.create(FLUX, {"prompt": "x", "num_images": 2})
    assert api.session.get(f"{api.base}/api/v3/balance").json()["data"]["balance"] == pytest.approx(99.994)
    emulator.set_balance(0.005)
    assert_envelope_error(api.submit(FLUX, {"prompt": "x", "num_images": 2}), 403, "Insufficient balance")
    assert len(emulator.submissions()) == 1


# -- faults -----------------------------------------------------------------------------------


def test_http_error_faults_use_html_for_5xx_and_envelopes_for_4xx(emulator: WaveSpeedEmulator, api: Api) -> None:
    prediction = api.create()
    emulator.add_fault("result", "http_error", status=502)
    gateway = api.result(prediction["id"])
    assert gateway.status_code == 502
    assert gateway.headers["content-type"].startswith("text/html") and "<html>" in gateway.text
    emulator.add_fault("result", "http_error", status=400)
    assert_envelope_error(api.result(prediction["id"]), 400, "bad request")
    assert api.result(prediction["id"]).status_code == 200  # each fault was used once


def test_rate_limit_fault_sends_retry_after(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.add_fault("balance", "rate_limit", retry_after=3)
    response = api.session.get(f"{api.base}/api/v3/balance")
    assert_envelope_error(response, 429, "rate limit")
    assert response.headers["Retry-After"] == "3"


def test_body_faults_break_parsing_as_a_client_sees_it(emulator: WaveSpeedEmulator, api: Api) -> None:
    prediction_id = api.create()["id"]
    api.wait(prediction_id)
    emulator.add_fault("result", "html")
    html = api.result(prediction_id)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        html.json()
    emulator.add_fault("result", "truncated")
    truncated = api.result(prediction_id)
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        json.loads(truncated.content)
    emulator.add_fault("result", "wrong_types")
    wrong = api.result(prediction_id).json()["data"]
    assert wrong["status"] == 123 and wrong["outputs"] == "x"
    emulator.add_fault("result", "missing_outputs")
    missing = api.result(prediction_id).json()["data"]
    assert missing["status"] == "completed" and missing["id"] == prediction_id and "outputs" not in missing
    emulator.add_fault("result", "envelope_error")
    assert api.result(prediction_id).json() == {"code": 500, "message": "internal error", "data": None}
    assert len(api.result(prediction_id).json()["data"]["outputs"]) == 1


@pytest.fixture(params=["h11", "httptools"])
def protocol_emulator(request: pytest.FixtureRequest) -> Iterator[WaveSpeedEmulator]:
    """How a connection is dropped depends on the uvicorn protocol, so check both."""
    pytest.importorskip(request.param)
    with WaveSpeedEmulator(duration=0.2, http=request.param) as emulator:
        yield emulator


def test_drop_closes_the_connection_without_a_response(protocol_emulator: WaveSpeedEmulator) -> None:
    emulator, api = protocol_emulator, Api(protocol_emulator)
    prediction_id = api.create()["id"]
    emulator.add_fault("result", "drop", times=2)
    with pytest.raises(requests.ConnectionError):
        api.result(prediction_id)
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    with pytest.raises(httpx.TransportError):  # RemoteProtocolError: disconnected without a response
        httpx.get(f"{emulator.url}/api/v3/predictions/{prediction_id}/result", headers=headers)
    assert api.result(prediction_id).status_code == 200  # the server carries on
    assert emulator.counters()["responses"] == {"200": 2, "0": 2}

    emulator.add_fault("submit", "drop")
    with pytest.raises(requests.ConnectionError):
        api.submit(FLUX, {"prompt": "x"})
    assert len(emulator.submissions()) == 1  # dropped before the prediction existed


def test_drop_after_submit_loses_the_response_of_a_created_prediction(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.add_fault("submit", "drop_after_submit")
    with pytest.raises(requests.ConnectionError):
        api.submit(FLUX, {"prompt": "lost"})
    (submission,) = emulator.submissions()
    assert submission["inputs"] == {"prompt": "lost"}
    assert emulator.counters()["submissions"] == {FLUX: 1}
    assert api.wait(submission["id"])["status"] == "completed"


def test_slow_fault_delays_then_answers(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.add_fault("balance", "slow", delay=0.5)
    started = time.monotonic()
    response = api.session.get(f"{api.base}/api/v3/balance")
    assert response.status_code == 200 and time.monotonic() - started >= 0.5


def test_fault_times_model_filter_and_removal(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.add_fault("submit", "http_error", status=503, times=2, model=WAN_T2V)
    assert api.submit(FLUX, {"prompt": "x"}).status_code == 200  # other model: untouched
    assert [api.submit(WAN_T2V, {"prompt": "x"}).status_code for _ in range(3)] == [503, 503, 200]
    forever = emulator.add_fault("any", "http_error", status=500, times=None)
    assert [api.session.get(f"{api.base}/api/v3/balance").status_code for _ in range(3)] == [500] * 3
    assert emulator.remove_fault(forever) is True
    assert api.session.get(f"{api.base}/api/v3/balance").status_code == 200
    assert emulator.remove_fault(forever) is False
    with pytest.raises(ValueError):
        emulator.add_fault("result", "drop_after_submit")


# -- outcomes, durations, limits, keys ---------------------------------------------------------


def test_outcomes_fail_matching_predictions(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_outcome("failed", error="CUDA out of memory", prompt_contains="huge", times=1)
    emulator.set_outcome("timeout", model=WAN_T2V)
    failed = api.wait(api.create(FLUX, {"prompt": "a huge poster"})["id"])
    assert (failed["status"], failed["error"], failed["outputs"]) == ("failed", "CUDA out of memory", [])
    assert api.wait(api.create(FLUX, {"prompt": "a huge poster"})["id"])["status"] == "completed"  # times=1 used
    timed_out = api.wait(api.create(WAN_T2V, {"prompt": "x"})["id"])
    assert timed_out["status"] == "timeout" and timed_out["error"]


def test_duration_ranges_and_per_model_overrides(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_duration((0.5, 0.8))
    emulator.set_duration(3.0, model=WAN_T2V)
    for _ in range(5):
        state = emulator.prediction_state(api.create()["id"])
        assert 0.5 <= state["completes_at"] - state["submitted_at"] <= 0.8
    video = emulator.prediction_state(api.create(WAN_T2V, {"prompt": "x"})["id"])
    assert video["completes_at"] - video["submitted_at"] == pytest.approx(3.0)


def test_global_rate_limit_answers_429_with_retry_after(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_rate_limit(2)
    started = time.monotonic()
    responses = [api.session.get(f"{api.base}/api/v3/balance") for _ in range(20)]
    elapsed = time.monotonic() - started
    limited = [response for response in responses if response.status_code == 429]
    # A burst of 2, then 2 more per second while looping (only a loop slower than 9 s escapes a 429).
    assert len(limited) >= 1 and 20 - len(limited) <= 2 + 2 * elapsed + 1
    assert all(int(response.headers["Retry-After"]) >= 1 for response in limited)
    assert emulator.counters()["responses"]["429"] == len(limited)
    emulator.set_rate_limit(None)
    assert api.session.get(f"{api.base}/api/v3/balance").status_code == 200


def test_revoked_key_gets_401_and_reset_restores_it(emulator: WaveSpeedEmulator, api: Api) -> None:
    original = emulator.api_key
    emulator.set_api_key("rotated-key")
    assert_envelope_error(api.session.get(f"{api.base}/api/v3/balance"), 401, "Invalid API key")
    fresh = requests.get(f"{api.base}/api/v3/balance", headers={"Authorization": "Bearer rotated-key"})
    assert fresh.status_code == 200
    emulator.reset()
    assert emulator.api_key == original
    assert api.session.get(f"{api.base}/api/v3/balance").status_code == 200


def test_counters_request_log_and_submissions(emulator: WaveSpeedEmulator, api: Api) -> None:
    started = time.time()
    prediction_id = api.create()["id"]
    api.result(prediction_id)
    api.result("0" * 32)
    requests.get(f"{api.base}/api/v3/balance")
    counters = emulator.counters()
    assert counters["requests"] == {"submit": 1, "result": 2, "balance": 1}
    assert counters["responses"] == {"200": 2, "404": 1, "401": 1}
    assert counters["submissions"] == {FLUX: 1}
    assert counters["total_requests"] == 4
    log = emulator.request_log(since=started)
    assert [entry[1:] for entry in log] == [["submit", 200], ["result", 200], ["result", 404], ["balance", 401]]
    assert all(started <= entry[0] <= time.time() for entry in log)
    assert emulator.request_log(since=time.time() + 1) == []
    (submission,) = emulator.submissions()
    assert submission["id"] == prediction_id and started <= submission["submitted_at"] <= time.time()
    with pytest.raises(KeyError):
        emulator.prediction_state("missing")


def test_api_key_never_reaches_logs(emulator: WaveSpeedEmulator, api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.add_fault("result", "drop")
    prediction_id = api.create()["id"]
    with pytest.raises(requests.ConnectionError):
        api.result(prediction_id)
    requests.get(f"{api.base}/api/v3/balance", headers={"Authorization": "Bearer not-the-key"})
    assert emulator.api_key not in caplog.text
    assert "not-the-key" not in caplog.text
    assert not [record for record in caplog.records if record.name.startswith("uvicorn")]


# -- other endpoints ---------------------------------------------------------------------------


def test_upload_round_trip_keeps_binary_bytes(emulator: WaveSpeedEmulator, api: Api) -> None:
    content = bytes(range(256)) * 8 + b"\r\n--not-a-boundary\r\n\r\n" + PNG_SIGNATURE
    response = api.session.post(
        f"{api.base}/api/v3/media/upload/binary", files={"file": ("my photo.png", content, "image/png")}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["type"] == "image" and data["size"] == len(content) and data["filename"] == "my_photo.png"
    download = requests.get(data["download_url"])
    assert download.status_code == 200 and download.content == content
    missing = api.session.post(f"{api.base}/api/v3/media/upload/binary", files={"other": ("a.txt", b"x")})
    assert_envelope_error(missing, 400, "file")
    not_multipart = api.session.post(f"{api.base}/api/v3/media/upload/binary", json={"file": "x"})
    assert_envelope_error(not_multipart, 400, "multipart")
    headers = {"Content-Type": "multipart/form-data"}  # no boundary
    assert_envelope_error(api.session.post(f"{api.base}/api/v3/upload", data=b"x", headers=headers), 400, "boundary")
    assert emulator.counters()["requests"]["upload"] == 4


@pytest.mark.parametrize(
    ("model_id", "inputs", "price"),
    [
        (FLUX, {"num_images": 3}, 0.009),
        (FLUX, {}, 0.003),
        (WAN_T2V, {"duration": 10}, 0.6),
        (WAN_I2V, {}, 0.3),
        ("someone/else", {}, 0.01),
    ],
)
def test_pricing(api: Api, model_id: str, inputs: dict[str, Any], price: float) -> None:
    response = api.session.post(f"{api.base}/api/v3/model/pricing", json={"model_id": model_id, "inputs": inputs})
    assert response.json()["data"] == {"model_id": model_id, "unit_price": pytest.approx(price), "currency": "USD"}


def test_price_override_and_pricing_validation(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_price(1.5, model="acme/pricey")
    priced = api.session.post(f"{api.base}/api/v3/model/pricing", json={"model_id": "acme/pricey"})
    assert priced.json()["data"]["unit_price"] == 1.5
    api.create("acme/pricey")
    assert api.session.get(f"{api.base}/api/v3/balance").json()["data"]["balance"] == pytest.approx(98.5)
    assert_envelope_error(api.session.post(f"{api.base}/api/v3/model/pricing", json={}), 400, "model_id")


def test_history_and_delete(api: Api) -> None:
    ids = [api.create(FLUX)["id"], api.create(FLUX)["id"], api.create(WAN_T2V, {"prompt": "x"})["id"]]
    page = api.session.post(f"{api.base}/api/v3/predictions", json={"page": 1, "page_size": 2}).json()["data"]
    assert page["total"] == 3 and [item["id"] for item in page["items"]] == ids[::-1][:2]
    flux = api.session.post(f"{api.base}/api/v3/predictions", json={"page": 1, "page_size": 10, "model": FLUX})
    assert sorted(item["id"] for item in flux.json()["data"]["items"]) == sorted(ids[:2])
    too_big = api.session.post(f"{api.base}/api/v3/predictions", json={"page": 1, "page_size": 101})
    assert_envelope_error(too_big, 400, "page_size")
    deleted = api.session.post(f"{api.base}/api/v3/predictions/delete", json={"ids": [*ids[:2], "f" * 32]})
    assert deleted.json()["data"] == {"deleted_count": 2}
    # A deleted prediction still answers, with the terminal status `deleted` (as the official SDK expects).
    assert api.result(ids[0]).json()["data"]["status"] == "deleted"
    assert api.result(ids[2]).json()["data"]["status"] != "deleted"
    remaining = api.session.post(f"{api.base}/api/v3/predictions", json={"page": 1, "page_size": 10}).json()["data"]
    assert [item["id"] for item in remaining["items"]] == [ids[2]]


def test_models_lists_the_representative_models(api: Api) -> None:
    models = api.session.get(f"{api.base}/api/v3/models").json()["data"]
    by_id = {model["model_id"]: model for model in models}
    assert {FLUX, WAN_T2V, WAN_I2V} <= set(by_id)
    assert "prompt" in by_id[FLUX]["inputs"] and by_id[WAN_I2V]["required"] == ["prompt", "image"]


# -- webhooks -----------------------------------------------------------------------------------


def test_webhook_is_signed_and_carries_the_bare_prediction(
    emulator: WaveSpeedEmulator, api: Api, webhook_receiver: tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook_receiver
    emulator.set_webhook_secret("whsec_c2VjcmV0LXRlc3Q=")
    emulator.set_outcome("failed", error="nsfw", prompt_contains="bad")
    completed = api.create(FLUX, {"prompt": "good"}, params={"webhook": url})
    failed = api.create(FLUX, {"prompt": "bad"}, params={"webhook": url})
    api.create(FLUX, {"prompt": "no hook"})
    deliveries = [received.get(timeout=60), received.get(timeout=60)]
    by_id = {}
    for headers, body in deliveries:
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = hmac.new(b"c2VjcmV0LXRlc3Q=", signed, hashlib.sha256).hexdigest()
        assert headers["webhook-signature"] == f"v3,{expected}"
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
        payload = json.loads(body)
        assert "data" not in payload and "message" not in payload  # no envelope
        by_id[payload["id"]] = payload
    assert by_id[completed["id"]]["status"] == "completed" and by_id[completed["id"]]["outputs"]
    assert by_id[failed["id"]]["status"] == "failed" and by_id[failed["id"]]["error"] == "nsfw"
    assert by_id[failed["id"]]["code"] == 1403 and "code" not in by_id[completed["id"]]  # the failure class
    time.sleep(0.5)
    assert received.empty()
    assert emulator.counters()["webhooks"] == {"sent": 2, "failed": 0}


def test_an_undelivered_webhook_is_counted_as_failed(emulator: WaveSpeedEmulator, api: Api) -> None:
    with socket.socket() as closed:  # a port nothing listens on once this socket is closed
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    api.create(FLUX, {"prompt": "x"}, params={"webhook": url})
    deadline = time.monotonic() + 60  # a bound for a stuck delivery, not a speed assumption
    while emulator.counters()["webhooks"] == {"sent": 0, "failed": 0} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.counters()["webhooks"] == {"sent": 0, "failed": 1}


# -- out-of-process control ---------------------------------------------------------------------


def test_control_methods_are_the_states_everywhere(emulator: WaveSpeedEmulator) -> None:
    assert {"reset", "add_fault", "hold", "release", "set_tier", "counters", "request_log"} <= CONTROL_METHODS
    for name in CONTROL_METHODS:
        operation = getattr(EmulatorState, name)
        for holder in (emulator, EmulatorControl(emulator.url)):
            method = getattr(holder, name)
            assert method.__name__ == name and method.__doc__ == operation.__doc__, name
            expected = list(inspect.signature(operation).parameters.values())[1:]
            assert list(inspect.signature(method).parameters.values()) == expected, name
    # A wrong call fails before it is sent, as a local one would.
    with pytest.raises(TypeError):
        EmulatorControl(emulator.url).add_fault("result", "drop", bogus=1)  # type: ignore[call-arg]
    # The HTTP endpoint accepts the declared operations only, not the rest of the state.
    for name in ("submit", "record", "close", "_reset_locked", "nothing"):
        response = requests.post(f"{emulator.url}/_emulator/control/{name}", json={})
        assert response.status_code == 404 and response.json()["error"]["type"] == "AttributeError"


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WS_TEST_KEY": "process-secret-key"}
    command = [sys.executable, "-m", "airflow_provider_wavespeed.testing", "--port", "0"]
    command += ["--api-key-env", "WS_TEST_KEY", "--duration", "0.2", "--duration-max", "0.3"]
    command += ["--model", "acme/model", "--quiet"]  # the scale test's id; no request lines (stderr is read at the end)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    # A key from the environment may be the user's own: the line does not show it.
    match = re.fullmatch(
        r"WaveSpeed emulator listening on (http://127\.0\.0\.1:\d+) \(API key: the one you gave\)\n", line
    )
    assert match, line
    yield process, match.group(1)
    if process.poll() is None:
        process.kill()
        process.wait()


def test_emulator_control_drives_a_cli_subprocess(emulator_process: tuple[subprocess.Popen[str], str]) -> None:
    process, url = emulator_process
    control = EmulatorControl(url)
    assert control.health()
    session = requests.Session()
    session.headers["Authorization"] = "Bearer process-secret-key"
    submitted = session.post(f"{url}/api/v3/{FLUX}", json={"prompt": "x"}).json()["data"]
    control.add_fault("result", "http_error", status=502)
    assert session.get(f"{url}/api/v3/predictions/{submitted['id']}/result").status_code == 502
    control.set_outcome("cancelled", model=WAN_T2V)
    state = control.prediction_state(submitted["id"])
    assert 0.2 <= state["completes_at"] - state["submitted_at"] <= 0.3
    assert control.submissions()[0]["id"] == submitted["id"]
    assert control.counters()["responses"] == {"200": 1, "502": 1}
    assert [entry[1:] for entry in control.request_log()] == [["submit", 200], ["result", 502]]
    with pytest.raises(KeyError):
        control.prediction_state("nope")
    with pytest.raises(ValueError):
        control.add_fault("nowhere", "drop")
    control.set_duration((0.1, 0.2))
    control.set_api_key("rotated")
    assert session.get(f"{url}/api/v3/balance").status_code == 401
    control.reset()
    assert control.counters()["total_requests"] == 0 and control.submissions() == []
    assert session.get(f"{url}/api/v3/balance").json()["data"]["balance"] == 100.0

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "process-secret-key" not in stdout + stderr


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "airflow_provider_wavespeed.testing", *args]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_a_port_in_use_is_one_line_naming_the_port_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stdout, stderr = _cli("--port", str(port)).communicate(timeout=60)
    assert stdout == ""
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert f"port {port} on 127.0.0.1 is already in use" in stderr and "--port" in stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_start_line_shows_its_own_key_and_each_request_is_one_line(quiet: bool) -> None:
    # A user's real key in the environment is neither the emulator's key nor ever printed.
    process = _cli(
        "--port", "0", "--duration", "0", *(["--quiet"] if quiet else []), env={"WAVESPEED_API_KEY": "user-real-key"}
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.fullmatch(r"WaveSpeed emulator listening on (http://127\.0\.0\.1:\d+) \(API key: (\S+)\)\n", line)
    assert match and match.group(2) == "wavespeed-emulator-key", line
    url, key = match.groups()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    created = session.post(
        f"{url}/api/v3/{FLUX}", json={"prompt": "x"}, params={"webhook": "http://127.0.0.1:9/hook?token=s"}
    )
    assert created.status_code == 200
    prediction_id = created.json()["data"]["id"]
    assert session.get(f"{url}/api/v3/predictions/{prediction_id}/result").status_code == 200
    assert session.post(f"{url}/api/v3/wavespeed-ai/flux-devv", json={"prompt": "x"}).status_code == 404
    assert session.get(f"{url}/api/v3/no/such/route").status_code == 405  # the submit route only takes POST
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "user-real-key" not in line + stdout + stderr
    requests_logged = [entry.split(" ", 1)[1] for entry in stderr.splitlines() if " /api/v3/" in entry]
    if quiet:
        assert requests_logged == [], stderr
    else:
        assert requests_logged == [  # method, path (never the query: a webhook URL may carry a token), status, model
            f"POST /api/v3/{FLUX} 200 {FLUX}",
            f"GET /api/v3/predictions/{prediction_id}/result 200 {FLUX}",
            "POST /api/v3/wavespeed-ai/flux-devv 404 wavespeed-ai/flux-devv",
            "GET /api/v3/no/such/route 405 no/such/route",  # every request, answered by a route or not
        ], stderr


def test_emulator_process_starts_serves_and_stops_its_process_group() -> None:
    with EmulatorProcess("process-secret-key", duration=(0.2, 0.3)) as emulator:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emulator.url)
        assert emulator.control.health()
        # The key reaches the child through its environment, not its command line (`ps` shows that).
        assert b"process-secret-key" not in Path(f"/proc/{emulator.pid}/cmdline").read_bytes()
        headers = {"Authorization": "Bearer process-secret-key"}
        submitted = requests.post(f"{emulator.url}/api/v3/{FLUX}", json={"prompt": "x"}, headers=headers)
        state = emulator.control.prediction_state(submitted.json()["data"]["id"])
        assert 0.2 <= state["completes_at"] - state["submitted_at"] <= 0.3
    assert emulator.process.returncode == 0  # SIGTERM to the group: a clean shutdown, not a kill
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{emulator.url}/_emulator/health", timeout=2)


PLUGIN = "airflow_provider_wavespeed.testing.pytest_plugin"


@pytest.mark.parametrize("enabled_by", ["-p", "conftest", None])
def test_pytest_plugin_is_opt_in(tmp_path: Path, enabled_by: str | None) -> None:
    (tmp_path / "test_uses_plugin.py").write_text(
        textwrap.dedent(
            """
            import json, os, requests

            def test_connection(wavespeed_connection):
                conn = json.loads(os.environ["AIRFLOW_CONN_WAVESPEED_DEFAULT"])
                assert conn["conn_type"] == "wavespeed" and conn["host"] == wavespeed_connection.url
                auth = {"Authorization": "Bearer " + conn["password"]}
                assert requests.get(conn["host"] + "/api/v3/balance", headers=auth).status_code == 200

            def test_reset_between_tests(wavespeed_emulator):
                assert wavespeed_emulator.counters()["total_requests"] == 0
            """
        )
    )
    if enabled_by == "conftest":  # the line the plugin's docstring gives users
        (tmp_path / "conftest.py").write_text(f"pytest_plugins = [{PLUGIN!r}]\n")
    # Installed plugins autoload as for any user: the package must not register this one itself.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    if enabled_by == "-p":
        command[4:4] = ["-p", PLUGIN]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    if enabled_by is None:
        assert result.returncode != 0
        assert "fixture 'wavespeed_connection' not found" in result.stdout
        assert "fixture 'wavespeed_emulator' not found" in result.stdout
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout


# -- scale ------------------------------------------------------------------------------------


def test_two_thousand_concurrent_polls_are_all_answered(emulator_process: tuple[subprocess.Popen[str], str]) -> None:
    # A separate server process, as in the benchmarks: in one process the client and the
    # server thread hand the GIL back and forth on every request, which measures Python.
    _, url = emulator_process
    control = EmulatorControl(url)
    headers = {"Authorization": "Bearer process-secret-key"}
    ids = [requests.post(f"{url}/api/v3/acme/model", json={}, headers=headers).json()["data"]["id"] for _ in range(20)]

    async def poll_all() -> list[int]:
        # 100 connections over 20 clients: httpcore's pool scans every queued request
        # against every connection, so one big pool makes the *client* the bottleneck.
        limits = httpx.Limits(max_connections=5, max_keepalive_connections=5)
        clients = [httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) for _ in range(20)]
        gates = [asyncio.Semaphore(5) for _ in clients]

        async def poll(index: int) -> int:
            async with gates[index % 20]:
                response = await clients[index % 20].get(f"/api/v3/predictions/{ids[index % len(ids)]}/result")
                return response.status_code

        try:
            return await asyncio.gather(*(poll(index) for index in range(2000)))
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    statuses = asyncio.run(poll_all())
    assert statuses == [200] * 2000
    assert control.counters()["requests"] == {"submit": 20, "result": 2000}
    assert sum(control.prediction_state(prediction_id)["polls"] for prediction_id in ids) == 2000
