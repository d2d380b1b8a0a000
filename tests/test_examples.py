"""The examples run as documented, against the real CLIs and the fake provider."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DELAY_MS, REPO
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import agent_bin_dir, agent_environment
from ttft_probe.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.realcli
EXAMPLES = REPO / "examples"


@pytest.mark.parametrize(("example", "agent", "args", "runs"), [
    ("sync_context_manager.py", "claude_code", [], 1),
    ("sync_decorator.py", "claude_code", [], 1),
    ("asyncio_decorator.py", "claude_code", [], 1),
    ("asyncio_acp.py", "codex_acp", ["codex-acp"], 2),
    # The SDK integrations, each with its SDK from PyPI (the first two with its bundled CLI).
    ("claude_agent_sdk_client.py", "claude_code", [], 2),
    ("openai_codex_sdk.py", "codex", [], 2),
    ("acp_sdk.py", "claude_code_acp", ["claude-agent-acp"], 2),
])
def test_example(  # noqa: PLR0917 - parametrized
    example: str, agent: str, args: list[str], runs: int, provider: FakeProvider, scratch: Path
) -> None:
    env = agent_environment(agent, provider.url, scratch / "home")
    env["AGENT_BIN"] = str(agent_bin_dir())
    env["TTFT_PROBE_HOME"] = str(scratch / "probe")
    work = scratch / "work"  # inside the repository: codex refuses helper binaries in /tmp
    work.mkdir()
    done = subprocess.run([sys.executable, str(EXAMPLES / example), *args], env=env, cwd=work,
                          capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    records = Store(scratch / "probe" / "runs.sqlite3").last()
    assert len(records) == runs
    assert all(r.model_first_token_ms is not None and r.model_first_token_ms >= DELAY_MS
               for r in records), records
    assert [r.process_reused for r in records] == [False] + [True] * (runs - 1)
    assert (b"first token" in done.stdout or b"spawn_to_first_token_ms=" in done.stdout
            or b"records stored" in done.stdout)
