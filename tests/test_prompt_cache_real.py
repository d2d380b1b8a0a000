"""The request waterfall and prompt-cache fields against the real agent CLIs (issue 14).

The fake provider simulates a prompt cache (the longest repeated prefix of sections is a
cache read) and logs what it reported: that log is the ground truth. With
``--observe-provider`` the probe reads the same usage from the provider's answers and
compares a turn's first generation request with the previous turn's, so the record's nine
fields must equal what the provider said it saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DELAY_MS
from realcli import MS, AcpClient, Agent, assert_complete, records_of
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import ACP_AGENTS, find_session_id, one_shot_command
from ttft_probe.testing.fake_provider import FakeProvider
from ttft_probe.waterfall import ModelRequest, RequestKind

pytestmark = pytest.mark.realcli

ARRIVAL_SLACK_NS = 50 * MS
"""The observer reads a request head before it forwards it; the provider's own reading is
that forward later (~1 ms idle, a few ms on two busy cores)."""


@pytest.fixture
def cache_delay(provider: FakeProvider) -> Iterator[FakeProvider]:
    """The shared provider with a per-uncached-token delay, put back after the test."""
    before = provider.uncached_token_delay_ms
    try:
        yield provider
    finally:
        provider.uncached_token_delay_ms = before


def _requests(a: Agent, record: RunRecord) -> list[ModelRequest]:
    requests = Store(a.store_path).requests(record.run_id)
    assert requests is not None, "the observer was on: the run keeps its requests"
    assert record.model_request_count == len(requests)
    return requests


def _log_entry(provider: FakeProvider, request: ModelRequest) -> dict[str, Any]:
    """The provider's log entry of the request the observer forwarded: read by the
    provider just after the observer's arrival reading, for the same model and with the
    same body size (a side call may be sent at the same moment)."""
    after = [e for e in provider.log
             if request.arrival_ns <= e["arrival_ns"] <= request.arrival_ns + ARRIVAL_SLACK_NS
             and (request.model is None or e["model"] in {None, request.model})
             and request.request_bytes in {None, e["request_bytes"]}]
    assert after, f"no provider log entry for {request}"
    return min(after, key=lambda e: e["arrival_ns"])


def _first_generation(a: Agent, record: RunRecord) -> tuple[ModelRequest, dict[str, Any]]:
    generations = [r for r in _requests(a, record) if r.kind is RequestKind.GENERATION]
    assert generations, record
    first = min(generations, key=lambda r: r.arrival_ns)
    return first, _log_entry(a.provider, first)  # type: ignore[arg-type]


def assert_usage_is_the_providers(a: Agent, record: RunRecord) -> dict[str, Any]:
    """The record's first-request fields equal the provider's log; that log entry."""
    first, truth = _first_generation(a, record)
    assert truth["generation"], truth
    assert record.first_request_input_tokens == truth["input_tokens"], (record, truth)
    assert record.first_request_cache_read_tokens == truth["cache_read_tokens"], truth
    assert record.first_request_uncached_tokens == truth["uncached_tokens"], truth
    if truth["cache_write_tokens"] is not None:  # only Anthropic reports cache writes
        assert record.first_request_cache_write_tokens == truth["cache_write_tokens"], truth
    assert record.first_request_bytes == truth["request_bytes"] == first.request_bytes
    assert first.usage is not None
    assert first.usage.input_tokens == truth["input_tokens"]
    return truth


def _fresh_then_resumed(a: Agent, *, nonce: str = "") -> tuple[RunRecord, RunRecord]:
    """Turn 1, then turn 2 resuming it; with ``nonce``, each turn's Claude Code
    entrypoint (``CLAUDE_CODE_ENTRYPOINT``) is ``{nonce}-{turn}``."""
    def run(prompt: str, resume: str | None, turn: int) -> tuple[Any, RunRecord]:
        if nonce:
            a.env["CLAUDE_CODE_ENTRYPOINT"] = f"{nonce}-{turn}"
        done, record = a.run(one_shot_command(a.name, prompt, resume_id=resume),
                             "--observe-provider")
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return done, record

    done, fresh = run("Say hello", None, 1)
    session = find_session_id(a.name, done.stdout.decode().splitlines())
    assert session is not None
    _, resumed = run("Say it again", session, 2)
    assert resumed.conversation_id == fresh.conversation_id
    return fresh, resumed


def test_claude_resumed_turn_reports_the_providers_cache_and_prefix(
    provider: FakeProvider, scratch: Path
) -> None:
    a = Agent("claude_code", provider, scratch)
    fresh, resumed = _fresh_then_resumed(a)
    for record in (fresh, resumed):
        assert_complete(record)
        assert_usage_is_the_providers(a, record)
    assert fresh.prefix_status is not None
    assert fresh.prefix_status.value == "no_previous"
    assert fresh.prefix_break is None
    truth = assert_usage_is_the_providers(a, resumed)
    # Turn 2 re-sends turn 1's prompt: the provider read most of it from its cache.
    assert truth["cache_read_tokens"] > 0
    assert resumed.prefix_status is not None
    if resumed.prefix_status.value == "broken":
        # The first section the probe found changed is where the provider's cache ended.
        assert resumed.prefix_break == truth["first_uncached_section"], (resumed, truth)
    else:
        assert resumed.prefix_status.value == "stable"
        assert resumed.prefix_break is None
    assert resumed.prefix_reused_bytes is not None
    assert resumed.prefix_reused_bytes > 0


def test_a_per_turn_nonce_in_a_system_block_breaks_the_prefix_and_costs_its_tokens(
    cache_delay: FakeProvider, scratch: Path
) -> None:
    provider = cache_delay
    per_token_ms = 0.1
    provider.uncached_token_delay_ms = per_token_ms
    (scratch / "stable").mkdir()
    (scratch / "nonce").mkdir()
    stable_agent = Agent("claude_code", provider, scratch / "stable")
    _, stable = _fresh_then_resumed(stable_agent)
    nonce_agent = Agent("claude_code", provider, scratch / "nonce")
    # Claude Code 2.1.337 keeps a session's system prompt on --resume (a turn-2
    # --append-system-prompt is not sent); the one part of its system blocks it writes
    # anew each turn is system[0], the billing header naming its version and entrypoint.
    # A per-turn entrypoint there is a volatile block before the whole stable prompt.
    _, broken = _fresh_then_resumed(nonce_agent, nonce="sdk-nonce")
    stable_truth = assert_usage_is_the_providers(stable_agent, stable)
    broken_truth = assert_usage_is_the_providers(nonce_agent, broken)

    assert broken.prefix_status is not None
    assert broken.prefix_status.value == "broken"
    assert broken.prefix_break is not None
    assert broken.prefix_break.startswith("system["), broken
    assert broken.prefix_break == broken_truth["first_uncached_section"]
    assert broken.first_request_cache_read_tokens is not None
    assert stable.first_request_cache_read_tokens is not None
    assert broken.first_request_cache_read_tokens < stable.first_request_cache_read_tokens
    assert broken.prefix_reused_bytes is not None
    assert stable.prefix_reused_bytes is not None
    assert broken.prefix_reused_bytes < stable.prefix_reused_bytes

    # The provider held the first token per_token_ms per uncached token longer: the model
    # segment grows by what it added. Each turn's model segment is the provider's hold
    # (the added delay included) plus the agent's forwarding, within 25 ms; so the growth
    # between the two turns is the added difference, within the two forwardings' jitter.
    added_ms = broken_truth["added_delay_ms"] - stable_truth["added_delay_ms"]
    assert added_ms > 100, (broken_truth, stable_truth)  # large enough to see
    for record, truth in ((stable, stable_truth), (broken, broken_truth)):
        hold_ms = (truth["first_token_ns"] - truth["arrival_ns"]) / MS
        assert hold_ms >= truth["added_delay_ms"] + DELAY_MS
        assert record.model_first_token_ms is not None
        assert 0 <= record.model_first_token_ms - hold_ms <= 25, (record, truth)
    assert stable.model_first_token_ms is not None
    assert broken.model_first_token_ms is not None
    grown_ms = broken.model_first_token_ms - stable.model_first_token_ms
    assert abs(grown_ms - added_ms) <= 25 + 25, (grown_ms, added_ms)


@pytest.mark.parametrize("agent", ["codex", "gemini"])
def test_resumed_one_shot_usage_comes_from_the_providers_api(
    agent: str, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent(agent, provider, scratch)
    fresh, resumed = _fresh_then_resumed(a)
    for record in (fresh, resumed):
        assert_complete(record)
        assert record.model_request_count is not None
        assert record.model_request_count >= 1
    assert_usage_is_the_providers(a, fresh)
    truth = assert_usage_is_the_providers(a, resumed)
    assert fresh.prefix_status is not None
    assert fresh.prefix_status.value == "no_previous"
    # Both append the new turn to the old transcript: the old prompt is a cached prefix.
    assert truth["cache_read_tokens"] > 0
    assert resumed.prefix_status is not None
    assert resumed.prefix_status.value == "stable", resumed
    assert resumed.prefix_break is None
    assert resumed.first_request_cache_write_tokens is None  # neither API reports writes


TITLE_CALLERS = {"claude_code_acp", "opencode_acp"}
"""ACP agents that name a new session with a side generation (a title request)."""


@pytest.mark.parametrize("agent", ACP_AGENTS)
def test_acp_turns_report_the_providers_usage_and_side_calls_are_never_first(
    agent: str, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent(agent, provider, scratch)
    AcpClient(a, "--observe-provider").two_turns()
    records = records_of(a)
    assert len(records) == 2
    titles: list[ModelRequest] = []
    for record in records:
        assert_complete(record)
        requests = _requests(a, record)
        titles += [r for r in requests if r.kind is RequestKind.TITLE]
        # The first-request fields are the first *generation*'s, never a side call's.
        assert_usage_is_the_providers(a, record)
    if agent in TITLE_CALLERS:
        assert titles, "the agent names its session with a side call the probe classifies"
    for title in titles:
        assert _log_entry(provider, title)["generation"]  # a model call, yet a side call
    first, second = records
    assert first.prefix_status is not None
    assert first.prefix_status.value == "no_previous"
    assert second.prefix_status is not None
    assert second.prefix_status.value in {"stable", "broken"}
    assert second.first_request_cache_read_tokens is not None
    assert second.first_request_cache_read_tokens > 0  # turn 2 re-sends turn 1's prompt
