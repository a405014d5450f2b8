"""The host-wide submission budget: one GCRA/AIMD bucket whose state is a flock'ed file.

Every test here runs on an injected clock, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import os
import random
import stat
import struct
import tempfile
from pathlib import Path

import pytest

from airflow_provider_wavespeed.api._limiter import TokenBucket
from airflow_provider_wavespeed.api._shared_budget import (
    SUBMISSION_MINUTE,
    FileBucketStore,
    budget_file_name,
    shared_store,
    submission_burst,
)

KEY = "wsk-secret-api-key-0123456789"


class _Clock:
    """Wall-clock seconds that move only when the test moves them."""

    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _buckets(
    path: Path, clock: _Clock, per_minute: float, burst: float, n: int, minute: float = SUBMISSION_MINUTE
) -> list[TokenBucket]:
    """``n`` buckets on one file, as ``n`` processes would have (each its own descriptor and lock)."""
    return [
        TokenBucket(
            per_minute / minute,
            burst=burst,
            store=FileBucketStore(str(path)),
            start_full=False,
            clock=clock,
        )
        for _ in range(n)
    ]


def _simulate(path: Path, per_minute: float, burst: float, seed: int, minute: float = SUBMISSION_MINUTE) -> list[float]:
    """Start times of submitters that each start the moment their slot comes, sharing one budget.

    Six callers on four buckets (processes) reserve, start at their slot and reserve again. The
    host goes quiet now and then: first a lull just long enough to earn the whole burst, then 70 s
    of brief lulls each caught up (record writes), then for 300 s at random (up to twice the
    burst's worth, or a long idle), with a 429 pausing the budget now and then. Worst case for the
    tier: a start counts at its slot time, even one a pause would have voided.
    """
    clock = _Clock()
    t0 = clock.now
    buckets = _buckets(path, clock, per_minute, burst, 4, minute)
    interval = minute / per_minute
    tolerance = (burst - 1) * interval
    rng = random.Random(seed)
    callers = 6
    # The whole burst is earned once the schedule has gone unused for the burst's worth, after the
    # slots the callers had already reserved (one each).
    quiets = [(t0 + 70 + callers * interval, tolerance + (callers + 2) * interval)]  # (start, length)
    brief_from = quiets[0][0] + quiets[0][1]
    quiets += [(brief_from + 10 * (n + 1), rng.uniform(0, tolerance)) for n in range(7)]
    end = brief_from + 300
    while quiets[-1][0] < end:
        length = rng.uniform(60, 120) if rng.random() < 0.15 else rng.uniform(0, 2 * burst * interval)
        quiets.append((quiets[-1][0] + quiets[-1][1] + rng.uniform(1, 40), length))
    wakes = [(clock.now, caller) for caller in range(callers)]
    starts: list[float] = []
    while clock.now < end:
        wake, caller = heapq.heappop(wakes)
        clock.now = max(clock.now, wake)
        quiet_end = next((start + length for start, length in quiets if start <= clock.now < start + length), None)
        if quiet_end is not None:
            heapq.heappush(wakes, (quiet_end, caller))
            continue
        bucket = buckets[caller % len(buckets)]
        if clock.now > brief_from + 80 and rng.random() < 0.002:
            bucket.pause(rng.uniform(0, 3))  # a 429 somewhere: every process backs off
        slot = clock.now + bucket._reserve()
        starts.append(slot)
        heapq.heappush(wakes, (slot, caller))
    return sorted(starts)


def _most_in_any_minute(starts: list[float]) -> int:
    # The tier counts starts in any 60 s: [t, t + 60) for every start t.
    return max(bisect.bisect_left(starts, start + 60.0) - index for index, start in enumerate(starts))


@pytest.mark.parametrize(("per_minute", "burst"), [(2, 1), (60, 1), (244, 2), (500, 4), (3000, 24)])
@pytest.mark.parametrize("seed", [1, 2])
def test_processes_sharing_a_budget_never_exceed_the_tier_in_any_60_seconds(
    tmp_path: Path, per_minute: int, burst: int, seed: int
) -> None:
    assert submission_burst(per_minute) == burst  # Bronze 1, Silver 4, Gold 24: half the slack
    starts = _simulate(tmp_path / "budget", per_minute, burst, seed)
    most = _most_in_any_minute(starts)
    assert most <= per_minute
    # The simulation does reach the budget's own bound (a whole burst, then paced slots): the check bites.
    assert most == burst + math.ceil(60 * per_minute / SUBMISSION_MINUTE) - 1


@pytest.mark.parametrize(("per_minute", "burst"), [(244, 2), (500, 4), (3000, 24)])
def test_the_burst_fits_only_because_the_minute_is_61_seconds(tmp_path: Path, per_minute: int, burst: int) -> None:
    # The same simulation paced over 60 s: the burst then goes over the tier. (A burst larger than
    # one second's worth cannot show it: the bucket caps the burst at its rate per second.)
    starts = _simulate(tmp_path / "budget", per_minute, burst, seed=1, minute=60.0)
    assert _most_in_any_minute(starts) >= per_minute + burst - 1 > per_minute


def test_a_new_budget_paces_from_its_first_slot_and_a_short_lull_is_caught_up(tmp_path: Path) -> None:
    clock = _Clock()
    first, second = _buckets(tmp_path / "budget", clock, 500, 4, 2)
    first_at = clock.now
    interval = SUBMISSION_MINUTE / 500
    # New: no burst credit, one slot per interval whichever process asks.
    delays = [bucket._reserve() for bucket in (first, second, first, second)]
    assert delays == pytest.approx([0.0, interval, 2 * interval, 3 * interval])
    # Both callers keep up with the schedule, then write their record for 0.3 s (2.5 slots):
    clock.now += 3 * interval + 0.3
    slots = [clock.now + bucket._reserve() for bucket in (first, second, first, second)]
    # ...and catch up: the slots are those of a schedule that never paused, none lost (two at once).
    assert slots == pytest.approx([max(clock.now, first_at + k * interval) for k in range(4, 8)])
    assert slots[0] == slots[1] == clock.now


def test_a_429_pauses_and_cuts_the_budget_of_every_process(tmp_path: Path) -> None:
    clock = _Clock()
    one, other = _buckets(tmp_path / "budget", clock, 600, 1, 2)
    one.pause(2.0)
    assert other.current_rate == pytest.approx(one.rate / 2)
    assert other._reserve() == pytest.approx(2.0)  # the other process waits out the pause too
    assert not other.recovered()
    clock.now += 2.0 + TokenBucket.recovery_seconds
    other._reserve()
    assert one.current_rate == pytest.approx(one.rate / 2 + one.rate / 20)  # grown back a step, for both


def _write(path: Path, *values: float) -> None:
    path.write_bytes(struct.pack("<6d", *values))


# (tat, paused_until, rate, grow_at) relative to now / to the bucket's rate: no bucket of ours writes these.
_FOREIGN = {
    "infinite schedule": (math.inf, 0.0, 1.0, 0.0),
    "schedule ten days ahead": (10 * 86400, 0.0, 1.0, 0.0),
    "pause ten days ahead": (1.0, 10 * 86400, 1.0, 0.0),
    "growth ten days ahead": (1.0, 0.0, 0.5, 10 * 86400),
    "rate below the floor": (1.0, 0.0, 1 / 64, 0.0),
    "infinite pause": (1.0, math.inf, 1.0, 0.0),
}


@pytest.mark.parametrize("values", list(_FOREIGN.values()), ids=list(_FOREIGN))
def test_a_foreign_or_corrupt_state_is_a_new_budget(tmp_path: Path, values: tuple[float, ...]) -> None:
    clock = _Clock()
    path = tmp_path / "budget"
    (bucket,) = _buckets(path, clock, 60, 1, 1)
    tat, paused, rate, grow = values
    _write(path, 1.0, clock.now + tat, clock.now + paused, bucket.rate * rate, clock.now + grow, clock.now)
    assert bucket._reserve() == 0.0 and bucket.current_rate == bucket.rate  # as with no file at all


def test_a_long_pause_is_kept_at_the_bound(tmp_path: Path) -> None:
    # Our own longest pause reads back as ours, not as a foreign state: a Retry-After of days is cut.
    clock = _Clock()
    one, other = _buckets(tmp_path / "budget", clock, 60, 1, 2)
    one.pause(10 * 86400)
    assert other._reserve() == pytest.approx(TokenBucket.max_lead)
    assert other.current_rate == pytest.approx(one.rate / 2)


def test_a_clock_stepped_back_moves_the_schedule_with_it(tmp_path: Path) -> None:
    clock = _Clock()
    path = tmp_path / "budget"
    (bucket,) = _buckets(path, clock, 60, 1, 1)
    # Written at now + 2 h with its next slot 3 s after that: the clock has since gone back 2 h.
    _write(path, 1.0, clock.now + 7200 + 3, 0.0, bucket.rate, 0.0, clock.now + 7200)
    assert bucket._reserve() == pytest.approx(3.0)


@pytest.mark.parametrize("junk", [b"", b"\x00" * 7, struct.pack("<6d", 9.0, 0, 0, 1, 0, 0), b"\xff" * 48])
def test_an_unreadable_or_foreign_file_is_a_new_budget(tmp_path: Path, junk: bytes) -> None:
    clock = _Clock()
    path = tmp_path / "budget"
    (bucket,) = _buckets(path, clock, 60, 1, 1)
    path.write_bytes(junk)
    assert bucket._reserve() == 0.0 and bucket.current_rate == bucket.rate
    assert len(path.read_bytes()) == 48  # rewritten whole


def test_a_budget_idle_for_long_starts_afresh(tmp_path: Path) -> None:
    clock = _Clock()
    (bucket,) = _buckets(tmp_path / "budget", clock, 60, 1, 1)
    bucket.pause(1.0)  # cut to half
    clock.now += 1.0 + TokenBucket.stale_after + 1
    assert bucket.current_rate == bucket.rate


def test_the_file_is_named_by_hashes_and_only_its_user_may_open_it(tmp_path: Path) -> None:
    store = shared_store("https://api.wavespeed.ai", KEY, 500.0)
    assert store is not None
    name = os.path.basename(store.path)
    assert name == budget_file_name("https://api.wavespeed.ai", KEY, 500.0)
    assert KEY not in store.path and "wavespeed.ai" not in name
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    # Another key, base URL or rate: another budget.
    assert (
        len(
            {
                budget_file_name(url, key, rate)
                for url, key, rate in [
                    ("https://api.wavespeed.ai", KEY, 500.0),
                    ("https://api.wavespeed.ai", KEY + "x", 500.0),
                    ("http://127.0.0.1:9", KEY, 500.0),
                    ("https://api.wavespeed.ai", KEY, 3000.0),
                ]
            }
        )
        == 4
    )


@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_a_default_directory_it_cannot_trust_falls_back_to_a_per_process_budget_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    monkeypatch.delenv("WAVESPEED_BUDGET_DIR")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    squatted = tmp_path / f"wavespeed-budget-{os.getuid()}"
    squatted.mkdir()
    if how == "owned by another user":
        if os.getuid() != 0:
            pytest.skip("making a directory another user's needs root")
        os.chown(squatted, 65534, 65534)
    else:
        squatted.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_wavespeed.api._shared_budget"):
        assert shared_store(f"http://{how}", KEY, 60.0) is None
        assert shared_store(f"http://{how}", KEY, 61.0) is None
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and str(squatted) in warnings[0] and "WAVESPEED_BUDGET_DIR" in warnings[0]
    assert KEY not in warnings[0]
    assert list(squatted.iterdir()) == []  # nothing written there


def test_a_lock_that_stays_taken_falls_back_to_a_per_process_budget_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import fcntl

    clock = _Clock()
    path = tmp_path / "budget"
    (bucket,) = _buckets(path, clock, 60, 1, 1)
    store = bucket.store
    assert isinstance(store, FileBucketStore)
    store.lock_timeout = 0.05  # 5 s in use; the holder below never lets go
    _write(path, 1.0, clock.now + 30, 0.0, bucket.rate, 0.0, clock.now)  # the file's schedule: 30 s ahead
    before = path.read_bytes()
    with open(path, "rb") as holder:  # another open file: flock excludes it as it would another process
        fcntl.flock(holder, fcntl.LOCK_EX)
        with caplog.at_level(logging.WARNING, logger="airflow_provider_wavespeed.api._shared_budget"):
            assert bucket._reserve() == 0.0  # paced by this process alone: the file's 30 s are not seen
            assert bucket._reserve() == pytest.approx(SUBMISSION_MINUTE / 60)  # ...and paced: 60 a (61 s) minute
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "was not free within 0.05 s" in warnings[0]
    assert path.read_bytes() == before  # nothing written without the lock


@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_a_chosen_budget_directory_gets_the_same_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    if how == "owned by another user":
        if os.getuid() != 0:
            pytest.skip("making a directory another user's needs root")
        os.chown(chosen, 65534, 65534)
    else:
        chosen.chmod(0o777)
    monkeypatch.setenv("WAVESPEED_BUDGET_DIR", str(chosen))
    with caplog.at_level(logging.WARNING, logger="airflow_provider_wavespeed.api._shared_budget"):
        assert shared_store(f"http://chosen-{how}", KEY, 60.0) is None
    (warning,) = [record.getMessage() for record in caplog.records]
    assert str(chosen) in warning and KEY not in warning
    assert list(chosen.iterdir()) == []  # nothing written there
