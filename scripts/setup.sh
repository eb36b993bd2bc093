#!/usr/bin/env bash
# Installs everything the program and its tests need on a fresh machine: the Python
# virtualenv, the npm tools (pouchdb-server, couchbackup), Prometheus' promtool from
# Debian. Idempotent: each step is skipped when already done, so a re-run costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '[setup] %s\n' "$*" >&2; }

python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $python"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  step "installing Python dependencies (pinned in pyproject.toml)"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

if [ -f package-lock.json ]; then
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    step "installing npm tools (package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi

# Debian's packages: prometheus (promtool, the rule tests), age (the stock tool a test decrypts
# off-site backups with, as an operator would).
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v age >/dev/null 2>&1 || missing+=(age)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian's packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup: ${missing[*]} missing and installing needs root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
step "ready"
