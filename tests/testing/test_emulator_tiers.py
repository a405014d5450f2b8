"""Account tiers, DELETE, failure codes and the two-step upload, as the emulator models them.

Nothing here races the clock: a prediction that must still be running has an hour to run, one
that must be over has no duration at all, and the moment a slot frees is set by ``release``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess, WaveSpeedEmulator
from airflow_provider_wavespeed.testing._state import EmulatorState, Tier, TierRateLimited, resolve_tier

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
INSTANT = "acme/instant"  # duration 0: finished the moment it runs
EMULATOR_MODELS = {INSTANT: "text-to-image", "acme/model": "text-to-image"}  # the tests' own ids
HOUR = 3600.0
RUNNING = ("created", "processing")  # a fresh task is `created` for a moment, then `processing`


EMULATOR_DURATION = HOUR  # the module's emulator (conftest.py)


@pytest.fixture
def emulator(emulator: WaveSpeedEmulator) -> WaveSpeedEmulator:
    """conftest.py's reset emulator, with INSTANT finishing the moment it runs."""
    emulator.set_duration(0.0, model=INSTANT)
    return emulator


class Api:
    """A tiny authenticated client, so tests read like API calls."""

    def __init__(self, emulator: WaveSpeedEmulator) -> None:
        self.base = emulator.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emulator.api_key}"

    def submit(self, model: str = FLUX, prompt: str = "a cat") -> requests.Response:
        return self.session.post(f"{self.base}/api/v3/{model}", json={"prompt": prompt})

    def create(self, model: str = FLUX, prompt: str = "a cat") -> str:
        response = self.submit(model, prompt)
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["id"])

    def result(self, prediction_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.base}/api/v3/predictions/{prediction_id}/result")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def status(self, prediction_id: str) -> str:
        return str(self.result(prediction_id)["status"])


@pytest.fixture
def api(emulator: WaveSpeedEmulator) -> Api:
    return Api(emulator)


def assert_envelope_error(response: requests.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["data"] is None
    assert text.lower() in body["message"].lower()


# -- tiers: starts per minute -------------------------------------------------------------------


def test_presets_and_custom_numbers() -> None:
    assert resolve_tier() is None
    assert [resolve_tier(name) for name in ("bronze", "silver", "gold", "ultra")] == [
        Tier("bronze", 2, 2),
        Tier("silver", 500, 300),
        Tier("gold", 3000, 3000),
        Tier("ultra", 5000, 10000),
    ]
    assert resolve_tier("silver", concurrency=5) == Tier("silver", 500, 5)
    assert resolve_tier(concurrency=3) == Tier("custom", None, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"name": "platinum"}, {"starts_per_minute": 0}, {"concurrency": -1}, {"concurrency": 1.5}, {"concurrency": True}],
)
def test_invalid_tiers_are_refused(emulator: WaveSpeedEmulator, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        emulator.set_tier(**kwargs)
    with EmulatorControl(emulator.url) as control, pytest.raises(ValueError):
        control.set_tier(**kwargs)


def test_a_submission_over_the_start_rate_gets_429_with_retry_after(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_tier("bronze")
    api.create()
    api.create()
    before = api.session.get(f"{api.base}/api/v3/balance").json()["data"]["balance"]
    rejected = api.submit()
    assert_envelope_error(rejected, 429, "bronze tier allows 2 image generations started per minute")
    # Whole seconds until the first of the two starts leaves the one-minute window.
    assert 1 <= int(rejected.headers["Retry-After"]) <= 60
    assert api.session.get(f"{api.base}/api/v3/balance").json()["data"]["balance"] == before  # not charged
    api.create(WAN_T2V)  # videos are counted apart from images
    counters = emulator.counters()
    assert counters["submissions"] == {FLUX: 2, WAN_T2V: 1}
    assert counters["rate_limited"] == {"submit": 1}
    assert counters["tier"]["name"] == "bronze" and counters["tier"]["rejected"] == 1
    assert len(emulator.submissions()) == 3


def test_the_start_window_slides_retry_after_counts_down() -> None:
    state = EmulatorState(api_key="k", duration=HOUR, balance=100.0, webhook_secret="s")
    state.set_tier(starts_per_minute=1)
    state.submit(FLUX, {"prompt": "x"}, None)
    window = state._starts["image"]
    for age, low, high in ((0.5, 58, 60), (59.5, 1, 1)):  # the one start was `age` seconds ago
        window[0] = time.time() - age
        with pytest.raises(TierRateLimited, match="retry after") as raised:
            state.submit(FLUX, {"prompt": "x"}, None)
        assert low <= raised.value.retry_after <= high
    window[0] = time.time() - 60.5  # more than a minute old: the window has room again
    state.submit(FLUX, {"prompt": "x"}, None)
    assert len(state.predictions) == 2
    state.close()


def test_polls_and_other_reads_are_not_tier_limited(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_tier("bronze")
    prediction_id = api.create()
    for _ in range(30):
        assert api.status(prediction_id) in RUNNING
        assert api.session.get(f"{api.base}/api/v3/balance").status_code == 200
    assert emulator.counters()["rate_limited"] == {}


def test_an_image_burst_does_not_use_up_the_video_allowance(emulator: WaveSpeedEmulator, api: Api) -> None:
    # "Account Levels & Rate Limits" lists images/min and videos/min apart: two counters, each at the
    # tier's number. The kind comes from the catalog (or a registration), not from the id's spelling.
    emulator.register_model("acme/clip", kind="text-to-video")  # a video model without "video" in its id
    emulator.set_tier(starts_per_minute=3)
    for _ in range(3):
        api.create(FLUX)
    assert_envelope_error(api.submit(FLUX), 429, "allows 3 image generations started per minute")
    assert emulator.counters()["tier"]["starts"] == {"image": 3, "video": 0}
    for model in (WAN_T2V, "acme/clip", WAN_T2V):  # the full video allowance is still there
        api.create(model)
    assert_envelope_error(api.submit("acme/clip"), 429, "allows 3 video generations started per minute")
    counters = emulator.counters()
    assert counters["tier"]["starts"] == {"image": 3, "video": 3}
    assert counters["tier"]["rejected"] == 2 and counters["submissions"] == {FLUX: 3, WAN_T2V: 2, "acme/clip": 1}


def test_429s_are_counted_per_endpoint(emulator: WaveSpeedEmulator, api: Api) -> None:
    prediction_id = api.create()
    emulator.add_fault("result", "rate_limit", times=2)
    emulator.add_fault("balance", "rate_limit")
    for _ in range(3):
        api.session.get(f"{api.base}/api/v3/predictions/{prediction_id}/result")
    api.session.get(f"{api.base}/api/v3/balance")
    assert emulator.counters()["rate_limited"] == {"result": 2, "balance": 1}


# -- tiers: the concurrency cap and its FIFO queue -------------------------------------------------


def test_over_the_concurrency_cap_tasks_wait_created_in_order_and_run_from_admission(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    emulator.set_tier(concurrency=1)
    emulator.hold(times=1)
    running = api.create(FLUX, "first")  # held: holds the only slot until released
    instant = api.create(INSTANT, "second")
    long = api.create(FLUX, "third")
    for _ in range(5):  # no clock moves a queued task: only a free slot does
        assert [api.status(running), api.status(instant), api.status(long)] == ["processing", "created", "created"]
    queued = emulator.prediction_state(instant)
    assert queued["queued"] is True and queued["processing_at"] is None and queued["completes_at"] is None
    tier = emulator.counters()["tier"]
    assert (tier["running"], tier["queued"], tier["max_queued"], tier["queued_total"]) == (1, 2, 2, 2)

    released_after = time.time()
    assert emulator.release(running) == 1
    # The slot freed at the release: the second task ran (for no time) from then, then the third.
    assert api.status(running) == "completed"
    assert api.status(instant) == "completed"
    assert api.status(long) == "processing"
    first, second, third = (emulator.prediction_state(i) for i in (running, instant, long))
    assert first["completes_at"] >= released_after
    assert second["processing_at"] == second["completes_at"] == first["completes_at"]
    assert third["processing_at"] == second["completes_at"]
    assert third["completes_at"] == pytest.approx(third["processing_at"] + HOUR)  # run time starts at admission
    assert third["queued"] is False
    tier = emulator.counters()["tier"]
    assert (tier["running"], tier["queued"]) == (1, 0)


def test_raising_or_removing_the_cap_admits_queued_tasks_at_once(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_tier("silver", concurrency=1)
    api.create()
    second, third = api.create(), api.create()
    assert api.status(second) == api.status(third) == "created"
    before = time.time()
    emulator.set_tier("silver", concurrency=2)
    after = time.time()
    state = emulator.prediction_state(second)
    assert before <= state["processing_at"] <= after
    assert state["completes_at"] == pytest.approx(state["processing_at"] + HOUR)
    assert api.status(second) == "processing" and api.status(third) == "created"
    emulator.set_tier(None)
    assert api.status(third) == "processing" and emulator.counters()["tier"] is None


def test_after_a_lowered_cap_ends_drain_the_excess_before_the_queue_moves(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    emulator.set_tier(concurrency=2)
    emulator.hold(times=2)
    first, second = api.create(), api.create()
    emulator.set_tier(concurrency=1)
    third = api.create(INSTANT)
    emulator.release(first)
    assert api.status(first) == "completed" and api.status(third) == "created"  # `second` still fills the cap
    emulator.release(second)
    assert api.status(third) == "completed"
    assert emulator.prediction_state(third)["processing_at"] == emulator.prediction_state(second)["completes_at"]


def test_sync_mode_on_a_queued_task_answers_once_it_has_run(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_tier(concurrency=1)
    emulator.hold(times=1)
    first = api.create()
    with ThreadPoolExecutor(max_workers=1) as pool:
        body = {"prompt": "x", "enable_sync_mode": True}
        answer = pool.submit(api.session.post, f"{api.base}/api/v3/{INSTANT}", json=body)
        deadline = time.monotonic() + 30
        while len(emulator.submissions()) < 2 and time.monotonic() < deadline:  # waits for the state, not a time
            time.sleep(0.01)
        second = emulator.submissions()[1]["id"]
        assert emulator.prediction_state(second)["status"] == "created" and not answer.done()
        emulator.release(first)
        data = answer.result(timeout=30).json()["data"]
    assert data["id"] == second and data["status"] == "completed" and data["outputs"]


def test_a_deleted_queued_task_leaves_the_queue(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.set_tier(concurrency=1)
    emulator.hold(times=1)
    running = api.create()
    doomed, kept = api.create(), api.create(INSTANT)
    assert api.session.delete(f"{api.base}/api/v3/predictions/{doomed}").status_code == 200
    assert emulator.counters()["tier"]["queued"] == 1
    emulator.release(running)
    assert api.status(doomed) == "deleted"
    assert api.status(kept) == "completed"
    assert emulator.prediction_state(kept)["processing_at"] == emulator.prediction_state(running)["completes_at"]


def test_queue_admission_is_fifo_and_never_over_the_cap_at_scale() -> None:
    """Thousands of tasks through a cap of 7: every instant has at most 7 running, in submission order."""
    state = EmulatorState(api_key="k", duration=(0.0, 0.002), balance=1e6, webhook_secret="s")
    state.set_tier(concurrency=7)
    predictions, was_queued = [], []
    for _ in range(3000):
        prediction = state.submit("acme/model", {}, None)
        predictions.append(prediction)
        was_queued.append(prediction.queued)
    assert any(was_queued)
    deadline = time.monotonic() + 60
    while state.counters()["tier"]["queued"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state.counters()["tier"]["queued"] == 0
    assert not any(prediction.queued for prediction in predictions)
    queued_starts = [p.processing_at for p, queued in zip(predictions, was_queued, strict=True) if queued]
    assert queued_starts == sorted(queued_starts)  # FIFO
    for p, queued in zip(predictions, was_queued, strict=True):
        assert p.completes_at == pytest.approx(p.processing_at + p.duration)
        assert not queued or p.processing_at >= p.submitted_at
    # A slot is held from submission (admitted at once) or from admission (queued) until the end.
    slots = [
        (p.processing_at if queued else p.submitted_at, p.completes_at)
        for p, queued in zip(predictions, was_queued, strict=True)
    ]
    events = sorted([(start, 1) for start, _ in slots] + [(end, -1) for _, end in slots])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start (+1): the slot is reused
        running += change
        peak = max(peak, running)
    assert peak == 7
    state.close()


def test_the_tier_chosen_at_start_survives_reset() -> None:
    with WaveSpeedEmulator(tier="bronze") as emulator:
        emulator.reset()
        assert emulator.counters()["tier"]["name"] == "bronze"
    with EmulatorProcess("process-key", tier="silver", concurrency=4) as process:
        process.control.reset()
        tier = process.control.counters()["tier"]
        assert (tier["name"], tier["starts_per_minute"], tier["concurrency"]) == ("silver", 500, 4)


# -- DELETE and the `deleted` status --------------------------------------------------------------


def test_delete_marks_a_prediction_deleted(emulator: WaveSpeedEmulator, api: Api) -> None:
    done = api.create(INSTANT)
    files = api.result(done)["outputs"]
    assert requests.get(files[0]).status_code == 200
    running = api.create()
    response = api.session.delete(f"{api.base}/api/v3/predictions/{done}")
    assert response.status_code == 200 and response.json()["data"]["status"] == "deleted"
    deleted = api.result(done)
    assert deleted["status"] == "deleted" and deleted["outputs"] == [] and deleted["error"] == ""
    assert requests.get(files[0]).status_code == 404  # its files go with it
    assert api.status(running) in RUNNING
    batch = api.session.post(f"{api.base}/api/v3/predictions/delete", json={"ids": [done, running]})
    assert batch.json()["data"] == {"deleted_count": 1}  # `done` was deleted already
    assert api.status(running) == "deleted"
    assert emulator.prediction_state(running)["deleted"] is True


def test_delete_of_an_unknown_prediction_is_404_and_needs_the_key(emulator: WaveSpeedEmulator, api: Api) -> None:
    assert_envelope_error(api.session.delete(f"{api.base}/api/v3/predictions/{'f' * 32}"), 404, "not found")
    prediction_id = api.create()
    assert requests.delete(f"{api.base}/api/v3/predictions/{prediction_id}").status_code == 401
    assert api.status(prediction_id) in RUNNING


# -- failure codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("failed", None, 1403),
        ("failed", 1200, 1200),
        ("failed", 5003, 5003),
        ("timeout", None, 5004),
        ("cancelled", None, None),
        ("cancelled", 5000, 5000),
    ],
)
def test_failed_predictions_carry_their_failure_code(
    emulator: WaveSpeedEmulator, api: Api, status: str, code: int | None, expected: int | None
) -> None:
    emulator.set_outcome(status, code=code, times=1)
    failed = api.result(api.create(INSTANT))
    assert failed["status"] == status and failed["error"]
    assert failed.get("code") == expected
    assert emulator.prediction_state(failed["id"])["code"] == expected
    completed = api.result(api.create(INSTANT))
    assert completed["status"] == "completed" and "code" not in completed


def test_failure_codes_over_http_and_invalid_codes(emulator: WaveSpeedEmulator, api: Api) -> None:
    with EmulatorControl(emulator.url) as control:
        control.set_outcome("failed", code=1401, times=1)
        assert api.result(api.create(INSTANT))["code"] == 1401
        for bad in (200, 999, 6000, True, "1200"):
            with pytest.raises(ValueError):
                control.set_outcome("failed", code=bad)  # type: ignore[arg-type]


# -- the two-step upload ----------------------------------------------------------------------------


def ticket(api: Api, **body: Any) -> requests.Response:
    return api.session.post(f"{api.base}/api/v3/media/uploads", json=body)


def test_two_step_upload_stores_the_bytes_and_serves_them(emulator: WaveSpeedEmulator, api: Api) -> None:
    content = bytes(range(256)) * 40
    response = ticket(api, filename="my photo.png", size=len(content), content_type="image/png")
    assert response.status_code == 200 and response.json()["code"] == 200
    data = response.json()["data"]
    upload = data["upload"]
    assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": "image/png"}
    assert "signature=" in upload["url"]
    assert requests.get(data["download_url"]).status_code == 404  # nothing there before the PUT
    put = requests.put(upload["url"], headers=upload["headers"], data=content)  # no Authorization
    assert put.status_code == 200
    download = requests.get(data["download_url"])
    assert download.content == content and download.headers["content-type"] == "image/png"
    counters = emulator.counters()
    assert counters["requests"]["upload_ticket"] == 1 and counters["requests"]["upload_put"] == 1
    assert counters["upload_put_with_authorization"] == 0


def test_a_put_that_carries_the_api_key_is_recorded(emulator: WaveSpeedEmulator, api: Api) -> None:
    data = ticket(api, filename="a.bin", size=3).json()["data"]
    # A session with the key as a default header leaks it to the storage host: the emulator says so.
    leaked = api.session.put(data["upload"]["url"], headers=data["upload"]["headers"], data=b"abc")
    assert leaked.status_code == 200
    assert emulator.counters()["upload_put_with_authorization"] == 1


def test_the_put_streams_chunked_bodies(api: Api) -> None:
    chunks = [b"x" * 70_000, b"y" * 70_000, b"z"]
    data = ticket(api, filename="clip.mp4", size=sum(map(len, chunks))).json()["data"]
    assert data["upload"]["headers"] == {"Content-Type": "video/mp4"}  # guessed from the name
    put = requests.put(data["upload"]["url"], headers=data["upload"]["headers"], data=iter(chunks))
    assert put.status_code == 200, put.text
    assert requests.get(data["download_url"]).content == b"".join(chunks)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"url": lambda url: url.replace("signature=", "signature=0")}, 403, "SignatureDoesNotMatch"),
        ({"url": lambda url: url.split("?")[0]}, 403, "SignatureDoesNotMatch"),
        ({"headers": {"Content-Type": "application/octet-stream"}}, 403, "SignatureDoesNotMatch"),
        ({"data": b"too short"}, 400, "IncompleteBody"),
        ({"data": iter([b"a" * 20, b"b" * 20])}, 400, "IncompleteBody"),
    ],
)
def test_a_put_that_does_not_match_its_ticket_is_refused(
    api: Api, change: dict[str, Any], status: int, code: str
) -> None:
    data = ticket(api, filename="a.png", size=32).json()["data"]
    url = change.get("url", lambda url: url)(data["upload"]["url"])
    headers = change.get("headers", data["upload"]["headers"])
    put = requests.put(url, headers=headers, data=change.get("data", b"p" * 32))
    assert put.status_code == status and f"<Code>{code}</Code>" in put.text
    assert requests.get(data["download_url"]).status_code == 404


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"size": 3}, "filename"),
        ({"filename": "a.png", "size": -1}, "size"),
        ({"filename": "a.png", "size": "3"}, "size"),
        ({"filename": "a.png", "size": 3, "content_type": 7}, "content_type"),
        ({"filename": "a.png", "size": 20 * 1024 * 1024 + 1}, "image uploads are limited to 20 MB"),
        ({"filename": "a.mp4", "size": 100 * 1024 * 1024 + 1}, "video uploads are limited to 100 MB"),
        ({"filename": "a.mp3", "size": 50 * 1024 * 1024 + 1}, "audio uploads are limited to 50 MB"),
    ],
)
def test_invalid_tickets_are_400s(api: Api, body: dict[str, Any], text: str) -> None:
    assert_envelope_error(ticket(api, **body), 400, text)


def test_the_ticket_needs_the_key_and_the_older_flows_still_work(emulator: WaveSpeedEmulator, api: Api) -> None:
    assert requests.post(f"{api.base}/api/v3/media/uploads", json={"filename": "a", "size": 1}).status_code == 401
    for path, key in (("/api/v3/media/upload/binary", "download_url"), ("/api/v3/upload", "url")):
        response = api.session.post(f"{api.base}{path}", files={"file": ("a.png", b"png bytes", "image/png")})
        assert response.status_code == 200, response.text
        assert requests.get(response.json()["data"][key]).content == b"png bytes"
