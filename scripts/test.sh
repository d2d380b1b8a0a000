#!/usr/bin/env bash
# Set up (scripts/setup.sh), then lint, type-check and run the whole test suite —
# the real agent CLIs included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check src tests examples scripts benchmarks
echo "== mypy" >&2
mypy
echo "== pytest" >&2
exec pytest "$@"
