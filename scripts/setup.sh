#!/usr/bin/env bash
# Install everything ttft_probe needs on a fresh machine, idempotently:
# a virtual environment with the package and its dev tools (.venv), and the pinned
# agent CLIs from the npm registry (agents/node_modules). Needs python3 >= 3.11 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ttft-probe-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing ttft-probe and its dev tools into .venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# agents/package-lock.json lists every platform package of each agent; the registry
# reachable here serves only some of opencode's (linux x64), so those it lacks are
# recorded from opencode-ai's manifest (version, os, cpu) without an integrity hash: npm ci
# skips them on this platform and fetches them by name elsewhere.
lock=agents/package-lock.json
astamp=agents/node_modules/.ttft-probe-installed
if [ ! -f "$astamp" ] || [ "$lock" -nt "$astamp" ]; then
  echo "setup: installing the agent CLIs (npm ci in agents/)" >&2
  (cd agents && npm ci --no-audit --no-fund --loglevel=error)
  touch "$astamp"
fi
