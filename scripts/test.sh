#!/usr/bin/env bash
# The whole test suite, from nothing but Python interpreters and the package registries.
# Every Airflow minor the README supports, each in a fresh virtual environment with the provider
# installed, pinned as its user would pin it (scripts/constraints/airflow-<minor>.txt) and on its
# own Python (the README's Compatibility table lists them):
#   Airflow 3.3.x (newest) on python3 (3.11): ruff + mypy, the quick suite (emulator + dag.test()),
#     the README's quick start from the built wheel in a fresh venv, and the real-deployment tier
#     on the LocalExecutor (PostgreSQL, scheduler, two triggerers, browser; Debian packages
#     installed when missing);
#   Airflow 3.0.x on python3 (3.11): the quick suite and the real-deployment scenarios that differ by
#     version (DEPLOYMENT_30_TESTS: the connection form and its test, waits ended in the triggerer,
#     a user's mark-failed while deferred, triggerers stopped and started again);
#   Airflow 3.1.x on python3.12 and 3.2.x on python3.13: the quick suite.
#   bash scripts/test.sh                   all of the above (what CI runs)
#   QUICK=1 bash scripts/test.sh           newest Airflow only, quick suite only
#   TIER=deployment bash scripts/test.sh   newest Airflow only, deployment tier only
#   TIER=all bash scripts/test.sh          everything but the real deployments
#   TIER=release bash scripts/test.sh      the release check (newest Airflow; not in CI, see below)
# Moved out of CI into the release check, to keep CI short on 2 cores with four Airflow
# minors in it: the CeleryExecutor variant of the deployment tier (a second deployment with Redis
# and two Celery workers, ~5 minutes; the provider code it runs is the LocalExecutor's, and nothing
# in the provider depends on the executor) and the two benchmark smoke runs (their figures are
# printed, never asserted, so a CI run could not fail on them).
# To keep CI short, the older Airflows' environments are built (one after the other) while the
# newest one's is, and their quick suites run one after the other, each once its environment is
# built, beside the newest Airflow's deployment tier (whose time is mostly waiting on Airflow and
# the emulator); each background job's output is printed when it ends, and a failed one fails the
# run. The 3.0 deployment runs after the newest one's: one deployment at a time. (Every quick suite
# at once beside the deployment was tried: CI is CPU-bound on 2 cores, so it was no shorter, and
# under that load the deployment tier's start-up took nearly 8 minutes.)
# No Python 3.10: the provider needs apache-airflow-providers-common-compat>=1.23, which needs 3.11.
# An interpreter is taken from PATH, else from pyenv's versions (Debian 12's apt has only 3.11);
# PYTHON=... sets the default one, AIRFLOW_VERSIONS="3.*@python3 3.1.*@python3.12 ..." the list.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS:-"3.*@$PYTHON 3.0.*@$PYTHON 3.1.*@python3.12 3.2.*@python3.13"}
TIER=${TIER:-full}
[ -n "${QUICK:-}" ] && TIER=quick
case "$TIER" in all | full) ;; quick | deployment | release) AIRFLOW_VERSIONS=${AIRFLOW_VERSIONS%% *} ;; *)
  echo "unknown TIER=$TIER"
  exit 2
  ;;
esac
# Quick-suite processes (pytest-xdist): its tests mostly wait on loopback HTTP, so 4 beat 2 cores.
WORKERS=${WORKERS:-4}
# The real-deployment scenarios run on Airflow 3.0 too: what behaves differently there.
DEPLOYMENT_30_TESTS=(
  tests/deployment/test_deployment_3_ui.py
  tests/deployment/test_deployment_5_trigger_end.py
  tests/deployment/test_deployment_8_cancel.py
  tests/deployment/test_deployment_11_triggerer_restart.py
)
CELERY_TESTS=tests/deployment/test_deployment_7_celery.py
LOGS=.venvs/logs
mkdir -p "$LOGS"

find_python() { # find_python NAME: the path of a working interpreter called NAME
  local candidate
  for candidate in "$(command -v "$1" 2>/dev/null)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/"$1"; do
    # A pyenv shim of a version that is not selected is on PATH but does not run: try each.
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c pass 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "=== no $1 interpreter (not on PATH, not in pyenv's versions); set AIRFLOW_VERSIONS to skip it" >&2
  return 1
}

make_venv() { # make_venv DIR AIRFLOW_SPEC PYTHON EXTRAS [MORE PACKAGES...]
  local constraints=() minor=${2%.\*} python
  [ -f "scripts/constraints/airflow-$minor.txt" ] && constraints=(-c "scripts/constraints/airflow-$minor.txt")
  python=$(find_python "$3")
  rm -rf "$1"
  "$python" -m venv "$1"
  "$1/bin/pip" install --quiet --upgrade pip
  "$1/bin/pip" install --quiet "apache-airflow==$2" -e ".[$4]" "${@:5}" "${constraints[@]}"
  "$1/bin/pip" check
  "$1/bin/python" -c "import airflow, sys; print('Airflow', airflow.__version__, 'on Python', sys.version.split()[0])"
}

quick_suite() { # quick_suite VENV
  "$1/bin/python" -m pytest tests -q -p no:cacheprovider -m "not deployment" --ignore=tests/deployment -n "$WORKERS"
}

declare -A JOBS=()
start_job() { # start_job NAME COMMAND...: in the background, output to $LOGS/NAME.log
  echo "=== $1: started in the background (output when it ends)"
  set -m # its own process group, so a failed run stops all of it
  "${@:2}" >"$LOGS/$1.log" 2>&1 &
  JOBS[$1]=$!
  set +m
}
finish_job() { # finish_job NAME: wait for it, print its output, fail the run if it failed
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
stop_jobs() { # on exit: stop what still runs in the background, say where its output is
  for job in "${!JOBS[@]}"; do
    kill -- "-${JOBS[$job]}" 2>/dev/null || true
    echo "=== $job stopped unfinished; its output so far: $LOGS/$job.log"
  done
}
trap stop_jobs EXIT

venv_of() { local spec=${1%@*}; echo ".venvs/airflow-${spec//[*.]/}"; }
read -r -a versions <<<"$AIRFLOW_VERSIONS"
newest=$(venv_of "${versions[0]}")
deploys() { [ "$TIER" = full ] || [ "$TIER" = deployment ] || [ "$TIER" = release ]; }
extras_of() { # extras_of INDEX: the extras (and extra packages) of versions[INDEX]'s environment
  if deploys && { [ "$1" = 0 ] || [[ ${versions[$1]} == 3.0.* && $TIER = full ]]; }; then
    # On Airflow 3.0 the connection form comes from the hook's wtforms fields (the FAB provider's).
    [ "$1" = 0 ] && echo "dev,deployment" || echo "dev,deployment apache-airflow-providers-fab"
  else
    echo dev
  fi
}

# The checks that need no deployment: the quick suite on every version (and the quick start).
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
    wait_built "$venv" "$version" || return 1
    echo "=== quick suite (Airflow $version)"
    quick_suite "$venv"
  done
}
wait_built() { # wait_built VENV VERSION: until build_venvs has built it (it leaves a mark)
  while [ ! -e "$1.ready" ]; do
    [ -e "$1.failed" ] && { echo "=== the Airflow $2 environment could not be built"; return 1; }
    sleep 5
  done
}
unbuilt_failed() { # on build_venvs' exit: every environment it did not build is marked failed
  local version venv
  for version in "${versions[@]:1}"; do
    venv=$(venv_of "$version")
    [ -e "$venv.ready" ] || touch "$venv.failed"
  done
}
build_venvs() { # build_venvs: every older version's environment, one after the other
  local index venv extras
  trap unbuilt_failed EXIT # errexit ends this job at its first failure; its waiters must not wait on
  for index in "${!versions[@]}"; do
    [ "$index" = 0 ] && continue
    venv=$(venv_of "${versions[$index]}")
    read -r -a extras <<<"$(extras_of "$index")"
    echo "=== Airflow ${versions[$index]}: fresh environment in $venv"
    make_venv "$venv" "${versions[$index]%@*}" "${versions[$index]#*@}" "${extras[@]}"
    touch "$venv.ready"
  done
}
for version in "${versions[@]}"; do rm -f "$(venv_of "$version")".{ready,failed}; done

if [ "${#versions[@]}" -gt 1 ]; then
  start_job venvs build_venvs
fi
read -r -a newest_extras <<<"$(extras_of 0)"
echo "=== Airflow ${versions[0]}: fresh environment in $newest"
make_venv "$newest" "${versions[0]%@*}" "${versions[0]#*@}" "${newest_extras[@]}"
echo "=== ruff and mypy"
"$newest/bin/ruff" check .
"$newest/bin/ruff" format --check .
"$newest/bin/mypy"

if [ "$TIER" = release ]; then
  # The release check: what CI leaves out (see the header), on the newest Airflow.
  bash scripts/install-system-deps.sh
  echo "=== CeleryExecutor deployment (Redis, two Celery workers)"
  WAVESPEED_DEPLOYMENT_REQUIRED=1 "$newest/bin/python" -m pytest "$CELERY_TESTS" -q -p no:cacheprovider -m deployment
  echo "=== benchmark smoke run (figures printed, not asserted)"
  "$newest/bin/python" -m benchmarks --smoke
  echo "=== throughput benchmark smoke run (a real deployment; figures printed, not asserted)"
  "$newest/bin/python" -m benchmarks throughput --smoke
  echo "=== all release checks passed"
  exit 0
fi
if [ "$TIER" = full ]; then
  start_job checks checks
else
  checks
fi
if deploys; then
  echo "=== real-deployment tier (Airflow ${versions[0]}; LocalExecutor)"
  bash scripts/install-system-deps.sh
  WAVESPEED_DEPLOYMENT_REQUIRED=1 "$newest/bin/python" -m pytest tests/deployment -q -p no:cacheprovider \
    -m deployment --ignore="$CELERY_TESTS" --durations=20
  for index in "${!versions[@]}"; do
    if [ "$index" != 0 ] && [[ ${versions[$index]} == 3.0.* ]]; then
      venv=$(venv_of "${versions[$index]}")
      wait_built "$venv" "${versions[$index]}"
      echo "=== real-deployment scenarios on Airflow ${versions[$index]}"
      WAVESPEED_DEPLOYMENT_REQUIRED=1 "$venv/bin/python" -m pytest "${DEPLOYMENT_30_TESTS[@]}" -q -p no:cacheprovider \
        -m deployment --durations=10
    fi
  done
fi
for job in "${!JOBS[@]}"; do
  finish_job "$job"
done
echo "=== all test runs passed"
