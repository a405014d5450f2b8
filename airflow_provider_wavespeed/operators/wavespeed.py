"""WaveSpeedSubmitOperator: submit a generation and, optionally, wait for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

from airflow_provider_wavespeed._outcome import (
    airflow_error,
    completed_result,
    end_in_triggerer_kwargs,
    keep_for_lineage,
    operator_lineage,
    prediction_from_event,
)
from airflow_provider_wavespeed._submit_record import SubmitRecord, find_in_history, resume_or_adopt
from airflow_provider_wavespeed._wait import WaitingTask, default_deferrable, deferring, seconds_settings
from airflow_provider_wavespeed.api import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    Prediction,
    WaveSpeedError,
    WaveSpeedPredictionFailedError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTimeoutError,
    ensure_success,
    validate_inputs,
    validate_model,
    validate_webhook_url,
)
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.links import WaveSpeedModelLink, WaveSpeedPredictionLink, start_links
from airflow_provider_wavespeed.operators._submit_spend import WAIT_RETRYABLE, SubmitSpend
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

if TYPE_CHECKING:
    import os

    from airflow.sdk import Context, ObjectStoragePath

XCOM_PREDICTION_ID = "prediction_id"


class WaveSpeedSubmitOperator(SubmitSpend, WaitingTask, BaseOperator):
    """Submit a WaveSpeed prediction; push its id to XCom, or wait and return it.

    The submit is sent once: a failure that may have created the prediction is not
    retried (neither here nor by Airflow's task retries), so nothing is paid twice.

    Without waiting, the return value is the prediction id (also pushed under the key
    ``prediction_id``), for a :class:`WaveSpeedTaskSensor` downstream. With
    ``wait_for_completion=True`` it waits, deferring to :class:`WaveSpeedTaskTrigger`
    when ``deferrable``, and returns the completed prediction as a dict; with
    ``output_path`` its outputs are copied there first and the dict gains ``stored_paths``.

    A deferred wait ends in the triggerer, with no second worker run, when the prediction completed
    (its dict in XCom under ``return_value``; ``prediction_id`` was pushed at the submit), unless the
    worker has work left: ``output_path`` (it stores the outputs), ``resubmit_on_server_failure`` (it
    may submit again), outlets (asset events), or outputs too large for XCom. Every other end of the
    wait (a failed prediction, an error, the timeout) resumes in the worker, whose retry rules apply.

    Resume: from just before the submit until the prediction is handed on for good (its id
    returned, or its completed result), deferred waits included, the task keeps a record (Airflow's
    task state store on 3.3+, an Airflow Variable below; its rules are in
    :mod:`~airflow_provider_wavespeed._submit_record`). A later try that finds it (a retry, a
    clear) resumes that prediction while it is queued, processing or completed, and submits again
    when it failed, was cancelled or deleted, or when the DAG run was cleared after the wait went
    to a trigger that may end the task; a submit with no answer is looked up in the prediction
    history and only its one match adopted, else the task fails without submitting again.

    Cost guard (:mod:`~airflow_provider_wavespeed._cost`): with ``max_cost_usd`` the price of these
    inputs is asked first (``/model/pricing``) and the task fails without submitting when it is
    higher, or when no price can be read; with ``min_balance_usd``, when the account balance is
    lower. A waiting task prices its inputs even without the guard: its result carries
    ``unit_price_usd`` and ``cost_usd`` (None, with ``cost_note``, when no price could be read);
    the price is also pushed to XCom (``unit_price_usd``).

    :param model: The model id, e.g. ``wavespeed-ai/flux-dev`` (templated).
    :param inputs: The model's inputs (templated, nested values too).
    :param wavespeed_conn_id: The WaveSpeed connection id (templated).
    :param webhook: An https URL the API calls when the prediction finishes (templated).
    :param wait_for_completion: Wait for the prediction before the task ends.
    :param deferrable: Wait in the triggerer instead of a worker (default True).
    :param poll_interval: Longest wait between polls, in seconds (templated; a finite number > 0).
    :param timeout: Seconds to wait for completion (templated; a finite number > 0). Both are checked
        before anything is sent, again once templates rendered.
    :param output_path: Where to copy the outputs when waiting (templated): a directory path,
        a URL (``file:///data/out/``, ``s3://bucket/prefix/``) or an ``ObjectStoragePath``.
        Files are named ``<prediction id>_<index>.<ext>``; a re-run overwrites them.
    :param max_cost_usd: Refuse to submit when one prediction with these inputs costs more (templated).
    :param min_balance_usd: Refuse to submit when the account balance is below this (templated).
    :param end_from_trigger: Let the trigger end the task where it can (default True); False always
        resumes in a worker for ``execute_complete``.
    :param resubmit_on_server_failure: When waiting, submit the generation again up to this many
        times when its prediction ends ``failed`` with a server-side code (5xxx): a confirmed
        terminal failure, so nothing runs twice. Never after an input or moderation failure
        (1xxx), never after an uncertain submit. Default 0, as the official SDK's ``max_retries``.
        The result's ``prediction_ids_tried`` lists every prediction tried.
    :param cancel_on_kill: When waiting, and a user kills the task (mark failed/success, clear),
        cancel its prediction if unfinished (default True): from the trigger when deferred
        (Airflow 3.3+; 3.0-3.2 see the README), from ``on_kill`` when waiting in a worker. Never
        on a triggerer restart, a worker shutdown or a retry.
    :param cancel_on_timeout: When waiting and ``timeout`` passes, cancel the prediction if
        unfinished (default True: the task fails for good then, and no one would collect it).
    """

    template_fields: Sequence[str] = (
        "model",
        "inputs",
        "wavespeed_conn_id",
        "webhook",
        "output_path",
        "max_cost_usd",
        "min_balance_usd",
        "poll_interval",
        "timeout",
    )
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (WaveSpeedModelLink(), WaveSpeedPredictionLink())
    ui_color = "#b3e5ff"

    def __init__(
        self,
        *,
        model: str,
        inputs: dict[str, Any] | str,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        webhook: str | None = None,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        output_path: str | os.PathLike[str] | ObjectStoragePath | None = None,
        max_cost_usd: float | str | None = None,
        min_balance_usd: float | str | None = None,
        resubmit_on_server_failure: int = 0,
        end_from_trigger: bool = True,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        settings = {"poll_interval": (poll_interval, DEFAULT_POLL_INTERVAL), "timeout": (timeout, 600.0)}
        seconds_settings(self.task_id, settings, rendered=False)
        self._check_resubmissions(self.task_id, resubmit_on_server_failure, wait_for_completion)
        if output_path is not None and not wait_for_completion:
            raise ValueError(
                f"{self.task_id}: output_path needs wait_for_completion=True (or give it to the "
                "WaveSpeedTaskSensor that waits for this prediction)"
            )
        self.model = model
        self.inputs = inputs
        self.wavespeed_conn_id = wavespeed_conn_id
        self.webhook = webhook
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.output_path = output_path
        self.max_cost_usd = max_cost_usd
        self.min_balance_usd = min_balance_usd
        self.resubmit_on_server_failure = resubmit_on_server_failure
        # Not Airflow's attribute name: its DAG bag refuses a task whose end_from_trigger is true while
        # listeners exist; end_in_triggerer_kwargs() checks for listeners itself, when the wait starts.
        self.end_in_triggerer = end_from_trigger
        # Only a waiting task owns its prediction's fate; without waiting, a sensor downstream does.
        self.cancel_on_kill = cancel_on_kill and wait_for_completion
        self.cancel_on_timeout = cancel_on_timeout and wait_for_completion
        self._waiting_in_worker: tuple[Any, str] | None = None  # (task instance, prediction id): for on_kill
        self._unit_price: float | None = None  # what one generation of these inputs costs, once priced
        self._price_note = "the inputs were not priced"

    @cached_property
    def hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id)

    def submit(self, context: Context, tried: list[str] | None = None) -> Prediction:
        """Validate the rendered arguments, then submit once; ``tried`` lists earlier predictions of this try.

        A first submit of a try resumes (or adopts from the history) what an earlier try's record names.
        """
        record = self._record(context)
        try:
            model = validate_model(self.model)
            inputs = validate_inputs(self.inputs)
            webhook = validate_webhook_url(self.webhook) if self.webhook else None
            prediction = None if tried else resume_or_adopt(record, self.hook, model, inputs, log=self.log)
            if prediction is None:
                self.check_budget(model, inputs)
                sent_at = time.time()
                record.write_intent(model, inputs, sent_at)
                try:
                    prediction = self.hook.submit(model, inputs, webhook=webhook)
                except WaveSpeedSubmitUncertainError as exc:
                    prediction = find_in_history(record, self.hook, model, inputs, sent_at, str(exc), log=self.log)
                else:
                    self.log.info("Submitted WaveSpeed prediction %s for model %s", prediction.id, model)
                # The one instant left unrecorded: between the API's answer and this write.
                record.write_submitted(prediction.id, model, inputs, sent_at=sent_at)
        except WaveSpeedError as exc:
            raise airflow_error(exc) from None
        if self.wait_for_completion and self._unit_price is None:
            self._price_for_result(model, inputs)
        context["ti"].xcom_push(key=XCOM_PREDICTION_ID, value=prediction.id)
        self._push_spend(context, prediction.id, tried)
        # The task runner stores the links as this run ends, a deferral too; a wait in this worker
        # stores them at once, so the UI shows them during it.
        now = self.wait_for_completion and not self.deferrable
        WaveSpeedModelLink.persist(context, model=model, now=now)
        WaveSpeedPredictionLink.persist(context, prediction_id=prediction.id, now=now)
        return prediction

    # -- the record: kept through a deferral, written back after a wait without the prediction, deleted
    # once the id or the result is handed on for good --

    def _record(self, context: Context) -> SubmitRecord:
        return SubmitRecord(context)

    def _delete_record(self, context: Context) -> None:
        """Delete the record: the prediction is handed on for good (see ``_submit_record``)."""
        self._record(context).delete()

    def _waited_for(self, context: Context, prediction_id: str = "") -> str:
        """Return the prediction this deferred try waited for: given, else the one its submit pushed to XCom."""
        if prediction_id:
            return prediction_id
        ti = context["ti"]
        pushed = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_PREDICTION_ID, map_indexes=ti.map_index)
        return str(pushed or "")

    def _completed(self, context: Context, prediction: Prediction, tried: list[str]) -> dict[str, Any]:
        # Storage failures fail for good: a retry of this task would submit (and pay) again.
        hint = (
            f". Prediction {prediction.id} completed and is kept 7 days: to store its outputs without "
            f"submitting again, wait on it with WaveSpeedTaskSensor(prediction_id={prediction.id!r}, "
            "output_path=...) instead of re-running this task"
        )
        result = completed_result(
            context,
            prediction,
            output_path=self.output_path,
            hook=self.hook,
            outlets=self.outlets,
            retryable=(),
            log=self.log,
            store_failure_hint=hint,
            cost=self._cost(context),
        )
        self._note_spend(result, prediction, tried)
        keep_for_lineage(self, result)
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the model as job facet, the prediction as run facet, stored outputs as datasets."""
        return operator_lineage(self)

    def _reread(self, prediction_id: str) -> Prediction:
        try:
            return self.hook.get_prediction(prediction_id)
        except WaveSpeedError as exc:
            raise airflow_error(exc, WAIT_RETRYABLE) from None

    def _check_settings(self) -> None:
        """Convert the rendered ``poll_interval`` and ``timeout`` to seconds; a bad one fails the task at once."""
        settings = {"poll_interval": (self.poll_interval, DEFAULT_POLL_INTERVAL), "timeout": (self.timeout, 600.0)}
        checked = seconds_settings(self.task_id, settings, rendered=True)
        self.poll_interval, self.timeout = checked["poll_interval"], checked["timeout"]

    def execute(self, context: Context) -> Any:
        start_links(self)
        self._check_settings()
        prediction = self.submit(context)
        if not self.wait_for_completion:
            keep_for_lineage(self, prediction.id)
            self._delete_record(context)  # the return value carries the id
            return prediction.id
        tried = [prediction.id]
        while True:
            if self.deferrable:
                self._defer(context, prediction.id)
            try:
                done = self._wait_here(context, prediction.id)
            except WaveSpeedPredictionFailedError as exc:
                prediction = self._after_failure(context, exc, tried)
                tried.append(prediction.id)
                continue
            except WaveSpeedError as exc:
                raise airflow_error(exc, WAIT_RETRYABLE) from None
            result = self._completed(context, done, tried)
            self._delete_record(context)
            return result

    def _wait_here(self, context: Context, prediction_id: str) -> Prediction:
        """Wait in this worker; at ``timeout`` cancel the prediction first (``cancel_on_timeout``)."""
        self._waiting_in_worker = (context["ti"], prediction_id)
        try:
            return self.hook.wait_for_prediction(prediction_id, poll_interval=self.poll_interval, timeout=self.timeout)
        except WaveSpeedTimeoutError:
            if self.cancel_on_timeout and self._cancel_at_timeout(prediction_id):
                raise WaveSpeedTimeoutError(
                    f"WaveSpeed prediction {prediction_id} did not finish within {self.timeout:g} s and was "
                    "cancelled (cancel_on_timeout)",
                    prediction_id=prediction_id,
                ) from None
            raise
        finally:
            self._waiting_in_worker = None

    def _defer(self, context: Context, prediction_id: str) -> NoReturn:
        """Defer the wait for ``prediction_id`` to :class:`WaveSpeedTaskTrigger`; it resumes in ``execute_complete``.

        The record is kept for a retry (:meth:`SubmitRecord.hand_on`): a try whose wait ends with no
        worker resuming it resumes the same prediction.
        """
        wait = deferring(self, f"WaveSpeed prediction {prediction_id} is")
        # A resubmission needs the worker: it alone may submit again.
        end_here = end_in_triggerer_kwargs(
            self,
            enabled=self.end_in_triggerer and not self.resubmit_on_server_failure,
            output_path=self.output_path,
            cost=self._cost(None),  # submit() priced the inputs in this process
        )
        self._record(context).hand_on(prediction_id, self.model, self.inputs, trigger_may_end_task=bool(end_here))
        self.defer(
            trigger=WaveSpeedTaskTrigger(prediction_id=prediction_id, **wait.trigger_kwargs(self), **end_here),
            method_name="execute_complete",
            kwargs={"prediction_id": prediction_id},
            timeout=wait.airflow_timeout,
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, prediction_id: str = ""
    ) -> dict[str, Any]:
        """Resume after the trigger: validate the event, fail (writing the record back) or return the prediction."""
        self._check_settings()
        if not prediction_id and isinstance(event, dict):
            # dag.test() resumes with the event alone (no defer kwargs): it names the prediction waited for.
            prediction_id = str(event.get("prediction_id") or "")
        prediction_id = self._waited_for(context, prediction_id)
        # Cancelled at the timeout (cancel_on_timeout): nothing left to resume, a later try submits anew.
        write_back = bool(prediction_id) and not (isinstance(event, dict) and event.get("cancelled"))
        hint = (
            f". This task keeps prediction {prediction_id} in its record: a retry or a clear resumes it (nothing "
            "is submitted again)"
        )
        try:
            prediction = prediction_from_event(
                event,
                prediction_id=prediction_id,
                on_timeout=AirflowFailException,
                reread=self._reread if self.output_path else None,
                hint=hint if write_back else "",
            )
        except AirflowException:
            if write_back:
                self._record(context).write_back(prediction_id, self.model, self.inputs, log=self.log)
            raise
        tried = self._tried(context, prediction_id)
        try:
            ensure_success(prediction)
        except WaveSpeedPredictionFailedError as exc:
            resubmitted = self._after_failure(context, exc, tried)
            self._defer(context, resubmitted.id)
        self.log.info("WaveSpeed prediction %s completed with %d output(s)", prediction.id, len(prediction.outputs))
        result = self._completed(context, prediction, tried)
        self._delete_record(context)
        return result

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume as Airflow does, writing the record back first when Airflow fails the deferral.

        ``__fail__`` is how Airflow resumes a task whose trigger failed (raised, or could not be loaded)
        or whose deferral timed out: it raises ``TaskDeferralError`` (or ``TaskDeferralTimeout``), which
        its retries retry; with the record the retry resumes the prediction instead of paying for another.
        """
        if next_method == TRIGGER_FAIL_REPR and self.wait_for_completion:
            prediction_id = self._waited_for(context)
            if prediction_id:
                self.log.warning(
                    "The wait for WaveSpeed prediction %s ended in Airflow's trigger failure (%s); it may still run",
                    prediction_id,
                    (next_kwargs or {}).get("error", "unknown reason"),
                )
                self._record(context).write_back(prediction_id, self.model, self.inputs, log=self.log)
        return super().resume_execution(next_method, next_kwargs, context)
