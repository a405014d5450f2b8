"""WaveSpeedBatchOperator: many generations of one model in one task, each input submitted once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.nativetypes
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import BaseOperator

from airflow_provider_wavespeed._outcome import airflow_error, operator_lineage
from airflow_provider_wavespeed._wait import WaitingTask, WaitTimeout, default_deferrable, deferring, seconds_settings
from airflow_provider_wavespeed.api import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    AsyncWaveSpeedClient,
    Prediction,
    WaitOutcome,
    WaveSpeedError,
    WaveSpeedValidationError,
    batch_inputs,
    cancel_unfinished,
    in_words,
    read_predictions,
    validate_model,
    wait_for_predictions,
)
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.links import WaveSpeedModelLink, start_links
from airflow_provider_wavespeed.operators._batch_result import checked_batch_event, finish_batch
from airflow_provider_wavespeed.operators._batch_submit import (
    WorkerWait,
    guard_spend,
    open_record,
    pulled_prices,
    submit_and_collect,
)
from airflow_provider_wavespeed.triggers.batch import IDS_XCOM_KEY, WaveSpeedBatchTrigger, ids_for_xcom

if TYPE_CHECKING:
    import os

    from airflow.sdk import Context, ObjectStoragePath


def _renders_to_itself(text: str, env: jinja2.Environment, template_ext: Sequence[str]) -> bool:
    r"""Whether Airflow's rendering of ``text`` with ``env`` returns ``text`` unchanged: no markup of ``env`` in it.

    Not with a native environment (it turns "1" into 1), nor for a template file's name, a line ending
    Jinja rewrites (``\r``; ``\n`` when its newline is another), a final newline it drops, or an
    extension that may rewrite the source.
    """
    if isinstance(env, jinja2.nativetypes.NativeEnvironment) or text.endswith(tuple(template_ext)):
        return False
    if "\r" in text or ("\n" in text and env.newline_sequence != "\n"):
        return False
    if text.endswith("\n") and not env.keep_trailing_newline:
        return False
    base = jinja2.ext.Extension
    if any(
        type(ext).preprocess is not base.preprocess or type(ext).filter_stream is not base.filter_stream
        for ext in env.extensions.values()
    ):
        return False
    markup = (
        env.block_start_string,
        env.variable_start_string,
        env.comment_start_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
    )
    return not any(marker and marker in text for marker in markup)


class WaveSpeedBatchOperator(WaitingTask, BaseOperator):
    """Generate many inputs with one model in one task: submit each once, wait for all, return all.

    Submits from this one worker, concurrently and paced by the connection's submission budget
    (``max_submissions_per_minute``, the process-wide limiter every WaveSpeed submit uses), a
    window of ``submit_window`` inputs at a time. A 429 (after ``Retry-After``) or a connection that
    never opened is retried; a submit whose outcome is unknown is never repeated (the item is
    ``uncertain``); an input the API refuses (4xx) fails that item and the others go on.

    **Never submits an input twice**, across task retries and a worker killed mid-batch: the
    task keeps a record (see :class:`~airflow_provider_wavespeed._batch_record.BatchRecord`) in the
    metadata database: Airflow's task state store on Airflow 3.3+ (key ``wavespeed_batch``, parts
    ``wavespeed_batch.0``, ``.1``...), Airflow Variables named ``wavespeed_batch__<hash of the task
    instance>`` (parts ``...__0``, ``__1``...) below 3.3 (their description names the task
    instance). Before a window is sent it is marked in flight in the record's small head; after its
    answers, one new part holds the window's accepted prediction ids, so the record writes O(N)
    bytes in all (about 100 bytes per input), never rewriting what it wrote. Inputs whose submit
    has no answer (and, on a later try, inputs that were in flight when a worker died) are looked
    up in the prediction history
    (:func:`~airflow_provider_wavespeed.api._reconcile.reconcile`): the one prediction of this model
    with the same inputs, created at or after the input's send and still alone on a second look, is
    adopted; with none, several, or a history that lists no inputs the input is reported
    ``uncertain`` (with what to check) and never sent again. Inputs never
    sent are submitted. The record is deleted when the task succeeds; a failed task keeps it, so
    re-running the task resumes instead of paying twice (delete its head to submit every input again).

    Then it waits for every prediction in **one** :class:`WaveSpeedBatchTrigger` (``deferrable``,
    the default) or in the worker, with the same polling either way. Deferring, it pushes the ids
    to one XCom (``wavespeed_batch_ids``, comma-separated) and the trigger's kwargs only say where
    it is: their size does not grow with the batch. The trigger's event carries only counts, and
    the task reads the finished predictions when it resumes.

    Returns, in input order, ``{"predictions": [{"index", "id", "status", "outputs", "error",
    "code"}, ...], "completed": n, "failed": m}``; with ``output_path`` each entry gains
    ``stored_paths``. ``failed`` counts every input that did not complete: failed, cancelled,
    refused, ``uncertain``, or still running at the timeout. When more than ``max_failed``
    did not complete the task fails (no retry: it could only wait again) naming them; the
    outputs of the completed ones are stored first. That result is about 200 bytes per input in
    XCom (2 MB at 10,000): with ``manifest_path`` it is written there as JSON instead (before the
    record is deleted; a write that fails is retried and submits nothing) and the task returns
    ``{"manifest": "<where it was written>", "completed": n, "failed": m, "count": N,
    "not_completed": [the first 20 entries that did not complete]}``.

    Cost guard (:mod:`~airflow_provider_wavespeed._cost`): with ``max_cost_usd`` the inputs still to
    send are priced before the first submit (``/model/pricing``, one request per distinct input,
    deduplicated: which inputs a model's price depends on is not documented per model), and the
    whole batch is refused, nothing submitted, when their sum is over it or a price cannot be read;
    with ``min_balance_usd``, when the account balance is below it. A resumed try prices only the
    inputs it still has to send. Every result says what the batch cost: each entry's
    ``unit_price_usd`` (None when it did not complete), and ``unit_price_usd`` (None when prices
    differ) and ``cost_usd`` for the completed ones, in the full result, the manifest and the summary
    (None, with ``cost_note``, when a price could not be read; that never fails the task).

    :param inputs: A list of input dicts, one per generation (templated), or the XComArg of a
        task that returns one.
    :param model: The model id, e.g. ``wavespeed-ai/flux-dev`` (templated).
    :param wavespeed_conn_id: The WaveSpeed connection id.
    :param output_path: Where to copy the completed outputs (templated): a directory path, a URL
        (``file:///data/out/``, ``s3://bucket/prefix/``) or an ``ObjectStoragePath``.
    :param max_failed: How many inputs may fail to complete before the task fails (default 0).
    :param poll_interval: Longest wait between two polls of a prediction, in seconds (templated; a finite
        number > 0).
    :param timeout: Seconds to wait for the predictions once all are submitted (templated; a finite
        number > 0). Both are checked before anything is sent, again once templates rendered.
    :param deferrable: Wait in the triggerer instead of a worker (default True).
    :param submit_window: Inputs sent per record window. Default: about 2 s of the connection's
        submission budget, at least 25 (Silver 25, Gold 100): fewer record writes per second at a
        higher tier (see
        :func:`~airflow_provider_wavespeed.operators._batch_submit.default_submit_window`). A given
        number wins.
    :param cancel_on_kill: When a user kills the task (mark failed/success, clear), cancel the
        unfinished predictions it created, concurrently and paced like polls (default True): from the
        trigger when deferred (Airflow 3.3+; 3.0-3.2 see the README), from ``on_kill`` while it
        submits or waits in a worker. Completed ones are never touched; never on a triggerer
        restart or a retry.
    :param cancel_on_timeout: When ``timeout`` passes, cancel the unfinished predictions (default
        True); their entries read ``cancelled``.
    :param manifest_path: Where to write the full result as JSON (templated): a file path, a URL
        (``file:///data/batch.json``, ``s3://bucket/run/batch.json``) or an ``ObjectStoragePath``;
        XCom then gets the small summary above.
    :param max_cost_usd: Refuse the whole batch, before any submit, when the inputs still to send
        cost more than this in all (templated).
    :param min_balance_usd: Refuse the whole batch, before any submit, when the account balance is
        below this (templated).
    """

    template_fields: Sequence[str] = (
        "model",
        "inputs",
        "output_path",
        "manifest_path",
        "max_cost_usd",
        "min_balance_usd",
        "poll_interval",
        "timeout",
    )
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (WaveSpeedModelLink(),)
    ui_color = "#b3e5ff"

    def __init__(
        self,
        *,
        inputs: Any,
        model: str,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        output_path: str | os.PathLike[str] | ObjectStoragePath | None = None,
        max_failed: int = 0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        deferrable: bool | None = None,
        submit_window: int | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        manifest_path: str | os.PathLike[str] | ObjectStoragePath | None = None,
        max_cost_usd: float | str | None = None,
        min_balance_usd: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value, low in (("max_failed", max_failed, 0), ("submit_window", submit_window, 1)):
            if value is None and name == "submit_window":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{self.task_id}: {name} must be a whole number >= {low}, got {value!r}")
        seconds_settings(self.task_id, self._settings(poll_interval, timeout), rendered=False)
        self.inputs = inputs
        self.model = model
        self.wavespeed_conn_id = wavespeed_conn_id
        self.output_path = output_path
        self.max_failed = max_failed
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.submit_window = submit_window
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.manifest_path = manifest_path
        self.max_cost_usd = max_cost_usd
        self.min_balance_usd = min_balance_usd
        self._unit_prices: dict[int, float] = {}  # index -> what one generation of its inputs costs, once priced
        # While this worker submits or waits, so that on_kill cancels every prediction the task created
        # and that may still run.
        self._waiting_in_worker: WorkerWait | None = None

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """Render as Airflow does, except that a string with no markup is returned as it is, not compiled.

        Airflow compiles a Jinja template for every string of a templated field (~0.1 ms each): 11 s
        of CPU in each worker run of a batch of 100,000 inputs, for strings that render to themselves.
        """
        if (
            isinstance(content, str)
            and jinja_env is not None
            and _renders_to_itself(content, jinja_env, self.template_ext)
        ):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)

    @staticmethod
    def _settings(poll_interval: object, timeout: object) -> dict[str, tuple[object, float]]:
        return {"poll_interval": (poll_interval, DEFAULT_POLL_INTERVAL), "timeout": (timeout, 1800.0)}

    def _check_settings(self) -> None:
        """Convert the rendered ``poll_interval`` and ``timeout`` to seconds; a bad one fails the task at once."""
        checked = seconds_settings(self.task_id, self._settings(self.poll_interval, self.timeout), rendered=True)
        self.poll_interval, self.timeout = checked["poll_interval"], checked["timeout"]

    @cached_property
    def hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the model as job facet, the predictions as run facet, stored outputs as datasets."""
        return operator_lineage(self)

    # -- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        start_links(self)
        self._check_settings()
        try:
            model = validate_model(self.model)
            items = batch_inputs(self.inputs)
        except WaveSpeedValidationError as exc:
            raise AirflowFailException(str(exc)) from None
        WaveSpeedModelLink.persist(context, model=model)
        record = open_record(self, context, model, items)
        guard_spend(self, context, model, items, record)  # before any submit
        self._waiting_in_worker = (context["ti"], record, set())
        try:
            if not self.deferrable:
                predictions, wait = asyncio.run(submit_and_collect(self, model, items, record, wait=True))
                return finish_batch(self, record, predictions, wait)
            if record.unsent() or record.to_reconcile():
                asyncio.run(submit_and_collect(self, model, items, record, wait=False))
        finally:
            self._waiting_in_worker = None
        ids = record.accepted_ids()
        if not ids:  # nothing to wait for: every input was refused or is uncertain
            return finish_batch(self, record, {}, None)
        self._defer(context, ids)

    async def _collect(
        self, client: AsyncWaveSpeedClient, ids: list[str], *, wait: bool
    ) -> tuple[dict[str, Prediction | WaveSpeedError], WaitOutcome | None]:
        """Every prediction's last state: waited for here (``wait``) or read once (after the trigger)."""
        found: dict[str, Prediction | WaveSpeedError] = {}
        outcome = None
        if wait and ids:
            end_time = WaitTimeout.from_now(self.timeout).end_time
            self.log.info(
                "Waiting in the worker for %d WaveSpeed predictions, at the latest %s from now",
                len(ids),
                in_words(self.timeout),
            )

            waiting = self._waiting_in_worker

            def collect_finished(prediction: Prediction) -> None:
                found[prediction.id] = prediction
                if waiting is not None:
                    waiting[2].add(prediction.id)

            outcome = await wait_for_predictions(
                client,
                ids,
                poll_interval=self.poll_interval,
                end_time=end_time,
                on_finished=collect_finished,
                log=self.log,
            )
            if outcome.error is not None:
                return found, outcome
            if outcome.deadline and outcome.last_status and self.cancel_on_timeout:
                await cancel_unfinished(client, list(outcome.last_status), log=self.log)
        found.update(await read_predictions(client, [i for i in ids if i not in found]))
        return found, outcome

    def _defer(self, context: Context, ids: list[str]) -> NoReturn:
        """Push the ids to one XCom and defer to a trigger whose kwargs say where it is (constant in size)."""
        ti = context["ti"]
        ti.xcom_push(key=IDS_XCOM_KEY, value=ids_for_xcom(ids))
        where = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": -1 if ti.map_index is None else ti.map_index,
            "key": IDS_XCOM_KEY,
        }
        wait = deferring(self, f"{len(ids)} WaveSpeed predictions are")
        self.defer(
            trigger=WaveSpeedBatchTrigger(ids_xcom=where, count=len(ids), **wait.trigger_kwargs(self)),
            method_name="execute_complete",
            timeout=wait.airflow_timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: read every prediction of the record, store, report."""
        self._check_settings()
        event, record = checked_batch_event(event, context, log=self.log)

        async def read_all() -> dict[str, Prediction | WaveSpeedError]:
            try:
                async with await self.hook.aget_client() as client:
                    found, _ = await self._collect(client, record.accepted_ids(), wait=False)
                    return found
            except WaveSpeedError as exc:
                raise airflow_error(exc) from None

        pulled_prices(self, context)
        return finish_batch(self, record, asyncio.run(read_all()), None)

    def _unfinished_in_worker(self, waiting: tuple[Any, ...]) -> list[str]:
        """Return what a kill while this worker submits or waits cancels: the predictions created, not seen finished."""
        _ti, record, finished = waiting
        return [i for i in record.accepted_ids() if i not in finished]
