"""The deployment under test: PostgreSQL, a full Airflow stack with two triggerers, the emulator.

Everything runs on loopback in processes of its own; `Deployment.stop` ends each one by
process id. Task states come from Airflow's REST API; what the REST API does not show
(trigger rows, XCom, rendered fields) is read from PostgreSQL. The CeleryExecutor variant adds
Debian's redis-server as the broker and two `airflow celery worker` processes.
"""

from __future__ import annotations

import base64
import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from deployment_postgres import PostgresCluster

from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from airflow_stack import AirflowStack, free_port, group_cpu_seconds, process_tree  # noqa: E402

DAGS = Path(__file__).resolve().parent / "dags"
CONN_ID = "wavespeed_deploy"  # these three must match dags/deployment_dag_factory.py
LIMITED_CONN_ID = "wavespeed_deploy_limited"
HTTP_CONN_ID = "wavespeed_deploy_http"
TRIGGERER_HEALTH_THRESHOLD = 20  # seconds without a heartbeat before another triggerer takes over
TERMINAL_RUN_STATES = ("success", "failed")
# LocalExecutor slots. 16 on 2 cores: tasks mostly wait on the scheduler and the API server,
# not the CPU (the 200-generation run took 221 s with 8 slots, 154 s with 16, 156 s with 32).
PARALLELISM = 16
# The CeleryExecutor variant: the same 16 slots, split over two worker processes.
CELERY_WORKERS, CELERY_WORKER_CONCURRENCY = 2, 8
# A task whose worker died without a word (kill -9 of the whole worker) is failed, and retried,
# by the scheduler only once it has missed heartbeats this long (Airflow's default: 300 s). Its
# supervisor heartbeats every 5 s ([workers] min_heartbeat_interval), so 30 s is 6 missed beats
# (the triggerers' threshold here is 20 s, with heartbeats as frequent).
CELERY_HEARTBEAT_TIMEOUT = 30


INSTALL_HINT = "run `bash scripts/install-system-deps.sh` and `pip install -e '.[dev,deployment]'`"


def missing_piece(what: str) -> None:
    """Skip (a developer without the system packages) or fail (the full test command sets
    ``WAVESPEED_DEPLOYMENT_REQUIRED``, so there a missing piece is an error, not a skip)."""
    message = f"deployment tier: {what} ({INSTALL_HINT})"
    if os.environ.get("WAVESPEED_DEPLOYMENT_REQUIRED"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def epoch(timestamp: str | None) -> float | None:
    """An Airflow API timestamp as epoch seconds."""
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Sample:
    """Task-instance counts of a run at one moment (from the REST API)."""

    elapsed: float
    running: int  # all running task instances of the run (worker slots in use)
    deferred: int
    sensors_running: int  # running instances of the sensor task (holding a slot)


@dataclass
class RunResult:
    dag_id: str
    run_id: str
    state: str
    seconds: float
    task_instances: list[dict[str, Any]]
    # Failed by the scheduler as "changed externally" (see Deployment.executor_events).
    state_mismatches: list[str] = field(default_factory=list)

    def of(self, task_id: str) -> list[dict[str, Any]]:
        return sorted((ti for ti in self.task_instances if ti["task_id"] == task_id), key=lambda ti: ti["map_index"])

    def states(self, task_id: str | None = None) -> Counter[str]:
        tis = self.task_instances if task_id is None else self.of(task_id)
        return Counter(str(ti["state"]) for ti in tis)

    def assert_states(self, task_id: str, expected: dict[str, int]) -> None:
        """The task's instances end in exactly these states; the message tells Airflow's race apart."""
        states = dict(self.states(task_id))
        assert states == expected, f"{self.dag_id}.{task_id}: {states}, expected {expected}" + (
            f"; the scheduler failed {self.state_mismatches} as 'changed externally' (a trigger "
            "fired before it processed the deferral: apache/airflow#67287, #72716)"
            if self.state_mismatches
            else ""
        )

    def tries(self, task_id: str) -> Counter[int]:
        return Counter(int(ti["try_number"]) for ti in self.of(task_id))


@dataclass
class LoadRun:
    """The 200-generation run, plus what was observed while it ran."""

    result: RunResult
    samples: list[Sample]
    # Sampled after every sensor deferred, while every prediction was still held processing.
    holding: list[Sample]
    trigger_snapshots: list[list[dict[str, Any]]]
    submissions: Counter[int]
    counters: dict[str, Any]
    dag_id: str
    count: int  # generations (mapped submit + sensor pairs)


LOAD_DAG = "wsdeploy_load"
LOAD_COUNT = 200
# The CeleryExecutor's load run (dags/wsdeploy_celery_load.py): smaller, to keep CI under 30 minutes.
CELERY_LOAD_DAG = "wsdeploy_celery_load"
CELERY_LOAD_COUNT = 60


class Sampler:
    """Samples running/deferred counts of one run in a background thread."""

    def __init__(
        self, stack: AirflowStack, dag_id: str, run_id: str, interval: float = 2.0, task_id: str = "generate.wait"
    ) -> None:
        self.stack, self.dag_id, self.run_id, self.interval, self.task_id = stack, dag_id, run_id, interval, task_id
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                count = self.stack.count_task_instances
                running = count(self.dag_id, self.run_id, "running")
                deferred = count(self.dag_id, self.run_id, "deferred")
                sensors = count(self.dag_id, self.run_id, "running", task_id=self.task_id)
                self.samples.append(Sample(time.monotonic() - self._started, running, deferred, sensors))
            except Exception as exc:  # keep sampling; the test reports what went wrong
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


_MONITOR_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


class RedisServer:
    """Debian's redis-server on a free loopback port, in a directory of its own, no persistence.

    Started and stopped by process id, as is the `redis-cli monitor` beside it, which records
    every command the server receives (the task messages included) for the secret audit:
    a message leaves the broker once a worker has run it, so reading the keys at the end
    alone would see almost none of them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.monitor: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def monitor_log(self) -> Path:
        return self.root / "monitor.log"

    def start(self, timeout: float = 30) -> RedisServer:
        self.root.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server")
        assert server is not None
        # Loopback only, no snapshots nor append-only file: the broker's state dies with it.
        options = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root), "--save", ""]
        options += ["--appendonly", "no", "--daemonize", "no", "--logfile", str(self.root / "redis.log")]
        self.process = subprocess.Popen(
            [server, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self._log_tail()}")
            try:
                if self.client().ping():
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        with self.monitor_log.open("ab") as log:
            self.monitor = subprocess.Popen(
                [str(shutil.which("redis-cli")), "-h", "127.0.0.1", "-p", str(self.port), "monitor"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # MONITOR records nothing until it says OK: wait for that, or the first messages go unseen.
        while b"OK" not in self.monitor_log.read_bytes():
            if self.monitor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-cli monitor did not start: {self.monitor_log.read_text(errors='replace')}")
            time.sleep(0.1)
        return self

    def _log_tail(self) -> str:
        path = self.root / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def client(self) -> Any:
        import redis  # the deployment extra; imported late so the quick suite collects without it

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def stop(self) -> None:
        for process in (self.monitor, self.process):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
        self.monitor = self.process = None

    # -- what the broker holds and saw (for the secret audit) ----------------------------------

    def contents(self) -> dict[str, str]:
        """Every key of every database, with its value as text: ``"<db>/<key>" -> value``."""
        found: dict[str, str] = {}
        databases = [int(name[2:]) for name in self.client().info("keyspace")]
        for db in databases:
            client = self.client()
            client.select(db)
            for raw_key in client.scan_iter(count=1000):
                key = raw_key.decode(errors="replace")
                kind = client.type(raw_key).decode()
                if kind == "string":
                    value: Any = client.get(raw_key)
                elif kind == "list":
                    value = client.lrange(raw_key, 0, -1)
                elif kind == "hash":
                    value = client.hgetall(raw_key)
                elif kind == "set":
                    value = client.smembers(raw_key)
                elif kind == "zset":
                    value = client.zrange(raw_key, 0, -1, withscores=True)
                else:  # streams and modules' types: their raw serialization
                    value = client.dump(raw_key)
                found[f"{db}/{key}"] = _as_text(value)
        return found

    def commands(self) -> list[list[str]]:
        """Every command the server received while monitored, as its arguments (unescaped)."""
        commands = []
        for line in self.monitor_log.read_text(errors="replace").splitlines():
            args = [_unescape_monitor(arg) for arg in _MONITOR_ARG.findall(line)]
            if args:
                commands.append(args)
        return commands


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return "\n".join(f"{_as_text(k)}: {_as_text(v)}" for k, v in value.items())
    if isinstance(value, (list, set, tuple)):
        return "\n".join(_as_text(item) for item in value)
    return str(value)


def _unescape_monitor(arg: str) -> str:
    """One argument as MONITOR quotes it (C-style escapes, \\xNN for other bytes)."""
    return codecs.escape_decode(arg.encode())[0].decode(errors="replace")


def celery_messages(texts: list[str]) -> list[dict[str, Any]]:
    """The Celery messages (kombu's JSON envelope) among ``texts``, each with its body decoded
    (``decoded_body``): the body travels base64-encoded, where a plain search would miss a key."""
    messages = []
    for text in texts:
        if not text.startswith("{") or '"body"' not in text:
            continue
        try:
            message = json.loads(text)
        except ValueError:
            continue
        body = message.get("body")
        if not isinstance(body, str):
            continue
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode(errors="replace")
        messages.append({**message, "decoded_body": body})
    return messages


class Deployment:
    """PostgreSQL + Airflow (api-server, scheduler, dag-processor, two triggerers) + emulator.

    With ``executor="CeleryExecutor"``: also Redis (the broker) and two Celery workers; the
    metadata database is Celery's result backend.
    """

    def __init__(self, home: Path, pg_bin: Path, api_key: str, executor: str = "LocalExecutor") -> None:
        self.api_key = api_key
        self.home = home
        self.executor = executor
        self.pg = PostgresCluster(pg_bin, free_port())
        self.redis = RedisServer(home / "redis") if executor == "CeleryExecutor" else None
        self.emulator: EmulatorProcess | None = None
        self.stack: AirflowStack | None = None
        self.timings: dict[str, float] = {}
        self.runs: list[tuple[str, str]] = []  # (dag_id, run_id) of every run a scenario triggered

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Deployment:
        started = time.monotonic()
        try:
            self.pg.start()
            celery: dict[str, Any] = {}
            if self.redis is not None:
                self.redis.start()
                celery = {
                    "executor": "CeleryExecutor",
                    "broker_url": self.redis.url,
                    "celery_workers": CELERY_WORKERS,
                    "worker_concurrency": CELERY_WORKER_CONCURRENCY,
                }
            # The scenarios aim faults at their own `deploy-test/<case>` model ids: opted in explicitly.
            self.emulator = EmulatorProcess(self.api_key, allow_any_model=True)
            connection = {
                "conn_type": "wavespeed",
                "host": self.emulator.url,
                "password": self.api_key,
                "extra": {"max_submissions_per_minute": 1200},
            }
            # The rate-limit scenario's account is on a low tier, but this connection keeps the
            # default submission budget (500/min per process): as when other clients share the
            # account, only the API's 429s can tell the workers its real limit.
            limited = {"conn_type": "wavespeed", "host": self.emulator.url, "password": self.api_key}
            # Plain http to a host that is not loopback: the provider must refuse to send the key.
            insecure = {"conn_type": "wavespeed", "host": "http://api.wavespeed.ai", "password": self.api_key}
            self.stack = AirflowStack(
                home=self.home,
                dags_folder=DAGS,
                sql_alchemy_conn=self.pg.url,
                triggerers=2,
                parallelism=PARALLELISM,
                env={
                    f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
                    f"AIRFLOW_CONN_{LIMITED_CONN_ID.upper()}": json.dumps(limited),
                    f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": json.dumps(insecure),
                    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD),
                    "WAVESPEED_API_KEY": "",  # only the connections above may supply a key
                    **(
                        {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(CELERY_HEARTBEAT_TIMEOUT)}
                        if celery
                        else {}
                    ),
                },
                **celery,
            )
            migrate_started = time.monotonic()
            self.stack.migrate()
            self.timings["airflow db migrate"] = time.monotonic() - migrate_started
            self.stack.start(migrate=False, track_triggerer_jobs=True)
        except BaseException:
            self.stop()
            raise
        self.timings["deployment start"] = time.monotonic() - started
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used by each process of the deployment so far (for the tier's report)."""
        groups = {p.pid: name for name, p in self.airflow.processes.items() if p.poll() is None}
        if self.emulator is not None:
            groups[self.emulator.process.pid] = "emulator"
        used = group_cpu_seconds(groups)
        if self.pg.pid is not None:  # the postmaster and its backends (not a process group of ours)
            used["postgresql"] = _process_tree_cpu_seconds(self.pg.pid)
        if self.redis is not None and self.redis.process is not None:
            used["redis"] = _process_tree_cpu_seconds(self.redis.process.pid)
        return used

    def stop(self) -> None:
        """Stop everything this deployment started, each by process id, whatever failed before."""
        steps: list[Callable[[], None]] = []
        if self.stack is not None:
            steps.append(self.stack.stop)
        if self.emulator is not None:
            steps.append(self.emulator.stop)
        if self.redis is not None:
            steps.append(self.redis.stop)
        steps.append(self.pg.stop)
        for step in steps:
            try:
                step()
            except Exception as exc:  # one failure must not leave the other processes running
                print(f"deployment stop: {exc!r}", file=sys.stderr)

    # -- shortcuts ---------------------------------------------------------------------

    @property
    def airflow(self) -> AirflowStack:
        assert self.stack is not None
        return self.stack

    @property
    def control(self) -> EmulatorControl:
        assert self.emulator is not None
        return self.emulator.control

    def reset_emulator(self, duration: float | tuple[float, float] = 2.0) -> None:
        """A fresh emulator state; ``duration`` applies to predictions no ``hold`` rule keeps running."""
        self.control.reset()
        self.control.set_duration(duration)

    def assert_healthy(self) -> None:
        """Every component process alive, the api-server reports them healthy, and each
        running triggerer's own job heartbeats (the health endpoint only shows the latest)."""
        self.airflow._check_alive()
        health = self.airflow.health()
        for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
            status = (health.get(part) or {}).get("status")
            assert status == "healthy", f"{part} is {status!r}: {health}"
        jobs = {job["id"]: job for job in self.airflow.jobs("TriggererJob")}
        for name, job_id in self.airflow.job_ids.items():
            if name in self.airflow.processes:
                beat = epoch(jobs[job_id]["latest_heartbeat"])
                assert beat is not None and time.time() - beat < TRIGGERER_HEALTH_THRESHOLD, (
                    f"{name} (job {job_id}) last heartbeat {jobs[job_id]['latest_heartbeat']}"
                )

    def celery_worker_of(self, pid: int) -> str:
        """The Celery worker component whose process tree holds process ``pid`` (a task's process)."""
        workers = [
            name
            for name, process in self.airflow.processes.items()
            if name.startswith("celery-worker-") and pid in process_tree(process.pid)
        ]
        assert len(workers) == 1, f"process {pid} is in the trees of {workers}"
        return workers[0]

    def process_tree_of(self, name: str) -> dict[int, str]:
        """Every process of component ``name``'s tree: ``pid -> command line`` (its process title)."""
        return {pid: command_line(pid) for pid in process_tree(self.airflow.processes[name].pid)}

    # -- runs --------------------------------------------------------------------------

    def trigger(self, dag_id: str) -> str:
        self.airflow.wait_for_dag(dag_id)
        run_id = self.airflow.trigger(dag_id)
        self.runs.append((dag_id, run_id))
        return run_id

    def end_unfinished_runs(self) -> list[str]:
        """Mark runs a failed scenario left going as failed, so their tasks do not load the next one."""
        ended = []
        for dag_id, run_id in self.runs:
            try:
                if self.airflow.run_state(dag_id, run_id) not in TERMINAL_RUN_STATES:
                    self.airflow.api("PATCH", f"dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})
                    ended.append(f"{dag_id} {run_id}")
            except Exception as exc:  # best effort: the scenario's own failure is the one to report
                print(f"could not end {dag_id} {run_id}: {exc!r}", file=sys.stderr)
        return ended

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> float:
        """Poll ``condition`` until it holds; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.airflow._check_alive()
            if condition():
                return time.monotonic() - started
            time.sleep(interval)
        raise TimeoutError(f"{what}: not reached within {timeout} s")

    def count(self, dag_id: str, run_id: str, state: str) -> int:
        return self.airflow.count_task_instances(dag_id, run_id, state)

    def wait_deferred(self, dag_id: str, run_id: str, count: int, timeout: float = 180.0) -> float:
        """Wait until exactly ``count`` task instances of the run are deferred."""
        return self.wait_until(
            lambda: self.count(dag_id, run_id, "deferred") == count, timeout, f"{count} sensors of {dag_id} deferred"
        )

    def finish(self, dag_id: str, run_id: str, timeout: float, started: float | None = None) -> RunResult:
        """Wait for the run to end; return its task instances."""
        started = time.monotonic() if started is None else started
        self.wait_until(
            lambda: self.airflow.run_state(dag_id, run_id) in TERMINAL_RUN_STATES,
            timeout,
            f"DAG run {dag_id} {run_id} to end",
            interval=2.0,
        )
        return RunResult(
            dag_id,
            run_id,
            self.airflow.run_state(dag_id, run_id),
            time.monotonic() - started,
            self.airflow.task_instances(dag_id, run_id),
            self.state_mismatches(dag_id, run_id),
        )

    def executor_events(self, dag_id: str, run_id: str, task_id: str, state: str = "success") -> int:
        """How many executor events of ``state`` the scheduler has processed for a task of a run.

        Each deferral ends the worker process with a "success" event; until the scheduler has
        processed it, a trigger that fires races it (apache/airflow#67287, #72716: the resumed
        task is then failed as "killed externally"). Scenarios that make triggers fire on
        purpose wait for these events first, so they test the provider, not that race.
        """
        pattern = re.compile(
            rf"Received executor event with state {state} for task instance TaskInstanceKey\("
            rf"dag_id='{re.escape(dag_id)}', task_id='{re.escape(task_id)}', run_id='{re.escape(run_id)}'"
        )
        text = (self.airflow.log_dir / "scheduler.log").read_text(errors="replace")
        return len(pattern.findall(text))

    def wait_settled(self, dag_id: str, run_id: str, task_id: str, deferred: int, timeout: float = 60) -> None:
        """Wait until the scheduler has seen the deferral exit of ``deferred`` instances of ``task_id``."""
        self.wait_until(
            lambda: self.executor_events(dag_id, run_id, task_id) >= deferred,
            timeout,
            f"the scheduler to process the deferral of {deferred} {task_id}",
        )

    def state_mismatches(self, dag_id: str, run_id: str) -> list[str]:
        """Task instances the scheduler failed as "changed externally" (the Airflow race above)."""
        text = (self.airflow.log_dir / "scheduler.log").read_text(errors="replace")
        found = re.findall(
            rf"reported that the task instance <TaskInstance: {re.escape(dag_id)}\.(\S+) {re.escape(run_id)}"
            rf"(?: map_index=(\d+))? \[(\w+)\]",
            text,
        )
        return [f"{task}[{index or -1}] ({state})" for task, index, state in found]

    # -- what the emulator saw ------------------------------------------------------------

    def submissions_of(self, run_id: str) -> list[dict[str, Any]]:
        """Accepted submissions whose prompt names this run."""
        marker = f"deployment {run_id} index "
        return [s for s in self.control.submissions() if marker in str(s["inputs"].get("prompt"))]

    def submissions_per_index(self, run_id: str, model: str | None = None) -> Counter[int]:
        counts: Counter[int] = Counter()
        for submission in self.submissions_of(run_id):
            if model is None or submission["model"] == model:
                counts[int(str(submission["inputs"]["prompt"]).rsplit(" ", 1)[1])] += 1
        return counts

    # -- PostgreSQL ------------------------------------------------------------------------

    def fernet_key(self) -> str:
        return (self.airflow.home / "stack-secrets").read_text().split()[1]

    def trigger_rows(self) -> list[dict[str, Any]]:
        """The trigger table with decrypted kwargs (Airflow encrypts them with the Fernet key)."""
        from cryptography.fernet import Fernet

        fernet = Fernet(self.fernet_key().encode())
        rows = self.pg.query("SELECT id, classpath, kwargs, triggerer_id, created_date FROM trigger ORDER BY id")
        result = []
        for trigger_id, classpath, kwargs, triggerer_id, created in rows:
            text = kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode()
            result.append(
                {
                    "id": trigger_id,
                    "classpath": classpath,
                    "kwargs_text": text,
                    "kwargs": json.loads(text),
                    "triggerer_id": triggerer_id,
                    "created": created,
                }
            )
        return result

    def deferred_triggers(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """``"<task_id>[<map_index>]" -> trigger row`` for the run's task instances waiting on a trigger."""
        rows = self.pg.query(
            "SELECT task_id, map_index, trigger_id FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s AND trigger_id IS NOT NULL",
            (dag_id, run_id),
        )
        triggers = {row["id"]: row for row in self.trigger_rows()}
        return {f"{task}[{index}]": triggers[tid] for task, index, tid in rows if tid in triggers}

    # -- logs --------------------------------------------------------------------------------

    def task_log_dir(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Path:
        path = self.airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return path / f"map_index={map_index}" if map_index >= 0 else path

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        """Every attempt's log of one task instance, trigger logs included."""
        directory = self.task_log_dir(dag_id, run_id, task_id, map_index)
        return "\n".join(path.read_text(errors="replace") for path in sorted(directory.glob("attempt=*.log*")))

    def all_files(self) -> Iterator[Path]:
        """Every file of the deployment home: task logs, component logs, config."""
        for path in self.airflow.home.rglob("*"):
            if path.is_file():
                yield path


def command_line(pid: int) -> str:
    """A process's command line (or title), "(gone)" once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (killed, not yet reaped by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _process_tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and its direct children, from /proc."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == root or int(fields[1]) == root:
            total += sum(int(value) for value in fields[11:15]) / ticks
    return total


def failure_messages(log_text: str) -> list[str]:
    """Exception texts of a task log (JSON lines), for the assertion messages."""
    messages = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for detail in record.get("error_detail") or []:
            if isinstance(detail, dict) and detail.get("exc_value"):
                messages.append(f"{detail.get('exc_type')}: {detail['exc_value']}")
    return messages


def log_events(log_text: str) -> str:
    """A task log's lines (JSON) as ``time level event``, one per line: what each try did, for assertion messages."""
    lines = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        lines.append(f"{str(record.get('timestamp', ''))[11:23]} {record.get('level', '')} {record.get('event', '')}")
    return "\n".join(lines)


def requests_per_window(log: list[list[Any]], window: float, since: float) -> list[int]:
    """Request counts in consecutive windows of ``window`` seconds from ``since`` (emulator request log)."""
    times = sorted(entry[0] for entry in log if entry[0] >= since)
    if not times:
        return []
    counts = [0] * (int((times[-1] - since) // window) + 1)
    for moment in times:
        counts[int((moment - since) // window)] += 1
    return counts


def max_in_sliding_window(times: list[float], window: float) -> int:
    """The most events in any interval of ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- the load run (shared by both executors) ---------------------------------------------------


def run_load(deployment: Deployment, dag_id: str = LOAD_DAG, count: int = LOAD_COUNT) -> LoadRun:
    """Run the load DAG once (the load test and the secret audit both look at it).

    Every prediction is held ``processing`` until all ``count`` sensors have deferred and the triggers
    have polled each one twice more, so "the sensors wait while their predictions run" is a fact
    of the run, not a race between the machine's speed and a prediction's duration.
    """
    control = deployment.control
    deployment.reset_emulator()
    control.hold()
    run_id = deployment.trigger(dag_id)
    started = time.monotonic()
    snapshots: list[list[dict[str, Any]]] = []
    with Sampler(deployment.airflow, dag_id, run_id, interval=3.0, task_id="generate.wait") as sampler:

        def all_deferred() -> bool:
            if deployment.count(dag_id, run_id, "failed"):
                failed = [
                    f"{ti['task_id']}[{ti['map_index']}] try {ti['try_number']}"
                    for ti in deployment.airflow.task_instances(dag_id, run_id)
                    if ti["state"] == "failed"
                ]
                raise AssertionError(
                    f"task instances failed while every prediction was running: {failed}; failed by the scheduler "
                    f"as 'changed externally': {deployment.state_mismatches(dag_id, run_id)}"
                )
            return deployment.count(dag_id, run_id, "deferred") == count

        # A sensor waiting in its worker slot would never get here: its prediction does not finish.
        deployment.wait_until(all_deferred, 1800, f"all {count} sensors deferred", interval=3.0)
        deployment.wait_settled(dag_id, run_id, "generate.wait", count, timeout=600)
        snapshots.append(deployment.trigger_rows())  # every trigger row exists now: the secret audit reads them
        # Still held: the triggers poll in the triggerers while the sampler watches for sensors in worker slots.
        first, since = len(sampler.samples), time.time()

        def polled_twice_more() -> bool:
            polls = sum(1 for _, endpoint, status in control.request_log(since) if endpoint == "result")
            return polls >= 2 * count and len(sampler.samples) >= first + 3

        deployment.wait_until(polled_twice_more, 600, "every held prediction polled twice in the triggerers")
        holding = list(sampler.samples[first + 1 :])  # the first may have started counting before
        released = control.release()
        assert released == count, f"{released} predictions were held, expected {count}"
        # Trigger rows vanish when they fire: keep copies for the secret audit while they exist.
        while deployment.airflow.run_state(dag_id, run_id) not in ("success", "failed"):
            deployment.airflow._check_alive()
            assert time.monotonic() - started < 2400, "the load run did not end within 2400 s"
            snapshots.append(deployment.trigger_rows())
            time.sleep(10)
    result = deployment.finish(dag_id, run_id, timeout=60, started=started)
    return LoadRun(
        result=result,
        samples=sampler.samples,
        holding=holding,
        trigger_snapshots=snapshots,
        submissions=deployment.submissions_per_index(run_id),
        counters=control.counters(),
        dag_id=dag_id,
        count=count,
    )


# -- the secret audit (shared by both executors) ------------------------------------------------


def key_needles(key: str) -> list[str]:
    """The whole key, and its random part's first half: a truncated copy is a leak too."""
    random_part = key.rsplit("-", 1)[1]
    return [key, random_part[: len(random_part) // 2]]


def has_key(text: str, needles: list[str]) -> bool:
    return any(needle in text for needle in needles)


def audit_files_and_database(deployment: Deployment, load_run: LoadRun, components: set[str]) -> None:
    """Assert the API key is nowhere in clear text: every file of the deployment (task, trigger and
    component logs among them; ``components`` names the component logs that must be there), the
    XCom table, rendered fields, next_kwargs, the trigger kwargs (decrypted: Airflow encrypts them,
    so a raw search would prove nothing), the connection table, and a pg_dump of the database."""
    needles = key_needles(deployment.api_key)
    pg = deployment.pg

    # Files: every log the deployment wrote, task and trigger logs of the load run included.
    files = list(deployment.all_files())
    leaking_files = [str(path) for path in files if has_key(path.read_text(errors="replace"), needles)]
    load_task_logs = [p for p in files if f"dag_id={load_run.dag_id}" in str(p) and p.name.startswith("attempt=")]
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
        f"\nsecret audit ({deployment.executor}): {len(files)} files ({len(load_task_logs)} load-run task logs, "
        f"{len(trigger_logs)} trigger logs, components {component_logs}); {len(xcom)} XCom rows, {len(rendered)} "
        f"rendered-field rows, {len(trigger_kwargs)} trigger kwargs (decrypted), {len(connections)} connections, "
        f"dump {len(dump)} chars"
    )
    # The audit looked where the key could have gone.
    assert len(load_task_logs) >= 2 * load_run.count and len(trigger_logs) >= 20
    assert {f"{name}.log" for name in components} <= set(component_logs)
    assert sum(dag == load_run.dag_id for dag, _, _ in xcom) >= 2 * load_run.count
    assert sum(dag == load_run.dag_id for dag, _, _ in rendered) >= load_run.count
    assert any(
        "WaveSpeedTaskTrigger" in row["classpath"] for snapshot in load_run.trigger_snapshots for row in snapshot
    )

    assert leaking_files == []
    assert [row[:2] for row in xcom if has_key(row[2] or "", needles)] == []
    assert [row[:2] for row in rendered if has_key(row[2] or "", needles)] == []
    assert [row[0] for row in next_kwargs if has_key(row[1] or "", needles)] == []
    assert [text[:200] for text in trigger_kwargs if has_key(text, needles)] == []
    assert [row[0] for row in connections if has_key(" ".join(str(v) for v in row), needles)] == []
    assert not has_key(dump, needles), "the key is in the metadata database"


def assert_load_run(load_run: LoadRun, deployment: Deployment) -> None:
    """Every task of the load run succeeded, each input was submitted exactly once, and the sensors
    waited in the triggerers, holding no worker slot (the load test's checks, for either executor)."""
    result, holding = load_run.result, load_run.holding
    assert len(result.of("generate.submit")) == load_run.count
    for task_id in ("generate.submit", "generate.wait"):
        result.assert_states(task_id, {"success": load_run.count})
    assert result.state == "success"

    # Exactly one submission per map index: nothing lost, nothing submitted twice.
    assert load_run.submissions == {index: 1 for index in range(load_run.count)}
    assert load_run.counters["submissions"] == {"wavespeed-ai/flux-dev": load_run.count}

    # Waiting sensors hold no worker slot: with every prediction still running, all 200 sensors
    # were deferred at once (16 slots could not hold them), and as the triggers polled on, no
    # sensor and no task instance at all was in a worker slot.
    assert len(holding) >= 2
    assert [(s.deferred, s.sensors_running, s.running) for s in holding] == [(load_run.count, 0, 0)] * len(holding)
    # Every sensor waited in a triggerer process: its trigger log was written by a triggerer job.
    triggerer_ids = set(deployment.airflow.job_ids.values())
    for ti in result.of("generate.wait"):
        directory = deployment.task_log_dir(result.dag_id, result.run_id, "generate.wait", ti["map_index"])
        jobs = {int(path.name.rsplit(".", 2)[-2]) for path in directory.glob("attempt=*.log.trigger.*.log")}
        assert jobs and jobs <= triggerer_ids, f"sensor {ti['map_index']} trigger logs: {jobs}"


def celery_workloads(deployment: Deployment, worker: str, run_id: str) -> list[tuple[str, int, int]]:
    """``(task_id, map_index, try_number)`` of every workload of ``run_id`` the Celery worker's log
    says it executed (the provider's "Executing workload in Celery: ... ti=TaskInstanceDTO(...)")."""
    text = (deployment.airflow.log_dir / f"{worker}.log").read_text(errors="replace")
    pattern = re.compile(
        r"Executing workload in Celery: .*?task_id='([^']+)', dag_id='[^']+', run_id='"
        + re.escape(run_id)
        + r"', try_number=(\d+), dag_version_id=[^,]+, map_index=(-?\d+)"
    )
    return [(task, int(index), int(tries)) for task, tries, index in pattern.findall(text)]


# -- the batch-kill scenario (both executors: a task process killed, a whole Celery worker killed) --

BATCH_KILL_DAG = "wsdeploy_batch_kill"
BATCH_KILL_COUNT, BATCH_KILL_WINDOW = 20, 5  # as in dags/wsdeploy_batch_kill.py
BATCH_KILLED_WINDOW = list(range(2 * BATCH_KILL_WINDOW, 3 * BATCH_KILL_WINDOW))  # the third window: 10-14
# The killed window's submits answer this late: far longer than finding and killing the worker takes,
# shorter than the client's 30 s read timeout.
BATCH_LATE_ANSWER = 25.0


def task_record(
    deployment: Deployment,
    dag_id: str,
    run_id: str,
    task_id: str,
    name: str = "wavespeed_batch",
    part: int | None = None,
) -> dict[str, Any] | None:
    """A WaveSpeed task record (or its part ``part``), read through the REST API; None when there is none.

    Airflow 3.3+: the task state store (and then no Variable may exist); below: the Variable.
    """
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    from airflow_provider_wavespeed._records import BATCH_RECORD_PREFIX, SUBMIT_RECORD_PREFIX, part_key, record_key

    prefix = BATCH_RECORD_PREFIX if name == "wavespeed_batch" else SUBMIT_RECORD_PREFIX
    key = record_key(dag_id, run_id, task_id, -1, prefix)
    if part is not None:
        key, name = part_key(key, part, state_store=False), part_key(name, part, state_store=True)
    variable = deployment.airflow.api("GET", f"variables/{key}", ok_statuses=(404,))
    variable = variable if isinstance(variable, dict) and "value" in variable else None
    if Version(airflow_version).release[:2] < (3, 3):
        return json.loads(variable["value"]) if variable else None
    assert variable is None, f"Airflow 3.3+ must keep the record in the task state store: {variable}"
    path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/{name}"
    found = deployment.airflow.api("GET", path, params={"map_index": -1}, ok_statuses=(404,))
    if not isinstance(found, dict) or "value" not in found:
        return None
    value = found["value"]
    return value if isinstance(value, dict) else json.loads(value)


def batch_record(deployment: Deployment, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The batch task's record (see :func:`task_record`): its head, with ``ids`` (one per input, None
    where there is none) gathered from its parts as the operator reads them (parts 0, 1... of its ``run``)."""
    head = task_record(deployment, dag_id, run_id, "batch")
    if head is None:
        return head
    ids: list[str | None] = [None] * int(head["count"])
    number = 0
    while (part := task_record(deployment, dag_id, run_id, "batch", part=number)) is not None:
        if part.get("run") != head["run"]:
            break
        for index, prediction_id in part["ids"].items():
            ids[int(index)] = prediction_id
        number += 1
    return {**head, "ids": ids}


@dataclass
class BatchKill:
    """A batch-kill run stopped where the kill lands: its third window's submits created, answers held."""

    run_id: str
    since: float  # epoch: the emulator's request log from here on is this run's
    started: float  # monotonic
    ti: dict[str, Any]  # the batch task instance, running its first try


def start_batch_to_kill(deployment: Deployment) -> BatchKill:
    """Trigger the batch-kill DAG and return once its worker is where a kill is wanted.

    By count, not by time: the first two windows are answered at once; the third window's submits
    create their predictions, then their answers wait ``BATCH_LATE_ANSWER`` s. The record already
    says which inputs are in flight: it was written before their submits left.
    """
    control = deployment.control
    deployment.reset_emulator(duration=2.0)
    control.add_fault("submit", "slow", delay=0, times=2 * BATCH_KILL_WINDOW)
    control.add_fault("submit", "slow_after_submit", delay=BATCH_LATE_ANSWER, times=BATCH_KILL_WINDOW)
    since = time.time()
    run_id = deployment.trigger(BATCH_KILL_DAG)
    started = time.monotonic()
    deployment.wait_until(
        lambda: len(deployment.submissions_of(run_id)) >= 3 * BATCH_KILL_WINDOW,
        180,
        "the batch's first three windows created",
        interval=0.5,
    )
    (ti,) = deployment.airflow.task_instances(BATCH_KILL_DAG, run_id)
    assert ti["state"] == "running" and ti["try_number"] == 1 and ti["pid"], ti
    record = batch_record(deployment, BATCH_KILL_DAG, run_id)
    assert record is not None and record["in_flight"] == BATCH_KILLED_WINDOW, record
    assert all(record["ids"][: 2 * BATCH_KILL_WINDOW]) and not any(record["ids"][2 * BATCH_KILL_WINDOW :])
    return BatchKill(run_id, since, started, ti)


def assert_batch_kill_outcome(deployment: Deployment, run: BatchKill, result: RunResult) -> str:
    """The retry finished the batch and nothing was submitted twice; returns the task's log."""
    control = deployment.control
    (ti,) = result.of("batch")
    log = deployment.task_log(BATCH_KILL_DAG, run.run_id, "batch")
    assert (result.state, ti["state"], ti["try_number"]) == ("success", "success", 2), log[-3000:]
    # Every input has exactly one prediction (the killed window's were created before the kill).
    assert deployment.submissions_per_index(run.run_id) == {index: 1 for index in range(BATCH_KILL_COUNT)}
    # The emulator logs a request once answered: the killed window's answers come BATCH_LATE_ANSWER s
    # after they were created (to a dead worker). Then exactly 20 submit requests: the retry sent only 15-19.
    deployment.wait_until(
        lambda: sum(entry[1] == "submit" for entry in control.request_log(since=run.since)) >= BATCH_KILL_COUNT,
        BATCH_LATE_ANSWER + 60,
        "the killed window's late answers",
    )
    submits = [entry for entry in control.request_log(since=run.since) if entry[1] == "submit"]
    assert [status for _, _, status in submits] == [200] * BATCH_KILL_COUNT
    # None lost: the window in flight at the kill was found in the history and adopted, one
    # prediction per input, each paired with its own input's prediction.
    value = deployment.airflow.xcom(BATCH_KILL_DAG, run.run_id, "batch")
    statuses = [entry["status"] for entry in value["predictions"]]
    assert statuses == ["completed"] * BATCH_KILL_COUNT, statuses
    assert (value["completed"], value["failed"]) == (BATCH_KILL_COUNT, 0)
    by_index = {
        int(str(s["inputs"]["prompt"]).rsplit(" ", 1)[1]): s["id"] for s in deployment.submissions_of(run.run_id)
    }
    assert [entry["id"] for entry in value["predictions"]] == [by_index[i] for i in range(BATCH_KILL_COUNT)]
    assert "are looked up in the prediction history and never submitted again" in log
    for index in BATCH_KILLED_WINDOW:
        assert f"inputs[{index}]: adopted prediction {by_index[index]} from the history" in log
    assert batch_record(deployment, BATCH_KILL_DAG, run.run_id) is None  # deleted once the retry succeeded
    return log
