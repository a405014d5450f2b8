"""Fixtures for the content-pipeline feature tests: a loopback HTTP server and an in-memory object store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from feature_helpers import LocalHTTPServer


@pytest.fixture
def local_http() -> Iterator[LocalHTTPServer]:
    server = LocalHTTPServer()
    yield server
    server.close()


@pytest.fixture
def memory_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register fsspec's in-memory filesystem for ``memory://``, as a provider registers ``s3://``."""
    try:
        from airflow.sdk.io import fs as airflow_fs
    except ImportError:  # Airflow 3.0 keeps the scheme registry in airflow.io
        import airflow.io as airflow_fs  # type: ignore[no-redef]
    from fsspec.implementations.memory import MemoryFileSystem

    def memory_fs(conn_id: str | None, options: object = None) -> MemoryFileSystem:
        return MemoryFileSystem()

    monkeypatch.setitem(airflow_fs._BUILTIN_SCHEME_TO_FS, "memory", memory_fs)
    airflow_fs._register_filesystems.cache_clear()
    yield
    airflow_fs._register_filesystems.cache_clear()
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]
