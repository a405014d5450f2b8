"""``deferrable`` defaults to True; ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` makes a deployment-wide choice.

The test AIRFLOW_HOME's generated airflow.cfg holds ``default_deferrable = false``, as every generated one
does: that value alone must not turn deferral off. The three waiting tasks run in ``dag.test()`` against
the emulator; each deferral is counted in the task runner's own log line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, task_output, ti_states

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
DEFERRED = "Pausing task as DEFERRED"  # the task runner's line when a task defers (3.0 and 3.3)
pytestmark = pytest.mark.usefixtures("airflow_db")


def test_the_generated_airflow_cfg_says_false(airflow_db: Path) -> None:
    """The premise: Airflow writes ``default_deferrable = false`` into the config it generates."""
    assert re.search(r"^default_deferrable = false$", (airflow_db / "airflow.cfg").read_text(), re.MULTILINE)


@pytest.mark.parametrize(("env", "deferrals"), [(None, 3), ("false", 0), ("False", 0), ("true", 3)])
def test_the_deployment_wide_choice(
    wavespeed_connection: WaveSpeedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    env: str | None,
    deferrals: int,
) -> None:
    if env is None:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", env)
    wavespeed_connection.hold(polls=1)  # each first look sees it running: a deferrable task defers
    prediction_id = WaveSpeedHook().submit(FLUX, {"prompt": "sensed"}).id
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"deferrable_{request.node.name}")
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate", model=FLUX, inputs={"prompt": "waited"}, wait_for_completion=True, poll_interval=0.2
        )
        WaveSpeedTaskSensor(task_id="wait", prediction_id=prediction_id, poll_interval=0.2)
        WaveSpeedBatchOperator(task_id="batch", model=FLUX, inputs=[{"prompt": "batched"}], poll_interval=0.2)
    assert {task.deferrable for task in dag.tasks} == {deferrals > 0}  # type: ignore[attr-defined]
    capfd.readouterr()
    run = dag_test(dag)
    assert set(ti_states(run).values()) == {"success"}
    assert task_output(capfd).count(DEFERRED) == deferrals
