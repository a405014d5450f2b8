"""Run a real Airflow 3 deployment on loopback: api-server, scheduler, dag-processor, triggerer(s).

Used by the demo (scripts/run_pipeline.py), the deployment tests and the benchmarks. Every
process is started in its own session and stopped by process id, also on failure.

The executor is the LocalExecutor unless ``executor="CeleryExecutor"``: then ``celery_workers``
`airflow celery worker` processes run the tasks, fed through ``broker_url`` (the caller runs
the broker), with the metadata database as Celery's result backend.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

COMPONENTS = ("api-server", "scheduler", "dag-processor")
# How long a SQLite connection waits for another process's write lock before "database is
# locked" (Python's default is 5 s, too short when four components write on a loaded machine).
SQLITE_BUSY_TIMEOUT = 60
# Retries of a REST call that Airflow answered with 5xx or not at all (a loaded api-server).
API_ATTEMPTS = 6
# Log lines that explain a failure, searched in the component logs when something goes wrong.
_PROBLEM_MARKERS = ("database is locked", "Traceback", "[error", "[critical", "ERROR", "CRITICAL", "Error:")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_bin() -> str:
    """Return the `airflow` executable of the running interpreter's environment."""
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else "airflow"


@dataclass
class AirflowStack:
    """A deployment under ``home``; ``env`` is added to every component's environment."""

    home: Path
    dags_folder: Path
    env: dict[str, str] = field(default_factory=dict)
    sql_alchemy_conn: str | None = None  # default: SQLite in home
    triggerers: int = 1
    parallelism: int = 16
    port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    executor: str = "LocalExecutor"
    # CeleryExecutor only: the broker (e.g. redis://127.0.0.1:6379/0), how many `airflow celery
    # worker` processes (named celery-worker-N, Celery hostname worker-N@<host>) and the task
    # slots of each (Celery's --concurrency).
    broker_url: str | None = None
    celery_workers: int = 0
    worker_concurrency: int = 8

    def __post_init__(self) -> None:
        self.home = self.home.resolve()
        self.port = self.port or free_port()
        self._token: str | None = None
        self._http = requests.Session()
        self._commands: dict[str, tuple[str, ...]] = {}  # component name -> `airflow` arguments
        self._component_env: dict[str, dict[str, str]] = {}  # component name -> its own extra environment
        self.job_ids: dict[str, int] = {}  # component name -> its row in the job table (when tracked)
        if self.executor == "CeleryExecutor" and (not self.broker_url or not self.sql_alchemy_conn):
            # Celery's result backend is the metadata database, and Airflow refuses SQLite for it.
            raise ValueError("the CeleryExecutor needs broker_url and a sql_alchemy_conn that is not SQLite")
        if self.celery_workers and self.executor != "CeleryExecutor":
            raise ValueError(f"celery_workers={self.celery_workers} needs executor='CeleryExecutor'")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "component-logs"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite metadatabase file, or None when ``sql_alchemy_conn`` names another database."""
        return None if self.sql_alchemy_conn else self.home / "airflow.db"

    def component_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        secrets_file = self.home / "stack-secrets"
        if not secrets_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            # Every component must share these, or tokens and encrypted fields will not match.
            fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
            secrets_file.write_text(f"{secrets.token_urlsafe(32)}\n{fernet}\n{secrets.token_urlsafe(32)}\n")
        jwt_secret, fernet_key, api_secret = secrets_file.read_text().split()
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__FERNET_KEY": fernet_key,
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__SECRET_KEY": api_secret,
                "AIRFLOW__API__WORKERS": "1",
                # Airflow 3.0 answers xcom(..., deserialize=True) with HTTP 400 unless this is on
                # (3.1+ have no such option and always allow it).
                "AIRFLOW__API__ENABLE_XCOM_DESERIALIZE_SUPPORT": "True",
                "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
                "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            }
        )
        if self.sql_alchemy_conn:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.sql_alchemy_conn
        else:
            # `timeout` in the URL reaches sqlite3.connect() through both of Airflow's engines
            # (pysqlite for the sync one, aiosqlite for the async one, which Airflow derives
            # from this URL), so every component waits for a lock instead of failing.
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{self.sqlite_path}?timeout={SQLITE_BUSY_TIMEOUT}"
        if self.executor == "CeleryExecutor":
            assert self.broker_url and self.sql_alchemy_conn
            env["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url
            # Task states go through the metadata database (Celery's SQLAlchemy backend), not the broker.
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{self.sql_alchemy_conn}"
        env.update(self.env)
        return env

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run an `airflow` CLI command in this deployment's environment."""
        return subprocess.run(
            [airflow_bin(), *args],
            env=self.component_env(),
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def migrate(self) -> None:
        self.airflow("db", "migrate")
        if self.sqlite_path is not None:
            # Write-ahead logging: readers no longer block the writer nor the writer the readers,
            # so the scheduler's reads and the api-server's writes stop taking turns. The mode
            # is stored in the database file, so one statement here covers every component.
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=SQLITE_BUSY_TIMEOUT)) as db:
                db.execute("PRAGMA journal_mode=WAL")

    def start_component(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` as component ``name``; ``env`` is added to its environment only."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        own_env = dict(env or {})
        process = subprocess.Popen(
            [airflow_bin(), *args],
            env={**self.component_env(), **own_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        log.close()
        self.processes[name] = process
        self._commands[name] = args
        self._component_env[name] = own_env
        return process

    def start_again(self, name: str) -> subprocess.Popen[bytes]:
        """Start a stopped or killed component again, with the command and environment it had."""
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is still running (pid {self.processes[name].pid})")
        # A triggerer whose job id is tracked gets a new job: track that one instead.
        known = {job["id"] for job in self.jobs("TriggererJob")} if name in self.job_ids else None
        process = self.start_component(name, *self._commands[name], env=self._component_env[name])
        if known is not None:
            self.job_ids[name] = self._wait_for_new_job("TriggererJob", known, timeout=120)
        return process

    def start_celery_worker(self, index: int) -> subprocess.Popen[bytes]:
        """Start `airflow celery worker` number ``index`` (see :meth:`wait_for_celery_worker`).

        Each worker is a separate process tree with its own slots (``worker_concurrency``), its
        own Celery hostname and its own log server port (several share this machine).
        """
        return self.start_component(
            f"celery-worker-{index}",
            "celery",
            "worker",
            "--concurrency",
            str(self.worker_concurrency),
            "--celery-hostname",
            f"worker-{index}@%h",
            env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())},
        )

    def wait_for_celery_worker(self, name: str, timeout: float = 120, since: int = 0) -> None:
        """Wait until the worker's log (from byte ``since``) says it is ready: connected, consuming."""
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with path.open("rb") as log:
                log.seek(since)
                if b" ready." in log.read():  # Celery's "worker-N@host ready."
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{name} did not report ready within {timeout} s:\n{self.log_tail(name, 40)}")

    def start(self, *, migrate: bool = True, timeout: float = 180, track_triggerer_jobs: bool = False) -> AirflowStack:
        """Migrate the database, start every component and wait until the API answers.

        With ``track_triggerer_jobs`` the triggerers start one after the other and
        ``job_ids["triggerer-N"]`` records each one's job id (what the trigger table's
        ``triggerer_id`` refers to), so a test can tell which process runs which trigger.
        """
        if migrate:
            self.migrate()
        try:
            self.start_component("api-server", "api-server", "--port", str(self.port), "--host", "127.0.0.1")
            self.wait_for_api(timeout)
            self.start_component("scheduler", "scheduler")
            self.start_component("dag-processor", "dag-processor")
            for index in range(self.triggerers):
                name = f"triggerer-{index + 1}"
                known = {job["id"] for job in self.jobs("TriggererJob")} if track_triggerer_jobs else set()
                self.start_component(name, "triggerer")
                if track_triggerer_jobs:
                    self.job_ids[name] = self._wait_for_new_job("TriggererJob", known, timeout)
            for index in range(1, self.celery_workers + 1):
                self.start_celery_worker(index)
            for index in range(1, self.celery_workers + 1):
                self.wait_for_celery_worker(f"celery-worker-{index}", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_new_job(self, job_type: str, known: set[int], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            new = [job["id"] for job in self.jobs(job_type) if job["id"] not in known]
            if len(new) > 1:
                raise RuntimeError(f"more than one new {job_type} appeared: {new}")
            if new:
                return int(new[0])
            time.sleep(0.5)
        raise TimeoutError(f"no new {job_type} registered within {timeout} s")

    def restart(self, name: str, timeout: float = 60) -> subprocess.Popen[bytes]:
        """Stop a component the way a service manager does (see :meth:`stop_component`), then start it again."""
        self.stop_component(name, timeout)
        return self.start_again(name)

    def stop_component(self, name: str, timeout: float = 60) -> int | None:
        """Stop a component the way a service manager does; return its exit code (None: it had to be killed).

        SIGTERM to its main process, SIGKILL to what is left of its group after ``timeout``.

        :meth:`start_again` starts it again with the same command and environment.
        """
        process = self.processes.pop(name)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        code = process.poll()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return code

    def wait_for_api(self, timeout: float) -> None:
        """Wait until the api-server's health endpoint answers 200; say what it answered if it never did.

        A server that is up but fails every request (Airflow 3.0 with PyJWT 2.11+ answers 500) stays
        alive, so the reason is in its log, not in an exit code.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2)
                if answer.ok:
                    return
                last = f"HTTP {answer.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.5)
        raise TimeoutError(
            f"Airflow api-server did not answer on {self.url} within {timeout} s (last: {last}); "
            f"the end of its log:\n{self.log_tail('api-server', 40)}"
        )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log_tail(name, 40)
                raise RuntimeError(f"Airflow {name} exited with {process.returncode}; the end of its log:\n{tail}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        """Return the last ``lines`` lines of a component's log, indented."""
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(f"    {line}" for line in text.splitlines()[-lines:]) or "    (empty log)"

    def diagnose(self, max_lines: int = 8) -> str:
        """Which component logged a problem, and the lines that say what it was.

        For each component log: the last few lines that look like a problem (``database is
        locked``, tracebacks, ERROR...), each with its line number, then the log's path.
        """
        report = []
        for name in sorted(self.processes) or sorted(p.stem for p in self.log_dir.glob("*.log")):
            path = self.log_dir / f"{name}.log"
            if not path.exists():
                continue
            found = [
                (number, line.strip())
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                if any(marker in line for marker in _PROBLEM_MARKERS)
            ]
            process = self.processes.get(name)
            status = "" if process is None or process.poll() is None else f", exited with {process.returncode}"
            if found or status:
                report.append(f"  {name}{status}: {len(found)} problem line(s) in {path}; the last ones:")
                report.extend(f"    line {number}: {line[:300]}" for number, line in found[-max_lines:])
        return "\n".join(report) if report else f"  no component log under {self.log_dir} reports a problem"

    def stop(self, timeout: float = 20) -> None:
        """Stop every process this stack started (TERM, then KILL), by process group.

        A Celery worker's task processes lead process groups of their own: they are listed
        first and killed by id if they outlive their worker.
        """
        task_processes = [
            (pid, process_start_time(pid))
            for name, process in self.processes.items()
            if name.startswith("celery-worker-") and process.poll() is None
            for pid in process_tree(process.pid)[1:]
        ]
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # its task processes may outlive it
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid, started in task_processes:
            if started is not None and process_start_time(pid) == started:  # not a new process with a reused id
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.processes.clear()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each running component, task processes included (Linux)."""
        return group_cpu_seconds({p.pid: name for name, p in self.processes.items() if p.poll() is None})

    def kill(self, name: str, *, whole_tree: bool = False) -> list[int]:
        """`kill -9` one component (and its process group); it is not started again.

        With ``whole_tree`` every descendant dies too, in whatever process group: Airflow's task
        processes lead groups of their own, so a worker machine lost at once takes them with it
        only this way. The tree is frozen (SIGSTOP) first, so nothing forks while it is listed.
        Returns the process ids killed.
        """
        process = self.processes.pop(name)
        killed = [process.pid]
        if whole_tree:
            tree = process_tree(process.pid)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            killed = sorted(set(tree) | set(process_tree(process.pid)))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        return killed

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST API --
    def _headers(self) -> dict[str, str]:
        if self._token is None:
            # All-admins mode hands out a token without credentials (and 3.1+ adds it by itself).
            response = self._request("GET", f"{self.url}/auth/token", timeout=10)
            self._token = response.json().get("access_token", "") if response.ok else ""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request, tried again when Airflow answers 5xx or not at all.

        A loaded api-server can fail a request (a database lock held too long, a worker busy
        past the timeout) that succeeds a moment later; each retry waits longer (1, 2, 4... s).
        Writes are retried too: callers make them idempotent (``trigger`` names its run).
        """
        for attempt in range(1, API_ATTEMPTS + 1):
            self._check_alive()  # a dead component is the answer, not a retry
            try:
                response = self._http.request(method, url, **kwargs)
            except requests.RequestException as exc:
                if attempt == API_ATTEMPTS:
                    raise RuntimeError(
                        f"Airflow API {method} {url}: no answer after {attempt} attempts ({exc})\n{self.diagnose()}"
                    ) from None
            else:
                if response.status_code < 500 or attempt == API_ATTEMPTS:
                    return response
                print(
                    f"  (Airflow answered {method} {url.removeprefix(self.url)} with HTTP {response.status_code}: "
                    f"{response.text[:200]!r}; retrying)",
                    flush=True,
                )
            time.sleep(min(2 ** (attempt - 1), 10))
        raise AssertionError("unreachable")

    def api(self, method: str, path: str, *, ok_statuses: Iterable[int] = (), **kwargs: Any) -> Any:
        """Call the REST API; a status in ``ok_statuses`` is accepted besides 2xx."""
        response = self._request(method, f"{self.url}/api/v2/{path}", headers=self._headers(), timeout=30, **kwargs)
        if not response.ok and response.status_code not in ok_statuses:
            problem = f"Airflow API {method} {path} -> HTTP {response.status_code}: {response.text[:500]}"
            if response.status_code >= 500:
                problem += "\n" + self.diagnose()
            raise RuntimeError(problem)
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120, *, unpause: bool = True) -> dict[str, Any]:
        """Wait until the dag-processor has stored ``dag_id``; return the API's view of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self._request("GET", f"{self.url}/api/v2/dags/{dag_id}", headers=self._headers(), timeout=10)
            if response.ok:
                dag: dict[str, Any] = response.json()
                if unpause and dag.get("is_paused"):
                    self.unpause(dag_id)
                return dag
            time.sleep(1)
        errors = self.api("GET", "importErrors")
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout} s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, *, logical_date: str | None = None) -> str:
        """Create one run of ``dag_id`` and return its id.

        The run id is chosen here, so a retry after an answer lost to a 5xx cannot make a
        second run: Airflow answers 409 for the id it already has.
        """
        run_id = f"manual__{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}_{secrets.token_hex(3)}"
        body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf or {}}
        self.api("POST", f"dags/{dag_id}/dagRuns", json=body, ok_statuses=(409,))
        self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")  # a 409 for another reason would fail here
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100, "offset": len(items)}
            )
            items.extend(page["task_instances"])
            if len(items) >= page["total_entries"] or not page["task_instances"]:
                return items

    def count_task_instances(self, dag_id: str, run_id: str, state: str, task_id: str | None = None) -> int:
        """How many task instances of the run (of ``task_id``, when given) are in ``state`` (one cheap query)."""
        params: dict[str, Any] = {"state": state, "limit": 1}
        if task_id is not None:
            params["task_id"] = task_id
        page = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params=params)
        return int(page["total_entries"])

    def jobs(self, job_type: str) -> list[dict[str, Any]]:
        """Rows of the job table of one type (SchedulerJob, TriggererJob, DagProcessorJob)."""
        return list(self.api("GET", "jobs", params={"job_type": job_type, "limit": 100})["jobs"])

    def health(self) -> dict[str, Any]:
        """Return the api-server's view of the metadatabase, scheduler, triggerer and dag-processor."""
        return dict(self.api("GET", "monitor/health"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"map_index": map_index, "deserialize": True})["value"]

    def logs_text(self) -> Iterable[tuple[Path, str]]:
        """Every log file under the deployment home (component and task logs)."""
        for path in self.home.rglob("*.log"):
            yield path, path.read_text(errors="replace")


def process_tree(root: int) -> list[int]:
    """``root`` and every process descending from it (Linux /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        tree.append(pid)
        queue.extend(sorted(children.get(pid, [])))
    return tree


def process_start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc), or None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def group_cpu_seconds(groups: dict[int, str]) -> dict[str, float]:
    """CPU seconds used by every process of each process group ``{pgid: name}``, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(groups.values(), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        name = groups.get(int(fields[2]))  # its process group
        if name is not None:  # utime, stime, and the same for its reaped children
            used[name] += sum(int(value) for value in fields[11:15]) / ticks
    return used


def reset_home(home: Path) -> None:
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
