"""Render the figures as ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_provider_wavespeed.api.defaults import POOL_SIZE
from benchmarks.throughput_report import replace_section, throughput_of

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

TARGET_N = 5000
# Issue 12: the aiohttp stack may cost at most this much CPU per poll of the transport it replaced.
LEGACY_CPU_BOUND = 1.2
LABELS = {
    "shared": "WaveSpeedTaskTrigger (shared pool, aiohttp)",
    "shared-keepalive-transport": "before: hand-written keep-alive transport (issue 12 baseline)",
    "new-client": "baseline: new httpx client per poll",
    "threaded-requests": "baseline: requests in a thread per poll",
    "shared-httpx-pool": "before: shared httpx pool (32), no gate",
    "sleep-reference": "reference: Airflow DateTimeTrigger (no I/O)",
    "shared-gc-freeze": "WaveSpeedTaskTrigger, triggerer heap gc.freeze()d at start-up",
}


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def one_line(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"{r['variant']} N={r['n']}: {r['error']}"
    return (
        f"{r['polls_per_s'] or 0:.0f} polls/s, {_f(r['cpu_s_per_1000_polls'], 2)} CPU s/1000 polls, "
        f"lag p50/p99/max {_f(r['lag_p50_ms'])}/{_f(r['lag_p99_ms'])}/{_f(r['lag_max_ms'])} ms, "
        f"{_f(r['rss_per_trigger_kib'])} KiB/trigger, {r['connections_opened']} connections, "
        f"detection p50/p99 {_f(r['detection_p50_s'], 2)}/{_f(r['detection_p99_s'], 2)} s, "
        f"{r['detected']}/{r['n']} detected, other load {_f(r.get('other_load_cores'), 2)} cores"
    )


def _find(scale: list[dict[str, Any]], variant: str, n: int) -> dict[str, Any] | None:
    for r in scale:
        if r["variant"] == variant and r["n"] == n and not r.get("error"):
            return r
    return None


def _ratio(a: Any, b: Any) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:,.1f}x"


def _targets(results: dict[str, Any]) -> list[str]:
    scale = results["scale"]
    n = max((r["n"] for r in scale), default=0)
    ours = _find(scale, "shared", n)
    new_client = _find(scale, "new-client", n)
    lines = [
        f"At N = {n:,}" + (" (the smoke run: the targets are stated for N = 5,000)" if n != TARGET_N else "") + ":",
        "",
        "| Target | Measured | |",
        "|---|---|---|",
    ]
    if ours is None:
        return [*lines, "| (the run of WaveSpeedTaskTrigger failed) | | |"]

    def row(name: str, value: str, ok: bool | None, miss: str = "") -> None:
        verdict = "met" if ok else ("missed" + (f": {miss}" if miss else "") if ok is not None else "-")
        lines.append(f"| {name} | {value} | {verdict} |")

    p99, peak = ours["lag_p99_ms"], ours["lag_max_ms"]
    row("event-loop lag p99 < 100 ms", f"{_f(p99)} ms", p99 < 100, f"by {p99 - 100:.0f} ms")
    reference = _find(scale, "sleep-reference", n)
    # The runner's own floor in the same run: what 5,000 triggers that do no I/O at all reach.
    floor = f"; Airflow's DateTimeTrigger (no I/O) reached {_f(reference['lag_max_ms'])} ms" if reference else ""
    row("event-loop lag max < 200 ms", f"{_f(peak)} ms", peak < 200, f"by {peak - 200:.0f} ms{floor}")
    limit = ours["poll_interval"] + 1
    # With the shipped connection defaults at every N of 1,000 and more (the scale runs set no budget).
    for run in sorted((r for r in scale if r["variant"] == "shared" and not r.get("error")), key=lambda r: r["n"]):
        if run["n"] < 1000 and run["n"] != n:
            continue
        det = run["detection_p99_s"]
        row(
            f"detection p99 within the interval + 1 s ({limit:g} s), N = {run['n']:,}, shipped defaults",
            f"{_f(det, 2)} s",
            det is not None and det <= limit,
            f"by {det - limit:.2f} s" if det is not None else "",
        )
    peak_open = ours.get("peak_open_connections")
    opened = ", ".join(
        f"N={r['n']:,}: {r['connections_opened']}"
        for r in sorted(scale, key=lambda r: r["n"])
        if r["variant"] == "shared" and not r.get("error")
    )
    row(
        f"connections bounded by the pool size ({POOL_SIZE}), not by N",
        f"at most {peak_open} open at once; opened over the run: {opened}",
        peak_open is not None and peak_open <= POOL_SIZE,
    )
    if new_client:
        ratio = new_client["cpu_s_per_1000_polls"] / ours["cpu_s_per_1000_polls"]
        row("CPU per poll >= 3x lower than a new client per poll", f"{ratio:.1f}x lower", ratio >= 3)
    for run_n, new, old in _legacy_pairs(scale):
        ratio = new["cpu_s_per_1000_polls"] / old["cpu_s_per_1000_polls"]
        row(
            f"aiohttp CPU per poll <= {LEGACY_CPU_BOUND:g}x the hand-written transport's, N = {run_n:,}, same run",
            f"{_f(new['cpu_s_per_1000_polls'], 2)} / {_f(old['cpu_s_per_1000_polls'], 2)} CPU s per 1,000 polls "
            f"= {ratio:.2f}x",
            ratio <= LEGACY_CPU_BOUND,
            f"by {ratio / LEGACY_CPU_BOUND:.2f}x",
        )
    rss = ours["rss_per_trigger_kib"]
    row("peak memory < 20 KiB per deferred trigger", f"{_f(rss)} KiB", rss < 20, f"by {rss - 20:.1f} KiB")
    paced = results.get("submissions") or {}
    if "busiest_60s" in paced:
        cap = paced["tier"]["starts_per_minute"]
        row(
            f"submissions paced under the tier ({cap}/min) with no submit failing, shipped defaults",
            f"busiest 60 s: {paced['busiest_60s']} starts; {paced['failed']} failed; "
            f"{paced['rate_limited']} answered 429",
            paced["busiest_60s"] <= cap and paced["failed"] == 0,
        )
    airflow = results.get("airflow") or {}
    for design, waiting, label in (("sensor", "poke", "sensors: "), ("task", "blocking", "one task: ")):
        pair = airflow.get(design) or {}
        if "deferrable" in pair and waiting in pair:
            deferred = pair["deferrable"].get("slot_seconds_waiting")
            held = pair[waiting].get("slot_seconds_waiting")
            ratio = held / deferred if deferred and held is not None else None
            total = _ratio(pair[waiting]["slot_seconds_sampled"], pair["deferrable"]["slot_seconds_sampled"])
            row(
                f"{label}deferrable holds >= 20x fewer worker-slot seconds while waiting than {waiting}",
                (f"{_f(ratio)}x fewer" if ratio else "-") + f" (all worker-slot seconds: {total} fewer)",
                ratio is not None and ratio >= 20,
                f"by {20 / ratio:.1f}x" if ratio else "",
            )
    return lines


def _legacy_pairs(scale: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(N, shipped run, old-transport run) at every N where both ran, smallest N first."""
    pairs = []
    for n in sorted({r["n"] for r in scale}):
        new, old = _find(scale, "shared", n), _find(scale, "shared-keepalive-transport", n)
        if new and old and new["cpu_s_per_1000_polls"] and old["cpu_s_per_1000_polls"]:
            pairs.append((n, new, old))
    return pairs


def _legacy_table(scale: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"CPU per 1,000 polls of the shipped stack (aiohttp) and of the hand-written keep-alive transport it "
        f"replaced, measured in the same run at the same N; the bound is {LEGACY_CPU_BOUND:g}x:",
        "",
        "| N | aiohttp (CPU s / 1,000 polls) | hand-written transport (CPU s / 1,000 polls) | aiohttp / transport "
        f"| Within {LEGACY_CPU_BOUND:g}x |",
        "|---|---|---|---|---|",
    ]
    pairs = _legacy_pairs(scale)
    for n, new, old in pairs:
        ratio = new["cpu_s_per_1000_polls"] / old["cpu_s_per_1000_polls"]
        lines.append(
            f"| {n:,} | {_f(new['cpu_s_per_1000_polls'], 2)} | {_f(old['cpu_s_per_1000_polls'], 2)} "
            f"| {ratio:.2f}x | {'yes' if ratio <= LEGACY_CPU_BOUND else 'no'} |"
        )
    if not pairs:
        lines.append("| (no N where both ran) | | | | |")
    return lines


def _scale_table(scale: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | Trigger | Polls/s | Polls per prediction | CPU s per 1,000 polls | Loop lag p50 / p99 / max (ms) "
        "| Lag bounded by own CPU p99 / max (ms) | Peak RSS per trigger (KiB) | TCP connections opened (peak open) "
        "| Detection p50 / p99 / max (s) | Detected | Full GCs: count / longest (ms CPU) | GC-tracked objects "
        "per trigger | Emulator CPU (s) | Other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in scale:
        if r.get("error"):
            lines.append(f"| {r['n']:,} | {LABELS.get(r['variant'], r['variant'])} | {r['error']} |" + " |" * 12)
            continue
        lines.append(
            f"| {r['n']:,} | {LABELS.get(r['variant'], r['variant'])} | {_f(r['polls_per_s'], 0)} "
            f"| {_f(r['polls_per_prediction'])} | {_f(r['cpu_s_per_1000_polls'], 2)} "
            f"| {_f(r['lag_p50_ms'])} / {_f(r['lag_p99_ms'])} / {_f(r['lag_max_ms'])} "
            f"| {_f(r['lag_cpu_p99_ms'])} / {_f(r['lag_cpu_max_ms'])} "
            f"| {_f(r['rss_per_trigger_kib'])} | {r['connections_opened']:,} ({r.get('peak_open_connections', '-')}) "
            f"| {_f(r['detection_p50_s'], 2)} / {_f(r['detection_p99_s'], 2)} / {_f(r['detection_max_s'], 2)} "
            f"| {r['detected']:,}/{r['n']:,} | {r.get('gc_full_collections', '-')} / {_f(r.get('gc_max_cpu_ms'), 0)} "
            f"| {_f(r.get('tracked_objects_per_trigger'), 0)} "
            f"| {_f(r.get('emulator_cpu_s'))} | {_f(r.get('other_load_cores'), 2)} |"
        )
    return lines


def _ratio_table(scale: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Baseline (or reference) / WaveSpeedTaskTrigger, at the same N; above 1x the baseline costs more:",
        "",
        "| N | Baseline | CPU per poll | Loop lag p99 | Loop lag max | RSS per trigger | Connections opened "
        "| Detection p99 | Polls/s (ours / baseline) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in scale}):
        ours = _find(scale, "shared", n)
        if ours is None:
            continue
        for variant in (
            "shared-keepalive-transport",
            "new-client",
            "threaded-requests",
            "shared-httpx-pool",
            "sleep-reference",
        ):
            base = _find(scale, variant, n)
            if base is None:
                continue
            lines.append(
                f"| {n:,} | {LABELS[variant]} | {_ratio(base['cpu_s_per_1000_polls'], ours['cpu_s_per_1000_polls'])} "
                f"| {_ratio(base['lag_p99_ms'], ours['lag_p99_ms'])} "
                f"| {_ratio(base['lag_max_ms'], ours['lag_max_ms'])} "
                f"| {_ratio(base['rss_per_trigger_kib'], ours['rss_per_trigger_kib'])} "
                f"| {_ratio(base['connections_opened'], ours['connections_opened'])} "
                f"| {_ratio(base['detection_p99_s'], ours['detection_p99_s'])} "
                f"| {_ratio(ours['polls_per_s'], base['polls_per_s'])} |"
            )
    return lines


def _policy_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Prediction lasts | Policy | Requests (mean) | Completion noticed after: mean / worst (s) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['duration_s']:g} s | {row['policy']} | {row['requests_mean']:.1f} "
            f"| {row['delay_mean_s']:.2f} / {row['delay_max_s']:.2f} |"
        )
    return lines


def _airflow_table(airflow: dict[str, Any]) -> list[str]:
    lines = [
        f"{airflow['tasks']} mapped generations, {airflow['duration_s']:g} s predictions, LocalExecutor "
        f"parallelism {airflow['parallelism']} (worker slots) in every run, SQLite; one DAG run at a time; "
        f"deployment started in {_f(airflow.get('stack_start_s'))} s.",
        "",
        "| Design | Wait | Run | Wall time (s) | Worker-slot seconds of the waiting task: sampled `running` / "
        "task logs | of which while its prediction ran | Worker runs per task | Most running at once "
        "| Most deferred at once | Final states | Failed by the executor-event race | Other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for design, waiting, title in (
        ("sensor", "poke", "submit + `WaveSpeedTaskSensor`"),
        ("task", "blocking", "`WaveSpeedSubmitOperator(wait_for_completion=True)`"),
    ):
        pair = airflow.get(design) or {}
        for mode in ("deferrable", waiting):
            r = pair.get(mode)
            if not r:
                continue
            lines.append(
                f"| {title} | {mode} | {r['state']} | {_f(r['wall_s'])} | {_f(r['slot_seconds_sampled'])} / "
                f"{_f(r['slot_seconds_logs'])} | {_f(r.get('slot_seconds_waiting'))} "
                f"| {_f(r['runs_per_try'], 2)} | {r['max_running_sensors']} "
                f"| {r['max_deferred_sensors']} | {r['sensor_states']} | {r.get('failed_by_executor_race', '-')} "
                f"| {_f(r.get('other_load_cores'), 2)} |"
            )
        if pair.get("deferrable") and pair.get(waiting):
            d, w = pair["deferrable"], pair[waiting]
            ratios.append(
                f"- {title}: {waiting} holds "
                f"{_ratio(w.get('slot_seconds_waiting'), d.get('slot_seconds_waiting'))} the worker-slot "
                f"seconds of deferrable while predictions run, "
                f"{_ratio(w['slot_seconds_sampled'], d['slot_seconds_sampled'])} of all its worker-slot seconds "
                f"(sampled; {_ratio(w['slot_seconds_logs'], d['slot_seconds_logs'])} from the task logs); "
                f"wall time {waiting} / deferrable: {_ratio(w['wall_s'], d['wall_s'])}."
            )
    notes = [
        "",
        "*Failed by the executor-event race*: Airflow's scheduler failed the task because the executor "
        "reported the exit of the run that deferred after the trigger had already fired and the task was "
        'queued again ("finished with state success, but the task instance\'s state attribute is queued"). '
        "It happens when a trigger fires within seconds of the deferral (apache/airflow#72716, open); the "
        "sensor's poll before deferring keeps a wait that starts after its prediction is over out of it.",
    ]
    return [*lines, "", *ratios, *notes]


def submissions_line(r: dict[str, Any]) -> str:
    """One line for the console."""
    if r.get("error"):
        return f"submissions N={r['n']}: {r['error']}"
    return (
        f"submissions N={r['n']}: {r['accepted']} accepted, {r['failed']} failed, {r['rate_limited']} answered 429, "
        f"busiest 60 s {r['busiest_60s']} starts, in {r['wall_s']:.1f} s"
    )


def _submissions_table(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return ["Not run."]
    if r.get("error"):
        return [f"The run failed: {r['error']}"]
    tier = r["tier"]
    return [
        f"{r['n']:,} submits of `wavespeed-ai/flux-dev` from {r['threads']} threads of one process through "
        "`WaveSpeedHook.submit`, with a connection that sets no budget (the shipped default: "
        f"{_f(r['budget_per_minute'], 0)} submissions per minute); the emulator at the `{tier['name']}` preset "
        f"({tier['starts_per_minute']} starts/min, {tier['concurrency']} at once). Starts are counted from the "
        "emulator's own submission log.",
        "",
        "| N | Accepted | Failed | Answered 429 | Busiest 60 s (starts) | Mean rate (starts/min) | Wall (s) |",
        "|---|---|---|---|---|---|---|",
        f"| {r['n']:,} | {r['accepted']:,} | {r['failed']} | {r['rate_limited']} | {r['busiest_60s']} | "
        f"{_f(r['mean_per_minute'])} | {_f(r['wall_s'])} |",
    ]


def render(results: dict[str, Any], previous: Path | None = None) -> str:
    """The whole report; the throughput section of ``previous`` (default: ``docs/benchmarks.md``
    for a full run, nothing for a smoke run) is carried over unchanged."""
    if previous is None and not results.get("smoke"):
        previous = REPORT
    kept = throughput_of(previous.read_text()) if previous is not None and previous.exists() else None
    text = _render(results)
    return replace_section(text, kept) if kept else text


def _render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lo, hi = results["duration_range_s"]
    out = [
        "# Benchmarks",
        "",
        f"Produced by `{results['command']}` on {results['started']} in {results['suite_wall_s'] / 60:.0f} min "
        "(the figures below are this run's, unedited). The suite and what each figure means: `benchmarks/`.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['os']}; Python {m['python']}, "
        f"Airflow {m['airflow']}, aiohttp {m.get('aiohttp', '-')}, httpx {m['httpx']} (baselines only), "
        f"airflow-provider-wavespeed {m['provider']}.",
        "",
        "## Targets",
        "",
        *_targets(results),
        "",
        "## Trigger scale",
        "",
        f"N triggers in one process, driven by Airflow's own `TriggerRunner`; the emulator in another process; "
        f"predictions finish {lo:g}-{hi:g} s after submission (uniform); `poll_interval` 5 s. Each row is a fresh "
        "process. *Other load* is the CPU the rest of the machine (not this suite) used meanwhile: this 2-core "
        "machine was shared, and lag above what the run's own CPU explains is time spent waiting for a core.",
        "",
        *_scale_table(results["scale"]),
        "",
        "### The aiohttp stack against the transport it replaced (issue 12)",
        "",
        *_legacy_table(results["scale"]),
        "",
        "### Ratios",
        "",
        *_ratio_table(results["scale"]),
        "",
        "## Submission pacing",
        "",
        *_submissions_table(results.get("submissions")),
        "",
        "## Polling policy",
        "",
        "Simulated (`benchmarks/policy.py`) with the provider's own `PollSchedule`: requests made until "
        "completion is seen, and how long after completion; each duration +-10 %, 2,000 draws.",
        "",
        *_policy_table(results.get("policy", [])),
        "",
        "## Real Airflow",
        "",
    ]
    if results.get("airflow"):
        out += _airflow_table(results["airflow"])
    else:
        out.append("Not run (`--smoke` or `--no-airflow`).")
    out += ["", METHOD]
    return "\n".join(out) + "\n"


METHOD = """## How the figures are measured

- **Driving the triggers.** `benchmarks/scale.py` runs Airflow's `TriggerRunner` (the triggerer's
  subprocess code) with only its supervisor socket replaced by an in-process stand-in that hands over one
  `RunTrigger` workload per prediction (Fernet-encrypted kwargs, a TaskInstance) on the first state sync
  and collects events. `create_triggers`, `run_trigger` (greenback portal, span, JSON logs), cleanup, the
  1 s loop and the watchdog are Airflow's. All N triggers are handed over at once (a deployment hands over
  up to `[triggerer] capacity`, default 1,000, per triggerer).
- **Polls/s, polls per prediction**: the emulator's request counters / per-prediction poll counts.
  **CPU**: user + system time of the trigger process (all threads) from the hand-over to the last event.
- **Loop lag**: a probe task sleeps 50 ms in a loop; lag = how late it wakes. *Lag bounded by own CPU* is,
  per sample, the smaller of the lag and the CPU the loop's thread used meanwhile: the part of the lag
  the process itself can have caused; the rest was spent waiting for a CPU core.
- **Peak RSS per trigger**: (VmHWM, reset just before the hand-over, minus VmRSS then) / N.
- **TCP connections opened**: `socket.socket.connect` calls to the emulator's port in the trigger process
  (asyncio and urllib3 both connect through it); in brackets the most ESTABLISHED sockets to it seen at once
  by sampling the process from outside every second. The shared pool closes a connection idle for 15 s
  (aiohttp's connector reuses idle connections oldest first; the old transport most recent first, so it
  shrank between bursts and reopened at the next): connections opened grow with bursts and run time, never
  with N, and never more than the pool size are open at once.
- **Detection latency**: event time (when the trigger's event reached the runner's queue) minus the
  emulator's `completes_at` for that prediction.
- **Baselines** (`benchmarks/baselines.py`): the same wait loop, polling policy and events; only one
  poll's transport differs. The *before* rows are WaveSpeedTaskTrigger itself with the shared-client
  registry given another client through its public `set_client_factory`
  (`benchmarks/legacy_transport.py`): the hand-written keep-alive transport on httpx that the package
  shipped until issue 12 (same pool size, gate, limiter and retry policy as the aiohttp client), and
  the shared client as first written (httpx's own pool of 32, no gate).
- **Real Airflow** (`benchmarks/airflow_run.py`, DAGs in `benchmarks/dags/`): a real api-server, scheduler,
  dag-processor and triggerer (`scripts/airflow_stack.py`, LocalExecutor, SQLite). Worker-slot seconds =
  the number of the waiting task's instances in state `running`, sampled through the REST API every
  second and summed over time; cross-checked with the task logs (first to last line of each worker run
  of each try). *While its prediction ran*: the part of those worker runs that overlaps the task's own
  prediction running (the emulator's `submitted_at` to `completes_at`), i.e. a slot held while there was
  something to wait for; the targets compare this. Waits outrank submits (`weight_rule="upstream"`) so a
  wait starts right after its submit; even so, with fewer slots than generations, a poking sensor can
  start after its prediction is over (its submit ran while every slot was held by other waits), which
  the one-task design cannot.
  8 worker slots: on 2 cores, 16 concurrent task processes stretch every run's start-up (DAG parse
  0.2 s -> 2 s), which would charge the machine's contention to the mode with more runs."""
