"""Opt-in content capture in the four adapter families, driven by the recorded transcripts.

With ``AdapterOptions(capture_content=True)`` each adapter reports the prompt and answer
text it sees as :class:`~ttft_probe.adapters.ContentObserved` (:mod:`ttft_probe.content`
names the protocol fields); with it off (the default) nothing changes. The expected texts
below are read off the transcripts in ``tests/transcripts/<family>/`` by hand: the fake
provider answers every request with :data:`ANSWER`, streamed in five pieces.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import transcripts
from helpers.transcripts import load
from ttft_probe.adapters import (
    AdapterOptions,
    ContentObserved,
    Event,
    LineSplitter,
    MarkerObserved,
    TurnEnded,
    adapter_for,
)
from ttft_probe.adapters.plain import PlainAdapter
from ttft_probe.record import Marker, RuntimeFamily

ANSWER = "The quick brown fox jumps over the lazy dog, twice and then once more."
"""The fake provider's answer text, in every recorded transcript."""
ANSWER_PIECES = ["The quick brown ", "fox jumps over ", "the lazy dog, ", "twice and then ",
                 "once more."]  # fmt: skip
"""How the fake provider streams :data:`ANSWER` (one text delta each)."""
PROMPT_1 = "Say hello in a few words."
PROMPT_2 = "And once more, please."
"""The recorder's prompts: the first turn's, and the second (or resumed) turn's."""

ON = AdapterOptions(capture_content=True)
PLAIN = RuntimeFamily.PLAIN


# --- replay -------------------------------------------------------------------------------


def all_cases() -> list[str]:
    return [f"{p.parent.name}/{p.stem}" for p in transcripts.paths()]


def regex_options(name: str, *, capture: bool) -> AdapterOptions:
    """The case's plain regexes, capture on or off; without its argv, so that a Claude Code
    SDK-mode case is read by the one-shot stream-json rules."""
    return attrs.evolve(load(name).options(capture_content=capture), argv=())


@attrs.frozen
class Emitted:
    index: int | None  # the record that produced it; None for close()
    event: Event


def replay(name: str, *, capture: bool = True) -> list[Emitted]:
    """Feed a transcript one record per call (a plain record with its newline)."""
    tr = load(name)
    adapter = adapter_for(tr.family, regex_options(name, capture=capture))
    out: list[Emitted] = []
    for rec in tr.lines:
        if rec.stream == "stdout":
            data = rec.data + b"\n" if adapter.framing == "chunks" else rec.data
            out.extend(Emitted(rec.index, ev) for ev in adapter.feed_stdout(data, rec.index + 1))
        elif rec.stream == "stdin":
            out.extend(Emitted(rec.index, ev) for ev in adapter.feed_stdin(rec.data, rec.index + 1))
    out.extend(Emitted(None, ev) for ev in adapter.close(len(tr.lines) + 1))
    return out


def content(emitted: list[Emitted]) -> list[ContentObserved]:
    return [e.event for e in emitted if isinstance(e.event, ContentObserved)]


def text_of(emitted: list[Emitted], role: str) -> str:
    return "".join(c.text for c in content(emitted) if c.role == role)


def turns(emitted: list[Emitted]) -> list[dict[str, Any]]:
    """Request-driven: content per turn, a turn opened by each ``promptSent``."""
    out: list[dict[str, Any]] = []
    open_turn: dict[str | None, dict[str, Any]] = {}
    for e in emitted:
        ev = e.event
        if isinstance(ev, MarkerObserved) and ev.marker is Marker.PROMPT_SENT:
            turn = {"session_id": ev.session_id, "user": "", "assistant": "", "prompt_at": e.index}
            open_turn[ev.session_id] = turn
            out.append(turn)
        elif isinstance(ev, TurnEnded):
            open_turn.pop(ev.session_id, None)
        elif isinstance(ev, ContentObserved):
            assert ev.session_id in open_turn, f"content outside a turn: {ev!r}"
            open_turn[ev.session_id][ev.role] += ev.text
    return out


def strip(turn_list: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    return [(t["session_id"], t["user"], t["assistant"]) for t in turn_list]


# --- claude-stream-json -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["claude_fresh", "claude_resumed"])
def test_claude_with_deltas_captures_the_deltas_only(case: str) -> None:
    emitted = replay(f"claude-stream-json/{case}")
    got = content(emitted)
    assert [c.text for c in got] == ANSWER_PIECES  # not doubled by the assistant message (9)
    assert {c.role for c in got} == {"assistant"}
    assert {c.session_id for c in got} == {None}
    assert [e.index for e in emitted if isinstance(e.event, ContentObserved)] == [4, 5, 6, 7, 8]


def test_claude_no_partial_captures_the_assistant_message_once() -> None:
    emitted = replay("claude-stream-json/claude_no_partial")
    assert content(emitted) == [ContentObserved("assistant", ANSWER)]
    assert [e.index for e in emitted if isinstance(e.event, ContentObserved)] == [1]


def test_claude_thinking_is_not_content() -> None:
    # A thinking delta, then a text delta; the final message repeats both blocks.
    assert content(replay("claude-stream-json/synthetic_thinking_first")) == [
        ContentObserved("assistant", "Answer")
    ]


def test_claude_tool_use_and_empty_blocks_are_not_content() -> None:
    # Whole messages only: a tool_use message, an empty text block, then the answer.
    assert text_of(replay("claude-stream-json/synthetic_message_granularity"), "assistant") == (
        "Two files."
    )


def test_claude_synthetic_error_message_is_not_content() -> None:
    assert content(replay("claude-stream-json/synthetic_api_error_message")) == []


def test_claude_content_follows_each_turn() -> None:
    emitted = replay("claude-stream-json/synthetic_two_turns")
    per_turn: list[str] = [""]
    for e in emitted:
        if isinstance(e.event, ContentObserved):
            per_turn[-1] += e.event.text
        elif isinstance(e.event, TurnEnded):
            per_turn.append("")
    assert per_turn == ["One", "TwoThree", ""]


def test_claude_later_assistant_messages_are_captured_without_partial_messages() -> None:
    adapter = adapter_for("claude-stream-json", ON)
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Let me look."},
                                                       {"type": "tool_use", "input": {"a": "x"}}]}},
        {"type": "assistant", "message": {"content": [{"type": "thinking", "thinking": "hm"},
                                                       {"type": "text", "text": "Found "},
                                                       {"type": "text", "text": 5},
                                                       {"type": "text", "text": "it."}]}},
        {"type": "result", "subtype": "success"},
    ]  # fmt: skip
    events = [ev for i, m in enumerate(lines) for ev in adapter.feed_stdout(dumps(m), i + 1)]
    assert [e.text for e in events if isinstance(e, ContentObserved)] == [
        "Let me look.", "Found ", "it."
    ]  # fmt: skip


# --- json-event-stream --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "user", "assistant"),
    [
        ("codex_exec_fresh", "", ANSWER),  # codex exec takes the prompt on its command line
        ("codex_exec_resumed", "", ANSWER),
        ("gemini_fresh", PROMPT_1, ANSWER),
        ("gemini_resumed", PROMPT_2, ANSWER),
        ("synthetic_gemini_delta", "hi", "Hello there"),
        ("synthetic_codex_reasoning_first", "", "Hi"),  # reasoning is not content
        ("synthetic_codex_message_granularity", "", "Hello."),  # item.started is not
        ("synthetic_codex_error_retry_then_success", "", "Hi"),
        ("synthetic_codex_error_retry_then_failed", "", ""),
        ("synthetic_gemini_error_result", "hi", ""),
        ("synthetic_cursor_agent", "", "Hello"),  # result.result; thinking is not content
    ],
)
def test_json_event_stream_text(case: str, user: str, assistant: str) -> None:
    emitted = replay(f"json-event-stream/{case}")
    assert text_of(emitted, "user") == user
    assert text_of(emitted, "assistant") == assistant
    assert {c.session_id for c in content(emitted)} <= {None}


def test_gemini_fresh_content_per_line() -> None:
    emitted = replay("json-event-stream/gemini_fresh")
    got = [(e.index, e.event) for e in emitted if isinstance(e.event, ContentObserved)]
    assert got == [
        (4, ContentObserved("user", PROMPT_1)),
        *((i, ContentObserved("assistant", t)) for i, t in enumerate(ANSWER_PIECES, start=6)),
    ]


def test_codex_content_is_the_completed_item_once() -> None:
    adapter = adapter_for("json-event-stream", ON)
    lines = [
        {"type": "turn.started"},
        {"type": "item.started", "item": {"type": "agent_message", "text": "Hel"}},
        {"type": "item.updated", "item": {"type": "agent_message", "text": "Hello"}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": "Hello!"}},
        {"type": "item.completed", "item": {"type": "reasoning", "text": "hm"}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": ["x"]}},
        {"type": "turn.completed"},
    ]
    events = [ev for i, m in enumerate(lines) for ev in adapter.feed_stdout(dumps(m), i + 1)]
    assert [e for e in events if isinstance(e, ContentObserved)] == [
        ContentObserved("assistant", "Hello!")
    ]


def test_cursor_failed_result_text_is_not_content() -> None:
    adapter = adapter_for("json-event-stream", ON)
    line = {"type": "result", "subtype": "success", "is_error": True, "result": "API error"}
    assert not [e for e in adapter.feed_stdout(dumps(line), 1) if isinstance(e, ContentObserved)]


# --- acp-json-rpc -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "session_id"),
    [
        ("claude_code_acp_two_turns", "be892276-5e20-469c-b014-d422a092f3e7"),
        ("codex_acp_two_turns", "01a1fd21-bbaa-78c0-8f65-475bfbd88378"),
        ("gemini_acp_two_turns", "8ef53223-d3c8-4693-ada5-3b65ed72909f"),
    ],
)
def test_acp_two_turns_content_per_turn(case: str, session_id: str) -> None:
    emitted = replay(f"acp-json-rpc/{case}")
    assert strip(turns(emitted)) == [
        (session_id, PROMPT_1, ANSWER),
        (session_id, PROMPT_2, ANSWER),
    ]
    # One event per non-empty chunk: claude-code-acp's empty chunk is none.
    assert [c.text for c in content(emitted) if c.role == "assistant"] == ANSWER_PIECES * 2


@pytest.mark.parametrize(
    ("case", "session_id"),
    [
        ("claude_code_acp_load", "be892276-5e20-469c-b014-d422a092f3e7"),
        ("codex_acp_load", "01a1fd21-bbaa-78c0-8f65-475bfbd88378"),
    ],
)
def test_acp_load_history_is_not_content(case: str, session_id: str) -> None:
    emitted = replay(f"acp-json-rpc/{case}")
    got = turns(emitted)
    assert strip(got) == [(session_id, PROMPT_2, ANSWER)]
    # The replayed turns (records 3-6: both prompts, whole answers) left nothing.
    at = [e.index for e in emitted if isinstance(e.event, ContentObserved)]
    assert at[0] == got[0]["prompt_at"] == 8


def test_acp_failed_load_has_no_content() -> None:
    assert content(replay("acp-json-rpc/gemini_acp_load")) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # user_message_chunk "hi" echoed after the prompt is not a second prompt.
        ("synthetic_load_history_replay", [("sess-aaaa", "hi", "Third")]),
        ("synthetic_empty_chunk_after_prompt", [("sess-aaaa", "hi", "Hello there")]),
        # The chunk after turn 1's result belongs to no turn; turn 3 failed unanswered.
        ("synthetic_two_turns_one_process",
         [("sess-aaaa", "hi", "One"), ("sess-aaaa", "hi", "Two"), ("sess-aaaa", "hi", "")]),
        ("synthetic_concurrent_sessions",
         [("sess-A", "hi", "A first"), ("sess-B", "hi", "B firstB more")]),
        # codex app-server: turn/start input text, item/agentMessage/delta.
        ("synthetic_app_server", [("019a1111-0000-7000-8000-000000000001", "hi", "Hello")]),
        ("synthetic_app_server_resume",  # the reasoning summary delta is not content
         [("019a1111-0000-7000-8000-000000000001", "again", "Hi"),
          ("019a1111-0000-7000-8000-000000000001", "and again", "")]),
    ],
)  # fmt: skip
def test_acp_synthetic_content(case: str, expected: list[tuple[str, str, str]]) -> None:
    assert strip(turns(replay(f"acp-json-rpc/{case}"))) == expected


def _rpc(**fields: Any) -> bytes:
    return dumps({"jsonrpc": "2.0", **fields})


def _chunk(text: object, sid: str = "S", content_type: object = "text") -> bytes:
    return _rpc(method="session/update", params={"sessionId": sid, "update": {
        "sessionUpdate": "agent_message_chunk",
        "content": {"type": content_type, "text": text}}})  # fmt: skip


def _prompt(id_: int, blocks: object) -> bytes:
    return _rpc(id=id_, method="session/prompt", params={"sessionId": "S", "prompt": blocks})


def test_acp_prompt_blocks_resend_and_superseded_answer() -> None:
    adapter = adapter_for("acp-json-rpc", ON)
    feed: list[tuple[str, bytes]] = [
        ("stdin", _rpc(id=1, method="session/new", params={})),
        ("stdout", _rpc(id=1, result={"sessionId": "S"})),
        ("stdin", _prompt(2, [{"type": "text", "text": "look at "},
                              {"type": "resource_link", "uri": "file:///a"},
                              {"type": "text", "text": 7},
                              {"type": "text", "text": "this"}])),
        ("stdin", _prompt(2, [{"type": "text", "text": "look at this"}])),  # sent again
        ("stdout", _chunk("A1")),
        ("stdout", _chunk("img", content_type="image")),
        ("stdout", _chunk(["A2"])),
        ("stdin", _prompt(3, [{"type": "text", "text": "next"}])),  # supersedes prompt 2
        ("stdout", _chunk("late answer of 2")),
        ("stdout", _rpc(id=2, result={"stopReason": "end_turn"})),
        ("stdout", _chunk("B1")),
        ("stdout", _rpc(id=3, result={"stopReason": "end_turn"})),
    ]  # fmt: skip
    events: list[Event] = []
    for t, (stream, line) in enumerate(feed, start=1):
        feed_fn = adapter.feed_stdin if stream == "stdin" else adapter.feed_stdout
        events.extend(feed_fn(line, t))
    assert [(c.role, c.text) for c in events if isinstance(c, ContentObserved)] == [
        ("user", "look at "), ("user", "this"), ("assistant", "A1"),
        ("user", "next"), ("assistant", "B1"),
    ]  # fmt: skip
    assert {c.session_id for c in events if isinstance(c, ContentObserved)} == {"S"}


@pytest.mark.fault(
    "Bad input",
    "ACP: a `session/update` during `session/load` whose `sessionUpdate` is a list",
    outcome="no adapter fault (was `TypeError`: parsing off, markers lost), capture on or off",
    agent="n/a",
    records_lost="n/a",
)
@pytest.mark.parametrize("capture", [False, True])
def test_regression_acp_unhashable_update_kind_during_load_does_not_raise(capture: bool) -> None:
    """Found by the fuzz below: ``kind in _RUN_BREAKERS`` raised ``TypeError`` for a list."""
    adapter = adapter_for("acp-json-rpc", AdapterOptions(capture_content=capture))
    adapter.feed_stdin(_rpc(id=1, method="session/load", params={"sessionId": "S"}), 1)
    update = {"sessionUpdate": [], "content": {"type": "text", "text": "x"}}
    line = _rpc(method="session/update", params={"sessionId": "S", "update": update})
    assert adapter.feed_stdout(line, 2) == [MarkerObserved(Marker.CLI_READY, 2)]


# --- plain --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("claude_text", ANSWER + "\n"),
        ("synthetic_no_regex", "Hello\nworld\n"),
        ("synthetic_all_regexes",
         "banner\nready> \nconnected to model\ntool: reading files\nA: the answer\n"),
        # Undecodable bytes replaced; the valid "\xc3\xa9" of line 3 is an é.
        ("synthetic_invalid_utf8", "\ufffd\ufffd binary junk\ncaf\ufffd model=x1\n\ufffdt\u00e9\n"),
    ],
)  # fmt: skip
def test_plain_captures_stdout_text(case: str, text: str) -> None:
    emitted = replay(f"plain/{case}")
    assert text_of(emitted, "assistant") == text
    assert text_of(emitted, "user") == ""


def test_plain_character_split_across_reads_comes_out_whole() -> None:
    adapter = PlainAdapter(ON)
    data = "héllo €\n".encode()
    cut1, cut2 = data.index("é".encode()) + 1, data.index("€".encode()) + 2
    events = [
        *adapter.feed_stdout(data[:cut1], 1),
        *adapter.feed_stdout(data[cut1:cut2], 2),
        *adapter.feed_stdout(data[cut2:], 3),
        *adapter.close(4),
    ]
    texts = [e.text for e in events if isinstance(e, ContentObserved)]
    assert texts == ["h", "éllo ", "€\n"]
    assert isinstance(events[-1], TurnEnded)


def test_plain_close_flushes_an_unfinished_character_before_the_turn_ends() -> None:
    adapter = PlainAdapter(ON)
    first = adapter.feed_stdout(b"ok \xe2\x82", 1)
    assert [e.text for e in first if isinstance(e, ContentObserved)] == ["ok "]
    assert adapter.close(2) == [ContentObserved("assistant", "\ufffd"), TurnEnded(2)]
    assert adapter.close(3) == []


def test_plain_text_after_the_first_token_is_still_captured() -> None:
    adapter = PlainAdapter(ON)
    events = [ev for t, d in enumerate([b"a", b"b", b"c\n"], 1) for ev in adapter.feed_stdout(d, t)]
    assert [type(e).__name__ for e in events] == [
        "MarkerObserved", "MarkerObserved", "ContentObserved", "ContentObserved", "ContentObserved"
    ]  # fmt: skip


# --- capture off changes nothing, capture on changes nothing else ---------------------------


@pytest.mark.parametrize("case", all_cases())
def test_capture_changes_no_other_event(case: str) -> None:
    off = replay(case, capture=False)
    on = replay(case, capture=True)
    assert content(off) == []
    assert [e for e in on if not isinstance(e.event, ContentObserved)] == off


@pytest.mark.parametrize("case", [c for c in all_cases() if not c.startswith("plain/")])
def test_line_filter_is_none_with_capture_on(case: str) -> None:
    tr = load(case)
    adapter: Any = adapter_for(tr.family, ON)
    assert adapter.line_filter() is None
    for rec in tr.lines:
        if rec.stream == "stdout":
            adapter.feed_stdout(rec.data, rec.index + 1)
        elif rec.stream == "stdin":
            adapter.feed_stdin(rec.data, rec.index + 1)
        assert adapter.line_filter() is None, rec.index


@pytest.mark.parametrize(
    "case",
    ["claude-stream-json/claude_fresh", "json-event-stream/codex_exec_fresh",
     "acp-json-rpc/codex_acp_two_turns"],
)  # fmt: skip
def test_line_filter_unchanged_with_capture_off(case: str) -> None:
    """Off, the filter still narrows after the first token (the pass-through fast path)."""
    tr = load(case)
    adapter: Any = adapter_for(tr.family, AdapterOptions())
    seen = []
    for rec in tr.lines:
        if rec.stream == "stdout":
            adapter.feed_stdout(rec.data, rec.index + 1)
        elif rec.stream == "stdin":
            adapter.feed_stdin(rec.data, rec.index + 1)
        seen.append(adapter.line_filter())
    assert any(f is not None for f in seen)


# --- never raise; only str text -------------------------------------------------------------


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


CASES = all_cases()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=8) | st.sampled_from(["\ud800", "é\udfff", "text", "text_delta", "user",
                                              "assistant", "agent_message_chunk"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


def _paths(obj: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            found.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(_paths(v, (*prefix, i)))
    return found


def _replace(obj: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    copy[head] = _replace(obj[head], rest, value)
    return copy


@st.composite
def mutated_reads(draw: st.DrawFn) -> tuple[RuntimeFamily, list[tuple[str, bytes]]]:
    """A real transcript, some JSON values replaced, junk mixed in, split at random offsets."""
    tr = load(draw(st.sampled_from(CASES)))
    lines: list[tuple[str, bytes]] = []
    for rec in tr.lines:
        if rec.stream == "stderr":
            continue
        data = rec.data
        try:
            obj = json.loads(data)
        except ValueError:
            obj = None
        if obj is not None and draw(st.integers(0, 3)) == 0:
            path = draw(st.sampled_from(_paths(obj)))
            data = dumps(_replace(obj, path, draw(JSON_VALUES)))
        if draw(st.integers(0, 7)) == 0:
            lines.append((rec.stream, draw(st.binary(max_size=12))))
        lines.append((rec.stream, data))
    reads: list[tuple[str, bytes]] = []
    for stream in ("stdout", "stdin"):
        blob = b"".join(d + b"\n" for s, d in lines if s == stream)
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(blob) - 1)), max_size=20)))
        bounds = [0, *(c for c in cuts if c < len(blob)), len(blob)]
        reads.extend((stream, blob[a:b]) for a, b in itertools.pairwise(bounds))
    # stdin and stdout interleaved in drawn order, each stream's own order kept.
    outs = [r for r in reads if r[0] == "stdout"]
    ins = [r for r in reads if r[0] == "stdin"]
    merged: list[tuple[str, bytes]] = []
    while outs or ins:
        take_in = bool(ins) and (not outs or draw(st.booleans()))
        merged.append(ins.pop(0) if take_in else outs.pop(0))
    return RuntimeFamily(tr.family), merged


def feed_split(family: RuntimeFamily, reads: list[tuple[str, bytes]]) -> list[Event]:
    """Feed reads the way a run does: lines for line families (stdin always), chunks for plain."""
    adapter = adapter_for(family.value, ON)
    splitters = {"stdout": LineSplitter(), "stdin": LineSplitter()}
    events: list[Event] = []
    t = 0
    for stream, data in reads:
        t += 1
        if stream == "stdout" and adapter.framing == "chunks":
            events.extend(adapter.feed_stdout(data, t))
            continue
        for line in splitters[stream].feed(data):
            fn = adapter.feed_stdout if stream == "stdout" else adapter.feed_stdin
            events.extend(fn(line, t))
    events.extend(adapter.close(t + 1))
    return events


@settings(max_examples=300)
@given(case=mutated_reads())
def test_any_input_split_anywhere_never_raises_and_text_is_str(
    case: tuple[RuntimeFamily, list[tuple[str, bytes]]],
) -> None:
    family, reads = case
    for ev in feed_split(family, reads):
        if isinstance(ev, ContentObserved):
            assert type(ev.text) is str
            assert ev.text
            ev.text.encode("utf-8")  # storable: no lone surrogate
            assert ev.role in {"user", "assistant"}
            assert ev.session_id is None or type(ev.session_id) is str


@settings(max_examples=200)
@given(reads=st.lists(st.binary(max_size=16), max_size=16), stdin=st.binary(max_size=32))
def test_arbitrary_bytes_never_raise(reads: list[bytes], stdin: bytes) -> None:
    for family in RuntimeFamily:
        events = feed_split(family, [("stdin", stdin), *(("stdout", d) for d in reads)])
        for ev in events:
            if isinstance(ev, ContentObserved):
                assert type(ev.text) is str
                ev.text.encode("utf-8")


@settings(max_examples=200)
@given(reads=st.lists(st.binary(max_size=16) | st.sampled_from(["é€😀".encode()[:k]
                                                                 for k in range(1, 10)]),
                      max_size=16))  # fmt: skip
def test_plain_text_is_the_whole_decode_wherever_reads_split(reads: list[bytes]) -> None:
    events = feed_split(PLAIN, [("stdout", d) for d in reads])
    got = "".join(e.text for e in events if isinstance(e, ContentObserved))
    assert got == b"".join(reads).decode("utf-8", "replace")


@settings(max_examples=100)
@given(case=st.sampled_from([c for c in CASES if not c.startswith("plain/")]),
       cuts=st.sets(st.integers(1, 4000), max_size=30))  # fmt: skip
def test_line_content_is_the_same_wherever_reads_split(case: str, cuts: set[int]) -> None:
    """Stdout split at any offsets (stdin lines kept in place): the same content events."""
    tr = load(case)
    whole: list[tuple[str, bytes]] = []
    split: list[tuple[str, bytes]] = []
    pos = 0
    for rec in tr.lines:
        if rec.stream == "stderr":
            continue
        data = rec.data + b"\n"
        whole.append((rec.stream, data))
        if rec.stream == "stdin":
            split.append((rec.stream, data))
            continue
        inner = sorted(c - pos for c in cuts if pos < c < pos + len(data))
        bounds = [0, *inner, len(data)]
        split.extend(("stdout", data[a:b]) for a, b in itertools.pairwise(bounds))
        pos += len(data)
    family = RuntimeFamily(tr.family)
    want = [e for e in feed_split(family, whole) if isinstance(e, ContentObserved)]
    got = [e for e in feed_split(family, split) if isinstance(e, ContentObserved)]
    assert got == want
