"""The batch record: what a batch task has sent, in an Airflow Variable, so no input is ever submitted twice."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed.api.batch import input_digest, ranges, uncertain_message
from airflow_provider_wavespeed.api.times import utc_text

__all__ = ["RECORD_PREFIX", "BatchRecord", "record_key"]

RECORD_PREFIX = "wavespeed_batch__"
_RECORD_VERSION = 1


def record_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The Variable key of a task instance's batch record: ``wavespeed_batch__`` and a hash of its ids.

    Not the ids themselves: a run id's ``:`` and ``+`` travel in a URL path, a key may hold 250
    characters, and a name containing "secret" or "token" would make Airflow's log masker treat the
    whole record as a secret. The Variable's description names the task instance.
    """
    exact = json.dumps([dag_id, run_id, task_id, map_index])
    return f"{RECORD_PREFIX}{hashlib.sha256(exact.encode()).hexdigest()[:40]}"


class BatchRecord:
    """What a batch task has sent, in an Airflow Variable (JSON), so no input is ever submitted twice.

    Per input: its prediction id once accepted, the API's refusal, or "uncertain" (sent, no
    answer); and the window of inputs in flight: written *before* their submits leave, so a
    worker killed mid-window leaves a record that says which inputs may exist unseen. The
    Variable lives in Airflow's metadata database, written through the task SDK: it survives the
    worker process, and unlike XCom it survives into the task's next try (Airflow clears a task's
    XComs when a new try starts). Deleted when the task succeeds.
    """

    def __init__(self, key: str, data: dict[str, Any], description: str) -> None:
        self.key = key
        self.data = data
        self.description = description

    # -- reading and writing the Variable -------------------------------------------------

    @staticmethod
    def read(key: str) -> dict[str, Any] | None:
        from airflow.sdk import Variable

        text = Variable.get(key, default=None)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("version") != _RECORD_VERSION:
            raise AirflowFailException(
                f"The WaveSpeed batch record in Airflow Variable {key!r} is not one this provider wrote "
                f"(or a newer version's): {str(text)[:200]!r}. Nothing was submitted. If it is stale, delete "
                "the Variable: the task then submits every input again"
            )
        return data

    def _write(self, *, verify: bool) -> None:
        from airflow.sdk import Variable

        self.data["seq"] = int(self.data.get("seq", 0)) + 1
        Variable.set(self.key, json.dumps(self.data, separators=(",", ":")), description=self.description)
        if not verify:
            return
        # Read back: Airflow 3.0.6's Variable.set logs a failed write and returns (3.3.2's raises), and a
        # secrets backend holding the same key would shadow what was written.
        stored = self.read(self.key)
        if stored is None or stored.get("seq") != self.data["seq"]:
            raise AirflowException(
                f"Could not record the WaveSpeed batch's progress in Airflow Variable {self.key!r} (read back "
                f"{'nothing' if stored is None else 'an older version'}): nothing more was submitted. Check that "
                "tasks can write Variables (no secrets backend defines this key); a retry resumes from the record"
            )

    def delete(self) -> None:
        from airflow.sdk import Variable

        Variable.delete(self.key)

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
        self.data["in_flight"] = []
        self._write(verify=False)

    def orphans(self) -> list[int]:
        """Inputs a dead worker left in flight: their submit's outcome is unknown."""
        return [int(index) for index in self.data.get("in_flight") or []]

    # -- opening a task instance's record ----------------------------------------------------------

    @classmethod
    def open(cls, key: str, description: str, model: str, items: list[dict[str, Any]], *, log: Any) -> BatchRecord:
        """The record under ``key``: an earlier try's (checked against these inputs), or a new one.

        Inputs an earlier try's worker left in flight are settled as uncertain: never sent again.
        """
        digest = input_digest(model, items)
        # A first try finds none (Airflow 3.0's task SDK logs that lookup as "Variable not found").
        log.info("Looking up the batch record of this task instance: Airflow Variable %r", key)
        data = cls.read(key)
        if data is None:
            data = {
                "version": _RECORD_VERSION,
                "model": model,
                "count": len(items),
                "digest": digest,
                "ids": [None] * len(items),
                "rejected": {},
                "uncertain": {},
                "in_flight": [],
            }
            return cls(key, data, description)
        if data.get("digest") != digest:
            raise AirflowFailException(
                f"The inputs (or model) of this batch differ from the ones an earlier try of this task submitted "
                f"({data.get('count')} inputs of {data.get('model')}, recorded in Airflow Variable {key!r}); "
                "resuming could pair predictions with the wrong inputs, so nothing was submitted. Render the same "
                "inputs again, or delete the Variable to submit every input anew (the earlier predictions stay paid)"
            )
        record = cls(key, data, description)
        orphans = record.orphans()
        if orphans:
            since = utc_text(float(data.get("in_flight_since") or 0))
            why = f"the worker stopped while this submit was in flight (since {since})"
            record.settle({}, {}, {index: uncertain_message(model, why, since) for index in orphans})
            log.warning(
                "An earlier try of this task stopped while submitting inputs %s: their outcome is unknown, so they "
                "are reported uncertain and not submitted again",
                ranges(orphans),
            )
        done = record.count - len(record.unsent())
        log.info(
            "Resuming the WaveSpeed batch from its record %r: %d of %d inputs already sent", key, done, record.count
        )
        return record
