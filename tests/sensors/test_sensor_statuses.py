"""The sensor on the statuses of the real API: `deleted` ends the wait, an unknown status is logged once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pendulum
import pytest
import requests
from airflow.sdk import DAG
from airflow_helpers import dag_test, task_output, ti_states
from scripted_api import ScriptedAPI

from airflow_provider_wavespeed.api.client import WaveSpeedClient
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"


def _dag(request: pytest.FixtureRequest) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"statuses_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
def test_a_deleted_prediction_fails_the_sensor_saying_so(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: Any, deferrable: bool
) -> None:
    wavespeed_connection.hold(times=1)  # processing until deleted
    client = WaveSpeedClient(wavespeed_connection.api_key, wavespeed_connection.url)
    prediction = client.submit(FLUX, {"prompt": "x"})
    response = requests.delete(
        f"{wavespeed_connection.url}/api/v3/predictions/{prediction.id}",
        headers={"Authorization": f"Bearer {wavespeed_connection.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200
    with _dag(request) as dag:
        WaveSpeedTaskSensor(
            task_id="wait",
            prediction_id=prediction.id,
            poll_interval=0.2,
            timeout=600,
            deferrable=deferrable,
            retries=0,
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("wait", -1): "failed"}
    output = task_output(capfd)
    assert f"WaveSpeed prediction {prediction.id}" in output and "was deleted" in output


@pytest.fixture
def future_api() -> Iterator[ScriptedAPI]:
    new = {"id": "abc123", "model": FLUX, "status": "awaiting_gpu_v9"}
    done = {"id": "abc123", "model": FLUX, "status": "completed", "outputs": ["https://x/1.png"]}
    api = ScriptedAPI([new, new, new, done])
    yield api
    api.close()


def test_a_poking_sensor_logs_an_unknown_status_once_and_keeps_waiting(
    future_api: ScriptedAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    connection = {"conn_type": "wavespeed", "host": future_api.url, "password": "k"}
    monkeypatch.setenv("AIRFLOW_CONN_WS_FUTURE", json.dumps(connection))
    sensor = WaveSpeedTaskSensor(
        task_id="wait", prediction_id="abc123", wavespeed_conn_id="ws_future", deferrable=False
    )
    assert [sensor.poke({}) for _ in range(3)] == [False, False, False]
    logged = capsys.readouterr().out  # operators log through Airflow's structlog, to stdout
    assert logged.count("has status 'awaiting_gpu_v9'") == 1 and future_api.polls == 3
