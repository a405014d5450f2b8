"""Faults in a real deployment: API outage, revoked key, rate limit, garbage answers, bad DAG input."""

from __future__ import annotations

import secrets
import time

import pytest
from deployment_harness import (
    CONN_ID,
    HTTP_CONN_ID,
    Deployment,
    RunResult,
    epoch,
    failure_messages,
    max_in_sliding_window,
)

pytestmark = pytest.mark.deployment


def _messages(deployment: Deployment, result: RunResult, task_id: str, map_index: int = -1) -> str:
    log = deployment.task_log(result.dag_id, result.run_id, task_id, map_index)
    return "\n".join(failure_messages(log)) or log[-3000:]


OUTAGE_DAG, OUTAGE_COUNT = "wsdeploy_api_outage", 10
OUTAGE_SECONDS = 60.0


def test_api_outage_sensors_keep_waiting_then_succeed(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # running until the outage begins, however long the sensors take to defer
    run_id = deployment.trigger(OUTAGE_DAG)
    started = time.monotonic()
    deployment.wait_deferred(OUTAGE_DAG, run_id, OUTAGE_COUNT)

    # First half: the gateway answers 503 (an HTML page); second half: connections are cut. The outage's
    # window is measured inside the faults' own (after the first is added, before the last is removed): a
    # poll logged in it met a fault however slowly the control calls return on a busy machine.
    fault = control.add_fault("result", "http_error", status=503, times=None)
    outage_start = time.time()
    control.release()  # the predictions finish during the outage
    time.sleep(OUTAGE_SECONDS / 2)
    # Switch without a gap: the first matching fault applies, so the drop waits behind the 503
    # until that is removed (a poll between two control calls would see the finished prediction).
    drop = control.add_fault("result", "drop", times=None)
    control.remove_fault(fault)
    fault = drop
    time.sleep(OUTAGE_SECONDS / 2)
    during = {state: deployment.count(OUTAGE_DAG, run_id, state) for state in ("deferred", "failed")}
    outage_end = time.time()
    control.remove_fault(fault)

    polls = [entry for entry in control.request_log(since=outage_start) if entry[1] == "result"]
    outage_polls = [entry for entry in polls if entry[0] < outage_end]
    answered = {entry[2] for entry in outage_polls}
    # The outage lasts as long as it took (the control calls are slower on a busy machine), not
    # the nominal OUTAGE_SECONDS: dividing by the nominal time would rate a slow machine's polls higher.
    outage_seconds = outage_end - outage_start
    rate = len(outage_polls) / outage_seconds / OUTAGE_COUNT
    by_answer = {code: sum(1 for entry in outage_polls if entry[2] == code) for code in sorted(answered)}
    print(
        f"\nAPI outage: {len(outage_polls)} polls in {outage_seconds:.1f} s ({rate:.2f}/s per sensor), by answer "
        f"{by_answer} (0: connection dropped)"
    )
    assert during == {"deferred": OUTAGE_COUNT, "failed": 0}, "sensors must keep waiting through the outage"
    assert answered == {503, 0}, "the sensors kept polling through both kinds of outage"
    assert rate <= 1.0, "no retry storm during the outage"

    result = deployment.finish(OUTAGE_DAG, run_id, timeout=180, started=started)
    result.assert_states("generate.submit", {"success": OUTAGE_COUNT})
    result.assert_states("generate.wait", {"success": OUTAGE_COUNT})
    assert deployment.submissions_per_index(run_id) == {i: 1 for i in range(OUTAGE_COUNT)}
    assert min(epoch(ti["end_date"]) or 0 for ti in result.of("generate.wait")) >= outage_end


REVOKED_DAG, REVOKED_COUNT = "wsdeploy_key_revoked", 10


def test_key_revoked_fails_fast_with_the_fix_and_no_retry_storm(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # still running when the key goes
    run_id = deployment.trigger(REVOKED_DAG)
    started = time.monotonic()
    deployment.wait_deferred(REVOKED_DAG, run_id, REVOKED_COUNT)
    deployment.wait_settled(REVOKED_DAG, run_id, "generate.wait", REVOKED_COUNT)
    revoked_at = time.time()
    control.set_api_key("revoked-" + secrets.token_hex(8))  # the deployment's key now gets 401

    result = deployment.finish(REVOKED_DAG, run_id, timeout=180, started=started)
    result.assert_states("generate.submit", {"success": REVOKED_COUNT})
    result.assert_states("generate.wait", {"failed": REVOKED_COUNT})
    ends = [(epoch(ti["end_date"]) or 0) - revoked_at for ti in result.of("generate.wait")]
    unauthorized = [entry for entry in control.request_log(since=revoked_at) if entry[2] == 401]
    print(
        f"\nkey revoked: sensors failed {min(ends):.1f}-{max(ends):.1f} s after; {len(unauthorized)} requests got 401"
    )
    # Failed by the revocation (after it), on the 401 itself: not at the wait limit, however long that took.
    assert min(ends) >= 0, "a sensor ended before the key was revoked"
    # Retries are configured (3), but a bad key is final: one try each, no more requests.
    assert {ti["try_number"] for ti in result.of("generate.wait")} == {1}
    assert len(unauthorized) <= 2 * REVOKED_COUNT, "no retry storm against a revoked key"
    for ti in result.of("generate.wait"):
        text = _messages(deployment, result, "generate.wait", ti["map_index"])
        assert "wait limit" not in text, f"the sensor waited out its limit instead of failing on the 401: {text}"
        assert CONN_ID in text, f"the message names the connection: {text}"
        assert "API key" in text and "401" in text, f"the message says what to fix: {text}"
        assert deployment.api_key not in text


RATE_DAG, RATE_COUNT = "wsdeploy_rate_limit", 12
# Workers cannot share a submission budget: an Airflow pool keeps their submits few at a time.
RATE_POOL, RATE_POOL_SLOTS = "wavespeed_rate_limited", 4
# A low custom tier: 12 generations need two minutes of starts (4 a minute, however fast the
# workers submit), and one runs at a time (the others wait queued in `created`, polled all along).
# The connection keeps the default budget (500/min per process): as when other clients share the
# account, only the API's 429s tell the workers the real limit.
RATE_STARTS_PER_MINUTE, RATE_CONCURRENCY = 4, 1


def test_rate_limit_all_succeed_and_the_rate_stays_under_the_limit(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator(duration=(8.0, 12.0))
    if not any(pool["name"] == RATE_POOL for pool in deployment.airflow.api("GET", "pools")["pools"]):
        deployment.airflow.api("POST", "pools", json={"name": RATE_POOL, "slots": RATE_POOL_SLOTS})
    control.set_tier(starts_per_minute=RATE_STARTS_PER_MINUTE, concurrency=RATE_CONCURRENCY)
    try:
        run_id = deployment.trigger(RATE_DAG)
        started = time.monotonic()
        since = time.time()
        result = deployment.finish(RATE_DAG, run_id, timeout=400, started=started)
        tier = control.counters()["tier"]
    finally:
        control.set_tier()

    log = control.request_log(since=since)
    submits = [entry for entry in log if entry[1] == "submit"]
    accepted = [entry[0] for entry in submits if entry[2] == 200]
    limited = [entry[0] for entry in submits if entry[2] == 429]
    polls = [entry for entry in log if entry[1] == "result"]
    started_at = sorted(entry["submitted_at"] for entry in deployment.submissions_of(run_id))
    deadlines = [_retry_not_before(refused, started_at) for refused in limited]
    early = _retries_too_early(deadlines, [entry[0] for entry in submits])
    busiest_minute = max_in_sliding_window(accepted, 60.0)
    busiest_polls = max_in_sliding_window([entry[0] for entry in polls], 10.0)
    waits = [deadline - refused for deadline, refused in zip(deadlines, limited, strict=True)]
    print(
        f"\ntier {RATE_STARTS_PER_MINUTE}/min, {RATE_CONCURRENCY} concurrent: {len(submits)} submit requests, "
        f"{len(accepted)} accepted, {len(limited)} answered 429 (Retry-After at least "
        f"{min(waits, default=0):.0f}-{max(waits, default=0):.0f} s); busiest minute {busiest_minute} starts; "
        f"queued at most {tier['max_queued']}; {len(polls)} polls, busiest 10 s {busiest_polls}, "
        f"429s on polls {sum(entry[2] == 429 for entry in polls)}; run {result.seconds:.0f} s"
    )
    result.assert_states("generate.submit", {"success": RATE_COUNT})
    result.assert_states("generate.wait", {"success": RATE_COUNT})
    assert {ti["try_number"] for ti in result.of("generate.submit")} == {1}  # a submit outlasts the 429s
    assert deployment.submissions_per_index(run_id) == {i: 1 for i in range(RATE_COUNT)}
    assert limited, "the scenario must hit the tier's start rate"
    assert tier["max_queued"] > 0, "the scenario must fill the tier's concurrency"
    # What the provider sent. Attempts: each task's first submit, then one retry per 429 it got, nothing
    # more (every task succeeded in its first try: each 429 was followed by exactly one more attempt).
    assert {entry[2] for entry in submits} == {200, 429}
    assert len(accepted) == RATE_COUNT and len(submits) == RATE_COUNT + len(limited)
    # Spacing: each 429's retry came no sooner than its Retry-After, which the tier sets to when its
    # oldest start of the minute leaves the window. The log does not say which task sent which request,
    # so the check is the one every honest assignment of retries to 429s satisfies: for any time, at
    # least as many attempts came after it as there are 429s whose Retry-After ends after it.
    assert not early, f"retries sooner than the Retry-After allowed: {early}"
    # Polls are not tier-limited and have no fixed budget: never refused, and in 10 s more of them
    # than the tier starts in a minute.
    assert all(entry[2] == 200 for entry in polls)
    assert busiest_polls > RATE_STARTS_PER_MINUTE


def _retry_not_before(refused: float, started_at: list[float]) -> float:
    """Return the earliest moment the retry of a submit refused (429) at ``refused`` may arrive.

    The tier answers ``Retry-After: max(1, ceil(oldest start of the last minute + 60 - now))``: a client
    that honours it sends its retry after that moment. The oldest start of the window is at least the
    RATE_STARTS_PER_MINUTE-th latest of the starts recorded before ``refused`` (the window holds that many
    when full; starts recorded later can only be newer), less 10 ms (``submitted_at`` is read just after the
    tier's clock).
    """
    before = [moment for moment in started_at if moment <= refused]
    bound = refused + 1.0
    if len(before) >= RATE_STARTS_PER_MINUTE:
        bound = max(bound, before[-RATE_STARTS_PER_MINUTE] + 60.0 - 0.01)
    return bound


def _retries_too_early(deadlines: list[float], attempts: list[float]) -> list[str]:
    """Return where the attempts cannot all be honest retries: the k latest Retry-After ends need k later attempts."""
    problems = []
    for rank, deadline in enumerate(sorted(deadlines, reverse=True), start=1):
        after = sum(1 for moment in attempts if moment >= deadline)
        if after < rank:
            problems.append(f"{rank} 429s' Retry-After end at or after {deadline:.2f}, {after} attempts came then")
    return problems


GARBAGE_DAG = "wsdeploy_garbage"
POLL_GARBAGE = ("html", "truncated", "wrong_types", "missing_outputs")
SUBMIT_GARBAGE = ("html", "truncated")
CLEAN_COUNT = 6


def test_garbage_answers_fail_only_the_affected_tasks_clearly(deployment: Deployment) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # every prediction runs until the garbage begins, however long the sensors take to defer
    for kind in SUBMIT_GARBAGE:
        control.add_fault("submit", kind, times=None, model=f"deploy-test/submit-{kind}")
    run_id = deployment.trigger(GARBAGE_DAG)
    started = time.monotonic()
    sensors = [f"poll_{kind}.wait" for kind in POLL_GARBAGE] + ["clean.wait"]
    waiting = 2 * len(POLL_GARBAGE) + CLEAN_COUNT
    deployment.wait_deferred(GARBAGE_DAG, run_id, waiting)
    for task_id in sensors:
        deployment.wait_settled(GARBAGE_DAG, run_id, task_id, 2 if task_id != "clean.wait" else CLEAN_COUNT)
    # Mid-wait, the polls of one model per kind start getting garbage.
    garbage_from = time.time()
    for kind in POLL_GARBAGE:
        control.add_fault("result", kind, times=None, model=f"deploy-test/{kind}")
    control.release()  # the clean generations finish beside the garbage
    result = deployment.finish(GARBAGE_DAG, run_id, timeout=240, started=started)
    control.clear_faults()

    messages = {}
    for kind in POLL_GARBAGE:
        result.assert_states(f"poll_{kind}.submit", {"success": 2})
        result.assert_states(f"poll_{kind}.wait", {"failed": 2})
        assert result.tries(f"poll_{kind}.wait") == {1: 2}
        for ti in result.of(f"poll_{kind}.wait"):
            text = messages[f"poll {kind}"] = _messages(deployment, result, f"poll_{kind}.wait", ti["map_index"])
            prediction_id = deployment.airflow.xcom(
                GARBAGE_DAG, run_id, f"poll_{kind}.submit", map_index=ti["map_index"]
            )
            assert prediction_id in text and "WaveSpeed" in text, f"{kind}: {text}"
            assert "wait limit" not in text, f"{kind}: the sensor waited out its limit: {text}"
    for kind in SUBMIT_GARBAGE:
        result.assert_states(f"submit_{kind}.submit", {"failed": 1})
        result.assert_states(f"submit_{kind}.wait", {"upstream_failed": 1})
        text = messages[f"submit {kind}"] = _messages(deployment, result, f"submit_{kind}.submit", 0)
        assert f"deploy-test/submit-{kind}" in text and "WaveSpeed" in text, f"{kind}: {text}"
        # The API answered 200: the prediction may exist (and be billed); the message must say so.
        assert "may have" in text and "before re-running" in text, f"{kind}: {text}"
    print("\ngarbage messages:\n" + "\n".join(f"  {k}: {v[:300]}" for k, v in messages.items()))

    # The clean generations ran beside the garbage, unaffected; every component still healthy.
    result.assert_states("clean.submit", {"success": CLEAN_COUNT})
    result.assert_states("clean.wait", {"success": CLEAN_COUNT})
    # A garbled answer is final: the affected sensors fail soon, they do not keep polling.
    ended = [(epoch(ti["end_date"]) or 0) - garbage_from for k in POLL_GARBAGE for ti in result.of(f"poll_{k}.wait")]
    print(f"garbage: affected sensors failed {min(ended):.1f}-{max(ended):.1f} s after the garbage began")
    # Failed by the garbage (after it began), on the garbled answer itself (not at the wait limit: above).
    assert min(ended) >= 0, "an affected sensor ended before the garbage began"
    deployment.assert_healthy()


BAD_DAG = "wsdeploy_bad_input"
BAD_TASKS = {
    "model_traversal": "invalid model id",
    "model_query": "invalid model id",
    "model_space": "invalid model id",
    "inputs_not_json": "inputs must be",
    "inputs_not_object": "inputs must be",
    "prediction_id_traversal": "invalid prediction id",
    "prediction_id_path": "invalid prediction id",
    "http_base_url_submit": "plain http to a non-loopback host",
    "http_base_url_sensor": "plain http to a non-loopback host",
}


def test_bad_dag_input_fails_clearly_before_any_request(deployment: Deployment) -> None:
    deployment.reset_emulator()
    run_id = deployment.trigger(BAD_DAG)
    result = deployment.finish(BAD_DAG, run_id, timeout=240)
    counters = deployment.control.counters()
    assert counters["total_requests"] == 0, f"requests reached the API: {counters}"
    assert {ti["task_id"] for ti in result.task_instances} == set(BAD_TASKS)
    for task_id, expected in BAD_TASKS.items():
        (ti,) = result.of(task_id)
        assert ti["state"] == "failed", f"{task_id}: {ti['state']}"
        assert ti["try_number"] == 1, f"{task_id} was retried: bad input is final"
        text = _messages(deployment, result, task_id)
        assert expected in text, f"{task_id}: {text}"
        assert deployment.api_key not in text
    assert HTTP_CONN_ID in _messages(deployment, result, "http_base_url_submit")
