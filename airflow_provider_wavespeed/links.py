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


class _StoredLink(BaseOperatorLink):
    """A button whose URL the task stores in XCom when it runs (see :meth:`persist`).

    Airflow's API server reads links from XCom, and what the URL names (the model, the
    prediction) is known only when the task runs: the model id may be templated.
    """

    url_template: str

    @classmethod
    def persist(cls, context: Any, **fields: str) -> str:
        url = cls.url_template.format(**fields)
        context["ti"].xcom_push(key=cls().xcom_key, value=url)
        return url

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = BaseXCom.get_value(key=self.xcom_key, ti_key=ti_key)  # type: ignore[arg-type]
        return value if isinstance(value, str) else ""


class WaveSpeedModelLink(_StoredLink):
    """ "WaveSpeed model" button: the page of the model the task ran (``persist(context, model=...)``)."""

    name = "WaveSpeed model"
    url_template = MODEL_PAGE_URL


class WaveSpeedPredictionLink(_StoredLink):
    """ "WaveSpeed prediction" button: the prediction the task submitted (``persist(context, prediction_id=...)``).

    A task that resubmits shows its latest prediction.
    """

    name = "WaveSpeed prediction"
    url_template = PREDICTION_PAGE_URL
