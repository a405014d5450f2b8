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
    prediction_from_event,
)
from airflow_provider_wavespeed._submit_record import SubmitRecord, find_in_history, resume_or_adopt
from airflow_provider_wavespeed._wait import WaitTimeout, default_deferrable, seconds_settings
from airflow_provider_wavespeed.api.defaults import DEFAULT_POLL_INTERVAL, DEFAULT_WAIT_TIMEOUT
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedError,
    WaveSpeedPredictionFailedError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTimeoutError,
)
from airflow_provider_wavespeed.api.models import Prediction, ensure_success
from airflow_provider_wavespeed.api.validation import validate_inputs, validate_model, validate_webhook_url
from airflow_provider_wavespeed.cost import budget_usd, check_spend, checked_price, cost_fields, guard_errors, log_cost
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.lineage import keep_for_lineage, operator_lineage
from airflow_provider_wavespeed.links import WaveSpeedModelLink, WaveSpeedPredictionLink, start_links
from airflow_provider_wavespeed.triggers._cancel import cancel_now, cancel_on_worker_kill, note_waiting_try
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_wavespeed.storage import OutputPath

XCOM_PREDICTION_ID = "prediction_id"
# Every prediction one try of the task submitted, in order (more than one after a resubmission).
XCOM_PREDICTION_IDS = "prediction_ids"
# The price of one generation of these inputs, when the task priced them (cost guard, or waiting).
XCOM_UNIT_PRICE = "unit_price_usd"
# A retry of this task submits again. That is what a user's retries are for after a failed
# generation, but never after a lost wait: that prediction may still finish (and was paid).
_WAIT_RETRYABLE: tuple[type[WaveSpeedError], ...] = (WaveSpeedPredictionFailedError,)


class WaveSpeedSubmitOperator(BaseOperator):
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
    wait (a failed prediction, an error, the wait limit) resumes in the worker, whose retry rules apply.

    Resume: from just before the submit until the prediction id is handed on (returned, or given
    to the trigger), the task keeps a record (:mod:`~airflow_provider_wavespeed._submit_record`:
    Airflow's task state store on 3.3+, an Airflow Variable below): "sending" with the send time,
    then the prediction id; a deferred wait that ends without the prediction (an error, a crashed
    trigger, the wait limit) writes it back. A later try that finds it (a retry, a clear) resumes
    that prediction while it is queued, processing or completed, and submits again when it failed,
    was cancelled or deleted. A submit with no answer, or a "sending" record, is looked up in the
    prediction history (same model and inputs, created at or after the send) and the one match,
    still alone on a second look, is adopted; with none, several, or a history that lists no inputs
    the task fails without submitting again (:mod:`~airflow_provider_wavespeed.api.reconcile`).

    Cost guard (:mod:`~airflow_provider_wavespeed.cost`): with ``max_cost_usd`` the price of these
    inputs is asked first (``/model/pricing``) and the task fails without submitting when it is
    higher, or when no price can be read; with ``min_balance_usd`` it fails without submitting when
    the account balance is lower. A waiting task prices its inputs even without the guard: its
    result carries ``unit_price_usd`` and ``cost_usd`` (the completed generation's price; None, with
    ``cost_note``, when no price could be read). The price is also pushed to XCom (``unit_price_usd``).

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
        output_path: OutputPath | None = None,
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
        if not isinstance(resubmit_on_server_failure, int) or resubmit_on_server_failure < 0:
            raise ValueError(
                f"{self.task_id}: resubmit_on_server_failure must be a whole number >= 0, "
                f"got {resubmit_on_server_failure!r}"
            )
        if resubmit_on_server_failure and not wait_for_completion:
            raise ValueError(
                f"{self.task_id}: resubmit_on_server_failure needs wait_for_completion=True (only a "
                "waiting task learns that a prediction failed)"
            )
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
        if self._unit_price is not None:
            context["ti"].xcom_push(key=XCOM_UNIT_PRICE, value=self._unit_price)
        if self.resubmit_on_server_failure:
            context["ti"].xcom_push(key=XCOM_PREDICTION_IDS, value=[*(tried or []), prediction.id])
        WaveSpeedModelLink.persist(context, model=model)
        WaveSpeedPredictionLink.persist(context, prediction_id=prediction.id)
        return prediction

    # -- the record: deleted once the id is handed on, written back after a wait without the prediction --

    def _record(self, context: Context) -> SubmitRecord:
        return SubmitRecord(context)

    def _delete_record(self, context: Context) -> None:
        """Delete the record: the prediction id is handed on (returned, or in the trigger's kwargs).

        A later try (a retry after the wait, a user's clear) must not silently resume a prediction
        that may have been delivered: the trigger may end the task itself, in the triggerer, which
        cannot write the record. A wait that ends without delivering it writes the record back
        (:meth:`_write_record_back`).
        """
        self._record(context).delete()

    def _write_record_back(self, context: Context, prediction_id: str) -> None:
        """Write the record back for ``prediction_id``: its deferred wait ended without the prediction.

        An error, the timeout or a trigger Airflow failed: a later try resumes it instead of paying
        again. Written by the worker that fails the task, before it fails. When the write fails, the
        task fails for good: a retry without the record would submit (and pay) again.
        """
        record = self._record(context)
        try:
            try:
                model = validate_model(self.model)
                inputs = validate_inputs(self.inputs)
            except WaveSpeedError as exc:
                raise airflow_error(exc) from None
            record.write_submitted(prediction_id, model, inputs, verify=True)
        except Exception as exc:
            raise AirflowFailException(
                f"The wait for WaveSpeed prediction {prediction_id} ended without it, and recording it in "
                f"{record.where} failed ({type(exc).__name__}: {exc}): the task is not retried, so nothing is "
                f"submitted again. The prediction may still run: wait on it with "
                f"WaveSpeedTaskSensor(prediction_id={prediction_id!r})"
            ) from None
        self.log.info(
            "WaveSpeed prediction %s is recorded in %s: a retry or a clear of this task resumes it (nothing is "
            "submitted again)",
            prediction_id,
            record.where,
        )

    def _waited_for(self, context: Context, prediction_id: str = "") -> str:
        """Return the prediction this deferred try waited for: given, else the one its submit pushed to XCom."""
        if prediction_id:
            return prediction_id
        ti = context["ti"]
        pushed = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_PREDICTION_ID, map_indexes=ti.map_index)
        return str(pushed or "")

    def _tried(self, context: Context, prediction_id: str) -> list[str]:
        """The predictions this try submitted so far (kept in XCom: a deferral may resume anywhere)."""
        if not self.resubmit_on_server_failure:
            return [prediction_id]
        ti = context["ti"]
        tried = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_PREDICTION_IDS, map_indexes=ti.map_index)
        if not isinstance(tried, list) or not tried or tried[-1] != prediction_id:
            return [prediction_id]
        return [str(i) for i in tried]

    def _after_failure(self, context: Context, error: WaveSpeedPredictionFailedError, tried: list[str]) -> Prediction:
        """Submit again after a server-side failure while resubmissions are left; else raise ``error``."""
        if error.is_server_failure and len(tried) <= self.resubmit_on_server_failure:
            self.log.warning(
                "WaveSpeed prediction %s failed on the server's side (code %s): submitting again "
                "(resubmission %d of %d); predictions tried: %s",
                error.prediction_id,
                error.code,
                len(tried),
                self.resubmit_on_server_failure,
                ", ".join(tried),
            )
            return self.submit(context, tried)
        if len(tried) > 1:
            error.args = (f"{error}; predictions tried, in order: {', '.join(tried)}",)
        raise airflow_error(error, _WAIT_RETRYABLE) from None

    def check_budget(self, model: str, inputs: dict[str, Any]) -> None:
        """The cost guard: fail before submitting when over ``max_cost_usd`` or under ``min_balance_usd``.

        Fails closed when the price or the balance cannot be read; keeps the price for the result.
        """
        max_cost = budget_usd(self.max_cost_usd, "max_cost_usd")
        min_balance = budget_usd(self.min_balance_usd, "min_balance_usd")
        if max_cost is not None:
            with guard_errors(model, inputs):
                price = checked_price(self.hook.get_price(model, inputs), model, inputs)
            check_spend(model, [price], max_cost=max_cost, balance=None, min_balance=None)
            self._unit_price = price
            self.log.info("WaveSpeed price %.4f USD is within max_cost_usd %.4f", price, max_cost)
        if min_balance is not None:
            with guard_errors(model):
                balance = self.hook.get_balance()
            check_spend(model, [], max_cost=None, balance=balance, min_balance=min_balance)

    def _price_for_result(self, model: str, inputs: dict[str, Any]) -> None:
        """Price the inputs for the result's cost; a price that cannot be read is noted, never a failure."""
        try:
            self._unit_price = checked_price(self.hook.get_price(model, inputs), model, inputs)
        except WaveSpeedError as exc:
            self._price_note = f"the price could not be read ({exc})"
            self.log.warning("WaveSpeed cost of this generation unknown: %s", self._price_note)

    def _cost(self, context: Context | None) -> dict[str, Any]:
        """The cost fields of the result: the price this try noted (pushed to XCom: a deferral resumes anywhere)."""
        price = self._unit_price
        if price is None and context is not None:
            ti = context["ti"]
            pulled = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_UNIT_PRICE, map_indexes=ti.map_index)
            price = float(pulled) if isinstance(pulled, (int, float)) and not isinstance(pulled, bool) else None
        if price is None:
            return cost_fields([], unknown=self._price_note)
        return cost_fields([price])

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
        log_cost(self.log, prediction.model or str(self.model), [result["unit_price_usd"]], result)
        if self.resubmit_on_server_failure:
            result["prediction_ids_tried"] = list(tried)
            if len(tried) > 1:
                self.log.info("WaveSpeed generation completed as prediction %s; tried: %s", prediction.id, tried)
        keep_for_lineage(self, result)
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the model as job facet, the prediction as run facet, stored outputs as datasets."""
        return operator_lineage(self)

    def _reread(self, prediction_id: str) -> Prediction:
        try:
            return self.hook.get_prediction(prediction_id)
        except WaveSpeedError as exc:
            raise airflow_error(exc, _WAIT_RETRYABLE) from None

    def _check_settings(self) -> None:
        """The rendered ``poll_interval`` and ``timeout`` as seconds; a bad one fails the task before any request."""
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
                self._delete_record(context)  # the trigger's kwargs carry the id
                self._defer(context, prediction.id)
            try:
                done = self._wait_here(context, prediction.id)
            except WaveSpeedPredictionFailedError as exc:
                prediction = self._after_failure(context, exc, tried)
                tried.append(prediction.id)
                continue
            except WaveSpeedError as exc:
                raise airflow_error(exc, _WAIT_RETRYABLE) from None
            result = self._completed(context, done, tried)
            self._delete_record(context)
            return result

    def _wait_here(self, context: Context, prediction_id: str) -> Prediction:
        """Wait in this worker; at ``timeout`` cancel the prediction first (``cancel_on_timeout``)."""
        self._waiting_in_worker = (context["ti"], prediction_id)
        try:
            return self.hook.wait_for_prediction(prediction_id, poll_interval=self.poll_interval, timeout=self.timeout)
        except WaveSpeedTimeoutError:
            if self.cancel_on_timeout:
                outcome = cancel_now(self.wavespeed_conn_id, [prediction_id], log=self.log)
                if prediction_id in outcome.cancelled or prediction_id in outcome.gone:
                    raise WaveSpeedTimeoutError(
                        f"WaveSpeed prediction {prediction_id} did not finish within {self.timeout:g} s and was "
                        "cancelled (cancel_on_timeout)",
                        prediction_id=prediction_id,
                    ) from None
            raise
        finally:
            self._waiting_in_worker = None

    def on_kill(self) -> None:
        """Killed while waiting in a worker: cancel the unfinished prediction when a user killed the task."""
        waiting = self._waiting_in_worker
        if self.cancel_on_kill and waiting is not None:
            cancel_on_worker_kill(self, waiting[0], self.wavespeed_conn_id, [waiting[1]])

    def _defer(self, context: Context | None, prediction_id: str) -> NoReturn:
        """Defer the wait for ``prediction_id`` to :class:`WaveSpeedTaskTrigger`; it resumes in ``execute_complete``."""
        wait = WaitTimeout.from_now(self.timeout)
        wait.log_deferral(self.log, f"WaveSpeed prediction {prediction_id} is")
        if self.cancel_on_kill:
            note_waiting_try(self.log)  # so that a clear's next try, deferred again, is told from this one
        trigger = WaveSpeedTaskTrigger(
            prediction_id=prediction_id,
            wavespeed_conn_id=self.wavespeed_conn_id,
            poll_interval=self.poll_interval,
            end_time=wait.end_time,
            cancel_on_kill=self.cancel_on_kill,
            cancel_on_timeout=self.cancel_on_timeout,
            # A resubmission needs the worker: it alone may submit again.
            **end_in_triggerer_kwargs(
                self,
                enabled=self.end_in_triggerer and not self.resubmit_on_server_failure,
                output_path=self.output_path,
                cost=self._cost(None),  # submit() priced the inputs in this process
            ),
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={"prediction_id": prediction_id},
            timeout=wait.airflow_timeout,
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, prediction_id: str = ""
    ) -> dict[str, Any]:
        """Resume after the trigger: validate the event, fail or return the prediction.

        A wait that ended without the prediction (an error, the wait limit, an event this version does not
        understand) writes the record back first: a retry or a clear resumes the same prediction.
        """
        self._check_settings()
        if not prediction_id and isinstance(event, dict):
            # dag.test() resumes with the event alone (it drops defer kwargs); the event names the
            # prediction its trigger, created by this task, waited for.
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
                self._write_record_back(context, prediction_id)
            raise
        tried = self._tried(context, prediction_id)
        try:
            ensure_success(prediction)
        except WaveSpeedPredictionFailedError as exc:
            resubmitted = self._after_failure(context, exc, tried)
            self._delete_record(context)
            self._defer(context, resubmitted.id)
        self.log.info("WaveSpeed prediction %s completed with %d output(s)", prediction.id, len(prediction.outputs))
        return self._completed(context, prediction, tried)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's entry point on resume. ``__fail__`` is how it resumes a task whose trigger failed (raised,
        or could not be loaded) or whose deferral timed out: it raises ``TaskDeferralError`` (or
        ``TaskDeferralTimeout``), which its retries retry. Write the record back first, so the retry resumes
        the prediction instead of paying for another."""
        if next_method == TRIGGER_FAIL_REPR and self.wait_for_completion:
            prediction_id = self._waited_for(context)
            if prediction_id:
                self.log.warning(
                    "The wait for WaveSpeed prediction %s ended in Airflow's trigger failure (%s); it may still run",
                    prediction_id,
                    (next_kwargs or {}).get("error", "unknown reason"),
                )
                self._write_record_back(context, prediction_id)
        return super().resume_execution(next_method, next_kwargs, context)
