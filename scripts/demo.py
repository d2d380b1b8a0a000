"""The main job, end to end: real Claude Code probed against the bundled fake provider.

Starts ttft_probe's fake Anthropic provider (first token after 500 ms plus 0.05 ms per
input token its prompt cache did not hold), runs one fresh `claude -p` turn and two
resumed turns under `ttft-probe run --observe-provider` — the third with a changed system
block, as a product that puts something volatile there would — then shows the third
turn's request waterfall (`ttft-probe show`) and lists the runs (`ttft-probe runs`).
Nothing to configure: scratch homes and the run store live in .scratch/demo/. Run it
with `bash scripts/demo.sh`.
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
PER_UNCACHED_TOKEN_MS = 0.05


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
    with FakeProvider(first_token_delay_ms=DELAY_MS,
                      uncached_token_delay_ms=PER_UNCACHED_TOKEN_MS) as provider:
        env = agent_environment("claude_code", provider.url, scratch / "home")
        env["TTFT_PROBE_HOME"] = str(scratch / "probe")
        env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        say(f"Fake Anthropic provider at {provider.url}, first token after {DELAY_MS} ms "
            f"+ {PER_UNCACHED_TOKEN_MS} ms per uncached input token")

        say("Turn 1: a fresh `claude -p` under `ttft-probe run --observe-provider`")
        lines = turn(env, work, one_shot_command("claude_code", "Say hello"))
        session = find_session_id("claude_code", lines)
        if session is None:
            print("claude printed no session id; cannot resume", file=sys.stderr)
            return 1

        say(f"Turn 2: the same conversation, resumed with `--resume {session}`")
        turn(env, work, one_shot_command("claude_code", "Say it again", resume_id=session))

        # Claude Code writes its version and entrypoint into its first system block each
        # turn: a product switching SDKs (or upgrading) between turns changes it.
        say("Turn 3: resumed again, with a changed system block (CLAUDE_CODE_ENTRYPOINT)")
        turn({**env, "CLAUDE_CODE_ENTRYPOINT": "demo-changed"}, work,
             one_shot_command("claude_code", "Once more", resume_id=session))

        say("Ground truth from the provider's own log, per generation request")
        for e in provider.generations():
            if e["first_token_ns"] is not None:
                wait = (e["first_token_ns"] - e["arrival_ns"]) / 1e6
                print(f"   {wait:7.1f} ms to the first token: {e['input_tokens']} input tokens, "
                      f"{e['cache_read_tokens']} from the cache, cache ends at "
                      f"{e['first_uncached_section']}")

    say("`ttft-probe show` of turn 3: its markers and model requests on one time axis")
    probe = [sys.executable, "-m", "ttft_probe"]
    runs = subprocess.run([*probe, "runs", "--last", "1", "--json"], env=env, check=True,
                          timeout=60, stdout=subprocess.PIPE)
    last = json.loads(runs.stdout.decode().splitlines()[-1])["run_id"]
    chart = scratch / "turn3-waterfall.png"
    subprocess.run([*probe, "show", last, "--chart", str(chart)], env=env, check=True,
                   timeout=60)

    say("`ttft-probe runs` (the local store)")
    subprocess.run([*probe, "runs", "--last", "3"], env=env, check=True, timeout=60)
    print(f"\nThe store is {scratch / 'probe' / 'runs.sqlite3'}; "
          "`ttft-probe runs --json` prints the full run_finished records.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
