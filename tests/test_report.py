"""The report: window and agent selection, exact percentiles, JSON, table, chart, CLI."""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from matplotlib.image import imread
from rich.console import Console

from helpers.records import NOW, rec
from ttft_probe.analysis._model import (
    BOOTSTRAP_RESAMPLES,
    NOT_OBSERVED,
    build_report,
    fit_context_cost,
    percentile,
)
from ttft_probe.analysis.chart import write_chart
from ttft_probe.analysis.report import (
    format_since,
    load_runs,
    parse_since,
    prompt_cache_tables,
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


# --- prompt cache and cost of context (DESIGN §10, issue 14) ----------------------------


def observed_run(
    uncached: int | None,
    *,
    read: int | None = 0,
    status: str | None = "stable",
    section: str | None = None,
    model: float = 300.0,
    message: bool = False,
    **kwargs: Any,
) -> RunRecord:
    """A run timed with the provider observer: its first request's usage and prefix."""
    total = None if uncached is None or read is None else uncached + read
    return attrs.evolve(
        rec(model=model, **kwargs),
        session_init_source="model_request",
        first_token_granularity="message" if message else "delta",
        model_request_count=2,
        first_request_input_tokens=total,
        first_request_cache_read_tokens=read,
        first_request_cache_write_tokens=0 if total is not None else None,
        first_request_uncached_tokens=uncached,
        first_request_bytes=50_000,
        prefix_status=status,
        prefix_break=section,
    )


def hand_cohort() -> list[RunRecord]:
    """Six observed turn-2+ runs, one without usage; one failed and one unobserved run."""
    return [
        observed_run(1_000, read=9_000, status="stable"),
        observed_run(2_000, read=18_000, status="broken", section="system[1]"),
        observed_run(3_000, read=0, status="broken", section="messages[0]"),
        observed_run(4_000, read=1_000, status="broken", section="system[1]"),
        observed_run(10_000, read=0, status="no_previous"),
        observed_run(None, read=None, status="unavailable"),  # the provider gave no usage
        attrs.evolve(  # failed: never counted
            observed_run(99_999, read=1, status="broken", section="tools[0]"), status="failed"
        ),
        rec(),  # timed without the observer
    ]


def test_cohort_cache_columns_by_hand() -> None:
    report = build_report(hand_cohort(), "local")
    (row,) = report.rows
    cache = row.prompt_cache
    assert (row.runs, row.excluded, cache.observed) == (8, 1, 6)
    # Uncached tokens of the five runs with usage: 1000, 2000, 3000, 4000, 10000.
    assert (cache.uncached_tokens.n, cache.uncached_tokens.p50) == (5, 3000.0)
    assert cache.uncached_tokens.p90 == percentile([1000, 2000, 3000, 4000, 10000], 0.9)
    assert cache.uncached_tokens.p90 == 7600.0
    # Pooled: (9000 + 18000 + 0 + 1000 + 0) / (10000 + 20000 + 3000 + 5000 + 10000).
    assert (cache.share_runs, cache.cache_read_tokens, cache.input_tokens) == (5, 28_000, 48_000)
    assert cache.cache_read_share == 28_000 / 48_000
    assert (cache.prefix_stable, cache.prefix_broken) == (1, 3)
    assert (cache.prefix_no_previous, cache.prefix_unavailable) == (1, 1)
    assert cache.break_rate == 0.75  # 3 broken of the 4 compared turns
    assert (cache.top_break, cache.top_break_runs) == ("system[1]", 2)

    data = report_to_json(report)["rows"][0]
    assert data["prompt_cache"] == {
        "observed": 6,
        "first_request_uncached_tokens": {"n": 5, "p50": 3000.0, "p90": 7600.0},
        "cache_read_share": 28_000 / 48_000,
        "cache_read_tokens": 28_000,
        "input_tokens": 48_000,
        "share_runs": 5,
        "prefix": {
            "stable": 1,
            "broken": 3,
            "no_previous": 1,
            "unavailable": 1,
            "break_rate": 0.75,
            "top_break": {"section": "system[1]", "runs": 2},
        },
    }
    assert data["not_observed"] == {"runs": 1, "reason": NOT_OBSERVED}
    text = tables_text(report)
    assert "6 of 7" in text  # observed of included
    assert "3,000 / 7,600" in text
    assert "58%" in text  # 28,000 / 48,000
    assert "3 of 4 (75%)" in text
    assert "system[1] ×2" in text


def test_a_tied_break_names_the_first_section_in_order() -> None:
    runs = [
        observed_run(1_000, status="broken", section="system[1]"),
        observed_run(1_000, status="broken", section="messages[0]"),
        observed_run(1_000, status="broken", section="tools[2]"),
    ]
    (row,) = build_report(runs, "local").rows
    assert (row.prompt_cache.top_break, row.prompt_cache.top_break_runs) == ("messages[0]", 1)


def test_observer_off_cohort_has_no_cache_figure_never_zero() -> None:
    runs = [*hand_cohort()[:5], *(rec(turn=1, resumed=False) for _ in range(4))]
    report = build_report(runs, "local")
    off = next(row for row in report.rows if row.key.turn == "1")
    assert off.prompt_cache.observed == 0
    assert off.prompt_cache.cache_read_share is None
    assert off.prompt_cache.break_rate is None
    assert off.prompt_cache.uncached_tokens.n == 0
    data = next(r for r in report_to_json(report)["rows"] if r["turn"] == "1")
    assert data["prompt_cache"] is None
    assert data["not_observed"] == {"runs": 4, "reason": NOT_OBSERVED}
    assert "--observe-provider" in NOT_OBSERVED
    text = tables_text(report)
    line = next(ln for ln in text.splitlines() if "turn 1 · fresh" in ln and "observer" in ln)
    assert line.count("observer off") == 1
    assert "0%" not in line
    assert " 0 " not in line
    assert "observer off = timed without --observe-provider" in text


def test_nothing_observed_says_so_in_one_line() -> None:
    report = build_report(known_cohort(), "local")
    (note,) = prompt_cache_tables(report)
    assert isinstance(note, str)
    assert "observer off" in note
    assert "--observe-provider" in note
    (cost,) = report_to_json(report)["context_cost"]
    assert cost["slope_ms_per_1k_uncached_tokens"] is None
    assert cost["ci95_ms_per_1k_uncached_tokens"] is None
    assert cost["intercept_ms"] is None
    assert cost["runs"] == 0
    assert "needs ≥5 observed runs with differing uncached tokens" in cost["reason"]
    assert prompt_cache_tables(build_report([], "local")) == []


def tables_text(report: Any) -> str:
    console = Console(width=220, record=True, color_system=None)
    for part in prompt_cache_tables(report):
        console.print(part)
    return console.export_text()


def linear_population(n: int, *, seed: int = 14, noise_ms: float = 40.0) -> list[RunRecord]:
    """y = 400 + 0.05·x + noise: 50 ms per 1,000 uncached tokens, 400 ms at none."""
    rng = random.Random(seed)
    runs = []
    for i in range(n):
        uncached = rng.randrange(2_000, 40_000)
        model = round(400.0 + 0.05 * uncached + rng.gauss(0.0, noise_ms), 3)
        runs.append(
            observed_run(uncached, read=rng.randrange(0, 50_000), model=model, turn=1 + i % 4,
                         resumed=i % 4 > 0, message=i % 10 == 7)
        )  # fmt: skip
    return runs


def test_context_cost_recovers_the_slope() -> None:
    runs = linear_population(60)
    report = build_report(runs, "local")
    (cost,) = report.context_cost
    assert (cost.agent, cost.n, cost.message_granular, cost.reason) == ("claude_code", 60, 6, None)
    assert cost.slope_ms_per_1k is not None
    assert cost.ci95_ms_per_1k is not None
    assert cost.intercept_ms is not None
    low, high = cost.ci95_ms_per_1k
    assert cost.slope_ms_per_1k == pytest.approx(50.0, abs=2.5)
    assert low < 50.0 < high  # the interval holds the true slope
    assert low < cost.slope_ms_per_1k < high
    assert high - low < 10.0  # and is not vacuous
    assert cost.intercept_ms == pytest.approx(400.0, abs=50.0)
    # Reproducible, and independent of the order the runs come in.
    shuffled = runs[:]
    random.Random(3).shuffle(shuffled)
    assert build_report(shuffled, "local").context_cost == report.context_cost
    # JSON and the table.
    data = report_to_json(report)["context_cost"][0]
    assert data["slope_ms_per_1k_uncached_tokens"] == cost.slope_ms_per_1k
    assert data["ci95_ms_per_1k_uncached_tokens"] == [low, high]
    assert (data["resamples"], data["seed"], data["runs"]) == (BOOTSTRAP_RESAMPLES, 0, 60)
    assert "late by the message's generation time" in data["model_first_token_note"]
    text = tables_text(report)
    assert "Cost of context" in text
    assert f"{cost.slope_ms_per_1k:,.1f}*" in text
    assert f"{low:,.1f} … {high:,.1f}" in text


def test_context_cost_interval_covers_the_true_slope_across_populations() -> None:
    """Coverage, roughly: the 95 % interval holds 50 ms/1k in most of 20 populations."""
    covered = 0
    for seed in range(20):
        points = [(r.first_request_uncached_tokens or 0, r.model_first_token_ms or 0.0, False)
                  for r in linear_population(25, seed=seed, noise_ms=150.0)]  # fmt: skip
        cost = fit_context_cost("a", points)
        assert cost.ci95_ms_per_1k is not None
        covered += cost.ci95_ms_per_1k[0] <= 50.0 <= cost.ci95_ms_per_1k[1]
    assert covered >= 16


@pytest.mark.parametrize(
    ("points", "has"),
    [
        pytest.param([(1_000 * i, 400.0 + i, False) for i in range(1, 5)], "has 4", id="four-runs"),
        pytest.param([(5_000, 400.0 + i, False) for i in range(8)],
                     "has 8, all with the same uncached tokens", id="no-spread"),
        pytest.param([], "has 0; time runs with `ttft-probe run --observe-provider`", id="none"),
        # Two different counts: one run at the other end would decide the slope alone.
        pytest.param([(100, 400.0 + i, False) for i in range(4)] + [(200, 500.0, False)],
                     "has 5 with only 2 different counts (≥3 needed)", id="two-values"),
    ],
)  # fmt: skip
def test_context_cost_needs_five_runs_with_spread(
    points: list[tuple[int, float, bool]], has: str
) -> None:
    cost = fit_context_cost("claude_code", points)
    assert cost.slope_ms_per_1k is None
    assert cost.ci95_ms_per_1k is None
    assert cost.intercept_ms is None
    assert cost.n == len(points)
    assert cost.reason is not None
    assert cost.reason.startswith("needs ≥5 observed runs with differing uncached tokens")
    assert has in cost.reason


def test_context_cost_too_few_runs_in_the_report() -> None:
    runs = [*linear_population(4), rec(agent="codex")]
    report = build_report(runs, "local")
    assert [c.agent for c in report.context_cost] == ["claude_code", "codex"]
    for cost in report_to_json(report)["context_cost"]:
        assert cost["slope_ms_per_1k_uncached_tokens"] is None
        assert cost["reason"].startswith("needs ≥5 observed runs")
    text = tables_text(report)
    assert "needs ≥5 observed runs with differing uncached tokens" in text


def test_context_cost_leaves_out_excluded_and_unmeasured_runs() -> None:
    runs = linear_population(10)
    failed = attrs.evolve(observed_run(30_000, model=9_999.0), status="failed")
    no_model = attrs.evolve(observed_run(30_000), model_first_token_ms=None)
    no_usage = observed_run(None, read=None, model=9_999.0)
    (cost,) = build_report([*runs, failed, no_model, no_usage], "local").context_cost
    assert cost == build_report(runs, "local").context_cost[0]


def test_cli_report_shows_the_prompt_cache_and_the_cost_of_context(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    store = Store(tmp_path / "runs.sqlite3")
    for r in [*linear_population(20), rec(agent="codex", turn=1, resumed=False)]:
        store.add(attrs.evolve(r, started_at=(now - timedelta(hours=1)).isoformat()))
    store.close()
    result = invoke("report", "--store", str(store.path))
    assert result.exit_code == 0, result.output
    assert "Prompt cache (local)" in result.stdout
    assert "observer off" in result.stdout  # the codex cohort
    assert "Cost of context" in result.stdout
    data = json.loads(invoke("report", "--store", str(store.path), "--json").stdout)
    claude, codex = data["context_cost"]
    assert claude["runs"] == 20
    assert 40.0 < claude["slope_ms_per_1k_uncached_tokens"] < 60.0
    assert codex["slope_ms_per_1k_uncached_tokens"] is None
    rows = {row["agent"]: row for row in data["rows"]}
    assert rows["codex"]["prompt_cache"] is None
    assert rows["codex"]["not_observed"]["reason"] == NOT_OBSERVED
