"""Probe an ACP agent driven by the ``agent-client-protocol`` SDK over two prompts.

    pip install 'ttft-probe[acp]'
    python examples/acp_sdk.py claude-agent-acp        # or codex-acp, or: gemini --acp

``spawn_agent_process`` from ``ttft_probe.integrations.acp`` replaces the SDK's own: the
same connection and process, with one record per ``session/prompt``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, cast

import acp
from acp import text_block
from acp.schema import DeniedOutcome, RequestPermissionResponse

from ttft_probe.integrations.acp import spawn_agent_process


class Client:
    """The smallest ACP client: it declines tool permissions and ignores updates.

    (The SDK calls only the methods of ``acp.Client`` that the agent uses.)
    """

    async def request_permission(
        self, session_id: str, tool_call: Any, options: Any, **kwargs: Any
    ) -> RequestPermissionResponse:
        return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        return None


async def main() -> None:
    command = sys.argv[1:] or ["claude-agent-acp"]
    # AGENT_BIN: where the agent is installed (else it is looked up on PATH).
    executable = str(Path(os.environ.get("AGENT_BIN", "")) / command[0])
    client = cast("acp.Client", Client())
    async with spawn_agent_process(client, executable, *command[1:], env=dict(os.environ),
                                   cwd=os.getcwd()) as (conn, _process):
        await conn.initialize(protocol_version=1)
        session = await conn.new_session(cwd=os.getcwd(), mcp_servers=[])
        for text in ("Say hello", "Say it again"):
            await conn.prompt(session_id=session.session_id, prompt=[text_block(text)])
    print("records stored: see `ttft-probe runs --last 2`")


if __name__ == "__main__":
    asyncio.run(main())
