"""The report: window and agent selection, exact percentiles, JSON, table, chart, CLI."""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from matplotlib.image import imread
from rich.console import Console

from helpers.records import NOW, rec
from ttft_probe.analysis._model import build_report
from ttft_probe.analysis.chart import write_chart
from ttft_probe.analysis.report import (
    format_since,
    load_runs,
    parse_since,
    report_table,
    report_to_json,
    select,
)
from ttft_probe.cli import main
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store


def known_cohort(now: datetime = NOW) -> list[RunRecord]:
    """Ten good turn-2+ resumed runs: totals 1000..1900, init 100..1000, plus two excluded."""
    good = [
        rec(
            total=1000.0 + 100 * i,
            cli=500.0,
            init=100.0 + 100 * i,
            model=400.0 - 10 * i,
            age=timedelta(hours=i + 1),
            now=now,
        )
        for i in range(10)
    ]
    bad = [
        rec(total=99_999.0, init=99_000.0, status="failed", now=now),
        rec(total=None, init=None, model=None, reason="no_first_token", now=now),
    ]
    return good + bad


# --- parse_since / select --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 7D ", timedelta(days=7)),
        ("all", None),
    ],
)
def test_parse_since(text: str, expected: timedelta | None) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "7", "0d", "-1d", "3x", "d7", "7 days"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="30m, 12h, 7d, 2w"):
        parse_since(text)


def test_format_since() -> None:
    assert [format_since(parse_since(t)) for t in ("7d", "2w", "12h", "30m", "all")] == [
        "7d",
        "14d",
        "12h",
        "30m",
        "all",
    ]


def test_select_window_is_inclusive_and_excludes_the_future() -> None:
    inside = rec(age=timedelta(days=7))  # exactly at the edge
    old = rec(age=timedelta(days=7, seconds=1))
    future = rec(age=-timedelta(minutes=5))
    naive = RunRecord.from_dict({**rec().to_dict(), "started_at": "2025-11-19T12:00:00"})
    chosen = select([inside, old, future, naive], since=timedelta(days=7), now=NOW)
    assert chosen == [inside, naive]
    assert select([inside, old, future], since=None, now=NOW) == [inside, old, future]


def test_select_agent() -> None:
    a, b = rec(agent="claude_code"), rec(agent="codex")
    assert select([a, b], agent="codex", now=NOW) == [b]
    assert select([a, b], now=NOW) == [a, b]


def test_select_needs_an_aware_now() -> None:
    with pytest.raises(ConfigError, match="aware"):
        select([], now=datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


# --- report numbers --------------------------------------------------------------------


def test_exact_percentiles_and_excluded_apart() -> None:
    data = report_to_json(build_report(known_cohort(), "local"))
    assert data["source"] == "local"
    (row,) = data["rows"]
    assert row["agent"] == "claude_code"
    assert (row["turn"], row["resumed"], row["reused"]) == ("2+", True, False)
    assert row["cohort"] == "turn 2+ · resumed"
    assert (row["runs"], row["excluded"], row["included"]) == (12, 2, 10)
    total = row["metrics"]["spawn_to_first_token_ms"]
    # Type 7: p50 between ranks 5 and 6; p90 at position 8.1.
    assert total == {"n": 10, "p50": 1450.0, "p90": 1810.0}
    assert row["metrics"]["session_init_ms"] == {"n": 10, "p50": 550.0, "p90": 910.0}
    assert row["metrics"]["cli_ready_ms"] == {"n": 10, "p50": 500.0, "p90": 500.0}
    assert row["metrics"]["model_first_token_ms"]["p50"] == pytest.approx(355.0)
    shares = sorted((100.0 + 100 * i) / (1000.0 + 100 * i) for i in range(10))
    assert row["session_init_share"]["n"] == 10
    assert row["session_init_share"]["p50"] == pytest.approx((shares[4] + shares[5]) / 2)
    assert row["session_init_share"]["p90"] == pytest.approx(
        shares[8] + 0.1 * (shares[9] - shares[8])
    )
    json.dumps(data)  # JSON-ready


def test_rows_sorted_and_deterministic() -> None:
    runs = [
        rec(agent="codex", turn=1, resumed=False),
        rec(agent="claude_code", turn=None),
        rec(agent="claude_code", turn=3, reused=True),
        rec(agent="claude_code", turn=1, resumed=False),
        rec(agent="claude_code", turn=2, resumed=True),
    ]
    shuffled = runs[:]
    random.Random(4).shuffle(shuffled)
    first = report_to_json(build_report(runs, "local"))
    assert first == report_to_json(build_report(shuffled, "local"))
    assert [(r["agent"], r["cohort"]) for r in first["rows"]] == [
        ("claude_code", "turn 1 · fresh"),
        ("claude_code", "turn 2+ · resumed"),
        ("claude_code", "turn 2+ · resumed · reused process"),
        ("claude_code", "turn ? · resumed"),
        ("codex", "turn 1 · fresh"),
    ]


def test_cohort_of_only_excluded_runs_has_null_statistics() -> None:
    data = report_to_json(build_report([rec(status="timed_out", total=None)], "local"))
    (row,) = data["rows"]
    assert (row["runs"], row["excluded"], row["included"]) == (1, 1, 0)
    assert row["metrics"]["spawn_to_first_token_ms"] == {"n": 0, "p50": None, "p90": None}


def test_table_reads_at_a_glance() -> None:
    report = build_report([*known_cohort(), rec(agent="codex", turn=1, resumed=False)], "local")
    console = Console(width=200, record=True, color_system=None)
    console.print(report_table(report))
    text = console.export_text()
    assert "turn 2+ · resumed" in text
    assert "1,450 / 1,810" in text  # first token p50 / p90
    assert "550 / 910" in text  # session_init
    assert "excluded" in text
    assert "codex" in text


# --- load_runs from the local store -----------------------------------------------------


def test_load_runs_local_filters(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.sqlite3")
    for r in [*known_cohort(), rec(agent="codex"), rec(age=timedelta(days=30))]:
        store.add(r)
    report, records = load_runs(
        "local", agent="claude_code", since=timedelta(days=7), now=NOW, store=store.path
    )
    assert records is not None
    assert len(records) == 12
    assert [row.runs for row in report.rows] == [12]
    report, records = load_runs("local", agent=None, since=None, now=NOW, store=store.path)
    assert records is not None
    assert len(records) == 14


def test_remote_source_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ttft_probe.analysis.sources", None)
    with pytest.raises(ConfigError, match="not available"):
        load_runs("posthog", agent=None, since=None, now=NOW)


def test_unknown_source() -> None:
    with pytest.raises(ConfigError, match="unknown source"):
        load_runs("influx", agent=None, since=None, now=NOW)


# --- chart -----------------------------------------------------------------------------


def chart_runs() -> list[RunRecord]:
    rng = random.Random(7)
    runs = []
    for turn, resumed, init in [(1, False, 80.0), (3, True, 650.0)]:
        for _ in range(40):
            cli, model = 600 * rng.uniform(0.8, 1.2), 500 * rng.uniform(0.8, 1.3)
            i = init * rng.uniform(0.7, 1.4)
            runs.append(
                rec(turn=turn, resumed=resumed, cli=cli, init=i, model=model, total=cli + i + model)
            )
    runs.append(rec(agent="codex", turn=1, resumed=False))
    return runs


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_chart_renders(tmp_path: Path, suffix: str) -> None:
    runs = chart_runs()
    out = write_chart(build_report(runs, "local"), runs, tmp_path / f"report{suffix}")
    assert out.stat().st_size > 20_000
    if suffix == ".png":
        pixels = imread(out)
        height, width = pixels.shape[:2]
        assert width >= 1500
        assert height >= 500
        colours = {tuple(p) for p in pixels[::7, ::7, :3].reshape(-1, 3).round(2).tolist()}
        assert len(colours) > 20  # bars, dots, text: not a blank or single-colour image
    else:
        text = out.read_text("utf-8")
        assert text.lstrip().startswith("<?xml")
        assert "<svg" in text


def test_chart_without_records_and_empty(tmp_path: Path) -> None:
    runs = chart_runs()
    out = write_chart(build_report(runs, "posthog"), None, tmp_path / "agg.png")
    assert out.stat().st_size > 10_000
    out = write_chart(build_report([], "local"), [], tmp_path / "empty.svg")
    assert out.stat().st_size > 1_000


def test_chart_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.png or \.svg"):
        write_chart(build_report([], "local"), [], tmp_path / "report.jpg")


# --- CLI -------------------------------------------------------------------------------


@pytest.fixture
def filled_store(tmp_path: Path) -> Path:
    now = datetime.now(UTC)
    store = Store(tmp_path / "runs.sqlite3")
    for r in [
        *known_cohort(now),
        rec(agent="codex", now=now),
        rec(age=timedelta(days=30), now=now),
    ]:
        store.add(r)
    store.close()
    return store.path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_report_json(filled_store: Path) -> None:
    result = invoke("report", "--store", str(filled_store), "--agent", "claude_code", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (row,) = data["rows"]
    assert row["metrics"]["spawn_to_first_token_ms"] == {"n": 10, "p50": 1450.0, "p90": 1810.0}
    assert row["excluded"] == 2
    all_time = json.loads(
        invoke("report", "--store", str(filled_store), "--json", "--since", "all").stdout
    )
    assert sum(r["runs"] for r in all_time["rows"]) == 14


def test_cli_report_table_and_chart(filled_store: Path, tmp_path: Path) -> None:
    chart = tmp_path / "out.png"
    result = invoke("report", "--store", str(filled_store), "--chart", str(chart))
    assert result.exit_code == 0, result.output
    assert "1,450 / 1,810" in result.stdout
    assert "chart written" in result.stderr
    assert chart.stat().st_size > 10_000


def test_cli_report_nothing_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTFT_PROBE_HOME", str(tmp_path / "home"))
    result = invoke("report")
    assert result.exit_code == 0
    assert "No runs in the window" in result.stdout


def test_cli_report_bad_since_and_missing_source(
    filled_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke("report", "--store", str(filled_store), "--since", "week")
    assert result.exit_code == 2
    assert "--since" in result.stderr
    monkeypatch.setitem(sys.modules, "ttft_probe.analysis.sources", None)
    result = invoke("report", "--source", "jaeger")
    assert result.exit_code == 2
    assert "not available" in result.stderr


def test_remote_source_report_or_records(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls: list[dict[str, Any]] = []
    answer: list[Any] = []

    def load(source: str, **kwargs: Any) -> Any:
        calls.append({"source": source, **kwargs})
        return answer[0]

    fake = types.ModuleType("ttft_probe.analysis.sources")
    fake.load = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ttft_probe.analysis.sources", fake)
    aggregated = build_report(known_cohort(), "posthog")
    answer.append(aggregated)
    report, records = load_runs("posthog", agent="claude_code", since=timedelta(days=7), now=NOW)
    assert (report, records) == (aggregated, None)
    assert calls[0] == {
        "source": "posthog",
        "agent": "claude_code",
        "since": timedelta(days=7),
        "now": NOW,
    }
    answer[0] = [*known_cohort(), rec(agent="codex"), rec(age=timedelta(days=9))]
    report, records = load_runs("jaeger", agent="claude_code", since=timedelta(days=7), now=NOW)
    assert records is not None
    assert len(records) == 12
    assert report.source == "jaeger"
