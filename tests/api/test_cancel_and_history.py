"""cancel_prediction and list_predictions on the sync and async clients and the hook, against the emulator.

Predictions that must still be running are held (``hold``): nothing here depends on the
machine's speed.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from airflow_provider_wavespeed.api import (
    AsyncWaveSpeedClient,
    PredictionPage,
    RetryPolicy,
    WaveSpeedAuthError,
    WaveSpeedClient,
    WaveSpeedNotFoundError,
    WaveSpeedPredictionFailedError,
    WaveSpeedResponseError,
    WaveSpeedServerError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
FAST = RetryPolicy(max_retries=3, rate_limit_retries=5, backoff_base=0.01, backoff_max=0.05)
UTC = datetime.timezone.utc


@pytest.fixture
def client(wavespeed_emulator: WaveSpeedEmulator) -> WaveSpeedClient:
    return WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=FAST)


@pytest.fixture
def emulator(wavespeed_emulator: WaveSpeedEmulator) -> WaveSpeedEmulator:
    wavespeed_emulator.hold()  # every prediction runs until released or deleted
    return wavespeed_emulator


# -- cancel -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_cancel_stops_a_running_prediction_and_the_wait_ends(
    emulator: WaveSpeedEmulator, client: WaveSpeedClient, cancel_status: str
) -> None:
    emulator.set_cancel_status(cancel_status)
    prediction = client.submit(FLUX, {"prompt": "a cat"})
    answered = client.cancel_prediction(prediction.id)
    assert answered is not None and (answered.id, answered.status) == (prediction.id, cancel_status)
    assert answered.is_terminal and not answered.is_success
    with pytest.raises(WaveSpeedPredictionFailedError) as info:
        client.wait_for_prediction(prediction.id, poll_interval=0.01, timeout=10)
    assert info.value.status == cancel_status
    counters = emulator.counters()
    assert counters["cancelled"] == 1 and counters["delete_requests"] == {prediction.id: 1}


def test_cancel_is_retried_after_a_lost_answer_and_a_server_error(
    emulator: WaveSpeedEmulator, client: WaveSpeedClient
) -> None:
    prediction = client.submit(FLUX, {"prompt": "a cat"})
    emulator.add_fault("delete_prediction", "drop_after_delete")  # acted on, answer lost
    emulator.add_fault("delete_prediction", "http_error", status=503)  # the second attempt: a 503
    answered = client.cancel_prediction(prediction.id)
    assert answered is not None and answered.status == "deleted"
    assert emulator.counters()["requests"]["delete_prediction"] == 3
    # Safe because idempotent: the first DELETE did it, the third changed nothing.
    assert emulator.counters()["cancelled"] == 1
    assert emulator.prediction_state(prediction.id)["delete_requests"] == 2


def test_cancel_errors_are_mapped_like_other_calls(emulator: WaveSpeedEmulator, client: WaveSpeedClient) -> None:
    with pytest.raises(WaveSpeedNotFoundError) as missing:
        client.cancel_prediction("f" * 32)
    assert missing.value.prediction_id == "f" * 32 and "cancel of prediction" in str(missing.value)
    with pytest.raises(WaveSpeedValidationError):
        client.cancel_prediction("../balance")
    prediction = client.submit(FLUX, {"prompt": "a cat"})
    emulator.add_fault("delete_prediction", "http_error", status=503, times=None)
    with pytest.raises(WaveSpeedServerError):
        client.cancel_prediction(prediction.id)
    assert emulator.counters()["requests"]["delete_prediction"] == 1 + (1 + FAST.max_retries)  # the 404, then these
    emulator.clear_faults()
    emulator.set_api_key("another-key")
    with pytest.raises(WaveSpeedAuthError) as denied:
        client.cancel_prediction(prediction.id)
    assert emulator.api_key not in str(denied.value) and "another-key" not in str(denied.value)
    assert emulator.counters()["cancelled"] == 0


def test_cancel_tolerates_an_answer_without_a_prediction(emulator: WaveSpeedEmulator, client: WaveSpeedClient) -> None:
    prediction = client.submit(FLUX, {"prompt": "a cat"})
    emulator.add_fault("delete_prediction", "wrong_types")  # a 200 envelope whose data is no prediction
    assert client.cancel_prediction(prediction.id) is None
    # wrong_types answers before acting: nothing was cancelled, and the caller was not told otherwise.
    assert client.get_prediction(prediction.id).status == "processing"


# -- the history ----------------------------------------------------------------------------------------


def test_list_predictions_filters_and_carries_inputs(emulator: WaveSpeedEmulator, client: WaveSpeedClient) -> None:
    before = datetime.datetime.now(UTC)
    first = client.submit(FLUX, {"prompt": "one", "seed": 1})
    second = client.submit(WAN_T2V, {"prompt": "two"})
    page = client.list_predictions()
    assert isinstance(page, PredictionPage) and page.total == 2 and page.unreadable == 0
    assert [item.prediction.id for item in page.items] == [second.id, first.id]
    assert page.items[1].input == {"prompt": "one", "seed": 1}
    assert page.items[1].prediction.model == FLUX and page.items[1].prediction.status == "processing"
    assert [i.prediction.id for i in client.list_predictions(model=FLUX, created_after=before).items] == [first.id]
    assert client.list_predictions(created_before=before).items == []
    assert client.list_predictions(status="completed").total == 0
    emulator.backdate(first.id, 3600)
    recent = client.list_predictions(created_after=(before - datetime.timedelta(minutes=1)).isoformat())
    assert [item.prediction.id for item in recent.items] == [second.id]
    paged = client.list_predictions(page=2, page_size=1)
    assert paged.page == 2 and [item.prediction.id for item in paged.items] == [first.id]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"page": 0}, "page"),
        ({"page_size": 101}, "page_size"),
        ({"created_after": datetime.datetime(2025, 1, 1)}, "time zone"),  # naive: refused
        ({"created_before": "last week"}, "ISO 8601"),
        ({"model": "not a model"}, "model"),
    ],
)
def test_list_predictions_refuses_bad_queries_before_sending(
    wavespeed_emulator: WaveSpeedEmulator, client: WaveSpeedClient, query: dict[str, Any], message: str
) -> None:
    with pytest.raises(WaveSpeedValidationError, match=message):
        client.list_predictions(**query)
    assert wavespeed_emulator.counters()["total_requests"] == 0


def test_list_predictions_sends_utc_times(wavespeed_emulator: WaveSpeedEmulator, client: WaveSpeedClient) -> None:
    prediction = client.submit(FLUX, {"prompt": "tz"})
    created = wavespeed_emulator.prediction_state(prediction.id)["created_at"]
    moment = datetime.datetime.fromisoformat(created[:26] + "+00:00")  # microseconds: at or just before
    in_tokyo = moment.astimezone(datetime.timezone(datetime.timedelta(hours=9)))
    assert [item.prediction.id for item in client.list_predictions(created_after=in_tokyo).items] == [prediction.id]
    later = in_tokyo + datetime.timedelta(microseconds=1)
    assert client.list_predictions(created_after=later).items == []


def test_list_predictions_skips_unreadable_entries_and_counts_them(
    wavespeed_emulator: WaveSpeedEmulator, client: WaveSpeedClient
) -> None:
    wavespeed_emulator.add_fault("history", "wrong_types")  # `items` is an object: no page to read
    with pytest.raises(WaveSpeedResponseError, match="items"):
        client.list_predictions()
    page = PredictionPage.from_dict(
        {"page": 1, "total": 3, "items": [{"id": "a", "status": "completed", "outputs": ["u"]}, {"id": 5}, "x"]},
        page=1,
        context="test",
    )
    assert [item.prediction.id for item in page.items] == ["a"] and page.unreadable == 2
    assert page.items[0].input is None
    with_inputs = PredictionPage.from_dict(
        {"items": [{"id": "b", "status": "failed", "inputs": {"prompt": "p"}}]}, page=4, context="test"
    )
    assert with_inputs.page == 4 and with_inputs.total is None and with_inputs.items[0].input == {"prompt": "p"}


# -- async client and hook --------------------------------------------------------------------------------


async def test_async_client_cancels_and_lists(emulator: WaveSpeedEmulator) -> None:
    async with AsyncWaveSpeedClient(emulator.api_key, emulator.url, retry=FAST) as client:
        prediction = await client.submit(FLUX, {"prompt": "async"})
        emulator.add_fault("delete_prediction", "drop_after_delete")
        answered = await client.cancel_prediction(prediction.id)
        assert answered is not None and answered.status == "deleted"
        assert emulator.counters()["cancelled"] == 1
        with pytest.raises(WaveSpeedNotFoundError):
            await client.cancel_prediction("e" * 32)
        listed = await client.list_predictions(model=FLUX)
        assert listed.items == []  # a deleted prediction leaves the history
        other = await client.submit(FLUX, {"prompt": "kept"})
        listed = await client.list_predictions(model=FLUX, created_after=datetime.datetime.now(UTC).isoformat())
        assert listed.items == []  # created before that moment
        listed = await client.list_predictions(model=FLUX)
        assert [(item.prediction.id, item.input) for item in listed.items] == [(other.id, {"prompt": "kept"})]


@pytest.mark.parametrize("use_async", [False, True])
async def test_hook_delegates(wavespeed_connection: WaveSpeedEmulator, use_async: bool) -> None:
    wavespeed_connection.hold()
    hook = WaveSpeedHook()
    prediction = hook.submit(FLUX, {"prompt": "hooked"})
    if use_async:
        page = await hook.alist_predictions(model=FLUX)
        answered = await hook.acancel_prediction(prediction.id)
    else:
        page = hook.list_predictions(model=FLUX)
        answered = hook.cancel_prediction(prediction.id)
    assert [item.prediction.id for item in page.items] == [prediction.id]
    assert answered is not None and answered.status == "deleted"
    assert wavespeed_connection.counters()["delete_requests"] == {prediction.id: 1}
