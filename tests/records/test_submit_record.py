"""_submit_record.py: the submit operator's two-phase record and what a later try does with it, without dag.test().

The record lives in Airflow's own task state store accessor or Variable (a stand-in supervisor answers
them: record_helpers.py); the predictions it names are read from the emulator over loopback HTTP, and
from a scripted loopback API where a status must be one the emulator does not give on demand. The
operators' dag.test() tests prove the same end to end; these are the fast ones of the mutation check.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from record_helpers import BACKENDS, HAS_STATE_STORE, Supervisor, TaskInstance, task_context
from scripted_api import ScriptedAPI

from airflow_provider_wavespeed._submit_record import SubmitEntry, SubmitRecord, find_in_history, resume_or_adopt
from airflow_provider_wavespeed.api import _reconcile
from airflow_provider_wavespeed.api._batch import input_digest, uncertain_message
from airflow_provider_wavespeed.api._times import utc_text
from airflow_provider_wavespeed.api.errors import WaveSpeedSubmitUncertainError, WaveSpeedValidationError
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers.batch import IDS_XCOM_KEY

FLUX = "wavespeed-ai/flux-dev"
FOX = {"prompt": "a fox", "seed": 1}
LOG = logging.getLogger("test_submit_record")
SENT_AT = 1796619600.5  # 2026-12-07 05:00:00.5 UTC


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the record's functions logged (the ``log`` they were given), in order."""
    return [record.getMessage() for record in caplog.records if record.name == LOG.name]


def _record(
    supervisor: Supervisor, state_store: bool, try_number: int = 2, clear_number: int = 0, **ti: Any
) -> SubmitRecord:
    context = task_context(
        supervisor, TaskInstance(try_number=try_number, **ti), state_store=state_store, clear_number=clear_number
    )
    return SubmitRecord(context)


def _stored(supervisor: Supervisor, record: SubmitRecord) -> Any:
    if record.store.store is not None:
        return supervisor.value("wavespeed_submit", TaskInstance())
    return json.loads(supervisor.variables[record.store.key])


@pytest.fixture
def looks_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The history is looked at twice (a match must still be alone on the second look), with no pause between."""
    monkeypatch.setattr(_reconcile, "LOOK_DELAYS", (0.0,))


@pytest.fixture
def in_a_task() -> Iterator[TaskInstance]:
    """The running task's context, as ``get_current_context()`` returns it (the history's adoption reads XComs)."""
    from airflow.sdk.execution_time.context import set_current_context

    class Dag:
        task_ids = ("generate", "twin")

    ti = TaskInstance(try_number=2)
    with set_current_context({"ti": ti, "dag": Dag()}):  # type: ignore[typeddict-item]
        yield ti


# -- the record: two phases --------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_the_intent_then_the_prediction_are_recorded(supervisor: Supervisor, state_store: bool) -> None:
    record = _record(supervisor, state_store)
    digest = input_digest(FLUX, [FOX])
    record.write_intent(FLUX, FOX, SENT_AT)
    intent = {"version": 1, "sent_at": SENT_AT, "model": FLUX, "digest": digest, "state": "sending", "seq": 1}
    assert _stored(supervisor, record) == intent
    assert _record(supervisor, state_store).read() == SubmitEntry(digest, SENT_AT, None)
    record.write_submitted("p-1", FLUX, FOX, sent_at=SENT_AT)
    sent = {**intent, "state": "sent", "prediction_id": "p-1", "seq": 1}
    assert _stored(supervisor, record) == sent  # a new dict: its seq counts from the one it carries
    assert _record(supervisor, state_store).read() == SubmitEntry(digest, SENT_AT, "p-1")
    record.delete()
    assert _record(supervisor, state_store).read() is None


def test_a_prediction_recorded_without_its_send_time_reads_time_zero(supervisor: Supervisor) -> None:
    record = _record(supervisor, False)
    record.write_submitted("p-1", FLUX, FOX)
    assert "sent_at" not in _stored(supervisor, record)
    assert record.read() == SubmitEntry(input_digest(FLUX, [FOX]), 0.0, "p-1")


def test_a_first_try_reads_no_record(supervisor: Supervisor) -> None:
    _record(supervisor, False).write_submitted("p-1", FLUX, FOX)
    supervisor.requests.clear()
    assert _record(supervisor, False, try_number=1).read() is None
    assert supervisor.requests == []


def test_the_variable_says_whose_record_it_is(supervisor: Supervisor) -> None:
    record = _record(supervisor, False, map_index=4)
    record.write_intent(FLUX, FOX, SENT_AT)
    assert supervisor.descriptions[record.store.key] == (
        "WaveSpeed submit record of records_dag.generate (map index 4) in run manual__2026-12-07T05:00:00+00:00: "
        "the prediction this task submitted, so that a retry resumes it instead of paying again. Deleted once "
        "the prediction is handed on for good, written back when a wait ends without the prediction; delete it "
        "yourself only to submit again."
    )
    assert record.store.key.startswith("wavespeed_submit__") and record.where == record.store.where


def test_an_intent_that_did_not_land_stops_the_submit(supervisor: Supervisor) -> None:
    record = _record(supervisor, False)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=r"\(read back nothing\)"):
        record.write_intent(FLUX, FOX, SENT_AT)


def test_an_intent_that_did_not_land_over_an_earlier_try_s_record_stops_the_submit(supervisor: Supervisor) -> None:
    """The earlier try's prediction failed, so this try submits again: its intent must land, or a lost answer
    would leave the next try the earlier record (failed: "submit again") and this submit paid twice."""
    _record(supervisor, False).write_submitted("p-failed", FLUX, FOX, sent_at=SENT_AT)
    record = _record(supervisor, False, try_number=3)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=r"\(read back another record\)"):
        record.write_intent(FLUX, FOX, SENT_AT + 60)


def test_the_prediction_is_read_back_only_when_asked(supervisor: Supervisor) -> None:
    record = _record(supervisor, False)
    supervisor.refuse_variable_writes = 1
    record.write_submitted("p-1", FLUX, FOX)  # right after the answer: the id is handed on next
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=r"\(read back nothing\)"):
        record.write_submitted("p-1", FLUX, FOX, verify=True)


def test_a_value_this_provider_did_not_write_fails_the_read(supervisor: Supervisor) -> None:
    record = _record(supervisor, False)
    supervisor.variables[record.store.key] = json.dumps({"version": 7, "state": "sent"})
    with pytest.raises(AirflowFailException, match="is not one this provider wrote"):
        record.read()


# -- write_back: after a deferred wait that ended without the prediction --------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_wait_that_ended_without_the_prediction_writes_it_back(
    supervisor: Supervisor, state_store: bool, caplog: pytest.LogCaptureFixture
) -> None:
    record = _record(supervisor, state_store)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        record.write_back("p-1", FLUX, FOX, log=LOG)
    assert _record(supervisor, state_store).read() == SubmitEntry(input_digest(FLUX, [FOX]), 0.0, "p-1")
    assert _logged(caplog) == [
        f"WaveSpeed prediction p-1 is recorded in {record.where}: a retry or a clear of this task resumes it "
        "(nothing is submitted again)"
    ]


def test_a_write_back_that_did_not_land_fails_the_task_for_good(supervisor: Supervisor) -> None:
    record = _record(supervisor, False)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowFailException) as failed:
        record.write_back("p-1", FLUX, FOX, log=LOG)
    assert str(failed.value) == (
        f"The wait for WaveSpeed prediction p-1 ended without it, and recording it in {record.where} failed "
        f"(AirflowException: Could not record the WaveSpeed task's progress in {record.where} (read back nothing): "
        "nothing more was submitted. Check that tasks can write it (no secrets backend defines this key); a retry "
        "resumes from the record): the task is not retried, so nothing is submitted again. The prediction may "
        "still run: wait on it with WaveSpeedTaskSensor(prediction_id='p-1')"
    )
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


@pytest.mark.parametrize(("model", "inputs"), [("not a model id", FOX), (FLUX, {"prompt": float("nan")})])
def test_a_write_back_of_inputs_that_do_not_validate_fails_the_task_writing_nothing(
    supervisor: Supervisor, model: str, inputs: dict[str, Any]
) -> None:
    record = _record(supervisor, False)
    with pytest.raises(AirflowFailException, match=r"^The wait for WaveSpeed prediction p-1 ended without it, and rec"):
        record.write_back("p-1", model, inputs, log=LOG)
    assert supervisor.variables == {}


# -- resume_or_adopt: what a later try does with the record ---------------------------------------------


def _sent(supervisor: Supervisor, prediction_id: str, inputs: dict[str, Any] = FOX, model: str = FLUX) -> None:
    _record(supervisor, False).write_submitted(prediction_id, model, inputs, sent_at=SENT_AT)


def test_no_record_submits(supervisor: Supervisor, emulator_hook: WaveSpeedHook) -> None:
    assert resume_or_adopt(_record(supervisor, False), emulator_hook, FLUX, FOX, log=LOG) is None


@pytest.mark.parametrize("status", ["processing", "completed", "created"])
def test_a_recorded_prediction_that_runs_or_completed_is_resumed(
    supervisor: Supervisor,
    emulator_hook: WaveSpeedHook,
    wavespeed_connection: WaveSpeedEmulator,
    status: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if status == "completed":
        wavespeed_connection.set_duration(0)
    else:
        wavespeed_connection.hold()
    if status == "created":  # queued behind a running one: the account's concurrency is 1
        wavespeed_connection.set_tier(concurrency=1)
        emulator_hook.submit(FLUX, {"prompt": "first"})
    prediction = emulator_hook.submit(FLUX, FOX)
    _sent(supervisor, prediction.id)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        resumed = resume_or_adopt(_record(supervisor, False), emulator_hook, FLUX, FOX, log=LOG)
    assert resumed is not None and (resumed.id, resumed.status) == (prediction.id, status)
    assert _logged(caplog) == [
        f"Resuming WaveSpeed prediction {prediction.id} ({status}), submitted by an earlier try of this task: "
        "nothing is submitted"
    ]


def test_a_recorded_prediction_the_api_says_is_queued_is_resumed(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator says ``created`` for a queued prediction; the API documents ``queued`` too."""
    api = ScriptedAPI([{"id": "p-q", "model": FLUX, "status": "queued", "outputs": None}])
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_WS_SCRIPTED", json.dumps({"conn_type": "wavespeed", "host": api.url, "password": "k"})
        )
        _sent(supervisor, "p-q")
        resumed = resume_or_adopt(_record(supervisor, False), WaveSpeedHook("ws_scripted"), FLUX, FOX, log=LOG)
    finally:
        api.close()
    assert resumed is not None and (resumed.id, resumed.status) == ("p-q", "queued")


@pytest.mark.parametrize("status", ["failed", "timeout", "cancelled", "deleted"])
def test_a_recorded_prediction_that_ended_without_its_outputs_is_submitted_again(
    supervisor: Supervisor,
    emulator_hook: WaveSpeedHook,
    wavespeed_connection: WaveSpeedEmulator,
    status: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if status in {"failed", "timeout"}:
        wavespeed_connection.set_outcome(status)
        wavespeed_connection.set_duration(0)
    else:
        wavespeed_connection.set_cancel_status(status)
        wavespeed_connection.hold()
    prediction = emulator_hook.submit(FLUX, FOX)
    if status in {"cancelled", "deleted"}:
        emulator_hook.cancel_prediction(prediction.id)
    _sent(supervisor, prediction.id)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert resume_or_adopt(_record(supervisor, False), emulator_hook, FLUX, FOX, log=LOG) is None
    assert _logged(caplog) == [f"The prediction {prediction.id} an earlier try submitted is {status}: submitting again"]


def test_a_recorded_prediction_the_api_no_longer_knows_is_submitted_again(
    supervisor: Supervisor, emulator_hook: WaveSpeedHook, caplog: pytest.LogCaptureFixture
) -> None:
    _sent(supervisor, "p-gone")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert resume_or_adopt(_record(supervisor, False), emulator_hook, FLUX, FOX, log=LOG) is None
    assert _logged(caplog) == ["The prediction p-gone an earlier try submitted is gone: submitting again"]


@pytest.mark.parametrize(("model", "inputs"), [(FLUX, {"prompt": "a whale", "seed": 1}), ("wavespeed-ai/other", FOX)])
def test_a_recorded_prediction_of_other_inputs_or_model_is_not_resumed(
    supervisor: Supervisor,
    emulator_hook: WaveSpeedHook,
    wavespeed_connection: WaveSpeedEmulator,
    model: str,
    inputs: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wavespeed_connection.hold()
    prediction = emulator_hook.submit(FLUX, FOX)
    _sent(supervisor, prediction.id)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert resume_or_adopt(_record(supervisor, False), emulator_hook, model, inputs, log=LOG) is None
    assert _logged(caplog) == [
        f"The prediction {prediction.id} an earlier try submitted (processing) has other inputs or model than "
        "these: it is not resumed (it stays paid); submitting these inputs"
    ]


def test_a_recorded_submit_without_its_prediction_id_is_never_sent_again(
    supervisor: Supervisor, emulator_hook: WaveSpeedHook, wavespeed_connection: WaveSpeedEmulator
) -> None:
    """A "sent" record with no id (this provider writes none) reads as the empty id, which no API call takes."""
    record = _record(supervisor, False)
    supervisor.variables[record.store.key] = json.dumps({"version": 1, "state": "sent", "digest": "d"})
    assert record.read() == SubmitEntry("d", 0.0, "")
    with pytest.raises(WaveSpeedValidationError, match="invalid prediction id ''"):
        resume_or_adopt(record, emulator_hook, FLUX, FOX, log=LOG)
    assert wavespeed_connection.counters()["requests"] == {}  # not looked up as "gone", so not submitted again


def test_an_intent_of_other_inputs_is_not_looked_for(
    supervisor: Supervisor,
    emulator_hook: WaveSpeedHook,
    wavespeed_connection: WaveSpeedEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _record(supervisor, False).write_intent(FLUX, FOX, SENT_AT)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert resume_or_adopt(_record(supervisor, False), emulator_hook, FLUX, {"prompt": "a whale"}, log=LOG) is None
    assert _logged(caplog) == [
        "An earlier try sent a submit with other inputs (or model) and got no answer: it is not looked for; "
        "submitting these inputs"
    ]
    assert wavespeed_connection.counters()["requests"] == {}  # the history was not read


# -- an intent with no answer: the prediction history ---------------------------------------------------------


@pytest.mark.usefixtures("looks_at_once", "in_a_task")
def test_an_intent_whose_prediction_is_alone_in_the_history_is_adopted(
    supervisor: Supervisor,
    emulator_hook: WaveSpeedHook,
    wavespeed_connection: WaveSpeedEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent_at = time.time()
    _record(supervisor, False).write_intent(FLUX, FOX, sent_at)
    wavespeed_connection.hold()
    lost = emulator_hook.submit(FLUX, FOX)  # created; its answer never reached the try that sent it
    emulator_hook.submit(FLUX, {"prompt": "a whale", "seed": 1})
    with caplog.at_level(logging.INFO, logger=LOG.name):
        adopted = resume_or_adopt(_record(supervisor, False), emulator_hook, FLUX, FOX, log=LOG)
    assert isinstance(adopted, Prediction) and (adopted.id, adopted.status) == (lost.id, "processing")
    assert _logged(caplog) == [
        "An earlier try stopped with its submit in flight: looking for it in the history",
        "The submit's outcome is unknown (an earlier try of this task stopped while this submit was in flight): "
        "looking for it in the prediction history",
        f"Adopted WaveSpeed prediction {lost.id} from the history: nothing is submitted",
    ]


def _uncertain(why: str, sent_at: float, reason: str, record: SubmitRecord) -> str:
    return (
        f"{uncertain_message(FLUX, why, utc_text(sent_at))}. Looked up: {reason}. The record in {record.where} "
        "keeps this task from submitting again; delete it (or find the prediction and use WaveSpeedTaskSensor) "
        "once checked"
    )


@pytest.mark.usefixtures("looks_at_once", "in_a_task")
def test_an_intent_with_no_prediction_in_the_history_fails_never_sending_again(
    supervisor: Supervisor, emulator_hook: WaveSpeedHook, wavespeed_connection: WaveSpeedEmulator
) -> None:
    sent_at = time.time()
    record = _record(supervisor, False)
    record.write_intent(FLUX, FOX, sent_at)
    with pytest.raises(WaveSpeedSubmitUncertainError) as uncertain:
        resume_or_adopt(record, emulator_hook, FLUX, FOX, log=LOG)
    why = "an earlier try of this task stopped while this submit was in flight"
    found = str(uncertain.value).split(". Looked up: ")[1].split(". The record in ")[0]
    assert str(uncertain.value) == _uncertain(why, sent_at, found, record)
    assert found.startswith("no prediction")
    assert wavespeed_connection.submissions() == []


@pytest.mark.usefixtures("looks_at_once")
def test_a_match_another_task_of_the_run_holds_is_not_adopted(
    supervisor: Supervisor, emulator_hook: WaveSpeedHook, in_a_task: TaskInstance
) -> None:
    sent_at = time.time()
    record = _record(supervisor, False)
    twin = emulator_hook.submit(FLUX, FOX)  # another map index with the same inputs got its answer
    in_a_task.xcoms[("twin", "prediction_id")] = twin.id
    with pytest.raises(WaveSpeedSubmitUncertainError, match=f"prediction {twin.id} matches, but another task"):
        find_in_history(record, emulator_hook, FLUX, FOX, sent_at, "a test", log=LOG)
    in_a_task.xcoms[("twin", "prediction_id")] = None
    in_a_task.xcoms[("twin", IDS_XCOM_KEY)] = f"p-x,{twin.id}"
    with pytest.raises(WaveSpeedSubmitUncertainError, match=f"prediction {twin.id} matches, but another task"):
        find_in_history(record, emulator_hook, FLUX, FOX, sent_at, "a test", log=LOG)


@pytest.mark.usefixtures("looks_at_once", "in_a_task")
def test_a_history_that_cannot_be_read_fails_never_sending_again(
    supervisor: Supervisor, emulator_hook: WaveSpeedHook, wavespeed_connection: WaveSpeedEmulator
) -> None:
    record = _record(supervisor, False)
    emulator_hook.submit(FLUX, FOX)
    wavespeed_connection.add_fault("history", "http_error", status=400, times=None)
    with pytest.raises(WaveSpeedSubmitUncertainError) as uncertain:
        find_in_history(record, emulator_hook, FLUX, FOX, SENT_AT, "the connection dropped", log=LOG)
    reason = str(uncertain.value).split(". Looked up: ")[1].split(". The record in ")[0]
    assert reason.startswith("the history could not be read (") and reason.endswith(")")
    assert str(uncertain.value) == _uncertain("the connection dropped", SENT_AT, reason, record)


# -- the hand-off to a trigger: kept for the retry; a clear after it runs again --------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_wait_handed_to_a_trigger_that_only_resumes_the_worker_keeps_the_record_as_written(
    supervisor: Supervisor, state_store: bool
) -> None:
    record = _record(supervisor, state_store, try_number=1)
    record.write_submitted("p-1", FLUX, FOX, sent_at=SENT_AT)
    written = _stored(supervisor, record)
    record.hand_on("p-1", FLUX, FOX, trigger_may_end_task=False)
    assert _stored(supervisor, record) == written


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_wait_handed_to_a_trigger_that_may_end_the_task_is_marked_waiting_at_the_runs_clear_count(
    supervisor: Supervisor, state_store: bool
) -> None:
    record = _record(supervisor, state_store, try_number=1, clear_number=4)
    record.write_submitted("p-1", FLUX, FOX, sent_at=SENT_AT)
    record.hand_on("p-1", FLUX, {"seed": 1, "prompt": "a fox"}, trigger_may_end_task=True)
    if not state_store:  # a Variable left by a task that ended in the triggerer would stay forever
        assert record.store.key not in supervisor.variables
        assert record.read() is None
        return
    digest = input_digest(FLUX, [FOX])
    waiting = {"version": 1, "model": FLUX, "digest": digest, "state": "waiting", "prediction_id": "p-1"}
    assert _stored(supervisor, record) == {**waiting, "clear_number": 4, "seq": 1}
    assert _record(supervisor, state_store, clear_number=4).read() == SubmitEntry(digest, 0.0, "p-1", cleared=False)
    assert _record(supervisor, state_store, clear_number=5).read() == SubmitEntry(digest, 0.0, "p-1", cleared=True)


state_store_only = pytest.mark.skipif(not HAS_STATE_STORE, reason="Airflow 3.3+: below, no record is left waiting")


def _completed_and_handed_on(supervisor: Supervisor, hook: WaveSpeedHook, emulator: WaveSpeedEmulator) -> Prediction:
    """A completed prediction that try 1 handed to a trigger that may end the task, in a run cleared twice."""
    emulator.set_duration(0)
    prediction = hook.submit(FLUX, FOX)
    _record(supervisor, True, try_number=1, clear_number=2).hand_on(prediction.id, FLUX, FOX, trigger_may_end_task=True)
    return prediction


@state_store_only
def test_a_retry_resumes_a_waiting_prediction(
    supervisor: Supervisor, emulator_hook: WaveSpeedHook, wavespeed_connection: WaveSpeedEmulator
) -> None:
    """No clear since the hand-off: the try ended without a worker resuming its wait (it died, or never ran)."""
    prediction = _completed_and_handed_on(supervisor, emulator_hook, wavespeed_connection)
    resumed = resume_or_adopt(_record(supervisor, True, clear_number=2), emulator_hook, FLUX, FOX, log=LOG)
    assert resumed is not None and (resumed.id, resumed.status) == (prediction.id, "completed")


@state_store_only
def test_a_clear_after_the_hand_off_submits_again_without_asking_the_api(
    supervisor: Supervisor,
    emulator_hook: WaveSpeedHook,
    wavespeed_connection: WaveSpeedEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The earlier try may have ended in the triggerer with success: the clear asked to run again."""
    prediction = _completed_and_handed_on(supervisor, emulator_hook, wavespeed_connection)
    reads = wavespeed_connection.counters()["requests"].get("result", 0)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert resume_or_adopt(_record(supervisor, True, clear_number=3), emulator_hook, FLUX, FOX, log=LOG) is None
    assert wavespeed_connection.counters()["requests"].get("result", 0) == reads
    assert _logged(caplog) == [
        f"The DAG run was cleared after prediction {prediction.id} was handed to its trigger (which may have ended "
        "the task with success): submitting again, as a clear asks"
    ]


@state_store_only
@pytest.mark.parametrize("dag_run", [None, {"clear_number": None}], ids=["no-dag-run", "no-count"])
def test_a_run_that_gives_no_clear_count_counts_zero_as_airflow_does(
    supervisor: Supervisor, dag_run: dict[str, Any] | None
) -> None:
    """Airflow's DagRun model defaults ``clear_number`` to 0: a record of a never-cleared run is no clear."""
    from types import SimpleNamespace

    first = _record(supervisor, True, try_number=1, clear_number=0)
    first.hand_on("p-1", FLUX, FOX, trigger_may_end_task=True)
    assert _stored(supervisor, first)["clear_number"] == 0  # the run's own count, as users read it
    context = task_context(supervisor, TaskInstance(try_number=2), state_store=True)
    context["dag_run"] = None if dag_run is None else SimpleNamespace(**dag_run)
    entry = SubmitRecord(context).read()
    assert entry is not None and (entry.prediction_id, entry.cleared) == ("p-1", False)
