"""The probe itself killed: the agent does not outlive it, and the run is recorded.

`ttft-probe run` is two processes (ttft_probe._lead): the lead, whose pid the caller has,
and the worker that loads the probe. SIGKILL of the lead is what a supervisor, a timeout
or the OOM killer does; the worker then ends the agent and records what it saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CHILDREN, PROBE, assert_valid, stored
from helpers.stand_in import claude_init
from test_spawn import _acp_requests, _prompt, _read_until_id

GONE_WITHIN_S = 5.0 + 2.0  # SIGTERM's grace, and slack for a loaded machine


def _agent(pidfile: Path, *lines: dict[str, object], ignore_term: bool = False) -> list[str]:
    """A child that writes its pid to ``pidfile``, prints ``lines``, then waits 60 s."""
    code = (
        "import json, os, signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        + "".join(f"sys.stdout.write(json.dumps({obj!r}) + '\\n'); sys.stdout.flush()\n"
                  for obj in lines)
        + "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in {"Z", "X"}  # a zombie nobody reaped yet has ended


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _kill_lead_when(pidfile: Path, argv: list[str], settle_s: float) -> tuple[int, float]:
    """Start `ttft-probe run -- argv`, SIGKILL it ``settle_s`` after the agent started.

    Returns the agent's pid and how long after the kill it was gone.
    """
    lead = subprocess.Popen([*PROBE, "run", "--quiet", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    assert _wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20)
    agent = int(pidfile.read_text())
    time.sleep(settle_s)
    lead.send_signal(signal.SIGKILL)
    lead.wait(5)
    t_kill = time.monotonic()
    assert _wait_for(lambda: _gone(agent), GONE_WITHIN_S), "the agent outlived the probe"
    return agent, time.monotonic() - t_kill


def _record(home: Path) -> dict[str, object]:
    assert _wait_for(lambda: len(stored(home)) == 1, 15), "the worker stored no run"
    [record] = stored(home)
    assert_valid(record)
    return record


@pytest.mark.fault("Probe", "`ttft-probe run` SIGKILLed before the agent was ready",
                   outcome="its worker ends the agent and stores the run: `failed`, "
                   "`probe_killed`", agent="ended (SIGTERM) within 5 s", records_lost="0")
def test_killed_before_ready_ends_the_agent_and_keeps_the_run(
    tmp_path: Path, probe_home: Path
) -> None:
    pidfile = tmp_path / "agent.pid"
    argv = ["--family", "plain", "--", *_agent(pidfile)]
    _kill_lead_when(pidfile, argv, settle_s=0.5)
    record = _record(probe_home)
    assert record["status"] == "failed"
    assert record["timing_unavailable_reason"] == "probe_killed"
    assert record["cli_ready_ms"] is None
    assert record["exit_code"] is None  # not the worker's child: its code is unknown


@pytest.mark.fault("Probe", "`ttft-probe run` SIGKILLed mid-turn (after the init line)",
                   outcome="run `failed`, `probe_killed`, with the markers seen before",
                   agent="ended (SIGTERM) within 5 s", records_lost="0")
def test_killed_mid_turn_keeps_the_markers_seen(tmp_path: Path, probe_home: Path) -> None:
    pidfile = tmp_path / "agent.pid"
    argv = ["--family", "claude-stream-json", "--agent", "claude_code", "--",
            *_agent(pidfile, claude_init("s-k"))]  # fmt: skip
    _kill_lead_when(pidfile, argv, settle_s=1.0)
    record = _record(probe_home)
    assert record["status"] == "failed"
    assert record["timing_unavailable_reason"] == "probe_killed"
    assert record["session_id"] == "s-k"
    assert record["cli_ready_ms"] is not None
    assert record["spawn_to_first_token_ms"] is None


@pytest.mark.fault("Probe", "`ttft-probe run` SIGKILLed; the agent ignores SIGTERM",
                   outcome="run `failed`, `probe_killed`",
                   agent="SIGKILLed after the 5 s grace", records_lost="0")
def test_an_agent_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, probe_home: Path
) -> None:
    pidfile = tmp_path / "agent.pid"
    argv = ["--family", "plain", "--", *_agent(pidfile, {"ready": 1}, ignore_term=True)]
    _, took = _kill_lead_when(pidfile, argv, settle_s=0.5)
    assert took >= 4.5  # it got the grace first
    record = _record(probe_home)
    assert record["status"] == "failed"
    assert record["timing_unavailable_reason"] == "probe_killed"


def test_a_run_that_ends_normally_is_not_probe_killed(probe_home: Path) -> None:
    child = [sys.executable, "-c", "print('hello')"]
    out = subprocess.run([*PROBE, "run", "--quiet", "--family", "plain", "--", *child],
                         capture_output=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0
    [record] = stored(probe_home)
    assert record["status"] == "succeeded"
    assert record["timing_unavailable_reason"] == "session_init_not_observable"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.fault("Probe", "`ttft-probe run` SIGKILLed between two ACP turns (the agent "
                   "does not exit when its stdin closes)",
                   outcome="the finished turn stored once; no other run",
                   agent="ended (SIGTERM) within 5 s", records_lost="0")
def test_killed_between_acp_turns_ends_the_agent(probe_home: Path) -> None:
    acp = [sys.executable, str(CHILDREN / "fake_acp.py")]
    lead = subprocess.Popen([*PROBE, "run", "--quiet", "--family", "acp-json-rpc", "--agent",
                             "fake_acp", "--", *acp], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert lead.stdin is not None
    assert lead.stdout is not None
    for request in (*_acp_requests(), _prompt(2, "sess-1")):
        lead.stdin.write(request)
    lead.stdin.flush()
    _read_until_id(lead.stdout, 2)
    assert _wait_for(lambda: len(stored(probe_home)) == 1, 15)  # turn 1 is stored
    [agent] = [c for c in _children(lead.pid)  # not the worker, whose argv names it too
               if Path(f"/proc/{c}/cmdline").read_text().split("\0")[1].endswith("fake_acp.py")]
    lead.send_signal(signal.SIGKILL)
    lead.wait(5)
    assert _wait_for(lambda: _gone(agent), GONE_WITHIN_S), "the agent outlived the probe"
    lead.stdin.close()
    lead.stdout.close()
    time.sleep(0.5)  # the worker finishes
    [record] = stored(probe_home)
    assert record["status"] == "succeeded"
    assert record["turn_ordinal"] == 1


_LIBRARY_RUN = """
import sys
from ttft_probe import Probe
Probe(family="plain", store=False, end_with_probe=sys.argv[1] == "1").run(sys.argv[2:])
"""


@pytest.mark.fault("Probe", "a process running `Probe.run` SIGKILLed",
                   outcome="the agent gets SIGTERM from the kernel (PR_SET_PDEATHSIG); with "
                   "`end_with_probe=False` it runs on", agent="ended (SIGTERM) at once",
                   records_lost="the process's own (nothing outlives it to store them)")
@pytest.mark.parametrize("end", [True, False])
def test_the_library_run_ends_the_agent_with_the_probe(tmp_path: Path, end: bool) -> None:
    pidfile = tmp_path / "agent.pid"
    host = subprocess.Popen([sys.executable, "-c", _LIBRARY_RUN, "1" if end else "0",
                             *_agent(pidfile)], stdout=subprocess.DEVNULL)  # fmt: skip
    assert _wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20)
    agent = int(pidfile.read_text())
    host.send_signal(signal.SIGKILL)
    host.wait(5)
    try:
        assert _wait_for(lambda: _gone(agent), 3.0) is end
    finally:
        if not _gone(agent):
            os.kill(agent, signal.SIGKILL)


@pytest.mark.fault("Probe", "SIGTERM to the probe's whole process group (`timeout`, a service "
                   "manager)", outcome="the run is stored as `cancelled`: the worker outlives "
                   "the signal", agent="gets SIGTERM, as without the probe", records_lost="0")
def test_sigterm_to_the_process_group_keeps_the_run(tmp_path: Path, probe_home: Path) -> None:
    pidfile = tmp_path / "agent.pid"
    lead = subprocess.Popen([*PROBE, "run", "--quiet", "--family", "plain", "--",
                             *_agent(pidfile, {"ready": 1})], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    assert _wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20)
    time.sleep(0.5)
    os.killpg(lead.pid, signal.SIGTERM)
    assert lead.wait(15) == 128 + signal.SIGTERM
    record = _record(probe_home)
    assert record["status"] == "cancelled"
