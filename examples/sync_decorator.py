"""Decorate the function your product already uses to launch the agent (sync).

    python examples/sync_decorator.py "Say hello"

The decorated function returns the Popen as before; its stdout reads the same bytes.
Every run lands in the local store (`ttft-probe runs`) and in `on_record`.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ttft_probe import Probe, RunRecord, probe_of


def report(record: RunRecord) -> None:
    print(
        f"[ttft] {record.agent} turn {record.turn_ordinal}: first token after "
        f"{record.spawn_to_first_token_ms} ms (model {record.model_first_token_ms} ms)"
    )


@Probe(agent="claude_code", on_record=report)
def launch_agent(prompt: str) -> subprocess.Popen[bytes]:
    claude = os.path.join(os.environ.get("AGENT_BIN", ""), "claude")
    return subprocess.Popen(
        [
            claude,
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        ],
        stdout=subprocess.PIPE,
    )


def main() -> int:
    proc = launch_agent(sys.argv[1] if len(sys.argv) > 1 else "Say hello")
    assert proc.stdout is not None
    for _line in proc.stdout:  # the product consumes the stream as it always did
        pass
    code = proc.wait()
    probe = probe_of(proc)
    if probe is not None:
        probe.wait(timeout=10)  # let the record reach the store before we exit
    return code


if __name__ == "__main__":
    sys.exit(main())
