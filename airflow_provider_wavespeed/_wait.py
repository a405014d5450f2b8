"""A wait's settings and its timeout: the one place that computes when a wait ends; and a wait in the worker.

A task waits ``timeout`` seconds for its predictions, in a worker or deferred to a trigger. Deferred,
the wait ends at :attr:`WaitTimeout.end_time` (absolute epoch seconds in the trigger's kwargs, so a
trigger resumed by another triggerer keeps it), and Airflow's deferral timeout
(:attr:`WaitTimeout.airflow_timeout`) comes :data:`DEFERRAL_GRACE` later, a backstop for a lost
triggerer. A task started in the triggerer has no end time yet: its trigger derives it from the
task instance's Airflow timeout (:meth:`WaitTimeout.from_airflow_timeout`). In a worker, every task
notes what it waits for (:class:`WaitingTask`) so that a user's kill, or the timeout, cancels it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_wavespeed.api._times import deadline_after, in_words, utc_text
from airflow_provider_wavespeed.api.defaults import DEFERRAL_GRACE
from airflow_provider_wavespeed.triggers._cancel import cancel_now, cancel_on_worker_kill, note_waiting_try

__all__ = ["WaitTimeout", "WaitingTask", "default_deferrable", "deferring", "seconds_settings"]


@dataclass(frozen=True)
class WaitTimeout:
    """A wait of ``seconds``, ending at ``end_time`` (epoch seconds)."""

    seconds: float
    end_time: float

    @classmethod
    def from_now(cls, seconds: float) -> WaitTimeout:
        """Return the wait of ``seconds`` that starts now."""
        return cls(seconds, deadline_after(seconds).timestamp())

    @classmethod
    def from_airflow_timeout(cls, seconds: float, timeout_after: object) -> WaitTimeout:
        """Return the wait of a task started in the triggerer: it ends :data:`DEFERRAL_GRACE` before Airflow's.

        ``timeout_after`` is Airflow's trigger timeout of the task instance, computed once when the
        task was deferred and stored with it, so it holds wherever the trigger runs. Without one the
        wait starts now (a trigger restarted elsewhere would start it again; Airflow's own trigger
        timeout still ends the task).
        """
        if isinstance(timeout_after, datetime):
            if timeout_after.tzinfo is None:
                timeout_after = timeout_after.replace(tzinfo=timezone.utc)
            return cls(seconds, timeout_after.timestamp() - DEFERRAL_GRACE)
        return cls(seconds, time.time() + seconds)

    @property
    def airflow_timeout(self) -> timedelta:
        """Airflow's deferral timeout for this wait (see :func:`airflow_timeout`)."""
        return airflow_timeout(self.seconds)

    def trigger_kwargs(self, task: Any) -> dict[str, Any]:
        """Return the kwargs every WaveSpeed trigger takes from its ``task`` and this wait."""
        return {
            "wavespeed_conn_id": task.wavespeed_conn_id,
            "poll_interval": task.poll_interval,
            "end_time": self.end_time,
            "cancel_on_kill": task.cancel_on_kill,
            "cancel_on_timeout": task.cancel_on_timeout,
        }


def deferring(task: Any, waiting_for: str) -> WaitTimeout:
    """Return the wait ``task`` defers now (``task.timeout`` long), logged; note the waiting try if it cancels on kill.

    The try is noted (:func:`~airflow_provider_wavespeed.triggers._cancel.note_waiting_try`) so that
    a clear's next try, deferred again, is told from this one.
    """
    wait = WaitTimeout.from_now(task.timeout)
    task.log.info(
        "Deferring until %s finished, at the latest %s (%s from now)",
        waiting_for,
        utc_text(wait.end_time),
        in_words(wait.seconds),
    )
    if task.cancel_on_kill:
        note_waiting_try(task.log)
    return wait


class WaitingTask:
    """A task's wait in its worker (a mixin of the operators and the sensor): what a kill or the timeout cancels.

    While the task waits in its worker, ``_waiting_in_worker`` holds its task instance first, then
    what :meth:`_unfinished_in_worker` reads the predictions from; None otherwise. When cancelling is
    right (a user's kill, never a worker shutdown) is the rule of
    :func:`~airflow_provider_wavespeed.triggers._cancel.cancel_on_worker_kill`.
    """

    log: Any
    wavespeed_conn_id: str
    cancel_on_kill: bool
    _waiting_in_worker: tuple[Any, ...] | None

    def _unfinished_in_worker(self, waiting: tuple[Any, ...]) -> list[str]:
        """Return the predictions a kill now would cancel: the one waited for, ``waiting[1]``."""
        return [waiting[1]]

    def on_kill(self) -> None:
        """Killed while waiting in a worker: cancel the unfinished predictions when a user killed the task."""
        waiting = self._waiting_in_worker
        if self.cancel_on_kill and waiting is not None:
            cancel_on_worker_kill(self, waiting[0], self.wavespeed_conn_id, self._unfinished_in_worker(waiting))

    def _cancel_at_timeout(self, prediction_id: str) -> bool:
        """Cancel the prediction a wait in this worker timed out on, if unfinished; return whether it is stopped."""
        outcome = cancel_now(self.wavespeed_conn_id, [prediction_id], log=self.log)
        return prediction_id in outcome.cancelled or prediction_id in outcome.gone


def airflow_timeout(seconds: float) -> timedelta:
    """Airflow's deferral timeout of a wait of ``seconds``: :data:`DEFERRAL_GRACE` after the trigger's own end.

    A plain timedelta: the task runner sends it to its supervisor with msgspec, whose encoder
    refuses pendulum's Duration subclass (the task then fails to defer).
    """
    return timedelta(seconds=seconds + DEFERRAL_GRACE)


def default_deferrable() -> bool:
    """Return whether tasks defer unless told otherwise: True, unless the deployment turns it off.

    Every generated airflow.cfg contains ``default_deferrable = false`` (Airflow's own
    default), so a False there cannot be told from "not set"; the environment variable
    ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` is the explicit way to change our default.
    """
    if os.environ.get("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE") is None:
        return True
    from airflow.providers.common.compat.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=True)


def _seconds(value: object, name: str, task_id: str, example: float) -> float:
    try:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not 0 < seconds < float("inf"):
        raise ValueError(
            f"{task_id}: {name} must be a finite number of seconds greater than 0, got {value!r}; "
            f"e.g. {name}={example:g}"
        )
    return seconds


def seconds_settings(task_id: str, settings: Mapping[str, tuple[object, float]], *, rendered: bool) -> dict[str, float]:
    """Return duration settings (``name -> (value, an example of a good one)``) as seconds: finite numbers > 0.

    A ``timedelta`` counts too. Checked before anything is sent, twice: in ``__init__``
    (``rendered=False``: a Jinja template is skipped, a bad value raises ``ValueError``, the DAG
    does not load) and in ``execute`` once templates rendered (``rendered=True``: text is
    converted, a bad value fails the task for good, as a retry would render the same). The message
    names the task, the setting, the value and a fix.
    """
    from airflow.providers.common.compat.sdk import AirflowFailException

    checked = {}
    try:
        for name, (value, example) in settings.items():
            if not rendered and isinstance(value, str) and any(mark in value for mark in ("{{", "{%")):
                continue
            checked[name] = _seconds(value, name, task_id, example)
    except ValueError as exc:
        if not rendered:
            raise
        raise AirflowFailException(f"{exc}. Nothing was sent to WaveSpeed") from None
    return checked
