"""``ttft-probe doctor``: does the probe see every marker of your agent command?

Runs the user's own installed agent command once, under a probe, against the bundled fake
provider (:mod:`ttft_probe.testing.fake_provider`), set up per agent as the tests do
(:mod:`ttft_probe.testing.agent_env`: base URL, dummy key, scratch ``HOME``; every real
provider key and base URL of the environment is dropped), so it never talks to a real
provider. It plays the client when the family needs one — Claude Code's SDK mode (an
``initialize`` handshake, one user message), ACP (``initialize``, ``session/new``, one
``session/prompt``) and ``codex app-server`` (``initialize``, ``thread/start``, one
``turn/start``) — and reports, per marker of the family, whether it was seen, when (ms
from the spawn, monotonic), and what to change when it was not.

The run is not stored and nothing is sent to any sink.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from ttft_probe._hints import granularity_hint, structured_output_hint
from ttft_probe.agents import ResolvedAgent, flag_value, resolve_agent
from ttft_probe.errors import ConfigError
from ttft_probe.record import Marker, MarkerTimes, RunRecord, RuntimeFamily

__all__ = ["DoctorReport", "MarkerCheck", "run_doctor"]

PROMPT: Final = "Say hello in a few words."
"""The message the doctor sends when it plays the client."""
FIRST_TOKEN_DELAY_MS: Final = 300
"""The bundled fake provider's first-token delay during the check (ms)."""

_ENVIRONMENTS: Final[Mapping[str, str]] = {
    # agent name -> the agent_environment set-up that points it at the fake provider
    "claude_code": "claude_code",
    "claude_code_acp": "claude_code_acp",
    "codex": "codex",
    "codex_app_server": "codex",
    "codex_acp": "codex_acp",
    "gemini": "gemini",
    "gemini_acp": "gemini_acp",
    "opencode_acp": "opencode_acp",
    "opencode": "opencode_acp",
}


@attrs.frozen
class MarkerCheck:
    """One marker of the family: seen or not, when (ms from spawn), and the fix if not."""

    marker: Marker
    seen: bool
    at_ms: float | None
    detail: str = ""
    fix: str | None = None


@attrs.frozen
class DoctorReport:
    """What ``doctor`` found: the agent as resolved, each marker, and the run's record.

    ``ok`` is ``True`` when every marker the family defines was seen; ``notes`` is advice
    that does not fail the check (a whole-message first token, plain text output).
    ``provider_requests`` counts the generation requests the fake provider answered.
    """

    agent: str
    family: str
    mode: str
    checks: tuple[MarkerCheck, ...]
    notes: tuple[str, ...]
    record: RunRecord | None
    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    provider_requests: int

    @property
    def ok(self) -> bool:
        """Every marker of the family was seen."""
        return all(check.seen for check in self.checks)


def run_doctor(
    argv: Sequence[str],
    *,
    agent: str | None = None,
    family: str | None = None,
    timeout: float = 120.0,
    scratch_root: Path | None = None,
) -> DoctorReport:
    """Run ``argv`` once against the bundled fake provider and check each marker.

    Args:
        argv: The agent command, as the user runs it.
        agent: Agent name (default: inferred from the command).
        family: Runtime family (default: inferred from the command).
        timeout: Seconds the agent gets to answer before it is ended.
        scratch_root: Where the scratch ``HOME`` and working directory go (default: the
            user cache directory); removed afterwards.

    Returns:
        The report.

    Raises:
        ConfigError: No command, an unknown family, or an agent/family mismatch.
        FileNotFoundError: The command's executable does not exist.
    """
    from ttft_probe.spawn import Probe  # noqa: PLC0415 - the CLI loads it only for doctor
    from ttft_probe.testing.fake_provider import FakeProvider  # noqa: PLC0415

    resolved = resolve_agent(argv, agent=agent, family=family)
    client = _client_for(resolved, argv)
    root = scratch_root or _cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="doctor-", dir=root))
    try:
        with FakeProvider(first_token_delay_ms=FIRST_TOKEN_DELAY_MS) as provider:
            env = _environment(resolved.name, provider.url, scratch / "home")
            work = scratch / "work"
            work.mkdir()
            probe = Probe(agent=agent, family=family, store=False, telemetry=False, deliver=False)
            proc = probe.popen(
                list(argv),
                stdin=subprocess.PIPE if client.talks else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=work,
                start_new_session=True,
            )
            session = _Session(proc)
            try:
                client.drive(session, work, timeout)
            finally:
                exit_code = session.end()
            probe.wait(10.0)
            results = probe.results
            requests = sum(1 for e in provider.log if e["generation"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = results[0] if results else None
    record = None if result is None else result.record
    times = None if result is None else result.times
    return DoctorReport(
        agent=resolved.name,
        family=resolved.family,
        mode=client.mode,
        checks=tuple(_checks(resolved, client, record, times)),
        notes=tuple(_notes(resolved, record)),
        record=None if result is None else result.record,
        exit_code=exit_code,
        stdout_tail=session.tail("stdout"),
        stderr_tail=session.tail("stderr"),
        provider_requests=requests,
    )


def _cache_dir() -> Path:
    import platformdirs  # noqa: PLC0415 - doctor only

    return Path(platformdirs.user_cache_dir("ttft-probe", appauthor=False))


def _environment(agent: str, provider_url: str, home: Path) -> dict[str, str]:
    """The agent pointed at the fake provider; an unknown agent just loses real keys."""
    from ttft_probe.testing.agent_env import agent_environment, clean_environment  # noqa: PLC0415

    setup = _ENVIRONMENTS.get(agent)
    if setup is not None:
        return agent_environment(setup, provider_url, home)
    return clean_environment(home)


# --- the agent's process and the doctor playing its client ------------------------------


class _Session:
    """The agent's pipes: stdout lines parsed as JSON on a thread, stderr kept, bounded."""

    KEEP: Final = 4000

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._text: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._threads = [
            threading.Thread(target=self._read, args=(name,), daemon=True)
            for name in ("stdout", "stderr")
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, name: str) -> None:
        pipe = self.proc.stdout if name == "stdout" else self.proc.stderr
        if pipe is None:
            return
        with pipe:
            for line in pipe:
                kept = self._text[name]
                kept += line
                del kept[: max(0, len(kept) - self.KEEP)]
                if name == "stdout":
                    with contextlib.suppress(ValueError):
                        msg = json.loads(line)
                        if isinstance(msg, dict):
                            self.messages.put(msg)

    def tail(self, name: str) -> str:
        return self._text[name].decode(errors="replace")

    def send(self, msg: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            return
        with contextlib.suppress(OSError):
            stdin.write(json.dumps(msg).encode() + b"\n")
            stdin.flush()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], deadline: float,
                 answer: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
        """The next message ``match`` accepts; ``None`` at the deadline or when stdout ends."""
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.proc.poll() is not None and not self._threads[0].is_alive():
                    return None
                continue
            if match(msg):
                return msg
            if answer is not None:
                answer(msg)
        return None

    def end(self) -> int | None:
        """Close stdin, give the agent 3 s to exit, then end its process group."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, sig)
            try:
                code = self.proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        else:  # pragma: no cover - SIGKILL always ends it
            code = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a launcher's children too
        for thread in self._threads:
            thread.join(timeout=5)
        return code


class _Client:
    """No client: a one-shot command answers its own prompt and exits."""

    mode = "one-shot"
    talks = False

    def drive(self, session: _Session, work: Path, timeout: float) -> None:  # noqa: ARG002
        """Wait (bounded) for the agent to answer and exit; ``work`` is its directory."""
        try:
            session.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return


class _SdkModeClient(_Client):
    """Claude Code in SDK mode: the ``initialize`` handshake, then one user message."""

    mode = "SDK mode (--input-format stream-json)"
    talks = True

    def drive(self, session: _Session, work: Path, timeout: float) -> None:  # noqa: ARG002
        deadline = time.monotonic() + timeout
        session.send({"type": "control_request", "request_id": "req_doctor_1",
                      "request": {"subtype": "initialize", "hooks": None}})
        if session.wait_for(lambda m: m.get("type") == "control_response", deadline) is None:
            return
        session.send({"type": "user", "parent_tool_use_id": None, "session_id": "default",
                      "message": {"role": "user", "content": [{"type": "text", "text": PROMPT}]}})
        session.wait_for(lambda m: m.get("type") == "result", deadline)


class _RpcClient(_Client):
    """A JSON-RPC client over the agent's stdio that declines whatever the agent asks."""

    talks = True
    jsonrpc: dict[str, str] = {"jsonrpc": "2.0"}  # noqa: RUF012 - read-only

    def __init__(self) -> None:
        self._ids = itertools.count()

    def request(self, session: _Session, method: str, params: dict[str, Any],
                deadline: float) -> dict[str, Any] | None:
        rid = next(self._ids)
        session.send({**self.jsonrpc, "id": rid, "method": method, "params": params})

        def answer(msg: dict[str, Any]) -> None:
            if "method" in msg and "id" in msg:  # the agent asks us (permissions, files)
                session.send({**self.jsonrpc, "id": msg["id"],
                              "error": {"code": -32601, "message": "not supported by doctor"}})

        reply = session.wait_for(lambda m: m.get("id") == rid and "method" not in m,
                                 deadline, answer)
        if reply is None or "error" in reply:
            return None
        result = reply.get("result")
        return result if isinstance(result, dict) else {}


class _AcpClient(_RpcClient):
    mode = "ACP client (initialize, session/new, session/prompt)"

    def drive(self, session: _Session, work: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        init = self.request(session, "initialize", {
            "protocolVersion": 1,
            "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False},
                                   "terminal": False},
        }, deadline)
        if init is None:
            return
        new = self.request(session, "session/new", {"cwd": str(work), "mcpServers": []}, deadline)
        if new is None or not isinstance(new.get("sessionId"), str):
            return
        self.request(session, "session/prompt", {
            "sessionId": new["sessionId"], "prompt": [{"type": "text", "text": PROMPT}]}, deadline)


class _AppServerClient(_RpcClient):
    mode = "app-server client (initialize, thread/start, turn/start)"
    jsonrpc: dict[str, str] = {}  # noqa: RUF012 - app-server JSON-RPC has no "jsonrpc"

    def drive(self, session: _Session, work: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        init = self.request(session, "initialize", {
            "clientInfo": {"name": "ttft_probe_doctor", "title": None, "version": "1"}}, deadline)
        if init is None:
            return
        session.send({"method": "initialized"})
        started = self.request(session, "thread/start", {"cwd": str(work)}, deadline)
        thread = (started or {}).get("thread")
        if not isinstance(thread, dict) or not isinstance(thread.get("id"), str):
            return
        turn = self.request(session, "turn/start", {
            "threadId": thread["id"], "input": [{"type": "text", "text": PROMPT}]}, deadline)
        if turn is not None:
            session.wait_for(lambda m: m.get("method") == "turn/completed", deadline)


def _client_for(agent: ResolvedAgent, argv: Sequence[str]) -> _Client:
    if agent.family == RuntimeFamily.ACP_JSON_RPC:
        return _AppServerClient() if agent.name == "codex_app_server" else _AcpClient()
    if agent.family == RuntimeFamily.CLAUDE_STREAM_JSON and _sdk_mode(argv):
        return _SdkModeClient()
    return _Client()


def _sdk_mode(argv: Sequence[str]) -> bool:
    return flag_value(argv, "--input-format") == "stream-json"


# --- the verdict --------------------------------------------------------------------------


def _required(family: str, client: _Client) -> tuple[Marker, ...]:
    """The markers the family defines for this way of running it."""
    if family == RuntimeFamily.PLAIN:
        return (Marker.CLI_READY, Marker.FIRST_TOKEN)  # session init needs a regex or observer
    if isinstance(client, _SdkModeClient):  # each turn is set up after its prompt
        return (Marker.CLI_READY, Marker.PROMPT_SENT, Marker.SESSION_INIT_DONE, Marker.FIRST_TOKEN)
    if client.talks:
        return (Marker.CLI_READY, Marker.SESSION_INIT_DONE, Marker.PROMPT_SENT, Marker.FIRST_TOKEN)
    return (Marker.CLI_READY, Marker.SESSION_INIT_DONE, Marker.FIRST_TOKEN)


def _checks(
    agent: ResolvedAgent, client: _Client, record: RunRecord | None, times: MarkerTimes | None
) -> list[MarkerCheck]:
    offsets = times.as_offsets_ms() if times is not None else {}
    checks = []
    for marker in _required(agent.family, client):
        at = offsets.get(marker.value)
        detail = ""
        if record is not None and at is not None:
            if marker is Marker.SESSION_INIT_DONE and record.session_init_source is not None:
                detail = record.session_init_source.value
            elif marker is Marker.FIRST_TOKEN and record.first_token_granularity is not None:
                kind = record.first_token_kind.value if record.first_token_kind else "?"
                detail = f"{record.first_token_granularity.value}, {kind}"
        fix = None if at is not None else _FIXES[marker]
        checks.append(MarkerCheck(marker, at is not None, at, detail, fix))
    return checks


_FIXES: Final[Mapping[Marker, str]] = {
    Marker.CLI_READY: (
        "nothing the family reads came on stdout: check that the command runs and prints its "
        "answer on stdout, and that --family fits what it prints"
    ),
    Marker.PROMPT_SENT: (
        "the doctor could not send its prompt: the agent did not answer its set-up requests "
        "(see its output below)"
    ),
    Marker.SESSION_INIT_DONE: (
        "the agent printed no session set-up message (init line or session result) before "
        "it stopped; see its output below"
    ),
    Marker.FIRST_TOKEN: (
        "the agent printed no answer text: see its output below (an error from the provider, "
        "a tool call instead of text, or a model it does not know)"
    ),
}


def _notes(agent: ResolvedAgent, record: RunRecord | None) -> list[str]:
    """Advice that does not fail the check.

    A whole-message first token; a family that cannot see the session set-up.
    """
    notes = []
    if agent.family == RuntimeFamily.PLAIN:
        structured = structured_output_hint(agent.name)
        if structured is not None:
            notes.append(structured)
    granularity = None if record is None else granularity_hint(record)
    if granularity is not None:
        notes.append(granularity)
    return notes


def check_command(argv: Sequence[str]) -> None:
    """Fail early, with the fix, for a command that cannot run.

    Raises:
        ConfigError: No command was given.
        FileNotFoundError: Its executable is not found.
    """
    if not argv:
        raise ConfigError("no command given: put the agent command after `--`")
    exe = argv[0]
    if os.sep not in exe and shutil.which(exe) is None:
        raise FileNotFoundError(exe)
    if os.sep in exe and not Path(exe).exists():
        raise FileNotFoundError(exe)
