"""Airflow 3.0-3.2: a record write that did not land stops the submit before anything is sent.

There the records are Airflow Variables, and a ``Variable.set`` can fail without raising: 3.0.6's logs a
refused write and returns, and a secrets backend holding the same key shadows whatever was written
(every read returns the backend's value). The operators read each record write back before they send.
Here the shadow is real: Airflow's environment-variable secrets backend (``AIRFLOW_VAR_<KEY>``), which
the task's ``Variable.get`` asks before the metadata database; the tasks run in ``dag.test()`` against
the emulator, which counts what was submitted.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow_helpers import STATE_STORE, dag_test, task_output, ti_states

from airflow_provider_wavespeed._records import BATCH_RECORD_PREFIX, SUBMIT_RECORD_PREFIX, record_key
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = [
    pytest.mark.usefixtures("airflow_db"),
    pytest.mark.skipif(STATE_STORE, reason="Airflow 3.3+ keeps the records in the task state store, whose set raises"),
]
# dag.test()'s run id for a logical date and run_after both at WHEN: "manual__<WHEN>".
WHEN = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _shadow(monkeypatch: pytest.MonkeyPatch, dag_id: str, task_id: str, prefix: str) -> str:
    """Make the environment's secrets backend hold the task's record key: every write is shadowed."""
    key = record_key(dag_id, f"manual__{WHEN.isoformat()}", task_id, -1, prefix)
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps({"version": 1, "state": "sent", "seq": 0}))
    return key


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"guard_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False)


def _run(dag: DAG) -> Any:
    return dag_test(dag, logical_date=WHEN, run_after=WHEN)


def test_a_shadowed_submit_record_stops_the_submit(
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(task_id="generate", model=FLUX, inputs={"prompt": "a fox"}, retries=0)
    key = _shadow(monkeypatch, dag.dag_id, "generate", SUBMIT_RECORD_PREFIX)
    run = _run(dag)
    assert run.run_id == f"manual__{WHEN.isoformat()}"
    assert ti_states(run) == {("generate", -1): "failed"}
    assert wavespeed_connection.counters()["submissions"] == {}  # nothing was sent, nothing paid
    output = task_output(capfd)
    assert "Could not record the WaveSpeed task's progress" in output and key in output
    assert "may have created" not in output


def test_a_shadowed_batch_record_stops_the_batch(
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch", model=FLUX, inputs=[{"prompt": f"p{n}"} for n in range(3)], retries=0, deferrable=False
        )
    key = _shadow(monkeypatch, dag.dag_id, "batch", BATCH_RECORD_PREFIX)
    run = _run(dag)
    assert ti_states(run) == {("batch", -1): "failed"}
    assert wavespeed_connection.counters()["submissions"] == {}
    output = task_output(capfd)
    assert key in output and "may have created" not in output
