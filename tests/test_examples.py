"""The examples run as documented, against the real CLIs and the fake provider."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import agent_bin_dir, agent_environment
from ttft_probe.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.realcli
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(first_token_delay_ms=200) as fp:
        yield fp


@pytest.mark.parametrize(("example", "agent", "args", "runs"), [
    ("sync_context_manager.py", "claude_code", [], 1),
    ("sync_decorator.py", "claude_code", [], 1),
    ("asyncio_decorator.py", "claude_code", [], 1),
    ("asyncio_acp.py", "codex_acp", ["codex-acp"], 2),
])
def test_example(  # noqa: PLR0917 - parametrized
    example: str, agent: str, args: list[str], runs: int, provider: FakeProvider, tmp_path: Path
) -> None:
    home = REPO / ".scratch" / "pytest-examples" / example
    env = agent_environment(agent, provider.url, home)
    env["AGENT_BIN"] = str(agent_bin_dir())
    env["TTFT_PROBE_HOME"] = str(tmp_path / "probe")
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, str(EXAMPLES / example), *args], env=env, cwd=work,
                          capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    records = Store(tmp_path / "probe" / "runs.sqlite3").last()
    assert len(records) == runs
    assert all(r.model_first_token_ms is not None and r.model_first_token_ms >= 200
               for r in records), records
    assert b"first token" in done.stdout or b"spawn_to_first_token_ms=" in done.stdout
