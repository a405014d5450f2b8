"""Figures of a throughput design run besides its time (``benchmarks/throughput.py``).

- the triggerer's event-loop lag, from :class:`benchmarks.loop_probe.LoopLagProbeTrigger` run by the
  real triggerer alongside the design's run (:class:`LoopProbe`);
- metadata database bytes written: PostgreSQL WAL bytes from ``pg_current_wal_lsn()`` before and
  after the design's run (:func:`wal_bytes`); SQLite has no such counter;
- the most submissions the emulator accepted in any 60 s (:func:`benchmarks.submissions.busiest_window`);
- the api-server's execution-API requests of one DAG run, by kind, from its access log
  (:func:`execution_api_calls`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from benchmarks.submissions import busiest_window

PROBE_DAG = "wavespeed_throughput_loop_probe"
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def lsn_position(lsn: str) -> int:
    """A PostgreSQL LSN (``"16/B374D848"``: high and low 32 bits in hex) as a byte position in the WAL."""
    match = _LSN.fullmatch(lsn.strip())
    if match is None:
        raise ValueError(f"not a PostgreSQL LSN (e.g. '16/B374D848'): {lsn!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def wal_bytes(before: str, after: str) -> int:
    """WAL bytes written from LSN ``before`` to ``after`` (what ``pg_wal_lsn_diff(after, before)`` says)."""
    written = lsn_position(after) - lsn_position(before)
    if written < 0:
        raise ValueError(f"the WAL went backwards: {before} -> {after}")
    return written


def per_generation(total: float | None, n: int) -> float | None:
    return None if total is None or n <= 0 else round(total / n, 1)


def current_lsn(cluster: Any) -> str | None:
    """The server's WAL insert position now (None without PostgreSQL)."""
    if cluster is None:
        return None
    return str(cluster.query("SELECT pg_current_wal_lsn()::text")[0][0])


# Airflow 3.3's access log line (airflow.api_fastapi.common.http_access_log), one per request answered:
# "... request finished [http.access] client_addr=... method=PUT path=/execution/... query=... status_code=200".
_ACCESS = re.compile(r"request finished.*?\bmethod=(?P<method>\S+) path=(?P<path>\S+) query=(?P<query>'[^']*'|\S*)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def execution_api_calls(log: str, *, dag_id: str, run_id: str, ti_ids: Iterable[str]) -> Counter[str]:
    """The execution-API requests the api-server answered for one DAG run, by kind, from its access log.

    A request is the run's when its path names one of its task instances (``ti_ids``: task state,
    heartbeats, rendered fields, the task state store) or the run itself (XComs:
    ``/xcoms/<dag>/<run>/<task>/<key>``; or ``run_ids=<run>`` in the query, e.g. a count of task
    instances). The kind is the method and the path with the ids replaced: ``PUT /execution/task-
    instances/{ti}/heartbeat``, ``POST /execution/xcoms/{run}/generation.generate/prediction_id``.
    """
    ids = set(ti_ids)
    run_parts = {f"/{dag_id}/{run_id}/", f"/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"}
    calls: Counter[str] = Counter()
    for found in _ACCESS.finditer(log):
        path = found.group("path")
        if not path.startswith("/execution/"):
            continue
        kind = path + "/"  # so that a path ending in the run's ids matches too
        for part in run_parts:
            kind = kind.replace(part, "/{run}/")
        kind = kind[:-1]
        query = parse_qsl(found.group("query").strip("'"))
        mine = kind != path or any(name in ("run_id", "run_ids") and value == run_id for name, value in query)
        for uuid in _UUID.findall(path):
            if uuid in ids:
                kind, mine = kind.replace(uuid, "{ti}"), True
        if mine:
            calls[f"{found.group('method')} {unquote(kind)}"] += 1
    return calls


def most_in_60s(submissions: list[dict[str, Any]]) -> int:
    """The most accepted submissions in any 60 s, from the emulator's log (``submitted_at``, epoch s)."""
    return busiest_window([float(entry["submitted_at"]) for entry in submissions])


class LoopProbe:
    """One run of the probe DAG around a design's run: :meth:`start` before it, :meth:`stop` after."""

    def __init__(self, stack: Any, folder: Path) -> None:
        self.stack, self.folder = stack, folder
        self.run_id: str | None = None

    def start(self, timeout: float = 180) -> None:
        """Trigger the probe and wait until its trigger's loop runs in the triggerer."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stack.wait_for_dag(PROBE_DAG)
        self.run_id = self.stack.trigger(PROBE_DAG, conf={"folder": str(self.folder)})
        started = self.folder / "started"
        deadline = time.monotonic() + timeout
        while not started.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the loop-lag probe did not start in the triggerer within {timeout:g} s")
            time.sleep(0.5)

    def stop(self, timeout: float = 120) -> dict[str, Any]:
        """End the probe; its summary (max/p99 ms, samples), with ``in_triggerer``: the process that ran
        it was the triggerer component's."""
        (self.folder / "stop").write_text("")
        summary = self.folder / "lag.json"
        deadline = time.monotonic() + timeout
        while not summary.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the loop-lag probe did not report within {timeout:g} s")
            time.sleep(0.5)
        from airflow_stack import process_tree  # scripts/ is on sys.path where a stack runs

        result: dict[str, Any] = json.loads(summary.read_text())
        triggerers = [p.pid for name, p in self.stack.processes.items() if name.startswith("triggerer")]
        result["in_triggerer"] = any(result.get("pid") in process_tree(pid) for pid in triggerers)
        return result
