"""The WaveSpeed API against what this provider assumes: a contract check, by target (issue 33).

Everything the provider knows about the API comes from its public docs and the official SDK. The
facts below matter for money and cannot be settled without the real API, so each test records
what its target answered, compares it with what the code assumes (the code's own constants and
readers, imported, never restated) and fails where they differ, printing the difference in the
words of the API notes (``shared/wavespeed-api.md``, quoted in :data:`DOCS`).

One run per target (``[emulator]`` always, ``[api]`` with ``WAVESPEED_API_KEY`` and ``-m live``;
see tests/live_targets.py) makes at most :data:`GENERATIONS` generations of :data:`MODEL`, priced
first and refused above the run's cost ceiling before any submit:

1. one prediction deleted (``DELETE``) as soon as its submit answered: the running case;
2. one prediction waited for until ``completed``, looked up in the history (raw, and by the code's
   own ``reconcile``), then deleted: the finished case;
3. one submit without the model's required ``prompt``, which the API should refuse for free (priced
   as a generation in case it does not, and then deleted at once).

Everything else is free: prices, the balance, a submit with a wrong key. No 429 is provoked on the
real API (that could cost, or get the account limited): the ``Retry-After`` check reads the 429s
that came up on their own, and provokes one only on the emulator.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from live_targets import CostCeiling, CostCeilingExceeded, Exchange, Target, exchange_of, live_selected

from airflow_provider_wavespeed.api._reconcile import LOOK_DELAYS, reconcile
from airflow_provider_wavespeed.api._validation import validate_history_query
from airflow_provider_wavespeed.api.client import WaveSpeedClient
from airflow_provider_wavespeed.api.errors import (
    WaveSpeedAuthError,
    WaveSpeedBadRequestError,
    WaveSpeedError,
    WaveSpeedPredictionFailedError,
)
from airflow_provider_wavespeed.api.models import (
    KNOWN_STATUSES,
    PENDING_STATUSES,
    SUCCESS_STATUS,
    TERMINAL_STATUSES,
    Prediction,
    PredictionPage,
    parse_envelope,
)
from airflow_provider_wavespeed.api.retry import may_have_created, parse_retry_after
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

pytestmark = pytest.mark.live

# The cheapest text-to-image model of the API notes, at its smallest documented size, one image.
MODEL = "wavespeed-ai/flux-dev"
VIDEO_MODEL = "wavespeed-ai/wan-2.1/t2v-480p"  # priced only, never submitted
GENERATIONS = 3  # the most this check can submit: two generations and one submit that should be refused
WAIT = {"poll_interval": 2.0, "timeout": 600.0}
# The fields of a history item, as the API notes list them.
HISTORY_ITEM_FIELDS = (
    "id",
    "model",
    "status",
    "outputs",
    "urls",
    "has_nsfw_contents",
    "created_at",
    "error",
    "executionTime",
    "timings",
)

# The API notes' own words (shared/wavespeed-api.md), quoted where a difference is reported.
DOCS = {
    "history": (
        "`POST /api/v3/predictions` ... -> recent history (7 days, API and web predictions, newest first). "
        "The documented items carry `id`, `model`, `status`, `outputs`, `urls`, `has_nsfw_contents`, "
        "`created_at`, `error`, `executionTime`, `timings`: **no inputs**. Matching a lost submit by its inputs "
        "relies on a field the docs do not promise; code must stay safe (uncertain, never resent) when it is absent."
    ),
    "delete": (
        "`DELETE /api/v3/predictions/{id}` deletes one prediction (then its status reads `deleted`); "
        "the docs do not promise that deleting a running prediction stops its billing."
    ),
    "envelope": (
        'Every JSON response is `{"code": 200, "message": "success", "data": {...}}`. An envelope whose `code` '
        "is not 200 is an error even when the HTTP status is 200. 400: invalid parameters, fail with the API's "
        "message, never retry; 401: invalid API key, fail, never retry."
    ),
    "pricing": '`POST /api/v3/model/pricing` with `{"model_id": ..., "inputs": {...}}` -> `data.unit_price`, '
    "`data.currency`.",
    "rate_limit": "429: rate limit; wait (honour `Retry-After` when sent), retry.",
    "status": (
        "`status`: `created`, `processing`, `completed`, `failed`; the official Python SDK 2.0.5 also treats "
        "`cancelled`, `timeout` and `deleted` as terminal (a prediction deleted through the API answers "
        "`deleted`). Expect new values."
    ),
}


@dataclass
class Fact:
    """One fact of the contract: what the docs say, what the code assumes, what the target answered."""

    title: str
    documented: str
    assumed: str
    observed: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)  # from what the code assumes: the test fails
    undocumented: list[str] = field(default_factory=list)  # from the docs only, where the code copes either way
    unsettled: str | None = None  # why this run could not settle it

    def report(self, target: str) -> str:
        lines = [f"{self.title} [{target}]", f"  the docs: {self.documented}", f"  the code assumes: {self.assumed}"]
        lines += [f"  observed: {line}" for line in self.observed]
        lines += [f"  NOT AS DOCUMENTED (the code copes): {line}" for line in self.undocumented]
        lines += [f"  DIFFERENCE: {line}" for line in self.differences]
        if self.unsettled:
            lines.append(f"  not settled by this run: {self.unsettled}")
        return "\n".join(lines)


@dataclass
class Contract:
    """What one target answered, fact by fact."""

    target: str
    facts: dict[str, Fact]
    priced_usd: float
    submitted: list[dict[str, Any]] | None  # the emulator's own log of accepted submissions (None: the real API)
    balance_change: float | None  # before minus after; the real API's billing may lag


class _Raw:
    """Plain requests to the target, for answers the code's client would not show whole."""

    def __init__(self, target: Target) -> None:
        self.base_url = target.base_url
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {target.api_key}"
        self.exchanges: list[Exchange] = []

    def send(self, method: str, path: str, *, json: Any = None, key: str | None = None) -> tuple[Exchange, bytes]:
        url = f"{self.base_url}/api/v3/{path}"
        headers = {"Authorization": f"Bearer {key}"} if key is not None else None
        response = self._session.request(method, url, json=json, headers=headers, timeout=60)
        exchange = exchange_of(method, url, response, self.base_url)
        self.exchanges.append(exchange)
        return exchange, response.content

    def close(self) -> None:
        self._session.close()


def _described(exchange: Exchange) -> str:
    text = f"HTTP {exchange.status}, envelope code {exchange.code}"
    if exchange.api_status is not None:
        text += f", data.status {exchange.api_status!r}"
    return text


def _inputs(nonce: str, what: str) -> dict[str, Any]:
    return {"prompt": f"contract check {nonce} {what}: a small red cube on a white table", "size": "512*512"}


def observe(target: Target) -> Contract:
    """Run the contract checks against ``target``: price, refuse above the ceiling, then the few generations."""
    nonce = uuid.uuid4().hex[:10]
    running_inputs, finished_inputs = _inputs(nonce, "running"), _inputs(nonce, "finished")
    refused_inputs = {key: value for key, value in finished_inputs.items() if key != "prompt"}
    emulator: WaveSpeedEmulator | None = target.emulator
    if emulator is not None:
        emulator.reset()
        emulator.set_duration(0.5)
        # Running when the DELETE arrives, however slow the machine (the real API gives no such control).
        emulator.hold(prompt_contains=f"{nonce} running", times=1)
    client, session = target.client()
    raw = _Raw(target)
    facts = {
        "pricing": Fact("Prices (POST /api/v3/model/pricing)", DOCS["pricing"], _ASSUMED["pricing"]),
        "envelope": Fact("Submit answers (POST /api/v3/<model id>)", DOCS["envelope"], _ASSUMED["envelope"]),
        "history": Fact("Prediction history (POST /api/v3/predictions)", DOCS["history"], _ASSUMED["history"]),
        "delete_running": Fact("DELETE of a running prediction", DOCS["delete"], _ASSUMED["delete_running"]),
        "delete_finished": Fact("DELETE of a finished prediction", DOCS["delete"], _ASSUMED["delete_finished"]),
        "rate_limit": Fact("429 answers", DOCS["rate_limit"], _ASSUMED["rate_limit"]),
        "status": Fact("Prediction statuses", DOCS["status"], _ASSUMED["status"]),
    }
    try:
        balance_before = client.get_balance()
        _check_pricing(raw, client, facts["pricing"], finished_inputs)
        # The ceiling, before any submit: the refused submit is priced as a generation in case it is not refused.
        priced = target.ceiling.reserve(
            "the contract checks (tests/live)",
            client,
            [(MODEL, running_inputs), (MODEL, finished_inputs), (MODEL, finished_inputs)],
        )
        _check_refused_submits(raw, facts["envelope"], refused_inputs, nonce)

        running = client.submit(MODEL, running_inputs)
        delete_running, _ = raw.send("DELETE", f"predictions/{running.id}")
        sent_at = time.time()
        finished = client.submit(MODEL, finished_inputs)
        _check_running_delete(client, facts["delete_running"], running, delete_running)
        completed = _wait(client, finished.id)
        if isinstance(completed, Prediction) and completed.status == SUCCESS_STATUS:
            _check_history(client, raw, facts["history"], finished_inputs, completed.id, sent_at)
            _check_finished_delete(client, raw, facts["delete_finished"], completed.id)
        else:
            why = f"the finished case's prediction {finished.id} did not complete ({completed})"
            facts["history"].unsettled = facts["delete_finished"].unsettled = why
        if emulator is not None:  # the emulator only: the real API is never provoked
            emulator.add_fault("balance", "rate_limit", retry_after=3)
            raw.send("GET", "balance")
        balance_after = client.get_balance()
    finally:
        raw.close()
        client.close()
    exchanges = session.exchanges + raw.exchanges
    _check_submit_envelopes(facts["envelope"], exchanges)
    _check_rate_limits(facts["rate_limit"], exchanges)
    _check_statuses(facts["status"], exchanges)
    return Contract(
        target.name,
        facts,
        priced,
        emulator.submissions() if emulator is not None else None,
        round(balance_before - balance_after, 6),
    )


# -- what the code assumes, fact by fact ---------------------------------------------------------

_ASSUMED = {
    "pricing": "get_price() reads a number from `data.unit_price`, in USD (the cost guard compares it with "
    "max_cost_usd and this suite with its ceiling)",
    "envelope": "an accepted submit answers HTTP 200, code 200 and a prediction whose status the code knows; "
    "a refused one an error the code reads as such (400: WaveSpeedBadRequestError, 401: WaveSpeedAuthError), "
    "never as a submit that may have created a prediction",
    "history": "each item's `input` (or `inputs`) is what was sent, or is absent; reconcile() adopts the one "
    f"prediction whose inputs match, else leaves it uncertain; a new prediction is listed within "
    f"{' + '.join(f'{delay:g}' for delay in LOOK_DELAYS)} s (its looks)",
    "delete_running": f"the DELETE answers 200; the prediction stops and ends in a terminal status other than "
    f"{SUCCESS_STATUS!r} (TERMINAL_STATUSES: {sorted(TERMINAL_STATUSES)}), which its result then answers",
    "delete_finished": "the DELETE answers 200; its result then answers status 'deleted' (terminal), not 404; "
    "a repeated DELETE is harmless (200, or 404: nothing left)",
    "rate_limit": "Retry-After, when sent, is delta-seconds or an HTTP-date (parse_retry_after reads it)",
    "status": f"every status is one of KNOWN_STATUSES {sorted(KNOWN_STATUSES)} (an unknown one is waited on)",
}


def _check_pricing(raw: _Raw, client: Any, fact: Fact, image_inputs: dict[str, Any]) -> None:
    video_inputs = {"prompt": image_inputs["prompt"], "duration": 5}
    for model, inputs in ((MODEL, image_inputs), (VIDEO_MODEL, video_inputs)):
        exchange, body = raw.send("POST", "model/pricing", json={"model_id": model, "inputs": inputs})
        try:
            data = parse_envelope(exchange.status, body, context=f"pricing of {model}")
            price = client.get_price(model, inputs)
        except WaveSpeedError as exc:
            fact.observed.append(f"{model}: {_described(exchange)}")
            fact.differences.append(f"the pricing of {model} failed: {exc}")
            continue
        currency = data.get("currency") if isinstance(data, dict) else None
        fact.observed.append(f"{model} {inputs}: unit_price {price:.4f}, currency {currency!r}")
        if currency != "USD":
            fact.differences.append(f"{model}: `data.currency` is {currency!r}, not 'USD'")


def _check_refused_submits(raw: _Raw, fact: Fact, refused_inputs: dict[str, Any], nonce: str) -> None:
    cases: list[tuple[str, type[WaveSpeedError], dict[str, Any], str | None]] = [
        ("a wrong API key", WaveSpeedAuthError, _inputs(nonce, "wrong key"), f"not-a-key-{nonce}"),
        ("no `prompt` (required)", WaveSpeedBadRequestError, refused_inputs, None),
    ]
    for what, expected, inputs, key in cases:
        exchange, body = raw.send("POST", MODEL, json=inputs, key=key)
        fact.observed.append(f"a submit with {what}: {_described(exchange)}")
        try:
            data = parse_envelope(exchange.status, body, context=f"submit to {MODEL}")
        except WaveSpeedError as exc:
            if not isinstance(exc, expected) or may_have_created(exc):
                fact.differences.append(
                    f"a submit with {what} reads as {type(exc).__name__} "
                    f"({'may have created a prediction' if may_have_created(exc) else 'created nothing'}), "
                    f"expected {expected.__name__}"
                )
            continue
        created = data.get("id") if isinstance(data, dict) else None
        fact.differences.append(f"a submit with {what} was accepted (prediction {created}): it may be billed")
        if isinstance(created, str) and created:
            raw.send("DELETE", f"predictions/{created}")  # stop it at once


def _check_submit_envelopes(fact: Fact, exchanges: list[Exchange]) -> None:
    accepted = [e for e in exchanges if e.method == "POST" and e.path == f"/api/v3/{MODEL}" and e.status == 200]
    for exchange in accepted:
        fact.observed.append(f"an accepted submit: {_described(exchange)}")
        if exchange.code != 200 or exchange.api_status not in KNOWN_STATUSES:
            fact.differences.append(f"an accepted submit answered {_described(exchange)}")
    if not accepted:
        fact.differences.append("no submit was accepted")


def _wait(client: Any, prediction_id: str) -> Prediction | WaveSpeedError:
    try:
        return client.wait_for_prediction(prediction_id, **WAIT)
    except WaveSpeedError as exc:
        return exc


def _check_running_delete(client: Any, fact: Fact, submitted: Prediction, delete: Exchange) -> None:
    fact.observed.append(
        f"the submit answered status {submitted.status!r}; the DELETE right after: {_described(delete)}"
    )
    if delete.status != 200 or delete.code not in (None, 200):
        fact.differences.append(f"the DELETE of a running prediction answered {_described(delete)}")
    outcome = _wait(client, submitted.id)
    if isinstance(outcome, WaveSpeedPredictionFailedError):
        fact.observed.append(f"then its result reads {outcome.status!r} (error {outcome.error!r})")
        if outcome.status != "deleted":
            fact.undocumented.append(f"it reads {outcome.status!r}, not the docs' 'deleted'")
    elif isinstance(outcome, Prediction):
        fact.observed.append(f"then its result reads {outcome.status!r} with {len(outcome.outputs)} output(s)")
        fact.differences.append(
            f"a DELETE sent while the prediction was {submitted.status!r} did not stop it: it ended "
            f"{outcome.status!r} with outputs (made, and probably billed)"
        )
    else:
        fact.observed.append(f"then reading its result raised {type(outcome).__name__}: {outcome}")
        fact.differences.append(
            f"after a DELETE its result answers {type(outcome).__name__} instead of a status that ends the wait"
        )
    if submitted.status not in PENDING_STATUSES:
        fact.unsettled = f"the prediction was {submitted.status!r} already when its submit answered"


def _check_history(
    client: Any, raw: _Raw, fact: Fact, inputs: dict[str, Any], prediction_id: str, sent_at: float
) -> None:
    # The raw listing looks a minute before the send: it checks that the item is listed at all (reconcile(),
    # below, applies the rule: created at or after the send).
    since = datetime.datetime.fromtimestamp(sent_at - 60.0, tz=datetime.timezone.utc)
    body = validate_history_query(page=1, page_size=100, model=MODEL, created_after=since)
    item: dict[str, Any] | None = None
    for look, delay in enumerate((0.0, *LOOK_DELAYS), start=1):
        time.sleep(delay)
        exchange, answer = raw.send("POST", "predictions", json=body)
        data = parse_envelope(exchange.status, answer, context="prediction history listing")
        items = data.get("items") if isinstance(data, dict) else None
        found = [entry for entry in items or [] if isinstance(entry, dict) and entry.get("id") == prediction_id]
        if found:
            item = found[0]
            fact.observed.append(f"the completed prediction is listed at look {look} of {len(LOOK_DELAYS) + 1}")
            break
    if item is None:
        fact.differences.append(
            f"the completed prediction {prediction_id} was not listed in the history of {MODEL} within "
            f"{sum(LOOK_DELAYS):g} s: reconciliation would call a lost submit 'not found' (it stays uncertain)"
        )
        return
    fact.observed.append(f"its item's fields: {sorted(item)}")
    missing = [name for name in HISTORY_ITEM_FIELDS if name not in item]
    if missing:
        fact.undocumented.append(f"the item lacks the documented field(s) {missing}")
    given = item.get("input", item.get("inputs"))
    if given is not None:
        fact.undocumented.append("the item carries the inputs (`input` or `inputs`), which the documented items do not")
    if given is None:
        fact.observed.append("it carries no inputs (as documented): a lost submit stays uncertain")
    elif given != inputs:
        fact.differences.append(
            f"the items carry inputs, but not as sent: {given!r} for {inputs!r}; reconciliation can never match "
            "them (a lost submit stays uncertain)"
        )
    else:
        fact.observed.append("it carries the inputs as sent: reconciliation can match a lost submit")

    async def list_page(**query: Any) -> PredictionPage:
        return client.list_predictions(**query)

    result = asyncio.run(reconcile(list_page, MODEL, {"finished": inputs}, sent_at))
    fact.observed.append(f"reconcile(): adopted {result.adopted}, unresolved {result.unresolved}")
    if given is not None and given == inputs and result.adopted != {"finished": prediction_id}:
        fact.differences.append(f"reconcile() did not adopt {prediction_id} though its inputs are listed as sent")
    if given is None and result.adopted:
        fact.differences.append(f"reconcile() adopted {result.adopted} from items without inputs")


def _check_finished_delete(client: Any, raw: _Raw, fact: Fact, prediction_id: str) -> None:
    delete, _ = raw.send("DELETE", f"predictions/{prediction_id}")
    fact.observed.append(f"the DELETE of the completed prediction: {_described(delete)}")
    if delete.status != 200 or delete.code not in (None, 200):
        fact.differences.append(f"the DELETE of a completed prediction answered {_described(delete)}")
    try:
        after = client.get_prediction(prediction_id)
    except WaveSpeedError as exc:
        fact.observed.append(f"then reading its result raised {type(exc).__name__}")
        fact.differences.append(f"after a DELETE its result answers {exc}, not status 'deleted'")
    else:
        fact.observed.append(f"then its result reads {after.status!r}")
        if after.status != "deleted":
            fact.differences.append(f"after a DELETE of a completed prediction its status reads {after.status!r}")
    again, _ = raw.send("DELETE", f"predictions/{prediction_id}")
    fact.observed.append(f"a second DELETE: {_described(again)}")
    if again.status not in (200, 404):
        fact.differences.append(f"a repeated DELETE answered {_described(again)}")


def _check_rate_limits(fact: Fact, exchanges: list[Exchange]) -> None:
    limited = [exchange for exchange in exchanges if exchange.status == 429]
    if not limited:
        fact.unsettled = "no 429 came up in this run (the real API is not provoked: it could cost or limit the account)"
        return
    for exchange in limited:
        header = exchange.retry_after
        fact.observed.append(f"{exchange.method} {exchange.path}: 429, Retry-After {header!r}")
        if header is not None and parse_retry_after(header) is None:
            fact.differences.append(f"a 429 carried Retry-After {header!r}, which the code cannot read")


def _check_statuses(fact: Fact, exchanges: list[Exchange]) -> None:
    seen = sorted({exchange.api_status for exchange in exchanges if exchange.api_status is not None})
    fact.observed.append(f"statuses seen: {seen}")
    unknown = [status for status in seen if status not in KNOWN_STATUSES]
    if unknown:
        fact.differences.append(f"statuses the code does not know (it waits on them): {unknown}")


# -- the tests: one per fact, per target ------------------------------------------------------------


@pytest.fixture(scope="module")
def contract(wavespeed_target: Target) -> Contract:
    """One contract run per target (and per test process), shared by the facts' tests."""
    try:
        return observe(wavespeed_target)
    except CostCeilingExceeded as exc:
        pytest.fail(f"refused by the cost ceiling: {exc}")


def _check(contract: Contract, name: str) -> None:
    fact = contract.facts[name]
    print(fact.report(contract.target))
    assert not fact.differences, fact.report(contract.target)
    if fact.unsettled:
        pytest.skip(f"{fact.title}: {fact.unsettled}")


def test_prices_are_usd_unit_prices_for_an_image_and_a_video_model(contract: Contract) -> None:
    _check(contract, "pricing")


def test_submit_answers_carry_envelope_codes_the_code_reads_right(contract: Contract) -> None:
    _check(contract, "envelope")


def test_history_items_carry_the_inputs_as_sent_or_none(contract: Contract) -> None:
    _check(contract, "history")


def test_a_deleted_running_prediction_stops_in_a_terminal_status(contract: Contract) -> None:
    _check(contract, "delete_running")


def test_a_deleted_finished_prediction_then_reads_deleted(contract: Contract) -> None:
    _check(contract, "delete_finished")


def test_429s_carry_a_retry_after_the_code_reads(contract: Contract) -> None:
    _check(contract, "rate_limit")


def test_every_status_seen_is_one_the_code_knows(contract: Contract) -> None:
    _check(contract, "status")


def test_the_run_submits_no_more_than_it_priced(contract: Contract) -> None:
    print(f"[{contract.target}] priced {contract.priced_usd:.4f} USD; balance change {contract.balance_change}")
    assert contract.priced_usd > 0
    if contract.submitted is None:
        pytest.skip(
            f"the real API keeps no log of this run's submissions: its balance went down {contract.balance_change} "
            f"USD, priced {contract.priced_usd:.4f} (billing delays and other use of the account count in it)"
        )
    # The emulator's own log: the two generations (the refused submit created nothing), at most as priced.
    assert [entry["model"] for entry in contract.submitted] == [MODEL, MODEL]
    assert contract.balance_change is not None and contract.balance_change <= contract.priced_usd + 1e-9


# -- the cost ceiling, against the emulator ----------------------------------------------------------


def test_the_contract_checks_are_refused_above_the_ceiling_before_any_submit(
    wavespeed_emulator: WaveSpeedEmulator,
) -> None:
    with WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url) as client:
        one = client.get_price(MODEL, _inputs("x", "finished"))
    # Room for more than one generation, not for all the planned ones: the plan's sum is what is refused.
    ceiling = CostCeiling(one * (GENERATIONS - 0.5))
    target = Target("emulator", wavespeed_emulator.url, wavespeed_emulator.api_key, ceiling, wavespeed_emulator)
    with pytest.raises(
        CostCeilingExceeded, match=rf"{GENERATIONS} generation\(s\) priced at .* over WAVESPEED_LIVE_MAX_USD"
    ):
        observe(target)
    counters = wavespeed_emulator.counters()
    assert wavespeed_emulator.submissions() == [] and counters["requests"].get("submit", 0) == 0
    assert counters["requests"]["pricing"] >= GENERATIONS  # priced first
    assert ceiling.planned_usd == 0 and ceiling.ledger == []


def test_the_real_api_is_a_target_only_when_selected_with_m_live() -> None:
    def config(markexpr: str) -> Any:
        return SimpleNamespace(getoption=lambda name, default=None: markexpr)

    assert live_selected(config("live"))
    assert live_selected(config("live and not deployment"))
    assert not live_selected(config("not deployment"))  # the quick suite: a key in the shell spends nothing
    assert not live_selected(config(""))
    assert not live_selected(config("not live"))


# -- the checks find an API that differs -------------------------------------------------------------


Rewrite = Callable[[str, str, int, dict[str, str], Any], tuple[int, dict[str, str], Any]]


class _RewritingProxy:
    """The emulator behind a loopback proxy that changes some of its answers: an API that differs."""

    def __init__(self, upstream: str, rewrite: Rewrite) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                response = requests.request(
                    self.command,
                    upstream + self.path,
                    data=self.rfile.read(length) if length else None,
                    headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")},
                    timeout=60,
                )
                retry_after = response.headers.get("Retry-After")
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                try:
                    body: Any = response.json()
                except ValueError:
                    body = None
                path = self.path.split("?", 1)[0]
                status, headers, body = rewrite(self.command, path, response.status_code, headers, body)
                content = json.dumps(body).encode() if body is not None else response.content
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _history_inputs_with_defaults(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> Any:
    if method == "POST" and path == "/api/v3/predictions" and status == 200:
        for item in body["data"]["items"]:
            item["input"] = {**item["input"], "seed": 1234, "num_inference_steps": 28}
    return status, headers, body


def _deleted_answers_404(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> Any:
    if method == "GET" and path.endswith("/result") and status == 200 and body["data"]["status"] == "deleted":
        return 404, headers, {"code": 404, "message": "Prediction not found", "data": None}
    return status, headers, body


def _prices_in_credits(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> Any:
    if path == "/api/v3/model/pricing" and status == 200:
        body["data"]["currency"] = "credits"
    return status, headers, body


def _unreadable_retry_after(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> Any:
    return status, ({**headers, "Retry-After": "in a moment"} if status == 429 else headers), body


def _refused_submit_as_a_server_error(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> Any:
    if method == "POST" and path == f"/api/v3/{MODEL}" and status == 400:
        return 500, headers, {"code": 500, "message": "internal error", "data": None}
    return status, headers, body


def _accepted_as_queued(method: str, path: str, status: int, headers: dict[str, str], body: Any) -> Any:
    if method == "POST" and path == f"/api/v3/{MODEL}" and status == 200:
        body["data"]["status"] = "queued"
    return status, headers, body


@pytest.mark.parametrize(
    ("rewrite", "fact", "difference"),
    [
        (_history_inputs_with_defaults, "history", "the items carry inputs, but not as sent"),
        (_deleted_answers_404, "delete_finished", "after a DELETE its result answers"),
        (_deleted_answers_404, "delete_running", "after a DELETE its result answers WaveSpeedNotFoundError"),
        (_prices_in_credits, "pricing", "`data.currency` is 'credits', not 'USD'"),
        (_unreadable_retry_after, "rate_limit", "a 429 carried Retry-After 'in a moment', which the code cannot read"),
        (
            _refused_submit_as_a_server_error,
            "envelope",
            "reads as WaveSpeedServerError (may have created a prediction)",
        ),
        (_accepted_as_queued, "status", "statuses the code does not know (it waits on them): ['queued']"),
    ],
    ids=[
        "history-inputs-with-defaults",
        "deleted-finished-answers-404",
        "deleted-running-answers-404",
        "prices-in-credits",
        "unreadable-retry-after",
        "refused-submit-as-a-server-error",
        "accepted-submit-as-queued",
    ],
)
def test_the_checks_report_an_api_that_differs(
    wavespeed_emulator: WaveSpeedEmulator, rewrite: Rewrite, fact: str, difference: str
) -> None:
    proxy = _RewritingProxy(wavespeed_emulator.url, rewrite)
    try:
        target = Target("proxy", proxy.url, wavespeed_emulator.api_key, CostCeiling(1.0), wavespeed_emulator)
        contract = observe(target)
    finally:
        proxy.close()
    report = contract.facts[fact].report("proxy")
    print(report)
    assert any(difference in line for line in contract.facts[fact].differences), report
    # Only what the rewrite changed differs (a deleted prediction's 404 shows in both DELETE facts).
    differing = {name for name, each in contract.facts.items() if each.differences}
    assert differing <= {fact, "delete_finished", "delete_running", "status", "envelope"}, differing
