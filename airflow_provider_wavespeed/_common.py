"""Airflow-side rules shared by the operators and the sensor (each written once)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed._compat import task_instance_state
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
from airflow_provider_wavespeed.api.times import deadline_after, in_words, utc_text
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
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.triggers.base import BaseTrigger

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
) -> Prediction:
    """Validate a trigger event and return its terminal prediction; raise for anything else.

    The trigger leaves outputs too large for an event out of it; with ``reread`` (a task
    that stores them), the completed prediction is read again from the API instead of failing.
    """
    event = checked_event(event, EVENT_STATUSES, trigger=f"WaveSpeed trigger for prediction {prediction_id}")
    status = event["status"]
    message = event.get("message") or f"WaveSpeed wait for prediction {prediction_id} ended with {status!r}"
    if status == EVENT_DEADLINE:
        raise on_deadline(message)
    if status == EVENT_ERROR:
        raise AirflowFailException(message)
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


def budget_usd(value: object, name: str) -> float | None:
    """A budget parameter as a non-negative number of USD (templated values arrive as strings)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None  # unset, or a template that rendered an unset param
    try:
        usd = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        usd = float("nan")
    if not usd >= 0 or usd == float("inf"):
        raise AirflowFailException(f"{name} must be a non-negative number of USD, got {value!r}")
    return usd


def completed_result(
    context: Any,
    prediction: Prediction,
    *,
    output_path: OutputPath | None,
    outlets: Sequence[object],
    retryable: tuple[type[WaveSpeedError], ...],
    log: Any,
    store_failure_hint: str = "",
) -> dict[str, Any]:
    """The XCom result of a completed prediction: its outputs stored first when ``output_path`` is set.

    With ``output_path`` the result gains ``stored_paths`` and keeps outputs too large for
    XCom (base64 data) out of it. Each :class:`~airflow.sdk.Asset` in ``outlets`` gets
    ``{"prediction_id", "model"[, "stored_paths"]}`` as the extra of its asset event.
    """
    stored: list[str] | None = None
    if output_path is None or output_path == "":
        result = prediction_result(prediction)
    else:
        with airflow_errors(retryable, hint=store_failure_hint):
            stored = store_outputs(prediction, output_path)
        log.info("Stored %d output(s) of WaveSpeed prediction %s: %s", len(stored), prediction.id, ", ".join(stored))
        result = without_oversized_outputs(prediction)  # the files are stored: XCom keeps their paths
        result["stored_paths"] = stored
    announce_assets(context, outlets, prediction, stored)
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
