"""The four sans-I/O adapters, driven by recorded transcripts, plus LineSplitter and registry.

Transcripts live in ``tests/transcripts/<family>/<case>.jsonl`` (loaded by
:mod:`helpers.transcripts`). ``<case>.expected.json`` holds the runs the turn assembler
must close, with their markers as line indexes (0-based, meta not counted), ``null``, or
``"eof"`` for the time of ``close()``. Every case that has an expectation file is
collected automatically, and replayed through the family's adapter, the real
:class:`~ttft_probe.turns.TurnAssembler` and the real record builder.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.transcripts import Transcript, load, paths
from reliability import fault_case
from ttft_probe._clock import WallAnchor
from ttft_probe._run import CallerContext, RunBuilder, RunResult
from ttft_probe.adapters import (
    Adapter,
    AdapterOptions,
    Event,
    LineSplitter,
    MarkerObserved,
    TurnEnded,
    UsageReported,
    acp_json_rpc,
    adapter_for,
    claude_stream_json,
    json_event_stream,
    registered_families,
)
from ttft_probe.adapters.acp_json_rpc import AcpJsonRpcAdapter
from ttft_probe.adapters.claude_stream_json import ClaudeStreamJsonAdapter
from ttft_probe.adapters.json_event_stream import JsonEventStreamAdapter
from ttft_probe.adapters.plain import PlainAdapter
from ttft_probe.agents import resolve_agent
from ttft_probe.errors import ConfigError, UnknownAdapterError
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
)
from ttft_probe.turns import ClosedTurn, ExitInfo, TurnAssembler

ADAPTERS: dict[RuntimeFamily, type[Any]] = {
    RuntimeFamily.CLAUDE_STREAM_JSON: ClaudeStreamJsonAdapter,
    RuntimeFamily.JSON_EVENT_STREAM: JsonEventStreamAdapter,
    RuntimeFamily.ACP_JSON_RPC: AcpJsonRpcAdapter,
    RuntimeFamily.PLAIN: PlainAdapter,
}
ANCHOR = WallAnchor(wall_ns=1_750_000_000_000_000_000, mono_ns=0)


# --- transcript replay -----------------------------------------------------------------


def transcript_cases() -> list[Any]:
    return [pytest.param(path, id=f"{path.parent.name}/{path.stem}") for path in paths()]


def replay(tr: Transcript) -> tuple[Adapter, list[tuple[int, Event, bool]]]:
    """Feed the transcript to its adapter; ``(t, event, from_close)`` in emission order."""
    adapter = adapter_for(tr.family, tr.options())
    out: list[tuple[int, Event, bool]] = []
    for line in tr.lines:
        if line.stream == "stdout":
            data = line.data + b"\n" if adapter.framing == "chunks" else line.data
            out.extend((line.t_ns, ev, False) for ev in adapter.feed_stdout(data, line.t_ns))
        elif line.stream == "stdin":
            out.extend((line.t_ns, ev, False) for ev in adapter.feed_stdin(line.data, line.t_ns))
    out.extend((tr.eof_ns, ev, True) for ev in adapter.close(tr.eof_ns))
    return adapter, out


def assembled(tr: Transcript) -> list[tuple[ClosedTurn, RunResult]]:
    """The turns the real assembler closes (spawn at t = 0, exit just after EOF), built."""
    adapter, events = replay(tr)
    assembler = TurnAssembler(
        spawn_ns=0,
        request_driven=adapter.request_driven,
        prompt_first=getattr(adapter, "prompt_first", False),
        session_init_observable=adapter.session_init_observable,
        cli_ready_observable=lambda: getattr(adapter, "cli_ready_observable", True),
    )
    closed = [turn for _, ev, _ in events for turn in assembler.feed([ev])]
    closed += assembler.exit(ExitInfo(t_ns=tr.eof_ns + 1, returncode=tr.meta.get("exit_code", 0)))
    builder = RunBuilder(
        agent=resolve_agent(tr.meta["argv"], agent=tr.meta.get("agent")),
        caller=CallerContext(),
        anchor=ANCHOR,
        probe_version="transcript",
        request_driven=adapter.request_driven,
        prompt_first=assembler.prompt_first,
    )
    return [(turn, builder.build(turn, None, None)) for turn in closed]


def _describe(tr: Transcript, t: int | None) -> str:
    idx = [line.index for line in tr.lines if line.t_ns == t]
    return f"{t} (line {idx})" if idx else repr(t)


def _own(turn: ClosedTurn, t_ns: int | None, *, prompt_first: bool) -> int | None:
    """A reused process's marker that is its start by construction (no set-up of its own)."""
    if turn.process_reused and t_ns == turn.times.start_ns and not prompt_first:
        return None
    return t_ns


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens")  # fmt: skip
REPORTED = {"ttft_ms": "agent_reported_ttft_ms",
            "time_to_request_ms": "agent_reported_time_to_request_ms",
            "duration_api_ms": "agent_reported_duration_api_ms"}  # fmt: skip


@pytest.mark.parametrize("path", transcript_cases())
def test_transcript(path: Path) -> None:
    """Each run's markers, outcome and identity, as the expectation says."""
    tr = load(path)
    runs = sorted(assembled(tr), key=lambda pair: pair[0].run_index)  # in prompt order
    if "adapter_markers" in tr.expected:
        check_adapter_markers(tr)
    expected = tr.expected["turns"]
    assert len(runs) == len(expected), f"{len(runs)} runs, expected {len(expected)}"
    for n, ((turn, run), exp) in enumerate(zip(runs, expected, strict=True), start=1):
        times, record = turn.times, run.record.to_dict()
        prompt_first = times.prompt_first
        ready = times.cli_ready_ns
        if turn.process_reused and ready == times.start_ns:
            ready = None  # a reused run waited for no turn before it
        got: dict[str, int | None] = {
            "cliReady": ready,
            "sessionInitDone": _own(turn, times.session_init_done_ns, prompt_first=prompt_first),
            "promptSent": times.prompt_sent_ns,
            "firstToken": times.first_token_ns,
            "turn_end": turn.ended_ns,
        }
        for key, value in got.items():
            if key in exp:
                want = tr.time_of(exp[key])
                assert value == want, (
                    f"run {n} {key}: got {_describe(tr, value)}, expected line {exp[key]}"
                )
        for key in ("status", "process_reused", "turn_ordinal", "session_id", "session_resumed",
                    "first_token_granularity", "first_token_kind", "timing_unavailable_reason",
                    "session_init_source", "model", "agent_version"):  # fmt: skip
            if key in exp:
                assert record[key] == exp[key], f"run {n} {key}: got {record[key]!r}"
        if "prior_turns" in exp:
            prior = None if turn.session is None else turn.session.prior_turns
            assert prior == exp["prior_turns"], f"run {n} prior_turns: got {prior!r}"
        if "usage" in exp:
            usage = {key: record[key] for key in USAGE_FIELDS}
            got_usage = None if all(v is None for v in usage.values()) else usage
            assert got_usage == exp["usage"], f"run {n} usage: got {got_usage!r}"
        if "agent_reported" in exp:
            reported = {key: record[field] for key, field in REPORTED.items()}
            got_reported = None if all(v is None for v in reported.values()) else reported
            assert got_reported == exp["agent_reported"], f"run {n} agent_reported"
        if prompt_first:
            assert (record["remainder_ms"] == 0) is (record["timing_unavailable_reason"] is None)


def check_adapter_markers(tr: Transcript) -> None:
    """Every marker the adapter emits, for cases whose runs do not show them all."""
    _, events = replay(tr)
    got = []
    for t_ns, ev, _ in events:
        if isinstance(ev, MarkerObserved):
            entry: dict[str, Any] = {"marker": ev.marker.value, "line": _line_at(tr, t_ns)}
            if ev.session_id is not None:
                entry["session_id"] = ev.session_id
            got.append(entry)
    assert got == tr.expected["adapter_markers"]


def _line_at(tr: Transcript, t_ns: int) -> int | str:
    if t_ns == tr.eof_ns:
        return "eof"
    [index] = [line.index for line in tr.lines if line.t_ns == t_ns]
    return index


@pytest.mark.parametrize("path", transcript_cases())
def test_cheap_path_changes_no_event(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The substring pre-checks that skip json decoding after the first token are exact."""
    tr = load(path)
    _, fast = replay(tr)
    # An empty needle is in every line, so every line is decoded.
    monkeypatch.setattr(claude_stream_json, "_RESULT_NEEDLES", (b"",))
    monkeypatch.setattr(json_event_stream, "_LATE_NEEDLES", (b"",))
    monkeypatch.setattr(acp_json_rpc, "_LATE_NEEDLES", (b"",))
    _, slow = replay(tr)
    assert fast == slow


def test_transcripts_are_collected() -> None:
    families = {p.values[0].parent.name for p in transcript_cases()}
    assert families == {f.value for f in RuntimeFamily}


# --- protocol conformance and robustness ----------------------------------------------


@pytest.mark.parametrize("family", list(RuntimeFamily))
def test_adapter_satisfies_protocol(family: RuntimeFamily) -> None:
    adapter = adapter_for(family.value)
    assert isinstance(adapter, Adapter)
    assert isinstance(adapter, ADAPTERS[family])
    assert adapter.family is family
    assert adapter.framing == ("chunks" if family is RuntimeFamily.PLAIN else "lines")
    assert adapter.request_driven is (family is RuntimeFamily.ACP_JSON_RPC)
    assert adapter.tees_stdin is (family is RuntimeFamily.ACP_JSON_RPC)
    assert adapter.session_init_observable is (family is not RuntimeFamily.PLAIN)


def test_plain_session_init_observable_only_with_regex() -> None:
    adapter = PlainAdapter(AdapterOptions(session_init_regex=re.compile("ready")))
    assert adapter.session_init_observable


HOSTILE_LINES = [
    b"",
    b"\xff\xfe\x00garbage",
    b"\xc3",
    b"not json",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"1e999999",
    b"9" * 5000,
    b"[" * 100_000,
    b'{"type": null}',
    b'{"type": 5, "event": []}',
    b'{"type": "stream_event", "event": "x"}',
    b'{"type": "stream_event", "event": {"type": "content_block_delta", "delta": []}}',
    b'{"type": "assistant", "message": {"content": {"a": 1}}}',
    b'{"type": "assistant", "message": {"content": [1, null, {"type": "text", "text": 3}]}}',
    b'{"type": "result", "usage": [], "is_error": "yes"}',
    b'{"type": "result", "usage": {"input_tokens": "12", "output_tokens": 1.5}}',
    b'{"type": "item.completed", "item": "x"}',
    b'{"type": "message", "role": "assistant", "content": ["x"]}',
    b'{"type": "init", "session_id": 7, "model": {}}',
    b'{"type": "turn.completed", "usage": 3}',
    b'{"jsonrpc": "2.0", "id": {"a": 1}, "result": {}}',
    b'{"jsonrpc": "2.0", "id": true, "result": {}}',
    b'{"jsonrpc": "2.0", "id": 99, "result": {"sessionId": 5}}',
    b'{"jsonrpc": "2.0", "id": 1, "error": "bad"}',
    b'{"jsonrpc": "2.0", "method": "session/update", "params": []}',
    b'{"jsonrpc": "2.0", "method": "session/update", "params": {"update": "x"}}',
    (
        b'{"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": [], '
        b'"update": {"sessionUpdate": "agent_message_chunk", "content": {"text": 5}}}}'
    ),
    b'{"method": "turn/completed", "params": {"turn": "x"}}',
    b'{"method": "item/agentMessage/delta", "params": {"threadId": 1, "delta": []}}',
    b'{"method": "thread/tokenUsage/updated", "params": {"tokenUsage": {"last": 1}}}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "session/prompt", "params": null}',
    b'{"jsonrpc": "2.0", "id": 2, "method": "session/load", "params": {"sessionId": 3}}',
    b'{"id": 3.5, "method": "session/new"}',
]


@pytest.mark.fault(
    "Bad input",
    "hostile lines (cut JSON, deep nesting, huge numbers, wrong types) straight into each adapter",
    outcome="no raise, on stdout or stdin, with and without user patterns",
    agent="n/a",
    records_lost="n/a",
)
@pytest.mark.parametrize("family", list(RuntimeFamily))
def test_hostile_input_never_raises(family: RuntimeFamily) -> None:
    opts = AdapterOptions(
        cli_ready_regex=re.compile("x"),
        session_init_regex=re.compile("y$"),
        first_token_regex=re.compile(r"\d"),
    )
    for options in (AdapterOptions(), opts):
        adapter = adapter_for(family.value, options)
        for t, line in enumerate(HOSTILE_LINES * 2):
            adapter.feed_stdin(line, t)
            adapter.feed_stdout(line, t)
        adapter.close(len(HOSTILE_LINES) * 2)
        adapter.close(len(HOSTILE_LINES) * 2 + 1)


@pytest.mark.fault(
    "Bad input",
    "random byte lines and hostile lines straight into each adapter",
    outcome="no raise; a sequence of events back",
    agent="n/a",
    records_lost="n/a",
)
@pytest.mark.parametrize("family", list(RuntimeFamily))
@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.binary(max_size=64) | st.sampled_from(HOSTILE_LINES), max_size=20))
def test_random_bytes_never_raise(family: RuntimeFamily, lines: list[bytes]) -> None:
    fault_case()
    adapter = adapter_for(family.value)
    for t, line in enumerate(lines):
        assert isinstance(adapter.feed_stdout(line, t), list | tuple)
        assert isinstance(adapter.feed_stdin(line, t), list | tuple)
    adapter.close(len(lines))


def _markers(events: list[Event]) -> list[tuple[Marker, int]]:
    return [(e.marker, e.t_ns) for e in events if isinstance(e, MarkerObserved)]


def test_claude_cheap_path_still_sees_result_after_first_token() -> None:
    a = ClaudeStreamJsonAdapter(AdapterOptions())
    a.feed_stdout(b'{"type":"system","subtype":"init","session_id":"s"}', 1)
    delta = (
        b'{"type":"stream_event","event":{"type":"content_block_delta",'
        b'"delta":{"type":"text_delta","text":"hi"}}}'
    )
    assert _markers(a.feed_stdout(delta, 2)) == [(Marker.FIRST_TOKEN, 2)]
    assert a.feed_stdout(delta, 3) == []
    assert a.feed_stdout(b"\xff not json", 4) == []
    ended = a.feed_stdout(b'{"type": "result", "subtype": "success", "is_error": false}', 5)
    assert [e for e in ended if isinstance(e, TurnEnded)] == [TurnEnded(5)]


def test_acp_cheap_path_keeps_other_sessions_awaiting() -> None:
    a = AcpJsonRpcAdapter(AdapterOptions())
    a.feed_stdout(b'{"jsonrpc":"2.0","id":0,"result":{}}', 1)
    a.feed_stdin(b'{"jsonrpc":"2.0","id":1,"method":"session/prompt","params":{"sessionId":"A"}}', 2)
    a.feed_stdin(b'{"jsonrpc":"2.0","id":2,"method":"session/prompt","params":{"sessionId":"B"}}', 3)

    def chunk(sid: str) -> bytes:
        return json.dumps({
            "jsonrpc": "2.0",
            "method": "session/update",
            "params": {
                "sessionId": sid,
                "update": {"sessionUpdate": "agent_message_chunk", "content": {"text": "x"}},
            },
        }).encode()

    assert _markers(a.feed_stdout(chunk("A"), 4)) == [(Marker.FIRST_TOKEN, 4)]
    assert a.feed_stdout(chunk("A"), 5) == []
    assert _markers(a.feed_stdout(chunk("B"), 6)) == [(Marker.FIRST_TOKEN, 6)]
    end = a.feed_stdout(b'{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}', 7)
    assert end == [TurnEnded(7, session_id="B")]


def test_acp_prompt_result_reports_usage() -> None:
    a = AcpJsonRpcAdapter(AdapterOptions())
    a.feed_stdin(b'{"jsonrpc":"2.0","id":"p","method":"session/prompt","params":{"sessionId":"S"}}', 1)
    events = a.feed_stdout(
        b'{"jsonrpc":"2.0","id":"p","result":{"stopReason":"end_turn","usage":'
        b'{"inputTokens":10,"outputTokens":2,"totalTokens":12,"cachedReadTokens":4}}}',
        2,
    )
    assert events == [
        MarkerObserved(Marker.CLI_READY, 2),
        UsageReported(
            input_tokens=10, output_tokens=2, cache_read_input_tokens=4, session_id="S"
        ),
        TurnEnded(2, session_id="S"),
    ]


# --- plain: chunks that split lines ---------------------------------------------------


def _plain(**regexes: str) -> PlainAdapter:
    p = {k: re.compile(v) for k, v in regexes.items()}
    return PlainAdapter(AdapterOptions(cli_ready_regex=p.get("cli_ready_regex"),
                                       session_init_regex=p.get("session_init_regex"),
                                       first_token_regex=p.get("first_token_regex")))


def test_plain_regex_matches_across_chunk_boundary() -> None:
    a = _plain(session_init_regex=r"Session ready")
    assert _markers(a.feed_stdout(b"boot\nSession re", 1)) == [(Marker.CLI_READY, 1)]
    assert _markers(a.feed_stdout(b"ady (model x)", 2)) == [(Marker.SESSION_INIT_DONE, 2)]
    # The rest of the init line is not the answer; the text after its newline is.
    assert _markers(a.feed_stdout(b" more\n", 3)) == []
    assert _markers(a.feed_stdout(b"Hello", 4)) == [(Marker.FIRST_TOKEN, 4)]


def test_plain_token_in_same_chunk_as_init_line() -> None:
    a = _plain(session_init_regex=r"^ready$")
    assert _markers(a.feed_stdout(b"ready\r\nHel", 7)) == [
        (Marker.CLI_READY, 7),
        (Marker.SESSION_INIT_DONE, 7),
        (Marker.FIRST_TOKEN, 7),
    ]


def test_plain_multibyte_character_split_across_chunks() -> None:
    a = _plain(first_token_regex="é")
    assert _markers(a.feed_stdout(b"caf\xc3", 1)) == [(Marker.CLI_READY, 1)]
    assert _markers(a.feed_stdout(b"\xa9\n", 2)) == [(Marker.FIRST_TOKEN, 2)]


def test_plain_without_regexes_first_chunk_is_ready_and_token() -> None:
    a = _plain()
    events = a.feed_stdout(b"\xff", 5)
    assert _markers(events) == [(Marker.CLI_READY, 5), (Marker.FIRST_TOKEN, 5)]
    assert a.feed_stdout(b"", 6) == []
    assert a.feed_stdout(b"more", 7) == []
    assert a.close(8) == [TurnEnded(8)]
    assert a.close(9) == []


@pytest.mark.fault(
    "Bad input",
    "plain: one endless line while a pattern is still looked for",
    outcome="partial line kept to its last 64 Ki characters",
    agent="n/a",
    records_lost="n/a",
)
def test_plain_partial_line_buffer_is_bounded() -> None:
    a = _plain(first_token_regex=r"NEVER")
    for t in range(50):
        a.feed_stdout(b"x" * 10_000, t)
    assert len(a._partial) <= 64 * 1024


def test_plain_cli_ready_regex_arms_the_token() -> None:
    a = _plain(cli_ready_regex=r"^> $")
    assert _markers(a.feed_stdout(b"banner\n", 1)) == []
    assert _markers(a.feed_stdout(b"> ", 2)) == [(Marker.CLI_READY, 2)]
    assert _markers(a.feed_stdout(b"\n", 3)) == []
    assert _markers(a.feed_stdout(b"answer", 4)) == [(Marker.FIRST_TOKEN, 4)]


# --- LineSplitter -----------------------------------------------------------------------


STREAM = b'{"a":1}\n\n{"b":"\xc3\xa9"}\r\nlast-without-newline'
LINES = [b'{"a":1}', b"", b'{"b":"\xc3\xa9"}']


@pytest.mark.fault(
    "Bad input",
    "LineSplitter: CRLF, empty lines and UTF-8 split into two reads at every offset",
    outcome="the same lines",
    agent="n/a",
    records_lost="n/a",
)
@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_line_splitter_split_at_every_offset(cut: int) -> None:
    s = LineSplitter()
    lines = s.feed(STREAM[:cut]) + s.feed(STREAM[cut:])
    assert lines == LINES
    assert s.flush() == b"last-without-newline"
    assert s.flush() is None


def test_line_splitter_byte_by_byte() -> None:
    s = LineSplitter()
    lines = [ln for i in range(len(STREAM)) for ln in s.feed(STREAM[i : i + 1])]
    assert lines == LINES


def test_line_splitter_strips_crlf() -> None:
    s = LineSplitter()
    assert s.feed(b"a\r\nb\r") == [b"a"]
    assert s.feed(b"\n") == [b"b"]


@pytest.mark.fault(
    "Bad input",
    "LineSplitter: over-long lines, whole or fed in pieces",
    outcome="dropped and counted; buffer bounded by `max_line`; the next line kept",
    agent="n/a",
    records_lost="n/a",
)
def test_line_splitter_drops_over_long_lines_with_bounded_memory() -> None:
    s = LineSplitter(max_line=16)
    assert s.feed(b"short\n" + b"x" * 40 + b"\nok\n") == [b"short", b"ok"]
    assert s.dropped == 1
    for _ in range(100):  # one endless line, fed in pieces
        assert s.feed(b"y" * 10) == []
        assert len(s._buf) <= 16
    assert s.feed(b"tail\nnext\n") == [b"next"]
    assert s.dropped == 2
    assert s.feed(b"z" * 17) == []
    assert s.flush() is None


def test_line_splitter_keeps_line_of_exactly_max() -> None:
    s = LineSplitter(max_line=4)
    assert s.feed(b"ab") == []
    assert s.feed(b"cd\nabcd\nabcde\n") == [b"abcd", b"abcd"]
    assert s.dropped == 1


@pytest.mark.fault(
    "Bad input",
    "LineSplitter.feed_matching (the skip path after the first token): any bytes, any reads",
    outcome="exactly the lines holding a needle, as `feed` gives them",
    agent="n/a",
    records_lost="n/a",
)
@settings(max_examples=400)
@given(
    stream=st.lists(
        st.sampled_from([b"ab", b"\n", b"result", b"x" * 7, b"\r", b"\rx"]), max_size=30
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    max_line=st.sampled_from([8, 64, 8 * 1024 * 1024]),
)
def test_feed_matching_gives_every_line_holding_a_needle(
    stream: bytes, cuts: list[int], max_line: int
) -> None:
    fault_case()
    bounds = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
    reads = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    needles = (b"result", b"\rx")
    full, skim = LineSplitter(max_line=max_line), LineSplitter(max_line=max_line)
    want = [ln for r in reads for ln in full.feed(r) if any(n in ln for n in needles)]
    got = [ln for r in reads for ln in skim.feed_matching(r, needles)]
    assert [ln for ln in got if any(n in ln for n in needles)] == want
    assert skim.flush() == full.flush()


# --- registry -----------------------------------------------------------------------------


def test_registry_lists_builtin_families() -> None:
    assert {f.value for f in RuntimeFamily} <= set(registered_families())


def test_unknown_family_is_a_config_error_listing_known_ones() -> None:
    with pytest.raises(UnknownAdapterError) as info:
        adapter_for("no-such-family")
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, LookupError)
    for family in RuntimeFamily:
        assert family.value in str(info.value)


def test_whole_message_with_thinking_and_text_marks_one_first_token() -> None:
    # A whole message's first non-empty block is the token, once, whatever follows it.
    adapter = adapter_for("claude-stream-json")
    message = {"type": "assistant", "message": {"model": "m", "content": [
        {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Hi"}]}}
    events = adapter.feed_stdout(json.dumps(message).encode(), 5)
    tokens = [e for e in events if isinstance(e, MarkerObserved)
              and e.marker is Marker.FIRST_TOKEN]
    assert len(tokens) == 1
    assert tokens[0].kind is FirstTokenKind.THINKING
    assert tokens[0].granularity is FirstTokenGranularity.MESSAGE
