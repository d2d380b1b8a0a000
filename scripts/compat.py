"""Check the probe against agent CLIs installed elsewhere (normally the registry's @latest).

Run by ``scripts/compat.sh``, which installs the latest release of each agent package into
``.scratch/compat/agents`` and points ``TTFT_PROBE_AGENTS_BIN`` at it. For each agent:

* ``ttft-probe doctor`` runs its command against the built-in fake provider and says which
  markers of the family it saw;
* the real-CLI test modules (``tests/test_real_clis.py``, ``tests/test_sdk_mode.py``) run
  against those binaries; each test counts for the agents its id names.

The result is written to ``docs/COMPAT.md`` (version × family × markers seen × pass).

Usage::

    .venv/bin/python scripts/compat.py --bin .scratch/compat/agents/node_modules/.bin
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "COMPAT.md"
TEST_MODULES = ("tests/test_real_clis.py", "tests/test_sdk_mode.py")
MARKERS = ("cliReady", "promptSent", "sessionInitDone", "firstToken")


@dataclass
class Check:
    """One agent mode: the command doctor runs; its tests are those :func:`mode_of` names."""

    name: str
    package: str
    agent: str
    family: str
    argv: list[str]
    doctor_ok: bool | None = None
    markers: dict[str, str] = field(default_factory=dict)
    tests_passed: int = 0
    tests_failed: list[str] = field(default_factory=list)


def checks(bin_dir: Path) -> list[Check]:
    """The agents and modes the pinned suite covers, with the binaries of ``bin_dir``."""
    b = str(bin_dir)
    sdk = ["--output-format", "stream-json", "--verbose", "--input-format", "stream-json",
           "--include-partial-messages"]
    return [
        Check("claude -p", "@anthropic-ai/claude-code", "claude_code", "claude-stream-json",
              [f"{b}/claude", "-p", "Say hello", "--output-format", "stream-json", "--verbose",
               "--include-partial-messages"]),
        Check("claude (SDK mode)", "@anthropic-ai/claude-code", "claude_code",
              "claude-stream-json", [f"{b}/claude", *sdk]),
        Check("codex exec", "@openai/codex", "codex", "json-event-stream",
              [f"{b}/codex", "exec", "--json", "--skip-git-repo-check", "Say hello"]),
        Check("gemini -p", "@google/gemini-cli", "gemini", "json-event-stream",
              [f"{b}/gemini", "-p", "Say hello", "--output-format", "stream-json", "-m",
               "gemini-2.5-flash"]),
        Check("gemini --acp", "@google/gemini-cli", "gemini_acp", "acp-json-rpc",
              [f"{b}/gemini", "--acp", "-m", "gemini-2.5-flash"]),
        Check("claude-agent-acp", "@agentclientprotocol/claude-agent-acp", "claude_code_acp",
              "acp-json-rpc", [f"{b}/claude-agent-acp"]),
        Check("codex-acp", "@zed-industries/codex-acp", "codex_acp", "acp-json-rpc",
              [f"{b}/codex-acp"]),
        Check("opencode acp", "opencode-ai", "opencode_acp", "acp-json-rpc",
              [f"{b}/opencode", "acp"]),
    ]


def mode_of(module: str, test: str) -> str | None:
    """The agent mode a test exercises: its parametrized agent, else its module or name."""
    if module.endswith("test_sdk_mode"):
        return "claude (SDK mode)"
    if "[" in test:
        agent = test[test.index("[") + 1 : -1].split("-", maxsplit=1)[0]
        return next((c for c, a in _MODES.items() if a == agent), None)
    return "claude -p" if test.startswith("test_claude_") else None


_MODES = {
    "claude -p": "claude_code",
    "codex exec": "codex",
    "gemini -p": "gemini",
    "gemini --acp": "gemini_acp",
    "claude-agent-acp": "claude_code_acp",
    "codex-acp": "codex_acp",
    "opencode acp": "opencode_acp",
}


def version_of(bin_dir: Path, package: str) -> str:
    """The installed version of ``package`` beside ``bin_dir``."""
    manifest = bin_dir.parent / package / "package.json"
    try:
        return str(json.loads(manifest.read_text("utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return "not installed"


def pinned_version(package: str) -> str:
    """The version ``agents/package.json`` pins (what CI runs)."""
    pins = json.loads((REPO / "agents" / "package.json").read_text("utf-8"))["dependencies"]
    return str(pins.get(package, "—"))


def run_doctor(check: Check, scratch: Path) -> None:
    """``ttft-probe doctor`` on the mode's command: its exit status and the markers seen."""
    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache")}
    done = subprocess.run([sys.executable, "-m", "ttft_probe", "doctor", "--", *check.argv],
                          capture_output=True, text=True, env=env, cwd=scratch, timeout=600,
                          check=False)
    check.doctor_ok = done.returncode == 0
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in MARKERS:
            check.markers[parts[0]] = "seen" if parts[1] == "seen" else "NOT SEEN"
    print(f"compat: doctor {check.name}: exit {done.returncode}", flush=True)


def run_tests(all_checks: list[Check], bin_dir: Path, scratch: Path) -> None:
    """The real-CLI test modules against ``bin_dir``; each result counted for its mode."""
    report = scratch / "junit.xml"
    env = {**os.environ, "TTFT_PROBE_AGENTS_BIN": str(bin_dir)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={report}", "-o", "addopts=", *TEST_MODULES],
                   env=env, cwd=REPO, timeout=3600, check=False)
    by_name = {c.name: c for c in all_checks}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - pytest's own file
        name = case.get("name", "?")
        check = by_name.get(mode_of(case.get("classname", ""), name) or "")
        if check is None:
            continue
        if any(child.tag in {"failure", "error"} for child in case):
            check.tests_failed.append(name)
        else:
            check.tests_passed += 1


def write(all_checks: list[Check], bin_dir: Path) -> None:
    """``docs/COMPAT.md``: one row per agent mode."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    rows = []
    for c in all_checks:
        seen = ", ".join(f"{m} {s}" for m, s in c.markers.items()) or "—"
        ok = c.doctor_ok and not c.tests_failed and c.tests_passed > 0
        tests = f"{c.tests_passed} passed" + (
            f", {len(c.tests_failed)} failed ({', '.join(c.tests_failed)})" if c.tests_failed
            else "")
        rows.append(f"| {c.name} | `{c.package}` | {version_of(bin_dir, c.package)} | "
                    f"{pinned_version(c.package)} | `{c.family}` | {seen} | "
                    f"{'exit 0' if c.doctor_ok else 'exit 1'} | {tests} | "
                    f"{'**pass**' if ok else '**FAIL**'} |")
    text = f"""# Compatibility with the agents' latest releases

Written by `bash scripts/compat.sh` on {today}: the latest release of each agent package
from the npm registry, checked with `ttft-probe doctor` (markers seen against the built-in
fake provider) and with the real-CLI test modules ({", ".join(f"`{m}`" for m in TEST_MODULES)})
run against those binaries. CI runs the same tests against the versions pinned in
`agents/package.json` ("pinned" below). Re-run it to see whether a new release changed
what the probe sees.

| mode | package | latest | pinned | family | markers seen | doctor | real-CLI tests | result |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    OUT.write_text(text, encoding="utf-8")
    print(f"compat: wrote {OUT.relative_to(REPO)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Check every agent mode; write docs/COMPAT.md. Exit 1 when one fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bin", type=Path, required=True,
                        help="the node_modules/.bin holding the agents to check")
    args = parser.parse_args(argv)
    bin_dir = args.bin.resolve()
    scratch = REPO / ".scratch" / "compat" / "work"
    scratch.mkdir(parents=True, exist_ok=True)
    all_checks = checks(bin_dir)
    for check in all_checks:
        run_doctor(check, scratch)
    run_tests(all_checks, bin_dir, scratch)
    write(all_checks, bin_dir)
    failed = [c.name for c in all_checks if not c.doctor_ok or c.tests_failed]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
