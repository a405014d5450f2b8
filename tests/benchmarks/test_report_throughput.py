"""The throughput section of docs/benchmarks.md: one block per run and tier, spliced without losing other rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.throughput_report import (
    THROUGHPUT_END,
    THROUGHPUT_START,
    replace_section,
    run_blocks,
    splice_throughput,
    throughput_of,
)

OLD = f"{THROUGHPUT_START}\nold table\n{THROUGHPUT_END}"
NEW = f"{THROUGHPUT_START}\nnew table\n{THROUGHPUT_END}"
MACHINE = {"cpu": "AMD EPYC", "cores": 2, "ram": "23.5 GiB", "os": "Linux", "python": "3.11", "airflow": "3.3.2"}
STARTS = {"silver": 500, "gold": 3000}
# The section as the benchmark wrote it before there were run markers (session 7's Silver run, shortened).
LEGACY = f"""{THROUGHPUT_START}
## Throughput in real Airflow (issue 13)

Produced by `python -m benchmarks throughput --json /tmp/s7.json` on 2026-11-26 10:16:33 UTC, commit 48e2f6d, in 53 min.

Settings: a real deployment, LocalExecutor. The emulator at the silver preset (500 generations started per minute).

| Design | N | Run | Wall time (s) |
|---|---|---|---|
| `mapped-sensor`: mapped submit + deferrable `WaveSpeedTaskSensor` | 1,000 | success | 2,130.4 |
| `batch-10-tasks`: `WaveSpeedBatchOperator` mapped over 10 slices | 1,000 | success | 121.1 |
| `batch-1-task`: one `WaveSpeedBatchOperator` | 1,000 | success | 146.8 |

- **Wall time**: the DAG run's `start_date` to its `end_date` (Airflow's own).
{THROUGHPUT_END}"""


def results(
    tier: str, walls: dict[str, float], command: str = "python -m benchmarks throughput", n: int = 10_000
) -> dict[str, Any]:
    """What `benchmarks/throughput.py` hands the report, for designs that ran ``n`` generations in ``walls`` seconds."""
    designs = [
        {
            "design": design,
            "what": f"the {design} design",
            "n": n,
            "state": "success",
            "wall_s": wall,
            "tier": {"name": tier, "starts_per_minute": STARTS[tier], "concurrency": STARTS[tier]},
            "most_in_60s": 2_990,
            "rate_limited": 0,
            "loop_lag": {"max_ms": 41.5, "p99_ms": 12.0, "in_triggerer": True},
            "wal_bytes_per_generation": 2_345.6,
            "peak_rss_mb": {"tasks": 310.5, "triggerer": 1_402.0},
        }
        for design, wall in walls.items()
    ]
    return {
        "command": f"{command} --tier {tier}",
        "started": "2026-12-01 10:00:00 UTC",
        "commit": "abc1234",
        "wall_s": 600.0,
        "machine": {**MACHINE, "provider": "0.1.0"},
        "executor": "LocalExecutor",
        "parallelism": 8,
        "database": "PostgreSQL 15.18",
        "duration_s": 20.0,
        "tier": tier,
        "connection": {} if tier == "silver" else {"account_tier": tier},
        "manifests": tier == "gold",
        "designs": designs,
    }


def rows(text: str) -> list[str]:
    """The table rows of the throughput section (header and separator left out)."""
    section = throughput_of(text) or ""
    return [line for line in section.splitlines() if line.startswith("| ") and "`" in line]


def test_the_section_is_replaced_and_the_rest_of_the_report_kept() -> None:
    text = f"# Benchmarks\n\nsuite figures\n\n{OLD}\n\nafter\n"
    assert replace_section(text, NEW) == f"# Benchmarks\n\nsuite figures\n\n{NEW}\n\nafter\n"
    assert throughput_of(replace_section(text, NEW)) == NEW


def test_a_report_without_the_section_gets_it_at_the_end() -> None:
    assert replace_section("# Benchmarks\n\nsuite figures\n", NEW) == f"# Benchmarks\n\nsuite figures\n\n{NEW}\n"
    assert replace_section("", NEW) == f"{NEW}\n"
    assert throughput_of("# Benchmarks\n") is None


def test_the_main_suites_rewrite_keeps_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = tmp_path / "benchmarks.md"
    previous.write_text(f"# Benchmarks\n\nlast suite figures\n\n{OLD}\n")
    monkeypatch.setattr(report, "_render", lambda results: "# Benchmarks\n\nnew suite figures\n")
    assert report.render({"smoke": False}, previous=previous) == f"# Benchmarks\n\nnew suite figures\n\n{OLD}\n"
    assert report.render({"smoke": True}) == "# Benchmarks\n\nnew suite figures\n"  # a smoke report stands alone


def test_a_gold_run_keeps_the_silver_rows_written_before_run_markers() -> None:
    text = splice_throughput(f"# Benchmarks\n\n{LEGACY}\n\nafter\n", results("gold", {"batch-1-task": 215.0}))
    assert text.startswith("# Benchmarks\n\n") and text.endswith("\n\nafter\n")
    found = rows(text)
    assert [line for line in found if "2,130.4" in line or "121.1" in line or "146.8" in line] == found[:3]
    assert found[3].startswith("| Gold | `batch-1-task`: the batch-1-task design | 10,000 | success | 215.0 |")
    assert "| 2,990 (3,000) | 0 | 41.5 / 12.0 | 2,346 |" in found[3]
    assert [(tier, designs) for tier, designs, _ in run_blocks(throughput_of(text))] == [
        ("silver", ["mapped-sensor", "batch-10-tasks", "batch-1-task"]),
        ("gold", ["batch-1-task"]),
    ]
    assert "`account_tier: gold`" in text and "`manifest_path`" in text


def test_a_run_replaces_only_the_rows_of_its_tier_and_designs() -> None:
    text = splice_throughput(LEGACY, results("gold", {"batch-1-task": 215.0, "batch-10-tasks": 230.0}))
    # Silver again, two designs at the old rows' N: the Silver rows of those two are replaced, mapped-sensor's
    # stays; Gold untouched.
    text = splice_throughput(text, results("silver", {"batch-10-tasks": 118.0, "batch-1-task": 150.0}, n=1_000))
    found = rows(text)
    assert len(found) == 5
    # The newest run first in its tier, then the old Silver run's remaining row.
    assert found[0].startswith("| Silver | `batch-10-tasks`") and "| 118.0 |" in found[0]
    assert found[1].startswith("| Silver | `batch-1-task`") and "| 150.0 |" in found[1]
    assert "2,130.4" in found[2] and "`mapped-sensor`" in found[2]
    assert not any("121.1" in line or "146.8" in line for line in found)
    assert found[3].startswith("| Gold | `batch-1-task`") and "| 215.0 |" in found[3]
    assert found[4].startswith("| Gold | `batch-10-tasks`") and "| 230.0 |" in found[4]
    # A Gold run of one design: the other Gold row stays in the block of the run that measured it.
    text = splice_throughput(text, results("gold", {"batch-1-task": 205.0}, command="python -m benchmarks x"))
    blocks = run_blocks(throughput_of(text))
    assert [(tier, designs) for tier, designs, _ in blocks] == [
        ("silver", ["batch-10-tasks", "batch-1-task"]),
        ("silver", ["mapped-sensor"]),
        ("gold", ["batch-1-task"]),
        ("gold", ["batch-10-tasks"]),
    ]
    assert "| 205.0 |" in blocks[2][2] and "python -m benchmarks x --tier gold" in blocks[2][2]
    assert "| 230.0 |" in blocks[3][2] and "| 215.0 |" not in text
    assert text.count(THROUGHPUT_START) == text.count(THROUGHPUT_END) == 1


def test_a_run_that_replaces_every_row_of_an_older_block_drops_it() -> None:
    first = splice_throughput("", results("silver", {"batch-1-task": 150.0}))
    second = splice_throughput(first, results("silver", {"batch-1-task": 140.0}))
    assert [(tier, designs) for tier, designs, _ in run_blocks(throughput_of(second))] == [("silver", ["batch-1-task"])]
    assert len(rows(second)) == 1 and "| 140.0 |" in rows(second)[0]


def test_a_missing_figure_is_a_dash_and_says_why() -> None:
    run = results("silver", {"batch-1-task": 150.0})
    run["designs"][0].update(loop_lag={"error": "TimeoutError: no start"}, wal_bytes_per_generation=None)
    run["database"] = "SQLite (--database sqlite)"
    (line,) = rows(splice_throughput("", run))
    assert "| - (TimeoutError: no start) | - |" in line
    assert "no `account_tier`" in (throughput_of(splice_throughput("", run)) or "")


def test_the_floor_rows_stand_beside_ours_with_the_floor_ratio_cpu_and_execution_api_calls() -> None:
    run = results("silver", {"mapped-sensor": 150.0, "floor-sensor": 120.0, "mapped-waiting-submit": 99.0})
    cpu = {"scheduler": 10.5, "dag-processor": 2.0, "api-server": 30.25, "triggerer": 4.0, "tasks": 100.0}
    for design in run["designs"]:
        floor = design["design"].startswith("floor-")
        design.update(
            is_floor=floor,
            floor=None if floor else design["design"].replace("mapped-", "floor-"),
            cpu_s=cpu,
            execution_api_calls_per_generation=9.5 if floor else 14.25,
            predictions={"ok": True, "expected": False, "submissions": 0} if floor else {"ok": True},
            limit_s=None if floor else 139.88,
        )
    run["designs"][0]["floor_ratio"] = 1.25  # what add_floor_ratios sets (the waiting submit's floor did not run)
    ours, floor, alone = rows(splice_throughput("", run))
    # Wall time, limit, ratio (none given here), floor ratio.
    assert "| 150.0 | 139.9 | - | 1.25 (`floor-sensor`) |" in ours
    assert "| 120.0 | - | - | (floor) |" in floor and "| none expected, none made |" in floor
    assert "| 99.0 | 139.9 | - | - |" in alone  # no floor ratio without its floor in the run
    assert (
        "| 14.25 | 10.5 / 2.0 / 30.2 / 4.0 / 100.0 |" in ours and "| 9.50 | 10.5 / 2.0 / 30.2 / 4.0 / 100.0 |" in floor
    )
    section = throughput_of(splice_throughput("", run)) or ""
    assert "Execution-API calls / generation | CPU s: scheduler / dag-processor / api-server / triggerer" in section
    assert "**Floor ratio**" in section and "**Execution-API calls**" in section


def test_a_floor_that_submitted_says_so() -> None:
    run = results("silver", {"floor-waiting-submit": 120.0})
    run["designs"][0].update(is_floor=True, predictions={"ok": False, "expected": False, "submissions": 3})
    (line,) = rows(splice_throughput("", run))
    assert "| **no**: 3 submissions |" in line


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_each_row_has_a_cell_under_every_heading_with_the_peak_memory_under_its_own() -> None:
    block = throughput_of(splice_throughput("", results("gold", {"batch-1-task": 215.0}))) or ""
    header = next(line for line in block.splitlines() if line.startswith("| Tier |"))
    [row] = rows(block)
    by_heading = dict(zip(cells(header), cells(row), strict=True))
    assert by_heading["Peak RSS MB: task process / triggerer"] == "310.5 / 1,402.0"


def test_a_run_at_another_n_keeps_the_rows_of_the_same_designs_beside_it() -> None:
    text = splice_throughput("", results("silver", {"mapped-sensor": 130.0, "floor-sensor": 220.0}, n=200))
    text = splice_throughput(text, results("silver", {"mapped-sensor": 700.0, "floor-sensor": 720.0}, n=1_000))
    found = rows(text)
    assert [(line.split(" | ")[1].split(":")[0], line.split(" | ")[2]) for line in found] == [
        ("`mapped-sensor`", "1,000"),
        ("`floor-sensor`", "1,000"),
        ("`mapped-sensor`", "200"),
        ("`floor-sensor`", "200"),
    ]
    # The same N again replaces only its own rows, and the run's problems go with them.
    run = results("silver", {"mapped-sensor": 650.0}, n=1_000)
    run["designs"][0]["error"] = "one task failed"
    text = splice_throughput(text, run)
    blocks = run_blocks(throughput_of(text))
    assert [(tier, designs) for tier, designs, _ in blocks] == [
        ("silver", ["mapped-sensor"]),
        ("silver", ["floor-sensor"]),
        ("silver", ["mapped-sensor", "floor-sensor"]),
    ]
    assert "| 650.0 |" in blocks[0][2] and "- `mapped-sensor`: one task failed" in blocks[0][2]
    assert "| 700.0 |" not in text and "| 720.0 |" in blocks[1][2] and "| 130.0 |" in blocks[2][2]
    # A later run at that N without a problem takes the problem line out with the row.
    text = splice_throughput(text, results("silver", {"mapped-sensor": 640.0}, n=1_000))
    assert "one task failed" not in text and "| 640.0 |" in text and "| 130.0 |" in text
