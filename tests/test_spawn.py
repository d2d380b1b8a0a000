"""The wrapper around the spawn: pass-through, exit codes, signals, and subprocess hazards.

Children are the scripted stand-ins in tests/children; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import CHILDREN, PROBE, assert_valid, script, stored
from helpers.stand_in import DELTA, claude_init, line
from reliability import fault_case
from ttft_probe import Probe
from ttft_probe.record import RunRecord
from ttft_probe.sinks.store import Store

INIT = claude_init("s-1")
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "session_id": "s-1",
    "usage": {"input_tokens": 3, "output_tokens": 5},
}


def claude_like(tmp_path: Path, *, exit_code: int = 0, token_delay_ms: int = 120) -> list[str]:
    return script(
        tmp_path,
        [
            {"sleep_ms": 30},
            {"err": "warming up\n"},
            line(INIT),
            {"sleep_ms": token_delay_ms},
            line(DELTA),
            {"sleep_ms": 10},
            line(RESULT),
            {"exit": exit_code},
        ],
    )


def run_cli(args: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PROBE, *args], capture_output=True, timeout=60, check=False, **kw)


@pytest.mark.fault("Child", "non-zero exit (3), output on stdout and stderr",
                   outcome="bytes & exit code identical; record `failed`")
def test_cli_output_and_exit_code_identical_with_and_without_probe(
    tmp_path: Path, probe_home: Path
) -> None:
    argv = claude_like(tmp_path, exit_code=3)
    direct = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    probed = run_cli(["run", "--quiet", "--family", "claude-stream-json", "--", *argv])
    assert probed.returncode == direct.returncode == 3
    assert probed.stdout == direct.stdout
    assert probed.stderr == direct.stderr
    [record] = stored(probe_home)
    assert_valid(record)
    assert record["exit_code"] == 3
    assert record["status"] == "failed"


def test_cli_prints_breakdown_and_stores_a_valid_record(tmp_path: Path, probe_home: Path) -> None:
    probed = run_cli(
        [
            "run",
            "--family",
            "claude-stream-json",
            "--agent",
            "claude_code",
            "--",
            *claude_like(tmp_path, token_delay_ms=150),
        ]
    )
    assert probed.returncode == 0
    breakdown, hint = probed.stderr.decode().strip().splitlines()[-2:]
    assert breakdown.startswith("ttft-probe: claude_code turn 1 fresh: first token ")
    assert "[delta] | succeeded" in breakdown
    # Without the observer the session set-up hides in cli_ready_ms: say so, and the fix.
    assert hint.startswith("ttft-probe: hint: session_init_ms is from the agent's init line")
    assert "--observe-provider" in hint
    [record] = stored(probe_home)
    assert_valid(record)
    assert record["model_first_token_ms"] >= 150
    assert record["remainder_ms"] == 0
    assert record["session_id"] == "s-1"
    assert record["conversation_id"] == "s-1"
    assert record["input_tokens"] == 3
    # `runs --last 1 --json` prints the same record.
    out = run_cli(["runs", "--last", "1", "--json"], env={**os.environ})
    assert json.loads(out.stdout) == record


@pytest.mark.fault("Child", "exits before its first line",
                   outcome="output & exit code identical; record `failed`, "
                   "`process_exited_before_ready`")
def test_child_exits_before_its_first_line(tmp_path: Path, probe_home: Path) -> None:
    probed = run_cli(
        [
            "run",
            "--quiet",
            "--family",
            "claude-stream-json",
            "--",
            *script(tmp_path, [{"err": "bad flag\n"}, {"exit": 2}]),
        ]
    )
    assert probed.returncode == 2
    assert probed.stderr == b"bad flag\n"
    [record] = stored(probe_home)
    assert_valid(record)
    assert record["timing_unavailable_reason"] == "process_exited_before_ready"
    assert record["spawn_to_first_token_ms"] is None
    assert record["cli_ready_ms"] is None
    assert record["status"] == "failed"


@pytest.mark.fault("Child", "SIGKILL mid-stream (after the init line)",
                   outcome="exit 137; record signal 9, `no_first_token`")
def test_child_killed_by_signal_exits_128_plus_n(tmp_path: Path, probe_home: Path) -> None:
    argv = script(tmp_path, [line(INIT), {"kill": signal.SIGKILL}])
    probed = run_cli(["run", "--quiet", "--family", "claude-stream-json", "--", *argv])
    assert probed.returncode == 128 + signal.SIGKILL
    [record] = stored(probe_home)
    assert_valid(record)
    assert record["signal"] == signal.SIGKILL
    assert record["exit_code"] is None
    assert record["timing_unavailable_reason"] == "no_first_token"


@pytest.mark.fault("Child", "grandchild holding stdout open (30 s)",
                   outcome="probe exits with the child (< 10 s), not the grandchild; "
                   "record kept")
def test_grandchild_holding_stdout_open(tmp_path: Path, probe_home: Path) -> None:
    argv = script(tmp_path, [line(INIT), line(DELTA), {"spawn_holder": 30}, {"exit": 0}])
    started = time.monotonic()
    probed = run_cli(["run", "--quiet", "--family", "claude-stream-json", "--", *argv])
    assert time.monotonic() - started < 10
    assert probed.returncode == 0
    [record] = stored(probe_home)
    assert record["spawn_to_first_token_ms"] is not None


@pytest.mark.fault("Child", "1 MiB on stderr, then 1 MiB on stdout",
                   outcome="no deadlock; every byte through")
def test_one_mib_unread_stdout_does_not_deadlock(tmp_path: Path, probe_home: Path) -> None:
    # 1 MiB on stderr first, then 1 MiB on stdout, with stdout going to a file nobody
    # reads until the end: a probe that drained one stream before the other would hang.
    argv = script(tmp_path, [{"err": "e" * (1 << 20)}, {"bytes": 1 << 20}, {"exit": 0}])
    out_file = tmp_path / "out.bin"
    with out_file.open("wb") as out:
        probed = subprocess.run(
            [*PROBE, "run", "--quiet", "--", *argv],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert probed.returncode == 0
    assert out_file.stat().st_size == 1 << 20
    assert len(probed.stderr) == 1 << 20
    assert len(stored(probe_home)) == 1


@pytest.mark.fault("Child", "SIGINT/SIGTERM to the probe, child handles it",
                   outcome="forwarded; probe exits with the child's own status (7); "
                   "record `cancelled`")
def test_sigterm_to_the_probe_reaches_the_child(tmp_path: Path, probe_home: Path) -> None:
    child = tmp_path / "trap.py"
    child.write_text(
        "import signal, sys, time\n"
        "def h(n, f):\n    print('child got', n, flush=True); sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, h)\nsignal.signal(signal.SIGINT, h)\n"
        "print('ready', flush=True)\ntime.sleep(30)\n",
        encoding="utf-8",
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(
            [*PROBE, "run", "--quiet", "--", sys.executable, str(child)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
        assert out == f"child got {int(sig)}\n".encode()
        assert proc.returncode == 7
        fault_case()
    records = stored(probe_home)
    assert [r["status"] for r in records] == ["cancelled", "cancelled"]


@pytest.mark.fault("Child", "hang (--timeout 0.5)",
                   outcome="SIGTERM at the timeout (SIGKILL 5 s later if ignored); exit "
                   "143/137; record `timed_out`")
def test_timeout_ends_the_child_and_records_timed_out(tmp_path: Path, probe_home: Path) -> None:
    argv = script(tmp_path, [line(INIT), {"sleep_ms": 30000}])
    started = time.monotonic()
    probed = run_cli(["run", "--quiet", "--timeout", "0.5", "--", *argv])
    assert time.monotonic() - started < 15
    assert probed.returncode == 128 + signal.SIGTERM
    [record] = stored(probe_home)
    assert record["status"] == "timed_out"


@pytest.mark.fault("Child", "executable not found",
                   outcome="CLI exits 2 naming it; library re-raises FileNotFoundError; "
                   "record `failed`")
def test_missing_executable_is_the_agents_own_error(probe_home: Path) -> None:
    probed = run_cli(["run", "--", "no-such-agent-xyz", "-p", "hi"])
    assert probed.returncode == 2
    assert b"command not found: no-such-agent-xyz" in probed.stderr
    [record] = stored(probe_home)
    assert record["status"] == "failed"
    with pytest.raises(FileNotFoundError), Probe(store=False, telemetry=False) as probe:
        probe.popen(["no-such-agent-xyz"])


def test_unknown_family_is_a_usage_error(probe_home: Path) -> None:
    probed = run_cli(["run", "--family", "nope", "--", "true"])
    assert probed.returncode == 2
    assert b"nope" in probed.stderr


# --- library: context manager and decorator, sync and asyncio -----------------------


def test_popen_context_manager_passes_bytes_through(tmp_path: Path, probe_home: Path) -> None:
    argv = claude_like(tmp_path)
    direct = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    seen: list[RunRecord] = []
    with Probe(family="claude-stream-json", on_record=seen.append) as probe:
        proc = probe.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=30)
    assert (out, err, proc.returncode) == (direct.stdout, direct.stderr, 0)
    [record] = probe.records
    assert seen == [record]
    assert_valid(record)
    assert record.status.value == "succeeded"
    assert record.spawn_to_first_token_ms is not None
    assert record.trace_id is not None


def test_popen_text_mode_and_traceparent(tmp_path: Path, probe_home: Path) -> None:
    child = [sys.executable, "-c", "import os; print(os.environ.get('TRACEPARENT', 'none'))"]
    with Probe(family="plain") as probe:
        proc = probe.popen(child, stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=30)
    [record] = probe.records
    assert out.startswith(f"00-{record.trace_id}-{record.span_id}-")


def test_decorator_sync(tmp_path: Path, probe_home: Path) -> None:
    argv = claude_like(tmp_path)
    records: list[RunRecord] = []

    @Probe(family="claude-stream-json", on_record=records.append)
    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, stdout=subprocess.PIPE)

    proc = launch()
    assert proc.stdout is not None
    lines = proc.stdout.read().splitlines()
    assert proc.wait(timeout=30) == 0
    assert [json.loads(x)["type"] for x in lines] == ["system", "stream_event", "result"]
    probe = proc.ttft_probe  # type: ignore[attr-defined]
    assert probe.wait(10)
    assert records == probe.records
    assert records[0].first_token_granularity is not None


def test_decorator_asyncio(tmp_path: Path, probe_home: Path) -> None:
    argv = claude_like(tmp_path)

    @Probe(family="claude-stream-json")
    async def launch() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)

    async def main() -> tuple[bytes, Probe]:
        proc = await launch()
        out, _ = await proc.communicate()
        probe = proc.ttft_probe  # type: ignore[attr-defined]
        async with probe:
            pass
        return out, probe

    out, probe = asyncio.run(asyncio.wait_for(main(), 30))
    assert out.count(b"\n") == 3
    [record] = probe.records
    assert_valid(record)
    assert record.model_first_token_ms is not None
    assert record.model_first_token_ms >= 100


def _acp_requests(session: str | None = None) -> list[bytes]:
    reqs: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}}
    ]
    if session is None:
        reqs.append(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "session/new",
                "params": {"cwd": "/", "mcpServers": []},
            }
        )
    else:
        reqs.append(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "session/load",
                "params": {"sessionId": session, "cwd": "/", "mcpServers": []},
            }
        )
    return [json.dumps(r).encode() + b"\n" for r in reqs]


def _prompt(rid: int, session: str) -> bytes:
    return (
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "session/prompt",
                "params": {"sessionId": session, "prompt": [{"type": "text", "text": "hi"}]},
            }
        ).encode()
        + b"\n"
    )


def _read_until_id(stream: Any, rid: int) -> None:
    while True:
        raw = stream.readline()
        assert raw, "agent closed stdout"
        if json.loads(raw).get("id") == rid:
            return


def test_acp_two_turns_sync_stdin_tee(probe_home: Path) -> None:
    env = {**os.environ, "TOKEN_DELAY_MS": "100", "EXIT_ON_EOF": "1"}
    with Probe(family="acp-json-rpc", agent="fake_acp") as probe:
        proc = probe.popen(
            [sys.executable, str(CHILDREN / "fake_acp.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None
        for req in _acp_requests():
            proc.stdin.write(req)
        proc.stdin.flush()
        _read_until_id(proc.stdout, 1)
        time.sleep(0.05)  # the client thinks before it prompts: client_wait_ms
        for rid in (2, 3):
            proc.stdin.write(_prompt(rid, "sess-1"))
            proc.stdin.flush()
            _read_until_id(proc.stdout, rid)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    first, second = probe.records
    for r in (first, second):
        assert_valid(r)
        assert (r.agent, r.runtime_family) == ("fake_acp", "acp-json-rpc")
    assert (first.turn_ordinal, second.turn_ordinal) == (1, 2)
    assert (first.process_reused, second.process_reused) == (False, True)
    assert first.client_wait_ms is not None
    assert first.client_wait_ms >= 40
    # The empty chunk ~0 ms after the prompt is not the first token.
    assert first.model_first_token_ms is not None
    assert first.model_first_token_ms >= 100
    assert second.model_first_token_ms is not None
    assert second.model_first_token_ms >= 100
    assert second.cli_ready_ms == second.session_init_ms == 0
    assert second.spawn_to_first_token_ms == second.model_first_token_ms
    assert first.remainder_ms == second.remainder_ms == 0
    assert first.session_id == second.session_id == "sess-1"


class SlowHistoryStore(Store):
    """A store whose history lookup (a resumed session's earlier runs) takes 2 s."""

    lookups = 0

    def session_history(self, session_id: str) -> tuple[int, str | None]:
        SlowHistoryStore.lookups += 1
        time.sleep(2.0)
        return super().session_history(session_id)


@pytest.mark.fault(
    "Store",
    "the store takes 2 s to look up a resumed session's history while the client prompts again",
    outcome="no forwarded byte waits: the lookup runs on the recorder thread, off the pumps",
    agent="identical",
    records_lost="0",
)
def test_a_slow_history_lookup_delays_no_forwarded_byte(tmp_path: Path) -> None:
    env = {**os.environ, "TOKEN_DELAY_MS": "20", "EXIT_ON_EOF": "1"}
    SlowHistoryStore.lookups = 0
    with Probe(family="acp-json-rpc", agent="fake_acp", store=SlowHistoryStore(tmp_path / "r.db"),
               telemetry=False) as probe:  # fmt: skip
        proc = probe.popen(
            [sys.executable, str(CHILDREN / "fake_acp.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        for req in _acp_requests(session="sess-9"):  # session/load: a resumed session
            proc.stdin.write(req)
        proc.stdin.flush()
        _read_until_id(proc.stdout, 1)
        waits = []
        for rid in (2, 3, 4):
            # Turn 1 ends with the answer to prompt 2: its identity needs the 2 s lookup.
            sent = time.monotonic()
            proc.stdin.write(_prompt(rid, "sess-9"))
            proc.stdin.flush()
            _read_until_id(proc.stdout, rid)
            waits.append(time.monotonic() - sent)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()
        assert probe.wait(30)
    # Each prompt's answer took the agent's 20 ms, not the lookup's 2 s.
    assert max(waits) < 1.0, waits
    assert SlowHistoryStore.lookups >= 1  # the slow lookup did happen
    runs = probe.records
    assert [r.turn_ordinal for r in runs] == [2, 3, 4]  # after the one replayed turn
    assert all(r.session_resumed for r in runs)


def test_flush_gives_a_running_agents_ended_turns(probe_home: Path) -> None:
    """Between two turns of a live asyncio agent, ``flush`` makes the first one's record."""
    env = {**os.environ, "TOKEN_DELAY_MS": "20", "EXIT_ON_EOF": "1"}
    seen: list[int] = []

    async def main() -> None:
        async with Probe(family="acp-json-rpc") as probe:
            proc = await probe.create_subprocess_exec(
                sys.executable, str(CHILDREN / "fake_acp.py"), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            assert proc.stdin is not None
            assert proc.stdout is not None
            for req in _acp_requests():
                proc.stdin.write(req)
            for rid in (2, 3):
                proc.stdin.write(_prompt(rid, "sess-1"))
                await proc.stdin.drain()
                while json.loads(await proc.stdout.readline()).get("id") != rid:
                    pass
                assert await asyncio.to_thread(probe.flush, 10)
                seen.append(len(probe.records))
            proc.stdin.close()
            await proc.wait()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert seen == [1, 2]  # each turn's record, while the agent still runs


def test_acp_session_load_replay_is_not_a_first_token(probe_home: Path) -> None:
    env = {**os.environ, "TOKEN_DELAY_MS": "60", "EXIT_ON_EOF": "1"}

    async def main() -> Probe:
        async with Probe(family="acp-json-rpc") as probe:
            proc = await probe.create_subprocess_exec(
                sys.executable,
                str(CHILDREN / "fake_acp.py"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            assert proc.stdin is not None
            assert proc.stdout is not None
            for req in [*_acp_requests("old-session"), _prompt(2, "old-session")]:
                proc.stdin.write(req)
            await proc.stdin.drain()
            while True:
                msg = json.loads(await proc.stdout.readline())
                if msg.get("id") == 2:
                    break
            proc.stdin.close()
            await proc.wait()
        return probe

    probe = asyncio.run(asyncio.wait_for(main(), 30))
    [record] = probe.records
    assert_valid(record)
    assert record.session_resumed
    assert record.turn_ordinal == 2  # one replayed user turn + this prompt
    assert record.model_first_token_ms is not None
    assert record.model_first_token_ms >= 60
    assert record.spawn_to_first_token_ms is not None
    assert record.spawn_to_first_token_ms > record.model_first_token_ms
