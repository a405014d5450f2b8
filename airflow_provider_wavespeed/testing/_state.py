"""The emulator's single state object: predictions, faults, limits and counters.

Every change a test can make goes through :class:`EmulatorState`, whether it
comes from a Python call or from the ``/_emulator/control`` HTTP endpoint. The
server thread and test threads both touch it, so compound updates hold a lock.
Status is computed from the clock on each read; nothing runs per prediction. A held
prediction (:meth:`EmulatorState.hold`) ignores the clock: it is ``processing`` until
a test releases it, or until it has answered a given number of polls.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import heapq
import hmac
import math
import os
import random
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import _media, _models

# "deleted": what a prediction deleted through the API answers (terminal for the official SDK).
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout", "deleted"})
OUTCOME_STATUSES = frozenset({"failed", "cancelled", "timeout"})
# Every status the API's own tools list (the official CLI's filter, after the API server's enum).
LISTED_STATUSES = frozenset({"created", "processing"}) | TERMINAL_STATUSES
# What an unfinished prediction reads once a DELETE stopped it: the docs show `deleted` (the default);
# the status enum also has `cancelled`, which a provider must handle the same way.
CANCEL_STATUSES = frozenset({"deleted", "cancelled"})
HISTORY_DAYS = 7  # the history lists the last 7 days
FAULT_KINDS = frozenset(
    {"http_error", "rate_limit", "html", "truncated", "wrong_types", "missing_outputs", "envelope_error"}  # answers
    | {"drop", "drop_after_submit", "drop_after_delete", "slow", "slow_after_submit"}  # the connection
)
# Endpoints that count as API calls: they need auth and "any" faults match them. "delete" is
# POST /predictions/delete (ids in the body), "delete_prediction" is DELETE /predictions/{id}.
API_ENDPOINTS = frozenset(
    {"submit", "result", "prediction", "balance", "upload", "upload_ticket", "pricing", "history", "delete", "models"}
    | {"delete_prediction"}
)
# "upload_put" is the pre-signed storage URL: no auth, like "files".
FAULT_ENDPOINTS = API_ENDPOINTS | {"files", "upload_put", "any"}
DEFAULT_ERRORS = {
    "failed": "Inference failed: the model raised an error (emulated)",
    "cancelled": "Prediction was cancelled (emulated)",
    "timeout": "Prediction timed out (emulated)",
}
# The API's failure classes ("Error Codes" page): 1xxx fix the input (1200 moderation), 5xxx server side.
FAILURE_CODES = frozenset({1200, 1400, 1401, 1402, 1403, 1405, 5000, 5003, 5004})
DEFAULT_CODES: dict[str, int | None] = {"failed": 1403, "timeout": 5004, "cancelled": None}
# Account tiers ("Account Levels & Rate Limits"): generations started per minute, concurrent tasks.
TIERS: dict[str, tuple[int, int]] = {
    "bronze": (2, 2),
    "silver": (500, 300),
    "gold": (3000, 3000),
    "ultra": (5000, 10000),
}
# Documented upload size limits per media type (other types: no limit here).
UPLOAD_LIMITS = {"image": 20 * 1024 * 1024, "video": 100 * 1024 * 1024, "audio": 50 * 1024 * 1024}
REQUEST_LOG_SIZE = 200_000
# "created" lasts this long (or 10 % of the duration when that is shorter).
CREATED_PHASE_SECONDS = 0.2

Duration = float | tuple[float, float]


class InsufficientBalance(Exception):
    """A submission costs more than the remaining balance."""


class TierRateLimited(Exception):
    """A submission over the tier's starts per minute; ``retry_after`` whole seconds until one is allowed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Tier:
    """An account tier's limits; None means no limit of that kind."""

    name: str
    starts_per_minute: int | None
    concurrency: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "starts_per_minute": self.starts_per_minute, "concurrency": self.concurrency}


def _positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    return value


def resolve_tier(
    name: str | None = None, starts_per_minute: int | None = None, concurrency: int | None = None
) -> Tier | None:
    """Return a preset by name, custom numbers overriding it; all None: no tier limits."""
    starts = _positive_int("starts_per_minute", starts_per_minute)
    cap = _positive_int("concurrency", concurrency)
    if name is None:
        return None if starts is None and cap is None else Tier("custom", starts, cap)
    if name not in TIERS:
        raise ValueError(f"unknown tier {name!r}; expected one of {sorted(TIERS)} or None")
    preset_starts, preset_cap = TIERS[name]
    return Tier(name, preset_starts if starts is None else starts, preset_cap if cap is None else cap)


@dataclass
class UploadTicket:
    """A two-step upload: announced by ``POST /media/uploads``, filled by the pre-signed ``PUT``."""

    size: int
    content_type: str


def rfc3339_nanos(epoch_ns: int) -> str:
    """``2025-05-19T06:09:15.948268264Z`` for a ``time.time_ns()`` value."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _safe_filename(filename: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(filename or "")) or "upload.bin"


class Prediction:
    """One submitted task; its status is a function of the clock."""

    __slots__ = (
        "base64_output",
        "cancelled_at",
        "code",
        "completes_at",
        "created_at",
        "created_ns",
        "delete_requests",
        "deleted",
        "deleted_status",
        "duration",
        "error",
        "ext",
        "held",
        "id",
        "inputs",
        "model",
        "num_outputs",
        "outcome",
        "polls",
        "processing_at",
        "queued",
        "release_after_polls",
        "submitted_at",
        "webhook",
    )

    def __init__(
        self,
        model: str,
        inputs: dict[str, Any],
        duration: float,
        outcome: str,
        error: str,
        webhook: str | None,
        spec: _models.ModelSpec | None = None,
    ) -> None:
        now_ns = time.time_ns()
        self.id = uuid.uuid4().hex
        self.model = model
        self.inputs = inputs
        self.submitted_at = now_ns / 1e9
        self.created_ns = now_ns  # what the history filters on (``backdate`` moves it)
        self.created_at = rfc3339_nanos(now_ns)
        self.duration = duration
        self.processing_at = self.submitted_at + min(CREATED_PHASE_SECONDS, duration / 10)
        self.completes_at = self.submitted_at + duration
        self.outcome = outcome
        self.error = error
        self.webhook = webhook
        self.num_outputs, self.ext = _models.output_spec(model, inputs, spec)
        self.base64_output = inputs.get("enable_base64_output") is True
        self.polls = 0
        self.held = False
        self.release_after_polls: int | None = None
        self.code: int | None = None  # the failure class of a failed/timed-out outcome
        self.deleted = False
        self.deleted_status = "deleted"  # what it reads once deleted: "cancelled" when a DELETE stopped it so
        self.cancelled_at: float | None = None  # when a DELETE stopped it before it finished
        self.delete_requests = 0  # DELETE /predictions/{id} requests acted on
        self.queued = False  # waiting for a slot under the tier's concurrency cap: "created"

    def enqueue(self) -> None:
        """Wait in the tier queue: ``created`` until :meth:`start` (the clock does not move it)."""
        self.queued = True
        self.processing_at = self.completes_at = math.inf

    def start(self, at: float) -> None:
        """Leave the queue at ``at`` (when a slot freed): the run time starts then.

        Never before its own submission: ``time.time()`` and ``time.time_ns() / 1e9`` may
        disagree by a microsecond, and a slot freed before it arrived (lazily admitted) is
        taken when it arrived.
        """
        self.queued = False
        self.processing_at = max(at, self.submitted_at)
        self.completes_at = self.processing_at + self.duration

    def hold(self, polls: int | None) -> None:
        """Keep it ``processing`` from now until :meth:`release` (or until ``polls`` polls have seen it so)."""
        self.held = True
        self.processing_at = self.submitted_at
        self.release_after_polls = polls

    def release(self, now: float) -> None:
        """Finish now with the planned outcome; timings report the time it was held."""
        self.held = False
        self.completes_at = now
        self.duration = now - self.submitted_at

    def status(self, now: float) -> str:
        if self.deleted:
            return self.deleted_status
        if self.queued:  # a held one too: the hold applies once it has a slot
            return "created"
        if self.held:
            return "processing"
        if now >= self.completes_at:
            return self.outcome
        return "processing" if now >= self.processing_at else "created"

    def file_names(self) -> list[str]:
        return [f"{self.id}_{index}.{self.ext}" for index in range(self.num_outputs)]

    def to_api(self, base_url: str, now: float) -> dict[str, Any]:
        """Return the API's prediction object; ``base_url`` is where this client reached us."""
        status = self.status(now)
        outputs: list[str] = []
        if status == "completed":
            if self.base64_output:
                outputs = [
                    base64.b64encode(_media.output_bytes(self.id, index, self.ext, self.inputs)).decode()
                    for index in range(self.num_outputs)
                ]
            else:
                outputs = [f"{base_url}/_emulator/files/{name}" for name in self.file_names()]
        terminal = status in TERMINAL_STATUSES
        failed = status in OUTCOME_STATUSES
        inference = self.duration if terminal else 0.0
        error, code = (self.error, self.code) if failed else ("", None)
        if self.cancelled_at is not None:
            # Stopped by a DELETE: the record keeps the work done until then, no outputs, no failure code.
            inference = max(0.0, self.cancelled_at - self.processing_at)
            error, code = (DEFAULT_ERRORS["cancelled"], None) if failed else ("", None)
        data: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": status,
            "outputs": outputs,
            "urls": {"get": f"{base_url}/api/v3/predictions/{self.id}/result"},
            "has_nsfw_contents": [False] * len(outputs),
            "created_at": self.created_at,
            "error": error,
            "timings": {"inference": int(inference * 1000)},
        }
        if code is not None:
            data["code"] = code  # where the official SDK reads it (``data.code == 5004``)
        return data

    def mark_deleted(self, now: float, cancel_status: str) -> bool:
        """Delete it; True when that stopped it unfinished (a cancellation), which then reads ``cancel_status``.

        A queued one leaves the queue (the caller's part); its run time, if any, ends now.
        """
        unfinished = self.status(now) in ("created", "processing")
        self.deleted = True
        if not unfinished:
            return False
        self.deleted_status = cancel_status
        self.cancelled_at = now
        return True


@dataclass
class Fault:
    """A planned misbehaviour for the next ``remaining`` matching requests."""

    id: str
    endpoint: str
    kind: str
    remaining: int | None
    status: int | None
    retry_after: float | None
    delay: float | None
    model: str | None
    skip: int = 0  # matching requests still let through before it applies

    def matches(self, endpoint: str, model: str | None) -> bool:
        if self.endpoint != endpoint and not (self.endpoint == "any" and endpoint in API_ENDPOINTS):
            return False
        return self.model is None or self.model == model


@dataclass
class _SubmissionRule:
    """Applies to the next ``remaining`` (None: all) submissions of ``model`` whose prompt contains a text."""

    model: str | None
    prompt_contains: str | None
    remaining: int | None

    def matches(self, model: str, inputs: Mapping[str, Any]) -> bool:
        if self.model is not None and self.model != model:
            return False
        if self.prompt_contains is None:
            return True
        prompt = inputs.get("prompt")
        return isinstance(prompt, str) and self.prompt_contains in prompt


@dataclass
class _OutcomeRule(_SubmissionRule):
    status: str = "completed"
    error: str = ""
    code: int | None = None


@dataclass
class _HoldRule(_SubmissionRule):
    polls: int | None = None


def _take_rule(rules: list[Any], model: str, inputs: Mapping[str, Any]) -> Any:
    """Return the first rule matching this submission, using up one of its times (caller holds the lock)."""
    for rule in rules:
        if rule.matches(model, inputs):
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    rules.remove(rule)
            return rule
    return None


class _TokenBucket:
    """Global request rate limit; fractional rates work, the burst is one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> int | None:
        """None when admitted, else whole seconds to wait (at least 1)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


def _registered(model: str, kind: str, required: list[str] | tuple[str, ...] = ()) -> _models.ModelSpec:
    problem = _models.check_model_id(model) if isinstance(model, str) else (400, f"invalid model id {model!r}")
    if problem is not None:
        raise ValueError(problem[1])
    if isinstance(required, str):
        raise ValueError(f"required must be a list of input names, got {required!r}")
    return _models.registered_spec(kind, required)


def _check_lag(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"the history lag must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _check_duration(value: Any) -> Duration:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError("a duration range must be (min, max)")
        low, high = (_check_duration(part) for part in value)
        if not isinstance(low, float) or not isinstance(high, float) or low > high:
            raise ValueError(f"invalid duration range {value!r}")
        return (low, high)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"duration must be a number of seconds >= 0, got {value!r}")
    return float(value)


class EmulatorState:
    """All mutable emulator state and the control operations on it."""

    def __init__(
        self,
        *,
        api_key: str,
        duration: Duration,
        balance: float,
        webhook_secret: str,
        tier: Tier | None = None,
        history_inputs: bool = True,
        history_lag: float = 0.0,
        allow_any_model: bool = False,
        models: Mapping[str, str] | None = None,
    ) -> None:
        self._initial = (api_key, _check_duration(duration), float(balance), webhook_secret)
        # The catalog plus the models registered at start (id -> kind); reset() comes back to them.
        self._initial_models = (
            bool(allow_any_model),
            {**_models.CATALOG, **{model: _registered(model, kind) for model, kind in (models or {}).items()}},
        )
        self._initial_tier = tier  # reset() comes back to the tier the emulator started with
        self._initial_history = (bool(history_inputs), _check_lag(history_lag))
        self._upload_secret = secrets.token_bytes(16)  # signs the pre-signed upload URLs
        self._lock = threading.Lock()
        self.upload_dir = tempfile.mkdtemp(prefix="wavespeed-emulator-")
        self._reset_locked()

    # -- lifecycle -----------------------------------------------------------------

    def _reset_locked(self) -> None:
        api_key, duration, balance, webhook_secret = self._initial
        self.api_key = api_key
        self.balance = balance
        self.webhook_secret = webhook_secret
        self.default_duration: Duration = duration
        self.durations: dict[str, Duration] = {}
        self.prices: dict[str, float] = {}
        self.predictions: dict[str, Prediction] = {}
        self.faults: list[Fault] = []
        self.outcomes: list[_OutcomeRule] = []
        self.holds: list[_HoldRule] = []
        self.rate_limit: _TokenBucket | None = None
        self.request_counts: dict[str, int] = {}
        self.response_counts: dict[str, int] = {}
        self.submission_counts: dict[str, int] = {}
        self.webhook_counts = {"sent": 0, "failed": 0}
        self.submission_log: list[dict[str, Any]] = []
        self.log: deque[tuple[float, str, int]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.uploads: dict[str, str] = {}  # served name -> file path
        self.upload_tickets: dict[str, UploadTicket] = {}  # served name -> announced size and type
        self.upload_put_with_authorization = 0  # PUTs to a pre-signed URL that carried an Authorization header
        self.rate_limited: dict[str, int] = {}  # 429 answers per endpoint
        self.tier: Tier | None = self._initial_tier
        self._starts: dict[str, deque[float]] = {}  # per kind ("image"/"video"): start times in the last minute
        self._running: list[tuple[float, str]] = []  # heap of (completes_at, id) holding a concurrency slot
        self._held_slots: list[Prediction] = []  # held predictions holding a slot: they free it once released
        self._queue: deque[Prediction] = deque()  # FIFO of predictions waiting for a slot
        self.tier_counts = {"rejected": 0, "queued_total": 0, "max_queued": 0}
        self.cancel_status = "deleted"
        # What the history shows (set_history): each entry's inputs, and how late a new prediction appears.
        self.history_inputs, self.history_lag = self._initial_history
        self.cancellation_log: list[dict[str, Any]] = []  # predictions a DELETE stopped before they finished
        any_model, models = self._initial_models
        self.any_model = any_model  # accept ids the catalog does not know (allow_any_model)
        self.models: dict[str, _models.ModelSpec] = dict(models)

    def close(self) -> None:
        """Remove uploaded files."""
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    # -- control operations (mirrored by the HTTP control endpoint) -------------------

    def reset(self) -> None:
        """Forget predictions, faults, outcomes, counters and limits; restore the initial config."""
        with self._lock:
            for path in self.uploads.values():
                with contextlib.suppress(OSError):
                    os.remove(path)
            self._reset_locked()

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int | None = 1,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
        model: str | None = None,
        skip: int = 0,
    ) -> str:
        """Make the next ``times`` (None: all) requests to ``endpoint`` misbehave; returns the fault id.

        ``skip`` lets that many matching requests through first (e.g. the second of two submits fails).

        ``endpoint`` is an API endpoint (``submit``, ``result``, ``upload``...), ``files``,
        ``upload_put`` or ``any`` (every API endpoint); ``model`` narrows it to one model. Kinds:
        ``http_error`` (``status``, default 503; 5xx as a proxy's HTML page), ``rate_limit`` (429 with
        ``Retry-After: retry_after``), ``html``, ``truncated`` (half a JSON body), ``wrong_types``,
        ``missing_outputs``, ``envelope_error`` (HTTP 200 carrying code 500), ``drop`` (close the
        connection without an answer), ``drop_after_submit`` (create the prediction, then drop),
        ``slow`` (answer after ``delay`` seconds), ``slow_after_submit`` (create the prediction, then
        answer after ``delay`` seconds: a submit in flight that has already created its prediction) and
        ``drop_after_delete`` (endpoint ``delete_prediction``: delete, then drop: a DELETE whose answer
        was lost).
        """
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(FAULT_ENDPOINTS)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind in ("drop_after_submit", "slow_after_submit") and endpoint != "submit":
            raise ValueError(f"{kind} only applies to the 'submit' endpoint")
        if kind == "drop_after_delete" and endpoint != "delete_prediction":
            raise ValueError(f"{kind} only applies to the 'delete_prediction' endpoint")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError("skip must be a whole number >= 0")
        if kind in ("slow", "slow_after_submit") and (delay is None or delay < 0):
            raise ValueError(f"a {kind!r} fault needs delay >= 0 seconds")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        fault = Fault(uuid.uuid4().hex[:12], endpoint, kind, times, status, retry_after, delay, model, skip)
        with self._lock:
            self.faults.append(fault)
        return fault.id

    def remove_fault(self, fault_id: str) -> bool:
        """Remove a fault; False when it was already used up or never existed."""
        with self._lock:
            before = len(self.faults)
            self.faults = [fault for fault in self.faults if fault.id != fault_id]
            return len(self.faults) != before

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self.faults = []

    def set_outcome(
        self,
        status: str,
        *,
        error: str | None = None,
        model: str | None = None,
        prompt_contains: str | None = None,
        times: int | None = None,
        code: int | None = None,
    ) -> None:
        """Make matching future submissions end in ``status`` instead of ``completed``.

        ``code`` is the failure class the prediction carries (1200 moderation, 14xx input, 5xxx
        server side); by default 1403 for ``failed``, 5004 for ``timeout``, none for ``cancelled``.
        """
        if status not in OUTCOME_STATUSES:
            raise ValueError(f"status must be one of {sorted(OUTCOME_STATUSES)}, got {status!r}")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int) or not 1000 <= code <= 5999):
            raise ValueError(
                f"code must be an API failure code (1xxx or 5xxx, e.g. {sorted(FAILURE_CODES)}), got {code!r}"
            )
        code = DEFAULT_CODES[status] if code is None else code
        rule = _OutcomeRule(model, prompt_contains, times, status, error or DEFAULT_ERRORS[status], code)
        with self._lock:
            self.outcomes.append(rule)

    def set_duration(self, seconds: float | tuple[float, float] | list[float], *, model: str | None = None) -> None:
        """Set how long later predictions take: seconds, or a (min, max) range drawn per prediction.

        With ``model``, for that model only.
        """
        duration = _check_duration(seconds)
        with self._lock:
            if model is None:
                self.default_duration = duration
            else:
                self.durations[model] = duration

    def hold(
        self,
        *,
        model: str | None = None,
        prompt_contains: str | None = None,
        polls: int | None = None,
        times: int | None = None,
    ) -> None:
        """Keep matching later submissions ``processing``, whatever the clock, until :meth:`release`.

        With ``polls=N`` each also releases itself: its first N polls (GET of the prediction or its
        result) answer ``processing`` and poll N+1 its outcome. ``times`` limits the rule to the
        next ``times`` matching submissions. Set durations do not apply to a held prediction.
        """
        if polls is not None and (isinstance(polls, bool) or not isinstance(polls, int) or polls < 0):
            raise ValueError(f"polls must be an integer >= 0 or None, got {polls!r}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self.holds.append(_HoldRule(model, prompt_contains, times, polls))

    def release(self, prediction_id: str | None = None) -> int:
        """Finish held predictions now, each with its planned outcome; returns how many.

        One prediction (KeyError when unknown; 0 when it is not held), or with no id every held
        prediction, and stop holding new submissions (the :meth:`hold` rules are removed).
        """
        now = time.time()
        with self._lock:
            if prediction_id is not None:
                prediction = self.predictions.get(prediction_id)
                if prediction is None:
                    raise KeyError(f"unknown prediction {prediction_id!r}")
                held = [prediction] if prediction.held else []
            else:
                self.holds = []
                held = [prediction for prediction in self.predictions.values() if prediction.held]
            for prediction in held:
                prediction.release(now)
        return len(held)

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        """Limit all API requests to this rate (429 beyond it); None removes the limit."""
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 or None")
        with self._lock:
            self.rate_limit = None if requests_per_second is None else _TokenBucket(requests_per_second)

    def set_tier(
        self, name: str | None = None, *, starts_per_minute: int | None = None, concurrency: int | None = None
    ) -> None:
        """Apply an account tier's limits to submissions; no arguments: no tier limits.

        ``name`` is a preset (bronze 2/min and 2 concurrent, silver 500/300, gold 3000/3000, ultra
        5000/10000); the numbers override it, or alone make a custom tier. A submission over the
        starts per minute (images and videos counted apart) gets 429 with ``Retry-After``; one over
        the concurrency cap is accepted and stays ``created`` in a FIFO queue until a running
        prediction finishes, and its run time starts then. Polls are never tier-limited.
        """
        tier = resolve_tier(name, starts_per_minute, concurrency)
        now = time.time()
        with self._lock:
            self._advance_locked(now)  # settle the queue under the old cap first
            tracked = self.tier is not None and self.tier.concurrency is not None
            self.tier = tier
            if tier is None or tier.concurrency is None:
                for prediction in self._queue:
                    prediction.start(now)
                self._queue.clear()
                self._running, self._held_slots = [], []
                return
            if not tracked:  # predictions already running take slots from now on
                for prediction in self.predictions.values():
                    if prediction.held:
                        self._held_slots.append(prediction)
                    elif prediction.completes_at > now:
                        self._running.append((prediction.completes_at, prediction.id))
                heapq.heapify(self._running)
            while self._queue and self._slots_used() < tier.concurrency:  # a raised cap admits at once
                self._admit_locked(self._queue.popleft(), now)

    def set_api_key(self, key: str) -> None:
        """Accept only ``key`` from now on (the old key gets 401)."""
        if not key:
            raise ValueError("the API key must not be empty")
        self.api_key = key

    def set_balance(self, usd: float) -> None:
        """Set the account balance in USD."""
        with self._lock:
            self.balance = float(usd)

    def set_webhook_secret(self, secret: str) -> None:
        """Set the secret webhooks are signed with (``whsec_`` prefix optional)."""
        self.webhook_secret = secret

    def set_price(self, usd: float, *, model: str) -> None:
        """Charge a flat ``usd`` per submission of ``model``.

        NaN or infinity is answered as is by ``/model/pricing`` (JSON allows neither, Python writes
        both): a broken price, for tests of what a client does with one.
        """
        if usd < 0:
            raise ValueError("price must be >= 0")
        with self._lock:
            self.prices[model] = float(usd)

    def set_cancel_status(self, status: str = "deleted") -> None:
        """Set what an unfinished prediction reads after a DELETE stopped it.

        ``deleted`` (the default, the documented answer of ``DELETE /predictions/{id}``) or
        ``cancelled`` (also a status of the API).

        A finished prediction always reads ``deleted`` once deleted. ``reset()`` restores ``deleted``.
        """
        if status not in CANCEL_STATUSES:
            raise ValueError(f"status must be one of {sorted(CANCEL_STATUSES)}, got {status!r}")
        with self._lock:
            self.cancel_status = status

    def cancellations(self) -> list[dict[str, Any]]:
        """Return the predictions a DELETE stopped before they finished, in order.

        Each: id, model, cancelled_at, status (what it read just before: ``created`` or ``processing``).
        """
        with self._lock:
            return copy.deepcopy(self.cancellation_log)

    def set_history(self, *, inputs: bool | None = None, lag: float | None = None) -> dict[str, Any]:
        """Set what ``POST /predictions`` (the history) shows; None keeps a setting. Return both settings.

        ``inputs``: each entry carries the ``input`` it was submitted with (True, the emulator's
        default) or not (False: like the API's documented example, which shows none). ``lag``:
        seconds after its submission before a new prediction is listed (0: at once; the real history
        may list one a moment late). ``reset()`` restores the emulator's initial settings.
        """
        with self._lock:
            if inputs is not None:
                self.history_inputs = bool(inputs)
            if lag is not None:
                self.history_lag = _check_lag(lag)
            return {"inputs": self.history_inputs, "lag": self.history_lag}

    def allow_any_model(self, allowed: bool = True) -> None:
        """Accept every well-formed model id with any inputs (True), or only known ones (False, the default).

        By default the emulator knows the models of its catalog (``GET /api/v3/models`` lists them) and
        those registered, and answers any other id as the API does: 404 "Model not found", so a typo
        fails in your tests as it would in production. ``reset()`` restores the emulator's start setting.
        """
        if not isinstance(allowed, bool):
            raise ValueError(f"allowed must be True or False, got {allowed!r}")
        with self._lock:
            self.any_model = allowed

    def register_model(
        self, model: str, *, kind: str = "text-to-image", required: list[str] | tuple[str, ...] = ()
    ) -> None:
        """Know ``model`` from now on, with its ``kind`` and the inputs it requires.

        ``kind``: ``text-to-image``, ``image-to-image``, ``text-to-video`` or ``image-to-video`` (videos
        count against the tier's videos per minute). A submit without a ``required`` input gets 400;
        other inputs are not checked. ``reset()`` forgets it (register at start with
        ``models={id: kind}`` / ``--model ID=KIND`` to keep one). Replaces a catalog entry.
        """
        spec = _registered(model, kind, required)
        with self._lock:
            self.models[model] = spec

    def model_spec(self, model: str) -> _models.ModelSpec | None:
        """Return the model's spec; None for an id the emulator does not know."""
        return self.models.get(model)

    def refuse_model(self, model: str) -> tuple[int, str] | None:
        """(HTTP status, message) when a request for ``model`` must be refused as the API refuses it, else None."""
        problem = _models.check_model_id(model)
        if problem is None and model not in self.models and not self.any_model:
            problem = _models.unknown_model(model)
        return problem

    def backdate(self, prediction_id: str, seconds: float) -> str:
        """Move a prediction's creation time ``seconds`` into the past; return the new ``created_at``.

        For the history's filters and its 7-day window; its run is not affected. Negative ``seconds`` move it
        into the future: a creation time after a later send, as of a request that reached the API while
        that send was in flight (or an API clock ahead of the client's).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError(f"seconds must be a finite number, got {seconds!r}")
        with self._lock:
            prediction = self.predictions.get(prediction_id)
            if prediction is None:
                raise KeyError(f"unknown prediction {prediction_id!r}")
            prediction.created_ns -= int(seconds * 1e9)
            prediction.created_at = rfc3339_nanos(prediction.created_ns)
            return prediction.created_at

    def counters(self) -> dict[str, Any]:
        """Return the counts since the last reset.

        ``{"requests": {endpoint: n}, "submissions": {model: n},
        "responses": {status: n}, "webhooks": {"sent", "failed"}, "total_requests": n, "rate_limited":
        {endpoint: 429s}, "upload_put_with_authorization": n, "cancelled": predictions a DELETE stopped
        unfinished, "delete_requests": {prediction id: DELETE requests acted on}, "tier": None or {name,
        limits, "running", "queued", "max_queued", "queued_total", "rejected", "starts": {"image", "video"}: starts
        in the last minute}}``.
        """
        with self._lock:
            now = time.time()
            self._advance_locked(now)
            return {
                "cancelled": len(self.cancellation_log),
                "delete_requests": {
                    prediction.id: prediction.delete_requests
                    for prediction in self.predictions.values()
                    if prediction.delete_requests
                },
                "requests": dict(self.request_counts),
                "submissions": dict(self.submission_counts),
                "responses": dict(self.response_counts),
                "webhooks": dict(self.webhook_counts),
                "total_requests": sum(self.request_counts.values()),
                "rate_limited": dict(self.rate_limited),
                "upload_put_with_authorization": self.upload_put_with_authorization,
                "tier": None
                if self.tier is None
                else {
                    **self.tier.to_dict(),
                    **self.tier_counts,
                    "running": self._slots_used(),
                    "queued": len(self._queue),
                    # Starts in the last minute per kind: the two counters the tier limits apart.
                    "starts": {
                        kind: sum(1 for started in self._starts.get(kind, ()) if started > now - 60.0)
                        for kind in ("image", "video")
                    },
                },
            }

    def submissions(self) -> list[dict[str, Any]]:
        """Every accepted submission in order: id, model, inputs, submitted_at."""
        with self._lock:
            return copy.deepcopy(self.submission_log)  # callers may mutate; our record must not change

    def prediction_state(self, prediction_id: str) -> dict[str, Any]:
        """Return the emulator's view of one prediction (KeyError when unknown).

        A prediction queued under the tier's concurrency cap has ``queued`` True and no
        ``processing_at``/``completes_at`` yet (None).
        """
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            raise KeyError(f"unknown prediction {prediction_id!r}")
        now = time.time()
        self.advance(now)
        return {
            "id": prediction.id,
            "model": prediction.model,
            "inputs": copy.deepcopy(prediction.inputs),
            "status": prediction.status(now),
            "outcome": prediction.outcome,
            "error": prediction.error,
            "code": prediction.code,
            "deleted": prediction.deleted,
            "cancelled_at": prediction.cancelled_at,
            "delete_requests": prediction.delete_requests,
            "created_at": prediction.created_at,
            "queued": prediction.queued,
            "submitted_at": prediction.submitted_at,
            "processing_at": None if prediction.queued else prediction.processing_at,
            "completes_at": None if prediction.queued else prediction.completes_at,
            "duration": prediction.duration,
            "polls": prediction.polls,
            "held": prediction.held,
            "webhook": prediction.webhook,
            "outputs": prediction.file_names(),
        }

    def request_log(self, since: float | None = None) -> list[list[Any]]:
        """``[epoch, endpoint, status]`` per request (status 0 = dropped), oldest first."""
        with self._lock:
            entries = list(self.log)
        if since is not None:
            entries = [entry for entry in entries if entry[0] >= since]
        return [list(entry) for entry in entries]

    # -- used by the HTTP app ------------------------------------------------------

    def record(self, endpoint: str, status: int, started: float) -> None:
        """Count one answered (or dropped) request."""
        with self._lock:
            self.request_counts[endpoint] = self.request_counts.get(endpoint, 0) + 1
            key = str(status)
            self.response_counts[key] = self.response_counts.get(key, 0) + 1
            if status == 429:
                self.rate_limited[endpoint] = self.rate_limited.get(endpoint, 0) + 1
            self.log.append((started, endpoint, status))

    def admit_rate(self) -> int | None:
        """None when under the rate limit, else the Retry-After seconds."""
        if self.rate_limit is None:
            return None
        with self._lock:
            bucket = self.rate_limit
            return None if bucket is None else bucket.take()

    def take_fault(self, endpoint: str, model: str | None) -> Fault | None:
        """Return the first fault matching this request, using up one of its times."""
        if not self.faults:  # the common case, without the lock
            return None
        with self._lock:
            for fault in self.faults:
                if fault.matches(endpoint, model):
                    if fault.skip:
                        fault.skip -= 1
                        continue
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def count_poll(self, prediction: Prediction) -> None:
        """One answered poll; a prediction held for N polls finishes on poll N+1."""
        with self._lock:
            prediction.polls += 1
            limit = prediction.release_after_polls
            if prediction.held and limit is not None and prediction.polls > limit:
                prediction.release(time.time())

    def quote(self, model: str, inputs: Mapping[str, Any]) -> float:
        """USD price of one submission."""
        return _models.price(model, inputs, self.prices)

    # -- tier limits: computed lazily on each read/submit, O(log n) per admitted prediction ----------

    def _check_start_rate_locked(self, model: str, now: float) -> deque[float] | None:
        """Return the start window this submission goes into; raise TierRateLimited when it is full."""
        tier = self.tier
        if tier is None or tier.starts_per_minute is None:
            return None
        kind = "video" if _models.is_video(model, self.models.get(model)) else "image"  # counted apart
        window = self._starts.setdefault(kind, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= tier.starts_per_minute:
            retry_after = max(1, math.ceil(window[0] + 60.0 - now))
            self.tier_counts["rejected"] += 1
            raise TierRateLimited(
                f"Too many requests: the {tier.name} tier allows {tier.starts_per_minute} {kind} generations "
                f"started per minute; retry after {retry_after} s",
                retry_after,
            )
        return window

    def _slots_used(self) -> int:
        return len(self._running) + len(self._held_slots)

    def _take_slot_locked(self, prediction: Prediction) -> None:
        if prediction.held:
            self._held_slots.append(prediction)  # its end is not known until it is released
        else:
            heapq.heappush(self._running, (prediction.completes_at, prediction.id))

    def _admit_locked(self, prediction: Prediction, at: float) -> None:
        prediction.start(at)
        self._take_slot_locked(prediction)

    def _advance_locked(self, now: float) -> None:
        """Admit queued predictions whose slot has come, in order: each starts when its slot freed."""
        if self._held_slots and any(not prediction.held for prediction in self._held_slots):
            for prediction in self._held_slots:  # released since: its slot frees at its release time
                if not prediction.held:
                    heapq.heappush(self._running, (prediction.completes_at, prediction.id))
            self._held_slots = [prediction for prediction in self._held_slots if prediction.held]
        running, queue = self._running, self._queue
        cap = None if self.tier is None else self.tier.concurrency
        while queue and running and running[0][0] <= now:
            freed_at = heapq.heappop(running)[0]
            if cap is None or self._slots_used() < cap:  # after a lowered cap, ends first drain the excess
                self._admit_locked(queue.popleft(), freed_at)  # it may finish before now and free a slot too
        if not queue:
            while running and running[0][0] <= now:
                heapq.heappop(running)

    def advance(self, now: float | None = None) -> None:
        """Bring the tier queue up to ``now``; free (no lock) when nothing is queued."""
        if not self._queue:  # released held slots are settled by the next submission
            return
        with self._lock:
            self._advance_locked(time.time() if now is None else now)

    def submit(self, model: str, inputs: dict[str, Any], webhook: str | None) -> Prediction:
        """Charge the balance and create a prediction (raises TierRateLimited, InsufficientBalance)."""
        cost = self.quote(model, inputs)
        with self._lock:
            now = time.time()
            window = self._check_start_rate_locked(model, now)
            if cost > self.balance + 1e-9:
                raise InsufficientBalance(
                    f"Insufficient balance: {model} costs ${cost:.4f}, balance ${self.balance:.4f}"
                )
            self.balance = round(self.balance - cost, 9)
            duration = self.durations.get(model, self.default_duration)
            seconds = random.uniform(*duration) if isinstance(duration, tuple) else duration
            outcome_rule: _OutcomeRule | None = _take_rule(self.outcomes, model, inputs)
            outcome, error = (outcome_rule.status, outcome_rule.error) if outcome_rule else ("completed", "")
            prediction = Prediction(model, inputs, seconds, outcome, error, webhook, self.models.get(model))
            prediction.code = outcome_rule.code if outcome_rule else None
            hold_rule: _HoldRule | None = _take_rule(self.holds, model, inputs)
            if hold_rule is not None:
                prediction.hold(hold_rule.polls)
            if window is not None:
                window.append(now)
            cap = None if self.tier is None else self.tier.concurrency
            if cap is not None:
                self._advance_locked(now)
                if self._queue or self._slots_used() >= cap:
                    prediction.enqueue()
                    self._queue.append(prediction)
                    self.tier_counts["queued_total"] += 1
                    self.tier_counts["max_queued"] = max(self.tier_counts["max_queued"], len(self._queue))
                else:
                    self._take_slot_locked(prediction)
            self.predictions[prediction.id] = prediction
            self.submission_counts[model] = self.submission_counts.get(model, 0) + 1
            self.submission_log.append(
                {"id": prediction.id, "model": model, "inputs": inputs, "submitted_at": prediction.submitted_at}
            )
        return prediction

    def history(
        self,
        page: int,
        page_size: int,
        model: str | None = None,
        status: str | None = None,
        created_after_ns: int | None = None,
        created_before_ns: int | None = None,
    ) -> tuple[int, list[Prediction]]:
        """(total matching, one page), newest first, of the last 7 days; deleted predictions are not listed.

        ``created_after_ns`` is inclusive ("at or after"), ``created_before_ns`` exclusive (epoch ns).
        A prediction a DELETE stopped while ``cancelled`` is the cancel status stays listed, as cancelled.
        A prediction is listed from ``history_lag`` seconds after its submission on (:meth:`set_history`).
        """
        now = time.time()
        oldest = time.time_ns() - HISTORY_DAYS * 86_400 * 1_000_000_000
        low = oldest if created_after_ns is None else max(oldest, created_after_ns)
        with self._lock:
            self._advance_locked(now)
            matching = [
                prediction
                for prediction in sorted(self.predictions.values(), key=lambda p: p.created_ns, reverse=True)
                if prediction.created_ns >= low
                and prediction.submitted_at + self.history_lag <= now
                and (created_before_ns is None or prediction.created_ns < created_before_ns)
                and (model is None or prediction.model == model)
                and prediction.status(now) != "deleted"
                and (status is None or prediction.status(now) == status)
            ]
        start = (page - 1) * page_size
        return len(matching), matching[start : start + page_size]

    def _delete_locked(self, prediction: Prediction, now: float) -> bool:
        """Delete one prediction (caller holds the lock); False when it was deleted already.

        A DELETE stops an unfinished prediction (a cancellation, logged): a queued one leaves the
        queue, a held one ends now and frees its slot; a running one keeps its concurrency slot
        until its planned end (the docs: cancellation "may not stop generation immediately").
        """
        if prediction.deleted:
            return False
        if not prediction.mark_deleted(now, self.cancel_status):
            return True
        before = "created" if prediction.queued or now < prediction.processing_at else "processing"
        if prediction.queued:
            self._queue.remove(prediction)
            prediction.queued = False
        elif prediction.held:
            prediction.release(now)  # its slot frees now (settled by the next advance)
        self.cancellation_log.append(
            {"id": prediction.id, "model": prediction.model, "cancelled_at": now, "status": before}
        )
        return True

    def delete(self, ids: list[str]) -> int:
        """``POST /predictions/delete``: delete these predictions; returns how many were not deleted already.

        A deleted prediction still answers its result, ``deleted`` (``cancelled`` for one stopped
        unfinished while :meth:`set_cancel_status` says so).
        """
        count = 0
        now = time.time()
        with self._lock:
            for prediction_id in ids:
                prediction = self.predictions.get(prediction_id)
                if prediction is not None and self._delete_locked(prediction, now):
                    count += 1
        return count

    def delete_prediction(self, prediction: Prediction) -> None:
        """``DELETE /predictions/{id}``: delete it (idempotent: a repeat changes nothing) and count the request."""
        with self._lock:
            prediction.delete_requests += 1
            self._delete_locked(prediction, time.time())

    def store_upload(self, filename: str | None, source: BinaryIO) -> tuple[str, str, int]:
        """Keep an uploaded file; returns (served name, original-ish filename, size)."""
        safe = _safe_filename(filename)
        name = f"{uuid.uuid4().hex[:16]}_{safe}"
        path = self.upload_path(name)
        with open(path, "wb") as handle:
            shutil.copyfileobj(source, handle)
            size = handle.tell()
        with self._lock:
            self.uploads[name] = path
        return name, safe, size

    # -- the two-step upload: a ticket, then a PUT to a pre-signed URL ----------------------------

    def new_upload_ticket(self, filename: str, size: int, content_type: str) -> tuple[str, str]:
        """Announce an upload; returns (served name, signature of its pre-signed PUT URL)."""
        name = f"{uuid.uuid4().hex[:16]}_{_safe_filename(filename)}"
        with self._lock:
            self.upload_tickets[name] = UploadTicket(size, content_type)
        return name, hmac.new(self._upload_secret, name.encode(), hashlib.sha256).hexdigest()

    def upload_ticket(self, name: str, signature: str) -> UploadTicket | None:
        """Return the ticket a PUT URL was signed for; None when unknown or the signature is wrong."""
        expected = hmac.new(self._upload_secret, name.encode(), hashlib.sha256).hexdigest()
        ticket = self.upload_tickets.get(name)
        return ticket if ticket is not None and hmac.compare_digest(signature.encode(), expected.encode()) else None

    def upload_path(self, name: str) -> str:
        os.makedirs(self.upload_dir, exist_ok=True)  # close() may have removed it before a restart
        return os.path.join(self.upload_dir, name)

    def finish_upload(self, name: str, path: str) -> None:
        """Serve the bytes a PUT stored at ``path`` (all it announced) at the download URL."""
        with self._lock:
            self.uploads[name] = path

    def note_upload_put(self, with_authorization: bool) -> None:
        """Record whether a PUT to a pre-signed URL carried an Authorization header (it must not)."""
        if with_authorization:
            with self._lock:
                self.upload_put_with_authorization += 1

    def count_webhook(self, delivered: bool) -> None:
        with self._lock:
            self.webhook_counts["sent" if delivered else "failed"] += 1
