"""Submission pacing against an account tier, in its own process.

``python -m benchmarks.submissions --n 1000 --emulator URL --out result.json`` (started by
``python -m benchmarks`` with the emulator at the Silver preset: 500 starts/min, 300 at once).

What users get: a connection with the shipped defaults (no budget in its extra), and
:meth:`WaveSpeedHook.submit` called from ``--threads`` threads of one process, as a worker
that submits many generations does. Measured: wall time, the busiest 60 s of accepted starts
(from the emulator's own submission log), the 429s the tier answered, and submits that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CONN_ID = "wavespeed_bench_submit"
FLUX = "wavespeed-ai/flux-dev"


def busiest_window(times: list[float], window: float = 60.0) -> int:
    """The most events in any ``window`` seconds (two pointers over sorted times)."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--emulator", required=True, help="the emulator's base URL")
    parser.add_argument("--api-key-env", default="WAVESPEED_BENCH_KEY")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "wavespeed", "host": args.emulator, "password": os.environ[args.api_key_env]}
    )
    # Imported here: the connection above must be in the environment first.
    from airflow_provider_wavespeed.api.errors import WaveSpeedError
    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
    from airflow_provider_wavespeed.testing import EmulatorControl

    control = EmulatorControl(args.emulator)
    control.reset()
    hook = WaveSpeedHook(CONN_ID)
    budget = hook.get_credentials().max_submissions_per_minute
    failures: list[str] = []

    def one(index: int) -> None:
        try:
            hook.submit(FLUX, {"prompt": f"pacing benchmark {index}"})
        except WaveSpeedError as exc:
            failures.append(f"{index}: {exc}")

    started = time.time()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(one, range(args.n)))
    wall = time.time() - started
    counters = control.counters()
    accepted = [float(s["submitted_at"]) for s in control.submissions()]
    tier = counters.get("tier") or {}
    result: dict[str, Any] = {
        "n": args.n,
        "threads": args.threads,
        "budget_per_minute": budget,
        "tier": {k: tier.get(k) for k in ("name", "starts_per_minute", "concurrency")},
        "wall_s": wall,
        "accepted": len(accepted),
        "failed": len(failures),
        "failures": failures[:5],
        "rate_limited": sum((counters.get("rate_limited") or {}).values()),
        "busiest_60s": busiest_window(accepted),
        "mean_per_minute": 60 * len(accepted) / max(accepted[-1] - accepted[0], 1e-9) if len(accepted) > 1 else 0.0,
    }
    args.out.write_text(json.dumps(result, indent=2))
    control.close()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
