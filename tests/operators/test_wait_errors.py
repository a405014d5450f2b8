"""A wait that ends in any error leaves the task able to resume the same prediction; bad settings send nothing.

Real Airflow (``dag.test()``) against the emulator over loopback HTTP. The crash: a poll answered with
JSON nested deeper than Python's recursion limit (``nesting_proxy``, a real loopback server in front of
the emulator) raises ``RecursionError`` inside the trigger, an exception no WaveSpeed error covers.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import (
    AIRFLOW_3_0,
    STATE_STORE,
    batch_record,
    dag_test,
    dag_xcoms,
    task_output,
    task_record,
    ti_states,
)
from nesting_proxy import NestingProxy

from airflow_provider_wavespeed._records import SUBMIT_RECORD_PREFIX
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
INPUTS = {"prompt": "a paid picture", "seed": 7}

pytestmark = pytest.mark.usefixtures("airflow_db")

# Airflow 3.0's dag.test() fails the run when a try that resumed from its deferral ends up_for_retry (it
# never runs the retry); 3.1+ run it. The retry after a failed wait is proven on 3.1+ and in the
# deployment tier.
retry_after_a_deferral = pytest.mark.skipif(
    AIRFLOW_3_0, reason="Airflow 3.0's dag.test() does not run the retry of a try that failed after its deferral"
)


def _dag(request: pytest.FixtureRequest, **kwargs: Any) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"wait_errors_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, **kwargs)


def _record(dag_run: Any) -> dict[str, Any] | None:
    return task_record(dag_run, "submit", "wavespeed_submit", SUBMIT_RECORD_PREFIX)


def _submit(
    operator: type[WaveSpeedSubmitOperator] = WaveSpeedSubmitOperator, **kwargs: Any
) -> WaveSpeedSubmitOperator:
    options: dict[str, Any] = {"wait_for_completion": True, "deferrable": True, "poll_interval": 0.2}
    return operator(task_id="submit", model=FLUX, inputs=INPUTS, **{**options, **kwargs})


@pytest.fixture
def proxy(wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``wavespeed_default`` through a proxy whose first result poll is nested too deep to decode."""
    with NestingProxy(wavespeed_emulator.url) as nesting:
        connection = {"conn_type": "wavespeed", "host": nesting.url, "password": wavespeed_emulator.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
        yield nesting


def _submits(emulator: WaveSpeedEmulator) -> int:
    return int(emulator.counters()["requests"].get("submit", 0))


# -- a trigger that crashes: the retry resumes the same prediction ---------------------------------


@retry_after_a_deferral
def test_a_crashed_trigger_ends_in_a_retry_that_resumes_the_same_prediction(
    wavespeed_emulator: WaveSpeedEmulator,
    proxy: NestingProxy,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with _dag(request) as dag:
        _submit(retries=1, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert proxy.nested_sent == 1
    assert ti_states(dag_run) == {("submit", -1): "success"}, log[-3000:]
    assert dag_run.get_task_instances()[0].try_number == 2
    (created,) = wavespeed_emulator.submissions()
    assert _submits(wavespeed_emulator) == 1  # the retry sent none
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")]["id"] == created["id"]
    assert f"prediction {created['id']} stopped on an unexpected error (RecursionError" in log
    assert f"Resuming WaveSpeed prediction {created['id']}" in log
    assert _record(dag_run) is None  # delivered: a later clear submits anew


class _ResumeDies(WaveSpeedSubmitOperator):
    """Its first try's worker run that resumes the wait fails before any of the provider's code runs: what
    Airflow does when that worker dies, or never starts (e.g. the executor reports it failed while queued).
    Airflow retries the try; nothing of this provider wrote the record back."""

    def resume_execution(self, next_method: str, next_kwargs: Any, context: Any) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated: the worker that resumes the wait died before the provider's code ran")
        return super().resume_execution(next_method, next_kwargs, context)


@retry_after_a_deferral
@pytest.mark.parametrize(
    "trigger_ends",
    [
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not STATE_STORE,
                reason="Airflow 3.3+: below, a "
                "trigger that may end the task gets no record (a Variable would stay forever; the README says so)",
            ),
        ),
        False,
    ],
    ids=["trigger-may-end-the-task", "worker-resumes"],
)
def test_a_wait_whose_resuming_worker_dies_is_resumed_by_the_retry(
    wavespeed_emulator: WaveSpeedEmulator,
    proxy: NestingProxy,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    trigger_ends: bool,
) -> None:
    """The record outlives the hand-off to the trigger: whatever ends the try after it, the retry pays nothing."""
    with _dag(request) as dag:
        # The crash (a poll nested too deep) makes the trigger's event an error: the worker must resume.
        _submit(_ResumeDies, end_from_trigger=trigger_ends, retries=1, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert ti_states(dag_run) == {("submit", -1): "success"}, log[-3000:]
    assert dag_run.get_task_instances()[0].try_number == 2
    assert "simulated: the worker that resumes the wait died" in log
    (created,) = wavespeed_emulator.submissions()
    assert _submits(wavespeed_emulator) == 1  # the retry sent none
    assert f"Resuming WaveSpeed prediction {created['id']}" in log
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")]["id"] == created["id"]


def test_a_crashed_trigger_without_retries_names_the_prediction_and_keeps_it_for_a_clear(
    wavespeed_emulator: WaveSpeedEmulator,
    proxy: NestingProxy,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with _dag(request) as dag:
        _submit()
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert ti_states(dag_run) == {("submit", -1): "failed"}
    (created,) = wavespeed_emulator.submissions()
    assert f"This task keeps prediction {created['id']} in its record: a retry or a clear resumes it" in log
    record = _record(dag_run)
    assert record is not None and record["state"] == "sent" and record["prediction_id"] == created["id"]


def test_a_wait_past_its_limit_keeps_the_prediction_for_a_clear(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    """The wait limit passed and the prediction was left running (cancel_on_timeout=False): a clear resumes it."""
    wavespeed_connection.hold(model=FLUX)
    with _dag(request) as dag:
        _submit(timeout=0.5, cancel_on_timeout=False)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "failed"}
    (created,) = wavespeed_connection.submissions()
    record = _record(dag_run)
    assert record is not None and record["prediction_id"] == created["id"]
    assert "did not finish before the wait limit" in task_output(capfd)


class _FailedTriggerSubmit(WaveSpeedSubmitOperator):
    """Its first try resumes as Airflow resumes a task whose trigger failed (raised in the triggerer, could
    not be loaded there, or its deferral timed out): ``next_method="__fail__"``, which
    ``Trigger.submit_failure`` sets and the task runner hands to ``resume_execution``. ``dag.test()``
    has no triggerer to fail a trigger; the deployment tier runs the real one."""

    def defer(self, *, trigger: Any, method_name: str, kwargs: Any = None, timeout: Any = None) -> Any:
        from airflow.sdk import get_current_context

        if get_current_context()["ti"].try_number == 1:
            method_name = "__fail__"
        return super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)


@retry_after_a_deferral
def test_airflows_trigger_failure_writes_the_record_back_so_the_retry_resumes(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    with _dag(request) as dag:
        _FailedTriggerSubmit(
            task_id="submit",
            model=FLUX,
            inputs=INPUTS,
            wait_for_completion=True,
            poll_interval=0.2,
            retries=1,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert ti_states(dag_run) == {("submit", -1): "success"}, log[-3000:]
    assert dag_run.get_task_instances()[0].try_number == 2
    (created,) = wavespeed_connection.submissions()
    assert _submits(wavespeed_connection) == 1
    assert "TaskDeferralError" in log
    assert f"The wait for WaveSpeed prediction {created['id']} ended in Airflow's trigger failure" in log
    assert f"Resuming WaveSpeed prediction {created['id']}" in log
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")]["id"] == created["id"]


@retry_after_a_deferral
def test_a_confirmed_failed_prediction_still_lets_the_retry_submit_again(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    """That is what retries are for: a failed generation (not a failed wait) is generated again."""
    wavespeed_connection.set_outcome("failed", times=1)
    with _dag(request) as dag:
        _submit(retries=1, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    first, second = (entry["id"] for entry in wavespeed_connection.submissions())
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")]["id"] == second != first


@retry_after_a_deferral
def test_a_sensor_whose_trigger_crashed_retries_and_waits_again(
    wavespeed_emulator: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

    # The sensor's first poke (in the worker) passes; the trigger's first poll is nested too deep.
    with NestingProxy(wavespeed_emulator.url, skip=1) as nesting:
        connection = {"conn_type": "wavespeed", "host": nesting.url, "password": wavespeed_emulator.api_key}
        monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
        wavespeed_emulator.hold(model=FLUX, polls=3)
        prediction_id = WaveSpeedHook().submit(FLUX, INPUTS).id
        with _dag(request) as dag:
            WaveSpeedTaskSensor(
                task_id="wait",
                prediction_id=prediction_id,
                poll_interval=0.2,
                start_from_trigger=False,
                retries=1,
                retry_delay=timedelta(0),
            )
        dag_run = dag_test(dag)
    log = task_output(capfd)
    assert nesting.nested_sent == 1
    assert ti_states(dag_run) == {("wait", -1): "success"}, log[-3000:]
    assert dag_run.get_task_instances()[0].try_number == 2
    assert f"prediction {prediction_id} stopped on an unexpected error (RecursionError" in log
    assert dag_xcoms(dag_run)[("wait", -1, "return_value")]["id"] == prediction_id


@retry_after_a_deferral
def test_a_batch_whose_trigger_crashed_retries_and_waits_for_the_same_predictions(
    wavespeed_emulator: WaveSpeedEmulator,
    proxy: NestingProxy,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=[{"prompt": f"item {n}"} for n in range(3)],
            poll_interval=0.2,
            retries=1,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert proxy.nested_sent == 1
    assert ti_states(dag_run) == {("batch", -1): "success"}, log[-3000:]
    assert dag_run.get_task_instances()[0].try_number == 2
    created = [entry["id"] for entry in wavespeed_emulator.submissions()]
    assert len(created) == 3 and _submits(wavespeed_emulator) == 3  # one submit per input, across both tries
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert sorted(entry["id"] for entry in result["predictions"]) == sorted(created)
    assert "the 3 predictions of this batch stopped on an unexpected error (RecursionError" in log
    assert "a retry of this task waits for the same predictions" in log
    assert batch_record(dag_run) is None  # the task succeeded


# -- settings: checked before anything is sent, again once rendered --------------------------------

BAD_SECONDS = [0, -5, float("nan"), float("inf"), "soon", True]


@pytest.mark.parametrize("name", ["poll_interval", "timeout"])
@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_every_operator_refuses_a_bad_duration_when_the_dag_is_built(name: str, value: Any) -> None:
    builders = [
        lambda **kw: WaveSpeedSubmitOperator(task_id="t", model=FLUX, inputs=INPUTS, wait_for_completion=True, **kw),
        lambda **kw: WaveSpeedBatchOperator(task_id="t", model=FLUX, inputs=[INPUTS], **kw),
        lambda **kw: WaveSpeedTaskSensor(task_id="t", prediction_id="abc123", **kw),
    ]
    for build in builders:
        with pytest.raises(ValueError, match=rf"^t: {name} must be a finite number of seconds greater than 0, got "):
            build(**{name: value})


@pytest.mark.parametrize(
    ("name", "rendered"),
    [("timeout", "-5"), ("timeout", "inf"), ("poll_interval", "0"), ("poll_interval", "")],
)
def test_a_templated_duration_that_renders_bad_fails_before_any_submit(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    name: str,
    rendered: str,
) -> None:
    with _dag(request, params={"value": rendered}) as dag:
        _submit(retries=1, retry_delay=timedelta(0), **{name: "{{ params.value }}"})
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=[INPUTS], retries=1, **{name: "{{ params.value }}"})
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert ti_states(dag_run) == {("submit", -1): "failed", ("batch", -1): "failed"}
    assert {ti.try_number for ti in dag_run.get_task_instances()} == {1}  # failed for good: not retried
    assert _submits(wavespeed_connection) == 0 and wavespeed_connection.submissions() == []
    assert f"submit: {name} must be a finite number of seconds greater than 0, got {rendered!r}" in log
    assert f"batch: {name} must be a finite number of seconds greater than 0, got {rendered!r}" in log
    assert "Nothing was sent to WaveSpeed" in log


def test_a_templated_duration_that_renders_well_is_used(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    with _dag(request, params={"timeout": "120", "poll": "0.2"}) as dag:
        _submit(timeout="{{ params.timeout }}", poll_interval="{{ params.poll }}")
        WaveSpeedBatchOperator(
            task_id="batch", model=FLUX, inputs=[INPUTS], timeout="{{ params.timeout }}", poll_interval="0.2"
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success", ("batch", -1): "success"}
    assert _submits(wavespeed_connection) == 2
