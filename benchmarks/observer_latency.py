"""What the provider observer adds: first-content latency and stream throughput.

Run ``.venv/bin/python benchmarks/observer_latency.py`` (about a minute). It

1. starts the fake provider (``first_token_delay_ms=0``) in its own process and the
   observer in another (as in a real run: the agent, ttft-probe and the provider are three
   processes), then measures, interleaved, the client-observed time from sending a
   streaming request (from ``connect()`` for new connections) to receiving the bytes that
   complete the first content event, directly and through the observer, over keep-alive
   and over new connections, rotating the Anthropic, OpenAI and Gemini APIs;
2. streams 20 MB of SSE deltas from a tiny upstream inside this script, once with one
   HTTP chunk per event (the worst case for the observer's per-chunk parsing) and once with
   64 KiB chunks, directly and through the observer, and compares throughput;
3. prints the results and writes them to ``docs/benchmarks/observer.md``.

"Added" latency is the per-round difference (observer − direct) of requests sent back
to back; its median, p90 and p99 are reported in µs, next to what a raw forwarder that
parses nothing adds (the cost of the extra hop itself). The timed client is plain sockets.
"""

# ruff: noqa: T201, INP001, S101

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks" / "observer.md"
TIMEOUT_S = 30.0

# (path, body, bytes that appear first in the first content event)
CALLS: list[tuple[str, bytes, bytes]] = [
    (
        "/v1/messages",
        json.dumps(
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        b'"text_delta"',
    ),
    (
        "/v1/responses",
        json.dumps(
            {"model": "m", "stream": True, "input": [{"role": "user", "content": "hi"}]}
        ).encode(),
        b"response.output_text.delta",
    ),
    (
        "/v1beta/models/g:streamGenerateContent?alt=sse",
        json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).encode(),
        b'"candidates"',
    ),
]

BIG_BODY_BYTES = 1 << 20


def _big_calls() -> list[tuple[str, bytes, bytes]]:
    """CALLS with ~1 MiB bodies: a transcript of 200 turns of ~5 KiB each.

    The observer reads, parses and hashes each body's sections after forwarding it.
    """
    text = "lorem ipsum dolor sit amet " * 190  # ~5 KiB per message
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {text}"}
             for i in range(200)]
    gemini_turns = [{"role": "user" if i % 2 == 0 else "model", "parts": [{"text": t["content"]}]}
                    for i, t in enumerate(turns)]
    bodies = [
        {"model": "m", "stream": True, "system": "be brief", "messages": turns},
        {"model": "m", "stream": True, "instructions": "be brief", "input": turns},
        {"contents": gemini_turns},
    ]
    calls = []
    for (path, _, marker), body in zip(CALLS, bodies, strict=True):
        data = json.dumps(body).encode()
        assert abs(len(data) - BIG_BODY_BYTES) < BIG_BODY_BYTES // 10, len(data)
        calls.append((path, data, marker))
    return calls


# --- children -----------------------------------------------------------------------------


def _wait_ready(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(TIMEOUT_S):
        proc.kill()
        raise SystemExit("a child did not become ready")
    sel.close()
    line = proc.stdout.readline().decode()
    if not line.startswith("READY "):
        raise SystemExit(f"unexpected child output: {line!r}")
    return line.split()[1]


def _spawn(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return proc, _wait_ready(proc)


def _stop(proc: subprocess.Popen[bytes], *, terminate: bool = False) -> str:
    """Close the child's stdin (our children then exit, printing counts) and reap it."""
    if terminate:
        proc.terminate()  # the fake provider waits for SIGTERM, not for stdin
    out = b""
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    return out.decode().strip()


def proxy_child(upstream: str, *, read_bodies: bool = True) -> int:
    """Run an observer in front of ``upstream``; print counts when stdin closes.

    ``read_bodies=False``: the observer forwards bodies but does not read them (no
    parsing, no section digests), to measure what reading them costs.
    """
    from ttft_probe import observer as observer_module  # noqa: PLC0415 - the child only
    from ttft_probe.observer import (  # noqa: PLC0415
        ObserverEvent,
        ProviderFirstContent,
        ProviderObserver,
        ProviderRequest,
        ProviderRequestBody,
    )

    sys.setswitchinterval(0.0005)  # as `ttft-probe run --observe-provider` sets it
    if not read_bodies:

        def unread(request_id: int, _api: object, kind: object, *_rest: object) -> object:
            return ProviderRequestBody(request_id, kind)  # type: ignore[arg-type]

        observer_module.analyze_body = unread  # type: ignore[assignment]
    counts = {"requests": 0, "first_content": 0, "bodies_hashed": 0}

    def on_event(event: ObserverEvent) -> None:
        if isinstance(event, ProviderRequest):
            counts["requests"] += 1
        elif isinstance(event, ProviderFirstContent):
            counts["first_content"] += 1
        elif isinstance(event, ProviderRequestBody) and event.sections is not None:
            counts["bodies_hashed"] += 1

    with ProviderObserver(upstream, on_event) as observer:
        print(f"READY {observer.url}", flush=True)
        sys.stdin.read()
    print(json.dumps(counts), flush=True)
    return 0


def raw_child(upstream: str) -> int:  # noqa: C901 - two tiny protocols inside
    """A minimal asyncio forwarder with no parsing at all: the floor any proxy hop costs.

    Same shape as the observer (connect upstream on accept, forward each read at once),
    minus h11 and observation; for comparison only, it handles no errors.
    """
    import asyncio  # noqa: PLC0415 - the child only

    host, port = upstream.split("//", 1)[1].rsplit(":", 1)

    class Up(asyncio.Protocol):
        def __init__(self, agent: asyncio.Transport) -> None:
            self.agent = agent

        def data_received(self, data: bytes) -> None:
            self.agent.write(data)

        def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
            self.agent.close()

    class Agent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.up: asyncio.Transport | None = None
            self.pending: list[bytes] = []
            self.task = asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            up, _ = await asyncio.get_running_loop().create_connection(
                lambda: Up(self.transport), host, int(port)
            )
            self.up = up
            up.write(b"".join(self.pending))

        def data_received(self, data: bytes) -> None:
            if self.up is None:
                self.pending.append(data)
            else:
                self.up.write(data)

        def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
            if self.up is not None:
                self.up.close()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Agent, "127.0.0.1", 0)
        print(f"READY http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(serve())
    return 0


def _bulk_body(total: int, chunk: int | None) -> bytes:
    """``total`` bytes of Anthropic text deltas, chunked per event or ``chunk`` bytes."""
    event = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"the quick brown fox jumps over the lazy dog "}}'
        b"\n\n"
    )
    events = event * (total // len(event))
    if chunk is None:
        framed = (b"%x\r\n%s\r\n" % (len(event), event)) * (total // len(event))
    else:
        framed = b"".join(
            b"%x\r\n%s\r\n" % (len(events[i : i + chunk]), events[i : i + chunk])
            for i in range(0, len(events), chunk)
        )
    return framed + b"0\r\n\r\n"


def upstream_child(total: int) -> int:
    """A tiny upstream: any request gets a ``total``-byte SSE stream (path picks chunking)."""
    bodies = {b"/fine": _bulk_body(total, None), b"/coalesced": _bulk_body(total, 65536)}
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                request, _, buf = buf.partition(b"\r\n\r\n")
                path = request.split(b" ", 2)[1]
                body = bodies.get(path, bodies[b"/coalesced"])
                conn.sendall(head)
                view = memoryview(body)
                for i in range(0, len(body), 1 << 18):
                    conn.sendall(view[i : i + (1 << 18)])

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print(f"READY http://127.0.0.1:{server.getsockname()[1]}", flush=True)
    sys.stdin.read()
    server.close()
    return 0


# --- the timed client ---------------------------------------------------------------------


class Client:
    """One keep-alive connection (or a new one per request) to a base URL, raw sockets."""

    def __init__(self, url: str, *, keep_alive: bool) -> None:  # noqa: D107 - see the class
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.keep_alive = keep_alive
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def first_content_ns(self, path: str, body: bytes, marker: bytes) -> int:
        """Time in ns from send (or connect) to the first content event's completing bytes."""
        t0 = time.perf_counter_ns()
        if self.sock is None or not self.keep_alive:
            if self.sock is not None:
                self.sock.close()
            self.sock = self._connect()
        sock = self.sock
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.port, len(body), body)
        )
        got = bytearray()
        first: int | None = None
        while True:
            data = sock.recv(65536)
            if not data:
                raise SystemExit("connection closed early")
            got += data
            if first is None:
                at = got.find(marker)
                if at >= 0 and (got.find(b"\n\n", at) >= 0 or got.find(b"\r\n\r\n", at) >= 0):
                    first = time.perf_counter_ns() - t0
            if got.endswith(b"\r\n0\r\n\r\n"):
                assert first is not None
                return first

    def stream_bytes(self, path: str) -> tuple[int, float]:
        """Read a whole streamed response; (bytes, seconds) from send to its last byte."""
        sock = self._connect()
        with sock:
            t0 = time.perf_counter()
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            total = 0
            tail = b""
            buf = bytearray(1 << 20)
            while True:
                n = sock.recv_into(buf)
                if not n:
                    raise SystemExit("stream closed early")
                total += n
                tail = (tail + bytes(buf[max(0, n - 16) : n]))[-16:]
                if tail.endswith(b"\r\n0\r\n\r\n"):
                    return total, time.perf_counter() - t0

    def close(self) -> None:
        """Close the kept connection, if any."""
        if self.sock is not None:
            self.sock.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(
    direct_url: str,
    proxy_url: str,
    raw_url: str,
    n: int,
    *,
    keep_alive: bool,
    calls: list[tuple[str, bytes, bytes]] = CALLS,
) -> dict[str, float]:
    """Interleaved first-content times: direct, observer, raw forwarder; added µs per round."""
    clients = {
        name: Client(url, keep_alive=keep_alive)
        for name, url in (("direct", direct_url), ("proxy", proxy_url), ("raw", raw_url))
    }
    us: dict[str, list[float]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(n + 6):
        path, body, marker = calls[i % len(calls)]
        order = names[i % 3 :] + names[: i % 3]  # rotate who goes first
        sample = {k: clients[k].first_content_ns(path, body, marker) / 1000 for k in order}
        if i >= 6:  # warm-up: first connections, cold caches
            for k, v in sample.items():
                us[k].append(v)
    for client in clients.values():
        client.close()
    added = [p - d for p, d in zip(us["proxy"], us["direct"], strict=True)]
    raw_added = [r - d for r, d in zip(us["raw"], us["direct"], strict=True)]
    return {
        "n": n,
        "direct_median_us": statistics.median(us["direct"]),
        "proxy_median_us": statistics.median(us["proxy"]),
        "added_median_us": statistics.median(added),
        "added_p90_us": _pct(added, 0.90),
        "added_p99_us": _pct(added, 0.99),
        "raw_added_median_us": statistics.median(raw_added),
    }


def measure_body_cost(n: int, first_token_delay_ms: float) -> dict[str, float]:
    """What reading and hashing 1 MiB request bodies adds to the first content byte.

    A fake provider answering after ``first_token_delay_ms``, an observer that reads every
    body and one that only forwards it; ``n`` interleaved rounds of the three (direct
    first, then rotating), rotating the three APIs. Returns µs medians and percentiles.
    """
    me = [str(Path(__file__).resolve())]
    children: list[subprocess.Popen[bytes]] = []
    fake, fake_url = _spawn(["-m", "ttft_probe.testing.fake_provider", "--first-token-delay-ms",
                             str(first_token_delay_ms), "--no-prompt-cache"])
    try:
        on, on_url = _spawn([*me, "--proxy-child", fake_url])
        children.append(on)
        off, off_url = _spawn([*me, "--proxy-child", fake_url, "--no-body-reading"])
        children.append(off)
        clients = {name: Client(url, keep_alive=True)
                   for name, url in (("direct", fake_url), ("on", on_url), ("off", off_url))}
        calls = _big_calls()
        us: dict[str, list[float]] = {name: [] for name in clients}
        names = list(clients)
        for i in range(n + 3):
            path, body, marker = calls[i % len(calls)]
            order = names[i % 3 :] + names[: i % 3]
            sample = {k: clients[k].first_content_ns(path, body, marker) / 1000 for k in order}
            if i >= 3:
                for k, v in sample.items():
                    us[k].append(v)
        for client in clients.values():
            client.close()
        counts = [json.loads(_stop(c) or "{}") for c in children]
        children.clear()
    finally:
        for child in children:
            _stop(child)
        _stop(fake, terminate=True)
    reading = [a - b for a, b in zip(us["on"], us["off"], strict=True)]
    added = [a - d for a, d in zip(us["on"], us["direct"], strict=True)]
    return {
        "n": n,
        "delay_ms": first_token_delay_ms,
        "body_bytes": statistics.mean(len(b) for _, b, _ in calls),
        "direct_median_us": statistics.median(us["direct"]),
        "observer_median_us": statistics.median(us["on"]),
        "unread_median_us": statistics.median(us["off"]),
        "added_median_us": statistics.median(added),
        "reading_median_us": statistics.median(reading),
        "reading_p90_us": _pct(reading, 0.90),
        "bodies_hashed": counts[0].get("bodies_hashed", 0),
    }


def measure_throughput(direct_url: str, proxy_url: str, path: str, runs: int) -> dict[str, float]:
    """Best-of-``runs`` MB/s of one long stream, direct and through the observer."""
    best: dict[str, float] = {}
    size = 0
    for _ in range(runs):
        for name, url in (("direct", direct_url), ("proxy", proxy_url)):
            size, seconds = Client(url, keep_alive=False).stream_bytes(path)
            rate = size / seconds / 1e6
            best[name] = max(best.get(name, 0.0), rate)
    return {
        "bytes": size,
        "direct_mb_s": best["direct"],
        "proxy_mb_s": best["proxy"],
        "ratio": best["proxy"] / best["direct"],
    }


# --- report -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU model, logical cores, Python version and OS of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def render(
    lat: dict[str, dict[str, float]], thr: dict[str, dict[str, float]], host: dict[str, str]
) -> str:
    """The Markdown report."""
    lines = [
        "# Provider observer: added latency and throughput",
        "",
        "Generated by `.venv/bin/python benchmarks/observer_latency.py` (do not edit by hand).",
        "",
        (
            f"Machine: {host['cpu']}, {host['cores']} logical cores; "
            f"Python {host['python']}; {host['os']}."
        ),
        "",
        "## Time to first content byte (client-observed)",
        "",
        "Fake provider (`first_token_delay_ms=0`, own process), observer (own process) and a",
        "raw forwarder (own process: asyncio, forwards each read, parses nothing — the floor",
        "of any extra hop on this machine); interleaved rounds of streaming requests rotating",
        "Anthropic, OpenAI Responses and Gemini; time from send (new connections: from",
        "`connect()`) to receipt of the bytes completing the first content event.",
        "Added = observer − direct (raw forwarder − direct), per round. With 1 MiB request",
        "bodies (a 200-turn transcript) the observer also reads, parses and hashes every",
        "body's sections (issue 14's prefix check), on its reader thread after forwarding.",
        "",
        (
            "| connections | requests | direct median µs | observer median µs "
            "| added median µs | added p90 µs | added p99 µs | raw forwarder added median µs |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in lat.items():
        lines.append(
            f"| {name} | {int(r['n'])} | {r['direct_median_us']:.0f} | {r['proxy_median_us']:.0f} "
            f"| {r['added_median_us']:.0f} | {r['added_p90_us']:.0f} | {r['added_p99_us']:.0f} "
            f"| {r['raw_added_median_us']:.0f} |"
        )
    lines += [
        "",
        "## Throughput of a long stream",
        "",
        "20 MB of Anthropic `content_block_delta` SSE events from a minimal upstream, read to the",
        "end by a raw-socket client; best of 3 runs each.",
        "",
        "| HTTP chunking | MB | direct MB/s | observer MB/s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in thr.items():
        lines.append(
            f"| {name} | {r['bytes'] / 1e6:.1f} | {r['direct_mb_s']:.0f} | {r['proxy_mb_s']:.0f} "
            f"| {r['ratio']:.2f} |"
        )
    lines += [
        "",
        "The observer forwards every upstream read before parsing it, so per-chunk parsing",
        "(h11) limits throughput, not latency; a real model stream is a few tens of kB/s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one of its child roles); returns the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=240, help="pairs per connection mode")
    parser.add_argument("--stream-mb", type=float, default=20.0)
    parser.add_argument("--proxy-child", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--no-body-reading", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-child", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--upstream-child", type=int, metavar="BYTES", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="do not write the report")
    args = parser.parse_args(argv)
    if args.proxy_child:
        return proxy_child(args.proxy_child, read_bodies=not args.no_body_reading)
    if args.raw_child:
        return raw_child(args.raw_child)
    if args.upstream_child:
        return upstream_child(args.upstream_child)

    me = [str(Path(__file__).resolve())]
    children: list[subprocess.Popen[bytes]] = []
    fake: subprocess.Popen[bytes] | None = None
    try:
        fake, fake_url = _spawn(
            ["-m", "ttft_probe.testing.fake_provider", "--first-token-delay-ms", "0"]
        )
        children.append(fake)
        proxy, proxy_url = _spawn([*me, "--proxy-child", fake_url])
        children.append(proxy)
        raw, raw_url = _spawn([*me, "--raw-child", fake_url])
        children.append(raw)
        lat = {}
        modes = (
            ("keep-alive", True, CALLS, args.requests),
            ("new per request", False, CALLS, args.requests),
            ("keep-alive, 1 MiB request bodies", True, _big_calls(), args.requests // 2),
        )
        for mode, keep_alive, calls, n in modes:
            print(f"latency, {mode}: {n} pairs …", flush=True)
            lat[mode] = measure_latency(
                fake_url, proxy_url, raw_url, n, keep_alive=keep_alive, calls=calls
            )
        counts = _stop(proxy)
        children.remove(proxy)
        print(f"observer saw: {counts}")

        bulk, bulk_url = _spawn([*me, "--upstream-child", str(int(args.stream_mb * 1e6))])
        children.append(bulk)
        bulk_proxy, bulk_proxy_url = _spawn([*me, "--proxy-child", bulk_url])
        children.append(bulk_proxy)
        thr = {}
        for name, path in (("one chunk per event", "/fine"), ("64 KiB chunks", "/coalesced")):
            print(f"throughput, {name} …", flush=True)
            thr[name] = measure_throughput(bulk_url, bulk_proxy_url, path, runs=3)
    finally:
        for child in children:
            _stop(child, terminate=child is fake)

    report = render(lat, thr, machine())
    print()
    print(report)
    if not args.no_write:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(report, encoding="utf-8")
        print(f"written to {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
