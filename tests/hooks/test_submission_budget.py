"""The connection's budget is a budget of submissions (the tier's starts per minute); polls have none."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any

import pytest

from airflow_provider_wavespeed.api import _limiter as limiter_module
from airflow_provider_wavespeed.api._limiter import AdaptiveLimiter, TokenBucket
from airflow_provider_wavespeed.api._shared_budget import SUBMISSION_MINUTE, submission_limiter
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, url: str, key: str, extra: dict[str, Any]) -> None:
    connection = {"conn_type": "wavespeed", "host": url, "password": key, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


# -- the connection's extra ------------------------------------------------------------------


def test_the_default_is_the_silver_tiers_start_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, "ws_plain", "https://api.wavespeed.ai", "k", {})
    assert WaveSpeedHook("ws_plain").get_credentials().max_submissions_per_minute == 500


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"account_tier": "bronze"}, 2),
        ({"account_tier": "Silver"}, 500),
        ({"extra__wavespeed__account_tier": "gold"}, 3000),  # as the UI form stores it
        ({"account_tier": "ultra", "max_submissions_per_minute": 7}, 5000),  # the tier wins over the number
        ({"account_tier": "custom", "max_submissions_per_minute": 7}, 7),
        ({"account_tier": "custom"}, 500),  # custom with no number: the default
        ({"account_tier": None, "max_submissions_per_minute": 40}, 40),  # no tier chosen: the number
        ({"account_tier": ""}, 500),
    ],
)
def test_the_account_tier_sets_the_budget(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], expected: int
) -> None:
    _set_conn(monkeypatch, "ws_tier", "https://api.wavespeed.ai", "k", extra)
    creds = WaveSpeedHook("ws_tier").get_credentials()
    assert creds.max_submissions_per_minute == expected
    limiter = submission_limiter(creds)
    assert limiter is not None and limiter.rate == pytest.approx(expected / SUBMISSION_MINUTE)


def test_an_unknown_account_tier_is_refused_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_wavespeed.api.errors import WaveSpeedConfigError

    _set_conn(monkeypatch, "ws_platinum", "https://api.wavespeed.ai", "k", {"account_tier": "platinum"})
    with pytest.raises(WaveSpeedConfigError, match=r"bronze, silver, gold, ultra, custom, got 'platinum'"):
        WaveSpeedHook("ws_platinum").get_credentials()


def test_zero_means_no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, "ws_free", "https://api.wavespeed.ai", "k", {"max_submissions_per_minute": 0})
    creds = WaveSpeedHook("ws_free").get_credentials()
    assert creds.max_submissions_per_minute is None and submission_limiter(creds) is None


def test_one_limiter_per_connection_and_process(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, "ws_one", "https://api.wavespeed.ai", "k", {"max_submissions_per_minute": 90})
    _set_conn(monkeypatch, "ws_two", "https://api.wavespeed.ai", "k", {"max_submissions_per_minute": 90})
    first, second = WaveSpeedHook("ws_one").client, WaveSpeedHook("ws_one").client
    other = WaveSpeedHook("ws_two").client
    assert first.submit_limiter is second.submit_limiter is not None
    assert other.submit_limiter is not first.submit_limiter
    assert isinstance(first.submit_limiter, TokenBucket) and first.submit_limiter.rate == pytest.approx(90 / 61)


def test_the_budget_never_allows_more_than_the_tiers_starts_in_any_60_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Silver tier counts 500 starts in any 60 s: the 501st slot must come more than 60 s after
    # the first, with a margin for the first request's connection set-up (no burst at the start).
    _set_conn(monkeypatch, "ws_silver", "https://api.wavespeed.ai", "k", {})
    limiter = submission_limiter(WaveSpeedHook("ws_silver").get_credentials())
    assert isinstance(limiter, TokenBucket)
    # 501 callers at one instant: the clock stands still, so a busy machine cannot move the slots.
    monkeypatch.setattr(limiter_module.time, "monotonic", lambda: 1_000_000.0)
    monkeypatch.setattr(limiter_module.time, "time", lambda: 1_000_000.0)  # the host-wide budget's clock
    delays = [limiter._reserve() for _ in range(501)]
    assert delays[0] == 0.0  # one submit alone is never held back
    assert all(later - earlier >= 60 / 500 for earlier, later in itertools.pairwise(delays))
    assert delays[500] - delays[0] >= 60.5
    assert delays[499] - delays[0] <= 61.0  # and the pace stays the tier's: 500 slots within ~61 s


# -- pacing, over loopback -------------------------------------------------------------------


def _submitted_at(emulator: WaveSpeedEmulator) -> list[float]:
    return sorted(s["submitted_at"] for s in emulator.submissions())


def test_threads_of_one_worker_share_the_submission_budget(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 120 a minute (of 61 s), no burst: eight submissions from four threads need at least 7 x 61/120 s.
    _set_conn(
        monkeypatch, "ws_paced", wavespeed_emulator.url, wavespeed_emulator.api_key, {"max_submissions_per_minute": 120}
    )

    def submit_two() -> None:
        hook = WaveSpeedHook("ws_paced")
        for index in range(2):
            hook.submit(FLUX, {"prompt": f"p{index}"})

    threads = [threading.Thread(target=submit_two) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps = _submitted_at(wavespeed_emulator)
    assert len(stamps) == 8
    # A slower machine only spaces them further: the bound holds on any machine.
    assert stamps[-1] - stamps[0] >= 7 * SUBMISSION_MINUTE / 120 * 0.95
    assert wavespeed_emulator.counters()["rate_limited"] == {}  # no 429 was needed


def test_a_429_on_a_submit_pauses_the_shared_budget_and_every_submit_succeeds(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_conn(monkeypatch, "ws_tier", wavespeed_emulator.url, wavespeed_emulator.api_key, {})
    wavespeed_emulator.add_fault("submit", "rate_limit", retry_after=1, times=1)
    hook = WaveSpeedHook("ws_tier")
    started = time.monotonic()
    ids = [hook.submit(FLUX, {"prompt": f"p{i}"}).id for i in range(3)]
    assert len(set(ids)) == 3 and len(wavespeed_emulator.submissions()) == 3
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    limiter = hook.client.submit_limiter
    assert isinstance(limiter, TokenBucket) and limiter.current_rate < limiter.rate  # the 429 cut it


# -- polls: no budget until the API answers 429 ----------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _AsyncioOnClock:
    def __init__(self, clock: _Clock) -> None:
        self.sleep = clock.sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def test_the_poll_limiter_is_unlimited_until_a_429_then_backs_off_and_steps_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(limiter_module.time, "monotonic", clock)
    # Only the limiter module's view of asyncio sleeps on the fake clock (other loops, such as the
    # emulator's, keep the real one).
    monkeypatch.setattr(limiter_module, "asyncio", _AsyncioOnClock(clock))
    limiter = AdaptiveLimiter(window=10.0)

    async def polls(n: int, spacing: float) -> None:
        for _ in range(n):
            await limiter.acquire()
            clock.now += spacing

    asyncio.run(polls(1000, 0.01))  # 100 polls/s: no budget holds them back
    assert clock.slept == [] and not limiter.engaged
    limiter.pause(2.0)  # the API answered 429 with Retry-After: 2
    assert limiter.engaged and limiter.current_rate == pytest.approx(50, rel=0.05)  # half the measured 100/s
    asyncio.run(polls(1, 0.0))
    assert clock.slept and clock.slept[0] == pytest.approx(2.0)  # everyone waits out the pause
    # No 429 for a while: the rate grows back to what it was, then the limiter steps aside.
    for _ in range(200):
        clock.now += TokenBucket.recovery_seconds
        asyncio.run(polls(1, 0.0))
        if not limiter.engaged:
            break
    assert not limiter.engaged
    clock.slept.clear()
    asyncio.run(polls(500, 0.001))
    assert clock.slept == []


async def test_the_triggers_shared_client_has_no_fixed_poll_budget(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_wavespeed.triggers._shared_client import shared_client

    _set_conn(
        monkeypatch, "ws_polls", wavespeed_emulator.url, wavespeed_emulator.api_key, {"max_submissions_per_minute": 2}
    )
    async with shared_client("ws_polls") as client:
        assert isinstance(client._limiter, AdaptiveLimiter) and not client._limiter.engaged
        assert client._submit_limiter is None  # the triggerer never submits
        prediction = WaveSpeedHook("ws_polls").submit(FLUX, {"prompt": "x"})
        # Forty polls at once, though the connection allows two submissions a minute.
        reads = await asyncio.gather(*(client.get_prediction(prediction.id) for _ in range(40)))
        assert {read.id for read in reads} == {prediction.id}
        assert not client._limiter.engaged
