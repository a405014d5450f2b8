"""What importing the provider costs the processes that only need its metadata."""

from __future__ import annotations

import subprocess
import sys

import pytest

import airflow_provider_wavespeed.api as api
from airflow_provider_wavespeed.testing import WaveSpeedEmulator


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_provider_info_entry_point_loads_no_http_stack() -> None:
    # Airflow loads every provider's entry point in every process (scheduler, triggerer, each
    # task's supervisor): it must not pay for aiohttp and requests there.
    loaded = _loaded_after(
        "from airflow_provider_wavespeed.get_provider_info import get_provider_info; get_provider_info()"
    )
    assert "airflow_provider_wavespeed.api.defaults" in loaded
    assert not {"aiohttp", "requests", "airflow_provider_wavespeed.api.client"} & loaded


def test_an_error_class_loads_without_the_clients() -> None:
    loaded = _loaded_after("from airflow_provider_wavespeed.api import WaveSpeedError")
    assert "airflow_provider_wavespeed.api.errors" in loaded
    assert "aiohttp" not in loaded


def test_a_task_process_that_submits_and_polls_loads_no_aiohttp(wavespeed_emulator: WaveSpeedEmulator) -> None:
    # A task process imports what its DAG file imports (the operators, the sensor) and sends through
    # requests; aiohttp is the triggerer's (the async client): importing it would cost every worker run
    # ~0.1-0.2 s of CPU (issue 34). A failed exchange of the sync client must not load it either.
    script = f"""
import sys
import airflow_provider_wavespeed.operators.batch
import airflow_provider_wavespeed.operators.wavespeed
import airflow_provider_wavespeed.sensors.wavespeed
from airflow_provider_wavespeed.api import RetryPolicy, WaveSpeedClient, WaveSpeedTransportError

client = WaveSpeedClient({wavespeed_emulator.api_key!r}, {wavespeed_emulator.url!r})
prediction = client.submit("wavespeed-ai/flux-dev", {{"prompt": "a cat"}})
assert client.get_prediction(prediction.id).id == prediction.id
try:
    WaveSpeedClient("key", "http://127.0.0.1:9", retry=RetryPolicy(max_retries=0)).get_prediction("abc")
except WaveSpeedTransportError:
    pass
print(" ".join(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert {"airflow_provider_wavespeed.api.client", "requests"} <= loaded
    assert "aiohttp" not in loaded


@pytest.mark.parametrize("name", api.__all__)
def test_every_public_name_resolves_to_its_module_s_object(name: str) -> None:
    value = getattr(api, name)
    module = value.__module__ if hasattr(value, "__module__") and not isinstance(value, (str, frozenset)) else None
    assert module is None or module.startswith("airflow_provider_wavespeed.api.")
    assert name in dir(api)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'WaveSpeedNope'"):
        api.WaveSpeedNope  # noqa: B018
