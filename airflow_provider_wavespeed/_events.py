"""The trigger-event contract: what a WaveSpeed trigger sends and what the tasks accept.

A trigger event's payload is ``{"status", "prediction_id", ...}`` with ``status`` a terminal
prediction status (and ``prediction``: the prediction as a dict) or one of ours: ``error``
(``message``, ``error_type``; ``retryable``: true when the trigger stopped on an unexpected
exception, which a later try may not meet) or ``deadline`` (``message``). Outputs too large for the
metadata database are left out (``outputs_omitted_bytes``: their size) for the task to read again.
A batch trigger's payload is ``{"status", "total", "counts", ...}`` with ``status`` ``done`` (every
prediction terminal), ``deadline`` or ``error`` (with ``message``, and ``retryable`` as above):
counts only, never outputs, so it stays the same few hundred bytes for any batch; the batch task
reads the predictions itself.
Airflow-free at import: the triggers build events with it; the tasks check them with
:func:`checked_event` (the one check, which fails the task through Airflow).

A trigger ends its task itself (no worker run for ``execute_complete``) only when the worker would
have nothing left to do but return the completed prediction as a plain ``return_value``
(:func:`plain_return_value`; the task decides the rest when it defers:
:func:`~airflow_provider_wavespeed._outcome.end_in_triggerer_kwargs`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from airflow_provider_wavespeed.api.models import TERMINAL_STATUSES, Prediction

EVENT_ERROR = "error"  # a permanent error (bad key, unknown prediction, malformed answer), or a crash
EVENT_DEADLINE = "deadline"  # the wait's timeout passed; the prediction may still finish
EVENT_STATUSES = TERMINAL_STATUSES | {EVENT_ERROR, EVENT_DEADLINE}
BATCH_DONE = "done"  # every prediction of the batch is terminal
BATCH_EVENT_STATUSES = frozenset({BATCH_DONE, EVENT_DEADLINE, EVENT_ERROR})

# Base64 outputs can be megabytes: events and XCom live in the metadata database.
MAX_OUTPUTS_BYTES = 64 * 1024

# The cost of a result that waited on a prediction id alone: the API's prediction carries neither a
# price nor the inputs to ask one for (a WaveSpeedSubmitOperator pushes its price as unit_price_usd).
NOT_PRICED: dict[str, Any] = {
    "unit_price_usd": None,
    "cost_usd": None,
    "cost_note": "not priced by this task: the prediction object carries no price nor inputs; the submitting "
    "task's XCom 'unit_price_usd' has its price when it priced it",
}


def plain_return_value(task: Any) -> bool:
    """Return whether the task's worker would push its result as one plain ``return_value`` (as the trigger does).

    Not with ``do_xcom_push=False`` or ``multiple_outputs``, nor when a mapped task expands over
    the task's output: the worker then records the map length with it.
    """
    iter_dependants = getattr(task, "iter_mapped_dependants", None)
    try:
        mapped_dependant = iter_dependants is not None and next(iter_dependants(), None) is not None
    except RuntimeError:  # not in a DAG (yet): nothing downstream
        mapped_dependant = False
    return (
        bool(getattr(task, "do_xcom_push", True))
        and not getattr(task, "multiple_outputs", False)
        and not mapped_dependant
    )


def outputs_size(prediction: Prediction) -> int:
    """Bytes of the outputs as JSON: what they would cost in an event or XCom."""
    return len(json.dumps(prediction.outputs))


def oversized_outputs(prediction: Prediction) -> int | None:
    """Return the outputs' size when it is over :data:`MAX_OUTPUTS_BYTES` (None when they fit): the one rule."""
    size = outputs_size(prediction)
    return size if size > MAX_OUTPUTS_BYTES else None


def without_oversized_outputs(prediction: Prediction) -> dict[str, Any]:
    """Return the prediction as a dict; outputs over the limit replaced by ``[]`` plus ``outputs_omitted_bytes``."""
    data = prediction.to_dict()
    size = oversized_outputs(prediction)
    if size is not None:
        data["outputs"] = []
        data["outputs_omitted_bytes"] = size
    return data


def terminal_event(prediction: Prediction) -> dict[str, Any]:
    """Return the payload for a terminal prediction (outputs left out when too large)."""
    data = without_oversized_outputs(prediction)
    payload: dict[str, Any] = {"status": prediction.status, "prediction_id": prediction.id}
    omitted = data.pop("outputs_omitted_bytes", None)
    if omitted is not None:
        payload["outputs_omitted_bytes"] = omitted
    payload["prediction"] = data
    return payload


def error_event(prediction_id: str, message: str, error_type: str, *, retryable: bool = False) -> dict[str, Any]:
    """Return the payload for an error: the wait ends, the task fails with ``message`` (for good unless retryable)."""
    payload = {"status": EVENT_ERROR, "prediction_id": prediction_id, "message": message, "error_type": error_type}
    # Only when set: a permanent error's payload carries no flag.
    return {**payload, "retryable": True} if retryable else payload


def crash_message(waiting_for: str, exc: BaseException) -> str:
    """Return what a trigger that stopped on an unexpected exception tells its task (it waited for ``waiting_for``).

    The exception's type only: its text is foreign (a secrets backend's may quote a connection, key
    included) and an event is stored unmasked; the trigger logs it whole, through Airflow's masker.
    """
    return (
        f"The WaveSpeed wait for {waiting_for} stopped on an unexpected error ({type(exc).__name__}; its "
        "text is in the trigger's log); the prediction may still be running"
    )


def deadline_event(prediction_id: str, message: str) -> dict[str, Any]:
    """Return the payload for a wait that reached its limit (the prediction may still finish)."""
    return {"status": EVENT_DEADLINE, "prediction_id": prediction_id, "message": message}


def batch_event(
    total: int,
    counts: dict[str, int],
    *,
    error: Exception | None = None,
    running: int = 0,
    message: str = "",
    retryable: bool = False,
) -> dict[str, Any]:
    """Return the payload for a batch wait that ended.

    ``error`` (``message``, else the error's text; ``retryable``), ``deadline`` (``running`` still
    running), or ``done``.
    """
    payload: dict[str, Any] = {"total": total, "counts": counts}
    if error is not None:
        failed = {**payload, "message": message or str(error), "error_type": type(error).__name__}
        failed = {"status": EVENT_ERROR, **failed}
        return {**failed, "retryable": True} if retryable else failed
    if running:
        message = (
            f"{running} of {total} WaveSpeed predictions did not finish before the wait limit; they may still finish"
        )
        return {"status": EVENT_DEADLINE, **payload, "message": message}
    return {"status": BATCH_DONE, **payload}


def checked_event(event: object, statuses: Collection[str], *, trigger: str) -> dict[str, Any]:
    """Return the event a task resumed with, when it is a dict whose ``status`` is one of ``statuses``.

    Anything else fails the task for good (a bug, or a triggerer and a worker on different provider
    versions): a task validates its trigger's event instead of trusting it.
    """
    status = event.get("status") if isinstance(event, dict) else None
    if not isinstance(event, dict) or status not in statuses:
        from airflow.providers.common.compat.sdk import AirflowFailException

        raise AirflowFailException(
            f"{trigger} sent an event with unknown or missing status {status!r}: {event!r:.300}. This is a bug "
            "or a version mismatch between the triggerer and the worker; re-run the task to wait again (nothing "
            "is resubmitted)"
        )
    return event
