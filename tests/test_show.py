"""`ttft-probe show RUN_ID`: one run's markers and model requests on one time axis.

The stored run is a resumed turn 2 timed by ``stream_times`` (cliReady 480, sessionInitDone
900, firstToken 1400, end 2000 ms) with three model requests, stored out of arrival order:
a title side call (820 → first byte 1100 → 1250 ms), the generation (900 → 1380 → 1990 ms,
24,512 input tokens of which 4,100 cache read and 20,400 cache write) and a count_tokens
call (1500 → 1620 ms, no content byte). A second run, with the observer off and no
cliReady, shares the first 9 characters of its id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.patches import Rectangle

from helpers.records import MS, START, STREAM_RUN_ID, stream_record, stream_times
from ttft_probe.analysis.waterfall_view import (
    NOT_OBSERVED,
    OBSERVER_OFF,
    build_view,
    waterfall_figure,
)
from ttft_probe.cli import main
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.sinks.store import Store
from ttft_probe.waterfall import ModelRequest, RequestKind, RequestUsage

OFF_RUN_ID = "0b7c2f1e-aaaa-4c7b-9d55-3f1f3b0f6a11"
HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-5"


def at(ms: int) -> int:
    return START + ms * MS


TITLE = ModelRequest(
    1, "anthropic", RequestKind.TITLE, at(820), model=HAIKU, first_content_ns=at(1100),
    end_ns=at(1250), status=200, request_bytes=2048, usage=RequestUsage(180, 0, 0, 12),
)
GENERATION = ModelRequest(
    2, "anthropic", RequestKind.GENERATION, at(900), model=SONNET, first_content_ns=at(1380),
    end_ns=at(1990), status=200, request_bytes=100_659,
    usage=RequestUsage(24_512, 4_100, 20_400, 312), has_tools=True,
)
COUNT = ModelRequest(
    3, "anthropic", RequestKind.COUNT_TOKENS, at(1500), model=SONNET, end_ns=at(1620),
    status=200, request_bytes=50_000, usage=RequestUsage(24_000),
)
USAGE_FIELDS: dict[str, Any] = {
    "model_request_count": 3,
    "first_request_input_tokens": 24_512,
    "first_request_cache_read_tokens": 4_100,
    "first_request_cache_write_tokens": 20_400,
    "first_request_uncached_tokens": 20_412,
    "first_request_bytes": 100_659,
    "prefix_status": "broken",
    "prefix_break": "system[1]",
    "prefix_reused_bytes": 12_345,
}


def observed_run() -> tuple[RunRecord, MarkerTimes]:
    times = stream_times()
    record = stream_record(times, turn_ordinal=2, session_resumed=True, observer_status="on",
                           **USAGE_FIELDS)
    return record, times


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    store = Store(tmp_path / "runs.sqlite3")
    record, times = observed_run()
    store.add(record, times, requests=[COUNT, GENERATION, TITLE])  # not in arrival order
    off_times = stream_times(cli_ready_ns=None)
    store.add(stream_record(off_times, run_id=OFF_RUN_ID), off_times)
    store.close()
    return store.path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def raw_rows(stdout: str) -> dict[str, list[str]]:
    """The table's body rows by their kind / marker cell, each as its cells, padding kept."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = line.strip("│").split("│")
            rows[cells[1 if len(cells) > 3 else 0].strip()] = cells
    return rows


def table_rows(stdout: str) -> dict[str, list[str]]:
    """:func:`raw_rows` with every cell stripped."""
    return {k: [c.strip() for c in v] for k, v in raw_rows(stdout).items()}


def test_table_has_every_marker_and_request_with_its_numbers(store_path: Path) -> None:
    result = invoke("show", "--store", str(store_path), STREAM_RUN_ID)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == (
        f"claude_code · run {STREAM_RUN_ID} · turn 2 (resumed) · succeeded")
    rows = table_rows(out)
    assert list(rows) == ["processSpawned", "cliReady", "sessionInitDone", "firstToken", "end",
                          "title", "generation*", "count_tokens"]  # requests by arrival
    assert [rows[m][4] for m in list(rows)[:5]] == ["0.0", "480.0", "900.0", "1,400.0",
                                                     "2,000.0"]
    cells = {k: v[:13] for k, v in rows.items()}
    assert cells["title"] == ["1", "title", HAIKU, "200", "820.0", "1,100.0", "1,250.0", "2.0",
                              "180", "0", "0", "180", "12"]
    assert cells["generation*"] == ["2", "generation*", SONNET, "200", "900.0", "1,380.0",
                                    "1,990.0", "98.3", "24,512", "4,100", "20,400", "20,412",
                                    "312"]
    # count_tokens says nothing of the cache: no uncached figure either.
    assert cells["count_tokens"] == ["3", "count_tokens", SONNET, "200", "1,500.0", "—",
                                     "1,620.0", "48.8", "24,000", "—", "—", "—", "—"]
    # The bars share one axis, 0 → 2,000 ms over 40 columns (column = round(ms / 2000 * 39)).
    bars = {k: cells[-1] for k, cells in raw_rows(out).items()}
    assert bars["generation*"] == " " + " " * 18 + "█" * 9 + "░" * 13 + " "
    assert bars["count_tokens"].rstrip() == " " + " " * 29 + "▒" * 4  # columns 29–32
    assert bars["processSpawned"].rstrip() == " ┃"
    assert bars["end"] == " " + " " * 39 + "┃ "
    assert "prefix: broken at system[1] · 12,345 bytes reused (12.1 KiB)" in out
    assert ("first generation request (#2): 24,512 input tokens = 4,100 cache read + 20,412 "
            "uncached · 20,400 cache write · 16.7% from the cache · 312 output tokens · "
            "98.3 KiB body · 3 model requests in the turn") in out
    assert ("segments (ms): spawn_to_first_token 1,400.0 = cli_ready 480.0 + session_init "
            "420.0 + client_wait 0.0 + model_first_token 500.0") in out


def test_a_unique_prefix_of_the_run_id_is_enough(store_path: Path) -> None:
    by_prefix = invoke("show", "--store", str(store_path), "0B7C2F1E-5", "--json")
    assert by_prefix.exit_code == 0, by_prefix.output
    assert json.loads(by_prefix.stdout)["run_id"] == STREAM_RUN_ID
    off = invoke("show", "--store", str(store_path), "0b7c2f1e-a", "--json")
    assert json.loads(off.stdout)["run_id"] == OFF_RUN_ID


def test_json_has_markers_requests_and_the_nine_fields(store_path: Path) -> None:
    result = invoke("show", "--store", str(store_path), STREAM_RUN_ID, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["origin"] == "processSpawned"
    assert (data["agent"], data["turn_ordinal"], data["how"], data["status"]) == (
        "claude_code", 2, "resumed", "succeeded")
    assert data["markers"] == {"processSpawned": 0.0, "cliReady": 480.0,
                               "sessionInitDone": 900.0, "firstToken": 1400.0, "end": 2000.0}
    assert data["marker_notes"] == {}
    assert data["record"] == USAGE_FIELDS
    assert data["segments"]["model_first_token_ms"] == 500.0
    assert data["segments"]["provider_first_byte_ms"] is None  # null stays null
    assert data["observer_status"] == "on"
    assert data["requests_note"] is None
    assert [r["kind"] for r in data["requests"]] == ["title", "generation", "count_tokens"]
    assert data["requests"][1] == {
        "request_id": 2, "api": "anthropic", "kind": "generation", "model": SONNET,
        "status": 200, "start_ms": 900.0, "first_byte_ms": 1380.0, "end_ms": 1990.0,
        "request_bytes": 100_659, "input_tokens": 24_512, "cache_read_tokens": 4_100,
        "cache_write_tokens": 20_400, "uncached_tokens": 20_412, "output_tokens": 312,
        "first_generation": True,
    }
    assert data["requests"][2]["first_byte_ms"] is None
    assert not data["requests"][0]["first_generation"]


def test_svg_chart_has_one_bar_per_request(store_path: Path, tmp_path: Path) -> None:
    chart = tmp_path / "waterfall.svg"
    result = invoke("show", "--store", str(store_path), STREAM_RUN_ID, "--chart", str(chart))
    assert result.exit_code == 0, result.output
    assert f"chart written to {chart}" in result.stderr
    svg = chart.read_text("utf-8")
    assert svg.lstrip().startswith("<?xml")
    assert svg.rstrip().endswith("</svg>")
    assert sorted(re.findall(r'id="request-(\d+)"', svg)) == ["1", "2", "3"]
    # A first-byte mark for each request that had a content byte (not count_tokens).
    assert sorted(re.findall(r'id="request-(\d+)-first-byte"', svg)) == ["1", "2"]


def test_png_chart_is_a_png(store_path: Path, tmp_path: Path) -> None:
    chart = tmp_path / "waterfall.png"
    result = invoke("show", "--store", str(store_path), OFF_RUN_ID, "--chart", str(chart))
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_chart_bars_span_arrival_to_end_and_first_byte() -> None:
    record, times = observed_run()
    fig = waterfall_figure(build_view(record, times, [GENERATION, COUNT, TITLE]))
    (ax,) = fig.axes
    bars = {p.get_gid(): (p.get_x(), p.get_width()) for p in ax.patches
            if isinstance(p, Rectangle) and p.get_gid()}
    assert bars == {
        "request-1": (820.0, 430.0), "request-1-first-byte": (820.0, 280.0),
        "request-2": (900.0, 1090.0), "request-2-first-byte": (900.0, 480.0),
        "request-3": (1500.0, 120.0),
    }
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        f"#1 title\n{HAIKU}", f"#2 generation*\n{SONNET}", f"#3 count_tokens\n{SONNET}"]
    assert fig.get_suptitle() == f"claude_code · run {STREAM_RUN_ID} · turn 2 (resumed)"
    lines = [float(np.asarray(line.get_xdata())[0]) for line in ax.get_lines()]
    assert lines == [0.0, 480.0, 900.0, 1400.0, 2000.0]  # one vertical line per marker


def test_observer_off_says_so_and_a_missing_marker_is_not_zero(store_path: Path) -> None:
    result = invoke("show", "--store", str(store_path), OFF_RUN_ID)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert rows["cliReady"] == ["cliReady", "—", NOT_OBSERVED]
    assert OBSERVER_OFF in result.stdout
    assert "prefix: not checked (observer off)" in result.stdout
    assert "first generation request: not observed (observer off)" in result.stdout
    assert "cli_ready —" in result.stdout
    data = json.loads(invoke("show", "--store", str(store_path), OFF_RUN_ID, "--json").stdout)
    assert data["markers"]["cliReady"] is None
    assert data["marker_notes"] == {"cliReady": NOT_OBSERVED}
    assert data["segments"]["cli_ready_ms"] is None
    assert data["requests"] is None
    assert data["requests_note"] == OBSERVER_OFF
    assert set(data["record"].values()) == {None}


def test_unknown_run_id_exits_2_naming_the_fix(store_path: Path) -> None:
    result = invoke("show", "--store", str(store_path), "abc")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (f"ttft-probe: error: no run abc… in {store_path}; `ttft-probe "
                             "runs` lists them (or point --store at another store)\n")


def test_ambiguous_run_id_exits_2_listing_the_matches(store_path: Path) -> None:
    result = invoke("show", "--store", str(store_path), "0b7c2f1e")
    assert result.exit_code == 2
    assert result.stderr.startswith("ttft-probe: error: 2 runs start with 0b7c2f1e (")
    assert STREAM_RUN_ID in result.stderr
    assert OFF_RUN_ID in result.stderr
    assert "give more of the run id" in result.stderr


def test_chart_needs_a_png_or_svg_name(store_path: Path, tmp_path: Path) -> None:
    result = invoke("show", "--store", str(store_path), STREAM_RUN_ID, "--chart",
                    str(tmp_path / "w.pdf"))
    assert result.exit_code == 2
    assert "use a .png or .svg name" in result.stderr
    assert not (tmp_path / "w.pdf").exists()


def test_reused_process_turn_is_timed_from_its_prompt() -> None:
    prompt = at(5000)
    # As the turn assembler closes a reused turn: no set-up of its own (DESIGN §3).
    times = MarkerTimes(start_ns=prompt, cli_ready_ns=prompt, session_init_done_ns=prompt,
                        prompt_sent_ns=prompt, first_token_ns=prompt + 700 * MS,
                        end_ns=prompt + 900 * MS)
    record = stream_record(times, request_driven=True, process_reused=True, turn_ordinal=3,
                           observer_status="on")
    request = moved(GENERATION, prompt + 20 * MS)
    view = build_view(record, times, [request])
    data = view.to_dict()
    assert data["how"] == "process_reused"
    assert data["origin"] == "promptSent"
    assert data["markers"] == {"processSpawned": None, "cliReady": None, "sessionInitDone": None,
                               "promptSent": 0.0, "firstToken": 700.0, "end": 900.0}
    assert data["marker_notes"]["cliReady"] == "none of its own (reused process)"
    assert data["requests"][0]["start_ms"] == 20.0
    assert data["requests"][0]["first_byte_ms"] == 500.0


def moved(request: ModelRequest, arrival_ns: int) -> ModelRequest:
    """``request`` moved to arrive at ``arrival_ns`` (its other times shifted alike)."""
    shift = arrival_ns - request.arrival_ns
    return ModelRequest(
        request.request_id, request.api, request.kind, arrival_ns, model=request.model,
        first_content_ns=None if request.first_content_ns is None
        else request.first_content_ns + shift,
        end_ns=None if request.end_ns is None else request.end_ns + shift,
        status=request.status, request_bytes=request.request_bytes, usage=request.usage,
    )


def test_without_marker_times_requests_are_timed_from_the_first_one() -> None:
    record, _ = observed_run()
    view = build_view(record, None, [GENERATION, TITLE])
    assert view.origin == "first model request"
    assert [(r.kind, r.start_ms) for r in view.requests or ()] == [("title", 0.0),
                                                                   ("generation", 80.0)]
    assert {m.note for m in view.markers} == {"not stored"}
    assert all(m.at_ms is None for m in view.markers)


def test_observer_on_without_requests_says_none_was_seen(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.sqlite3")
    record, times = observed_run()
    store.add(record, times, requests=[])
    result = invoke("show", "--store", str(store.path), STREAM_RUN_ID[:8])
    assert result.exit_code == 0, result.output
    assert "the observer saw no model-bound request in this turn" in result.stdout
    assert OBSERVER_OFF not in result.stdout


def test_help_names_the_argument_and_options() -> None:
    result = invoke("show", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for part in ("show [OPTIONS] RUN_ID", "--json", "--chart FILE", "--store",
                 "a unique start of it", '"not observed", never 0', "--observe-provider"):
        assert part in text
    assert "show RUN_ID" in invoke("--help").stdout


def test_requests_are_ordered_by_arrival_not_by_id() -> None:
    record, times = observed_run()
    late = moved(TITLE, at(950))
    early = ModelRequest(9, "anthropic", RequestKind.HEAD, at(300), end_ns=at(310), status=200)
    view = build_view(record, times, [late, early])
    assert [(r.request_id, r.start_ms) for r in view.requests or ()] == [(9, 300.0), (1, 950.0)]
    assert view.first_generation is None  # neither is a generation


def test_a_reused_prompt_first_turn_has_its_own_session_set_up_but_no_cli_ready() -> None:
    # Claude Code in SDK mode, turn 2+: the session set-up follows the prompt (its own
    # reading); cliReady is the turn start by construction and never shown as 0.
    prompt = at(5000)
    times = MarkerTimes(start_ns=prompt, cli_ready_ns=prompt,
                        session_init_done_ns=prompt + 50 * MS, prompt_sent_ns=prompt,
                        first_token_ns=prompt + 700 * MS, end_ns=prompt + 900 * MS)
    assert times.prompt_first  # promptSent before sessionInitDone
    record = stream_record(times, request_driven=True, process_reused=True, turn_ordinal=2)
    data = build_view(record, times, None).to_dict()
    assert data["markers"]["cliReady"] is None
    assert data["marker_notes"]["cliReady"] == "none of its own (reused process)"
    assert data["markers"]["sessionInitDone"] == 50.0
    assert list(data["markers"])[:2] == ["processSpawned", "promptSent"]
