"""Several OS processes submitting for one account share one budget: the emulator's counts say so.

Three processes (two with the sync hook, one with the async client) each submit twice, through
``WaveSpeedHook`` with the same connection, to one emulator over loopback HTTP. The account's
tier starts 3 generations in any 60 s; the connection's budget is 2 a minute. Shared, the six
starts are paced ~30.5 s apart (whichever process asks); one budget per process would start three
at once and three more 30.5 s later: the tier refuses those.

Account time runs ``SPEED`` times faster than real time in every process (provider and emulator),
from one epoch, so the test takes ~15 s rather than 150. The verdict is counts: every submission
accepted and no 429, or 429s for per-process budgets. A slow machine only spreads starts further
apart, which the shared verdict allows; to break it the processes' starts would have to bunch by
more than 31 account seconds (3 real seconds), the margin between the budget (2) and the tier (3).
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from budget_worker import PREFIX, FastClock

import airflow_provider_wavespeed.testing._app as emulator_app
import airflow_provider_wavespeed.testing._state as emulator_state
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

SPEED = 10.0
WORKER = Path(__file__).resolve().parents[1] / "budget_worker.py"
APIS = ["sync", "sync", "async"]
PER_PROCESS = 2


def _worker_line(process: subprocess.Popen[str]) -> str:
    """The worker's next line for the test (other stdout lines are Airflow's logs); '' at its end."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(PREFIX):
            return line[len(PREFIX) :].rstrip("\n")
    return ""


def _most_in_any_minute(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_left(stamps, stamp + 60.0) - index for index, stamp in enumerate(stamps))


@pytest.mark.parametrize("budget", ["shared", "per-process"])
def test_processes_on_one_host_share_the_accounts_submission_budget(
    wavespeed_emulator: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    own_submission_budget: Path,
    budget: str,
) -> None:
    clock = FastClock(time.time(), SPEED)
    for module in (emulator_state, emulator_app):
        monkeypatch.setattr(module, "time", clock)
    wavespeed_emulator.set_tier(starts_per_minute=3)
    connection = {
        "conn_type": "wavespeed",
        "host": wavespeed_emulator.url,
        "password": wavespeed_emulator.api_key,
        "extra": {"max_submissions_per_minute": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_WS_HOST", json.dumps(connection))

    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "ws_host",
                budget,
                repr(clock.epoch),
                str(SPEED),
                str(index),
                api,
                str(PER_PROCESS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        for index, api in enumerate(APIS)
    ]
    watchdog = threading.Timer(120, lambda: [process.kill() for process in processes])  # a hung worker
    watchdog.start()
    try:
        for process in processes:  # each has its hook, client and budget: start them together
            assert _worker_line(process) == "ready", process.communicate()[1]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [(_worker_line(process), process.communicate(timeout=120)[1]) for process in processes]
    finally:
        watchdog.cancel()
        for process in processes:
            process.kill()
            process.wait()
    assert all(process.returncode == 0 for process in processes), [err for _, err in outputs]
    results = [entry for out, _ in outputs for entry in json.loads(out)]
    assert len(results) == len(APIS) * PER_PROCESS

    counters = wavespeed_emulator.counters()
    submissions = wavespeed_emulator.submissions()
    refused = [entry for entry in results if "refused" in entry]
    if budget == "shared":
        # Every submission accepted, exactly once; the tier never had to refuse one.
        assert not refused, refused
        assert sorted(entry["id"] for entry in results) == sorted(entry["id"] for entry in submissions)
        assert len({entry["inputs"]["prompt"] for entry in submissions}) == len(results)
        assert counters["tier"]["rejected"] == 0 and counters["rate_limited"] == {}, counters
        assert _most_in_any_minute([entry["submitted_at"] for entry in submissions]) <= 3
        # ...drawing from one budget: one file for the account on this host.
        assert len(list(own_submission_budget.iterdir())) == 1
    else:
        # Each process alone keeps the connection's 2 a minute; together they go over the tier's 3.
        assert refused and counters["tier"]["rejected"] == len(refused) > 0, counters
        assert len(submissions) == len(results) - len(refused)
        assert list(own_submission_budget.iterdir()) == []
