"""Secret audit: after the load run (and every other scenario), the API key is nowhere in clear text.

Runs last. Searched: every file of the deployment (task logs, trigger logs, scheduler,
triggerer, dag-processor and api-server logs, config), the XCom table, the trigger table's
kwargs (decrypted: Airflow encrypts them, so a raw search would prove nothing), the rendered
template fields, the connection table, and a full pg_dump of the metadata database.
"""

from __future__ import annotations

from typing import Any

import pytest
from deployment_harness import LOAD_COUNT, LOAD_DAG, Deployment, LoadRun

pytestmark = pytest.mark.deployment


def _needles(key: str) -> list[str]:
    # The whole key, and its random part's first half: a truncated copy is a leak too.
    random_part = key.rsplit("-", 1)[1]
    return [key, random_part[: len(random_part) // 2]]


def _hits(text: str, needles: list[str]) -> bool:
    return any(needle in text for needle in needles)


def test_api_key_never_stored_or_logged(load_run: LoadRun, deployment: Deployment) -> None:
    needles = _needles(deployment.api_key)
    pg = deployment.pg

    # Files: every log the deployment wrote, task and trigger logs of the load run included.
    files = list(deployment.all_files())
    leaking_files = [str(path) for path in files if _hits(path.read_text(errors="replace"), needles)]
    load_task_logs = [p for p in files if f"dag_id={LOAD_DAG}" in str(p) and p.name.startswith("attempt=")]
    trigger_logs = [p for p in load_task_logs if ".log.trigger." in p.name]
    component_logs = sorted(p.name for p in deployment.airflow.log_dir.iterdir())

    # Tables, read as text.
    xcom = pg.query("SELECT dag_id, task_id, value::text FROM xcom")
    rendered = pg.query("SELECT dag_id, task_id, rendered_fields::text FROM rendered_task_instance_fields")
    next_kwargs = pg.query("SELECT task_id, next_kwargs::text FROM task_instance WHERE next_kwargs IS NOT NULL")
    connections = pg.query("SELECT conn_id, host, password, extra FROM connection")
    triggers_now = deployment.trigger_rows()
    trigger_kwargs = [row["kwargs_text"] for snapshot in load_run.trigger_snapshots for row in snapshot]
    trigger_kwargs += [row["kwargs_text"] for row in triggers_now]
    dump = pg.dump()

    print(
        f"\nsecret audit: {len(files)} files ({len(load_task_logs)} load-run task logs, {len(trigger_logs)} "
        f"trigger logs, components {component_logs}); {len(xcom)} XCom rows, {len(rendered)} rendered-field rows, "
        f"{len(trigger_kwargs)} trigger kwargs (decrypted), {len(connections)} connections, dump {len(dump)} chars"
    )
    # The audit looked where the key could have gone.
    assert len(load_task_logs) >= 2 * LOAD_COUNT and len(trigger_logs) >= 20
    assert {"scheduler.log", "api-server.log", "dag-processor.log", "triggerer-1.log", "triggerer-2.log"} <= set(
        component_logs
    )
    assert sum(dag == LOAD_DAG for dag, _, _ in xcom) >= 2 * LOAD_COUNT
    assert sum(dag == LOAD_DAG for dag, _, _ in rendered) >= LOAD_COUNT
    assert any(
        "WaveSpeedTaskTrigger" in row["classpath"] for snapshot in load_run.trigger_snapshots for row in snapshot
    )

    assert leaking_files == []
    assert [row[:2] for row in xcom if _hits(row[2] or "", needles)] == []
    assert [row[:2] for row in rendered if _hits(row[2] or "", needles)] == []
    assert [row[0] for row in next_kwargs if _hits(row[1] or "", needles)] == []
    assert [text[:200] for text in trigger_kwargs if _hits(text, needles)] == []
    assert [row[0] for row in connections if _hits(" ".join(str(v) for v in row), needles)] == []
    assert not _hits(dump, needles), "the key is in the metadata database"
    _ui_connection_is_encrypted(deployment, connections)


def _ui_connection_is_encrypted(deployment: Deployment, connections: list[tuple[Any, ...]]) -> None:
    """The connection typed into the UI form holds the key, encrypted with the deployment's Fernet key."""
    from cryptography.fernet import Fernet

    stored = {row[0]: row[2] for row in connections}
    if "wavespeed_ui" not in stored:
        return  # the browser test did not run (skipped without Chromium)
    assert Fernet(deployment.fernet_key().encode()).decrypt(stored["wavespeed_ui"].encode()).decode() == (
        deployment.api_key
    )
