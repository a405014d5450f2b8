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

import pytest

from airflow_provider_wavespeed.api import AsyncWaveSpeedClient, RetryPolicy
from airflow_provider_wavespeed.api.polling import CancelOutcome, cancel_unfinished
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
    assert outcome.summary() == f"1 cancelled, 0 already finished, 1 not cancelled ({outcome.errors[first]})"


def test_nothing_to_cancel_reads_and_logs_nothing(
    wavespeed_emulator: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="airflow_provider_wavespeed.api.polling"):
        outcome = _cancel(wavespeed_emulator, [])
    assert outcome == CancelOutcome() and caplog.records == []
