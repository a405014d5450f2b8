"""Generations in a real deployment: load, a triggerer killed, the scheduler restarted."""

from __future__ import annotations

import time
from typing import Any

import pytest
from deployment_harness import (
    LOAD_COUNT,
    PARALLELISM,
    TRIGGERER_HEALTH_THRESHOLD,
    Deployment,
    LoadRun,
    RunResult,
    epoch,
    failure_messages,
)

pytestmark = pytest.mark.deployment


def _all_success(result: RunResult, task_ids: tuple[str, ...]) -> None:
    for task_id in task_ids:
        result.assert_states(task_id, {"success": len(result.of(task_id))})


def test_load_200_generations_wait_deferred_and_submit_once(load_run: LoadRun, deployment: Deployment) -> None:
    result, holding = load_run.result, load_run.holding
    deferring = [s.sensors_running for s in load_run.samples if 0 < s.deferred < LOAD_COUNT]
    held = [(s.deferred, s.sensors_running) for s in holding]
    print(
        f"\nload: {LOAD_COUNT} generations in {result.seconds:.0f} s; while every prediction ran: "
        f"{len(holding)} samples of (deferred, sensors in a worker slot) {held}; "
        f"sensors in a slot while the others deferred (each polls once, then defers): max "
        f"{max(deferring, default=0)} of {PARALLELISM} slots; sensor tries {dict(result.tries('generate.wait'))}; "
        f"emulator {load_run.counters}; failed by Airflow's defer/resume race (then retried): {result.state_mismatches}"
    )
    assert len(result.of("generate.submit")) == LOAD_COUNT
    _all_success(result, ("generate.submit", "generate.wait"))
    assert result.state == "success"

    # Exactly one submission per map index: nothing lost, nothing submitted twice.
    assert load_run.submissions == {index: 1 for index in range(LOAD_COUNT)}
    assert load_run.counters["submissions"] == {"wavespeed-ai/flux-dev": LOAD_COUNT}

    # Waiting sensors hold no worker slot: with every prediction still running, all 200 sensors
    # were deferred at once (16 slots could not hold them), and as the triggers polled on, no
    # sensor and no task instance at all was in a worker slot.
    assert len(holding) >= 2
    assert [(s.deferred, s.sensors_running, s.running) for s in holding] == [(LOAD_COUNT, 0, 0)] * len(holding)
    # Every sensor waited in a triggerer process: its trigger log was written by a triggerer job.
    triggerer_ids = set(deployment.airflow.job_ids.values())
    for ti in result.of("generate.wait"):
        directory = deployment.task_log_dir(result.dag_id, result.run_id, "generate.wait", ti["map_index"])
        jobs = {int(path.name.rsplit(".", 2)[-2]) for path in directory.glob("attempt=*.log.trigger.*.log")}
        assert jobs and jobs <= triggerer_ids, f"sensor {ti['map_index']} trigger logs: {jobs}"


KILL_DAG = "wsdeploy_triggerer_kill"
KILL_GENERATIONS, KILL_PROBES = 30, 6
# The probes' wait limit is what is tested, so it stays a real duration: long enough that every
# sensor has deferred before the first probe's limit passes, however slowly a busy machine starts them.
PROBE_MODEL, PROBE_TIMEOUT = "deploy-test/long-running", 240.0


def test_triggerer_killed_other_takes_over_without_resubmitting(deployment: Deployment) -> None:
    airflow = deployment.airflow
    deployment.reset_emulator()
    # Every prediction runs until the test says: the generations until the takeover is over, the
    # probes' for good (their sensors must end at their wait limit).
    deployment.control.hold()
    run_id = deployment.trigger(KILL_DAG)
    started = time.monotonic()
    total = KILL_GENERATIONS + KILL_PROBES
    deployment.wait_deferred(KILL_DAG, run_id, total, timeout=PROBE_TIMEOUT)  # a probe's limit ends the wait

    def assigned() -> dict[str, dict[str, Any]] | None:
        rows = deployment.deferred_triggers(KILL_DAG, run_id)
        return rows if len(rows) == total and all(r["triggerer_id"] is not None for r in rows.values()) else None

    deployment.wait_until(lambda: assigned() is not None, 60, "every trigger assigned to a triggerer")
    before = assigned()
    assert before is not None
    by_job: dict[int, list[str]] = {}
    for ti_key, row in before.items():
        by_job.setdefault(row["triggerer_id"], []).append(ti_key)
    names = {job_id: name for name, job_id in airflow.job_ids.items()}
    assert set(by_job) <= set(names), f"triggers held by unknown triggerers: {by_job.keys()} vs {names}"

    # Kill the triggerer holding the most probes (ties: the most triggers), so a deadline moves.
    victim_job = max(
        names, key=lambda job: (sum(k.startswith("probe") for k in by_job.get(job, [])), len(by_job.get(job, [])))
    )
    survivor_job = next(job for job in names if job != victim_job)
    moved = sorted(by_job.get(victim_job, []))
    print(
        f"\ntriggerer kill: {len(moved)} of {total} triggers on {names[victim_job]} (job {victim_job}), "
        f"{len(by_job.get(survivor_job, []))} on {names[survivor_job]}"
    )
    assert any(key.startswith("probe") for key in moved) and any(key.startswith("generate") for key in moved)
    airflow.kill(names[victim_job])  # kill -9, process group included
    killed_at = time.time()

    def taken_over() -> bool:
        now = deployment.deferred_triggers(KILL_DAG, run_id)
        return all(now[key]["triggerer_id"] == survivor_job for key in moved if key in now)

    takeover = deployment.wait_until(taken_over, 120, "the surviving triggerer to take the triggers over")
    # The survivor can claim the victim's triggers only once its last heartbeat is older than the
    # health threshold (Airflow's rule): the earliest a limit restarted on the survivor could begin.
    victim_beat = epoch(next(j for j in airflow.jobs("TriggererJob") if j["id"] == victim_job)["latest_heartbeat"])
    assert victim_beat is not None
    earliest_claim = victim_beat + TRIGGERER_HEALTH_THRESHOLD
    after = deployment.deferred_triggers(KILL_DAG, run_id)
    print(f"triggerer kill: taken over {takeover:.0f} s after the kill (threshold {TRIGGERER_HEALTH_THRESHOLD} s)")
    for key in moved:
        if key in after:  # still waiting: the same trigger row, with the same absolute deadline
            assert after[key]["id"] == before[key]["id"]
            assert after[key]["kwargs_text"] == before[key]["kwargs_text"]

    # A triggerer killed is no user's kill: nothing was cancelled (cancel_on_kill is on by default).
    assert deployment.control.counters()["delete_requests"] == {}
    for submission in deployment.submissions_of(run_id):
        if submission["model"] != PROBE_MODEL:
            assert deployment.control.release(submission["id"]) == 1
    result = deployment.finish(KILL_DAG, run_id, timeout=600, started=started)
    _all_success(result, ("generate.submit", "generate.wait", "probe.submit"))
    result.assert_states("probe.wait", {"failed": KILL_PROBES})

    # Only the probes' predictions were cancelled, once each, at their wait limit (cancel_on_timeout):
    # none by the kill, and no completed generation.
    probe_ids = [s["id"] for s in deployment.submissions_of(run_id) if s["model"] == PROBE_MODEL]
    assert deployment.control.counters()["delete_requests"] == dict.fromkeys(probe_ids, 1)

    # No duplicate submission, in either group.
    assert deployment.submissions_per_index(run_id, "wavespeed-ai/flux-dev") == {i: 1 for i in range(KILL_GENERATIONS)}
    assert deployment.submissions_per_index(run_id, PROBE_MODEL) == {i: 1 for i in range(KILL_PROBES)}

    # Moved sensors finished on the survivor: their trigger logs come from its job.
    for key in moved:
        task_id, index = key.split("[")
        directory = deployment.task_log_dir(KILL_DAG, run_id, task_id, int(index.rstrip("]")))
        assert list(directory.glob(f"attempt=*.log.trigger.{survivor_job}.log")), f"{key} never ran on the survivor"

    # The moved probes' wait limit held: each ended at its original end_time, not a fresh PROBE_TIMEOUT
    # after the takeover. Judged by the mechanism, not the machine's speed: the trigger itself cancels
    # the probe's prediction at the limit it holds (cancel_on_timeout; the emulator notes when), and a
    # limit restarted on the survivor could not come before its earliest claim + PROBE_TIMEOUT. The verdict
    # is whichever of the two the cancel is nearer to; the task's own end (a worker run after the
    # event) is only printed.
    probes = {f"probe.wait[{ti['map_index']}]": ti for ti in result.of("probe.wait")}
    cancelled_at = {c["id"]: c["cancelled_at"] for c in deployment.control.cancellations()}
    probe_of = {s["inputs"]["seed"]: s["id"] for s in deployment.submissions_of(run_id) if s["model"] == PROBE_MODEL}
    for key in (k for k in moved if k.startswith("probe")):
        end_time = _end_time(before[key]["kwargs"])
        restarted = earliest_claim + PROBE_TIMEOUT
        cancel = cancelled_at[probe_of[probes[key]["map_index"]]]
        ended = epoch(probes[key]["end_date"])
        assert ended is not None
        log = deployment.task_log(KILL_DAG, run_id, "probe.wait", probes[key]["map_index"])
        assert any("did not finish before the wait limit" in m for m in failure_messages(log)), log[-2000:]
        print(
            f"triggerer kill: {key} limit {end_time - killed_at:+.0f} s from the kill, cancelled "
            f"{cancel - end_time:+.1f} s after it (a restarted limit: {restarted - end_time:+.0f} s), "
            f"task ended {ended - end_time:+.1f} s after it"
        )
        assert cancel >= end_time - 1, f"{key}: cancelled {cancel}, before its limit {end_time}"
        assert cancel - end_time < restarted - cancel, (
            f"{key}: limit {end_time}, claimable from {earliest_claim}, cancelled {cancel}: "
            "the survivor restarted the limit"
        )
    deployment.assert_healthy()


def _end_time(kwargs: Any) -> float:
    """The trigger's end_time from its (serde-encoded) kwargs."""
    if isinstance(kwargs, dict):
        if isinstance(kwargs.get("end_time"), (int, float)):
            return float(kwargs["end_time"])
        for value in kwargs.values():
            found = _end_time(value)
            if found:
                return found
    if isinstance(kwargs, list):
        for value in kwargs:
            found = _end_time(value)
            if found:
                return found
    return 0.0


RESTART_DAG = "wsdeploy_scheduler_restart"
RESTART_COUNT = 20


def test_scheduler_restart_mid_run_loses_and_repeats_nothing(deployment: Deployment) -> None:
    airflow = deployment.airflow
    deployment.reset_emulator()
    deployment.control.hold()  # no sensor can finish before the restart, however slow the machine
    schedulers_before = {job["id"] for job in airflow.jobs("SchedulerJob")}
    run_id = deployment.trigger(RESTART_DAG)
    started = time.monotonic()
    deployment.wait_until(lambda: deployment.count(RESTART_DAG, run_id, "deferred") >= 3, 180, "sensors deferred")
    success_before = deployment.count(RESTART_DAG, run_id, "success")
    assert success_before < 2 * RESTART_COUNT, "the run ended before the restart"

    restarted_at = time.time()
    airflow.restart("scheduler")
    # From now on the predictions finish while submits and deferrals still go on under the new scheduler.
    deployment.control.set_duration((5.0, 15.0))
    deployment.control.release()
    print(f"\nscheduler restart: restarted with {success_before} of {2 * RESTART_COUNT} task instances done")

    result = deployment.finish(RESTART_DAG, run_id, timeout=300, started=started)
    _all_success(result, ("generate.submit", "generate.wait"))
    assert deployment.submissions_per_index(run_id) == {i: 1 for i in range(RESTART_COUNT)}
    jobs = airflow.jobs("SchedulerJob")
    new_schedulers = [job for job in jobs if job["id"] not in schedulers_before]
    assert [job for job in new_schedulers if (epoch(job["start_date"]) or 0) > restarted_at], (
        f"no scheduler job started after the restart: {jobs}"
    )
    deployment.assert_healthy()
