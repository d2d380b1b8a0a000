"""Usage, sections and prefix stability of model requests (ttft_probe.waterfall, DESIGN §10)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import pytest

from ttft_probe._clock import WallAnchor
from ttft_probe._run import CallerContext, RunBuilder
from ttft_probe.agents import resolve_agent
from ttft_probe.record import ObserverStatus, PrefixStatus
from ttft_probe.turns import ClosedTurn, ExitInfo, TurnAssembler
from ttft_probe.waterfall import (
    ModelRequest,
    RequestKind,
    RequestUsage,
    Section,
    compare_prefix,
    merge_usage,
    request_sections,
    salted,
    usage_from_payload,
)

# --- usage, in each API's own fields ---------------------------------------------------


def test_anthropic_usage_counts_every_input_token_and_merges_the_stream_parts() -> None:
    start = usage_from_payload("anthropic", {"type": "message_start", "message": {"usage": {
        "input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
        "output_tokens": 1}}})
    delta = usage_from_payload("anthropic", {"type": "message_delta", "usage": {
        "output_tokens": 15}})
    usage = merge_usage(start, delta)
    assert usage == RequestUsage(input_tokens=125, cache_read_tokens=100,
                                 cache_write_tokens=20, output_tokens=15)
    assert usage.uncached_tokens == 25
    # A non-streaming answer carries the same usage at its top level.
    body = {"type": "message", "usage": {"input_tokens": 7, "output_tokens": 3,
                                         "cache_read_input_tokens": 0,
                                         "cache_creation_input_tokens": 0}}
    assert usage_from_payload("anthropic", body) == RequestUsage(7, 0, 0, 3)


def test_an_anthropic_delta_repeating_input_without_cache_fields_keeps_the_total() -> None:
    # Some gateways repeat input_tokens in message_delta without the cache fields: the
    # total is still uncached + cache read + cache write over the merged parts.
    start = usage_from_payload("anthropic", {"message": {"usage": {
        "input_tokens": 100, "cache_read_input_tokens": 9000,
        "cache_creation_input_tokens": 50}}})
    delta = usage_from_payload("anthropic", {"usage": {"input_tokens": 100,
                                                       "output_tokens": 40}})
    usage = merge_usage(start, delta)
    assert usage == RequestUsage(9150, 9000, 50, 40)
    assert usage is not None
    assert usage.uncached_tokens == 150


def test_no_uncached_count_without_a_cache_read_count() -> None:
    # A provider that does not say what it read from its cache has no uncached figure.
    usage = usage_from_payload("openai", {"usage": {"prompt_tokens": 50,
                                                    "completion_tokens": 4}})
    assert usage == RequestUsage(50, None, None, 4)
    assert usage is not None
    assert usage.uncached_tokens is None


def test_openai_responses_and_chat_completions_report_cached_tokens() -> None:
    completed = {"type": "response.completed", "response": {"usage": {
        "input_tokens": 900, "input_tokens_details": {"cached_tokens": 600},
        "output_tokens": 12}}}
    usage = usage_from_payload("openai", completed)
    assert usage == RequestUsage(input_tokens=900, cache_read_tokens=600, output_tokens=12)
    assert usage.uncached_tokens == 300
    chunk = {"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 4,
                                      "prompt_tokens_details": {"cached_tokens": 32}}}
    assert usage_from_payload("openai", chunk) == RequestUsage(50, 32, None, 4)
    # Events without usage say nothing.
    assert usage_from_payload("openai", {"type": "response.output_text.delta"}) is None


def test_gemini_leaves_a_zero_cache_count_out_which_is_zero_not_unknown() -> None:
    with_cache = {"usageMetadata": {"promptTokenCount": 80, "cachedContentTokenCount": 64,
                                    "candidatesTokenCount": 9}}
    assert usage_from_payload("gemini", with_cache) == RequestUsage(80, 64, None, 9)
    without = {"usageMetadata": {"promptTokenCount": 80, "candidatesTokenCount": 9}}
    assert usage_from_payload("gemini", without) == RequestUsage(80, 0, None, 9)
    # No prompt count: nothing is known, and nothing is made up.
    assert usage_from_payload("gemini", {"usageMetadata": {}}) == RequestUsage()


@pytest.mark.parametrize("payload", [None, [], "text", {"usage": "x"}, {"usage": None}])
def test_payloads_without_usable_usage_give_none(payload: object) -> None:
    assert usage_from_payload("anthropic", payload) is None


def test_bad_counts_are_unknown_and_other_apis_have_no_reader() -> None:
    usage = usage_from_payload("anthropic", {"usage": {"input_tokens": -3, "output_tokens": "9",
                                                       "cache_read_input_tokens": True}})
    assert usage is not None
    assert usage.input_tokens is None
    assert usage.uncached_tokens is None
    assert usage_from_payload("other", {"usage": {"input_tokens": 5}}) is None


def test_merge_keeps_earlier_counts_where_the_later_part_is_silent() -> None:
    assert merge_usage(None, None) is None
    first = RequestUsage(input_tokens=10, output_tokens=1)
    assert merge_usage(first, None) == first
    assert merge_usage(None, first) == first
    assert merge_usage(first, RequestUsage(output_tokens=8)) == RequestUsage(10, None, None, 8)


# --- sections and the prefix ----------------------------------------------------------


def _names(api: str, body: Mapping[str, Any]) -> list[str]:
    sections = request_sections(api, body)
    assert sections is not None
    return [s.name for s in sections]


def test_sections_follow_each_providers_cache_order() -> None:
    anthropic = {"messages": [{"role": "user", "content": "hi"}], "system": "be brief",
                 "tools": [{"name": "a"}, {"name": "b"}], "model": "m", "max_tokens": 5}
    assert _names("anthropic", anthropic) == [
        "model", "tools[0]", "tools[1]", "system[0]", "messages[0]"]
    openai = {"input": [{"role": "user"}, {"role": "assistant"}], "instructions": "x",
              "tools": [{}], "model": "g"}
    assert _names("openai", openai) == ["model", "instructions", "tools[0]", "input[0]",
                                        "input[1]"]
    assert _names("openai", {"input": "just text"}) == ["input[0]"]
    gemini = {"contents": [{"role": "user"}], "systemInstruction": {"parts": []}, "tools": [{}]}
    assert _names("gemini", gemini) == ["systemInstruction", "tools[0]", "contents[0]"]
    assert request_sections("other", {"model": "m"}) is None


def test_a_section_is_its_content_not_its_key_order_or_cache_markers() -> None:
    plain = request_sections("anthropic", {"system": [{"type": "text", "text": "same"}]})
    marked = request_sections("anthropic", {"system": [
        {"text": "same", "type": "text", "cache_control": {"type": "ephemeral"}}]})
    changed = request_sections("anthropic", {"system": [{"type": "text", "text": "other"}]})
    assert plain is not None
    assert marked is not None
    assert changed is not None
    assert plain == marked
    assert plain[0].digest != changed[0].digest
    assert plain[0].size == len(b'{"text":"same","type":"text"}')


def _sections(api: str, body: Mapping[str, Any]) -> tuple[Section, ...]:
    sections = request_sections(api, body)
    assert sections is not None
    return sections


TURN_1: dict[str, Any] = {"model": "m", "tools": [{"name": "t"}], "system": ["stable", "also stable"],
          "messages": [{"role": "user", "content": "hello"}]}


def test_an_appended_turn_is_stable_and_reuses_the_whole_previous_prompt() -> None:
    previous = _sections("anthropic", TURN_1)
    current = _sections("anthropic", {**TURN_1, "messages": [
        *TURN_1["messages"], {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "again"}]})
    check = compare_prefix(previous, current)
    assert check.status is PrefixStatus.STABLE
    assert check.first_break is None
    assert check.reused_bytes == sum(s.size for s in previous)


def test_a_changed_block_breaks_the_prefix_at_its_section() -> None:
    previous = _sections("anthropic", TURN_1)
    current = _sections("anthropic", {**TURN_1, "system": ["stable", "now at 12:01"]})
    check = compare_prefix(previous, current)
    assert check.status is PrefixStatus.BROKEN
    assert check.first_break == "system[1]"
    assert check.reused_bytes == sum(s.size for s in previous[:3])  # model, tools[0], system[0]
    # A prompt that lost sections breaks at the first one it no longer has.
    shorter = _sections("anthropic", {"model": "m", "tools": [{"name": "t"}]})
    check = compare_prefix(previous, shorter)
    assert (check.status, check.first_break) == (PrefixStatus.BROKEN, "system[0]")
    assert compare_prefix(None, previous).status is PrefixStatus.NO_PREVIOUS


def test_salted_digests_keep_names_and_sizes_but_not_the_bare_digest() -> None:
    sections = _sections("anthropic", TURN_1)
    one = salted(sections, b"a" * 16)
    assert salted(sections, b"a" * 16) == one
    other = salted(sections, b"b" * 16)
    assert [(s.name, s.size) for s in one] == [(s.name, s.size) for s in sections]
    assert {s.digest for s in one}.isdisjoint({s.digest for s in sections})
    assert {s.digest for s in one}.isdisjoint({s.digest for s in other})
    # Comparing salted with salted gives the same answer as unsalted.
    changed = _sections("anthropic", {**TURN_1, "system": ["stable", "x"]})
    assert compare_prefix(one, salted(changed, b"a" * 16)) == compare_prefix(sections, changed)


def test_a_model_request_round_trips_without_its_sections() -> None:
    request = ModelRequest(
        request_id=3, api="anthropic", kind=RequestKind.TITLE, arrival_ns=10, model="haiku",
        first_content_ns=20, end_ns=30, status=200, request_bytes=512,
        usage=RequestUsage(100, 0, 100, 4), has_tools=False,
        sections=_sections("anthropic", TURN_1))
    stored = request.to_dict()
    assert "sections" not in stored
    assert stored["kind"] == "title"
    assert stored["usage"] == {"input_tokens": 100, "cache_read_tokens": 0,
                               "cache_write_tokens": 100, "output_tokens": 4}
    back = ModelRequest.from_dict(stored)
    assert back == request  # sections are not part of equality
    assert back.sections is None
    assert RequestUsage.from_dict({"input_tokens": "x", "output_tokens": 2}) == RequestUsage(
        None, None, None, 2)


# --- the record's fields, from a turn's requests ---------------------------------------------


def _observed_turn(system: str) -> ClosedTurn:
    """A closed turn whose one generation request (body with ``system``) was observed."""
    assembler = TurnAssembler(spawn_ns=0, request_driven=False, prompt_first=False,
                              session_init_observable=True, cli_ready_observable=lambda: True)
    body = {**TURN_1, "system": [system, "also stable"]}
    assembler.provider_request(1, 10, generation=True, api="anthropic")
    assembler.provider_body(1, kind=RequestKind.GENERATION, model="m", has_tools=True,
                            sections=request_sections("anthropic", body))
    assembler.provider_end(1, 20, status=200, request_bytes=321,
                           usage=RequestUsage(1200, 1000, 0, 9))
    [turn] = assembler.exit(ExitInfo(t_ns=30, returncode=0))
    return turn


def _builder() -> RunBuilder:
    builder = RunBuilder(agent=resolve_agent(["claude", "-p", "hi"]),
                         caller=CallerContext(conversation_id="conv-1"),
                         anchor=WallAnchor(wall_ns=0, mono_ns=0), probe_version="t",
                         request_driven=False, prompt_first=False)
    builder.observer = ObserverStatus.ON
    return builder


def test_the_record_takes_the_first_generation_and_compares_with_the_previous_turn() -> None:
    salt = b"s" * 32
    stored: dict[str, Any] = {}

    def prefixes(conversation_id: str) -> tuple[bytes, Any]:
        return salt, stored.get(conversation_id)

    first = _builder().build(_observed_turn("stable"), None, None, prefixes)
    record = first.record
    assert (record.model_request_count, record.first_request_bytes) == (1, 321)
    assert (record.first_request_input_tokens, record.first_request_cache_read_tokens,
            record.first_request_uncached_tokens) == (1200, 1000, 200)
    assert record.prefix_status is PrefixStatus.NO_PREVIOUS
    assert first.prefix is not None
    stored[first.prefix[0]] = first.prefix[1]
    # A new process (a resumed one-shot turn) compares with what the store kept.
    again = _builder().build(_observed_turn("stable"), None, None, prefixes).record
    assert (again.prefix_status, again.prefix_break) == (PrefixStatus.STABLE, None)
    changed = _builder().build(_observed_turn("12:01"), None, None, prefixes).record
    assert (changed.prefix_status, changed.prefix_break) == (PrefixStatus.BROKEN, "system[0]")


def test_a_busy_store_makes_the_prefix_unavailable_and_keeps_nothing() -> None:
    def busy(_conversation_id: str) -> Any:
        raise sqlite3.OperationalError("database is locked")

    result = _builder().build(_observed_turn("stable"), None, None, busy)
    assert result.record.prefix_status is PrefixStatus.UNAVAILABLE
    assert result.record.prefix_break is None
    assert result.prefix is None  # no prefix under a made-up salt
    assert result.record.first_request_input_tokens == 1200  # the usage is still known


def test_without_a_store_turns_compare_within_the_process() -> None:
    def no_store(_conversation_id: str) -> Any:
        raise LookupError("no store")

    builder = _builder()
    one = builder.build(_observed_turn("stable"), None, None, no_store).record
    two = builder.build(_observed_turn("stable"), None, None, no_store).record
    assert (one.prefix_status, two.prefix_status) == (
        PrefixStatus.NO_PREVIOUS, PrefixStatus.STABLE)


def test_a_generation_without_tools_beside_one_with_tools_is_a_title_once_its_body_is_read(
) -> None:
    assembler = TurnAssembler(spawn_ns=0, request_driven=False, prompt_first=False,
                              session_init_observable=True, cli_ready_observable=lambda: True)
    assembler.provider_request(1, 10, generation=True, api="anthropic")
    assembler.provider_request(2, 11, generation=True, api="anthropic")
    assembler.provider_request(3, 12, generation=True, api="anthropic")
    assembler.provider_body(1, kind=RequestKind.GENERATION, model="big", has_tools=True,
                            sections=None)
    assembler.provider_body(2, kind=RequestKind.GENERATION, model="small", has_tools=False,
                            sections=None)
    # Request 3's body was still being read when the turn closed: no guess about it.
    [turn] = assembler.exit(ExitInfo(t_ns=30, returncode=0))
    assert [(r.request_id, r.kind) for r in turn.requests] == [
        (1, RequestKind.GENERATION), (2, RequestKind.TITLE), (3, RequestKind.GENERATION)]
