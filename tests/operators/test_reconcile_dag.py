"""Reconciliation of lost submits, end to end (dag.test() against the emulator): issues 28 and 30.

The emulator is made no kinder than the API where adoption depends on it: a history that lists no
inputs (the documented example shows none) and a history that lists a new prediction late. Each
test says which history it runs against.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, task
from airflow_helpers import dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed._records import unheld_in_this_run
from airflow_provider_wavespeed.api._reconcile import Reconciled
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
INPUTS = {"prompt": "a paid picture", "seed": 7}

pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"reconcile_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


# -- a history without inputs: nothing can be matched, nothing is sent again ------------------------------


def test_a_lost_answer_with_a_history_without_inputs_fails_uncertain_and_is_never_resent(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.set_history(inputs=False)
    wavespeed_connection.add_fault("submit", "drop_after_submit")  # created, the answer lost
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs=INPUTS, retries=2, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1  # no retry: it would only look again
    assert len(wavespeed_connection.submissions()) == 1
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    log = task_output(capfd)
    assert "the API may have created (and billed) this prediction, so it was not sent again" in log
    assert "carries no inputs: this history does not list them" in log


def test_a_batch_input_whose_answer_was_lost_stays_uncertain_with_a_history_without_inputs(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.set_history(inputs=False)
    wavespeed_connection.add_fault("submit", "drop_after_submit", skip=1)  # the second input's answer is lost
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch", model=FLUX, inputs=[{"prompt": p} for p in "abc"], max_failed=1, submit_window=1
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert [entry["status"] for entry in result["predictions"]] == ["completed", "uncertain", "completed"]
    assert "carries no inputs" in result["predictions"][1]["error"]
    assert Counter(entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()) == dict.fromkeys("abc", 1)
    assert wavespeed_connection.counters()["requests"]["submit"] == 3  # never sent again


# -- duplicates of a mapped task: neither adopts the other's prediction -----------------------------------


def test_a_mapped_duplicate_whose_submit_created_nothing_does_not_adopt_its_twins_prediction(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 28: two map indexes with the same inputs; the second submit is dropped before it creates
    anything. The first's prediction (created just before that send) must not be adopted by it."""
    wavespeed_connection.add_fault("submit", "drop", skip=1)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator.partial(task_id="submit", model=FLUX, retries=2, retry_delay=timedelta(0)).expand(
            inputs=[INPUTS, INPUTS]
        )
    dag_run = dag_test(dag)
    states = ti_states(dag_run)
    assert sorted(states.values()) == ["failed", "success"]
    [submission] = wavespeed_connection.submissions()  # one generation, held by one task only
    [winner] = [index for (_, index), state in states.items() if state == "success"]
    assert dag_xcoms(dag_run)[("submit", winner, "return_value")] == submission["id"]
    assert wavespeed_connection.counters()["requests"]["submit"] == 2  # the dropped one never sent again
    log = task_output(capfd)
    assert "no prediction of wavespeed-ai/flux-dev with these inputs in the history, created since the send" in log


def test_a_twin_created_during_this_send_is_not_adopted_when_another_task_of_the_run_holds_it(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    """Issue 28: the twin's request reached the API while this one was in flight (staged by moving its
    creation time past this send) and this submit created nothing: the twin's prediction is the one
    match in the history, but the first task's XCom holds it."""
    wavespeed_connection.add_fault("submit", "drop", skip=1)  # the second submit: dropped, nothing created

    with _dag(request) as dag:
        first = WaveSpeedSubmitOperator(task_id="first", model=FLUX, inputs=INPUTS)

        @task
        def created_later(ti: Any = None) -> None:
            wavespeed_connection.backdate(ti.xcom_pull(task_ids="first", key="prediction_id"), -3600.0)

        second = WaveSpeedSubmitOperator(task_id="second", model=FLUX, inputs=INPUTS, retries=2)
        first >> created_later() >> second
    dag_run = dag_test(dag)
    states = ti_states(dag_run)
    assert states[("first", -1)] == "success" and states[("second", -1)] == "failed"
    [submission] = wavespeed_connection.submissions()
    assert wavespeed_connection.counters()["requests"]["submit"] == 2
    log = task_output(capfd)
    assert f"prediction {submission['id']} matches, but another task of this DAG run holds it" in log


def test_mapped_duplicates_whose_answers_were_both_lost_each_adopt_their_own(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    """Both created, both answers lost: each task's prediction is the one created since its own send."""
    wavespeed_connection.add_fault("submit", "drop_after_submit", times=None)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator.partial(task_id="submit", model=FLUX).expand(inputs=[INPUTS, INPUTS])
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", 0): "success", ("submit", 1): "success"}
    xcoms = dag_xcoms(dag_run)
    adopted = {xcoms[("submit", index, "return_value")] for index in (0, 1)}
    assert adopted == {entry["id"] for entry in wavespeed_connection.submissions()} and len(adopted) == 2


# -- a history that lists new predictions late -------------------------------------------------------------


def test_a_lost_answer_the_history_lists_late_is_still_adopted(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    """Half a second of lag: the looks 1, 2 and 4 s apart find it (and confirm it) within the bound."""
    wavespeed_connection.set_history(lag=0.5)
    wavespeed_connection.add_fault("submit", "drop_after_submit")
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs=INPUTS)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    [submission] = wavespeed_connection.submissions()
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == submission["id"]
    assert f"Adopted WaveSpeed prediction {submission['id']} from the history" in task_output(capfd)
    assert wavespeed_connection.counters()["requests"]["history"] >= 2  # seen alone twice before adopting


def test_an_adoption_is_dropped_when_the_ids_the_run_holds_cannot_be_read() -> None:
    """Outside a task there is no run to read: a doubt, so nothing is adopted (the other reasons stay)."""
    found = unheld_in_this_run(Reconciled({0: "p1"}, {1: "several matches"}))
    assert found.adopted == {} and found.unresolved[1] == "several matches"
    assert "the prediction ids this run's other tasks hold could not be read" in found.unresolved[0]
