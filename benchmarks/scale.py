"""One trigger-scale run, in its own process: N triggers in Airflow's TriggerRunner.

``python -m benchmarks.scale --variant shared --n 1000 --emulator URL --out result.json``
(started by ``python -m benchmarks``; the emulator runs in another process).

How the triggers are driven: Airflow's own :class:`TriggerRunner` (the code the triggerer's
subprocess runs) with only its supervisor channel replaced. In a deployment the runner talks
over a socket to a supervisor that reads the trigger table; here :class:`_InProcessSupervisor`
answers the runner's state syncs in the same process: the first sync hands over one
``RunTrigger`` workload per prediction (Fernet-encrypted kwargs and a TaskInstance, as the
supervisor builds them), later syncs collect the events. Everything else is Airflow's code:
``create_triggers`` (decrypt, instantiate), ``run_trigger`` (greenback portal, tracing span,
structured logs written as JSON lines the way the runner sends them to its supervisor),
cleanup, the 1 s main loop and the blocked-loop watchdog.

Measured here: CPU time of this process (user + system, all threads), the event-loop lag of
a probe task, peak RSS (VmHWM reset at the start), TCP connections opened to the emulator
(``socket.socket.connect`` calls, counted by wrapping it: asyncio and urllib3 both connect
through it), and each trigger's event time. Polls, and when each prediction completed, come
from the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

VARIANTS = {
    "shared": "airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger",
    # Our trigger on the shared client before issue 12: httpx on the hand-written keep-alive
    # transport (benchmarks/legacy_transport.py), same pool size, gate and limiter.
    "shared-keepalive-transport": "airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger",
    "new-client": "benchmarks.baselines.NewClientPerPollTrigger",
    "threaded-requests": "benchmarks.baselines.ThreadedRequestsTrigger",
    # Our trigger on the shared client as it was first written: httpx's own pool (32), no gate.
    "shared-httpx-pool": "airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger",
    # Ours in a triggerer that gc.freeze()s its start-up heap (Airflow does not): what full
    # collections cost when they walk only the triggers' objects.
    "shared-gc-freeze": "airflow_provider_wavespeed.triggers.wavespeed.WaveSpeedTaskTrigger",
    # No I/O at all: what the triggerer itself spends per deferred trigger (memory, loop).
    "sleep-reference": "airflow.triggers.temporal.DateTimeTrigger",
}
CONN_ID = "wavespeed_bench"
PROBE_INTERVAL = 0.05  # the lag probe's sleep; Airflow's own watchdog sleeps 0.1 s
FLUX = "wavespeed-ai/flux-dev"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class ConnectCounter:
    """Counts TCP connects to one port made by this process (wraps ``socket.socket.connect``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        original = socket.socket.connect
        counter = self

        def connect(sock: socket.socket, address: Any) -> None:
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == counter.port:
                counter.count += 1
            original(sock, address)

        socket.socket.connect = connect  # type: ignore[method-assign,assignment]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def submit_all(url: str, api_key: str, n: int) -> list[str]:
    """Create the predictions (before the measured window, with a throw-away client)."""
    from airflow_provider_wavespeed.api.client import AsyncWaveSpeedClient

    async with AsyncWaveSpeedClient(api_key, url, timeout=60, max_in_flight=16) as client:

        async def one(index: int) -> str:
            return (await client.submit(FLUX, {"prompt": f"benchmark prediction {index}"})).id

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--emulator", required=True, help="the emulator's base URL")
    parser.add_argument("--api-key-env", default="WAVESPEED_BENCH_KEY")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, nargs=2, default=(30.0, 60.0), help="sleep-reference only")
    parser.add_argument("--max-wait", type=float, default=240.0, help="trigger end_time, seconds from the start")
    parser.add_argument(
        "--rate", type=float, default=0, help="max_submissions_per_minute in the connection (0: the shipped default)"
    )
    parser.add_argument("--log-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    api_key = os.environ[args.api_key_env]
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "wavespeed",
            "host": args.emulator,
            "password": api_key,
            "extra": {"max_submissions_per_minute": args.rate} if args.rate else {},
        }
    )
    # Imported here: the environment above must be in place first.
    import random
    from datetime import datetime, timedelta, timezone

    from airflow.executors.workloads import RunTrigger
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airflow.jobs.triggerer_job_runner import TriggerEventEntry, TriggerRunner, messages
    from airflow.models.trigger import Trigger
    from airflow.sdk.log import configure_logging

    from airflow_provider_wavespeed.testing import EmulatorControl

    log_io = args.log_file.open("wb", buffering=0)
    configure_logging(json_output=True, output=log_io, sending_to_supervisor=True)

    n = args.n
    reference = args.variant == "sleep-reference"
    control = EmulatorControl(args.emulator)
    control.reset()
    end_time = time.time() + args.max_wait
    if reference:
        prediction_ids = []
        now = datetime.now(timezone.utc)
        moments = [now + timedelta(seconds=random.uniform(*args.duration)) for _ in range(n)]
        kwargs = [{"moment": moment, "end_from_trigger": False} for moment in moments]
    else:
        prediction_ids = asyncio.run(submit_all(args.emulator, api_key, n))
        kwargs = [
            {
                "prediction_id": pid,
                "wavespeed_conn_id": CONN_ID,
                "poll_interval": args.poll_interval,
                "end_time": end_time,
                "first_poll_interval": 1.0,
            }
            for pid in prediction_ids
        ]
    classpath = VARIANTS[args.variant]
    # What the supervisor reads from the trigger table: Fernet-encrypted serialized kwargs.
    encrypted = [Trigger.encrypt_kwargs(item) for item in kwargs]
    dag_version = uuid.uuid4()
    event_times: dict[int, tuple[float, str]] = {}
    lag: list[float] = []
    lag_cpu: list[float] = []
    marks: dict[str, float] = {}
    failures: list[Any] = []
    gc_pauses: list[tuple[int, float, float]] = []  # (generation, wall seconds, CPU seconds)
    gc_started: list[tuple[float, float]] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started.append((time.perf_counter(), time.thread_time()))
        elif gc_started:
            wall, cpu = gc_started.pop()
            gc_pauses.append((info["generation"], time.perf_counter() - wall, time.thread_time() - cpu))

    class StampedEvents(deque):
        """The runner's outbound event queue, noting when each trigger yielded its event."""

        def append(self, entry: TriggerEventEntry) -> None:
            payload = entry.event.payload
            status = payload.get("status") if isinstance(payload, dict) else "fired"
            event_times.setdefault(entry.trigger_id, (time.time(), str(status)))
            super().append(entry)

    class InProcessSupervisor:
        """Stands in for the TriggerRunnerSupervisor at the other end of the runner's socket."""

        def __init__(self) -> None:
            self.handed_over = False
            self._reader_task = asyncio.create_task(asyncio.Event().wait(), name="supervisor-reader")

        async def asend(self, msg: Any) -> Any:
            if msg.failures:
                failures.extend(msg.failures)
            to_create = []
            if not self.handed_over:
                self.handed_over = True
                to_create = [
                    RunTrigger(
                        id=index + 1,
                        classpath=classpath,
                        encrypted_kwargs=encrypted[index],
                        ti=TaskInstanceDTO(
                            id=uuid.uuid4(),
                            task_id="wait_for_generation",
                            dag_id="wavespeed_scale_benchmark",
                            run_id="benchmark",
                            try_number=1,
                            dag_version_id=dag_version,
                            map_index=index,
                            pool_slots=1,
                            priority_weight=1,
                        ),
                    )
                    for index in range(n)
                ]
            return messages.TriggerStateSync(to_create=to_create, to_cancel=set())

    class BenchRunner(TriggerRunner):
        async def init_comms(self) -> None:
            self.comms_decoder = InProcessSupervisor()  # type: ignore[assignment]

        async def arun(self) -> None:
            probe = asyncio.create_task(self._probe(), name="lag-probe")
            try:
                await super().arun()
            finally:
                probe.cancel()

        async def _probe(self) -> None:
            loop = asyncio.get_running_loop()
            while True:
                started, thread_cpu = loop.time(), time.thread_time()
                await asyncio.sleep(PROBE_INTERVAL)
                late = loop.time() - started - PROBE_INTERVAL
                lag.append(late)
                # This thread cannot have kept the loop busy for longer than it ran: the rest
                # of a lag is time the process waited for a CPU (other processes' load).
                lag_cpu.append(min(late, time.thread_time() - thread_cpu))
                if "created" not in marks and len(self.triggers) + len(event_times) >= n:
                    marks["created"] = time.time()
                    marks["cpu_created"] = cpu_seconds()
                elif "counted" not in marks and "created" in marks and time.time() > marks["created"] + 10:
                    # Once, in the steady state: what a full collection has to walk (takes ~0.1 s,
                    # so this sample's lag is not counted).
                    marks["counted"] = time.time()
                    marks["tracked"] = len(gc.get_objects())
                    await asyncio.sleep(PROBE_INTERVAL)
                    continue
                if len(event_times) + len(failures) >= n or time.time() > end_time + 30:
                    marks["done"] = time.time()
                    marks["cpu_done"] = cpu_seconds()
                    self.stop = True
                    if self._stop_event is not None:
                        self._stop_event.set()
                    return

    _choose_shared_client(args.variant)
    runner = BenchRunner()
    runner.events = StampedEvents()

    port = int(args.emulator.rsplit(":", 1)[1].split("/")[0])
    connects = ConnectCounter(port)
    polls_before = control.counters()["requests"].get("result", 0)
    control.close()  # its keep-alive connection is not one of the triggers'
    gc.collect()
    if args.variant == "shared-gc-freeze":
        gc.freeze()
    tracked_before = len(gc.get_objects())
    rss_before = _status_kib("VmRSS")
    hwm_reset = reset_peak_rss()
    switches_before = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    cpu_before = cpu_seconds()
    started = time.time()
    connects.count = 0
    window_marker = args.out.with_suffix(".window")
    window_marker.touch()  # tells the orchestrator's socket sampling that the window is open
    gc.callbacks.append(on_gc)
    runner.run()  # asyncio.run(self.arun()), as in the triggerer's subprocess
    gc.callbacks.remove(on_gc)
    window_marker.unlink()
    rss_peak = _status_kib("VmHWM") if hwm_reset else None
    connections = connects.count
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches_before
    control = EmulatorControl(args.emulator)
    polls = control.counters()["requests"].get("result", 0) - polls_before
    window = marks.get("done", time.time()) - started
    cpu = marks.get("cpu_done", cpu_seconds()) - cpu_before

    detection = []
    statuses: dict[str, int] = {}
    states = [control.prediction_state(pid) for pid in prediction_ids]
    completes = [moment.timestamp() for moment in moments] if reference else [s["completes_at"] for s in states]
    poll_counts = [state["polls"] for state in states]
    for index in range(n):
        stamp = event_times.get(index + 1)
        status = stamp[1] if stamp else "no event"
        statuses[status] = statuses.get(status, 0) + 1
        if stamp and status in ("completed", "fired"):
            detection.append(stamp[0] - completes[index])
    gc_full = [pause for generation, pause, _ in gc_pauses if generation == 2]
    result = {
        "variant": args.variant,
        "classpath": classpath,
        "n": n,
        "poll_interval": args.poll_interval,
        "window_s": window,
        "create_s": marks.get("created", started) - started,
        "create_cpu_s": marks.get("cpu_created", cpu_before) - cpu_before,
        "polls": polls,
        "polls_per_s": polls / window if window > 0 else None,
        "polls_per_prediction": sum(poll_counts) / len(poll_counts) if poll_counts else None,
        "cpu_s": cpu,
        "cpu_s_per_1000_polls": 1000 * cpu / polls if polls else None,
        "lag_samples": len(lag),
        "lag_p50_ms": _ms(percentile(lag, 50)),
        "lag_p99_ms": _ms(percentile(lag, 99)),
        "lag_max_ms": _ms(max(lag) if lag else None),
        "lag_cpu_p99_ms": _ms(percentile(lag_cpu, 99)),
        "lag_cpu_max_ms": _ms(max(lag_cpu) if lag_cpu else None),
        "involuntary_switches": switches,
        "gc_collections": len(gc_pauses),
        "gc_full_collections": len(gc_full),
        "gc_max_ms": _ms(max((pause for _, pause, _ in gc_pauses), default=0.0)),
        "gc_max_cpu_ms": _ms(max((cpu for _, _, cpu in gc_pauses), default=0.0)),
        "gc_total_s": sum(pause for _, pause, _ in gc_pauses),
        "tracked_objects_per_trigger": (marks["tracked"] - tracked_before) / n if "tracked" in marks else None,
        "rss_before_kib": rss_before,
        "rss_peak_kib": rss_peak,
        "rss_per_trigger_kib": (rss_peak - rss_before) / n if rss_peak is not None else None,
        "connections_opened": connections,
        "detection_p50_s": percentile(detection, 50),
        "detection_p99_s": percentile(detection, 99),
        "detection_max_s": max(detection) if detection else None,
        "detected": len(detection),
        "statuses": statuses,
        "failures": len(failures),
        "worker_pid": os.getpid(),
    }
    args.out.write_text(json.dumps(result, indent=2))
    log_io.close()
    return 0 if len(detection) == n else 1


def _choose_shared_client(variant: str) -> None:
    """Give the triggers' shared-client registry the variant's client (public hook, no patching)."""
    from airflow_provider_wavespeed.triggers._shared_client import set_client_factory

    if variant == "shared-keepalive-transport":
        from benchmarks.legacy_transport import keepalive_transport_client

        set_client_factory(keepalive_transport_client)
    elif variant == "shared-httpx-pool":
        from benchmarks.legacy_transport import httpx_pool_client

        set_client_factory(httpx_pool_client)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


if __name__ == "__main__":
    sys.exit(main())
