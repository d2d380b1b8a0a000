"""Decorate an async launcher (asyncio subprocess).

python examples/asyncio_decorator.py "Say hello"
"""

from __future__ import annotations

import asyncio
import os
import sys

from ttft_probe import Probe, probe_of


@Probe(agent="claude_code")
async def launch_agent(prompt: str) -> asyncio.subprocess.Process:
    claude = os.path.join(os.environ.get("AGENT_BIN", ""), "claude")
    return await asyncio.create_subprocess_exec(
        claude,
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        stdout=asyncio.subprocess.PIPE,
    )


async def main() -> int:
    proc = await launch_agent(sys.argv[1] if len(sys.argv) > 1 else "Say hello")
    await proc.communicate()
    probe = probe_of(proc)
    assert probe is not None
    async with probe:  # waits (bounded) until the run is stored
        pass
    record = probe.records[0]
    print(
        f"first token after {record.spawn_to_first_token_ms} ms: cli_ready "
        f"{record.cli_ready_ms} + session_init {record.session_init_ms} + model "
        f"{record.model_first_token_ms}"
    )
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
