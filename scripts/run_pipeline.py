"""The main job: run the content pipeline DAG in a real Airflow deployment.

Starts the local WaveSpeed emulator (unless WAVESPEED_API_KEY is set: then the real API),
then an Airflow api-server, scheduler, dag-processor and triggerer, triggers
`wavespeed_content_pipeline`, shows the sensors deferred in the triggerer while the models
run, prints the generated outputs and stops every process it started.

    python scripts/run_pipeline.py [--keep-running] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from airflow_stack import AirflowStack, reset_home

from airflow_provider_wavespeed.testing import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "wavespeed_content_pipeline"


def summarise(tis: list[dict]) -> str:
    by_task: dict[str, Counter[str]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], Counter())[ti["state"] or "none"] += 1
    return " | ".join(f"{task}: " + ", ".join(f"{n} {s}" for s, n in sorted(c.items())) for task, c in by_task.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=REPO / ".demo" / "airflow-home")
    parser.add_argument("--keep-running", action="store_true", help="leave Airflow up for the UI; Ctrl-C stops it")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    reset_home(args.home)
    output_dir = args.home.parent / "output"
    env = {"WAVESPEED_OUTPUT_DIR": str(output_dir)}
    emulator = None
    if os.environ.get("WAVESPEED_API_KEY"):
        print("WAVESPEED_API_KEY is set: using the real WaveSpeed API (this costs credits)")
    else:
        key = secrets.token_urlsafe(24)
        emulator = EmulatorProcess(key, duration=(6.0, 14.0))
        print(f"WaveSpeed emulator on {emulator.url} (predictions take 6-14 s)")
        env["AIRFLOW_CONN_WAVESPEED_DEFAULT"] = json.dumps(
            {"conn_type": "wavespeed", "host": emulator.url, "password": key, "extra": {"max_requests_per_second": 50}}
        )
    stack = AirflowStack(home=args.home, dags_folder=REPO / "example_dags", env=env, parallelism=8)
    ok = False
    try:
        print(f"Starting Airflow (api-server, scheduler, dag-processor, triggerer) in {args.home} ...")
        stack.start()
        stack.wait_for_dag(DAG_ID)
        run_id = stack.trigger(DAG_ID)
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
        if state == "success":
            manifest_path = stack.xcom(DAG_ID, run_id, "write_manifest")
            print(f"Manifest: {manifest_path}")
            for entry in json.loads(Path(manifest_path).read_text()):
                print(f"  {entry['prediction_id']}: {' '.join(map(str, entry['outputs']))}")
        else:
            for ti in stack.task_instances(DAG_ID, run_id):
                if ti["state"] != "success":
                    print(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']}")
            print(f"Component logs: {stack.log_dir}; task logs: {args.home / 'logs'}")
        ok = state == "success" and max_deferred > 0 and fired > 0
        if args.keep_running:
            print(f"Airflow UI: {stack.url} (no login needed). Press Ctrl-C to stop everything.")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()
        if emulator is not None:
            emulator.stop()
        print("Stopped every process this run started.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
