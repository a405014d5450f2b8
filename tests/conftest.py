"""Test set-up: a private AIRFLOW_HOME whose dags folder is example_dags/, made before Airflow loads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, cast

import pytest

# live_targets keeps WAVESPEED_API_KEY (if set) for the real-API target of the live tests (tests/live,
# tests/system), and for nothing else; imported here, before the key leaves the environment below.
pytest.register_assert_rewrite("live_targets")
import live_targets  # noqa: E402, F401

# The emulator's fixtures (wavespeed_emulator, wavespeed_connection): opt-in, as users enable them;
# the live tests' targets (wavespeed_target: [emulator], and [api] with a key and -m live).
pytest_plugins = ["airflow_provider_wavespeed.testing.pytest_plugin", "live_targets"]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO / "example_dags"

# Airflow reads these once, at import: they must be set before any test imports it.
_HOME = Path(tempfile.mkdtemp(prefix="wavespeed-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ.pop("WAVESPEED_API_KEY", None)  # tests decide where credentials come from
os.environ.pop("AIRFLOW_CONN_WAVESPEED_DEFAULT", None)


@pytest.fixture(autouse=True)
def own_submission_budget(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A submission-budget directory of the test's own: budgets are shared by every process of a host
    (a file per account), and tests must not draw from each other's (nor from other test runs')."""
    directory = tmp_path_factory.mktemp("budget")
    monkeypatch.setenv("WAVESPEED_BUDGET_DIR", str(directory))
    return directory


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the test AIRFLOW_HOME."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ)
    return _HOME


class _ConsoleHandledByRoot(logging.StreamHandler):
    """Writes nothing: holds the place of the console handler Airflow 3.0's ``dag.test()`` adds.

    3.0's ``dag.test()`` gives the ``airflow.task`` logger a ``StreamHandler(sys.stdout)`` unless it
    has a StreamHandler already. Under pytest that is the first test's capture, closed once that
    test ends ("I/O operation on closed file" for every later task log line). Airflow's root
    console handler already writes these records to the current ``sys.stdout``.
    """

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        pass


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time: the test's capture (capsys/capfd) or pytest's own."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture(scope="session", autouse=True)
def task_logs_at_deployment_level() -> Iterator[None]:
    """Task logs (structlog) rendered at the deployment's log level into the current ``sys.stdout``.

    Airflow 3.1+ configure structlog when imported: INFO (``[logging] logging_level``), written to
    the current stdout, where capfd sees it. Airflow 3.0 leaves structlog unconfigured in the
    process that runs ``dag.test()``: structlog's defaults then log every DEBUG line (3.0's in-process
    supervisor logs its comms with the task at DEBUG, secrets to mask included, which a deployment
    at INFO never writes), render tracebacks with all local variables, and print to the stdout
    structlog saw when first imported (pytest's session capture), so a test never sees them. Do
    what a 3.0 deployment's task runner does instead: filter at the configured level, no locals
    in tracebacks; written to the stdout of the moment so capfd gets the task's log lines. The
    operators' own (stdlib) log lines reach capfd through Airflow's root console handler.
    """
    import airflow  # noqa: F401  (3.1+ configure structlog here)
    import structlog

    if structlog.is_configured():
        yield
        return
    from airflow.configuration import conf

    level = conf.get("logging", "logging_level", fallback="INFO")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(structlog.stdlib.NAME_TO_LEVEL[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStdout())),
        cache_logger_on_first_use=False,
    )
    task_logger = logging.getLogger("airflow.task")
    placeholder = _ConsoleHandledByRoot()
    task_logger.addHandler(placeholder)
    yield
    task_logger.removeHandler(placeholder)
    structlog.reset_defaults()


@pytest.fixture(scope="session", autouse=True)
def one_in_process_execution_api() -> None:
    """One in-process Execution API app per test process, as Airflow 3.3's ``dag.test()`` keeps.

    Airflow 3.0-3.2 build it (Cadwyn's versioned FastAPI routes) anew for every task a
    ``dag.test()`` runs: about a second on an idle machine, several under load, and the quick
    suite's largest cost on those versions. 3.3 wraps ``in_process_api_server`` in
    ``functools.lru_cache(maxsize=1)``; this does the same for 3.0-3.2 (remove with 3.2's support).
    """
    import functools

    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
