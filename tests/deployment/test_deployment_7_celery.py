"""The CeleryExecutor variant: Redis as the broker, two `airflow celery worker` processes, two triggerers.

Task processes live in Celery workers that share nothing with the scheduler but the metadata
database and the broker. Scenarios: the load run (mapped submit + deferrable sensor) and a
batch, a whole worker killed with kill -9 in the middle of a batch's submits, and the secret
audit extended to the broker (its keys and every command it received, task messages decoded)
and the workers' logs. They run after the LocalExecutor scenarios, in one Celery deployment.
"""

from __future__ import annotations

import time

import pytest
from deployment_harness import (
    BATCH_KILL_DAG,
    BATCH_KILLED_WINDOW,
    CELERY_HEARTBEAT_TIMEOUT,
    CELERY_WORKERS,
    Deployment,
    LoadRun,
    assert_batch_kill_outcome,
    assert_load_run,
    audit_files_and_database,
    celery_messages,
    celery_workloads,
    has_key,
    is_running,
    key_needles,
    start_batch_to_kill,
)

pytestmark = pytest.mark.deployment

WORKERS = [f"celery-worker-{index}" for index in range(1, CELERY_WORKERS + 1)]
BATCH_DAG, BATCH_COUNT = "wsdeploy_celery_batch", 50  # as in dags/wsdeploy_celery_batch.py


def test_celery_load_generations_and_a_batch_every_task_succeeds_and_submits_once(
    celery_load_run: LoadRun, celery_deployment: Deployment
) -> None:
    deployment, result = celery_deployment, celery_load_run.result
    ran = {worker: celery_workloads(deployment, worker, result.run_id) for worker in WORKERS}
    print(
        f"\ncelery load: {celery_load_run.count} generations in {result.seconds:.0f} s; workloads per worker "
        f"{ {worker: len(items) for worker, items in ran.items()} }; sensor tries {dict(result.tries('generate.wait'))}"
        f"; emulator {celery_load_run.counters}; failed by Airflow's defer/resume race: {result.state_mismatches}"
    )
    assert_load_run(celery_load_run, deployment)
    # The tasks ran in the Celery workers, both of them: every task instance's last try among them.
    executed = {item for items in ran.values() for item in items}
    assert all(ran.values()), f"a worker ran nothing: { {w: len(i) for w, i in ran.items()} }"
    tries = {(ti["task_id"], ti["map_index"], ti["try_number"]) for ti in result.task_instances}
    assert sorted(tries - executed) == [], "task instances no Celery worker ran"

    # A batch on the same workers: every input submitted once and completed.
    deployment.reset_emulator(duration=2.0)
    run_id = deployment.trigger(BATCH_DAG)
    batch = deployment.finish(BATCH_DAG, run_id, timeout=300)
    print(f"celery batch: {BATCH_COUNT} inputs in {batch.seconds:.0f} s, state {batch.state}")
    assert (batch.state, batch.states("batch")) == ("success", {"success": 1})
    assert deployment.submissions_per_index(run_id) == {index: 1 for index in range(BATCH_COUNT)}
    value = deployment.airflow.xcom(BATCH_DAG, run_id, "batch")
    assert (value["completed"], value["failed"]) == (BATCH_COUNT, 0)
    assert [entry["status"] for entry in value["predictions"]] == ["completed"] * BATCH_COUNT
    assert any(item[0] == "batch" for worker in WORKERS for item in celery_workloads(deployment, worker, run_id))


def test_celery_worker_killed_mid_batch_airflow_retries_it_on_the_other_worker_nothing_submitted_twice(
    celery_deployment: Deployment,
) -> None:
    deployment, airflow = celery_deployment, celery_deployment.airflow
    control = deployment.control
    run = start_batch_to_kill(deployment)
    run_id, started, ti = run.run_id, run.started, run.ti
    # The worker running the batch: the one whose process tree holds the task's process.
    victim = deployment.celery_worker_of(int(ti["pid"]))
    (survivor,) = [name for name in WORKERS if name != victim]
    tree = deployment.process_tree_of(victim)
    log_size = (airflow.log_dir / f"{victim}.log").stat().st_size
    killed = airflow.kill(victim, whole_tree=True)  # the machine is gone: worker, pool, supervisors, tasks
    killed_at = time.monotonic()
    print(
        f"\ncelery kill: {killed_at - started:.1f} s into the run, with inputs 0-9 done and {BATCH_KILLED_WINDOW[0]}-"
        f"{BATCH_KILLED_WINDOW[-1]} in flight, kill -9 of {victim} ({len(killed)} processes): "
        + "; ".join(f"{pid} {tree.get(pid, '?')[:70]}" for pid in killed)
    )
    assert int(ti["pid"]) in killed
    deployment.wait_until(lambda: not any(is_running(pid) for pid in killed), 10, "every killed process ended")

    # Nothing tells Airflow: the scheduler fails the silent task after CELERY_HEARTBEAT_TIMEOUT s
    # without a heartbeat, and retries it (retries=1) on the worker that is left.
    result = deployment.finish(BATCH_KILL_DAG, run_id, timeout=CELERY_HEARTBEAT_TIMEOUT + 240, started=started)
    (ti,) = result.of("batch")
    scheduler_log = (airflow.log_dir / "scheduler.log").read_text(errors="replace")
    detected = [line for line in scheduler_log.splitlines() if "Detected a task instance without a heartbeat" in line]
    on_survivor = celery_workloads(deployment, survivor, run_id)
    print(
        f"celery kill: run ended {result.seconds:.0f} s after it began ({time.monotonic() - killed_at:.0f} s after "
        f"the kill), state {result.state}, tries {ti['try_number']}; workloads on {survivor}: {on_survivor}; "
        f"emulator {control.counters()['submissions']}"
    )
    assert_batch_kill_outcome(deployment, run, result)
    assert any(run_id in line and "batch" in line for line in detected), "the retry came from the heartbeat timeout"
    assert ("batch", -1, 2) in on_survivor, "the retry ran on the surviving worker"

    # A service manager would start the worker again: it rejoins and consumes tasks.
    airflow.start_again(victim)
    airflow.wait_for_celery_worker(victim, since=log_size)
    deployment.assert_healthy()


def test_celery_api_key_not_in_the_broker_nor_the_workers_logs(
    celery_load_run: LoadRun, celery_deployment: Deployment
) -> None:
    deployment = celery_deployment
    assert deployment.redis is not None
    needles = key_needles(deployment.api_key)
    # Every file (the workers' logs and the broker's MONITOR record among them), tables, trigger
    # kwargs, pg_dump (Celery's result tables included): the LocalExecutor's audit.
    components = {"scheduler", "api-server", "dag-processor", "triggerer-1", "triggerer-2", *WORKERS}
    audit_files_and_database(deployment, celery_load_run, components)

    # The broker: every key and value now, and every command it received (the task messages were
    # pushed, popped and acknowledged long ago), with the messages' base64 bodies decoded.
    contents = deployment.redis.contents()
    commands = deployment.redis.commands()
    arguments = [arg for command in commands for arg in command]
    messages = celery_messages(arguments + list(contents.values()))
    tasks = [m for m in messages if (m.get("headers") or {}).get("task") == "execute_workload"]
    load_tasks = [m for m in tasks if celery_load_run.result.run_id in m["decoded_body"]]
    taskmeta = deployment.pg.query("SELECT count(*) FROM celery_taskmeta")[0][0]
    print(
        f"\ncelery secret audit: broker keys {sorted(contents)}; {len(commands)} broker commands, {len(messages)} "
        f"Celery messages ({len(tasks)} task messages, {len(load_tasks)} of the load run), {taskmeta} rows in "
        "Celery's result table"
    )
    # The audit saw what passed through: a task message for every task instance of the load run.
    assert "0/_kombu.binding.default" in contents
    assert len(load_tasks) >= 2 * celery_load_run.count
    assert taskmeta >= 2 * celery_load_run.count
    assert [name for name, value in contents.items() if has_key(name + value, needles)] == []
    assert [command[0] for command in commands if any(has_key(arg, needles) for arg in command)] == []
    assert [m["decoded_body"][:200] for m in messages if has_key(m["decoded_body"], needles)] == []
    # The workers' logs (searched as files above) are where their tasks ran: they are not empty.
    for worker in WORKERS:
        assert celery_workloads(deployment, worker, celery_load_run.result.run_id), f"{worker} logged no workload"
