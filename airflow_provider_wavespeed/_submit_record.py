"""The submit operator's paid-work record: one submit, two phases, read by the next try.

Invariants (each try of a ``WaveSpeedSubmitOperator`` task instance keeps them):

1. :meth:`SubmitRecord.write_intent` lands before any byte of the paid submit leaves (read back where
   a write can fail silently: the Variable fallback), or nothing is sent.
2. :meth:`SubmitRecord.write_submitted` follows the API's answer at once: the only unrecorded instant
   is between the answer and this write.
3. A new try reads the record (:meth:`SubmitRecord.read`) before it submits: a recorded prediction is
   resumed while it is queued, processing or completed (:func:`resume_or_adopt`); an intent with no
   id is looked up in the prediction history and adopted only when it is the one match, still alone
   on a second look (:func:`find_in_history`); anything else fails the task, never sending again.
4. The record is deleted once the prediction is handed on for good: its id returned (no wait), or
   its completed result returned by a worker. A deferred wait keeps it (:meth:`SubmitRecord.hand_on`),
   so a try whose wait ends without a worker running this provider's code (the worker that would
   resume it died or never started) leaves it for the retry. A worker that resumes a wait ended
   without the prediction (an error, the timeout, a trigger Airflow failed) writes it back
   (:meth:`SubmitRecord.write_back`): a retry or a clear resumes it instead of paying again.
   A trigger that may end the task in the triggerer (with success) cannot delete it, so the record
   says so (``waiting``, with the DAG run's clear count): read by a try that follows a clear of the
   run, it is not resumed (that clear asked to run again; the earlier try may have succeeded).
5. A stored value this provider did not write fails the task before anything is sent.

The storage backend is :class:`~airflow_provider_wavespeed._records.RecordStore`: Airflow's task
state store on 3.3+, a Variable on 3.0-3.2. The stored value is ``{"version": 1, "state":
"sending"|"sent"|"waiting", "model", "digest", "sent_at", "prediction_id", "clear_number", "seq"}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_wavespeed._records import SUBMIT_RECORD_PREFIX, RecordStore, unheld_in_this_run
from airflow_provider_wavespeed.api._batch import input_digest, uncertain_message
from airflow_provider_wavespeed.api._reconcile import reconcile
from airflow_provider_wavespeed.api._times import utc_text
from airflow_provider_wavespeed.api._validation import validate_inputs, validate_model
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedError,
    WaveSpeedNotFoundError,
    WaveSpeedSubmitUncertainError,
)
from airflow_provider_wavespeed.api.models import SUCCESS_STATUS, Prediction, PredictionPage

if TYPE_CHECKING:
    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

__all__ = ["SubmitEntry", "SubmitRecord", "find_in_history", "resume_or_adopt"]

# The stored states: the intent, written just before the POST; the id, right after its answer; the id
# handed to a trigger that may end the task in the triggerer.
_SENDING, _SENT, _WAITING = "sending", "sent", "waiting"
# A recorded prediction in these states is resumed by a later try; any other (failed, cancelled,
# deleted, timeout, gone) means a later try submits again (a clear after a kill is "run again").
_RESUMABLE = frozenset({"created", "queued", "processing", SUCCESS_STATUS})


@dataclass(frozen=True)
class SubmitEntry:
    """What an earlier try recorded: ``prediction_id`` is None while only the intent was written.

    ``cleared``: the DAG run was cleared since the prediction was handed to a trigger that may
    have ended the task with success (invariant 4): a later try does not resume it.
    """

    digest: str
    sent_at: float
    prediction_id: str | None
    cleared: bool = False


class SubmitRecord:
    """The submit record of the running task instance (see the module's invariants)."""

    def __init__(self, context: Any) -> None:
        ti = context["ti"]
        description = (
            f"WaveSpeed submit record of {ti.dag_id}.{ti.task_id} (map index {ti.map_index}) in run {ti.run_id}: "
            "the prediction this task submitted, so that a retry resumes it instead of paying again. Deleted "
            "once the prediction is handed on for good, written back when a wait ends without the prediction; "
            "delete it yourself only to submit again."
        )
        self.store = RecordStore(context, "wavespeed_submit", SUBMIT_RECORD_PREFIX, description)
        # How often the DAG run was cleared (Airflow counts each clear of any of its tasks): a "waiting"
        # record written at another count was handed on before a clear.
        self.clear_number = int(getattr(context.get("dag_run"), "clear_number", None) or 0)

    @property
    def where(self) -> str:
        """Where the record is, for messages."""
        return self.store.where

    def write_intent(self, model: str, inputs: dict[str, Any], sent_at: float) -> None:
        """Record that a submit of ``inputs`` leaves now (``sent_at``), read back where a write can fail silently."""
        entry = {"version": 1, "sent_at": sent_at, "model": model, "digest": input_digest(model, [inputs])}
        self.store.put({**entry, "state": _SENDING}, verify=True)

    def write_submitted(
        self,
        prediction_id: str,
        model: str,
        inputs: dict[str, Any],
        *,
        sent_at: float | None = None,
        verify: bool = False,
    ) -> None:
        """Record the submit's prediction; ``verify`` reads it back where a write can fail silently.

        Right after the API's answer (no read back: one that did not land leaves the intent, which a
        later try reconciles with the history), or written back after a deferred wait that ended
        without the prediction (``verify``).
        """
        sent = {} if sent_at is None else {"sent_at": sent_at}
        entry = {"version": 1, **sent, "model": model, "digest": input_digest(model, [inputs])}
        self.store.put({**entry, "state": _SENT, "prediction_id": prediction_id}, verify=verify)

    def hand_on(self, prediction_id: str, model: object, inputs: object, *, trigger_may_end_task: bool) -> None:
        """Keep the record for a retry: the task defers its wait for ``prediction_id`` (invariant 4).

        A trigger that only resumes the worker leaves it as written (``sent``). One that may end the
        task in the triggerer gets it marked ``waiting`` at this DAG run's clear count, in the task
        state store, where a record left behind expires. A Variable would stay forever: it is deleted
        (Airflow 3.0-3.2 without the task state store; the README says what a retry there cannot
        promise).
        """
        if not trigger_may_end_task:
            return
        if not self.store.expires:
            self.delete()
            return
        model = validate_model(model)
        entry = {"version": 1, "model": model, "digest": input_digest(model, [validate_inputs(inputs)])}
        waiting = {"state": _WAITING, "prediction_id": prediction_id, "clear_number": self.clear_number}
        self.store.put({**entry, **waiting}, verify=False)

    def write_back(self, prediction_id: str, model: object, inputs: object, *, log: Any) -> None:
        """Write the record back for ``prediction_id``: its deferred wait ended without the prediction.

        An error, the timeout or a trigger Airflow failed: a later try resumes it instead of paying
        again. Written by the worker that fails the task, before it fails (``model`` and ``inputs``
        as the task has them, validated here). When the write fails, the task fails for good: a
        retry without the record would submit (and pay) again.
        """
        from airflow.providers.common.compat.sdk import AirflowFailException

        try:
            model = validate_model(model)
            inputs = validate_inputs(inputs)
            self.write_submitted(prediction_id, model, inputs, verify=True)
        except Exception as exc:
            raise AirflowFailException(
                f"The wait for WaveSpeed prediction {prediction_id} ended without it, and recording it in "
                f"{self.where} failed ({type(exc).__name__}: {exc}): the task is not retried, so nothing is "
                f"submitted again. The prediction may still run: wait on it with "
                f"WaveSpeedTaskSensor(prediction_id={prediction_id!r})"
            ) from None
        log.info(
            "WaveSpeed prediction %s is recorded in %s: a retry or a clear of this task resumes it (nothing is "
            "submitted again)",
            prediction_id,
            self.where,
        )

    def read(self) -> SubmitEntry | None:
        """Return what an earlier try of this task instance recorded (None: nothing, or this is the first try)."""
        data = self.store.earlier()
        if data is None:
            return None
        prediction_id = None if data.get("state") == _SENDING else str(data.get("prediction_id") or "")
        cleared = data.get("state") == _WAITING and data.get("clear_number") != self.clear_number
        return SubmitEntry(str(data.get("digest")), float(data.get("sent_at") or 0), prediction_id, cleared)

    def delete(self) -> None:
        """Delete the record: its prediction is handed on for good."""
        self.store.delete()


def resume_or_adopt(
    record: SubmitRecord, hook: WaveSpeedHook, model: str, inputs: dict[str, Any], *, log: Any
) -> Prediction | None:
    """Return the prediction an earlier try's record names, when this try should resume it; None: submit."""
    entry = record.read()
    if entry is None:
        return None
    same = entry.digest == input_digest(model, [inputs])
    if entry.prediction_id is None:
        if not same:
            log.warning(
                "An earlier try sent a submit with other inputs (or model) and got no answer: it is not "
                "looked for; submitting these inputs"
            )
            return None
        log.warning("An earlier try stopped with its submit in flight: looking for it in the history")
        why = "an earlier try of this task stopped while this submit was in flight"
        return find_in_history(record, hook, model, inputs, entry.sent_at, why, log=log)
    prediction_id = entry.prediction_id
    if entry.cleared:
        log.info(
            "The DAG run was cleared after prediction %s was handed to its trigger (which may have ended the task "
            "with success): submitting again, as a clear asks",
            prediction_id,
        )
        return None
    try:
        prediction = hook.get_prediction(prediction_id)
    except WaveSpeedNotFoundError:
        log.warning("The prediction %s an earlier try submitted is gone: submitting again", prediction_id)
        return None
    if prediction.status not in _RESUMABLE:
        log.warning(
            "The prediction %s an earlier try submitted is %s: submitting again", prediction_id, prediction.status
        )
        return None
    if not same:
        log.warning(
            "The prediction %s an earlier try submitted (%s) has other inputs or model than these: it is not "
            "resumed (it stays paid); submitting these inputs",
            prediction_id,
            prediction.status,
        )
        return None
    log.info(
        "Resuming WaveSpeed prediction %s (%s), submitted by an earlier try of this task: nothing is submitted",
        prediction_id,
        prediction.status,
    )
    return prediction


def find_in_history(
    record: SubmitRecord,
    hook: WaveSpeedHook,
    model: str,
    inputs: dict[str, Any],
    sent_at: float,
    why: str,
    *,
    log: Any,
) -> Prediction:
    """Return the one prediction of the history like this submit; otherwise raise (never send again).

    Raises ``WaveSpeedSubmitUncertainError`` naming the record that keeps the task from submitting again.
    """

    async def page(**query: Any) -> PredictionPage:
        return hook.list_predictions(**query)

    log.warning("The submit's outcome is unknown (%s): looking for it in the prediction history", why)
    try:
        found = unheld_in_this_run(asyncio.run(reconcile(page, model, {0: inputs}, sent_at)))
    except WaveSpeedError as exc:
        reason = f"the history could not be read ({exc})"
    else:
        if 0 in found.adopted:
            prediction_id = found.adopted[0]
            log.info("Adopted WaveSpeed prediction %s from the history: nothing is submitted", prediction_id)
            return hook.get_prediction(prediction_id)
        reason = found.unresolved[0]
    raise WaveSpeedSubmitUncertainError(
        f"{uncertain_message(model, why, utc_text(sent_at))}. Looked up: {reason}. The record in {record.where} "
        "keeps this task from submitting again; delete it (or find the prediction and use WaveSpeedTaskSensor) "
        "once checked"
    )
