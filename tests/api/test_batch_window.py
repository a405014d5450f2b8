"""api/_batch.py without Airflow: a window of submits against the emulator, and what each answer means.

The operator's tests (tests/operators/test_batch.py) prove the same end to end through ``dag.test()``;
these are the fast ones the mutation check (scripts/mutation.py) runs each mutant against.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import pytest

from airflow_provider_wavespeed.api import AsyncWaveSpeedClient, RetryPolicy
from airflow_provider_wavespeed.api._batch import (
    WindowOutcome,
    batch_inputs,
    input_digest,
    ranges,
    submit_window,
    uncertain_message,
)
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAuthError,
    WaveSpeedError,
    WaveSpeedRateLimitError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
FAST = RetryPolicy(max_retries=0, rate_limit_retries=0, backoff_base=0.01, backoff_max=0.01)
ITEMS = [{"prompt": "a fox"}, {"prompt": "a whale"}, {"prompt": "an owl"}]


def _window(api_key: str, url: str, items: list[dict[str, Any]], window: list[int]) -> WindowOutcome:
    async def go() -> WindowOutcome:
        async with AsyncWaveSpeedClient(api_key, url, retry=FAST) as client:
            return await submit_window(client, FLUX, items, window)

    return asyncio.run(go())


def test_each_accepted_input_gets_its_own_prediction(wavespeed_emulator: WaveSpeedEmulator) -> None:
    outcome = _window(wavespeed_emulator.api_key, wavespeed_emulator.url, ITEMS, [2, 0])
    sent = {entry["id"]: entry for entry in wavespeed_emulator.submissions()}
    assert set(outcome.accepted) == {0, 2} and len(sent) == 2
    assert {index: sent[pid]["inputs"]["prompt"] for index, pid in outcome.accepted.items()} == {
        0: "a fox",
        2: "an owl",
    }
    assert (outcome.rejected, outcome.uncertain, outcome.stop) == ({}, {}, None)


def test_an_input_the_api_refuses_is_rejected_with_its_code_and_the_others_go_on(
    wavespeed_emulator: WaveSpeedEmulator,
) -> None:
    items = [{"prompt": "a fox"}, {"no_prompt": True}]
    outcome = _window(wavespeed_emulator.api_key, wavespeed_emulator.url, items, [0, 1])
    assert list(outcome.accepted) == [0] and outcome.uncertain == {} and outcome.stop is None
    assert outcome.rejected[1]["code"] == 400
    assert outcome.rejected[1]["error"].startswith("not submitted: ")


def test_an_input_refused_before_it_was_sent_is_rejected_never_uncertain(
    wavespeed_emulator: WaveSpeedEmulator,
) -> None:
    """A mistake found before any byte leaves the machine is never "may have created a paid prediction"."""
    items = [{"prompt": "a fox", "strength": float("nan")}, {"prompt": "a whale"}]
    outcome = _window(wavespeed_emulator.api_key, wavespeed_emulator.url, items, [0, 1])
    assert outcome.uncertain == {} and list(outcome.accepted) == [1] and outcome.stop is None
    assert outcome.rejected == {
        0: {"error": "not submitted: inputs['strength'] is nan: JSON has no NaN or Infinity", "code": None}
    }
    assert [entry["inputs"] for entry in wavespeed_emulator.submissions()] == [{"prompt": "a whale"}]


def test_a_submit_whose_answer_was_lost_is_uncertain_never_accepted(wavespeed_emulator: WaveSpeedEmulator) -> None:
    wavespeed_emulator.add_fault("submit", "drop_after_submit", times=1, skip=1)
    outcome = _window(wavespeed_emulator.api_key, wavespeed_emulator.url, ITEMS[:2], [0, 1])
    assert len(outcome.accepted) == 1 and len(outcome.uncertain) == 1 and outcome.stop is None
    (index,) = outcome.uncertain
    message = outcome.uncertain[index]
    assert message.startswith("the submit's outcome is unknown (WaveSpeed submit to wavespeed-ai/flux-dev: ")
    assert f"for a {FLUX} prediction created around 20" in message
    assert len(wavespeed_emulator.submissions()) == 2  # both were created: the lost one is not sent again


class _Unexpected:
    """A client whose submit fails with an error of no known kind: nothing real produces one today."""

    async def submit(self, model: str, inputs: object, *, webhook: str | None = None) -> Prediction:
        raise WaveSpeedError("something new went wrong")


def test_an_error_of_no_known_kind_is_uncertain_never_sent_again() -> None:
    outcome = asyncio.run(submit_window(_Unexpected(), FLUX, ITEMS, [1]))
    assert (outcome.accepted, outcome.rejected, outcome.stop) == ({}, {}, None)
    message = outcome.uncertain[1]
    prefix = (
        "the submit's outcome is unknown (something new went wrong): the API may have created (and billed) this "
        f"prediction, so it was not sent again. Check the account's prediction history for a {FLUX} prediction "
        "created around "
    )
    assert message.startswith(prefix) and message.endswith(
        " UTC (WaveSpeed dashboard, or POST /api/v3/predictions "
        "with model and created_after) before submitting this input again"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", message[len(prefix) :].split(" UTC")[0])


def test_a_refused_key_stops_the_window_and_leaves_every_input_unsent(wavespeed_emulator: WaveSpeedEmulator) -> None:
    outcome = _window("not-the-key", wavespeed_emulator.url, ITEMS, [0, 1, 2])
    assert isinstance(outcome.stop, WaveSpeedAuthError)
    assert (outcome.accepted, outcome.rejected, outcome.uncertain) == ({}, {}, {})


def test_a_spent_429_stops_the_window_and_leaves_the_input_for_a_later_try(
    wavespeed_emulator: WaveSpeedEmulator,
) -> None:
    wavespeed_emulator.add_fault("submit", "rate_limit", times=1, retry_after=0, skip=1)
    outcome = _window(wavespeed_emulator.api_key, wavespeed_emulator.url, ITEMS[:2], [0, 1])
    assert isinstance(outcome.stop, WaveSpeedRateLimitError)
    assert len(outcome.accepted) == 1 and outcome.rejected == {} and outcome.uncertain == {}


def test_an_api_that_cannot_be_reached_stops_the_window_with_nothing_uncertain() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    outcome = _window("a-key", f"http://127.0.0.1:{port}", ITEMS, [0, 1])
    assert isinstance(outcome.stop, WaveSpeedTransportError) and not outcome.stop.connected
    assert (outcome.accepted, outcome.rejected, outcome.uncertain) == ({}, {}, {})


def test_the_uncertain_message_says_what_to_check() -> None:
    assert uncertain_message(FLUX, "read timed out", "2026-12-06 23:00:00 UTC") == (
        "the submit's outcome is unknown (read timed out): the API may have created (and billed) this prediction, "
        "so it was not sent again. Check the account's prediction history for a wavespeed-ai/flux-dev prediction "
        "created around 2026-12-06 23:00:00 UTC (WaveSpeed dashboard, or POST /api/v3/predictions with model and "
        "created_after) before submitting this input again"
    )


# --- the inputs, their digest, and the short form of index lists ---


def test_inputs_are_a_list_of_dicts_or_its_json_text() -> None:
    assert batch_inputs([{"prompt": "a"}, '{"prompt": "b"}']) == [{"prompt": "a"}, {"prompt": "b"}]
    assert batch_inputs('[{"prompt": "a"}]') == [{"prompt": "a"}]
    assert batch_inputs(({"prompt": "a"},)) == [{"prompt": "a"}]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"prompt": "a"}, r"^inputs must be a list of input dicts, one per generation .* got dict$"),
        (b"[]", r"got bytes$"),
        (7, r"got int$"),
        ('"a fox"', r"got str$"),
        (
            "not json",
            r"^inputs rendered to a string that is not a JSON list \('not json'\); pass a list of input dicts, the "
            r"XComArg of a task that returns one \(inputs=make_inputs\(\)\), or render the template to a native "
            r"list \(DAG\(render_template_as_native_obj=True\)\)$",
        ),
        (
            [{"prompt": "a"}, ["not", "a", "dict"]],
            r"^inputs\[1\] is not valid: inputs must be a dict .*\. Fix that item: every item of inputs is one "
            r"generation's dict of model inputs; nothing was submitted$",
        ),
    ],
    ids=["dict", "bytes", "int", "json-string", "not-json", "bad-item"],
)
def test_inputs_that_are_not_a_list_of_dicts_are_refused_naming_what_is_wrong(inputs: object, message: str) -> None:
    with pytest.raises(WaveSpeedValidationError, match=message) as raised:
        batch_inputs(inputs)
    assert raised.value.__cause__ is None  # the item's own error is in the message, not chained


def test_the_digest_of_a_batch_is_the_one_an_earlier_release_wrote() -> None:
    """A try resumes a record an earlier try wrote, maybe before an upgrade: the digest must not drift."""
    items = [{"seed": 1, "prompt": "a fox"}, {"prompt": "une forêt"}]
    assert input_digest(FLUX, items) == "ec42bb7610e452d35743c028979dbf36"


def test_the_digest_tells_the_same_batch_from_another() -> None:
    items = [{"prompt": "a", "seed": 1}, {"prompt": "b"}]
    digest = input_digest(FLUX, items)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert input_digest(FLUX, [{"seed": 1, "prompt": "a"}, {"prompt": "b"}]) == digest  # key order is not compared
    assert input_digest("wavespeed-ai/other", items) != digest
    assert input_digest(FLUX, items[::-1]) != digest
    assert input_digest(FLUX, [{"prompt": "é"}]) == input_digest(FLUX, [{"prompt": "é"}])


@pytest.mark.parametrize(
    ("indexes", "text"),
    [([0, 1, 2, 5], "0-2, 5"), ([5, 2, 0, 1], "0-2, 5"), ([3], "3"), ([], "none"), ([1, 3, 4, 6, 7, 8], "1, 3-4, 6-8")],
)
def test_index_lists_are_written_as_ranges(indexes: list[int], text: str) -> None:
    assert ranges(indexes) == text
