"""What the submit operator spends: the cost guard before a submit, the price its result carries, resubmissions.

A resubmission pays again, so it happens only after a confirmed server-side failure (5xxx), up to
``resubmit_on_server_failure`` times; the predictions one try paid for are listed in XCom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_wavespeed._cost import budget_usd, check_spend, checked_price, cost_fields, guard_errors, log_cost
from airflow_provider_wavespeed._outcome import airflow_error
from airflow_provider_wavespeed.api.errors import WaveSpeedError, WaveSpeedPredictionFailedError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_wavespeed.api.models import Prediction
    from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

# The price of one generation of these inputs, when the task priced them (cost guard, or waiting).
XCOM_UNIT_PRICE = "unit_price_usd"
# Every prediction one try of the task submitted, in order (more than one after a resubmission).
XCOM_PREDICTION_IDS = "prediction_ids"
# A retry of this task submits again. That is what a user's retries are for after a failed
# generation, but never after a lost wait: that prediction may still finish (and was paid).
WAIT_RETRYABLE: tuple[type[WaveSpeedError], ...] = (WaveSpeedPredictionFailedError,)


class SubmitSpend:
    """The cost guard, pricing and resubmission of the submit operator (a mixin of ``WaveSpeedSubmitOperator``)."""

    log: Any
    max_cost_usd: float | str | None
    min_balance_usd: float | str | None
    _unit_price: float | None  # what one generation of these inputs costs, once priced
    _price_note: str
    resubmit_on_server_failure: int
    model: Any

    @property
    def hook(self) -> WaveSpeedHook:
        """The operator's hook."""
        raise NotImplementedError

    def submit(self, context: Context, tried: list[str] | None = None) -> Prediction:
        """Submit once (the operator's)."""
        raise NotImplementedError

    @staticmethod
    def _check_resubmissions(task_id: str, resubmissions: object, wait_for_completion: bool) -> None:
        """Refuse a ``resubmit_on_server_failure`` that is not a whole number >= 0, or without waiting."""
        if not isinstance(resubmissions, int) or resubmissions < 0:
            raise ValueError(
                f"{task_id}: resubmit_on_server_failure must be a whole number >= 0, got {resubmissions!r}"
            )
        if resubmissions and not wait_for_completion:
            raise ValueError(
                f"{task_id}: resubmit_on_server_failure needs wait_for_completion=True (only a "
                "waiting task learns that a prediction failed)"
            )

    def _push_spend(self, context: Context, prediction_id: str, tried: list[str] | None) -> None:
        """Push the price this try noted, and with resubmissions every prediction this try submitted."""
        if self._unit_price is not None:
            context["ti"].xcom_push(key=XCOM_UNIT_PRICE, value=self._unit_price)
        if self.resubmit_on_server_failure:
            context["ti"].xcom_push(key=XCOM_PREDICTION_IDS, value=[*(tried or []), prediction_id])

    def check_budget(self, model: str, inputs: dict[str, Any]) -> None:
        """Apply the cost guard: fail before submitting when over ``max_cost_usd`` or under ``min_balance_usd``.

        Fails closed when the price or the balance cannot be read; keeps the price for the result.
        """
        max_cost = budget_usd(self.max_cost_usd, "max_cost_usd")
        min_balance = budget_usd(self.min_balance_usd, "min_balance_usd")
        if max_cost is not None:
            with guard_errors(model, inputs):
                price = checked_price(self.hook.get_price(model, inputs), model, inputs)
            check_spend(model, [price], max_cost=max_cost, balance=None, min_balance=None)
            self._unit_price = price
            self.log.info("WaveSpeed price %.4f USD is within max_cost_usd %.4f", price, max_cost)
        if min_balance is not None:
            with guard_errors(model):
                balance = self.hook.get_balance()
            check_spend(model, [], max_cost=None, balance=balance, min_balance=min_balance)

    def _price_for_result(self, model: str, inputs: dict[str, Any]) -> None:
        """Price the inputs for the result's cost; a price that cannot be read is noted, never a failure."""
        try:
            self._unit_price = checked_price(self.hook.get_price(model, inputs), model, inputs)
        except WaveSpeedError as exc:
            self._price_note = f"the price could not be read ({exc})"
            self.log.warning("WaveSpeed cost of this generation unknown: %s", self._price_note)

    def _cost(self, context: Context | None) -> dict[str, Any]:
        """Return the result's cost fields: the price this try noted (pushed to XCom: a deferral resumes anywhere)."""
        price = self._unit_price
        if price is None and context is not None:
            ti = context["ti"]
            pulled = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_UNIT_PRICE, map_indexes=ti.map_index)
            price = float(pulled) if isinstance(pulled, (int, float)) and not isinstance(pulled, bool) else None
        if price is None:
            return cost_fields([], unknown=self._price_note)
        return cost_fields([price])

    def _tried(self, context: Context, prediction_id: str) -> list[str]:
        """Return the predictions this try submitted so far (kept in XCom: a deferral may resume anywhere)."""
        if not self.resubmit_on_server_failure:
            return [prediction_id]
        ti = context["ti"]
        tried = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_PREDICTION_IDS, map_indexes=ti.map_index)
        if not isinstance(tried, list) or not tried or tried[-1] != prediction_id:
            return [prediction_id]
        return [str(i) for i in tried]

    def _after_failure(self, context: Context, error: WaveSpeedPredictionFailedError, tried: list[str]) -> Prediction:
        """Submit again after a server-side failure while resubmissions are left; else raise ``error``."""
        if error.is_server_failure and len(tried) <= self.resubmit_on_server_failure:
            self.log.warning(
                "WaveSpeed prediction %s failed on the server's side (code %s): submitting again "
                "(resubmission %d of %d); predictions tried: %s",
                error.prediction_id,
                error.code,
                len(tried),
                self.resubmit_on_server_failure,
                ", ".join(tried),
            )
            return self.submit(context, tried)
        if len(tried) > 1:
            error.args = (f"{error}; predictions tried, in order: {', '.join(tried)}",)
        raise airflow_error(error, WAIT_RETRYABLE) from None

    def _note_spend(self, result: dict[str, Any], prediction: Prediction, tried: list[str]) -> None:
        """Log what the completed generation cost; with resubmissions, add every prediction tried to ``result``."""
        log_cost(self.log, prediction.model or str(self.model), [result["unit_price_usd"]], result)
        if self.resubmit_on_server_failure:
            result["prediction_ids_tried"] = list(tried)
            if len(tried) > 1:
                self.log.info("WaveSpeed generation completed as prediction %s; tried: %s", prediction.id, tried)
