"""The local SQLite store: location, WAL, migrations, idempotent inserts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helpers.records import record
from helpers.waterfall import GENERATION_USAGE, title_and_generation
from ttft_probe.content import CapturedContent
from ttft_probe.errors import StoreError
from ttft_probe.record import MarkerTimes
from ttft_probe.sinks.store import MIGRATIONS, SCHEMA_VERSION, Store, default_store_path


def test_default_path_honours_ttft_probe_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTFT_PROBE_HOME", str(tmp_path / "h"))
    assert default_store_path() == tmp_path / "h" / "runs.sqlite3"
    monkeypatch.delenv("TTFT_PROBE_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_store_path() == tmp_path / "state" / "ttft-probe" / "runs.sqlite3"


def test_wal_schema_version_and_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    times = MarkerTimes(start_ns=1, cli_ready_ns=2, first_token_ns=5)
    a = record(
        run_id="00000000-0000-4000-8000-000000000001",
        session_id="S",
        turn_ordinal=1,
        started_at="2026-11-21T08:00:00.000000+00:00",
    )
    b = record(
        run_id="00000000-0000-4000-8000-000000000002",
        session_id="S",
        turn_ordinal=2,
        started_at="2026-11-21T08:00:01.000000+00:00",
        conversation_id="C",
    )
    store.add(a, times)
    store.add(b)
    store.add(a, times)  # idempotent
    assert store.last() == [a, b]
    assert store.last(1) == [b]
    assert store.marker_times(a.run_id) == times
    assert store.session_history("S") == (2, "C")
    conn = sqlite3.connect(tmp_path / "s.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


@pytest.mark.fault("Store", "schema newer than this ttft-probe",
                   outcome="StoreError naming the fix (upgrade)", agent="—",
                   records_lost="n/a (refused)")
def test_newer_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="upgrade ttft-probe"):
        Store(path)


@pytest.mark.fault("Store", "store path under a regular file",
                   outcome="StoreError naming the fix (TTFT_PROBE_HOME)", agent="—",
                   records_lost="n/a (nowhere to write)")
def test_unwritable_location_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="TTFT_PROBE_HOME"):
        Store(blocker / "sub" / "s.sqlite3")


def test_captured_content_is_kept_beside_the_record_and_handed_to_the_outbox(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite3")
    plain = record(run_id="00000000-0000-4000-8000-000000000001",
                    started_at="2026-11-21T08:00:00.000000+00:00")
    captured = record(run_id="00000000-0000-4000-8000-000000000002",
                       started_at="2026-11-21T08:00:01.000000+00:00")
    content = CapturedContent(input_text="Say hello", output_text="Hello — 日本語",
                              truncated=True)
    store.add(plain, None, ["posthog"])
    store.add(captured, None, ["posthog"], content)
    claimed = store.claim("posthog", 10, lease_s=60, now=1.0)
    assert [(r, c) for r, _, c, _ in claimed] == [(plain, None), (captured, content)]
    assert store.content(captured.run_id) == content
    assert store.content(plain.run_id) is None
    assert store.content("no-such-run") is None
    # The record itself stays the contract: no text in it.
    assert "Hello" not in captured.to_json()


def test_the_waterfall_is_kept_beside_the_record_and_handed_to_the_outbox(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.sqlite3")
    plain = record(run_id="00000000-0000-4000-8000-000000000001",
                   started_at="2026-11-21T08:00:00.000000+00:00")
    observed = record(run_id="00000000-0000-4000-8000-000000000002",
                      started_at="2026-11-21T08:00:01.000000+00:00")
    none_seen = record(run_id="00000000-0000-4000-8000-000000000003",
                       started_at="2026-11-21T08:00:02.000000+00:00")
    requests = title_and_generation(1_000)
    store.add(plain, None, ["otlp"])
    store.add(observed, MarkerTimes(start_ns=1_000), ["otlp"], requests=requests)
    store.add(none_seen, None, ["otlp"], requests=[])  # observer on, no request seen
    claimed = store.claim("otlp", 10, lease_s=60, now=1.0)
    assert [r.run_id for r, *_ in claimed] == [plain.run_id, observed.run_id, none_seen.run_id]
    waterfalls = [w for *_, w in claimed]
    assert waterfalls[0] == waterfalls[2] == ()  # the observer was off / saw nothing
    # Stored as to_dict has it: usage, times, status and size; no digests.
    assert [r.to_dict() for r in waterfalls[1]] == [r.to_dict() for r in requests]
    assert waterfalls[1][1].usage == GENERATION_USAGE


def test_a_version_3_store_gains_the_content_column_and_delivers_its_pending_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 3")
    old = record()
    conn.execute(
        "INSERT INTO runs (run_id, started_at, agent, status, record_json) VALUES (?,?,?,?,?)",
        (old.run_id, old.started_at, old.agent, "succeeded", old.to_json()),
    )
    conn.execute("INSERT INTO deliveries (run_id, sink) VALUES (?, 'langfuse')", (old.run_id,))
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.claim("langfuse", 10, lease_s=60, now=1.0) == [(old, None, None, ())]
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == (SCHEMA_VERSION,) == (5,)


def test_find_matches_run_ids_by_their_start_in_sql(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    ids = ["0b7c2f1e-0000-4000-8000-000000000001", "0b7c2f1e-0000-4000-8000-000000000002",
           "0b7d0000-0000-4000-8000-000000000003", "ffffffff-0000-4000-8000-000000000004"]
    for run_id in ids:
        store.add(record(run_id=run_id))
    assert [r.run_id for r in store.find("0B7C")] == ids[:2]  # case does not matter
    assert [r.run_id for r in store.find("0b7")] == ids[:3]
    assert [r.run_id for r in store.find("0b7", limit=1)] == ids[:1]
    assert [r.run_id for r in store.find(ids[3])] == ids[3:]
    assert store.find("1") == []
    assert store.find("%") == []  # no pattern syntax: a literal start
