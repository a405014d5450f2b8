"""reconcile()'s rules at their edges, on scripted history pages (the survivors of a mutation run).

tests/api/test_reconcile.py proves the rules against the emulator's history; here a scripted page
function gives the exact histories an edge needs (an entry created at the very instant of the send,
six look-alikes, identical inputs in one batch), and each reason a submit stays uncertain is checked
word for word: it is what the user is told to check before sending the input again.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from airflow_provider_wavespeed.api import PredictionPage
from airflow_provider_wavespeed.api._reconcile import Reconciled, canonical_inputs, reconcile
from airflow_provider_wavespeed.api.models import HistoryItem, Prediction
from airflow_provider_wavespeed.testing._state import rfc3339_nanos

FLUX = "wavespeed-ai/flux-dev"
SENT = 1_800_000_000.25  # 2027-01-15 08:00:00.250000 UTC
SENT_TEXT = "2027-01-15 08:00:00.250000 UTC"


def _item(
    prediction_id: str, inputs: dict[str, Any] | None, created: float = SENT + 1, model: str = FLUX
) -> HistoryItem:
    nanos = round(created * 1e6) * 1000  # exact: microseconds of these epochs are below 2**53
    data = {"id": prediction_id, "model": model, "status": "processing", "created_at": rfc3339_nanos(nanos)}
    return HistoryItem(Prediction.from_dict(data), inputs)


def _history(*looks: list[HistoryItem]) -> Any:
    """Return a list_page whose history is ``looks[n]`` on the n-th look (the last one from then on)."""
    calls: list[dict[str, Any]] = []

    async def list_page(**query: Any) -> PredictionPage:
        calls.append(query)
        items = looks[min(len(calls), len(looks)) - 1]
        return PredictionPage(page=query["page"], total=len(items), items=items)

    list_page.calls = calls  # type: ignore[attr-defined]
    return list_page


async def _no_sleep(seconds: float) -> None:
    pass


def _reconcile(list_page: Any, wanted: dict[Any, dict[str, Any]], **kwargs: Any) -> Reconciled[Any]:
    kwargs.setdefault("delays", (0.0,))
    return asyncio.run(reconcile(list_page, FLUX, wanted, SENT, sleep=_no_sleep, **kwargs))


def test_an_entry_created_at_the_very_instant_of_the_send_counts() -> None:
    found = _reconcile(_history([_item("ours", {"prompt": "x"}, created=SENT)]), {0: {"prompt": "x"}})
    assert (found.adopted, found.unresolved) == ({0: "ours"}, {})


def test_inputs_with_values_json_cannot_write_are_still_compared() -> None:
    """The inputs sent may hold a value (a date) the history gives back as its text: they still match."""
    when = datetime.date(2026, 12, 6)
    assert canonical_inputs({"b": when, "a": 1}) == canonical_inputs({"a": 1, "b": "2026-12-06"})
    history = _history([_item("ours", {"prompt": "x", "day": "2026-12-06"})])
    found = _reconcile(history, {0: {"prompt": "x", "day": when}})
    assert found.adopted == {0: "ours"}


def test_keys_of_any_hashable_type_are_reconciled_together() -> None:
    """The keys are the caller's (a batch's indexes, a submit's own name): they need not be comparable."""
    history = _history([_item("p-int", {"prompt": "a"}), _item("p-str", {"prompt": "b"})])
    found = _reconcile(history, {0: {"prompt": "a"}, "single": {"prompt": "b"}, None: {"prompt": "c"}})
    assert found.adopted == {0: "p-int", "single": "p-str"} and list(found.unresolved) == [None]


def test_every_input_with_one_match_is_confirmed_on_the_same_looks() -> None:
    history = _history([_item("pa", {"prompt": "a"}), _item("pb", {"prompt": "b"}), _item("pc", {"prompt": "c"})])
    found = _reconcile(history, {0: {"prompt": "a"}, 1: {"prompt": "b"}, 2: {"prompt": "c"}})
    assert (found.adopted, found.unresolved) == ({0: "pa", 1: "pb", 2: "pc"}, {})
    assert len(history.calls) == 2  # one look, and the one that confirms all three


def test_identical_inputs_of_one_batch_are_never_adopted() -> None:
    history = _history([_item("p1", {"prompt": "x"}), _item("other", {"prompt": "y"})])
    found = _reconcile(history, {0: {"prompt": "x"}, 1: {"prompt": "x"}, 2: {"prompt": "y"}})
    assert found.adopted == {2: "other"}
    reason = (
        "prediction p1 matches, but other inputs of this batch are identical, so it is not known to be this input's"
    )
    assert found.unresolved == {0: reason, 1: reason}


def test_several_matches_are_named_five_at_most() -> None:
    history = _history([_item(f"p{n}", {"prompt": "x"}, created=SENT + n) for n in range(6)])
    found = _reconcile(history, {0: {"prompt": "x"}})
    assert found.unresolved == {
        0: f"6 predictions of {FLUX} created since the send ({SENT_TEXT}) have these inputs "
        "(p0, p1, p2, p3, p4), so none is known to be this submit's"
    }


def test_each_reason_a_submit_stays_uncertain_says_what_was_seen() -> None:
    nothing = _reconcile(_history([]), {0: {"prompt": "x"}})
    assert nothing.unresolved == {
        0: f"no prediction of {FLUX} with these inputs in the history, created since the send ({SENT_TEXT}), "
        "after 2 looks"
    }
    late = _reconcile(_history([], [_item("p1", {"prompt": "x"})]), {0: {"prompt": "x"}})
    assert late.unresolved == {
        0: f"prediction p1 of {FLUX} with these inputs appeared only on the last of 2 looks, so no later look "
        "could show that it is the only one"
    }
    bare = _reconcile(_history([_item("p1", None)]), {0: {"prompt": "x"}})
    assert bare.unresolved == {
        0: f"the history of {FLUX} since the send ({SENT_TEXT}) cannot be matched to inputs (entry p1 carries no "
        "inputs: this history does not list them), so no entry can be called this submit's"
    }


def test_a_match_that_vanished_from_a_look_must_be_confirmed_anew() -> None:
    ours = _item("p1", {"prompt": "x"})
    found = _reconcile(_history([ours], [], [ours]), {0: {"prompt": "x"}}, delays=(0.0, 0.0))
    assert found.adopted == {} and "appeared only on the last of 3 looks" in found.unresolved[0]


def test_an_input_with_no_match_does_not_hold_back_the_others() -> None:
    history = _history([_item("p1", {"prompt": "matched"})])
    found = _reconcile(history, {0: {"prompt": "never sent"}, 1: {"prompt": "matched"}})
    assert found.adopted == {1: "p1"} and list(found.unresolved) == [0]


def test_the_history_is_asked_for_entries_since_the_earliest_send() -> None:
    history = _history([_item("p1", {"prompt": "x"})])
    asyncio.run(
        reconcile(history, FLUX, {0: {"prompt": "x"}, 1: {"prompt": "y"}}, {0: SENT, 1: SENT - 60}, sleep=_no_sleep)
    )
    since = datetime.datetime.fromtimestamp(SENT - 60, tz=datetime.timezone.utc)
    assert history.calls[0] == {"page": 1, "page_size": 100, "model": FLUX, "created_after": since}


def test_entries_the_match_cannot_be_are_skipped_not_the_rest_of_the_page() -> None:
    """Pass over another model's entry, one our records hold, one from before the send, and go on.

    An entry of this model listed without its model name is still this model's.
    """
    entries = [
        _item("other-model", {"prompt": "x"}, model="wavespeed-ai/other"),
        _item("held", {"prompt": "x"}),
        _item("old", {"prompt": "x"}, created=SENT - 1),
        _item("ours", {"prompt": "x"}),
        _item("nameless", {"prompt": "y"}, model=""),
    ]
    found = _reconcile(_history(entries), {0: {"prompt": "x"}, 1: {"prompt": "y"}}, known_ids={"held"})
    assert (found.adopted, found.unresolved) == ({0: "ours", 1: "nameless"}, {})


def _paged(entries: list[HistoryItem], total: int | None) -> Any:
    """Return a list_page over one history of ``entries``, 100 a page, that says ``total`` (or no total)."""
    calls: list[int] = []

    async def list_page(**query: Any) -> PredictionPage:
        calls.append(query["page"])
        start = (query["page"] - 1) * query["page_size"]
        return PredictionPage(page=query["page"], total=total, items=entries[start : start + query["page_size"]])

    list_page.calls = calls  # type: ignore[attr-defined]
    return list_page


def _others(count: int) -> list[HistoryItem]:
    return [_item(f"o{n}", {"prompt": f"other {n}"}) for n in range(count)]


def test_pages_are_read_until_the_total_the_api_gives() -> None:
    for pages, total in ((1, 100), (2, 200), (3, 250)):
        history = _paged([*_others(total - 1), _item("ours", {"prompt": "x"})], total)
        found = _reconcile(history, {0: {"prompt": "x"}})
        assert found.adopted == {0: "ours"} and history.calls == list(range(1, pages + 1)) * 2, total


def test_a_short_page_is_the_last_when_the_api_gives_no_total() -> None:
    history = _paged([*_others(30), _item("ours", {"prompt": "x"})], None)
    found = _reconcile(history, {0: {"prompt": "x"}})
    assert found.adopted == {0: "ours"} and history.calls == [1, 1]


def test_an_entry_listed_again_on_the_next_page_is_one_entry() -> None:
    """New predictions push the history down while it is read: the last entry of a page comes again first."""
    ours = _item("ours", {"prompt": "x"})
    history = _paged([*_others(99), ours, ours], None)
    found = _reconcile(history, {0: {"prompt": "x"}})
    assert found.adopted == {0: "ours"}
