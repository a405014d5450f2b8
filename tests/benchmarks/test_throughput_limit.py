"""The throughput benchmark's bounds: the limit (the emulator's own tier rules, simulated), and Airflow's floor."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_wavespeed.testing._state import TIERS
from benchmarks.throughput import _one_prediction_each, add_floor_ratios, limit_seconds, succeeded


def test_silver_1000_generations_of_20_s_end_when_the_last_start_has_run() -> None:
    starts, cap = TIERS["silver"]
    # The last of 1,000 arrives 999 start intervals in; at most 20 s / 0.12 s = 167 run at once, under the cap.
    assert limit_seconds(1000, starts_per_minute=starts, concurrency=cap, duration=20.0) == pytest.approx(
        999 * 60 / starts + 20.0
    )
    assert limit_seconds(1000, starts_per_minute=starts, concurrency=cap, duration=20.0) == pytest.approx(139.88)


def test_the_concurrency_cap_queues_first_come_first_served() -> None:
    starts, cap = TIERS["silver"]
    # 60 s predictions: the 301st arrives at 36 s with 300 running and starts when the first ends (60 s);
    # from then on input i starts 60 s after input i - 300: the last (999) at 180 + 11.88 s, ends 60 s later.
    assert limit_seconds(1000, starts_per_minute=starts, concurrency=cap, duration=60.0) == pytest.approx(251.88)
    # No start limit: waves of `cap`.
    assert limit_seconds(1000, starts_per_minute=None, concurrency=cap, duration=20.0) == pytest.approx(80.0)


def test_no_limits_and_no_generations() -> None:
    assert limit_seconds(1000, starts_per_minute=None, concurrency=None, duration=20.0) == 20.0
    assert limit_seconds(0, starts_per_minute=500, concurrency=300, duration=20.0) == 0.0


def test_bursts_as_the_sliding_window_admits_them() -> None:
    starts, cap = TIERS["silver"]
    # 500 at t = 0 (300 run, 200 queue until 20 s, end at 40 s), 500 at 60 s (end at 100 s).
    assert limit_seconds(1000, starts_per_minute=starts, concurrency=cap, duration=20.0, burst=True) == 100.0


def _run(design: str, wall: float, submissions: list[dict[str, Any]], *, expected: bool = True) -> dict[str, Any]:
    return {
        "design": design,
        "state": "success",
        "wall_s": wall,
        "task_states": {"generate": {"success": 2}},
        "predictions": _one_prediction_each(submissions, 2, expected=expected),
    }


def test_a_floor_succeeds_only_when_nothing_was_submitted_and_sets_the_floor_ratio() -> None:
    one_each = [{"inputs": {"prompt": f"throughput image {index}"}} for index in range(2)]
    ours = _run("mapped-waiting-submit", 150.0, one_each)
    floor = _run("floor-waiting-submit", 120.0, [], expected=False)
    assert succeeded(ours) and succeeded(floor)
    assert not succeeded(_run("floor-waiting-submit", 120.0, one_each[:1], expected=False))
    assert not succeeded(_run("mapped-waiting-submit", 150.0, [], expected=True))  # ours must submit
    sensor = _run("mapped-sensor", 90.0, one_each)  # its floor did not run: no ratio
    designs = [ours, sensor, floor]
    add_floor_ratios(designs)
    assert ours["floor_ratio"] == 1.25 and "floor_ratio" not in sensor and "floor_ratio" not in floor
    ours_again = _run("mapped-waiting-submit", 150.0, one_each)
    add_floor_ratios([ours_again, {**floor, "state": "failed"}])
    assert "floor_ratio" not in ours_again  # a failed floor's time is no bound
