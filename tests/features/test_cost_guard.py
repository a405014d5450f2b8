"""The cost guard: max_cost_usd and min_balance_usd refuse before any submission."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowFailException
from feature_helpers import FEATURE_DAGS, load_dag, run_dag, task_states

from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"  # the emulator charges 0.003 USD per image
DAG_FILE = FEATURE_DAGS / "wavespeed_feature_dags.py"


def _run(conf: dict[str, Any]) -> dict[str, str]:
    dag = load_dag(DAG_FILE, "wavespeed_feature_cost_guard")
    return task_states(run_dag(dag, run_conf=conf))


def test_over_budget_is_refused_without_a_submission(airflow_db: Path, wavespeed_connection: WaveSpeedEmulator) -> None:
    states = _run({"inputs": {"prompt": "four lanterns", "num_images": 4}, "max_cost_usd": 0.01})
    assert states == {"submit": "failed"}
    counters = wavespeed_connection.counters()
    assert counters["submissions"] == {}
    assert "submit" not in counters["requests"]
    assert counters["requests"]["pricing"] == 1


def test_the_price_of_these_inputs_decides(airflow_db: Path, wavespeed_connection: WaveSpeedEmulator) -> None:
    # One image (0.003) fits where four (0.012) did not.
    states = _run({"inputs": {"prompt": "one lantern", "num_images": 1}, "max_cost_usd": 0.01})
    assert states == {"submit": "success"}
    assert wavespeed_connection.counters()["submissions"] == {FLUX: 1}


def test_a_low_balance_is_refused_without_a_submission(
    airflow_db: Path, wavespeed_connection: WaveSpeedEmulator
) -> None:
    wavespeed_connection.set_balance(0.5)
    assert _run({"min_balance_usd": 1}) == {"submit": "failed"}
    counters = wavespeed_connection.counters()
    assert counters["submissions"] == {} and "submit" not in counters["requests"]
    assert counters["requests"]["balance"] == 1

    wavespeed_connection.set_balance(5)
    assert _run({"min_balance_usd": 1, "max_cost_usd": 0.01}) == {"submit": "success"}
    assert wavespeed_connection.counters()["submissions"] == {FLUX: 1}


def test_refusals_say_what_and_why(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_price(2.5, model="wavespeed-ai/wan-2.1/t2v-480p")
    video = WaveSpeedSubmitOperator(task_id="video", model="x/y", inputs={}, max_cost_usd="1")
    with pytest.raises(AirflowFailException) as info:
        video.check_budget("wavespeed-ai/wan-2.1/t2v-480p", {"prompt": "waves"})
    message = str(info.value)
    assert "2.5000 USD" in message and "max_cost_usd=1.0000" in message and "nothing was submitted" in message

    wavespeed_connection.set_balance(3)
    broke = WaveSpeedSubmitOperator(task_id="broke", model="x/y", inputs={}, min_balance_usd=10)
    with pytest.raises(AirflowFailException, match=r"balance is 3\.0000 USD, below min_balance_usd=10\.0000"):
        broke.check_budget(FLUX, {"prompt": "a"})
    assert wavespeed_connection.counters()["submissions"] == {}


@pytest.mark.parametrize("budget", ["lots", "-1", "nan"])
def test_a_budget_that_is_not_a_number_is_refused(wavespeed_connection: WaveSpeedEmulator, budget: str) -> None:
    operator = WaveSpeedSubmitOperator(task_id="t", model="x/y", inputs={}, max_cost_usd=budget)
    with pytest.raises(AirflowFailException, match="max_cost_usd must be a non-negative number"):
        operator.check_budget(FLUX, {"prompt": "a"})
    assert wavespeed_connection.counters()["total_requests"] == 0
