"""api/_reconcile.py: finding a submit's prediction in the history, against the emulator (no Airflow).

The async client reads the emulator's history over loopback HTTP; the official SDK submits the
look-alikes another client of the same account would create. Where the history's contents must
be odd (an entry without inputs, an unreadable entry, lag), a scripted page function stands in.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import wavespeed

from airflow_provider_wavespeed.api import AsyncWaveSpeedClient, PredictionPage, WaveSpeedClient
from airflow_provider_wavespeed.api._reconcile import reconcile
from airflow_provider_wavespeed.api.models import HistoryItem, Prediction
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.testing._state import rfc3339_nanos

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"


def _run(emulator: WaveSpeedEmulator, wanted: dict[Any, dict[str, Any]], sent_at: Any, **kwargs: Any) -> Any:
    """Reconcile against the emulator's history with pauses that take no time (a look, and one to confirm)."""
    kwargs.setdefault("delays", (0.0,))
    kwargs.setdefault("sleep", _no_sleep)

    async def go() -> Any:
        async with AsyncWaveSpeedClient(emulator.api_key, emulator.url) as client:
            return await reconcile(client.list_predictions, FLUX, wanted, sent_at, **kwargs)

    return asyncio.run(go())


def test_the_one_match_is_adopted_and_other_models_and_inputs_are_ignored(
    wavespeed_emulator: WaveSpeedEmulator,
) -> None:
    sent_at = time.time()
    client = WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url)
    ours = client.submit(FLUX, {"prompt": "a fox", "seed": 1})
    client.submit(FLUX, {"prompt": "a fox", "seed": 2})  # other inputs
    client.submit(WAN_T2V, {"prompt": "a fox", "seed": 1})  # same inputs, other model
    found = _run(wavespeed_emulator, {"a": {"seed": 1, "prompt": "a fox"}}, sent_at)  # key order is not compared
    assert (found.adopted, found.unresolved) == ({"a": ours.id}, {})


@pytest.mark.parametrize("ours_created", [True, False], ids=["ours-created", "ours-created-nothing"])
def test_a_look_alike_created_before_the_send_never_counts(
    wavespeed_emulator: WaveSpeedEmulator, ours_created: bool
) -> None:
    """Issue 28: another client's prediction with the same inputs, created a moment before this send, is
    neither a second candidate nor, when this submit created nothing, adopted in its place."""
    sdk = wavespeed.Client(api_key=wavespeed_emulator.api_key, base_url=wavespeed_emulator.url)
    sdk.run(FLUX, {"prompt": "a whale"}, poll_interval=0.01)
    (look_alike,) = wavespeed_emulator.submissions()
    sent_at = time.time()
    if ours_created:
        ours = WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url).submit(FLUX, {"prompt": "a whale"})
    found = _run(wavespeed_emulator, {0: {"prompt": "a whale"}}, sent_at)
    if ours_created:
        assert found.adopted == {0: ours.id}
    else:
        assert found.adopted == {} and "no prediction" in found.unresolved[0]
        assert look_alike["id"] not in found.unresolved[0]


def test_each_input_counts_entries_from_its_own_send_on(wavespeed_emulator: WaveSpeedEmulator) -> None:
    """A batch's inputs sent in different windows: an entry created before an input's own send is not its."""
    client = WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url)
    first_sent = time.time()
    early = client.submit(FLUX, {"prompt": "early"})
    other = client.submit(FLUX, {"prompt": "late"})  # another task's, before the second window's send
    second_sent = time.time()
    found = _run(wavespeed_emulator, {0: {"prompt": "early"}, 1: {"prompt": "late"}}, {0: first_sent, 1: second_sent})
    assert found.adopted == {0: early.id} and 1 in found.unresolved and other.id not in found.unresolved[1]


def test_known_ids_are_never_adopted_twice_and_identical_uncertain_inputs_stay_unresolved(
    wavespeed_emulator: WaveSpeedEmulator,
) -> None:
    sent_at = time.time()
    client = WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url)
    first = client.submit(FLUX, {"prompt": "same"})
    second = client.submit(FLUX, {"prompt": "same"})
    found = _run(wavespeed_emulator, {1: {"prompt": "same"}}, sent_at, known_ids={first.id})
    assert found.adopted == {1: second.id}
    both = _run(wavespeed_emulator, {0: {"prompt": "same"}, 1: {"prompt": "same"}}, sent_at)
    assert both.adopted == {} and set(both.unresolved) == {0, 1}


def test_nothing_created_is_unresolved_after_every_look(wavespeed_emulator: WaveSpeedEmulator) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def go() -> Any:
        async with AsyncWaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url) as client:
            return await reconcile(client.list_predictions, FLUX, {0: {"prompt": "x"}}, time.time(), sleep=sleep)

    found = asyncio.run(go())
    assert found.adopted == {} and "after 4 looks" in found.unresolved[0]
    assert sleeps == [1.0, 2.0, 4.0]  # bounded: 7 s in all
    assert wavespeed_emulator.counters()["requests"]["history"] == 4


# -- odd histories: scripted pages ---------------------------------------------------------------------


def _item(
    prediction_id: str, inputs: dict[str, Any] | None, model: str = FLUX, created: str | None = "now"
) -> HistoryItem:
    """A history entry created now (after any send the test made before)."""
    data = {"id": prediction_id, "model": model, "status": "processing"}
    if created is not None:
        data["created_at"] = rfc3339_nanos(time.time_ns()) if created == "now" else created
    return HistoryItem(Prediction.from_dict(data), inputs)


def _pages(*pages: PredictionPage) -> Any:
    calls: list[dict[str, Any]] = []

    async def list_page(**query: Any) -> PredictionPage:
        calls.append(query)
        return pages[min(len(calls), len(pages)) - 1]

    list_page.calls = calls  # type: ignore[attr-defined]
    return list_page


async def _no_sleep(seconds: float) -> None:
    pass


def test_a_late_listing_is_found_on_a_later_look_and_confirmed_by_the_next() -> None:
    sent_at = time.time()
    empty = PredictionPage(page=1, total=0, items=[])
    listed = PredictionPage(page=1, total=1, items=[_item("p1", {"prompt": "x"})])
    list_page = _pages(empty, listed)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, sent_at, sleep=_no_sleep))
    assert found.adopted == {0: "p1"} and len(list_page.calls) == 3


def test_a_single_match_is_not_adopted_when_the_next_look_lists_a_second() -> None:
    """Issue 30: the history may list a prediction late; one entry alone on a look may be another's while
    ours is not listed yet."""
    sent_at = time.time()
    first = PredictionPage(page=1, total=1, items=[_item("theirs", {"prompt": "x"})])
    both = PredictionPage(page=1, total=2, items=[_item("ours", {"prompt": "x"}), _item("theirs", {"prompt": "x"})])
    list_page = _pages(first, both)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, sent_at, sleep=_no_sleep))
    assert found.adopted == {} and "2 predictions" in found.unresolved[0] and len(list_page.calls) == 2


def test_a_match_first_seen_on_the_last_look_is_not_adopted() -> None:
    sent_at = time.time()
    empty = PredictionPage(page=1, total=0, items=[])
    listed = PredictionPage(page=1, total=1, items=[_item("p1", {"prompt": "x"})])
    list_page = _pages(empty, empty, listed)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, sent_at, delays=(0.0, 0.0), sleep=_no_sleep))
    assert found.adopted == {} and "only on the last of 3 looks" in found.unresolved[0]


def test_entries_created_before_the_send_are_ignored_even_when_the_api_lists_them() -> None:
    """The created_after filter is the API's; an entry it lets through from before the send does not count."""
    sent_at = time.time()
    old = _item("old", {"prompt": "x"}, created=rfc3339_nanos(int((sent_at - 0.5) * 1e9)))
    list_page = _pages(PredictionPage(page=1, total=1, items=[old]))
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, sent_at, delays=(0.0,), sleep=_no_sleep))
    assert found.adopted == {} and "no prediction" in found.unresolved[0]


@pytest.mark.parametrize(
    ("page", "why"),
    [
        (PredictionPage(page=1, total=2, items=[_item("p1", {"prompt": "x"})], unreadable=1), "unreadable"),
        (PredictionPage(page=1, total=2, items=[_item("p1", {"prompt": "x"}), _item("p2", None)]), "no inputs"),
        (
            PredictionPage(page=1, total=2, items=[_item("p1", {"prompt": "x"}), _item("p2", {}, created=None)]),
            "no readable created_at",
        ),
    ],
    ids=["unreadable-entry", "entry-without-inputs", "entry-without-created-at"],
)
def test_a_history_that_cannot_be_matched_adopts_nothing(page: PredictionPage, why: str) -> None:
    list_page = _pages(page)
    found = asyncio.run(
        reconcile(list_page, FLUX, {0: {"prompt": "x"}}, 0.0, sleep=_no_sleep)
    )  # entries: at collection
    assert found.adopted == {} and "cannot be matched" in found.unresolved[0] and why in found.unresolved[0]
    assert len(list_page.calls) == 1  # looking again would not make it whole


def test_every_page_is_read_and_a_longer_history_is_not_whole() -> None:
    full = PredictionPage(page=1, total=None, items=[_item(f"o{i}", {"prompt": f"other {i}"}) for i in range(100)])
    list_page = _pages(full)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, time.time(), sleep=_no_sleep))
    assert [call["page"] for call in list_page.calls] == list(range(1, 11))
    assert "more than 1000 entries" in found.unresolved[0]
    assert all(call["model"] == FLUX and call["page_size"] == 100 for call in list_page.calls)


# -- the emulator made no kinder than the API: no inputs in the history, a history that lags ---------------


def test_a_history_without_inputs_never_adopts(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.set_history(inputs=False)
    sent_at = time.time()
    WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url).submit(FLUX, {"prompt": "ours"})
    found = _run(wavespeed_emulator, {0: {"prompt": "ours"}}, sent_at)
    assert found.adopted == {} and "carries no inputs" in found.unresolved[0]


def test_a_prediction_the_history_lists_late_is_found_on_a_later_look(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.set_history(lag=3600.0)
    sent_at = time.time()
    ours = WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url).submit(FLUX, {"prompt": "late"})

    async def pause(seconds: float) -> None:  # the lag ends during the first pause: on the emulator's controls
        wavespeed_emulator.set_history(lag=0.0)

    found = _run(wavespeed_emulator, {0: {"prompt": "late"}}, sent_at, delays=(1.0, 2.0, 4.0), sleep=pause)
    assert found.adopted == {0: ours.id}
    assert wavespeed_emulator.counters()["requests"]["history"] == 3  # missed, found, confirmed


def test_a_prediction_listed_later_than_every_look_stays_unresolved(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.set_history(lag=3600.0)
    sent_at = time.time()
    WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url).submit(FLUX, {"prompt": "later"})
    found = _run(wavespeed_emulator, {0: {"prompt": "later"}}, sent_at, delays=(1.0, 2.0, 4.0))
    assert found.adopted == {} and "after 4 looks" in found.unresolved[0]
    assert wavespeed_emulator.counters()["requests"]["history"] == 4
