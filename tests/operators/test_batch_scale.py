"""WaveSpeedBatchOperator at scale: record writes O(N) in total, trigger kwargs constant in N, the manifest.

The byte counts use a counting fake of the task state store (pure arithmetic of what the record
writes); everything else runs real Airflow (dag.test()) against the emulator over loopback HTTP.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import batch_record, dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed._batch_record import BATCH_RECORD_VERSIONS, BatchRecord
from airflow_provider_wavespeed._records import BATCH_RECORD_PREFIX, RecordStore
from airflow_provider_wavespeed.operators import batch as batch_module
from airflow_provider_wavespeed.operators._batch_submit import default_submit_window
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers.batch import WaveSpeedBatchTrigger, ids_from_xcom

FLUX = "wavespeed-ai/flux-dev"
_log = logging.getLogger(__name__)


class CountingStore:
    """A task state store in memory (values pass through JSON, as the real one's do) that counts bytes."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.bytes_written = 0
        self.writes = 0
        self.reads = 0

    def get(self, key: str) -> Any:
        self.reads += 1
        return json.loads(self.values[key]) if key in self.values else None

    def set(self, key: str, value: Any) -> None:
        text = json.dumps(value, separators=(",", ":"))
        self.values[key] = text
        self.bytes_written += len(text)
        self.writes += 1

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def _store(fake: CountingStore) -> RecordStore:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="batch", map_index=-1)
    context = {"ti": ti, "task_state_store": fake}
    return RecordStore(context, "wavespeed_batch", BATCH_RECORD_PREFIX, "test", versions=BATCH_RECORD_VERSIONS)


def _run_windows(fake: CountingStore, count: int, window: int, *, stop_after: int | None = None) -> BatchRecord:
    items = [{"prompt": f"input {n}"} for n in range(count)]
    record = BatchRecord.open(_store(fake), FLUX, items, log=_log)
    todo = record.unsent()
    for number, start in enumerate(range(0, len(todo), window)):
        if stop_after is not None and number == stop_after:
            break
        indexes = todo[start : start + window]
        record.write_intent(indexes)
        record.write_submitted({index: f"pred-{index:06d}-{'x' * 26}" for index in indexes}, {}, {})
    return record


def test_the_record_writes_grow_linearly_with_the_inputs() -> None:
    """Twice the inputs, twice the bytes (a whole-record rewrite: four times)."""
    sizes = {}
    for count in (1000, 2000):
        fake = CountingStore()
        record = _run_windows(fake, count, 25)
        assert len(record.accepted_ids()) == count
        # One head write before each window and one part after it: no read back on the state store
        # (its writes raise when they fail); the reads are the open's look-up only.
        assert fake.writes == 2 * (count // 25)
        assert fake.reads == 1
        sizes[count] = fake.bytes_written
    ratio = sizes[2000] / sizes[1000]
    assert 1.9 <= ratio <= 2.1, sizes
    assert sizes[1000] < 1000 * 150, sizes  # about 100 bytes per input in all (ids are ~40 bytes)


def test_a_crash_between_a_part_and_the_next_head_write_loses_nothing() -> None:
    fake = CountingStore()
    record = _run_windows(fake, 10, 4, stop_after=2)  # windows 0-3 and 4-7 settled; the head still names 4-7
    assert fake.get("wavespeed_batch")["in_flight"] == [4, 5, 6, 7]
    items = [{"prompt": f"input {n}"} for n in range(10)]
    resumed = BatchRecord.open(_store(fake), FLUX, items, log=_log)
    assert resumed.orphans() == [] and resumed.unsent() == [8, 9]
    assert resumed.accepted_ids() == record.accepted_ids() and len(resumed.accepted_ids()) == 8
    assert resumed.to_reconcile() == {}


def test_parts_of_a_deleted_record_are_never_read_and_a_lost_part_fails() -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    fake = CountingStore()
    _run_windows(fake, 8, 4)
    fake.delete("wavespeed_batch")  # a user deleting the head: submit every input again
    items = [{"prompt": f"input {n}"} for n in range(8)]
    fresh = BatchRecord.open(_store(fake), FLUX, items, log=_log)
    assert fresh.unsent() == list(range(8)) and fresh.accepted_ids() == []
    # The next head names the parts it saw written; one lost after that is not silently read as "unsent".
    fresh.write_intent([0, 1])
    fresh.write_submitted({0: "a0", 1: "a1"}, {}, {})
    fresh.write_intent([2])
    fake.delete("wavespeed_batch.0")
    with pytest.raises(AirflowFailException, match="names 1 parts, but only 0 were found"):
        BatchRecord.open(_store(fake), FLUX, items, log=_log)


def test_the_default_window_is_about_two_seconds_of_the_budget() -> None:
    assert default_submit_window(500) == 25  # Silver: 17 a 2 s, never below 25
    assert default_submit_window(3000) == 100  # Gold
    assert default_submit_window(2) == 25 and default_submit_window(None) == 25


def test_trigger_kwargs_do_not_grow_with_the_batch() -> None:
    def size(count: int) -> int:
        where = {"dag_id": "d", "run_id": "manual__2026", "task_id": "batch", "map_index": -1, "key": "k"}
        trigger = WaveSpeedBatchTrigger(ids_xcom=where, count=count, end_time=1_900_000_000.0, cancel_on_kill=True)
        return len(json.dumps(trigger.serialize()))

    assert size(10_000) - size(10) == len("10000") - len("10")
    assert size(10_000) < 500
    with pytest.raises(ValueError, match="ids_xcom must name"):
        WaveSpeedBatchTrigger(ids_xcom={}, count=1, end_time=1.0)


def test_ids_read_from_xcom_are_checked() -> None:
    assert ids_from_xcom("a1,b-2", 2) == ["a1", "b-2"] and ids_from_xcom("", 0) == []
    with pytest.raises(LookupError, match="no such XCom"):
        ids_from_xcom(None, 2)
    with pytest.raises(ValueError, match="holds 1 ids, the task deferred for 2"):
        ids_from_xcom("a1", 2)


# -- real runs -----------------------------------------------------------------------------------------

pytestmark_db = pytest.mark.usefixtures("airflow_db")


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"batch_scale_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


def _prompts(count: int) -> list[dict[str, Any]]:
    return [{"prompt": f"input {n}"} for n in range(count)]


@pytestmark_db
def test_a_gold_budget_sends_windows_of_100(
    wavespeed_emulator: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    connection = {
        "conn_type": "wavespeed",
        "host": wavespeed_emulator.url,
        "password": wavespeed_emulator.api_key,
        "extra": {"account_tier": "gold"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", json.dumps(connection))
    wavespeed_emulator.set_duration(0)
    windows: list[int] = []
    mark = BatchRecord.write_intent

    def counted(self: BatchRecord, indexes: list[int]) -> None:
        windows.append(len(indexes))
        mark(self, indexes)

    monkeypatch.setattr(BatchRecord, "write_intent", counted)
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=_prompts(130), poll_interval=0.2)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert windows == [100, 30]
    assert "Submitting 130 inputs in windows of 100" in task_output(capfd)
    assert wavespeed_emulator.counters()["requests"]["submit"] == 130


@pytestmark_db
def test_a_manifest_holds_every_entry_and_xcom_a_small_summary(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    wavespeed_connection.set_duration(0)
    manifest = tmp_path / "runs" / "batch.json"
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=_prompts(60),
            submit_window=25,
            poll_interval=0.2,
            manifest_path=str(tmp_path / "runs" / "{{ ti.task_id }}.json"),  # templated
            output_path=str(tmp_path / "out"),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    xcoms = dag_xcoms(dag_run)
    summary = xcoms[("batch", -1, "return_value")]
    assert summary == {
        "manifest": str(manifest),
        "completed": 60,
        "failed": 0,
        "count": 60,
        "unit_price_usd": 0.003,  # what the 60 completed generations cost (the emulator's flux-dev price)
        "cost_usd": 0.18,
        "not_completed": [],
    }
    full = json.loads(manifest.read_text())
    assert (full["completed"], full["failed"]) == (60, 0)
    by_id = {entry["id"]: entry for entry in wavespeed_connection.submissions()}
    assert [entry["index"] for entry in full["predictions"]] == list(range(60))
    for entry in full["predictions"]:
        assert entry["status"] == "completed" and by_id[entry["id"]]["inputs"] == {"prompt": f"input {entry['index']}"}
        assert len(entry["stored_paths"]) == 1 and Path(entry["stored_paths"][0]).is_file()
    assert not list(manifest.parent.glob(".*.part"))  # written under a temporary name, then moved
    # The trigger read the ids from this XCom: one compact value, not a list in the trigger's kwargs.
    assert sorted(xcoms[("batch", -1, "wavespeed_batch_ids")].split(",")) == sorted(by_id)
    assert batch_record(dag_run) is None
    # The task notes the full result for OpenLineage; a summary read as a result names no prediction.
    from airflow_provider_wavespeed import _outcome

    assert _outcome._lineage_predictions(summary) == [] and len(_outcome._lineage_predictions(full)) == 60


@pytestmark_db
@pytest.mark.parametrize("retries", [1, 0], ids=["retried", "no-retry"])
def test_a_manifest_that_cannot_be_written_keeps_the_record_and_resubmits_nothing(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    retries: int,
) -> None:
    """Try 1's manifest directory is a file; try 2's is writable: the retry writes it and submits nothing."""
    wavespeed_connection.set_duration(0)
    (tmp_path / "blocked_1").write_text("a file, not a directory")
    with _dag(request) as dag:
        WaveSpeedBatchOperator(
            task_id="batch",
            model=FLUX,
            inputs=_prompts(6),
            submit_window=4,
            poll_interval=0.2,
            manifest_path=str(tmp_path / "blocked_{{ ti.try_number }}" / "manifest.json"),
            retries=retries,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    log = task_output(capfd)
    assert "Could not write the WaveSpeed batch manifest" in log and "blocked_1" in log
    assert "is kept: a retry, or re-running the task once the path is writable, writes it again" in log
    assert wavespeed_connection.counters()["requests"]["submit"] == 6
    assert Counter(entry["inputs"]["prompt"] for entry in wavespeed_connection.submissions()) == {
        f"input {n}": 1 for n in range(6)
    }
    if retries:
        assert ti_states(dag_run) == {("batch", -1): "success"}
        assert dag_run.get_task_instances()[0].try_number == 2
        assert json.loads((tmp_path / "blocked_2" / "manifest.json").read_text())["completed"] == 6
        assert batch_record(dag_run) is None
    else:
        assert ti_states(dag_run) == {("batch", -1): "failed"}
        record = batch_record(dag_run)
        assert record is not None and all(record["ids"]) and len(record["ids"]) == 6


@pytestmark_db
def test_a_bad_ids_xcom_ends_the_wait_with_a_clear_error(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The XCom the trigger reads holds something else than the ids it was deferred for."""
    wavespeed_connection.set_duration(0)
    monkeypatch.setattr(batch_module, "ids_for_xcom", lambda ids: ",".join(ids[:-1]))  # one id lost
    with _dag(request) as dag:
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=_prompts(3), poll_interval=0.2)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("batch", -1): "failed"}
    log = task_output(capfd)
    assert "could not read the ids of the 3 predictions it waits for from XCom 'wavespeed_batch_ids'" in log
    assert "it holds 2 ids, the task deferred for 3" in log and "nothing is submitted again" in log
    record = batch_record(dag_run)
    assert record is not None and all(record["ids"])  # kept: a re-run waits for the same predictions
