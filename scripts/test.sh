#!/usr/bin/env bash
# The whole test suite, from nothing but python3 and the package registries:
# for the newest Airflow 3.x and the oldest supported (3.0.x), a fresh virtual environment,
# the provider installed in it, ruff + mypy, and the quick suite (emulator + dag.test());
# then, on the newest Airflow, the real-deployment tier (PostgreSQL, scheduler, two triggerers,
# browser; Debian packages installed when missing) and the benchmark smoke runs.
#   bash scripts/test.sh                   everything (what CI runs)
#   QUICK=1 bash scripts/test.sh           newest Airflow only, quick suite only
#   TIER=deployment bash scripts/test.sh   newest Airflow only, deployment tier only
#   TIER=all bash scripts/test.sh          everything but the deployment tier
# To keep CI short on 2 cores, the older Airflow's environment is built while the newest one's
# tests run, and its quick suite runs beside the deployment tier (whose time is mostly waiting on
# Airflow and the emulator); each background job's output is printed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"3.* 3.0.*"}
TIER=${TIER:-full}
[ -n "${QUICK:-}" ] && TIER=quick
case "$TIER" in all|full) ;; *) AIRFLOW_VERSIONS="3.*" ;; esac
# Quick-suite processes (pytest-xdist): its tests mostly wait on loopback HTTP, so 4 beat 2 cores.
WORKERS=${WORKERS:-4}
LOGS=.venvs/logs
mkdir -p "$LOGS"

make_venv() {  # make_venv DIR AIRFLOW_SPEC EXTRAS
  local constraints=()
  [ "$2" = "3.0.*" ] && constraints=(-c scripts/constraints/airflow-3.0.txt)
  rm -rf "$1"
  "$PYTHON" -m venv "$1"
  "$1/bin/pip" install --quiet --upgrade pip
  "$1/bin/pip" install --quiet "apache-airflow==$2" -e ".[$3]" "${constraints[@]}"
  "$1/bin/pip" check
  "$1/bin/python" -c "import airflow; print('Airflow', airflow.__version__)"
}

quick_suite() {  # quick_suite VENV
  "$1/bin/python" -m pytest tests -q -p no:cacheprovider -m "not deployment" --ignore=tests/deployment -n "$WORKERS"
}

declare -A JOBS=()
start_job() {  # start_job NAME COMMAND...: in the background, output to $LOGS/NAME.log
  echo "=== $1: started in the background (output when it ends)"
  set -m  # its own process group, so a failed run stops all of it
  "${@:2}" >"$LOGS/$1.log" 2>&1 &
  JOBS[$1]=$!
  set +m
}
finish_job() {  # finish_job NAME: wait for it, print its output, fail the run if it failed
  local status=0
  wait "${JOBS[$1]}" || status=$?
  unset "JOBS[$1]"
  echo "=== $1: output"
  cat "$LOGS/$1.log"
  if [ "$status" -ne 0 ]; then
    echo "=== $1 FAILED (exit code $status)"
    exit "$status"
  fi
}
trap 'for pid in "${JOBS[@]}"; do kill -- "-$pid" 2>/dev/null || true; done' EXIT

venv_of() { echo ".venvs/airflow-${1//[*.]/}"; }
read -r -a versions <<<"$AIRFLOW_VERSIONS"
newest=$(venv_of "${versions[0]}")
extras=dev
{ [ "$TIER" = full ] || [ "$TIER" = deployment ]; } && extras=dev,deployment

echo "=== Airflow ${versions[0]}: fresh environment in $newest"
for version in "${versions[@]:1}"; do
  start_job "venv-$(basename "$(venv_of "$version")")" make_venv "$(venv_of "$version")" "$version" dev
done
make_venv "$newest" "${versions[0]}" "$extras"
echo "=== ruff and mypy"
"$newest/bin/ruff" check .
"$newest/bin/ruff" format --check .
"$newest/bin/mypy"
if [ "$TIER" != deployment ]; then
  echo "=== quick suite (Airflow ${versions[0]})"
  quick_suite "$newest"
fi

for version in "${versions[@]:1}"; do
  venv=$(venv_of "$version")
  finish_job "venv-$(basename "$venv")"
  if [ "$TIER" = full ]; then
    start_job "quick-suite-$(basename "$venv")" quick_suite "$venv"
  else
    echo "=== quick suite (Airflow $version)"
    quick_suite "$venv"
  fi
done

if [ "$TIER" = full ] || [ "$TIER" = deployment ]; then
  echo "=== real-deployment tier (Airflow ${versions[0]})"
  bash scripts/install-system-deps.sh
  WAVESPEED_DEPLOYMENT_REQUIRED=1 "$newest/bin/python" -m pytest tests/deployment -q -p no:cacheprovider -m deployment
fi
for job in "${!JOBS[@]}"; do
  [[ $job == quick-suite-* ]] && finish_job "$job"
done
if [ "$TIER" = all ] || [ "$TIER" = full ]; then
  echo "=== benchmark smoke runs (figures printed, not asserted)"
  "$newest/bin/python" -m benchmarks --smoke
  "$newest/bin/python" -m benchmarks throughput --smoke
fi
echo "=== all test runs passed"
