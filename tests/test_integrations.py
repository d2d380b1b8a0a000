"""The SDK integrations with the real SDKs from PyPI against the fake provider (issue 11).

``claude-agent-sdk`` (its bundled Claude Code), ``openai-codex`` (its bundled ``codex
app-server``) and ``agent-client-protocol`` (driving claude-agent-acp) run two turns with a
client pause between them, in this test's own process, with the integration's one line
in place. Every turn is a record: turn 2 is ``process_reused``, ``turn_ordinal`` 2, its
model segment holds the provider's injected delay (plus the agent's own forwarding), and
the pause is in none of its segments.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import acp
import pytest
from acp import text_block
from acp.schema import DeniedOutcome, RequestPermissionResponse
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, query
from openai_codex import CodexConfig

from conftest import DELAY_MS
from realcli import (
    PAUSE_S,
    assert_complete,
    assert_first_token_matches,
    assert_model_segment,
    assert_pause_in_no_segment,
)
from ttft_probe import Probe, RunResult
from ttft_probe.integrations.acp import spawn_agent_process
from ttft_probe.integrations.claude_agent_sdk import probed_transport
from ttft_probe.integrations.openai_codex import ProbedAsyncCodex, ProbedCodex
from ttft_probe.testing.agent_env import acp_command, agent_environment
from ttft_probe.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.realcli


def check_two_turns(results: list[RunResult], provider: FakeProvider, agent: str) -> None:
    """Two records of one process: turn 1 fresh, turn 2 reused, the pause in no segment."""
    assert [r.record.turn_ordinal for r in results] == [1, 2]
    first, second = (r.record for r in results)
    for result in results:
        assert_complete(result.record)
        assert result.record.agent == agent
        assert_first_token_matches(provider, result.times, result.record)
    assert not first.process_reused
    assert first.client_wait_ms is not None
    assert first.client_wait_ms >= PAUSE_S * 1000  # the pause before the first message
    assert second.session_id == first.session_id
    assert_pause_in_no_segment(second)
    assert_model_segment(second)


@pytest.fixture
def work(scratch: Path) -> Path:
    path = scratch / "work"
    path.mkdir()
    return path


# --- claude-agent-sdk --------------------------------------------------------------------


def claude_options(provider: FakeProvider, scratch: Path, work: Path) -> ClaudeAgentOptions:
    env = agent_environment("claude_code", provider.url, scratch / "home")
    return ClaudeAgentOptions(include_partial_messages=True, env=env, cwd=str(work))


def test_claude_sdk_client_two_turns(provider: FakeProvider, scratch: Path, work: Path) -> None:
    options = claude_options(provider, scratch, work)
    probe = Probe(store=scratch / "runs.sqlite3", conversation_id="chat-42")

    async def conversation() -> None:
        client = ClaudeSDKClient(options, transport=probed_transport(options, probe=probe))
        async with client:
            for text in ("Say hello", "Say it again"):
                await asyncio.sleep(PAUSE_S)
                await client.query(text)
                results = [m async for m in client.receive_response()]
                assert isinstance(results[-1], ResultMessage)

    asyncio.run(conversation())
    assert probe.wait(10)
    check_two_turns(probe.results, provider, "claude_code")
    for record in probe.records:
        assert record.conversation_id == "chat-42"  # the caller's id when given
        assert_model_segment(record)


def test_claude_query_one_turn(provider: FakeProvider, scratch: Path, work: Path) -> None:
    options = claude_options(provider, scratch, work)
    transport = probed_transport(options)

    async def one_shot() -> list[Any]:
        return [m async for m in query(prompt="Say hello", options=options, transport=transport)]

    messages = asyncio.run(one_shot())
    assert isinstance(messages[-1], ResultMessage)
    [result] = transport.probe.results
    assert_complete(result.record)
    assert_model_segment(result.record)
    assert_first_token_matches(provider, result.times, result.record)
    assert result.record.conversation_id == result.record.session_id


# --- openai-codex ------------------------------------------------------------------------


def codex_config(provider: FakeProvider, scratch: Path, work: Path) -> CodexConfig:
    env = agent_environment("codex", provider.url, scratch / "home")
    return CodexConfig(env=env, cwd=str(work))


def test_codex_two_turns(provider: FakeProvider, scratch: Path, work: Path) -> None:
    probe = Probe(store=scratch / "runs.sqlite3")
    with ProbedCodex(codex_config(provider, scratch, work), probe=probe) as codex:
        thread = codex.thread_start()
        for text in ("Say hello", "Say it again"):
            time.sleep(PAUSE_S)
            assert thread.run(text).final_response
    assert probe.wait(10)
    check_two_turns(probe.results, provider, "codex_app_server")
    assert probe.records[0].first_token_granularity is not None
    assert probe.records[0].first_token_granularity.value == "delta"


def test_async_codex_two_turns(provider: FakeProvider, scratch: Path, work: Path) -> None:
    config = codex_config(provider, scratch, work)

    async def conversation() -> Probe:
        async with ProbedAsyncCodex(config) as codex:
            thread = await codex.thread_start()
            for text in ("Say hello", "Say it again"):
                await asyncio.sleep(PAUSE_S)
                assert (await thread.run(text)).final_response
            return codex.probe

    probe = asyncio.run(conversation())
    check_two_turns(probe.results, provider, "codex_app_server")


# --- agent-client-protocol ---------------------------------------------------------------


class QuietClient:
    """An ACP client that declines tool permissions and ignores updates."""

    async def request_permission(
        self, session_id: str, tool_call: Any, options: Any, **kwargs: Any
    ) -> RequestPermissionResponse:
        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        return None


def test_acp_spawn_agent_process_two_turns(
    provider: FakeProvider, scratch: Path, work: Path
) -> None:
    env = agent_environment("claude_code_acp", provider.url, scratch / "home")
    probe = Probe(store=scratch / "runs.sqlite3")
    command = acp_command("claude_code_acp")

    async def conversation() -> None:
        client = cast("acp.Client", QuietClient())
        async with spawn_agent_process(client, command[0], *command[1:], env=env, cwd=work,
                                       probe=probe) as (conn, process):
            assert isinstance(process.stdin, asyncio.StreamWriter)  # the SDK checks
            await conn.initialize(protocol_version=1)
            session = await conn.new_session(cwd=str(work), mcp_servers=[])
            for text in ("Say hello", "Say it again"):
                await asyncio.sleep(PAUSE_S)
                await conn.prompt(session_id=session.session_id, prompt=[text_block(text)])
        await asyncio.get_running_loop().run_in_executor(None, probe.wait, 10.0)

    asyncio.run(conversation())
    check_two_turns(probe.results, provider, "claude_code_acp")
    # Turn 1 also waits for the agent's side request (a haiku call) before the answer.
    first = probe.records[0]
    assert first.model_first_token_ms is not None
    assert first.model_first_token_ms >= DELAY_MS
