"""Running DAGs built in tests with dag.test(), and reading back what they left in the database.

Imported by test modules as ``airflow_helpers`` (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

from airflow import __version__ as _airflow_version
from packaging.version import Version

AIRFLOW_3_0 = Version(_airflow_version).release[:2] == (3, 0)
"""Airflow 3.0.x: some behaviour (log wording, dag.test() details, fixed bugs) differs from 3.1+."""
STATE_STORE = Version(_airflow_version).release[:2] >= (3, 3)
"""Airflow 3.3+: tasks get ``context["task_state_store"]`` (the provider keeps its records there)."""


def dag_test(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` for a DAG built in a test; returns the DagRun.

    Airflow 3.1+ only runs DAGs it has serialized into the database (normally done by the
    DAG processor for files in the dags folder), so store this one first; 3.0 runs it as is.
    """
    from airflow.serialization.serialized_objects import LazyDeserializedDAG

    if hasattr(LazyDeserializedDAG, "from_dag"):
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.collection import update_dag_parsing_results_in_db
        from airflow.utils.session import create_session

        DagBundlesManager().sync_bundles_to_db()
        with create_session() as session:
            update_dag_parsing_results_in_db(
                "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
            )
    return dag.test(**kwargs)


def dag_xcoms(dag_run: Any) -> dict[tuple[str, int, str], Any]:
    """Every XCom of the run, read back from the metadata database: (task_id, map_index, key) -> value."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query: Any = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id)
        # Airflow 3.0 returns an ORM Query, 3.1+ a select() statement.
        rows = query.all() if hasattr(query, "all") else session.scalars(query).all()
        return {(row.task_id, row.map_index, row.key): XComModel.deserialize_value(row) for row in rows}


def ti_states(dag_run: Any) -> dict[tuple[str, int], str]:
    """(task_id, map_index) -> state of every task instance of the run."""
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def task_output(capfd: Any) -> str:
    """Everything the tasks printed and logged so far, read from ``capfd``.

    The task runner's own lines (exceptions, "Task failed with exception", skip reasons) are
    structlog's, the operators' lines stdlib logging's: both reach the test's stdout capture on
    every supported Airflow (on 3.0 thanks to tests/conftest.py's ``task_logs_at_deployment_level``).
    stderr is read too, so nothing written there is missed.
    """
    out, err = capfd.readouterr()
    return str(out) + str(err)


def task_record(dag_run: Any, task_id: str, name: str, prefix: str) -> dict[str, Any] | None:
    """A WaveSpeed task record as the metadata database holds it (None: none): the task state store
    on Airflow 3.3+ (and then no Variable exists), the Variable below."""
    from airflow_provider_wavespeed._records import record_key

    key = record_key(dag_run.dag_id, dag_run.run_id, task_id, -1, prefix)
    return _stored(dag_run, task_id, name, key)


def batch_record(dag_run: Any, task_id: str = "batch") -> dict[str, Any] | None:
    """The batch record as the metadata database holds it (None: none): its head, with ``ids`` (one per
    input, None where there is none) gathered from its parts as a reader does (head, then parts 0, 1...
    of the head's ``run``), and ``part_sizes`` (the bytes of each part's JSON)."""
    from airflow_provider_wavespeed._records import BATCH_RECORD_PREFIX, part_key, record_key

    key = record_key(dag_run.dag_id, dag_run.run_id, task_id, -1, BATCH_RECORD_PREFIX)
    head = _stored(dag_run, task_id, "wavespeed_batch", key)
    if head is None:
        return head
    ids: list[str | None] = [None] * int(head["count"])
    sizes = []
    while True:
        number = len(sizes)
        part = _stored(
            dag_run,
            task_id,
            part_key("wavespeed_batch", number, state_store=True),
            part_key(key, number, state_store=False),
        )
        if part is None or part.get("run") != head["run"]:
            break
        sizes.append(len(json.dumps(part)))
        for index, prediction_id in part["ids"].items():
            ids[int(index)] = prediction_id
    return {**head, "ids": ids, "part_sizes": sizes}


def _stored(dag_run: Any, task_id: str, name: str, key: str) -> dict[str, Any] | None:
    """One value of the task's state store (Airflow 3.3+: and no Variable ``key``) or Variable ``key``."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        variable = session.scalar(select(Variable).where(Variable.key == key))
        if not STATE_STORE:
            return None if variable is None else json.loads(variable.val)
        assert variable is None, f"Airflow 3.3+ must not write the Variable {key}"
        from airflow.models.task_state_store import TaskStateStoreModel

        row = session.scalar(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_run.dag_id,
                TaskStateStoreModel.run_id == dag_run.run_id,
                TaskStateStoreModel.task_id == task_id,
                TaskStateStoreModel.key == name,
            )
        )
        return None if row is None else json.loads(row.value)


# The ids XComs of the batch triggers batch_trigger() built: (run id, key) -> the value the task would push.
_BATCH_IDS: dict[tuple[str, str], str] = {}


def batch_trigger(ids: list[str], **kwargs: Any) -> Any:
    """A ``WaveSpeedBatchTrigger`` for ``ids``, deferred as the batch task defers it (``ids_xcom`` and
    ``count``); its XCom is served by :func:`serve_batch_ids` (a trigger test has no task to push it)."""
    from airflow_provider_wavespeed.triggers.batch import IDS_XCOM_KEY, WaveSpeedBatchTrigger, ids_for_xcom

    run_id = f"batch_trigger__{len(_BATCH_IDS)}"
    _BATCH_IDS[(run_id, IDS_XCOM_KEY)] = ids_for_xcom(ids)
    where = {"dag_id": "batch_trigger", "run_id": run_id, "task_id": "batch", "map_index": -1, "key": IDS_XCOM_KEY}
    return WaveSpeedBatchTrigger(ids_xcom=where, count=len(ids), **kwargs)


def serve_batch_ids(monkeypatch: Any) -> None:
    """Let batch triggers read the XComs :func:`batch_trigger` noted; any other XCom is read as usual."""
    from airflow_provider_wavespeed.triggers import batch

    read = batch.read_xcom

    def served(**where: Any) -> Any:
        value = _BATCH_IDS.get((where["run_id"], where["key"]))
        return read(**where) if value is None else value

    monkeypatch.setattr(batch, "read_xcom", served)


class InMemoryTaskStateStore(dict):  # type: ignore[type-arg]
    """Airflow 3.3's task state store accessor as far as a record uses it (``get``, ``set``, ``delete``), in
    memory: the real one talks to a task runner's supervisor (``tests/records`` answers it for real)."""

    def set(self, key: str, value: Any, **_: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def deferring_context(try_number: int = 1, max_tries: int = 0, clear_number: int = 0) -> dict[str, Any]:
    """A task's context as far as an operator deferring outside a task run uses it: its task instance, an
    in-memory task state store and its DAG run's clear count."""
    from types import SimpleNamespace

    ti = SimpleNamespace(
        dag_id="d", run_id="r", task_id="submit", map_index=-1, try_number=try_number, max_tries=max_tries
    )
    run = SimpleNamespace(clear_number=clear_number)
    return {"ti": ti, "task_state_store": InMemoryTaskStateStore(), "dag_run": run}
