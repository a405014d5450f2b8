"""What Airflow's scheduler checks before it starts a WaveSpeedTaskSensor (its serialized dependencies)."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed._compat import sensor_flag_only_for_reschedule
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor

try:  # Airflow 3.3+
    from airflow.serialization.serialized_objects import DagSerialization as Serializer
except ImportError:  # Airflow 3.0-3.2 (remove with 3.2's support)
    from airflow.serialization.serialized_objects import SerializedDAG as Serializer  # type: ignore[no-redef]


def _scheduled_deps() -> dict[str, set[str]]:
    """The dependency classes of each sensor as the scheduler reads them back from the serialized DAG."""
    with DAG(dag_id="deps", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:

        @task_group(group_id="generation")
        def generation(inputs: dict[str, str]) -> None:
            submit = WaveSpeedSubmitOperator(task_id="generate", model="wavespeed-ai/flux-dev", inputs=inputs)
            WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output)  # type: ignore[arg-type]

        generation.expand(inputs=[{"prompt": "a fox"}, {"prompt": "a hen"}])
        WaveSpeedTaskSensor(task_id="deferrable", prediction_id="p1")
        WaveSpeedTaskSensor(task_id="poke", prediction_id="p1", deferrable=False)
        WaveSpeedTaskSensor(task_id="reschedule", prediction_id="p1", deferrable=False, mode="reschedule")
        WaveSpeedTaskSensor.partial(task_id="mapped").expand(prediction_id=["p1", "p2"])
    scheduled = Serializer.from_dict(Serializer.to_dict(dag))
    return {task_id: {type(dep).__name__ for dep in scheduled.get_task(task_id).deps} for task_id in scheduled.task_ids}


@pytest.mark.parametrize("task_id", ["generation.wait", "deferrable", "poke"])
def test_a_sensor_that_never_reschedules_is_not_checked_for_reschedule_requests(task_id: str) -> None:
    deps = _scheduled_deps()[task_id]  # and the scheduler reads the DAG back (3.0-3.2 refuse a false flag)
    # Airflow 3.0-3.2 keep the check, which costs no query for a task not in reschedule mode there.
    assert ("ReadyToRescheduleDep" in deps) is not sensor_flag_only_for_reschedule()
    assert {"TriggerRuleDep", "NotInRetryPeriodDep"} <= deps  # the rest of Airflow's checks stay


def test_reschedule_mode_keeps_the_check_and_airflow_decides_for_a_mapped_sensor() -> None:
    deps = _scheduled_deps()
    assert "ReadyToRescheduleDep" in deps["reschedule"]
    assert "ReadyToRescheduleDep" in deps["mapped"]  # Airflow sets it for every mapped sensor class
