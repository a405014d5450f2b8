"""The trigger tests' batch triggers read their ids from XComs no task pushed: serve them; and the
cancel tests' task-instance state lookups, answered from the TI stand-in."""

from __future__ import annotations

from typing import Any

import pytest
from airflow_helpers import serve_batch_ids

from airflow_provider_wavespeed.triggers import _cancel


@pytest.fixture(autouse=True)
def _batch_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    serve_batch_ids(monkeypatch)


@pytest.fixture
def server_state(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Answer the task instance's state lookup from the TI stand-in (no API server here); record the lookups."""
    lookups: list[Any] = []

    def lookup(ti: Any) -> str | None:
        lookups.append(ti)
        if ti.state_on_server == "unreadable":
            raise ConnectionError("supervisor gone")
        return ti.state_on_server

    monkeypatch.setattr(_cancel, "task_instance_state", lookup)
    return lookups
