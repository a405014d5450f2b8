"""Where a task instance's paid-work records are stored, across its tries: the storage backend.

One :class:`RecordStore` per task instance and purpose: Airflow's task state store on Airflow 3.3+
(``context["task_state_store"]``: scoped to the dag run, task and map index, shared by every try,
kept across a user's clear), an Airflow Variable on 3.0-3.2 (the Variable fallback: nothing else
survives into the next try there, as Airflow clears a task's XComs when a new try starts). On 3.3+
no Variable is written. Users of either see the record: the state store through the REST API
(``.../taskInstances/{task_id}/state-store``), the Variable under Admin > Variables.

The records themselves: :class:`~airflow_provider_wavespeed._submit_record.SubmitRecord` (the
submit operator's) and :class:`~airflow_provider_wavespeed._batch_record.BatchRecord` (the batch
operator's). :func:`unheld_in_this_run` is the rule both apply before adopting a prediction found
in the history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_wavespeed.api._reconcile import Reconciled

__all__ = [
    "BATCH_RECORD_PREFIX",
    "SUBMIT_RECORD_PREFIX",
    "RecordStore",
    "part_key",
    "record_key",
    "unheld_in_this_run",
]

BATCH_RECORD_PREFIX = "wavespeed_batch__"
SUBMIT_RECORD_PREFIX = "wavespeed_submit__"

K = TypeVar("K", bound=Hashable)


def record_key(dag_id: str, run_id: str, task_id: str, map_index: int, prefix: str = BATCH_RECORD_PREFIX) -> str:
    """Return the Variable key of a task instance's record (below Airflow 3.3): ``prefix`` and a hash of its ids.

    Not the ids themselves: a run id's ``:`` and ``+`` travel in a URL path, a key may hold 250
    characters, and a name containing "secret" or "token" would make Airflow's log masker treat the
    whole record as a secret. The Variable's description names the task instance.
    """
    exact = json.dumps([dag_id, run_id, task_id, map_index])
    return f"{prefix}{hashlib.sha256(exact.encode()).hexdigest()[:40]}"


def part_key(key: str, number: int, *, state_store: bool) -> str:
    """Return the key of part ``number`` of the record whose own key is ``key``: beside it, in the same backend.

    Task state store keys may hold 512 characters (any, URL-quoted); Variable keys 250 (``key`` is 57).
    """
    return f"{key}.{number}" if state_store else f"{key}__{number}"


class RecordStore:
    """The storage backend of one JSON record of the running task instance: task state store or Variable.

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
        """Whether a write needs a read back (the read-back guard): only the Variable fallback's.

        Airflow 3.0.6's ``Variable.set`` logs a refused write and returns, and a secrets backend
        holding the same key shadows it. The task state store's ``set`` raises when the API server
        refuses (3.3's supervisor answers with an error frame, which the task's comms raise as
        ``AirflowRuntimeError``), and no secrets backend reads it.
        """
        return self.store is None

    @property
    def expires(self) -> bool:
        """Whether a record left behind goes by itself: the task state store's does, a Variable does not.

        The task state store drops a key after ``[state_store] default_retention_days``.
        """
        return self.store is not None

    @property
    def where(self) -> str:
        """Where the record is, for messages: in the words a user finds it by."""
        if self.store is not None:
            return f"the task state store of this task instance, key {self.name!r}"
        return f"Airflow Variable {self.key!r}"

    def get(self) -> dict[str, Any] | None:
        """Return the record (None when there is none); a value this provider did not write fails the task."""
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
                data = text  # not JSON: no record this provider wrote (not "no record": that would submit again)
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
        """Return the record an earlier try of this task instance left (None: none), as :meth:`get`.

        A first try's is not looked up: there is none (one API-server call less per task, and below
        Airflow 3.3 no "Variable not found" error line in the task log).
        """
        return None if self.first_try else self.get()

    def put(self, data: dict[str, Any], *, verify: bool) -> None:
        """Write ``data`` (a new ``seq``); with ``verify``, read it back where a write can fail silently.

        A write that did not land fails the task (:attr:`writes_can_fail_silently`): the whole value is
        compared, as a new value's ``seq`` starts at 1 again (an earlier try's record may hold the same).
        """
        data["seq"] = int(data.get("seq", 0)) + 1
        self._set(self.name, self.key, data)
        if not verify or not self.writes_can_fail_silently:
            return
        stored = self.get()
        if stored != data:
            self._not_written("nothing" if stored is None else "another record")

    def delete(self) -> None:
        """Delete the record (its parts are the caller's)."""
        self._delete(self.name, self.key)

    # -- parts: values beside the record, e.g. the appended pieces of a growing one ------------------

    def _part(self, number: int) -> tuple[str, str]:
        return part_key(self.name, number, state_store=True), part_key(self.key, number, state_store=False)

    def get_part(self, number: int) -> Any:
        """Return part ``number`` (None when there is none)."""
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
        """Delete part ``number``."""
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


def unheld_in_this_run(found: Reconciled[K]) -> Reconciled[K]:
    """Return ``found`` without the adoptions another task of this DAG run already holds (their XComs say so).

    The records of other task instances are not readable (Airflow 3.3's task state store is the task
    instance's own), so a lost submit's history match is checked against the ids this run's tasks
    handed on in XCom, read *after* the looks: a twin (e.g. another map index with the same inputs)
    that got its answer has pushed it by then, unless its worker stalled in between. A read that fails
    leaves every match unresolved.
    """
    if not found.adopted:
        return found
    from airflow.sdk import get_current_context

    from airflow_provider_wavespeed.triggers.batch import IDS_XCOM_KEY

    held: set[str] = set()
    try:
        context = get_current_context()
        task_ids = list(context["dag"].task_ids)
        # The XComs in which this provider's tasks hand on the ids they hold: the submit operator's (pushed
        # right after its answer), the batch's comma-separated ids (before it defers).
        for xcom_key in ("prediction_id", IDS_XCOM_KEY):
            for value in context["ti"].xcom_pull(task_ids=task_ids, key=xcom_key) or []:
                if value:  # one id, or the batch's comma-separated ids
                    held.update(part for part in str(value).split(",") if part)
    except Exception as exc:  # any failure to look is a doubt, never a reason to adopt
        why = f"the prediction ids this run's other tasks hold could not be read ({type(exc).__name__}: {exc})"
        return Reconciled({}, {**found.unresolved, **{key: f"{why}, so it is not adopted" for key in found.adopted}})
    adopted = {key: pid for key, pid in found.adopted.items() if pid not in held}
    unresolved = dict(found.unresolved)
    for key, prediction_id in found.adopted.items():
        if prediction_id in held:
            unresolved[key] = (
                f"prediction {prediction_id} matches, but another task of this DAG run holds it (its XCom), so it "
                "is that task's generation, not this submit's"
            )
    return Reconciled(adopted, unresolved)
