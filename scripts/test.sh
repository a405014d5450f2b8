#!/usr/bin/env bash
# The whole test suite, from nothing but python3 and the package registries:
# for the newest Airflow 3.x and the oldest supported (3.0.x), a fresh virtual environment,
# the provider installed in it, ruff + mypy, and the quick suite (emulator + dag.test());
# then, on the newest Airflow, the real-deployment tier (PostgreSQL, scheduler, two triggerers,
# browser; Debian packages installed when missing) and a benchmark smoke run.
#   bash scripts/test.sh                   everything (what CI runs)
#   QUICK=1 bash scripts/test.sh           newest Airflow only, quick suite only
#   TIER=deployment bash scripts/test.sh   newest Airflow only, deployment tier only
#   TIER=all bash scripts/test.sh          everything but the deployment tier
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"3.* 3.0.*"}
TIER=${TIER:-full}
[ -n "${QUICK:-}" ] && TIER=quick
case "$TIER" in all|full) ;; *) AIRFLOW_VERSIONS="3.*" ;; esac

make_venv() {  # make_venv DIR AIRFLOW_SPEC EXTRAS
  local constraints=()
  [ "$2" = "3.0.*" ] && constraints=(-c scripts/constraints/airflow-3.0.txt)
  rm -rf "$1"
  "$PYTHON" -m venv "$1"
  "$1/bin/pip" install --quiet --upgrade pip
  "$1/bin/pip" install --quiet "apache-airflow==$2" -e ".[$3]" "${constraints[@]}"
  "$1/bin/pip" check
}

newest=""
for version in $AIRFLOW_VERSIONS; do
  venv=".venvs/airflow-${version//[*.]/}"
  extras=dev
  [ -z "$newest" ] && { [ "$TIER" = full ] || [ "$TIER" = deployment ]; } && extras=dev,deployment
  echo "=== Airflow $version: fresh environment in $venv"
  make_venv "$venv" "$version" "$extras"
  "$venv/bin/python" -c "import airflow; print('Airflow', airflow.__version__)"
  if [ -z "$newest" ]; then
    newest=$venv
    echo "=== ruff and mypy"
    "$venv/bin/ruff" check .
    "$venv/bin/ruff" format --check .
    "$venv/bin/mypy"
  fi
  if [ "$TIER" != deployment ]; then
    echo "=== quick suite (Airflow $version)"
    "$venv/bin/python" -m pytest tests -q -p no:cacheprovider -m "not deployment" --ignore=tests/deployment
  fi
done

if [ "$TIER" = full ] || [ "$TIER" = deployment ]; then
  echo "=== real-deployment tier (Airflow ${AIRFLOW_VERSIONS%% *})"
  bash scripts/install-system-deps.sh
  WAVESPEED_DEPLOYMENT_REQUIRED=1 "$newest/bin/python" -m pytest tests/deployment -q -p no:cacheprovider -m deployment
fi
if [ "$TIER" = all ] || [ "$TIER" = full ]; then
  echo "=== benchmark smoke run (figures printed, not asserted)"
  "$newest/bin/python" -m benchmarks --smoke
fi
echo "=== all test runs passed"
