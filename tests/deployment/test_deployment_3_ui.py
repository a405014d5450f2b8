"""The Airflow UI's connection form in a real browser: Debian's headless Chromium, driven by Playwright."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
from typing import Any

import pytest
from deployment_harness import REPO, Deployment, missing_piece

pytestmark = pytest.mark.deployment

UI_CONN_ID = "wavespeed_ui"  # must match dags/wsdeploy_ui_connection.py
SCREENSHOT = REPO / "docs" / "connection-form.png"
# Chromium as root in a sandbox-less container, with nothing that calls home (the network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def _chromium() -> str:
    path = os.environ.get("WAVESPEED_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing_piece("Chromium not found (Debian package chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing_piece("Python package playwright not installed")
    assert path is not None
    return path


def _extra_field(page: Any, label: str) -> Any:
    """Return an extra field's input by its label.

    Airflow 3.2+ build the field from the provider metadata and label it; 3.0/3.1 from the hook's
    wtforms fields, a text box in a group that starts with the label's text, not tied to it.
    """
    in_group = page.get_by_role("group").filter(has_text=re.compile(f"^{re.escape(label)}")).get_by_role("textbox")
    return page.get_by_label(label).or_(in_group)


def test_connection_form_in_a_browser_saves_a_connection_the_hook_resolves(deployment: Deployment) -> None:
    chromium = _chromium()
    from playwright.sync_api import expect, sync_playwright

    airflow = deployment.airflow
    assert deployment.emulator is not None
    shot = airflow.home / "connection-form.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{airflow.url}/connections", wait_until="networkidle")
            page.get_by_role("button", name="Add Connection").click()
            page.get_by_label("Connection ID").fill(UI_CONN_ID)
            page.get_by_role("combobox").fill("WaveSpeed")
            page.get_by_role("option", name="WaveSpeed", exact=True).click()

            api_key = page.get_by_label("API Key")
            base_url = page.get_by_label("Base URL")
            expect(api_key).to_have_attribute("type", "password")  # masked
            expect(base_url).to_have_attribute("placeholder", "https://api.wavespeed.ai")
            expect(base_url).to_have_value("")
            api_key.fill(deployment.api_key)
            expect(api_key).to_have_attribute("type", "password")  # still masked once typed
            page.screenshot(path=str(shot))

            base_url.fill(deployment.emulator.url)
            page.get_by_role("button", name="Extra Fields", exact=True).click()
            expect(_extra_field(page, "Account tier")).to_be_visible()  # the tier choice, left unset here
            _extra_field(page, "Max submissions per minute").fill("30")
            page.get_by_role("button", name="Save").click()
            expect(page.get_by_role("dialog")).to_have_count(0)
            expect(page.get_by_text(UI_CONN_ID, exact=True)).to_be_visible()
        finally:
            browser.close()
    if os.environ.get("WAVESPEED_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    saved = airflow.api("GET", f"connections/{UI_CONN_ID}")
    assert saved["conn_type"] == "wavespeed"
    assert saved["host"] == deployment.emulator.url
    assert saved["password"] != deployment.api_key  # the API shows it masked
    # What the form's Test button posts (Airflow 3.1+; 3.0 has the endpoint, not the button): the
    # api-server runs the hook's test_connection with the form's values, here against the emulator.
    form = {"connection_id": UI_CONN_ID, "conn_type": "wavespeed", "host": deployment.emulator.url}
    tested = airflow.api("POST", "connections/test", json={**form, "password": deployment.api_key})
    assert tested["status"] is True, tested["message"]

    # A real task resolves the connection through the hook, and the key works against the API.
    run_id = deployment.trigger("wsdeploy_ui_connection")
    result = deployment.finish("wsdeploy_ui_connection", run_id, timeout=120)
    result.assert_states("resolve", {"success": 1})
    resolved = airflow.xcom("wsdeploy_ui_connection", run_id, "resolve")
    assert resolved["source"] == f"Airflow connection {UI_CONN_ID!r}"
    assert resolved["base_url"] == deployment.emulator.url
    assert resolved["key_sha256"] == hashlib.sha256(deployment.api_key.encode()).hexdigest()
    assert resolved["max_submissions_per_minute"] == 30
    assert resolved["test_ok"] is True, resolved["test_message"]
