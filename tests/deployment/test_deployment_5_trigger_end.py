"""Waits that end in the triggerer, and a sensor that starts there, in a real deployment.

Worker runs are counted in each task instance's own log files: every run of a task in a worker
(the first one and each resume after a deferral) parses the DAG and logs "DAG bundles loaded" in
``attempt=<try>.log``; a trigger writes to ``attempt=<try>.log.trigger.<job>.log`` instead. Every
prediction is held running until every waiting task instance is deferred and the scheduler has
processed their deferrals, so no verdict depends on the machine's speed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from deployment_harness import DAGS, Deployment, RunResult

from airflow_provider_wavespeed._compat import triggerer_renders_start_trigger_args

pytestmark = pytest.mark.deployment

DAG_ID = "wsdeploy_trigger_end"
PAIRS, FAILING_PAIR = 4, 3  # mapped submit -> sensor; the last prediction fails
WAITING = 2  # mapped waiting submits (wait_for_completion=True, deferrable)
LEGACY = 2  # the same designs with end_from_trigger=False / start_from_trigger=False: today's worker runs
FAILURE = "emulated: the GPU ran out of memory on this one"

# Written into the harness's dags folder for this scenario only (removed after it). Retries 0: the
# failing sensor fails on its one try (in a worker: failures always resume there).
DAG_SOURCE = f'''"""Airflow DAG (written by test_deployment_5_trigger_end.py): waits that end in the triggerer."""

from typing import Any

from airflow.sdk import task
from deployment_dag_factory import CONN_ID, MODEL, deployment_dag

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

PROMPT = "trigger-end {{{{ run_id }}}} %s {{{{ ti.map_index }}}}"
WAIT = {{"wavespeed_conn_id": CONN_ID, "poll_interval": 1.0, "timeout": 300.0}}

with deployment_dag("{DAG_ID}", retries=0):
    submit = WaveSpeedSubmitOperator.partial(task_id="submit", model=MODEL, wavespeed_conn_id=CONN_ID).expand(
        inputs=[{{"prompt": PROMPT % "pair", "seed": i}} for i in range({PAIRS})]
    )
    WaveSpeedTaskSensor.partial(task_id="wait", **WAIT).expand(prediction_id=submit.output)
    generate = WaveSpeedSubmitOperator.partial(
        task_id="generate", model=MODEL, wait_for_completion=True, deferrable=True, **WAIT
    ).expand(inputs=[{{"prompt": PROMPT % "waiting", "seed": i}} for i in range({WAITING})])
    single = WaveSpeedSubmitOperator(
        task_id="single_submit", model=MODEL, inputs={{"prompt": "trigger-end {{{{ run_id }}}} single 0"}},
        wavespeed_conn_id=CONN_ID,
    )
    single_wait = WaveSpeedTaskSensor(task_id="single_wait", prediction_id=single.output, **WAIT)

    @task
    def consume(single: Any, many: Any) -> list[str]:
        """What a downstream task receives from tasks ended in the triggerer: the dicts."""
        values = [single, *many]
        wrong = [type(value).__name__ for value in values if not isinstance(value, dict)]
        if wrong:
            raise TypeError(f"expected the prediction dicts, got {{wrong}}")
        return [value["id"] for value in values]

    consume(single_wait.output, generate.output)

    legacy = WaveSpeedSubmitOperator.partial(task_id="legacy_submit", model=MODEL, wavespeed_conn_id=CONN_ID).expand(
        inputs=[{{"prompt": PROMPT % "legacy", "seed": i}} for i in range({LEGACY})]
    )
    WaveSpeedTaskSensor.partial(task_id="legacy_wait", end_from_trigger=False, **WAIT).expand(
        prediction_id=legacy.output
    )
    WaveSpeedSubmitOperator.partial(
        task_id="legacy_generate", model=MODEL, wait_for_completion=True, deferrable=True, end_from_trigger=False,
        **WAIT,
    ).expand(inputs=[{{"prompt": PROMPT % "legacy-waiting", "seed": i}} for i in range({LEGACY})])
    legacy_single = WaveSpeedSubmitOperator(
        task_id="legacy_single_submit", model=MODEL, wavespeed_conn_id=CONN_ID,
        inputs={{"prompt": "trigger-end {{{{ run_id }}}} legacy-single 0"}},
    )
    WaveSpeedTaskSensor(
        task_id="legacy_single_wait", prediction_id=legacy_single.output, end_from_trigger=False,
        start_from_trigger=False, **WAIT,
    )
'''
# (task_id, map indexes): every task instance of the run
TASKS = {
    "submit": PAIRS,
    "wait": PAIRS,
    "generate": WAITING,
    "single_submit": 0,
    "single_wait": 0,
    "legacy_submit": LEGACY,
    "legacy_wait": LEGACY,
    "legacy_generate": LEGACY,
    "legacy_single_submit": 0,
    "legacy_single_wait": 0,
    "consume": 0,
}
# Task instances that wait on a trigger while the predictions are held (the single sensor from the start).
WAITING_TIS = {"wait": PAIRS, "generate": WAITING, "single_wait": 1, "legacy_wait": LEGACY}
WAITING_TIS |= {"legacy_generate": LEGACY, "legacy_single_wait": 1}
SINGLE_WAIT_RUNS = 0 if triggerer_renders_start_trigger_args() else 1


@pytest.fixture
def trigger_end_dag() -> Iterator[str]:
    path = DAGS / f"{DAG_ID}.py"
    path.write_text(DAG_SOURCE)
    try:
        yield DAG_ID
    finally:
        path.unlink(missing_ok=True)


def _map_indexes(task_id: str) -> list[int]:
    return list(range(TASKS[task_id])) if TASKS[task_id] else [-1]


def worker_runs(deployment: Deployment, run_id: str, task_id: str, map_index: int) -> int:
    """Runs of the task instance in a worker: each parses the DAG and logs it in its attempt's log file."""
    directory = deployment.task_log_dir(DAG_ID, run_id, task_id, map_index)
    logs = [path for path in directory.glob("attempt=*.log") if ".trigger." not in path.name]
    return sum(len(re.findall(r'"event":\s*"DAG bundles loaded', path.read_text(errors="replace"))) for path in logs)


def trigger_log(deployment: Deployment, run_id: str, task_id: str, map_index: int) -> str:
    directory = deployment.task_log_dir(DAG_ID, run_id, task_id, map_index)
    return "\n".join(path.read_text(errors="replace") for path in sorted(directory.glob("attempt=*.log.trigger.*.log")))


def end_line_logged(deployment: Deployment, run_id: str, task_id: str, map_index: int, prediction_id: str) -> bool:
    """Whether the trigger logged that it ends the task: in its task's trigger log, else in a triggerer's own log.

    A trigger's lines and its end reach the triggerer's supervisor on two channels. When the end is
    handled first, the supervisor has closed that trigger's log file and writes the lines that come
    after to its own log (Airflow 3.0.6 to 3.3.2: ``TriggerRunnerSupervisor._handle_request`` pops the
    trigger's ``logger_cache`` entry): the user finds them there.
    """
    line = f"WaveSpeed prediction {prediction_id} completed with"
    logs = [trigger_log(deployment, run_id, task_id, map_index)]
    logs += [path.read_text(errors="replace") for path in deployment.airflow.log_dir.glob("triggerer-*.log")]
    return any(
        line in text and "the task ends here, in the triggerer" in text.split(line, 1)[1].split("\n", 1)[0]
        for text in logs
    )


def xcom(deployment: Deployment, run_id: str, task_id: str, map_index: int, key: str = "return_value") -> Any:
    """The XCom as stored in PostgreSQL (the form a downstream task's xcom_pull receives)."""
    rows = deployment.pg.query(
        "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index = %s AND key = %s",
        (DAG_ID, run_id, task_id, map_index, key),
    )
    return rows[0][0] if rows else None


def _wait_all_deferred(deployment: Deployment, run_id: str) -> None:
    total = sum(WAITING_TIS.values())
    deployment.wait_deferred(DAG_ID, run_id, total, timeout=240)
    # The scheduler has processed each worker's deferral exit before any trigger fires (Airflow's
    # defer/resume race, apache/airflow#72716); the single sensor never ran in a worker.
    for task_id, count in WAITING_TIS.items():
        if task_id != "single_wait" or SINGLE_WAIT_RUNS:
            deployment.wait_settled(DAG_ID, run_id, task_id, count, timeout=120)


def test_waits_end_in_the_triggerer_with_no_second_worker_run(deployment: Deployment, trigger_end_dag: str) -> None:
    control = deployment.control
    deployment.reset_emulator()
    control.hold()  # every prediction runs until every waiting task is deferred
    control.set_outcome("failed", error=FAILURE, prompt_contains=f" pair {FAILING_PAIR}", code=5000)
    run_id = deployment.trigger(DAG_ID)
    started = time.monotonic()
    _wait_all_deferred(deployment, run_id)
    # The single sensor waited in the triggerer without ever running in a worker (Airflow 3.3+;
    # before, it polls once in a worker and defers, as the mapped ones do).
    assert worker_runs(deployment, run_id, "single_wait", -1) == SINGLE_WAIT_RUNS
    assert worker_runs(deployment, run_id, "legacy_single_wait", -1) == 1
    control.release()
    result = deployment.finish(DAG_ID, run_id, timeout=120, started=started)

    runs = {
        (task_id, index): worker_runs(deployment, run_id, task_id, index)
        for task_id in TASKS
        for index in _map_indexes(task_id)
    }
    per_generation = {
        "submit + mapped sensor": (_sum(runs, "submit") + _sum(runs, "wait")) / PAIRS,
        "waiting submit": _sum(runs, "generate") / WAITING,
        "submit + sensor started in the triggerer": _sum(runs, "single_submit") + _sum(runs, "single_wait"),
        "before: submit + mapped sensor": (_sum(runs, "legacy_submit") + _sum(runs, "legacy_wait")) / LEGACY,
        "before: waiting submit": _sum(runs, "legacy_generate") / LEGACY,
        "before: submit + sensor": _sum(runs, "legacy_single_submit") + _sum(runs, "legacy_single_wait"),
    }
    print(
        f"\ntrigger end: run {result.seconds:.0f} s; worker runs per generation: "
        + ", ".join(f"{name} {value:g}" for name, value in per_generation.items())
    )
    _assert_states(result)

    # Worker runs: the submit's only, plus one sensor run that polls once and defers (a mapped
    # sensor cannot start in the triggerer); today's designs resume in a worker once more.
    expected = {"submit": 1, "wait": 1, "generate": 1, "single_submit": 1, "single_wait": SINGLE_WAIT_RUNS}
    expected |= {"legacy_submit": 1, "legacy_wait": 2, "legacy_generate": 2}
    expected |= {"legacy_single_submit": 1, "legacy_single_wait": 2, "consume": 1}
    # The failing pair's sensor resumes in a worker to fail there: failures are the worker's.
    failing = {("wait", FAILING_PAIR): 2}
    assert runs == {(task_id, index): failing.get((task_id, index), expected[task_id]) for task_id, index in runs}, runs
    assert per_generation == {
        "submit + mapped sensor": (2 * PAIRS + 1) / PAIRS,
        "waiting submit": 1,
        "submit + sensor started in the triggerer": 1 + SINGLE_WAIT_RUNS,
        "before: submit + mapped sensor": 3,
        "before: waiting submit": 2,
        "before: submit + sensor": 3,
    }

    # The XCom is what the worker would have stored: the same dict, in the same stored form.
    for task_id, index in [(t, i) for t in ("wait", "generate", "single_wait") for i in _map_indexes(t)]:
        if (task_id, index) == ("wait", FAILING_PAIR):
            continue
        value = xcom(deployment, run_id, task_id, index)
        assert isinstance(value, dict), f"{task_id}[{index}] return value stored as {type(value).__name__}: {value!r}"
        assert value["status"] == "completed" and value["outputs"], value
        assert end_line_logged(deployment, run_id, task_id, index, value["id"]), trigger_log(
            deployment, run_id, task_id, index
        )[-2000:]
    for task_id, legacy_id in (("wait", "legacy_wait"), ("generate", "legacy_generate")):
        # Same keys, same types as the worker's return value of the same design.
        ended, resumed = xcom(deployment, run_id, task_id, 0), xcom(deployment, run_id, legacy_id, 0)
        assert _shape(ended) == _shape(resumed), (ended, resumed)
    for index in range(PAIRS):
        prediction_id = xcom(deployment, run_id, "submit", index)
        if index != FAILING_PAIR:
            assert xcom(deployment, run_id, "wait", index)["id"] == prediction_id
    for index in range(WAITING):  # the waiting submit pushed its prediction id at the submit, as before
        assert (
            xcom(deployment, run_id, "generate", index, "prediction_id")
            == xcom(deployment, run_id, "generate", index)["id"]
        )
    # A downstream task receives the dicts (through the Execution API, as any task pulls them).
    ids = [xcom(deployment, run_id, "single_wait", -1)["id"]] + [
        xcom(deployment, run_id, "generate", index)["id"] for index in range(WAITING)
    ]
    assert xcom(deployment, run_id, "consume", -1) == ids

    # The failed prediction failed its sensor in a worker (resumed once), with the API's message in its log.
    failed_id = xcom(deployment, run_id, "submit", FAILING_PAIR)
    log = deployment.task_log(DAG_ID, run_id, "wait", FAILING_PAIR)
    assert FAILURE in log and failed_id in log and "ended 'failed'" in log, log[-3000:]
    assert "here, in the triggerer" not in log
    assert xcom(deployment, run_id, "wait", FAILING_PAIR) is None
    assert {ti["try_number"] for ti in result.of("wait")} == {1}

    # Nothing was submitted twice.
    counters = control.counters()
    submitting = ("submit", "generate", "single_submit", "legacy_submit", "legacy_generate", "legacy_single_submit")
    assert counters["submissions"] == {"wavespeed-ai/flux-dev": sum(len(_map_indexes(t)) for t in submitting)}


def _sum(runs: dict[tuple[str, int], int], task_id: str) -> int:
    return sum(count for (task, _), count in runs.items() if task == task_id)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value[:1]]
    return type(value).__name__


def _assert_states(result: RunResult) -> None:
    for task_id in TASKS:
        expected = {"success": len(_map_indexes(task_id))}
        if task_id == "wait":
            expected = {"success": PAIRS - 1, "failed": 1}
        result.assert_states(task_id, expected)
