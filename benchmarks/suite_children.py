"""Child processes of ``benchmarks/suite.py``: agents, relays and consumers.

Each role is a separate process so that the timed work never shares an interpreter (or a
GIL) with the suite's progress display. Run as ``python benchmarks/suite_children.py ROLE
...``; it imports only the standard library, except the ``consume`` role's library modes,
which import ttft_probe as a library user would.

Roles:

``lines COUNT INTERVAL_US``
    A Claude Code stream-json turn of COUNT lines, one every INTERVAL_US µs, each stamped
    with ``time.monotonic_ns()`` (in its ``uuid`` field) just before its ``os.write``.
``gen BYTES``
    A realistic turn whose answer is BYTES of ``content_block_delta`` lines, written as one
    pre-built ~1 MiB block over and over: far faster than any relay.
``bigline BYTES``
    A turn with one tool-result line of BYTES (written in 1 MiB pieces) before the text.
``relay -- CMD...``
    The "plain Python pipe reader": spawns CMD and copies its stdout to fd 1 in 64 KiB reads
    (the probe's work minus the parsing).
``sink``
    Reads stdin to EOF into a preallocated buffer; prints bytes and timings as JSON.
``parse BYTES``
    The probe's parsing alone, in this process and without I/O: BYTES of the ``gen``
    stream in 64 KiB chunks through ``LineSplitter`` and the Claude adapter, after the
    first token (timed once splitting only, once splitting and parsing); prints JSON.
``consume MODE COUNT INTERVAL_US``
    Runs ``lines`` under MODE (``direct``, ``cli``, ``lib``, ``async-direct``,
    ``async-lib``), reads it, and prints each line's receive − send time in ns as JSON.
"""

# ruff: noqa: T201, INP001

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
TRANSCRIPT: Final = ROOT / "tests" / "transcripts" / "claude-stream-json" / "claude_fresh.jsonl"
SESSION_ID: Final = "caa12134-f130-4ca7-a8ec-8ad64b0ee7e0"
BLOCK_BYTES: Final = 1 << 20
READ_CHUNK: Final = 65536
UUID_FIELD: Final = b'"uuid":"'

# Fragments of a long coding answer: Markdown, code, JSON escapes (\n, \", \\).
_ANSWER: Final = [
    "Here is what ",
    "the failing test ",
    "exercises:",
    "\n\n```python\n",
    "def parse(line: bytes) -> dict[str, Any] | None:\n",
    '    return json.loads(line) if line.startswith(b"{") else None\n',
    "```\n\n",
    "The fix is to ",
    "decode the ",
    '"payload" field ',
    "before comparing ",
    "it with the ",
    "expected value; ",
    "the path C:\\\\temp ",
    "is only an example. ",
    "Next, ",
    "run `pytest -k parse` ",
    "again.\n",
]


def _transcript_lines() -> list[bytes]:
    """The stdout lines of a recorded real Claude Code turn (``--include-partial-messages``)."""
    out = []
    for raw in TRANSCRIPT.read_text(encoding="utf-8").splitlines():
        entry = json.loads(raw)
        if entry.get("stream") == "stdout":
            out.append(entry["line"].encode())
    return out


def _split_turn() -> tuple[list[bytes], list[bytes]]:
    """(lines before the first delta, lines after the last delta) of the recorded turn."""
    lines = _transcript_lines()
    deltas = [i for i, ln in enumerate(lines) if b'"content_block_delta"' in ln]
    head = lines[: deltas[0]]
    tail = [ln for ln in lines[deltas[-1] + 1 :] if b'"type":"assistant"' not in ln]
    return head, tail


def delta_line(text: str, uuid: str) -> bytes:
    """One ``content_block_delta`` stream event as Claude Code prints it."""
    return (
        json.dumps(
            {
                "type": "stream_event",
                "event": {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
                "session_id": SESSION_ID,
                "parent_tool_use_id": None,
                "uuid": uuid,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def _fake_uuid(i: int) -> str:
    h = f"{(i * 2654435761) & 0xFFFFFFFFFFFFFFFF:016x}{i:016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def delta_block(size: int = BLOCK_BYTES) -> bytes:
    """About ``size`` bytes of whole ``content_block_delta`` lines."""
    parts: list[bytes] = []
    total = 0
    i = 0
    while total < size:
        line = delta_line(_ANSWER[i % len(_ANSWER)], _fake_uuid(i))
        parts.append(line)
        total += len(line)
        i += 1
    return b"".join(parts)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def role_lines(count: int, interval_us: int) -> int:
    """A turn of ``count`` stamped lines, one every ``interval_us`` µs."""
    head, tail = _split_turn()
    n_deltas = max(1, count - len(head) - len(tail))
    templates = [
        *head,
        *(delta_line(_ANSWER[i % len(_ANSWER)], "") for i in range(n_deltas)),
        *tail,
    ]
    templates = [t if t.endswith(b"\n") else t + b"\n" for t in templates][:count]
    # Pre-split each template around its uuid value so stamping costs one concatenation.
    split = []
    for t in templates:
        at = t.rfind(UUID_FIELD) + len(UUID_FIELD)
        split.append((t[:at], t[t.index(b'"', at) :]))
    interval = interval_us / 1e6
    for before, after in split:
        time.sleep(interval)
        os.write(1, before + b"%d" % time.monotonic_ns() + after)
    return 0


def role_gen(total: int) -> int:
    """A turn whose answer is ``total`` bytes of delta lines (one pre-built block)."""
    head, tail = _split_turn()
    _write_all(1, b"".join(ln + b"\n" for ln in head))
    block = delta_block()
    left = total
    while left >= len(block):
        _write_all(1, block)
        left -= len(block)
    if left:
        cut = block.rfind(b"\n", 0, left) + 1
        _write_all(1, block[:cut])
    _write_all(1, b"".join(ln + b"\n" for ln in tail))
    return 0


def role_bigline(total: int) -> int:
    """A turn with one ``total``-byte tool-result line before the model's first text."""
    head, tail = _split_turn()
    init = head[0]
    tool_use = json.dumps(
        {
            "type": "assistant",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-4-8",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "x"}}
                ],
            },
            "parent_tool_use_id": None,
            "session_id": SESSION_ID,
        },
        separators=(",", ":"),
    ).encode()
    prefix = (
        b'{"type":"user","message":{"role":"user","content":[{"type":"tool_result",'
        b'"tool_use_id":"toolu_1","content":"'
    )
    suffix = b'"}]},"parent_tool_use_id":null,"session_id":"%s"}\n' % SESSION_ID.encode()
    filler = (b"    return json.loads(line)\\n" * (BLOCK_BYTES // 29 + 1))[:BLOCK_BYTES]
    _write_all(1, init + b"\n" + tool_use + b"\n" + prefix)
    left = total - len(prefix) - len(suffix)
    while left > 0:
        piece = filler[: min(left, len(filler))]
        _write_all(1, piece)
        left -= len(piece)
    _write_all(1, suffix)
    _write_all(1, b"".join(ln + b"\n" for ln in head[1:]))
    _write_all(1, delta_line("Read it.", _fake_uuid(1)))
    _write_all(1, b"".join(ln + b"\n" for ln in tail))
    return 0


def role_relay(argv: list[str]) -> int:
    """Spawn ``argv`` and copy its stdout to fd 1 in 64 KiB reads; exit with its status."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None  # noqa: S101 - spawned with PIPE
    fd = proc.stdout.fileno()
    while data := os.read(fd, READ_CHUNK):
        _write_all(1, data)
    proc.stdout.close()
    return proc.wait()


def role_sink() -> int:
    """Read stdin to EOF; print ``{"bytes", "first_bytes", "first_ns", "end_ns"}``."""
    buf = bytearray(4 << 20)
    total = 0
    first_ns = 0
    first_bytes = 0
    while n := os.readv(0, [buf]):
        if not total:
            first_ns = time.monotonic_ns()
            first_bytes = n
        total += n
    end_ns = time.monotonic_ns()
    print(json.dumps({"bytes": total, "first_bytes": first_bytes, "first_ns": first_ns,
                      "end_ns": end_ns}))
    return 0


class _LineTimes:
    """Receive − send (ns) of each complete stamped line read so far."""

    def __init__(self) -> None:
        self.partial = b""
        self.added: list[int] = []

    def feed(self, data: bytes, t_ns: int) -> None:
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            at = line.rfind(UUID_FIELD) + len(UUID_FIELD)
            self.added.append(t_ns - int(line[at : line.index(b'"', at)]))


def _read_sync(fd: int, times: _LineTimes) -> None:
    while data := os.read(fd, READ_CHUNK):
        times.feed(data, time.monotonic_ns())


async def _read_async(stream: asyncio.StreamReader, times: _LineTimes) -> None:
    while data := await stream.read(READ_CHUNK):
        times.feed(data, time.monotonic_ns())


def role_consume(mode: str, count: int, interval_us: int) -> int:
    """Run ``lines`` under ``mode`` and print the per-line latencies (ns) as JSON."""
    child = [sys.executable, str(Path(__file__).resolve()), "lines", str(count), str(interval_us)]
    times = _LineTimes()
    if mode in {"direct", "cli"}:
        argv = child
        if mode == "cli":
            exe = os.environ.get("TTFT_BENCH_PROBE") or "ttft-probe"
            argv = [exe, "run", "-q", "--family", "claude-stream-json", "--", *child]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None  # noqa: S101 - spawned with PIPE
        _read_sync(proc.stdout.fileno(), times)
        status = proc.wait()
    elif mode == "lib":
        from ttft_probe import Probe  # noqa: PLC0415 - only this mode is a library user

        with Probe(family="claude-stream-json") as probe:
            proc = probe.popen(child, stdout=subprocess.PIPE)
            assert proc.stdout is not None  # noqa: S101 - spawned with PIPE
            _read_sync(proc.stdout.fileno(), times)
            status = proc.wait()
        if len(probe.records) != 1:
            raise SystemExit(f"the library probe finished {len(probe.records)} runs, not 1")
    elif mode in {"async-direct", "async-lib"}:
        status = asyncio.run(_consume_async(child, times, probed=mode == "async-lib"))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    if status != 0 or len(times.added) != count:
        raise SystemExit(f"{mode}: exit {status}, {len(times.added)} of {count} lines")
    print(json.dumps({"mode": mode, "added_ns": times.added}))
    return 0


async def _consume_async(child: list[str], times: _LineTimes, *, probed: bool) -> int:
    pipe = asyncio.subprocess.PIPE
    if not probed:
        proc = await asyncio.create_subprocess_exec(*child, stdout=pipe)
        assert proc.stdout is not None  # noqa: S101 - spawned with PIPE
        await _read_async(proc.stdout, times)
        return await proc.wait()
    from ttft_probe import Probe  # noqa: PLC0415 - only this mode is a library user

    async with Probe(family="claude-stream-json") as probe:
        proc = await probe.create_subprocess_exec(*child, stdout=pipe)
        assert proc.stdout is not None  # noqa: S101 - spawned with PIPE
        await _read_async(proc.stdout, times)
        status = await proc.wait()
    if len(probe.records) != 1:
        raise SystemExit(f"the library probe finished {len(probe.records)} runs, not 1")
    return status


def role_parse(total: int) -> int:
    """Time the splitter and the adapter over ``total`` bytes of post-first-token lines."""
    from ttft_probe.adapters._base import LineSplitter, adapter_for  # noqa: PLC0415

    head, _ = _split_turn()
    block = delta_block()
    chunks = [block[i : i + READ_CHUNK] for i in range(0, len(block), READ_CHUNK)]
    reps = max(1, total // len(block))
    start = b"".join(ln + b"\n" for ln in head) + delta_line("Hi", _fake_uuid(0))

    def timed(*, parse: bool) -> tuple[float, int]:
        splitter = LineSplitter()
        adapter = adapter_for("claude-stream-json")
        for line in splitter.feed(start):
            adapter.feed_stdout(line, 0)
        # As the probe splits: only the lines the adapter's line filter (if any) may need.
        line_filter = getattr(adapter, "line_filter", None)
        n = 0
        t0 = time.perf_counter()
        for _ in range(reps):
            for chunk in chunks:
                needles = line_filter() if line_filter is not None else None
                lines = (
                    splitter.feed_matching(chunk, needles) if needles else splitter.feed(chunk)
                )
                n += len(lines)
                if parse:
                    for line in lines:
                        adapter.feed_stdout(line, 0)
        return time.perf_counter() - t0, n

    split_s, handed = timed(parse=False)
    total_s, _ = timed(parse=True)
    print(json.dumps({"bytes": reps * len(block), "lines": reps * block.count(b"\n"),
                      "handed": handed, "split_s": split_s, "total_s": total_s,
                      "line_filter": hasattr(adapter_for("claude-stream-json"), "line_filter")}))
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``argv`` (without the program name) to a role."""
    role, args = argv[0], argv[1:]
    roles: dict[str, Callable[[], int]] = {
        "lines": lambda: role_lines(int(args[0]), int(args[1])),
        "gen": lambda: role_gen(int(args[0])),
        "bigline": lambda: role_bigline(int(args[0])),
        "relay": lambda: role_relay(args[1:] if args[:1] == ["--"] else args),
        "sink": role_sink,
        "parse": lambda: role_parse(int(args[0])),
        "consume": lambda: role_consume(args[0], int(args[1]), int(args[2])),
    }
    if role not in roles:
        raise SystemExit(f"unknown role {role!r}; known: {', '.join(roles)}")
    return roles[role]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
