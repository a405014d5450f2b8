"""WaveSpeedHook: credentials from Airflow connections or WAVESPEED_API_KEY, and the API through it."""

from __future__ import annotations

import json

import pytest

from airflow_provider_wavespeed.api import WaveSpeedConfigError
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "wavespeed", **fields}))


def test_hook_submits_polls_and_returns_outputs(wavespeed_connection: WaveSpeedEmulator) -> None:
    wavespeed_connection.set_duration(0.3)
    hook = WaveSpeedHook()
    prediction = hook.run(FLUX, {"prompt": "a cat"}, poll_interval=0.1, timeout=10)
    assert prediction.is_success and prediction.outputs
    assert hook.get_prediction(prediction.id) == prediction
    assert hook.get_balance() < 100.0  # the emulator charged the generation
    assert wavespeed_connection.counters()["submissions"] == {FLUX: 1}


def test_credentials_come_from_the_named_connection(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_conn(
        monkeypatch,
        "ws_custom",
        host=wavespeed_emulator.url,
        password=wavespeed_emulator.api_key,
        extra={"max_submissions_per_minute": 50},
    )
    creds = WaveSpeedHook("ws_custom").get_credentials()
    assert creds.base_url == wavespeed_emulator.url and creds.max_submissions_per_minute == 50
    assert creds.source == "Airflow connection 'ws_custom'"
    assert wavespeed_emulator.api_key not in repr(creds)


def test_ui_form_extra_names_are_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, "ws_form", password="k", extra={"extra__wavespeed__max_submissions_per_minute": "2.5"})
    creds = WaveSpeedHook("ws_form").get_credentials()
    assert creds.max_submissions_per_minute == 2.5 and creds.base_url == "https://api.wavespeed.ai"


def test_without_a_connection_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVESPEED_API_KEY", "env-key")
    creds = WaveSpeedHook("no_such_connection").get_credentials()
    assert creds.api_key == "env-key" and creds.base_url == "https://api.wavespeed.ai"
    assert "WAVESPEED_API_KEY" in creds.source


def test_without_connection_or_environment_the_error_says_how_to_fix_it() -> None:
    with pytest.raises(WaveSpeedConfigError) as info:
        WaveSpeedHook("no_such_connection").get_credentials()
    assert "no_such_connection" in str(info.value) and "WAVESPEED_API_KEY" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"host": "https://api.wavespeed.ai"}, "no WaveSpeed API key in Airflow connection"),
        ({"password": "   "}, "put your WaveSpeed API key in its password field"),
        ({"host": "http://wavespeed.example.com", "password": "k"}, "clear text"),
        ({"password": "k", "extra": {"max_submissions_per_minute": "fast"}}, "must be a number"),
    ],
)
def test_bad_connections_are_refused_clearly(monkeypatch: pytest.MonkeyPatch, fields: dict, needle: str) -> None:
    _set_conn(monkeypatch, "ws_bad", **fields)
    with pytest.raises(WaveSpeedConfigError) as info:
        WaveSpeedHook("ws_bad").get_credentials()
    assert needle in str(info.value) and "ws_bad" in str(info.value)


def test_a_bare_host_is_refused_with_the_url_to_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # It once meant https silently: against a plain-HTTP emulator that became a TLS error reported as
    # "may have created a paid prediction" (issue 28).
    _set_conn(monkeypatch, "ws_bare", host="api.wavespeed.ai", password="k")
    with pytest.raises(WaveSpeedConfigError, match=r"e\.g\. https://api\.wavespeed\.ai"):
        WaveSpeedHook("ws_bare").get_credentials()


def test_test_connection_reports_balance_and_never_the_key(
    wavespeed_emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_conn(monkeypatch, "ws_ok", host=wavespeed_emulator.url, password=wavespeed_emulator.api_key)
    ok, message = WaveSpeedHook("ws_ok").test_connection()
    assert ok and "100.00 USD" in message
    secret = "sk-live-very-secret-value"
    _set_conn(monkeypatch, "ws_wrong", host=wavespeed_emulator.url, password=secret)
    ok, message = WaveSpeedHook("ws_wrong").test_connection()
    assert not ok and "401" in message and "ws_wrong" in message and secret not in message
    assert secret not in repr(WaveSpeedHook("ws_wrong")) and secret not in repr(WaveSpeedHook("ws_wrong").client)


def test_upload_and_price_through_the_hook(wavespeed_connection: WaveSpeedEmulator) -> None:
    hook = WaveSpeedHook()
    assert hook.upload_media(b"abc", filename="a.txt").startswith(wavespeed_connection.url)
    assert hook.get_price(FLUX, {"prompt": "x"}) > 0


async def test_async_lookup_and_get_prediction(wavespeed_connection: WaveSpeedEmulator) -> None:
    hook = WaveSpeedHook()
    prediction = hook.submit(FLUX, {"prompt": "x"})
    creds = await hook.aget_credentials()
    assert creds.base_url == wavespeed_connection.url
    assert (await hook.aget_prediction(prediction.id)).id == prediction.id


def test_ui_field_behaviour_for_airflow_3_0_and_3_1() -> None:
    behaviour = WaveSpeedHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API Key"}
    assert behaviour["placeholders"]["host"] == "https://api.wavespeed.ai"
    assert {"schema", "login", "port"} <= set(behaviour["hidden_fields"])


def test_provider_info_validates_against_the_installed_airflow_schema() -> None:
    import airflow
    import jsonschema

    from airflow_provider_wavespeed.get_provider_info import get_provider_info

    with open(f"{airflow.__path__[0]}/provider_info.schema.json") as handle:
        jsonschema.validate(get_provider_info(), json.load(handle))


def test_providers_manager_serves_the_connection_form() -> None:
    """What the UI's /ui/connections/hook_meta is built from, read from the installed Airflow."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-wavespeed" in manager.providers
    hook = manager.hooks["wavespeed"]  # what `airflow providers hooks` lists
    assert (
        hook is not None
        and hook.hook_class_name.endswith("WaveSpeedHook")
        and hook.connection_id_attribute_name == "wavespeed_conn_id"
    )
    declarative = hasattr(manager, "_load_ui_metadata")  # Airflow >= 3.2 reads get_provider_info
    try:
        import wtforms  # noqa: F401  # Airflow 3.0/3.1 read hook methods only when wtforms is installed
    except ImportError:
        if not declarative:
            assert "wavespeed" not in manager.field_behaviours  # no provider gets a form there without FAB
            return
    behaviour = manager.field_behaviours["wavespeed"]
    assert behaviour["relabeling"]["password"] == "API Key"
    assert behaviour["placeholders"]["host"] == "https://api.wavespeed.ai"
    assert "login" in behaviour["hidden_fields"]
    assert "extra__wavespeed__max_submissions_per_minute" in manager.connection_form_widgets


def test_api_server_hook_meta_gives_the_ui_the_wavespeed_form(
    airflow_db: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /ui/connections/hook_meta on the real api-server app: what the connection form is built from."""
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", "wavespeed-tests")  # Airflow 3.0 needs one set
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app())
    # All-admins mode: 3.0 and 3.2+ let the request through; 3.1 wants the token it hands out.
    token = client.get("/auth/token")
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"} if token.is_success else {}
    response = client.get("/ui/connections/hook_meta", headers=headers)
    assert response.status_code == 200, response.text[:500]
    meta = next(item for item in response.json() if item["connection_type"] == "wavespeed")
    assert meta["hook_class_name"].endswith("WaveSpeedHook") and meta["hook_name"] == "WaveSpeed"
    from airflow.providers_manager import ProvidersManager

    if not ProvidersManager().field_behaviours.get("wavespeed"):
        return  # Airflow 3.0/3.1 without the FAB provider: no provider gets a custom form (see above)
    fields = meta["standard_fields"]
    assert fields["password"]["title"] == "API Key" and not fields["password"]["hidden"]
    assert fields["host"] == {"hidden": False, "title": "Base URL", "placeholder": "https://api.wavespeed.ai"}
    assert fields["login"]["hidden"] and fields["port"]["hidden"]
    assert meta["extra_fields"]["max_submissions_per_minute"]["schema"]["title"] == "Max submissions per minute"
    tier = meta["extra_fields"]["account_tier"]
    assert tier["schema"]["title"] == "Account tier"
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    if Version(airflow_version).release[:2] >= (3, 2):  # the provider metadata's choice list
        assert tier["schema"]["enum"] == ["bronze", "silver", "gold", "ultra", "custom"]
    else:  # 3.0/3.1 with the FAB provider: the hook's wtforms fields, where providers get no select
        assert "enum" not in tier["schema"]
    assert "Bronze 2" in tier["description"] and "Silver 500" in tier["description"]


def test_airflow_cli_lists_the_provider_and_its_connection_type() -> None:
    import subprocess
    import sys

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "airflow", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "airflow-provider-wavespeed" in cli("providers", "list")
    hooks = [line for line in cli("providers", "hooks").splitlines() if line.startswith("wavespeed ")]
    assert len(hooks) == 1 and "WaveSpeedHook" in hooks[0] and "wavespeed_conn_id" in hooks[0]
