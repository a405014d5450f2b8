"""Secret audit: after the load run (and every other scenario), the API key is nowhere in clear text.

Runs last. Searched: every file of the deployment (task logs, trigger logs, scheduler,
triggerer, dag-processor and api-server logs, config), the XCom table, the trigger table's
kwargs (decrypted: Airflow encrypts them, so a raw search would prove nothing), the rendered
template fields, the connection table, and a full pg_dump of the metadata database
(``audit_files_and_database``, shared with the CeleryExecutor's audit in test_deployment_7).
"""

from __future__ import annotations

from typing import Any

import pytest
from deployment_harness import Deployment, LoadRun, audit_files_and_database

pytestmark = pytest.mark.deployment

COMPONENTS = {"scheduler", "api-server", "dag-processor", "triggerer-1", "triggerer-2"}


def test_api_key_never_stored_or_logged(load_run: LoadRun, deployment: Deployment) -> None:
    audit_files_and_database(deployment, load_run, COMPONENTS)
    connections = deployment.pg.query("SELECT conn_id, host, password, extra FROM connection")
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
