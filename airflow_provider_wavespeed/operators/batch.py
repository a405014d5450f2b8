"""WaveSpeedBatchOperator: many generations of one model in one task, each input submitted once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_wavespeed._common import TRANSIENT_ERRORS, airflow_errors, default_deferrable
from airflow_provider_wavespeed._compat import AirflowException, AirflowFailException
from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient
from airflow_provider_wavespeed.api.defaults import DEFAULT_POLL_INTERVAL, DEFAULT_WAIT_TIMEOUT, DEFERRAL_GRACE
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedAuthError,
    WaveSpeedError,
    WaveSpeedRateLimitError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
    failure_advice,
)
from airflow_provider_wavespeed.api.models import SUCCESS_STATUS, Prediction
from airflow_provider_wavespeed.api.times import deadline_after, in_words
from airflow_provider_wavespeed.api.validation import validate_inputs, validate_model
from airflow_provider_wavespeed.events import (
    BATCH_EVENT_STATUSES,
    EVENT_DEADLINE,
    EVENT_ERROR,
    without_oversized_outputs,
)
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.lineage import note_result, operator_lineage
from airflow_provider_wavespeed.links import WaveSpeedModelLink
from airflow_provider_wavespeed.storage import OutputPath, store_outputs
from airflow_provider_wavespeed.triggers.batch import (
    BatchWait,
    WaveSpeedBatchTrigger,
    read_predictions,
    wait_for_predictions,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

# Inputs marked in flight per record write (one write before they are sent, one after their
# answers). Larger: fewer metadata-database writes; smaller: fewer items left "uncertain" when
# a worker dies in the middle of a window. 1,000 inputs cost 80 writes (and 40 reads).
DEFAULT_SUBMIT_WINDOW = 25

RECORD_PREFIX = "wavespeed_batch__"
_RECORD_VERSION = 1

STATUS_UNCERTAIN = "uncertain"  # sent, outcome unknown: never sent again
STATUS_UNKNOWN = "unknown"  # accepted, but it could not be read (e.g. 404)
# How many items a failure message lists (all are in the task log).
_LISTED = 20


def batch_inputs(inputs: object) -> list[dict[str, Any]]:
    """The rendered ``inputs`` as a list of validated input dicts; the error names the bad item."""
    if isinstance(inputs, str):
        # A template renders to text unless the DAG renders native objects: accept JSON, say what else works.
        try:
            inputs = json.loads(inputs)
        except ValueError:
            raise WaveSpeedValidationError(
                f"inputs rendered to a string that is not a JSON list ({inputs!r:.120}); pass a list of "
                "input dicts, the XComArg of a task that returns one (inputs=make_inputs()), or render "
                "the template to a native list (DAG(render_template_as_native_obj=True))"
            ) from None
    if isinstance(inputs, (Mapping, str, bytes)) or not isinstance(inputs, Sequence):
        raise WaveSpeedValidationError(
            f"inputs must be a list of input dicts, one per generation (e.g. [{{'prompt': 'a fox'}}, "
            f"{{'prompt': 'a whale'}}]), got {type(inputs).__name__}"
        )
    items = []
    for index, item in enumerate(inputs):
        try:
            items.append(validate_inputs(item))
        except WaveSpeedValidationError as exc:
            raise WaveSpeedValidationError(
                f"inputs[{index}] is not valid: {exc}. Fix that item: every item of inputs is one "
                "generation's dict of model inputs; nothing was submitted"
            ) from None
    return items


def _digest(model: str, items: list[dict[str, Any]]) -> str:
    text = json.dumps([model, items], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def record_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The Variable key of a task instance's batch record: ``wavespeed_batch__`` and a hash of its ids.

    Not the ids themselves: a run id's ``:`` and ``+`` travel in a URL path, a key may hold 250
    characters, and a name containing "secret" or "token" would make Airflow's log masker treat the
    whole record as a secret. The Variable's description names the task instance.
    """
    exact = json.dumps([dag_id, run_id, task_id, map_index])
    return f"{RECORD_PREFIX}{hashlib.sha256(exact.encode()).hexdigest()[:40]}"


class BatchRecord:
    """What a batch task has sent, in an Airflow Variable (JSON), so no input is ever submitted twice.

    Per input: its prediction id once accepted, the API's refusal, or "uncertain" (sent, no
    answer); and the window of inputs in flight: written *before* their submits leave, so a
    worker killed mid-window leaves a record that says which inputs may exist unseen. The
    Variable lives in Airflow's metadata database, written through the task SDK: it survives the
    worker process, and unlike XCom it survives into the task's next try (Airflow clears a task's
    XComs when a new try starts). Deleted when the task succeeds.
    """

    def __init__(self, key: str, data: dict[str, Any], description: str) -> None:
        self.key = key
        self.data = data
        self.description = description

    # -- reading and writing the Variable -------------------------------------------------

    @staticmethod
    def read(key: str) -> dict[str, Any] | None:
        from airflow.sdk import Variable

        text = Variable.get(key, default=None)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("version") != _RECORD_VERSION:
            raise AirflowFailException(
                f"The WaveSpeed batch record in Airflow Variable {key!r} is not one this provider wrote "
                f"(or a newer version's): {str(text)[:200]!r}. Nothing was submitted. If it is stale, delete "
                "the Variable: the task then submits every input again"
            )
        return data

    def _write(self, *, verify: bool) -> None:
        from airflow.sdk import Variable

        self.data["seq"] = int(self.data.get("seq", 0)) + 1
        Variable.set(self.key, json.dumps(self.data, separators=(",", ":")), description=self.description)
        if not verify:
            return
        # Read back: Airflow 3.0.6's Variable.set logs a failed write and returns (3.3.2's raises), and a
        # secrets backend holding the same key would shadow what was written.
        stored = self.read(self.key)
        if stored is None or stored.get("seq") != self.data["seq"]:
            raise AirflowException(
                f"Could not record the WaveSpeed batch's progress in Airflow Variable {self.key!r} (read back "
                f"{'nothing' if stored is None else 'an older version'}): nothing more was submitted. Check that "
                "tasks can write Variables (no secrets backend defines this key); a retry resumes from the record"
            )

    def delete(self) -> None:
        from airflow.sdk import Variable

        Variable.delete(self.key)

    # -- the record's content ----------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self.data["count"])

    def id_of(self, index: int) -> str | None:
        value = self.data["ids"][index]
        return str(value) if value else None

    def rejected(self, index: int) -> dict[str, Any] | None:
        value = self.data["rejected"].get(str(index))
        return value if isinstance(value, dict) else None

    def uncertain(self, index: int) -> str | None:
        value = self.data["uncertain"].get(str(index))
        return str(value) if value is not None else None

    def unsent(self) -> list[int]:
        """Inputs never sent (or sent and refused before anything was created, e.g. a spent 429)."""
        return [
            index
            for index in range(self.count)
            if self.id_of(index) is None
            and str(index) not in self.data["rejected"]
            and str(index) not in self.data["uncertain"]
        ]

    def accepted_ids(self) -> list[str]:
        return [prediction_id for prediction_id in (self.id_of(i) for i in range(self.count)) if prediction_id]

    def mark_in_flight(self, indexes: list[int]) -> None:
        """One write, read back, before any of these inputs is sent."""
        self.data["in_flight"] = list(indexes)
        self.data["in_flight_since"] = time.time()
        self._write(verify=True)

    def settle(self, accepted: dict[int, str], rejected: dict[int, dict[str, Any]], uncertain: dict[int, str]) -> None:
        """One write after the window's answers; inputs in none of the three go back to unsent."""
        for index, prediction_id in accepted.items():
            self.data["ids"][index] = prediction_id
        self.data["rejected"].update({str(index): value for index, value in rejected.items()})
        self.data["uncertain"].update({str(index): value for index, value in uncertain.items()})
        self.data["in_flight"] = []
        self._write(verify=False)

    def orphans(self) -> list[int]:
        """Inputs a dead worker left in flight: their submit's outcome is unknown."""
        return [int(index) for index in self.data.get("in_flight") or []]


@dataclass(frozen=True)
class _WindowOutcome:
    accepted: dict[int, str]
    rejected: dict[int, dict[str, Any]]
    uncertain: dict[int, str]
    stop: WaveSpeedError | None  # every later submit would meet it (a refused key, a spent 429)


class WaveSpeedBatchOperator(BaseOperator):
    """Generate many inputs with one model in one task: submit each once, wait for all, return all.

    Submits from this one worker, concurrently and paced by the connection's submission budget
    (``max_submissions_per_minute``, the process-wide limiter every WaveSpeed submit uses), a
    window of ``submit_window`` inputs at a time. A 429 (after ``Retry-After``) or a connection that
    never opened is retried; a submit whose outcome is unknown is never repeated (the item is
    ``uncertain``); an input the API refuses (4xx) fails that item and the others go on.

    **Never submits an input twice**, across task retries and a worker killed mid-batch: the
    task keeps a record (see :class:`BatchRecord`) in an Airflow Variable named
    ``wavespeed_batch__<hash of the task instance>`` (:func:`record_key`; its description names the
    task instance), in the metadata database. Before a
    window is sent it is marked in flight there; after its answers, the accepted prediction ids
    are written. A later try reads the record: inputs with a prediction are not sent again,
    inputs that were in flight when a worker died are reported ``uncertain`` (with what to check)
    and never sent again, and inputs never sent are submitted. The Variable is deleted when the
    task succeeds; a failed task keeps it, so re-running the task resumes instead of paying twice
    (delete the Variable to submit every input again).

    Then it waits for every prediction in **one** :class:`WaveSpeedBatchTrigger` (``deferrable``,
    the default) or in the worker, with the same polling either way; the trigger's event carries
    only counts, and the task reads the finished predictions when it resumes.

    Returns, in input order, ``{"predictions": [{"index", "id", "status", "outputs", "error",
    "code"}, ...], "completed": n, "failed": m}``; with ``output_path`` each entry gains
    ``stored_paths``. ``failed`` counts every input that did not complete: failed, cancelled,
    refused, ``uncertain``, or still running at the wait limit. When more than ``max_failed``
    did not complete the task fails (no retry: it could only wait again) naming them; the
    outputs of the completed ones are stored first.

    :param inputs: A list of input dicts, one per generation (templated), or the XComArg of a
        task that returns one.
    :param model: The model id, e.g. ``wavespeed-ai/flux-dev`` (templated).
    :param wavespeed_conn_id: The WaveSpeed connection id.
    :param output_path: Where to copy the completed outputs (templated): a directory path, a URL
        (``file:///data/out/``, ``s3://bucket/prefix/``) or an ``ObjectStoragePath``.
    :param max_failed: How many inputs may fail to complete before the task fails (default 0).
    :param poll_interval: Longest wait between two polls of a prediction, in seconds.
    :param timeout: Seconds to wait for the predictions once all are submitted.
    :param deferrable: Wait in the triggerer instead of a worker (default True).
    :param submit_window: Inputs sent per record window (default 25); see :data:`DEFAULT_SUBMIT_WINDOW`.
    """

    template_fields: Sequence[str] = ("model", "inputs", "output_path")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (WaveSpeedModelLink(),)
    ui_color = "#b3e5ff"

    def __init__(
        self,
        *,
        inputs: Any,
        model: str,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        output_path: OutputPath | None = None,
        max_failed: int = 0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        deferrable: bool | None = None,
        submit_window: int = DEFAULT_SUBMIT_WINDOW,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("max_failed", max_failed), ("submit_window", submit_window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "submit_window" else 0):
                low = 1 if name == "submit_window" else 0
                raise ValueError(f"{self.task_id}: {name} must be a whole number >= {low}, got {value!r}")
        self.inputs = inputs
        self.model = model
        self.wavespeed_conn_id = wavespeed_conn_id
        self.output_path = output_path
        self.max_failed = max_failed
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.submit_window = submit_window

    def _hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id)

    # -- the record -------------------------------------------------------------------------

    def _record_key(self, context: Context) -> str:
        ti = context["ti"]
        return record_key(ti.dag_id, ti.run_id, ti.task_id, -1 if ti.map_index is None else ti.map_index)

    def _open_record(self, context: Context, model: str, items: list[dict[str, Any]]) -> BatchRecord:
        """This task instance's record: an earlier try's (checked against these inputs), or a new one."""
        key = self._record_key(context)
        ti = context["ti"]
        description = (
            f"WaveSpeed batch record of {ti.dag_id}.{ti.task_id} (map index {ti.map_index}) in run {ti.run_id}: "
            "the inputs sent and their prediction ids, so that no retry submits an input twice. Deleted when "
            "the task succeeds; delete it yourself only to submit every input again."
        )
        digest = _digest(model, items)
        # A first try finds none (Airflow 3.0's task SDK logs that lookup as "Variable not found").
        self.log.info("Looking up the batch record of this task instance: Airflow Variable %r", key)
        data = BatchRecord.read(key)
        if data is None:
            data = {
                "version": _RECORD_VERSION,
                "model": model,
                "count": len(items),
                "digest": digest,
                "ids": [None] * len(items),
                "rejected": {},
                "uncertain": {},
                "in_flight": [],
            }
            return BatchRecord(key, data, description)
        if data.get("digest") != digest:
            raise AirflowFailException(
                f"The inputs (or model) of this batch differ from the ones an earlier try of this task submitted "
                f"({data.get('count')} inputs of {data.get('model')}, recorded in Airflow Variable {key!r}); "
                "resuming could pair predictions with the wrong inputs, so nothing was submitted. Render the same "
                "inputs again, or delete the Variable to submit every input anew (the earlier predictions stay paid)"
            )
        record = BatchRecord(key, data, description)
        orphans = record.orphans()
        if orphans:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(data.get("in_flight_since") or 0)))
            why = f"the worker stopped while this submit was in flight (since {since})"
            record.settle({}, {}, {index: self._uncertain_message(model, why, since) for index in orphans})
            self.log.warning(
                "An earlier try of this task stopped while submitting inputs %s: their outcome is unknown, so they "
                "are reported uncertain and not submitted again",
                _ranges(orphans),
            )
        done = record.count - len(record.unsent())
        self.log.info(
            "Resuming the WaveSpeed batch from its record %r: %d of %d inputs already sent", key, done, record.count
        )
        return record

    @staticmethod
    def _uncertain_message(model: str, why: str, since: str) -> str:
        return (
            f"the submit's outcome is unknown ({why}): the API may have created (and billed) this prediction, so "
            f"it was not sent again. Check the account's prediction history for a {model} prediction created "
            f"around {since} (WaveSpeed dashboard, or POST /api/v3/predictions with model and created_after) "
            "before submitting this input again"
        )

    # -- submitting ----------------------------------------------------------------------------

    async def _submit_window(
        self, client: AsyncWaveSpeedClient, model: str, items: list[dict[str, Any]], window: list[int]
    ) -> _WindowOutcome:
        answers = await asyncio.gather(*(_submit_one(client, model, items[index]) for index in window))
        accepted: dict[int, str] = {}
        rejected: dict[int, dict[str, Any]] = {}
        uncertain: dict[int, str] = {}
        stop: WaveSpeedError | None = None
        now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        for index, answer in zip(window, answers, strict=True):
            if isinstance(answer, Prediction):
                accepted[index] = answer.id
            elif isinstance(answer, WaveSpeedSubmitUncertainError):
                uncertain[index] = self._uncertain_message(model, str(answer), now)
            elif isinstance(answer, (WaveSpeedAuthError, WaveSpeedRateLimitError, WaveSpeedTransportError)):
                # Nothing was created (an uncertain transport error arrives as WaveSpeedSubmitUncertainError),
                # and every later submit would meet the same: the input stays unsent, for a later try.
                stop = stop or answer
            elif isinstance(answer, WaveSpeedAPIError):
                # The API refused this input (400, 404...): nothing was created, and the same input fails again.
                rejected[index] = {"error": f"not submitted: {answer}", "code": answer.code}
            else:  # anything else may have happened after the request left: never send it again
                uncertain[index] = self._uncertain_message(model, str(answer), now)
        return _WindowOutcome(accepted, rejected, uncertain, stop)

    async def _submit_all(
        self, client: AsyncWaveSpeedClient, model: str, items: list[dict[str, Any]], record: BatchRecord
    ) -> None:
        todo = record.unsent()
        sent = record.count - len(todo)
        for start in range(0, len(todo), self.submit_window):
            window = todo[start : start + self.submit_window]
            record.mark_in_flight(window)  # before any byte of these submits leaves
            outcome = await self._submit_window(client, model, items, window)
            record.settle(outcome.accepted, outcome.rejected, outcome.uncertain)
            sent += len(outcome.accepted) + len(outcome.rejected) + len(outcome.uncertain)
            self.log.info(
                "Submitted %d of %d inputs to %s (this window: %d accepted, %d refused, %d uncertain)",
                sent,
                record.count,
                model,
                len(outcome.accepted),
                len(outcome.rejected),
                len(outcome.uncertain),
            )
            for index, value in outcome.rejected.items():
                self.log.warning("inputs[%d] %s", index, value["error"])
            for index, message in outcome.uncertain.items():
                self.log.warning("inputs[%d]: %s", index, message)
            if outcome.stop is not None:
                self._stopped(outcome.stop, record)

    def _stopped(self, error: WaveSpeedError, record: BatchRecord) -> NoReturn:
        unsent = record.unsent()
        message = (
            f"{error}. Submitting stopped with {len(unsent)} of {record.count} inputs not sent "
            f"({_ranges(unsent)}); the {len(record.accepted_ids())} predictions created are in the batch record "
            f"(Airflow Variable {record.key!r}): the next try resumes, submitting only the inputs never sent"
        )
        if isinstance(error, WaveSpeedAuthError):
            raise AirflowFailException(message + " (fix the key or the account first, then clear the task)")
        raise AirflowException(message)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the model as job facet, the predictions as run facet, stored outputs as datasets."""
        return operator_lineage(self)

    # -- the task ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        try:
            model = validate_model(self.model)
            items = batch_inputs(self.inputs)
        except WaveSpeedValidationError as exc:
            raise AirflowFailException(str(exc)) from None
        WaveSpeedModelLink.persist(context, model)
        record = self._open_record(context, model, items)
        if not self.deferrable:
            predictions, wait = asyncio.run(self._submit_and_collect(model, items, record, wait=True))
            return self._finish(record, predictions, wait)
        if record.unsent():
            asyncio.run(self._submit_and_collect(model, items, record, wait=False))
        ids = record.accepted_ids()
        if not ids:  # nothing to wait for: every input was refused or is uncertain
            return self._finish(record, {}, None)
        self._defer(ids)

    async def _submit_and_collect(
        self, model: str, items: list[dict[str, Any]], record: BatchRecord, *, wait: bool
    ) -> tuple[dict[str, Prediction | WaveSpeedError], BatchWait | None]:
        """Submit what the record says is unsent; with ``wait``, wait in this worker and read every prediction."""
        with airflow_errors():
            async with await self._hook().aget_client() as client:
                if record.unsent():
                    await self._submit_all(client, model, items, record)
                if not wait:
                    return {}, None
                return await self._collect(client, record.accepted_ids(), wait=True)

    async def _collect(
        self, client: AsyncWaveSpeedClient, ids: list[str], *, wait: bool
    ) -> tuple[dict[str, Prediction | WaveSpeedError], BatchWait | None]:
        """Every prediction's last state: waited for here (``wait``) or read once (after the trigger)."""
        found: dict[str, Prediction | WaveSpeedError] = {}
        outcome = None
        if wait and ids:
            end_time = time.time() + self.timeout
            self.log.info(
                "Waiting in the worker for %d WaveSpeed predictions, at the latest %s from now",
                len(ids),
                in_words(self.timeout),
            )

            def keep(prediction: Prediction) -> None:
                found[prediction.id] = prediction

            outcome = await wait_for_predictions(
                client, ids, poll_interval=self.poll_interval, end_time=end_time, on_finished=keep, log=self.log
            )
            if outcome.error is not None:
                return found, outcome
        found.update(await read_predictions(client, [i for i in ids if i not in found]))
        return found, outcome

    def _defer(self, ids: list[str]) -> NoReturn:
        deadline = deadline_after(self.timeout)
        self.log.info(
            "Deferring until %d WaveSpeed predictions are finished, at the latest %s (%s from now)",
            len(ids),
            deadline.format("YYYY-MM-DD HH:mm:ss zz"),
            in_words(self.timeout),
        )
        self.defer(
            trigger=WaveSpeedBatchTrigger(
                prediction_ids=ids,
                wavespeed_conn_id=self.wavespeed_conn_id,
                poll_interval=self.poll_interval,
                end_time=deadline.timestamp(),
            ),
            method_name="execute_complete",
            # A plain timedelta (msgspec refuses pendulum's); Airflow's backstop for a lost triggerer.
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: read every prediction of the record, store, report."""
        key = self._record_key(context)
        status = event.get("status") if isinstance(event, dict) else None
        if not isinstance(event, dict) or status not in BATCH_EVENT_STATUSES:
            raise AirflowFailException(
                f"WaveSpeed batch trigger sent an event with unknown or missing status {status!r}: {event!r:.300}. "
                "This is a bug or a version mismatch between the triggerer and the worker; re-run the task to "
                "wait again (nothing is resubmitted)"
            )
        data = BatchRecord.read(key)
        if data is None:
            raise AirflowFailException(
                f"The WaveSpeed batch record (Airflow Variable {key!r}) is gone, so the predictions of this batch "
                "cannot be matched to its inputs. Was the Variable deleted while the task waited? Re-running the "
                "task would submit every input again"
            )
        record = BatchRecord(key, data, "")
        if status == EVENT_ERROR:
            raise AirflowFailException(
                f"{event.get('message')}. The batch record (Airflow Variable {key!r}) is kept: once fixed, "
                "re-running the task waits for the same predictions (nothing is submitted again)"
            )
        counts = event.get("counts")
        self.log.info("WaveSpeed batch wait ended (%s): %s", status, counts)

        async def read_all() -> dict[str, Prediction | WaveSpeedError]:
            with airflow_errors():
                async with await self._hook().aget_client() as client:
                    found, _ = await self._collect(client, record.accepted_ids(), wait=False)
                    return found

        if status == EVENT_DEADLINE:
            self.log.warning("%s", event.get("message"))
        return self._finish(record, asyncio.run(read_all()), None)

    # -- the result ---------------------------------------------------------------------------------

    def _entry(
        self, index: int, record: BatchRecord, predictions: Mapping[str, Prediction | WaveSpeedError]
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
                f"still {answer.status} when the wait limit ({in_words(self.timeout)}) passed; it may still "
                f"finish: wait on it with WaveSpeedTaskSensor(prediction_id={answer.id!r})"
            )
        return entry

    def _finish(
        self,
        record: BatchRecord,
        predictions: Mapping[str, Prediction | WaveSpeedError],
        wait: BatchWait | None,
    ) -> dict[str, Any]:
        if wait is not None and wait.error is not None:
            raise AirflowFailException(
                f"{wait.error}. The batch record (Airflow Variable {record.key!r}) is kept: once fixed, re-running "
                "the task waits for the same predictions (nothing is submitted again)"
            )
        unread = {i: e for i, e in predictions.items() if isinstance(e, WaveSpeedError)}
        if any(isinstance(e, WaveSpeedAuthError) for e in unread.values()):
            raise AirflowFailException(str(next(e for e in unread.values() if isinstance(e, WaveSpeedAuthError))))
        transient = {i: e for i, e in unread.items() if isinstance(e, TRANSIENT_ERRORS)}
        if transient:
            raise AirflowException(
                f"Could not read {len(transient)} WaveSpeed predictions of this batch "
                f"({next(iter(transient.values()))}); a retry of the task reads them again and submits nothing"
            )
        entries = [self._entry(index, record, predictions) for index in range(record.count)]
        self._store(entries, predictions)
        completed = sum(entry["status"] == SUCCESS_STATUS for entry in entries)
        failed = len(entries) - completed
        not_completed = [entry for entry in entries if entry["status"] != SUCCESS_STATUS]
        for entry in not_completed:
            self.log.warning(
                "inputs[%d] %s (prediction %s): %s", entry["index"], entry["status"], entry["id"], entry["error"]
            )
        omitted = [entry["index"] for entry in entries if entry.get("outputs_omitted_bytes")]
        if omitted:
            self.log.warning(
                "The outputs of inputs %s are too large for XCom (base64 data?) and were left out of the result; "
                "give the task an output_path to store them, or read them with WaveSpeedHook().get_prediction(id)",
                _ranges(omitted),
            )
        self.log.info("WaveSpeed batch: %d of %d inputs completed, %d did not", completed, len(entries), failed)
        if failed > self.max_failed:
            listed = "; ".join(
                f"[{e['index']}] {e['id'] or 'no prediction'} {e['status']}: {e['error']}"
                for e in not_completed[:_LISTED]
            )
            more = f"; and {failed - _LISTED} more (all listed in the log above)" if failed > _LISTED else ""
            stored = " (their outputs are stored)" if self.output_path not in (None, "") and completed else ""
            raise AirflowFailException(
                f"WaveSpeed batch: {failed} of {len(entries)} inputs did not complete, more than max_failed="
                f"{self.max_failed}: {listed}{more}. {completed} completed{stored}. The batch record (Airflow "
                f"Variable {record.key!r}) is kept: re-running this task reports the same predictions and submits "
                "nothing; to generate the failed inputs again, run them in a new batch (or delete the Variable "
                "to submit every input again)"
            )
        record.delete()
        result = {"predictions": entries, "completed": completed, "failed": failed}
        note_result(self, result)
        return result

    def _store(self, entries: list[dict[str, Any]], predictions: Mapping[str, Prediction | WaveSpeedError]) -> None:
        """Copy the completed outputs to ``output_path``; each entry gains ``stored_paths``."""
        if self.output_path is None or self.output_path == "":
            return
        for entry in entries:
            prediction = predictions.get(entry["id"]) if entry["id"] else None
            if entry["status"] != SUCCESS_STATUS or not isinstance(prediction, Prediction):
                entry["stored_paths"] = []
                continue
            try:
                entry["stored_paths"] = store_outputs(prediction, self.output_path)
            except WaveSpeedError as exc:
                # The record keeps every prediction id: a retry stores again without submitting anything.
                error = AirflowException if isinstance(exc, TRANSIENT_ERRORS) else AirflowFailException
                raise error(
                    f"{exc} (inputs[{entry['index']}]). Re-running this task stores the outputs again without "
                    "submitting anything (the batch record is kept until the task succeeds)"
                ) from None
        stored = sum(len(entry["stored_paths"]) for entry in entries)
        self.log.info("Stored %d output file(s) of the batch in %s", stored, self.output_path)


async def _submit_one(client: AsyncWaveSpeedClient, model: str, inputs: dict[str, Any]) -> Prediction | WaveSpeedError:
    try:
        return await client.submit(model, inputs)
    except WaveSpeedError as exc:
        return exc


def _ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``: a message stays short for a thousand inputs."""
    spans: list[list[int]] = []
    for index in sorted(indexes):
        if spans and spans[-1][1] == index - 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"
