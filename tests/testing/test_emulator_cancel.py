"""DELETE as a cancellation and the prediction history, as the emulator models them.

The public docs ("How to Delete Task") show ``DELETE /api/v3/predictions/{id}`` answering
``{"id", "status": "deleted"}`` and warn that a processing task may not stop at once; the API's
status enum also has ``cancelled``. So an unfinished prediction a DELETE stops reads ``deleted``
by default and ``cancelled`` after ``set_cancel_status("cancelled")``; either way its record keeps
the work done (``timings.inference``) and the emulator counts it. Nothing here races the clock: a
prediction that must be running has an hour to run (or is held), one that must be over has none.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import requests

from airflow_provider_wavespeed.testing import EmulatorControl, WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
INSTANT = "acme/instant"
EMULATOR_MODELS = {INSTANT: "text-to-image", "acme/model": "text-to-image"}  # the tests' own ids
HOUR = 3600.0
DAY = 86_400.0

EMULATOR_DURATION = HOUR  # the module's emulator (conftest.py)


@pytest.fixture
def emulator(emulator: WaveSpeedEmulator) -> WaveSpeedEmulator:
    emulator.set_duration(0.0, model=INSTANT)
    return emulator


class Api:
    """A tiny authenticated client, so tests read like API calls."""

    def __init__(self, emulator: WaveSpeedEmulator) -> None:
        self.base = emulator.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emulator.api_key}"

    def create(self, model: str = FLUX, prompt: str = "a cat", **inputs: Any) -> str:
        response = self.session.post(f"{self.base}/api/v3/{model}", json={"prompt": prompt, **inputs})
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["id"])

    def result(self, prediction_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.base}/api/v3/predictions/{prediction_id}/result")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def delete(self, prediction_id: str) -> requests.Response:
        return self.session.delete(f"{self.base}/api/v3/predictions/{prediction_id}")

    def history(self, **body: Any) -> requests.Response:
        return self.session.post(f"{self.base}/api/v3/predictions", json={"page": 1, "page_size": 100, **body})

    def listed(self, **body: Any) -> list[str]:
        response = self.history(**body)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]["items"]]


@pytest.fixture
def api(emulator: WaveSpeedEmulator) -> Api:
    return Api(emulator)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


# -- DELETE of an unfinished prediction: a cancellation ---------------------------------------------


def test_delete_of_a_running_prediction_cancels_it_and_counts_it(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold(times=1)  # processing until told, however slow the machine
    running = api.create()
    done = api.create(INSTANT)
    assert api.result(running)["status"] == "processing" and api.result(done)["status"] == "completed"
    answer = api.delete(running)
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert (data["id"], data["status"], data["outputs"]) == (running, "deleted", [])
    assert api.result(running)["status"] == "deleted"  # and it stays so: the hold no longer matters
    assert emulator.release() == 0
    api.delete(done)  # a finished one is deleted, not cancelled
    counters = emulator.counters()
    assert counters["cancelled"] == 1
    assert counters["delete_requests"] == {running: 1, done: 1}
    assert counters["requests"]["delete_prediction"] == 2
    (cancelled,) = emulator.cancellations()
    assert (cancelled["id"], cancelled["model"], cancelled["status"]) == (running, FLUX, "processing")
    state = emulator.prediction_state(running)
    assert state["deleted"] is True and state["cancelled_at"] == cancelled["cancelled_at"]
    assert emulator.prediction_state(done)["cancelled_at"] is None


def test_cancel_status_cancelled_keeps_the_work_done_and_the_record_listed(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    emulator.set_cancel_status("cancelled")
    emulator.hold(times=1)
    running = api.create()
    queued_behind = api.create(WAN_T2V, "rain")  # an hour to run: created, then processing
    assert api.delete(running).json()["data"]["status"] == "cancelled"
    after = api.result(running)
    state = emulator.prediction_state(running)
    assert after["status"] == "cancelled" and after["outputs"] == [] and "code" not in after
    assert after["error"]  # says it was cancelled
    worked_ms = after["timings"]["inference"]
    assert worked_ms == int((state["cancelled_at"] - state["processing_at"]) * 1000) >= 0
    assert running in api.listed(status="cancelled")  # a cancelled record stays in the history
    assert queued_behind not in api.listed(status="cancelled")
    # A finished prediction reads `deleted` once deleted, whatever the cancel status.
    done = api.create(INSTANT)
    assert api.delete(done).json()["data"]["status"] == "deleted"
    assert emulator.counters()["cancelled"] == 1
    emulator.reset()
    emulator.hold(times=1)
    assert api.delete(api.create()).json()["data"]["status"] == "deleted"  # reset restores the default
    with pytest.raises(ValueError, match="cancel"):
        emulator.set_cancel_status("stopped")


def test_delete_is_idempotent_and_a_repeat_is_counted(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_cancel_status("cancelled")
    emulator.hold(times=1)
    prediction_id = api.create()
    first = api.delete(prediction_id).json()["data"]
    second = api.delete(prediction_id).json()["data"]
    assert first == second and first["status"] == "cancelled"
    assert emulator.counters()["cancelled"] == 1
    assert emulator.prediction_state(prediction_id)["delete_requests"] == 2


def test_a_lost_delete_answer_still_cancelled_and_a_retry_answers_the_same(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    emulator.hold(times=1)
    prediction_id = api.create()
    emulator.add_fault("delete_prediction", "drop_after_delete")
    with pytest.raises(requests.ConnectionError):
        api.delete(prediction_id)
    assert emulator.counters()["cancelled"] == 1  # acted on before the connection dropped
    assert api.delete(prediction_id).json()["data"]["status"] == "deleted"
    assert emulator.counters()["cancelled"] == 1
    with pytest.raises(ValueError, match="delete_prediction"):
        emulator.add_fault("submit", "drop_after_delete")


def test_delete_faults_can_target_one_model(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold()
    video, image = api.create(WAN_T2V, "waves"), api.create()
    emulator.add_fault("delete_prediction", "http_error", status=503, model=WAN_T2V)
    assert api.delete(image).status_code == 200
    assert api.delete(video).status_code == 503
    assert api.result(video)["status"] == "processing"  # a refused DELETE changed nothing
    assert emulator.counters()["delete_requests"] == {image: 1}


def test_a_queued_prediction_cancelled_never_ran(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_tier(concurrency=1)
    emulator.set_cancel_status("cancelled")
    emulator.hold(times=1)
    running, queued = api.create(prompt="first"), api.create(prompt="second")
    assert emulator.prediction_state(queued)["queued"] is True
    cancelled = api.delete(queued).json()["data"]
    assert cancelled["status"] == "cancelled" and cancelled["timings"]["inference"] == 0
    assert emulator.counters()["tier"]["queued"] == 0
    assert emulator.cancellations()[0]["status"] == "created"
    # Cancelling the held one frees its slot: the next submission runs at once.
    api.delete(running)
    emulator.set_duration(HOUR)
    nxt = api.create(prompt="third")
    assert emulator.prediction_state(nxt)["queued"] is False


def test_post_delete_cancels_too(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold()
    ids = [api.create(prompt=f"p{n}") for n in range(3)]
    deleted = api.session.post(f"{api.base}/api/v3/predictions/delete", json={"ids": ids[:2]})
    assert deleted.json()["data"] == {"deleted_count": 2}
    assert sorted(entry["id"] for entry in emulator.cancellations()) == sorted(ids[:2])
    assert emulator.counters()["delete_requests"] == {}  # only DELETE /predictions/{id} is counted there


# -- the history: filters, input, the 7-day window -------------------------------------------------


def test_history_items_carry_their_input_newest_first(api: Api) -> None:
    first = api.create(prompt="one", seed=7)
    second = api.create(WAN_T2V, "two", duration=10)
    response = api.history()
    items = response.json()["data"]["items"]
    assert [item["id"] for item in items] == [second, first]
    assert items[0]["input"] == {"prompt": "two", "duration": 10}
    assert items[1]["input"] == {"prompt": "one", "seed": 7}
    assert items[1]["model"] == FLUX and items[1]["status"] in ("created", "processing")


def test_history_filters_by_creation_time(emulator: WaveSpeedEmulator, api: Api) -> None:
    old, middle, new = api.create(prompt="old"), api.create(prompt="middle"), api.create(prompt="new")
    emulator.backdate(old, 2 * HOUR)
    created = emulator.backdate(middle, HOUR)
    now = datetime.datetime.now(datetime.timezone.utc)
    ninety, thirty = iso(now - datetime.timedelta(minutes=90)), iso(now - datetime.timedelta(minutes=30))
    assert api.listed(created_after=ninety) == [new, middle]
    assert api.listed(created_before=thirty) == [middle, old]
    assert api.listed(created_after=ninety, created_before=thirty) == [middle]
    # created_after is inclusive to the nanosecond, created_before exclusive; no zone means UTC.
    assert api.listed(created_after=created) == [new, middle]
    assert api.listed(created_before=created) == [old]
    assert api.listed(created_after=created.replace("Z", "")) == [new, middle]
    assert api.listed(created_after=created.replace("Z", "+02:00")) == [new, middle, old]


def test_history_keeps_seven_days(emulator: WaveSpeedEmulator, api: Api) -> None:
    recent, old = api.create(prompt="recent"), api.create(prompt="old")
    emulator.backdate(recent, 6 * DAY)
    emulator.backdate(old, 7 * DAY + 60)
    assert api.listed() == [recent]
    assert api.listed(created_after="2000-01-01T00:00:00Z") == [recent]
    assert api.result(old)["status"]  # still readable by id; only the listing ends


def test_history_filters_model_and_status_and_pages(emulator: WaveSpeedEmulator, api: Api) -> None:
    images = [api.create(INSTANT, f"i{n}") for n in range(5)]
    video = api.create(WAN_T2V, "v")
    assert api.listed(model=INSTANT) == images[::-1]
    assert api.listed(status="completed") == images[::-1]
    assert api.listed(status="processing") + api.listed(status="created") == [video]
    page2 = api.history(page=2, page_size=2, model=INSTANT).json()["data"]
    assert page2["total"] == 5 and [item["id"] for item in page2["items"]] == images[::-1][2:4]
    assert api.history(page=9, page_size=2).json()["data"]["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "pending"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": 12}, "created_before"),
        ({"page_size": 0}, "page_size"),
        ({"page": 0}, "page"),
    ],
)
def test_history_refuses_bad_filters(api: Api, body: dict[str, Any], field: str) -> None:
    response = api.history(**body)
    assert response.status_code == 400 and field in response.json()["message"]


def test_new_controls_work_over_http(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.hold(times=1)
    prediction_id = api.create()
    with EmulatorControl(emulator.url) as control:
        control.set_cancel_status("cancelled")
        assert control.backdate(prediction_id, 60).endswith("Z")
        assert api.delete(prediction_id).json()["data"]["status"] == "cancelled"
        assert [entry["id"] for entry in control.cancellations()] == [prediction_id]
        with pytest.raises(KeyError):
            control.backdate("f" * 32, 1)
