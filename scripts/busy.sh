#!/usr/bin/env bash
# Run a command while one CPU core is kept busy by another process, the way a developer's
# laptop or a CI runner is rarely idle; print the command's wall time and exit with its code.
#   bash scripts/busy.sh bash scripts/run-pipeline.sh
#   BUSY_CORES=2 bash scripts/busy.sh bash scripts/test.sh
# The busy loop runs in its own process group and is stopped on any exit (also Ctrl-C).
set -uo pipefail
if [ $# -eq 0 ]; then
  echo "usage: scripts/busy.sh COMMAND [ARG...]" >&2
  exit 2
fi
BUSY_CORES=${BUSY_CORES:-1}

busy_pids=()
stop_busy() {
  local pid
  for pid in "${busy_pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null  # its whole process group
    wait "$pid" 2>/dev/null
  done
  busy_pids=()
}
trap stop_busy EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq "$BUSY_CORES"); do
  # setsid: a new session and process group, so the loop is stopped as a group by its own id.
  # Every 200k turns it checks that this script still lives (kill -0 is a shell builtin, no
  # fork), so even a `kill -9` of busy.sh does not leave it spinning.
  setsid sh -c 'n=0; while :; do n=$((n + 1)); if [ "$n" -ge 200000 ]; then kill -0 "$1" 2>/dev/null || exit 0; n=0; fi; done' busy-loop "$$" &
  busy_pids+=("$!")
done
echo "busy.sh: ${BUSY_CORES} core(s) kept busy by pid(s) ${busy_pids[*]}; running: $*" >&2

start=$EPOCHREALTIME
"$@"
status=$?
end=$EPOCHREALTIME
stop_busy
printf 'busy.sh: exit code %d, wall time %.1f s: %s\n' "$status" "$(awk "BEGIN { print $end - $start }")" "$*" >&2
exit "$status"
