#!/usr/bin/env bash
# The main job: set everything up, then run the content pipeline DAG in a real Airflow
# (api-server, scheduler, dag-processor, triggerer) against the local WaveSpeed emulator,
# or against the real API when WAVESPEED_API_KEY is set. Extra arguments go to
# scripts/run_pipeline.py (e.g. --keep-running to browse the Airflow UI afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/airflow" ]; then
  echo "Creating $VENV with the newest Airflow 3 and this provider (about a minute) ..."
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi
"$VENV/bin/pip" install --quiet "apache-airflow>=3.0,<4" -e ".[testing]"
exec "$VENV/bin/python" scripts/run_pipeline.py "$@"
