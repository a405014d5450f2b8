"""OpenLineage for WaveSpeed tasks: the model, the predictions and their cost, the stored outputs.

The model is a job facet, the predictions and their cost a run facet, the stored outputs output datasets.

Airflow's OpenLineage listener (``apache-airflow-providers-openlineage``, the ``openlineage``
extra) calls ``get_openlineage_facets_on_complete`` of a task that succeeded in a worker; each
WaveSpeed operator's method delegates to :func:`operator_lineage`. What a task produced is noted
on the operator instance when it finishes (:func:`keep_for_lineage`): the same object the listener is
handed, in the same process. Without the OpenLineage provider nothing here is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

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


def _predictions(result: object) -> list[Mapping[str, Any]]:
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
    predictions = _predictions(result)
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
