"""What differs between Airflow 3.0 and later 3.x (the one place that knows)."""

from __future__ import annotations

from functools import cache
from typing import Any

try:
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0: the task SDK did not export BaseHook yet
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:  # Airflow 3.1+: the task SDK owns these; airflow.exceptions re-exports them with a warning
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
    )
except ImportError:  # Airflow 3.0
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
    )

try:  # Ending a task from its trigger (no worker run for execute_complete): every Airflow 3.x has them.
    from airflow.triggers.base import TaskFailedEvent, TaskSkippedEvent, TaskSuccessEvent

    TASK_END_EVENTS = True
except ImportError:  # pragma: no cover - an Airflow without them: tasks resume in a worker, as before
    TaskFailedEvent = TaskSkippedEvent = TaskSuccessEvent = None  # type: ignore[assignment,misc]
    TASK_END_EVENTS = False


def _airflow_version() -> tuple[int, ...]:
    from importlib.metadata import version

    from packaging.version import Version

    try:
        return Version(version("apache-airflow-core")).release
    except Exception:  # Airflow 3.0 had no separate core distribution
        from airflow import __version__

        return Version(__version__).release


@cache
def failed_event_retries() -> bool:
    """Whether a task its trigger failed (``TaskFailedEvent``) goes up for retry when it has retries left.

    Airflow 3.3.1 made the triggerer route such a failure as the worker does
    (apache/airflow#69821, backported in #71163: ``models/trigger.py`` checks
    ``is_eligible_to_retry()``); before, it was failed for good whatever its retries. No attribute
    tells the two apart, so the version decides.
    """
    return _airflow_version() >= (3, 3, 1)


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


def task_end_event(state: str, xcoms: dict[str, Any] | None = None) -> Any:
    """The event that ends a task in ``state`` ("success", "failed", "skipped") from the triggerer."""
    event = {"success": TaskSuccessEvent, "failed": TaskFailedEvent, "skipped": TaskSkippedEvent}[state]
    return event(xcoms=xcoms)


__all__ = [
    "TASK_END_EVENTS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "BaseHook",
    "failed_event_retries",
    "listeners_registered",
    "task_end_event",
    "triggerer_renders_start_trigger_args",
]
