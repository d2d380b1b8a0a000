"""The four sans-I/O adapters, driven by recorded transcripts, plus LineSplitter and registry.

Transcripts live in ``tests/transcripts/<family>/<case>.jsonl``: a ``{"meta": {...}}``
line, then one ``{"t_ms", "stream", "line"}`` record per line (``stream`` is ``stdout``,
``stderr`` or ``stdin``). ``<case>.expected.json`` holds the markers per turn as record
indexes (0-based, meta not counted), ``null``, or ``"eof"`` for the time of ``close()``.
Every case that has an expectation file is collected automatically. A line that is not
valid UTF-8 is stored with lone surrogates (``"\\udcff"``) and replayed with
``surrogateescape``, byte for byte.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliability import fault_case
from ttft_probe._clock import WallAnchor
from ttft_probe._run import CallerContext, ExitInfo, ProcessTracker, RunResult
from ttft_probe.adapters import (
    Adapter,
    AdapterOptions,
    AgentInfo,
    AgentReportedTimings,
    Event,
    LineSplitter,
    MarkerObserved,
    SessionObserved,
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
    SessionInitSource,
)

TRANSCRIPTS = Path(__file__).parent / "transcripts"
ADAPTERS: dict[RuntimeFamily, type[Any]] = {
    RuntimeFamily.CLAUDE_STREAM_JSON: ClaudeStreamJsonAdapter,
    RuntimeFamily.JSON_EVENT_STREAM: JsonEventStreamAdapter,
    RuntimeFamily.ACP_JSON_RPC: AcpJsonRpcAdapter,
    RuntimeFamily.PLAIN: PlainAdapter,
}
MARKER_KEYS = {
    Marker.CLI_READY: "cliReady",
    Marker.SESSION_INIT_DONE: "sessionInitDone",
    Marker.PROMPT_SENT: "promptSent",
    Marker.FIRST_TOKEN: "firstToken",
}
TIME_KEYS = (*MARKER_KEYS.values(), "turn_end")
EOF = "eof"


# --- transcript replay -----------------------------------------------------------------


@attrs.define
class Record:
    t_ns: int
    stream: str
    data: bytes


@attrs.define
class Transcript:
    family: RuntimeFamily
    meta: dict[str, Any]
    records: list[Record]
    expected: dict[str, Any]

    @property
    def eof_ns(self) -> int:
        eof_ms = self.meta.get("eof_t_ms")
        if isinstance(eof_ms, int | float):
            return round(eof_ms * 1e6)
        return max((r.t_ns for r in self.records), default=0) + 1


def _ns(t_ms: float) -> int:
    return round(t_ms * 1e6)


def load_transcript(path: Path) -> Transcript:
    lines = path.read_text(encoding="utf-8").splitlines()
    meta = json.loads(lines[0])["meta"]
    records = []
    for raw in lines[1:]:
        if not raw.strip():
            continue
        rec = json.loads(raw)
        data = rec["line"].encode("utf-8", "surrogateescape")
        records.append(Record(_ns(rec["t_ms"]), rec["stream"], data))
    expected = json.loads(path.with_name(path.stem + ".expected.json").read_text("utf-8"))
    return Transcript(RuntimeFamily(path.parent.name), meta, records, expected)


def transcript_cases() -> list[Any]:
    return [
        pytest.param(path, id=f"{path.parent.name}/{path.stem}")
        for path in sorted(TRANSCRIPTS.glob("*/*.jsonl"))
        if path.with_name(path.stem + ".expected.json").exists()
    ]


def options_from(meta: dict[str, Any]) -> AdapterOptions:
    raw = meta.get("adapter_options") or meta.get("options") or {}
    names = ("cli_ready_regex", "session_init_regex", "first_token_regex")
    p = {n: re.compile(raw[n]) for n in names if raw.get(n) is not None}
    return AdapterOptions(cli_ready_regex=p.get("cli_ready_regex"),
                          session_init_regex=p.get("session_init_regex"),
                          first_token_regex=p.get("first_token_regex"),
                          argv=meta.get("argv") or ())


def replay(tr: Transcript) -> tuple[Adapter, list[tuple[int, Event, bool]]]:
    """Feed the transcript; returns ``(t, event, from_close)`` in emission order."""
    adapter = adapter_for(tr.family.value, options_from(tr.meta))
    out: list[tuple[int, Event, bool]] = []
    for rec in tr.records:
        if rec.stream == "stdout":
            data = rec.data + b"\n" if adapter.framing == "chunks" else rec.data
            out.extend((rec.t_ns, ev, False) for ev in adapter.feed_stdout(data, rec.t_ns))
        elif rec.stream == "stdin":
            out.extend((rec.t_ns, ev, False) for ev in adapter.feed_stdin(rec.data, rec.t_ns))
    out.extend((tr.eof_ns, ev, True) for ev in adapter.close(tr.eof_ns))
    return adapter, out


@attrs.define
class Turn:
    times: dict[str, int | str | None] = attrs.field(factory=lambda: dict.fromkeys(TIME_KEYS))
    granularity: FirstTokenGranularity | None = None
    kind: FirstTokenKind | None = None
    session_id: str | None = None
    resumed: bool | None = None
    prior_turns: int | None = None
    session_init_source: SessionInitSource | None = None
    failed: bool = False
    cancelled: bool = False
    usage: UsageReported | None = None
    timings: AgentReportedTimings | None = None
    model: str | None = None
    agent_version: str | None = None

    def has_markers(self) -> bool:
        return any(v is not None for v in self.times.values())

    def set_marker(self, ev: MarkerObserved) -> None:
        key = MARKER_KEYS[ev.marker]
        assert self.times[key] is None, f"{key} emitted twice in one turn"
        self.times[key] = ev.t_ns
        if ev.marker is Marker.FIRST_TOKEN:
            self.granularity, self.kind = ev.granularity, ev.kind
        if ev.marker is Marker.SESSION_INIT_DONE:
            self.session_init_source = ev.session_init_source

    def end(self, ev: TurnEnded, *, from_close: bool) -> None:
        assert self.times["turn_end"] is None, "turn ended twice"
        self.times["turn_end"] = EOF if from_close else ev.t_ns
        self.failed, self.cancelled = ev.failed, ev.cancelled


def _info(turn: Turn, ev: Event) -> None:
    if isinstance(ev, UsageReported):
        turn.usage = ev
    elif isinstance(ev, AgentReportedTimings):
        turn.timings = ev
    elif isinstance(ev, AgentInfo):
        turn.model = ev.model or turn.model
        turn.agent_version = ev.agent_version or turn.agent_version


def stream_turns(events: list[tuple[int, Event, bool]]) -> list[Turn]:
    """One-shot and stream-json agents: a ``TurnEnded`` closes the current turn."""
    turns: list[Turn] = []
    cur = Turn()
    info: dict[str, Any] = {}
    for _, ev, from_close in events:
        if isinstance(ev, MarkerObserved):
            assert ev.marker in MARKER_KEYS, ev
            assert ev.marker is not Marker.PROMPT_SENT, "stream agents have no promptSent"
            cur.set_marker(ev)
        elif isinstance(ev, SessionObserved):
            cur.session_id, cur.resumed, cur.prior_turns = ev.session_id, ev.resumed, ev.prior_turns
            info["session_id"] = ev.session_id
        elif isinstance(ev, TurnEnded):
            cur.end(ev, from_close=from_close)
            turns.append(cur)
            cur = Turn(session_id=info.get("session_id"))
        else:
            _info(cur, ev)
    if cur.has_markers():
        turns.append(cur)
    return turns


@attrs.define
class RequestTurns:
    """Request-driven agents: each ``promptSent`` opens a turn of its session.

    The process's ``cliReady`` belongs to the first turn; a session's
    ``sessionInitDone`` to that session's first turn, as the run state attributes them.
    """

    cli_ready: int | None = None
    inits: dict[str | None, Turn] = attrs.Factory(dict)  # per session: init and facts
    open_turns: dict[str | None, Turn] = attrs.Factory(dict)
    last: dict[str | None, Turn] = attrs.Factory(dict)
    turns: list[Turn] = attrs.Factory(list)
    agent: Turn = attrs.Factory(Turn)

    def feed(self, ev: Event, *, from_close: bool) -> None:
        if isinstance(ev, MarkerObserved):
            self.marker(ev)
        elif isinstance(ev, SessionObserved):
            target = self.inits.setdefault(ev.session_id, Turn(session_id=ev.session_id))
            target.resumed, target.prior_turns = ev.resumed, ev.prior_turns
        elif isinstance(ev, TurnEnded):
            assert ev.session_id in self.open_turns, "TurnEnded for a session without a prompt"
            self.open_turns.pop(ev.session_id).end(ev, from_close=from_close)
        elif isinstance(ev, AgentInfo):
            _info(self.agent, ev)  # process-wide: applies to every turn
        else:
            sid = ev.session_id if isinstance(ev, UsageReported) else None
            turn = self.open_turns.get(sid) or self.last.get(sid)
            if turn is not None:
                _info(turn, ev)

    def marker(self, ev: MarkerObserved) -> None:
        sid = ev.session_id
        if ev.marker is Marker.CLI_READY:
            assert self.cli_ready is None, "cliReady emitted twice"
            self.cli_ready = ev.t_ns
        elif ev.marker is Marker.SESSION_INIT_DONE:
            assert sid is not None, "sessionInitDone without session id"
            self.inits.setdefault(sid, Turn(session_id=sid)).set_marker(ev)
        elif ev.marker is Marker.PROMPT_SENT:
            turn = Turn(session_id=sid)
            if not self.turns:
                turn.times["cliReady"] = self.cli_ready
            init = self.inits.pop(sid, None)
            if init is not None:
                turn.times["sessionInitDone"] = init.times["sessionInitDone"]
                turn.session_init_source = init.session_init_source
                turn.resumed, turn.prior_turns = init.resumed, init.prior_turns
            elif sid in self.last:
                turn.resumed = self.last[sid].resumed
            turn.set_marker(ev)
            self.open_turns[sid] = self.last[sid] = turn
            self.turns.append(turn)
        else:
            assert sid in self.open_turns, f"{ev.marker} for a session without a prompt"
            self.open_turns[sid].set_marker(ev)

    def result(self) -> list[Turn]:
        turns = list(self.turns)
        if not turns and (self.cli_ready is not None or self.inits):
            # The run ended before any prompt: one turn with what was seen.
            turn = Turn()
            turn.times["cliReady"] = self.cli_ready
            init = next(iter(self.inits.values()), None)
            if init is not None:
                turn.times["sessionInitDone"] = init.times["sessionInitDone"]
                turn.session_id, turn.resumed = init.session_id, init.resumed
            turns.append(turn)
        for turn in turns:
            turn.model, turn.agent_version = self.agent.model, self.agent.agent_version
        return turns


def request_turns(events: list[tuple[int, Event, bool]]) -> list[Turn]:
    acc = RequestTurns()
    for _, ev, from_close in events:
        acc.feed(ev, from_close=from_close)
    return acc.result()


def _time_of(tr: Transcript, value: int | str | None) -> int | str | None:
    if value is None or value == EOF:
        return value
    assert isinstance(value, int)
    return tr.records[value].t_ns


def _describe(tr: Transcript, t: int | str | None) -> str:
    idx = [i for i, r in enumerate(tr.records) if r.t_ns == t]
    return f"{t} (record {idx})" if idx else repr(t)


def _resumed_fallback(meta: dict[str, Any]) -> bool:
    """What the run state knows from the command line when the protocol does not say."""
    if isinstance(meta.get("argv"), list) and meta["argv"]:
        return resolve_agent(meta["argv"], agent=meta.get("agent")).resumed
    return bool(meta.get("resumed", False))


def tracker_runs(tr: Transcript) -> list[RunResult]:
    """The runs the real run state builds from the transcript (spawn at t = 0)."""
    results: list[RunResult] = []
    tracker = ProcessTracker(
        agent=resolve_agent(tr.meta["argv"], agent=tr.meta.get("agent")),
        adapter=adapter_for(tr.family.value, options_from(tr.meta)),
        spawn_ns=0,
        anchor=WallAnchor(wall_ns=1_750_000_000_000_000_000, mono_ns=0),
        caller=CallerContext(),
        emit=results.append,
        probe_version="transcript",
    )
    for rec in tr.records:
        if rec.stream == "stdout":
            tracker.on_stdout(rec.data + b"\n", rec.t_ns)
        elif rec.stream == "stdin":
            tracker.on_stdin(rec.data + b"\n", rec.t_ns)
    tracker.on_stdout_eof(tr.eof_ns)
    tracker.on_exit(ExitInfo(t_ns=tr.eof_ns + 1, returncode=tr.meta.get("exit_code", 0)))
    return results


def check_tracker_runs(tr: Transcript, runs: list[RunResult]) -> None:
    """Each run's markers (as record indexes) and identity, as the expectation says.

    A reused process's run has no readiness of its own (``cliReady`` null) unless it waited
    for the turn before it (``cliReady`` is then when that turn ended).
    """
    expected = tr.expected["turns"]
    assert len(runs) == len(expected), f"{len(runs)} runs, expected {len(expected)}"
    for n, (run, exp) in enumerate(zip(runs, expected, strict=True), start=1):
        times, record = run.times, run.record.to_dict()
        ready = times.cli_ready_ns
        if run.record.process_reused and ready == times.start_ns:
            ready = None
        got = {"cliReady": ready, "sessionInitDone": times.session_init_done_ns,
               "promptSent": times.prompt_sent_ns, "firstToken": times.first_token_ns,
               "turn_end": times.end_ns}
        for key, value in got.items():
            if key in exp:
                want = _time_of(tr, exp[key])
                assert value == want, f"run {n} {key}: got {_describe(tr, value)}, expected {exp[key]}"
        for key in ("status", "process_reused", "turn_ordinal", "session_id", "session_resumed",
                    "first_token_granularity", "first_token_kind", "timing_unavailable_reason"):
            if key in exp:
                assert record[key] == exp[key], f"run {n} {key}: got {record[key]!r}"
        assert (record["remainder_ms"] == 0) is (record["timing_unavailable_reason"] is None)


@pytest.mark.parametrize("path", transcript_cases())
def test_transcript(path: Path) -> None:
    tr = load_transcript(path)
    adapter, events = replay(tr)
    if getattr(adapter, "prompt_first", False):
        # Turns set up after their prompts and served in order: the run state's own rules.
        check_tracker_runs(tr, tracker_runs(tr))
        return
    turns = request_turns(events) if adapter.request_driven else stream_turns(events)
    expected = tr.expected["turns"]
    assert len(turns) == len(expected), f"{len(turns)} turns, expected {len(expected)}"
    for n, (turn, exp) in enumerate(zip(turns, expected, strict=True), start=1):
        for key in TIME_KEYS:
            if key not in exp:
                continue
            want, got = _time_of(tr, exp[key]), turn.times[key]
            assert got == want, (
                f"turn {n} {key}: got {_describe(tr, got)}, expected record {exp[key]}"
            )
        check_turn_details(tr, n, turn, exp)


def check_turn_details(tr: Transcript, n: int, turn: Turn, exp: dict[str, Any]) -> None:
    def enum_value(v: Any) -> Any:
        return None if v is None else v.value

    simple = {
        "first_token_granularity": enum_value(turn.granularity),
        "first_token_kind": enum_value(turn.kind),
        "session_id": turn.session_id,
        "prior_turns": turn.prior_turns,
        "session_init_source": enum_value(turn.session_init_source),
        "model": turn.model,
        "agent_version": turn.agent_version,
    }
    for key, got in simple.items():
        if key in exp:
            assert got == exp[key], f"turn {n} {key}: got {got!r}, expected {exp[key]!r}"
    if "session_resumed" in exp:
        resumed = turn.resumed if turn.resumed is not None else _resumed_fallback(tr.meta)
        assert resumed == exp["session_resumed"], f"turn {n} session_resumed"
    if "status" in exp:
        status = "cancelled" if turn.cancelled else "failed" if turn.failed else "succeeded"
        assert status == exp["status"], f"turn {n} status: got {status}"
    if "usage" in exp:
        got_usage = None if turn.usage is None else attrs.asdict(turn.usage)
        if got_usage is not None:
            got_usage.pop("session_id")
        assert got_usage == exp["usage"], f"turn {n} usage"
    if "agent_reported" in exp:
        got_t = None if turn.timings is None else attrs.asdict(turn.timings)
        assert got_t == exp["agent_reported"], f"turn {n} agent_reported"


@pytest.mark.parametrize("path", transcript_cases())
def test_cheap_path_changes_no_event(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The substring pre-checks that skip json decoding after the first token are exact."""
    tr = load_transcript(path)
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
