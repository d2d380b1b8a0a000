"""The probe itself killed: the agent does not outlive it, and the run is recorded.

`ttft-probe run` is two processes (ttft_probe._lead): the lead, whose pid the caller has,
and the worker that loads the probe. SIGKILL of the lead is what a supervisor, a timeout
or the OOM killer does; the worker then ends the agent and records what it saw.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROBE, assert_valid, stored
from helpers.stand_in import claude_init

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
