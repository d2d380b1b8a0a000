"""`ttft-probe ab`: the paired statistics, the arms in the store, and the real Claude Code CLI.

The statistics are checked on known data; the command on scripted stand-in agents
(fast, exact) and, end to end, on the real Claude Code CLI against a fake provider that
adds a known first-token delay to resumed conversations only. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import sqlite3
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PROBE, assert_valid, script
from helpers.records import ab_record
from helpers.stand_in import DELTA, claude_init, line
from ttft_probe.analysis.ab import (
    SEGMENTS,
    AbPair,
    analyze,
    bootstrap_ci,
    load_experiment,
    order_of,
    paired_differences,
)
from ttft_probe.sinks.store import MIGRATIONS, SCHEMA_VERSION, Store
from ttft_probe.testing.agent_env import agent_environment, one_shot_command
from ttft_probe.testing.fake_provider import FakeProvider

# --- statistics ----------------------------------------------------------------------


def test_constant_difference_gives_a_degenerate_interval() -> None:
    assert bootstrap_ci([42.5] * 30) == (42.5, 42.5)
    assert bootstrap_ci([7.0]) == (7.0, 7.0)


def test_interval_of_a_normal_sample_contains_the_true_mean_and_is_reproducible() -> None:
    rng = random.Random(1234)
    sample = [rng.gauss(300.0, 40.0) for _ in range(30)]
    low, high = bootstrap_ci(sample, seed=7)
    assert low < 300.0 < high
    assert low < statistics.fmean(sample) < high
    # ≈ ±1.96 σ/√n = ±14 ms around the sample mean
    assert 20 < high - low < 40
    assert bootstrap_ci(sample, seed=7) == (low, high)
    assert bootstrap_ci(sample, seed=8) != (low, high)
    wider = bootstrap_ci(sample, seed=7, confidence=0.99)
    assert wider[0] < low
    assert wider[1] > high


def test_coverage_is_close_to_the_confidence_level() -> None:
    rng = random.Random(99)
    reps = 200
    hits = 0
    for rep in range(reps):
        sample = [rng.gauss(10.0, 3.0) for _ in range(30)]
        low, high = bootstrap_ci(sample, resamples=1000, seed=rep)
        hits += low <= 10.0 <= high
    # The percentile bootstrap under-covers a little at n = 30 (≈ 0.93 for 0.95).
    assert 0.87 <= hits / reps <= 0.99


def test_bootstrap_rejects_what_has_no_interval() -> None:
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([1.0, 2.0], resamples=0)


def test_order_alternates_starting_with_resumed() -> None:
    assert [order_of(i) for i in range(1, 5)] == [
        ("resumed", "fresh"),
        ("fresh", "resumed"),
        ("resumed", "fresh"),
        ("fresh", "resumed"),
    ]
    with pytest.raises(ValueError, match="from 1"):
        order_of(0)


def test_paired_differences_are_resumed_minus_fresh_and_count_the_dropped() -> None:
    got = paired_differences([(100.0, 400.0), (None, 380.0), (120.0, None), (90.0, 95.5)])
    assert got.diffs == (300.0, 5.5)
    assert got.dropped == 2


def test_analyze_drops_failed_pairs_everywhere_and_missing_segments_per_segment() -> None:
    pairs = [
        AbPair(
            i,
            order_of(i)[0],
            ab_record(),
            ab_record(model_first_token_ms=400.0 + i, spawn_to_first_token_ms=900.0 + i),
        )
        for i in range(1, 6)
    ]
    # Pair 6: the resumed run failed. Pair 7: no session_init_ms in the fresh run.
    pairs.append(AbPair(6, "fresh", ab_record(), ab_record(status="failed")))
    pairs.append(AbPair(7, "resumed", ab_record(session_init_ms=None), ab_record()))
    pairs.append(AbPair(8, "fresh", ab_record(), None))
    result = analyze("exp", pairs, resamples=500)
    assert (result.pairs, result.complete_pairs, result.failed_pairs) == (8, 6, 2)
    model = result.effect("model_first_token_ms")
    assert (model.n, model.dropped) == (6, 2)
    assert model.mean_ms == pytest.approx((303 * 5 + 0) / 6)
    assert model.median_ms == pytest.approx(302.5)
    assert model.fresh_mean_ms == pytest.approx(100.0)
    assert model.excludes_zero
    init = result.effect("session_init_ms")
    assert (init.n, init.dropped) == (5, 3)
    assert (init.ci_low_ms, init.ci_high_ms) == (0.0, 0.0)
    assert not init.excludes_zero
    assert init.contains(0.0)
    assert [e.segment for e in result.effects] == list(SEGMENTS)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["segments"]["session_init_ms"]["dropped"] == 3
    with pytest.raises(KeyError):
        result.effect("remainder_ms")


def test_a_segment_no_pair_has_gives_no_interval() -> None:
    pairs = [AbPair(1, "resumed", ab_record(cli_ready_ms=None), ab_record())]
    effect = analyze("exp", pairs).effect("cli_ready_ms")
    assert (effect.n, effect.dropped, effect.mean_ms, effect.ci_low_ms) == (0, 1, None, None)
    assert not effect.excludes_zero
    assert not effect.contains(0.0)


# --- the store's experiment table ------------------------------------------------------


def test_store_keeps_the_arm_of_every_run_and_reads_an_experiment_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    fresh, resumed, priming = ab_record(), ab_record(session_resumed=True), ab_record()
    for record in (fresh, resumed, priming):
        store.add(record)
    store.add_experiment_run(priming.run_id, "E", "priming", None, None)
    store.add_experiment_run(resumed.run_id, "E", "resumed", 1, 1)
    store.add_experiment_run(fresh.run_id, "E", "fresh", 1, 2)
    store.add_experiment_run(fresh.run_id, "E", "fresh", 1, 2)  # idempotent
    rows = store.experiment_runs("E")
    assert rows == [
        (priming, "priming", None, None),
        (resumed, "resumed", 1, 1),
        (fresh, "fresh", 1, 2),
    ]
    assert load_experiment(store, "E") == [AbPair(1, "resumed", fresh, resumed)]
    assert store.experiment_runs("other") == []


def test_a_version_2_store_gains_the_experiment_table_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    old = ab_record()
    Store(tmp_path / "tmp.sqlite3").add(old)  # serialise it exactly as the store does
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO runs (run_id, started_at, agent, status, record_json) VALUES (?,?,?,?,?)",
        (old.run_id, old.started_at, old.agent, "succeeded", old.to_json()),
    )
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.last() == [old]
    store.add_experiment_run(old.run_id, "E", "fresh", 1, 1)
    assert store.experiment_runs("E") == [(old, "fresh", 1, 1)]
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == (SCHEMA_VERSION,)


# --- the command on scripted stand-in agents ---------------------------------------------

INIT = claude_init("s-ab")
RESULT = {"type": "result", "subtype": "success", "is_error": False, "session_id": "s-ab"}


def stand_in(tmp_path: Path, token_delay_ms: int, exit_code: int = 0) -> str:
    """A claude-like stand-in agent as one shell-quoted command string."""
    argv = script(
        tmp_path,
        [
            line(INIT),
            {"sleep_ms": token_delay_ms},
            line(DELTA),
            line(RESULT),
            {"err": "bye\n"},
            {"exit": exit_code},
        ],
    )
    return shlex.join(argv)


def ab_cli(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROBE, "ab", *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


STAND_IN = ("--family", "claude-stream-json", "--agent", "claude_code", "--timeout", "30")


def test_every_run_is_stored_with_its_arm_in_alternating_order(
    tmp_path: Path, probe_home: Path
) -> None:
    fresh = stand_in(tmp_path, 20)
    resumed = stand_in(tmp_path, 120) + " --resume {session}"
    done = ab_cli(
        "-n",
        "4",
        "--json",
        "--resamples",
        "1000",
        *STAND_IN,
        "--fresh",
        fresh,
        "--resumed",
        resumed,
    )
    assert done.returncode == 0, done.stderr
    assert "warning: 4 pairs" in done.stderr
    result = json.loads(done.stdout)
    assert (result["pairs"], result["complete_pairs"], result["failed_pairs"]) == (4, 4, 0)
    model = result["segments"]["model_first_token_ms"]
    assert model["n"] == 4
    assert 60 < model["mean_ms"] < 160
    assert model["ci_low_ms"] > 0

    rows = Store(probe_home / "runs.sqlite3").experiment_runs(result["experiment_id"])
    assert [(arm, pair, pos) for _, arm, pair, pos in rows] == [
        ("priming", None, None),
        *[(arm, i, pos) for i in range(1, 5) for pos, arm in enumerate(order_of(i), start=1)],
    ]
    for record, arm, _, _ in rows:
        assert_valid(record)
        assert record.status.value == "succeeded"
        assert record.session_resumed is (arm == "resumed")
        assert record.session_id == "s-ab"
    # The runs really ran in that order.
    started = [record.started_at for record, _, _, _ in rows]
    assert started == sorted(started)

    again = ab_cli("--experiment", result["experiment_id"], "--json", "--resamples", "1000")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == result

    table = ab_cli("--experiment", result["experiment_id"], "--resamples", "1000")
    assert table.returncode == 0, table.stderr
    assert "model_first_token_ms" in table.stdout
    assert f"ttft-probe ab --experiment {result['experiment_id']}" in table.stdout


def test_too_many_failed_pairs_stop_the_experiment_with_exit_1(
    tmp_path: Path, probe_home: Path
) -> None:
    done = ab_cli(
        "-n",
        "6",
        "--max-failed-pairs",
        "1",
        "--json",
        "--resamples",
        "200",
        *STAND_IN,
        "--fresh",
        stand_in(tmp_path, 10),
        "--resumed",
        stand_in(tmp_path, 10, exit_code=3),
    )
    assert done.returncode == 1, done.stderr
    assert "pair 1 resumed failed: failed, exit code 3" in done.stderr
    assert "bye" in done.stderr  # the agent's last stderr line says why
    result = json.loads(done.stdout)
    assert (result["pairs"], result["complete_pairs"]) == (2, 0)
    assert result["segments"]["model_first_token_ms"]["dropped"] == 2
    # The failed runs are stored with their arm too.
    rows = Store(probe_home / "runs.sqlite3").experiment_runs(result["experiment_id"])
    assert sorted((arm, record.status.value) for record, arm, _, _ in rows) == [
        ("fresh", "succeeded"),
        ("fresh", "succeeded"),
        ("resumed", "failed"),
        ("resumed", "failed"),
    ]


def test_a_failed_priming_run_exits_1_and_says_so(tmp_path: Path, probe_home: Path) -> None:
    done = ab_cli(
        "-n",
        "2",
        *STAND_IN,
        "--fresh",
        stand_in(tmp_path, 10, exit_code=4),
        "--resumed",
        stand_in(tmp_path, 10) + " {session}",
    )
    assert done.returncode == 1
    assert "the priming run of the fresh command failed: failed, exit code 4" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fresh", "true"], "needs --fresh CMD and --resumed CMD"),
        (["--fresh", "true {session}", "--resumed", "true"], "resumed command only"),
        (["--fresh", "no-such-agent-xyz", "--resumed", "true"], "'no-such-agent-xyz' not found"),
        (["--fresh", "'unclosed", "--resumed", "true"], "fresh command: No closing quotation"),
        (["--experiment", "nope"], "no experiment 'nope'"),
        (["--experiment", "x", "--fresh", "true"], "leave out --fresh"),
    ],
)
def test_bad_options_exit_2_before_anything_runs(
    args: list[str], message: str, probe_home: Path
) -> None:
    done = ab_cli(*args, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert not Store(probe_home / "runs.sqlite3").last()


def test_help_explains_the_command() -> None:
    done = ab_cli("--help", timeout=30)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for needle in (
        "--fresh",
        "--resumed",
        "{session}",
        "fresh first when i is even",
        "resumed − fresh",
        "bootstrap",
        "Exit status",
        "--resume {session}",
    ):
        assert needle in text


# --- the real Claude Code CLI -------------------------------------------------------------

BASE_DELAY_MS = 100
RESUMED_EXTRA_MS = 300
"""The fake provider holds the first token of a resumed conversation this much longer."""
PAIRS = 30
TOLERANCE_MS = 30
"""How far the interval may sit from the injected difference: the CLI's own extra work on a
resumed turn (a bigger request, the history to serialise) and scheduling noise."""


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """First token after 100 ms, 300 ms more when the history holds an assistant turn."""
    with FakeProvider(
        first_token_delay_ms=BASE_DELAY_MS, resumed_extra_delay_ms=RESUMED_EXTRA_MS
    ) as fp:
        yield fp


@pytest.mark.realcli
@pytest.mark.timeout(900)
def test_ab_on_real_claude_finds_the_injected_resume_delay(
    provider: FakeProvider, scratch: Path
) -> None:
    env = agent_environment("claude_code", provider.url, scratch / "home")
    store = scratch / "probe" / "runs.sqlite3"
    env["TTFT_PROBE_HOME"] = str(store.parent)
    work = scratch / "work"
    work.mkdir()
    claude = shlex.join(one_shot_command("claude_code", "Say hello"))
    before = len(provider.generations())
    done = subprocess.run(
        [
            *PROBE,
            "ab",
            "-n",
            str(PAIRS),
            "--json",
            "--timeout",
            "60",
            "--fresh",
            claude,
            "--resumed",
            f"{claude} --resume {{session}}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["pairs"], result["complete_pairs"]) == (PAIRS, PAIRS)

    model = result["segments"]["model_first_token_ms"]
    summary = f"model_first_token_ms effect: {model}"
    print(summary)  # the interval, for the log
    assert model["n"] == PAIRS, summary
    assert model["ci_low_ms"] > 0, summary  # excludes 0
    # contains ≈ 300: the interval reaches into RESUMED_EXTRA_MS ± TOLERANCE_MS
    assert model["ci_low_ms"] <= RESUMED_EXTRA_MS + TOLERANCE_MS, summary
    assert model["ci_high_ms"] >= RESUMED_EXTRA_MS - TOLERANCE_MS, summary
    assert abs(model["mean_ms"] - RESUMED_EXTRA_MS) <= TOLERANCE_MS, summary
    assert model["fresh_mean_ms"] >= BASE_DELAY_MS, summary
    # The whole wait moves by about the same; the CLI's boot does not.
    total = result["segments"]["spawn_to_first_token_ms"]
    assert total["ci_low_ms"] > 0, total

    # Every run is in the store with its arm; resumed runs resumed the priming session.
    rows = Store(store).experiment_runs(result["experiment_id"])
    arms = [arm for _, arm, _, _ in rows]
    assert arms.count("priming") == 1
    assert arms.count("fresh") == arms.count("resumed") == PAIRS
    [priming] = [record for record, arm, _, _ in rows if arm == "priming"]
    assert priming.session_id
    for record, arm, pair, position in rows:
        assert_valid(record)
        assert record.status.value == "succeeded"
        if arm == "resumed":
            assert record.session_resumed
            assert record.session_id == priming.session_id
        elif arm == "fresh":
            assert not record.session_resumed
            assert record.session_id != priming.session_id
        if pair is not None:
            assert position == order_of(pair).index(arm) + 1
    # The provider saw what the arms were meant to send: 31 fresh, 30 resumed generations.
    generations = provider.generations()[before:]
    assert sum(not g["resumed"] for g in generations) >= PAIRS + 1
    assert sum(g["resumed"] for g in generations) == PAIRS
    assert os.path.exists(store)
