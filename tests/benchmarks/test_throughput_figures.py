"""The throughput benchmark's extra figures: the 60 s window count, WAL bytes, the loop-lag summary."""

from __future__ import annotations

import pytest

from benchmarks.loop_probe import lag_summary
from benchmarks.throughput_figures import lsn_position, most_in_60s, per_generation, wal_bytes


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
