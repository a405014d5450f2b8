"""Find a submit's prediction in the account's history when its answer never came (no Airflow here).

A submit whose outcome is unknown (sent, no answer: :class:`~.errors.WaveSpeedSubmitUncertainError`,
or a worker that died with the submit in flight) may have created, and billed, a prediction. The
history (``POST /api/v3/predictions``) lists the account's predictions with the inputs they were
submitted with, so the prediction is looked up there: same model, created since just before the
send (less :data:`CLOCK_SKEW`), same inputs. Exactly one match is adopted; none, several, or a
history that could not be read whole leave the input uncertain (never sent again).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from airflow_provider_wavespeed.api.models import PredictionPage

__all__ = ["CLOCK_SKEW", "LOOK_DELAYS", "Reconciled", "reconcile"]

# How far before the send a matching prediction may say it was created: the API's clock and this
# machine's may differ. Wider finds more old look-alikes (then "several": uncertain, never wrong).
CLOCK_SKEW = 60.0
# Pauses before each further look, in seconds: the history may list a new prediction a moment late.
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


def _canonical(inputs: object) -> str:
    return json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


async def reconcile(
    list_page: ListPage,
    model: str,
    wanted: Mapping[K, Mapping[str, Any]],
    sent_at: float,
    *,
    known_ids: frozenset[str] | set[str] = frozenset(),
    delays: tuple[float, ...] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Reconciled[K]:
    """Match each of ``wanted`` (key -> the inputs sent) to the one history entry of ``model`` like it.

    ``list_page(**HistoryQuery)`` reads one history page (a client's ``list_predictions``);
    ``sent_at`` is the epoch time just before the sends; ``known_ids`` are predictions already
    paired with other inputs (never adopted twice). Inputs with no match are looked for again
    after each of ``delays`` (default :data:`LOOK_DELAYS`); several matches, or a history not
    read whole, end the looking for that input. Identical inputs among ``wanted`` match the same
    entries: they stay unresolved.
    A failed history read raises (the caller keeps the inputs uncertain).
    """
    delays = LOOK_DELAYS if delays is None else delays
    since = datetime.datetime.fromtimestamp(sent_at - CLOCK_SKEW, tz=datetime.timezone.utc)
    canon = {key: _canonical(dict(inputs)) for key, inputs in wanted.items()}
    adopted: dict[K, str] = {}
    unresolved: dict[K, str] = {}
    pending = set(canon)
    for look in range(len(delays) + 1):
        if look:
            await sleep(delays[look - 1])
        matches, broken = await _read(list_page, model, since, set(canon[k] for k in pending), known_ids)
        for key in sorted(pending, key=repr):
            found = matches.get(canon[key], [])
            if broken:
                unresolved[key] = (
                    f"the history of {model} since {since:%Y-%m-%d %H:%M:%S} UTC could not be read whole "
                    f"({broken}), so no entry could be called the only match"
                )
            elif len(found) > 1:
                unresolved[key] = (
                    f"{len(found)} predictions of {model} in the history since {since:%Y-%m-%d %H:%M:%S} UTC "
                    f"have these inputs ({', '.join(found[:5])}), so none is known to be this submit's"
                )
            elif len(found) == 1 and list(canon.values()).count(canon[key]) == 1:
                adopted[key] = found[0]
            elif len(found) == 1:
                unresolved[key] = (
                    f"prediction {found[0]} matches, but other inputs of this batch are identical, so it is "
                    "not known to be this input's"
                )
            else:
                unresolved[key] = (
                    f"no prediction of {model} with these inputs in the history since "
                    f"{since:%Y-%m-%d %H:%M:%S} UTC after {look + 1} looks"
                )
                continue
            pending.discard(key)
        if not pending:
            break
    return Reconciled(adopted, {k: v for k, v in unresolved.items() if k not in adopted})


async def _read(
    list_page: ListPage, model: str, since: datetime.datetime, wanted: set[str], known_ids: frozenset[str] | set[str]
) -> tuple[dict[str, list[str]], str | None]:
    """Canonical inputs -> the ids of ``model``'s predictions since ``since`` with them; why not read whole."""
    matches: dict[str, list[str]] = {}
    for page_number in range(1, _MAX_PAGES + 1):
        page = await list_page(page=page_number, page_size=_PAGE_SIZE, model=model, created_after=since)
        if page.unreadable:
            return matches, f"{page.unreadable} entries of page {page_number} were unreadable"
        for item in page.items:
            prediction = item.prediction
            if prediction.model not in (None, "", model) or prediction.id in known_ids:
                continue
            if item.input is None:
                return matches, f"entry {prediction.id} carries no inputs"
            text = _canonical(item.input)
            if text in wanted and prediction.id not in matches.setdefault(text, []):
                matches[text].append(prediction.id)
        seen = (page_number - 1) * _PAGE_SIZE + len(page.items) + page.unreadable
        if len(page.items) < _PAGE_SIZE or (page.total is not None and seen >= page.total):
            return matches, None
    return matches, f"more than {_MAX_PAGES * _PAGE_SIZE} entries"
