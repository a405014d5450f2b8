"""How a wait or a call ends the task: a result for XCom (and for OpenLineage), or the Airflow exception that fails it.

The rules, each written once: which WaveSpeed errors a later try may not meet again
(:data:`RETRYABLE_ERRORS`: Airflow's retries apply) and which fail the task for good
(:func:`airflow_error`); what a trigger's event means for the task (:func:`prediction_from_event`);
what a completed prediction's result holds (:func:`completed_result`: stored outputs, asset events,
cost); when the trigger may end the task itself (:func:`end_in_triggerer_kwargs`); and what a
finished task's result tells OpenLineage (:func:`operator_lineage`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed._compat import listeners_registered
from airflow_provider_wavespeed._events import (
    EVENT_DEADLINE,
    EVENT_ERROR,
    EVENT_STATUSES,
    MAX_OUTPUTS_BYTES,
    NOT_PRICED,
    checked_event,
    oversized_outputs,
    plain_return_value,
    without_oversized_outputs,
)
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedError,
    WaveSpeedRateLimitError,
    WaveSpeedServerError,
    WaveSpeedTimeoutError,
    WaveSpeedTransportError,
)
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.storage import OutputPath, store_outputs

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

__all__ = [
    "RETRYABLE_ERRORS",
    "airflow_error",
    "announce_assets",
    "completed_result",
    "end_in_triggerer_kwargs",
    "keep_for_lineage",
    "operator_lineage",
    "prediction_from_event",
    "prediction_result",
]

# Errors a later try of the task might not meet again (Airflow's retries apply); all others fail for good.
RETRYABLE_ERRORS = (WaveSpeedServerError, WaveSpeedTransportError, WaveSpeedRateLimitError, WaveSpeedTimeoutError)


def airflow_error(
    exc: WaveSpeedError, retryable: tuple[type[WaveSpeedError], ...] = RETRYABLE_ERRORS, *, hint: str = ""
) -> AirflowException:
    """Return the Airflow exception that fails the task for ``exc``, with the same clear message.

    Errors in ``retryable`` become ``AirflowException`` (Airflow's task retries may run again); all
    others ``AirflowFailException``, so a retry can never repeat them (a retried uncertain submit
    could pay twice). ``hint`` is added to the message (what to do next). Raise it ``from None``:
    the message says it all.
    """
    kind = AirflowException if isinstance(exc, retryable) else AirflowFailException
    return kind(f"{exc}{hint}")


def _too_large(prediction: Prediction, size: int) -> AirflowFailException:
    return AirflowFailException(
        f"WaveSpeed prediction {prediction.id} ({prediction.model}) completed, but its outputs are "
        f"{size} bytes (base64 data?), too large for XCom (limit {MAX_OUTPUTS_BYTES}). Drop "
        "'enable_base64_output' so the API returns URLs, or read the outputs in a task with "
        "WaveSpeedHook().get_prediction(prediction_id) and store them; the prediction is kept 7 days."
    )


def prediction_result(prediction: Prediction) -> dict[str, Any]:
    """Return the completed prediction as a JSON-safe dict for XCom, refusing oversized outputs."""
    size = oversized_outputs(prediction)
    if size is not None:
        raise _too_large(prediction, size)
    return prediction.to_dict()


def prediction_from_event(
    event: object,
    *,
    prediction_id: str,
    on_timeout: type[AirflowException],
    reread: Callable[[str], Prediction] | None = None,
    hint: str = "",
) -> Prediction:
    """Validate a trigger event and return its terminal prediction; raise for anything else.

    A ``deadline`` event (the wait's timeout passed) raises ``on_timeout``. An ``error`` event fails
    the task for good, unless the trigger marked it ``retryable`` (it stopped on an unexpected
    exception): then Airflow's retries apply. ``hint`` (what a later try of this task does) ends the
    message of an ``error`` or ``deadline``. The trigger leaves outputs too large for an event out
    of it; with ``reread`` (a task that stores them), the completed prediction is read again from
    the API instead of failing.
    """
    event = checked_event(event, EVENT_STATUSES, trigger=f"WaveSpeed trigger for prediction {prediction_id}")
    status = event["status"]
    message = event.get("message") or f"WaveSpeed wait for prediction {prediction_id} ended with {status!r}"
    if status == EVENT_DEADLINE:
        raise on_timeout(f"{message}{hint}")
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
    """Return the XCom result of a completed prediction: its outputs stored first when ``output_path`` is set.

    With ``output_path`` the result gains ``stored_paths`` (downloaded as ``hook``'s connection
    allows) and keeps outputs too large for XCom (base64 data) out of it. Each
    :class:`~airflow.sdk.Asset` in ``outlets`` gets ``{"prediction_id", "model"[, "stored_paths"]}``
    as the extra of its asset event. ``cost`` (:func:`~airflow_provider_wavespeed._cost.cost_fields`)
    adds ``unit_price_usd`` and ``cost_usd``; without it both are None and ``cost_note`` says why
    (:data:`~airflow_provider_wavespeed._events.NOT_PRICED`).
    """
    stored: list[str] | None = None
    if output_path is None or output_path == "":
        result = prediction_result(prediction)
    else:
        try:
            stored = store_outputs(prediction, output_path, downloads=hook.download_policy())
        except WaveSpeedError as exc:
            raise airflow_error(exc, retryable, hint=store_failure_hint) from None
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


def end_in_triggerer_kwargs(
    task: BaseOperator, *, enabled: bool, output_path: object, cost: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the trigger kwargs that let it end ``task`` in the triggerer when its prediction completed.

    ``cost``: the cost fields the worker's result would carry (the trigger's ``result_extra``;
    without it, :data:`~airflow_provider_wavespeed._events.NOT_PRICED`).

    Only where the worker would have nothing left to do but return the prediction: not when
    outputs are stored (``output_path``: the worker writes them), not with outlets (a task ended by
    its trigger emits no asset events), not when the return value is pushed other than plainly, not
    when plugins registered listeners (Airflow sends them nothing for a task ended there). Failures
    always resume the worker, whose retry rules apply.
    """
    if not enabled or output_path not in (None, "") or task.outlets or not plain_return_value(task):
        return {}
    if listeners_registered():
        return {}
    return {"end_from_trigger": True, **({"result_extra": dict(cost)} if cost is not None else {})}


# -- OpenLineage -------------------------------------------------------------------------------------
# The model is a job facet, the predictions and their cost a run facet, the stored outputs output
# datasets. Airflow's OpenLineage listener (``apache-airflow-providers-openlineage``, the ``openlineage``
# extra) calls ``get_openlineage_facets_on_complete`` of a task that succeeded in a worker; each
# WaveSpeed task's method delegates to operator_lineage(). What a task produced is noted on the
# operator instance when it finishes (keep_for_lineage()): the same object the listener is handed, in
# the same process. Without the OpenLineage provider nothing of it is imported.

# The facets' schema: named after this package (OpenLineage wants a URL per custom facet).
SCHEMA_URL = "https://pypi.org/project/airflow-provider-wavespeed/#/$defs/{name}"
_RESULT_ATTRIBUTE = "_wavespeed_lineage_result"


def keep_for_lineage(operator: object, result: object) -> None:
    """Keep a finished task's return value on the operator, for the OpenLineage listener."""
    setattr(operator, _RESULT_ATTRIBUTE, result)


def dataset_name(path: str) -> tuple[str, str]:
    """OpenLineage (namespace, name) of a stored file: ``s3://bucket`` + key, or ``file`` + absolute path."""
    parts = urlsplit(path)
    if parts.scheme in ("", "file") or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return "file", parts.path if parts.scheme == "file" else path
    bucket = parts.netloc.rsplit("@", 1)[-1]  # s3://aws_conn_id@bucket/...: the conn id is not the bucket
    return f"{parts.scheme}://{bucket}", parts.path.lstrip("/")


def _lineage_predictions(result: object) -> list[Mapping[str, Any]]:
    """Return the predictions in a task's return value: one (submit, sensor) or a batch's entries.

    A batch with ``manifest_path`` notes its full result (its XCom summary names no prediction
    but the first failed ones, so a summary noted by mistake counts as none).
    """
    if isinstance(result, Mapping):
        entries = result.get("predictions")
        if isinstance(entries, list):
            return [entry for entry in entries if isinstance(entry, Mapping)]
        return [] if "manifest" in result else [result]
    return []


def _stored_paths(predictions: Iterable[Mapping[str, Any]]) -> list[str]:
    # The final names only: files are written under a hidden ``.part`` name first and moved over
    # the final one, and only final names reach the result.
    return [str(path) for entry in predictions for path in (entry.get("stored_paths") or [])]


@cache
def _facet_classes() -> tuple[type, type]:
    import attr
    from openlineage.client.generated.base import JobFacet, RunFacet

    @attr.define(kw_only=True)
    class WaveSpeedJobFacet(JobFacet):
        """The WaveSpeed model a task runs (e.g. ``wavespeed-ai/flux-dev``)."""

        model: str
        provider: str = "wavespeed"

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL.format(name="WaveSpeedJobFacet")

    @attr.define(kw_only=True)
    class WaveSpeedRunFacet(RunFacet):
        """The predictions this run created or waited for, and what the completed ones cost (USD; None: unknown)."""

        prediction_ids: list[str]
        cost_usd: float | None = None

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL.format(name="WaveSpeedRunFacet")

    return WaveSpeedJobFacet, WaveSpeedRunFacet


def operator_lineage(operator: Any) -> Any:
    """Return the ``OperatorLineage`` of a finished WaveSpeed task; None without the OpenLineage provider."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.generated.base import OutputDataset
    except ImportError:
        return None
    result = getattr(operator, _RESULT_ATTRIBUTE, None)
    predictions = _lineage_predictions(result)
    model = getattr(operator, "model", None) or next((p.get("model") for p in predictions if p.get("model")), None)
    ids = [str(p["id"]) for p in predictions if p.get("id")]
    if isinstance(result, str) and result:  # a submit that does not wait returns the prediction id
        ids = [result]
    cost = result.get("cost_usd") if isinstance(result, Mapping) else None
    job_facet, run_facet = _facet_classes()
    return OperatorLineage(
        outputs=[OutputDataset(*dataset_name(path)) for path in _stored_paths(predictions)],
        job_facets={"wavespeed": job_facet(model=str(model))} if model else {},
        run_facets={"wavespeed": run_facet(prediction_ids=ids, cost_usd=cost)} if ids else {},
    )
