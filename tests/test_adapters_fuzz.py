"""Bad input to every adapter, fed the way a run feeds it (issue 7), by property-based tests.

Every test drives a real :class:`~ttft_probe._run.ProcessTracker` (line splitting, the
guard around the adapter, the run state, the record), with the family's real adapter
wrapped in :class:`Spy` (which keeps the events the tracker was given and can fault on
purpose). Each test asserts, for every input:

* nothing raises out of the tracker (it runs on the pump threads: a raise there would stop
  the agent's output);
* no built-in adapter faults (``adapter_error is None``): the tracker swallows a fault, so
  this is how a raise inside an adapter shows;
* every marker is one the family's rule (DESIGN §3) grants for that input: a reference
  written from the rule, not from the adapter, says which line (read) each marker is;
* every record is built, validates against the shipped schema, is strict JSON and can be
  stored (UTF-8, int64).

Each hypothesis example counts as one case in ``docs/RELIABILITY.md`` (``fault_case()``);
the examples are the same on every machine (``derandomize`` in ``conftest.py``).
Regression tests for the failures these properties found are named after the failure.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import re
import subprocess
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, cast
from unittest import mock

import attrs
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_valid, script, stored
from helpers import transcripts
from helpers.fuzz import (
    ACP,
    ANCHOR,
    CLAUDE,
    EVENTS,
    KILLED,
    PLAIN,
    InjectedFaultError,
    NeverEndingAcp,
    Outcome,
    Read,
    Stream,
    run_reads,
    spy_on,
    timed,
)
from reliability import fault_case
from ttft_probe import Probe
from ttft_probe._run import CallerContext, ExitInfo, ProcessTracker, RunResult
from ttft_probe.adapters import (
    Adapter,
    AdapterOptions,
    Event,
    MarkerObserved,
    SessionObserved,
    TurnEnded,
    acp_json_rpc,
    adapter_for,
    claude_stream_json,
    json_event_stream,
)
from ttft_probe.adapters._base import decode_name
from ttft_probe.adapters.claude_stream_json import ClaudeStreamJsonAdapter
from ttft_probe.agents import resolve_agent
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
    TimingUnavailableReason,
    record_schema,
)
from ttft_probe.sinks.store import Store

LINE_FAMILIES = (CLAUDE, EVENTS, ACP)
TRACKER_ONLY = {"agent": "n/a", "records_lost": "n/a"}
"""Fault-table columns of the tests that feed a tracker directly: no agent process runs and
no store is written (their records are checked as built, valid and storable)."""

# --- driving a real tracker -------------------------------------------------------------


def lines_of(family: RuntimeFamily, lines: Sequence[Read]) -> Outcome:
    """Feed whole lines, one read each: a marker's ``t_ns`` is its line's index + 1."""
    return run_reads(family, timed([(s, line + b"\n") for s, line in lines]))


_VALIDATOR = jsonschema.Draft202012Validator(
    record_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
_INT64 = range(-(2**63), 2**63)


def check_records(out: Outcome, *, fault_free: bool = True) -> None:
    """At least one record; each valid, strict JSON and storable; no adapter fault."""
    assert out.results, "no record was built"
    for result in out.results:
        data = result.record.to_dict()
        _VALIDATOR.validate(data)
        json.dumps(data, allow_nan=False)
        for value in data.values():
            if isinstance(value, str):
                value.encode("utf-8")
            elif isinstance(value, int) and not isinstance(value, bool):
                assert value in _INT64
        if fault_free:
            assert result.record.adapter_error is None, result.record.adapter_error


# --- references: the marker rules of DESIGN §3, written apart from the adapters ---------


def obj(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def nonempty(value: object) -> bool:
    return isinstance(value, str) and value != ""


def complete_lines(
    reads: Sequence[tuple[Stream, bytes, int]], eof_ns: int
) -> list[tuple[bytes, int]]:
    """Stdout lines as the run sees them, each with the time of the read that ended it."""
    lines: list[tuple[bytes, int]] = []
    buf = b""
    for stream, data, t in reads:
        if stream != "stdout":
            continue
        buf += data
        *done, buf = buf.split(b"\n")
        lines.extend((ln.removesuffix(b"\r"), t) for ln in done)
    if buf:
        lines.append((buf, eof_ns))
    return lines


Token = tuple[int, FirstTokenGranularity, FirstTokenKind]


@attrs.frozen
class Expect:
    cli_ready: int | None = None
    session_init: int | None = None
    token: Token | None = None


def check_stream_markers(out: Outcome, expect: Expect) -> None:
    times = out.only().times
    record = out.only().record
    assert times.cli_ready_ns == expect.cli_ready
    assert times.session_init_done_ns == expect.session_init
    if expect.token is None:
        assert times.first_token_ns is None
        assert record.first_token_granularity is None
    else:
        t, granularity, kind = expect.token
        assert times.first_token_ns == t
        assert (record.first_token_granularity, record.first_token_kind) == (granularity, kind)


def _claude_delta(msg: dict[str, Any], t: int) -> Token | None:
    event = msg.get("event")
    if not isinstance(event, dict) or event.get("type") != "content_block_delta":
        return None
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return None
    if delta.get("type") == "text_delta" and nonempty(delta.get("text")):
        return t, FirstTokenGranularity.DELTA, FirstTokenKind.TEXT
    if delta.get("type") == "thinking_delta" and nonempty(delta.get("thinking")):
        return t, FirstTokenGranularity.DELTA, FirstTokenKind.THINKING
    return None


def _message_blocks(msg: dict[str, Any]) -> list[Any]:
    message = msg.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def _claude_message(msg: dict[str, Any], t: int) -> Token | None:
    message = msg.get("message")
    if not isinstance(message, dict) or message.get("model") == "<synthetic>":
        return None
    for block in _message_blocks(msg):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and nonempty(block.get("text")):
            return t, FirstTokenGranularity.MESSAGE, FirstTokenKind.TEXT
        if block.get("type") == "thinking" and nonempty(block.get("thinking")):
            return t, FirstTokenGranularity.MESSAGE, FirstTokenKind.THINKING
    return None


def claude_reference(lines: list[tuple[bytes, int]]) -> Expect:
    """cliReady: first JSON object; init: first system/init; token: delta, else message.

    A message with a non-null ``parent_tool_use_id`` is a subagent's: never the token.
    """
    cli = init = None
    token: Token | None = None
    saw_stream_event = False  # in this turn (a result line ends the turn)
    for line, t in lines:
        msg = obj(line)
        if msg is None:
            continue
        cli = t if cli is None else cli
        kind = msg.get("type")
        if init is None and kind == "system" and msg.get("subtype") == "init":
            init = t
        if msg.get("parent_tool_use_id") is not None and kind != "result":
            continue
        if token is None and kind == "stream_event":
            saw_stream_event = True
            token = _claude_delta(msg, t)
        elif token is None and kind == "assistant" and not saw_stream_event:
            token = _claude_message(msg, t)
        if kind == "result":
            saw_stream_event = False
    return Expect(cli, init, token)


def _event_token(kind: str, msg: dict[str, Any], t: int) -> Token | None:
    delta, whole = FirstTokenGranularity.DELTA, FirstTokenGranularity.MESSAGE
    if kind == "message" and msg.get("role") == "assistant" and nonempty(msg.get("content")):
        return t, delta, FirstTokenKind.TEXT
    if kind in {"item.started", "item.updated", "item.completed"}:
        item = msg.get("item")
        if isinstance(item, dict) and nonempty(item.get("text")):
            if item.get("type") == "agent_message":
                return t, whole, FirstTokenKind.TEXT
            if item.get("type") == "reasoning":
                return t, whole, FirstTokenKind.THINKING
    if kind == "thinking" and nonempty(msg.get("text")):
        return t, delta, FirstTokenKind.THINKING
    if kind == "assistant" and any(
        isinstance(b, dict) and b.get("type") == "text" and nonempty(b.get("text"))
        for b in _message_blocks(msg)
    ):
        return t, whole, FirstTokenKind.TEXT
    return None


def events_reference(lines: list[tuple[bytes, int]]) -> Expect:
    """cliReady: first JSON object; init: turn.started / init / system+init; first token."""
    cli = init = None
    token: Token | None = None
    for line, t in lines:
        msg = obj(line)
        if msg is None:
            continue
        cli = t if cli is None else cli
        kind = msg.get("type")
        if not isinstance(kind, str):
            continue
        is_init = kind in {"turn.started", "init"} or (
            kind == "system" and msg.get("subtype") == "init"
        )
        if init is None and is_init:
            init = t
        if token is None:
            token = _event_token(kind, msg, t)
    return Expect(cli, init, token)


def acp_cli_ready(lines: list[tuple[bytes, int]]) -> int | None:
    """The first well-formed JSON-RPC message on stdout."""
    for line, t in lines:
        msg = obj(line)
        if msg is None:
            continue
        response = "id" in msg and ("result" in msg or "error" in msg)
        if msg.get("jsonrpc") == "2.0" or isinstance(msg.get("method"), str) or response:
            return t
    return None


# --- strategies -------------------------------------------------------------------------

SPECIAL_STRINGS = ["", " ", "\x00", "\ud800", "é\udfff", "a" * 300, "null", "\n", "\\u0000"]
PROTOCOL_KEYS = [
    "type", "subtype", "event", "delta", "text", "thinking", "message", "content", "model",
    "session_id", "result", "usage", "item", "role", "status", "stats", "thread_id",
    "jsonrpc", "id", "method", "params", "sessionId", "threadId", "update",
    "sessionUpdate", "error", "stopReason", "input_tokens", "inputTokens", "ttft_ms",
    "parent_tool_use_id", "request_id", "request", "response",
]  # fmt: skip
HOSTILE_SCALARS: list[Any] = [
    *SPECIAL_STRINGS, -1, -5, 1.5, 2**63, 2**64, 10**400, -0.0, 1e308,
    math.nan, math.inf, -math.inf, True, None, "Hi", 0,
]  # fmt: skip
"""Values of the right JSON type for most fields, but not what the field may hold."""
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(HOSTILE_SCALARS)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(PROTOCOL_KEYS) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _slots(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) inside a JSON value, depth first."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield value, key
            yield from _slots(child)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield value, i
            yield from _slots(child)


@st.composite
def wrong_shape(draw: st.DrawFn, skeletons: Sequence[dict[str, Any]]) -> Any:
    """A protocol message with up to three of its values replaced, deleted or retyped."""
    msg: Any = copy.deepcopy(draw(st.sampled_from(skeletons)))
    for _ in range(draw(st.integers(0, 3))):
        slots = list(_slots(msg))
        if not slots or draw(st.integers(0, 9)) == 0:
            msg = draw(JSON_VALUES) if draw(st.booleans()) else [msg]
            break
        leaves = [(c, k) for c, k in slots if not isinstance(c[k], dict | list)]
        prefer_leaf = draw(st.booleans())
        container, key = draw(st.sampled_from(leaves if leaves and prefer_leaf else slots))
        action = draw(st.integers(0, 2))
        if isinstance(container, dict) and action == 0:
            del container[key]
        else:
            hostile = st.sampled_from(HOSTILE_SCALARS)
            container[key] = draw(JSON_VALUES if action == 1 else hostile)
    return msg


@st.composite
def retyped(draw: st.DrawFn, skeletons: Sequence[dict[str, Any]]) -> Any:
    """A protocol message with any of its leaves (ids, counts, timings, text) made hostile."""
    msg: Any = copy.deepcopy(draw(st.sampled_from(skeletons)))
    for container, key in list(_slots(msg)):
        leaf = not isinstance(container[key], dict | list)
        if leaf and key != "type" and draw(st.booleans()):
            container[key] = draw(st.sampled_from(HOSTILE_SCALARS) | SCALARS)
    return msg


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
GARBAGE_LINES = [b"", b"\r", b"not json", b"[1]", b"null", b"1e999", b"9" * 5000, b"[" * 5000,
                 b'{"a":NaN}', b'{"type":"result"', b"\x00" * 8, b"\xef\xbb\xbf{}"]  # fmt: skip


def garbage(skeletons: Sequence[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """One line (without its newline): valid JSON of the wrong shape, or not JSON at all."""
    shaped = wrong_shape(skeletons).map(dumps)
    broken = st.builds(
        lambda line, cut, bad: line[:cut] + bad + line[cut:],
        shaped,
        st.integers(0, 40),
        st.sampled_from(INVALID_UTF8),
    )
    skeleton = st.sampled_from(skeletons).map(dumps)
    return st.one_of(
        skeleton,  # intact messages too, so that mutated ones arrive in every turn state
        shaped,
        retyped(skeletons).map(dumps),
        broken,
        st.sampled_from(GARBAGE_LINES),
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
    )


CLAUDE_SKELETONS: list[dict[str, Any]] = [
    {"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-x",
     "claude_code_version": "2.1.197"},
    {"type": "stream_event", "event": {"type": "message_start", "message": {"id": "m"}}},
    {"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "Hi"}}},
    {"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "thinking_delta", "thinking": "hm"}}},
    {"type": "assistant", "message": {"model": "claude-x", "content": [
        {"type": "thinking", "thinking": ""}, {"type": "text", "text": "Hi"}]}},
    {"type": "assistant", "message": {"model": "<synthetic>",
                                      "content": [{"type": "text", "text": "API Error"}]}},
    {"type": "user", "message": {"content": [{"type": "tool_result", "content": "x"}]}},
    {"type": "stream_event", "parent_tool_use_id": "toolu_1",
     "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "sub"}}},
    {"type": "result", "subtype": "success", "is_error": False, "ttft_ms": 812.5,
     "time_to_request_ms": 200, "duration_api_ms": 900,
     "usage": {"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 1,
               "cache_creation_input_tokens": 0}},
]  # fmt: skip
EVENT_SKELETONS: list[dict[str, Any]] = [
    {"type": "thread.started", "thread_id": "t-1"},
    {"type": "turn.started"},
    {"type": "item.started", "item": {"id": "i", "type": "agent_message", "text": ""}},
    {"type": "item.completed", "item": {"id": "i", "type": "agent_message", "text": "Hi"}},
    {"type": "item.updated", "item": {"id": "i", "type": "reasoning", "text": "hm"}},
    {"type": "item.completed", "item": {"id": "i", "type": "command_execution", "text": "ls"}},
    {"type": "turn.completed", "usage": {"input_tokens": 3, "cached_input_tokens": 1,
                                         "output_tokens": 5}},
    {"type": "turn.failed", "error": {"message": "x"}},
    {"type": "error", "message": "retrying"},
    {"type": "init", "session_id": "g-1", "model": "gemini-2.5-flash"},
    {"type": "message", "role": "user", "content": "hello"},
    {"type": "message", "role": "assistant", "content": "Hi", "delta": True},
    {"type": "result", "status": "success", "stats": {"input_tokens": 3, "output_tokens": 5}},
    {"type": "system", "subtype": "init", "session_id": "c-1", "model": "cursor"},
    {"type": "thinking", "text": "hm"},
    {"type": "assistant", "message": {"content": [{"type": "text", "text": "Hi"}]}},
    {"type": "result", "subtype": "success", "is_error": False, "usage": {"inputTokens": 1}},
]  # fmt: skip


# --- (a) arbitrary bytes and invalid UTF-8, split anywhere ------------------------------

BYTE_READS = st.lists(
    st.binary(max_size=48)
    | st.sampled_from([*INVALID_UTF8, b"\n", b"\r\n", b"{", b"}\n", *GARBAGE_LINES]),
    min_size=1,
    max_size=24,
)


@pytest.mark.fault(
    "Bad input",
    "arbitrary bytes and invalid UTF-8 on stdout and stdin, any read boundaries",
    outcome="no raise, no adapter fault; markers exactly as the family's rule; valid record",
    **TRACKER_ONLY,
)
@pytest.mark.parametrize("family", list(RuntimeFamily))
@settings(max_examples=200)
@given(data=BYTE_READS, stdin=BYTE_READS)
def test_arbitrary_bytes(family: RuntimeFamily, data: list[bytes], stdin: list[bytes]) -> None:
    fault_case()
    reads: list[Read] = [("stdout", d) for d in data]
    if family is ACP:  # the only family that parses stdin: interleave it
        ins: list[Read] = [("stdin", s) for s in stdin]
        pairs = itertools.zip_longest(reads, ins)
        reads = [r for pair in pairs for r in pair if r is not None]
    fed = timed(reads)
    out = run_reads(family, fed)
    check_records(out)
    lines = complete_lines(fed, out.eof_ns)
    if family is CLAUDE:
        check_stream_markers(out, claude_reference(lines))
    elif family is EVENTS:
        check_stream_markers(out, events_reference(lines))
    elif family is ACP:
        assert out.only().times.cli_ready_ns == acp_cli_ready(lines)
        assert out.only().times.first_token_ns is None  # random bytes sent no prompt
    else:
        first = next((t for s, d, t in fed if s == "stdout" and d), None)
        check_stream_markers(out, Expect(first, None, plain_token(first)))


def plain_token(t: int | None) -> Token | None:
    return None if t is None else (t, FirstTokenGranularity.DELTA, FirstTokenKind.TEXT)


# --- (a) valid JSON of the wrong shape --------------------------------------------------


@pytest.mark.fault(
    "Bad input",
    "claude stream-json: valid JSON of the wrong shape (wrong types, missing keys)",
    outcome="markers exactly as DESIGN §3 grants them; no adapter fault; valid record",
    **TRACKER_ONLY,
)
@settings(max_examples=400)
@given(lines=st.lists(garbage(CLAUDE_SKELETONS), max_size=14))
def test_claude_wrong_shape_json(lines: list[bytes]) -> None:
    fault_case()
    out = lines_of(CLAUDE, [("stdout", line) for line in lines])
    check_records(out)
    check_stream_markers(out, claude_reference([(line, t) for t, line in enumerate(lines, 1)]))


@pytest.mark.fault(
    "Bad input",
    "codex / gemini / cursor event stream: valid JSON of the wrong shape",
    outcome="markers exactly as DESIGN §3 grants them; no adapter fault; valid record",
    **TRACKER_ONLY,
)
@settings(max_examples=400)
@given(lines=st.lists(garbage(EVENT_SKELETONS), max_size=14))
def test_json_event_stream_wrong_shape_json(lines: list[bytes]) -> None:
    fault_case()
    out = lines_of(EVENTS, [("stdout", line) for line in lines])
    check_records(out)
    check_stream_markers(out, events_reference([(line, t) for t, line in enumerate(lines, 1)]))


# --- Claude Code in SDK mode: the client's stdin and the CLI's stdout, in any order ------

SDK_ARGV = ("claude", "--output-format", "stream-json", "--verbose", "--input-format",
            "stream-json", "--include-partial-messages")  # fmt: skip
SDK_OPTIONS = AdapterOptions(argv=SDK_ARGV)
SDK_STDIN_SKELETONS: list[dict[str, Any]] = [
    {"type": "control_request", "request_id": "req_1", "request": {"subtype": "initialize"}},
    {"type": "control_request", "request_id": 7, "request": {"subtype": "initialize"}},
    {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "hi"}]},
     "parent_tool_use_id": None, "session_id": "default"},
    {"type": "user", "message": {"role": "user", "content": "hi"}},
    {"type": "control_request", "request_id": "req_2", "request": {"subtype": "interrupt"}},
    {"type": "control_request", "request_id": "req_3",
     "request": {"subtype": "set_permission_mode", "mode": "plan"}},
    {"type": "control_response", "response": {"subtype": "success", "request_id": "cli_1",
                                              "response": {"behavior": "allow"}}},
]  # fmt: skip
SDK_STDOUT_SKELETONS: list[dict[str, Any]] = [
    *CLAUDE_SKELETONS,
    {"type": "control_response", "response": {"subtype": "success", "request_id": "req_1"}},
    {"type": "control_response", "response": {"subtype": "success", "request_id": 7}},
    {"type": "control_response", "response": {"subtype": "error", "request_id": "req_9"}},
    {"type": "control_request", "request_id": "cli_1",
     "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {}}},
    {"type": "system", "subtype": "status", "status": "requesting"},
    {"type": "result", "subtype": "error_during_execution", "is_error": False},
]  # fmt: skip
_SDK_IN = st.sampled_from(SDK_STDIN_SKELETONS).map(lambda m: ("stdin", dumps(m)))
_SDK_OUT = st.sampled_from(SDK_STDOUT_SKELETONS).map(lambda m: ("stdout", dumps(m)))
_SDK_NOISE = st.one_of(
    _SDK_IN,
    _SDK_OUT,
    garbage(SDK_STDIN_SKELETONS).map(lambda line: ("stdin", line)),
    garbage(SDK_STDOUT_SKELETONS).map(lambda line: ("stdout", line)),
)


@st.composite
def sdk_conversation(draw: st.DrawFn) -> list[tuple[Stream, bytes]]:
    """A client's conversation: maybe an initialize handshake, then turns — a message, the
    CLI's lines for it, maybe an interrupt, mostly a result (a missing one makes the next
    message wait) — with noise of any kind inserted anywhere."""
    ops: list[tuple[Stream, bytes]] = []
    if draw(st.booleans()):
        ops.append(("stdin", dumps(SDK_STDIN_SKELETONS[0])))
        if draw(st.integers(0, 3)) > 0:
            ops.append(("stdout", dumps(SDK_STDOUT_SKELETONS[len(CLAUDE_SKELETONS)])))
    for _ in range(draw(st.integers(0, 4))):
        ops.append(("stdin", dumps(draw(st.sampled_from(SDK_STDIN_SKELETONS[2:4])))))
        body = draw(st.lists(st.sampled_from(CLAUDE_SKELETONS[:-1]), max_size=5))
        turn: list[tuple[Stream, bytes]] = [("stdout", dumps(m)) for m in body]
        if draw(st.integers(0, 2)) == 0:
            turn.insert(draw(st.integers(0, len(turn))), ("stdin", dumps(SDK_STDIN_SKELETONS[4])))
        if draw(st.integers(0, 4)) > 0:
            turn.append(("stdout", dumps(draw(st.sampled_from(SDK_STDOUT_SKELETONS[-1:]
                                                              + CLAUDE_SKELETONS[-1:])))))
        ops += turn
    for _ in range(draw(st.integers(0, 4))):
        ops.insert(draw(st.integers(0, len(ops))), draw(_SDK_NOISE))
    return ops


SDK_OPS = st.one_of(sdk_conversation(), st.lists(_SDK_NOISE, max_size=30))


@attrs.define
class SdkTurn:
    prompt: int
    ready: int | None = None  # a queued turn: when the turn before it ended
    init: int | None = None
    token: Token | None = None
    saw_stream_event: bool = False
    cancelled: bool = False
    failed: bool = False
    end: int | None = None


def _sdk_id(value: object) -> bool:
    return (isinstance(value, str) and value != "") or (
        isinstance(value, int) and not isinstance(value, bool)
    )


@attrs.define
class SdkExpect:
    cli_ready: int | None
    ready_lost: bool
    turns: list[SdkTurn]


def claude_sdk_reference(ops: list[tuple[Stream, bytes, int]]) -> SdkExpect:  # noqa: PLR0912
    """The SDK-mode rules of DESIGN §3 and issue 11, written apart from the adapter.

    cliReady: the control_response answering an initialize sent before any message and
    before readiness (the latest such id), else the first stdout JSON object if it came
    before any message; a message before either loses it. Each user message (``message``
    an object) is a turn, served one at a time in order; stdout belongs to the turn in
    flight (the oldest open one) and to nothing while none is open.
    """
    ready: int | None = None
    lost = False
    init_id: object = None
    open_turns: list[SdkTurn] = []
    done: list[SdkTurn] = []
    for stream, line, t in ops:
        msg = obj(line)
        if msg is None:
            continue
        kind = msg.get("type")
        awaiting = ready is None and not lost
        if stream == "stdin":
            request = msg.get("request")
            subtype = request.get("subtype") if isinstance(request, dict) else None
            if kind == "user" and isinstance(msg.get("message"), dict):
                lost = lost or awaiting
                open_turns.append(SdkTurn(prompt=t))
            elif kind == "control_request" and subtype == "initialize":
                if awaiting and not open_turns and _sdk_id(msg.get("request_id")):
                    init_id = msg.get("request_id")
            elif kind == "control_request" and subtype == "interrupt" and open_turns:
                open_turns[0].cancelled = True
            continue
        if awaiting:
            response = msg.get("response")
            rid = response.get("request_id") if isinstance(response, dict) else None
            if init_id is None or (
                kind == "control_response" and _sdk_id(rid)
                and type(rid) is type(init_id) and rid == init_id
            ):
                ready = t
        if not open_turns:
            continue
        head = open_turns[0]
        if kind == "system" and msg.get("subtype") == "init" and head.init is None:
            head.init = t
        elif kind == "result":
            head.end = t
            head.failed = msg.get("is_error") is True or msg.get("subtype") != "success"
            done.append(open_turns.pop(0))
            if open_turns:
                open_turns[0].ready = t
        elif msg.get("parent_tool_use_id") is not None:
            continue
        elif kind == "stream_event":
            head.saw_stream_event = True
            head.token = head.token or _claude_delta(msg, t)
        elif kind == "assistant" and not head.saw_stream_event:
            head.token = head.token or _claude_message(msg, t)
    return SdkExpect(ready, lost, [*done, *open_turns])


def check_sdk_runs(out: Outcome, ops: list[tuple[Stream, bytes, int]]) -> None:
    """One record per user message (none lost), each with exactly its own markers."""
    expect = claude_sdk_reference(ops)
    if not expect.turns:  # no message: the process died before any prompt
        run = out.only()
        assert run.times.cli_ready_ns == expect.cli_ready
        assert run.times.prompt_sent_ns is None
        return
    assert len(out.results) == len(expect.turns)
    for n, (run, turn) in enumerate(zip(out.results, expect.turns, strict=True)):
        times, record = run.times, run.record
        assert record.process_reused is (n > 0)
        assert times.prompt_sent_ns == turn.prompt
        assert times.session_init_done_ns == turn.init
        if turn.token is None:
            assert times.first_token_ns is None
        else:
            t, granularity, kind = turn.token
            assert times.first_token_ns == t
            assert (record.first_token_granularity, record.first_token_kind) == (granularity, kind)
        assert times.end_ns == (turn.end if turn.end is not None else out.exit_ns)
        if n == 0:
            assert times.cli_ready_ns == expect.cli_ready
            disordered = turn.init is not None and turn.token is not None and turn.token[0] < turn.init
            if expect.cli_ready is None and expect.ready_lost and not disordered:
                reason = record.timing_unavailable_reason
                assert reason is TimingUnavailableReason.CLI_READY_NOT_OBSERVABLE
        else:
            assert times.cli_ready_ns == (turn.ready or turn.prompt)
        if turn.end is None:  # still open when the process was killed
            assert record.status.value == "failed"
        elif turn.cancelled:
            assert record.status.value == "cancelled"
        else:
            assert record.status.value == ("failed" if turn.failed else "succeeded")


@pytest.mark.fault(
    "Bad input",
    "claude SDK mode: any mix of client stdin (messages, initialize, interrupt, control "
    "traffic, garbage) and CLI stdout",
    outcome="one record per user message, none lost; each turn's own markers only; no "
    "adapter fault; valid record",
    **TRACKER_ONLY,
)
@settings(max_examples=400)
@given(ops=SDK_OPS)
def test_claude_sdk_mode_any_stdin_and_stdout(ops: list[tuple[Stream, bytes]]) -> None:
    fault_case()
    fed = timed([(stream, line + b"\n") for stream, line in ops])
    out = run_reads(CLAUDE, fed, options=SDK_OPTIONS)
    check_records(out)
    whole_lines = [(stream, data.removesuffix(b"\n").removesuffix(b"\r"), t)
                   for stream, data, t in fed]
    check_sdk_runs(out, whole_lines)


@pytest.mark.fault(
    "Bad input",
    "claude SDK mode: arbitrary bytes and invalid UTF-8 on stdin and stdout, any reads",
    outcome="no raise, no adapter fault; valid record",
    **TRACKER_ONLY,
)
@settings(max_examples=200)
@given(data=BYTE_READS, stdin=BYTE_READS)
def test_claude_sdk_mode_arbitrary_bytes(data: list[bytes], stdin: list[bytes]) -> None:
    fault_case()
    pairs = itertools.zip_longest([("stdout", d) for d in data], [("stdin", s) for s in stdin])
    out = run_reads(CLAUDE, timed([r for pair in pairs for r in pair if r is not None]),
                    options=SDK_OPTIONS)
    check_records(out)
    assert len(out.results) == 1  # random bytes hold no user message: one record


# --- plain: arbitrary bytes with user patterns ------------------------------------------

PLAIN_LITERALS = ("ready>", "connected", "A: ")
PLAIN_READS = st.lists(
    st.binary(max_size=12)
    | st.sampled_from(
        [
            *INVALID_UTF8,
            b"\n",
            b"\r\n",
            b"ready>",
            b"connected",
            b"A: ",
            b"x",
            b"\n\xc3",
            b"\n\xe2\x82",
            b"\xa9\n",
            b"connected\n\xf0\x9f",
        ]
    ),
    max_size=20,
)


def _first_end(stream: bytes, needle: bytes, ends: list[tuple[int, int]]) -> tuple[int, int] | None:
    """(read time, end offset) of the first occurrence of ``needle``."""
    at = stream.find(needle)
    if at == -1:
        return None
    end = at + len(needle)
    return next(t for t, cum in ends if cum >= end), end


def plain_reference(
    reads: list[tuple[Stream, bytes, int]], cli: str | None, init: str | None, token: str | None
) -> Expect:
    """DESIGN §3 plain rules for ASCII literal patterns (ASCII bytes decode to themselves)."""
    stream = b"".join(d for _, d, _ in reads)
    ends: list[tuple[int, int]] = []
    for _, d, t in reads:
        ends.append((t, (ends[-1][1] if ends else 0) + len(d)))
    first_read = next((t for _, d, t in reads if d), None)

    def found(literal: str | None) -> tuple[int, int] | None:
        return None if literal is None else _first_end(stream, literal.encode(), ends)

    def when(at: tuple[int, int] | None) -> int | None:
        return None if at is None else at[0]

    cli_at, init_at, token_at = found(cli), found(init), found(token)
    cli_t = first_read if cli is None else when(cli_at)
    init_t = when(init_at)
    token_t: int | None
    if token is not None:
        token_t = when(token_at)
    elif init is None and cli is None:
        token_t = first_read
    else:
        arming = init_at if init is not None else cli_at
        newline = -1 if arming is None else stream.find(b"\n", arming[1])
        after = newline + 1 if newline != -1 else None
        token_t = next((t for t, cum in ends if after is not None and cum > after), None)
    return Expect(cli_t, init_t, plain_token(token_t))


PLAIN_OPTIONS = st.tuples(
    st.sampled_from([None, PLAIN_LITERALS[0]]),
    st.sampled_from([None, PLAIN_LITERALS[1]]),
    st.sampled_from([None, PLAIN_LITERALS[2]]),
)


@pytest.mark.fault(
    "Bad input",
    "plain: arbitrary bytes, invalid UTF-8 and split characters, with and without patterns",
    outcome="markers exactly as DESIGN §3 grants them; no adapter fault; valid record",
    **TRACKER_ONLY,
)
@settings(max_examples=400)
@given(chunks=PLAIN_READS, patterns=PLAIN_OPTIONS)
def test_plain_arbitrary_bytes_with_patterns(
    chunks: list[bytes], patterns: tuple[str | None, str | None, str | None]
) -> None:
    fault_case()
    cli, init, token = patterns
    options = AdapterOptions(
        cli_ready_regex=None if cli is None else re.compile(re.escape(cli)),
        session_init_regex=None if init is None else re.compile(re.escape(init)),
        first_token_regex=None if token is None else re.compile(re.escape(token)),
    )
    fed = timed([("stdout", c) for c in chunks])
    out = run_reads(PLAIN, fed, options=options)
    check_records(out)
    check_stream_markers(out, plain_reference(fed, cli, init, token))
    if init is None:
        assert out.only().record.timing_unavailable_reason is not None


# --- (c) JSON-RPC: unknown and duplicated ids, out-of-order messages --------------------

IDS = [0, 1, 2, 3, "1", "p", 1.0, None, True, [1], {"n": 1}, -3, 2**70, 1.5]
SESSIONS = ["A", "B", None, "", 5, ["A"], "\ud800"]
IN_METHODS = ["initialize", "session/new", "session/load", "session/resume", "session/prompt",
              "session/prompt", "session/cancel", "turn/start", "thread/start",
              "thread/resume", "fs/read_text_file", 5, None, ["session/prompt"], {}]  # fmt: skip
UPDATE_KINDS = ["agent_message_chunk", "agent_message_chunk", "agent_thought_chunk",
                "user_message_chunk", "usage_update", "available_commands_update",
                "tool_call", "plan", 5, None]  # fmt: skip
CONTENTS: list[Any] = [{"type": "text", "text": "Hi"}, {"type": "text", "text": ""},
                       {"text": 5}, "Hi", None, [{"text": "Hi"}]]  # fmt: skip
RESULTS: list[Any] = [{}, None, [], 5, {"stopReason": "end_turn"}, {"stopReason": "cancelled"},
                      {"sessionId": "A"}, {"sessionId": "B"}, {"sessionId": 5},
                      {"thread": {"id": "A", "turns": [1, 2]}}, {"thread": []},
                      {"agentInfo": {"version": "\ud800"}}, {"userAgent": "codex/1.0 x"},
                      {"usage": {"inputTokens": -1, "outputTokens": 2**64}}]  # fmt: skip


ids = st.sampled_from(IDS)
jsonrpc = st.sampled_from([{"jsonrpc": "2.0"}, {"jsonrpc": "2.0"}, {}, {"jsonrpc": 2}])
request_params: st.SearchStrategy[Any] = st.one_of(
    st.dictionaries(st.sampled_from(["sessionId", "threadId"]), st.sampled_from(SESSIONS),
                    min_size=1, max_size=1),
    st.sampled_from([{}, [], None, "A"]),
)  # fmt: skip

stdin_requests = st.builds(
    lambda head, id_, method, params: {**head, "id": id_, "method": method, "params": params},
    jsonrpc, ids, st.sampled_from(IN_METHODS), request_params,
)  # fmt: skip
responses = st.builds(
    lambda head, id_, body, error: {**head, "id": id_, ("error" if error else "result"): body},
    jsonrpc, ids, st.sampled_from(RESULTS), st.booleans(),
)  # fmt: skip
session_updates = st.builds(
    lambda head, sid, kind, content: {
        **head, "method": "session/update",
        "params": {"sessionId": sid, "update": {"sessionUpdate": kind, "content": content,
                                                "inputTokens": 3}},
    },
    jsonrpc, st.sampled_from(SESSIONS), st.sampled_from(UPDATE_KINDS), st.sampled_from(CONTENTS),
)  # fmt: skip
app_server = st.builds(
    lambda method, sid, delta, status: {
        "method": method,
        "params": {"threadId": sid, "delta": delta, "turn": {"status": status},
                   "tokenUsage": {"last": {"inputTokens": 1}}},
    },
    st.sampled_from(["item/agentMessage/delta", "item/reasoning/textDelta", "turn/completed",
                     "thread/tokenUsage/updated"]),
    st.sampled_from(SESSIONS), st.sampled_from(["Hi", "", 5, None]),
    st.sampled_from(["completed", "failed", "interrupted"]),
)  # fmt: skip
agent_requests = st.builds(
    lambda id_, method: {"jsonrpc": "2.0", "id": id_, "method": method, "params": {}},
    ids,
    st.sampled_from(["session/request_permission", "fs/read_text_file", "session/update"]),
)
ACP_SKELETONS: list[dict[str, Any]] = [
    {"jsonrpc": "2.0", "id": 1, "result": {"sessionId": "A"}},
    {"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "A", "update": {
        "sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "Hi"}}}},
    {"jsonrpc": "2.0", "id": 2, "result": {"stopReason": "end_turn"}},
]  # fmt: skip

acp_stdout = st.one_of(
    responses.map(dumps),
    session_updates.map(dumps),
    app_server.map(dumps),
    agent_requests.map(dumps),
    garbage(ACP_SKELETONS),
)
acp_ops = st.lists(
    st.tuples(st.just("stdin"), stdin_requests.map(dumps))
    | st.tuples(st.just("stdout"), acp_stdout),
    max_size=24,
)


def rpc_key(value: object) -> tuple[bool, int | str] | None:
    """JSON-RPC id equality: 1 and 1.0 are one id, "1" another; ids are numbers or strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return True, value
    if isinstance(value, float) and value.is_integer():
        return True, int(value)
    if isinstance(value, str):
        return False, value
    return None


def _sid(params: object) -> str | None:
    if not isinstance(params, dict):
        return None
    return decode_name(params.get("sessionId")) or decode_name(params.get("threadId"))


@attrs.frozen
class Op:
    t: int
    stream: Stream
    msg: dict[str, Any] | None

    @property
    def key(self) -> tuple[bool, int | str] | None:
        return None if self.msg is None else rpc_key(self.msg.get("id"))

    @property
    def method(self) -> object:
        return None if self.msg is None else self.msg.get("method")

    def is_response(self) -> bool:
        m = self.msg
        return (
            self.stream == "stdout"
            and m is not None
            and not isinstance(m.get("method"), str)
            and "id" in m
            and ("result" in m or "error" in m)
        )

    def is_request(self) -> bool:
        return self.stream == "stdin" and self.key is not None and isinstance(self.method, str)


def _token_kind(op: Op) -> tuple[str | None, FirstTokenKind] | None:  # noqa: PLR0911
    """The session a token-shaped stdout notification names, and its kind."""
    m = op.msg
    if op.stream != "stdout" or m is None or "id" in m or not isinstance(m.get("method"), str):
        return None
    params = m.get("params")
    if not isinstance(params, dict):
        return None
    if m["method"] == "session/update":
        update = params.get("update")
        if not isinstance(update, dict):
            return None
        content = update.get("content")
        if not (isinstance(content, dict) and nonempty(content.get("text"))):
            return None
        kinds = {"agent_message_chunk": FirstTokenKind.TEXT,
                 "agent_thought_chunk": FirstTokenKind.THINKING}  # fmt: skip
        name = update.get("sessionUpdate")
        kind = kinds.get(name) if isinstance(name, str) else None
        return None if kind is None else (_sid(params), kind)
    deltas = {"item/agentMessage/delta": FirstTokenKind.TEXT,
              "item/reasoning/textDelta": FirstTokenKind.THINKING}  # fmt: skip
    if m["method"] in deltas and nonempty(params.get("delta")):
        return _sid(params), deltas[m["method"]]
    return None


def _answered(ops: list[Op], key: object, after: int, before: int) -> bool:
    """A response with JSON-RPC id ``key`` on stdout strictly between two times."""
    return any(o.is_response() and o.key == key for o in ops if after < o.t < before)


def _reused(ops: list[Op], key: object, after: int, before: int) -> bool:
    """The client sent another request with the same id in between (the answer is ambiguous)."""
    return any(o.is_request() and o.key == key for o in ops if after < o.t < before)


def check_acp_token_is_justified(ops: list[Op], result: RunResult) -> None:
    """Conditions DESIGN §3 sets for an ACP / app-server firstToken, each necessary."""
    t_token = result.times.first_token_ns
    if t_token is None:
        return
    sid = result.record.session_id
    token = _token_kind(ops[t_token - 1])
    assert token is not None, "firstToken on a line that is no non-empty message chunk"
    named, kind = token
    assert named in {None, sid}, "firstToken from another session's chunk"
    assert result.record.first_token_kind is kind
    t_prompt = result.times.prompt_sent_ns
    assert t_prompt is not None, "firstToken without a prompt"
    assert t_prompt < t_token, "firstToken before its prompt"
    prompt = ops[t_prompt - 1]
    assert prompt.is_request()
    assert prompt.method in {"session/prompt", "turn/start"}
    assert prompt.msg is not None
    assert _sid(prompt.msg.get("params")) == sid
    if prompt.method == "session/prompt":
        for o in ops[t_prompt : t_token - 1]:
            if o.is_response() and o.key == prompt.key:
                assert _reused(ops, prompt.key, t_prompt, o.t), "token after its turn's result"
        # An earlier prompt of this session still unanswered at this prompt must be answered
        # before this prompt's first token (a chunk until then may be its answer).
        for o in ops[: t_prompt - 1]:
            if not (o.is_request() and o.method == "session/prompt" and o.key != prompt.key):
                continue
            assert o.msg is not None
            if _sid(o.msg.get("params")) != sid or _answered(ops, o.key, o.t, t_prompt):
                continue
            if _reused(ops, o.key, o.t, t_token):
                continue
            assert _answered(ops, o.key, t_prompt, t_token), "token of a superseded prompt"
    # A session/load replays history before its result: never a token.
    loads = [
        o for o in ops[: t_token - 1]
        if o.is_request() and o.method in {"session/load", "session/resume"}
        and o.msg is not None and _sid(o.msg.get("params")) == sid
    ]  # fmt: skip
    if loads and loads[-1].method == "session/load":
        assert _answered(ops, loads[-1].key, loads[-1].t, t_token), "token during session/load"


def check_acp_runs(out: Outcome, ops: list[Op]) -> None:
    """One record per prompt the adapter saw (or one for a process that saw none)."""
    prompts = sorted(e.t_ns for e in out.events_of(Marker.PROMPT_SENT))
    assert len(out.results) == max(1, len(prompts)), "a run's record was lost"
    if prompts:
        assert sorted(r.times.prompt_sent_ns or 0 for r in out.results) == prompts
    for result in out.results:
        check_acp_token_is_justified(ops, result)


@pytest.mark.fault(
    "Bad input",
    "JSON-RPC (ACP / app-server): unknown, duplicated and mistyped ids, wrong shapes, "
    "messages in any order",
    outcome="no raise; firstToken only as DESIGN §3 grants it; one valid record per prompt",
    **TRACKER_ONLY,
)
@settings(max_examples=500)
@given(ops=acp_ops)
def test_acp_json_rpc_in_any_order(ops: list[tuple[Stream, bytes]]) -> None:
    fault_case()
    out = lines_of(ACP, ops)
    check_records(out)
    check_acp_runs(out, [Op(t, s, obj(line)) for t, (s, line) in enumerate(ops, start=1)])


@pytest.mark.fault(
    "Bad input",
    "JSON families: wrong shapes through the cheap pre-check vs a full decode",
    outcome="the same events either way",
    **TRACKER_ONLY,
)
@pytest.mark.parametrize("family", LINE_FAMILIES)
@settings(max_examples=200)
@given(data=st.data())
def test_cheap_path_matches_full_decode(family: RuntimeFamily, data: st.DataObject) -> None:
    if family is ACP:
        lines: list[Read] = data.draw(acp_ops)
    else:
        skeletons = CLAUDE_SKELETONS if family is CLAUDE else EVENT_SKELETONS
        lines = [("stdout", line) for line in data.draw(st.lists(garbage(skeletons), max_size=14))]
    fault_case()  # after the draws: an example whose draw overruns is not run, nor counted
    fast = lines_of(family, lines).spy.events
    with (  # an empty needle is in every line: every line is decoded
        mock.patch.object(claude_stream_json, "_RESULT_NEEDLES", (b"",)),
        mock.patch.object(json_event_stream, "_LATE_NEEDLES", (b"",)),
        mock.patch.object(acp_json_rpc, "_LATE_NEEDLES", (b"",)),
    ):
        slow = lines_of(family, lines).spy.events
    assert fast == slow


# A well-formed exchange with noise around it; the noise must not move any marker.
NOISE_IDS = [0, 1, 99, "2", "x", None, True, 1.5, [2]]


def noise(*, setup_ids: bool, s_prompt: bool) -> st.SearchStrategy[list[Read]]:
    """Lines that must change no marker of session S's turn (prompt id 2).

    ``setup_ids``: responses may reuse ids 0 and 1 (only once those were answered: before,
    the first response is the answer). ``s_prompt``: the client may send S's prompt again
    (only while it is in flight: after, it would be a new prompt).
    """
    ids_ = [i for i in NOISE_IDS if setup_ids or rpc_key(i) not in {(True, 0), (True, 1)}]
    stray_response = st.builds(
        lambda id_, body: {"jsonrpc": "2.0", "id": id_, "result": body},
        st.sampled_from(ids_), st.sampled_from(RESULTS),
    )  # fmt: skip
    update = st.builds(
        lambda sid, kind, content: {"jsonrpc": "2.0", "method": "session/update", "params": {
            "sessionId": sid, "update": {"sessionUpdate": kind, "content": content}}},
        st.sampled_from(["T", 5, "", ["S"]]), st.sampled_from(UPDATE_KINDS),
        st.sampled_from(CONTENTS),
    )  # fmt: skip
    s_update = st.builds(  # S's own updates that are no token
        lambda kind, content: {"jsonrpc": "2.0", "method": "session/update", "params": {
            "sessionId": "S", "update": {"sessionUpdate": kind, "content": content}}},
        st.sampled_from(["user_message_chunk", "usage_update", "available_commands_update",
                         "tool_call", "plan", 5, None]),
        st.sampled_from(CONTENTS),
    ) | st.builds(
        lambda kind, content: {"jsonrpc": "2.0", "method": "session/update", "params": {
            "sessionId": "S", "update": {"sessionUpdate": kind, "content": content}}},
        st.sampled_from(["agent_message_chunk", "agent_thought_chunk"]),
        st.sampled_from([{"type": "text", "text": ""}, {"text": 5}, "Hi", None, [{"text": "Hi"}]]),
    )  # fmt: skip
    stdout = st.one_of(
        stray_response, update, s_update, agent_requests,
        st.sampled_from([{"jsonrpc": "2.0", "error": {"code": 1}}, {"jsonrpc": "2.0"}]),
    ).map(dumps) | st.sampled_from(GARBAGE_LINES)  # fmt: skip
    stdin_msgs: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": "T"}},
        {"jsonrpc": "2.0", "id": 7, "result": {"outcome": "allow"}},
    ]
    if s_prompt:
        stdin_msgs.append(
            {"jsonrpc": "2.0", "id": 2, "method": "session/prompt", "params": {"sessionId": "S"}}
        )
    stdin = st.sampled_from(stdin_msgs).map(dumps)
    return st.lists(
        st.tuples(st.just("stdout"), stdout) | st.tuples(st.just("stdin"), stdin), max_size=4
    )


EARLY_NOISE = noise(setup_ids=False, s_prompt=False)
IN_FLIGHT_NOISE = noise(setup_ids=True, s_prompt=True)
LATE_NOISE = noise(setup_ids=True, s_prompt=False)


def _rpc(**fields: Any) -> bytes:
    return dumps({"jsonrpc": "2.0", **fields})


def _prompt(id_: int, sid: str = "S") -> Read:
    return "stdin", _rpc(id=id_, method="session/prompt", params={"sessionId": sid})


def _chunk(text: str, sid: str = "S", kind: str = "agent_message_chunk") -> Read:
    return "stdout", _rpc(method="session/update", params={"sessionId": sid, "update": {
        "sessionUpdate": kind, "content": {"type": "text", "text": text}}})  # fmt: skip


def _answer(id_: int) -> Read:
    return "stdout", _rpc(id=id_, result={"stopReason": "end_turn"})


@pytest.mark.fault(
    "Bad input",
    "ACP exchange with stray responses, duplicated ids, other sessions' and early updates",
    outcome="markers exactly those of the clean exchange; one valid record",
    **TRACKER_ONLY,
)
@settings(max_examples=300)
@given(
    early=st.lists(EARLY_NOISE, min_size=3, max_size=3),
    in_flight=st.lists(IN_FLIGHT_NOISE, min_size=2, max_size=2),
    late=st.lists(LATE_NOISE, min_size=2, max_size=2),
    answer_first=st.booleans(),
    kind=st.sampled_from(["agent_message_chunk", "agent_thought_chunk"]),
)
def test_acp_noise_leaves_the_real_markers(
    early: list[list[Read]],
    in_flight: list[list[Read]],
    late: list[list[Read]],
    answer_first: bool,
    kind: str,
) -> None:
    fault_case()
    token, answer = _chunk("Hi", "S", kind), _answer(2)
    steps: list[tuple[str, Read]] = [
        ("", ("stdin", _rpc(id=0, method="initialize", params={}))),
        ("ready", ("stdout", _rpc(id=0, result={"agentInfo": {"version": "1"}}))),
        ("", ("stdin", _rpc(id=1, method="session/new", params={}))),
        ("init", ("stdout", _rpc(id=1, result={"sessionId": "S"}))),
        ("prompt", _prompt(2)),
        *([("end", answer), ("", token)] if answer_first else [("token", token), ("end", answer)]),
        ("", answer),  # the same response again
    ]
    gaps = [[], [], *early, in_flight[0], late[0] if answer_first else in_flight[1], late[1]]
    lines: list[Read] = []
    at: dict[str, int] = {}
    for gap, (name, read) in zip(gaps, steps, strict=True):
        lines.extend(gap)
        lines.append(read)
        if name:
            at[name] = len(lines)
    out = lines_of(ACP, lines)
    check_records(out)
    runs = [r for r in out.results if r.record.session_id == "S"]
    assert len(runs) == 1
    times = runs[0].times
    assert times.cli_ready_ns == at["ready"]
    assert times.session_init_done_ns == at["init"]
    assert times.prompt_sent_ns == at["prompt"]
    assert times.first_token_ns == at.get("token")
    assert times.end_ns == at["end"]
    assert runs[0].record.status.value == "succeeded"


# --- (b) real transcripts split at arbitrary offsets ------------------------------------


@attrs.frozen
class Transcript:
    family: RuntimeFamily
    options: AdapterOptions
    records: list[Read]


def load_transcript(path: Path) -> Transcript:
    """A recorded transcript as the reads the agent's streams carried (stdout, stdin)."""
    tr = transcripts.load(path)
    return Transcript(RuntimeFamily(tr.family), tr.options(), list(tr.reads()))


TRANSCRIPT_PATHS = transcripts.paths(with_expectation=False)
_LOADED = {p: load_transcript(p) for p in TRANSCRIPT_PATHS}


@attrs.frozen
class Feed:
    """A transcript cut into reads; ``t_ns`` of a read is the stream offset where it ends."""

    reads: list[tuple[Stream, bytes, int]]
    record_spans: list[tuple[int, int]]  # per record: (start offset, end offset)

    def read_end(self, offset: int) -> int:
        """The end of the read that holds byte ``offset - 1`` (the read that delivers it)."""
        return next(t for _, _, t in self.reads if t >= offset)


def cut(tr: Transcript, cuts: set[int]) -> Feed:
    """Reads of ``tr``: one per run of same-stream records, split at the global ``cuts``.

    Records of one stream in a row are one byte stream; a read never crosses to the other
    stream, so a stdin line always reaches the adapter between the stdout lines around it.
    """
    reads: list[tuple[Stream, bytes, int]] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    i = 0
    while i < len(tr.records):
        stream = tr.records[i][0]
        start = pos
        run = b""
        while i < len(tr.records) and tr.records[i][0] == stream:
            spans.append((pos, pos + len(tr.records[i][1])))
            run += tr.records[i][1]
            pos += len(tr.records[i][1])
            i += 1
        bounds = [start, *sorted(c for c in cuts if start < c < pos), pos]
        for a, b in itertools.pairwise(bounds):
            reads.append((stream, run[a - start : b - start], b))
    return Feed(reads, spans)


def whole(tr: Transcript) -> Feed:
    """One read per record."""
    ends: set[int] = set()
    pos = 0
    for _, data in tr.records:
        pos += len(data)
        ends.add(pos)
    return cut(tr, ends)


def size_of(tr: Transcript) -> int:
    return sum(len(d) for _, d in tr.records)


@functools.cache
def whole_run(path: Path) -> tuple[Feed, Outcome]:
    """A transcript fed one record per read (the reference the split runs are held to)."""
    tr = _LOADED[path]
    feed = whole(tr)
    return feed, run_reads(tr.family, feed.reads, options=tr.options)


TIME_FIELDS = ("start_ns", "cli_ready_ns", "session_init_done_ns", "prompt_sent_ns",
               "first_token_ns", "end_ns")  # fmt: skip
SAME_FIELDS = ("status", "session_id", "turn_ordinal", "session_resumed", "process_reused",
               "session_init_source", "first_token_granularity", "first_token_kind",
               "input_tokens", "output_tokens", "model", "agent_version",
               "timing_unavailable_reason", "adapter_error")  # fmt: skip


def check_same_markers(path: Path, split: Feed) -> None:
    """Split reads give the markers of whole-line reads, each at the read that completed it."""
    tr = _LOADED[path]
    base_feed, base = whole_run(path)
    out = run_reads(tr.family, split.reads, options=tr.options)
    check_records(out)
    assert len(out.results) == len(base.results)
    by_end = {end: (start, end) for start, end in base_feed.record_spans}
    for got, want in zip(out.results, base.results, strict=True):
        for field in SAME_FIELDS:
            assert getattr(got.record, field) == getattr(want.record, field), field
        for field in TIME_FIELDS:
            w, g = getattr(want.times, field), getattr(got.times, field)
            if w is None or w in {base.eof_ns, base.exit_ns, 0}:
                assert g == w, field
                continue
            start, end = by_end[w]
            if tr.family is PLAIN:  # a plain marker is the read holding the bytes it needs
                assert split.read_end(start + 1) <= g <= split.read_end(end), field
            else:  # a line marker is the read that completed the line
                assert g == split.read_end(end), field
    got_order = [e.marker for e in out.spy.events if isinstance(e, MarkerObserved)]
    want_order = [e.marker for e in base.spy.events if isinstance(e, MarkerObserved)]
    assert got_order == want_order


@st.composite
def split_transcripts(draw: st.DrawFn) -> tuple[Path, set[int]]:
    path = draw(st.sampled_from(TRANSCRIPT_PATHS))
    size = size_of(_LOADED[path])
    if draw(st.integers(0, 3)) == 0:  # reads of one fixed size, down to byte by byte
        stride = draw(st.sampled_from([1, 2, 3, 7, 64, 1000]))
        return path, set(range(stride, size, stride))
    return path, draw(st.sets(st.integers(1, max(1, size - 1)), max_size=40))


@pytest.mark.fault(
    "Bad input",
    "real transcripts, every family, lines split across reads at arbitrary offsets",
    outcome="same markers, in the same order, each at the read that completes its line",
    **TRACKER_ONLY,
)
@settings(max_examples=400)
@given(case=split_transcripts())
def test_transcript_split_at_arbitrary_offsets(case: tuple[Path, set[int]]) -> None:
    fault_case()
    path, cuts = case
    check_same_markers(path, cut(_LOADED[path], cuts))


SMALL = {
    CLAUDE: ["claude-stream-json/synthetic_thinking_first.jsonl"],
    EVENTS: ["json-event-stream/codex_exec_fresh.jsonl"],
    ACP: ["acp-json-rpc/synthetic_empty_chunk_after_prompt.jsonl"],
    # Plain markers hang on read boundaries the most: every plain case.
    PLAIN: [f"plain/{p.name}" for p in TRANSCRIPT_PATHS if p.parent.name == "plain"],
}


@pytest.mark.fault(
    "Bad input",
    "a small real transcript per family (every plain one) split in two at every offset",
    outcome="same markers, in the same order, each at the read that completes its line",
    **TRACKER_ONLY,
)
@pytest.mark.parametrize("family", list(RuntimeFamily))
def test_transcript_split_at_every_offset(family: RuntimeFamily) -> None:
    for name in SMALL[family]:
        path = transcripts.TRANSCRIPTS / name
        for offset in range(1, size_of(_LOADED[path])):
            fault_case()
            check_same_markers(path, cut(_LOADED[path], {offset}))


# --- (d) one 100 MiB line -----------------------------------------------------------------

HUGE = 100 * 1024 * 1024
CHUNK = 64 * 1024
HUGE_CASES: dict[RuntimeFamily, tuple[list[Read], bytes, list[Read]]] = {
    # family: (lines before, the huge line's opening, lines after: the last one is the token)
    CLAUDE: (
        [("stdout", dumps(CLAUDE_SKELETONS[0]))],
        (b'{"type":"stream_event","event":{"type":"content_block_delta","delta":'
         b'{"type":"text_delta","text":"'),
        [("stdout", dumps(CLAUDE_SKELETONS[2]))],
    ),
    EVENTS: (
        [("stdout", dumps(EVENT_SKELETONS[1]))],
        b'{"type":"item.completed","item":{"type":"agent_message","text":"',
        [("stdout", dumps(EVENT_SKELETONS[3]))],
    ),
    ACP: (
        [("stdout", _rpc(id=1, result={"sessionId": "S"})),
         ("stdin", _rpc(id=2, method="session/prompt", params={"sessionId": "S"}))],
        (b'{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"S",'
         b'"update":{"sessionUpdate":"agent_message_chunk","content":{"text":"'),
        [_chunk("Hi")],
    ),
    PLAIN: ([("stdout", b"booting")], b"A: ", [("stdout", b"ANSWER")]),
}  # fmt: skip


@pytest.mark.fault(
    "Bad input",
    "a single 100 MiB stdout line, in 64 KiB reads",
    outcome="< 12 MiB traced: at most 8 MiB (`max_line`) buffered, then dropped; next line parsed",
    **TRACKER_ONLY,
)
@pytest.mark.parametrize("family", list(RuntimeFamily))
def test_one_hundred_mib_line(family: RuntimeFamily) -> None:
    before, opening, after = HUGE_CASES[family]
    # The plain adapter scans stdout text only for a pattern it still looks for.
    options = AdapterOptions(first_token_regex=re.compile("ANSWER")) if family is PLAIN else None
    spy = spy_on(adapter_for(family.value, options))
    tracker = ProcessTracker(
        agent=resolve_agent(["agent"], family=family.value), adapter=spy, spawn_ns=0,
        anchor=ANCHOR, caller=CallerContext(), probe_version="fuzz",
    )  # fmt: skip
    results = tracker.results
    t = 0

    def feed(stream: Stream, data: bytes) -> None:
        nonlocal t
        t += 1
        (tracker.on_stdout if stream == "stdout" else tracker.on_stdin)(data, t)

    for stream, line in before:
        feed(stream, line + b"\n")
    filler = b"x" * CHUNK
    largest_buffer = 0
    tracemalloc.start()
    try:
        feed("stdout", opening)
        for _ in range(HUGE // CHUNK):
            feed("stdout", filler)
            largest_buffer = max(largest_buffer, len(tracker._out_split._buf))
        feed("stdout", b'"}}}}\n')
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for stream, line in after:
        feed(stream, line + b"\n")
    tracker.on_stdout_eof(t + 1)
    tracker.on_exit(ExitInfo(t + 2, KILLED))
    # 8.5 MiB measured: the splitter's 8 MiB cap plus a read; the plain adapter 0.3 MiB.
    assert peak < 12 * 1024 * 1024, f"{peak / 2**20:.1f} MiB traced while the line went by"
    assert largest_buffer <= 8 * 1024 * 1024
    assert len(tracker._out_split._buf) == 0
    if family is PLAIN:
        inner = cast("Any", spy.inner)
        assert len(inner._partial) <= 64 * 1024
    else:
        assert tracker._out_split.dropped == 1
    [result] = [r for r in results if r.times.first_token_ns is not None]
    assert result.times.first_token_ns == t  # the line after the huge one
    assert result.record.adapter_error is None


# --- (e) a parser fault is recorded on the run ------------------------------------------


@st.composite
def faulted_transcripts(draw: st.DrawFn) -> tuple[Path, int]:
    path = draw(st.sampled_from(TRANSCRIPT_PATHS))
    calls = len(_LOADED[path].records) + 1  # one per line, plus close()
    return path, draw(st.integers(1, calls))


@pytest.mark.fault(
    "Bad input",
    "the adapter raises on any line of a real transcript (parser fault)",
    outcome="no raise; `adapter_error` on the open runs' records; earlier markers kept",
    **TRACKER_ONLY,
)
@settings(max_examples=300)
@given(case=faulted_transcripts())
def test_parser_fault_at_any_line_is_recorded(case: tuple[Path, int]) -> None:
    fault_case()
    path, fault_at = case
    tr = _LOADED[path]
    feed, clean = whole_run(path)
    out = run_reads(tr.family, feed.reads, options=tr.options, fault_at=fault_at)
    fault_ns = out.spy.fault_ns
    assert fault_ns is not None
    check_records(out, fault_free=False)
    message = f"InjectedFaultError in the {tr.family.value} adapter"
    for result in out.results:
        record = result.record
        if result.times.end_ns is not None and result.times.end_ns < fault_ns:
            assert record.adapter_error is None  # an ACP run that ended before the fault
            continue
        assert record.adapter_error == message
        if result.times.first_token_ns is None:
            assert record.timing_unavailable_reason is TimingUnavailableReason.ADAPTER_ERROR
        for field in TIME_FIELDS[1:-1]:
            got = getattr(result.times, field)
            assert got is None or got < fault_ns, field
    if not out.spy.request_driven:
        got, want = out.only().times, clean.only().times
        for field in TIME_FIELDS[1:-1]:
            w = getattr(want, field)
            assert getattr(got, field) == (w if w is not None and w < fault_ns else None)
    else:  # the runs whose prompt came before the fault, with the markers seen before it

        def by_prompt(r: RunResult) -> int:
            return r.times.prompt_sent_ns or 0

        before = sorted((r for r in clean.results if by_prompt(r) < fault_ns), key=by_prompt)
        assert len(out.results) == max(1, len(before))
        for got_r, want_r in zip(sorted(out.results, key=by_prompt), before, strict=False):
            for field in TIME_FIELDS[1:-1]:
                w = own_time(want_r, field)
                expected = w if w is not None and w < fault_ns else None
                assert own_time(got_r, field) == expected, field


def own_time(result: RunResult, field: str) -> int | None:
    """A marker of the run's own: a reused process's run starts ready (at its prompt)."""
    t: int | None = getattr(result.times, field)
    if result.record.process_reused and field == "cli_ready_ns" and t == result.times.start_ns:
        return None
    return t


@pytest.mark.fault(
    "Bad input",
    "the adapter raises mid-stream in a spawned run (parser fault)",
    outcome="output bytes and exit code identical; `adapter_error`, reason `adapter_error`",
)
def test_parser_fault_in_a_spawned_run_passes_bytes_through(
    tmp_path: Path, probe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [dumps(m) + b"\n" for m in (*CLAUDE_SKELETONS[:3], CLAUDE_SKELETONS[-1])]
    argv = script(tmp_path, [{"out": line.decode()} for line in lines] + [{"exit": 3}])
    direct = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    real = ClaudeStreamJsonAdapter.feed_stdout

    def faulty(self: ClaudeStreamJsonAdapter, data: bytes, t_ns: int) -> list[Event]:
        if b"content_block_delta" in data:
            raise InjectedFaultError("injected parser fault")
        return real(self, data, t_ns)

    monkeypatch.setattr(ClaudeStreamJsonAdapter, "feed_stdout", faulty)
    with Probe(family="claude-stream-json") as probe:
        proc = probe.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=30)
    assert (out, err, proc.returncode) == (direct.stdout, direct.stderr, 3)
    [record] = probe.records
    assert_valid(record)
    assert record.adapter_error == "InjectedFaultError in the claude-stream-json adapter"
    assert record.timing_unavailable_reason is TimingUnavailableReason.ADAPTER_ERROR
    assert record.cli_ready_ms is not None  # markers before the fault are kept
    assert record.spawn_to_first_token_ms is None
    assert record.status.value == "failed"
    assert [r["run_id"] for r in stored(probe_home)] == [record.run_id]


# --- regressions: one per failure found along the way ---------------------------------


def _first_token(out: Outcome) -> list[int | None]:
    return [r.times.first_token_ns for r in out.results]


@pytest.mark.fault(
    "Bad input",
    "ACP: a request on stdin whose method is a list or object",
    outcome="no adapter fault (was `TypeError`, markers lost); later markers kept",
    **TRACKER_ONLY,
)
def test_regression_acp_non_string_method_on_stdin_does_not_fault() -> None:
    out = lines_of(ACP, [
        ("stdin", _rpc(id=9, method=["session/prompt"])),
        ("stdin", _rpc(id=10, method={"a": 1})),
        ("stdout", _rpc(id=1, result={"sessionId": "S"})),
        ("stdin", _rpc(id=2, method="session/prompt", params={"sessionId": "S"})),
        _chunk("Hi"),
    ])  # fmt: skip
    check_records(out)
    assert _first_token(out) == [5]


@pytest.mark.fault(
    "Bad input",
    "negative, fractional or over-int64 token counts",
    outcome="left out (was a record failing the schema's minimum 0); record valid",
    **TRACKER_ONLY,
)
@pytest.mark.parametrize("family", LINE_FAMILIES)
def test_regression_negative_token_count_keeps_the_record_valid(family: RuntimeFamily) -> None:
    usage = {"input_tokens": -5, "inputTokens": -5, "output_tokens": 2**64, "outputTokens": 2**64,
             "cache_read_input_tokens": 1.5, "cachedReadTokens": 1e300}  # fmt: skip
    line = {
        CLAUDE: {"type": "result", "subtype": "success", "usage": usage},
        EVENTS: {"type": "turn.completed", "usage": usage},
        ACP: {"jsonrpc": "2.0", "id": 2, "result": {"stopReason": "end_turn", "usage": usage}},
    }[family]
    prompt = [("stdin", _rpc(id=2, method="session/prompt", params={"sessionId": "S"}))]
    out = lines_of(family, [*(prompt if family is ACP else []), ("stdout", dumps(line))])
    check_records(out)
    record = out.only().record
    assert (record.input_tokens, record.output_tokens, record.cache_read_input_tokens) == (
        None, None, None
    )  # fmt: skip


@pytest.mark.fault(
    "Bad input",
    "claude `result` timings that are NaN, Infinity, 1e999 or negative",
    outcome="left out (was a record that is not JSON or fails the schema); record valid",
    **TRACKER_ONLY,
)
@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-3"])
def test_regression_non_finite_timing_keeps_the_record_json(value: bytes) -> None:
    line = b'{"type":"result","subtype":"success","ttft_ms":%s,"duration_api_ms":5}' % value
    out = lines_of(CLAUDE, [("stdout", line)])
    check_records(out)
    record = out.only().record
    assert (record.agent_reported_ttft_ms, record.agent_reported_duration_api_ms) == (None, 5.0)


@pytest.mark.fault(
    "Bad input",
    "claude `result` timing: an integer beyond float range",
    outcome="no adapter fault (was `OverflowError`, parser disabled); record valid",
    **TRACKER_ONLY,
)
def test_regression_claude_huge_integer_timing_does_not_fault_the_adapter() -> None:
    line = b'{"type":"result","subtype":"success","ttft_ms":' + b"9" * 400 + b"}"
    out = lines_of(CLAUDE, [("stdout", line)])
    check_records(out)
    assert out.only().record.agent_reported_ttft_ms is None
    assert any(isinstance(e, TurnEnded) for e in out.spy.events)


@pytest.mark.fault(
    "Bad input",
    "session id, model or version with a lone UTF-16 surrogate (`\\ud800`)",
    outcome="kept escaped (was a record SQLite cannot store); record stored",
    agent="n/a",
)
@pytest.mark.parametrize("family", LINE_FAMILIES)
def test_regression_lone_surrogate_session_id_record_is_storable(
    family: RuntimeFamily, tmp_path: Path
) -> None:
    lines: list[Read] = {
        CLAUDE: [("stdout", dumps({"type": "system", "subtype": "init", "session_id": "s\ud800",
                                   "model": "m\udfff", "claude_code_version": "\ud800"}))],
        EVENTS: [("stdout", dumps({"type": "init", "session_id": "s\ud800", "model": "m\udfff"}))],
        ACP: [("stdin", _rpc(id=0, method="initialize")),
              ("stdin", _rpc(id=1, method="session/new", params={})),
              ("stdout", _rpc(id=0, result={"agentInfo": {"version": "\ud800"}})),
              ("stdout", _rpc(id=1, result={"sessionId": "s\ud800", "models": {
                  "currentModelId": "m\udfff"}})),
              ("stdin", _rpc(id=2, method="session/prompt", params={"sessionId": "s\ud800"})),
              _chunk("Hi", "s\ud800")],
    }[family]  # fmt: skip
    out = lines_of(family, lines)
    check_records(out)
    record = out.only().record
    assert record.session_id == "s\\ud800"
    assert record.model == "m\\udfff"
    if family is ACP:
        assert record.agent_version == "\\ud800"
        assert out.only().times.first_token_ns == len(lines)  # one id on stdin and stdout
    store = Store(tmp_path / "runs.db")
    store.add(record, out.only().times)


@pytest.mark.fault(
    "Bad input",
    "ACP / app-server: a chunk naming its session by a number, list or empty string",
    outcome="no firstToken (it was given to the only session in flight)",
    **TRACKER_ONLY,
)
def test_regression_acp_update_with_malformed_session_id_is_no_token() -> None:
    chunks = [
        ("stdout", _rpc(method="session/update", params={"sessionId": sid, "update": {
            "sessionUpdate": "agent_message_chunk", "content": {"text": "Hi"}}}))
        for sid in (5, "", ["S"], {"id": "S"})
    ] + [("stdout", dumps({"method": "item/agentMessage/delta",
                           "params": {"threadId": 7, "delta": "Hi"}}))]  # fmt: skip
    out = lines_of(ACP, [_prompt(2), *chunks, _chunk("Hi", "S")])
    check_records(out)
    assert _first_token(out) == [len(chunks) + 2]
    # A chunk that names no session at all is the only in-flight session's (unchanged).
    unnamed = ("stdout", _rpc(method="session/update", params={"update": {
        "sessionUpdate": "agent_message_chunk", "content": {"text": "Hi"}}}))  # fmt: skip
    assert _first_token(lines_of(ACP, [_prompt(2), unnamed])) == [2]


@pytest.mark.fault(
    "Bad input",
    "codex `thread.started` after the turn's first token",
    outcome="seen (the cheap pre-check skipped it: not the same as a full decode)",
    **TRACKER_ONLY,
)
def test_regression_codex_thread_started_after_first_token_is_not_skipped() -> None:
    lines = [b'{"type":"turn.started"}',
             b'{"type":"item.completed","item":{"type":"agent_message","text":"Hi"}}',
             b'{"type":"thread.started","thread_id":"t-1"}']  # fmt: skip
    out = lines_of(EVENTS, [("stdout", line) for line in lines])
    assert SessionObserved("t-1") in out.spy.events
    assert out.only().record.session_id == "t-1"


@pytest.mark.fault(
    "Bad input",
    "ACP: a second `session/prompt` while the session's first is in flight",
    outcome="both runs recorded (the first was lost), the first `failed`",
    **TRACKER_ONLY,
)
def test_regression_acp_second_prompt_in_flight_loses_no_record() -> None:
    out = lines_of(ACP, [
        ("stdout", _rpc(id=1, result={"sessionId": "S"})),
        _prompt(2), _chunk("one"), _prompt(3), _answer(2), _chunk("two"), _answer(3),
    ])  # fmt: skip
    check_records(out)
    first, second = sorted(out.results, key=lambda r: r.times.prompt_sent_ns or 0)
    assert (first.times.prompt_sent_ns, first.times.first_token_ns, first.times.end_ns) == (2, 3, 4)
    assert first.record.status.value == "failed"
    assert (second.times.prompt_sent_ns, second.times.first_token_ns) == (4, 6)
    assert second.record.status.value == "succeeded"


@pytest.mark.fault(
    "Bad input",
    "ACP: overlapping prompt on one session, the previous answer still streaming",
    outcome="no firstToken from the previous answer (it was the new turn's, too early)",
    **TRACKER_ONLY,
)
def test_regression_acp_overlapping_prompt_takes_no_token_of_the_previous_answer() -> None:
    out = lines_of(ACP, [
        ("stdout", _rpc(id=1, result={"sessionId": "S"})),
        _prompt(2), _prompt(3), _chunk("old answer"), _answer(2), _chunk("new"), _answer(3),
    ])  # fmt: skip
    check_records(out)
    first, second = sorted(out.results, key=lambda r: r.times.prompt_sent_ns or 0)
    assert first.times.first_token_ns is None
    assert second.times.first_token_ns == 6


@pytest.mark.fault(
    "Bad input",
    "ACP: the same `session/prompt` request (same id) sent twice",
    outcome="one run (was two, the first lost; the second took a later chunk as its token)",
    **TRACKER_ONLY,
)
def test_regression_acp_duplicate_prompt_request_starts_no_second_run() -> None:
    out = lines_of(ACP, [
        ("stdout", _rpc(id=1, result={"sessionId": "S"})),
        _prompt(2), _chunk("Hi"), _prompt(2), _chunk("there"), _answer(2), _answer(2),
    ])  # fmt: skip
    check_records(out)
    result = out.only()
    assert (result.times.prompt_sent_ns, result.times.first_token_ns, result.times.end_ns) == (
        2, 3, 6
    )  # fmt: skip
    assert result.record.status.value == "succeeded"


@pytest.mark.fault(
    "Bad input",
    "app-server: `turn/start` while the thread's turn is in flight",
    outcome="both runs recorded; the new turn's token waits for the old `turn/completed`",
    **TRACKER_ONLY,
)
def test_regression_app_server_overlapping_turn_start() -> None:
    def turn(id_: int) -> Read:
        return "stdin", dumps({"id": id_, "method": "turn/start", "params": {"threadId": "T"}})

    def delta(text: str) -> Read:
        return "stdout", dumps({"method": "item/agentMessage/delta",
                                "params": {"threadId": "T", "delta": text}})  # fmt: skip

    done = ("stdout", dumps({"method": "turn/completed",
                             "params": {"threadId": "T", "turn": {"status": "completed"}}}))  # fmt: skip
    out = lines_of(ACP, [
        ("stdout", dumps({"id": 1, "result": {"thread": {"id": "T"}}})),
        turn(2), ("stdout", dumps({"id": 2, "result": {}})), turn(3), delta("old"), done,
        ("stdout", dumps({"id": 3, "result": {}})), delta("new"), done,
    ])  # fmt: skip
    check_records(out)
    first, second = sorted(out.results, key=lambda r: r.times.prompt_sent_ns or 0)
    assert (first.times.end_ns, first.record.status.value) == (4, "failed")
    assert (second.times.first_token_ns, second.times.end_ns) == (8, 9)
    assert second.record.status.value == "succeeded"


@pytest.mark.fault(
    "Bad input",
    "plain: the answer's first character split across reads",
    outcome="firstToken at the read with its first byte (was one read late)",
    **TRACKER_ONLY,
)
def test_regression_plain_token_split_inside_a_character_is_not_late() -> None:
    options = AdapterOptions(session_init_regex=re.compile("ready"))
    out = run_reads(PLAIN, [("stdout", b"ready\n\xc3", 1), ("stdout", b"\xa9t\xc3\xa9", 2)],
                    options=options)  # fmt: skip
    check_records(out)
    assert _first_token(out) == [1]


class _GeneratorAdapter:
    """A plugin adapter whose ``feed_stdout`` is a generator that faults part-way."""

    family: ClassVar[str] = CLAUDE
    framing: ClassVar[Literal["lines", "chunks"]] = "lines"
    request_driven: ClassVar[bool] = False
    tees_stdin: ClassVar[bool] = False
    session_init_observable = True

    def feed_stdout(self, data: bytes, t_ns: int) -> Iterator[Event]:
        yield MarkerObserved(Marker.CLI_READY, t_ns)
        if data == b"boom":
            raise InjectedFaultError("while its events were read")

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:
        return []

    def close(self, t_ns: int) -> list[Event]:
        return []

    def model_request(self, t_ns: int) -> list[Event]:
        return []


@pytest.mark.fault(
    "Bad input",
    "a plugin adapter whose events generator raises part-way",
    outcome="recorded as `adapter_error` (the exception escaped the tracker into the pump)",
    **TRACKER_ONLY,
)
def test_regression_adapter_events_generator_raising_is_recorded() -> None:
    tracker = ProcessTracker(
        agent=resolve_agent(["agent"], family=CLAUDE.value),
        adapter=cast("Adapter", _GeneratorAdapter()),
        spawn_ns=0, anchor=ANCHOR, caller=CallerContext(), probe_version="fuzz",
    )  # fmt: skip
    results = tracker.results
    tracker.on_stdout(b"boom\n", 5)
    tracker.on_stdout(b"fine\n", 6)
    tracker.on_exit(ExitInfo(7, 0))
    [result] = results
    assert result.record.adapter_error == "InjectedFaultError in the claude-stream-json adapter"
    assert result.record.timing_unavailable_reason is TimingUnavailableReason.ADAPTER_ERROR
    assert result.times.cli_ready_ns is None  # the faulting call's events are not applied
    assert_valid(result.record)


def test_references_agree_with_the_recorded_transcripts() -> None:
    # The references above follow DESIGN §3; on the hand-checked transcripts they must give
    # the markers the adapters give, or they would prove nothing.
    checked = sdk = 0
    for path in TRANSCRIPT_PATHS:
        tr = _LOADED[path]
        if tr.family not in {CLAUDE, EVENTS}:
            continue
        feed = whole(tr)
        out = run_reads(tr.family, feed.reads, options=tr.options)
        if "--input-format" in tr.options.argv:  # SDK mode: the client's stdin matters too
            lines = [(stream, data.removesuffix(b"\n").removesuffix(b"\r"), t)
                     for stream, data, t in feed.reads]
            check_sdk_runs(out, lines)
            sdk += 1
            continue
        reference = claude_reference if tr.family is CLAUDE else events_reference
        check_stream_markers(out, reference(complete_lines(feed.reads, out.eof_ns)))
        checked += 1
    assert checked > 10
    assert sdk >= 4


@pytest.mark.fault(
    "Bad input",
    "ACP: the first prompt names a session the agent never created",
    outcome="no sessionInitDone (it was borrowed from the session that was created)",
    **TRACKER_ONLY,
)
def test_regression_acp_prompt_for_an_unknown_session_borrows_no_session_init() -> None:
    setup = [
        ("stdin", _rpc(id=0, method="initialize", params={})),
        ("stdout", _rpc(id=0, result={"agentInfo": {"version": "1"}})),
        ("stdin", _rpc(id=1, method="session/new", params={})),
        ("stdout", _rpc(id=1, result={"sessionId": "S"})),
    ]
    known = lines_of(ACP, [*setup, _prompt(2, "S"), _chunk("Hi", "S")]).only()
    assert known.times.session_init_done_ns == 4  # the session/new result's read
    out = lines_of(ACP, [*setup, _prompt(2, "T"), _chunk("Hi", "T")])
    check_records(out)
    stranger = out.only()
    assert stranger.times.session_init_done_ns is None
    assert stranger.record.session_init_ms is None


@pytest.mark.fault(
    "Bad input",
    "a plugin adapter prompts a session again without ending its open turn",
    outcome="the open turn's record is kept (ended `failed`), not overwritten",
    **TRACKER_ONLY,
)
def test_regression_second_prompt_on_an_open_turn_loses_no_record() -> None:
    reads: list[Read] = [("stdin", b"p1\n"), ("stdout", b"tok\n"), ("stdin", b"p2\n"),
                         ("stdin", b"p3\n")]  # fmt: skip
    results = run_reads(ACP, timed(reads), adapter=NeverEndingAcp(), returncode=0).results
    prompts = sorted(r.times.prompt_sent_ns or 0 for r in results)
    assert prompts == [1, 3, 4]
    first = next(r for r in results if r.times.prompt_sent_ns == 1)
    assert first.times.first_token_ns == 2
    assert first.record.status.value == "failed"
