"""api/reconcile.py: finding a submit's prediction in the history, against the emulator (no Airflow).

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
from airflow_provider_wavespeed.api.models import HistoryItem, Prediction
from airflow_provider_wavespeed.api.reconcile import CLOCK_SKEW, reconcile
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"


def _run(emulator: WaveSpeedEmulator, wanted: dict[Any, dict[str, Any]], sent_at: float, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with AsyncWaveSpeedClient(emulator.api_key, emulator.url) as client:
            return await reconcile(client.list_predictions, FLUX, wanted, sent_at, delays=(), **kwargs)

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


@pytest.mark.parametrize(("age", "adopted"), [(CLOCK_SKEW / 2, False), (CLOCK_SKEW * 2, True)])
def test_a_look_alike_by_the_official_sdk_counts_within_the_clock_skew_margin_only(
    wavespeed_emulator: WaveSpeedEmulator, age: float, adopted: bool
) -> None:
    sdk = wavespeed.Client(api_key=wavespeed_emulator.api_key, base_url=wavespeed_emulator.url)
    sdk.run(FLUX, {"prompt": "a whale"}, poll_interval=0.01)
    (look_alike,) = wavespeed_emulator.submissions()
    wavespeed_emulator.backdate(look_alike["id"], age)
    sent_at = time.time()
    ours = WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url).submit(FLUX, {"prompt": "a whale"})
    found = _run(wavespeed_emulator, {0: {"prompt": "a whale"}}, sent_at)
    if adopted:
        assert found.adopted == {0: ours.id}
    else:
        assert found.adopted == {} and "2 predictions" in found.unresolved[0]
        assert ours.id in found.unresolved[0] and look_alike["id"] in found.unresolved[0]


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


def _item(prediction_id: str, inputs: dict[str, Any] | None, model: str = FLUX) -> HistoryItem:
    return HistoryItem(Prediction.from_dict({"id": prediction_id, "model": model, "status": "processing"}), inputs)


def _pages(*pages: PredictionPage) -> Any:
    calls: list[dict[str, Any]] = []

    async def list_page(**query: Any) -> PredictionPage:
        calls.append(query)
        return pages[min(len(calls), len(pages)) - 1]

    list_page.calls = calls  # type: ignore[attr-defined]
    return list_page


async def _no_sleep(seconds: float) -> None:
    pass


def test_a_late_listing_is_found_on_a_later_look() -> None:
    empty = PredictionPage(page=1, total=0, items=[])
    listed = PredictionPage(page=1, total=1, items=[_item("p1", {"prompt": "x"})])
    list_page = _pages(empty, listed)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, time.time(), sleep=_no_sleep))
    assert found.adopted == {0: "p1"} and len(list_page.calls) == 2


@pytest.mark.parametrize(
    ("page", "why"),
    [
        (PredictionPage(page=1, total=2, items=[_item("p1", {"prompt": "x"})], unreadable=1), "unreadable"),
        (PredictionPage(page=1, total=2, items=[_item("p1", {"prompt": "x"}), _item("p2", None)]), "no inputs"),
    ],
    ids=["unreadable-entry", "entry-without-inputs"],
)
def test_a_history_not_read_whole_adopts_nothing(page: PredictionPage, why: str) -> None:
    list_page = _pages(page)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, time.time(), sleep=_no_sleep))
    assert found.adopted == {} and "could not be read whole" in found.unresolved[0] and why in found.unresolved[0]
    assert len(list_page.calls) == 1  # looking again would not make it whole


def test_every_page_is_read_and_a_longer_history_is_not_whole() -> None:
    full = PredictionPage(page=1, total=None, items=[_item(f"o{i}", {"prompt": f"other {i}"}) for i in range(100)])
    list_page = _pages(full)
    found = asyncio.run(reconcile(list_page, FLUX, {0: {"prompt": "x"}}, time.time(), sleep=_no_sleep))
    assert [call["page"] for call in list_page.calls] == list(range(1, 11))
    assert "more than 1000 entries" in found.unresolved[0]
    assert all(call["model"] == FLUX and call["page_size"] == 100 for call in list_page.calls)
