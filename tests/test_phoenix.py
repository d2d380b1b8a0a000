"""One round trip through a real OTLP trace store (Arize Phoenix, its own venv; DESIGN §10).

The script installs Phoenix into .scratch/phoenix-venv on first use (about a minute),
serves it on loopback, probes one run with OTLP pointed at it, and checks the stored
spans' names, ids, parents, attributes and events against the record.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.timeout(900)
def test_spans_round_trip_through_phoenix() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "phoenix_roundtrip.py")],
                          capture_output=True, timeout=880, check=False, cwd=REPO)
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, out[-4000:]
    assert "phoenix_roundtrip: OK: 4 spans of trace" in out
