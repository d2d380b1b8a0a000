"""The main job, end to end: real Claude Code probed against the bundled fake provider.

Starts ttft_probe's fake Anthropic provider (first token after 500 ms), runs one fresh
`claude -p` turn and one resumed turn under `ttft-probe run`, then lists them with
`ttft-probe runs`. Nothing to configure: scratch homes and the run store live in
.scratch/demo/. Run it with `bash scripts/demo.sh`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ttft_probe.testing.agent_env import agent_environment, find_session_id, one_shot_command
from ttft_probe.testing.fake_provider import FakeProvider

REPO = Path(__file__).resolve().parent.parent
DELAY_MS = 500


def say(text: str) -> None:
    """Print a section heading."""
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def turn(env: dict[str, str], work: Path, argv: list[str]) -> list[str]:
    """One turn under `ttft-probe run`: the breakdown goes to stderr, stdout is returned."""
    done = subprocess.run([sys.executable, "-m", "ttft_probe", "run", "--observe-provider", "--",
                           *argv],
                          stdout=subprocess.PIPE, env=env, cwd=work, timeout=300, check=False)
    lines = done.stdout.decode(errors="replace").splitlines()
    answer = "".join(
        block.get("text", "")
        for msg in map(json.loads, (x for x in lines if x.startswith("{")))
        if msg.get("type") == "assistant"
        for block in msg.get("message", {}).get("content", [])
    )
    print(f"   (claude answered: {answer.strip()!r}; exit code {done.returncode})")
    if done.returncode != 0:
        sys.exit(done.returncode)
    return lines


def main() -> int:
    """Run the demo; returns the exit status."""
    scratch = REPO / ".scratch" / "demo"
    shutil.rmtree(scratch, ignore_errors=True)
    work = scratch / "work"
    work.mkdir(parents=True)
    with FakeProvider(first_token_delay_ms=DELAY_MS) as provider:
        env = agent_environment("claude_code", provider.url, scratch / "home")
        env["TTFT_PROBE_HOME"] = str(scratch / "probe")
        env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        say(f"Fake Anthropic provider at {provider.url}, first token after {DELAY_MS} ms")

        say("Turn 1: a fresh `claude -p` under `ttft-probe run --observe-provider`")
        lines = turn(env, work, one_shot_command("claude_code", "Say hello"))
        session = find_session_id("claude_code", lines)
        if session is None:
            print("claude printed no session id; cannot resume", file=sys.stderr)
            return 1

        say(f"Turn 2: the same conversation, resumed with `--resume {session}`")
        turn(env, work, one_shot_command("claude_code", "Say it again", resume_id=session))

        truth = [(e["first_token_ns"] - e["arrival_ns"]) / 1e6 for e in provider.generations()
                 if e["first_token_ns"] is not None]
        say("Ground truth from the provider's own log: request → first token sent, ms")
        print("   " + ", ".join(f"{t:.1f}" for t in truth))

    say("`ttft-probe runs` (the local store)")
    subprocess.run([sys.executable, "-m", "ttft_probe", "runs", "--last", "2"], env=env,
                   check=True, timeout=60)
    print(f"\nThe store is {scratch / 'probe' / 'runs.sqlite3'}; "
          "`ttft-probe runs --json` prints the full run_finished records.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
