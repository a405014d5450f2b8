"""WaveSpeedBatchOperator in real Airflow runs (dag.test()) against the emulator over loopback HTTP."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, task
from airflow_helpers import batch_record, dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed._batch_record import BatchRecord
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest, **kwargs: Any) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"batch_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, **kwargs)


def _prompts(*prompts: str) -> list[dict[str, Any]]:
    return [{"prompt": prompt} for prompt in prompts]


def _result(dag_run: Any, task_id: str = "batch") -> dict[str, Any]:
    return dag_xcoms(dag_run)[(task_id, -1, "return_value")]


def _record(dag_run: Any, task_id: str = "batch") -> dict[str, Any] | None:
    """The batch record as the metadata database holds it (None: deleted), its parts' ids gathered."""
    return batch_record(dag_run, task_id)


def _by_prompt(emulator: WaveSpeedEmulator) -> dict[str, dict[str, Any]]:
    return {entry["inputs"]["prompt"]: entry for entry in emulator.submissions()}


# -- everything completes ------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_every_input_completes_in_input_order_with_stored_outputs(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    deferrable: bool,
) -> None:
    wavespeed_connection.hold(polls=1)  # running at the first poll of each, finished at the next
    inputs = [{"prompt": f"prompt {n}", "seed": n, **({"num_images": 2} if n == 4 else {})} for n in range(7)]
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=inputs,
            output_path=str(tmp_path),
            poll_interval=0.2,
            deferrable=deferrable,
            submit_window=3,
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = _result(dag_run)
    assert (result["completed"], result["failed"]) == (7, 0)
    by_id = {entry["id"]: entry for entry in wavespeed_connection.submissions()}
    assert len(by_id) == 7 and wavespeed_connection.counters()["requests"]["submit"] == 7
    for index, (entry, given) in enumerate(zip(result["predictions"], inputs, strict=True)):
        assert entry["index"] == index and by_id[entry["id"]]["inputs"] == given
        assert (entry["status"], entry["error"], entry["code"]) == ("completed", "", None)
        assert len(entry["outputs"]) == len(entry["stored_paths"]) == given.get("num_images", 1)
        for path in entry["stored_paths"]:
            assert Path(path).parent == tmp_path and Path(path).name.startswith(f"{entry['id']}_")
            assert Path(path).stat().st_size > 0
    assert _record(dag_run) is None  # deleted once the task succeeded
    assert ("running trigger in line" in caplog.text) is deferrable


def test_inputs_from_an_upstream_task_xcom(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)

    with _dag(request) as dag:

        @task
        def make_inputs() -> list[dict[str, Any]]:
            return _prompts("a heron", "a lighthouse", "a kite")

        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=make_inputs(), poll_interval=0.2)
    dag_run = dag_test(dag)
    assert ti_states(dag_run)[("batch", -1)] == "success"
    result = _result(dag_run)
    by_prompt = _by_prompt(wavespeed_connection)
    assert [entry["id"] for entry in result["predictions"]] == [
        by_prompt[prompt]["id"] for prompt in ("a heron", "a lighthouse", "a kite")
    ]


# -- failed items ----------------------------------------------------------------------------------


def test_failed_items_within_max_failed_are_reported_and_the_task_succeeds(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.set_outcome("failed", prompt_contains="bad", error="emulated: the GPU gave up", code=5003)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch", model=FLUX, inputs=_prompts("good 0", "bad 1", "good 2", "bad 3"), max_failed=2
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = _result(dag_run)
    assert (result["completed"], result["failed"]) == (2, 2)
    statuses = [(entry["status"], entry["code"]) for entry in result["predictions"]]
    assert statuses == [("completed", None), ("failed", 5003), ("completed", None), ("failed", 5003)]
    for entry in result["predictions"][1::2]:
        assert entry["id"] and entry["outputs"] == []
        assert "emulated: the GPU gave up" in entry["error"] and "server-side failure" in entry["error"]


def test_more_failures_than_max_failed_fail_the_task_naming_them_after_storing_the_rest(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.set_outcome("failed", prompt_contains="bad", error="emulated: moderation", code=1200)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=_prompts("good 0", "bad 1", "good 2", "bad 3", "good 4"),
            max_failed=1,
            output_path=str(tmp_path),
            retries=2,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1  # no retry: it could only report the same
    by_prompt = _by_prompt(wavespeed_connection)
    assert len(by_prompt) == 5  # each input submitted once
    log = task_output(capfd)
    assert "2 of 5 inputs did not complete, more than max_failed=1" in log
    for prompt, index in (("bad 1", 1), ("bad 3", 3)):
        assert f"[{index}] {by_prompt[prompt]['id']} failed: emulated: moderation" in log
    # The completed outputs were stored even so, and the record stays for a re-run to resume from.
    stored = sorted(path.name for path in tmp_path.iterdir())
    assert stored == sorted(f"{by_prompt[p]['id']}_0.jpeg" for p in ("good 0", "good 2", "good 4"))
    record = _record(dag_run)
    assert record is not None and sorted(filter(None, record["ids"])) == sorted(e["id"] for e in by_prompt.values())
    assert "is kept: re-running this task reports the same predictions and submits nothing" in log


# -- bad input and refused input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"prompt": "ok"}, "a cat", {"prompt": "x"}], "inputs[1] is not valid: inputs must be a dict"),
        (
            [{"prompt": "ok"}, {"prompt": "x", "image": b"\x89PNG"}],
            "inputs[1] is not valid: inputs['image'] is a bytes",
        ),
        ({"prompt": "one dict"}, "inputs must be a list of input dicts, one per generation"),
        ("prompt: a cat", "inputs rendered to a string that is not a JSON list"),
    ],
    ids=["text-item", "bytes-value", "a-dict", "text"],
)
def test_a_bad_input_item_fails_before_anything_is_submitted(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    inputs: Any,
    message: str,
) -> None:
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=inputs, retries=2, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1
    assert message in task_output(capfd)
    assert wavespeed_connection.counters()["total_requests"] == 0
    assert _record(dag_run) is None


def test_an_input_the_api_refuses_fails_that_item_and_the_others_go_on(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)
    inputs = [{"prompt": "a"}, {"prompt": "b", "num_images": 9}, {"prompt": "c"}]
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=inputs, max_failed=1)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = _result(dag_run)
    refused = result["predictions"][1]
    assert (refused["status"], refused["id"], refused["code"]) == ("failed", None, 400)
    assert "not submitted" in refused["error"] and "num_images" in refused["error"]
    assert [entry["status"] for entry in result["predictions"]] == ["completed", "failed", "completed"]
    assert wavespeed_connection.counters()["requests"]["submit"] == 3  # the refused one was not sent again
    assert set(_by_prompt(wavespeed_connection)) == {"a", "c"}


# -- submit faults -----------------------------------------------------------------------------------


def test_a_429_on_submit_is_retried_and_each_input_submitted_once(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.add_fault("submit", "rate_limit", times=2, retry_after=0)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=_prompts("a", "b", "c", "d"))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert _result(dag_run)["completed"] == 4
    counters = wavespeed_connection.counters()
    assert counters["rate_limited"] == {"submit": 2} and counters["requests"]["submit"] == 6
    assert Counter(entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()) == dict.fromkeys(
        "abcd", 1
    )


def test_a_lost_submit_answer_is_adopted_from_the_history_never_sent_again(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.set_duration(0)
    wavespeed_connection.add_fault("submit", "drop_after_submit", times=1)  # created, the answer lost
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=_prompts("a", "b", "c"), retries=1)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 1
    result = _result(dag_run)
    assert (result["completed"], result["failed"]) == (3, 0)
    by_prompt = _by_prompt(wavespeed_connection)
    assert [entry["id"] for entry in result["predictions"]] == [by_prompt[p]["id"] for p in "abc"]
    # Each input exists exactly once in the account: the one whose answer was lost was adopted.
    assert Counter(entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()) == dict.fromkeys("abc", 1)
    assert wavespeed_connection.counters()["requests"]["submit"] == 3
    assert "adopted prediction" in task_output(capfd)


def test_identical_inputs_whose_answers_were_lost_stay_uncertain(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    """Two identical inputs, both answers lost: two matches each, neither known to be whose."""
    wavespeed_connection.set_duration(0)
    wavespeed_connection.add_fault("submit", "drop_after_submit", times=None)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=_prompts("a", "a", "b"), max_failed=2, retries=1)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    result = _result(dag_run)
    first, second, third = result["predictions"]
    for entry in (first, second):
        assert entry["status"] == "uncertain" and entry["id"] is None
        assert "prediction history" in entry["error"] and "2 predictions of" in entry["error"]
    assert third["status"] == "completed" and third["id"] == _by_prompt(wavespeed_connection)["b"]["id"]
    assert wavespeed_connection.counters()["requests"]["submit"] == 3  # never sent again


# -- resuming ------------------------------------------------------------------------------------------


def test_a_retry_after_the_worker_died_mid_window_resumes_from_the_record(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 1 dies after sending its second window (3-5) and before recording the answers: what a
    kill -9 leaves. Try 2 must never resend 3-5: it adopts their predictions from the history,
    and submits only 6-7."""
    wavespeed_connection.set_duration(0)
    settle = BatchRecord.write_submitted
    calls = []

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
            inputs=_prompts(*prompts),
            submit_window=3,
            max_failed=3,
            retries=1,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 2
    # Try 1: windows 0-2 (recorded) and 3-5 (sent, then the "kill"); try 2: the orphans 3-5, then 6-7.
    assert calls == [[0, 1, 2], [3, 4, 5], [3, 4, 5], [6, 7]]
    assert Counter(entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()) == dict.fromkeys(
        prompts, 1
    )
    assert wavespeed_connection.counters()["requests"]["submit"] == 8
    result = _result(dag_run)
    assert [entry["status"] for entry in result["predictions"]] == ["completed"] * 8
    by_prompt = _by_prompt(wavespeed_connection)
    for entry in result["predictions"]:  # each adopted id is the one prediction of its own input
        assert entry["id"] == by_prompt[prompts[entry["index"]]]["id"]
    assert _record(dag_run) is None


def test_a_retry_whose_inputs_changed_does_not_resume_and_sends_nothing(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The record pairs predictions with inputs by position: a try that renders other inputs must not use it."""
    wavespeed_connection.set_duration(0)
    settle = BatchRecord.write_submitted

    def dying_settle(self: BatchRecord, *args: Any) -> None:
        monkeypatch.setattr(BatchRecord, "write_submitted", settle)  # only the first try dies
        raise RuntimeError("simulated: the worker was killed while its submits were in flight")

    monkeypatch.setattr(BatchRecord, "write_submitted", dying_settle)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=[{"prompt": "rendered in try {{ ti.try_number }}"}],
            retries=1,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 2
    assert [entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()] == ["rendered in try 1"]
    assert "differ from the ones an earlier try of this task submitted" in task_output(capfd)
    assert _record(dag_run) is not None  # kept: it still says what try 1 sent


# -- pacing ----------------------------------------------------------------------------------------------


def test_submissions_are_paced_by_the_connection_budget(
    wavespeed_emulator: WaveSpeedEmulator, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 a minute: 2 at once (the budget's one-second burst), then one every 0.5 s, however fast the machine."""
    connection = {
        "conn_type": "wavespeed",
        "host": wavespeed_emulator.url,
        "password": wavespeed_emulator.api_key,
        "extra": {"max_submissions_per_minute": 120},
    }
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
    wavespeed_emulator.set_duration(0)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=_prompts(*map(str, range(9))), submit_window=4)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    times = sorted(at for at, endpoint, status in wavespeed_emulator.request_log() if endpoint == "submit")
    assert len(times) == 9
    # 9 submits at 2/s after a burst of 2 span at least 3.5 s; a slower machine only spreads them more
    # (0.5 s of slack for the first request's own delivery).
    assert times[-1] - times[0] >= 3.0, times


# -- the wait limit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
@pytest.mark.parametrize("max_failed", [1, 0])
def test_predictions_still_running_at_the_wait_limit_are_reported_with_their_last_status(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
    max_failed: int,
) -> None:
    wavespeed_connection.set_duration(0)  # finished at once: the only one running is the held one
    wavespeed_connection.hold(prompt_contains="slow")
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=_prompts("fast 0", "slow 1", "fast 2"),
            timeout=2,
            poll_interval=0.5,
            max_failed=max_failed,
            deferrable=deferrable,
            cancel_on_timeout=False,  # left running, as before the option existed
        )
    dag_run = dag_test(dag)
    slow_id = _by_prompt(wavespeed_connection)["slow 1"]["id"]
    if max_failed:
        assert ti_states(dag_run) == {("batch", -1): "success"}
        entry = _result(dag_run)["predictions"][1]
        assert (entry["id"], entry["status"]) == (slow_id, "processing")
        assert (
            "may still finish" in entry["error"] and f"WaveSpeedTaskSensor(prediction_id={slow_id!r})" in entry["error"]
        )
    else:
        assert ti_states(dag_run) == {("batch", -1): "failed"}
        assert f"[1] {slow_id} processing: still processing when the wait limit" in task_output(capfd)
    assert len(wavespeed_connection.submissions()) == 3


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
@pytest.mark.parametrize("cancel_status", ["deleted", "cancelled"])
def test_the_wait_limit_cancels_the_unfinished_predictions_by_default(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
    cancel_status: str,
) -> None:
    wavespeed_connection.set_duration(0)  # finished at once: only the held ones run
    wavespeed_connection.set_cancel_status(cancel_status)
    wavespeed_connection.hold(prompt_contains="slow")
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=_prompts("fast 0", "slow 1", "fast 2", "slow 3"),
            timeout=1.5,
            poll_interval=0.3,
            max_failed=2,
            deferrable=deferrable,
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    by_prompt = _by_prompt(wavespeed_connection)
    slow = [by_prompt["slow 1"]["id"], by_prompt["slow 3"]["id"]]
    result = _result(dag_run)
    assert [entry["status"] for entry in result["predictions"]] == ["completed", "cancelled", "completed", "cancelled"]
    assert f"the API reads it {cancel_status!r}" in result["predictions"][1]["error"]
    assert (result["completed"], result["failed"]) == (2, 2)
    counters = wavespeed_connection.counters()
    assert sorted(counters["delete_requests"]) == sorted(slow) and counters["cancelled"] == 2
    assert {wavespeed_connection.prediction_state(i)["status"] for i in slow} == {cancel_status}


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_a_key_refused_while_waiting_fails_at_once_and_keeps_the_record(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    deferrable: bool,
) -> None:
    wavespeed_connection.add_fault("result", "http_error", status=401, times=None)  # submits pass, polls refused
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=_prompts("a", "b"),
            deferrable=deferrable,
            retries=2,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1  # a refused key is final
    log = task_output(capfd)
    assert "401" in log and "re-running the task waits for the same predictions" in log
    assert wavespeed_connection.counters()["requests"]["result"] <= 2  # one round, no retry storm
    record = _record(dag_run)
    assert record is not None and sorted(filter(None, record["ids"])) == sorted(
        entry["id"] for entry in wavespeed_connection.submissions()
    )


# -- the emulator fault the deployment scenario uses -------------------------------------------------


def test_the_slow_after_submit_fault_creates_the_prediction_then_answers_late(
    wavespeed_connection: WaveSpeedEmulator,
) -> None:
    """``slow_after_submit``: a submit in flight whose prediction already exists (what a kill -9 leaves)."""
    import time

    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

    wavespeed_connection.add_fault("submit", "slow_after_submit", delay=1.5, times=1)
    prediction = WaveSpeedHook().submit(FLUX, {"prompt": "late answer"})
    answered = time.time()
    [created] = wavespeed_connection.submissions()
    assert created["id"] == prediction.id
    assert answered - created["submitted_at"] >= 1.45  # created first, answered after the delay
    with pytest.raises(ValueError, match="only applies to the 'submit' endpoint"):
        wavespeed_connection.add_fault("result", "slow_after_submit", delay=1)
