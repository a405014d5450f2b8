#!/usr/bin/env bash
# System packages of the real-deployment test tier (tests/deployment), from Debian:
# PostgreSQL (server binaries; the tier starts its own private cluster, it needs no running
# service), Redis (the CeleryExecutor's broker; the tier starts its own redis-server on a free
# loopback port, it needs no running service) and Chromium (the browser the UI test drives
# with Playwright).
# Idempotent and quiet: installs only what is missing; needs root (or sudo) to install.
set -euo pipefail

missing=()
have_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_postgres || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: need root to install ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
echo "install-system-deps: installing ${missing[*]} from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian's postgresql and redis-server packages start services where an init system runs them;
# the tier uses neither.
