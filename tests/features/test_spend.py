"""Spend control: a batch's price checked before anything is paid, and every result says what it cost.

Real dag.test() runs against the emulator over loopback HTTP; the emulator prices like the API
(per image, per second of video, per resolution), so the tests can tell one input from another.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, deferring_context, task_output, ti_states

from airflow_provider_wavespeed._batch_record import BatchRecord
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"  # the emulator: 0.003 USD per image
WAN = "wavespeed-ai/wan-2.1/t2v-480p"  # the emulator: 0.3 USD per 5 s at 480p
pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest, **kwargs: Any) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"spend_{request.node.name}")[:200]
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, **kwargs)


def _requests(emulator: WaveSpeedEmulator, endpoint: str) -> int:
    return int(emulator.counters()["requests"].get(endpoint, 0))


# Six generations, three distinct inputs: 4 x 0.003 + 2 x 0.006 = 0.024 USD.
SIX = [{"prompt": "a fox"}] * 3 + [{"prompt": "a fox", "num_images": 2}] * 2 + [{"prompt": "an owl"}]


def test_the_emulator_prices_a_video_by_its_duration_and_resolution(wavespeed_connection: WaveSpeedEmulator) -> None:
    hook = WaveSpeedHook()
    five, ten = (
        hook.get_price(WAN, {"prompt": "waves", "duration": 5}),
        hook.get_price(WAN, {"prompt": "waves", "duration": 10}),
    )
    assert (five, ten) == (pytest.approx(0.3), pytest.approx(0.6))
    assert hook.get_price("wavespeed-ai/wan-2.1/t2v-720p", {"prompt": "waves", "duration": 5}) == pytest.approx(0.6)
    assert hook.get_price(WAN, {"prompt": "waves", "duration": 10, "resolution": "1080p"}) == pytest.approx(2.4)
    assert hook.get_price(FLUX, {"prompt": "x", "num_images": 4}) == pytest.approx(0.012)


def test_a_batch_over_its_limit_is_refused_before_any_submit(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=SIX, max_cost_usd=0.02, retries=2)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1  # refused for good: a retry would refuse again
    counters = wavespeed_connection.counters()
    assert counters["submissions"] == {} and "submit" not in counters["requests"]
    assert counters["requests"]["pricing"] == 3  # one per distinct input
    message = task_output(capfd)
    assert "6 generations of wavespeed-ai/flux-dev cost 0.0240 USD in all (4 x 0.0030 + 2 x 0.0060 USD)" in message
    assert "over max_cost_usd=0.0200; nothing was submitted" in message


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_the_same_batch_under_its_limit_runs_with_one_pricing_request_per_distinct_input(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    deferrable: bool,
) -> None:
    wavespeed_connection.set_duration(0)
    resume = WaveSpeedBatchOperator.execute_complete

    def in_a_new_worker(self: WaveSpeedBatchOperator, *args: Any, **kwargs: Any) -> Any:
        # dag.test() resumes the same operator object; a real worker resumes a new one, knowing no price.
        self._unit_prices.clear()
        return resume(self, *args, **kwargs)

    monkeypatch.setattr(WaveSpeedBatchOperator, "execute_complete", in_a_new_worker)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch", model=FLUX, inputs=SIX, max_cost_usd="0.03", min_balance_usd=1, deferrable=deferrable
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert wavespeed_connection.counters()["submissions"] == {FLUX: 6}
    # The guard's three, and none more for the result's cost (a deferred try carries them in XCom).
    assert _requests(wavespeed_connection, "pricing") == 3
    assert _requests(wavespeed_connection, "balance") == 1
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert [entry["unit_price_usd"] for entry in result["predictions"]] == [0.003] * 3 + [0.006] * 2 + [0.003]
    assert result["cost_usd"] == pytest.approx(0.024)
    assert result["unit_price_usd"] is None  # prices differ: each entry says its own
    assert "cost_note" not in result


def test_a_batch_refuses_when_the_balance_is_below_its_floor(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.set_balance(0.5)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=SIX, min_balance_usd=1)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert "submit" not in wavespeed_connection.counters()["requests"]
    assert _requests(wavespeed_connection, "pricing") == 0  # no max_cost_usd: nothing to price
    assert "balance is 0.5000 USD, below min_balance_usd=1.0000" in task_output(capfd)


def test_a_resumed_batch_prices_only_what_it_still_has_to_send(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 1 dies with inputs 3-5 in flight; try 2 adopts them from the history and prices only 6-7.

    Its limit (0.007 USD) holds the two inputs left (0.006) but not the batch (0.024): a try that
    priced more than what it still has to send would refuse.
    """
    wavespeed_connection.set_duration(0)
    settle = BatchRecord.write_submitted
    calls: list[Any] = []

    def dying_settle(self: BatchRecord, *args: Any) -> None:
        calls.append(self.data["in_flight"])
        if len(calls) == 2:
            raise RuntimeError("simulated: the worker was killed while its submits were in flight")
        settle(self, *args)

    monkeypatch.setattr(BatchRecord, "write_submitted", dying_settle)
    prompts = [f"input {n}" for n in range(8)]
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=[{"prompt": prompt} for prompt in prompts],
            submit_window=3,
            max_cost_usd="{{ 0.03 if ti.try_number == 1 else 0.007 }}",
            retries=1,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 2
    assert Counter(e["inputs"]["prompt"] for e in wavespeed_connection.submissions()) == dict.fromkeys(prompts, 1)
    # Between try 1's last submit and try 2's first: try 2's guard, pricing the two inputs left.
    log = [endpoint for _, endpoint, _ in wavespeed_connection.request_log() if endpoint in ("submit", "pricing")]
    assert log[:8] == ["pricing"] * 8 and log[8:14] == ["submit"] * 6
    assert log[14:16] == ["pricing"] * 2 and log[16:18] == ["submit"] * 2
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert result["cost_usd"] == pytest.approx(0.024) and result["unit_price_usd"] == 0.003


@pytest.mark.parametrize("broken", ["nan", "inf", "missing"])
def test_a_price_the_api_cannot_give_refuses_the_batch(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    broken: str,
) -> None:
    if broken == "missing":
        wavespeed_connection.add_fault("pricing", "wrong_types", times=None)  # unit_price: "free"
    else:
        wavespeed_connection.set_price(float(broken), model=WAN)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch", model=WAN, inputs=[{"prompt": "waves", "duration": 10}], max_cost_usd=100, retries=2
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1
    counters = wavespeed_connection.counters()
    assert counters["submissions"] == {} and "submit" not in counters["requests"]
    message = task_output(capfd)
    assert "no finite numeric 'unit_price'" in message
    assert WAN in message and "'duration': 10" in message and "nothing was submitted" in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("price_nan", "no finite numeric 'unit_price'"),
        ("price_inf", "no finite numeric 'unit_price'"),
        ("balance_nan", "no finite numeric 'balance'"),
    ],
)
def test_a_nan_or_infinite_price_or_balance_fails_the_submit_guard_closed(
    wavespeed_connection: WaveSpeedEmulator, setting: str, expected: str
) -> None:
    what, value = setting.split("_")
    if what == "price":
        wavespeed_connection.set_price(float(value), model=FLUX)
    else:
        wavespeed_connection.set_balance(float(value))
    operator = WaveSpeedSubmitOperator(
        task_id="t", model=FLUX, inputs={"prompt": "a"}, max_cost_usd=1, min_balance_usd=1
    )
    with pytest.raises(AirflowFailException) as info:
        operator.check_budget(FLUX, {"prompt": "a"})
    assert expected in str(info.value) and "nothing was submitted" in str(info.value)
    assert wavespeed_connection.counters()["submissions"] == {}


def test_the_submit_operator_and_the_sensor_say_what_they_cost(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wavespeed_connection.hold(polls=1)
    resume = WaveSpeedSubmitOperator.execute_complete

    def in_a_new_worker(self: WaveSpeedSubmitOperator, *args: Any, **kwargs: Any) -> Any:
        self._unit_price = None  # dag.test() resumes the same operator object; a new worker knows no price
        return resume(self, *args, **kwargs)

    monkeypatch.setattr(WaveSpeedSubmitOperator, "execute_complete", in_a_new_worker)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "an owl", "num_images": 2},
            wait_for_completion=True,
            poll_interval=0.2,
        )
        WaveSpeedSubmitOperator(
            task_id="here",
            model=WAN,
            inputs={"prompt": "waves", "duration": 10},
            wait_for_completion=True,
            deferrable=False,
            poll_interval=0.2,
            max_cost_usd=1,
        )
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "a fox"})
        WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output, poll_interval=0.2)
    dag_run = dag_test(dag)
    assert set(ti_states(dag_run).values()) == {"success"}
    xcoms = dag_xcoms(dag_run)
    generated = xcoms[("generate", -1, "return_value")]
    assert (generated["unit_price_usd"], generated["cost_usd"]) == (pytest.approx(0.006), pytest.approx(0.006))
    here = xcoms[("here", -1, "return_value")]
    assert (here["unit_price_usd"], here["cost_usd"]) == (pytest.approx(0.6), pytest.approx(0.6))
    assert xcoms[("here", -1, "unit_price_usd")] == pytest.approx(0.6)
    assert _requests(wavespeed_connection, "pricing") == 2  # the submit that does not wait prices nothing
    waited = xcoms[("wait", -1, "return_value")]
    assert waited["cost_usd"] is None and waited["unit_price_usd"] is None and "unit_price_usd" in waited["cost_note"]
    logged = [line for line in task_output(capfd).splitlines() if "WaveSpeed cost of" in line]
    assert any(
        "0.6000 USD for 1 completed generation(s)" in line and "completed generations only" in line for line in logged
    )


async def test_a_trigger_that_ends_the_submit_task_pushes_its_cost(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    operator = WaveSpeedSubmitOperator(
        task_id="generate", model=FLUX, inputs={"prompt": "a heron", "num_images": 3}, wait_for_completion=True
    )
    operator._price_for_result(FLUX, {"prompt": "a heron", "num_images": 3})
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "a heron", "num_images": 3}).id
    with pytest.raises(TaskDeferred) as deferred:
        operator._defer(deferring_context(), prediction_id)
    trigger = deferred.value.trigger
    assert isinstance(trigger, WaveSpeedTaskTrigger)
    trigger = WaveSpeedTaskTrigger(**{**trigger.serialize()[1], "poll_interval": 0.2, "first_poll_interval": 0.05})
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="generate", run_id="r", map_index=-1, try_number=1)
    pushed: list[dict[str, Any]] = []

    async def record(self: WaveSpeedTaskTrigger, value: dict[str, Any]) -> None:
        pushed.append(value)

    monkeypatch.setattr(WaveSpeedTaskTrigger, "_push_return_value", record)
    events = [event async for event in trigger.run()]
    assert len(events) == 1 and len(pushed) == 1
    assert pushed[0]["id"] == prediction_id
    assert (pushed[0]["unit_price_usd"], pushed[0]["cost_usd"]) == (pytest.approx(0.009), pytest.approx(0.009))


def test_the_manifest_and_summary_carry_the_cost_of_the_completed_generations_only(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.set_outcome("failed", prompt_contains="bad", error="emulated: the GPU gave up", code=5003)
    inputs = [{"prompt": "good 0"}, {"prompt": "bad 1"}, {"prompt": "good 2", "num_images": 2}]
    manifest = tmp_path / "batch.json"
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=inputs, max_failed=1, manifest_path=str(manifest))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    summary = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert (
        summary["cost_usd"] == pytest.approx(0.009) and summary["count"] == 3
    )  # 0.003 + 0.006; the failed one not counted
    written = json.loads(manifest.read_text())
    assert written["cost_usd"] == pytest.approx(0.009)
    assert [entry["unit_price_usd"] for entry in written["predictions"]] == [0.003, None, 0.006]
    # No guard: only the completed inputs were priced, after they completed.
    assert _requests(wavespeed_connection, "pricing") == 2


def test_a_price_unreadable_after_the_batch_completed_never_fails_it(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.add_fault("pricing", "http_error", status=400, times=None)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=[{"prompt": "a"}, {"prompt": "b"}])
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert result["completed"] == 2 and result["cost_usd"] is None and "could not be read" in result["cost_note"]
