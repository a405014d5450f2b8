"""A worker shut down (SIGTERM) while its task waits: the task is still running, nothing is cancelled.

The task's try runs in a child process (``dag.test()`` on the test's metadata database, this file run as a
script): a submit that waits in the worker for a prediction the emulator holds. Once the emulator has
seen the wait poll, the test sends the child SIGTERM, as a worker's shutdown does: Airflow's own task
runner calls the operator's ``on_kill``. The child only reports on a pipe when ``on_kill`` has
returned; nothing in it is changed. Then the test ends the child with SIGKILL, as the shutdown's
escalation does. A user's "mark failed" (the task instance's state changed before the SIGTERM) is
the counter-case: there ``on_kill`` cancels.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

TESTS = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the child: tests/ is on sys.path through conftest.py under pytest only
    sys.path.insert(0, str(TESTS))

from airflow_helpers import dag_test  # noqa: E402

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator  # noqa: E402
from airflow_provider_wavespeed.testing import WaveSpeedEmulator  # noqa: E402

FLUX = "wavespeed-ai/flux-dev"
PROMPT = "held until the worker goes"
LOGICAL_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# Only a guard against a child that never reaches the point (a hang): no verdict depends on it.
HANG_GUARD = 300.0

pytestmark = pytest.mark.usefixtures("airflow_db")


def _build(dag_id: str) -> DAG:
    with DAG(dag_id, schedule=None, start_date=LOGICAL_DATE, catchup=False) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit",
            model=FLUX,
            inputs={"prompt": PROMPT},
            wait_for_completion=True,
            deferrable=False,  # waits in the worker: the worker's shutdown reaches it
            poll_interval=0.2,
            retries=0,
        )
    return dag


def _child(dag_id: str, signal_fd: int) -> None:
    """Run the try; say on ``signal_fd`` when the operator's ``on_kill`` has returned (it is not changed)."""
    original = WaveSpeedSubmitOperator.on_kill

    def reporting(self: WaveSpeedSubmitOperator) -> None:
        original(self)
        os.write(signal_fd, b"on_kill returned\n")

    WaveSpeedSubmitOperator.on_kill = reporting  # type: ignore[method-assign]
    dag_test(_build(dag_id), logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)
    os.write(signal_fd, b"finished\n")


class Worker:
    """The child process running the try."""

    def __init__(self, dag_id: str, log: Path) -> None:
        self.read_fd, write_fd = os.pipe()
        from airflow.configuration import conf

        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
            "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key", fallback="") or "",
        }
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, __file__, dag_id, str(write_fd)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        self.log = log

    def said(self) -> str:
        ready, _, _ = select.select([self.read_fd], [], [], HANG_GUARD)
        assert ready, f"the child said nothing; its log: {self.log}"
        return os.read(self.read_fd, 64).decode().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(HANG_GUARD)
        os.close(self.read_fd)


@pytest.fixture
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start() -> Worker:
        child = Worker(re.sub(r"[^A-Za-z0-9_]+", "_", f"shutdown_{request.node.name}"), tmp_path / "worker.log")
        started.append(child)
        return child

    yield start
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def _polled_prediction(emulator: WaveSpeedEmulator) -> str:
    """The held prediction's id, once the task's wait has polled it (the task is then waiting in its worker)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        submissions = emulator.submissions()
        if submissions and emulator.prediction_state(submissions[0]["id"])["polls"] >= 1:
            return str(submissions[0]["id"])
        assert time.monotonic() < deadline, "the task never polled its prediction"
        time.sleep(0.05)  # polling the emulator for the event; no verdict rests on how long it takes


def _set_state(dag_id: str, state: str) -> None:
    """What a user's "mark failed" does to the task instance, before Airflow stops its worker."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select as sql_select

    with create_session() as session:
        (ti,) = session.scalars(sql_select(TaskInstance).where(TaskInstance.dag_id == dag_id)).all()
        assert ti.state == "running"
        ti.state = state


@pytest.mark.parametrize(("user_marked", "cancelled"), [(None, False), ("failed", True)])
def test_a_worker_shutdown_never_cancels_the_prediction_of_a_running_task(
    wavespeed_connection: WaveSpeedEmulator, worker: Any, user_marked: str | None, cancelled: bool
) -> None:
    wavespeed_connection.hold(prompt_contains=PROMPT)
    child = worker()
    prediction_id = _polled_prediction(wavespeed_connection)
    if user_marked:
        _set_state(child.process.args[2], user_marked)
    child.process.send_signal(signal.SIGTERM)
    assert child.said() == "on_kill returned"
    child.stop()  # the shutdown's SIGKILL
    log = child.log.read_text()
    deletes = wavespeed_connection.counters()["delete_requests"]
    if cancelled:
        assert "The task is failed: cancelling its 1 unfinished WaveSpeed prediction(s)" in log
        assert deletes == {prediction_id: 1}
    else:
        assert "The task is still running (a worker shutdown or timeout): its predictions are not cancelled" in log
        assert deletes == {}
        assert wavespeed_connection.prediction_state(prediction_id)["status"] == "processing"
    assert len(wavespeed_connection.submissions()) == 1


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
