"""Peak RSS of one process in a pipeline, from a launcher kept deliberately tiny.

``python -I -S benchmarks/suite_peak_rss.py GEN_ROLE BYTES -- CMD...`` runs
``suite_children.py GEN_ROLE BYTES | CMD | suite_children.py sink`` and prints one JSON
object: CMD's ``ru_maxrss`` from ``os.wait4`` (KiB), its ``VmHWM`` as last polled from
``/proc/PID/status`` (KiB), this launcher's own ``VmHWM`` when CMD was spawned (the
``floor_kib``), CMD's exit status, and the sink's report. ``GEN_ROLE`` ``none`` gives CMD
``/dev/null`` as stdin.

Why a launcher of its own: on Linux ``exec`` folds the replaced image's high-water mark
into the process's ``ru_maxrss``, so CMD's figure can never be below the RSS of whoever
spawned it (here: this launcher, which imports only ``os`` and ``sys`` before the spawn).
``ru_maxrss`` also covers CMD's reaped children: give CMD a tiny child (``cat``) and
keep the generator and the sink outside it, as this launcher does.
"""

# ruff: noqa: T201, INP001

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILDREN = os.path.join(HERE, "suite_children.py")


def _hwm_kib(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _spawn(argv: list[str], stdin: int, stdout: int, close: list[int]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: wire fds, then exec (nothing else runs here)
        try:
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            for fd in close:
                os.close(fd)
            os.execv(argv[0], argv)  # noqa: S606 - argv is ours, no shell
        finally:
            os._exit(127)
    return pid


def main(argv: list[str]) -> int:
    """Run the pipeline described in the module docstring; print the JSON report."""
    role, size, sep, *cmd = argv
    if sep != "--" or not cmd:
        raise SystemExit(__doc__)
    py = sys.executable
    gen_r, gen_w = os.pipe()
    out_r, out_w = os.pipe()
    sink_r, sink_w = os.pipe()
    fds = [gen_r, gen_w, out_r, out_w, sink_r, sink_w]
    devnull = os.open(os.devnull, os.O_RDWR)
    gen = None
    if role != "none":
        gen = _spawn([py, CHILDREN, role, size], devnull, gen_w, [*fds, devnull])
    floor = _hwm_kib("self")
    target = _spawn(cmd, gen_r if gen else devnull, out_w, [*fds, devnull])
    sink = _spawn([py, CHILDREN, "sink"], out_r, sink_w, [*fds, devnull])
    for fd in (gen_r, gen_w, out_r, out_w, sink_w, devnull):
        os.close(fd)
    hwm = 0
    while True:
        hwm = max(hwm, _hwm_kib(target))
        pid, status, usage = os.wait4(target, os.WNOHANG)
        if pid:
            break
        time.sleep(0.002)
    report = b""
    while chunk := os.read(sink_r, 65536):
        report += chunk
    os.close(sink_r)
    os.waitpid(sink, 0)
    if gen is not None:
        os.waitpid(gen, 0)
    sink_report = report.decode().strip() or "null"
    print(
        f'{{"maxrss_kib": {usage.ru_maxrss}, "hwm_kib": {hwm}, "floor_kib": {floor}, '
        f'"status": {os.waitstatus_to_exitcode(status)}, "sink": {sink_report}}}'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
