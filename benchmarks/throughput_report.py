"""The throughput section of ``docs/benchmarks.md`` (``python -m benchmarks throughput``).

The section (between :data:`THROUGHPUT_START` and :data:`THROUGHPUT_END`) holds one block per run,
each between a run marker that names its tier and designs and :data:`RUN_END`: the run's
command, machine, settings and table (with a Tier column). :func:`splice_throughput` puts a new
run's block in and takes out of the older blocks of the same tier only the rows of the designs
it ran at the N it ran them (a block left with no row goes): Silver rows survive a Gold run and the
other way round, and a design's rows at N = 200 survive its run at N = 1,000.
A section written before the run markers existed is read as one block of the tier it names.
"""

from __future__ import annotations

import re
from typing import Any

# `python -m benchmarks throughput` owns the text between these; the main suite's rewrite keeps it.
THROUGHPUT_START = "<!-- throughput:start -->"
THROUGHPUT_END = "<!-- throughput:end -->"
RUN_END = "<!-- throughput:run:end -->"
_RUN_START = re.compile(r"<!-- throughput:run tier=(?P<tier>[\w-]+) designs=(?P<designs>[\w,-]*) -->")
TIER_ORDER = ("bronze", "silver", "gold", "ultra")
TITLE = "## Throughput in real Airflow (issues 13, 23, 34)"


def throughput_of(text: str) -> str | None:
    """The throughput section of a report, markers included, or None."""
    start, end = text.find(THROUGHPUT_START), text.find(THROUGHPUT_END)
    if start < 0 or end < start:
        return None
    return text[start : end + len(THROUGHPUT_END)]


def replace_section(text: str, section: str) -> str:
    """``text`` with its throughput section replaced by ``section`` (appended when it has none)."""
    old = throughput_of(text)
    if old is not None:
        return text.replace(old, section, 1)
    return f"{text.rstrip()}\n\n{section}\n" if text.strip() else f"{section}\n"


def run_marker(tier: str, designs: list[str]) -> str:
    return f"<!-- throughput:run tier={tier} designs={','.join(designs)} -->"


def _row_design(line: str) -> str | None:
    """The design a table row or a problem line is about (its first `code` span), else None."""
    if line.startswith("| ") or line.startswith("- `"):
        found = re.search(r"`([a-z0-9-]+)`", line)
        return found.group(1) if found else None
    return None


def run_blocks(section: str | None) -> list[tuple[str, list[str], str]]:
    """(tier, designs, block text without its markers) of every run in a throughput section."""
    if not section:
        return []
    blocks = []
    for found in _RUN_START.finditer(section):
        end = section.find(RUN_END, found.end())
        if end < 0:
            continue
        designs = [name for name in found.group("designs").split(",") if name]
        blocks.append((found.group("tier"), designs, section[found.end() : end].strip("\n")))
    if blocks or "Produced by" not in section:
        return blocks
    # Written before the run markers: one run, "Produced by" to the notes on the figures.
    body = section[section.index("Produced by") :]
    body = body.split("\n- **Wall time**", 1)[0].rstrip()
    tier = re.search(r"emulator at the (\w+) preset", body)
    designs = [design for line in body.splitlines() if (design := _row_design(line)) and line.startswith("| ")]
    name = tier.group(1).lower() if tier else "silver"
    return [(name, designs, f"### {name.capitalize()} tier\n\n{body}")]


def _row_key(line: str) -> tuple[str, int | None] | None:
    """(design, N) of a table row (N: the cell after the design's), else None."""
    design = _row_design(line)
    if design is None or not line.startswith("| "):
        return None
    cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
    at = next((index for index, cell in enumerate(cells) if cell.startswith(f"`{design}`")), len(cells))
    n = cells[at + 1].replace(",", "") if at + 1 < len(cells) else ""
    return design, int(n) if n.isdigit() else None


def _without(block: str, ran: set[tuple[str, int]]) -> tuple[str, set[str]]:
    """``block`` without the table rows of ``ran`` (design, N) and the problem lines of designs left
    with no row; and the designs that still have one."""
    lines = [line for line in block.splitlines() if _row_key(line) not in ran]
    kept = {key[0] for line in lines if (key := _row_key(line))}
    return "\n".join(line for line in lines if _row_design(line) in kept or _row_design(line) is None), kept


def splice_throughput(text: str, results: dict[str, Any]) -> str:
    """``text`` with the run of ``results`` in its throughput section: the rows of that tier's designs
    at the N they ran replaced, every other row kept in the block of the run that measured it."""
    tier, ran = results["tier"], [r["design"] for r in results["designs"]]
    kept = []
    for old_tier, designs, block in run_blocks(throughput_of(text)):
        if old_tier == tier:
            block, left = _without(block, {(r["design"], r["n"]) for r in results["designs"]})
            designs = [name for name in designs if name in left]
            if not designs:
                continue
        kept.append((old_tier, designs, block))
    blocks = [(tier, ran, run_block(results)), *kept]
    rank = {name: index for index, name in enumerate(TIER_ORDER)}
    blocks.sort(key=lambda item: rank.get(item[0], len(rank)))  # stable: the new run first in its tier
    return replace_section(text, section(blocks))


def section(blocks: list[tuple[str, list[str], str]]) -> str:
    parts = [
        THROUGHPUT_START,
        TITLE,
        "",
        "Code: `benchmarks/throughput.py`, DAGs in `benchmarks/dags/throughput/`. One block per run, by tier; "
        "a run replaces the rows of the tier, designs and N it ran and keeps every other row.",
        "",
    ]
    for tier, designs, block in blocks:
        parts += [run_marker(tier, designs), block, RUN_END, ""]
    return "\n".join([*parts, *NOTES, THROUGHPUT_END])


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _states(states: dict[str, dict[str, int]] | None) -> str:
    if not states:
        return "-"
    return "; ".join(
        f"{task}: " + ", ".join(f"{count:,} {state}" for state, count in sorted(counts.items()))
        for task, counts in sorted(states.items())
    )


def _predictions(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    if p.get("expected") is False:  # a floor design
        return "none expected, none made" if p.get("ok") else f"**no**: {p.get('submissions')} submissions"
    if p.get("ok"):
        return "yes"
    problems = []
    if p.get("submitted_twice"):
        problems.append(f"submitted twice: {p['submitted_twice']}")
    if p.get("missing_count"):
        problems.append(f"{p['missing_count']} without one, e.g. {p['missing'][:5]}")
    if p.get("other_submissions"):
        problems.append(f"{p['other_submissions']} other submissions")
    return "**no**: " + "; ".join(problems)


def _lag(lag: dict[str, Any] | None) -> str:
    if not lag or lag.get("max_ms") is None:
        return "-" + (f" ({lag['error']})" if lag and lag.get("error") else "")
    return f"{_f(lag['max_ms'])} / {_f(lag.get('p99_ms'))}" + (
        "" if lag.get("in_triggerer") else " (not in the triggerer)"
    )


def _floor_ratio(r: dict[str, Any]) -> str:
    if r.get("is_floor"):
        return "(floor)"
    if r.get("floor_ratio") is None:
        return "-"
    return f"{_f(r['floor_ratio'], 2)} (`{r.get('floor')}`)"


def _rss(rss: dict[str, Any] | None) -> str:
    return f"{_f((rss or {}).get('tasks'))} / {_f((rss or {}).get('triggerer'))}"


def _cpu(cpu: dict[str, Any]) -> str:
    return " / ".join(_f(cpu.get(name)) for name in ("scheduler", "dag-processor", "api-server", "triggerer", "tasks"))


def _connection(results: dict[str, Any]) -> str:
    extra = results.get("connection") or {}
    if not extra:
        return "the connection with the shipped defaults (no `account_tier`: the Silver rate, 500 submissions a minute)"
    text = ", ".join(f"`{key}: {value}`" for key, value in extra.items())
    return f"the connection extra {text} (what a user of that tier sets: the tier's submission rate)"


def _manifests(results: dict[str, Any]) -> str:
    if results.get("manifests"):
        return (
            "; the batch tasks set `manifest_path` to `manifests/{{ run_id }}-{{ ti.map_index }}.json` under the "
            "run's work directory: the full result goes to that file and XCom holds a small summary (the whole "
            "result is ~200 bytes per input: ~2 MB at 10,000 inputs)"
        )
    if results.get("tier") != "silver":
        return "; `manifest_path` is not in this provider version, so the batch tasks return their full result in XCom"
    return ""


def run_block(results: dict[str, Any]) -> str:
    """One run's block: what it ran on and its table (no markers)."""
    m = results["machine"]
    tier: dict[str, Any] = next((r["tier"] for r in results["designs"] if r.get("tier")), {}) or {}
    name = str(tier.get("name") or results["tier"])
    lines = [
        f"### {name.capitalize()} tier",
        "",
        f"Produced by `{results['command']}` on {results['started']}, commit {results['commit']}, in "
        f"{results['wall_s'] / 60:.0f} min (the figures below are this run's, unedited)"
        + (" **(smoke run: not a measurement)**" if results.get("smoke") else "")
        + ".",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['os']}; Python {m['python']}, "
        f"Airflow {m['airflow']}, airflow-provider-wavespeed {m['provider']}.",
        "",
        f"Settings: a real deployment (api-server, scheduler, dag-processor, one triggerer; "
        f"`scripts/airflow_stack.py`), {results['executor']} with parallelism {results['parallelism']} "
        f"(worker slots), metadatabase {results['database']}, deployment started in "
        f"{_f(results.get('stack_start_s'))} s; one DAG run at a time. The emulator at the {name} preset "
        f"({_f(tier.get('starts_per_minute'))} generations started per minute, {_f(tier.get('concurrency'))} "
        f"running at once), {results['duration_s']:g} s predictions; {_connection(results)}; every operator "
        f"with its defaults (poll interval, deferrable){_manifests(results)}"
        + (
            "; this provider imported from the checkout compiled to bytecode, as installed"
            if results.get("bytecode")
            else ""
        )
        + ".",
        "",
        "| Tier | Design | N | Run | Wall time (s) | Limit (s) | Ratio | Floor ratio | Limit if bursts (s) | Most "
        "starts in any 60 s (tier's starts/min) | 429s | Triggerer loop lag max / p99 (ms) | Metadata DB bytes "
        "written / generation | Worker runs / generation | Worker-slot s / generation | API requests / generation "
        "| Execution-API calls / generation | CPU s: scheduler / dag-processor / api-server / triggerer / task "
        "processes | Peak RSS MB: task process / triggerer | Task instances | One prediction per input | Other load "
        "(cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["designs"]:
        cpu = r.get("cpu_s") or {}
        lines.append(
            f"| {name.capitalize()} | `{r['design']}`: {r['what']} | {r['n']:,} | {r.get('state')} "
            f"| {_f(r.get('wall_s'))} | {_f(r.get('limit_s'))} | {_f(r.get('ratio'), 2)} | {_floor_ratio(r)} "
            f"| {_f(r.get('burst_limit_s'))} | {_f(r.get('most_in_60s'))} ({_f(tier.get('starts_per_minute'))}) "
            f"| {_f(r.get('rate_limited'))} | {_lag(r.get('loop_lag'))} | {_f(r.get('wal_bytes_per_generation'), 0)} "
            f"| {_f(r.get('worker_runs_per_generation'), 2)} | {_f(r.get('worker_slot_s_per_generation'), 2)} "
            f"| {_f(r.get('api_requests_per_generation'), 2)} | {_f(r.get('execution_api_calls_per_generation'), 2)} "
            f"| {_cpu(cpu)} | {_rss(r.get('peak_rss_mb'))} | {_states(r.get('task_states'))} "
            f"| {_predictions(r.get('predictions'))} | {_f(r.get('other_load_cores'), 2)} |"
        )
    errors = [f"- `{r['design']}`: {r['error']}" for r in results["designs"] if r.get("error")]
    if results.get("error"):
        errors.append(f"- the run stopped: {results['error']}")
    return "\n".join([*lines, *(["", "Problems:", "", *errors] if errors else [])])


NOTES = [
    "- **Wall time**: the DAG run's `start_date` to its `end_date` (Airflow's own).",
    "- **Limit**: when the last generation could end at best by the emulator's own rules "
    "(`limit_seconds`): submission *i* arrives at *i* x 60 s / starts per minute from t = 0, starts at "
    "once under the concurrency cap or else first come, first served when a running one ends, then runs "
    "its prediction time. **Ratio** = wall time / limit. The emulator counts starts in a sliding 60 s "
    "window, so clients that together send faster than the even pace can start a whole minute's worth at "
    "once and beat the limit; *limit if bursts* is the bound then: each minute's starts all at its "
    "beginning, the same queue. A floor design (`floor-...`) submits nothing: no tier rule bounds it, so it has "
    "no limit.",
    "- **Floor ratio**: a mapped design's wall time / the wall time of Airflow's floor for its shape in the same "
    "run (named beside it): the same DAG with no WaveSpeed code, each generation an `@task` returning a string "
    "and/or an operator that defers to Airflow's `DateTimeTrigger` for the prediction time and resumes in a "
    "worker (`benchmarks/dags/throughput/airflow_floor.py`). At 1 or below, our code costs the DAG nothing "
    "Airflow's own equivalent does not.",
    "- **Most starts in any 60 s**: the most submissions the emulator accepted in any 60 s window (its "
    "submission log's `submitted_at`), next to the tier's starts per minute; with **429s** (submissions the "
    "tier refused, then retried after `Retry-After`) the evidence of whether the batch tasks of a run, "
    "each in its own process, kept to one account's budget together.",
    "- **Triggerer loop lag**: a probe trigger (`benchmarks/loop_probe.py`) in the deployment's own "
    "triggerer, started before the design's run and stopped after it, sleeps 0.1 s in a loop and records "
    "how late it wakes; max and p99 over the run. The benchmark checks the process that ran it is the "
    "triggerer's.",
    "- **Metadata DB bytes written / generation**: PostgreSQL WAL bytes from the run's trigger to its end "
    "(`pg_current_wal_lsn()` before and after, their difference as `pg_wal_lsn_diff` computes it) / N: "
    "every write of every component (task states, XComs, the batch record, heartbeats; full-page images "
    "after a checkpoint included). On SQLite `-`: it keeps no running count of bytes written (its WAL "
    "file is rewound at every checkpoint).",
    "- **Worker runs, worker-slot seconds**: from the task logs, every try of every task: a run is one "
    "worker process (a deferred task that resumes in a worker has two); its seconds are its first to "
    "last log line (process start-up before the first line is not counted).",
    "- **API requests**: every request the emulator answered (submits, polls, result reads; 429s included) / N.",
    "- **Execution-API calls**: the requests the deployment's api-server answered on its execution API "
    "(`/execution/...`) for the run's tasks and triggers / N, counted from its access log (Airflow's "
    "`request finished` lines): the paths naming one of the run's task instances (state, heartbeats, rendered "
    "fields, the task state store) or the run (XComs; task-instance counts); the JSON output has them by kind.",
    "- **CPU**: the scheduler's own process; the dag-processor (it parses every DAG file of the folder "
    "throughout, so its CPU in one design's run is not that design's alone); the api-server; the triggerer with "
    "its trigger runner; the task processes (LocalExecutor workers, task supervisors and tasks, all under the "
    "scheduler). **Other load**: CPU the rest of the machine used meanwhile, in cores.",
    "- **Peak RSS**: the most resident memory of the largest task process (any process under the scheduler: "
    "LocalExecutor workers, task supervisors, tasks) and of the largest triggerer process (the triggerer or its "
    "trigger runner), sampled every 2 s through the run (a process that lives less can peak unseen).",
    "- **One prediction per input**: the emulator's submission log has exactly one prediction for "
    "each of the N inputs and nothing else (a floor design: nothing at all).",
]
