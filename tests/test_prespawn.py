"""Spawn first: what `ttft-probe run` does before the agent starts, and the hand-over after.

The pre-spawn path (ttft_probe._prespawn) must load nothing heavy, accept only command lines
the full parser reads the same way, and lose no timestamp while the probe loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import PROBE, script, stored
from helpers.stand_in import DELTA, claude_init, line
from ttft_probe import Probe, _prespawn, agents
from ttft_probe.adapters._base import AdapterOptions, adapter_for
from ttft_probe.cli import run as run_command

HEAVY = ("click", "rich", "attr", "attrs", "ttft_probe.adapters", "typing", "enum", "subprocess")
"""Modules the pre-spawn path must not load (the issue's list, and what makes them slow)."""

_MODULES_AT_SPAWN = """
import sys
from ttft_probe._prespawn import start
spawned = start(sys.argv[1:])  # returns in the worker, forked right after the spawn
found = {"spawned": spawned is not None, "modules": sorted(sys.modules)}
import json
sys.stderr.write(json.dumps(found) + "\\n")
if spawned is not None:
    spawned.child.wait()
    spawned.release()
"""


def _modules_at_spawn(args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    """The modules loaded when the agent was spawned, as the worker process has them."""
    out = subprocess.run(
        [sys.executable, "-c", _MODULES_AT_SPAWN, *args],
        capture_output=True, timeout=30, check=True, env=env,
    )  # fmt: skip
    found: dict[str, object] = json.loads(out.stderr.splitlines()[-1])
    return found


@pytest.mark.parametrize(
    "options",
    [
        ["--quiet", "--family", "plain"],
        ["--agent", "claude_code", "--observe-provider", "--timeout", "30"],
        ["--turn=2", "--resumed", "--capture-content"],
    ],
)
def test_nothing_heavy_is_loaded_before_the_spawn(probe_home: Path, options: list[str]) -> None:
    found = _modules_at_spawn([*options, "--", sys.executable, "-c", "pass"])
    assert found["spawned"] is True
    modules = found["modules"]
    assert isinstance(modules, list)
    loaded = [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert loaded == []


def test_an_otel_sdk_setting_takes_the_full_path(probe_home: Path) -> None:
    env = {**os.environ, "OTEL_TRACES_SAMPLER": "always_off"}
    found = _modules_at_spawn(["--", sys.executable, "-c", "pass"], env)
    assert found["spawned"] is False


ACCEPTED = [
    ["--", "claude", "-p", "hi"],
    ["-q", "--agent", "codex", "--", "codex", "exec", "--json", "hi"],
    ["--agent=gemini", "--family=plain", "--", "gemini", "hi"],
    ["--turn", "3", "--fresh", "--conversation", "c-1", "--", "x"],
    ["--timeout", "2.5", "--delivery-wait", "0", "--store", "runs.db", "--", "x", "--help"],
    ["--observe-provider", "--upstream", "http://127.0.0.1:9/v1", "--", "claude", "-p", "x"],
    ["--capture-content", "--resumed", "--timeout=1e3", "--", "x", "--", "y"],
]
REJECTED = [
    ["claude", "-p", "hi"],  # no `--`: the full parser decides
    ["--"],
    ["--help", "--", "x"],
    ["-h", "--", "x"],
    ["--turn", "0", "--", "x"],
    ["--turn", "-1", "--", "x"],
    ["--timeout", "0", "--", "x"],
    ["--timeout", "nan", "--", "x"],
    ["--timeout", "soon", "--", "x"],
    ["--delivery-wait", "-1", "--", "x"],
    ["--family", "not-a-family", "--", "x"],
    ["--store", ".", "--", "x"],  # a directory: click.Path(dir_okay=False) rejects it
    ["--agent", "--", "x"],
    ["--ready-regex", "ready", "--", "x"],  # regexes are the full parser's
    ["--quiet=yes", "--", "x"],
    ["-qq", "--", "x"],
    ["--unknown", "--", "x"],
]


@pytest.mark.parametrize("args", ACCEPTED)
def test_what_the_pre_spawn_parser_accepts_click_reads_the_same(args: list[str]) -> None:
    opts = _prespawn.parse_run(args)
    assert opts is not None
    ctx = run_command.make_context("run", list(args))
    params = ctx.params
    assert list(params["command"]) == opts["command"]
    for key, value in opts.items():
        if key != "command":
            assert params[key] == value, key
    flags = {"observe_provider", "capture_content", "quiet"}
    for key in flags - opts.keys():
        assert params[key] is False
    for key in {"agent", "family", "conversation_id", "turn_ordinal", "timeout", "store",
                "upstream", "session_resumed"} - opts.keys():  # fmt: skip
        assert params[key] is None, key


@pytest.mark.parametrize("args", REJECTED)
def test_anything_else_is_left_to_the_full_parser(args: list[str]) -> None:
    assert _prespawn.parse_run(args) is None


@pytest.mark.parametrize(
    "bad", [["--turn", "0"], ["--timeout", "0"], ["--store", "."], ["--family", "nope"]]
)
def test_a_bad_option_fails_before_anything_is_spawned(
    tmp_path: Path, probe_home: Path, bad: list[str]
) -> None:
    marker = tmp_path / "ran"
    child = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    out = subprocess.run([*PROBE, "run", *bad, "--", *child], capture_output=True, timeout=60,
                         check=False, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert b"Error: Invalid value" in out.stderr or b"error:" in out.stderr
    time.sleep(0.3)
    assert not marker.exists()


def test_stdin_rule_matches_every_adapter() -> None:
    lines = [
        ["claude", "-p", "hi", "--output-format", "stream-json"],
        ["claude", "--input-format", "stream-json", "--output-format", "stream-json"],
        ["claude", "--input-format=stream-json", "--output-format=stream-json"],
        ["codex", "exec", "--json", "hi"],
        ["codex", "app-server"],
        ["gemini", "--acp"],
        ["gemini", "-p", "hi", "-o", "stream-json"],
        ["opencode", "acp"],
        ["claude-agent-acp"],
        ["cursor-agent", "-p", "x"],
        ["some-cli", "hi"],
    ]
    for argv in lines:
        family = agents.resolve_agent(argv).family
        adapter = adapter_for(family, AdapterOptions(argv=argv))
        assert agents.tees_stdin(family, argv) is adapter.tees_stdin, argv
    assert agents.tees_stdin("someone-elses-family", ["x"]) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://api.anthropic.com",
        "https://api.openai.com/v1",
        "http://127.0.0.1:8080/v1/",
        "http://localhost:1/a/b",
        "https://generativelanguage.googleapis.com",
    ],
)
def test_simple_upstream_urls_have_the_path_urlsplit_reads(url: str) -> None:
    assert _prespawn.simple_url_path(url) == urlsplit(url).path


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "https://user:pw@host/v1",
        "https://[::1]:8080/v1",
        "https://host/v1?x=1",
        "https://host/v1#f",
        "https://host:0/",
        "https://host:99999/",
        "https://host:ab/",
        "https:///v1",
        "https://host /v1",
    ],
)
def test_other_upstream_urls_are_left_to_the_observer(url: str) -> None:
    assert _prespawn.simple_url_path(url) is None


def test_reads_made_before_the_tracker_keep_their_times(tmp_path: Path, probe_home: Path) -> None:
    """A child that answers at once, a probe that takes 300 ms to load: the markers are the
    times the bytes were read, not the time the tracker caught up."""
    argv = script(tmp_path, [line(claude_init("s-9")), line(DELTA), {"sleep_ms": 500}])
    argv += ["--output-format", "stream-json"]  # the family from the command line
    spawned = _prespawn.spawn(argv, dict(os.environ), tees_stdin=False)
    time.sleep(0.3)  # the probe loading
    t_catch_up = time.monotonic_ns()
    with Probe(family="claude-stream-json", store=False, telemetry=False) as probe:
        outcome = probe.run(argv, spawned=spawned)
    assert outcome.exit_status == 0
    (result,) = outcome.results
    times = result.times
    assert times.first_token_ns is not None
    assert spawned.spawn_ns < times.first_token_ns < t_catch_up - 200_000_000
    assert result.record.spawn_to_first_token_ms is not None
    assert result.record.spawn_to_first_token_ms < 250


def test_cli_run_records_the_same_markers_as_the_library(tmp_path: Path, probe_home: Path) -> None:
    argv = script(tmp_path, [{"sleep_ms": 50}, line(claude_init("s-7")), {"sleep_ms": 100},
                             line(DELTA), {"exit": 0}])  # fmt: skip
    out = subprocess.run([*PROBE, "run", "--quiet", "--family", "claude-stream-json", "--",
                          *argv], capture_output=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (record,) = stored(probe_home)
    assert record["status"] == "succeeded"
    assert 140 <= record["spawn_to_first_token_ms"] < 400
    assert record["cli_ready_ms"] is not None
    assert record["cli_ready_ms"] >= 45


def test_the_observer_serves_the_socket_bound_before_the_spawn(probe_home: Path) -> None:
    from ttft_probe.observer import ProviderObserver

    resolved = agents.resolve_agent(["claude", "-p", "x"])
    bound = _prespawn._bind_observer(resolved, {}, "http://127.0.0.1:9/v1")
    assert bound is not None
    assert bound.url.endswith("/v1")
    observer = ProviderObserver(bound.upstream, lambda _e: None)
    try:
        assert observer.start(sock=bound.sock) == bound.url
        assert observer.started_late is False
    finally:
        observer.stop()


def test_an_agent_that_connected_before_the_observer_served_is_flagged() -> None:
    import socket

    from ttft_probe.observer import ProviderObserver

    resolved = agents.resolve_agent(["claude", "-p", "x"])
    bound = _prespawn._bind_observer(resolved, {}, "http://127.0.0.1:9")
    assert bound is not None
    port = int(bound.url.rsplit(":", 1)[1])
    early = socket.create_connection(("127.0.0.1", port))
    observer = ProviderObserver(bound.upstream, lambda _e: None)
    try:
        observer.start(sock=bound.sock)
        assert observer.started_late is True
    finally:
        early.close()
        observer.stop()


def test_an_agent_the_cli_gave_up_on_is_ended(tmp_path: Path, probe_home: Path) -> None:
    """The safety net in the console script: a spawned agent nobody took over is killed."""
    code = (
        "import sys, time\n"
        "from ttft_probe import _prespawn\n"
        "s = _prespawn.start(['--', sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "sys.stderr.write(f'{s.child.pid}\\n')\n"
        "s.abandon()\n"  # in the worker: the agent is the lead's child
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20,
                         check=False)  # fmt: skip
    assert time.monotonic() - t0 < 10
    assert out.returncode == 128 + 9  # the lead: the agent's status
    pid = int(out.stderr.split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
