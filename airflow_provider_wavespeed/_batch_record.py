"""The batch operator's paid-work record: what it sent, written in O(N) bytes in total.

Invariants (each try of a ``WaveSpeedBatchOperator`` task instance keeps them):

1. :meth:`BatchRecord.write_intent` marks a window of inputs in flight (read back where a write can
   fail silently: the Variable fallback) before any byte of their submits leaves.
2. :meth:`BatchRecord.write_submitted` records the window's answers: accepted ids, refusals, and
   the inputs whose outcome is unknown ("uncertain", with their send time).
3. A new try reads the record (:meth:`BatchRecord.open`): inputs left in flight by a dead worker
   become uncertain; uncertain inputs are looked up in the history and adopted only when alone;
   no input is ever sent twice. Inputs of another digest (model or inputs changed) fail the task.
4. The record is deleted when the task succeeds; a failed task keeps it (a re-run resumes).

Its storage backend (:class:`~airflow_provider_wavespeed._records.RecordStore`: Airflow's task
state store on 3.3+, Variables on 3.0-3.2) holds a small **head** and append-only **parts** beside
it (:func:`~airflow_provider_wavespeed._records.part_key`):

- the head (version 2, the only one): model, count, digest, the window in flight and its send time, the
  refused and uncertain inputs (rare), the inputs still to look up in the history, how many parts
  it has seen written, and ``run``: a random token its parts repeat;
- part ``k``: ``{"run": token, "ids": {index: prediction id}}``, the ids one window's answers (or
  one history look-up) accepted; written once, never rewritten.

A window costs one head write before it is sent and one part after its answers (plus a head
write when an input was refused, is uncertain or stays unsent): at 10,000 inputs the record
writes about 1 MB in all instead of 400 rewrites of a 360 KB record. A reader takes the head,
then parts 0, 1, 2... until one is missing or carries another token (a stale part of a deleted
record): a worker that died between a part and the next head write loses nothing.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_wavespeed._records import BATCH_RECORD_PREFIX, RecordStore
from airflow_provider_wavespeed.api._batch import input_digest, ranges, uncertain_message
from airflow_provider_wavespeed.api._times import utc_text

__all__ = ["BATCH_RECORD_VERSIONS", "BatchRecord"]

_VERSION = 2
BATCH_RECORD_VERSIONS = (_VERSION,)  # what it reads


class BatchRecord:
    """What a batch task has sent (a :class:`RecordStore`), so no input is ever submitted twice.

    Per input: its prediction id once accepted (or adopted from the history), the API's refusal, or
    "uncertain" (sent, no answer); and the window of inputs in flight: written *before* their
    submits leave, so a worker killed mid-window leaves a record that says which inputs may exist
    unseen. Uncertain inputs carry their send time until they were looked up in the history
    (:meth:`to_reconcile`). Deleted when the task succeeds. ``data`` is the head; ``ids`` the
    accepted ids read from the parts.
    """

    def __init__(self, store: RecordStore, data: dict[str, Any], ids: dict[int, str] | None = None) -> None:
        self.store = store
        self.data = data
        self.ids: dict[int, str] = dict(ids or {})
        self.parts = int(data.get("parts") or 0)  # parts written (and read) so far

    @property
    def where(self) -> str:
        return self.store.where

    def _write_head(self, *, verify: bool) -> None:
        self.data["parts"] = self.parts
        self.store.put(self.data, verify=verify)

    def _append(self, ids: dict[int, str]) -> None:
        """Write one new part with ``ids``, read back where a write can fail silently.

        A lost part would let the next head write forget these inputs were sent.
        """
        part = {"run": self.data["run"], "ids": {str(index): value for index, value in sorted(ids.items())}}
        self.store.put_part(self.parts, part, verify=True)
        self.parts += 1
        self.ids.update(ids)

    def delete(self) -> None:
        """Delete the head first: parts left by a crash in between carry a token no new head has."""
        self.store.delete()
        for number in range(self.parts):
            self.store.delete_part(number)

    # -- the record's content ----------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self.data["count"])

    def id_of(self, index: int) -> str | None:
        return self.ids.get(index)

    def rejected(self, index: int) -> dict[str, Any] | None:
        value = self.data["rejected"].get(str(index))
        return value if isinstance(value, dict) else None

    def uncertain(self, index: int) -> str | None:
        value = self.data["uncertain"].get(str(index))
        return str(value) if value is not None else None

    def _settled(self, index: int) -> bool:
        return index in self.ids or str(index) in self.data["rejected"] or str(index) in self.data["uncertain"]

    def unsent(self) -> list[int]:
        """Return the inputs never sent (or sent and refused before anything was created, e.g. a spent 429)."""
        return [index for index in range(self.count) if not self._settled(index)]

    def accepted_ids(self) -> list[str]:
        return [self.ids[index] for index in sorted(self.ids)]

    def write_intent(self, indexes: list[int]) -> None:
        """One head write (read back where writes can fail silently) before any of these inputs is sent."""
        self.data["in_flight"] = list(indexes)
        self.data["in_flight_since"] = time.time()
        self._write_head(verify=True)

    def write_submitted(
        self, accepted: dict[int, str], rejected: dict[int, dict[str, Any]], uncertain: dict[int, str]
    ) -> None:
        """Record the window's answers: one part with the accepted ids (the second phase).

        The head is written only when an input of the window was not accepted (refused, uncertain,
        or back to unsent).
        """
        window = [int(index) for index in self.data.get("in_flight") or []]
        if accepted:
            self._append(accepted)
        if not rejected and not uncertain and all(index in self.ids for index in window):
            # The head still names this window in flight; every input of it has a part: no orphans.
            self.data["in_flight"] = []
            return
        self.data["rejected"].update({str(index): value for index, value in rejected.items()})
        self.data["uncertain"].update({str(index): value for index, value in uncertain.items()})
        since = float(self.data.get("in_flight_since") or time.time())
        self.data.setdefault("uncertain_since", {}).update({str(index): since for index in uncertain})
        self.data["in_flight"] = []
        self._write_head(verify=False)

    def to_reconcile(self) -> dict[int, float]:
        """Uncertain inputs not yet looked up in the history: index -> epoch just before their send."""
        return {int(index): float(since) for index, since in (self.data.get("uncertain_since") or {}).items()}

    def reconciled(self, adopted: dict[int, str], unresolved: dict[int, str]) -> None:
        """After a history look: adopted inputs get a part (rare), the others say why not in the head."""
        if adopted:
            self._append(adopted)
        pending = self.data.setdefault("uncertain_since", {})
        for index in adopted:
            self.data["uncertain"].pop(str(index), None)
            pending.pop(str(index), None)
        for index, why in unresolved.items():
            self.data["uncertain"][str(index)] = f"{self.data['uncertain'].get(str(index), '')} Looked up: {why}"
            pending.pop(str(index), None)
        self._write_head(verify=False)

    def orphans(self) -> list[int]:
        """Return the inputs a dead worker left in flight: their submit's outcome is unknown."""
        return [int(index) for index in self.data.get("in_flight") or [] if not self._settled(int(index))]

    # -- opening a task instance's record ----------------------------------------------------------

    @staticmethod
    def store_of(context: Any) -> RecordStore:
        """Return the storage backend of the running task instance's batch record."""
        ti = context["ti"]
        description = (
            f"WaveSpeed batch record of {ti.dag_id}.{ti.task_id} (map index {ti.map_index}) in run {ti.run_id}: "
            "the inputs sent and their prediction ids, so that no retry submits an input twice. Deleted when "
            "the task succeeds; delete it yourself only to submit every input again."
        )
        return RecordStore(context, "wavespeed_batch", BATCH_RECORD_PREFIX, description, versions=BATCH_RECORD_VERSIONS)

    @classmethod
    def read(cls, store: RecordStore, *, waited_for: int | None = None) -> BatchRecord | None:
        """Return the record in ``store`` (head and parts), or None when there is none.

        ``waited_for``: the number of accepted ids the wait was for; once they and the head's parts are
        read, no part past the last is looked up (below Airflow 3.3 that miss is an error line in the log).
        """
        data = store.get()
        if data is None:
            return None
        record = cls(store, data)
        record.parts = 0
        while waited_for is None or len(record.ids) < waited_for or record.parts < int(data.get("parts") or 0):
            part = store.get_part(record.parts)
            if not isinstance(part, dict) or part.get("run") != data.get("run"):
                break  # the last part (or a stale one of a deleted record)
            record.ids.update({int(index): str(value) for index, value in (part.get("ids") or {}).items()})
            record.parts += 1
        if record.parts < int(data.get("parts") or 0):
            raise AirflowFailException(
                f"The WaveSpeed batch record in {store.where} names {data.get('parts')} parts, but only "
                f"{record.parts} were found: which inputs were sent is unknown, so nothing was submitted. Check "
                "what deleted them; delete the record (its head) only to submit every input again"
            )
        for index in record.ids:  # adopted, then the worker died before the head said so
            data["uncertain"].pop(str(index), None)
            (data.get("uncertain_since") or {}).pop(str(index), None)
        return record

    @classmethod
    def open(cls, store: RecordStore, model: str, items: list[dict[str, Any]], *, log: Any) -> BatchRecord:
        """Return the record in ``store``: an earlier try's (checked against these inputs), or a new one.

        Inputs an earlier try's worker left in flight are settled as uncertain, to be looked up in
        the history (:meth:`to_reconcile`): never sent again.
        """
        digest = input_digest(model, items)
        record = None
        if not store.first_try:  # a first try has none to look up (RecordStore.earlier)
            log.info("Looking up the batch record of an earlier try of this task instance: %s", store.where)
            record = cls.read(store)
        if record is None:
            data: dict[str, Any] = {
                "version": _VERSION,
                "run": uuid.uuid4().hex[:12],
                "model": model,
                "count": len(items),
                "digest": digest,
                "rejected": {},
                "uncertain": {},
                "uncertain_since": {},
                "in_flight": [],
            }
            return cls(store, data)
        data = record.data
        if data.get("digest") != digest:
            raise AirflowFailException(
                f"The inputs (or model) of this batch differ from the ones an earlier try of this task submitted "
                f"({data.get('count')} inputs of {data.get('model')}, recorded in {store.where}); "
                "resuming could pair predictions with the wrong inputs, so nothing was submitted. Render the same "
                "inputs again, or delete the record to submit every input anew (the earlier predictions stay paid)"
            )
        orphans = record.orphans()
        if orphans:
            since = utc_text(float(data.get("in_flight_since") or 0))
            why = f"the worker stopped while this submit was in flight (since {since})"
            record.write_submitted({}, {}, {index: uncertain_message(model, why, since) for index in orphans})
            log.warning(
                "An earlier try of this task stopped while submitting inputs %s: their outcome is unknown, so they "
                "are looked up in the prediction history and never submitted again",
                ranges(orphans),
            )
        done = record.count - len(record.unsent())
        log.info("Resuming the WaveSpeed batch from its record: %d of %d inputs already sent", done, record.count)
        return record
