"""Opt-in content capture: the buffer, the stored form, and the tracker's per-turn text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar, Literal, cast

from ttft_probe._clock import WallAnchor
from ttft_probe._run import CallerContext, ExitInfo, ProcessTracker, RunResult
from ttft_probe.adapters._base import (
    Adapter,
    ContentObserved,
    Event,
    MarkerObserved,
    TurnEnded,
)
from ttft_probe.agents import resolve_agent
from ttft_probe.content import MAX_CHARS, CapturedContent, ContentBuffer
from ttft_probe.record import Marker, RuntimeFamily

ANCHOR = WallAnchor(wall_ns=1_750_000_000_000_000_000, mono_ns=0)


def test_buffer_appends_in_order_and_caps_each_role() -> None:
    buf = ContentBuffer()
    buf.add("assistant", "Hel")
    buf.add("user", "Say hello")
    buf.add("assistant", "lo")
    assert buf.result() == CapturedContent("Say hello", "Hello", truncated=False)
    buf.add("assistant", "x" * MAX_CHARS)
    got = buf.result()
    assert got.output_text is not None
    assert len(got.output_text) == MAX_CHARS
    assert got.output_text.startswith("Hello")
    assert got.truncated
    assert got.input_text == "Say hello"  # the other role keeps its own room


def test_nothing_seen_is_none_not_empty_text() -> None:
    got = ContentBuffer().result()
    assert got == CapturedContent(None, None, truncated=False)
    assert got.input_messages() == []
    assert got.output_messages() == []


def test_messages_follow_the_genai_semantic_conventions() -> None:
    content = CapturedContent("Say hello", "Hello — 日本語")
    assert content.input_messages() == [
        {"role": "user", "parts": [{"type": "text", "content": "Say hello"}]}
    ]
    assert content.output_messages() == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello — 日本語"}]}
    ]


def test_stored_form_round_trips_and_bad_rows_read_as_none() -> None:
    content = CapturedContent("p", "Hello — 日本語", truncated=True)
    assert "日本語" in content.to_json()  # stored as text, not \\u escapes
    assert CapturedContent.from_json(content.to_json()) == content
    for bad in (None, "", "not json", "[1]", json.dumps("text")):
        assert CapturedContent.from_json(bad) is None
    odd = CapturedContent.from_json(json.dumps({"input_text": 5, "truncated": "yes"}))
    assert odd == CapturedContent(None, None, truncated=False)


class _TwoTurns:
    """A request-driven plugin adapter: each stdin line is a prompt of session "s";
    stdout "tok:X" is answer text X (the first one a token), "end" ends the turn."""

    family: ClassVar[RuntimeFamily] = RuntimeFamily.ACP_JSON_RPC
    framing: ClassVar[Literal["lines", "chunks"]] = "lines"
    request_driven: ClassVar[bool] = True
    tees_stdin: ClassVar[bool] = True
    session_init_observable = True

    def feed_stdin(self, line: bytes, t_ns: int) -> Sequence[Event]:
        return [MarkerObserved(Marker.PROMPT_SENT, t_ns, session_id="s"),
                ContentObserved("user", line.decode(), session_id="s")]

    def feed_stdout(self, data: bytes, t_ns: int) -> Sequence[Event]:
        if data == b"end":
            return [TurnEnded(t_ns, session_id="s")]
        text = data.decode().removeprefix("tok:")
        return [MarkerObserved(Marker.FIRST_TOKEN, t_ns, session_id="s"),
                ContentObserved("assistant", text, session_id="s")]

    def close(self, t_ns: int) -> Sequence[Event]:
        return []

    def model_request(self, t_ns: int) -> Sequence[Event]:
        return []


def _two_turns(*, capture: bool) -> list[RunResult]:
    results: list[RunResult] = []
    tracker = ProcessTracker(
        agent=resolve_agent(["agent"], family="acp-json-rpc"),
        adapter=cast("Adapter", _TwoTurns()), spawn_ns=0, anchor=ANCHOR,
        caller=CallerContext(), emit=results.append, probe_version="test",
        capture_content=capture,
    )  # fmt: skip
    t = 0
    for stream, data in [("stdin", b"first?"), ("stdout", b"tok:One"), ("stdout", b"tok:, two"),
                         ("stdout", b"end"), ("stdin", b"second?"), ("stdout", b"tok:Three"),
                         ("stdout", b"end")]:
        t += 1_000_000
        (tracker.on_stdin if stream == "stdin" else tracker.on_stdout)(data + b"\n", t)
    tracker.on_stdout_eof(t + 1)
    tracker.on_exit(ExitInfo(t + 2, 0))
    return results


def test_the_tracker_keeps_each_turns_own_text_only_when_capture_is_on() -> None:
    on = _two_turns(capture=True)
    assert [r.content for r in on] == [
        CapturedContent("first?", "One, two"),
        CapturedContent("second?", "Three"),
    ]
    off = _two_turns(capture=False)
    assert [r.content for r in off] == [None, None]
    # Capture changes nothing in the records but their ids.
    strip = ("run_id", "started_at")
    assert [{k: v for k, v in r.record.to_dict().items() if k not in strip} for r in on] == [
        {k: v for k, v in r.record.to_dict().items() if k not in strip} for r in off
    ]
