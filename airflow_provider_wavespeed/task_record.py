"""The durable records of a task instance: what it sent, kept across tries so nothing is submitted twice.

One :class:`TaskRecord` per task instance and purpose, in Airflow's task state store on Airflow
3.3+ (``context["task_state_store"]``: scoped to the dag run, task and map index, shared by every
try, kept across a user's clear) and in an Airflow Variable below 3.3 (nothing else survives into
the next try there: Airflow clears a task's XComs when a new try starts). On 3.3+ no Variable is
written. Users of either see the record: the state store through the REST API
(``.../taskInstances/{task_id}/state-store``), the Variable under Admin > Variables.

:class:`~airflow_provider_wavespeed.batch_record.BatchRecord` is the batch operator's record (a head
and append-only parts); the submit operator's is a small dict (:mod:`~airflow_provider_wavespeed.operators.wavespeed`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

__all__ = ["RECORD_PREFIX", "SUBMIT_RECORD_PREFIX", "TaskRecord", "part_key", "record_key"]

RECORD_PREFIX = "wavespeed_batch__"
SUBMIT_RECORD_PREFIX = "wavespeed_submit__"


def record_key(dag_id: str, run_id: str, task_id: str, map_index: int, prefix: str = RECORD_PREFIX) -> str:
    """The Variable key of a task instance's record (below Airflow 3.3): ``prefix`` and a hash of its ids.

    Not the ids themselves: a run id's ``:`` and ``+`` travel in a URL path, a key may hold 250
    characters, and a name containing "secret" or "token" would make Airflow's log masker treat the
    whole record as a secret. The Variable's description names the task instance.
    """
    exact = json.dumps([dag_id, run_id, task_id, map_index])
    return f"{prefix}{hashlib.sha256(exact.encode()).hexdigest()[:40]}"


def part_key(key: str, number: int, *, state_store: bool) -> str:
    """The key of part ``number`` of the record whose own key is ``key``: beside it, in the same backend.

    Task state store keys may hold 512 characters (any, URL-quoted); Variable keys 250 (``key`` is 57).
    """
    return f"{key}.{number}" if state_store else f"{key}__{number}"


class TaskRecord:
    """One JSON record of the running task instance: task state store (Airflow >= 3.3) or Variable.

    The one place that chooses the backend: ``context["task_state_store"]`` when the context has
    one (Airflow 3.3+, also under ``dag.test()``), else the Variable :func:`record_key` names. A
    record may have *parts* (:meth:`get_part`, :meth:`put_part`): more JSON values under keys beside
    its own (:func:`part_key`), for records that grow by appending instead of rewriting.
    ``versions`` are the record versions its reader understands.
    """

    def __init__(
        self, context: Mapping[str, Any], name: str, prefix: str, description: str, *, versions: tuple[int, ...] = (1,)
    ) -> None:
        ti = context["ti"]
        self.store = context.get("task_state_store")
        self.name = name  # the state store's key
        self.key = record_key(ti.dag_id, ti.run_id, ti.task_id, -1 if ti.map_index is None else ti.map_index, prefix)
        self.description = description
        self.versions = versions
        # Airflow runs each try number once (a retry or a clear starts the next): a first try has no earlier one.
        self.first_try = getattr(ti, "try_number", None) == 1

    @property
    def writes_can_fail_silently(self) -> bool:
        """Whether a write needs a read back: Airflow 3.0.6's ``Variable.set`` logs a refused write and
        returns, and a secrets backend holding the same key shadows it. The task state store's ``set``
        raises when the API server refuses (3.3's supervisor answers with an error frame, which the
        task's comms raise as ``AirflowRuntimeError``), and no secrets backend reads it."""
        return self.store is None

    @property
    def where(self) -> str:
        """For messages: where the record is, in the words a user finds it by."""
        if self.store is not None:
            return f"the task state store of this task instance, key {self.name!r}"
        return f"Airflow Variable {self.key!r}"

    def get(self) -> dict[str, Any] | None:
        """The record (None when there is none); a value this provider did not write fails the task."""
        if self.store is not None:
            data: Any = self.store.get(self.name)
            text = data
        else:
            from airflow.sdk import Variable

            text = Variable.get(self.key, default=None)
            if text is None:
                return None
            try:
                data = json.loads(text)
            except (TypeError, ValueError):
                data = None
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("version") not in self.versions:
            raise AirflowFailException(
                f"The WaveSpeed record in {self.where} is not one this provider wrote (or a newer version's): "
                f"{str(text)[:200]!r}. Nothing was submitted. If it is stale, delete it: the task then submits "
                "again"
            )
        return data

    def earlier(self) -> dict[str, Any] | None:
        """The record an earlier try of this task instance left (None: none), as :meth:`get`; a first try's
        is not looked up: there is none (one API-server call less per task, and below Airflow 3.3 no
        "Variable not found" error line in the task log)."""
        return None if self.first_try else self.get()

    def put(self, data: dict[str, Any], *, verify: bool) -> None:
        """Write ``data`` (a new ``seq``); with ``verify``, where a write can fail silently, read it back
        and fail when it did not land (:attr:`writes_can_fail_silently`)."""
        data["seq"] = int(data.get("seq", 0)) + 1
        self._set(self.name, self.key, data)
        if not verify or not self.writes_can_fail_silently:
            return
        stored = self.get()
        if stored is None or stored.get("seq") != data["seq"]:
            self._not_written("nothing" if stored is None else "an older version")

    def delete(self) -> None:
        self._delete(self.name, self.key)

    # -- parts: values beside the record, e.g. the appended pieces of a growing one ------------------

    def _part(self, number: int) -> tuple[str, str]:
        return part_key(self.name, number, state_store=True), part_key(self.key, number, state_store=False)

    def get_part(self, number: int) -> Any:
        """Part ``number`` (None when there is none)."""
        name, key = self._part(number)
        if self.store is not None:
            return self.store.get(name)
        from airflow.sdk import Variable

        text = Variable.get(key, default=None)
        try:
            return None if text is None else json.loads(text)
        except (TypeError, ValueError):
            return None

    def put_part(self, number: int, value: dict[str, Any], *, verify: bool) -> None:
        """Write part ``number``; with ``verify``, read it back where a write can fail silently."""
        name, key = self._part(number)
        self._set(name, key, value)
        if verify and self.writes_can_fail_silently and self.get_part(number) != value:
            self._not_written(f"something else for its part {number}")

    def delete_part(self, number: int) -> None:
        self._delete(*self._part(number))

    # -- the backend --------------------------------------------------------------------------------

    def _set(self, name: str, key: str, value: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.set(name, value)  # raises when the API server refuses
        else:
            from airflow.sdk import Variable

            Variable.set(key, json.dumps(value, separators=(",", ":")), description=self.description)

    def _delete(self, name: str, key: str) -> None:
        if self.store is not None:
            self.store.delete(name)
        else:
            from airflow.sdk import Variable

            Variable.delete(key)

    def _not_written(self, found: str) -> None:
        raise AirflowException(
            f"Could not record the WaveSpeed task's progress in {self.where} (read back {found}): nothing more "
            "was submitted. Check that tasks can write it (no secrets backend defines this key); a retry resumes "
            "from the record"
        )
