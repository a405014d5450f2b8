"""Imports that moved between Airflow 3.0 and later 3.x (the one place that knows)."""

from __future__ import annotations

try:
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0: the task SDK did not export BaseHook yet
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

__all__ = ["BaseHook"]
