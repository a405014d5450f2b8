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


@pytest.fixture
def server_state(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Answer the task instance's state lookup from the TI stand-in (no API server here); record the lookups."""
    lookups: list[Any] = []

    def lookup(ti: Any) -> str | None:
        lookups.append(ti)
        if ti.state_on_server == "unreadable":
            raise ConnectionError("supervisor gone")
        return ti.state_on_server

    monkeypatch.setattr(_cancel, "task_instance_state", lookup)
    return lookups


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
    assert said in caplog.text
    deletes = wavespeed_connection.counters()["delete_requests"]
    assert deletes == ({prediction_id: 1 for prediction_id in ids} if cancelled else {})


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
    ids = _held(wavespeed_emulator)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        _cancel.cancel_on_worker_kill(SimpleNamespace(log=LOG), _ti("failed"), "wavespeed_default", ids)
    assert f"Cancelling WaveSpeed predictions {ids[0]} failed: " in caplog.text
    assert wavespeed_emulator.counters()["total_requests"] == 0


# -- the triggers' cancels: their failures are told, and their budget holds -----------------------------------


def test_a_cancel_that_cannot_start_is_told_and_returns_nothing(
    wavespeed_emulator: WaveSpeedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _held(wavespeed_emulator, 2)  # no connection, no WAVESPEED_API_KEY: no client
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        outcome = asyncio.run(_cancel.cancel_with_shared_client("wavespeed_default", ids, log=LOG))
    assert outcome is None
    assert "Could not cancel 2 WaveSpeed prediction(s): " in caplog.text
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


def test_a_cancel_within_its_budget_returns_what_it_did(wavespeed_connection: WaveSpeedEmulator) -> None:
    ids = _held(wavespeed_connection, 2)
    outcome = asyncio.run(_cancel.cancel_with_shared_client("wavespeed_default", ids, log=LOG))
    assert outcome is not None and sorted(outcome.cancelled) == sorted(ids)


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
    assert "Could not read the state of task instance t: supervisor gone" in caplog.text


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
    assert ("Could not read which try of t waits now: supervisor gone" in caplog.text) is (stored == "boom")


def test_recording_the_waiting_try_outside_a_task_is_told_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        _cancel.note_waiting_try(LOG)  # no task runs here: no context to push the XCom from
    assert f"Could not record this try as the waiting one (XCom {_cancel.WAITING_TRY_KEY!r}: " in caplog.text
    assert "a clear of this deferred task may not cancel its predictions" in caplog.text
