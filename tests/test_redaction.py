"""No prompt, request body, header value or key leaves through the probe (issue 3).

Real Claude Code runs under `ttft-probe run --observe-provider` with OTLP export on. The
prompt, the API key, a custom request header, an environment variable and an argv word
carry planted secrets; every byte the probe stored (SQLite and its WAL), logged (stderr)
or exported (the decoded OTLP requests) is scanned for them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import PROBE
from otlp_receiver import OtlpReceiver
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import agent_environment, one_shot_command
from ttft_probe.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.realcli

SECRETS = {
    "prompt": "PROMPT-SECRET-7f3a91",
    "key": "sk-ant-KEY-SECRET-2b8c44",
    "header": "HEADER-SECRET-91d0e2",
    "env": "ENV-SECRET-55aa10",
}


def test_no_secret_reaches_the_store_the_logs_or_the_exporters(
    provider: FakeProvider, scratch: Path
) -> None:
    env = agent_environment("claude_code", provider.url, scratch / "home")
    env["ANTHROPIC_API_KEY"] = SECRETS["key"]
    env["ANTHROPIC_CUSTOM_HEADERS"] = f"X-Planted: {SECRETS['header']}"
    env["MY_SERVICE_TOKEN"] = SECRETS["env"]
    env["TTFT_PROBE_HOME"] = str(scratch / "probe")
    argv = one_shot_command("claude_code", f"Repeat after me: {SECRETS['prompt']}")
    work = scratch / "work"
    work.mkdir()
    with OtlpReceiver() as otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint
        done = subprocess.run([*PROBE, "run", "--observe-provider", "--", *argv],
                              capture_output=True, env=env, cwd=work, timeout=180, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        assert otlp.wait_for(lambda: bool(otlp.traces), timeout=10)
        exported = b"".join(r.SerializeToString() for r in otlp.traces) + b"".join(
            r.SerializeToString() for r in otlp.metrics)

    [record] = Store(scratch / "probe" / "runs.sqlite3").last()
    assert record.observer_status.value == "on"
    assert record.provider_first_byte_ms is not None
    stored = b"".join(p.read_bytes() for p in (scratch / "probe").iterdir() if p.is_file())
    assert stored
    assert exported
    for name, secret in SECRETS.items():
        needle = secret.encode()
        assert needle not in stored, f"{name} secret in the store"
        assert needle not in done.stderr, f"{name} secret in the probe's stderr"
        assert needle not in exported, f"{name} secret in the OTLP export"
    # The run itself was not starved of them: the prompt reached the agent's argv.
    assert any(SECRETS["prompt"] in a for a in argv)
    assert os.environ.get("MY_SERVICE_TOKEN") is None


def test_the_scan_finds_what_the_probe_does_store(scratch: Path) -> None:
    # Positive control for the scan above: a conversation id is stored by design.
    marker = "CONVERSATION-ID-3c9e77"
    env = {**os.environ, "TTFT_PROBE_HOME": str(scratch / "probe")}
    done = subprocess.run([*PROBE, "run", "--quiet", "--conversation", marker, "--", "true"],
                          capture_output=True, env=env, timeout=60, check=False)
    assert done.returncode == 0
    stored = b"".join(p.read_bytes() for p in (scratch / "probe").iterdir() if p.is_file())
    assert marker.encode() in stored
