"""The prediction reader's timestamps and the time helpers (pendulum)."""

from __future__ import annotations

import time

import pendulum
import pytest

from airflow_provider_wavespeed.api._times import deadline_after, in_words, parse_timestamp
from airflow_provider_wavespeed.api.models import Prediction

DONE = {"id": "p1", "model": "a/b", "status": "completed", "outputs": ["https://cdn.example/x.png"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T12:00:00Z", pendulum.datetime(2025, 6, 1, 12, tz="UTC")),
        ("2025-06-01T20:00:00.123+08:00", pendulum.datetime(2025, 6, 1, 12, 0, 0, 123000, tz="UTC")),
        ("2025-06-01 12:00:00", pendulum.datetime(2025, 6, 1, 12, tz="UTC")),  # no zone: the API's UTC
    ],
)
def test_the_apis_timestamps_are_read_as_aware_instants(text: str, expected: pendulum.DateTime) -> None:
    prediction = Prediction.from_dict({**DONE, "created_at": text})
    assert prediction.created_at == text  # kept as sent: it round-trips through XCom
    assert prediction.created == expected and prediction.created is not None and prediction.created.tzinfo


@pytest.mark.parametrize(
    "odd", ["yesterday", "2025-13-01T00:00:00Z", "P1D", "2025-06-01", "12:00:00", 1717000000, {"at": 1}, ""]
)
def test_an_unreadable_timestamp_never_fails_a_completed_prediction(odd: object) -> None:
    prediction = Prediction.from_dict({**DONE, "created_at": odd})
    assert prediction.is_success and prediction.outputs
    assert prediction.created is None
    assert Prediction.from_dict(prediction.to_dict()) == prediction


def test_no_timestamp_is_none() -> None:
    assert Prediction.from_dict(DONE).created is None
    assert parse_timestamp(None) is None


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1800, "30 minutes"), (90.4, "1 minute 30 seconds"), (300, "5 minutes"), (0.25, "0.25 seconds"), (1, "1 second")],
)
def test_durations_in_messages_are_in_words(seconds: float, words: str) -> None:
    assert in_words(seconds) == words


def test_a_deadline_is_an_aware_utc_instant_from_now() -> None:
    before = time.time()
    deadline = deadline_after(1800.5)
    assert deadline.timezone_name == "UTC"
    assert before + 1800.5 <= deadline.timestamp() <= time.time() + 1800.5
