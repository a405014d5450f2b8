"""Many generations of one model, without Airflow: the inputs, a window of submits and what each answer means.

:class:`~airflow_provider_wavespeed.operators.batch.WaveSpeedBatchOperator` keeps the record of
what was sent (:mod:`~airflow_provider_wavespeed._batch_record`) and calls
:func:`submit_window` for each window of inputs it marked in flight there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_wavespeed.api._times import utc_text
from airflow_provider_wavespeed.api._validation import rendered_json, validate_inputs
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAPIError,
    WaveSpeedAuthError,
    WaveSpeedError,
    WaveSpeedRateLimitError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTransportError,
    WaveSpeedValidationError,
)
from airflow_provider_wavespeed.api.models import Prediction

__all__ = ["WindowOutcome", "batch_inputs", "input_digest", "ranges", "submit_window", "uncertain_message"]


class _Submitter(Protocol):
    """What a window needs of a client (:class:`~.client.AsyncWaveSpeedClient`)."""

    async def submit(self, model: str, inputs: object, *, webhook: str | None = None) -> Prediction: ...


def batch_inputs(inputs: object) -> list[dict[str, Any]]:
    """Return the rendered ``inputs`` as a list of validated input dicts; the error names the bad item."""
    inputs = rendered_json(
        inputs,
        lambda text: (
            f"inputs rendered to a string that is not a JSON list ({text!r:.120}); pass a list of input dicts, "
            "the XComArg of a task that returns one (inputs=make_inputs()), or render the template to a native "
            "list (DAG(render_template_as_native_obj=True))"
        ),
    )
    if isinstance(inputs, (Mapping, str, bytes)) or not isinstance(inputs, Sequence):
        raise WaveSpeedValidationError(
            f"inputs must be a list of input dicts, one per generation (e.g. [{{'prompt': 'a fox'}}, "
            f"{{'prompt': 'a whale'}}]), got {type(inputs).__name__}"
        )
    items = []
    for index, item in enumerate(inputs):
        try:
            items.append(validate_inputs(item))
        except WaveSpeedValidationError as exc:
            raise WaveSpeedValidationError(
                f"inputs[{index}] is not valid: {exc}. Fix that item: every item of inputs is one "
                "generation's dict of model inputs; nothing was submitted"
            ) from None
    return items


def input_digest(model: str, items: list[dict[str, Any]]) -> str:
    """Return a digest of the model and the inputs: a later try checks it is resuming the same batch."""
    text = json.dumps([model, items], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class WindowOutcome:
    """A window's answers: accepted (index -> prediction id), refused by the API, or sent with no answer."""

    accepted: dict[int, str]
    rejected: dict[int, dict[str, Any]]
    uncertain: dict[int, str]
    stop: WaveSpeedError | None  # every later submit would meet it (a refused key, a spent 429)


def uncertain_message(model: str, why: str, since: str) -> str:
    """Say what to check before sending again an input whose submit has an unknown outcome."""
    return (
        f"the submit's outcome is unknown ({why}): the API may have created (and billed) this prediction, so "
        f"it was not sent again. Check the account's prediction history for a {model} prediction created "
        f"around {since} (WaveSpeed dashboard, or POST /api/v3/predictions with model and created_after) "
        "before submitting this input again"
    )


async def submit_window(
    client: _Submitter, model: str, items: Sequence[Mapping[str, Any]], window: list[int]
) -> WindowOutcome:
    """Submit ``items[i]`` for each ``i`` in ``window`` at once; classify each answer (the one place)."""
    answers = await asyncio.gather(*(_submit_one(client, model, items[index]) for index in window))
    accepted: dict[int, str] = {}
    rejected: dict[int, dict[str, Any]] = {}
    uncertain: dict[int, str] = {}
    stop: WaveSpeedError | None = None
    now = utc_text()
    for index, answer in zip(window, answers, strict=True):
        if isinstance(answer, Prediction):
            accepted[index] = answer.id
        elif isinstance(answer, WaveSpeedSubmitUncertainError):
            uncertain[index] = uncertain_message(model, str(answer), now)
        elif isinstance(answer, (WaveSpeedAuthError, WaveSpeedRateLimitError, WaveSpeedTransportError)):
            # Nothing was created (an uncertain transport error arrives as WaveSpeedSubmitUncertainError),
            # and every later submit would meet the same: the input stays unsent, for a later try.
            stop = stop or answer
        elif isinstance(answer, (WaveSpeedAPIError, WaveSpeedValidationError)):
            # The API refused this input (400, 404...), or the client did before sending it (an input that
            # is not JSON): nothing was created, and the same input fails again.
            code = answer.code if isinstance(answer, WaveSpeedAPIError) else None
            rejected[index] = {"error": f"not submitted: {answer}", "code": code}
        else:  # anything else may have happened after the request left: never send it again
            uncertain[index] = uncertain_message(model, str(answer), now)
    return WindowOutcome(accepted, rejected, uncertain, stop)


async def _submit_one(client: _Submitter, model: str, inputs: Mapping[str, Any]) -> Prediction | WaveSpeedError:
    try:
        return await client.submit(model, inputs)
    except WaveSpeedError as exc:
        return exc


def ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``: a message stays short for a thousand inputs."""
    spans: list[list[int]] = []
    for index in sorted(indexes):
        if spans and spans[-1][1] == index - 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"
