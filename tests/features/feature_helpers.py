"""Helpers for the content-pipeline feature tests: DAG loading, XCom reads, a loopback HTTP server."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
FEATURE_DAGS = Path(__file__).resolve().parent / "dags"


def load_dag(path: Path, dag_id: str) -> Any:
    """Import a DAG file the way a test can call ``dag.test()`` on it."""
    name = f"wavespeed_features_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
            return value
    raise LookupError(f"no DAG {dag_id!r} in {path}")


def task_states(dag_run: Any) -> dict[str, str]:
    """task id (with map index when mapped) -> state."""
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
        for ti in dag_run.get_task_instances()
    }


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """An XCom value of a finished run, read from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
                XComModel.map_index == map_index,
            )
        ).first()
        assert row is not None, f"no XCom {key!r} for {task_id}[{map_index}] in {dag_run.run_id}"
        return XComModel.deserialize_value(row)


class LocalHTTPServer:
    """A tiny HTTP server on loopback for what the emulator does not serve (odd downloads, webhook receiver)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.routes: dict[str, Any] = {}
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.received_event = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                server.received.append((self.path, dict(self.headers.items()), body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                server.received_event.set()

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def asset_events(asset_name: str, run_id: str) -> dict[str, Any]:
    """source task (with map index when mapped) -> extra of the asset events a run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.source_task_id, AssetEvent.source_map_index, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == asset_name, AssetEvent.source_run_id == run_id)
        ).all()
    return {(task if index < 0 else f"{task}[{index}]"): dict(extra) for task, index, extra in rows}


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """``dag.test()`` after writing the DAG and its assets to the metadata database.

    Airflow 3.1+ only runs DAGs it has serialized, and Airflow 3.0's ``dag.test()`` writes
    nothing, so its assets would stay inactive and refuse asset events; the DAG processor
    does this in a deployment.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.serialization import serialized_objects
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    from_dag = getattr(serialized_objects.LazyDeserializedDAG, "from_dag", None)
    with create_session() as session:
        if from_dag is not None:  # Airflow 3.1+
            from airflow.dag_processing.collection import update_dag_parsing_results_in_db

            update_dag_parsing_results_in_db(
                bundle_name="dags-folder",
                bundle_version=None,
                dags=[from_dag(dag)],
                import_errors={},
                parse_duration=None,
                warnings=set(),
                session=session,
            )
        else:  # Airflow 3.0: the DAG row, its assets and their activation are enough for dag.test()
            from airflow.models.dag import DAG as SchedulerDAG

            serialized = serialized_objects.SerializedDAG
            scheduler_dag = serialized.deserialize_dag(serialized.serialize_dag(dag))  # type: ignore[attr-defined]
            SchedulerDAG.bulk_write_to_db("dags-folder", None, [scheduler_dag], session=session)
    return dag.test(**kwargs)


def object_storage_works() -> bool:
    """Whether ObjectStoragePath can be built here (Airflow 3.0 breaks with universal-pathlib >= 0.3)."""
    try:
        from airflow.sdk import ObjectStoragePath

        ObjectStoragePath("file:///tmp")
    except TypeError:
        return False
    return True


needs_object_storage = pytest.mark.skipif(
    not object_storage_works(),
    reason="ObjectStoragePath is unusable: Airflow 3.0 with universal-pathlib >= 0.3 (pin universal-pathlib<0.3)",
)
