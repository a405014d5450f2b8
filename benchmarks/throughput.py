"""``python -m benchmarks throughput``: N generations through real Airflow against an account tier's limit.

A real deployment (``scripts/airflow_stack.py``: api-server, scheduler, dag-processor, one
triggerer; LocalExecutor; PostgreSQL when its server binaries are installed, as the deployment
tier starts it, else SQLite) runs the DAGs of ``benchmarks/dags/throughput/`` one run at a time
against the emulator at an account tier's preset (``--tier``): ``silver`` (500 starts a minute, 300
running at once) through a connection with the shipped defaults, or ``gold`` (3,000 and 3,000) or
``ultra`` (5,000 and 10,000) through a connection with the extra ``account_tier: gold`` (``ultra``),
what a user of that tier sets; at Gold and Ultra the batch tasks also write their full result to a
file (``manifest_path``, where the operator has it) and keep a small summary in XCom. Only the DAGs
of the designs asked for are built. The components import this provider from the checkout, compiled
to bytecode first as an installed package is (:func:`compile_sources`), whatever the calling
environment's ``PYTHONDONTWRITEBYTECODE``. Designs (``--designs``):

- ``mapped-sensor``: a mapped task group per generation, submit + deferrable ``WaveSpeedTaskSensor``;
- ``mapped-waiting-submit``: a mapped ``WaveSpeedSubmitOperator(wait_for_completion=True)``;
- ``batch-10-tasks``: ``WaveSpeedBatchOperator`` mapped over 10 slices of the inputs;
- ``batch-1-task``: one ``WaveSpeedBatchOperator`` for every input;
- ``floor-sensor`` and ``floor-waiting-submit``: Airflow's floor for the two mapped designs, the
  same shapes with no WaveSpeed code (``benchmarks/dags/throughput/airflow_floor.py``): an ``@task``
  returning a string then an operator deferring to Airflow's ``DateTimeTrigger`` for the prediction
  time and resuming in a worker; or that operator alone, mapped.

Per design: the wall time from the DAG run's start to its end (Airflow's ``start_date`` and
``end_date``); the **limit** from the emulator's own rules (:func:`limit_seconds`, with the tier
the running emulator reports); their ratio; for a mapped design whose floor ran in the same run,
its wall time over the floor's (**floor ratio**, the figure issue 34 asks to keep <= 1); worker
runs and worker-slot seconds per generation (task logs, :func:`benchmarks.airflow_run.worker_runs`);
API requests per generation (the emulator's counters); the api-server's execution-API requests per
generation, by kind (its access log, :func:`benchmarks.throughput_figures.execution_api_calls`: every
request of the run's tasks and triggers); the most submissions accepted in any 60 s and the 429s;
CPU seconds of the scheduler, the dag-processor, the api-server, the triggerer and the task
processes; the peak resident memory of the largest task process and of the largest triggerer process
(sampled every 2 s); the triggerer's event-loop lag (max, p99: a probe trigger in the real triggerer,
:mod:`benchmarks.loop_probe`); metadata database bytes written per generation (PostgreSQL WAL;
:mod:`benchmarks.throughput_figures`); every task's final state; and that every input got exactly
one prediction (the emulator's submission log). One line per design,
``throughput <design>: <N> generations in <wall> s (limit <limit> s, ratio <x>); ...``; the run's
block goes into ``docs/benchmarks.md`` between the throughput markers, replacing the rows of the
same tier and designs only (:func:`benchmarks.throughput_report.splice_throughput`), the rest of
the file untouched. Exit code 1 when a design's run did not succeed.

A floor design submits nothing, so no tier rule bounds it: its limit and ratio are ``-`` and its
check is that the emulator got no submission at all. Its wall time is the bound that matters for
the design beside it, the least Airflow itself takes for that shape at this N on this machine: the
mapped designs' own limit (44 s at N = 200 on Silver) is far below what Airflow's scheduling of 2N
mapped task instances on 8 slots allows (the floors take minutes), so their limit ratio cannot say
whether our code or Airflow is slow; the floor ratio can. Compare a pair only under a similar
**other load** (its column): the machine's other work slows either. The dag-processor parses every
DAG file of the folder throughout the run, the floor's and ours, so its CPU in one design's run is
not that design's alone.

``--smoke``: N = 50, 5 s predictions, every design in one deployment, the report written to a
temporary copy of ``docs/benchmarks.md``; nothing is asserted about the figures. The floors wait
:data:`SMOKE_FLOOR_WAIT` s there: Airflow's scheduler fails a task resumed within seconds of its
deferral (apache/airflow#72716), and with 5 s waits on a busy 2-core machine it did so to some floor
waits three tries in a row (ours end their waits in the triggerer, which that race does not reach);
so a smoke run's floor ratios mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess
from benchmarks import machine, throughput_report
from benchmarks.airflow_run import _stack_cpu, _ts, worker_runs
from benchmarks.throughput_figures import (
    LoopProbe,
    current_lsn,
    execution_api_calls,
    most_in_60s,
    per_generation,
    wal_bytes,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from airflow_stack import AirflowStack, free_port, reset_home  # noqa: E402

DAGS = REPO / "benchmarks" / "dags" / "throughput"
TIERS = ("silver", "gold", "ultra")
PROMPT = "throughput image {}"  # as in the DAGs: the emulator's log maps each submission to its input


@dataclass(frozen=True)
class Design:
    dag_id: str
    what: str
    floor: str | None = None  # the floor design of the same shape (no WaveSpeed code)
    submits: bool = True  # a floor submits nothing


DESIGNS = {
    "mapped-sensor": Design(
        "wavespeed_throughput_sensor", "mapped submit + deferrable `WaveSpeedTaskSensor`", floor="floor-sensor"
    ),
    "mapped-waiting-submit": Design(
        "wavespeed_throughput_waiting_submit",
        "mapped `WaveSpeedSubmitOperator(wait_for_completion=True)`",
        floor="floor-waiting-submit",
    ),
    "batch-10-tasks": Design("wavespeed_throughput_batch_10", "`WaveSpeedBatchOperator` mapped over 10 slices"),
    "batch-1-task": Design("wavespeed_throughput_batch_1", "one `WaveSpeedBatchOperator`"),
    "floor-sensor": Design(
        "wavespeed_throughput_floor_sensor",
        "Airflow's floor: mapped `@task` + operator deferring to `DateTimeTrigger`, resumed in a worker",
        submits=False,
    ),
    "floor-waiting-submit": Design(
        "wavespeed_throughput_floor_waiting_submit",
        "Airflow's floor: mapped operator deferring to `DateTimeTrigger`, resumed in a worker",
        submits=False,
    ),
}
# 8 worker slots on 2 cores, as the fan-out benchmark (benchmarks/run.py): more concurrent task
# processes stretch every run's start-up (DAG parse 0.2 s -> 2 s) instead of adding throughput.
PARALLELISM = 8
SMOKE_FLOOR_WAIT = 20.0  # see the module docstring


def limit_seconds(
    n: int, *, starts_per_minute: int | None, concurrency: int | None, duration: float, burst: bool = False
) -> float:
    """When the last of ``n`` generations ends at best, by the emulator's rules.

    Submission ``i`` arrives at ``i`` times the tier's start interval (60 s / starts per minute)
    from t = 0; it starts at once under the concurrency cap, else when the earliest running one
    ends (first come, first served, as the emulator queues them); each runs ``duration`` s.
    No start limit: all arrive at t = 0. No cap: none waits.

    ``burst``: arrivals as early as the emulator's sliding 60 s window admits them instead of
    at an even pace (a whole minute's starts at t = 0, the next minute's at 60 s...): the bound
    for clients that together send faster than the tier's pace.
    """
    if n <= 0:
        return 0.0
    running: list[float] = []  # end times of the predictions holding a slot
    start = end = 0.0
    for index in range(n):
        if not starts_per_minute:
            arrival = 0.0
        elif burst:
            arrival = index // starts_per_minute * 60.0
        else:
            arrival = index * 60.0 / starts_per_minute
        start = max(start, arrival)  # first come, first served: never before the one ahead
        while running and running[0] <= start:
            heapq.heappop(running)
        if concurrency is not None and len(running) >= concurrency:
            start = max(start, heapq.heappop(running))
        heapq.heappush(running, start + duration)
        end = max(end, start + duration)
    return end


def _component_cpu(stack: AirflowStack, emulator: psutil.Process) -> dict[str, float]:
    """CPU seconds so far: the scheduler's own process, the task processes under it (LocalExecutor
    workers, supervisors, tasks), the triggerer (with its trigger runner), the other components."""
    groups = stack.cpu_seconds()
    used: dict[str, float] = {}
    scheduler = stack.processes.get("scheduler")
    own = 0.0
    if scheduler is not None:
        try:
            times = psutil.Process(scheduler.pid).cpu_times()
            own = times.user + times.system
        except psutil.Error:
            pass
    used["scheduler"] = own
    used["tasks"] = groups.get("scheduler", 0.0) - own
    used["triggerer"] = sum(seconds for name, seconds in groups.items() if name.startswith("triggerer"))
    used["dag-processor"] = groups.get("dag-processor", 0.0)
    used["api-server"] = groups.get("api-server", 0.0)
    try:
        times = emulator.cpu_times()
        used["emulator"] = times.user + times.system
    except psutil.Error:
        used["emulator"] = 0.0
    return used


def _largest_rss(stack: AirflowStack) -> dict[str, int]:
    """Resident memory now (bytes) of the largest task process (any under the scheduler: LocalExecutor
    workers, task supervisors, tasks) and of the largest triggerer process (its own or its trigger runner)."""
    largest = {"tasks": 0, "triggerer": 0}
    for name, process in list(stack.processes.items()):
        group = "tasks" if name == "scheduler" else "triggerer" if name.startswith("triggerer") else None
        if group is None:
            continue
        try:
            root = psutil.Process(process.pid)
            members = root.children(recursive=True) + ([] if group == "tasks" else [root])
        except psutil.Error:
            continue
        for member in members:
            with contextlib.suppress(psutil.Error):  # it ended meanwhile
                largest[group] = max(largest[group], member.memory_info().rss)
    return largest


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in after}


def compile_sources() -> None:
    """Compile the repository's modules to bytecode, as ``pip install`` does for an installed package.

    The deployment imports this provider from the checkout (``PYTHONPATH``): without bytecode every
    task process and every parse of a DAG file would compile its modules from source first (~0.05 s
    of CPU each), which Airflow's own modules (installed, compiled) do not pay, nor would a user's.
    """
    import compileall

    for folder in ("airflow_provider_wavespeed", "benchmarks"):
        compileall.compile_dir(REPO / folder, quiet=1)


def connection_extra(tier: str) -> dict[str, str]:
    """The connection's extra at ``tier``: Silver the shipped defaults (no tier: the Silver rate),
    Gold and Ultra ``account_tier: gold`` (``ultra``), as a user of that tier sets it."""
    return {} if tier == "silver" else {"account_tier": tier}


def _one_prediction_each(submissions: list[dict[str, Any]], n: int, *, expected: bool = True) -> dict[str, Any]:
    """How many predictions each input got, from the emulator's submission log (since its reset).

    ``expected=False`` (a floor design): none should have any; ``ok`` when the log is empty.
    """
    if not expected:
        return {"ok": not submissions, "expected": False, "submissions": len(submissions)}
    per_input: Counter[int] = Counter()
    others = 0
    for entry in submissions:
        prompt = str(entry.get("inputs", {}).get("prompt", ""))
        head, _, number = prompt.rpartition(" ")
        if head == PROMPT.format("").strip() and number.isdigit() and int(number) < n:
            per_input[int(number)] += 1
        else:
            others += 1
    twice = sorted(index for index, count in per_input.items() if count > 1)
    missing = [index for index in range(n) if index not in per_input]
    return {
        "ok": not twice and not missing and not others,
        "submissions": sum(per_input.values()) + others,
        "submitted_twice": twice[:20],
        "missing": missing[:20],
        "missing_count": len(missing),
        "other_submissions": others,
    }


def run_design(
    stack: AirflowStack,
    control: EmulatorControl,
    emulator: psutil.Process,
    name: str,
    *,
    n: int,
    duration: float,
    timeout: float,
    cluster: Any = None,
    probe_dir: Path | None = None,
) -> dict[str, Any]:
    """One DAG run of a design, from a freshly reset emulator; every figure it could gather, also on failure.

    With ``probe_dir`` the loop-lag probe runs in the triggerer from before the run until after it;
    with ``cluster`` (PostgreSQL) the WAL written meanwhile is counted."""
    design = DESIGNS[name]
    result: dict[str, Any] = {"design": name, "dag_id": design.dag_id, "what": design.what, "n": n, "state": "not run"}
    result.update(is_floor=not design.submits, floor=design.floor)
    probe = None
    try:
        control.reset()  # the tier's windows and queue, the counters, the submission log: this design's only
        # The emulator's account starts with 100 USD (33,333 generations of flux-dev): 1 USD per generation
        # covers any model, so the balance never ends a run (a 100,000-generation one stopped at 33,333).
        control.set_balance(float(n))
        tier = control.counters()["tier"] or {}
        result["tier"] = {key: tier.get(key) for key in ("name", "starts_per_minute", "concurrency")}
        limits: dict[str, Any] = {
            "starts_per_minute": tier.get("starts_per_minute"),
            "concurrency": tier.get("concurrency"),
        }
        if design.submits:  # a floor submits nothing: no tier rule bounds it
            result["limit_s"] = round(limit_seconds(n, **limits, duration=duration), 2)
            result["burst_limit_s"] = round(limit_seconds(n, **limits, duration=duration, burst=True), 2)
        stack.wait_for_dag(design.dag_id)
        if probe_dir is not None:
            try:
                probe = LoopProbe(stack, probe_dir)
                probe.start()
            except Exception as exc:  # the design still runs; its row says the lag is missing and why
                result["loop_lag"] = {"error": f"{type(exc).__name__}: {exc}"}
        cpu_before, stack_before = _component_cpu(stack, emulator), _stack_cpu(stack)
        busy_before, total_before = machine.busy_jiffies()
        lsn_before = current_lsn(cluster)
        run_id = stack.trigger(design.dag_id)
        result["run_id"] = run_id
        started = time.monotonic()
        state = "queued"
        peak_rss = {"tasks": 0, "triggerer": 0}
        while time.monotonic() - started < timeout:
            # Sampled every 2 s: a task process that lives less can peak unseen; the batch tasks live minutes.
            rss = _largest_rss(stack)
            peak_rss = {group: max(peak, rss[group]) for group, peak in peak_rss.items()}
            state = stack.run_state(design.dag_id, run_id)
            if state in ("success", "failed"):
                break
            time.sleep(2.0)
        else:
            result["error"] = f"the run did not end within {timeout:g} s; marked failed"
            stack.api("PATCH", f"dags/{design.dag_id}/dagRuns/{run_id}", json={"state": "failed"})
            state = "timed out"
        result["state"] = state
        result["peak_rss_mb"] = {group: round(peak / 2**20, 1) for group, peak in peak_rss.items()}
        observed = time.monotonic() - started
        lsn_after = current_lsn(cluster)
        if lsn_before is not None and lsn_after is not None:
            result["wal_bytes"] = wal_bytes(lsn_before, lsn_after)
            result["wal_bytes_per_generation"] = per_generation(result["wal_bytes"], n)
        cpu_after, stack_after = _component_cpu(stack, emulator), _stack_cpu(stack)
        busy_after, total_after = machine.busy_jiffies()
        result["cpu_s"] = _diff(cpu_after, cpu_before)
        cores = os.cpu_count() or 1
        machine_busy = (busy_after - busy_before) / max(1, total_after - total_before) * observed * cores
        ours = stack_after - stack_before + result["cpu_s"]["emulator"]
        result["other_load_cores"] = round(max(0.0, machine_busy - ours) / observed, 2)
        run = stack.api("GET", f"dags/{design.dag_id}/dagRuns/{run_id}")
        begin, end = _ts(run.get("start_date")), _ts(run.get("end_date"))
        result["wall_s"] = round(end - begin, 1) if begin and end else None
        if state == "success" and result["wall_s"] and result.get("limit_s"):  # a failed run's time is no figure
            result["ratio"] = round(result["wall_s"] / result["limit_s"], 2)
        states: dict[str, Counter[str]] = {}
        task_instances = stack.task_instances(design.dag_id, run_id)
        for ti in task_instances:
            states.setdefault(ti["task_id"], Counter())[str(ti["state"])] += 1
        result["task_states"] = {task: dict(counts) for task, counts in states.items()}
        never_started = sum(1 for ti in task_instances if ti["state"] == "failed" and not ti.get("start_date"))
        if never_started:  # e.g. queued past [scheduler] task_queued_timeout: Airflow 3.3 refuses its expired token
            never = f"{never_started} task instance(s) failed without ever starting (no start date)"
            result["error"] = "; ".join(filter(None, [result.get("error"), never]))  # a timeout's too
        calls = execution_api_calls(
            (stack.log_dir / "api-server.log").read_text(errors="replace"),
            dag_id=design.dag_id,
            run_id=run_id,
            ti_ids={str(ti["id"]) for ti in task_instances if ti.get("id")},
        )
        result["execution_api_calls"] = sum(calls.values())
        result["execution_api_calls_per_generation"] = round(sum(calls.values()) / n, 2)
        result["execution_api_calls_by_kind"] = {
            kind: round(count / n, 2) for kind, count in sorted(calls.items(), key=lambda item: -item[1])
        }
        runs = worker_runs(stack.home, design.dag_id, run_id)
        spans = [span for per_task in runs.values() for span in per_task]
        result["worker_runs"] = len(spans)
        result["worker_slot_s"] = round(sum(end - start for start, end in spans), 1)
        result["worker_runs_per_generation"] = round(len(spans) / n, 3)
        result["worker_slot_s_per_generation"] = round(result["worker_slot_s"] / n, 3)
        counters = control.counters()
        result["api_requests"] = counters["requests"]
        result["api_requests_total"] = counters["total_requests"]
        result["api_requests_per_generation"] = round(counters["total_requests"] / n, 2)
        result["rate_limited"] = sum(counters["rate_limited"].values())
        result["tier_counts"] = {key: (counters["tier"] or {}).get(key) for key in ("queued_total", "max_queued")}
        submissions = control.submissions()
        result["most_in_60s"] = most_in_60s(submissions)
        result["predictions"] = _one_prediction_each(submissions, n, expected=design.submits)
        if probe_dir is not None and (probe_dir.parent.parent / "manifests").is_dir():
            result["manifests_written"] = len(list((probe_dir.parent.parent / "manifests").glob(f"{run_id}-*.json")))
    except Exception as exc:  # the other designs still run; the report says what went wrong here
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        if probe is not None and probe.run_id is not None:
            try:
                result["loop_lag"] = probe.stop()
            except Exception as exc:
                result["loop_lag"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def succeeded(result: dict[str, Any]) -> bool:
    """The run succeeded, every task instance too, and every input got exactly one prediction (a floor: none)."""
    return (
        result.get("state") == "success"
        and not result.get("error")
        and all(set(counts) == {"success"} for counts in (result.get("task_states") or {"": {}}).values())
        and bool((result.get("predictions") or {}).get("ok"))
    )


def add_floor_ratios(designs: list[dict[str, Any]]) -> None:
    """Set ``floor_ratio`` (wall time / the floor's) on each design whose floor succeeded in the same run."""
    walls = {r["design"]: r.get("wall_s") for r in designs if succeeded(r)}
    for r in designs:
        floor = DESIGNS[r["design"]].floor if r["design"] in DESIGNS else None
        if floor and walls.get(floor) and r["design"] in walls and r.get("wall_s"):
            r["floor_ratio"] = round(r["wall_s"] / walls[floor], 2)


def _num(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


CPU_COMPONENTS = ("scheduler", "dag-processor", "api-server", "triggerer", "tasks")


def _cpu(cpu: dict[str, float] | None) -> str:
    return (
        " / ".join(_num((cpu or {}).get(name), ".1f") for name in CPU_COMPONENTS)
        + " ("
        + "/".join(CPU_COMPONENTS)
        + ")"
    )


def line(result: dict[str, Any]) -> str:
    lag, tier, rss = result.get("loop_lag") or {}, result.get("tier") or {}, result.get("peak_rss_mb") or {}
    text = (
        f"throughput {result['design']}: {result['n']} generations in {_num(result.get('wall_s'), '.1f')} s "
        f"(limit {_num(result.get('limit_s'), '.1f')} s, ratio {_num(result.get('ratio'), '.2f')}, "
        f"floor ratio {_num(result.get('floor_ratio'), '.2f')}); "
        f"execution API {_num(result.get('execution_api_calls_per_generation'), '.2f')} calls/generation, "
        f"CPU s {_cpu(result.get('cpu_s'))}; "
        f"peak RSS MB {_num(rss.get('tasks'), '.0f')} / {_num(rss.get('triggerer'), '.0f')} (task process/triggerer), "
        f"loop lag max {_num(lag.get('max_ms'), '.0f')} ms, "
        f"WAL {_num(result.get('wal_bytes_per_generation'), ',.0f')} B/generation, "
        f"most in 60 s {_num(result.get('most_in_60s'), 'd')}/{_num(tier.get('starts_per_minute'), 'd')}, "
        f"429s {_num(result.get('rate_limited'), 'd')}"
    )
    return text if succeeded(result) else f"{text} [{result.get('state')}: {result.get('error') or 'see the table'}]"


def _database(choice: str) -> tuple[Any, str]:
    """(a started PostgresCluster or None, the database's description)."""
    if choice == "sqlite":
        return None, "SQLite (--database sqlite)"
    sys.path.insert(0, str(REPO / "tests" / "deployment"))  # the deployment tier's throwaway PostgreSQL
    from deployment_postgres import PostgresCluster, find_bin_dir

    why = ""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        why = "no PostgreSQL server binaries (initdb, pg_ctl)"
    else:
        try:
            import asyncpg  # noqa: F401  # the deployment extra's drivers
            import psycopg2  # noqa: F401

            cluster = PostgresCluster(bin_dir, free_port()).start()
            answer = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True).stdout
            version = re.search(r"\(PostgreSQL\) (\S+)", answer)  # "postgres (PostgreSQL) 15.18 (Debian ...)"
            return cluster, f"PostgreSQL {version.group(1) if version else bin_dir.parent.name}"
        except Exception as exc:  # a missing driver, no postgres OS user under root...
            why = f"{type(exc).__name__}: {exc}"
    if choice == "postgres":
        raise SystemExit(f"--database postgres: PostgreSQL not available ({why}); see scripts/install-system-deps.sh")
    print(f"PostgreSQL not available ({why}); falling back to SQLite", flush=True)
    return None, f"SQLite (PostgreSQL not available: {why})"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="N=50, 5 s predictions, report to a temporary file")
    parser.add_argument("--tier", choices=TIERS, default="silver", help="the emulator's preset (default silver)")
    parser.add_argument("--n", type=int, help="generations per design (default 1000; smoke 50)")
    parser.add_argument(
        "--designs",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=list(DESIGNS),
        help=f"comma-separated, in this order (default all): {','.join(DESIGNS)}",
    )
    parser.add_argument("--duration", type=float, help="prediction run time in s (default 20; smoke 5)")
    parser.add_argument("--parallelism", type=int, default=PARALLELISM, help="LocalExecutor worker slots (default 8)")
    parser.add_argument("--timeout", type=float, help="per design, s (default 3600; smoke 600); then marked failed")
    parser.add_argument("--database", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--output", type=Path, help="default docs/benchmarks.md (smoke: a temporary copy of it)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here (after every design)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.designs if name not in DESIGNS]
    if unknown or not args.designs:
        parser.error(f"--designs: unknown {unknown}; choose from {','.join(DESIGNS)}")
    n = args.n or (50 if args.smoke else 1000)
    duration = args.duration or (5.0 if args.smoke else 20.0)
    timeout = args.timeout or (600.0 if args.smoke else 3600.0)
    work = Path(tempfile.mkdtemp(prefix="wavespeed-throughput-"))
    output = args.output or (work / "benchmarks.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    if args.smoke and args.output is None and (REPO / "docs" / "benchmarks.md").exists():
        shutil.copy(REPO / "docs" / "benchmarks.md", output)  # so the smoke run splices as the real one does
    command = "python -m benchmarks throughput " + " ".join(argv if argv is not None else sys.argv[2:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "smoke": args.smoke,
        "machine": machine.describe(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _commit(),
        "n": n,
        "duration_s": duration,
        "parallelism": args.parallelism,
        "executor": "LocalExecutor",
        "tier": args.tier,
        "connection": connection_extra(args.tier),
        # At Gold and Ultra the batch tasks write their full result to a file (a small XCom at 10,000 inputs),
        # where the operator has the parameter.
        "manifests": args.tier != "silver" and "manifest_path" in WaveSpeedBatchOperator.template_fields,
        "bytecode": True,  # compile_sources(): the provider's modules as an installed package has them
        "designs": [],
    }
    print(f"Machine: {results['machine']}", flush=True)

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))

    api_key = secrets.token_urlsafe(24)
    begun = time.monotonic()
    cluster, results["database"] = _database(args.database)
    emulator = EmulatorProcess(api_key, duration=duration, tier=args.tier)
    stack: AirflowStack | None = None
    try:
        home = work / "airflow-home"
        reset_home(home)
        connection = {"conn_type": "wavespeed", "host": emulator.url, "password": api_key}
        if results["connection"]:
            connection["extra"] = results["connection"]
        env = {
            "AIRFLOW_CONN_WAVESPEED_DEFAULT": json.dumps(connection),
            "WAVESPEED_API_KEY": "",  # only the connection supplies a key
            "WAVESPEED_THROUGHPUT_N": str(n),
            # The floor designs' wait.
            "WAVESPEED_THROUGHPUT_DURATION": str(max(duration, SMOKE_FLOOR_WAIT) if args.smoke else duration),
            "WAVESPEED_THROUGHPUT_DAGS": ",".join(DESIGNS[name].dag_id for name in args.designs),
            "AIRFLOW__TRIGGERER__CAPACITY": str(max(1000, n)),
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, n)),
            # The loop-lag probe's trigger is imported by the triggerer from benchmarks/ (and its DAG too).
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
            # Bytecode as an installed package has it (see compile_sources): an environment that turns
            # it off would have every task process compile this provider's modules from source.
            "PYTHONDONTWRITEBYTECODE": "",
        }
        compile_sources()
        if results["manifests"]:
            (work / "manifests").mkdir(parents=True, exist_ok=True)
            env["WAVESPEED_THROUGHPUT_MANIFESTS"] = str(work / "manifests")
        stack = AirflowStack(
            home=home,
            dags_folder=DAGS,
            sql_alchemy_conn=cluster.url if cluster else None,
            parallelism=args.parallelism,
            env=env,
        )
        print(f"Starting Airflow ({results['database']}, {args.parallelism} worker slots) ...", flush=True)
        stack.start()
        results["stack_start_s"] = round(time.monotonic() - begun, 1)
        print(f"Emulator at the {args.tier} preset, {duration:g} s predictions; {n} generations per design", flush=True)
        for name in args.designs:
            print(f"  {name} ({DESIGNS[name].dag_id}) ...", flush=True)
            result = run_design(
                stack,
                emulator.control,
                psutil.Process(emulator.pid),
                name,
                n=n,
                duration=duration,
                timeout=timeout,
                cluster=cluster,
                probe_dir=work / "probe" / name,
            )
            results["designs"].append(result)
            add_floor_ratios(results["designs"])
            save()
            print(line(result), flush=True)
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(f"throughput: {results['error']}", file=sys.stderr, flush=True)
        if stack is not None:
            print(stack.diagnose(), file=sys.stderr, flush=True)
    finally:
        if stack is not None:
            stack.stop()
        emulator.stop(timeout=15)
        if cluster is not None:
            cluster.stop()
    results["wall_s"] = round(time.monotonic() - begun, 1)
    save()
    if results["designs"]:
        output.parent.mkdir(parents=True, exist_ok=True)
        previous = output.read_text() if output.exists() else ""
        output.write_text(throughput_report.splice_throughput(previous, results))
        print(f"Written to {output} (work files in {work})", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    for r in results["designs"]:
        if r.get("floor_ratio") is not None:
            print(f"throughput {r['design']}: {r['floor_ratio']:.2f}x the wall time of {r['floor']}", flush=True)
    failed = [r["design"] for r in results["designs"] if not succeeded(r)]
    if failed or results.get("error") or len(results["designs"]) < len(args.designs):
        print(f"throughput: did not succeed: {failed or results.get('error')}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
