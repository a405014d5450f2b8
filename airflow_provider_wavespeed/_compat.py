"""What differs between Airflow 3.0 and later 3.x in behaviour (the one place that knows).

Names that only moved (``BaseHook``, the task exceptions) come from
``airflow.providers.common.compat.sdk``, Airflow's own compatibility layer; what is left here
are behaviours no import tells apart.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def triggerer_renders_start_trigger_args() -> bool:
    """Whether a task can start in the triggerer with its templated trigger kwargs rendered there.

    From Airflow 3.3 ``BaseTrigger`` is a ``Templater``: the triggerer builds the task's context and
    renders the operator's template fields that are also trigger kwargs (``render_template_fields``,
    apache/airflow#55068 and #64715). Before, ``start_from_trigger`` passed templates unrendered.
    """
    from airflow.triggers.base import BaseTrigger

    return callable(getattr(BaseTrigger, "render_template_fields", None))


def listeners_registered() -> bool:
    """Whether plugins registered listeners (OpenLineage's, say).

    Airflow sends a listener nothing for a task its trigger ends, and its DAG bag refuses any task
    whose ``end_from_trigger`` attribute is true while listeners exist (3.0-3.3): with listeners, a
    wait resumes in a worker, so they see the task end.
    """
    try:
        from airflow.listeners.listener import get_listener_manager
    except ImportError:  # pragma: no cover - no listener support: nothing to miss
        return False
    return bool(get_listener_manager().has_listeners)


@cache
def trigger_on_kill_supported() -> bool:
    """Whether the triggerer calls ``BaseTrigger.on_kill`` on a user's kill (Airflow 3.3+, apache/airflow#65590).

    Before, a user's kill and a triggerer shutting down both only cancel the trigger's task
    (``CancelledError``): the trigger must ask the task instance's state to tell them apart.
    """
    from airflow.triggers.base import BaseTrigger

    return callable(getattr(BaseTrigger, "on_kill", None))


@cache
def sensor_flag_only_for_reschedule() -> bool:
    """Whether a sensor that never reschedules should drop Airflow's sensor flag, sparing the scheduler a query (3.3+).

    Airflow 3.3's ``ReadyToRescheduleDep`` skips its ``task_reschedule`` query only for unmapped task
    instances, so a sensor in a mapped task group costs one each time the scheduler evaluates one of
    its task instances not yet started, unless its ``_is_sensor`` flag is false (then it has no such
    dependency); 3.3 leaves a false flag out of the serialized DAG. Airflow 3.0-3.2 skip the query
    for any task not in reschedule mode, and serialize a false flag, which their scheduler refuses.
    """
    from airflow import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return (major, minor) >= (3, 3)


# A task instance without a state (Airflow's State.NONE, "none" in its UI): cleared, for instance.
NO_STATE = "none"


def task_instance_state(ti: Any) -> str | None:
    """Return the state of task instance ``ti`` as the API server has it (sync; through the supervisor).

    Works in a worker and in a triggerer (Airflow 3.0+: ``GetTaskStates``). None when unknown (not in
    the answer); :data:`NO_STATE` when it has none (a clear resets a deferred task's state to none).
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    map_index = getattr(ti, "map_index", None)
    map_index = -1 if map_index is None else int(map_index)
    states = RuntimeTaskInstance.get_task_states(
        dag_id=ti.dag_id, map_index=map_index, task_ids=[ti.task_id], run_ids=[ti.run_id]
    )
    key = ti.task_id if map_index < 0 else f"{ti.task_id}_{map_index}"
    run_states = (states or {}).get(ti.run_id, {})
    if key not in run_states:
        return None
    state = run_states[key]
    return NO_STATE if state is None else str(getattr(state, "value", state))


def read_xcom(*, dag_id: str, run_id: str, task_id: str, map_index: int, key: str) -> Any:
    """Return an XCom value through the task SDK (sync; through the supervisor), None when there is none.

    Works in a worker and in a triggerer (both handle ``GetXCom`` from Airflow 3.0); uses the
    deployment's XCom backend (``airflow.sdk.execution_time.xcom.XCom``).
    """
    from airflow.sdk.execution_time import task_runner

    if not hasattr(task_runner, "SUPERVISOR_COMMS"):
        # No supervisor: Airflow 3.0's dag.test() runs a trigger in line in its own process, which
        # has the metadata database (3.1+ runs it under an in-process supervisor).
        return _read_xcom_from_database(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, key=key)
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_one(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)


def _read_xcom_from_database(*, dag_id: str, run_id: str, task_id: str, map_index: int, key: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        # Airflow 3.0 returns an ORM Query (in a session of its own), 3.1+ a select() statement.
        query: Any = XComModel.get_many(run_id=run_id, key=key, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index)
        row = query.first() if hasattr(query, "first") else session.scalars(query).first()
        return None if row is None else XComModel.deserialize_value(row)


__all__ = [
    "NO_STATE",
    "listeners_registered",
    "read_xcom",
    "task_instance_state",
    "trigger_on_kill_supported",
    "triggerer_renders_start_trigger_args",
]
