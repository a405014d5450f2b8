"""The benchmark suite: ``python -m benchmarks`` (all of it) or ``python -m benchmarks --smoke``.

1. Trigger scale: N WaveSpeedTaskTriggers (and the baselines) in Airflow's TriggerRunner,
   each run in a fresh process (``benchmarks/scale.py``), against the emulator in another
   process, predictions finishing at random times over 30-60 s. At every N the shipped
   aiohttp stack runs next to the hand-written keep-alive transport it replaced
   (``benchmarks/legacy_transport.py``), and the report checks issue 12's bound: at most
   1.2x the old transport's CPU per poll.
2. The polling-policy table, by simulation (``benchmarks/policy.py``).
3. Submission pacing: N submits through a connection with the shipped defaults, against the
   emulator at the Silver preset (``benchmarks/submissions.py``).
4. Real Airflow: mapped generations, deferrable vs ``mode="poke"`` (``benchmarks/airflow_run.py``).

Figures are printed and written to ``docs/benchmarks.md`` (``--output``). ``--smoke`` runs a
small version (N = 200, 3-8 s predictions, 50 paced submissions, no real-Airflow part) that checks the suite still
works; it asserts nothing about the numbers and writes its report to a temporary directory.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from airflow_provider_wavespeed.testing import EmulatorProcess
from benchmarks import machine, policy, report

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("new-client", "threaded-requests")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scale_run(
    variant: str,
    n: int,
    *,
    url: str,
    env: dict[str, str],
    emulator: psutil.Process,
    work: Path,
    duration: tuple[float, float],
) -> dict[str, Any]:
    """One variant at one N in a fresh process; adds what is seen from outside it."""
    out = work / f"scale-{variant}-{n}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--variant",
        variant,
        "--n",
        str(n),
        "--emulator",
        url,
        "--duration",
        str(duration[0]),
        str(duration[1]),
        "--max-wait",
        str(duration[1] + 180),
        "--rate",
        "0",
        "--log-file",
        str(work / f"scale-{variant}-{n}.log"),
        "--out",
        str(out),
    ]
    port = int(url.rsplit(":", 1)[1])
    emulator_cpu, children_cpu, self_cpu = _cpu(emulator), _children_cpu(), _self_cpu()
    busy, total = machine.busy_jiffies()
    load_before = machine.load_average()
    started = time.monotonic()
    worker = subprocess.Popen(command, cwd=REPO, env=env)
    window = out.with_suffix(".window")  # exists while the triggers run (not while submitting)
    peak_open = 0
    try:
        watched = psutil.Process(worker.pid)
        while worker.poll() is None:
            if not window.exists():
                time.sleep(0.2)
                continue
            try:
                open_now = sum(
                    1
                    for conn in watched.net_connections(kind="tcp")
                    if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
                )
                peak_open = max(peak_open, open_now)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            time.sleep(1.0)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
    wall = time.monotonic() - started
    busy_after, total_after = machine.busy_jiffies()
    cores = psutil.cpu_count() or 1
    machine_busy_s = (busy_after - busy) / max(1, total_after - total) * wall * cores
    ours = (_children_cpu() - children_cpu) + (_cpu(emulator) - emulator_cpu) + (_self_cpu() - self_cpu)
    if not out.exists():
        return {"variant": variant, "n": n, "error": f"the run failed (exit code {worker.returncode})"}
    result: dict[str, Any] = json.loads(out.read_text())
    result.update(
        {
            "exit_code": worker.returncode,
            "peak_open_connections": peak_open,
            "emulator_cpu_s": _cpu(emulator) - emulator_cpu,
            "process_wall_s": wall,
            "other_load_cores": max(0.0, machine_busy_s - ours) / wall,
            "load_average_before": load_before,
            "load_average_after": machine.load_average(),
        }
    )
    return result


def submissions_run(n: int, *, env: dict[str, str], work: Path) -> dict[str, Any]:
    """N submits from one process's threads, against a fresh emulator at the Silver preset."""
    out = work / f"submissions-{n}.json"
    with EmulatorProcess(env["WAVESPEED_BENCH_KEY"], duration=(1.0, 2.0), tier="silver") as emulator:
        command = [sys.executable, "-m", "benchmarks.submissions", "--n", str(n), "--emulator", emulator.url]
        completed = subprocess.run([*command, "--out", str(out)], env=env, cwd=REPO, check=False)
    if not out.exists():
        return {"n": n, "error": f"exit code {completed.returncode}, no result"}
    return dict(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="N=200, short predictions, no real Airflow (for CI)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="default 100,1000,5000")
    parser.add_argument("--no-airflow", action="store_true", help="skip the real-Airflow part")
    parser.add_argument("--airflow-tasks", type=int, default=200)
    # 8 worker slots on this 2-core machine: 16 concurrent task processes time-slice every
    # run's start-up (DAG parse 0.2 s -> 2 s) and charge that to the mode with more runs.
    parser.add_argument("--airflow-parallelism", type=int, default=8)
    parser.add_argument("--output", type=Path, help="default docs/benchmarks.md (smoke: a temporary file)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)

    sizes = args.sizes or ([200] if args.smoke else [100, 1000, 5000])
    duration = (3.0, 8.0) if args.smoke else (30.0, 60.0)
    work = Path(tempfile.mkdtemp(prefix="wavespeed-benchmarks-"))
    output = args.output or (work / "benchmarks-smoke.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    command = "python -m benchmarks" + (" --smoke" if args.smoke else "")
    results: dict[str, Any] = {
        "command": command,
        "smoke": args.smoke,
        "machine": machine.describe(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "duration_range_s": duration,
        "scale": [],
    }
    print(f"Machine: {results['machine']}", flush=True)
    api_key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "WAVESPEED_BENCH_KEY": api_key,
        "AIRFLOW_HOME": str(work / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    emulator_process = EmulatorProcess(api_key, duration=duration)
    url = emulator_process.url
    emulator = psutil.Process(emulator_process.pid)
    print(f"Emulator (separate process) on {url}; predictions take {duration[0]:g}-{duration[1]:g} s", flush=True)
    begun = time.monotonic()
    try:
        for n in sizes:
            # The shipped stack and the old transport at every N, back to back (issue 12's bound).
            variants = ["shared", "shared-keepalive-transport", *BASELINES]
            if n == max(sizes):
                variants += ["shared-httpx-pool", "sleep-reference", "shared-gc-freeze"]
            for variant in variants:
                print(f"Trigger scale: N={n} {variant} ...", flush=True)
                result = scale_run(variant, n, url=url, env=env, emulator=emulator, work=work, duration=duration)
                results["scale"].append(result)
                print("  " + report.one_line(result), flush=True)
        submissions = 50 if args.smoke else 1000
        print(f"Submission pacing: N={submissions} at the Silver preset ...", flush=True)
        results["submissions"] = submissions_run(submissions, env=env, work=work)
        print("  " + report.submissions_line(results["submissions"]), flush=True)
        results["policy"] = policy.table()
        if not (args.smoke or args.no_airflow):
            from benchmarks import airflow_run

            results["airflow"] = airflow_run.run(
                home=work / "airflow-deployment",
                emulator_url=url,
                api_key=api_key,
                tasks=args.airflow_tasks,
                parallelism=args.airflow_parallelism,
                duration=20.0,
                control=emulator_process.control,
            )
    finally:
        emulator_process.stop(timeout=15)
    results["suite_wall_s"] = time.monotonic() - begun
    if args.json:  # first, so a long run's figures survive a failure to render them
        args.json.write_text(json.dumps(results, indent=2, default=str))
    text = report.render(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    print(f"Written to {output} (work files in {work})")
    failed = [r for r in results["scale"] if r.get("error")]
    return 1 if failed or results["submissions"].get("error") or results["submissions"].get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
