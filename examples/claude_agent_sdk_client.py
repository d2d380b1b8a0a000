"""Probe every turn of a ``claude-agent-sdk`` client: two messages on one ``ClaudeSDKClient``.

    pip install 'ttft-probe[claude-agent-sdk]'
    python examples/claude_agent_sdk_client.py

The SDK runs its bundled Claude Code in SDK mode; ``probed_transport`` is the one line that
makes each turn a record. Turn 2 is served by the same process (``process_reused``) and
starts at its own message, so the pause between the turns is in none of its segments.
"""

from __future__ import annotations

import asyncio
import os

from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

from ttft_probe.integrations.claude_agent_sdk import probed_transport


async def main() -> None:
    options = ClaudeAgentOptions(include_partial_messages=True, cwd=os.getcwd())
    transport = probed_transport(options)
    async with ClaudeSDKClient(options, transport=transport) as client:
        for text in ("Say hello", "Say it again"):
            await client.query(text)
            async for _ in client.receive_response():
                pass
            await asyncio.sleep(1.0)  # the user reads the answer before writing again
    for r in transport.probe.records:
        print(
            f"turn {r.turn_ordinal} reused={r.process_reused}: first token "
            f"{r.spawn_to_first_token_ms} ms = cli_ready {r.cli_ready_ms} + client_wait "
            f"{r.client_wait_ms} + session_init {r.session_init_ms} + model "
            f"{r.model_first_token_ms}"
        )


if __name__ == "__main__":
    asyncio.run(main())
