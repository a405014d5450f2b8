"""_batch_record.py: the batch operator's record (a head and append-only parts), rule by rule, without dag.test().

The record lives in Airflow's own task state store accessor or Variables (a stand-in supervisor answers
them: record_helpers.py). The operator's dag.test() tests (tests/operators/test_batch*.py) prove the same
end to end; these are the fast ones the mutation check runs each mutant against.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from record_helpers import BACKENDS, Supervisor, TaskInstance, task_context

from airflow_provider_wavespeed._batch_record import BATCH_RECORD_VERSIONS, BatchRecord
from airflow_provider_wavespeed._records import BATCH_RECORD_PREFIX, RecordStore, part_key, record_key
from airflow_provider_wavespeed.api._batch import input_digest, uncertain_message
from airflow_provider_wavespeed.api._times import utc_text

FLUX = "wavespeed-ai/flux-dev"
ITEMS = [{"prompt": f"input {n}"} for n in range(6)]
LOG = logging.getLogger("test_batch_record")
RUN = "manual__2026-12-07T05:00:00+00:00"


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOG.name]


def _store(supervisor: Supervisor, state_store: bool, try_number: int = 2) -> RecordStore:
    return BatchRecord.store_of(task_context(supervisor, TaskInstance(try_number=try_number), state_store=state_store))


def _open(supervisor: Supervisor, state_store: bool, items: list[dict[str, Any]] = ITEMS, **kw: Any) -> BatchRecord:
    return BatchRecord.open(_store(supervisor, state_store, **kw), FLUX, items, log=LOG)


def _head(supervisor: Supervisor, state_store: bool) -> Any:
    if state_store:
        return supervisor.value("wavespeed_batch", TaskInstance())
    return json.loads(supervisor.variables[record_key("records_dag", RUN, "generate", -1)])


def _part(supervisor: Supervisor, state_store: bool, number: int) -> Any:
    if state_store:
        return supervisor.value(part_key("wavespeed_batch", number, state_store=True), TaskInstance())
    key = record_key("records_dag", RUN, "generate", -1)
    return json.loads(supervisor.variables[part_key(key, number, state_store=False)])


# -- the store and a new record --------------------------------------------------------------------------


def test_the_record_s_store_names_the_task_instance(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    assert (store.name, store.versions, BATCH_RECORD_VERSIONS) == ("wavespeed_batch", (2,), (2,))
    assert store.key == record_key("records_dag", RUN, "generate", -1, BATCH_RECORD_PREFIX)
    assert store.description == (
        f"WaveSpeed batch record of records_dag.generate (map index -1) in run {RUN}: the inputs sent and their "
        "prediction ids, so that no retry submits an input twice. Deleted when the task succeeds; delete it "
        "yourself only to submit every input again."
    )


@pytest.mark.parametrize("try_number", [1, 2])
def test_a_new_record_has_every_input_unsent_and_writes_nothing_yet(supervisor: Supervisor, try_number: int) -> None:
    record = _open(supervisor, False, try_number=try_number)
    assert supervisor.requests == ([] if try_number == 1 else ["GetVariable"])  # a first try looks up nothing
    assert record.data == {
        "version": 2,
        "run": record.data["run"],
        "model": FLUX,
        "count": 6,
        "digest": input_digest(FLUX, ITEMS),
        "rejected": {},
        "uncertain": {},
        "uncertain_since": {},
        "in_flight": [],
    }
    assert re.fullmatch(r"[0-9a-f]{12}", record.data["run"])
    assert record.data["run"] != _open(supervisor, False).data["run"]  # a token of its own
    assert (record.count, record.unsent(), record.accepted_ids(), record.orphans()) == (6, list(range(6)), [], [])
    assert (record.parts, record.ids, record.where) == (0, {}, record.store.where)


# -- a window: intent, answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_window_is_marked_in_flight_then_its_ids_go_to_a_part(supervisor: Supervisor, state_store: bool) -> None:
    record = _open(supervisor, state_store, try_number=1)
    before = time.time()
    record.write_intent([0, 1, 2])
    head = _head(supervisor, state_store)
    assert head["in_flight"] == [0, 1, 2] and head["parts"] == 0 and head["seq"] == 1
    assert before <= head["in_flight_since"] <= time.time()
    record.write_submitted({1: "p-1", 0: "p-0", 2: "p-2"}, {}, {})
    assert _part(supervisor, state_store, 0) == {"run": record.data["run"], "ids": {"0": "p-0", "1": "p-1", "2": "p-2"}}
    assert _head(supervisor, state_store)["seq"] == 1  # every input accepted: no head write
    assert (record.parts, record.data["in_flight"], record.unsent(), record.accepted_ids()) == (
        1,
        [],
        [3, 4, 5],
        ["p-0", "p-1", "p-2"],
    )
    assert [record.id_of(index) for index in (0, 3)] == ["p-0", None]
    resumed = _open(supervisor, state_store)  # the head still names the window: each input of it has a part
    assert resumed.orphans() == [] and resumed.unsent() == [3, 4, 5] and resumed.ids == {0: "p-0", 1: "p-1", 2: "p-2"}


def test_an_intent_that_did_not_land_stops_the_window(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=r"\(read back nothing\)"):
        record.write_intent([0])


def test_a_part_that_did_not_land_fails_the_task(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=r"\(read back something else for its part 0\)"):
        record.write_submitted({0: "p-0"}, {}, {})


@pytest.mark.parametrize("state_store", BACKENDS)
def test_refused_and_uncertain_inputs_are_written_in_the_head(supervisor: Supervisor, state_store: bool) -> None:
    record = _open(supervisor, state_store, try_number=1)
    record.write_intent([0, 1, 2, 3])
    since = record.data["in_flight_since"]
    refusal = {"error": "not submitted: bad", "code": 400}
    record.write_submitted({0: "p-0"}, {1: refusal}, {2: "the submit's outcome is unknown"})
    head = _head(supervisor, state_store)
    assert head["parts"] == 1 and head["in_flight"] == [] and head["seq"] == 2
    assert head["rejected"] == {"1": refusal} and head["uncertain"] == {"2": "the submit's outcome is unknown"}
    assert head["uncertain_since"] == {"2": since}
    assert record.rejected(1) == refusal and record.rejected(0) is None
    assert record.uncertain(2) == "the submit's outcome is unknown" and record.uncertain(1) is None
    assert record.unsent() == [3, 4, 5]  # 3 was in the window but not sent (back to unsent)
    assert record.to_reconcile() == {2: since}


def test_a_head_write_after_the_answers_is_not_read_back_a_lost_one_sends_nothing_again(
    supervisor: Supervisor,
) -> None:
    """Not read back (one call less per window): a lost one leaves the window in flight, which the next try
    settles as uncertain, to be looked up in the history."""
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0, 1])
    supervisor.refuse_variable_writes = 1
    record.write_submitted({}, {0: {"error": "not submitted: bad", "code": 400}}, {1: "unknown"})  # no failure
    resumed = _open(supervisor, False)
    assert resumed.unsent() == [2, 3, 4, 5] and list(resumed.to_reconcile()) == [0, 1]


def test_a_head_write_after_a_history_look_is_not_read_back_a_lost_one_looks_again(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    record.write_submitted({}, {}, {0: "unknown."})
    supervisor.refuse_variable_writes = 1
    record.reconciled({}, {0: "no match"})  # no failure
    resumed = _open(supervisor, False)
    assert resumed.uncertain(0) == "unknown." and list(resumed.to_reconcile()) == [0]


def test_a_record_made_from_a_head_appends_after_its_parts(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    head = {**_open(supervisor, False).data, "parts": 3}
    record = BatchRecord(store, head, {0: "p-0", 1: "p-1", 2: "p-2"})
    assert record.parts == 3 and record.ids == {0: "p-0", 1: "p-1", 2: "p-2"}
    record.write_submitted({3: "p-3"}, {}, {})
    assert _part(supervisor, False, 3) == {"run": head["run"], "ids": {"3": "p-3"}}


def test_a_window_with_an_input_back_to_unsent_writes_the_head(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0, 1])
    record.write_submitted({0: "p-0"}, {}, {})  # 1 was not sent: e.g. the window stopped at a spent 429
    head = _head(supervisor, False)
    assert head["in_flight"] == [] and head["parts"] == 1
    assert _open(supervisor, False).unsent() == [1, 2, 3, 4, 5]


def test_a_window_with_nothing_accepted_writes_no_part(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    record.write_submitted({}, {}, {0: "unknown"})
    assert record.parts == 0 and not any(key.endswith("__0") for key in supervisor.variables)


def test_a_refusal_that_is_not_a_dict_reads_as_none(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.data["rejected"]["0"] = "refused"
    assert record.rejected(0) is None


def test_an_uncertain_input_without_a_window_is_dated_now(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    before = time.time()
    record.write_submitted({}, {}, {4: "unknown"})
    assert before <= record.to_reconcile()[4] <= time.time()


# -- the history look ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_history_look_adopts_into_a_part_and_says_why_not_in_the_head(
    supervisor: Supervisor, state_store: bool
) -> None:
    record = _open(supervisor, state_store, try_number=1)
    record.write_intent([0, 1, 2])
    record.write_submitted({}, {}, {0: "unknown 0.", 1: "unknown 1.", 2: "unknown 2."})
    record.reconciled({1: "p-1"}, {0: "two matches"})
    head = _head(supervisor, state_store)
    assert _part(supervisor, state_store, 0) == {"run": record.data["run"], "ids": {"1": "p-1"}}
    assert head["uncertain"] == {"0": "unknown 0. Looked up: two matches", "2": "unknown 2."}
    assert head["uncertain_since"] == {"2": record.data["in_flight_since"]} and head["parts"] == 1
    assert record.to_reconcile() == {2: record.data["in_flight_since"]} and record.id_of(1) == "p-1"


def test_a_history_look_with_nothing_adopted_writes_no_part(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_submitted({}, {}, {0: "unknown."})
    record.reconciled({}, {0: "no match"})
    assert record.parts == 0 and record.uncertain(0) == "unknown. Looked up: no match"
    assert _head(supervisor, False)["uncertain"] == {"0": "unknown. Looked up: no match"}


def test_an_unresolved_input_that_was_not_uncertain_says_why(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.reconciled({}, {3: "no match"})
    assert record.uncertain(3) == " Looked up: no match"


def test_a_head_without_pending_look_ups_gets_them(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    del record.data["uncertain_since"]
    assert record.to_reconcile() == {}
    record.reconciled({0: "p-0"}, {})
    assert record.data["uncertain_since"] == {} and record.ids == {0: "p-0"}
    del record.data["uncertain_since"]
    record.write_submitted({}, {}, {1: "unknown"})
    assert list(record.data["uncertain_since"]) == ["1"]


# -- a later try: reading the record ---------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_later_try_resumes_from_the_head_and_its_parts(
    supervisor: Supervisor, state_store: bool, caplog: pytest.LogCaptureFixture
) -> None:
    record = _open(supervisor, state_store, try_number=1)
    for window in ([0, 1], [2, 3]):
        record.write_intent(window)
        record.write_submitted({index: f"p-{index}" for index in window}, {}, {})
    with caplog.at_level(logging.INFO, logger=LOG.name):
        resumed = _open(supervisor, state_store)
    assert resumed.ids == {0: "p-0", 1: "p-1", 2: "p-2", 3: "p-3"} and resumed.parts == 2
    assert resumed.unsent() == [4, 5] and resumed.data["run"] == record.data["run"]
    assert _logged(caplog) == [
        f"Looking up the batch record of an earlier try of this task instance: {resumed.where}",
        "Resuming the WaveSpeed batch from its record: 4 of 6 inputs already sent",
    ]


def test_no_record_of_an_earlier_try_starts_a_new_one(supervisor: Supervisor) -> None:
    assert BatchRecord.read(_store(supervisor, False)) is None
    assert _open(supervisor, False).unsent() == list(range(6))


def test_a_part_of_another_record_ends_the_reading(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    record.write_submitted({0: "p-0"}, {}, {})
    key = record_key("records_dag", RUN, "generate", -1)
    # a stale part of a deleted record (another token), and one that is not a dict
    supervisor.variables[part_key(key, 1, state_store=False)] = json.dumps({"run": "deadbeef0000", "ids": {"1": "x"}})
    assert BatchRecord.read(_store(supervisor, False)).ids == {0: "p-0"}  # type: ignore[union-attr]
    supervisor.variables[part_key(key, 1, state_store=False)] = json.dumps(["p-1"])
    assert BatchRecord.read(_store(supervisor, False)).parts == 1  # type: ignore[union-attr]


def test_a_part_without_ids_adds_none(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    record.write_submitted({0: "p-0"}, {}, {})
    key = record_key("records_dag", RUN, "generate", -1)
    supervisor.variables[part_key(key, 1, state_store=False)] = json.dumps({"run": record.data["run"]})
    read = BatchRecord.read(_store(supervisor, False))
    assert read is not None and read.parts == 2 and read.ids == {0: "p-0"}


def test_a_wait_s_reader_looks_up_no_part_past_the_last(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0, 1])
    record.write_submitted({0: "p-0", 1: "p-1"}, {}, {})
    supervisor.requests.clear()
    read = BatchRecord.read(_store(supervisor, False), waited_for=2)
    assert read is not None and read.ids == {0: "p-0", 1: "p-1"}
    assert supervisor.requests == ["GetVariable", "GetVariable"]  # the head, part 0: not part 1
    supervisor.requests.clear()
    BatchRecord.read(_store(supervisor, False), waited_for=3)  # one more id than the parts hold: looked for
    assert supervisor.requests == ["GetVariable", "GetVariable", "GetVariable"]


def test_a_wait_s_reader_stops_at_the_last_part_the_head_names(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0, 1])
    record.write_submitted({0: "p-0"}, {}, {1: "unknown"})  # part 0, then the head naming it
    supervisor.requests.clear()
    read = BatchRecord.read(_store(supervisor, False), waited_for=1)
    assert read is not None and read.ids == {0: "p-0"} and read.parts == 1
    assert supervisor.requests == ["GetVariable", "GetVariable"]  # the head, part 0: not part 1


def test_a_wait_for_no_id_reads_no_part_the_head_does_not_name(supervisor: Supervisor) -> None:
    _open(supervisor, False, try_number=1).write_intent([0])  # a head naming no part
    supervisor.requests.clear()
    read = BatchRecord.read(_store(supervisor, False), waited_for=0)
    assert read is not None and read.parts == 0 and supervisor.requests == ["GetVariable"]


def test_a_wait_s_reader_reads_every_part_the_head_names(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0, 1])
    record.write_submitted({0: "p-0"}, {}, {1: "unknown"})  # part 0, then the head naming it
    record.reconciled({1: "p-1"}, {})  # part 1, then the head naming both
    read = BatchRecord.read(_store(supervisor, False), waited_for=1)  # the wait was for p-0
    assert read is not None and read.ids == {0: "p-0", 1: "p-1"} and read.parts == 2


def test_parts_the_head_names_but_that_are_gone_fail_the_task(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    record.write_submitted({}, {}, {0: "unknown"})
    record.reconciled({0: "p-0"}, {})
    record.store.delete_part(0)
    with pytest.raises(AirflowFailException) as failed:
        _open(supervisor, False)
    assert str(failed.value) == (
        f"The WaveSpeed batch record in {record.where} names 1 parts, but only 0 were found: which inputs were "
        "sent is unknown, so nothing was submitted. Check what deleted them; delete the record (its head) only "
        "to submit every input again"
    )


def test_an_input_adopted_before_the_worker_died_is_no_longer_uncertain(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0, 1])
    record.write_submitted({}, {}, {0: "unknown", 1: "unknown"})
    record._append({0: "p-0"})  # what reconciled() writes first: the worker dies before the head
    resumed = _open(supervisor, False)
    assert (
        resumed.ids == {0: "p-0"}
        and resumed.uncertain(0) is None
        and resumed.to_reconcile() == {1: pytest.approx(record.data["in_flight_since"])}
    )
    assert resumed.uncertain(1) == "unknown"


def test_an_earlier_try_s_other_inputs_fail_the_task(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.write_intent([0])
    with pytest.raises(AirflowFailException) as failed:
        _open(supervisor, False, items=ITEMS[:5])
    assert str(failed.value) == (
        "The inputs (or model) of this batch differ from the ones an earlier try of this task submitted "
        f"(6 inputs of {FLUX}, recorded in {record.where}); resuming could pair predictions with the wrong inputs, "
        "so nothing was submitted. Render the same inputs again, or delete the record to submit every input anew "
        "(the earlier predictions stay paid)"
    )


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_window_a_dead_worker_left_in_flight_becomes_uncertain(
    supervisor: Supervisor, state_store: bool, caplog: pytest.LogCaptureFixture
) -> None:
    record = _open(supervisor, state_store, try_number=1)
    record.write_intent([0, 1])
    record.write_submitted({0: "p-0"}, {}, {})
    record.write_intent([1, 2, 3, 5])  # 1: back to unsent, sent again
    since = record.data["in_flight_since"]
    with caplog.at_level(logging.INFO, logger=LOG.name):
        resumed = _open(supervisor, state_store)
    why = f"the worker stopped while this submit was in flight (since {utc_text(since)})"
    assert resumed.orphans() == [] and resumed.unsent() == [4]
    assert {index: resumed.uncertain(index) for index in (1, 2, 3, 5)} == dict.fromkeys(
        (1, 2, 3, 5), uncertain_message(FLUX, why, utc_text(since))
    )
    assert resumed.to_reconcile() == dict.fromkeys((1, 2, 3, 5), since)
    assert _head(supervisor, state_store)["in_flight"] == []  # written: the next try sees them uncertain
    assert _logged(caplog) == [
        f"Looking up the batch record of an earlier try of this task instance: {resumed.where}",
        "An earlier try of this task stopped while submitting inputs 1-3, 5: their outcome is unknown, so they are "
        "looked up in the prediction history and never submitted again",
        "Resuming the WaveSpeed batch from its record: 5 of 6 inputs already sent",
    ]


def test_a_window_in_flight_without_its_send_time_is_dated_at_epoch_zero(supervisor: Supervisor) -> None:
    record = _open(supervisor, False, try_number=1)
    record.data["in_flight"] = [0]
    record.store.put(record.data, verify=True)  # as a head without "in_flight_since" would read
    resumed = _open(supervisor, False)
    assert resumed.uncertain(0) == uncertain_message(
        FLUX, "the worker stopped while this submit was in flight (since 1970-01-01 00:00:00 UTC)", utc_text(0)
    )


# -- the end: deleted when the task succeeds ------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_delete_removes_the_head_first_then_every_part(supervisor: Supervisor, state_store: bool) -> None:
    record = _open(supervisor, state_store, try_number=1)
    for window in ([0], [1], [2]):
        record.write_intent(window)
        record.write_submitted({window[0]: f"p-{window[0]}"}, {}, {})
    supervisor.requests.clear()
    record.delete()
    delete = "DeleteTaskStateStore" if state_store else "DeleteVariable"
    assert supervisor.requests == [delete] * 4
    assert supervisor.state == {} and supervisor.variables == {}
    assert BatchRecord.read(_store(supervisor, state_store)) is None
