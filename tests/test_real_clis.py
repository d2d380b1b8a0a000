"""The real agent CLIs from the npm registry, probed end to end against the fake provider.

Each test runs `ttft-probe run -- <real CLI>` with the CLI pointed at a FakeProvider that
injects a known first-token delay and logs (CLOCK_MONOTONIC, shared across processes)
when it sent the first token. The probe's markers, read back from the store, are
compared with that ground truth. These tests need `agents/node_modules` (scripts/setup.sh
installs it); they are never skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realcli import (
    DELTA_LAGS,
    DELTA_TOLERANCE_NS,
    MS,
    AcpClient,
    Agent,
    assert_complete,
    assert_first_token_matches,
    records_of,
)
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import ACP_AGENTS, find_session_id, one_shot_command
from ttft_probe.testing.fake_provider import DEFAULT_ANSWER, FakeProvider

pytestmark = pytest.mark.realcli

# --- one-shot CLIs: fresh, then resumed ---------------------------------------------


@pytest.mark.parametrize(("agent", "granularity"), [
    ("claude_code", "delta"), ("codex", "message"), ("gemini", "delta")])
def test_one_shot_fresh_then_resumed(
    agent: str, granularity: str, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent(agent, provider, scratch)
    done, fresh = a.run(one_shot_command(agent, "Say hello"))
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert_complete(fresh)
    assert fresh.agent == agent
    assert fresh.turn_ordinal == 1
    assert not fresh.session_resumed
    assert fresh.first_token_granularity is not None
    assert fresh.first_token_granularity.value == granularity
    assert fresh.session_init_source is not None
    assert fresh.session_init_source.value == "init_message"
    assert_first_token_matches(provider, a.times(fresh), fresh)
    # The probe printed its breakdown line at the end of stderr.
    probe_lines = [x for x in done.stderr.decode().splitlines() if x.startswith("ttft-probe: ")]
    assert probe_lines[0].startswith(f"ttft-probe: {agent} turn 1 fresh: first token ")

    session = find_session_id(agent, done.stdout.decode().splitlines())
    assert session is not None
    assert fresh.session_id == session
    done, resumed = a.run(one_shot_command(agent, "Say it again", resume_id=session))
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert_complete(resumed)
    assert resumed.session_resumed
    assert resumed.turn_ordinal == 2
    assert resumed.conversation_id == fresh.conversation_id
    assert_first_token_matches(provider, a.times(resumed), resumed)


def test_claude_without_partial_messages_is_message_granular(
    provider: FakeProvider, scratch: Path
) -> None:
    a = Agent("claude_code", provider, scratch)
    argv = [x for x in one_shot_command("claude_code", "Say hello")
            if x != "--include-partial-messages"]
    done, record = a.run(argv)
    assert done.returncode == 0
    assert_complete(record)
    assert record.first_token_granularity is not None
    assert record.first_token_granularity.value == "message"
    assert b"hint: the first token is a whole message" in done.stderr
    assert_first_token_matches(provider, a.times(record), record)
    # Claude's self-reported timings are kept apart, not mixed into the segments.
    assert record.agent_reported_duration_api_ms is not None


# --- ACP agents: two turns in one process, then session/load in a new one ------------


@pytest.mark.parametrize("agent", ["claude_code", "codex", "gemini"])
def test_capture_content_keeps_the_real_answer_and_changes_nothing_else(
    agent: str, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent(agent, provider, scratch)
    plain, without = a.run(one_shot_command(agent, "Say hello"))
    done, captured = a.run(one_shot_command(agent, "Say hello"), "--capture-content")
    assert done.returncode == plain.returncode == 0, done.stderr.decode(errors="replace")
    assert_complete(captured)
    assert_first_token_matches(provider, a.times(captured), captured)
    store = Store(a.store_path)
    assert store.content(without.run_id) is None  # off by default
    content = store.content(captured.run_id)
    assert content is not None
    # The answer is the fake provider's, whole, as the CLI printed it.
    assert content.output_text == DEFAULT_ANSWER
    # Only Gemini CLI echoes the prompt on stdout; the others have it in argv alone,
    # which is never captured.
    assert content.input_text == ("Say hello" if agent == "gemini" else None)
    assert DEFAULT_ANSWER not in captured.to_json()


AUTO_MODE_NOTICE = "**Warning:** We're changing auto mode"
"""claude-agent-acp 0.101 ends a turn's answer with Claude Code's notice about the gateway
(the fake provider is a non-Anthropic host): agent text of the turn, after its first token."""


@pytest.mark.parametrize("agent", ACP_AGENTS)
def test_capture_content_of_two_acp_turns(
    agent: str, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent(agent, provider, scratch)
    AcpClient(a, "--capture-content").two_turns()
    first, second = records_of(a)
    store = Store(a.store_path)
    captured = [store.content(r.run_id) for r in (first, second)]
    assert [c.input_text if c else None for c in captured] == ["Say hello", "Say it again"]
    for content in captured:
        assert content is not None
        answer = content.output_text or ""
        notice = answer.removeprefix(DEFAULT_ANSWER)
        assert answer.startswith(DEFAULT_ANSWER)
        assert notice == "" or (agent == "claude_code_acp" and notice.startswith(AUTO_MODE_NOTICE))


@pytest.mark.parametrize("agent", ACP_AGENTS)
def test_acp_two_turns_in_one_process(agent: str, provider: FakeProvider, scratch: Path) -> None:
    a = Agent(agent, provider, scratch)
    session = AcpClient(a).two_turns()
    first, second = records_of(a)
    assert_complete(first)
    assert (first.turn_ordinal, first.process_reused, first.session_resumed) == (1, False, False)
    assert first.session_id == session
    assert first.session_init_source is not None
    assert first.session_init_source.value == "session_result"
    assert_first_token_matches(provider, a.times(first), first)
    assert_complete(second)
    assert (second.turn_ordinal, second.process_reused) == (2, True)
    assert second.cli_ready_ms == second.session_init_ms == second.client_wait_ms == 0
    assert second.spawn_to_first_token_ms == second.model_first_token_ms
    assert_first_token_matches(provider, a.times(second), second)


@pytest.mark.parametrize("agent", ["claude_code_acp", "codex_acp", "opencode_acp"])
def test_acp_session_load_never_yields_a_pre_prompt_first_token(
    agent: str, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent(agent, provider, scratch)
    client = AcpClient(a)
    try:
        client.start()
        session = client.request("session/new", {"cwd": str(a.work), "mcpServers": []})["sessionId"]
        client.prompt(session, "Say hello")
    finally:
        client.end()
    client = AcpClient(a)
    try:
        client.start()
        client.request("session/load", {"sessionId": session, "cwd": str(a.work), "mcpServers": []})
        client.prompt(session, "Say it again")
    finally:
        client.end()
    _, loaded = records_of(a)
    assert_complete(loaded)
    assert loaded.session_resumed
    assert not loaded.process_reused
    assert loaded.turn_ordinal is not None
    assert loaded.turn_ordinal >= 2
    times = a.times(loaded)
    assert times.prompt_sent_ns is not None
    assert times.first_token_ns is not None
    assert times.first_token_ns > times.prompt_sent_ns
    assert_first_token_matches(provider, times, loaded)


def test_ci_has_the_agent_clis() -> None:
    # The real-CLI tests must run in CI, never be skipped for a missing install.
    from ttft_probe.testing.agent_env import agent_bin_dir

    for exe in ("claude", "codex", "gemini", "claude-agent-acp", "codex-acp", "opencode"):
        assert os.access(agent_bin_dir() / exe, os.X_OK), exe


def test_delta_first_tokens_lag_the_send_by_under_25_ms_at_the_median() -> None:
    # Runs last in this module: the delta-granularity runs above recorded their lags.
    assert len(DELTA_LAGS) >= 4, "run the whole module: its delta runs record the lags"
    lags = sorted(DELTA_LAGS)
    median = lags[len(lags) // 2]
    assert median <= DELTA_TOLERANCE_NS, [lag / MS for lag in lags]
