"""Where WaveSpeedTaskSensor starts: in the triggerer (no worker run) where Airflow renders its template there.

Whether the scheduler and triggerer then really start it there is proven in a real deployment
(tests/deployment/test_deployment_5_trigger_end.py); dag.test() always runs ``execute``.
"""

from __future__ import annotations

import importlib
import warnings
from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG, task_group

from airflow_provider_wavespeed._compat import triggerer_renders_start_trigger_args
from airflow_provider_wavespeed.api.defaults import DEFERRAL_GRACE
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

FLUX = "wavespeed-ai/flux-dev"
RENDERS = triggerer_renders_start_trigger_args()  # Airflow 3.3+
only_where_rendered = pytest.mark.skipif(not RENDERS, reason="this Airflow's triggerer does not render templates")


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


def _trigger_from(sensor: WaveSpeedTaskSensor) -> WaveSpeedTaskTrigger:
    """The trigger Airflow's scheduler builds from the sensor's start_trigger_args."""
    args = sensor.start_trigger_args
    assert args is not None
    module, _, name = args.trigger_cls.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**(args.trigger_kwargs or {}))
    assert isinstance(trigger, WaveSpeedTaskTrigger)
    return trigger


def test_the_capability_is_read_from_the_installed_airflow() -> None:
    from airflow.triggers.base import BaseTrigger

    assert hasattr(BaseTrigger, "render_template_fields") == RENDERS


@only_where_rendered
def test_an_unmapped_sensor_of_a_tasks_output_starts_in_the_triggerer() -> None:
    with _dag("start_output"):
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "x"})
        sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output, timeout=900, poll_interval=3)
    assert sensor.start_from_trigger is True
    args = sensor.start_trigger_args
    assert args is not None and args.next_method == "execute_complete"
    # Airflow's backstop; the trigger's own deadline is DEFERRAL_GRACE earlier.
    assert args.timeout == timedelta(seconds=900 + DEFERRAL_GRACE)
    trigger = _trigger_from(sensor)
    # One XCom (map index -1): what the triggerer can read; a pull of every map index blocks its loop.
    assert trigger.prediction_id == "{{ ti.xcom_pull(task_ids='submit', key='return_value', map_indexes=-1) }}"
    assert trigger.timeout == 900.0 and trigger.end_time is None and trigger.poll_interval == 3.0
    assert trigger.end_from_trigger is True  # a completed prediction ends it there; failures resume a worker
    assert list(sensor.upstream_task_ids) == ["submit"]  # the XComArg still sets the dependency


@only_where_rendered
def test_a_template_is_passed_as_is_for_the_triggerer_to_render_when_asked() -> None:
    template = "{{ ti.xcom_pull(task_ids='submit', key='prediction_id', map_indexes=-1) }}"
    with _dag("start_template"):
        asked = WaveSpeedTaskSensor(task_id="asked", prediction_id=template, soft_fail=True, start_from_trigger=True)
        default = WaveSpeedTaskSensor(task_id="default", prediction_id=template)
    trigger = _trigger_from(asked)
    assert trigger.prediction_id == template and trigger.end_from_trigger is True
    assert default.start_from_trigger is False  # a template of the DAG's own: only when asked


@only_where_rendered
def test_a_pull_of_every_map_index_is_refused_there() -> None:
    """Airflow 3.3's triggerer cannot answer it: the render would block its event loop."""
    with _dag("start_sequence"), pytest.warns(UserWarning, match="add map_indexes=-1"):
        sensor = WaveSpeedTaskSensor(
            task_id="wait", prediction_id="{{ ti.xcom_pull(task_ids='submit') }}", start_from_trigger=True
        )
    assert sensor.start_from_trigger is False


@only_where_rendered
def test_a_literal_id_starts_there() -> None:
    with _dag("start_literal"):
        sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id="0123456789abcdef", retries=0)
    trigger = _trigger_from(sensor)
    assert trigger.prediction_id == "0123456789abcdef" and trigger.end_from_trigger is True


def test_opting_out_or_poking_starts_in_a_worker() -> None:
    with _dag("start_opt_out"):
        out = WaveSpeedTaskSensor(task_id="out", prediction_id="abc", start_from_trigger=False)
        poke = WaveSpeedTaskSensor(task_id="poke", prediction_id="abc", deferrable=False)
    assert (out.start_from_trigger, out.start_trigger_args) == (False, None)
    assert (poke.start_from_trigger, poke.start_trigger_args) == (False, None)


def test_asking_where_it_cannot_start_there_warns_and_starts_in_a_worker() -> None:
    with _dag("start_refused"), pytest.warns(UserWarning, match="start_from_trigger=True ignored"):
        sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id="abc", deferrable=False, start_from_trigger=True)
    assert sensor.start_from_trigger is False


@only_where_rendered
def test_output_path_still_starts_there_but_ends_in_the_worker() -> None:
    with _dag("start_store"):
        sensor = WaveSpeedTaskSensor(task_id="wait", prediction_id="abc", output_path="/tmp/out")
    assert sensor.start_from_trigger is True
    assert _trigger_from(sensor).end_from_trigger is False  # the worker stores the outputs


def test_a_mapped_sensor_starts_in_a_worker() -> None:
    """Airflow cannot start a mapped task in the triggerer: the class keeps start_from_trigger off."""
    with _dag("start_mapped"):
        submit = WaveSpeedSubmitOperator.partial(task_id="submit", model=FLUX).expand(inputs=[{"prompt": "x"}])
        wait = WaveSpeedTaskSensor.partial(task_id="wait").expand(prediction_id=submit.output)
    assert WaveSpeedTaskSensor.start_from_trigger is False and WaveSpeedTaskSensor.start_trigger_args is None
    assert wait.start_from_trigger is False and wait.start_trigger_args is None


def test_a_sensor_in_a_mapped_task_group_starts_in_a_worker() -> None:
    sensors: list[WaveSpeedTaskSensor] = []
    with _dag("start_group"), warnings.catch_warnings():
        warnings.simplefilter("error")  # not asked for: no warning, it just starts in a worker

        @task_group(group_id="generate")
        def generate(seed: int) -> None:
            WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "x", "seed": seed})
            sensors.append(WaveSpeedTaskSensor(task_id="wait", prediction_id="0123456789abcdef"))

        generate.expand(seed=[1, 2])
    assert [(s.start_from_trigger, s.start_trigger_args) for s in sensors] == [(False, None)]


@only_where_rendered
def test_the_serialized_dag_keeps_the_start_for_the_scheduler() -> None:
    """What the scheduler reads: the serialized task's start_from_trigger and its trigger kwargs."""
    from airflow.serialization.serialized_objects import DagSerialization

    with _dag("start_serialized") as dag:
        submit = WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "x"})
        WaveSpeedTaskSensor(task_id="wait", prediction_id=submit.output, timeout=300)
    task = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("wait")
    assert task.start_from_trigger is True
    assert task.start_trigger_args.trigger_cls.endswith("WaveSpeedTaskTrigger")
    assert task.start_trigger_args.timeout == timedelta(seconds=300 + DEFERRAL_GRACE)
    assert "prediction_id" in task.template_fields
