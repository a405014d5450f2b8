"""The cancel rules of ``triggers/_cancel.py`` one at a time: a worker's ``on_kill``, the cancels' own
failures, and the small readings the decisions rest on (try numbers, XCom addresses, Airflow's timeout).

The predictions are the emulator's, over loopback HTTP. The task instance's state and the waiting-try
XCom come from Airflow's API server through the supervisor, which these tests do not run: where a rule
reads them, the test gives the answer (as ``tests/triggers/test_trigger_cancel.py`` does);
``tests/triggers/test_promise_cancel_real_state.py`` and ``tests/operators/test_worker_shutdown.py``
read the real ones.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers import _cancel
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
LOG = logging.getLogger("wavespeed.test_cancel_rules")


def _ti(state: str | None = None, *, map_index: Any = -1, try_number: Any = 1) -> SimpleNamespace:
    return SimpleNamespace(
        dag_id="d", task_id="t", run_id="r", map_index=map_index, try_number=try_number, state_on_server=state
    )


def _logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """What was logged: stdlib records, and a trigger's log lines (structlog, written to stdout on 3.3)."""
    out, err = capfd.readouterr()
    return caplog.text + out + err


def _begins(said: str, logs: str) -> bool:
    """Whether a line of ``logs`` has a message that begins with ``said`` (not just contains it)."""
    return re.search(r"(?<![\w])" + re.escape(said), logs) is not None


def _held(emulator: WaveSpeedEmulator, count: int = 1) -> list[str]:
    emulator.hold(prompt_contains="held")
    return [emulator.state.submit(FLUX, {"prompt": f"held {n}"}, None).id for n in range(count)]


# -- a worker's on_kill --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "cancelled", "said"),
    [
        (
            "running",
            False,
            "The task is still running (a worker shutdown or timeout): its predictions are not cancelled",
        ),
        (None, False, "The task is still None (a worker shutdown or timeout): its predictions are not cancelled"),
        ("unreadable", False, "Could not read this task's state (supervisor gone): the WaveSpeed predictions are not"),
        ("failed", True, "The task is failed: cancelling its 2 unfinished WaveSpeed prediction(s)"),
        ("success", True, "The task is success: cancelling its 2 unfinished WaveSpeed prediction(s)"),
        ("none", True, "The task is none: cancelling its 2 unfinished WaveSpeed prediction(s)"),  # cleared
    ],
)
def test_a_worker_s_on_kill_cancels_only_when_a_user_changed_the_state(
    wavespeed_connection: WaveSpeedEmulator,
    server_state: list[Any],
    caplog: pytest.LogCaptureFixture,
    state: str | None,
    cancelled: bool,
    said: str,
) -> None:
    ids = _held(wavespeed_connection, 2)
    task = SimpleNamespace(log=LOG)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        _cancel.cancel_on_worker_kill(task, _ti(state), "wavespeed_default", ids)
    assert len(server_state) == 1
    assert any(message.startswith(said) for message in caplog.messages), caplog.messages
    deletes = wavespeed_connection.counters()["delete_requests"]
    assert deletes == ({prediction_id: 1 for prediction_id in ids} if cancelled else {})
    # The cancels' outcome is told on the task's own log (what its user reads).
    on_task_log = [record.getMessage() for record in caplog.records if record.name == LOG.name]
    told = [
        message for message in on_task_log if message.startswith("WaveSpeed cancel of 2 unfinished prediction(s): ")
    ]
    assert len(told) == (1 if cancelled else 0), on_task_log


@pytest.mark.parametrize("what", ["no-ti", "no-ids"])
def test_a_worker_s_on_kill_without_a_task_instance_or_predictions_asks_and_sends_nothing(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], what: str
) -> None:
    ids = _held(wavespeed_connection)
    ti = None if what == "no-ti" else _ti("failed")
    _cancel.cancel_on_worker_kill(SimpleNamespace(log=LOG), ti, "wavespeed_default", ids if ti is None else [])
    assert server_state == []
    assert wavespeed_connection.counters()["total_requests"] == 0


def test_a_worker_s_cancels_that_fail_are_told_not_raised(
    wavespeed_emulator: WaveSpeedEmulator, server_state: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    # No connection and no WAVESPEED_API_KEY: the cancel cannot even start, and on_kill must not raise.
    ids = _held(wavespeed_emulator, 2)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        _cancel.cancel_on_worker_kill(SimpleNamespace(log=LOG), _ti("failed"), "wavespeed_default", ids)
    [message] = caplog.messages
    assert message.startswith(f"Cancelling WaveSpeed predictions {ids[0]}, {ids[1]} failed: ")
    assert message.endswith("WAVESPEED_API_KEY")  # the error itself, with its fix
    assert wavespeed_emulator.counters()["total_requests"] == 0


# -- the triggers' cancels: their failures are told, and their budget holds -----------------------------------


def test_a_cancel_that_cannot_start_is_told_and_returns_nothing(
    wavespeed_emulator: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _held(wavespeed_emulator, 2)  # no connection, no WAVESPEED_API_KEY: no client
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        outcome = asyncio.run(_cancel.cancel_with_shared_client("wavespeed_default", ids, log=LOG))
    assert outcome is None
    [message] = caplog.messages
    assert message.startswith("Could not cancel 2 WaveSpeed prediction(s): ") and "WAVESPEED_API_KEY" in message
    assert wavespeed_emulator.counters()["total_requests"] == 0


def test_cancels_past_their_budget_are_stopped_and_told(
    wavespeed_connection: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _held(wavespeed_connection)
    # The read before the DELETE is answered only after an hour: only the budget ends the wait.
    wavespeed_connection.add_fault("result", "slow", delay=3600, times=None)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        outcome = asyncio.run(_cancel.cancel_with_shared_client("wavespeed_default", ids, log=LOG, budget=2.0))
    assert outcome is None
    assert "Cancelling 1 WaveSpeed prediction(s) took over 2 s; stopped" in caplog.text
    assert wavespeed_connection.counters()["delete_requests"] == {}


def test_a_cancel_within_its_budget_returns_what_it_did(
    wavespeed_connection: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _held(wavespeed_connection, 2)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        outcome = asyncio.run(_cancel.cancel_with_shared_client("wavespeed_default", ids, log=LOG))
    assert outcome is not None and sorted(outcome.cancelled) == sorted(ids)
    told = [record.getMessage() for record in caplog.records if record.name == LOG.name]  # on the given log
    assert len(told) == 1 and told[0].startswith("WaveSpeed cancel of 2 unfinished prediction(s): ")


# -- the readings the decisions rest on ----------------------------------------------------------------------


@pytest.mark.parametrize(("number", "read"), [(3, 3), (0, 0), (True, None), ("3", None), (None, None), (2.0, None)])
def test_a_try_number_is_an_int_or_unknown(number: Any, read: int | None) -> None:
    assert _cancel._try_number(SimpleNamespace(try_number=number)) == read
    assert _cancel._try_number(SimpleNamespace()) is None


@pytest.mark.parametrize(("map_index", "read"), [(None, -1), (-1, -1), (0, 0), ("2", 2)])
def test_the_xcom_address_is_the_task_instance_s(map_index: Any, read: int) -> None:
    assert _cancel._xcom_address(_ti(map_index=map_index)) == {
        "dag_id": "d",
        "run_id": "r",
        "task_id": "t",
        "map_index": read,
    }
    assert _cancel._xcom_address(SimpleNamespace(dag_id="d", run_id="r", task_id="t"))["map_index"] == -1


def _trigger(timeout_after: Any = None) -> WaveSpeedTaskTrigger:
    trigger = WaveSpeedTaskTrigger("p1", end_time=1_900_000_000.0, cancel_on_kill=True)
    if timeout_after is not None:
        trigger.timeout_after = timeout_after  # type: ignore[attr-defined]  # what Airflow sets on a deferral timeout
    return trigger


@pytest.mark.parametrize(
    ("timeout_after", "past"),
    [
        (None, False),
        ("2000-01-01T00:00:00", False),  # not a datetime: no timeout known
        (datetime.now(timezone.utc) - timedelta(days=1), True),
        (datetime.now(timezone.utc) + timedelta(days=1), False),
        (datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=1), True),  # naive: UTC
        (datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1), False),
    ],
)
def test_airflow_s_deferral_timeout_is_read_as_utc(timeout_after: Any, past: bool) -> None:
    assert _trigger(timeout_after)._past_airflow_timeout() is past


def test_ti_state_is_none_when_it_cannot_be_read(server_state: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    assert asyncio.run(_cancel.ti_state(_ti("deferred"))) == "deferred"
    with caplog.at_level(logging.WARNING, logger=_cancel.__name__):
        assert asyncio.run(_cancel.ti_state(_ti("unreadable"))) is None
    assert caplog.messages == ["Could not read the state of task instance t: supervisor gone"]


@pytest.mark.parametrize(("stored", "read"), [(2, 2), (True, None), ("2", None), (None, None), ("boom", None)])
def test_the_waiting_try_is_an_int_or_unknown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stored: Any, read: int | None
) -> None:
    asked: list[dict[str, Any]] = []

    def xcom(**address: Any) -> Any:  # the supervisor's answer to GetXCom
        asked.append(address)
        if stored == "boom":
            raise ConnectionError("supervisor gone")
        return stored

    monkeypatch.setattr(_cancel, "read_xcom", xcom)
    with caplog.at_level(logging.WARNING, logger=_cancel.__name__):
        assert asyncio.run(_cancel.waiting_try(_ti(map_index=3))) == read
    assert asked == [{"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": 3, "key": _cancel.WAITING_TRY_KEY}]
    assert caplog.messages == (["Could not read which try of t waits now: supervisor gone"] if stored == "boom" else [])


def test_a_waiting_try_of_a_task_instance_without_a_task_id_is_unknown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def xcom(**address: Any) -> Any:
        raise KeyError("task_id")

    monkeypatch.setattr(_cancel, "read_xcom", xcom)
    ti = SimpleNamespace(dag_id="d", run_id="r")  # no task_id: the address itself cannot be made
    with caplog.at_level(logging.WARNING, logger=_cancel.__name__):
        assert asyncio.run(_cancel.waiting_try(ti)) is None
    [message] = caplog.messages
    assert message.startswith("Could not read which try of ? waits now: ")


def test_recording_the_waiting_try_outside_a_task_is_told_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        _cancel.note_waiting_try(LOG)  # no task runs here: no context to push the XCom from
    assert f"Could not record this try as the waiting one (XCom {_cancel.WAITING_TRY_KEY!r}: " in caplog.text
    assert "a clear of this deferred task may not cancel its predictions" in caplog.text


# -- the triggers' decision: which try waits, and whether a user killed it -----------------------------------


@pytest.mark.parametrize(
    ("start_from_trigger", "started"), [(True, True), (False, False), ("yes", False), (None, False)]
)
def test_only_a_task_that_says_so_started_in_the_triggerer(start_from_trigger: Any, started: bool) -> None:
    trigger = _trigger()
    ti = _ti()
    ti.task = SimpleNamespace(template_ext=())
    if start_from_trigger is not None:
        ti.task.start_from_trigger = start_from_trigger
    trigger.task_instance = ti  # type: ignore[assignment]
    assert trigger._started_in_triggerer() is started


@pytest.fixture
def xcom_writes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the SDK's async XCom writes (the supervisor's SetXCom, which these tests do not run)."""
    from airflow.providers.common.compat.sdk import XCom

    writes: list[dict[str, Any]] = []

    async def aset(**kwargs: Any) -> None:
        if kwargs.get("task_id") == "refused":
            raise ConnectionError("supervisor gone")
        writes.append(kwargs)

    monkeypatch.setattr(XCom, "aset", aset, raising=False)
    return writes


@pytest.mark.parametrize(
    ("cancel_on_kill", "in_triggerer", "try_number", "written"),
    [(True, True, 2, True), (False, True, 2, False), (True, False, 2, False), (True, True, None, False)],
)
def test_a_task_started_in_the_triggerer_records_its_waiting_try(
    xcom_writes: list[dict[str, Any]], cancel_on_kill: bool, in_triggerer: bool, try_number: Any, written: bool
) -> None:
    trigger = WaveSpeedTaskTrigger("p1", end_time=1_900_000_000.0, cancel_on_kill=cancel_on_kill)
    ti = _ti(try_number=try_number, map_index=None)
    ti.task = SimpleNamespace(template_ext=(), start_from_trigger=in_triggerer)
    trigger.task_instance = ti  # type: ignore[assignment]
    asyncio.run(trigger.note_started())
    expected = {
        "key": _cancel.WAITING_TRY_KEY,
        "value": 2,
        "dag_id": "d",
        "run_id": "r",
        "task_id": "t",
        "map_index": -1,
    }
    assert xcom_writes == ([expected] if written else [])


def test_a_waiting_try_that_cannot_be_recorded_is_told_never_raised(
    xcom_writes: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    trigger = _trigger()
    ti = _ti(try_number=3)
    ti.task_id = "refused"
    ti.task = SimpleNamespace(template_ext=(), start_from_trigger=True)
    trigger.task_instance = ti  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING):
        asyncio.run(trigger.note_started())
    said = "Could not record try 3 as the waiting one (supervisor gone): a clear of this task may not cancel"
    assert _begins(said, _logs(caplog, capfd))
    assert xcom_writes == []


def test_trigger_without_a_task_instance_records_nothing(xcom_writes: list[dict[str, Any]]) -> None:
    trigger = _trigger()
    trigger.task_instance = None  # type: ignore[assignment]
    asyncio.run(trigger.note_started())
    assert xcom_writes == []


@pytest.fixture
def waiting_tries(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The waiting-try XCom's successive ``answers`` (the last one repeats), and its ``reads``."""
    tries = SimpleNamespace(answers=[], reads=[])

    async def read(ti: Any) -> Any:
        tries.reads.append(ti)
        return tries.answers[min(len(tries.reads), len(tries.answers)) - 1] if tries.answers else None

    monkeypatch.setattr(_cancel, "waiting_try", read)
    monkeypatch.setattr(_cancel, "_NEWER_TRY_POLL", 0.0)
    return tries


@pytest.mark.parametrize(
    ("own", "answers", "patience", "newer"),
    [
        (1, [2], 0.0, 2),
        (1, [1], 0.0, None),
        (1, [None], 0.0, None),
        (2, [1], 0.0, None),
        (None, [5], 0.0, None),
        (1, [1, None, 3], 60.0, 3),  # a newer try's trigger records itself a little later
    ],
)
def test_a_newer_try_is_one_whose_number_is_above_this_trigger_s(
    waiting_tries: SimpleNamespace, own: Any, answers: list[Any], patience: float, newer: int | None
) -> None:
    waiting_tries.answers.extend(answers)
    trigger = _trigger()
    ti = _ti(try_number=own)
    trigger.task_instance = ti  # type: ignore[assignment]
    assert asyncio.run(trigger._newer_try(patience)) == newer
    assert waiting_tries.reads == ([] if own is None else [ti] * len(answers))


def _deferred_trigger(emulator: WaveSpeedEmulator, state: str | None, *, try_number: int = 1) -> WaveSpeedTaskTrigger:
    [prediction_id] = _held(emulator)
    trigger = WaveSpeedTaskTrigger(prediction_id, end_time=1_900_000_000.0, cancel_on_kill=True)
    trigger.task_instance = _ti(state, try_number=try_number)  # type: ignore[assignment]
    trigger._waiting = [prediction_id]  # what the trigger holds while it polls an unfinished prediction
    return trigger


@pytest.mark.parametrize(
    ("state", "newer", "said"),
    [
        ("failed", None, "Cancelling 1 unfinished WaveSpeed prediction(s): the task was killed by a user"),
        ("none", None, "Cancelling 1 unfinished WaveSpeed prediction(s): the task was killed by a user"),
        ("deferred", 2, "Cancelling 1 unfinished WaveSpeed prediction(s): a newer try (2) of the task waits now"),
        ("deferred", None, "The task is still deferred for this try (its trigger runs elsewhere): nothing cancelled"),
    ],
)
def test_on_kill_cancels_unless_this_try_still_waits(
    wavespeed_connection: WaveSpeedEmulator,
    server_state: list[Any],
    waiting_tries: SimpleNamespace,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    state: str,
    newer: int | None,
    said: str,
) -> None:
    waiting_tries.answers.append(newer)
    trigger = _deferred_trigger(wavespeed_connection, state)
    with caplog.at_level(logging.INFO):
        asyncio.run(trigger.on_kill())
    assert _begins(said, _logs(caplog, capfd))
    assert len(server_state) == 1 and len(waiting_tries.reads) == (1 if state == "deferred" else 0)
    cancelled = "Cancelling" in said
    assert wavespeed_connection.counters()["delete_requests"] == ({trigger.prediction_id: 1} if cancelled else {})


def test_on_kill_without_a_task_instance_cancels(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any]
) -> None:
    trigger = _deferred_trigger(wavespeed_connection, "failed")
    trigger.task_instance = None  # type: ignore[assignment]
    asyncio.run(trigger.on_kill())
    assert server_state == []
    assert wavespeed_connection.counters()["delete_requests"] == {trigger.prediction_id: 1}


@pytest.mark.parametrize(
    ("state", "newer", "cancelled", "said"),
    [
        ("failed", None, True, "Cancelling 1 unfinished WaveSpeed prediction(s): the task is failed: killed by a user"),
        ("deferred", 2, True, "Cancelling 1 unfinished WaveSpeed prediction(s): a newer try (2) of the task waits now"),
        ("deferred", None, False, ""),
        ("unreadable", None, False, ""),  # no answer (a triggerer shutting down?): the wait may resume elsewhere
    ],
)
def test_the_fallback_cancels_only_a_try_known_to_wait_no_more(
    wavespeed_connection: WaveSpeedEmulator,
    server_state: list[Any],
    waiting_tries: SimpleNamespace,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    state: str,
    newer: int | None,
    cancelled: bool,
    said: str,
) -> None:
    waiting_tries.answers.append(newer)
    trigger = _deferred_trigger(wavespeed_connection, state)
    with caplog.at_level(logging.INFO):
        asyncio.run(trigger._cancel_if_gone())
    logs = _logs(caplog, capfd)
    assert _begins(said, logs) and ("Cancelling" in logs) is cancelled
    assert len(server_state) == 1
    assert wavespeed_connection.counters()["delete_requests"] == ({trigger.prediction_id: 1} if cancelled else {})


@pytest.mark.parametrize("why", ["no-ti", "past-airflow-timeout"])
def test_the_fallback_never_asks_without_a_task_instance_or_past_airflow_s_timeout(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], why: str
) -> None:
    trigger = _deferred_trigger(wavespeed_connection, "failed")
    if why == "no-ti":
        trigger.task_instance = None  # type: ignore[assignment]
    else:
        trigger.timeout_after = datetime.now(timezone.utc) - timedelta(seconds=1)  # type: ignore[attr-defined]
    asyncio.run(trigger._cancel_if_gone())
    assert server_state == []
    assert wavespeed_connection.counters()["delete_requests"] == {}


def test_a_decision_that_fails_is_told(caplog: pytest.LogCaptureFixture) -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger=_cancel.__name__):
        asyncio.run(_cancel._to_its_end(failing()))
    assert caplog.messages == ["Deciding whether to cancel the predictions failed: boom"]


def test_a_decision_is_waited_out_though_its_caller_is_cancelled_again_and_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> list[str]:
        done: list[str] = []
        release = asyncio.Event()

        async def work() -> None:
            await release.wait()
            done.append("decided")

        async def on_kill() -> None:
            await _cancel._to_its_end(work())
            current = asyncio.current_task()
            assert current is not None
            done.append(f"cancelling {current.cancelling()}")  # 0: nothing left to end the caller later

        waiter = asyncio.ensure_future(on_kill())
        for _ in range(3):  # the triggerer cancels the trigger's task again at each of its loops
            await asyncio.sleep(0)
            waiter.cancel()
        release.set()
        await waiter  # not cancelled: the cancellations were waited out, not passed on
        done.append("returned")
        await asyncio.sleep(0)  # the done callbacks run
        return done

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == ["decided", "cancelling 0", "returned"]
    assert caplog.messages == []  # no failure told (there was none), no callback of the decision's failed


def test_a_decision_past_its_budget_is_told_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_cancel, "KILL_CANCEL_BUDGET", 0.05)

    async def never_ends() -> None:
        await asyncio.Event().wait()  # a state lookup that never answers (a triggerer shutting down)

    with caplog.at_level(logging.WARNING, logger=_cancel.__name__):
        asyncio.run(_cancel._to_its_end(never_ends()))  # returns: the trigger ends as it would have, not failed
    [message] = caplog.messages
    assert message.startswith("Deciding whether to cancel the predictions failed: ")


def test_a_worker_s_cancels_stop_at_the_budget_before_the_sigkill(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cancel, "WORKER_KILL_BUDGET", 0.5)
    ids = _held(wavespeed_connection)
    # The cancel does not end before the budget, until the test says: a real hung read would outlive
    # the test and its retries reach the next test's emulator (one on the same port showed an extra poll).
    release = threading.Event()
    monkeypatch.setattr(_cancel, "cancel_now", lambda conn_id, prediction_ids, *, log: release.wait(60))
    _cancel.cancel_on_worker_kill(SimpleNamespace(log=LOG), _ti("failed"), "wavespeed_default", ids)  # returns
    [cancelling] = [thread for thread in threading.enumerate() if thread.name == "wavespeed-cancel"]
    assert cancelling.is_alive() and cancelling.daemon  # left behind, and not keeping the process alive
    release.set()
    cancelling.join(60)
    assert not cancelling.is_alive()


@pytest.mark.parametrize(("cancel_on_kill", "waiting"), [(False, True), (True, False)])
def test_on_kill_asks_nothing_unless_it_may_cancel_and_something_runs(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], cancel_on_kill: bool, waiting: bool
) -> None:
    trigger = _deferred_trigger(wavespeed_connection, "failed")
    trigger.cancel_on_kill = cancel_on_kill
    if not waiting:
        trigger._waiting = []
    asyncio.run(trigger.on_kill())
    assert server_state == []
    assert wavespeed_connection.counters()["delete_requests"] == {}


def test_a_task_started_in_the_triggerer_waits_for_a_newer_try_to_say_so(
    wavespeed_connection: WaveSpeedEmulator, server_state: list[Any], waiting_tries: SimpleNamespace
) -> None:
    waiting_tries.answers.extend([1, 1, 2])  # the cleared try's trigger records itself on the third look
    trigger = _deferred_trigger(wavespeed_connection, "deferred")
    trigger.task_instance.task = SimpleNamespace(template_ext=(), start_from_trigger=True)  # type: ignore[union-attr]
    asyncio.run(trigger.on_kill())
    assert len(waiting_tries.reads) == 3
    assert wavespeed_connection.counters()["delete_requests"] == {trigger.prediction_id: 1}


def test_a_try_about_to_defer_records_itself_as_the_waiting_one() -> None:
    from airflow.sdk.execution_time.context import set_current_context

    pushed: list[dict[str, Any]] = []
    ti = SimpleNamespace(try_number=3, xcom_push=lambda **kwargs: pushed.append(kwargs))  # the SDK's SetXCom
    with set_current_context({"ti": ti}):  # type: ignore[arg-type]
        _cancel.note_waiting_try(LOG)
    assert pushed == [{"key": _cancel.WAITING_TRY_KEY, "value": 3}]


def test_a_waiting_try_the_api_server_refuses_is_told_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    from airflow.sdk.execution_time.context import set_current_context

    def refuse(**kwargs: Any) -> None:
        raise ConnectionError("supervisor gone")

    ti = SimpleNamespace(try_number=3, xcom_push=refuse)
    with set_current_context({"ti": ti}), caplog.at_level(logging.WARNING, logger=LOG.name):  # type: ignore[arg-type]
        _cancel.note_waiting_try(LOG)
    assert caplog.messages == [
        f"Could not record this try as the waiting one (XCom {_cancel.WAITING_TRY_KEY!r}: supervisor gone): a clear "
        "of this deferred task may not cancel its predictions"
    ]


def test_the_trigger_s_cancels_get_at_least_a_second(
    wavespeed_connection: WaveSpeedEmulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    trigger = _deferred_trigger(wavespeed_connection, "failed")
    wavespeed_connection.add_fault("result", "slow", delay=3600, times=None)  # the read before the DELETE hangs

    async def cancel() -> None:
        # A guard against a cancel that never stops (the test fails instead of hanging); no verdict rests on it.
        await asyncio.wait_for(trigger._cancel("the task was killed by a user", budget=0.2), timeout=20)

    with caplog.at_level(logging.INFO):
        asyncio.run(cancel())
    assert _begins("Cancelling 1 WaveSpeed prediction(s) took over 1 s; stopped", _logs(caplog, capfd))
    assert wavespeed_connection.counters()["delete_requests"] == {}


def test_on_kill_s_cancels_get_the_rest_of_the_kill_budget(
    wavespeed_connection: WaveSpeedEmulator,
    server_state: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_cancel, "KILL_CANCEL_BUDGET", 3.0)
    trigger = _deferred_trigger(wavespeed_connection, "failed")
    wavespeed_connection.add_fault("result", "slow", delay=3600, times=None)  # the read before the DELETE hangs
    with caplog.at_level(logging.INFO):
        asyncio.run(trigger.on_kill())  # ends at the kill's budget, told
    logs = _logs(caplog, capfd)
    assert "Cancelling 1 unfinished WaveSpeed prediction(s): the task was killed by a user" in logs
    assert "took over 1 s" not in logs  # the cancels had the rest of the 3 s, not the 1 s floor
