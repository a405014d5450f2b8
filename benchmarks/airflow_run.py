"""The real-Airflow part: N mapped generations, deferrable vs waiting in a worker, same parallelism.

Runs the DAGs of ``benchmarks/dags/wavespeed_benchmark_fanout.py`` in a real deployment
(``scripts/airflow_stack.py``: api-server, scheduler, dag-processor, triggerer; LocalExecutor,
SQLite) against the emulator, one DAG run at a time: a submit + ``WaveSpeedTaskSensor`` pair
(deferrable vs ``mode="poke"``) and a single ``WaveSpeedSubmitOperator(wait_for_completion=True)``
(deferrable vs blocking).

Worker-slot seconds held by the waiting tasks are measured two ways:

- *sampled*: every ``sample`` seconds the REST API is asked how many of the waiting task's
  instances are ``running`` (a running task instance holds a worker slot); the counts are
  summed over time. Unbiased, but coarse for runs much shorter than the sampling period.
- *from the task logs*: each try's log (JSON lines from the task process) gives, for every
  run in a worker, its first and last timestamp; a deferred try has two runs (defer, then
  resume) and the gap between them is spent in the triggerer.
- *while waiting*: of those worker runs, the seconds that overlap the task's own prediction
  running (emulator ``submitted_at`` to ``completes_at``): a slot held while there was something
  to wait for. The rest is process start-up, the submit and handling the result, which every
  design pays once per worker run whatever it waits for.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import psutil  # noqa: E402
from airflow_stack import AirflowStack, reset_home  # noqa: E402

from benchmarks import machine  # noqa: E402

DAGS = REPO / "benchmarks" / "dags"
# design -> (task that waits, [(label, dag id)]); the deferrable run first.
DESIGNS = {
    "sensor": (
        "generation.wait",
        [("deferrable", "wavespeed_benchmark_deferrable"), ("poke", "wavespeed_benchmark_poke")],
    ),
    "task": (
        "generate",
        [("deferrable", "wavespeed_benchmark_task_deferrable"), ("blocking", "wavespeed_benchmark_task_blocking")],
    ),
}
# A gap this long between two log lines of one try means the task left the worker (deferred).
_RUN_GAP = 3.0


@dataclass
class ModeResult:
    mode: str
    tasks: int
    state: str = "not run"
    wall_s: float | None = None
    sensor_states: dict[str, int] = field(default_factory=dict)
    slot_seconds_sampled: float = 0.0
    slot_seconds_logs: float | None = None
    # From the task logs: worker-run seconds that overlap the task's own prediction running, i.e.
    # a slot held while there is something to wait for (the rest is start-up, submit, results).
    slot_seconds_waiting: float | None = None
    runs_per_try: float | None = None
    max_running_sensors: int = 0
    max_deferred_sensors: int = 0
    sensor_running_dates_s: float | None = None  # sum of end - start (spans deferral when deferred)
    # Failed by Airflow's scheduler: the executor reported the deferring run's exit after the
    # trigger had already fired and the task was queued again ("state changed externally").
    failed_by_executor_race: int = 0
    other_load_cores: float | None = None  # CPU used meanwhile by processes outside this deployment
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, running, deferred)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["timeline"] = self.timeline[:: max(1, len(self.timeline) // 200)]
        return data


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _count(stack: AirflowStack, dag_id: str, run_id: str, task_id: str, state: str) -> int:
    page = stack.api(
        "GET",
        f"dags/{dag_id}/dagRuns/{run_id}/taskInstances",
        params={"state": state, "task_id": task_id, "limit": 1},
    )
    return int(page["total_entries"])


def _log_runs(home: Path, dag_id: str, run_id: str, task_id: str) -> dict[int, list[tuple[float, float]]]:
    """Map index -> the (start, end) epoch of each worker run of the waiting task, every try.

    A try's log holds one run per worker process: a deferred try ends a run with
    "Pausing task as DEFERRED" and starts the next when it resumes.
    """
    return {index: spans for (_, index), spans in worker_runs(home, dag_id, run_id, task_id).items()}


def worker_runs(
    home: Path, dag_id: str, run_id: str, task_id: str = "*"
) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(task id, map index) -> the (start, end) epoch of each worker run, every try, from the task logs.

    ``task_id`` is a glob: ``"*"`` for every task of the run. A try's log holds one run per worker
    process: a deferred try ends a run with "Pausing task as DEFERRED" and starts the next when
    it resumes. Start-up before a run's first log line is not counted.
    """
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    pattern = f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/**/attempt=*.log"
    for path in (home / "logs").glob(pattern):
        if not re.fullmatch(r"attempt=\d+\.log", path.name):
            continue  # the triggerer's part of the log is not a worker's
        task = re.search(r"task_id=([^/]+)", str(path))
        index = re.search(r"map_index=(-?\d+)", str(path))
        lines: list[tuple[float, str]] = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
                lines.append((_stamp(record["timestamp"]), str(record.get("event", ""))))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        if not lines or task is None:
            continue
        spans = runs.setdefault((task.group(1), int(index.group(1)) if index else -1), [])
        start = previous = lines[0][0]
        deferred = False
        for stamp, event in lines[1:]:
            if deferred and stamp - previous > _RUN_GAP:  # resumed in a new worker process
                spans.append((start, previous))
                start, deferred = stamp, False
            deferred = deferred or event.startswith("Pausing task as DEFERRED")
            previous = stamp
        spans.append((start, previous))
    return runs


def _predictions_by_index(control: Any, since: float) -> dict[int, tuple[float, float]]:
    """Map index -> (submitted_at, completes_at) of the generations submitted since ``since``."""
    found: dict[int, tuple[float, float]] = {}
    for entry in control.submissions():
        prompt = str(entry.get("inputs", {}).get("prompt", ""))
        match = re.fullmatch(r"benchmark image (\d+)", prompt)
        if match and entry["submitted_at"] >= since:
            state = control.prediction_state(entry["id"])
            found[int(match.group(1))] = (state["submitted_at"], state["completes_at"])
    return found


def _overlap(spans: list[tuple[float, float]], window: tuple[float, float]) -> float:
    return sum(max(0.0, min(end, window[1]) - max(start, window[0])) for start, end in spans)


def _stack_cpu(stack: AirflowStack) -> float:
    """CPU seconds used so far by the deployment's processes, their live descendants and reaped children."""
    total = 0.0
    for process in stack.processes.values():
        try:
            root = psutil.Process(process.pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def run_mode(
    stack: AirflowStack,
    dag_id: str,
    task_id: str,
    mode: str,
    tasks: int,
    *,
    sample: float,
    timeout: float,
    control: Any = None,
) -> ModeResult:
    result = ModeResult(mode=mode, tasks=tasks)
    stack.wait_for_dag(dag_id)
    triggered_at = time.time()
    busy_before, total_before = machine.busy_jiffies()
    stack_cpu_before = _stack_cpu(stack)
    run_id = stack.trigger(dag_id)
    started = time.monotonic()
    last = started
    state = "queued"
    while time.monotonic() - started < timeout:
        running = _count(stack, dag_id, run_id, task_id, "running")
        deferred = _count(stack, dag_id, run_id, task_id, "deferred")
        now = time.monotonic()
        result.slot_seconds_sampled += running * (now - last)
        last = now
        result.timeline.append((now - started, running, deferred))
        result.max_running_sensors = max(result.max_running_sensors, running)
        result.max_deferred_sensors = max(result.max_deferred_sensors, deferred)
        state = stack.run_state(dag_id, run_id)
        if state in ("success", "failed"):
            break
        time.sleep(max(0.0, sample - (time.monotonic() - now)))
    result.state = state
    wall = time.monotonic() - started
    busy_after, total_after = machine.busy_jiffies()
    machine_busy = (busy_after - busy_before) / max(1, total_after - total_before) * wall * (psutil.cpu_count() or 1)
    result.other_load_cores = max(0.0, machine_busy - (_stack_cpu(stack) - stack_cpu_before)) / wall
    run = stack.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
    start, end = _ts(run.get("start_date")), _ts(run.get("end_date"))
    result.wall_s = end - start if start and end else None
    sensors = [ti for ti in stack.task_instances(dag_id, run_id) if ti["task_id"] == task_id]
    for ti in sensors:
        result.sensor_states[str(ti["state"])] = result.sensor_states.get(str(ti["state"]), 0) + 1
    spans = [(_ts(ti.get("start_date")), _ts(ti.get("end_date"))) for ti in sensors]
    result.sensor_running_dates_s = sum(e - s for s, e in spans if s and e)
    race = f"<TaskInstance: {dag_id}.{task_id} {run_id} "
    scheduler_log = (stack.log_dir / "scheduler.log").read_text(errors="replace")
    result.failed_by_executor_race = sum(
        race in line and "but the task instance's state attribute is" in line for line in scheduler_log.splitlines()
    )
    logs = _log_runs(stack.home, dag_id, run_id, task_id)
    if logs:
        result.slot_seconds_logs = sum(end - start for spans in logs.values() for start, end in spans)
        result.runs_per_try = sum(map(len, logs.values())) / len(logs)
    if logs and control is not None:
        predictions = _predictions_by_index(control, triggered_at)
        result.slot_seconds_waiting = sum(
            _overlap(spans, predictions[index]) for index, spans in logs.items() if index in predictions
        )
    return result


def run(
    *,
    home: Path,
    emulator_url: str,
    api_key: str,
    tasks: int,
    parallelism: int,
    duration: float,
    sample: float = 1.0,
    timeout: float = 3600,
    control: Any = None,
) -> dict[str, Any]:
    """Both modes, one after the other, in one deployment; returns the figures."""
    reset_home(home)
    env = {
        "AIRFLOW_CONN_WAVESPEED_DEFAULT": json.dumps(
            {
                "conn_type": "wavespeed",
                "host": emulator_url,
                "password": api_key,
                "extra": {"max_submissions_per_minute": 12000},
            }
        ),
        "WAVESPEED_BENCH_TASKS": str(tasks),
        "AIRFLOW__TRIGGERER__CAPACITY": str(max(1000, tasks)),
        "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, tasks)),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    if control is not None:
        control.set_duration(duration)
    stack = AirflowStack(home=home, dags_folder=DAGS, env=env, parallelism=parallelism)
    results: dict[str, Any] = {"tasks": tasks, "parallelism": parallelism, "duration_s": duration}
    begun = time.monotonic()
    try:
        stack.start()
        results["stack_start_s"] = time.monotonic() - begun
        for design, (task_id, runs) in DESIGNS.items():
            results[design] = {"task_id": task_id}
            for mode, dag_id in runs:
                print(f"  real Airflow: {tasks} generations, {design} {mode} ({dag_id}) ...", flush=True)
                mode_result = run_mode(
                    stack, dag_id, task_id, mode, tasks, sample=sample, timeout=timeout, control=control
                )
                results[design][mode] = mode_result.to_dict()
                print(
                    f"    {mode_result.state} in {mode_result.wall_s or 0:.0f} s; worker-slot seconds of "
                    f"{task_id}: {mode_result.slot_seconds_sampled:.0f} (sampled), "
                    f"{mode_result.slot_seconds_logs or 0:.0f} (logs), "
                    f"{mode_result.slot_seconds_waiting or 0:.0f} while its prediction ran",
                    flush=True,
                )
    finally:
        stack.stop()
    return results
