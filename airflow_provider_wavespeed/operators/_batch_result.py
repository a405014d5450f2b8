"""The result of a WaveSpeed batch task: one entry per input, stored outputs, and the manifest.

Without ``manifest_path`` the whole result goes to XCom (as before). With it the whole result is
written there as JSON and XCom gets a summary of a few KB, whatever the batch's size
(:func:`finish_batch` documents both shapes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed._cost import cost_fields, log_cost
from airflow_provider_wavespeed._events import (
    BATCH_EVENT_STATUSES,
    EVENT_DEADLINE,
    EVENT_ERROR,
    checked_event,
    without_oversized_outputs,
)
from airflow_provider_wavespeed._outcome import RETRYABLE_ERRORS, airflow_error, keep_for_lineage
from airflow_provider_wavespeed.api._batch import ranges
from airflow_provider_wavespeed.api._times import in_words
from airflow_provider_wavespeed.api.errors import WaveSpeedAuthError, WaveSpeedError, failure_advice
from airflow_provider_wavespeed.api.models import SUCCESS_STATUS, Prediction
from airflow_provider_wavespeed.api.polling import WaitOutcome
from airflow_provider_wavespeed.operators._batch_submit import price_completed
from airflow_provider_wavespeed.storage import WaveSpeedStorageError, store_outputs
from airflow_provider_wavespeed.storage._files import write_json

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_wavespeed._batch_record import BatchRecord
    from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator

STATUS_UNCERTAIN = "uncertain"  # sent, outcome unknown: never sent again
STATUS_UNKNOWN = "unknown"  # accepted, but it could not be read (e.g. 404)
STATUS_CANCELLED = "cancelled"  # stopped before it finished (the API reads "cancelled" or "deleted")
_CANCELLED_STATUSES = frozenset({"cancelled", "deleted"})
# How many items a failure message (and a manifest's summary) lists (all are in the task log).
LISTED = 20
# A result larger than this in XCom earns a hint to use manifest_path.
LARGE_RESULT_BYTES = 1 << 20


def _entry(
    task: WaveSpeedBatchOperator,
    index: int,
    record: BatchRecord,
    predictions: Mapping[str, Prediction | WaveSpeedError],
) -> dict[str, Any]:
    prediction_id = record.id_of(index)
    entry: dict[str, Any] = {"index": index, "id": prediction_id, "outputs": [], "error": "", "code": None}
    if prediction_id is None:
        refusal = record.rejected(index)
        if refusal is not None:
            return {**entry, "status": "failed", "error": refusal.get("error", ""), "code": refusal.get("code")}
        return {**entry, "status": STATUS_UNCERTAIN, "error": record.uncertain(index) or "not submitted"}
    answer = predictions.get(prediction_id)
    if not isinstance(answer, Prediction):
        return {**entry, "status": STATUS_UNKNOWN, "error": f"could not be read: {answer}"}
    entry["status"] = answer.status
    if answer.status in _CANCELLED_STATUSES:
        # "deleted" is how the API reads an unfinished prediction a DELETE stopped: cancelled, as for the user.
        # Stopped by a DELETE: this task's at the timeout (cancel_on_timeout), or someone else's.
        return {
            **entry,
            "status": STATUS_CANCELLED,
            "error": f"cancelled before it finished (the API reads it {answer.status!r})",
        }
    if answer.is_success:
        data = without_oversized_outputs(answer)
        entry["outputs"] = data["outputs"]
        if "outputs_omitted_bytes" in data:
            entry["outputs_omitted_bytes"] = data["outputs_omitted_bytes"]
    elif answer.is_terminal:
        advice = failure_advice(answer.status, answer.code)
        entry["error"] = (answer.error or "the API gave no error text") + (f" ({advice})" if advice else "")
        entry["code"] = answer.code
    else:
        entry["error"] = (
            f"still {answer.status} when the wait limit ({in_words(task.timeout)}) passed; it may still "
            f"finish: wait on it with WaveSpeedTaskSensor(prediction_id={answer.id!r})"
        )
    return entry


# How many prediction ids a failed wait's message names (all are in the batch record).
LISTED_IDS = 5


def checked_batch_event(event: object, context: Context, *, log: Any) -> tuple[dict[str, Any], BatchRecord]:
    """Return the batch trigger's event and the task's record, to read the predictions; raise for an ``error``.

    A record that is gone fails the task for good (its predictions cannot be matched to the inputs).
    """
    from airflow_provider_wavespeed._batch_record import BatchRecord

    store = BatchRecord.store_of(context)
    event = checked_event(event, BATCH_EVENT_STATUSES, trigger="WaveSpeed batch trigger")
    where = store.where
    total = event.get("total")  # the ids the trigger waited for: the record holds them all
    record = BatchRecord.read(store, waited_for=total if type(total) is int and total > 0 else None)
    if record is None:
        raise AirflowFailException(
            f"The WaveSpeed batch record ({where}) is gone, so the predictions of this batch "
            "cannot be matched to its inputs. Was it deleted while the task waited? Re-running the "
            "task would submit every input again"
        )
    if event["status"] == EVENT_ERROR:
        ids = record.accepted_ids()
        more = len(ids) - LISTED_IDS
        named = ", ".join(ids[:LISTED_IDS]) + (f" and {more} more" if more > 0 else "")
        if event.get("retryable") is True:  # the trigger stopped on an unexpected error: a retry may not meet it
            raise AirflowException(
                f"{event.get('message')} (predictions {named}). The batch record ({where}) is kept: a "
                "retry of this task waits for the same predictions (nothing is submitted again)"
            )
        raise AirflowFailException(
            f"{event.get('message')} (predictions {named}). The batch record ({where}) is kept: once "
            "fixed, re-running the task waits for the same predictions (nothing is submitted again)"
        )
    log.info("WaveSpeed batch wait ended (%s): %s", event["status"], event.get("counts"))
    if event["status"] == EVENT_DEADLINE:
        log.warning("%s", event.get("message"))
    return event, record


def finish_batch(
    task: WaveSpeedBatchOperator,
    record: BatchRecord,
    predictions: Mapping[str, Prediction | WaveSpeedError],
    wait: WaitOutcome | None,
) -> dict[str, Any]:
    """Build the task's return value from the record and the predictions read; fail when too many failed.

    The full result: ``{"predictions": [{"index", "id", "status", "outputs", "error", "code", "unit_price_usd"[,
    "stored_paths"]}, ...], "completed": n, "failed": m, "unit_price_usd", "cost_usd"[, "cost_note"]}`` in input
    order. With ``manifest_path`` that is written there and the task returns ``{"manifest": "<where>", "completed":
    n, "failed": m, "count": N, "unit_price_usd", "cost_usd"[, "cost_note"], "not_completed": [the first 20
    entries that did not complete]}``. The cost counts completed generations only
    (:data:`~airflow_provider_wavespeed._cost.COUNTING`). The record is deleted only once everything is stored.
    """
    if wait is not None and wait.error is not None:
        raise AirflowFailException(
            f"{wait.error}. The batch record ({record.where}) is kept: once fixed, re-running "
            "the task waits for the same predictions (nothing is submitted again)"
        )
    unread = {i: e for i, e in predictions.items() if isinstance(e, WaveSpeedError)}
    if any(isinstance(e, WaveSpeedAuthError) for e in unread.values()):
        raise AirflowFailException(str(next(e for e in unread.values() if isinstance(e, WaveSpeedAuthError))))
    retryable = {i: e for i, e in unread.items() if isinstance(e, RETRYABLE_ERRORS)}
    if retryable:
        raise AirflowException(
            f"Could not read {len(retryable)} WaveSpeed predictions of this batch "
            f"({next(iter(retryable.values()))}); a retry of the task reads them again and submits nothing"
        )
    log = task.log
    entries = [_entry(task, index, record, predictions) for index in range(record.count)]
    _store(task, entries, predictions)
    completed = sum(entry["status"] == SUCCESS_STATUS for entry in entries)
    failed = len(entries) - completed
    not_completed = [entry for entry in entries if entry["status"] != SUCCESS_STATUS]
    for entry in not_completed:
        log.warning("inputs[%d] %s (prediction %s): %s", entry["index"], entry["status"], entry["id"], entry["error"])
    omitted = [entry["index"] for entry in entries if entry.get("outputs_omitted_bytes")]
    if omitted:
        log.warning(
            "The outputs of inputs %s are too large for XCom (base64 data?) and were left out of the result; "
            "give the task an output_path to store them, or read them with WaveSpeedHook().get_prediction(id)",
            ranges(omitted),
        )
    log.info("WaveSpeed batch: %d of %d inputs completed, %d did not", completed, len(entries), failed)
    cost = _cost(task, record, entries)
    result: dict[str, Any] = {"predictions": entries, "completed": completed, "failed": failed, **cost}
    manifest = _write_manifest(task, record, result)
    if failed > task.max_failed:
        listed = "; ".join(
            f"[{e['index']}] {e['id'] or 'no prediction'} {e['status']}: {e['error']}" for e in not_completed[:LISTED]
        )
        more = f"; and {failed - LISTED} more (all listed in the log above)" if failed > LISTED else ""
        stored = " (their outputs are stored)" if task.output_path not in (None, "") and completed else ""
        raise AirflowFailException(
            f"WaveSpeed batch: {failed} of {len(entries)} inputs did not complete, more than max_failed="
            f"{task.max_failed}: {listed}{more}. {completed} completed{stored}. The batch record "
            f"({record.where}) is kept: re-running this task reports the same predictions and submits "
            "nothing; to generate the failed inputs again, run them in a new batch (or delete the record "
            "to submit every input again)"
        )
    record.delete()
    keep_for_lineage(task, result)  # OpenLineage sees every prediction, whichever shape XCom gets
    if manifest is None:
        return result
    summary = {"manifest": manifest, "completed": completed, "failed": failed, "count": len(entries), **cost}
    return {**summary, "not_completed": not_completed[:LISTED]}


def _cost(task: WaveSpeedBatchOperator, record: BatchRecord, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each entry's ``unit_price_usd`` (None unless it completed) and the batch's cost fields; logged in one line."""
    done = [entry["index"] for entry in entries if entry["status"] == SUCCESS_STATUS]
    prices, unknown = price_completed(task, done) if done else ([], "")
    by_index = dict(zip(done, prices, strict=True))
    for entry in entries:
        entry["unit_price_usd"] = by_index.get(entry["index"])
    cost = cost_fields(prices, unknown=unknown)
    log_cost(task.log, str(record.data.get("model") or task.model), prices, cost)
    return cost


def _write_manifest(task: WaveSpeedBatchOperator, record: BatchRecord, result: dict[str, Any]) -> str | None:
    """Write the full result to ``manifest_path``; None without one (then hint when the result is large)."""
    if task.manifest_path is None or task.manifest_path == "":
        size = len(json.dumps(result, separators=(",", ":"), default=str))
        if size > LARGE_RESULT_BYTES:
            task.log.warning(
                "The result of this batch is %d bytes in XCom; give the task a manifest_path (a file path or URL) "
                "to write it there and keep a small summary in XCom",
                size,
            )
        return None
    try:
        where = write_json(task.manifest_path, result, what="manifest_path")
    except WaveSpeedStorageError as exc:
        # Retryable: a retry (or a re-run after fixing the path) submits nothing.
        raise AirflowException(
            f"Could not write the WaveSpeed batch manifest: {exc}. The batch record ({record.where}) is kept: a "
            "retry, or re-running the task once the path is writable, writes it again and submits nothing"
        ) from None
    task.log.info("Wrote the batch's result (%d entries) to %s", len(result["predictions"]), where)
    return where


def _store(
    task: WaveSpeedBatchOperator,
    entries: list[dict[str, Any]],
    predictions: Mapping[str, Prediction | WaveSpeedError],
) -> None:
    """Copy the completed outputs to ``output_path``; each entry gains ``stored_paths``."""
    if task.output_path is None or task.output_path == "":
        return
    downloads = task.hook.download_policy()
    for entry in entries:
        prediction = predictions.get(entry["id"]) if entry["id"] else None
        if entry["status"] != SUCCESS_STATUS or not isinstance(prediction, Prediction):
            entry["stored_paths"] = []
            continue
        # The record keeps every prediction id: a retry stores again without submitting anything.
        hint = (
            f" (inputs[{entry['index']}]). Re-running this task stores the outputs again without "
            "submitting anything (the batch record is kept until the task succeeds)"
        )
        try:
            entry["stored_paths"] = store_outputs(prediction, task.output_path, downloads=downloads)
        except WaveSpeedError as exc:
            raise airflow_error(exc, hint=hint) from None
    stored = sum(len(entry["stored_paths"]) for entry in entries)
    task.log.info("Stored %d output file(s) of the batch in %s", stored, task.output_path)
