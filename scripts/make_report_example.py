"""Regenerate ``docs/report-example.png`` from a synthetic, seeded store.

    .venv/bin/python scripts/make_report_example.py [OUT]

The runs are made up but shaped like real ones: claude_code turn 1 fresh ≈ 1.2 s
(cli_ready ≈ 0.6 s, model ≈ 0.5 s); turn 2+ resumed spends much longer in session_init
(reloading the transcript); codex boots faster. A few runs failed or lost a marker, to
show how excluded runs are counted. The same seed always draws the same picture.
"""

from __future__ import annotations

import random
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ttft_probe.analysis.chart import write_chart
from ttft_probe.analysis.gate import gate_records
from ttft_probe.analysis.report import load_runs
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store

NOW = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent

# agent, turn, resumed, runs, median ms of (cli_ready, session_init, model_first_token)
COHORTS = [
    ("claude_code", 1, False, 60, (600.0, 90.0, 500.0)),
    ("claude_code", 3, True, 140, (610.0, 640.0, 540.0)),
    ("codex", 1, False, 40, (260.0, 60.0, 700.0)),
    ("codex", 2, True, 60, (270.0, 180.0, 720.0)),
]


def _runs(rng: random.Random) -> list[RunRecord]:
    records = []
    for agent, turn, resumed, count, medians in COHORTS:
        for i in range(count):
            cli, init, model = (m * rng.lognormvariate(0.0, 0.22) for m in medians)
            total = cli + init + model
            failed = i % 29 == 7
            lost = i % 23 == 11
            started = NOW - timedelta(minutes=rng.uniform(5, 6 * 24 * 60))
            records.append(
                RunRecord(
                    run_id=str(uuid.UUID(int=rng.getrandbits(128))),
                    agent=agent,
                    runtime_family="claude-stream-json"
                    if agent == "claude_code"
                    else "json-event-stream",
                    status="failed" if failed else "succeeded",
                    turn_ordinal=turn,
                    session_resumed=resumed,
                    spawn_to_first_token_ms=None if failed or lost else round(total, 3),
                    cli_ready_ms=round(cli, 3),
                    session_init_ms=round(init, 3),
                    client_wait_ms=0.0,
                    model_first_token_ms=None if failed or lost else round(model, 3),
                    timing_unavailable_reason="no_first_token" if failed or lost else None,
                    probe_version="0.0.0",
                    started_at=started.isoformat(timespec="microseconds"),
                )
            )
    return records


def main() -> None:
    """Fill a scratch store, build the 7-day report and draw it."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report-example.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "runs.sqlite3")
        rng = random.Random(20251120)  # noqa: S311 - a reproducible picture, not a secret
        for record in _runs(rng):
            store.add(record)
        store.close()
        report, records = load_runs(
            "local", agent=None, since=timedelta(days=7), now=NOW, store=Path(tmp) / "runs.sqlite3"
        )
    title = "Where the wait before the first token goes — last 7 days"
    write_chart(report, records, out, title=title)
    verdict = gate_records(records or [], agent="claude_code", window=timedelta(days=7))
    print(f"wrote {out}")
    print(verdict.explanation)


if __name__ == "__main__":
    main()
