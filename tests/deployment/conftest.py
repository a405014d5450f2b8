"""The real-deployment tier: one deployment for the whole session, stopped by process id at the end.

Needs PostgreSQL's server binaries (Debian: ``postgresql``), the Python drivers of the
``deployment`` extra, and for the browser test Debian's ``chromium`` with Playwright.
Without them the tier is skipped, unless ``WAVESPEED_DEPLOYMENT_REQUIRED`` is set (the
full test command sets it): then a missing piece fails the tier instead.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deployment_harness import LOAD_DAG, Deployment, LoadRun, Sampler, missing_piece
from deployment_postgres import find_bin_dir


def _check_postgres() -> Path:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing_piece("PostgreSQL server binaries (initdb, pg_ctl) not found")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing_piece("running as root needs the 'postgres' OS user (Debian's postgresql package creates it)")
    for module, package in (("psycopg2", "psycopg2-binary"), ("asyncpg", "asyncpg")):
        if importlib.util.find_spec(module) is None:
            missing_piece(f"Python package {package} not installed")
    assert bin_dir is not None
    return bin_dir


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    """PostgreSQL, `airflow db migrate`, api-server, scheduler, dag-processor, two triggerers, emulator."""
    bin_dir = _check_postgres()
    # Distinctive, so the secret audit can find any copy of it anywhere.
    api_key = "wsk-AUDIT-" + secrets.token_hex(16)
    home = Path(tempfile.mkdtemp(prefix="wavespeed-deployment-"))
    deployment = Deployment(home, bin_dir, api_key)
    try:
        deployment.start()
        yield deployment
        cpu = deployment.cpu_seconds()
        print(
            f"\ndeployment: {', '.join(f'{k} {v:.0f} s' for k, v in deployment.timings.items())}; CPU seconds: "
            + ", ".join(f"{name} {seconds:.0f}" for name, seconds in sorted(cpu.items(), key=lambda x: -x[1]))
        )
    finally:
        deployment.stop()
        if os.environ.get("WAVESPEED_DEPLOYMENT_KEEP"):
            print(f"\ndeployment home kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def load_run(deployment: Deployment) -> LoadRun:
    """Run the load DAG once (the load test and the secret audit both look at it)."""
    deployment.reset_emulator(duration=(10.0, 40.0))  # the issue fixes predictions at 10-40 s
    run_id = deployment.trigger(LOAD_DAG)
    started = time.monotonic()
    snapshots: list[list[dict[str, Any]]] = []
    with Sampler(deployment.airflow, LOAD_DAG, run_id, interval=3.0, task_id="generate.wait") as sampler:
        # Trigger rows vanish when they fire: keep copies for the secret audit while they exist.
        while deployment.airflow.run_state(LOAD_DAG, run_id) not in ("success", "failed"):
            deployment.airflow._check_alive()
            assert time.monotonic() - started < 900, "the load run did not end within 900 s"
            snapshots.append(deployment.trigger_rows())
            time.sleep(10)
    result = deployment.finish(LOAD_DAG, run_id, timeout=60, started=started)
    return LoadRun(
        result=result,
        samples=sampler.samples,
        trigger_snapshots=snapshots,
        submissions=deployment.submissions_per_index(run_id),
        counters=deployment.control.counters(),
    )
