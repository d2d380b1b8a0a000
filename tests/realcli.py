"""Driving the real agent CLIs in tests: an agent's scratch set-up, clients, assertions.

Shared by the real-CLI modules (one-shot and ACP agents, Claude Code in SDK mode, the
SDK integrations, the observer): each test gets an :class:`Agent` (scratch home,
environment pointed at the session's fake provider, its own store) and drives it through
``ttft-probe run`` as a product would. The fake provider's monotonic log is the ground
truth the probe's markers are held to.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from conftest import DELAY_MS, PROBE, AnyProvider, assert_valid
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.sinks.store import Store
from ttft_probe.testing.agent_env import acp_command, agent_environment, sdk_command

DELTA_TOLERANCE_NS = 25_000_000
"""The median delta-granularity firstToken lies within 25 ms after the provider's send."""
DELTA_RUN_BOUND_NS = 100_000_000
"""Every single run within 100 ms: the lag is the agent's own forwarding (its event loop
parsing the stream and writing the line) plus the probe's ~10 µs (BENCHMARKS.md); on two
shared cores a busy node process has taken 30 ms for one run."""
DELTA_RUN_BOUND_NS_BY_AGENT = {"opencode_acp": 500_000_000}
"""Agents whose own forwarding is slower: opencode 1.18 writes the first
``agent_message_chunk`` of a turn 155–255 ms after the provider's first delta in about one
run of four (measured over 15 runs; the same with the previous ttft_probe release), and
within ~5 ms otherwise: its message-part updates are batched before they reach stdout."""
DELTA_LAGS: list[int] = []
MS = 1_000_000


class Agent:
    """One agent's scratch home, environment and store."""

    def __init__(self, name: str, provider: AnyProvider, scratch: Path) -> None:
        self.name = name
        self.provider = provider
        self.work = scratch / "work"
        self.work.mkdir()
        self.store_path = scratch / "probe" / "runs.sqlite3"
        self.env = agent_environment(name, provider.url, scratch / "home")
        self.env["TTFT_PROBE_HOME"] = str(self.store_path.parent)

    def run(self, argv: list[str], *extra: str) -> tuple[subprocess.CompletedProcess[bytes], RunRecord]:
        before = len(Store(self.store_path).last()) if self.store_path.exists() else 0
        done = subprocess.run([*PROBE, "run", *extra, "--", *argv], capture_output=True,
                              env=self.env, cwd=self.work, timeout=180, check=False)
        records = Store(self.store_path).last()
        assert len(records) == before + 1, done.stderr.decode(errors="replace")[-2000:]
        return done, records[-1]

    def times(self, record: RunRecord) -> MarkerTimes:
        times = Store(self.store_path).marker_times(record.run_id)
        assert times is not None
        return times


def assert_complete(record: RunRecord) -> None:
    """All markers present and ordered, the segments add up exactly."""
    assert_valid(record)
    assert record.status.value == "succeeded", record
    assert record.timing_unavailable_reason is None, record
    for name in ("spawn_to_first_token_ms", "cli_ready_ms", "session_init_ms",
                 "client_wait_ms", "model_first_token_ms"):
        value = getattr(record, name)
        assert value is not None, name
        assert value >= 0, name
    assert record.remainder_ms == 0


def ground_truth(provider: AnyProvider, probe_first_token_ns: int) -> dict[str, Any]:
    """The generation call whose first token the agent printed: the last one sent before
    the probe saw a token (side calls whose answers are never printed come earlier)."""
    sent = [e for e in provider.generations()
            if e["first_token_ns"] is not None and e["first_token_ns"] <= probe_first_token_ns]
    assert sent, "the probe saw a first token before the provider sent any"
    return max(sent, key=lambda e: e["first_token_ns"])


def assert_first_token_matches(provider: AnyProvider, times: MarkerTimes, record: RunRecord) -> None:
    assert times.first_token_ns is not None
    truth = ground_truth(provider, times.first_token_ns)
    lag = times.first_token_ns - truth["first_token_ns"]
    if record.first_token_granularity is not None and record.first_token_granularity.value == "delta":
        log = [{k: (v - times.start_ns) / MS if k.endswith("_ns") and v else v for k, v in e.items()}
               for e in provider.log if e["arrival_ns"] >= times.start_ns - 60_000 * MS]
        DELTA_LAGS.append(lag)
        bound = DELTA_RUN_BOUND_NS_BY_AGENT.get(record.agent, DELTA_RUN_BOUND_NS)
        assert 0 <= lag <= bound, (
            f"firstToken {lag / MS:.3f} ms after the send; markers {times.as_offsets_ms()}; "
            f"provider log (ms from run start): {log}")
    else:
        # A whole message arrives after the first token was sent: late, never early.
        assert lag >= 0
    # The model segment holds at least the injected delay (the provider waited that long).
    assert record.model_first_token_ms is not None
    assert truth["first_token_ns"] - truth["arrival_ns"] >= DELAY_MS * MS


class AcpClient:
    """Drives `ttft-probe run -- <ACP agent>` over its stdin/stdout, as a product would."""

    def __init__(self, agent: Agent, *options: str) -> None:
        self.agent = agent
        self.proc = subprocess.Popen(
            [*PROBE, "run", *options, "--", *acp_command(agent.name)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=agent.env, cwd=agent.work,
            start_new_session=True)
        self.next_id = 0

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        rid = self.next_id
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                          "params": params}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            raw = self.proc.stdout.readline()
            assert raw, f"agent closed stdout; stderr: {self.stderr_tail()}"
            msg = json.loads(raw)
            if "method" in msg and "id" in msg:  # the agent asks us something
                self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "outcome": {"outcome": "cancelled"}}}).encode() + b"\n")
                self.proc.stdin.flush()
            elif msg.get("id") == rid:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    def start(self) -> None:
        self.request("initialize", {"protocolVersion": 1, "clientCapabilities": {
            "fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False}})

    def prompt(self, session: str, text: str) -> None:
        self.request("session/prompt", {"sessionId": session,
                                        "prompt": [{"type": "text", "text": text}]})

    def two_turns(self) -> str:
        """Start, make a session, prompt "Say hello" then "Say it again", end; the session id."""
        try:
            self.start()
            new = self.request("session/new", {"cwd": str(self.agent.work), "mcpServers": []})
            session: str = new["sessionId"]
            self.prompt(session, "Say hello")
            self.prompt(session, "Say it again")
        finally:
            self.end()
        return session

    def stderr_tail(self) -> str:
        return "(see the test's captured output)"

    def end(self) -> None:
        """Close stdin; agents that ignore that (claude-code-acp, codex-acp) get SIGTERM
        through the probe, which forwards it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() below must not flush it
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        finally:
            # npm launchers leave the native agent behind: end the whole group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=30)


def records_of(a: Agent) -> list[RunRecord]:
    return Store(a.store_path).last() if a.store_path.exists() else []



PAUSE_S = 1.2
"""A client's pause before its first message and between turns (the SDK-mode and SDK tests)."""
MODEL_SLACK_MS = 250
"""model_first_token_ms lies within [DELAY_MS, DELAY_MS + 250]: the provider's own wait plus
the agent's request build before it and its printing after (≈ 100 ms on two busy cores)."""


def assert_model_segment(record: RunRecord) -> None:
    assert record.model_first_token_ms is not None
    assert DELAY_MS <= record.model_first_token_ms <= DELAY_MS + MODEL_SLACK_MS, record


def assert_pause_in_no_segment(record: RunRecord) -> None:
    """A reused turn after a client pause: no boot and no client wait of its own, and the
    pause shows nowhere (the whole wait is shorter than the pause)."""
    assert record.process_reused
    assert record.cli_ready_ms == record.client_wait_ms == 0
    assert record.spawn_to_first_token_ms is not None
    assert record.spawn_to_first_token_ms < PAUSE_S * 1000, record


class SdkClient:
    """Drives Claude Code in SDK mode under `ttft-probe run`, as ``claude-agent-sdk`` does.

    The CLI runs with ``--input-format stream-json``; the client writes JSON lines to its
    stdin (a ``control_request`` ``initialize``, then ``user`` messages) and reads its
    stdout lines on a thread, every wait bounded.
    """

    WAIT_S = 120.0

    def __init__(self, agent: Agent, *options: str, agent_args: tuple[str, ...] = ()) -> None:
        self.agent = agent
        self.proc = subprocess.Popen(
            [*PROBE, "run", *options, "--", *sdk_command(), *agent_args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=agent.env, cwd=agent.work,
            start_new_session=True)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict):
                    self.messages.put(msg)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, kind: str) -> dict[str, Any]:
        """The next stdout message of ``type`` ``kind`` (bounded by ``WAIT_S``)."""
        deadline = time.monotonic() + self.WAIT_S
        while True:
            try:
                msg = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} from the CLI in {self.WAIT_S} s") from None
            if msg.get("type") == kind:
                return msg

    def initialize(self) -> None:
        """The SDK's handshake: ``control_request`` ``initialize``, then its answer."""
        self.send({"type": "control_request", "request_id": "req_1_test",
                   "request": {"subtype": "initialize", "hooks": None}})
        self.wait_for("control_response")

    def user(self, text: str) -> None:
        self.send({"type": "user", "message": {"role": "user", "content": [
            {"type": "text", "text": text}]}, "parent_tool_use_id": None, "session_id": "default"})

    def turn(self, text: str) -> dict[str, Any]:
        """Send a message and wait for its ``result``."""
        self.user(text)
        return self.wait_for("result")

    def interrupt(self) -> None:
        self.send({"type": "control_request", "request_id": "req_2_test",
                   "request": {"subtype": "interrupt"}})

    def end(self) -> bytes:
        """Close stdin (the CLI exits at EOF); returns the probe's stderr."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self._reader.join(timeout=10)
            self.proc.stdout.close()
        with self.proc.stderr:
            return self.proc.stderr.read()
