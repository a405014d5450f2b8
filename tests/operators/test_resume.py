"""Resume and reconcile of WaveSpeedSubmitOperator: one prediction per generation, across tries.

The task's record lives in Airflow's task state store on 3.3+ and in a Variable below
(``airflow_helpers.task_record`` reads whichever this Airflow uses, and checks 3.3+ wrote no
Variable). A worker "killed" after a record write is simulated by a write that lands and then
raises: the try fails as a killed one would, with the record it left.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pendulum
import pytest
import wavespeed  # the dev extra installs it: the official SDK is the second client here
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, task_output, task_record, ti_states

from airflow_provider_wavespeed._records import SUBMIT_RECORD_PREFIX, RecordStore
from airflow_provider_wavespeed.api import _reconcile as reconcile_module
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
INPUTS = {"prompt": "a paid picture", "seed": 7}

pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"resume_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


def _record(dag_run: Any) -> dict[str, Any] | None:
    return task_record(dag_run, "submit", "wavespeed_submit", SUBMIT_RECORD_PREFIX)


@pytest.fixture(autouse=True)
def _quick_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test here sets a history lag: one further look, at once (the one a match must survive), keeps them quick.
    monkeypatch.setattr(reconcile_module, "LOOK_DELAYS", (0.0,))


def _die_after(monkeypatch: pytest.MonkeyPatch, state: str, *, write: bool = True, then: Any = None) -> list[dict]:
    """The first record write of ``state`` lands (or not: ``write=False``), then the try dies."""
    put = RecordStore.put
    written: list[dict] = []

    def dying_put(self: RecordStore, data: dict[str, Any], *, verify: bool) -> None:
        if data.get("state") == state and not written:
            written.append(dict(data))
            if write:
                put(self, data, verify=verify)
            if then is not None:
                then(data)
            raise RuntimeError(f"simulated: the worker was killed after the {state!r} record")
        put(self, data, verify=verify)

    monkeypatch.setattr(RecordStore, "put", dying_put)
    return written


def _submit(**kwargs: Any) -> WaveSpeedSubmitOperator:
    return WaveSpeedSubmitOperator(
        task_id="submit", model=FLUX, inputs=INPUTS, retries=1, retry_delay=timedelta(0), **kwargs
    )


# -- the answer lost: reconcile --------------------------------------------------------------------


def test_a_lost_submit_answer_is_adopted_from_the_history(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.add_fault("submit", "drop_after_submit")
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 1
    (created,) = wavespeed_connection.submissions()
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == created["id"]
    assert dag_xcoms(dag_run)[("submit", -1, "prediction_id")] == created["id"]
    assert f"Adopted WaveSpeed prediction {created['id']} from the history" in task_output(capfd)
    assert _record(dag_run) is None  # handed on: deleted


@pytest.mark.parametrize("age", [0.0, 600.0], ids=["look-alike-just-before-the-send", "look-alike-long-before"])
def test_a_look_alike_from_another_client_created_before_the_send_never_counts(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    age: float,
) -> None:
    """The same inputs, submitted by the official SDK before this send (a moment or long before): never a
    candidate (issue 28), so the task's own prediction is the one match and is adopted."""
    sdk = wavespeed.Client(api_key=wavespeed_connection.api_key, base_url=wavespeed_connection.url)
    sdk.run(FLUX, dict(INPUTS), poll_interval=0.01)
    (look_alike,) = wavespeed_connection.submissions()
    if age:
        wavespeed_connection.backdate(look_alike["id"], age)
    wavespeed_connection.add_fault("submit", "drop_after_submit")
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    ours = wavespeed_connection.submissions()[1]["id"]
    assert wavespeed_connection.counters()["requests"]["submit"] == 2  # the SDK's and the task's: never again
    assert dag_run.get_task_instances()[0].try_number == 1
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == ours
    assert _record(dag_run) is None


def test_a_submit_that_created_nothing_stays_uncertain_and_is_never_sent_again(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.add_fault("submit", "http_error", status=503)
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    log = task_output(capfd)
    assert "no prediction of wavespeed-ai/flux-dev with these inputs in the history" in log
    assert "after 2 looks" in log


# -- the worker killed: resume ---------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["no-wait", "deferred", "in-worker"])
def test_a_try_killed_after_the_answer_resumes_the_same_prediction(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    wait: str,
) -> None:
    wavespeed_connection.set_duration(0)
    written = _die_after(monkeypatch, "sent")
    with _dag(request) as dag:
        _submit(wait_for_completion=wait != "no-wait", deferrable=wait == "deferred")
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 2
    (created,) = wavespeed_connection.submissions()
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    assert written[0]["prediction_id"] == created["id"]
    result = dag_xcoms(dag_run)[("submit", -1, "return_value")]
    assert (result if wait == "no-wait" else result["id"]) == created["id"]
    assert f"Resuming WaveSpeed prediction {created['id']}" in task_output(capfd)
    assert _record(dag_run) is None


def test_a_try_killed_between_the_post_and_the_record_adopts_from_the_history(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer came, the "sent" write never happened: the later try finds "sending" and looks."""
    _die_after(monkeypatch, "sent", write=False)
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 2
    (created,) = wavespeed_connection.submissions()
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == created["id"]
    assert wavespeed_connection.counters()["requests"]["submit"] == 1


@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_a_recorded_prediction_cancelled_before_the_next_try_is_submitted_again(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    cancel_status: str,
) -> None:
    """A user's kill cancels the prediction; the clear that follows asks to run again: a new one."""
    wavespeed_connection.set_cancel_status(cancel_status)
    wavespeed_connection.hold(model=FLUX)  # still running when it is cancelled

    def cancel(data: dict[str, Any]) -> None:
        WaveSpeedHook().cancel_prediction(data["prediction_id"])

    _die_after(monkeypatch, "sent", then=cancel)
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    first, second = (entry["id"] for entry in wavespeed_connection.submissions())
    assert wavespeed_connection.prediction_state(first)["status"] == cancel_status
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == second


def test_a_success_leaves_no_record_so_a_clear_submits_again(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert _record(dag_run) is None
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
