"""Airflow's floor for the throughput benchmark: the mapped designs' shapes with no WaveSpeed code.

What the same DAG costs Airflow when every generation is a wait of the prediction's run time
(``WAVESPEED_THROUGHPUT_DURATION`` seconds, default 20) in Airflow's own ``DateTimeTrigger``, so
``python -m benchmarks throughput`` can set each mapped design beside the least Airflow spends on
its shape. Nothing here submits (the emulator's log stays empty) and nothing imports this provider:
this file is its own, because a task parses the file its DAG is in, and the floor must not pay for
importing our modules.

- ``wavespeed_throughput_floor_sensor`` (beside ``wavespeed_throughput_sensor``): a mapped task group
  per generation, an ``@task`` that returns a string (standing in for the prediction id), then
  :class:`FloorWaitOperator` waiting for it; the same ``weight_rule``.
- ``wavespeed_throughput_floor_waiting_submit`` (beside ``wavespeed_throughput_waiting_submit``): one
  mapped :class:`FloorWaitOperator` per generation.

Each wait has the retries ``WaveSpeedTaskSensor`` takes by default (2, 30 s apart): Airflow's scheduler
may fail a task resumed within seconds of its deferral (apache/airflow#72716; short waits on a busy
machine, e.g. ``--smoke``'s 5 s), which a retry covers, for the floor as for the sensor.

N and ``WAVESPEED_THROUGHPUT_DAGS`` as in ``wavespeed_throughput.py``; input ``i`` is the same
``{"prompt": "throughput image <i>"}``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import DAG, BaseOperator, task, task_group

N = int(os.environ.get("WAVESPEED_THROUGHPUT_N", "1000"))
DURATION = float(os.environ.get("WAVESPEED_THROUGHPUT_DURATION", "20"))
WANTED = {name.strip() for name in os.environ.get("WAVESPEED_THROUGHPUT_DAGS", "").split(",") if name.strip()}
INPUTS = [{"prompt": f"throughput image {index}"} for index in range(N)]
RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=30)}  # as WaveSpeedTaskSensor's default
DAG_ARGS = {  # as wavespeed_throughput.py's
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "max_active_tasks": 4096,
    "tags": ["wavespeed", "benchmark", "throughput", "floor"],
}


class FloorWaitOperator(BaseOperator):
    """A generation's wait with nothing to wait for: defers to ``DateTimeTrigger`` for ``seconds``, resumes here.

    ``execute_complete`` returns ``prediction_id`` (or the prompt of ``inputs``), as a wait returns its result.
    """

    template_fields = ("prediction_id", "inputs")

    def __init__(
        self, *, seconds: float, prediction_id: str = "", inputs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds
        self.prediction_id = prediction_id
        self.inputs = inputs or {}

    def execute(self, context: Any) -> None:
        moment = pendulum.now("UTC") + timedelta(seconds=self.seconds)
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> str:
        return str(self.prediction_id or self.inputs.get("prompt", ""))


if not WANTED or "wavespeed_throughput_floor_sensor" in WANTED:
    with DAG(dag_id="wavespeed_throughput_floor_sensor", default_args={"weight_rule": "upstream"}, **DAG_ARGS):  # type: ignore[arg-type]

        @task
        def generate(inputs: dict[str, str]) -> str:
            return "floor-" + inputs["prompt"].rpartition(" ")[2]

        @task_group(group_id="generation")
        def generation(inputs: dict[str, str]) -> None:
            FloorWaitOperator(task_id="wait", seconds=DURATION, prediction_id=generate(inputs), **RETRIES)  # type: ignore[arg-type]

        generation.expand(inputs=INPUTS)

if not WANTED or "wavespeed_throughput_floor_waiting_submit" in WANTED:
    with DAG(dag_id="wavespeed_throughput_floor_waiting_submit", **DAG_ARGS):  # type: ignore[arg-type]
        FloorWaitOperator.partial(task_id="generate", seconds=DURATION, **RETRIES).expand(inputs=INPUTS)
