"""Probe a long-lived ACP agent over two turns with the async context manager.

    python examples/asyncio_acp.py [claude-code-acp|codex-acp]

One process serves both prompts: turn 1 carries cli_ready/session_init, turn 2 is
`process_reused` and starts at its `session/prompt`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from typing import Any

from ttft_probe import Probe

_ids = itertools.count()


async def request(proc: asyncio.subprocess.Process, method: str, params: dict[str, Any]) -> Any:
    assert proc.stdin is not None
    assert proc.stdout is not None
    rid = next(_ids)
    proc.stdin.write(
        json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()
        + b"\n"
    )
    await proc.stdin.drain()
    while True:
        msg = json.loads(await proc.stdout.readline())
        if msg.get("id") == rid and "method" not in msg:
            return msg.get("result", msg.get("error"))
        if "method" in msg and "id" in msg:  # a request to us, e.g. session/request_permission
            answer = {"outcome": {"outcome": "cancelled"}}
            proc.stdin.write(
                json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": answer}).encode() + b"\n"
            )


async def main() -> None:
    agent = sys.argv[1] if len(sys.argv) > 1 else "claude-code-acp"
    exe = os.path.join(os.environ.get("AGENT_BIN", ""), agent)
    async with Probe() as probe:
        # Its own process group: npm launchers leave the native agent running behind them.
        proc = await probe.create_subprocess_exec(
            exe,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        await request(proc, "initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        session = await request(proc, "session/new", {"cwd": os.getcwd(), "mcpServers": []})
        for text in ("Say hello", "Say it again"):
            await request(
                proc,
                "session/prompt",
                {"sessionId": session["sessionId"], "prompt": [{"type": "text", "text": text}]},
            )
        # ACP agents do not exit when stdin closes: end the whole group.
        os.killpg(proc.pid, signal.SIGTERM)
        await proc.wait()
    for r in probe.records:
        print(
            f"turn {r.turn_ordinal} reused={r.process_reused}: first token "
            f"{r.spawn_to_first_token_ms} ms = ready {r.cli_ready_ms} + session "
            f"{r.session_init_ms} + client wait {r.client_wait_ms} + model "
            f"{r.model_first_token_ms}"
        )


if __name__ == "__main__":
    asyncio.run(main())
