"""What differs between Airflow 3.0 and later 3.x in behaviour (the one place that knows).

Names that only moved (``BaseHook``, the task exceptions) come from
``airflow.providers.common.compat.sdk``, Airflow's own compatibility layer; what is left here
are behaviours no import tells apart.
"""

from __future__ import annotations

from functools import cache


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


__all__ = [
    "listeners_registered",
    "triggerer_renders_start_trigger_args",
]
