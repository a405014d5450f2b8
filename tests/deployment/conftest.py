"""The real-deployment tier: one deployment for the whole session, stopped by process id at the end.

Needs PostgreSQL's server binaries (Debian: ``postgresql``), the Python drivers of the
``deployment`` extra, for the browser test Debian's ``chromium`` with Playwright, and for the
CeleryExecutor scenarios Debian's ``redis-server`` with the extra's celery provider.
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
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deployment_harness import CELERY_LOAD_COUNT, CELERY_LOAD_DAG, Deployment, LoadRun, missing_piece, run_load
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


def _check_redis() -> None:
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            missing_piece(f"{program} not found (Debian: redis-server)")
    for module, package in (("redis", "redis"), ("airflow.providers.celery", "apache-airflow-providers-celery")):
        if importlib.util.find_spec(module) is None:
            missing_piece(f"Python package {package} not installed")


# The running deployment of each executor: the Celery fixture ends the LocalExecutor one early.
_running: dict[str, Deployment] = {}


def _session_deployment(executor: str) -> Iterator[Deployment]:
    bin_dir = _check_postgres()
    if executor == "CeleryExecutor":
        _check_redis()
    # Distinctive, so the secret audit can find any copy of it anywhere.
    api_key = "wsk-AUDIT-" + secrets.token_hex(16)
    home = Path(tempfile.mkdtemp(prefix="wavespeed-deployment-"))
    deployment = Deployment(home, bin_dir, api_key, executor=executor)
    try:
        deployment.start()
        _running[executor] = deployment
        yield deployment
    finally:
        _end(deployment)
        if os.environ.get("WAVESPEED_DEPLOYMENT_KEEP"):
            print(f"\ndeployment home kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _end(deployment: Deployment) -> None:
    """Report the deployment's start-up time and CPU use, then stop it (once)."""
    if _running.get(deployment.executor) is deployment:
        del _running[deployment.executor]
        timings = ", ".join(f"{k} {v:.0f} s" for k, v in deployment.timings.items())
        cpu = sorted(deployment.cpu_seconds().items(), key=lambda x: -x[1])
        print(
            f"\ndeployment ({deployment.executor}): {timings}; CPU seconds: "
            + ", ".join(f"{name} {seconds:.0f}" for name, seconds in cpu)
        )
    deployment.stop()


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    """PostgreSQL, `airflow db migrate`, api-server, scheduler, dag-processor, two triggerers, emulator."""
    yield from _session_deployment("LocalExecutor")


@pytest.fixture(scope="session")
def celery_deployment() -> Iterator[Deployment]:
    """The same with the CeleryExecutor: Redis as the broker, two `airflow celery worker` processes,
    PostgreSQL as metadata database and Celery's result backend.

    Its scenarios run after every LocalExecutor one (see pytest_collection_modifyitems), so the
    LocalExecutor deployment is stopped first: one deployment at a time on the tier's 2 cores.
    """
    local = _running.get("LocalExecutor")
    if local is not None:
        _end(local)
    yield from _session_deployment("CeleryExecutor")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The CeleryExecutor scenarios last (keeping each group's order), so each deployment starts once."""
    celery = [item for item in items if "celery_deployment" in getattr(item, "fixturenames", ())]
    if celery:
        others = [item for item in items if "celery_deployment" not in getattr(item, "fixturenames", ())]
        items[:] = others + celery


@pytest.fixture(autouse=True)
def _no_run_outlives_its_scenario(request: pytest.FixtureRequest) -> Iterator[None]:
    """A scenario that fails mid-run leaves its DAG run going: end it, or its tasks (and its polls
    of a reset emulator) would weigh on the scenarios after it."""
    yield
    for name in ("deployment", "celery_deployment"):
        if name in request.fixturenames:
            ended = request.getfixturevalue(name).end_unfinished_runs()
            if ended:
                print(f"\nended the runs a failed scenario left going: {ended}")


@pytest.fixture(scope="session")
def load_run(deployment: Deployment) -> LoadRun:
    """The 200-generation load run on the LocalExecutor (the load test and the secret audit read it)."""
    return run_load(deployment)


@pytest.fixture(scope="session")
def celery_load_run(celery_deployment: Deployment) -> LoadRun:
    """The same load run on the CeleryExecutor."""
    return run_load(celery_deployment, CELERY_LOAD_DAG, CELERY_LOAD_COUNT)
