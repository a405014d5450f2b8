"""Waiting for predictions to end: the one polling engine, without Airflow.

:class:`PollRounds` makes every decision of a wait and does no I/O: when the next round of
reads comes (:class:`PollSchedule`: 1 s, 2 s, 4 s, then every ``poll_interval``, never
sooner than a 429's ``Retry-After``), whether the deadline has passed, and what each answer
means. The loops around it only sleep and read: :func:`wait_for_predictions` (async: the single
and the batch trigger, and the batch task waiting in its worker) and the sync client's
``wait_for_prediction``.

Answers: a terminal prediction ends its wait; a status this provider does not know is logged
once and polling goes on; a transient error (one :class:`RetryPolicy` retries for a read: 429,
5xx, resets) keeps a prediction pending; a refused key (401/403) ends the wait for all; any
other permanent error (404, a malformed answer) ends the wait for that prediction only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from airflow_provider_wavespeed.api.defaults import (
    DEFAULT_FIRST_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_POLL_JITTER,
    POOL_SIZE,
)
from airflow_provider_wavespeed.api.errors import WaveSpeedAuthError, WaveSpeedError, WaveSpeedNotFoundError
from airflow_provider_wavespeed.api.models import KNOWN_STATUSES, Prediction
from airflow_provider_wavespeed.api.retry import RetryPolicy

__all__ = [
    "CancelOutcome",
    "PollRounds",
    "PollSchedule",
    "WaitOptions",
    "WaitOutcome",
    "cancel_unfinished",
    "note_unknown_status",
    "read_predictions",
    "wait_for_predictions",
]

_log = logging.getLogger(__name__)

# The reads of one wait in flight at once are POOL_SIZE (as many as the shared pool has connections), so
# a batch of 1,000 queues its polls in its own few coroutines instead of 1,000 futures in the pool.


@dataclass(frozen=True)
class PollSchedule:
    """How often to poll a prediction.

    The first poll comes ``first_interval`` seconds after submission; each later wait
    doubles, up to ``poll_interval`` (1 s, 2 s, 4 s, then every ``poll_interval``). The
    default cap of 5 s keeps to the API's advice (no faster than 2 s for images and 5 s
    for video once past the first polls) while short images are still noticed quickly.
    A ±10 % jitter spreads thousands of pollers deferred at the same moment.
    """

    poll_interval: float = DEFAULT_POLL_INTERVAL
    first_interval: float = DEFAULT_FIRST_POLL_INTERVAL
    jitter: float = DEFAULT_POLL_JITTER

    def __post_init__(self) -> None:
        if not self.poll_interval > 0 or not self.first_interval > 0:
            raise ValueError(f"poll intervals must be positive, got {self.poll_interval} / {self.first_interval}")

    def interval(self, poll_number: int) -> float:
        """Seconds to wait before poll ``poll_number`` (0 = the first poll)."""
        base = min(self.poll_interval, self.first_interval * 2**poll_number)
        if self.jitter:
            base *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return base


class WaitOptions(TypedDict, total=False):
    """How a blocking wait for one prediction polls (defaults: ``WaveSpeedClient.wait_for_prediction``)."""

    poll_interval: float  # the longest wait between two polls, in seconds
    timeout: float  # seconds before the wait gives up (the prediction may still finish)


class _Reader(Protocol):
    """What the async engine needs of a client (:class:`~.client.AsyncWaveSpeedClient`)."""

    retry: RetryPolicy

    async def get_prediction(self, prediction_id: str) -> Prediction: ...


class _Canceller(_Reader, Protocol):
    """What :func:`cancel_unfinished` needs: reads and ``DELETE`` (:class:`~.client.AsyncWaveSpeedClient`)."""

    async def cancel_prediction(self, prediction_id: str) -> Prediction | None: ...


def note_unknown_status(prediction: Prediction, seen: set[str], log: Any = _log) -> None:
    """Log a status this client does not know, once per prediction (``seen`` remembers); polling goes on.

    A newer API may add statuses: an unknown one is not a reason to fail a paid generation,
    but it must not make a wait silently run to its deadline either.
    """
    if prediction.status in KNOWN_STATUSES or prediction.id in seen:
        return
    seen.add(prediction.id)
    log.warning(
        "WaveSpeed prediction %s (%s) has status %r, unknown to this provider version; treating it as "
        "still running and polling on until a known terminal status or the wait limit",
        prediction.id,
        prediction.model or "unknown model",
        prediction.status,
    )


@dataclass
class WaitOutcome:
    """How a wait for predictions ended.

    ``statuses`` holds the terminal status of each finished prediction, ``last_status`` the
    last one read of each still running (``deadline``), ``unreadable`` the error of each one
    that could not be read for good (e.g. 404); ``error`` ends the wait for all (a refused key).
    """

    statuses: dict[str, str] = field(default_factory=dict)
    last_status: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, WaveSpeedError] = field(default_factory=dict)
    deadline: bool = False
    error: WaveSpeedError | None = None

    def counts(self) -> dict[str, int]:
        counts = Counter(self.statuses.values())
        if self.last_status:
            counts["running"] = len(self.last_status)
        if self.unreadable:
            counts["unreadable"] = len(self.unreadable)
        return dict(counts)


class PollRounds:
    """The decisions of one wait for predictions, without I/O (see the module's docstring).

    A loop asks :meth:`next_wait`, sleeps that long, asks :meth:`expired`, and when the wait
    goes on reads every id in :attr:`pending` and hands the answers to :meth:`record`, until
    nothing is pending. ``clock`` is the clock ``end_time`` is on (epoch seconds by default: a
    trigger resumed by another triggerer keeps its deadline). ``on_finished`` gets each terminal
    prediction once (the triggers keep only its status: outputs may be large).
    """

    def __init__(
        self,
        prediction_ids: Sequence[str],
        *,
        schedule: PollSchedule,
        end_time: float,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.time,
        on_finished: Callable[[Prediction], None] | None = None,
        log: Any = _log,
    ) -> None:
        self.pending = list(dict.fromkeys(prediction_ids))
        self.outcome = WaitOutcome()
        self._schedule, self._end_time, self._retry, self._clock = schedule, end_time, retry, clock
        self._on_finished = on_finished
        self._log = log
        self._last = dict.fromkeys(self.pending, "not yet read")
        self._unknown: set[str] = set()
        self._server_wait = 0.0  # Retry-After of a 429 that outlasted a request's own retries
        self._round = 0

    def next_wait(self) -> float:
        """Seconds to sleep before the next round: the schedule's, a 429's ``Retry-After``, never past the deadline."""
        wait = min(max(self._schedule.interval(self._round), self._server_wait), self._end_time - self._clock())
        self._server_wait = 0.0
        return max(wait, 0.0)

    def expired(self) -> bool:
        """Whether the deadline has passed (asked after each sleep): the wait then ends, the rest still running."""
        self._round += 1
        if self._clock() < self._end_time:
            return False
        self.outcome.deadline = True
        self.outcome.last_status = {prediction_id: self._last[prediction_id] for prediction_id in self.pending}
        self.pending = []
        return True

    def record(self, answers: Mapping[str, Prediction | WaveSpeedError]) -> None:
        """Take one round's answers (each pending id's prediction, or the error its read met)."""
        still: list[str] = []
        retrying: list[tuple[str, WaveSpeedError]] = []
        for prediction_id in self.pending:
            answer = answers[prediction_id]
            if isinstance(answer, Prediction):
                if answer.is_terminal:
                    self.outcome.statuses[prediction_id] = answer.status
                    if self._on_finished is not None:
                        self._on_finished(answer)
                    continue
                note_unknown_status(answer, self._unknown, self._log)
                self._last[prediction_id] = answer.status
            elif self._retry.is_transient(answer, idempotent=True):
                # An outage outlasting one request's retries must not end a long wait.
                self._server_wait = max(self._server_wait, self._retry.server_wait(answer))
                self._last[prediction_id] = f"unreadable ({answer})"
                retrying.append((prediction_id, answer))
            elif isinstance(answer, WaveSpeedAuthError):
                self.outcome.error = answer
                self.pending = []
                return
            else:
                self.outcome.unreadable[prediction_id] = answer
                continue
            still.append(prediction_id)
        if retrying:
            more = f" (and {len(retrying) - 1} more)" if len(retrying) > 1 else ""
            self._log.warning("Poll of %s failed, will retry: %s%s", *retrying[0], more)
        if still:
            self._log.debug("WaveSpeed: %d of %d predictions still running", len(still), len(self._last))
        self.pending = still

    def last_status(self, prediction_id: str) -> str:
        """Return the last status read of ``prediction_id`` (``unreadable (...)`` after a failed read)."""
        return self._last[prediction_id]


async def read_predictions(
    client: _Reader, prediction_ids: Sequence[str], *, concurrency: int = POOL_SIZE
) -> dict[str, Prediction | WaveSpeedError]:
    """Read each prediction once, at most ``concurrency`` at a time: id -> prediction, or the error met.

    Each read has the client's own retries; what still fails is returned, not raised, so one
    unreadable prediction does not hide the others.
    """
    results: dict[str, Prediction | WaveSpeedError] = {}
    queue = iter(prediction_ids)

    async def reader() -> None:
        for prediction_id in queue:  # a shared iterator: each id goes to exactly one reader
            try:
                results[prediction_id] = await client.get_prediction(prediction_id)
            except WaveSpeedError as exc:
                results[prediction_id] = exc

    readers = max(1, min(concurrency, len(prediction_ids)))
    if readers == 1:
        await reader()  # a single wait's poll: no task to create and schedule (thousands per second)
    else:
        await asyncio.gather(*(reader() for _ in range(readers)))
    return results


async def wait_for_predictions(
    client: _Reader,
    prediction_ids: Sequence[str],
    *,
    poll_interval: float,
    end_time: float,
    first_poll_interval: float = DEFAULT_FIRST_POLL_INTERVAL,
    on_finished: Callable[[Prediction], None] | None = None,
    log: Any = _log,
    concurrency: int = POOL_SIZE,
) -> WaitOutcome:
    """Poll every prediction not yet terminal, round after round, until all are (or ``end_time``, epoch seconds).

    A round reads the pending predictions at most ``concurrency`` at a time (:class:`PollRounds`
    decides the rest).
    """
    rounds = PollRounds(
        prediction_ids,
        schedule=PollSchedule(poll_interval=poll_interval, first_interval=first_poll_interval),
        end_time=end_time,
        retry=client.retry,
        on_finished=on_finished,
        log=log,
    )
    while rounds.pending:
        wait = rounds.next_wait()
        if wait > 0:
            await asyncio.sleep(wait)
        if rounds.expired():
            break
        rounds.record(await read_predictions(client, rounds.pending, concurrency=concurrency))
    return rounds.outcome


@dataclass
class CancelOutcome:
    """What :func:`cancel_unfinished` did: each id is in exactly one of these.

    ``cancelled`` maps a cancelled prediction to the status the API answered (``deleted`` or
    ``cancelled``); ``finished`` holds the ones already terminal when read (left alone: a
    ``DELETE`` would delete a finished prediction's record); ``gone`` the 404s (nothing left to
    cancel); ``errors`` the ones neither read nor cancelled.
    """

    cancelled: dict[str, str] = field(default_factory=dict)
    finished: dict[str, Prediction] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    errors: dict[str, WaveSpeedError] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.cancelled)} cancelled", f"{len(self.finished)} already finished"]
        if self.gone:
            parts.append(f"{len(self.gone)} gone (404)")
        if self.errors:
            parts.append(f"{len(self.errors)} not cancelled ({next(iter(self.errors.values()))})")
        return ", ".join(parts)


async def cancel_unfinished(
    client: _Canceller,
    prediction_ids: Sequence[str],
    *,
    concurrency: int = POOL_SIZE,
    log: Any = _log,
) -> CancelOutcome:
    """Cancel each prediction that is not finished, at most ``concurrency`` at a time.

    Each is read first and cancelled (``DELETE``) only while unfinished: the API's ``DELETE``
    of a finished prediction deletes its record (and outputs' links) instead. A prediction that
    finishes between the read and the ``DELETE`` loses its record; the window is one request.
    Requests are paced by the client's limiter, as polls are. A 404 means nothing is left to
    cancel. Errors are returned, not raised: one failed cancel does not stop the others.
    """
    outcome = CancelOutcome()
    queue = iter(dict.fromkeys(prediction_ids))

    async def canceller() -> None:
        for prediction_id in queue:  # a shared iterator: each id goes to exactly one canceller
            try:
                prediction = await client.get_prediction(prediction_id)
                if prediction.is_terminal:
                    outcome.finished[prediction_id] = prediction
                    continue
                answer = await client.cancel_prediction(prediction_id)
                outcome.cancelled[prediction_id] = answer.status if answer is not None else "deleted"
            except WaveSpeedNotFoundError:
                outcome.gone.append(prediction_id)
            except WaveSpeedError as exc:
                outcome.errors[prediction_id] = exc

    count = len(dict.fromkeys(prediction_ids))
    if count:
        await asyncio.gather(*(canceller() for _ in range(max(1, min(concurrency, count)))))
        log.info("WaveSpeed cancel of %d unfinished prediction(s): %s", count, outcome.summary())
    return outcome
