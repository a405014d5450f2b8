"""Spend: the cost guard the operators check before they submit, and the cost their results carry.

Prices come from ``POST /api/v3/model/pricing`` (the model and its inputs -> ``unit_price`` in USD).
It is a read: retried and paced like a poll by the client, never drawing on the submission budget.
Which inputs a model's price depends on is not documented per model (some are priced per image,
per second of video, per character of text), so a batch asks once per *distinct* input,
deduplicated, never once per input. A price the API cannot give (an error, a missing, negative or
non-finite number) fails the guard closed: nothing is submitted.

The cost in a result counts **completed** generations only, at the price quoted for their inputs:
the API notes do not say whether a failed generation is charged, so a result never counts one
(:data:`COUNTING`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_wavespeed._outcome import airflow_error
from airflow_provider_wavespeed.api._reconcile import canonical_inputs
from airflow_provider_wavespeed.api.defaults import POOL_SIZE
from airflow_provider_wavespeed.api.errors import WaveSpeedError, WaveSpeedResponseError

if TYPE_CHECKING:
    from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient

__all__ = [
    "COUNTING",
    "budget_usd",
    "check_spend",
    "checked_price",
    "cost_fields",
    "guard_errors",
    "log_cost",
    "price_inputs",
]

COUNTING = "completed generations only (the API docs do not say whether failed ones are charged)"


def budget_usd(value: object, name: str) -> float | None:
    """Read a budget parameter as a non-negative number of USD (templated values arrive as strings)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None  # unset, or a template that rendered an unset param
    try:
        usd = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        usd = float("nan")
    if not usd >= 0 or usd == float("inf"):
        raise AirflowFailException(f"{name} must be a non-negative number of USD, got {value!r}")
    return usd


async def price_inputs(
    client: AsyncWaveSpeedClient, model: str, items: Mapping[int, Mapping[str, Any]]
) -> dict[int, float]:
    """Ask the price of one generation of each input (index -> USD): one request per distinct input.

    Raises the first :class:`~.api.errors.WaveSpeedError` (the API's own, or a missing, negative or
    non-finite price), its message naming the inputs.
    """
    by_shape: dict[str, list[int]] = {}
    for index, inputs in items.items():
        by_shape.setdefault(canonical_inputs(inputs), []).append(index)
    gate = asyncio.Semaphore(POOL_SIZE)  # the client's own bound and read limiter apply too

    async def price_of(indexes: list[int]) -> float:
        inputs = items[indexes[0]]
        async with gate:
            try:
                usd = await client.get_price(model, inputs)
            except WaveSpeedError as exc:
                exc.args = (f"{exc} (inputs {dict(inputs)!r:.200})",)
                raise
        return checked_price(usd, model, inputs)

    prices = await asyncio.gather(*(price_of(indexes) for indexes in by_shape.values()))
    return {index: usd for indexes, usd in zip(by_shape.values(), prices, strict=True) for index in indexes}


def checked_price(usd: float, model: str, inputs: Mapping[str, Any]) -> float:
    """``usd`` when it can be a price; a negative one is an API error (the guard fails closed on it)."""
    if usd < 0:
        raise WaveSpeedResponseError(
            f"WaveSpeed pricing of {model} returned a negative unit_price {usd!r} (inputs {dict(inputs)!r:.200})"
        )
    return usd


def _price_list(prices: Iterable[float]) -> str:
    """``3 x 0.0030 + 1 x 0.0120 USD``: how many generations at which price."""
    counts = sorted(Counter(prices).items())
    return " + ".join(f"{count} x {usd:.4f}" for usd, count in counts) + " USD"


def check_spend(
    model: str,
    prices: Sequence[float],
    *,
    max_cost: float | None,
    balance: float | None,
    min_balance: float | None,
) -> float:
    """Refuse when ``prices`` sum over ``max_cost`` or ``balance`` is under ``min_balance``; return the total.

    The refusal is for good: nothing was submitted. ``prices``: one per generation about to be submitted.
    """
    total = round(sum(prices), 6)
    if max_cost is not None and total > max_cost:
        if len(prices) == 1:
            what = f"one prediction of {model} with these inputs costs {total:.4f} USD"
        else:
            what = f"{len(prices)} generations of {model} cost {total:.4f} USD in all ({_price_list(prices)})"
        raise AirflowFailException(
            f"WaveSpeed cost guard: {what}, over max_cost_usd={max_cost:.4f}; nothing was submitted. Raise "
            "max_cost_usd or make the inputs cheaper (fewer inputs or images, shorter video, smaller size)"
        )
    if min_balance is not None and balance is not None and not balance >= min_balance:
        raise AirflowFailException(
            f"WaveSpeed cost guard: the account balance is {balance:.4f} USD, below "
            f"min_balance_usd={min_balance:.4f}; nothing was submitted. Top up the account on "
            "wavespeed.ai or lower min_balance_usd"
        )
    return total


@contextmanager
def guard_errors(model: str, inputs: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Pricing and balance errors as Airflow failures: the guard fails closed, naming what it could not price."""
    what = f"{model} with inputs {dict(inputs)!r:.200}" if inputs is not None else model
    try:
        yield
    except WaveSpeedError as exc:
        hint = f". The cost guard could not check the spend on {what}, so nothing was submitted"
        raise airflow_error(exc, hint=hint) from None


def cost_fields(completed: Sequence[float | None], *, unknown: str = "") -> dict[str, Any]:
    """Return the cost a result carries for its completed generations (their prices, in USD).

    ``unit_price_usd`` is the price per generation (None when they differ or none completed),
    ``cost_usd`` the total; both None, with ``cost_note`` saying why, when a price is unknown.
    """
    if unknown or any(usd is None for usd in completed):
        return {"unit_price_usd": None, "cost_usd": None, "cost_note": unknown or "a price could not be read"}
    known = [float(usd) for usd in completed if usd is not None]
    distinct = set(known)
    return {"unit_price_usd": distinct.pop() if len(distinct) == 1 else None, "cost_usd": round(sum(known), 6)}


def log_cost(log: Any, model: str, completed: Sequence[float | None], fields: Mapping[str, Any]) -> None:
    """Log the task's one line on what it spent."""
    if fields.get("cost_usd") is None:
        log.info("WaveSpeed cost of %s: unknown (%s)", model, fields.get("cost_note"))
        return
    prices = [float(usd) for usd in completed if usd is not None]
    detail = f" ({_price_list(prices)})" if prices else ""
    log.info(
        "WaveSpeed cost of %s: %.4f USD for %d completed generation(s)%s; counting %s",
        model,
        fields["cost_usd"],
        len(prices),
        detail,
        COUNTING,
    )
