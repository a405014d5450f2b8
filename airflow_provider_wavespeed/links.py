"""Extra link from a generation task to its model's page on wavespeed.ai."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.xcom import BaseXCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey
    from airflow.sdk import BaseOperator

MODEL_PAGE_URL = "https://wavespeed.ai/models/{model}"


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
