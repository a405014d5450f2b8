"""The emulator's history made no kinder than the API: entries without inputs, new predictions listed late."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess, WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"


def _submit(url: str, api_key: str, prompt: str) -> str:
    response = requests.post(
        f"{url}/api/v3/{FLUX}", json={"prompt": prompt}, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["id"])


def _history(url: str, api_key: str) -> list[dict[str, Any]]:
    response = requests.post(
        f"{url}/api/v3/predictions",
        json={"page": 1, "page_size": 100},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["items"])


def test_the_history_lists_inputs_until_told_not_to(emulator: WaveSpeedEmulator) -> None:
    prediction_id = _submit(emulator.url, emulator.api_key, "a fox")
    [item] = _history(emulator.url, emulator.api_key)
    assert item["id"] == prediction_id and item["input"] == {"prompt": "a fox"}
    assert emulator.set_history(inputs=False) == {"inputs": False, "lag": 0.0}
    [item] = _history(emulator.url, emulator.api_key)
    assert item["id"] == prediction_id and "input" not in item and "inputs" not in item
    assert item["created_at"] and item["model"] == FLUX  # the documented fields stay
    emulator.reset()
    assert emulator.set_history() == {"inputs": True, "lag": 0.0}  # reset restores the initial settings


def test_a_lag_hides_new_predictions_from_the_history_only(emulator: WaveSpeedEmulator) -> None:
    emulator.set_history(lag=3600.0)
    prediction_id = _submit(emulator.url, emulator.api_key, "late")
    assert _history(emulator.url, emulator.api_key) == []
    assert emulator.prediction_state(prediction_id)["status"]  # the prediction exists, only the listing lags
    assert emulator.set_history(lag=0) == {"inputs": True, "lag": 0.0}
    assert [item["id"] for item in _history(emulator.url, emulator.api_key)] == [prediction_id]


@pytest.mark.parametrize("lag", [-1, float("inf"), "1", True])
def test_a_bad_lag_is_refused(emulator: WaveSpeedEmulator, lag: Any) -> None:
    with pytest.raises(ValueError, match="lag"):
        emulator.set_history(lag=lag)


def test_history_settings_over_http_and_from_the_constructor() -> None:
    with WaveSpeedEmulator(duration=0.0, history_inputs=False, history_lag=3600.0) as emulator:
        control = EmulatorControl(emulator.url)
        _submit(emulator.url, emulator.api_key, "hidden")
        assert _history(emulator.url, emulator.api_key) == []
        assert control.set_history(lag=0.0) == {"inputs": False, "lag": 0.0}
        [item] = _history(emulator.url, emulator.api_key)
        assert "input" not in item
        control.reset()  # back to the constructor's settings
        assert control.set_history() == {"inputs": False, "lag": 3600.0}
        control.close()


def test_history_options_of_the_command_line() -> None:
    with EmulatorProcess("process-key", duration=0.0, history_inputs=False, history_lag=3600.0) as emulator:
        assert emulator.control.set_history() == {"inputs": False, "lag": 3600.0}


def test_a_fault_can_skip_the_first_matching_requests(emulator: WaveSpeedEmulator) -> None:
    emulator.add_fault("submit", "http_error", status=400, skip=1)
    _submit(emulator.url, emulator.api_key, "first passes")
    response = requests.post(
        f"{emulator.url}/api/v3/{FLUX}",
        json={"prompt": "second fails"},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=10,
    )
    assert response.status_code == 400
    _submit(emulator.url, emulator.api_key, "third passes: the fault was used up")
    with pytest.raises(ValueError, match="skip"):
        emulator.add_fault("submit", "drop", skip=-1)
