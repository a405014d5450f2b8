"""The throughput benchmark's extra figures: the 60 s window count, WAL bytes, the loop-lag summary."""

from __future__ import annotations

import pytest

from benchmarks.loop_probe import lag_summary
from benchmarks.throughput_figures import execution_api_calls, lsn_position, most_in_60s, per_generation, wal_bytes


def test_most_submissions_in_any_60_s_slides_the_window() -> None:
    log = [{"submitted_at": 1000.0 + t} for t in (0, 10, 20, 59.9, 60, 61, 119, 200)]
    # [0, 59.9] holds 4; [10, 69.9] holds 5 (10, 20, 59.9, 60, 61); [60, 119.9] 3; a gap before 200.
    assert most_in_60s(log) == 5
    assert most_in_60s(list(reversed(log))) == 5  # the log's order does not matter
    assert most_in_60s([{"submitted_at": 5.0}, {"submitted_at": 65.0}]) == 1  # exactly 60 s apart: two windows
    assert most_in_60s([]) == 0


def test_an_even_pace_fills_the_window_to_the_pace() -> None:
    # 1/64 s apart (exact in binary, so no rounding decides the edges): 3,840 a minute.
    paced = [{"submitted_at": 1_700_000_000 + index / 64} for index in range(10_000)]
    assert most_in_60s(paced) == 3840


def test_wal_bytes_across_a_16_mib_segment_and_the_32_bit_boundary() -> None:
    assert lsn_position("0/16B3748") == 0x16B3748
    assert lsn_position("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert wal_bytes("0/1000000", "0/1000000") == 0
    assert wal_bytes("0/FFFFFF00", "1/00000100") == 0x200  # across the low word's wrap
    assert wal_bytes("2/A0", "2/1A0") == 256
    assert per_generation(wal_bytes("0/0", "0/2710000"), 10_000) == 4096.0  # 0x2710000 = 10,000 x 4,096
    assert per_generation(None, 10) is None and per_generation(100, 0) is None


def test_a_wal_that_goes_backwards_or_no_lsn_is_refused() -> None:
    with pytest.raises(ValueError, match="backwards"):
        wal_bytes("0/200", "0/100")
    with pytest.raises(ValueError, match="not a PostgreSQL LSN"):
        lsn_position("16B374D848")


def test_loop_lag_summary_max_and_nearest_rank_p99() -> None:
    lags = [0.001] * 990 + [0.050] * 9 + [0.300]  # 1,000 samples: the 990th is the p99
    assert lag_summary(lags) == {"samples": 1000, "max_ms": 300.0, "p99_ms": 1.0}
    assert lag_summary([*lags, 0.2])["p99_ms"] == 50.0  # 1,001: the 991st
    assert lag_summary([]) == {"samples": 0, "max_ms": None, "p99_ms": None}


TI_A, TI_B, TI_OTHER = (
    "019af0a1-0000-7000-8000-00000000000a",
    "019af0a1-0000-7000-8000-00000000000b",
    "019af0a1-0000-7000-8000-0000000000ff",
)
RUN = "manual__20261207T070000_abc123"


def _access(method: str, path: str, query: str = "") -> str:
    """One access-log line as Airflow 3.3's api-server writes it (http_access_log.py)."""
    return (
        "2026-12-07T07:00:01.000000Z [info     ] request finished               [http.access] "
        f"client_addr=127.0.0.1:40260 duration_us=4467 loc=http_access_log.py:130 method={method} path={path} "
        f"query={query} status_code=200"
    )


def test_execution_api_calls_of_one_run_by_kind_from_the_access_log() -> None:
    log = "\n".join(
        [
            _access("PATCH", f"/execution/task-instances/{TI_A}/run"),
            _access("PUT", f"/execution/task-instances/{TI_A}/heartbeat"),
            _access("PUT", f"/execution/task-instances/{TI_B}/heartbeat"),
            _access("PUT", f"/execution/store/ti/{TI_B}/wavespeed_submit"),
            _access("POST", f"/execution/xcoms/dag_a/{RUN}/generation.generate/prediction_id", "'map_index=3'"),
            _access("GET", "/execution/task-instances/count", f"'dag_id=dag_a&task_ids=generation.wait&run_ids={RUN}'"),
            _access("GET", f"/execution/dag-runs/dag_a/{RUN}"),
            # Not this run's: another task instance, another run of the DAG, the REST API, a run id's prefix.
            _access("PUT", f"/execution/task-instances/{TI_OTHER}/heartbeat"),
            _access("POST", "/execution/xcoms/dag_a/manual__other/generation.generate/prediction_id"),
            _access("GET", f"/api/v2/dags/dag_a/dagRuns/{RUN}"),
            _access("GET", "/execution/task-instances/count", f"'dag_id=dag_a&run_ids={RUN}x'"),
            "2026-12-07T07:00:02.000000Z [info     ] something else path=/execution/xcoms/dag_a/",
        ]
    )
    calls = execution_api_calls(log, dag_id="dag_a", run_id=RUN, ti_ids=[TI_A, TI_B])
    assert calls == {
        "PATCH /execution/task-instances/{ti}/run": 1,
        "PUT /execution/task-instances/{ti}/heartbeat": 2,
        "PUT /execution/store/ti/{ti}/wavespeed_submit": 1,
        "POST /execution/xcoms/{run}/generation.generate/prediction_id": 1,
        "GET /execution/task-instances/count": 1,
        "GET /execution/dag-runs/{run}": 1,
    }


def test_a_run_id_that_travels_url_quoted_is_still_the_runs() -> None:
    run = "manual__2026-12-07T07:00:00+00:00"
    log = _access("POST", "/execution/xcoms/dag_a/manual__2026-12-07T07%3A00%3A00%2B00%3A00/wait/return_value")
    assert execution_api_calls(log, dag_id="dag_a", run_id=run, ti_ids=[]) == {
        "POST /execution/xcoms/{run}/wait/return_value": 1
    }
