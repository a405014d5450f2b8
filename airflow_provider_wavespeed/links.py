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
# The operator attribute that holds the URLs this run of the task persisted.
_REMEMBERED = "_wavespeed_links"


def start_links(operator: BaseOperator) -> None:
    """Start a run's links empty (call first in ``execute``): it knows every URL it persists."""
    operator.__dict__[_REMEMBERED] = {}


class _StoredLink(BaseOperatorLink):
    """A button whose URL the task stores in XCom when it runs (see :meth:`persist`).

    Airflow's API server reads links from XCom, and what the URL names (the model, the
    prediction) is known only when the task runs: the model id may be templated.

    ``get_link`` is called by the task runner as every run of the task ends (a deferral too), and
    what it returns is stored under the link's key: that is where the URL reaches XCom, one push
    per run, unless the task stores it at once as well (``now``: a run that goes on in the worker
    for long, e.g. a wait there). A run that started the task (:func:`start_links` in ``execute``)
    answers from memory, what it persisted: a task that fails before it submits then does not ask
    for an XCom that does not exist (Airflow logs that at error level). A run that resumes after a
    deferral reads back what the run before it stored.
    """

    url_template: str

    @classmethod
    def persist(cls, context: Any, *, now: bool = True, **fields: str) -> str:
        """Keep the URL for the task runner, which stores it in XCom as this run ends; ``now``: in XCom at once too.

        ``now`` lets the UI show it while the run goes on; for a run about to end (or defer) it would
        be one more execution-API call per link.
        """
        url = cls.url_template.format(**fields)
        if now:
            context["ti"].xcom_push(key=cls().xcom_key, value=url)
        # The task instance's task: the object the task runner asks at the end (on Airflow 3.0 context["task"]
        # is another copy of it).
        context["ti"].task.__dict__.setdefault(_REMEMBERED, {})[cls().xcom_key] = url
        return url

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        remembered = operator.__dict__.get(_REMEMBERED)
        if remembered is not None:
            return str(remembered.get(self.xcom_key, ""))
        value = BaseXCom.get_value(key=self.xcom_key, ti_key=ti_key)  # type: ignore[arg-type]
        return value if isinstance(value, str) else ""


class WaveSpeedModelLink(_StoredLink):
    """The "WaveSpeed model" button: the page of the model the task ran (``persist(context, model=...)``)."""

    name = "WaveSpeed model"
    url_template = MODEL_PAGE_URL


class WaveSpeedPredictionLink(_StoredLink):
    """The "WaveSpeed prediction" button: the prediction the task submitted (``persist(context, prediction_id=...)``).

    A task that resubmits shows its latest prediction.
    """

    name = "WaveSpeed prediction"
    url_template = PREDICTION_PAGE_URL
