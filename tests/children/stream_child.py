"""A stand-in agent for subprocess tests: replays a scripted stdio session.

Usage: stream_child.py SCRIPT.json — the script is a list of steps:
  {"out": "text"}   write to stdout (flushed), {"err": "text"} to stderr,
  {"sleep_ms": N},  {"read_line": true} (block for one stdin line),
  {"exit": CODE},   {"kill": SIGNUM} (kill itself), {"spawn_holder": SECONDS}
  (start a grandchild that inherits stdout and sleeps), {"bytes": N} (write N bytes),
  {"close_stdout": true} (close fd 1 and go on), {"ignore": SIGNUM} (ignore a signal),
  {"count_lines": N} (write "line 0".."line N-1", flushed one by one).
Each write is followed by a "ready" marker on fd 3 if it is open (readiness signal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def _fault_step(step: dict[str, int]) -> bool:
    """Run a close_stdout, ignore or count_lines step; ``False`` for any other step."""
    if "close_stdout" in step:
        sys.stdout.flush()
        os.close(1)
    elif "ignore" in step:
        signal.signal(step["ignore"], signal.SIG_IGN)
    elif "count_lines" in step:
        for i in range(step["count_lines"]):
            sys.stdout.write(f"line {i}\n")
            sys.stdout.flush()
    else:
        return False
    return True


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        steps = json.load(f)
    for step in steps:
        if "out" in step:
            sys.stdout.write(step["out"])
            sys.stdout.flush()
        elif "err" in step:
            sys.stderr.write(step["err"])
            sys.stderr.flush()
        elif "bytes" in step:
            chunk = (b"x" * 1023 + b"\n") * 64
            left = step["bytes"]
            while left > 0:
                n = min(left, len(chunk))
                sys.stdout.buffer.write(chunk[:n])
                left -= n
            sys.stdout.flush()
        elif "sleep_ms" in step:
            time.sleep(step["sleep_ms"] / 1000)
        elif "read_line" in step:
            sys.stdin.readline()
        elif "spawn_holder" in step:
            subprocess.Popen(
                [sys.executable, "-c", f"import time; time.sleep({step['spawn_holder']})"]
            )
        elif _fault_step(step):
            pass
        elif "kill" in step:
            os.kill(os.getpid(), step["kill"])
            time.sleep(5)
        elif "exit" in step:
            return int(step["exit"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
