"""The emulator's single state object: predictions, faults, limits and counters.

Every change a test can make goes through :class:`EmulatorState`, whether it
comes from a Python call or from the ``/_emulator/control`` HTTP endpoint. The
server thread and test threads both touch it, so compound updates hold a lock.
Status is computed from the clock on each read; nothing runs per prediction.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _media, _models

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timeout"})
OUTCOME_STATUSES = frozenset({"failed", "cancelled", "timeout"})
FAULT_KINDS = frozenset(
    {
        "http_error",
        "rate_limit",
        "html",
        "truncated",
        "wrong_types",
        "missing_outputs",
        "envelope_error",
        "drop",
        "drop_after_submit",
        "slow",
    }
)
# Endpoints that count as API calls: they need auth and "any" faults match them.
API_ENDPOINTS = frozenset(
    {"submit", "result", "prediction", "balance", "upload", "pricing", "history", "delete", "models"}
)
FAULT_ENDPOINTS = API_ENDPOINTS | {"files", "any"}
DEFAULT_ERRORS = {
    "failed": "Inference failed: the model raised an error (emulated)",
    "cancelled": "Prediction was cancelled (emulated)",
    "timeout": "Prediction timed out (emulated)",
}
REQUEST_LOG_SIZE = 200_000
# "created" lasts this long (or 10 % of the duration when that is shorter).
CREATED_PHASE_SECONDS = 0.2

Duration = float | tuple[float, float]


class InsufficientBalance(Exception):
    """A submission costs more than the remaining balance."""


def rfc3339_nanos(epoch_ns: int) -> str:
    """``2025-05-19T06:09:15.948268264Z`` for a ``time.time_ns()`` value."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


class Prediction:
    """One submitted task; its status is a function of the clock."""

    __slots__ = (
        "base64_output",
        "completes_at",
        "created_at",
        "duration",
        "error",
        "ext",
        "id",
        "inputs",
        "model",
        "num_outputs",
        "outcome",
        "polls",
        "processing_at",
        "submitted_at",
        "webhook",
    )

    def __init__(
        self, model: str, inputs: dict[str, Any], duration: float, outcome: str, error: str, webhook: str | None
    ) -> None:
        now_ns = time.time_ns()
        self.id = uuid.uuid4().hex
        self.model = model
        self.inputs = inputs
        self.submitted_at = now_ns / 1e9
        self.created_at = rfc3339_nanos(now_ns)
        self.duration = duration
        self.processing_at = self.submitted_at + min(CREATED_PHASE_SECONDS, duration / 10)
        self.completes_at = self.submitted_at + duration
        self.outcome = outcome
        self.error = error
        self.webhook = webhook
        self.num_outputs, self.ext = _models.output_spec(model, inputs)
        self.base64_output = inputs.get("enable_base64_output") is True
        self.polls = 0

    def status(self, now: float) -> str:
        if now >= self.completes_at:
            return self.outcome
        return "processing" if now >= self.processing_at else "created"

    def file_names(self) -> list[str]:
        return [f"{self.id}_{index}.{self.ext}" for index in range(self.num_outputs)]

    def to_api(self, base_url: str, now: float) -> dict[str, Any]:
        """The API's prediction object; ``base_url`` is where this client reached us."""
        status = self.status(now)
        outputs: list[str] = []
        if status == "completed":
            if self.base64_output:
                outputs = [
                    base64.b64encode(_media.output_bytes(self.id, index, self.ext)).decode()
                    for index in range(self.num_outputs)
                ]
            else:
                outputs = [f"{base_url}/_emulator/files/{name}" for name in self.file_names()]
        terminal = status in TERMINAL_STATUSES
        return {
            "id": self.id,
            "model": self.model,
            "status": status,
            "outputs": outputs,
            "urls": {"get": f"{base_url}/api/v3/predictions/{self.id}/result"},
            "has_nsfw_contents": [False] * len(outputs),
            "created_at": self.created_at,
            "error": self.error if terminal else "",
            "timings": {"inference": int(self.duration * 1000) if terminal else 0},
        }


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

    def matches(self, endpoint: str, model: str | None) -> bool:
        if self.endpoint != endpoint and not (self.endpoint == "any" and endpoint in API_ENDPOINTS):
            return False
        return self.model is None or self.model == model


@dataclass
class _OutcomeRule:
    status: str
    error: str
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

    def __init__(self, *, api_key: str, duration: Duration, balance: float, webhook_secret: str) -> None:
        self._initial = (api_key, _check_duration(duration), float(balance), webhook_secret)
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
        self.rate_limit: _TokenBucket | None = None
        self.request_counts: dict[str, int] = {}
        self.response_counts: dict[str, int] = {}
        self.submission_counts: dict[str, int] = {}
        self.webhook_counts = {"sent": 0, "failed": 0}
        self.submission_log: list[dict[str, Any]] = []
        self.log: deque[tuple[float, str, int]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.uploads: dict[str, str] = {}  # served name -> file path

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
    ) -> str:
        """Make the next ``times`` matching requests misbehave; returns the fault id."""
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(FAULT_ENDPOINTS)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if kind == "drop_after_submit" and endpoint != "submit":
            raise ValueError("drop_after_submit only applies to the 'submit' endpoint")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if kind == "slow" and (delay is None or delay < 0):
            raise ValueError("a 'slow' fault needs delay >= 0 seconds")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        fault = Fault(uuid.uuid4().hex[:12], endpoint, kind, times, status, retry_after, delay, model)
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
    ) -> None:
        """Make matching future submissions end in ``status`` instead of ``completed``."""
        if status not in OUTCOME_STATUSES:
            raise ValueError(f"status must be one of {sorted(OUTCOME_STATUSES)}, got {status!r}")
        rule = _OutcomeRule(status, error or DEFAULT_ERRORS[status], model, prompt_contains, times)
        with self._lock:
            self.outcomes.append(rule)

    def set_duration(self, seconds: float | tuple[float, float] | list[float], *, model: str | None = None) -> None:
        """Set how long predictions take: seconds, or a (min, max) range drawn per prediction."""
        duration = _check_duration(seconds)
        with self._lock:
            if model is None:
                self.default_duration = duration
            else:
                self.durations[model] = duration

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        """Limit all API requests to this rate (429 beyond it); None removes the limit."""
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 or None")
        with self._lock:
            self.rate_limit = None if requests_per_second is None else _TokenBucket(requests_per_second)

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
        """Charge a flat ``usd`` per submission of ``model``."""
        if usd < 0:
            raise ValueError("price must be >= 0")
        with self._lock:
            self.prices[model] = float(usd)

    def counters(self) -> dict[str, Any]:
        """Request, response, submission and webhook counts since the last reset."""
        with self._lock:
            return {
                "requests": dict(self.request_counts),
                "submissions": dict(self.submission_counts),
                "responses": dict(self.response_counts),
                "webhooks": dict(self.webhook_counts),
                "total_requests": sum(self.request_counts.values()),
            }

    def submissions(self) -> list[dict[str, Any]]:
        """Every accepted submission in order: id, model, inputs, submitted_at."""
        with self._lock:
            return copy.deepcopy(self.submission_log)  # callers may mutate; our record must not change

    def prediction_state(self, prediction_id: str) -> dict[str, Any]:
        """The emulator's view of one prediction (KeyError when unknown)."""
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            raise KeyError(f"unknown prediction {prediction_id!r}")
        return {
            "id": prediction.id,
            "model": prediction.model,
            "inputs": copy.deepcopy(prediction.inputs),
            "status": prediction.status(time.time()),
            "outcome": prediction.outcome,
            "error": prediction.error,
            "submitted_at": prediction.submitted_at,
            "processing_at": prediction.processing_at,
            "completes_at": prediction.completes_at,
            "duration": prediction.duration,
            "polls": prediction.polls,
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
            self.log.append((started, endpoint, status))

    def admit_rate(self) -> int | None:
        """None when under the rate limit, else the Retry-After seconds."""
        if self.rate_limit is None:
            return None
        with self._lock:
            bucket = self.rate_limit
            return None if bucket is None else bucket.take()

    def take_fault(self, endpoint: str, model: str | None) -> Fault | None:
        """The first fault matching this request, using up one of its times."""
        if not self.faults:  # the common case, without the lock
            return None
        with self._lock:
            for fault in self.faults:
                if fault.matches(endpoint, model):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def quote(self, model: str, inputs: Mapping[str, Any]) -> float:
        """USD price of one submission."""
        return _models.price(model, inputs, self.prices)

    def submit(self, model: str, inputs: dict[str, Any], webhook: str | None) -> Prediction:
        """Charge the balance and create a prediction (raises InsufficientBalance)."""
        cost = self.quote(model, inputs)
        with self._lock:
            if cost > self.balance + 1e-9:
                raise InsufficientBalance(
                    f"Insufficient balance: {model} costs ${cost:.4f}, balance ${self.balance:.4f}"
                )
            self.balance = round(self.balance - cost, 9)
            duration = self.durations.get(model, self.default_duration)
            seconds = random.uniform(*duration) if isinstance(duration, tuple) else duration
            outcome, error = "completed", ""
            for rule in self.outcomes:
                if rule.matches(model, inputs):
                    outcome, error = rule.status, rule.error
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self.outcomes.remove(rule)
                    break
            prediction = Prediction(model, inputs, seconds, outcome, error, webhook)
            self.predictions[prediction.id] = prediction
            self.submission_counts[model] = self.submission_counts.get(model, 0) + 1
            self.submission_log.append(
                {"id": prediction.id, "model": model, "inputs": inputs, "submitted_at": prediction.submitted_at}
            )
        return prediction

    def history(self, page: int, page_size: int, model: str | None, status: str | None) -> tuple[int, list[Prediction]]:
        """(total matching, one page), newest first."""
        now = time.time()
        with self._lock:
            matching = [
                prediction
                for prediction in reversed(self.predictions.values())
                if (model is None or prediction.model == model) and (status is None or prediction.status(now) == status)
            ]
        start = (page - 1) * page_size
        return len(matching), matching[start : start + page_size]

    def delete(self, ids: list[str]) -> int:
        """Delete predictions; returns how many existed."""
        with self._lock:
            return sum(self.predictions.pop(prediction_id, None) is not None for prediction_id in ids)

    def store_upload(self, filename: str | None, content: bytes) -> tuple[str, str]:
        """Keep an uploaded file; returns (served name, original-ish filename)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(filename or "")) or "upload.bin"
        name = f"{uuid.uuid4().hex[:16]}_{safe}"
        path = os.path.join(self.upload_dir, name)
        os.makedirs(self.upload_dir, exist_ok=True)  # close() may have removed it before a restart
        with open(path, "wb") as handle:
            handle.write(content)
        with self._lock:
            self.uploads[name] = path
        return name, safe

    def count_webhook(self, delivered: bool) -> None:
        with self._lock:
            self.webhook_counts["sent" if delivered else "failed"] += 1
