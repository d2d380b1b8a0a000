"""No prompt, request body, header value or key leaves through the probe (issue 3).

Real Claude Code runs under `ttft-probe run --observe-provider` with OTLP export on. The
prompt, the API key, a custom request header, an environment variable and an argv word
carry planted secrets; every byte the probe stored (SQLite and its WAL), logged (stderr)
or exported (the decoded OTLP requests) is scanned for them. The prompt prefix kept for
the next turn's comparison is section digests only, salted per install: equal to the
salted digests of the request the provider got, never to the bare ones.

Then stand-in agents (a Claude-like stream and an ACP agent whose prompt arrives on
stdin) carry secrets in the prompt, the answer text, argv, an environment value and
name, and an API key, with all three sinks on (PostHog, Langfuse and OTLP, each a local
fake server): every file the probe left in its home (the store, its WAL and shared
memory, the outbox rows, lock and install-id files), its stderr, the output of
`ttft-probe flush` and `runs`, each sink's decoded payloads and, for a library run, the
DEBUG log are scanned. Each scan also finds the run id there (a positive control: the
scan sees the bytes). The OTel GenAI variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` is set in those runs: it does
not turn capture on. Content capture has one switch, ``--capture-content``
(``Probe(capture_content=True)``); with it on, the prompt that passes the probe and the
answer reach the store and every sink, and argv, the environment and the API key still
reach none of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PROBE, script
from fake_langfuse import FakeLangfuse
from fake_posthog import FakePostHog
from otlp_receiver import OtlpReceiver
from ttft_probe import Probe
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store
from ttft_probe.testing import fake_provider
from ttft_probe.testing.agent_env import agent_environment, one_shot_command
from ttft_probe.testing.fake_provider import FakeProvider
from ttft_probe.waterfall import request_sections, salted

SECRETS = {
    "prompt": "PROMPT-SECRET-7f3a91",
    "key": "sk-ant-KEY-SECRET-2b8c44",
    "header": "HEADER-SECRET-91d0e2",
    "env": "ENV-SECRET-55aa10",
}


@pytest.mark.fault("Redaction", "secrets planted in prompt, API key, header, env, argv "
                   "(real Claude Code, observer on)",
                   outcome="none in the store files, stderr or OTLP export", agent="—")
@pytest.mark.realcli
def test_no_secret_reaches_the_store_the_logs_or_the_exporters(
    provider: FakeProvider, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies: list[dict[str, Any]] = []  # what the provider received: to check the digests
    read_body = fake_provider._Handler._read_body

    def keep_body(handler: Any) -> dict[str, Any]:
        body = read_body(handler)
        if handler.path.split("?")[0].endswith("/v1/messages"):
            bodies.append(body)
        return body

    monkeypatch.setattr(fake_provider._Handler, "_read_body", keep_body)
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

    # The prefix kept for the next turn is digests only, keyed by this install's salt:
    # equal to the salted digests of the request the provider got, never to the bare ones
    # (which anyone could compute from a known prompt).
    store = Store(scratch / "probe" / "runs.sqlite3")
    assert record.conversation_id is not None
    kept = store.prefix(record.conversation_id)
    assert kept is not None
    first = next(b for b in bodies if b.get("tools"))  # the turn's generation request
    sections = request_sections("anthropic", first)
    assert sections is not None
    assert kept == salted(sections, store.salt())
    assert not {s.digest for s in kept} & {s.digest for s in sections}
    assert all(re.fullmatch(r"model|(tools|system|messages)\[\d+\]", s.name) for s in kept)
    assert not any(s.digest.hex().encode() in stored for s in sections)
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


# --- stand-in agents, all three sinks ---------------------------------------------------------

PLANTED = {
    "prompt": "PROMPT-SECRET-a41c07",
    "answer": "ANSWER-SECRET-e2f918",
    "argv": "ARGV-SECRET-0b77d3",
    "env value": "ENV-VALUE-SECRET-9c12fa",
    "env name": "ENV_NAME_SECRET_6d0e2b",
    "api key": "sk-ant-API-KEY-SECRET-73aa5e",
}
PK, SK = "pk-lf-test", "sk-lf-test"


def _claude_like(tmp_path: Path) -> tuple[list[str], bytes, list[str]]:
    """argv, stdin and probe options of a Claude-like stream answering with a secret."""
    delta = {"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": PLANTED["answer"]}}}
    steps: list[dict[str, Any]] = [
        {"out": json.dumps({"type": "system", "subtype": "init", "session_id": "s-1",
                            "model": "m"}) + "\n"},
        {"out": json.dumps(delta) + "\n"},
        {"out": "not json " + PLANTED["answer"] + "\n"},
        {"out": json.dumps({"type": "result", "subtype": "success", "is_error": False,
                            "session_id": "s-1", "result": PLANTED["answer"]}) + "\n"},
        {"exit": 0},
    ]
    argv = [*script(tmp_path, steps), "-p", PLANTED["prompt"], PLANTED["argv"]]
    return argv, b"", ["--family", "claude-stream-json", "--agent", "claude_code"]


def _acp(tmp_path: Path) -> tuple[list[str], bytes, list[str]]:
    """An ACP agent: the prompt (a secret) arrives on stdin, the answer is a secret."""
    def rpc(rid: int, result: dict[str, Any]) -> dict[str, str]:
        return {"out": json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}) + "\n"}

    chunk = {"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s-1",
             "update": {"sessionUpdate": "agent_message_chunk",
                        "content": {"type": "text", "text": PLANTED["answer"]}}}}
    steps: list[dict[str, Any]] = [
        {"read_line": True}, rpc(0, {"protocolVersion": 1}),
        {"read_line": True}, rpc(1, {"sessionId": "s-1"}),
        {"read_line": True}, {"out": json.dumps(chunk) + "\n"}, rpc(2, {"stopReason": "end_turn"}),
        {"exit": 0},
    ]
    requests = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}},
        {"jsonrpc": "2.0", "id": 1, "method": "session/new",
         "params": {"cwd": "/", "mcpServers": []}},
        {"jsonrpc": "2.0", "id": 2, "method": "session/prompt",
         "params": {"sessionId": "s-1", "prompt": [{"type": "text", "text": PLANTED["prompt"]}]}},
    ]
    stdin = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    return [*script(tmp_path, steps), PLANTED["argv"]], stdin, ["--family", "acp-json-rpc"]


AGENTS = {"claude-like stream": _claude_like, "ACP, prompt on stdin": _acp}


@pytest.fixture
def sinks() -> Iterator[tuple[FakePostHog, FakeLangfuse, OtlpReceiver]]:
    with FakePostHog() as ph, FakeLangfuse(public_key=PK, secret_key=SK) as lf, \
            OtlpReceiver() as otlp:
        yield ph, lf, otlp


def _environment(home: Path, ph: FakePostHog, lf: FakeLangfuse,
                 otlp: OtlpReceiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "POSTHOG_", "LANGFUSE_", "TTFT_PROBE_"))}
    env.update({
        "TTFT_PROBE_HOME": str(home),
        "POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": ph.host,
        "LANGFUSE_PUBLIC_KEY": PK, "LANGFUSE_SECRET_KEY": SK, "LANGFUSE_HOST": lf.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "ANTHROPIC_API_KEY": PLANTED["api key"],
        "MY_SERVICE_TOKEN": PLANTED["env value"],
        PLANTED["env name"]: "1",
        # Other instrumentations' opt-in; not ttft-probe's switch (that is one option).
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    })
    return env


def _payloads(ph: FakePostHog, lf: FakeLangfuse, otlp: OtlpReceiver) -> dict[str, bytes]:
    """What each sink received, decoded: PostHog JSON bodies and headers, Langfuse spans
    and request outlines, OTLP protobuf."""
    return {
        "PostHog": b"".join(json.dumps([r.path, r.headers, r.body]).encode()
                            for r in ph.requests),
        "Langfuse": repr([*lf.spans(), *lf.requests()]).encode(),
        "OTLP": b"".join(r.SerializeToString() for r in otlp.traces)
        + b"".join(r.SerializeToString() for r in otlp.metrics),
    }


def _home_bytes(home: Path) -> dict[str, bytes]:
    """Every file the probe left in its home, plus the outbox rows as text."""
    files = {p.name: p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}
    conn = sqlite3.connect(home / "runs.sqlite3")
    try:
        rows = conn.execute("SELECT * FROM deliveries").fetchall()
    finally:
        conn.close()
    assert rows  # the outbox had rows: there was something to scan
    files["deliveries table"] = repr(rows).encode()
    files["store files"] = b"".join(files.values())
    return files


def _assert_clean(
    where: dict[str, bytes], run_id: str, secrets: dict[str, str] = PLANTED
) -> None:
    for place, data in where.items():
        for name, secret in secrets.items():
            assert secret.encode() not in data, f"{name} secret in {place}"
    # Positive control: the scans see the bytes (the run id is there by design).
    forms = (run_id.encode(), run_id.replace("-", "").encode(),
             bytes.fromhex(run_id.replace("-", "")))
    for place in ("PostHog", "Langfuse", "OTLP", "store files"):
        assert any(form in where[place] for form in forms), place


def _probe_run(
    agent: str, tmp_path: Path, sinks: tuple[FakePostHog, FakeLangfuse, OtlpReceiver],
    *options: str,
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess[bytes], RunRecord]:
    """Run a stand-in agent directly, then under `ttft-probe run` with every sink on:
    (the probe's home, the environment, the probe's run, its stored record)."""
    home = tmp_path / "probe"
    env = _environment(home, *sinks)
    argv, stdin, opts = AGENTS[agent](tmp_path)
    direct = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60,
                            check=False)
    done = subprocess.run(
        [*PROBE, "run", *opts, *options, "--delivery-wait", "60", "--", *argv],
        input=stdin, capture_output=True, env=env, timeout=120, check=False)
    assert done.returncode == direct.returncode == 0, done.stderr
    assert done.stdout == direct.stdout  # the agent's own output is untouched
    assert PLANTED["answer"].encode() in done.stdout
    assert direct.stderr == b""
    assert Store(home / "runs.sqlite3").pending() == {}  # every sink confirmed the run
    [record] = Store(home / "runs.sqlite3").last()
    assert record.spawn_to_first_token_ms is not None
    return home, env, done, record


@pytest.mark.fault("Redaction", "secrets in prompt, answer, argv, env value and name, API key "
                   "(stand-in agents, all three sinks)",
                   outcome="none in any store file, the outbox, stderr, flush/runs output, "
                   "PostHog, Langfuse or OTLP payloads")
@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_no_secret_reaches_any_file_log_or_sink(
    agent: str, tmp_path: Path, sinks: tuple[FakePostHog, FakeLangfuse, OtlpReceiver]
) -> None:
    home, env, done, record = _probe_run(agent, tmp_path, sinks)
    flushed = subprocess.run([*PROBE, "flush"], capture_output=True, env=env, timeout=120,
                             check=False)
    listed = subprocess.run([*PROBE, "runs", "--all", "--json"], capture_output=True, env=env,
                            timeout=60, check=True)
    where = {
        **_home_bytes(home),
        **_payloads(*sinks),
        "probe stderr": done.stderr,
        "flush output": flushed.stdout + flushed.stderr,
        "runs output": listed.stdout + listed.stderr,
    }
    _assert_clean(where, record.run_id)


@pytest.mark.fault("Redaction", "secrets in prompt, answer, argv, env value and name, API key "
                   "(library run, DEBUG log)",
                   outcome="none in the DEBUG log, the store with its live WAL and "
                   "shared memory, or the sinks' payloads", agent="—")
def test_no_secret_reaches_the_debug_log_or_the_live_wal_of_a_library_run(
    tmp_path: Path, sinks: tuple[FakePostHog, FakeLangfuse, OtlpReceiver],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    ph, lf, otlp = sinks
    home = tmp_path / "probe"
    for key in list(os.environ):
        if key.startswith(("OTEL_", "POSTHOG_", "LANGFUSE_", "TTFT_PROBE_")):
            monkeypatch.delenv(key)
    for key, value in _environment(home, ph, lf, otlp).items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.DEBUG)
    argv, stdin, _ = _acp(tmp_path)
    with Probe(family="acp-json-rpc") as probe:
        proc = probe.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = proc.communicate(stdin, timeout=60)
        assert proc.returncode == 0
        assert PLANTED["answer"].encode() in out
        assert probe.wait(30)
        # Our store connection is still open: the WAL and shared memory are on disk now.
        live = {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()}
        assert {"runs.sqlite3-wal", "runs.sqlite3-shm"} <= set(live)
        assert probe.close(timeout=10, delivery_wait=60)
    [record] = probe.records
    assert Store(home / "runs.sqlite3").pending() == {}
    where = {**_home_bytes(home), **{f"live {k}": v for k, v in live.items()},
             **_payloads(ph, lf, otlp), "DEBUG log": caplog.text.encode()}
    where["DEBUG log"] += repr([(r.args, r.exc_info) for r in caplog.records]).encode()
    assert caplog.records  # something was logged at all
    _assert_clean(where, record.run_id)
    assert sys.platform.startswith("linux")


@pytest.mark.fault("Redaction", "--capture-content on: secrets in argv, env value and name, "
                   "API key (stand-in agents, all three sinks)",
                   outcome="prompt (when it passes on stdin) and answer in the store and every "
                   "sink; argv, environment and key in none")
@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_capture_content_sends_the_text_and_still_no_argv_or_environment(
    agent: str, tmp_path: Path, sinks: tuple[FakePostHog, FakeLangfuse, OtlpReceiver]
) -> None:
    home, _, done, record = _probe_run(agent, tmp_path, sinks, "--capture-content")
    where = {**_home_bytes(home), **_payloads(*sinks), "probe stderr": done.stderr}
    # The prompt passes the probe only on the ACP agent's stdin; the Claude-like one has
    # it in argv, which is never captured.
    prompt_seen = agent == "ACP, prompt on stdin"
    for place in ("PostHog", "Langfuse", "OTLP", "store files"):
        assert PLANTED["answer"].encode() in where[place], place
        assert (PLANTED["prompt"].encode() in where[place]) is prompt_seen, place
    never = {k: v for k, v in PLANTED.items() if k not in ("answer", "prompt")}
    if not prompt_seen:
        never["prompt"] = PLANTED["prompt"]
    _assert_clean(where, record.run_id, never)
    # The record (the analytics contract) never carries text, captured or not.
    assert PLANTED["answer"] not in record.to_json()
    assert PLANTED["answer"].encode() not in done.stderr
