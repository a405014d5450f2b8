"""Submitting a batch: the record and the cost guard first, then windows of inputs, each marked in flight first.

The task's record is opened (an earlier try's resumed, :func:`open_record`) and the cost guard
applied (:func:`guard_spend`) before anything is sent. Every submit follows the record's two phases
(:mod:`~airflow_provider_wavespeed._batch_record`); an input whose submit has no answer is looked up
in the prediction history (:func:`look_up_uncertain`), never sent again.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed._batch_record import BatchRecord
from airflow_provider_wavespeed._cost import budget_usd, check_spend, guard_errors, price_inputs
from airflow_provider_wavespeed._outcome import airflow_error
from airflow_provider_wavespeed._records import unheld_in_this_run
from airflow_provider_wavespeed.api._batch import batch_inputs, ranges, submit_window
from airflow_provider_wavespeed.api._reconcile import reconcile
from airflow_provider_wavespeed.api._validation import validate_model
from airflow_provider_wavespeed.api.errors import WaveSpeedAuthError, WaveSpeedError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient
    from airflow_provider_wavespeed.api.models import Prediction
    from airflow_provider_wavespeed.api.polling import WaitOutcome
    from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator

# Inputs marked in flight per record window (a head write before they are sent, a part after
# their answers). Larger: fewer metadata-database writes; smaller: fewer items left "uncertain"
# when a worker dies in the middle of a window. The default is about WINDOW_SECONDS of the
# connection's submission budget, never below DEFAULT_SUBMIT_WINDOW: Silver (500/min) 25, Gold
# (3,000/min) 100, so a Gold batch writes its record about once a second, not four times.
DEFAULT_SUBMIT_WINDOW = 25
WINDOW_SECONDS = 2.0
# The cost guard's prices, one per input (None: not priced by this try), for the try's resume after the trigger.
PRICES_XCOM_KEY = "wavespeed_batch_unit_prices"


def default_submit_window(max_submissions_per_minute: float | None) -> int:
    """About :data:`WINDOW_SECONDS` of submissions at this budget, at least :data:`DEFAULT_SUBMIT_WINDOW`."""
    if not max_submissions_per_minute:
        return DEFAULT_SUBMIT_WINDOW
    return max(DEFAULT_SUBMIT_WINDOW, math.ceil(max_submissions_per_minute * WINDOW_SECONDS / 60))


# What a worker's on_kill needs while it submits or waits: the task instance, its record, the ids seen finished.
WorkerWait: TypeAlias = "tuple[Any, BatchRecord, set[str]]"


def open_record(task: WaveSpeedBatchOperator, context: Context, model: str, items: list[dict[str, Any]]) -> BatchRecord:
    """Open the running task instance's record, resuming an earlier try's.

    See :meth:`~airflow_provider_wavespeed._batch_record.BatchRecord.open`.
    """
    return BatchRecord.open(BatchRecord.store_of(context), model, items, log=task.log)


async def submit_and_collect(
    task: WaveSpeedBatchOperator, model: str, items: list[dict[str, Any]], record: BatchRecord, *, wait: bool
) -> tuple[dict[str, Prediction | WaveSpeedError], WaitOutcome | None]:
    """Submit what the record says is unsent; with ``wait``, wait in this worker and read every prediction."""
    try:
        async with await task.hook.aget_client() as client:
            if record.unsent() or record.to_reconcile():
                await submit_all(task, client, model, items, record)
            if not wait:
                return {}, None
            return await task._collect(client, record.accepted_ids(), wait=True)
    except WaveSpeedError as exc:
        raise airflow_error(exc) from None


async def submit_all(
    task: WaveSpeedBatchOperator,
    client: AsyncWaveSpeedClient,
    model: str,
    items: list[dict[str, Any]],
    record: BatchRecord,
) -> None:
    """Submit every input the record says is unsent, a window at a time; look up the uncertain ones."""
    await look_up_uncertain(client, model, items, record, log=task.log)  # what an earlier try's worker left in flight
    todo = record.unsent()
    sent = record.count - len(todo)
    size = task.submit_window
    if size is None:  # about 2 s of this connection's budget (async: this runs in an event loop)
        size = default_submit_window((await task.hook.aget_credentials()).max_submissions_per_minute)
    if todo:
        task.log.info("Submitting %d inputs in windows of %d (a record write before each)", len(todo), size)
    for start in range(0, len(todo), size):
        window = todo[start : start + size]
        record.write_intent(window)  # before any byte of these submits leaves
        outcome = await submit_window(client, model, items, window)
        record.write_submitted(outcome.accepted, outcome.rejected, outcome.uncertain)
        sent += len(outcome.accepted) + len(outcome.rejected) + len(outcome.uncertain)
        task.log.info(
            "Submitted %d of %d inputs to %s (this window: %d accepted, %d refused, %d uncertain)",
            sent,
            record.count,
            model,
            len(outcome.accepted),
            len(outcome.rejected),
            len(outcome.uncertain),
        )
        for index, value in outcome.rejected.items():
            task.log.warning("inputs[%d] %s", index, value["error"])
        for index, message in outcome.uncertain.items():
            task.log.warning("inputs[%d]: %s", index, message)
        if outcome.stop is not None:
            await look_up_uncertain(client, model, items, record, log=task.log)
            stopped(outcome.stop, record)
    await look_up_uncertain(client, model, items, record, log=task.log)


async def look_up_uncertain(
    client: AsyncWaveSpeedClient, model: str, items: list[dict[str, Any]], record: BatchRecord, *, log: Any
) -> None:
    """Look the uncertain inputs up in the history: adopt each one's single match, never send again."""
    pending = record.to_reconcile()
    if not pending:
        return
    log.info("Looking up %d uncertain inputs (%s) in the prediction history", len(pending), ranges(list(pending)))
    try:
        found = await reconcile(
            client.list_predictions,
            model,
            {index: items[index] for index in pending},
            pending,  # each input's own send time: an entry created before it is never its
            known_ids=set(record.accepted_ids()),
        )
    except WaveSpeedError as exc:
        log.warning("Could not read the prediction history (%s): inputs %s stay uncertain", exc, ranges(list(pending)))
        record.reconciled({}, {index: f"the history could not be read ({exc})" for index in pending})
        return
    found = unheld_in_this_run(found)
    record.reconciled(found.adopted, found.unresolved)
    for index, prediction_id in sorted(found.adopted.items()):
        log.info(
            "inputs[%d]: adopted prediction %s from the history (its submit's answer was lost)",
            index,
            prediction_id,
        )
    for index, why in sorted(found.unresolved.items()):
        log.warning("inputs[%d] stays uncertain: %s", index, why)


def guard_spend(
    task: WaveSpeedBatchOperator, context: Context, model: str, items: list[dict[str, Any]], record: BatchRecord
) -> None:
    """Apply the cost guard, before any submit: the inputs still to send, priced and summed; the balance."""
    max_cost = budget_usd(task.max_cost_usd, "max_cost_usd")
    min_balance = budget_usd(task.min_balance_usd, "min_balance_usd")
    todo = record.unsent()
    if (max_cost is None and min_balance is None) or not todo:
        return

    async def ask() -> tuple[dict[int, float], float | None]:
        with guard_errors(model):
            async with await task.hook.aget_client() as client:
                prices = await price_inputs(client, model, {i: items[i] for i in todo}) if max_cost is not None else {}
                balance = await client.get_balance() if min_balance is not None else None
                return prices, balance

    prices, balance = asyncio.run(ask())
    total = check_spend(
        model, [prices[i] for i in todo if i in prices], max_cost=max_cost, balance=balance, min_balance=min_balance
    )
    if prices:
        task._unit_prices.update(prices)
        context["ti"].xcom_push(key=PRICES_XCOM_KEY, value=[prices.get(i) for i in range(record.count)])
        task.log.info(
            "WaveSpeed cost guard: the %d inputs still to send cost %.4f USD in all, within max_cost_usd %.4f",
            len(todo),
            total,
            max_cost,
        )


def stopped(error: WaveSpeedError, record: BatchRecord) -> NoReturn:
    """Fail the task after submitting stopped on ``error``; the record says what the next try sends."""
    unsent = record.unsent()
    message = (
        f"{error}. Submitting stopped with {len(unsent)} of {record.count} inputs not sent "
        f"({ranges(unsent)}); the {len(record.accepted_ids())} predictions created are in the batch record "
        f"({record.where}): the next try resumes, submitting only the inputs never sent"
    )
    if isinstance(error, WaveSpeedAuthError):
        raise AirflowFailException(message + " (fix the key or the account first, then clear the task)")
    raise AirflowException(message)


def pulled_prices(task: WaveSpeedBatchOperator, context: Context) -> None:
    """Take back the prices the cost guard of this try noted before it deferred."""
    ti = context["ti"]
    pulled = ti.xcom_pull(task_ids=ti.task_id, key=PRICES_XCOM_KEY, map_indexes=ti.map_index)
    if isinstance(pulled, list):
        task._unit_prices.update(
            {
                i: float(usd)
                for i, usd in enumerate(pulled)
                if isinstance(usd, (int, float)) and not isinstance(usd, bool)
            }
        )


def price_completed(task: WaveSpeedBatchOperator, indexes: list[int]) -> tuple[list[float | None], str]:
    """Return the prices of these (completed) inputs, asking only for those no guard priced; and why any is unknown.

    A price that cannot be read here leaves the cost unknown, never fails the task: its generations are paid.
    """
    missing = [i for i in indexes if i not in task._unit_prices]
    note = ""
    if missing:
        try:
            model = validate_model(task.model)
            items = batch_inputs(task.inputs)

            async def ask() -> dict[int, float]:
                async with await task.hook.aget_client() as client:
                    return await price_inputs(client, model, {i: items[i] for i in missing})

            task._unit_prices.update(asyncio.run(ask()))
        except WaveSpeedError as exc:
            note = f"the price could not be read ({exc})"
            task.log.warning("WaveSpeed cost of this batch unknown: %s", note)
    return [task._unit_prices.get(i) for i in indexes], note
