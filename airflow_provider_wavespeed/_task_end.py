"""When a wait may end its task in the triggerer: the rules the operators and the trigger share.

A trigger ends its task itself (no worker run for ``execute_complete``) only when the worker
would have nothing left to do but return the completed prediction as a plain ``return_value``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_wavespeed._compat import listeners_registered

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

__all__ = ["NOT_PRICED", "end_in_triggerer_kwargs", "plain_return_value"]

# The cost of a result that waited on a prediction id alone: the API's prediction carries neither a
# price nor the inputs to ask one for (a WaveSpeedSubmitOperator pushes its price as unit_price_usd).
NOT_PRICED: dict[str, Any] = {
    "unit_price_usd": None,
    "cost_usd": None,
    "cost_note": "not priced by this task: the prediction object carries no price nor inputs; the submitting "
    "task's XCom 'unit_price_usd' has its price when it priced it",
}


def plain_return_value(task: Any) -> bool:
    """Whether the task's worker would push its result as one plain ``return_value`` (what the trigger pushes).

    Not with ``do_xcom_push=False`` or ``multiple_outputs``, nor when a mapped task expands over
    the task's output: the worker then records the map length with it.
    """
    iter_dependants = getattr(task, "iter_mapped_dependants", None)
    try:
        mapped_dependant = iter_dependants is not None and next(iter_dependants(), None) is not None
    except RuntimeError:  # not in a DAG (yet): nothing downstream
        mapped_dependant = False
    return (
        bool(getattr(task, "do_xcom_push", True))
        and not getattr(task, "multiple_outputs", False)
        and not mapped_dependant
    )


def end_in_triggerer_kwargs(
    task: BaseOperator, *, enabled: bool, output_path: object, cost: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The trigger kwargs that let it end ``task`` in the triggerer when its prediction completed.

    ``cost``: the cost fields the worker's result would carry (the trigger's ``result_extra``;
    without it, :data:`NOT_PRICED`).

    Only where the worker would have nothing left to do but return the prediction: not when
    outputs are stored (``output_path``: the worker writes them), not with outlets (a task ended by
    its trigger emits no asset events), not when the return value is pushed other than plainly, not
    when plugins registered listeners (Airflow sends them nothing for a task ended there). Failures
    always resume the worker: ending them in the triggerer saved one worker run per failed wait
    (about 1.9 s) and needed Airflow-version checks to keep the worker's retry decision.
    """
    if not enabled or output_path not in (None, "") or task.outlets or not plain_return_value(task):
        return {}
    if listeners_registered():
        return {}
    return {"end_from_trigger": True, **({"result_extra": dict(cost)} if cost is not None else {})}
