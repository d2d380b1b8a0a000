"""Probe one Claude Code turn with the context manager (sync).

    python examples/sync_context_manager.py "Say hello"

Uses `claude` from PATH (set AGENT_BIN to a directory to use another install).
"""

from __future__ import annotations

import os
import subprocess
import sys

from ttft_probe import Probe


def main() -> int:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "Say hello"
    claude = os.path.join(os.environ.get("AGENT_BIN", ""), "claude")
    argv = [
        claude,
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
    ]
    with Probe(agent="claude_code", turn_ordinal=1) as probe:
        proc = probe.popen(argv, stdout=subprocess.PIPE)
        out, _ = proc.communicate()
    record = probe.records[0]
    print(f"{len(out.splitlines())} lines of stream-json from the agent")
    print(
        f"spawn_to_first_token_ms={record.spawn_to_first_token_ms} "
        f"cli_ready_ms={record.cli_ready_ms} session_init_ms={record.session_init_ms} "
        f"model_first_token_ms={record.model_first_token_ms}"
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
