#!/usr/bin/env bash
# The main job on a fresh machine: install everything (scripts/setup.sh), then probe the
# real Claude Code CLI end to end against the bundled fake provider — a fresh turn and a
# resumed turn — and list the stored runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py
