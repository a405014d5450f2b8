"""Extra links from a generation task to wavespeed.ai: its model's page and its prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.xcom import BaseXCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey
    from airflow.sdk import BaseOperator

MODEL_PAGE_URL = "https://wavespeed.ai/models/{model}"
# WaveSpeed documents one web page for predictions, the account's list (wavespeed.ai/predictions),
# and no page per prediction: the link opens that list with the prediction's id in the query.
PREDICTION_PAGE_URL = "https://wavespeed.ai/predictions?id={prediction_id}"


class WaveSpeedModelLink(BaseOperatorLink):
    """ "WaveSpeed model" button: the page of the model the task ran.

    The URL is stored in XCom when the task runs (see :meth:`persist`), because the
    API server reads links from XCom and the model id may be templated.
    """

    name = "WaveSpeed model"

    @classmethod
    def persist(cls, context: Any, model: str) -> str:
        url = MODEL_PAGE_URL.format(model=model)
        context["ti"].xcom_push(key=cls().xcom_key, value=url)
        return url

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = BaseXCom.get_value(key=self.xcom_key, ti_key=ti_key)  # type: ignore[arg-type]
        return value if isinstance(value, str) else ""


class WaveSpeedPredictionLink(BaseOperatorLink):
    """ "WaveSpeed prediction" button: the prediction the task submitted, on wavespeed.ai.

    Stored in XCom when the task submits (see :meth:`persist`): Airflow's API server shows the
    URL stored under the link's XCom key. A task that resubmits shows its latest prediction.
    """

    name = "WaveSpeed prediction"

    @classmethod
    def persist(cls, context: Any, prediction_id: str) -> str:
        url = PREDICTION_PAGE_URL.format(prediction_id=prediction_id)
        context["ti"].xcom_push(key=cls().xcom_key, value=url)
        return url

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = BaseXCom.get_value(key=self.xcom_key, ti_key=ti_key)  # type: ignore[arg-type]
        return value if isinstance(value, str) else ""
