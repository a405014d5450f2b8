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

from deployment_harness import LOAD_COUNT, LOAD_DAG, Deployment, LoadRun, Sampler, missing_piece
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


@pytest.fixture(autouse=True)
def _no_run_outlives_its_scenario(request: pytest.FixtureRequest) -> Iterator[None]:
    """A scenario that fails mid-run leaves its DAG run going: end it, or its tasks (and its polls
    of a reset emulator) would weigh on the scenarios after it."""
    yield
    if "deployment" in request.fixturenames:
        ended = request.getfixturevalue("deployment").end_unfinished_runs()
        if ended:
            print(f"\nended the runs a failed scenario left going: {ended}")


@pytest.fixture(scope="session")
def load_run(deployment: Deployment) -> LoadRun:
    """Run the load DAG once (the load test and the secret audit both look at it).

    Every prediction is held ``processing`` until all 200 sensors have deferred and the triggers
    have polled each one twice more, so "the sensors wait while their predictions run" is a fact
    of the run, not a race between the machine's speed and a prediction's duration.
    """
    control = deployment.control
    deployment.reset_emulator()
    control.hold()
    run_id = deployment.trigger(LOAD_DAG)
    started = time.monotonic()
    snapshots: list[list[dict[str, Any]]] = []
    with Sampler(deployment.airflow, LOAD_DAG, run_id, interval=3.0, task_id="generate.wait") as sampler:

        def all_deferred() -> bool:
            if deployment.count(LOAD_DAG, run_id, "failed"):
                failed = [
                    f"{ti['task_id']}[{ti['map_index']}] try {ti['try_number']}"
                    for ti in deployment.airflow.task_instances(LOAD_DAG, run_id)
                    if ti["state"] == "failed"
                ]
                raise AssertionError(
                    f"task instances failed while every prediction was running: {failed}; failed by the scheduler "
                    f"as 'changed externally': {deployment.state_mismatches(LOAD_DAG, run_id)}"
                )
            return deployment.count(LOAD_DAG, run_id, "deferred") == LOAD_COUNT

        # A sensor waiting in its worker slot would never get here: its prediction does not finish.
        deployment.wait_until(all_deferred, 1800, f"all {LOAD_COUNT} sensors deferred", interval=3.0)
        deployment.wait_settled(LOAD_DAG, run_id, "generate.wait", LOAD_COUNT, timeout=600)
        snapshots.append(deployment.trigger_rows())  # all 200 trigger rows exist now: the secret audit reads them
        # Still held: the triggers poll in the triggerers while the sampler watches for sensors in worker slots.
        first, since = len(sampler.samples), time.time()

        def polled_twice_more() -> bool:
            polls = sum(1 for _, endpoint, status in control.request_log(since) if endpoint == "result")
            return polls >= 2 * LOAD_COUNT and len(sampler.samples) >= first + 3

        deployment.wait_until(polled_twice_more, 600, "every held prediction polled twice in the triggerers")
        holding = list(sampler.samples[first + 1 :])  # the first may have started counting before
        released = control.release()
        assert released == LOAD_COUNT, f"{released} predictions were held, expected {LOAD_COUNT}"
        # Trigger rows vanish when they fire: keep copies for the secret audit while they exist.
        while deployment.airflow.run_state(LOAD_DAG, run_id) not in ("success", "failed"):
            deployment.airflow._check_alive()
            assert time.monotonic() - started < 2400, "the load run did not end within 2400 s"
            snapshots.append(deployment.trigger_rows())
            time.sleep(10)
    result = deployment.finish(LOAD_DAG, run_id, timeout=60, started=started)
    return LoadRun(
        result=result,
        samples=sampler.samples,
        holding=holding,
        trigger_snapshots=snapshots,
        submissions=deployment.submissions_per_index(run_id),
        counters=control.counters(),
    )
