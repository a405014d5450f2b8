"""The main job: run the content pipeline DAG in a real Airflow deployment.

Starts the local WaveSpeed emulator (unless WAVESPEED_API_KEY is set: then the real API),
then an Airflow api-server, scheduler, dag-processor and triggerer, triggers exactly one run
of `wavespeed_content_pipeline`, shows the sensors deferred in the triggerer while the models
run, prints the gallery of the outputs (copied to .demo/output/<run>/) and stops every
process it started. When something fails it names the component and its log lines.

    python scripts/run_pipeline.py [--keep-running] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from airflow_stack import AirflowStack, reset_home

from airflow_provider_wavespeed.testing import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "wavespeed_content_pipeline"
HELD_POLLS = 5


def summarise(tis: list[dict]) -> str:
    by_task: dict[str, Counter[str]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], Counter())[ti["state"] or "none"] += 1
    return " | ".join(f"{task}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())) for task, c in by_task.items())


def start_one_run(stack: AirflowStack) -> str:
    """Trigger one run of the (paused) DAG, then unpause it; no scheduled run joins ours.

    The run takes the logical date the scheduler would give its next scheduled run: the
    scheduler sees that run exists and moves on to the next day instead of adding one.
    """
    dag = stack.wait_for_dag(DAG_ID, unpause=False)
    due = dag.get("next_dagrun_run_after")
    is_due = bool(due) and datetime.fromisoformat(due.replace("Z", "+00:00")) <= datetime.now(timezone.utc)
    logical_date = dag.get("next_dagrun_logical_date") if is_due else None
    run_id = stack.trigger(DAG_ID, logical_date=logical_date)
    stack.unpause(DAG_ID)
    return run_id


def race_failures(stack: AirflowStack, run_id: str) -> list[str]:
    """Task instances the scheduler failed as "finished, but the state is queued": Airflow's
    defer/resume race (apache/airflow#72716), which the sensor's retries recover from."""
    text = (stack.log_dir / "scheduler.log").read_text(errors="replace")
    found = re.findall(
        rf"reported that the task instance <TaskInstance: {DAG_ID}\.(\S+) {re.escape(run_id)}(?: map_index=(\d+))?",
        text,
    )
    return [f"{task}[{index or -1}]" for task, index in found]


def report_failure(stack: AirflowStack, run_id: str, home: Path) -> None:
    """Print the unfinished task instances with their log's last lines, and what the components logged."""
    for ti in stack.task_instances(DAG_ID, run_id):
        if ti["state"] == "success":
            continue
        print(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']}")
        folder = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
        if ti["map_index"] >= 0:
            folder = folder / f"map_index={ti['map_index']}"
        # attempt=N.log is the worker's log; attempt=N.log.trigger.M.log the triggerer's part.
        logs = sorted(folder.rglob("attempt=*.log"), key=lambda path: int(path.stem.split("=")[1]))
        if logs:
            tail = logs[-1].read_text(errors="replace").splitlines()[-8:]
            print(f"    last lines of {logs[-1]}:")
            print("\n".join(f"      {line[:300]}" for line in tail))
    print(f"What the Airflow components logged:\n{stack.diagnose()}")
    print(f"Component logs: {stack.log_dir}; task logs: {home / 'logs'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".demo" / "airflow-home")
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow up for the UI; Ctrl-C stops it")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    reset_home(args.home)
    output_dir = args.home.parent / "output"
    # The DAG is created paused so its own @daily schedule cannot start a second run before
    # ours exists (two runs would double the writes to SQLite); see start_one_run().
    env = {"WAVESPEED_OUTPUT_DIR": str(output_dir), "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    emulator = None
    if os.environ.get("WAVESPEED_API_KEY"):
        print("WAVESPEED_API_KEY is set: using the real WaveSpeed API (this costs credits)")
    else:
        key = secrets.token_urlsafe(24)
        emulator = EmulatorProcess(key, duration=(6.0, 14.0))  # the inference times the API reports
        # Each prediction stays `processing` until HELD_POLLS polls have seen it (the sensor's own
        # look, then the trigger's, 2 s apart), not for a wall-clock time: its sensor defers on
        # any machine, however late a loaded machine starts it.
        emulator.control.hold(polls=HELD_POLLS)
        print(
            f"WaveSpeed emulator on {emulator.url} (each prediction completes on its status poll "
            f"number {HELD_POLLS + 1}: about {2 * HELD_POLLS} s after its sensor defers to the triggerer)"
        )
        env["AIRFLOW_CONN_WAVESPEED_DEFAULT"] = json.dumps(
            {
                "conn_type": "wavespeed",
                "host": emulator.url,
                "password": key,
                "extra": {"max_submissions_per_minute": 3000},
            }
        )
    stack = AirflowStack(home=args.home, dags_folder=REPO / "example_dags", env=env, parallelism=8)
    ok = False
    try:
        print(f"Starting Airflow (api-server, scheduler, dag-processor, triggerer) in {args.home} ...")
        stack.start()
        run_id = start_one_run(stack)
        print(f"Triggered {DAG_ID} run {run_id}; UI: {stack.url}/dags/{DAG_ID}")
        started, last, max_deferred, state = time.monotonic(), "", 0, "queued"
        while time.monotonic() - started < args.timeout:
            state = stack.run_state(DAG_ID, run_id)
            tis = stack.task_instances(DAG_ID, run_id)
            deferred = sum(ti["state"] == "deferred" for ti in tis)
            max_deferred = max(max_deferred, deferred)
            line = summarise(tis)
            if line != last:
                print(f"  t={time.monotonic() - started:5.1f}s  {line}")
                last = line
            if state in ("success", "failed"):
                break
            time.sleep(1)
        print(f"Run {state}. Sensors seen deferred at once (waiting in the triggerer, no worker slot): {max_deferred}")
        fired = sum(
            text.count('"Trigger fired event"')
            for path, text in stack.logs_text()
            if ".log.trigger." in path.name and f"run_id={run_id}" in str(path)
        )
        print(f"The triggerer process fired {fired} WaveSpeedTaskTrigger event(s) (see the *.log.trigger.* task logs)")
        raced = race_failures(stack, run_id)
        if raced:
            print(f"Failed by Airflow's defer/resume race, then retried by the sensor's retries: {', '.join(raced)}")
        runs = stack.api("GET", f"dags/{DAG_ID}/dagRuns", params={"limit": 10})["dag_runs"]
        print(f"DAG runs of {DAG_ID}: {len(runs)} ({', '.join(r['dag_run_id'] for r in runs)})")
        if state == "success":
            gallery = Path(stack.xcom(DAG_ID, run_id, "write_manifest"))
            for entry in json.loads((gallery.parent / "manifest.json").read_text()):
                print(f"  {entry['prediction_id']}: {' '.join(entry['files'])}  <- {entry['prompt']!r}")
            print(f"Outputs and manifest.json in {gallery.parent}")
            print(f"Gallery: {gallery}  (open file://{gallery} in a browser)")
        else:
            report_failure(stack, run_id, args.home)
        ok = state == "success" and max_deferred > 0 and fired > 0 and len(runs) == 1
        if args.keep_running:
            print(f"Airflow UI: {stack.url} (no login needed). Press Ctrl-C to stop everything.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except Exception as exc:
        print(f"The main job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"What the Airflow components logged:\n{stack.diagnose()}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        if emulator is not None:
            emulator.stop()
        print("Stopped every process this run started.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
