#!/usr/bin/env bash
# The whole test suite, from nothing but python3 and the package registries:
# for the newest Airflow 3.x and the oldest supported (3.0.x), a fresh virtual environment,
# the provider installed in it, ruff + mypy (newest only), and pytest.
#   scripts/test.sh            everything
#   QUICK=1 scripts/test.sh    newest Airflow only, quick suite only (no deployment tier)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"3.* 3.0.*"}
[ -n "${QUICK:-}" ] && AIRFLOW_VERSIONS="3.*"

make_venv() {  # make_venv DIR AIRFLOW_SPEC
  local constraints=()
  [ "$2" = "3.0.*" ] && constraints=(-c scripts/constraints/airflow-3.0.txt)
  rm -rf "$1"
  "$PYTHON" -m venv "$1"
  "$1/bin/pip" install --quiet --upgrade pip
  "$1/bin/pip" install --quiet "apache-airflow==$2" -e ".[dev]" "${constraints[@]}"
  "$1/bin/pip" check
}

first=1
for version in $AIRFLOW_VERSIONS; do
  venv=".venvs/airflow-${version//[*.]/}"
  echo "=== Airflow $version: fresh environment in $venv"
  make_venv "$venv" "$version"
  "$venv/bin/python" -c "import airflow; print('Airflow', airflow.__version__)"
  if [ $first = 1 ]; then
    echo "=== ruff and mypy"
    "$venv/bin/ruff" check .
    "$venv/bin/ruff" format --check .
    "$venv/bin/mypy"
  fi
  echo "=== pytest (Airflow $version)"
  "$venv/bin/python" -m pytest tests -q -p no:cacheprovider -m "not deployment"
  first=0
done
echo "=== all test runs passed"
