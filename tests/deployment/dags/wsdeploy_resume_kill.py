"""Airflow DAG: one submit whose worker the scenario kills (kill -9) after the submit's answer, before XCom.

A test-only subclass pauses its first try right after the record's "sent" write (the prediction
id is stored, nothing is in XCom yet): the scenario sees that write through the REST API and
kills the task's process there, by state, not by timing. The retry must resume that prediction.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from deployment_dag_factory import CONN_ID, MODEL, PROMPT, deployment_dag

from airflow_provider_wavespeed._submit_record import SubmitRecord
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator

PAUSE = 300.0  # far longer than the scenario takes to see the record and kill the process


class PausingSubmitOperator(WaveSpeedSubmitOperator):
    """The submit operator, its first try held after the "sent" record write (for the kill)."""

    def _record(self, context: Any) -> SubmitRecord:
        record = super()._record(context)
        if context["ti"].try_number == 1:
            put = record.store.put

            def put_then_pause(data: dict[str, Any], *, verify: bool) -> None:
                put(data, verify=verify)
                if data.get("state") == "sent":
                    self.log.info("Test pause: the prediction id is recorded, nothing is in XCom yet")
                    time.sleep(PAUSE)

            record.store.put = put_then_pause  # type: ignore[method-assign]
        return record


with deployment_dag("wsdeploy_resume_kill", retries=1, retry_delay=timedelta(seconds=1)):
    PausingSubmitOperator(
        task_id="submit",
        model=MODEL,
        inputs={"prompt": PROMPT, "seed": 1},
        wavespeed_conn_id=CONN_ID,
        wait_for_completion=True,
        poll_interval=1.0,
        timeout=120,
    )
