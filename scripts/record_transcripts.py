"""Record stdio transcripts of the real agent CLIs against the fake provider.

Spawns each pinned CLI (``agents/node_modules/.bin``, see ``agents/package.json``) with
:class:`ttft_probe.testing.fake_provider.FakeProvider` at a 300 ms first-token delay,
timestamps every stdout/stderr line, and for ACP agents every line written to their stdin,
with ``time.monotonic_ns()``, and writes ``tests/transcripts/<family>/<case>.jsonl``:

- line 1: ``{"meta": {...}}`` with the agent, its CLI version, the case, and the fake
  provider's ground truth (request arrival and first token sent, ms since spawn);
- then one ``{"t_ms": …, "stream": "stdout"|"stderr"|"stdin", "line": …}`` per line.

The scratch home (under ``.scratch/``) is written as ``$HOME`` and the source tree as
``$REPO``; nothing else is changed. The ``.expected.json`` files beside the transcripts
are written by hand and are not touched here.

Usage::

    .venv/bin/python scripts/record_transcripts.py            # every case
    .venv/bin/python scripts/record_transcripts.py claude_fresh codex_acp_two_turns
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ttft_probe.testing.agent_env import (
    acp_command,
    agent_bin_dir,
    agent_environment,
    find_session_id,
    one_shot_command,
    sdk_command,
)
from ttft_probe.testing.fake_provider import DEFAULT_ANSWER, FakeProvider, split_answer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "transcripts"
SCRATCH = REPO / ".scratch" / "record_transcripts"
FIRST_TOKEN_DELAY_MS = 300
TURN_TIMEOUT_S = 120
PROMPTS = ("Say hello in a few words.", "And once more, please.")

PACKAGES = {
    "claude_code": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "gemini": "@google/gemini-cli",
    "claude_code_acp": "@agentclientprotocol/claude-agent-acp",
    "codex_acp": "@zed-industries/codex-acp",
    "gemini_acp": "@google/gemini-cli",
    "opencode_acp": "opencode-ai",
}


def cli_version(agent: str) -> str:
    """The installed version of ``agent``'s npm package."""
    manifest = agent_bin_dir().parent / PACKAGES[agent] / "package.json"
    return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])


@dataclass
class Recording:
    """The lines of one spawned process, each stamped with ``time.monotonic_ns()``."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    acp: bool = False
    sdk: bool = False
    t0_ns: int = 0
    records: list[tuple[int, str, str]] = field(default_factory=list)
    messages: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    proc: subprocess.Popen[bytes] | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 0

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The spawned process.

        Raises:
            RuntimeError: Not spawned yet.
        """
        if self.proc is None:
            raise RuntimeError("not spawned")
        return self.proc

    def spawn(self) -> None:
        """Start the process and one reader thread per output stream."""
        self.t0_ns = time.monotonic_ns()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.PIPE if self.acp or self.sdk else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            if pipe is None:
                raise RuntimeError("no pipe")
            t = threading.Thread(target=self._pump, args=(name, pipe), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, name: str, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            t = time.monotonic_ns()
            line = raw.decode("utf-8", errors="replace").removesuffix("\n")
            with self.lock:
                self.records.append((t, name, line))
            if name == "stdout" and (self.acp or self.sdk):
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    self.messages.put(msg)

    def send(self, msg: dict[str, Any]) -> int:
        """Write one JSON-RPC message to stdin; returns the time it was sent (ns)."""
        stdin = self.process.stdin
        if stdin is None:
            raise RuntimeError("stdin is not a pipe")
        line = json.dumps(msg, separators=(",", ":"))
        t = time.monotonic_ns()
        with self.lock:
            self.records.append((t, "stdin", line))
        stdin.write(line.encode() + b"\n")
        stdin.flush()
        return t

    def wait_for(self, predicate: Any, what: str) -> dict[str, Any]:
        """The next stdout message (SDK mode) for which ``predicate`` is true."""
        deadline = time.monotonic() + TURN_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {TURN_TIMEOUT_S} s")
            try:
                msg = self.messages.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                code = self.process.poll()
                if code is not None:
                    raise RuntimeError(f"agent exited ({code}) waiting for {what}") from None
                continue
            if predicate(msg):
                return msg

    def request(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send a request and wait for its response, answering the agent's own requests.

        Returns:
            The time the request was sent (ns) and the response message.
        """
        req_id = self.next_id
        self.next_id += 1
        sent = self.send({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        deadline = time.monotonic() + TURN_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no response to {method} within {TURN_TIMEOUT_S} s")
            try:
                msg = self.messages.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                code = self.process.poll()
                if code is not None:
                    raise RuntimeError(f"agent exited ({code}) during {method}") from None
                continue
            if "method" in msg and "id" in msg:
                self._answer_agent_request(msg)
            elif msg.get("id") == req_id and ("result" in msg or "error" in msg):
                return sent, msg

    def _answer_agent_request(self, msg: dict[str, Any]) -> None:
        if msg["method"] == "session/request_permission":
            options = msg.get("params", {}).get("options", [])
            allow = next(
                (o for o in options if str(o.get("kind", "")).startswith("allow")),
                options[0] if options else None,
            )
            outcome: dict[str, Any] = (
                {"outcome": "selected", "optionId": allow["optionId"]}
                if allow
                else {"outcome": "cancelled"}
            )
            self.send({"jsonrpc": "2.0", "id": msg["id"], "result": {"outcome": outcome}})
        else:
            self.send(
                {
                    "jsonrpc": "2.0",
                    "id": msg["id"],
                    "error": {"code": -32601, "message": "method not supported"},
                }
            )

    def wait(self, timeout_s: float = TURN_TIMEOUT_S) -> int:
        """Wait for a one-shot process to exit; returns its exit code."""
        code = self.process.wait(timeout=timeout_s)
        for t in self.threads:
            t.join(timeout=5)
        return code

    def terminate(self) -> int:
        """End a long-lived agent (its whole process group): SIGTERM, then SIGKILL."""
        proc = self.process
        if proc.stdin is not None:
            proc.stdin.close()
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        for t in self.threads:
            t.join(timeout=5)
        return proc.returncode


@dataclass
class Case:
    """One transcript to record."""

    name: str
    family: str
    agent: str
    description: str


def ms(t_ns: int | None, t0_ns: int) -> float | None:
    """``t_ns`` as ms since ``t0_ns``, 3 decimals."""
    return None if t_ns is None else round((t_ns - t0_ns) / 1e6, 3)


def ground_truth(
    provider: FakeProvider, rec: Recording, windows: list[tuple[int, int]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The provider's log for one process: per-turn summary and every request (ms).

    A turn's *main* generation is the one whose answer the CLI printed: the generation
    whose first token was sent last before the first output line carrying the answer's
    first delta. Claude Code also makes side calls (e.g. a haiku request) whose answer it
    never prints; they are listed in ``provider_requests`` but are not the turn's.
    """
    t0_ns = rec.t0_ns
    requests = sorted(
        (e for e in provider.log if e["arrival_ns"] >= t0_ns), key=lambda e: e["arrival_ns"]
    )
    rows = [
        {
            "api": e["api"],
            "method": e["method"],
            "path": e["path"],
            "generation": e["generation"],
            "stream": e["stream"],
            "model": e["model"],
            "resumed": e["resumed"],
            "status": e["status"],
            "arrival_ms": ms(e["arrival_ns"], t0_ns),
            "first_token_ms": ms(e["first_token_ns"], t0_ns),
            "end_ms": ms(e["end_ns"], t0_ns),
        }
        for e in requests
    ]
    first_words = split_answer(DEFAULT_ANSWER)[0].strip()
    turns = []
    for i, (start, end) in enumerate(windows, 1):
        gens = [e for e in requests if e["generation"] and start <= e["arrival_ns"] <= end]
        seen = next(
            (
                t
                for t, stream, line in sorted(rec.records)
                if stream == "stdout" and t >= start and first_words in line
            ),
            None,
        )
        printed = [
            e
            for e in gens
            if e["first_token_ns"] is not None and (seen is None or e["first_token_ns"] <= seen)
        ]
        main = max(printed, key=lambda e: e["first_token_ns"], default=None)
        turns.append(
            {
                "turn": i,
                "generation_requests": len(gens),
                "first_generation_arrival_ms": ms(gens[0]["arrival_ns"], t0_ns) if gens else None,
                "main_generation_arrival_ms": ms(main["arrival_ns"], t0_ns) if main else None,
                "first_token_sent_ms": ms(main["first_token_ns"], t0_ns) if main else None,
                "answer_first_seen_on_stdout_ms": ms(seen, t0_ns),
                "request_resumed": main["resumed"] if main else None,
            }
        )
    return turns, rows


def write_transcript(case: Case, rec: Recording, meta_extra: dict[str, Any], home: Path) -> Path:
    """Write ``<family>/<case>.jsonl`` with the scratch paths replaced."""

    def scrub(text: str) -> str:
        return text.replace(str(home), "$HOME").replace(str(REPO), "$REPO")

    bin_dir = agent_bin_dir()
    argv = [a.removeprefix(str(bin_dir) + "/") for a in rec.argv]
    meta = {
        "case": case.name,
        "family": case.family,
        "agent": case.agent,
        "cli_version": cli_version(case.agent),
        "package": PACKAGES[case.agent],
        "description": case.description,
        "argv": [scrub(a) for a in argv],
        "first_token_delay_ms": FIRST_TOKEN_DELAY_MS,
        "clock": "time.monotonic_ns(); t_ms and ground truth are ms since spawn",
        **meta_extra,
    }
    path = OUT / case.family / f"{case.name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with rec.lock:
        records = sorted(rec.records, key=lambda r: r[0])
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for t, stream, line in records:
            row = {"t_ms": ms(t, rec.t0_ns), "stream": stream, "line": scrub(line)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def one_shot(
    provider: FakeProvider,
    case: Case,
    home: Path,
    resume_id: str | None = None,
    *,
    partial: bool = True,
    text: bool = False,
) -> str | None:
    """Record one one-shot turn; returns the session id it printed.

    ``text``: claude's default text output (the ``plain`` family) instead of stream-json.
    """
    argv = one_shot_command(case.agent, PROMPTS[1] if resume_id else PROMPTS[0], resume_id)
    if not partial:
        argv.remove("--include-partial-messages")
    if text:
        i = argv.index("--output-format")
        del argv[i : i + 2]
        argv = [a for a in argv if a not in {"--verbose", "--include-partial-messages"}]
    env = agent_environment(case.agent, provider.url, home)
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    rec = Recording(argv, env, work)
    rec.spawn()
    code = rec.wait()
    end = time.monotonic_ns()
    time.sleep(0.2)  # let the provider log the requests of the exited process
    turns, requests = ground_truth(provider, rec, [(rec.t0_ns, end)])
    meta = {"exit_code": code, "turns": turns, "provider_requests": requests}
    path = write_transcript(case, rec, meta, home)
    report(path, turns)
    stdout = [line for _, stream, line in rec.records if stream == "stdout"]
    return find_session_id(case.agent, stdout)


INITIALIZE = {
    "protocolVersion": 1,
    "clientCapabilities": {
        "fs": {"readTextFile": False, "writeTextFile": False},
        "terminal": False,
    },
}


def acp(
    provider: FakeProvider,
    case: Case,
    home: Path,
    load_id: str | None = None,
    turns: int = 2,
) -> str | None:
    """Record an ACP process: new session and ``turns`` prompts, or load and one prompt.

    Returns:
        The session id.
    """
    env = agent_environment(case.agent, provider.url, home)
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    rec = Recording(acp_command(case.agent), env, work, acp=True)
    rec.spawn()
    windows: list[tuple[int, int]] = []
    notes: dict[str, Any] = {}
    session_id = load_id
    try:
        _, init = rec.request("initialize", INITIALIZE)
        caps = init.get("result", {}).get("agentCapabilities", {})
        notes["load_session_capability"] = caps.get("loadSession")
        if load_id is None:
            _, new = rec.request("session/new", {"cwd": str(work), "mcpServers": []})
            session_id = new["result"]["sessionId"]
        else:
            _, loaded = rec.request(
                "session/load", {"sessionId": load_id, "cwd": str(work), "mcpServers": []}
            )
            if "error" in loaded:
                notes["session_load_error"] = loaded["error"]
                turns = 0
        for i in range(turns):
            if i:
                time.sleep(0.3)  # let the previous turn's late notifications arrive
            prompt = [{"type": "text", "text": PROMPTS[1] if i or load_id else PROMPTS[0]}]
            sent, result = rec.request(
                "session/prompt", {"sessionId": session_id, "prompt": prompt}
            )
            windows.append((sent, time.monotonic_ns()))
            if "error" in result:
                notes[f"turn_{i + 1}_error"] = result["error"]
        time.sleep(0.3)
    finally:
        code = rec.terminate()
    truth, requests = ground_truth(provider, rec, windows)
    meta = {
        "exit_code": code,
        "acp": notes,
        "turns": truth,
        "provider_requests": requests,
        "terminated_by_recorder": True,
    }
    path = write_transcript(case, rec, meta, home)
    report(path, truth)
    return session_id


def _user(text: str) -> dict[str, Any]:
    """A user message as ``claude-agent-sdk`` writes it to Claude Code's stdin."""
    return {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": None,
        "session_id": "default",
    }


def _is_result(msg: dict[str, Any]) -> bool:
    return msg.get("type") == "result"


CLIENT_PAUSE_S = 1.0
"""SDK cases: the client's pause after the initialize answer and between turns."""


def sdk(provider: FakeProvider, case: Case, home: Path) -> None:
    """Record Claude Code in SDK mode, driven as ``claude-agent-sdk`` drives it.

    ``claude_sdk_turns``: initialize, a pause, two turns with a pause between them, then a
    third message interrupted 150 ms after it was sent. ``claude_sdk_queued``: two messages
    50 ms apart (the second waits for the first turn). ``claude_sdk_no_initialize``: no
    initialize handshake; the first message right away, then a second turn.
    """
    env = agent_environment(case.agent, provider.url, home)
    work = home / "work"
    work.mkdir(parents=True, exist_ok=True)
    rec = Recording(sdk_command(case.agent), env, work, sdk=True)
    rec.spawn()
    windows: list[tuple[int, int]] = []
    try:
        if case.name != "claude_sdk_no_initialize":
            rec.send({"type": "control_request", "request_id": "req_1_ttft",
                      "request": {"subtype": "initialize", "hooks": None}})
            rec.wait_for(lambda m: m.get("type") == "control_response", "initialize answer")
            time.sleep(CLIENT_PAUSE_S)
        if case.name == "claude_sdk_queued":
            first = rec.send(_user(PROMPTS[0]))
            time.sleep(0.05)
            rec.send(_user(PROMPTS[1]))
            rec.wait_for(_is_result, "result 1")
            served = time.monotonic_ns()  # the second turn is served from here on
            windows.append((first, served))
            rec.wait_for(_is_result, "result 2")
            windows.append((served, time.monotonic_ns()))
        else:
            for i, text in enumerate(PROMPTS):
                if i:
                    time.sleep(CLIENT_PAUSE_S)
                sent = rec.send(_user(text))
                rec.wait_for(_is_result, f"result {i + 1}")
                windows.append((sent, time.monotonic_ns()))
        if case.name == "claude_sdk_turns":
            time.sleep(CLIENT_PAUSE_S)
            sent = rec.send(_user("Say something long."))
            time.sleep(0.15)
            rec.send({"type": "control_request", "request_id": "req_2_ttft",
                      "request": {"subtype": "interrupt"}})
            rec.wait_for(_is_result, "result 3")
            windows.append((sent, time.monotonic_ns()))
        time.sleep(0.3)
    finally:
        code = rec.terminate()
    truth, requests = ground_truth(provider, rec, windows)
    meta = {"exit_code": code, "turns": truth, "provider_requests": requests,
            "terminated_by_recorder": True}
    path = write_transcript(case, rec, meta, home)
    report(path, truth)


def report(path: Path, turns: list[dict[str, Any]]) -> None:
    """Print where a transcript went and its ground truth."""
    print(f"wrote {os.path.relpath(path, REPO)}: {json.dumps(turns)}", flush=True)


CASES = {
    c.name: c
    for c in (
        Case(
            "claude_fresh",
            "claude-stream-json",
            "claude_code",
            "claude -p, stream-json, --include-partial-messages; a new session",
        ),
        Case(
            "claude_resumed",
            "claude-stream-json",
            "claude_code",
            "claude -p --resume <claude_fresh's session>, --include-partial-messages",
        ),
        Case(
            "claude_no_partial",
            "claude-stream-json",
            "claude_code",
            "claude -p stream-json without --include-partial-messages: whole messages only",
        ),
        Case(
            "claude_sdk_turns",
            "claude-stream-json",
            "claude_code",
            "SDK mode (--input-format stream-json): initialize, a 1 s pause, two turns 1 s "
            "apart, a third message interrupted 150 ms after it was sent",
        ),
        Case(
            "claude_sdk_queued",
            "claude-stream-json",
            "claude_code",
            "SDK mode: initialize, then two messages 50 ms apart; the second waits for the "
            "first turn's result",
        ),
        Case(
            "claude_sdk_no_initialize",
            "claude-stream-json",
            "claude_code",
            "SDK mode without the initialize handshake: the first message at once, then a "
            "second turn",
        ),
        Case(
            "claude_text",
            "plain",
            "claude_code",
            "claude -p with its default text output: the plain family on a real CLI",
        ),
        Case("codex_exec_fresh", "json-event-stream", "codex", "codex exec --json; a new thread"),
        Case(
            "codex_exec_resumed",
            "json-event-stream",
            "codex",
            "codex exec --json resume <codex_exec_fresh's thread>",
        ),
        Case(
            "gemini_fresh",
            "json-event-stream",
            "gemini",
            "gemini -p --output-format stream-json -m gemini-2.5-flash; a new session",
        ),
        Case(
            "gemini_resumed",
            "json-event-stream",
            "gemini",
            "gemini -p … --resume latest (gemini_fresh's session)",
        ),
        Case(
            "claude_agent_acp_two_turns",
            "acp-json-rpc",
            "claude_code_acp",
            "claude-agent-acp: initialize, session/new, session/prompt twice in one process",
        ),
        Case(
            "claude_agent_acp_load",
            "acp-json-rpc",
            "claude_code_acp",
            "claude-agent-acp, new process: initialize, session/load (the two_turns session), "
            "session/prompt",
        ),
        Case(
            "codex_acp_two_turns",
            "acp-json-rpc",
            "codex_acp",
            "initialize, session/new, session/prompt twice in one process",
        ),
        Case(
            "codex_acp_load",
            "acp-json-rpc",
            "codex_acp",
            "new process: initialize, session/load (the two_turns session), session/prompt",
        ),
        Case(
            "gemini_acp_two_turns",
            "acp-json-rpc",
            "gemini_acp",
            "gemini --acp: initialize, session/new, session/prompt twice in one process",
        ),
        Case(
            "opencode_acp_two_turns",
            "acp-json-rpc",
            "opencode_acp",
            "opencode acp: initialize, session/new, session/prompt twice in one process",
        ),
        Case(
            "gemini_acp_load",
            "acp-json-rpc",
            "gemini_acp",
            "gemini --acp, new process: initialize, session/load (the two_turns session), "
            "session/prompt",
        ),
    )
}


DEPENDS_ON = {
    "claude_resumed": "claude_fresh",
    "codex_exec_resumed": "codex_exec_fresh",
    "gemini_resumed": "gemini_fresh",
    "claude_agent_acp_load": "claude_agent_acp_two_turns",
    "codex_acp_load": "codex_acp_two_turns",
    "gemini_acp_load": "gemini_acp_two_turns",
}
"""A resumed or loaded case continues the session its fresh case created."""


def record(provider: FakeProvider, case: Case, home: Path, ids: dict[str, str | None]) -> None:
    """Record one case, keeping the session id a later case resumes."""
    name = case.name
    if name in DEPENDS_ON and case.family == "acp-json-rpc":
        acp(provider, case, home, load_id=ids.get(case.agent), turns=1)
    elif name in DEPENDS_ON:
        one_shot(provider, case, home, ids.get(case.agent) or "latest")
    elif case.family == "acp-json-rpc":
        ids[case.agent] = acp(provider, case, home)
    elif name.startswith("claude_sdk_"):
        sdk(provider, case, home)
    elif name == "claude_text":
        one_shot(provider, case, home, text=True)
    else:
        ids[case.agent] = one_shot(provider, case, home, partial=name != "claude_no_partial")


def main(argv: list[str] | None = None) -> int:
    """Record the named cases (default: all); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "cases",
        nargs="*",
        metavar="CASE",
        help=f"cases to record (default: all): {', '.join(CASES)}",
    )
    args = parser.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    wanted = set(args.cases or CASES)
    wanted |= {DEPENDS_ON[w] for w in wanted if w in DEPENDS_ON}
    shutil.rmtree(SCRATCH, ignore_errors=True)
    ids: dict[str, str | None] = {}
    failed = []
    with FakeProvider(first_token_delay_ms=FIRST_TOKEN_DELAY_MS) as provider:
        for case in CASES.values():
            if case.name not in wanted:
                continue
            try:
                record(provider, case, SCRATCH / case.agent / "home", ids)
            except (OSError, RuntimeError, TimeoutError, KeyError) as exc:
                print(f"FAILED {case.name}: {exc!r}", file=sys.stderr, flush=True)
                failed.append(case.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
