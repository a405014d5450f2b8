"""Find a submit's prediction in the account's history when its answer never came (no Airflow here).

A submit whose outcome is unknown (sent, no answer: :class:`~.errors.WaveSpeedSubmitUncertainError`,
or a worker that died with the submit in flight) may have created, and billed, a prediction. The
history (``POST /api/v3/predictions``) is searched for it: an entry of the same model, created at
or after the send, with the same inputs, that no record of ours already holds (``known_ids``).

The rule, and what it rests on:

- **Created at or after the send, with no margin before it.** ``created_at`` is the API's clock,
  the send time this machine's. A margin before the send would only let a look-alike created just
  before it count. With this machine's clock *ahead* of the API's by more than the request's
  travel time, our own prediction reads as created before the send: not adopted (uncertain, safe).
  With it *behind* by ``d``, a look-alike created up to ``d`` before the send counts: keep NTP on.
  An entry with no readable ``created_at`` is a doubt.
- **Exactly one such entry, seen twice.** Several: uncertain. One: looked for again after the
  next delay (the history may list a new prediction a moment late, e.g. ours beside another's);
  adopted only when the next look still shows that one alone. A match first seen on the last look
  is not adopted.
- **The inputs must be listed.** The documented history items carry no inputs; when an entry of
  this model since the send has none, no entry can be called this submit's: uncertain.
- **What it cannot see.** Another submitter of the same model and inputs (another map index,
  another run, another client of the account) whose request reached the API while ours was in
  flight, when ours created nothing: its entry is the one match. Only ids the caller knows are held
  exclude it: ``known_ids`` here, and the operators drop an adoption another task of the DAG run
  holds (``_records.unheld_in_this_run``); no global view of every task's records exists.

Uncertain inputs are never sent again: the caller reports them with what to check.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from airflow_provider_wavespeed.api.models import PredictionPage

__all__ = ["LOOK_DELAYS", "Reconciled", "canonical_inputs", "reconcile"]

# Pauses before each further look, in seconds: the history may list a new prediction a moment late,
# and a single match is adopted only when the next look shows it again (7 s in all at most).
LOOK_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0)
_PAGE_SIZE = 100
# Pages read per look at most; a longer history of this model since the send is "not whole".
_MAX_PAGES = 10

K = TypeVar("K", bound=Hashable)
ListPage = Callable[..., Awaitable[PredictionPage]]


@dataclass(frozen=True)
class Reconciled(Generic[K]):
    """Per wanted key: the adopted prediction id, or why none was adopted."""

    adopted: dict[K, str]
    unresolved: dict[K, str]


def canonical_inputs(inputs: object) -> str:
    """Return inputs as one JSON text, the same for equal inputs whatever their key order (how inputs compare)."""
    return json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)


async def reconcile(
    list_page: ListPage,
    model: str,
    wanted: Mapping[K, Mapping[str, Any]],
    sent_at: float | Mapping[K, float],
    *,
    known_ids: frozenset[str] | set[str] = frozenset(),
    delays: tuple[float, ...] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Reconciled[K]:
    """Match each of ``wanted`` (key -> the inputs sent) to the one history entry of ``model`` like it.

    ``list_page(**HistoryQuery)`` reads one history page (a client's ``list_predictions``);
    ``sent_at`` is the epoch time just before the send (one for all, or per key); ``known_ids`` are
    predictions our records already hold (never adopted). The history is read once, then again
    after each of ``delays`` (default :data:`LOOK_DELAYS`) while an input has no match or a match
    not yet confirmed by a later look; several matches, or a history that cannot be matched
    (unreadable entries, no inputs, no creation time, too long), end the looking for that input.
    Identical inputs among ``wanted`` match the same entries: they stay unresolved.
    A failed history read raises (the caller keeps the inputs uncertain).
    """
    delays = LOOK_DELAYS if delays is None else delays
    sends = {key: float(sent_at[key] if isinstance(sent_at, Mapping) else sent_at) for key in wanted}
    canon = {key: canonical_inputs(dict(inputs)) for key, inputs in wanted.items()}
    adopted: dict[K, str] = {}
    unresolved: dict[K, str] = {}
    seen_alone: dict[K, str] = {}  # the one match of the last look, to be confirmed by the next
    pending = set(canon)
    for look in range(len(delays) + 1):
        if look:
            await sleep(delays[look - 1])
        since = min(sends[key] for key in pending)
        entries, broken = await _history_matches(list_page, model, since, set(canon[k] for k in pending), known_ids)
        last = look == len(delays)
        for key in sorted(pending, key=repr):
            when = f"{_utc(sends[key]):%Y-%m-%d %H:%M:%S.%f} UTC"
            found = [pid for pid, created in entries.get(canon[key], []) if created >= sends[key]]
            if broken:
                unresolved[key] = (
                    f"the history of {model} since the send ({when}) cannot be matched to inputs ({broken}), "
                    "so no entry can be called this submit's"
                )
            elif len(found) > 1:
                unresolved[key] = (
                    f"{len(found)} predictions of {model} created since the send ({when}) have these inputs "
                    f"({', '.join(found[:5])}), so none is known to be this submit's"
                )
            elif len(found) == 1 and list(canon.values()).count(canon[key]) > 1:
                unresolved[key] = (
                    f"prediction {found[0]} matches, but other inputs of this batch are identical, so it is "
                    "not known to be this input's"
                )
            elif len(found) == 1 and seen_alone.get(key) == found[0]:
                adopted[key] = found[0]
            elif len(found) == 1 and not last:
                seen_alone[key] = found[0]  # adopted if the next look shows no second one
                continue
            elif len(found) == 1:
                unresolved[key] = (
                    f"prediction {found[0]} of {model} with these inputs appeared only on the last of "
                    f"{look + 1} looks, so no later look could show that it is the only one"
                )
            else:
                seen_alone.pop(key, None)
                unresolved[key] = (
                    f"no prediction of {model} with these inputs in the history, created since the send "
                    f"({when}), after {look + 1} looks"
                )
                continue
            pending.discard(key)
        if not pending:
            break
    return Reconciled(adopted, {k: v for k, v in unresolved.items() if k not in adopted})


async def _history_matches(
    list_page: ListPage, model: str, since: float, wanted: set[str], known_ids: frozenset[str] | set[str]
) -> tuple[dict[str, list[tuple[str, float]]], str | None]:
    """Read ``model``'s history since ``since``: canonical inputs -> (id, created epoch) of its predictions.

    Also return why the history cannot be matched (None: it can).
    """
    matches: dict[str, list[tuple[str, float]]] = {}
    for page_number in range(1, _MAX_PAGES + 1):
        page = await list_page(page=page_number, page_size=_PAGE_SIZE, model=model, created_after=_utc(since))
        if page.unreadable:
            return matches, f"{page.unreadable} entries of page {page_number} were unreadable"
        for item in page.items:
            prediction = item.prediction
            if prediction.model not in (None, "", model) or prediction.id in known_ids:
                continue
            created = prediction.created
            if created is None:
                return matches, f"entry {prediction.id} carries no readable created_at"
            if created.timestamp() < since:
                continue  # the API's filter is not trusted to be exact
            if item.input is None:
                return matches, f"entry {prediction.id} carries no inputs: this history does not list them"
            text = canonical_inputs(item.input)
            if text in wanted and prediction.id not in (pid for pid, _ in matches.get(text, [])):
                matches.setdefault(text, []).append((prediction.id, created.timestamp()))
        seen = (page_number - 1) * _PAGE_SIZE + len(page.items) + page.unreadable
        if len(page.items) < _PAGE_SIZE or (page.total is not None and seen >= page.total):
            return matches, None
    return matches, f"more than {_MAX_PAGES * _PAGE_SIZE} entries"
