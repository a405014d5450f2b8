"""Airflow-side rules shared by the operators and the sensor (each written once)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed._compat import task_instance_state
from airflow_provider_wavespeed._task_end import NOT_PRICED
from airflow_provider_wavespeed.api._reconcile import Reconciled
from airflow_provider_wavespeed.api._times import deadline_after, in_words, utc_text
from airflow_provider_wavespeed.api.defaults import DEFERRAL_GRACE
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedError,
    WaveSpeedRateLimitError,
    WaveSpeedServerError,
    WaveSpeedTimeoutError,
    WaveSpeedTransportError,
)
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.polling import CancelOutcome, cancel_unfinished
from airflow_provider_wavespeed.events import (
    EVENT_DEADLINE,
    EVENT_ERROR,
    EVENT_STATUSES,
    MAX_OUTPUTS_BYTES,
    checked_event,
    oversized_outputs,
    without_oversized_outputs,
)
from airflow_provider_wavespeed.storage import OutputPath, store_outputs
from airflow_provider_wavespeed.triggers._cancel import note_waiting_try
from airflow_provider_wavespeed.triggers.batch import IDS_XCOM_KEY
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

K = TypeVar("K", bound=Hashable)

# A task killed in a worker gets SIGKILL about 5 s after its on_kill starts: its cancels stop sooner.
WORKER_KILL_BUDGET = 4.0
# Task instance states in which a worker's on_kill is no user's kill: on Airflow 3.3 a worker shut
# down forwards its SIGTERM to the task (still running; a retry or another worker resumes it), and an
# execution_timeout kills a task that is still running too. Unknown (None) cancels nothing either.
_NOT_KILLED_STATES = (None, "running")

# Errors a later try of the task might not meet again; everything else fails for good.
TRANSIENT_ERRORS = (WaveSpeedServerError, WaveSpeedTransportError, WaveSpeedRateLimitError, WaveSpeedTimeoutError)


def defer_with_deadline(
    task: BaseOperator,
    make_trigger: Callable[[float], BaseTrigger],
    *,
    waiting_for: str,
    timeout: float,
    kwargs: dict[str, Any] | None = None,
) -> NoReturn:
    """Defer ``task`` to the trigger ``make_trigger(end_time)`` builds; it resumes in ``execute_complete``.

    The one place that computes a wait's deadline: an absolute instant ``timeout`` seconds from
    now (the trigger gets it as epoch seconds, so a trigger resumed elsewhere keeps it), and
    Airflow's deferral timeout :data:`DEFERRAL_GRACE` later, a backstop for a lost triggerer.
    """
    deadline = deadline_after(timeout)
    task.log.info(
        "Deferring until %s finished, at the latest %s (%s from now)",
        waiting_for,
        utc_text(deadline.timestamp()),
        in_words(timeout),
    )
    trigger = make_trigger(deadline.timestamp())  # JSON-simple, as already deferred tasks stored it
    if getattr(trigger, "cancel_on_kill", False):
        note_waiting_try(task.log)  # so that a clear's next try, deferred again, is told from this one
    task.defer(
        trigger=trigger,
        method_name="execute_complete",
        kwargs=kwargs,
        # A plain timedelta: the task runner sends it to its supervisor with msgspec, whose encoder
        # refuses pendulum's Duration subclass (the task then fails to defer).
        timeout=timedelta(seconds=timeout + DEFERRAL_GRACE),
    )


def defer_until_finished(
    task: BaseOperator,
    prediction_id: str,
    *,
    wavespeed_conn_id: str,
    poll_interval: float,
    timeout: float,
    kwargs: dict[str, Any] | None = None,
    end: dict[str, Any] | None = None,
    cancel_on_kill: bool = False,
    cancel_on_timeout: bool = False,
) -> NoReturn:
    """Hand the wait for ``prediction_id`` to :class:`WaveSpeedTaskTrigger` (:func:`defer_with_deadline`).

    ``end`` (from :func:`~airflow_provider_wavespeed._task_end.end_in_triggerer_kwargs`) lets the
    trigger end the task in the triggerer when its prediction completed; ``cancel_on_*`` let it
    cancel the prediction on a user's kill or at the deadline.
    """
    defer_with_deadline(
        task,
        lambda end_time: WaveSpeedTaskTrigger(
            prediction_id=prediction_id,
            wavespeed_conn_id=wavespeed_conn_id,
            poll_interval=poll_interval,
            end_time=end_time,
            cancel_on_kill=cancel_on_kill,
            cancel_on_timeout=cancel_on_timeout,
            **(end or {}),
        ),
        waiting_for=f"WaveSpeed prediction {prediction_id} is",
        timeout=timeout,
        kwargs=kwargs,
    )


def cancel_now(conn_id: str, prediction_ids: Sequence[str], *, log: Any) -> CancelOutcome:
    """Cancel the unfinished ones of ``prediction_ids`` from a worker (blocking; concurrent, paced like polls)."""
    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

    async def cancel() -> CancelOutcome:
        async with await WaveSpeedHook(conn_id).aget_client() as client:
            return await cancel_unfinished(client, prediction_ids, log=log)

    return asyncio.run(cancel())


def cancel_on_worker_kill(task: BaseOperator, ti: Any, conn_id: str, prediction_ids: Sequence[str]) -> None:
    """A task's ``on_kill`` in a worker: cancel its unfinished predictions when a user killed it.

    A user's kill (mark failed/success, clear) has already changed the task instance's state on
    the API server when the supervisor sends SIGTERM; a worker shutting down (Airflow 3.3 forwards
    its SIGTERM) or ``execution_timeout`` leaves it ``running``: then nothing is cancelled. Runs in
    a thread given :data:`WORKER_KILL_BUDGET` seconds: SIGKILL follows soon, and the signal handler
    may have interrupted an event loop on this thread.
    """
    ids = list(prediction_ids)
    if not ids or ti is None:
        return
    try:
        state = task_instance_state(ti)
    except Exception as exc:
        task.log.warning("Could not read this task's state (%s): the WaveSpeed predictions are not cancelled", exc)
        return
    if state in _NOT_KILLED_STATES:
        task.log.info("The task is still %s (a worker shutdown or timeout): its predictions are not cancelled", state)
        return
    task.log.info("The task is %s: cancelling its %d unfinished WaveSpeed prediction(s)", state, len(ids))

    def run() -> None:
        try:
            cancel_now(conn_id, ids, log=task.log)
        except Exception as exc:  # the task is ending anyway: say what was not cancelled
            task.log.warning("Cancelling WaveSpeed predictions %s failed: %s", ", ".join(ids), exc)

    worker = threading.Thread(target=run, name="wavespeed-cancel", daemon=True)
    worker.start()
    worker.join(WORKER_KILL_BUDGET)


def default_deferrable() -> bool:
    """Whether tasks defer unless told otherwise: True, unless the deployment turns it off.

    Every generated airflow.cfg contains ``default_deferrable = false`` (Airflow's own
    default), so a False there cannot be told from "not set"; the environment variable
    ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` is the explicit way to change our default.
    """
    if os.environ.get("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE") is None:
        return True
    from airflow.providers.common.compat.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=True)


@contextmanager
def airflow_errors(
    retryable: tuple[type[WaveSpeedError], ...] = TRANSIENT_ERRORS,
    *,
    unless: type[WaveSpeedError] | tuple[type[WaveSpeedError], ...] = (),
    hint: str = "",
) -> Iterator[None]:
    """Turn WaveSpeed errors into Airflow failures with the same clear message.

    Errors in ``retryable`` raise ``AirflowException`` (Airflow's task retries may run
    again); all others raise ``AirflowFailException``, so a retry can never repeat them
    (a retried uncertain submit could pay twice). Errors of type ``unless`` pass through
    unchanged, for the caller to handle. ``hint`` is added to the message (what to do next).
    The chain is cut: the message says it all.
    """
    try:
        yield
    except unless:
        raise
    except retryable as exc:
        raise AirflowException(f"{exc}{hint}") from None
    except WaveSpeedError as exc:
        raise AirflowFailException(f"{exc}{hint}") from None


def _too_large(prediction: Prediction, size: int) -> AirflowFailException:
    return AirflowFailException(
        f"WaveSpeed prediction {prediction.id} ({prediction.model}) completed, but its outputs are "
        f"{size} bytes (base64 data?), too large for XCom (limit {MAX_OUTPUTS_BYTES}). Drop "
        "'enable_base64_output' so the API returns URLs, or read the outputs in a task with "
        "WaveSpeedHook().get_prediction(prediction_id) and store them; the prediction is kept 7 days."
    )


def prediction_result(prediction: Prediction) -> dict[str, Any]:
    """The completed prediction as a JSON-safe dict for XCom, refusing oversized outputs."""
    size = oversized_outputs(prediction)
    if size is not None:
        raise _too_large(prediction, size)
    return prediction.to_dict()


def prediction_from_event(
    event: object,
    *,
    prediction_id: str,
    on_deadline: type[AirflowException],
    reread: Callable[[str], Prediction] | None = None,
    hint: str = "",
) -> Prediction:
    """Validate a trigger event and return its terminal prediction; raise for anything else.

    An ``error`` event fails the task for good, unless the trigger marked it ``retryable`` (it
    stopped on an unexpected exception): then Airflow's retries apply. ``hint`` (what a later try
    of this task does) ends the message of an ``error`` or ``deadline``. The trigger leaves outputs
    too large for an event out of it; with ``reread`` (a task that stores them), the completed
    prediction is read again from the API instead of failing.
    """
    event = checked_event(event, EVENT_STATUSES, trigger=f"WaveSpeed trigger for prediction {prediction_id}")
    status = event["status"]
    message = event.get("message") or f"WaveSpeed wait for prediction {prediction_id} ended with {status!r}"
    if status == EVENT_DEADLINE:
        raise on_deadline(f"{message}{hint}")
    if status == EVENT_ERROR:
        raise (AirflowException if event.get("retryable") is True else AirflowFailException)(f"{message}{hint}")
    try:
        prediction = Prediction.from_dict(event.get("prediction"))
    except WaveSpeedError as exc:
        raise AirflowFailException(
            f"WaveSpeed trigger event for prediction {prediction_id} is invalid: {exc}"
        ) from None
    if prediction.id != prediction_id or prediction.status != status:
        raise AirflowFailException(
            f"WaveSpeed trigger event does not match: expected prediction {prediction_id} with status "
            f"{status!r}, got {prediction.id} with {prediction.status!r}"
        )
    omitted = event.get("outputs_omitted_bytes")
    if prediction.is_success and omitted:
        if reread is None:
            raise _too_large(prediction, int(omitted))
        prediction = reread(prediction_id)
        if prediction.id != prediction_id or not prediction.is_success:
            raise AirflowFailException(
                f"WaveSpeed prediction {prediction_id} completed, but reading it again returned "
                f"{prediction.id} with status {prediction.status!r}"
            )
    return prediction


def _seconds(value: object, name: str, task_id: str, example: float) -> float:
    try:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not 0 < seconds < float("inf"):
        raise ValueError(
            f"{task_id}: {name} must be a finite number of seconds greater than 0, got {value!r}; "
            f"e.g. {name}={example:g}"
        )
    return seconds


def seconds_settings(task_id: str, settings: Mapping[str, tuple[object, float]], *, rendered: bool) -> dict[str, float]:
    """Duration settings (``name -> (value, an example of a good one)``) as seconds: finite numbers > 0
    (a ``timedelta`` too).

    Checked before anything is sent, twice: in ``__init__`` (``rendered=False``: a Jinja template is
    skipped, a bad value raises ``ValueError``, the DAG does not load) and in ``execute`` once
    templates rendered (``rendered=True``: text is converted, a bad value fails the task for good,
    as a retry would render the same). The message names the task, the setting, the value and a fix.
    """
    checked = {}
    try:
        for name, (value, example) in settings.items():
            if not rendered and isinstance(value, str) and any(mark in value for mark in ("{{", "{%")):
                continue
            checked[name] = _seconds(value, name, task_id, example)
    except ValueError as exc:
        if not rendered:
            raise
        raise AirflowFailException(f"{exc}. Nothing was sent to WaveSpeed") from None
    return checked


def completed_result(
    context: Any,
    prediction: Prediction,
    *,
    output_path: OutputPath | None,
    hook: WaveSpeedHook,
    outlets: Sequence[object],
    retryable: tuple[type[WaveSpeedError], ...],
    log: Any,
    store_failure_hint: str = "",
    cost: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The XCom result of a completed prediction: its outputs stored first when ``output_path`` is set.

    With ``output_path`` the result gains ``stored_paths`` (downloaded as ``hook``'s connection
    allows) and keeps outputs too large for XCom (base64 data) out of it. Each
    :class:`~airflow.sdk.Asset` in ``outlets`` gets ``{"prediction_id", "model"[, "stored_paths"]}``
    as the extra of its asset event. ``cost`` (:func:`~airflow_provider_wavespeed._cost.cost_fields`)
    adds ``unit_price_usd`` and ``cost_usd``; without it both are None and ``cost_note`` says why
    (:data:`~._task_end.NOT_PRICED`).
    """
    stored: list[str] | None = None
    if output_path is None or output_path == "":
        result = prediction_result(prediction)
    else:
        with airflow_errors(retryable, hint=store_failure_hint):
            stored = store_outputs(prediction, output_path, downloads=hook.download_policy())
        log.info("Stored %d output(s) of WaveSpeed prediction %s: %s", len(stored), prediction.id, ", ".join(stored))
        result = without_oversized_outputs(prediction)  # the files are stored: XCom keeps their paths
        result["stored_paths"] = stored
    announce_assets(context, outlets, prediction, stored)
    result.update(cost if cost is not None else NOT_PRICED)
    return result


def announce_assets(
    context: Any, outlets: Sequence[object], prediction: Prediction, stored_paths: list[str] | None
) -> None:
    """Describe the generation in the asset event of every Asset outlet (for downstream DAGs)."""
    from airflow.sdk import Asset

    assets = [outlet for outlet in outlets or () if isinstance(outlet, Asset)]
    outlet_events = context.get("outlet_events") if assets else None
    if outlet_events is None:
        return
    extra: dict[str, Any] = {"prediction_id": prediction.id, "model": prediction.model}
    if stored_paths is not None:
        extra["stored_paths"] = list(stored_paths)
    for asset in assets:
        outlet_events[asset].extra.update(extra)


# The XComs in which this provider's tasks hand on the prediction ids they hold: the submit operator's
# "prediction_id" (pushed right after its answer), the batch's comma-separated ids (before it defers).
_HELD_ID_XCOMS = ("prediction_id", IDS_XCOM_KEY)


def unheld_in_this_run(found: Reconciled[K]) -> Reconciled[K]:
    """``found`` without the adoptions another task of this DAG run already holds (their XComs say so).

    The records of other task instances are not readable (Airflow 3.3's task state store is the task
    instance's own), so a lost submit's history match is checked against the ids this run's tasks
    handed on in XCom, read *after* the looks: a twin (e.g. another map index with the same inputs)
    that got its answer has pushed it by then, unless its worker stalled in between. A read that fails
    leaves every match unresolved.
    """
    if not found.adopted:
        return found
    from airflow.sdk import get_current_context

    held: set[str] = set()
    try:
        context = get_current_context()
        task_ids = list(context["dag"].task_ids)
        for xcom_key in _HELD_ID_XCOMS:
            for value in context["ti"].xcom_pull(task_ids=task_ids, key=xcom_key) or []:
                if value:  # one id, or the batch's comma-separated ids
                    held.update(part for part in str(value).split(",") if part)
    except Exception as exc:  # any failure to look is a doubt, never a reason to adopt
        why = f"the prediction ids this run's other tasks hold could not be read ({type(exc).__name__}: {exc})"
        return Reconciled({}, {**found.unresolved, **{key: f"{why}, so it is not adopted" for key in found.adopted}})
    adopted = {key: pid for key, pid in found.adopted.items() if pid not in held}
    unresolved = dict(found.unresolved)
    for key, prediction_id in found.adopted.items():
        if prediction_id in held:
            unresolved[key] = (
                f"prediction {prediction_id} matches, but another task of this DAG run holds it (its XCom), so it "
                "is that task's generation, not this submit's"
            )
    return Reconciled(adopted, unresolved)
