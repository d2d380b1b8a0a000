"""Opt-in content capture: the buffer, the stored form, and the tracker's per-turn text."""

from __future__ import annotations

import json
from typing import cast

from helpers.fuzz import ACP, NeverEndingAcp, Read, run_reads, timed
from ttft_probe._run import RunResult
from ttft_probe.adapters._base import ContentObserved, Event, TurnEnded
from ttft_probe.content import MAX_CHARS, CapturedContent, ContentBuffer, Role


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


class _TwoTurns(NeverEndingAcp):
    """:class:`NeverEndingAcp` with text: a stdin line's text is its prompt, a stdout
    line's its answer, and stdout "end" ends the turn."""

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:
        return [*super().feed_stdin(line, t_ns), ContentObserved("user", line.decode(), "S")]

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        if data == b"end":
            return [TurnEnded(t_ns, session_id="S")]
        text = ContentObserved("assistant", data.decode(), "S")
        return [*super().feed_stdout(data, t_ns), text]


def _two_turns(*, capture: bool) -> list[RunResult]:
    reads: list[Read] = [("stdin", b"first?\n"), ("stdout", b"One\n"), ("stdout", b", two\n"),
                         ("stdout", b"end\n"), ("stdin", b"second?\n"), ("stdout", b"Three\n"),
                         ("stdout", b"end\n")]  # fmt: skip
    return run_reads(ACP, timed(reads), adapter=_TwoTurns(), returncode=0,
                     capture_content=capture).results


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


class _SystemText(_TwoTurns):
    """A plugin that also reports text under a role that is neither prompt nor answer."""

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        other = ContentObserved(cast("Role", "system"), "not the answer", "S")
        return [*super().feed_stdout(data, t_ns), other]


def test_text_of_another_role_is_not_taken_for_the_answer() -> None:
    reads: list[Read] = [("stdin", b"q\n"), ("stdout", b"A\n"), ("stdout", b"end\n")]
    [run] = run_reads(ACP, timed(reads), adapter=_SystemText(), returncode=0,
                      capture_content=True).results
    assert run.content == CapturedContent("q", "A")
