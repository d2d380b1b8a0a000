"""A stand-in agent for subprocess tests: replays a scripted stdio session.

Usage: stream_child.py SCRIPT.json — the script is a list of steps:
  {"out": "text"}   write to stdout (flushed), {"err": "text"} to stderr,
  {"sleep_ms": N},  {"read_line": true} (block for one stdin line),
  {"exit": CODE},   {"kill": SIGNUM} (kill itself), {"spawn_holder": SECONDS}
  (start a grandchild that inherits stdout and sleeps), {"bytes": N} (write N bytes).
Each write is followed by a "ready" marker on fd 3 if it is open (readiness signal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


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
        elif "kill" in step:
            os.kill(os.getpid(), step["kill"])
            time.sleep(5)
        elif "exit" in step:
            return int(step["exit"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
