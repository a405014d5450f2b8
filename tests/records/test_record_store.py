"""_records.py: where a task instance's paid-work records are stored, rule by rule, without dag.test().

Airflow's own ``TaskStateStoreAccessor`` (3.3+) and ``Variable`` run here; their requests are answered
by a stand-in supervisor (conftest.py). The operators' dag.test() tests prove the same end to end;
these are the fast ones the mutation check (scripts/mutation.py) runs each mutant against.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from record_helpers import BACKENDS, HAS_STATE_STORE, Supervisor, TaskInstance, task_context

from airflow_provider_wavespeed._records import (
    BATCH_RECORD_PREFIX,
    SUBMIT_RECORD_PREFIX,
    RecordStore,
    part_key,
    record_key,
    unheld_in_this_run,
)
from airflow_provider_wavespeed.api._reconcile import Reconciled
from airflow_provider_wavespeed.triggers.batch import IDS_XCOM_KEY

RUN = "manual__2026-12-07T05:00:00+00:00"
# The key an earlier release wrote for ("records_dag", RUN, "generate", -1): a retry must find the same one.
KEY = "002b2e694c071c6f28b380a24687c495cb28d6b6"


def _store(
    supervisor: Supervisor,
    state_store: bool,
    ti: TaskInstance | None = None,
    *,
    versions: tuple[int, ...] = (1,),
) -> RecordStore:
    context = task_context(supervisor, ti or TaskInstance(try_number=2), state_store=state_store)
    return RecordStore(context, "wavespeed_test", SUBMIT_RECORD_PREFIX, "the test's record", versions=versions)


# -- record_key, part_key ---------------------------------------------------------------------------


def test_a_record_key_is_its_prefix_and_40_hex_digits_the_same_in_every_release() -> None:
    assert record_key("records_dag", RUN, "generate", -1) == f"wavespeed_batch__{KEY}"
    assert record_key("records_dag", RUN, "generate", -1, SUBMIT_RECORD_PREFIX) == f"wavespeed_submit__{KEY}"
    assert re.fullmatch(r"wavespeed_submit__[0-9a-f]{40}", record_key("d", "r", "t", 0, SUBMIT_RECORD_PREFIX))
    assert BATCH_RECORD_PREFIX == "wavespeed_batch__" and SUBMIT_RECORD_PREFIX == "wavespeed_submit__"


def test_a_record_key_names_no_id_and_tells_every_task_instance_apart() -> None:
    key = record_key("secret_dag", "token:run+1", "a_task", 7)
    assert not any(part in key for part in ("secret", "token", "a_task", ":", "+"))
    others = {
        record_key("secret_dag2", "token:run+1", "a_task", 7),
        record_key("secret_dag", "token:run+2", "a_task", 7),
        record_key("secret_dag", "token:run+1", "b_task", 7),
        record_key("secret_dag", "token:run+1", "a_task", 8),
        record_key("secret_da", "gtoken:run+1", "a_task", 7),  # the ids' boundaries count
    }
    assert key not in others and len(others) == 5


def test_a_part_s_key_is_beside_its_record_s_in_each_backend() -> None:
    assert part_key("wavespeed_batch", 0, state_store=True) == "wavespeed_batch.0"
    assert part_key(f"wavespeed_batch__{KEY}", 12, state_store=False) == f"wavespeed_batch__{KEY}__12"


# -- the backend and where it is told ------------------------------------------------------------------


@pytest.mark.skipif(not HAS_STATE_STORE, reason="Airflow 3.3+")
def test_the_state_store_is_the_backend_when_the_context_has_one(supervisor: Supervisor) -> None:
    store = _store(supervisor, True)
    assert store.where == "the task state store of this task instance, key 'wavespeed_test'"
    assert store.writes_can_fail_silently is False
    store.put({"version": 1}, verify=True)
    assert supervisor.requests == ["SetTaskStateStore"]  # no read back, no Variable
    assert supervisor.variables == {}


def test_a_variable_is_the_backend_below_airflow_3_3(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    assert store.key == f"wavespeed_submit__{KEY}" and store.name == "wavespeed_test"
    assert store.where == f"Airflow Variable 'wavespeed_submit__{KEY}'"
    assert store.writes_can_fail_silently is True
    assert store.description == "the test's record" and store.versions == (1,)


def test_an_unmapped_task_s_key_is_its_map_index_minus_one(supervisor: Supervisor) -> None:
    unmapped = _store(supervisor, False, TaskInstance(map_index=None))  # type: ignore[arg-type]
    mapped = _store(supervisor, False, TaskInstance(map_index=3))
    assert unmapped.key == record_key("records_dag", RUN, "generate", -1, SUBMIT_RECORD_PREFIX)
    assert mapped.key == record_key("records_dag", RUN, "generate", 3, SUBMIT_RECORD_PREFIX)


# -- reading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_no_record_reads_none(supervisor: Supervisor, state_store: bool) -> None:
    assert _store(supervisor, state_store).get() is None


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_first_try_looks_up_no_earlier_record(supervisor: Supervisor, state_store: bool) -> None:
    _store(supervisor, state_store).put({"version": 1, "state": "sent"}, verify=False)
    supervisor.requests.clear()
    first = _store(supervisor, state_store, TaskInstance(try_number=1))
    assert first.first_try is True and first.earlier() is None
    assert supervisor.requests == []  # not even asked
    later = _store(supervisor, state_store, TaskInstance(try_number=2))
    assert later.first_try is False and later.earlier() == {"version": 1, "state": "sent", "seq": 1}


def test_a_task_instance_without_a_try_number_is_not_taken_for_a_first_try(supervisor: Supervisor) -> None:
    class NoTryNumber:
        dag_id, run_id, task_id, map_index = "records_dag", RUN, "generate", -1

    store = RecordStore({"ti": NoTryNumber()}, "wavespeed_test", SUBMIT_RECORD_PREFIX, "d")
    store.put({"version": 1}, verify=False)
    assert store.first_try is False and store.earlier() == {"version": 1, "seq": 1}


@pytest.mark.parametrize("state_store", BACKENDS)
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param({"version": 2, "seq": 1}, "{'version': 2, 'seq': 1}", id="a-newer-version"),
        pytest.param({"seq": 1}, "{'seq': 1}", id="no-version"),
        pytest.param(["version", 1], "['version', 1]", id="not-a-dict"),
        pytest.param("sent", "sent", id="a-text"),
    ],
)
def test_a_value_this_provider_did_not_write_fails_the_task_naming_it(
    supervisor: Supervisor, state_store: bool, value: Any, shown: str
) -> None:
    store = _store(supervisor, state_store)
    if state_store:
        supervisor.put_value("wavespeed_test", TaskInstance(), value)
    else:
        supervisor.variables[store.key] = json.dumps(value)
        shown = json.dumps(value)  # the Variable's text, as stored
    with pytest.raises(AirflowFailException) as failed:
        store.get()
    assert str(failed.value) == (
        f"The WaveSpeed record in {store.where} is not one this provider wrote (or a newer version's): "
        f"{shown!r}. Nothing was submitted. If it is stale, delete it: the task then submits again"
    )


def test_a_variable_that_is_not_json_fails_the_task_naming_it(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    supervisor.variables[store.key] = "sent: p-1"
    with pytest.raises(AirflowFailException, match=r"is not one this provider wrote .*: 'sent: p-1'\. Nothing was"):
        store.get()


def test_a_long_foreign_value_is_shown_cut_to_200_characters(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    supervisor.variables[store.key] = json.dumps({"version": 0, "note": "x" * 400})
    with pytest.raises(AirflowFailException) as failed:
        store.get()
    assert repr(supervisor.variables[store.key][:200]) in str(failed.value)
    assert "x" * 190 not in str(failed.value)


def test_the_versions_a_reader_understands_are_its_own(supervisor: Supervisor) -> None:
    _store(supervisor, False, versions=(2,)).put({"version": 2}, verify=False)
    assert _store(supervisor, False, versions=(1, 2)).get() == {"version": 2, "seq": 1}
    with pytest.raises(AirflowFailException):
        _store(supervisor, False, versions=(1,)).get()


# -- writing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_each_write_numbers_the_record_one_more(supervisor: Supervisor, state_store: bool) -> None:
    store = _store(supervisor, state_store)
    first = {"version": 1, "state": "sending"}
    store.put(first, verify=True)
    assert first["seq"] == 1 and store.get() == {"version": 1, "state": "sending", "seq": 1}
    store.put({"version": 1, "state": "sent", "seq": 1}, verify=True)
    store.put({"version": 1, "state": "sent", "seq": 2}, verify=False)
    assert store.get() == {"version": 1, "state": "sent", "seq": 3}


def test_a_variable_holds_the_record_as_compact_json_with_its_description(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    store.put({"version": 1, "model": "m"}, verify=True)
    assert supervisor.variables[store.key] == '{"version":1,"model":"m","seq":1}'
    assert supervisor.descriptions[store.key] == "the test's record"
    assert supervisor.requests == ["PutVariable", "GetVariable"]  # written, then read back


def test_a_variable_write_the_api_server_refuses_fails_the_task(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    supervisor.refuse_variable_writes = 1  # Variable.set returns as if it had written
    with pytest.raises(AirflowException) as failed:
        store.put({"version": 1}, verify=True)
    assert not isinstance(failed.value, AirflowFailException)  # a retry resumes from the record
    assert str(failed.value) == (
        f"Could not record the WaveSpeed task's progress in {store.where} (read back nothing): nothing more was "
        "submitted. Check that tasks can write it (no secrets backend defines this key); a retry resumes from "
        "the record"
    )


def test_a_variable_write_that_left_the_older_record_fails_the_task(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    store.put({"version": 1, "state": "sending"}, verify=True)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=re.escape("(read back another record)")):
        store.put({"version": 1, "state": "sent", "seq": 1}, verify=True)


def test_a_variable_write_that_left_another_record_of_the_same_number_fails_the_task(supervisor: Supervisor) -> None:
    """Each record write numbers from the seq the written value carries: a new value starts at 1 again."""
    store = _store(supervisor, False)
    store.put({"version": 1, "state": "sent", "prediction_id": "p-1"}, verify=True)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException, match=re.escape("(read back another record)")):
        store.put({"version": 1, "state": "sending"}, verify=True)


def test_a_secrets_backend_shadowing_the_variable_fails_the_task(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow reads a Variable from the environment (a secrets backend) before the API server: the write lands
    where no read finds it."""
    store = _store(supervisor, False)
    monkeypatch.setenv(f"AIRFLOW_VAR_{store.key.upper()}", json.dumps({"version": 1, "seq": 4}))
    with pytest.raises(AirflowException, match=re.escape("(read back another record)")):
        store.put({"version": 1, "seq": 7}, verify=True)
    assert json.loads(supervisor.variables[store.key])["seq"] == 8  # written, but not what a read finds


def test_an_unverified_write_is_not_read_back(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    supervisor.refuse_variable_writes = 1
    store.put({"version": 1}, verify=False)
    assert supervisor.requests == ["PutVariable"]


@pytest.mark.parametrize("state_store", BACKENDS)
def test_delete_removes_the_record(supervisor: Supervisor, state_store: bool) -> None:
    store = _store(supervisor, state_store)
    store.put({"version": 1}, verify=False)
    store.delete()
    assert store.get() is None
    assert supervisor.variables == {} and supervisor.state == {}


# -- parts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state_store", BACKENDS)
def test_parts_are_written_read_and_deleted_beside_the_record(supervisor: Supervisor, state_store: bool) -> None:
    store = _store(supervisor, state_store)
    assert store.get_part(0) is None
    store.put_part(0, {"run": "r", "ids": {"0": "p-0"}}, verify=True)
    store.put_part(1, {"run": "r", "ids": {"1": "p-1"}}, verify=False)
    assert store.get_part(0) == {"run": "r", "ids": {"0": "p-0"}}
    assert store.get_part(1) == {"run": "r", "ids": {"1": "p-1"}}
    if state_store:
        assert supervisor.value("wavespeed_test.1", TaskInstance()) == {"run": "r", "ids": {"1": "p-1"}}
    else:
        assert json.loads(supervisor.variables[f"wavespeed_submit__{KEY}__1"]) == {"run": "r", "ids": {"1": "p-1"}}
    assert store.get() is None  # the record itself is not a part
    store.delete_part(0)
    assert store.get_part(0) is None and store.get_part(1) is not None


def test_a_part_variable_that_is_not_json_reads_as_none(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    supervisor.variables[part_key(store.key, 2, state_store=False)] = "{not json"
    assert store.get_part(2) is None


def test_a_part_write_the_api_server_refuses_fails_the_task(supervisor: Supervisor) -> None:
    store = _store(supervisor, False)
    supervisor.refuse_variable_writes = 1
    with pytest.raises(AirflowException) as failed:
        store.put_part(3, {"run": "r", "ids": {}}, verify=True)
    assert f"in {store.where} (read back something else for its part 3): nothing more" in str(failed.value)
    supervisor.refuse_variable_writes = 1
    store.put_part(3, {"run": "r", "ids": {}}, verify=False)  # not read back: no failure
    assert supervisor.requests[-1] == "PutVariable"


@pytest.mark.parametrize("state_store", BACKENDS)
def test_a_part_write_is_read_back_only_where_it_can_fail_silently(supervisor: Supervisor, state_store: bool) -> None:
    store = _store(supervisor, state_store)
    store.put_part(0, {"run": "r", "ids": {}}, verify=True)
    assert supervisor.requests == (["SetTaskStateStore"] if state_store else ["PutVariable", "GetVariable"])


# -- unheld_in_this_run ------------------------------------------------------------------------------------------


class _Dag:
    task_ids = ("generate", "twin", "batch")


def _unheld(ti: TaskInstance, found: Reconciled[int]) -> Reconciled[int]:
    from airflow.sdk.execution_time.context import set_current_context

    with set_current_context({"ti": ti, "dag": _Dag()}):  # type: ignore[typeddict-item]
        return unheld_in_this_run(found)


def test_nothing_adopted_reads_no_xcom() -> None:
    found = Reconciled[int]({}, {0: "two matches"})
    assert unheld_in_this_run(found) is found  # no task context here: it was not looked at


def test_a_match_no_task_of_the_run_holds_is_adopted() -> None:
    ti = TaskInstance(xcoms={("twin", "prediction_id"): "p-other", ("batch", IDS_XCOM_KEY): "p-3,p-4"})
    found = _unheld(ti, Reconciled({0: "p-1", 1: "p-2"}, {2: "two matches"}))
    assert (found.adopted, found.unresolved) == ({0: "p-1", 1: "p-2"}, {2: "two matches"})


@pytest.mark.parametrize(
    ("task_id", "key", "value"),
    [
        ("twin", "prediction_id", "p-1"),
        ("batch", IDS_XCOM_KEY, "p-0,p-1,p-9"),
        ("batch", IDS_XCOM_KEY, ",p-1,"),
        ("generate", "prediction_id", "p-1"),  # this task's own, of an earlier try
    ],
)
def test_a_match_another_task_of_the_run_holds_is_not_adopted(task_id: str, key: str, value: str) -> None:
    ti = TaskInstance(xcoms={(task_id, key): value, ("twin", IDS_XCOM_KEY): None, ("batch", "prediction_id"): ""})
    found = _unheld(ti, Reconciled({0: "p-1", 1: "p-2"}, {2: "two matches"}))
    assert found.adopted == {1: "p-2"}
    assert found.unresolved == {
        2: "two matches",
        0: "prediction p-1 matches, but another task of this DAG run holds it (its XCom), so it is that task's "
        "generation, not this submit's",
    }


def test_an_empty_id_held_is_no_prediction() -> None:
    ti = TaskInstance(xcoms={("batch", IDS_XCOM_KEY): ",,"})
    assert _unheld(ti, Reconciled({0: ""}, {})).adopted == {0: ""}  # "" was no id any task holds


def test_the_xcoms_of_every_task_of_the_dag_are_read() -> None:
    pulled: list[tuple[list[str], str]] = []

    class Recording(TaskInstance):
        def xcom_pull(self, *, task_ids: list[str], key: str) -> list[Any] | None:
            pulled.append((task_ids, key))
            return super().xcom_pull(task_ids=task_ids, key=key)

    _unheld(Recording(), Reconciled({0: "p-1"}, {}))
    assert pulled == [(["generate", "twin", "batch"], "prediction_id"), (["generate", "twin", "batch"], IDS_XCOM_KEY)]


def test_xcoms_that_cannot_be_read_leave_every_match_unresolved() -> None:
    class Unreadable(TaskInstance):
        def xcom_pull(self, *, task_ids: list[str], key: str) -> list[Any] | None:
            raise ConnectionError("supervisor gone")

    found = _unheld(Unreadable(), Reconciled({0: "p-1", 1: "p-2"}, {2: "two matches"}))
    why = "the prediction ids this run's other tasks hold could not be read (ConnectionError: supervisor gone)"
    assert found.adopted == {}
    assert found.unresolved == {2: "two matches", 0: f"{why}, so it is not adopted", 1: f"{why}, so it is not adopted"}


def test_no_task_context_leaves_every_match_unresolved() -> None:
    found = unheld_in_this_run(Reconciled({0: "p-1"}, {}))
    assert found.adopted == {} and list(found.unresolved) == [0]
    assert found.unresolved[0].startswith("the prediction ids this run's other tasks hold could not be read (")
