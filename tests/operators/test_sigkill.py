"""Workers killed with SIGKILL at the worst moment: the next try never pays for a generation twice.

Each test runs the task's first try in a child process (``dag.test()`` on the test's Airflow
metadata database, this file run as a script) and kills it with ``SIGKILL``: no ``finally``, no
``on_kill``, no failure handling of Airflow's runs, as when the OOM killer or a lost node ends a
worker. The moment is the one where the record lags the API: the prediction exists, the record
does not name it yet. It is reached in one of two ways, both events, never a sleep:

- **the emulator holds the submit's answer** (fault ``slow_after_submit``): the prediction is
  created, its answer not sent; the test kills the child once the emulator lists the submission
  (nothing in the child is changed);
- **the child stops just before the record write** that follows the API's answers (the submit's
  "sent" write, a batch window's settle) and says so on a pipe; the test kills it there.

Then the test does what Airflow's scheduler does to a task instance whose worker stopped
heartbeating (up for retry: it has a retry left) and runs the next try with ``dag.test()`` in
this process, for the same dag run. Checked: the emulator saw each input submitted exactly once,
and the next try resumed or adopted that prediction, or (when the history cannot say) stayed
uncertain without sending again. On Airflow 3.3+ the records are in the task state store, below
in Variables: both are run (the Airflow 3.0 venv for the latter).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

TESTS = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the child: tests/ is on sys.path through conftest.py under pytest only
    sys.path.insert(0, str(TESTS))

from airflow_helpers import batch_record, dag_test, dag_xcoms, task_output, task_record, ti_states  # noqa: E402

from airflow_provider_wavespeed._batch_record import BatchRecord  # noqa: E402
from airflow_provider_wavespeed._records import SUBMIT_RECORD_PREFIX, RecordStore  # noqa: E402
from airflow_provider_wavespeed.api import _reconcile as reconcile_module  # noqa: E402
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator  # noqa: E402
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator  # noqa: E402
from airflow_provider_wavespeed.testing import WaveSpeedEmulator  # noqa: E402

FLUX = "wavespeed-ai/flux-dev"
INPUTS = {"prompt": "a paid picture", "seed": 7}
BATCH_PROMPTS = [f"batch input {n}" for n in range(5)]
BATCH_WINDOW = 2  # windows [0, 1], [2, 3], [4]
LOGICAL_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# Only a guard against a child that never reaches the point (a hang): no verdict depends on it.
HANG_GUARD = 300.0
# The emulator holds a submit's answer this long: far beyond any read timeout, so only the kill ends the wait.
HELD_ANSWER = 3600.0

pytestmark = pytest.mark.usefixtures("airflow_db")


# -- the DAGs: built alike in the child (first try) and in the test (next try) ----------------------------------


def _build(kind: str, dag_id: str) -> DAG:
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        retry = {"retries": 1, "retry_delay": timedelta(0)}
        if kind == "batch":
            WaveSpeedBatchOperator(
                task_id="batch",
                model=FLUX,
                inputs=[{"prompt": prompt} for prompt in BATCH_PROMPTS],
                submit_window=BATCH_WINDOW,
                deferrable=False,
                poll_interval=0.2,
                **retry,
            )
        else:
            wait = kind != "no-wait"
            WaveSpeedSubmitOperator(
                task_id="submit",
                model=FLUX,
                inputs=INPUTS,
                wait_for_completion=wait,
                deferrable=kind == "deferred",
                poll_interval=0.2,
                **retry,
            )
    return dag


def _stop_before(owner: type, name: str, nth: int, when: Any, signal_fd: int) -> None:
    """Stop in the ``nth`` call of ``owner.name`` that ``when(args)`` selects, say so on ``signal_fd``, wait.

    Nothing else changes: every other call runs as it is, and the selected one never returns (the
    test's SIGKILL ends the process inside it, so no cleanup of the operator or of Airflow runs).
    """
    original = getattr(owner, name)
    seen: list[int] = []

    def stopping(self: Any, *args: Any, **kwargs: Any) -> Any:
        if when(args):
            seen.append(1)
            if len(seen) == nth:
                os.write(signal_fd, b"stopped\n")
                threading.Event().wait()  # killed here
        return original(self, *args, **kwargs)

    setattr(owner, name, stopping)


def _child(kind: str, dag_id: str, stop: str, signal_fd: int) -> None:
    """Run the first try in a process of its own: ``dag.test()`` for the run at :data:`LOGICAL_DATE` (its id too)."""
    if stop == "sent-write":  # just after the API's answer, before the record names the prediction
        _stop_before(RecordStore, "put", 1, lambda args: args[0].get("state") == "sent", signal_fd)
    elif stop == "window-settle":  # the second window's answers are in, its part is not written
        _stop_before(BatchRecord, "write_submitted", 2, lambda args: True, signal_fd)
    dag_test(_build(kind, dag_id), logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)
    os.write(signal_fd, b"finished\n")  # never reached in a passing test


# -- the test's side ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _quick_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    # No history lag here: one further look, at once (the one a match must survive), keeps the next try quick.
    monkeypatch.setattr(reconcile_module, "LOOK_DELAYS", (0.0,))


class FirstTry:
    """The child process running the first try; :meth:`kill` ends it with SIGKILL."""

    def __init__(self, kind: str, dag_id: str, stop: str, log: Path) -> None:
        self.read_fd, write_fd = os.pipe()
        from airflow.configuration import conf

        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
            # The same key as this process: below Airflow 3.3 the records are Variables, encrypted with it.
            "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key", fallback="") or "",
        }
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, __file__, kind, dag_id, stop, str(write_fd)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        self.log = log

    def said(self) -> str:
        """Return the child's next word on the pipe (block until it says one, or exits)."""
        ready, _, _ = select.select([self.read_fd], [], [], HANG_GUARD)
        assert ready, f"the first try never reached the kill point; its log: {self.log}"
        return os.read(self.read_fd, 64).decode().strip()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(HANG_GUARD) == -signal.SIGKILL
        os.close(self.read_fd)


@pytest.fixture
def first_try(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    started: list[FirstTry] = []

    def start(kind: str, stop: str) -> FirstTry:
        child = FirstTry(kind, _dag_id(request), stop, tmp_path / "first_try.log")
        started.append(child)
        return child

    yield start
    for child in started:  # a test that failed before its kill must not leave the child behind
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def _wait_for_submissions(emulator: WaveSpeedEmulator, count: int) -> list[dict[str, Any]]:
    """Return the emulator's submissions once it has ``count`` (created: their answers may still be held)."""
    deadline = time.monotonic() + HANG_GUARD
    while len(submissions := emulator.submissions()) < count:
        assert time.monotonic() < deadline, f"the emulator saw {len(submissions)} of {count} submissions"
        time.sleep(0.05)  # polling the emulator's log for the event; no verdict rests on how long it takes
    return submissions


def _up_for_retry(dag_id: str) -> None:
    """Put the killed task instance up for retry, as the scheduler does.

    The scheduler's ``_purge_task_instances_without_heartbeats`` finds a running task instance whose worker
    stopped heartbeating; with a retry left, its failure callback puts it up for retry.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select as sql_select

    with create_session() as session:
        (ti,) = session.scalars(sql_select(TaskInstance).where(TaskInstance.dag_id == dag_id)).all()
        assert (ti.state, ti.try_number) == (TaskInstanceState.RUNNING, 1), "the kill left the first try running"
        ti.state = TaskInstanceState.UP_FOR_RETRY
        ti.end_date = pendulum.now("UTC")


def _next_try(kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the next try of the killed task instance, in the same dag run, with ``dag.test()`` in this process.

    ``dag.test()`` replaces a run of the same logical date with a new one (Airflow's
    ``get_or_create_dagrun``, "to prevent collisions"); here it continues the killed one instead, as
    the scheduler does: the task instance up for retry is scheduled again with the next try number.
    """
    from airflow.models import dag as dag_module
    from airflow.models import dagrun as dagrun_module
    from sqlalchemy import select as sql_select

    def existing_run(*, dag: Any, logical_date: Any, session: Any, **_: Any) -> Any:
        run = session.scalar(
            sql_select(dagrun_module.DagRun).where(
                dagrun_module.DagRun.dag_id == dag.dag_id, dagrun_module.DagRun.logical_date == logical_date
            )
        )
        assert run is not None, "the first try's dag run is gone"
        run.dag = dag
        return run

    # Airflow 3.1+ (dag.test() imports it from airflow.models.dagrun when called), 3.0 (from airflow.models.dag).
    for module, name in ((dagrun_module, "get_or_create_dagrun"), (dag_module, "_get_or_create_dagrun")):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, existing_run)
    dag_id = _dag_id(request)
    _up_for_retry(dag_id)
    return dag_test(_build(kind, dag_id), logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)


def _dag_id(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", f"sigkill_{request.node.name}")


def _submit_record(dag_run_or_ids: Any) -> dict[str, Any] | None:
    return task_record(dag_run_or_ids, "submit", "wavespeed_submit", SUBMIT_RECORD_PREFIX)


class _Run:
    """Enough of a DagRun for the record readers, before the next try's run object exists."""

    def __init__(self, dag_id: str) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select as sql_select

        with create_session() as session:
            (run,) = session.scalars(sql_select(DagRun).where(DagRun.dag_id == dag_id)).all()
            self.dag_id, self.run_id = run.dag_id, run.run_id


def _run_of(request: pytest.FixtureRequest) -> _Run:
    return _Run(_dag_id(request))


# -- WaveSpeedSubmitOperator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["no-wait", "deferred", "in-worker"])
def test_killed_between_the_answer_and_the_record_write_the_next_try_adopts_the_one_prediction(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    first_try: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    """Kill after the API answered, before the "sent" write: the next try adopts the prediction.

    The record says "sending"; the next try finds the prediction in the history and adopts it. One submit in all.
    """
    wavespeed_connection.set_duration(0)
    child = first_try(kind, "sent-write")
    assert child.said() == "stopped"
    (created,) = wavespeed_connection.submissions()
    child.kill()
    left = _submit_record(_run_of(request))
    assert left is not None and left["state"] == "sending" and "prediction_id" not in left

    dag_run = _next_try(kind, request, monkeypatch)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 2
    assert [entry["id"] for entry in wavespeed_connection.submissions()] == [created["id"]]
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    result = dag_xcoms(dag_run)[("submit", -1, "return_value")]
    assert (result if kind == "no-wait" else result["id"]) == created["id"]
    if kind != "no-wait":
        assert result["status"] == "completed"
    assert f"Adopted WaveSpeed prediction {created['id']} from the history" in task_output(capfd)
    assert _submit_record(dag_run) is None  # handed on


@pytest.mark.parametrize("history_inputs", [True, False], ids=["history-lists-inputs", "history-without-inputs"])
def test_killed_while_the_api_holds_the_answer_the_next_try_never_submits_again(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    first_try: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    history_inputs: bool,
) -> None:
    """Kill while the emulator holds the submit's answer: the next try adopts, or stays uncertain; never resends.

    Nothing changed in the child: the emulator created the prediction and holds the answer; the child is
    killed waiting for it. With a history that lists inputs the next try adopts the prediction; without
    (as the API's documented example shows it) it cannot tell, and fails uncertain, sending nothing.
    """
    wavespeed_connection.set_duration(0)
    wavespeed_connection.set_history(inputs=history_inputs)
    wavespeed_connection.add_fault("submit", "slow_after_submit", delay=HELD_ANSWER)
    child = first_try("no-wait", "none")
    (created,) = _wait_for_submissions(wavespeed_connection, 1)
    child.kill()
    assert _submit_record(_run_of(request))["state"] == "sending"  # type: ignore[index]

    dag_run = _next_try("no-wait", request, monkeypatch)
    assert dag_run.get_task_instances()[0].try_number == 2
    assert [entry["id"] for entry in wavespeed_connection.submissions()] == [created["id"]]
    # Requests are counted once answered: the held one never was, and the next try sent none.
    assert wavespeed_connection.counters()["requests"].get("submit", 0) == 0
    if history_inputs:
        assert ti_states(dag_run) == {("submit", -1): "success"}
        assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == created["id"]
        assert _submit_record(dag_run) is None
    else:
        assert ti_states(dag_run) == {("submit", -1): "failed"}
        log = task_output(capfd)
        assert "keeps this task from submitting again" in log
        kept = _submit_record(dag_run)  # a later clear is refused the same way: still "sending"
        assert kept is not None and kept["state"] == "sending"


def test_killed_while_waiting_in_the_worker_the_next_try_resumes_the_same_prediction(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    first_try: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Kill a worker waiting on its recorded prediction: nothing is cancelled, the next try resumes it.

    No ``on_kill`` runs after a SIGKILL, so nothing is cancelled.
    """
    wavespeed_connection.hold(model=FLUX)
    child = first_try("in-worker", "none")
    (created,) = _wait_for_submissions(wavespeed_connection, 1)
    deadline = time.monotonic() + HANG_GUARD
    while wavespeed_connection.prediction_state(created["id"])["polls"] < 1:  # it waits: it has polled
        assert time.monotonic() < deadline, "the first try never polled its prediction"
        time.sleep(0.05)
    child.kill()
    left = _submit_record(_run_of(request))
    assert left is not None and (left["state"], left["prediction_id"]) == ("sent", created["id"])
    assert wavespeed_connection.counters()["cancelled"] == 0
    wavespeed_connection.release()

    dag_run = _next_try("in-worker", request, monkeypatch)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")]["id"] == created["id"]
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    assert f"Resuming WaveSpeed prediction {created['id']}" in task_output(capfd)


# -- WaveSpeedBatchOperator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["window-settle", "answers-held"])
def test_a_batch_killed_mid_window_submits_each_input_exactly_once(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    first_try: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    how: str,
) -> None:
    """Kill a batch between a window's submits and their record: each input is submitted once in all.

    Window [0, 1] recorded, window [2, 3] sent and killed before its record (its answers in, or held by
    the API), input 4 never sent. The next try adopts 2 and 3 from the history, sends only 4.
    """
    wavespeed_connection.set_duration(0)
    if how == "answers-held":  # the second window's two submits: created, answers held
        wavespeed_connection.add_fault("submit", "slow_after_submit", delay=HELD_ANSWER, times=2, skip=2)
    child = first_try("batch", "window-settle" if how == "window-settle" else "none")
    if how == "window-settle":
        assert child.said() == "stopped"
        assert len(wavespeed_connection.submissions()) == 4
    else:
        _wait_for_submissions(wavespeed_connection, 4)
    child.kill()
    left = batch_record(_run_of(request))
    assert left is not None and left["in_flight"] == [2, 3]
    assert left["ids"][:2] != [None, None] and left["ids"][2:] == [None, None, None]

    dag_run = _next_try("batch", request, monkeypatch)
    assert ti_states(dag_run) == {("batch", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 2
    submitted = wavespeed_connection.submissions()
    assert Counter(entry["inputs"]["prompt"] for entry in submitted) == dict.fromkeys(BATCH_PROMPTS, 1)
    # Requests are counted once answered: the two held ones never were; nothing else was sent.
    held = 2 if how == "answers-held" else 0
    assert wavespeed_connection.counters()["requests"]["submit"] == len(BATCH_PROMPTS) - held
    by_prompt = {entry["inputs"]["prompt"]: entry["id"] for entry in submitted}
    result = dag_xcoms(dag_run)[("batch", -1, "return_value")]
    assert [(entry["id"], entry["status"]) for entry in result["predictions"]] == [
        (by_prompt[prompt], "completed") for prompt in BATCH_PROMPTS
    ]
    log = task_output(capfd)
    for index in (2, 3):
        assert f"inputs[{index}]: adopted prediction {by_prompt[BATCH_PROMPTS[index]]} from the history" in log
    assert batch_record(dag_run) is None


if __name__ == "__main__":
    _kind, _dag_id, _stop, _fd = sys.argv[1:5]
    _child(_kind, _dag_id, _stop, int(_fd))
