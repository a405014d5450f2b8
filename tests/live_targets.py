"""The two targets of the live contract checks (tests/live) and the system tests (tests/system).

Airflow's providers run their example DAGs as system tests against the real service, skipped
without credentials. Here every such test runs twice, by the target's id:

- ``[emulator]``: the local emulator, always (in CI too, so the checks cannot rot);
- ``[api]``: the real WaveSpeed API, only when ``WAVESPEED_API_KEY`` is set (``WAVESPEED_BASE_URL``
  optionally points elsewhere) **and** the run selects the live tests with ``-m live``, in one
  process (no ``-n``). A key left in the shell never makes the quick suite spend money.

Both targets share one cost ceiling per run (:class:`CostCeiling`): every test prices what it
plans to submit through ``/model/pricing`` first, and the run refuses anything that would take
the planned total over ``WAVESPEED_LIVE_MAX_USD`` (default 0.10 USD), before any submit.

Loaded by tests/conftest.py as a plugin, and imported by it before it removes ``WAVESPEED_API_KEY``
from the environment: the key is kept here, out of the environment, so no other test (nor any
process a test starts) sees it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from airflow_provider_wavespeed.api.client import WaveSpeedClient
from airflow_provider_wavespeed.api.defaults import DEFAULT_BASE_URL
from airflow_provider_wavespeed.api.retry import RetryPolicy

API_KEY_ENV = "WAVESPEED_API_KEY"
BASE_URL_ENV = "WAVESPEED_BASE_URL"
MAX_USD_ENV = "WAVESPEED_LIVE_MAX_USD"
DEFAULT_MAX_USD = 0.10
LIVE_MARK = "live"
TARGETS = ("emulator", "api")

# Kept aside at import, before tests/conftest.py removes it from the environment.
_API_KEY = os.environ.get(API_KEY_ENV) or None
_BASE_URL = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL

Plan = Sequence[tuple[str, dict[str, Any]]]
"""Generations a test means to submit: (model, inputs) each."""


def max_usd() -> float:
    """The run's cost ceiling in USD: ``WAVESPEED_LIVE_MAX_USD``, default 0.10."""
    text = os.environ.get(MAX_USD_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_USD
    try:
        value = float(text)
    except ValueError:
        raise pytest.UsageError(f"{MAX_USD_ENV} must be a number of US dollars, got {text!r}") from None
    if not value >= 0:
        raise pytest.UsageError(f"{MAX_USD_ENV} must be >= 0, got {text!r}")
    return value


class CostCeilingExceeded(Exception):
    """A plan refused before any submit: it would take the run's priced total over the ceiling."""


@dataclass
class CostCeiling:
    """The run's spending limit: plans are priced first and refused above ``max_usd`` in total."""

    max_usd: float
    planned_usd: float = 0.0
    ledger: list[tuple[str, float]] = field(default_factory=list)

    def reserve(self, what: str, client: WaveSpeedClient, plan: Plan) -> float:
        """Price ``plan`` with ``/model/pricing`` (the code's ``get_price``) and book it, or refuse it.

        Returns the plan's price in USD; raises :class:`CostCeilingExceeded` when the run's total would
        pass the ceiling (nothing is booked then, and the caller submits nothing).
        """
        prices = [client.get_price(model, inputs) for model, inputs in plan]
        total = sum(prices)
        if self.planned_usd + total > self.max_usd + 1e-9:
            raise CostCeilingExceeded(
                f"{what}: {len(prices)} generation(s) priced at {total:.4f} USD by /model/pricing "
                f"({', '.join(f'{price:.4f}' for price in prices) or 'none'}); with {self.planned_usd:.4f} USD "
                f"already planned in this run that is over {MAX_USD_ENV}={self.max_usd:.4f}. Nothing was "
                "submitted; raise the ceiling to run it"
            )
        self.planned_usd += total
        self.ledger.append((what, total))
        return total


@dataclass(frozen=True)
class Exchange:
    """One request a target answered, as recorded (never a header of the request: they hold the key)."""

    method: str
    path: str  # below the base URL, without the query
    status: int
    code: int | None  # the envelope's code, None when the body had none
    api_status: str | None  # data.status, when the answer carried a prediction
    retry_after: str | None


class RecordingSession(requests.Session):
    """A ``requests`` session that records what each answer said (status, envelope code, Retry-After)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.exchanges: list[Exchange] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().request(method, url, *args, **kwargs)
        self.exchanges.append(exchange_of(str(method), str(url), response, self.base_url))
        return response


def exchange_of(method: str, url: str, response: requests.Response, base_url: str) -> Exchange:
    """What an answer said, for the record."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    data = body.get("data") if isinstance(body, dict) else None
    status = data.get("status") if isinstance(data, dict) else None
    path = url.removeprefix(base_url).split("?", 1)[0]
    return Exchange(
        method.upper(),
        path,
        response.status_code,
        code if isinstance(code, int) else None,
        status if isinstance(status, str) else None,
        response.headers.get("Retry-After"),
    )


@dataclass
class Target:
    """Where a live test runs: the emulator or the real API, with the run's cost ceiling."""

    name: str
    base_url: str
    api_key: str = field(repr=False)
    ceiling: CostCeiling
    emulator: Any = None  # the WaveSpeedEmulator of the emulator target

    @property
    def is_emulator(self) -> bool:
        return self.emulator is not None

    def client(self) -> tuple[WaveSpeedClient, RecordingSession]:
        """The code's own sync client for this target, and the session that records its answers."""
        session = RecordingSession(self.base_url)
        source = f"the {self.name}'s key" if self.is_emulator else f"the {API_KEY_ENV} environment variable"
        client = WaveSpeedClient(
            self.api_key, self.base_url, session=session, retry=RetryPolicy(), credential_source=source
        )
        return client, session

    def connect(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point Airflow's ``wavespeed_default`` connection at this target (for this test only)."""
        connection = {"conn_type": "wavespeed", "host": self.base_url, "password": self.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))


def live_selected(config: pytest.Config) -> bool:
    """Whether the run's ``-m`` expression singles out the live tests: it selects a test marked only
    ``live`` and not an unmarked one (``-m live`` does, ``-m "not deployment"`` does not)."""
    expression = config.getoption("markexpr", default="") or ""
    if not expression:
        return False
    from _pytest.mark.expression import Expression

    def marked_live(name: str, /, **_: Any) -> bool:
        return name == LIVE_MARK

    def unmarked(name: str, /, **_: Any) -> bool:
        return False

    compiled = Expression.compile(expression)
    return compiled.evaluate(marked_live) and not compiled.evaluate(unmarked)


def api_skip_reason(config: pytest.Config) -> str | None:
    """Why the real API is not a target of this run, None when it is."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker never sees the key: the main process removed it
        return (
            f"the real API is never checked under pytest-xdist (its cost ceiling counts one process): "
            f"run with {API_KEY_ENV}, -m {LIVE_MARK} and no -n"
        )
    if _API_KEY is None:
        return f"{API_KEY_ENV} is not set: the real API is not checked (the [emulator] target runs the same checks)"
    if not live_selected(config):
        return (
            f"the real API is checked only when the run selects it with -m {LIVE_MARK} "
            f"(it spends up to {max_usd():.2f} USD, {MAX_USD_ENV})"
        )
    return None


_CEILINGS = pytest.StashKey[dict[str, CostCeiling]]()


@pytest.fixture(scope="session")
def _ceilings(pytestconfig: pytest.Config) -> dict[str, CostCeiling]:
    """One cost ceiling per target for the whole run (kept on the config for the summary).

    The emulator's prices cost nothing: its target has no ceiling unless ``WAVESPEED_LIVE_MAX_USD`` is
    set, so CI runs every example DAG whatever pytest-xdist's split of the tests between its processes
    (each has its own ceiling). Refusal itself is tested with a ceiling of its own.
    """
    limited = {name: name == "api" or bool(os.environ.get(MAX_USD_ENV, "").strip()) for name in TARGETS}
    ceilings = {name: CostCeiling(max_usd() if limited[name] else math.inf) for name in TARGETS}
    return pytestconfig.stash.setdefault(_CEILINGS, ceilings)


@pytest.fixture(scope="session", params=TARGETS)
def wavespeed_target(request: pytest.FixtureRequest, _ceilings: dict[str, CostCeiling]) -> Iterator[Target]:
    """The target of a live test, by id: ``emulator`` (always) or ``api`` (with a key and ``-m live``).

    The emulator target is the session's emulator (``wavespeed_emulator_server``); a test resets it
    before use. Each target has its own cost ceiling for the run, the same for both.
    """
    name: str = request.param
    if name == "emulator":
        emulator = request.getfixturevalue("wavespeed_emulator_server")
        yield Target(name, emulator.url, emulator.api_key, _ceilings[name], emulator)
        return
    reason = api_skip_reason(request.config)
    if reason is not None:
        pytest.skip(reason)
    assert _API_KEY is not None
    yield Target(name, _BASE_URL.rstrip("/"), _API_KEY, _ceilings[name])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """What each target's tests priced and booked against the ceiling (with pytest-xdist: not collected)."""
    ceilings = config.stash.get(_CEILINGS, {})
    for name, ceiling in ceilings.items():
        if not ceiling.ledger:
            continue
        money = "USD of the account's balance" if name == "api" else "USD at the emulator's prices (no money)"
        terminalreporter.write_line(
            f"WaveSpeed [{name}] target: {ceiling.planned_usd:.4f} {money} planned, ceiling {ceiling.max_usd:.4f} "
            f"({MAX_USD_ENV})"
        )
        for what, usd in ceiling.ledger:
            terminalreporter.write_line(f"  {usd:.4f}  {what}")
