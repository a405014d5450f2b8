"""Resolves a connection made in the UI form, inside a real task (as a DAG would use it).

Returns what the hook resolved, with the key only as a SHA-256 digest, and the result of
the hook's connection test against the emulator.
"""

import hashlib

from airflow.sdk import task
from deployment_dag_factory import deployment_dag

from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

UI_CONN_ID = "wavespeed_ui"  # the id the browser test types into the form

with deployment_dag("wsdeploy_ui_connection"):

    @task
    def resolve() -> dict[str, object]:
        hook = WaveSpeedHook(UI_CONN_ID)
        creds = hook.get_credentials()
        ok, message = hook.test_connection()
        return {
            "base_url": creds.base_url,
            "source": creds.source,
            "max_submissions_per_minute": creds.max_submissions_per_minute,
            "key_sha256": hashlib.sha256(creds.api_key.encode()).hexdigest(),
            "test_ok": ok,
            "test_message": message,
        }

    resolve()
