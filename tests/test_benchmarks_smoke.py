"""The benchmark suite (benchmarks/suite.py) still runs: its smoke version, no timing asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "suite.py"
SECTIONS = (
    "## 1. Added first-byte latency",
    "## 2. Pass-through throughput",
    "## 3. Start-up cost",
    "## 4. Memory",
    "## 5. Many runs",
)
pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the suite reads /proc (peak RSS, machine)"
)
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)? \S+$")


def _figure_rows(section: str) -> list[list[str]]:
    lines = section.splitlines()
    start = lines.index("| figure | median | spread | ratio / context | target | status |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


@pytest.mark.timeout(240)
def test_smoke_suite_writes_every_section_with_a_number_in_each_figure(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = out.read_text(encoding="utf-8")

    assert "Smoke run" in report
    for heading in ("## Machine", "## Targets", *SECTIONS, "## Notes"):
        assert heading in report, heading
    for field in ("| CPU |", "| logical cores |", "| RAM |", "| kernel |", "| Python |"):
        assert field in report, field

    bodies = re.split(r"^## ", report, flags=re.MULTILINE)
    for heading in SECTIONS:
        body = next(b for b in bodies if b.startswith(heading.removeprefix("## ")))
        rows = _figure_rows(body)
        assert rows, f"{heading}: no figures"
        for name, median, _spread, _ratio, target, status in rows:
            assert NUMBER.match(median), f"{heading}: {name}: median {median!r}"
            assert status in {"met", "**missed**", "—"}, f"{name}: status {status!r}"
            assert (status == "—") == (target == "—"), f"{name}: target {target!r} vs {status!r}"
        assert "How measured:" in body
        assert all(f"- *{row[0]}*:" in body for row in rows), heading

    assert re.search(r"\| [^|]+ \| \d+ \| -?\d+ \| -?\d+ \| -?\d+ \| -?\d+ \| -?\d+ \|", report), (
        "the per-line latency distribution table is missing"
    )
    assert "| module | depth | cumulative ms | self ms |" in report
