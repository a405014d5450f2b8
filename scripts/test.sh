#!/usr/bin/env bash
# The whole test suite, from nothing but python3 and the package registries:
# for the newest Airflow 3.x and the oldest supported (3.0.x), a fresh virtual environment,
# the provider installed in it, ruff + mypy, and the quick suite (emulator + dag.test()); the
# README's quick start from the built wheel in a fresh venv;
# then, on the newest Airflow, the real-deployment tier (PostgreSQL, scheduler, two triggerers,
# browser; Debian packages installed when missing) and the benchmark smoke runs.
#   bash scripts/test.sh                   everything (what CI runs)
#   QUICK=1 bash scripts/test.sh           newest Airflow only, quick suite only
#   TIER=deployment bash scripts/test.sh   newest Airflow only, deployment tier only
#   TIER=all bash scripts/test.sh          everything but the deployment tier
# To keep CI short on 2 cores, the older Airflow's environment is built while the newest one's is,
# and the quick suites and the trigger-scale smoke run go one after the other beside the deployment
# tier (whose time is mostly waiting on Airflow and the emulator); each background job's output is
# printed when it ends, and a failed one fails the run.
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
stop_jobs() {  # on exit: stop what still runs in the background, say where its output is
  for job in "${!JOBS[@]}"; do
    kill -- "-${JOBS[$job]}" 2>/dev/null || true
    echo "=== $job stopped unfinished; its output so far: $LOGS/$job.log"
  done
}
trap stop_jobs EXIT

venv_of() { echo ".venvs/airflow-${1//[*.]/}"; }
read -r -a versions <<<"$AIRFLOW_VERSIONS"
newest=$(venv_of "${versions[0]}")
extras=dev
{ [ "$TIER" = full ] || [ "$TIER" = deployment ]; } && extras=dev,deployment

# The checks that need no deployment: the quick suite on every version, then the trigger-scale
# benchmark's smoke run (its figures are printed, not asserted, so a shared machine is fine).
checks() {
  if [ "$TIER" != deployment ]; then
    echo "=== quick suite (Airflow ${versions[0]})"
    quick_suite "$newest"
  fi
  if [ "$TIER" = all ] || [ "$TIER" = full ]; then
    # The README's quick start, as a new user follows it: the built wheel (twine-checked) in a fresh
    # venv, the first DAG against the emulator (about a minute with pip's cache warm).
    echo "=== README quick start from the built wheel"
    WAVESPEED_QUICKSTART=1 "$newest/bin/python" -m pytest tests/quickstart -q -p no:cacheprovider -s
  fi
  for version in "${versions[@]:1}"; do
    local venv
    venv=$(venv_of "$version")
    # Built by its own background job, which leaves a mark when it is done.
    while [ ! -e "$venv.ready" ]; do
      [ -e "$venv.failed" ] && { echo "=== the Airflow $version environment could not be built"; return 1; }
      sleep 5
    done
    echo "=== quick suite (Airflow $version)"
    quick_suite "$venv"
  done
  if [ "$TIER" = all ] || [ "$TIER" = full ]; then
    echo "=== benchmark smoke run (figures printed, not asserted)"
    "$newest/bin/python" -m benchmarks --smoke
  fi
}
build_venv() {  # build_venv VERSION: make_venv, then the mark checks() waits for
  local venv
  venv=$(venv_of "$1")
  rm -f "$venv.ready"
  touch "$venv.failed"  # until make_venv has succeeded (errexit ends this job at its first failure)
  make_venv "$venv" "$1" dev
  rm "$venv.failed"
  touch "$venv.ready"
}

for version in "${versions[@]:1}"; do
  start_job "venv-$(basename "$(venv_of "$version")")" build_venv "$version"
done
echo "=== Airflow ${versions[0]}: fresh environment in $newest"
make_venv "$newest" "${versions[0]}" "$extras"
echo "=== ruff and mypy"
"$newest/bin/ruff" check .
"$newest/bin/ruff" format --check .
"$newest/bin/mypy"

if [ "$TIER" = full ]; then
  start_job checks checks
else
  checks
fi
if [ "$TIER" = full ] || [ "$TIER" = deployment ]; then
  echo "=== real-deployment tier (Airflow ${versions[0]}; LocalExecutor, then CeleryExecutor)"
  bash scripts/install-system-deps.sh
  WAVESPEED_DEPLOYMENT_REQUIRED=1 "$newest/bin/python" -m pytest tests/deployment -q -p no:cacheprovider -m deployment --durations=20
fi
for job in "${!JOBS[@]}"; do
  finish_job "$job"
done
if [ "$TIER" = all ] || [ "$TIER" = full ]; then
  echo "=== throughput benchmark smoke run (a real deployment; figures printed, not asserted)"
  "$newest/bin/python" -m benchmarks throughput --smoke
fi
echo "=== all test runs passed"
