"""api/polling.py without Airflow: the poll decider's rules, and the cancel of unfinished predictions.

:class:`PollRounds` does no I/O, so its decisions are driven here round by round with the answers
a read could bring and a clock the test sets (the loops that sleep and read are proven against the
emulator in tests/api/test_client.py and the trigger tests). :func:`cancel_unfinished` runs against
the emulator, with predictions held running (nothing depends on the machine's speed). These are the
fast tests the mutation check (scripts/mutation.py) runs each mutant against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_wavespeed.api import AsyncWaveSpeedClient, PollSchedule, RetryPolicy, polling
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAuthError,
    WaveSpeedNotFoundError,
    WaveSpeedRateLimitError,
    WaveSpeedServerError,
)
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.polling import (
    CancelOutcome,
    PollRounds,
    cancel_unfinished,
    note_unknown_status,
    read_predictions,
    wait_for_predictions,
)
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
FAST = RetryPolicy(max_retries=0, rate_limit_retries=0, backoff_base=0.01, backoff_max=0.01)


def _cancel(emulator: WaveSpeedEmulator, ids: list[str], **kwargs: object) -> CancelOutcome:
    async def go() -> CancelOutcome:
        async with AsyncWaveSpeedClient(emulator.api_key, emulator.url, retry=FAST) as client:
            return await cancel_unfinished(client, ids, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(go())


def _submit(emulator: WaveSpeedEmulator, prompt: str) -> str:
    async def go() -> str:
        async with AsyncWaveSpeedClient(emulator.api_key, emulator.url, retry=FAST) as client:
            return (await client.submit(FLUX, {"prompt": prompt})).id

    return asyncio.run(go())


@pytest.mark.parametrize("concurrency", [1, 16])
@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_only_unfinished_predictions_are_cancelled_each_once(
    wavespeed_emulator: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture, concurrency: int, cancel_status: str
) -> None:
    wavespeed_emulator.set_cancel_status(cancel_status)
    wavespeed_emulator.hold()
    running = [_submit(wavespeed_emulator, f"running {n}") for n in range(3)]
    done = _submit(wavespeed_emulator, "done")
    wavespeed_emulator.release(done)
    ids = [running[0], done, running[1], "no-such-prediction", running[2], running[0]]  # one twice
    with caplog.at_level(logging.INFO, logger="airflow_provider_wavespeed.api.polling"):
        outcome = _cancel(wavespeed_emulator, ids, concurrency=concurrency)
    assert outcome.cancelled == dict.fromkeys(running, cancel_status)
    assert list(outcome.finished) == [done] and outcome.finished[done].status == "completed"
    assert outcome.gone == ["no-such-prediction"] and outcome.errors == {}
    deletes = {pid: wavespeed_emulator.prediction_state(pid)["delete_requests"] for pid in [*running, done]}
    assert deletes == {**dict.fromkeys(running, 1), done: 0}  # each once; never the finished one
    summary = "3 cancelled, 1 already finished, 1 gone (404)"
    assert outcome.summary() == summary
    assert [r.getMessage() for r in caplog.records] == [f"WaveSpeed cancel of 5 unfinished prediction(s): {summary}"]


def test_a_cancel_that_fails_is_reported_and_the_others_go_on(
    wavespeed_emulator: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    wavespeed_emulator.hold()
    first, second = _submit(wavespeed_emulator, "first"), _submit(wavespeed_emulator, "second")
    wavespeed_emulator.add_fault("delete_prediction", "http_error", times=1, status=500)
    outcome = _cancel(wavespeed_emulator, [first, second], concurrency=1)
    assert list(outcome.errors) == [first] and outcome.cancelled == {second: "deleted"}
    error = outcome.errors[first]
    assert isinstance(error, WaveSpeedServerError) and error.status_code == 500
    assert outcome.summary() == f"1 cancelled, 0 already finished, 1 not cancelled ({error})"


def test_nothing_to_cancel_reads_and_logs_nothing(
    wavespeed_emulator: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="airflow_provider_wavespeed.api.polling"):
        outcome = _cancel(wavespeed_emulator, [])
    assert outcome == CancelOutcome() and caplog.records == []


# --- PollRounds: the decisions of a wait, round by round ---


class _Clock:
    """The epoch clock of a wait, moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rounds(
    ids: list[str], clock: _Clock, *, end_time: float = 1100.0, first: float = 1.0, most: float = 5.0, **kwargs: Any
) -> PollRounds:
    return PollRounds(
        ids,
        schedule=PollSchedule(poll_interval=most, first_interval=first, jitter=0.0),
        end_time=end_time,
        retry=RetryPolicy(retry_after_max=120.0),
        clock=clock,
        **kwargs,
    )


def _prediction(prediction_id: str, status: str) -> Prediction:
    return Prediction(id=prediction_id, model=FLUX, status=status)


def test_the_rounds_follow_the_schedule_and_never_sleep_past_the_deadline() -> None:
    clock = _Clock()
    rounds = _rounds(["a"], clock, end_time=1010.0)
    waits, reads = [], 0
    while True:
        wait = rounds.next_wait()
        waits.append(wait)
        clock.now += wait
        if rounds.expired():
            break
        reads += 1
        rounds.record({"a": _prediction("a", "processing")})
    assert waits == [1.0, 2.0, 4.0, 3.0]  # 1 s, 2 s, 4 s, then only the 3 s left before the deadline
    assert reads == 3
    assert rounds.outcome.deadline and rounds.outcome.last_status == {"a": "processing"}
    assert rounds.pending == [] and rounds.outcome.counts() == {"running": 1}
    assert rounds.next_wait() == 0.0  # past the deadline: no wait, never a negative one


def test_a_429_s_retry_after_is_the_floor_of_the_next_wait_only() -> None:
    clock = _Clock()
    rounds = _rounds(["a", "b"], clock)
    assert rounds.next_wait() == 1.0 and not rounds.expired()
    rounds.record(
        {
            "a": WaveSpeedRateLimitError("429", retry_after=30.0, status_code=429),
            "b": WaveSpeedRateLimitError("429", retry_after=7.0, status_code=429),
        }
    )
    assert rounds.pending == ["a", "b"] and rounds.last_status("a").startswith("unreadable (429")
    assert rounds.next_wait() == 30.0  # the longest asked, over the schedule's 2 s
    assert not rounds.expired()
    rounds.record({"a": _prediction("a", "processing"), "b": _prediction("b", "processing")})
    assert rounds.next_wait() == 4.0  # back on the schedule
    assert rounds.last_status("a") == "processing"


def test_each_answer_ends_or_continues_its_own_wait() -> None:
    clock = _Clock()
    finished: list[str] = []
    ids = ["done", "failed", "running", "gone", "outage", "done"]  # one twice: read once
    rounds = _rounds(ids, clock, on_finished=lambda p: finished.append(p.id))
    assert rounds.pending == ["done", "failed", "running", "gone", "outage"]
    assert rounds.last_status("running") == "not yet read"
    rounds.expired()
    gone = WaveSpeedNotFoundError("404", status_code=404)
    rounds.record(
        {
            "done": _prediction("done", "completed"),
            "failed": _prediction("failed", "failed"),
            "running": _prediction("running", "processing"),
            "gone": gone,
            "outage": WaveSpeedServerError("503", status_code=503),
        }
    )
    assert rounds.pending == ["running", "outage"]
    assert rounds.outcome.statuses == {"done": "completed", "failed": "failed"} and finished == ["done", "failed"]
    assert rounds.outcome.unreadable == {"gone": gone} and rounds.outcome.error is None
    assert rounds.next_wait() == 2.0  # a 503 asks for no wait of its own
    rounds.expired()
    rounds.record({"running": _prediction("running", "completed"), "outage": _prediction("outage", "cancelled")})
    assert rounds.pending == [] and not rounds.outcome.deadline
    assert rounds.outcome.counts() == {"completed": 2, "failed": 1, "cancelled": 1, "unreadable": 1}


def test_a_429_s_wait_does_not_outlive_its_round_on_a_fast_schedule() -> None:
    rounds = _rounds(["a"], _Clock(), first=0.25, most=0.5)
    assert rounds.next_wait() == 0.25  # nothing asked of the first wait but the schedule's
    rounds.expired()
    rounds.record({"a": WaveSpeedRateLimitError("429", retry_after=3.0, status_code=429)})
    assert rounds.next_wait() == 3.0
    rounds.expired()
    rounds.record({"a": _prediction("a", "processing")})
    assert rounds.next_wait() == 0.5


def test_a_refused_key_ends_the_wait_for_all() -> None:
    rounds = _rounds(["a", "b"], _Clock())
    rounds.expired()
    refused = WaveSpeedAuthError("401", status_code=401)
    rounds.record({"a": _prediction("a", "completed"), "b": refused})
    assert rounds.pending == [] and rounds.outcome.error is refused
    assert rounds.outcome.statuses == {"a": "completed"}


def test_an_unknown_status_is_logged_once_and_the_wait_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds = _rounds(["a", "b"], _Clock())
    with caplog.at_level(logging.DEBUG, logger="airflow_provider_wavespeed.api.polling"):
        for _ in range(3):
            rounds.expired()
            rounds.record({"a": _prediction("a", "paused-by-a-newer-api"), "b": _prediction("b", "processing")})
    assert rounds.pending == ["a", "b"] and rounds.last_status("a") == "paused-by-a-newer-api"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"WaveSpeed prediction a ({FLUX}) has status 'paused-by-a-newer-api', unknown to this provider version; "
        "treating it as still running and polling on until a known terminal status or the wait limit"
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == ["WaveSpeed: 2 of 2 predictions still running"] * 3


def test_failed_reads_are_logged_once_a_round_naming_the_first(caplog: pytest.LogCaptureFixture) -> None:
    rounds = _rounds(["a", "b", "c"], _Clock())
    rounds.expired()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_wavespeed.api.polling"):
        rounds.record({n: WaveSpeedServerError(f"503 for {n}", status_code=503) for n in "abc"})
        rounds.expired()
        rounds.record(
            {
                "a": WaveSpeedServerError("503 again", status_code=503),
                "b": _prediction("b", "completed"),
                "c": _prediction("c", "completed"),
            }
        )
    assert [r.getMessage() for r in caplog.records] == [
        "Poll of a failed, will retry: 503 for a (and 2 more)",
        "Poll of a failed, will retry: 503 again",
    ]
    caplog.clear()
    two = _rounds(["a", "b"], _Clock())
    two.expired()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_wavespeed.api.polling"):
        two.record({n: WaveSpeedServerError(f"503 for {n}", status_code=503) for n in "ab"})
    assert [r.getMessage() for r in caplog.records] == ["Poll of a failed, will retry: 503 for a (and 1 more)"]


def test_a_prediction_with_no_model_name_is_named_as_such(caplog: pytest.LogCaptureFixture) -> None:
    seen: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="airflow_provider_wavespeed.api.polling"):
        note_unknown_status(Prediction(id="a", model="", status="new"), seen)
        note_unknown_status(Prediction(id="a", model="", status="new"), seen)
        note_unknown_status(Prediction(id="b", model=FLUX, status="processing"), seen)
    assert seen == {"a"} and len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("WaveSpeed prediction a (unknown model) has status 'new'")


class _Reader:
    """A client whose reads are counted: the most in flight at once, and each id's reads."""

    retry = RetryPolicy()

    def __init__(self) -> None:
        self.in_flight = self.most = 0
        self.reads: list[str] = []

    async def get_prediction(self, prediction_id: str) -> Prediction:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.reads.append(prediction_id)
        await asyncio.sleep(0)  # let the other readers start theirs
        self.in_flight -= 1
        if prediction_id == "gone":
            raise WaveSpeedNotFoundError("404", status_code=404)
        return _prediction(prediction_id, "processing")


@pytest.mark.parametrize(("count", "concurrency", "most"), [(1, 16, 1), (5, 2, 2), (5, 16, 5), (3, 0, 1)])
def test_each_prediction_is_read_once_at_most_concurrency_at_a_time(count: int, concurrency: int, most: int) -> None:
    reader = _Reader()
    ids = [f"p{n}" for n in range(count - 1)] + ["gone"]
    answers = asyncio.run(read_predictions(reader, ids, concurrency=concurrency))
    assert sorted(reader.reads) == sorted(ids) and reader.most == most
    assert isinstance(answers["gone"], WaveSpeedNotFoundError)
    assert all(answers[i] == _prediction(i, "processing") for i in ids[:-1])


class _Canceller(_Reader):
    """A client whose ``DELETE`` answers carry no readable prediction, its requests counted."""

    async def cancel_prediction(self, prediction_id: str) -> Prediction | None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        return None


@pytest.mark.parametrize(("concurrency", "most"), [(1, 1), (2, 2)])
def test_a_cancel_answered_with_no_prediction_counts_as_deleted(concurrency: int, most: int) -> None:
    client = _Canceller()
    outcome = asyncio.run(cancel_unfinished(client, ["a", "b", "c"], concurrency=concurrency))
    assert outcome.cancelled == {"a": "deleted", "b": "deleted", "c": "deleted"}
    assert client.most == most and sorted(client.reads) == ["a", "b", "c"]


class _Finishing(_Reader):
    """A client whose predictions finish on their ``n``-th read (``finish_on``), or never."""

    def __init__(self, finish_on: dict[str, int]) -> None:
        super().__init__()
        self.finish_on = finish_on

    async def get_prediction(self, prediction_id: str) -> Prediction:
        await super().get_prediction(prediction_id)
        done = self.reads.count(prediction_id) >= self.finish_on.get(prediction_id, 10**9)
        return _prediction(prediction_id, "completed" if done else "processing")


def test_the_async_wait_reads_until_each_prediction_ends() -> None:
    client = _Finishing({"a": 1, "b": 3})
    finished: list[str] = []
    outcome = asyncio.run(
        wait_for_predictions(
            client,
            ["a", "b", "a"],
            poll_interval=0.01,
            first_poll_interval=0.001,
            end_time=time.time() + 600,
            on_finished=lambda p: finished.append(p.id),
            concurrency=1,
        )
    )
    assert outcome.statuses == {"a": "completed", "b": "completed"} and not outcome.deadline
    assert client.reads == ["a", "b", "b", "b"] and finished == ["a", "b"] and client.most == 1


def test_the_async_wait_ends_at_its_deadline_with_the_last_status() -> None:
    client = _Finishing({"a": 1})
    outcome = asyncio.run(
        wait_for_predictions(client, ["a", "b"], poll_interval=0.01, first_poll_interval=0.001, end_time=time.time())
    )
    assert outcome.deadline and outcome.last_status == {"a": "not yet read", "b": "not yet read"}
    assert client.reads == []  # the deadline had passed before the first round


class _Flaky(_Finishing):
    """A client whose first read of each prediction meets a 503 (after the client's own retries)."""

    async def get_prediction(self, prediction_id: str) -> Prediction:
        if prediction_id not in self.reads:
            self.reads.append(prediction_id)
            raise WaveSpeedServerError("503", status_code=503)
        return await super().get_prediction(prediction_id)


def _record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record each wait the polling module sleeps, taking it as no wait.

    Only the module's own ``asyncio`` is replaced: the emulator's threads and the readers sleep as before.
    """
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    names = {name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("_")}
    monkeypatch.setattr(polling, "asyncio", SimpleNamespace(**{**names, "sleep": sleep}))
    return slept


def test_the_async_wait_sleeps_the_schedule_and_reads_through_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    slept = _record_sleeps(monkeypatch)
    client = _Flaky({"a": 5})
    log = logging.getLogger("tests.the_caller")
    with caplog.at_level(logging.WARNING, logger="tests.the_caller"):
        outcome = asyncio.run(
            wait_for_predictions(
                client, ["a"], poll_interval=0.04, first_poll_interval=0.01, end_time=time.time() + 600, log=log
            )
        )
    assert outcome.statuses == {"a": "completed"}
    expected = [0.01, 0.02, 0.04, 0.04, 0.04]  # the first read failed; 4 reads then, the 5th sees it end
    assert slept == pytest.approx(expected, rel=0.11)  # ±10 % jitter
    assert [r.name for r in caplog.records] == ["tests.the_caller"]  # the caller's log gets the wait's warning


def test_a_wait_whose_deadline_has_passed_does_not_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = _record_sleeps(monkeypatch)
    outcome = asyncio.run(wait_for_predictions(_Reader(), ["a"], poll_interval=1.0, end_time=time.time() - 1))
    assert outcome.deadline and slept == []


def test_an_unknown_status_is_logged_to_the_wait_s_own_log(caplog: pytest.LogCaptureFixture) -> None:
    rounds = _rounds(["a"], _Clock(), log=logging.getLogger("tests.the_caller"))
    rounds.expired()
    with caplog.at_level(logging.WARNING):
        rounds.record({"a": _prediction("a", "brand-new")})
    assert [(r.name, r.levelno) for r in caplog.records] == [("tests.the_caller", logging.WARNING)]
