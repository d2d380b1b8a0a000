"""A runtime family from its own distribution: installed in a venv, used by name.

The plugin below is the README's example, built and installed with pip into a temporary
venv (which sees this checkout's ttft_probe and its dependencies), then used from
``ttft-probe run --family echo-lines`` and from ``Probe(family="echo-lines")``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from ttft_probe import Probe
from ttft_probe.errors import ConfigError
from ttft_probe.sinks.store import Store

FAMILY = "echo-lines"
PLUGIN = '''\
"""echo-lines: the markers of a CLI that prints `ready`, `session <id>`, then its answer."""

from ttft_probe.adapters import (
    AdapterOptions, AgentInfo, FirstTokenGranularity, FirstTokenKind, Marker,
    MarkerObserved, SessionInitSource, SessionObserved, TurnEnded, decode_name,
)


class EchoLinesAdapter:
    family = "echo-lines"
    framing = "lines"            # feed_stdout gets one line at a time, without its newline
    request_driven = False       # one run per process, from spawn to exit
    tees_stdin = False
    session_init_observable = True

    def __init__(self, options: AdapterOptions) -> None:
        self._ready = self._answered = False

    def feed_stdout(self, line: bytes, t_ns: int) -> list:
        if not self._ready and line == b"ready":
            self._ready = True
            return [MarkerObserved(Marker.CLI_READY, t_ns), AgentInfo(agent_version="1.0")]
        if line.startswith(b"session "):
            session_id = decode_name(line[8:].decode("utf-8", "replace"))
            return [
                MarkerObserved(Marker.SESSION_INIT_DONE, t_ns,
                               session_init_source=SessionInitSource.INIT_MESSAGE),
                *([SessionObserved(session_id)] if session_id else []),
            ]
        if not self._answered and line.startswith(b"answer "):
            self._answered = True
            return [MarkerObserved(Marker.FIRST_TOKEN, t_ns,
                                   granularity=FirstTokenGranularity.MESSAGE,
                                   kind=FirstTokenKind.TEXT)]
        if line == b"done":
            return [TurnEnded(t_ns)]
        return []

    def feed_stdin(self, line: bytes, t_ns: int) -> list:
        return []

    def close(self, t_ns: int) -> list:
        return []

    def model_request(self, t_ns: int) -> list:
        return []
'''
DIST = "ttft_probe_echo_lines-0.1.0"
ENTRY_POINTS = """\
[ttft_probe.adapters]
echo-lines = ttft_probe_echo_lines:EchoLinesAdapter
"""
ECHO_CLI = """\
import sys, time
time.sleep(0.1)
print("ready", flush=True)
time.sleep(0.05)
print("session s-42", flush=True)
time.sleep(0.2)
print("answer hello", flush=True)
print("done", flush=True)
"""


def build_wheel(out: Path) -> Path:
    """The plugin as a wheel, as its own ``pyproject.toml`` would build it (written by hand:
    no build backend is needed offline)."""
    files = {
        "ttft_probe_echo_lines.py": PLUGIN.encode(),
        f"{DIST}.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: ttft-probe-echo-lines\nVersion: 0.1.0\n"
        ),
        f"{DIST}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{DIST}.dist-info/entry_points.txt": ENTRY_POINTS.encode(),
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files[f"{DIST}.dist-info/RECORD"] = ("\n".join([*record, f"{DIST}.dist-info/RECORD,,"]) + "\n").encode()
    wheel = out / f"{DIST}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv that sees this interpreter's packages, with the plugin installed by pip."""
    root = tmp_path_factory.mktemp("plugin")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    # The venv sees ttft_probe (editable or not) through this interpreter's site
    # directories, as a product's venv would have it installed.
    [venv_site] = venv.glob("lib/python*/site-packages")
    dirs = [*site.getsitepackages(), *(p for p in sys.path if p.endswith("/src"))]
    lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
    (venv_site / "_parent_env.pth").write_text("\n".join(lines) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps",
         str(build_wheel(root))],
        check=True, timeout=300,
    )  # fmt: skip
    assert list(venv_site.glob(f"{DIST}.dist-info/entry_points.txt"))  # installed there
    (root / "echo_cli.py").write_text(ECHO_CLI)
    return venv


def check_record(record: dict[str, object]) -> None:
    assert record["runtime_family"] == FAMILY
    assert record["agent"] == "echo"
    assert record["status"] == "succeeded"
    assert record["session_id"] == "s-42"
    assert record["agent_version"] == "1.0"
    assert record["first_token_granularity"] == "message"
    cli_ready, init, model = (record[k] for k in
                              ("cli_ready_ms", "session_init_ms", "model_first_token_ms"))
    assert isinstance(cli_ready, float)
    assert cli_ready >= 90
    assert isinstance(init, float)
    assert init >= 40
    assert isinstance(model, float)
    assert model >= 190
    assert record["remainder_ms"] == 0


def test_plugin_family_from_the_cli(plugin_venv: Path, tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite3"
    cli = plugin_venv.parent / "echo_cli.py"
    done = subprocess.run(
        [str(plugin_venv / "bin" / "python"), "-m", "ttft_probe", "run", "--family", FAMILY,
         "--agent", "echo", "--store", str(db), "--", str(plugin_venv / "bin" / "python"), str(cli)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"ready\nsession s-42\nanswer hello\ndone\n"  # passed through
    assert b"model_first_token" in done.stderr  # the breakdown line
    [record] = [r.to_dict() for r in Store(db).last()]
    check_record(record)


def test_plugin_family_from_the_library(plugin_venv: Path, tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite3"
    cli = plugin_venv.parent / "echo_cli.py"
    script = textwrap.dedent(
        f"""
        import json, subprocess, sys
        from ttft_probe import Probe
        with Probe(family={FAMILY!r}, agent="echo", store={str(db)!r}) as probe:
            proc = probe.popen([sys.executable, {str(cli)!r}], stdout=subprocess.PIPE)
            out = proc.stdout.read()
            proc.stdout.close()
            proc.wait()
        assert probe.wait(10)
        print(json.dumps([r.to_dict() for r in probe.records]))
        """
    )
    done = subprocess.run([str(plugin_venv / "bin" / "python"), "-c", script],
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    [record] = json.loads(done.stdout)
    check_record(record)
    [stored] = [r.to_dict() for r in Store(db).last()]
    assert stored == record


def test_a_family_nobody_installed_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown runtime family 'echo-lines'") as err:
        Probe(family=FAMILY)
    assert "claude-stream-json" in str(err.value)
    assert "ttft_probe.adapters" in str(err.value)  # where a plugin registers
