"""`ttft-probe doctor` against the pinned CLIs, and `ttft-probe shim` for SDKs (issue 11)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

from conftest import PROBE, stored
from realcli import PAUSE_S, assert_complete, assert_first_token_matches, assert_model_segment
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import (
    acp_command,
    agent_bin_dir,
    agent_environment,
    one_shot_command,
    sdk_command,
)
from ttft_probe.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.realcli


def doctor(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ttft-probe doctor …` with its scratch under the test's (not the user's cache)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache")}
    return subprocess.run([*PROBE, "doctor", *args], capture_output=True, text=True,
                          env=env, cwd=scratch, timeout=300, check=False)


PINNED = {
    "claude -p (deltas)": one_shot_command("claude_code", "Say hello"),
    "claude SDK mode": sdk_command(),
    "codex exec": one_shot_command("codex", "Say hello"),
    "gemini -p": one_shot_command("gemini", "Say hello"),
    "claude-agent-acp": acp_command("claude_code_acp"),
    "codex-acp": acp_command("codex_acp"),
    "gemini --acp": acp_command("gemini_acp"),
    "opencode acp": acp_command("opencode_acp"),
}


@pytest.mark.parametrize("command", PINNED.values(), ids=PINNED.keys())
def test_doctor_sees_every_marker_of_the_pinned_clis(command: list[str], scratch: Path) -> None:
    done = doctor(scratch, "--", *command)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "ttft-probe doctor: every marker was seen"
    marker_lines = [x.split() for x in lines if x.startswith("  ") and not x.startswith("  note")]
    assert {x[0] for x in marker_lines} >= {"cliReady", "sessionInitDone", "firstToken"}
    assert all(x[1] == "seen" and float(x[2]) > 0 for x in marker_lines), lines


def test_doctor_names_the_fix_for_whole_message_tokens(scratch: Path) -> None:
    argv = [a for a in sdk_command() if a != "--include-partial-messages"]
    done = doctor(scratch, "--", *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "add --include-partial-messages" in done.stdout
    assert "SDK mode" in done.stdout.splitlines()[0]


def test_doctor_fails_a_command_that_prints_nothing(scratch: Path) -> None:
    done = doctor(scratch, "--", sys.executable, "-c", "pass")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cliReady         NOT SEEN" in done.stdout
    assert "fix: nothing the family reads came on stdout" in done.stdout
    assert done.stdout.splitlines()[-1] == "ttft-probe doctor: a marker was not seen"


@pytest.mark.parametrize(("args", "message"), [
    (["--", "no-such-agent-xyz"], "command not found: no-such-agent-xyz"),
    (["--family", "nope", "--", "true"], "Invalid value for '--family'"),
    ([], "Missing argument 'COMMAND...'"),
])
def test_doctor_usage_errors_exit_2(args: list[str], message: str, scratch: Path) -> None:
    done = doctor(scratch, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "every marker" not in done.stdout


# --- shim ----------------------------------------------------------------------------------


def test_shim_runs_the_agent_under_the_probe_for_an_sdk(
    provider: FakeProvider, scratch: Path
) -> None:
    # The seed scenario: claude-agent-sdk with cli_path set to a shim; two queries on one
    # client must give two records (before SDK mode, the second was lost).
    shim = scratch / "bin" / "claude"  # named like the agent: it resolves the real one now
    store = scratch / "probe" / "runs.sqlite3"
    done = subprocess.run([*PROBE, "shim", "--store", str(store), str(shim), "--",
                           str(agent_bin_dir() / "claude")], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert os.access(shim, os.X_OK)
    text = shim.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "run --quiet --store" in text
    assert text.rstrip().endswith('"$@"')
    env = agent_environment("claude_code", provider.url, scratch / "home")
    options = ClaudeAgentOptions(cli_path=shim, include_partial_messages=True, env=env,
                                 cwd=str(scratch))

    async def conversation() -> None:
        async with ClaudeSDKClient(options) as client:
            for text in ("Say hello", "Say it again"):
                await asyncio.sleep(PAUSE_S)
                await client.query(text)
                [_ async for _ in client.receive_response()]

    asyncio.run(conversation())
    runs = Store(store)
    first, second = runs.last()
    for record in (first, second):
        assert_complete(record)
        assert_model_segment(record)
        marker_times = runs.marker_times(record.run_id)
        assert marker_times is not None
        assert_first_token_matches(provider, marker_times, record)
    assert (first.turn_ordinal, second.turn_ordinal) == (1, 2)
    assert second.process_reused


def test_shim_passes_its_options_and_refuses_what_would_break(scratch: Path) -> None:
    shim = scratch / "agent"
    child = scratch / "child.py"
    child.write_text("import sys\nprint('hello', *sys.argv[1:], flush=True)\n")
    args = ["--family", "plain", "--agent", "my_agent", "--show-breakdown"]
    done = subprocess.run([*PROBE, "shim", *args, str(shim), "--", sys.executable, str(child)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    home = scratch / "probe-home"
    ran = subprocess.run([str(shim), "one", "two"], capture_output=True, text=True, timeout=30,
                         check=False, env={**os.environ, "TTFT_PROBE_HOME": str(home)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello one two\n"  # the agent's own output, its arguments appended
    assert "ttft-probe: my_agent turn" in ran.stderr  # --show-breakdown: the line is printed
    [record] = stored(home)
    assert (record["agent"], record["runtime_family"]) == ("my_agent", "plain")
    # It exists now: not overwritten without --force.
    again = subprocess.run([*PROBE, "shim", str(shim), "--", sys.executable], capture_output=True,
                           text=True, timeout=30, check=False)
    assert again.returncode == 2
    assert "pass --force" in again.stderr
    missing = subprocess.run([*PROBE, "shim", str(scratch / "x"), "--", "no-such-agent-xyz"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert missing.returncode == 2
    assert "command not found: no-such-agent-xyz" in missing.stderr
