"""The go/no-go gate: the rule at its thresholds, the population, combine(), the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from helpers.records import NOW, rec
from ttft_probe.analysis._model import build_report
from ttft_probe.analysis.gate import (
    EXIT_CODES,
    AbEffect,
    Decision,
    Thresholds,
    Verdict,
    combine,
    gate_records,
    gate_report,
    population_of,
    run_gate,
)
from ttft_probe.cli import main
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store

WEEK = timedelta(days=7)


def runs(
    n: int,
    *,
    init: float,
    cli: float,
    model: float | None = None,
    turn: int | None = 2,
    agent: str = "claude_code",
    now: datetime = NOW,
) -> list[RunRecord]:
    """``n`` good runs of 1000 ms whose segments are the given shares of it."""
    model = 1.0 - init - cli if model is None else model
    return [
        rec(
            agent=agent,
            turn=turn,
            total=1000.0,
            init=init * 1000,
            cli=cli * 1000,
            model=model * 1000,
            now=now,
        )
        for _ in range(n)
    ]


def spread(shares: list[float], *, cli: float = 0.1) -> list[RunRecord]:
    """One good run per session_init share, cli_ready fixed, the model the rest."""
    return [
        rec(total=1000.0, init=s * 1000, cli=cli * 1000, model=(1 - s - cli) * 1000) for s in shares
    ]


def verdict_of(records: list[RunRecord], **kwargs: object) -> Verdict:
    return gate_records(records, agent="claude_code", window=WEEK, **kwargs)  # type: ignore[arg-type]


# 21 runs: type-7 p50 is the 11th value, p90 the 19th (position 18.0, no interpolation).
P90_AT_40 = [0.10] * 11 + [0.20] * 7 + [0.40] * 3
P90_BELOW_40 = [0.10] * 11 + [0.20] * 7 + [0.3999] * 3


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        pytest.param(runs(20, init=0.30, cli=0.10), Decision.SESSION_REUSE, id="p50-exactly-30"),
        pytest.param(runs(20, init=0.2999, cli=0.10), Decision.PROVIDER_SIDE, id="p50-just-below"),
        pytest.param(spread(P90_AT_40), Decision.SESSION_REUSE, id="p90-exactly-40"),
        pytest.param(spread(P90_BELOW_40), Decision.PROVIDER_SIDE, id="p90-just-below"),
        pytest.param(runs(20, init=0.60, cli=0.30), Decision.SESSION_REUSE, id="init-dominates"),
        pytest.param(
            runs(20, init=0.10, cli=0.50), Decision.WARM_PROCESS_POOL, id="cli-exactly-50"
        ),
        pytest.param(runs(20, init=0.10, cli=0.4999), Decision.PROVIDER_SIDE, id="cli-just-below"),
        pytest.param(
            runs(20, init=0.0, cli=0.50), Decision.PROVIDER_SIDE, id="cli-50-ties-model-50"
        ),
        pytest.param(runs(20, init=0.05, cli=0.80), Decision.WARM_PROCESS_POOL, id="cli-boot"),
        pytest.param(runs(20, init=0.05, cli=0.15), Decision.PROVIDER_SIDE, id="model-dominates"),
        pytest.param([], Decision.INSUFFICIENT_DATA, id="empty"),
        pytest.param(runs(19, init=0.9, cli=0.05), Decision.INSUFFICIENT_DATA, id="19-runs"),
        pytest.param(runs(1, init=0.9, cli=0.05), Decision.INSUFFICIENT_DATA, id="1-run"),
    ],
)
def test_rule(records: list[RunRecord], expected: Decision) -> None:
    verdict = verdict_of(records)
    assert verdict.decision is expected
    assert verdict.exit_code == EXIT_CODES[expected]


def test_exit_codes_are_distinct_and_documented() -> None:
    assert EXIT_CODES == {
        Decision.SESSION_REUSE: 0,
        Decision.INSUFFICIENT_DATA: 3,
        Decision.NOT_SEPARATED: 4,
        Decision.WARM_PROCESS_POOL: 10,
        Decision.PROVIDER_SIDE: 11,
    }
    helptext = CliRunner().invoke(main, ["gate", "--help"]).output
    for decision, code in EXIT_CODES.items():
        assert decision.value in helptext
        assert f"exit {code}" in helptext


def test_thresholds_are_options() -> None:
    records = runs(20, init=0.25, cli=0.40)  # model 35 %
    assert verdict_of(records).decision is Decision.PROVIDER_SIDE
    assert verdict_of(records, thresholds=Thresholds(p50_share=0.25)).decision is (
        Decision.SESSION_REUSE
    )
    assert verdict_of(records, thresholds=Thresholds(cli_ready_share=0.4)).decision is (
        Decision.WARM_PROCESS_POOL
    )
    assert verdict_of(records[:5], thresholds=Thresholds(min_runs=5)).decision is (
        Decision.PROVIDER_SIDE
    )


@pytest.mark.parametrize("bad", [{"p50_share": 1.5}, {"p90_share": -0.1}, {"min_runs": 0}])
def test_thresholds_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Thresholds(**bad)


def test_excluded_runs_do_not_count() -> None:
    good = runs(20, init=0.05, cli=0.15)
    missing = [
        rec(total=1000.0, init=None, cli=100.0, model=None, reason="no_session_init"),
        rec(total=None, init=900.0, model=None, reason="no_first_token"),
        rec(total=1000.0, init=900.0, status="failed"),
        rec(total=1000.0, init=900.0, status="timed_out"),
    ]
    verdict = verdict_of(good + missing)
    assert verdict.decision is Decision.PROVIDER_SIDE  # the 90 % shares stayed out
    assert (verdict.population.n, verdict.population.excluded) == (20, 4)
    assert verdict_of(good[:19] + missing).decision is Decision.INSUFFICIENT_DATA


def test_population_turns_and_agent() -> None:
    later = runs(20, init=0.05, cli=0.15)
    first = runs(20, init=0.60, cli=0.10, turn=1)
    unknown = runs(5, init=0.60, cli=0.10, turn=None)
    other = runs(30, init=0.60, cli=0.10, agent="codex")
    records = later + first + unknown + other
    assert verdict_of(records).decision is Decision.PROVIDER_SIDE
    assert verdict_of(records).population.n == 20
    everything = verdict_of(records, turns="all")
    assert everything.population.n == 45
    assert everything.decision is Decision.SESSION_REUSE
    assert population_of(first, turns="2+").n == 0


def test_verdict_names_its_numbers_and_is_frozen() -> None:
    verdict = verdict_of(runs(24, init=0.35, cli=0.40))
    assert verdict.decision is Decision.SESSION_REUSE
    text = verdict.explanation
    for needle in ("24", "claude_code", "turn 2+", "35.0 %", "30.0 %", "40.0 %", "7d"):
        assert needle in text
    data = verdict.to_dict()
    assert data["verdict"] == "session_reuse"
    assert data["session_init_share"] == {"p50": pytest.approx(0.35), "p90": pytest.approx(0.35)}
    assert data["thresholds"] == {
        "p50_share": 0.3,
        "p90_share": 0.4,
        "cli_ready_share": 0.5,
        "min_runs": 20,
    }
    assert data["window_s"] == WEEK.total_seconds()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        verdict.decision = Decision.PROVIDER_SIDE  # type: ignore[misc]


@pytest.mark.parametrize(
    ("records", "needles"),
    [
        (runs(20, init=0.10, cli=0.60), ["warm process pool", "60.0 %", "50.0 %", "30.0 %"]),
        (runs(20, init=0.10, cli=0.20), ["provider side", "20.0 %", "70.0 %"]),
        (runs(3, init=0.10, cli=0.20), ["Insufficient data", "only 3", "at least 20"]),
    ],
)
def test_explanations(records: list[RunRecord], needles: list[str]) -> None:
    text = verdict_of(records).explanation
    for needle in needles:
        assert needle in text


# --- aggregated (production) reports ------------------------------------------------------


def test_gate_report_single_cohort() -> None:
    records = runs(25, init=0.10, cli=0.60) + runs(10, init=0.9, cli=0.05, turn=1)
    verdict = gate_report(build_report(records, "posthog"), agent="claude_code", window=WEEK)
    assert verdict.decision is Decision.WARM_PROCESS_POOL
    assert verdict.source == "posthog"
    assert verdict.population.n == 25
    assert verdict.population.cli_ready_share_p50 == pytest.approx(0.6)


def test_gate_report_refuses_to_pool_cohorts() -> None:
    records = [
        *runs(25, init=0.1, cli=0.6),
        rec(turn=2, resumed=False, total=1000.0, init=100.0, cli=600.0, model=300.0),
    ]
    with pytest.raises(ConfigError, match="per-run"):
        gate_report(build_report(records, "posthog"), agent="claude_code", window=WEEK)
    empty = gate_report(build_report([], "posthog"), agent="claude_code", window=WEEK)
    assert empty.decision is Decision.INSUFFICIENT_DATA


# --- combine ---------------------------------------------------------------------------


def test_combine_without_ab_is_identity() -> None:
    verdict = verdict_of(runs(20, init=0.35, cli=0.2))
    assert combine(verdict, None) is verdict


def test_combine_agreeing() -> None:
    verdict = verdict_of(runs(20, init=0.35, cli=0.2))
    ab = AbEffect(
        segment="session_init_ms", mean_diff_ms=452.4, ci_low_ms=380.0, ci_high_ms=521.0, n_pairs=32
    )
    combined = combine(verdict, ab)
    assert combined.decision is Decision.SESSION_REUSE
    assert combined.ab == ab
    assert "A/B sizes the effect at 452 ms of session_init_ms (95% CI 380 to 521 ms, 32 pairs)" in (
        combined.explanation
    )
    assert "disagrees" not in combined.explanation
    assert combined.explanation.startswith(verdict.explanation)


@pytest.mark.parametrize(
    ("records", "ab"),
    [
        (
            runs(20, init=0.35, cli=0.2),
            AbEffect(
                segment="session_init_ms",
                mean_diff_ms=12.0,
                ci_low_ms=-30.0,
                ci_high_ms=54.0,
                n_pairs=30,
            ),
        ),
        (
            runs(20, init=0.05, cli=0.2),
            AbEffect(
                segment="session_init_ms",
                mean_diff_ms=600.0,
                ci_low_ms=500.0,
                ci_high_ms=700.0,
                n_pairs=30,
            ),
        ),
    ],
    ids=["production-go-ab-null", "production-no-ab-saving"],
)
def test_combine_disagreeing_production_decides(records: list[RunRecord], ab: AbEffect) -> None:
    verdict = verdict_of(records)
    combined = combine(verdict, ab)
    assert combined.decision is verdict.decision
    assert combined.exit_code == verdict.exit_code
    assert "disagrees" in combined.explanation
    assert "production cut decides" in combined.explanation


def test_combine_with_insufficient_production() -> None:
    ab = AbEffect(
        segment="session_init_ms", mean_diff_ms=600.0, ci_low_ms=500.0, ci_high_ms=700.0, n_pairs=30
    )
    combined = combine(verdict_of([]), ab)
    assert combined.decision is Decision.INSUFFICIENT_DATA
    assert "does not decide" in combined.explanation


# --- CLI -------------------------------------------------------------------------------


def store_with(tmp_path: Path, records: list[RunRecord]) -> str:
    store = Store(tmp_path / "runs.sqlite3")
    for r in records:
        store.add(r)
    store.close()
    return str(store.path)


@pytest.mark.parametrize(
    ("init", "cli", "count", "code"),
    [(0.30, 0.1, 20, 0), (0.10, 0.6, 20, 10), (0.10, 0.2, 20, 11), (0.9, 0.05, 19, 3)],
)
def test_cli_exit_codes(tmp_path: Path, init: float, cli: float, count: int, code: int) -> None:
    now = datetime.now(UTC)
    path = store_with(tmp_path, runs(count, init=init, cli=cli, now=now))
    result = CliRunner().invoke(main, ["gate", "--store", path])
    assert result.exit_code == code, result.output
    assert result.stdout.startswith("verdict: ")


def test_cli_json_shape_and_options(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    records = runs(10, init=0.25, cli=0.3, now=now) + runs(10, init=0.25, cli=0.3, now=now, turn=1)
    path = store_with(tmp_path, records)
    args = [
        "gate",
        "--store",
        path,
        "--json",
        "--turns",
        "all",
        "--p50-threshold",
        "0.25",
        "--min-runs",
        "20",
        "--since",
        "2w",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {
        "verdict",
        "exit_code",
        "agent",
        "turns",
        "window_s",
        "source",
        "n",
        "excluded",
        "not_separated",
        "session_init_share",
        "cli_ready_share_p50",
        "model_share_p50",
        "spawn_to_first_token_p50_ms",
        "thresholds",
        "ab",
        "explanation",
    }
    assert data["verdict"] == "session_reuse"
    assert data["n"] == 20
    assert data["turns"] == "all"
    assert data["window_s"] == 14 * 86400
    assert data["thresholds"]["p50_share"] == 0.25
    # Turn 2+ only: 10 runs, below --min-runs.
    result = CliRunner().invoke(main, [*args[:4], "--p50-threshold", "0.25"])
    assert result.exit_code == 3


def test_cli_gate_window_and_agent(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = [
        rec(total=1000.0, init=500.0, cli=100.0, model=400.0, age=timedelta(days=8), now=now)
        for _ in range(20)
    ]
    path = store_with(tmp_path, old + runs(20, init=0.6, cli=0.1, agent="codex", now=now))
    assert CliRunner().invoke(main, ["gate", "--store", path]).exit_code == 3
    assert CliRunner().invoke(main, ["gate", "--store", path, "--since", "9d"]).exit_code == 0
    assert CliRunner().invoke(main, ["gate", "--store", path, "--agent", "codex"]).exit_code == 0


def test_cli_gate_bad_options(tmp_path: Path) -> None:
    path = store_with(tmp_path, [])
    result = CliRunner().invoke(main, ["gate", "--store", path, "--p50-threshold", "1.5"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["gate", "--store", path, "--since", "soon"])
    assert result.exit_code == 2
    assert "--since" in result.stderr


def test_run_gate_local(tmp_path: Path) -> None:
    path = store_with(tmp_path, runs(20, init=0.4, cli=0.1))
    verdict = run_gate("local", now=NOW, store=path)
    assert verdict.decision is Decision.SESSION_REUSE
    assert verdict.source == "local"


def test_cli_gate_production_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    fake = types.ModuleType("ttft_probe.analysis.sources")
    report = build_report(runs(30, init=0.1, cli=0.7, now=datetime.now(UTC)), "posthog")
    fake.load = lambda source, **kwargs: report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ttft_probe.analysis.sources", fake)
    result = CliRunner().invoke(main, ["gate", "--source", "posthog", "--json"])
    assert result.exit_code == 10, result.output
    data = json.loads(result.stdout)
    assert (data["source"], data["n"]) == ("posthog", 30)
    assert data["cli_ready_share_p50"] == pytest.approx(0.7)
    monkeypatch.setitem(sys.modules, "ttft_probe.analysis.sources", None)
    result = CliRunner().invoke(main, ["gate", "--source", "posthog"])
    assert result.exit_code == 2
    assert "not available" in result.stderr


def test_cli_gate_with_a_stored_ab_experiment_sizes_the_effect(tmp_path: Path) -> None:
    # Production (the store's cut) says GO; a stored A/B shows resuming costs ~300 ms.
    now = datetime.now(UTC)
    path = store_with(tmp_path, runs(25, init=0.40, cli=0.30, now=now))
    store = Store(path)
    for pair in range(1, 11):
        for arm, total in (("fresh", 1000.0), ("resumed", 1300.0 + pair)):
            r = rec(total=total, cli=400.0, init=total - 700.0, model=300.0, now=now,
                    resumed=arm == "resumed", turn=2 if arm == "resumed" else 1)
            store.add(r)
            store.add_experiment_run(r.run_id, "exp-1", arm, pair, 1 if arm == "fresh" else 2)
    result = CliRunner().invoke(main, ["gate", "--store", path, "--ab", "exp-1", "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "session_reuse"
    assert verdict["ab"]["segment"] == "spawn_to_first_token_ms"
    assert verdict["ab"]["n_pairs"] == 10
    assert 300 <= verdict["ab"]["mean_diff_ms"] <= 311
    assert verdict["ab"]["ci_low_ms"] > 0
    assert "A/B sizes the effect" in verdict["explanation"]
    missing = CliRunner().invoke(main, ["gate", "--store", path, "--ab", "nope"])
    assert missing.exit_code == 2
    assert "no experiment 'nope' in the store" in missing.output
