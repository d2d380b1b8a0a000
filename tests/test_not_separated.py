"""Analysis never answers from what was not measured (issue 12, DESIGN §8).

A run timed without the provider observer ends its session init at the agent's init line
(``session_init_source="init_message"``): for a one-shot CLI that is the first line, so
``session_init_ms`` is 0 by construction and the set-up sits inside ``cli_ready_ms``.
Report (table, JSON, chart), gate, ab and `runs` must say "not separated", never show or
decide on that 0; whole-message first tokens are flagged where the model segment is shown.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner
from rich.console import Console

from helpers.records import NOW, rec
from ttft_probe.analysis._model import NOT_SEPARATED, build_report
from ttft_probe.analysis.ab import AbPair, analyze
from ttft_probe.analysis.chart import write_chart
from ttft_probe.analysis.gate import Decision, gate_records, gate_report
from ttft_probe.analysis.report import report_table, report_to_json
from ttft_probe.cli import main
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store

WEEK = 7 * 86400.0


def one_shot(*, separated: bool, message: bool = False, **kwargs: Any) -> RunRecord:
    """A resumed one-shot turn: 1000 ms; unseparated, its init line was its first line."""
    if separated:
        base = rec(total=1000.0, cli=300.0, init=400.0, model=300.0, **kwargs)
        source = "model_request"
    else:
        base = rec(total=1000.0, cli=700.0, init=0.0, model=300.0, **kwargs)
        source = "init_message"
    return attrs.evolve(
        base,
        session_init_source=source,
        first_token_granularity="message" if message else "delta",
        first_token_kind="text",
    )


def table_text(records: list[RunRecord]) -> str:
    console = Console(width=260, record=True, color_system=None)
    console.print(report_table(build_report(records, "local")))
    return console.export_text()


# --- report -----------------------------------------------------------------------------


def test_unseparated_runs_have_no_session_init_figure() -> None:
    records = [one_shot(separated=False) for _ in range(10)]
    report = build_report(records, "local")
    (row,) = report.rows
    assert not row.key.separated
    assert row.key.label == "turn 2+ · resumed · init not separated"
    assert row.metrics["session_init_ms"].n == 0  # not "0 / 0": no values at all
    assert row.session_init_share.n == 0
    assert row.metrics["cli_ready_ms"].p50 == 700.0  # kept: it is the boot and the set-up
    data = report_to_json(report)["rows"][0]
    assert data["separated"] is False
    assert data["metrics"]["session_init_ms"] is None
    assert data["session_init_share"] is None
    assert data["cli_ready_covers"] == "boot + session set-up"
    assert data["not_separated"] == {"runs": 10, "reason": NOT_SEPARATED}
    assert "--observe-provider" in NOT_SEPARATED
    text = table_text(records)
    # cli_ready, then session_init and the init share: no 0 / 0, no 0 %.
    assert "│ 700 / 700† │ not separated │" in text
    assert text.rstrip().count("not separated │") >= 2
    assert "0%" not in text
    assert "† cli_ready is the CLI's boot and the session set-up together" in text


def test_mixed_runs_split_into_cohorts_never_pooled() -> None:
    records = [one_shot(separated=True) for _ in range(4)] + [
        one_shot(separated=False) for _ in range(6)
    ]
    report = build_report(records, "local")
    by_separation = {row.key.separated: row for row in report.rows}
    assert by_separation[True].runs == 4
    assert by_separation[True].metrics["session_init_ms"].p50 == 400.0
    assert by_separation[True].metrics["cli_ready_ms"].p50 == 300.0  # the boot alone
    assert by_separation[True].session_init_share.p50 == pytest.approx(0.4)
    assert by_separation[False].runs == 6
    assert by_separation[False].metrics["session_init_ms"].n == 0


def test_whole_message_first_tokens_are_flagged_on_the_model_segment() -> None:
    records = [one_shot(separated=True, message=i % 2 == 0) for i in range(6)]
    (row,) = build_report(records, "local").rows
    assert row.message_granular == 3
    data = report_to_json(build_report(records, "local"))["rows"][0]
    assert data["message_granular"] == 3
    assert "late by the message's generation time" in data["model_first_token_note"]
    text = table_text(records)
    assert "300 / 300*" in text
    assert "* first token is a whole message" in text


def test_chart_draws_the_boot_and_set_up_bar_and_no_session_init(tmp_path: Path) -> None:
    records = [one_shot(separated=False, message=True) for _ in range(5)]
    path = write_chart(build_report(records, "local"), records, tmp_path / "r.svg")
    svg = path.read_text("utf-8")
    assert "boot + session set-up: init not separated" in svg
    assert "whole message: late by its generation" in svg
    assert "session_init (create / resume session)" not in svg  # no session_init bar
    assert "CLI boot)" not in svg  # the plain boot label is not claimed


# --- gate ---------------------------------------------------------------------------------


def test_gate_answers_not_separated_from_a_population_without_separated_runs() -> None:
    # The seed scenario: ten resumed Claude Code turns timed without --observe-provider.
    records = [one_shot(separated=False) for _ in range(10)]
    verdict = gate_records(records, agent="claude_code", window=None)
    assert verdict.decision is Decision.NOT_SEPARATED  # was warm_process_pool, exit 10
    assert verdict.exit_code == 4
    assert verdict.population.n == 0
    assert verdict.population.not_separated == 10
    assert "--observe-provider" in verdict.explanation
    assert "none of the 10 succeeded" in verdict.explanation
    data = verdict.to_dict()
    assert (data["verdict"], data["n"], data["not_separated"]) == ("not_separated", 0, 10)
    assert data["session_init_share"] == {"p50": None, "p90": None}


def test_gate_decides_a_mixed_population_from_the_separated_runs_only() -> None:
    records = [one_shot(separated=True) for _ in range(20)] + [
        one_shot(separated=False) for _ in range(15)
    ]
    verdict = gate_records(records, agent="claude_code", window=None)
    assert verdict.decision is Decision.SESSION_REUSE  # 40 % init, from the 20 separated
    assert verdict.population.n == 20
    assert verdict.population.not_separated == 15
    assert verdict.population.session_init_share.p50 == pytest.approx(0.4)
    assert "15 left out whose session init was not separated" in verdict.explanation
    assert "--observe-provider" in verdict.explanation


def test_gate_from_an_aggregated_report_counts_the_unseparated_cohort() -> None:
    records = [one_shot(separated=True) for _ in range(20)] + [
        one_shot(separated=False) for _ in range(7)
    ]
    verdict = gate_report(build_report(records, "posthog"), agent="claude_code", window=None)
    assert verdict.decision is Decision.SESSION_REUSE
    assert (verdict.population.n, verdict.population.not_separated) == (20, 7)
    only = gate_report(
        build_report(records[20:], "posthog"), agent="claude_code", window=None
    )
    assert only.decision is Decision.NOT_SEPARATED


def test_cli_gate_exit_code_and_runs_marks(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "runs.sqlite3"
    store = Store(path)
    for _ in range(10):
        store.add(one_shot(separated=False, now=now))
    store.close()
    result = CliRunner().invoke(main, ["gate", "--store", str(path), "--json", "--min-runs",
                                       "10"])
    assert result.exit_code == 4, result.output
    assert json.loads(result.stdout)["verdict"] == "not_separated"
    table = CliRunner().invoke(main, ["runs", "--store", str(path)], terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "not separated" in table.stdout
    assert "700.0†" in table.stdout
    assert "† cli_ready is the CLI's boot and the session set-up together" in table.stdout
    report = CliRunner().invoke(main, ["report", "--store", str(path), "--json"])
    (row,) = json.loads(report.stdout)["rows"]
    assert row["metrics"]["session_init_ms"] is None


# --- ab -------------------------------------------------------------------------------------


def test_ab_session_init_is_not_a_difference_of_unmeasured_zeros() -> None:
    pairs = [
        AbPair(i, "fresh", one_shot(separated=False, resumed=False),
               one_shot(separated=False))
        for i in range(1, 6)
    ]
    result = analyze("E", pairs, resamples=200)
    init = result.effect("session_init_ms")
    assert (init.n, init.mean_ms, init.not_separated, init.dropped) == (0, None, 5, 0)
    cli = result.effect("cli_ready_ms")
    assert (cli.n, cli.not_separated) == (5, 5)  # measured, and marked boot + set-up
    data = result.to_dict()["segments"]["session_init_ms"]
    assert data["not_separated"] == 5
    assert data["note"] == NOT_SEPARATED
    separated = [
        AbPair(i, "fresh", one_shot(separated=True, resumed=False), one_shot(separated=True))
        for i in range(1, 6)
    ]
    assert analyze("F", separated, resamples=200).effect("session_init_ms").n == 5


# --- PostHog answers that are no result ------------------------------------------------


class _Canned(BaseHTTPRequestHandler):
    """A query API that answers every request with one canned status and body."""

    status = 200
    body: bytes = b"{}"
    delay_s = 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet."""


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the timeout case) is no error of the server's."""


@pytest.fixture
def canned() -> Iterator[type[_Canned]]:
    handler = type("Handler", (_Canned,), {})
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


ANSWERS = [
    pytest.param(200, {"columns": ["agent"], "results": []}, 0.0,
                 "lacks the columns", "POSTHOG_HOST", id="missing-columns"),
    pytest.param(400, {"type": "validation_error", "detail": "Unsupported function call"}, 0.0,
                 "refused the report's query (400", "--source local", id="400"),
    pytest.param(401, {"detail": "Personal API key found in request is invalid."}, 0.0,
                 "rejected the personal API key (401", "POSTHOG_PERSONAL_API_KEY", id="401"),
    pytest.param(200, {"columns": [], "results": []}, 3.0,
                 "did not answer within 1 s", "TTFT_PROBE_QUERY_TIMEOUT_S", id="timeout"),
]


@pytest.mark.parametrize(("status", "body", "delay", "says", "fix"), ANSWERS)
@pytest.mark.parametrize("command", ["report", "gate"])
def test_posthog_answers_that_are_no_result_are_one_clear_line(  # noqa: PLR0917
    command: str, status: int, body: dict[str, Any], delay: float, says: str, fix: str,
    canned: type[_Canned], monkeypatch: pytest.MonkeyPatch,
) -> None:
    canned.status, canned.body, canned.delay_s = status, json.dumps(body).encode(), delay
    monkeypatch.setenv("POSTHOG_HOST", canned.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("POSTHOG_PROJECT_ID", "1")
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phx_secret_value")
    monkeypatch.setenv("TTFT_PROBE_QUERY_TIMEOUT_S", "1")
    result = CliRunner().invoke(main, [command, "--source", "posthog"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""  # nothing that looks like a result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ttft-probe: error: ")
    assert says in lines[0]
    assert fix in lines[0]
    assert "phx_secret_value" not in result.stderr


def test_posthog_unreachable_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("POSTHOG_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("POSTHOG_PROJECT_ID", "1")
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phx_secret_value")
    result = CliRunner().invoke(main, ["report", "--source", "posthog"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "cannot reach PostHog" in result.stderr
    assert "check POSTHOG_HOST" in result.stderr


def test_now_is_not_needed() -> None:
    assert NOW.tzinfo is UTC  # the records above are dated from helpers.records' NOW
