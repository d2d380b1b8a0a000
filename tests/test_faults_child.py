"""Child faults under `ttft-probe run` (issue 7): the agent sees what it would see without us.

Every test runs the same stand-in child twice, once directly and once under the probe,
and compares what the caller gets: stdout and stderr bytes and the exit status as a
shell reports it (128+N for signal N). Children are the scripted stand-ins in
tests/children; every subprocess call is bounded by a timeout.

"As without the probe" for a reader that goes away (`ttft-probe run -- agent | head
-c 10`): the agent meets a broken pipe on a write after the reader left, exactly as it
would have — killed by SIGPIPE (status 141) if it keeps the default action, EPIPE if it
ignores it — and an agent that writes nothing more is not disturbed. The only
difference is *when*: the probe notices the closed reader on its next forward, so the
agent's writes that are still in flight to the probe (at most one pipe buffer) succeed
first.
"""

from __future__ import annotations

import contextlib
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
from ttft_probe import Probe

INIT = claude_init("s-1")
TIMEOUT = 30


def status_of(returncode: int) -> int:
    """The exit status as a shell reports it: 128+N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def direct(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False, **kw)


def probed(argv: list[str], *opts: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PROBE, "run", "--quiet", *opts, "--", *argv], capture_output=True,
                          timeout=TIMEOUT, check=False, **kw)


def assert_same(
    without: subprocess.CompletedProcess[bytes], under: subprocess.CompletedProcess[bytes]
) -> None:
    """Same stdout, stderr and shell exit status with and without the probe."""
    assert under.stdout == without.stdout
    assert under.stderr == without.stderr
    assert under.returncode == status_of(without.returncode)


# --- exit before the first line ----------------------------------------------------------


@pytest.mark.fault("Child", "exits before its first line",
                   outcome="output & exit code identical; record `failed`, "
                   "`process_exited_before_ready`")
@pytest.mark.parametrize("family", ["claude-stream-json", "json-event-stream", "acp-json-rpc",
                                    "plain"])
def test_exit_before_the_first_line_in_every_family(
    family: str, tmp_path: Path, probe_home: Path
) -> None:
    argv = script(tmp_path, [{"err": "error: unknown option --bogus\n"}, {"exit": 2}])
    assert_same(direct(argv, stdin=subprocess.DEVNULL),
                probed(argv, "--family", family, stdin=subprocess.DEVNULL))
    [record] = stored(probe_home)
    assert_valid(record)
    assert (record["status"], record["exit_code"]) == ("failed", 2)
    assert record["timing_unavailable_reason"] == "process_exited_before_ready"
    assert record["spawn_to_first_token_ms"] is None


# --- SIGKILL mid-stream --------------------------------------------------------------------


@pytest.mark.fault("Child", "SIGKILL mid-stream (256 KiB written)",
                   outcome="every byte written before the kill forwarded; exit 137; "
                   "record `failed`, signal 9, first token kept")
def test_sigkill_after_a_large_write_forwards_every_byte(tmp_path: Path, probe_home: Path) -> None:
    argv = script(tmp_path, [line(INIT), line(DELTA), {"bytes": 256 * 1024},
                             {"kill": int(signal.SIGKILL)}])
    without = direct(argv)
    under = probed(argv, "--family", "claude-stream-json")
    assert without.returncode == -signal.SIGKILL
    assert_same(without, under)
    [record] = stored(probe_home)
    assert_valid(record)
    assert (record["status"], record["signal"], record["exit_code"]) == ("failed", 9, None)
    assert record["spawn_to_first_token_ms"] is not None


def _child_pid(probe_pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{probe_pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.01)
    raise AssertionError("the probe started no child")


@pytest.mark.fault("Child", "SIGKILL from outside while streaming",
                   outcome="output an unbroken prefix of what the child wrote; exit 137 "
                   "at once; record signal 9")
def test_sigkill_from_outside_while_streaming(tmp_path: Path, probe_home: Path) -> None:
    argv = script(tmp_path, [line(INIT), {"count_lines": 10_000_000}])
    proc = subprocess.Popen([*PROBE, "run", "--quiet", "--family", "claude-stream-json", "--",
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        head = b""
        while len(head) < 100_000:  # unbuffered: communicate() reads the fd itself
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk
            head += chunk
        os.kill(_child_pid(proc.pid, time.monotonic() + 10), signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=TIMEOUT)
        assert time.monotonic() - killed < 5
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 128 + signal.SIGKILL
    assert err == b""
    text = (head + out).decode()
    first, *rest = text.split("\n")
    assert json.loads(first) == INIT
    complete, partial = rest[:-1], rest[-1]
    assert complete == [f"line {i}" for i in range(len(complete))]
    assert f"line {len(complete)}".startswith(partial)
    [record] = stored(probe_home)
    assert (record["status"], record["signal"]) == ("failed", 9)


# --- a hang: --timeout ----------------------------------------------------------------------


@pytest.mark.fault("Child", "hang (--timeout 0.5)",
                   outcome="SIGTERM at the timeout (SIGKILL 5 s later if ignored); exit "
                   "143/137; record `timed_out`")
@pytest.mark.parametrize(
    ("case", "steps", "status"),
    [
        ("before its first line", [{"sleep_ms": 30_000}], 128 + signal.SIGTERM),
        ("after its first token", [line(INIT), line(DELTA), {"sleep_ms": 30_000}],
         128 + signal.SIGTERM),
        ("ignoring SIGTERM", [{"ignore": int(signal.SIGTERM)}, line(INIT), {"sleep_ms": 30_000}],
         128 + signal.SIGKILL),
        ("with a grandchild holding stdout", [line(INIT), {"spawn_holder": 30},
                                              {"sleep_ms": 30_000}], 128 + signal.SIGTERM),
    ],
)
def test_hang_is_ended_by_the_timeout(
    case: str, steps: list[dict[str, Any]], status: int, tmp_path: Path, probe_home: Path
) -> None:
    argv = script(tmp_path, steps)
    started = time.monotonic()
    under = probed(argv, "--family", "claude-stream-json", "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert under.returncode == status, case
    assert elapsed < (8 if status == 128 + signal.SIGKILL else 3), elapsed
    assert under.stderr == b""
    assert under.stdout == b"".join(s["out"].encode() for s in steps if "out" in s)
    [record] = stored(probe_home)
    assert_valid(record)
    assert record["status"] == "timed_out"
    assert record["signal"] == status - 128


# --- stdout closed early --------------------------------------------------------------------


@pytest.mark.fault("Child", "closes its stdout, keeps running",
                   outcome="bytes & exit code identical; the run lasts until the exit, "
                   "not the EOF")
def test_stdout_closed_early_while_the_child_keeps_running(
    tmp_path: Path, probe_home: Path
) -> None:
    argv = script(tmp_path, [line(INIT), line(DELTA), {"close_stdout": True}, {"sleep_ms": 400},
                             {"err": "still working\n"}, {"exit": 4}])
    assert_same(direct(argv), probed(argv, "--family", "claude-stream-json"))
    [record] = stored(probe_home)
    assert_valid(record)
    assert (record["exit_code"], record["status"]) == (4, "failed")
    assert record["spawn_to_first_token_ms"] is not None
    assert record["total_duration_ms"] >= 400


@pytest.mark.fault("Child", "closes its stdout, keeps running",
                   outcome="bytes & exit code identical; the run lasts until the exit, "
                   "not the EOF")
def test_stdout_closed_early_library_reader_sees_eof_then_exit(tmp_path: Path,
                                                              probe_home: Path) -> None:
    argv = script(tmp_path, [line(INIT), {"close_stdout": True}, {"sleep_ms": 400}, {"exit": 0}])
    with Probe(family="claude-stream-json", telemetry=False) as probe:
        proc = probe.popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.read() == (json.dumps(INIT) + "\n").encode()
        assert proc.poll() is None  # EOF came while the child still runs
        assert proc.wait(TIMEOUT) == 0
        proc.stdout.close()
        assert probe.wait(10)
    [record] = probe.records
    assert [r["run_id"] for r in stored(probe_home)] == [record.run_id]
    assert record.total_duration_ms is not None
    assert record.total_duration_ms >= 400


# --- stdin ----------------------------------------------------------------------------------

SH_STDIO = (
    'read x; r=$?; echo "read=$r" >&2; echo out; o=$?; echo err >&2; e=$?; '
    'echo "out=$o err=$e" >&2; exit $((r * 100 + o * 10 + e))'
)
CLOSE = {0: "<&-", 1: ">&-", 2: "2>&-"}


@pytest.mark.fault("Child", "the probe started with stdin, stdout or stderr closed",
                   outcome="the fd is closed for the child too: same errors and exit code; "
                   "no hang")
@pytest.mark.parametrize(("fd", "family"), [(0, "plain"), (0, "acp-json-rpc"), (1, "plain"),
                                            (2, "plain")])
def test_regression_a_closed_std_fd_of_the_probe_is_closed_for_the_child_too(
    fd: int, family: str, probe_home: Path
) -> None:
    # Before: with fd 0 closed a request-driven agent's stdin never reached EOF (the probe
    # copied one of its own pipes into it: a hang), and with fd 1 or 2 closed the child
    # wrote into the probe's pipe and succeeded where it would have failed with EBADF.
    def closing(argv: list[str]) -> list[str]:
        return ["sh", "-c", f'exec "$@" {CLOSE[fd]}', "sh", *argv]

    child = ["sh", "-c", SH_STDIO]
    without = direct(closing(child))
    under = direct(closing([*PROBE, "run", "--quiet", "--family", family, "--", *child]))
    assert without.returncode != 0  # the closed fd really failed something
    assert_same(without, under)
    [record] = stored(probe_home)
    assert record["exit_code"] == without.returncode


@pytest.mark.fault("Child", "stdin at EOF (caller closed it)",
                   outcome="EOF reaches the agent; it exits as it would; no hang")
@pytest.mark.parametrize("family", ["acp-json-rpc", "plain"])
def test_caller_closing_stdin_reaches_the_agent(family: str, probe_home: Path) -> None:
    argv = [sys.executable, str(CHILDREN / "fake_acp.py")]
    env = {**os.environ, "EXIT_ON_EOF": "1"}
    request = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                          "params": {"protocolVersion": 1}}).encode() + b"\n"
    without = direct(argv, input=request, env=env)
    under = probed(argv, "--family", family, input=request, env=env)
    assert without.returncode == 0
    assert b'"id": 0' in without.stdout
    assert_same(without, under)
    # A plain agent's run is recorded; an ACP agent that got no prompt ran no turn.
    assert len(stored(probe_home)) == (family == "plain")


@pytest.mark.fault("Child", "closes its stdin while the client writes (library)",
                   outcome="the client's write fails with EPIPE, as without the probe")
def test_child_closing_stdin_breaks_the_clients_pipe(tmp_path: Path, probe_home: Path) -> None:
    child = [sys.executable, "-c", ("import os, sys, time; sys.stdin.readline(); os.close(0); "
                                    "print('closed', flush=True); time.sleep(5)")]
    with Probe(family="acp-json-rpc", telemetry=False) as probe:
        proc = probe.popen(child, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write(b"{}\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"closed\n"
            deadline = time.monotonic() + 5
            with pytest.raises(BrokenPipeError):  # noqa: PT012 - the write that breaks
                while time.monotonic() < deadline:
                    proc.stdin.write(b"x" * 4096)
                    proc.stdin.flush()
                    time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait(TIMEOUT)
            proc.stdout.close()
            with contextlib.suppress(BrokenPipeError):  # what the failed write left buffered
                proc.stdin.close()
    assert probe.wait(10)
    [record] = probe.records
    assert record.signal == signal.SIGKILL
    assert [r["run_id"] for r in stored(probe_home)] == [record.run_id]


# --- signals to the probe -------------------------------------------------------------------


@pytest.mark.fault("Child", "SIGINT/SIGTERM/SIGHUP to the probe, child keeps the default",
                   outcome="forwarded; the child dies of it; probe exits 128+N; record "
                   "`cancelled`")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_the_probe_ends_the_child_and_the_probe_exits_alike(
    sig: signal.Signals, probe_home: Path
) -> None:
    child = [sys.executable, "-c", (f"import signal, time; signal.signal({int(sig)}, "
                                    "signal.SIG_DFL); print('ready', flush=True); time.sleep(30)")]
    proc = subprocess.Popen([*PROBE, "run", "--quiet", "--", *child], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert (out, err) == (b"", b"")
    assert proc.returncode == 128 + sig
    [record] = stored(probe_home)
    assert (record["status"], record["signal"]) == ("cancelled", int(sig))


# --- the probe's own reader goes away (`ttft-probe run -- agent | head -c 10`) --------------

WRITER = ("import os, signal, sys\n"
          "if sys.argv[1] == 'default': signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
          "os.write(1, b'0123456789')  # one write: the reader takes all of it\n"
          "if sys.argv[1] == 'silent':\n"
          "    import time; time.sleep(0.3); sys.exit(0)\n"
          "while True:\n"
          "    sys.stdout.write('y' * 4095 + '\\n'); sys.stdout.flush()\n")


def _read_ten_then_close(argv: list[str]) -> tuple[int, bytes, float]:
    """Read 10 bytes of ``argv``'s stdout, close the pipe; (status, stderr, seconds to exit)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert os.read(proc.stdout.fileno(), 10) == b"0123456789"
        proc.stdout.close()
        closed = time.monotonic()
        _, err = proc.communicate(timeout=TIMEOUT)
        return status_of(proc.returncode), err, time.monotonic() - closed
    finally:
        proc.kill()
        proc.wait(TIMEOUT)


@pytest.mark.fault("Child", "the probe's own stdout reader goes away (like `head -c 10`)",
                   outcome="child gets SIGPIPE/EPIPE as without the probe; same status "
                   "(141 / 1 / 0); no hang")
@pytest.mark.parametrize("sigpipe", ["default", "ignored", "silent"])
def test_reader_of_the_probe_going_away_breaks_the_childs_pipe_as_without(
    sigpipe: str, probe_home: Path
) -> None:
    child = [sys.executable, "-c", WRITER, sigpipe]
    status, err, _ = _read_ten_then_close(child)
    under_status, under_err, seconds = _read_ten_then_close(
        [*PROBE, "run", "--quiet", "--", *child])
    assert under_status == status == {"default": 141, "ignored": 1, "silent": 0}[sigpipe]
    assert under_err == err
    assert err.endswith(b"BrokenPipeError: [Errno 32] Broken pipe\n") == (sigpipe == "ignored")
    assert seconds < 5
    [record] = stored(probe_home)
    if sigpipe == "default":
        assert (record["status"], record["signal"]) == ("failed", signal.SIGPIPE)
