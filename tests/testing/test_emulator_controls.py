"""hold / release: a prediction's state set by the test, not by the clock.

Every test here uses duration 0, so a prediction that is not held is finished the moment it
exists: a ``processing`` answer can only come from the hold.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess, WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"


class Api:
    """A tiny authenticated client, so tests read like API calls."""

    def __init__(self, url: str, api_key: str) -> None:
        self.base = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def create(self, model: str = FLUX, prompt: str = "a cat", **kwargs: Any) -> dict[str, Any]:
        inputs = {"prompt": prompt, **kwargs.pop("inputs", {})}
        response = self.session.post(f"{self.base}/api/v3/{model}", json=inputs, **kwargs)
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def status(self, prediction_id: str, route: str = "result") -> str:
        path = f"predictions/{prediction_id}/result" if route == "result" else f"predictions/{prediction_id}"
        response = self.session.get(f"{self.base}/api/v3/{path}")
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["status"])

    def result(self, prediction_id: str) -> dict[str, Any]:
        return dict(self.session.get(f"{self.base}/api/v3/predictions/{prediction_id}/result").json()["data"])


@pytest.fixture
def api(emulator: WaveSpeedEmulator) -> Api:
    return Api(emulator.url, emulator.api_key)


def test_a_held_prediction_is_processing_until_released(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold()
    prediction = api.create(inputs={"num_images": 2})
    assert prediction["status"] == "processing"  # no "created" phase either: the hold decides
    assert [api.status(prediction["id"], route) for route in ("result", "prediction") * 3] == ["processing"] * 6
    held = api.result(prediction["id"])
    assert held["outputs"] == [] and held["timings"] == {"inference": 0}
    assert emulator.prediction_state(prediction["id"])["held"] is True

    assert emulator.release(prediction["id"]) == 1
    done = api.result(prediction["id"])
    assert done["status"] == "completed" and len(done["outputs"]) == 2
    assert all(requests.get(url).status_code == 200 for url in done["outputs"])
    state = emulator.prediction_state(prediction["id"])
    assert state["held"] is False and state["polls"] == 8
    assert done["timings"]["inference"] == int(state["duration"] * 1000)  # the time it was held
    assert emulator.release(prediction["id"]) == 0  # not held any more
    with pytest.raises(KeyError, match="unknown prediction"):
        emulator.release("no-such-prediction")


def test_release_without_an_id_finishes_every_held_prediction_and_stops_holding(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    emulator.hold()
    ids = [api.create(prompt=f"cat {index}")["id"] for index in range(3)]
    assert {api.status(prediction_id) for prediction_id in ids} == {"processing"}
    assert emulator.release(ids[0]) == 1  # one released, the hold still applies to new submissions
    later = api.create(prompt="a later cat")["id"]
    assert [api.status(prediction_id) for prediction_id in [*ids, later]] == ["completed"] + ["processing"] * 3
    assert emulator.release() == 3
    assert [api.status(prediction_id) for prediction_id in [*ids, later]] == ["completed"] * 4
    assert api.create()["status"] == "completed"  # no longer holding
    assert emulator.release() == 0


def test_hold_matches_model_prompt_and_a_number_of_times(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold(model=WAN_T2V)
    emulator.hold(prompt_contains="slow", times=1)
    assert api.create(WAN_T2V, "a wave")["status"] == "processing"
    assert api.create(FLUX, "a quick fox")["status"] == "completed"
    assert api.create(FLUX, "a slow fox")["status"] == "processing"
    assert api.create(FLUX, "another slow fox")["status"] == "completed"  # times=1 used up
    assert api.create(WAN_T2V, "another wave")["status"] == "processing"


def test_a_held_prediction_ends_with_its_planned_outcome(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_outcome("failed", error="CUDA out of memory")
    emulator.hold()
    prediction_id = api.create()["id"]
    held = api.result(prediction_id)
    assert (held["status"], held["error"]) == ("processing", "")
    emulator.release(prediction_id)
    failed = api.result(prediction_id)
    assert (failed["status"], failed["error"], failed["outputs"]) == ("failed", "CUDA out of memory", [])


def test_hold_for_n_polls_finishes_on_the_next_poll(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold(model=WAN_T2V, polls=0)  # the first rule a submission matches applies
    emulator.hold(polls=3)
    prediction_id = api.create()["id"]
    emulator.add_fault("result", "http_error", status=503)  # a poll without an answer does not count
    assert api.session.get(f"{api.base}/api/v3/predictions/{prediction_id}/result").status_code == 503
    seen = [api.status(prediction_id, route) for route in ("result", "prediction", "result", "prediction")]
    assert seen == ["processing", "processing", "processing", "completed"]
    assert emulator.prediction_state(prediction_id)["polls"] == 4
    video = api.create(WAN_T2V, "a wave")["id"]
    assert api.status(video) == "completed"  # polls=0: finished at the first look
    # release() ends a poll-counted hold early.
    early = api.create(prompt="early")["id"]
    assert api.status(early) == "processing"
    assert emulator.release(early) == 1 and api.status(early) == "completed"


def test_history_and_files_see_a_held_prediction_as_processing(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold(prompt_contains="held")
    held = api.create(prompt="held")["id"]
    done = api.create(prompt="done")["id"]
    body = {"page": 1, "page_size": 10, "status": "processing"}
    items = api.session.post(f"{api.base}/api/v3/predictions", json=body).json()["data"]["items"]
    assert [item["id"] for item in items] == [held]
    assert requests.get(f"{api.base}/_emulator/files/{held}_0.jpeg").status_code == 404
    assert api.result(done)["outputs"]


def test_sync_mode_answers_when_the_prediction_is_released(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(api.create, inputs={"enable_sync_mode": True})
        # Wait for the submission itself (it exists before the answer), not for a guessed time.
        while not emulator.submissions():
            threading.Event().wait(0.01)
        assert not answer.done()  # the hold keeps the synchronous answer back
        emulator.release()
        assert answer.result(timeout=30)["status"] == "completed"


def test_the_webhook_of_a_held_prediction_is_sent_on_release(
    emulator: WaveSpeedEmulator, api: Api, webhook_receiver: tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook_receiver
    emulator.hold()
    prediction_id = api.create(params={"webhook": url})["id"]
    with pytest.raises(queue.Empty):  # held: nothing to announce
        received.get(timeout=0.5)
    emulator.release()
    assert b'"status":"completed"' in received.get(timeout=30)[1]
    assert emulator.prediction_state(prediction_id)["held"] is False


def test_reset_forgets_holds(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold()
    emulator.reset()
    assert api.create()["status"] == "completed"


@pytest.mark.parametrize("polls", [-1, 1.5, True, "2"])
def test_invalid_hold_arguments_are_refused(emulator: WaveSpeedEmulator, polls: Any) -> None:
    with pytest.raises(ValueError, match="polls"):
        emulator.hold(polls=polls)
    with pytest.raises(ValueError, match="times"):
        emulator.hold(times=0)


def test_hold_and_release_over_http(emulator: WaveSpeedEmulator, api: Api) -> None:
    control = EmulatorControl(emulator.url)
    control.hold(prompt_contains="remote", polls=1)
    prediction_id = api.create(prompt="remote")["id"]
    assert control.prediction_state(prediction_id)["held"] is True
    assert [api.status(prediction_id), api.status(prediction_id)] == ["processing", "completed"]
    control.hold()
    other = api.create()["id"]
    assert control.release() == 1 and api.status(other) == "completed"
    with pytest.raises(KeyError):
        control.release("nope")
    with pytest.raises(ValueError, match="polls"):
        control.hold(polls=-2)
    control.close()


def test_hold_in_an_emulator_process() -> None:
    with EmulatorProcess("process-key", duration=0.0) as emulator:
        emulator.control.hold()
        api = Api(emulator.url, "process-key")
        prediction_id = api.create()["id"]
        assert api.status(prediction_id) == "processing"
        assert emulator.control.release() == 1
        assert api.status(prediction_id) == "completed"
