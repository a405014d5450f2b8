"""WaveSpeedSubmitOperator: submit a generation and, optionally, wait for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowFailException
from airflow.sdk import BaseOperator

from airflow_provider_wavespeed._common import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    airflow_errors,
    default_deferrable,
    prediction_from_event,
    prediction_result,
)
from airflow_provider_wavespeed.api.client import ensure_success
from airflow_provider_wavespeed.api.errors import WaveSpeedError, WaveSpeedPredictionFailedError
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.validation import validate_inputs, validate_model, validate_webhook_url
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.links import WaveSpeedModelLink
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_PREDICTION_ID = "prediction_id"
# A retry of this task submits again. That is what a user's retries are for after a failed
# generation, but never after a lost wait: that prediction may still finish (and was paid).
_WAIT_RETRYABLE: tuple[type[WaveSpeedError], ...] = (WaveSpeedPredictionFailedError,)


class WaveSpeedSubmitOperator(BaseOperator):
    """Submit a WaveSpeed prediction; push its id to XCom, or wait and return it.

    The submit is sent once: a failure that may have created the prediction is not
    retried (neither here nor by Airflow's task retries), so nothing is paid twice.

    Without waiting, the return value is the prediction id (also pushed under the key
    ``prediction_id``), for a :class:`WaveSpeedTaskSensor` downstream. With
    ``wait_for_completion=True`` it waits, deferring to :class:`WaveSpeedTaskTrigger`
    when ``deferrable``, and returns the completed prediction as a dict.

    :param model: The model id, e.g. ``wavespeed-ai/flux-dev`` (templated).
    :param inputs: The model's inputs (templated, nested values too).
    :param wavespeed_conn_id: The WaveSpeed connection id.
    :param webhook: An https URL the API calls when the prediction finishes (templated).
    :param wait_for_completion: Wait for the prediction before the task ends.
    :param deferrable: Wait in the triggerer instead of a worker (default True).
    :param poll_interval: Longest wait between polls, in seconds.
    :param timeout: Seconds to wait for completion.
    """

    template_fields: Sequence[str] = ("model", "inputs", "webhook")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (WaveSpeedModelLink(),)
    ui_color = "#b3e5ff"

    def __init__(
        self,
        *,
        model: str,
        inputs: dict[str, Any] | str,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        webhook: str | None = None,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.inputs = inputs
        self.wavespeed_conn_id = wavespeed_conn_id
        self.webhook = webhook
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout

    @cached_property
    def hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id)

    def submit(self, context: Context) -> Prediction:
        """Validate the rendered arguments, then submit once."""
        with airflow_errors():
            model = validate_model(self.model)
            inputs = validate_inputs(self.inputs)
            webhook = validate_webhook_url(self.webhook) if self.webhook else None
            prediction = self.hook.submit(model, inputs, webhook=webhook)
        self.log.info("Submitted WaveSpeed prediction %s for model %s", prediction.id, model)
        context["ti"].xcom_push(key=XCOM_PREDICTION_ID, value=prediction.id)
        WaveSpeedModelLink.persist(context, model)
        return prediction

    def execute(self, context: Context) -> Any:
        prediction = self.submit(context)
        if not self.wait_for_completion:
            return prediction.id
        if self.deferrable:
            self.defer(
                trigger=WaveSpeedTaskTrigger(
                    prediction_id=prediction.id,
                    wavespeed_conn_id=self.wavespeed_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=time.time() + self.timeout,
                ),
                method_name="execute_complete",
                kwargs={"prediction_id": prediction.id},
                timeout=timedelta(seconds=self.timeout + 60),
            )
        with airflow_errors(_WAIT_RETRYABLE):
            done = self.hook.wait_for_prediction(prediction.id, poll_interval=self.poll_interval, timeout=self.timeout)
        return prediction_result(done)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, prediction_id: str = ""
    ) -> dict[str, Any]:
        """Resume after the trigger: validate the event, fail or return the prediction."""
        prediction = prediction_from_event(event, prediction_id=prediction_id, on_deadline=AirflowFailException)
        with airflow_errors(_WAIT_RETRYABLE):
            ensure_success(prediction)
        self.log.info("WaveSpeed prediction %s completed with %d output(s)", prediction.id, len(prediction.outputs))
        return prediction_result(prediction)
