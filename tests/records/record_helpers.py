"""The records' tests (tests/records) run Airflow's own task-side code without a task process: a stand-in supervisor.

A running task reaches its task state store (Airflow 3.3+) and its Variables through the *supervisor*,
the process that forked it and talks to the API server: ``TaskStateStoreAccessor`` and ``Variable``
send it request frames (``SUPERVISOR_COMMS.send``) and read its answers. The real one needs a
supervisor process and an API server with a metadata database (``dag.test()``, tens of seconds per
test); here :class:`Supervisor` answers the same requests from memory, with Airflow's own message
types, so Airflow's real ``TaskStateStoreAccessor`` and ``Variable`` (their secrets-backend chain,
environment variables first) run unchanged. Values pass through JSON, as over the API.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

# Airflow 3.3+ has the task state store; below it, the records are Variables only.
try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor
except ImportError:  # Airflow 3.0-3.2
    HAS_STATE_STORE = False
else:
    HAS_STATE_STORE = True
# The two backends of RecordStore: the task state store (3.3+) and the Variable fallback (3.0-3.2).
BACKENDS = [
    pytest.param(True, id="state-store", marks=pytest.mark.skipif(not HAS_STATE_STORE, reason="Airflow 3.3+")),
    pytest.param(False, id="variable"),
]


class Supervisor:
    """The supervisor's end of a task's comms, in memory: the task state store and Variables of one API server.

    ``refuse_variable_writes``: the API server refuses that many coming Variable writes (None: all).
    The task's ``Variable.set`` does not look at the answer (Airflow 3.0.6 and 3.3 alike), so the
    write fails silently: what the records' read-back guard is for.
    """

    def __init__(self) -> None:
        self.scopes: dict[uuid.UUID, tuple[str, str, str, int]] = {}
        self.state: dict[tuple[tuple[str, str, str, int], str], str] = {}
        self.variables: dict[str, str] = {}
        self.descriptions: dict[str, str | None] = {}
        self.requests: list[str] = []  # the message types the task sent, in order (MaskSecret left out)
        self.refuse_variable_writes: int | None = 0

    def send(self, msg: Any) -> Any:
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time import comms

        kind = type(msg).__name__
        if kind == "MaskSecret":  # the task asks its log masker to hide a value: nothing to answer
            return None
        self.requests.append(kind)
        if kind in {"GetTaskStateStore", "SetTaskStateStore", "DeleteTaskStateStore"}:
            where = (self.scopes[msg.ti_id], msg.key)
            if kind == "SetTaskStateStore":
                self.state[where] = json.dumps(msg.value)
                return None
            if kind == "DeleteTaskStateStore":
                self.state.pop(where, None)
                return None
            if where in self.state:
                return comms.TaskStateStoreResult(value=json.loads(self.state[where]))
            return comms.ErrorResponse(error=ErrorType.TASK_STORE_NOT_FOUND)
        if isinstance(msg, comms.GetVariable):
            if msg.key in self.variables:
                return comms.VariableResult(key=msg.key, value=self.variables[msg.key])
            return comms.ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND)
        if isinstance(msg, comms.PutVariable):
            if self.refuse_variable_writes is None or self.refuse_variable_writes > 0:
                if self.refuse_variable_writes is not None:
                    self.refuse_variable_writes -= 1
                return comms.ErrorResponse(error=ErrorType.GENERIC_ERROR, detail={"status_code": 403})
            assert msg.value is not None
            self.variables[msg.key] = msg.value
            self.descriptions[msg.key] = msg.description
            return comms.OKResponse(ok=True)
        if isinstance(msg, comms.DeleteVariable):
            self.variables.pop(msg.key, None)
            return comms.OKResponse(ok=True)
        raise AssertionError(f"the records sent an unexpected request: {msg!r}")

    def value(self, name: str, ti: TaskInstance) -> Any:
        """The task state store's value ``name`` of ``ti`` (None: none)."""
        text = self.state.get(((ti.dag_id, ti.run_id, ti.task_id, ti.map_index), name))
        return None if text is None else json.loads(text)

    def put_value(self, name: str, ti: TaskInstance, value: Any) -> None:
        """Store a value in ``ti``'s task state store, as another writer (a user, another release) would."""
        self.state[((ti.dag_id, ti.run_id, ti.task_id, ti.map_index), name)] = json.dumps(value)


@dataclass
class TaskInstance:
    """The task instance's fields the records read; its XComs (``xcom_pull``) come from ``xcoms``.

    ``xcoms``: (task id, key) -> the value that task pushed in this run.
    """

    dag_id: str = "records_dag"
    run_id: str = "manual__2026-12-07T05:00:00+00:00"
    task_id: str = "generate"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)

    def xcom_pull(self, *, task_ids: list[str], key: str) -> list[Any] | None:
        """As Airflow's, for a list of task ids: the values they pushed (None when none did)."""
        return [self.xcoms[task_id, key] for task_id in task_ids if (task_id, key) in self.xcoms] or None


def task_context(
    supervisor: Supervisor, ti: TaskInstance, *, state_store: bool, clear_number: int = 0
) -> dict[str, Any]:
    """The task's context as the records read it: ``ti``, its DAG run's ``clear_number`` (how often the
    run was cleared), and ``task_state_store`` on Airflow 3.3+.

    The task state store is Airflow's own accessor (its requests answered by ``supervisor``), one per
    try (a try has its own task-instance id) and scoped as the API server scopes it: shared by every try.
    """
    from types import SimpleNamespace

    context: dict[str, Any] = {"ti": ti, "dag_run": SimpleNamespace(clear_number=clear_number)}
    if state_store:
        from airflow.sdk._shared.state import TaskScope

        ti_id = uuid.uuid4()
        supervisor.scopes[ti_id] = (ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        scope = TaskScope(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index)
        context["task_state_store"] = TaskStateStoreAccessor(ti_id=ti_id, scope=scope)
    return context
