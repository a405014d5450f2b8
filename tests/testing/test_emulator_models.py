"""The emulator's model catalog: known ids and their required inputs; unknown ids refused as the API does.

Over real loopback HTTP; the official SDK's view of an unknown id is in test_sdk_conformance.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_wavespeed.api import WaveSpeedClient, WaveSpeedNotFoundError, WaveSpeedSubmitUncertainError
from airflow_provider_wavespeed.testing import EmulatorControl, EmulatorProcess, WaveSpeedEmulator
from airflow_provider_wavespeed.testing._models import CATALOG

FLUX = "wavespeed-ai/flux-dev"
TYPO = "wavespeed-ai/flux-devv"
URL = "https://example.com/a.png"
# What each required input gets in a minimal valid submission.
REQUIRED_VALUES: dict[str, Any] = {"prompt": "a lighthouse", "image": URL, "images": [URL]}
REPO_ROOT = Path(__file__).resolve().parents[2]


class Api:
    """A tiny authenticated client, so tests read like API calls."""

    def __init__(self, url: str, key: str) -> None:
        self.base = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def submit(self, model: str, inputs: dict[str, Any]) -> requests.Response:
        return self.session.post(f"{self.base}/api/v3/{model}", json=inputs)

    def price(self, model: str) -> requests.Response:
        return self.session.post(f"{self.base}/api/v3/model/pricing", json={"model_id": model, "inputs": {}})

    def balance(self) -> float:
        return float(self.session.get(f"{self.base}/api/v3/balance").json()["data"]["balance"])


@pytest.fixture
def api(emulator: WaveSpeedEmulator) -> Api:
    return Api(emulator.url, emulator.api_key)


def minimal_inputs(model: str) -> dict[str, Any]:
    return {name: REQUIRED_VALUES[name] for name in CATALOG[model].required}


def assert_refused(response: requests.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["data"] is None and text in body["message"], body


def test_the_catalog_holds_the_models_the_project_uses_each_with_a_source() -> None:
    used = {
        FLUX,  # README, example DAGs, tests, benchmarks
        "wavespeed-ai/wan-2.1/i2v-480p",  # example DAGs, README
        "wavespeed-ai/wan-2.1/t2v-480p",  # tests, API notes
        "wavespeed-ai/wan-2.1/t2v-720p",  # tests/features/test_spend.py
        "wavespeed-ai/flux-kontext-dev",  # API notes
        "bytedance/seedream-v4/edit",  # API notes, tests
    }
    assert used <= set(CATALOG)
    for model, spec in CATALOG.items():
        assert spec.source.startswith(("../shared/wavespeed-api.md", "https://wavespeed.ai/docs/")), model
        assert spec.required, f"{model}: a catalog entry names the inputs the API requires"


@pytest.mark.parametrize("model", sorted(CATALOG))
def test_each_catalog_model_accepts_its_required_inputs_and_refuses_each_missing_one(api: Api, model: str) -> None:
    accepted = api.submit(model, minimal_inputs(model))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["data"]["model"] == model
    for name in CATALOG[model].required:
        inputs = {key: value for key, value in minimal_inputs(model).items() if key != name}
        assert_refused(api.submit(model, inputs), 400, f"Invalid request parameters: {name} is required")


def test_a_misspelled_model_is_refused_like_the_api_charges_nothing_and_creates_nothing(
    emulator: WaveSpeedEmulator, api: Api
) -> None:
    before = api.balance()
    assert_refused(api.submit(TYPO, {"prompt": "a fox"}), 404, f"Model not found: {TYPO}")
    assert_refused(api.price(TYPO), 404, f"Model not found: {TYPO}")
    assert api.balance() == before
    assert emulator.submissions() == [] and emulator.counters()["submissions"] == {}
    assert emulator.counters()["responses"] == {"404": 2, "200": 2}  # the two balance reads


def test_the_models_endpoint_lists_the_catalog_and_registered_models(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.register_model("acme/upscaler", kind="image-to-image", required=["image"])
    listed = {item["model_id"]: item for item in api.session.get(f"{api.base}/api/v3/models").json()["data"]}
    assert set(listed) == {*CATALOG, "acme/upscaler"}
    assert listed[FLUX]["required"] == ["prompt"] and listed[FLUX]["type"] == "text-to-image"
    assert listed["acme/upscaler"]["type"] == "image-to-image" and listed["acme/upscaler"]["required"] == ["image"]


def test_register_model_knows_it_with_its_required_inputs_until_reset(emulator: WaveSpeedEmulator, api: Api) -> None:
    emulator.register_model("acme/upscaler", kind="image-to-image", required=["image"])
    assert_refused(api.submit("acme/upscaler", {"scale": 2}), 400, "image is required")
    assert api.submit("acme/upscaler", {"image": URL, "scale": 2}).status_code == 200  # others are not checked
    emulator.reset()  # a registration made in a test is that test's only
    assert_refused(api.submit("acme/upscaler", {"image": URL}), 404, "Model not found")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "not a model id"},
        {"model": "acme/x", "kind": "text-to-audio"},
        {"model": "acme/x", "required": "prompt"},  # a string is not a list of names
        {"model": "predictions/x"},  # an API route, never a model
    ],
)
def test_invalid_registrations_are_refused(emulator: WaveSpeedEmulator, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        emulator.register_model(**kwargs)
    with EmulatorControl(emulator.url) as control, pytest.raises(ValueError):
        control.register_model(**kwargs)


def test_allow_any_model_accepts_every_id_with_any_inputs_until_reset(emulator: WaveSpeedEmulator, api: Api) -> None:
    with EmulatorControl(emulator.url) as control:
        control.allow_any_model()
    assert api.submit(TYPO, {}).status_code == 200  # no catalog entry: no required inputs either
    assert_refused(api.submit(FLUX, {}), 400, "prompt is required")  # a known model is still checked
    emulator.reset()
    assert_refused(api.submit(TYPO, {}), 404, "Model not found")


def test_start_settings_survive_reset() -> None:
    models = {"acme/clip": "text-to-video"}
    with WaveSpeedEmulator(duration=0.0, allow_any_model=True, models=models) as emulator:
        api = Api(emulator.url, emulator.api_key)
        emulator.reset()
        assert api.submit("someone/anything", {}).status_code == 200
        emulator.allow_any_model(False)
        assert_refused(api.submit("someone/anything", {}), 404, "Model not found")
        assert api.submit("acme/clip", {}).status_code == 200
        emulator.reset()
        assert api.submit("someone/anything", {}).status_code == 200


def test_the_command_line_flags_allow_any_model_and_register_one() -> None:
    with EmulatorProcess("process-key", duration=0.0, models={"acme/clip": "text-to-video"}) as process:
        api = Api(process.url, "process-key")
        created = api.submit("acme/clip", {"prompt": "x"})
        assert created.status_code == 200
        assert process.control.prediction_state(created.json()["data"]["id"])["outputs"][0].endswith(".mp4")
        assert_refused(api.submit(TYPO, {"prompt": "x"}), 404, "Model not found")
    with EmulatorProcess("process-key", duration=0.0, allow_any_model=True) as process:
        assert Api(process.url, "process-key").submit(TYPO, {"prompt": "x"}).status_code == 200
    refused = subprocess.run(
        [sys.executable, "-m", "airflow_provider_wavespeed.testing", "--port", "0", "--model", "acme/x=text-to-audio"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--model acme/x=text-to-audio: the kind must be one of" in refused.stderr
    no_id = subprocess.run(
        [sys.executable, "-m", "airflow_provider_wavespeed.testing", "--port", "0", "--model", "flux dev"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_id.returncode == 2 and "Invalid model id 'flux dev'" in no_id.stderr
    assert "Traceback" not in no_id.stderr


def test_the_pytest_plugin_takes_the_emulator_options_from_an_overridable_fixture(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            pytest_plugins = ["airflow_provider_wavespeed.testing.pytest_plugin"]

            @pytest.fixture(scope="session")
            def wavespeed_emulator_options():
                return {"models": {"acme/upscaler": "image-to-image"}}
            """
        )
    )
    (tmp_path / "test_models.py").write_text(
        textwrap.dedent(
            """
            import requests

            def submit(emulator, model):
                headers = {"Authorization": f"Bearer {emulator.api_key}"}
                return requests.post(f"{emulator.url}/api/v3/{model}", json={"prompt": "x"}, headers=headers)

            def test_registered(wavespeed_emulator):
                assert submit(wavespeed_emulator, "acme/upscaler").status_code == 200

            def test_still_known_after_reset_and_typos_refused(wavespeed_emulator):
                assert submit(wavespeed_emulator, "acme/upscaler").status_code == 200
                assert submit(wavespeed_emulator, "wavespeed-ai/flux-devv").status_code == 404
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_providers_client_reads_an_unknown_model_as_a_refusal_sent_once(emulator: WaveSpeedEmulator) -> None:
    # A refusal, not an uncertain submit: nothing may have been created, so nothing is adopted or resent.
    client = WaveSpeedClient(api_key=emulator.api_key, base_url=emulator.url)
    with pytest.raises(WaveSpeedNotFoundError, match=f"HTTP 404: Model not found: {TYPO}") as raised:
        client.submit(TYPO, {"prompt": "a fox"})
    assert not isinstance(raised.value, WaveSpeedSubmitUncertainError)
    assert emulator.counters()["requests"] == {"submit": 1} and emulator.submissions() == []
