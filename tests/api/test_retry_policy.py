"""The retry policy's and the poll schedule's rules at their edges (the survivors of a mutation run).

Pure decisions, no I/O: each test states one rule of :mod:`airflow_provider_wavespeed.api.retry`'s
docstring at the value where it changes (the mutation check, ``scripts/mutation.py``, keeps them honest).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from airflow_provider_wavespeed.api.errors import (
    WaveSpeedConfigError,
    WaveSpeedRateLimitError,
    WaveSpeedResponseError,
    WaveSpeedServerError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api.polling import PollSchedule
from airflow_provider_wavespeed.api.retry import RetryPolicy, may_have_created, parse_retry_after

WHEN = datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc)


@pytest.fixture
def draw_low(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every random draw at the low end of its range (a jitter's extreme, which chance cannot be asked for)."""
    monkeypatch.setattr(random, "uniform", lambda low, high: low)


@pytest.fixture
def draw_high(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every random draw at the high end of its range."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


# --- may_have_created: what a failed submit may have paid for ---


@pytest.mark.parametrize(
    "exc",
    [
        WaveSpeedValidationError("inputs must be a dict"),
        WaveSpeedConfigError("no API key"),
    ],
    ids=["validation", "config"],
)
def test_a_mistake_found_before_sending_created_nothing(exc: Exception) -> None:
    assert may_have_created(exc) is False  # type: ignore[arg-type]
    # ...so a submit meeting it raises it as it is, never "may have created a paid prediction".
    with pytest.raises(type(exc)) as raised:
        RetryPolicy().next_delay(1, exc, idempotent=False, what="submit of m")  # type: ignore[arg-type]
    assert raised.value is exc


@pytest.mark.parametrize(
    ("status", "created"),
    [(None, True), (200, True), (202, True), (299, True), (300, False), (301, False), (404, False), (199, False)],
)
def test_only_an_answer_under_2xx_or_none_read_may_have_created(status: int | None, created: bool) -> None:
    assert may_have_created(WaveSpeedResponseError("unreadable body", status_code=status)) is created


# --- parse_retry_after: the HTTP-date form ---


def test_an_http_date_is_the_seconds_until_it() -> None:
    header = format_datetime(WHEN, usegmt=True)
    assert parse_retry_after(header, now=WHEN.timestamp() - 30) == 30.0
    assert parse_retry_after(header, now=WHEN.timestamp() + 30) == 0.0  # in the past: no wait, never negative


def test_an_http_date_is_measured_from_the_clock_when_no_now_is_given() -> None:
    future = datetime.now(timezone.utc) + timedelta(days=365)
    seconds = parse_retry_after(format_datetime(future, usegmt=True))
    assert seconds is not None and 300 * 86400 < seconds < 400 * 86400


@pytest.mark.parametrize("header", ["Wed, 21 Oct 2015 07:28:00 -0000", "nan", "NaN", "not a date", " "])
def test_an_unreadable_or_zone_less_retry_after_is_none(header: str) -> None:
    assert parse_retry_after(header, now=WHEN.timestamp()) is None


# --- the submit's unknown outcome: what it tells the user ---


def test_a_submit_that_may_have_been_received_tells_what_to_check() -> None:
    lost = WaveSpeedTransportError("read timed out", connected=True)
    with pytest.raises(WaveSpeedSubmitUncertainError) as raised:
        RetryPolicy(max_retries=0).next_delay(1, lost, idempotent=False, what="submit of wavespeed-ai/flux-dev")
    assert str(raised.value) == (
        "WaveSpeed submit of wavespeed-ai/flux-dev: the outcome is unknown (read timed out). The request may have "
        "reached the API and created a paid prediction, so it was not repeated automatically. Check your recent "
        "predictions (WaveSpeed dashboard or history) before re-running, or a second prediction may be created "
        "and billed."
    )


# --- next_delay's limits at their edges ---


def test_a_retry_after_equal_to_the_longest_obeyed_is_obeyed_and_a_longer_one_gives_up() -> None:
    policy = RetryPolicy(retry_after_max=120.0, total_wait_max=1000.0)
    assert policy.next_delay(1, WaveSpeedRateLimitError("429", retry_after=120.0), idempotent=True, what="r") >= 120.0
    longer = WaveSpeedRateLimitError("429", retry_after=120.5)
    with pytest.raises(WaveSpeedRateLimitError):
        policy.next_delay(1, longer, idempotent=True, what="r")


def test_a_wait_that_brings_the_total_exactly_to_its_bound_is_taken(draw_high: None) -> None:
    # The first retry's wait is backoff_base (the draw at its ceiling): a bound of exactly that lets it
    # through, from nothing waited yet (the default); any wait already spent does not.
    policy = RetryPolicy(backoff_base=0.5, total_wait_max=0.5)
    error = WaveSpeedServerError("503", status_code=503)
    assert policy.next_delay(1, error, idempotent=True, what="r") == 0.5
    with pytest.raises(WaveSpeedServerError):
        policy.next_delay(1, error, idempotent=True, what="r", waited=0.01)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 7, 8])
def test_the_backoff_doubles_from_its_base_up_to_its_max_with_equal_jitter(attempt: int) -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30.0)
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    for _ in range(50):
        assert ceiling / 2 <= policy.delay(attempt) <= ceiling


def test_server_wait_is_the_retry_after_of_a_429_capped_and_nothing_else() -> None:
    policy = RetryPolicy(retry_after_max=120.0)
    assert policy.server_wait(WaveSpeedRateLimitError("429", retry_after=3.0)) == 3.0
    assert policy.server_wait(WaveSpeedRateLimitError("429", retry_after=500.0)) == 120.0
    assert policy.server_wait(WaveSpeedRateLimitError("429")) == 0.0
    assert policy.server_wait(WaveSpeedServerError("503", status_code=503)) == 0.0
    assert policy.server_wait(WaveSpeedTransportError("reset", connected=True)) == 0.0


# --- PollSchedule: 1 s, 2 s, 4 s, then every poll_interval, ±10 % ---


def test_the_schedule_doubles_from_the_first_interval_to_the_poll_interval() -> None:
    schedule = PollSchedule(poll_interval=5.0, first_interval=1.0, jitter=0.0)
    assert [schedule.interval(n) for n in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    slow = PollSchedule(poll_interval=30.0, first_interval=1.0, jitter=0.0)
    assert [slow.interval(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_jitter_spans_ten_percent_below(draw_low: None) -> None:
    schedule = PollSchedule(poll_interval=5.0, first_interval=1.0)
    assert [schedule.interval(n) for n in range(4)] == pytest.approx([0.9, 1.8, 3.6, 4.5])


def test_the_jitter_spans_ten_percent_above(draw_high: None) -> None:
    schedule = PollSchedule(poll_interval=5.0, first_interval=1.0)
    assert [schedule.interval(n) for n in range(4)] == pytest.approx([1.1, 2.2, 4.4, 5.5])


@pytest.mark.parametrize(
    ("poll_interval", "first_interval"), [(0.0, 1.0), (5.0, 0.0), (-1.0, 1.0), (5.0, -1.0), (float("nan"), 1.0)]
)
def test_a_schedule_that_would_not_wait_is_refused(poll_interval: float, first_interval: float) -> None:
    with pytest.raises(ValueError, match=r"poll intervals must be positive, got .+ / .+"):
        PollSchedule(poll_interval=poll_interval, first_interval=first_interval)
