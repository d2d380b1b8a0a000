#!/usr/bin/env bash
# Check the probe against the latest release of every agent CLI on the npm registry and
# write docs/COMPAT.md (version × family × markers seen × pass). CI keeps using the pins in
# agents/package.json; run this to see what a new agent release changes. Exit 1 when an
# agent mode fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
dir=.scratch/compat/agents
rm -rf "$dir" && mkdir -p "$dir"
# The packages of agents/package.json, each at @latest.
packages=$(.venv/bin/python -c 'import json; print(" ".join(f"{p}@latest" for p in json.load(open("agents/package.json"))["dependencies"]))')
echo "compat: installing $packages" >&2
cp agents/package.json "$dir/package.json"
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error --no-save $packages)
exec .venv/bin/python scripts/compat.py --bin "$dir/node_modules/.bin"
