"""The official WaveSpeed Python SDK (``wavespeed`` 2.x) drives the emulator over loopback.

The SDK is WaveSpeed's own client of the real API: whatever it expects of the API, the
emulator must do. Where the two disagree, the emulator is wrong. Durations are 0 (a task is
done as soon as it exists) unless a test holds a task ``processing`` explicitly; the SDK's
poll and retry intervals are shortened so the module is fast, never so a verdict needs speed.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import wavespeed  # the dev extra installs it: a missing SDK fails here, never skips silently

from airflow_provider_wavespeed.testing import WaveSpeedEmulator, _media

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = {"poll_interval": 0.01}


@pytest.fixture
def client(emulator: WaveSpeedEmulator) -> Any:
    """Point the official client at the emulator; retries keep the SDK's counts, with short waits."""
    return wavespeed.Client(api_key=emulator.api_key, base_url=emulator.url, retry_interval=0.01)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Wait for a state the test set in motion (not for time to pass); generous: only a hang fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def background() -> Iterator[Callable[..., Future[Any]]]:
    """Run an SDK call in a thread while the test changes the emulator's state."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool.submit


def only_submission(emulator: WaveSpeedEmulator) -> str:
    submissions = wait_for(emulator.submissions, "the SDK's submission")
    assert len(submissions) == 1
    return str(submissions[0]["id"])


# -- run: submit, poll, outputs -----------------------------------------------------------------


def test_run_an_image_model_with_several_outputs(emulator: WaveSpeedEmulator, client: Any) -> None:
    result = client.run(FLUX, {"prompt": "a lighthouse", "num_images": 3, "output_format": "png"}, **FAST)
    assert list(result) == ["outputs"] and len(result["outputs"]) == 3
    for url in result["outputs"]:
        download = requests.get(url)
        assert download.status_code == 200 and download.content.startswith(PNG_SIGNATURE)
    assert len(set(result["outputs"])) == 3
    assert emulator.counters()["requests"]["submit"] == 1


def test_run_a_video_model_from_an_uploaded_image(client: Any, tmp_path: Path) -> None:
    image = tmp_path / "start.png"
    image.write_bytes(PNG_SIGNATURE + b"\0" * 64)
    image_url = client.upload(str(image))
    result = client.run(WAN_I2V, {"prompt": "waves", "image": image_url}, **FAST)
    (video,) = result["outputs"]
    assert video.endswith(".mp4")
    assert requests.get(video).content == _media.video_bytes()  # the real clip (test_media.py plays it)
    text = client.run(WAN_T2V, {"prompt": "rain", "duration": 10}, **FAST)
    assert len(text["outputs"]) == 1 and text["outputs"][0].endswith(".mp4")


def test_run_polls_through_processing_until_the_task_completes(
    emulator: WaveSpeedEmulator, client: Any, background: Callable[..., Future[Any]]
) -> None:
    emulator.hold()
    running = background(client.run, FLUX, {"prompt": "slow"}, **FAST)
    prediction_id = only_submission(emulator)
    wait_for(lambda: emulator.prediction_state(prediction_id)["polls"] >= 3, "three polls while processing")
    assert not running.done()  # `processing` is not terminal to the SDK
    emulator.release(prediction_id)
    assert len(running.result(timeout=30)["outputs"]) == 1
    assert client.get_result(prediction_id)["data"]["status"] == "completed"


def test_sync_mode_answers_in_the_submit_response(emulator: WaveSpeedEmulator, client: Any) -> None:
    result = client.run(FLUX, {"prompt": "now", "num_images": 2}, enable_sync_mode=True)
    assert len(result["outputs"]) == 2
    requests_made = emulator.counters()["requests"]
    assert requests_made == {"submit": 1}  # no polls: the POST itself waited for the task
    assert emulator.submissions()[0]["inputs"]["enable_sync_mode"] is True


def test_sync_mode_waits_for_a_task_still_running(
    emulator: WaveSpeedEmulator, client: Any, background: Callable[..., Future[Any]]
) -> None:
    emulator.hold()
    running = background(client.run, FLUX, {"prompt": "held"}, enable_sync_mode=True)
    prediction_id = only_submission(emulator)
    assert emulator.prediction_state(prediction_id)["status"] == "processing"
    assert not running.done()
    emulator.release(prediction_id)
    assert len(running.result(timeout=30)["outputs"]) == 1


def test_sync_mode_failure_names_the_task(emulator: WaveSpeedEmulator, client: Any) -> None:
    emulator.set_outcome("failed", error="the model raised an error", code=1403)
    with pytest.raises(RuntimeError, match=r"Prediction failed \(task_id: [0-9a-f]{32}\): the model raised an error"):
        client.run(FLUX, {"prompt": "x"}, enable_sync_mode=True)
    outcome = client.run_no_throw(FLUX, {"prompt": "x"}, enable_sync_mode=True)
    assert outcome["status"] == "failed" and outcome["outputs"] is None
    assert outcome["task_id"] == emulator.submissions()[-1]["id"]


# -- upload: the two-step flow ---------------------------------------------------------------------


def test_upload_a_path(emulator: WaveSpeedEmulator, client: Any, tmp_path: Path) -> None:
    content = os.urandom(300_000)
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    url = client.upload(str(path))
    download = requests.get(url)
    assert download.content == content and download.headers["content-type"] == "image/jpeg"
    counters = emulator.counters()
    assert counters["requests"]["upload_ticket"] == 1 and counters["requests"]["upload_put"] == 1
    assert counters["upload_put_with_authorization"] == 0  # the key never reaches the storage URL


@pytest.mark.parametrize("kind", ["seekable", "partly read", "unseekable"])
def test_upload_a_stream(emulator: WaveSpeedEmulator, client: Any, kind: str) -> None:
    content = os.urandom(100_000)
    if kind == "seekable":
        stream: Any = io.BytesIO(content)
        expected = content
    elif kind == "partly read":  # the SDK sends what is left from the current position
        stream = io.BytesIO(b"header" + content)
        stream.read(6)
        expected = content
    else:

        class Pipe:
            def __init__(self) -> None:
                self._data = io.BytesIO(content)

            def read(self, size: int = -1) -> bytes:
                return self._data.read(size)

        stream, expected = Pipe(), content
    url = client.upload(stream)
    assert requests.get(url).content == expected
    assert emulator.counters()["upload_put_with_authorization"] == 0


def test_upload_refused_by_the_api_raises(emulator: WaveSpeedEmulator, client: Any) -> None:
    emulator.set_api_key("another-key")
    with pytest.raises(RuntimeError, match="Failed to create upload: HTTP 401"):
        client.upload(io.BytesIO(b"abc"))
    assert "upload_put" not in emulator.counters()["requests"]


# -- outcomes: failed, cancelled, timeout, deleted --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [("failed", 1200), ("failed", 5003), ("cancelled", None), ("timeout", 5004)]
)
def test_a_task_that_ends_badly_raises_with_its_error(
    emulator: WaveSpeedEmulator, client: Any, status: str, code: int | None
) -> None:
    emulator.set_outcome(status, error=f"emulated {status}", code=code)
    with pytest.raises(RuntimeError, match=rf"Prediction {status} \(task_id: [0-9a-f]{{32}}\): emulated {status}"):
        client.run(FLUX, {"prompt": "x"}, **FAST)
    data = client.get_result(emulator.submissions()[0]["id"])["data"]
    assert data["status"] == status and data.get("code") == code
    assert emulator.counters()["requests"]["submit"] == 1  # max_retries=0: never a second task


@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_a_task_deleted_while_the_sdk_waits_ends_the_wait(
    emulator: WaveSpeedEmulator, client: Any, background: Callable[..., Future[Any]], cancel_status: str
) -> None:
    # SDK 2.0.5 has no cancel, delete or history call: what it holds the emulator to is that both
    # statuses a DELETE may leave (see set_cancel_status) end its wait, as terminal, with the task id.
    emulator.set_cancel_status(cancel_status)
    emulator.hold()
    running = background(client.run, FLUX, {"prompt": "x"}, **FAST)
    prediction_id = only_submission(emulator)
    wait_for(lambda: emulator.prediction_state(prediction_id)["polls"] >= 1, "a poll")
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    assert requests.delete(f"{emulator.url}/api/v3/predictions/{prediction_id}", headers=headers).status_code == 200
    with pytest.raises(RuntimeError, match=rf"Prediction {cancel_status} \(task_id: {prediction_id}\)"):
        running.result(timeout=30)
    assert emulator.counters()["cancelled"] == 1


# -- HTTP errors -----------------------------------------------------------------------------------


def test_400_on_submit_is_raised_with_the_api_message_not_resent(emulator: WaveSpeedEmulator, client: Any) -> None:
    with pytest.raises(RuntimeError, match=r"Failed to submit prediction: HTTP 400: .*prompt"):
        client.run(FLUX, {"num_images": 2}, **FAST)
    assert emulator.counters()["requests"] == {"submit": 1}


def test_401_with_a_wrong_key(emulator: WaveSpeedEmulator) -> None:
    client = wavespeed.Client(api_key="not-the-key", base_url=emulator.url, retry_interval=0.01)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        client.run(FLUX, {"prompt": "x"}, **FAST)
    assert emulator.counters()["submissions"] == {}


def test_403_without_balance(emulator: WaveSpeedEmulator, client: Any) -> None:
    emulator.set_balance(0.0)
    with pytest.raises(RuntimeError, match=r"HTTP 403: .*Insufficient balance"):
        client.run(FLUX, {"prompt": "x"}, **FAST)
    assert emulator.counters()["submissions"] == {}


def test_an_unknown_model_is_refused_once_and_creates_nothing(emulator: WaveSpeedEmulator, client: Any) -> None:
    # A typo in a model id fails in the user's tests as in production: 404, sent once, nothing created.
    with pytest.raises(
        RuntimeError, match=r"Failed to submit prediction: HTTP 404: .*Model not found: wavespeed-ai/flux-devv"
    ):
        client.run("wavespeed-ai/flux-devv", {"prompt": "x"}, **FAST)
    assert emulator.counters()["requests"] == {"submit": 1}
    assert emulator.submissions() == []
    emulator.allow_any_model()  # the documented opt-in: then any id is accepted
    assert len(client.run("wavespeed-ai/flux-devv", {"prompt": "x"}, **FAST)["outputs"]) == 1


def test_404_for_an_unknown_task_is_not_retried(emulator: WaveSpeedEmulator, client: Any) -> None:
    with pytest.raises(RuntimeError, match="HTTP 404"):
        client.get_result("f" * 32)
    assert emulator.counters()["requests"] == {"result": 1}


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "rate_limit", "retry_after": 0},
        {"kind": "http_error", "status": 500},
        {"kind": "http_error", "status": 502},
        {"kind": "http_error", "status": 503},
        {"kind": "http_error", "status": 504},
        {"kind": "drop"},
    ],
)
def test_transient_poll_failures_are_retried(emulator: WaveSpeedEmulator, client: Any, fault: dict[str, Any]) -> None:
    emulator.add_fault("result", times=5, **fault)  # the SDK retries a poll 5 times: the 6th gets through
    result = client.run(FLUX, {"prompt": "x"}, **FAST)
    assert len(result["outputs"]) == 1
    counters = emulator.counters()
    assert counters["requests"]["result"] == 6 and counters["requests"]["submit"] == 1


def test_a_poll_that_keeps_failing_gives_up_after_the_sdk_retries(emulator: WaveSpeedEmulator, client: Any) -> None:
    emulator.add_fault("result", "http_error", status=503, times=None)
    with pytest.raises(RuntimeError, match=r"Failed to get result for task [0-9a-f]{32}: HTTP 503"):
        client.run(FLUX, {"prompt": "x"}, **FAST)
    counters = emulator.counters()
    assert counters["requests"]["result"] == 6 and counters["requests"]["submit"] == 1  # never re-submitted


# -- tier limits ------------------------------------------------------------------------------------


def test_429_on_submit_at_the_tier_start_rate_is_raised_not_resent(emulator: WaveSpeedEmulator, client: Any) -> None:
    emulator.set_tier("bronze")
    for _ in range(2):
        assert len(client.run(FLUX, {"prompt": "x"}, **FAST)["outputs"]) == 1
    with pytest.raises(RuntimeError, match=r"Failed to submit prediction: HTTP 429: .*bronze tier"):
        client.run(FLUX, {"prompt": "x"}, **FAST)
    counters = emulator.counters()
    assert counters["requests"]["submit"] == 3 and counters["rate_limited"] == {"submit": 1}
    assert sum(counters["submissions"].values()) == 2


def test_a_task_queued_at_the_concurrency_cap_is_waited_for(
    emulator: WaveSpeedEmulator, client: Any, background: Callable[..., Future[Any]]
) -> None:
    emulator.set_tier("bronze", concurrency=1)
    emulator.hold(times=1)
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    submitted = requests.post(f"{emulator.url}/api/v3/{FLUX}", json={"prompt": "first"}, headers=headers)
    first = submitted.json()["data"]["id"]  # held: holds the only slot
    queued = background(client.run, FLUX, {"prompt": "second"}, **FAST)
    second = wait_for(lambda: [s["id"] for s in emulator.submissions() if s["id"] != first], "the second task")[0]
    wait_for(lambda: emulator.prediction_state(second)["polls"] >= 2, "polls of the queued task")
    assert emulator.prediction_state(second)["status"] == "created" and not queued.done()
    emulator.release(first)
    assert len(queued.result(timeout=30)["outputs"]) == 1
    assert emulator.prediction_state(second)["processing_at"] == emulator.prediction_state(first)["completes_at"]
