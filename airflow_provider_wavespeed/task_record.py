"""The durable records of a task instance: what it sent, kept across tries so nothing is submitted twice.

One :class:`TaskRecord` per task instance and purpose, in Airflow's task state store on Airflow
3.3+ (``context["task_state_store"]``: scoped to the dag run, task and map index, shared by every
try, kept across a user's clear) and in an Airflow Variable below 3.3 (nothing else survives into
the next try there: Airflow clears a task's XComs when a new try starts). On 3.3+ no Variable is
written. Users of either see the record: the state store through the REST API
(``.../taskInstances/{task_id}/state-store``), the Variable under Admin > Variables.

:class:`BatchRecord` is the batch operator's record; the submit operator's is a small dict
(:mod:`~airflow_provider_wavespeed.operators.wavespeed`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed.api.batch import input_digest, ranges, uncertain_message
from airflow_provider_wavespeed.api.times import utc_text

__all__ = ["RECORD_PREFIX", "SUBMIT_RECORD_PREFIX", "BatchRecord", "TaskRecord", "record_key"]

RECORD_PREFIX = "wavespeed_batch__"
SUBMIT_RECORD_PREFIX = "wavespeed_submit__"
_RECORD_VERSION = 1


def record_key(dag_id: str, run_id: str, task_id: str, map_index: int, prefix: str = RECORD_PREFIX) -> str:
    """The Variable key of a task instance's record (below Airflow 3.3): ``prefix`` and a hash of its ids.

    Not the ids themselves: a run id's ``:`` and ``+`` travel in a URL path, a key may hold 250
    characters, and a name containing "secret" or "token" would make Airflow's log masker treat the
    whole record as a secret. The Variable's description names the task instance.
    """
    exact = json.dumps([dag_id, run_id, task_id, map_index])
    return f"{prefix}{hashlib.sha256(exact.encode()).hexdigest()[:40]}"


class TaskRecord:
    """One JSON record of the running task instance: task state store (Airflow >= 3.3) or Variable.

    The one place that chooses the backend: ``context["task_state_store"]`` when the context has
    one (Airflow 3.3+, also under ``dag.test()``), else the Variable :func:`record_key` names.
    """

    def __init__(self, context: Mapping[str, Any], name: str, prefix: str, description: str) -> None:
        ti = context["ti"]
        self.store = context.get("task_state_store")
        self.name = name  # the state store's key
        self.key = record_key(ti.dag_id, ti.run_id, ti.task_id, -1 if ti.map_index is None else ti.map_index, prefix)
        self.description = description

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
        if not isinstance(data, dict) or data.get("version") != _RECORD_VERSION:
            raise AirflowFailException(
                f"The WaveSpeed record in {self.where} is not one this provider wrote (or a newer version's): "
                f"{str(text)[:200]!r}. Nothing was submitted. If it is stale, delete it: the task then submits "
                "again"
            )
        return data

    def put(self, data: dict[str, Any], *, verify: bool) -> None:
        """Write ``data`` (a new ``seq``); with ``verify`` read it back and fail when it did not land."""
        data["seq"] = int(data.get("seq", 0)) + 1
        if self.store is not None:
            self.store.set(self.name, data)  # raises when the API server refuses
        else:
            from airflow.sdk import Variable

            Variable.set(self.key, json.dumps(data, separators=(",", ":")), description=self.description)
        if not verify:
            return
        # Read back: Airflow 3.0.6's Variable.set logs a failed write and returns (3.3.2's raises), and a
        # secrets backend holding the same key would shadow what was written.
        stored = self.get()
        if stored is None or stored.get("seq") != data["seq"]:
            raise AirflowException(
                f"Could not record the WaveSpeed task's progress in {self.where} (read back "
                f"{'nothing' if stored is None else 'an older version'}): nothing more was submitted. Check that "
                "tasks can write it (no secrets backend defines this key); a retry resumes from the record"
            )

    def delete(self) -> None:
        if self.store is not None:
            self.store.delete(self.name)
        else:
            from airflow.sdk import Variable

            Variable.delete(self.key)


class BatchRecord:
    """What a batch task has sent (a :class:`TaskRecord`), so no input is ever submitted twice.

    Per input: its prediction id once accepted (or adopted from the history), the API's refusal, or
    "uncertain" (sent, no answer); and the window of inputs in flight: written *before* their
    submits leave, so a worker killed mid-window leaves a record that says which inputs may exist
    unseen. Uncertain inputs carry their send time until they were looked up in the history
    (:meth:`to_reconcile`). Deleted when the task succeeds.
    """

    def __init__(self, store: TaskRecord, data: dict[str, Any]) -> None:
        self.store = store
        self.data = data

    @property
    def where(self) -> str:
        return self.store.where

    def _write(self, *, verify: bool) -> None:
        self.store.put(self.data, verify=verify)

    def delete(self) -> None:
        self.store.delete()

    # -- the record's content ----------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self.data["count"])

    def id_of(self, index: int) -> str | None:
        value = self.data["ids"][index]
        return str(value) if value else None

    def rejected(self, index: int) -> dict[str, Any] | None:
        value = self.data["rejected"].get(str(index))
        return value if isinstance(value, dict) else None

    def uncertain(self, index: int) -> str | None:
        value = self.data["uncertain"].get(str(index))
        return str(value) if value is not None else None

    def unsent(self) -> list[int]:
        """Inputs never sent (or sent and refused before anything was created, e.g. a spent 429)."""
        return [
            index
            for index in range(self.count)
            if self.id_of(index) is None
            and str(index) not in self.data["rejected"]
            and str(index) not in self.data["uncertain"]
        ]

    def accepted_ids(self) -> list[str]:
        return [prediction_id for prediction_id in (self.id_of(i) for i in range(self.count)) if prediction_id]

    def mark_in_flight(self, indexes: list[int]) -> None:
        """One write, read back, before any of these inputs is sent."""
        self.data["in_flight"] = list(indexes)
        self.data["in_flight_since"] = time.time()
        self._write(verify=True)

    def settle(self, accepted: dict[int, str], rejected: dict[int, dict[str, Any]], uncertain: dict[int, str]) -> None:
        """One write after the window's answers; inputs in none of the three go back to unsent."""
        for index, prediction_id in accepted.items():
            self.data["ids"][index] = prediction_id
        self.data["rejected"].update({str(index): value for index, value in rejected.items()})
        self.data["uncertain"].update({str(index): value for index, value in uncertain.items()})
        since = float(self.data.get("in_flight_since") or time.time())
        self.data.setdefault("uncertain_since", {}).update({str(index): since for index in uncertain})
        self.data["in_flight"] = []
        self._write(verify=False)

    def to_reconcile(self) -> dict[int, float]:
        """Uncertain inputs not yet looked up in the history: index -> epoch just before their send."""
        return {int(index): float(since) for index, since in (self.data.get("uncertain_since") or {}).items()}

    def reconciled(self, adopted: dict[int, str], unresolved: dict[int, str]) -> None:
        """One write after a history look: adopted inputs get their prediction, the others say why not."""
        pending = self.data.setdefault("uncertain_since", {})
        for index, prediction_id in adopted.items():
            self.data["ids"][index] = prediction_id
            self.data["uncertain"].pop(str(index), None)
            pending.pop(str(index), None)
        for index, why in unresolved.items():
            self.data["uncertain"][str(index)] = f"{self.data['uncertain'].get(str(index), '')} Looked up: {why}"
            pending.pop(str(index), None)
        self._write(verify=False)

    def orphans(self) -> list[int]:
        """Inputs a dead worker left in flight: their submit's outcome is unknown."""
        return [int(index) for index in self.data.get("in_flight") or []]

    # -- opening a task instance's record ----------------------------------------------------------

    @classmethod
    def open(cls, store: TaskRecord, model: str, items: list[dict[str, Any]], *, log: Any) -> BatchRecord:
        """The record in ``store``: an earlier try's (checked against these inputs), or a new one.

        Inputs an earlier try's worker left in flight are settled as uncertain, to be looked up in
        the history (:meth:`to_reconcile`): never sent again.
        """
        digest = input_digest(model, items)
        # A first try finds none (Airflow 3.0's task SDK logs a Variable lookup as "Variable not found").
        log.info("Looking up the batch record of this task instance: %s", store.where)
        data = store.get()
        if data is None:
            data = {
                "version": _RECORD_VERSION,
                "model": model,
                "count": len(items),
                "digest": digest,
                "ids": [None] * len(items),
                "rejected": {},
                "uncertain": {},
                "uncertain_since": {},
                "in_flight": [],
            }
            return cls(store, data)
        if data.get("digest") != digest:
            raise AirflowFailException(
                f"The inputs (or model) of this batch differ from the ones an earlier try of this task submitted "
                f"({data.get('count')} inputs of {data.get('model')}, recorded in {store.where}); "
                "resuming could pair predictions with the wrong inputs, so nothing was submitted. Render the same "
                "inputs again, or delete the record to submit every input anew (the earlier predictions stay paid)"
            )
        record = cls(store, data)
        orphans = record.orphans()
        if orphans:
            since = utc_text(float(data.get("in_flight_since") or 0))
            why = f"the worker stopped while this submit was in flight (since {since})"
            record.settle({}, {}, {index: uncertain_message(model, why, since) for index in orphans})
            log.warning(
                "An earlier try of this task stopped while submitting inputs %s: their outcome is unknown, so they "
                "are looked up in the prediction history and never submitted again",
                ranges(orphans),
            )
        done = record.count - len(record.unsent())
        log.info("Resuming the WaveSpeed batch from its record: %d of %d inputs already sent", done, record.count)
        return record
