"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_wavespeed import __version__
from airflow_provider_wavespeed.api.defaults import (
    ACCOUNT_TIERS,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_SUBMISSIONS_PER_MINUTE,
)

# The connection form, declared once: Airflow >= 3.2 reads it from here, and
# WaveSpeedHook's get_ui_field_behaviour / get_connection_form_widgets (what 3.0 and 3.1
# read) are built from these same dicts.
CONN_TYPE = "wavespeed"

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port", "extra"],
    "relabeling": {"host": "Base URL", "password": "API Key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your WaveSpeed API key"},
}

_TIER_RATES = ", ".join(f"{name.title()} {rate:,}" for name, rate in ACCOUNT_TIERS.items())

CONN_FIELDS: dict[str, Any] = {
    "account_tier": {
        "label": "Account tier",
        "description": (
            f"Your WaveSpeed account level; submissions are paced to its starts per minute ({_TIER_RATES}). "
            "'custom': the number below. Not set: the number below if given, else "
            f"{DEFAULT_MAX_SUBMISSIONS_PER_MINUTE:g} a minute, slowed down by the API's 429 answers (a Bronze "
            "account's batches still succeed, with many 429s on the way)."
        ),
        # The shape Airflow's own SMTP provider uses for a choice (a drop-down), nullable: not chosen.
        "schema": {"type": ["string", "null"], "enum": [*ACCOUNT_TIERS, "custom"]},
    },
    "max_submissions_per_minute": {
        "label": "Max submissions per minute",
        "description": (
            "With account tier 'custom' (or none): generations started per minute for this account, at most, by "
            "every process on a host together (one budget per host, shared through a file; each host has its "
            "own). Result polls are not counted (no tier limits them); they slow down only when the API answers "
            "429. 0: no budget."
        ),
        "schema": {"type": ["number", "null"]},
    },
    "allow_private_output_urls": {
        "label": "Allow private output URLs",
        "description": (
            "Copy outputs (output_path) from private, loopback and link-local addresses too: only when your "
            "WaveSpeed API is reached through an internal proxy that also serves the output files."
        ),
        "schema": {"type": ["boolean", "null"]},
    },
    "max_output_bytes": {
        "label": "Max output bytes",
        "description": f"The largest output file copied to output_path. Not set: {DEFAULT_MAX_OUTPUT_BYTES:,}.",
        "schema": {"type": ["number", "null"]},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider info dict (validated against Airflow's provider_info.schema.json)."""
    return {
        "package-name": "airflow-provider-wavespeed",
        "name": "WaveSpeed",
        "description": "`WaveSpeedAI <https://wavespeed.ai/>`__ image, video and audio generation API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "WaveSpeed",
                "external-doc-url": "https://wavespeed.ai/docs",
                "tags": ["ai", "genai", "image-generation", "video-generation", "text-to-image", "software"],
            }
        ],
        "hooks": [{"integration-name": "WaveSpeed", "python-modules": ["airflow_provider_wavespeed.hooks.wavespeed"]}],
        "operators": [
            {
                "integration-name": "WaveSpeed",
                "python-modules": [
                    "airflow_provider_wavespeed.operators.wavespeed",
                    "airflow_provider_wavespeed.operators.batch",
                    "airflow_provider_wavespeed.operators.upload",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "WaveSpeed", "python-modules": ["airflow_provider_wavespeed.sensors.wavespeed"]}
        ],
        "triggers": [
            {
                "integration-name": "WaveSpeed",
                "python-modules": [
                    "airflow_provider_wavespeed.triggers.wavespeed",
                    "airflow_provider_wavespeed.triggers.batch",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_wavespeed.hooks.wavespeed.WaveSpeedHook",
                "hook-name": "WaveSpeed",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "extra-links": [
            "airflow_provider_wavespeed.links.WaveSpeedModelLink",
            "airflow_provider_wavespeed.links.WaveSpeedPredictionLink",
        ],
    }
