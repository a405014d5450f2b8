"""The trigger tests' batch triggers read their ids from XComs no task pushed: serve them."""

from __future__ import annotations

import pytest
from airflow_helpers import serve_batch_ids


@pytest.fixture(autouse=True)
def _batch_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    serve_batch_ids(monkeypatch)
