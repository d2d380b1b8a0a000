"""The provider observer forwards faithfully and time-stamps requests and first content."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers.sse import sse_events
from ttft_probe._clock import monotonic_ns
from ttft_probe.errors import ConfigError, TtftProbeError
from ttft_probe.observer import (
    ObserverError,
    ObserverEvent,
    ProviderFirstContent,
    ProviderObserver,
    ProviderRequest,
    ProviderRequestBody,
    ProviderResponseEnd,
    _ContentDetector,
    _Link,
    _loads_yielding,
    analyze_body,
    classify_request,
    is_loopback_peer,
)
from ttft_probe.testing.fake_provider import FakeProvider
from ttft_probe.waterfall import RequestKind, request_sections

TIMEOUT_S = 10
MS = 1_000_000
USER = [{"role": "user", "content": "hi"}]
VOLATILE_KEYS = {"id", "item_id", "responseId", "created_at"}
HOP_BY_HOP = {"date", "connection", "keep-alive", "transfer-encoding"}


# --- helpers ------------------------------------------------------------------------------


Timing = ProviderRequest | ProviderFirstContent | ProviderResponseEnd
"""The observer's timing events (its body reports come from another thread)."""


class Recorder:
    """Collects observer events from the proxy thread; every wait is bounded."""

    def __init__(self) -> None:
        self.events: list[Timing] = []
        self.bodies: list[ProviderRequestBody] = []  # from the reader thread: kept apart
        self._cond = threading.Condition()

    def __call__(self, event: ObserverEvent) -> None:
        with self._cond:
            if isinstance(event, ProviderRequestBody):
                self.bodies.append(event)
            else:
                self.events.append(event)
            self._cond.notify_all()

    def wait_ends(self, count: int, timeout_s: float = TIMEOUT_S) -> list[Timing]:
        """Wait until ``count`` ProviderResponseEnd events arrived; return all events."""

        def done() -> bool:
            return sum(isinstance(e, ProviderResponseEnd) for e in self.events) >= count

        with self._cond:
            assert self._cond.wait_for(done, timeout=timeout_s), self.events
            return list(self.events)

    def of(self, request_id: int) -> list[Timing]:
        with self._cond:
            return [e for e in self.events if e.request_id == request_id]


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _conn(url: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", _port(url), timeout=TIMEOUT_S)


def _request(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    own = conn is None
    c = conn or _conn(url)
    try:
        data = json.dumps(body) if body is not None else None
        c.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        resp = c.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        if own:
            c.close()


def _strip_volatile(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: "*" if k in VOLATILE_KEYS else _strip_volatile(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_volatile(v) for v in obj]
    return obj


def _structure(body: bytes) -> list[Any]:
    """A body as comparable structure: SSE events (name, data) or one JSON value."""
    text = body.decode()
    if "data: " not in text:
        return [_strip_volatile(json.loads(text))]
    return [(name, _strip_volatile(data)) for name, data in sse_events(text)]


def _same_headers(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> None:
    def clean(h: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, v) for k, v in h if k.lower() not in HOP_BY_HOP]

    assert clean(a) == clean(b)
    assert [k for k, _ in a] == [k for k, _ in b]  # same names, same order, same case


def _assert_same(direct: tuple[int, list[tuple[str, str]], bytes], proxied: Any) -> None:
    assert proxied[0] == direct[0]
    _same_headers(direct[1], proxied[1])
    assert len(proxied[2]) == len(direct[2])  # ids are fixed-width: same length
    assert _structure(proxied[2]) == _structure(direct[2])


class FakeProviderProcess:
    """The fake provider in its own process (no GIL shared with the proxy's clock reads)."""

    def __init__(self, tmp_path: Path, first_token_delay_ms: float) -> None:
        self.log_path = tmp_path / "fake-provider.jsonl"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ttft_probe.testing.fake_provider",
                "--first-token-delay-ms",
                str(first_token_delay_ms),
                "--log",
                str(self.log_path),
                # Tests here send one request directly and again through the observer and
                # compare the answers: a prompt cache would report the second as cached.
                "--no-prompt-cache",
            ],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        assert sel.select(TIMEOUT_S), "the fake provider did not start"
        sel.close()
        line = self.proc.stdout.readline().decode()
        assert line.startswith("READY "), line
        self.url = line.split()[1]

    def log(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self.log_path.exists():
                lines = self.log_path.read_text().splitlines()
                if len(lines) >= count:
                    return [json.loads(line) for line in lines]
            time.sleep(0.01)
        raise AssertionError("the fake provider did not log in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def fake_process(tmp_path: Path) -> Iterator[FakeProviderProcess]:
    fp = FakeProviderProcess(tmp_path, first_token_delay_ms=60)
    try:
        yield fp
    finally:
        fp.stop()


Step = bytes | float | None  # bytes: send; float: sleep seconds; None: close the connection


class ScriptedUpstream:
    """A raw-socket upstream answering each request with scripted byte pieces.

    Records every raw request (head and body) and the monotonic ns just before each piece
    was sent, so tests can check byte identity and which read completed an event.
    """

    def __init__(
        self, script: Callable[[bytes], list[Step]], tls: ssl.SSLContext | None = None
    ) -> None:
        self._script = script
        self._tls = tls
        self.requests: list[bytes] = []
        self.sent_ns: list[int] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while b"0\r\n\r\n" not in rest:
                rest += conn.recv(65536)
            end = rest.index(b"0\r\n\r\n") + 5
        else:
            length = 0
            for line in lower.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(rest) < length:
                rest += conn.recv(65536)
            end = length
        return head + b"\r\n\r\n" + rest[:end], rest[end:]

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(raw, server_side=True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(TIMEOUT_S)
            buf = b""
            while not self._stop.is_set():
                got = self._read_request(conn, buf)
                if got is None:
                    return
                request, buf = got
                self.requests.append(request)
                for step in self._script(request):
                    if step is None:
                        return
                    if isinstance(step, float):
                        time.sleep(step)
                    else:
                        self.sent_ns.append(monotonic_ns())
                        conn.sendall(step)
        except OSError:
            return
        finally:
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._threads:
            t.join(TIMEOUT_S)


def _raw_exchange(port: int, request: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Send raw bytes, read until ``until(received)`` or EOF (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
        s.sendall(request)
        got = b""
        while not until(got):
            data = s.recv(65536)
            if not data:
                break
            got += data
        return got


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Mixed-Case: Kept\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _anthropic_event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


def _text_delta(text: str) -> bytes:
    return _anthropic_event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


PREAMBLE = _anthropic_event("message_start", {"type": "message_start", "message": {}}) + (
    _anthropic_event("ping", {"type": "ping"})
)


# --- classification and content rules (sans-I/O) ------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/messages", ("anthropic", True)),
        ("POST", "/v1/messages?beta=true", ("anthropic", True)),
        ("POST", "/anthropic/v1/messages", ("anthropic", True)),
        ("POST", "/v1/messages/count_tokens?beta=true", ("anthropic", False)),
        ("HEAD", "/", ("other", False)),
        ("GET", "/", ("other", False)),
        ("POST", "/v1/responses", ("openai", True)),
        ("POST", "/openai/v1/chat/completions", ("openai", True)),
        ("GET", "/v1/models", ("openai", False)),
        ("GET", "/v1/responses/resp_123", ("openai", False)),
        ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", ("gemini", None)),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", ("gemini", None)),
        ("POST", "/v1beta/models/gemini-2.5-pro:countTokens", ("gemini", False)),
        ("GET", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", ("gemini", False)),
        ("POST", "/v1/other", ("other", False)),
    ],
)
def test_classify_request(method: str, path: str, expected: tuple[str, bool | None]) -> None:
    assert classify_request(method, path) == expected


def _first_content_read(reads: list[bytes], *, sse: bool = True, encoding: bytes = b"") -> int:
    """Index of the read that completes the first content, -1 if none."""
    detector = _ContentDetector(sse=sse, content_encoding=encoding)
    for i, data in enumerate(reads):
        if detector.feed(data):
            return i
    return -1


def _sse(payload: dict[str, Any], name: str | None = None, nl: str = "\n") -> bytes:
    head = f"event: {name}{nl}" if name else ""
    return f"{head}data: {json.dumps(payload)}{nl}{nl}".encode()


CONTENT_CASES: dict[str, tuple[list[bytes], int]] = {
    "anthropic_preamble_then_text": ([PREAMBLE, _text_delta("Hi")], 1),
    "anthropic_empty_text_is_not_content": ([PREAMBLE + _text_delta(""), _text_delta("x")], 1),
    "anthropic_thinking": (
        [
            PREAMBLE,
            _sse(
                {
                    "type": "content_block_delta",
                    "delta": {"type": "thinking_delta", "thinking": "hmm"},
                },
                "content_block_delta",
            ),
        ],
        1,
    ),
    "anthropic_tool_json_is_not_content": (
        [
            _sse(
                {
                    "type": "content_block_delta",
                    "delta": {"type": "input_json_delta", "partial_json": '{"a'},
                },
                "content_block_delta",
            )
        ],
        -1,
    ),
    "event_split_across_reads": ([PREAMBLE + _text_delta("Hi")[:30], _text_delta("Hi")[30:]], 1),
    "boundary_split_between_newlines": (
        [_text_delta("Hi")[:-1], b"\n"],
        1,
    ),
    "openai_created_then_delta": (
        [
            _sse({"type": "response.created", "response": {}}, "response.created"),
            _sse({"type": "response.output_text.delta", "delta": ""}, "x"),
            _sse({"type": "response.output_text.delta", "delta": "Hel"}, "x"),
        ],
        2,
    ),
    "openai_reasoning_summary": (
        [_sse({"type": "response.reasoning_summary_text.delta", "delta": "Think"})],
        0,
    ),
    "chat_completions_role_chunk_then_content": (
        [
            _sse({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
            _sse({"choices": [{"delta": {"content": "Hi"}}]}),
            b"data: [DONE]\n\n",
        ],
        1,
    ),
    "gemini_crlf_chunks": (
        [
            _sse({"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]}, nl="\r\n"),
            _sse({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}, nl="\r\n")[:-2],
            b"\r\n",
        ],
        2,
    ),
}


@pytest.mark.parametrize("case", sorted(CONTENT_CASES))
def test_first_content_rules(case: str) -> None:
    reads, expected = CONTENT_CASES[case]
    assert _first_content_read(reads) == expected


def test_first_content_in_gzip_sse_split_anywhere() -> None:
    body = gzip.compress(PREAMBLE + _text_delta("Hello"))
    for cut in range(1, len(body), 7):
        assert _first_content_read([body[:cut], body[cut:]], encoding=b"gzip") in {0, 1}
    assert _first_content_read([gzip.compress(PREAMBLE)], encoding=b"gzip") == -1


def test_non_streaming_first_content_is_first_body_byte() -> None:
    assert _first_content_read([b"", b"{", b'"x": 1}'], sse=False) == 1


# --- the three APIs, streaming, against the fake provider in its own process ---------------

API_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "anthropic": ("/v1/messages?beta=true", {"model": "m", "stream": True, "messages": USER}),
    "openai": ("/v1/responses", {"model": "m", "stream": True, "input": USER}),
    "gemini": (
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ),
}


@pytest.mark.parametrize("api", sorted(API_CALLS))
def test_streaming_generation_is_observed_and_identical(
    api: str, fake_process: FakeProviderProcess
) -> None:
    path, body = API_CALLS[api]
    direct = _request(fake_process.url, "POST", path, body)
    rec = Recorder()
    with ProviderObserver(fake_process.url, rec) as obs:
        conn = _conn(obs.url)
        for _ in range(4):
            _assert_same(direct, _request(obs.url, "POST", path, body, conn=conn))
        conn.close()
        events = rec.wait_ends(4)
    kinds = [ProviderRequest, ProviderFirstContent, ProviderResponseEnd]
    assert [type(e) for e in events] == kinds * 4
    entries = fake_process.log(5)[1:]
    request_gaps, content_gaps = [], []
    for i, entry in enumerate(entries):
        request, first, end = events[3 * i : 3 * i + 3]
        assert isinstance(request, ProviderRequest)
        assert isinstance(first, ProviderFirstContent)
        assert isinstance(end, ProviderResponseEnd)
        assert request.request_id == first.request_id == end.request_id == i + 1
        assert (request.api, request.generation, end.status) == (api, True, 200)
        assert request.t_ns <= entry["arrival_ns"]
        assert first.t_ns >= entry["first_token_ns"]
        assert end.t_ns >= first.t_ns
        request_gaps.append(entry["arrival_ns"] - request.t_ns)
        content_gaps.append(first.t_ns - entry["first_token_ns"])
    # The median of the three warm requests, so that one scheduling hiccup of the fake
    # provider (its first request also waits for its new handler thread) on a loaded
    # machine does not fail the test; the order above holds for every request. A request
    # gap is the forward itself (the observer reads the head before it forwards it, the
    # provider after parsing it in Python): about 1 ms idle, over 2 ms on a loaded CI run.
    assert statistics.median(request_gaps[1:]) < 5 * MS, request_gaps
    assert statistics.median(content_gaps[1:]) < 2 * MS, content_gaps


# --- non-generation calls ----------------------------------------------------------------


def test_non_generation_calls_have_no_first_content() -> None:
    rec = Recorder()
    utility = {
        "contents": USER,
        "generationConfig": {"responseMimeType": "application/json"},
    }
    with FakeProvider(first_token_delay_ms=0) as fp, ProviderObserver(fp.url, rec) as obs:
        conn = _conn(obs.url)
        calls = [
            ("HEAD", "/", None),
            ("POST", "/v1/messages/count_tokens", {"messages": USER}),
            ("GET", "/v1/models", None),
            ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", utility),
            ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", {"contents": USER}),
        ]
        for method, path, body in calls:
            status, _, _ = _request(obs.url, method, path, body, conn=conn)
            assert status == 200
        conn.close()
        events = rec.wait_ends(len(calls))
    requests = [e for e in events if isinstance(e, ProviderRequest)]
    assert [(r.api, r.generation) for r in requests] == [
        ("other", False),
        ("anthropic", False),
        ("openai", False),
        ("gemini", False),
        ("gemini", False),
    ]
    assert not [e for e in events if isinstance(e, ProviderFirstContent)]


def test_gemini_generate_without_json_config_is_a_generation() -> None:
    rec = Recorder()
    with FakeProvider(first_token_delay_ms=0) as fp, ProviderObserver(fp.url, rec) as obs:
        body = {"contents": USER, "generationConfig": {"temperature": 0}}
        _request(obs.url, "POST", "/v1beta/models/g:generateContent", body)
        events = rec.wait_ends(1)
    assert [type(e) for e in events] == [ProviderRequest, ProviderFirstContent, ProviderResponseEnd]
    assert isinstance(events[0], ProviderRequest)
    assert events[0].generation is True


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (429, 7)])
def test_error_status_passes_through(status: int, retry_after: int | None) -> None:
    rec = Recorder()
    path, body = API_CALLS["anthropic"]
    with FakeProvider(fault_status=status, retry_after_s=retry_after) as fp:
        direct = _request(fp.url, "POST", path, body)
        with ProviderObserver(fp.url, rec) as obs:
            proxied = _request(obs.url, "POST", path, body)
            events = rec.wait_ends(1)
    assert direct[0] == status
    assert proxied == (direct[0], proxied[1], direct[2])
    _same_headers(direct[1], proxied[1])
    if retry_after is not None:
        assert ("Retry-After", str(retry_after)) in proxied[1]
    assert [type(e) for e in events] == [ProviderRequest, ProviderResponseEnd]
    assert isinstance(events[1], ProviderResponseEnd)
    assert events[1].status == status


def _truncated(url: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    conn = _conn(url)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        return resp.status, info.value.partial
    finally:
        conn.close()


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_upstream_close_mid_stream_truncates_the_agent_too(api: str) -> None:
    rec = Recorder()
    path, body = API_CALLS[api]
    with FakeProvider(first_token_delay_ms=0, close_after_events=5, prompt_cache=False) as fp:
        direct = _truncated(fp.url, path, body)
        with ProviderObserver(fp.url, rec) as obs:
            proxied = _truncated(obs.url, path, body)
            events = rec.wait_ends(1)
    assert proxied[0] == direct[0] == 200
    assert len(proxied[1]) == len(direct[1])
    assert _structure(proxied[1]) == _structure(direct[1])
    end = events[-1]
    assert isinstance(end, ProviderResponseEnd)
    assert end.status == 200


def test_unreachable_upstream_answers_502() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorder()
    with ProviderObserver(f"http://127.0.0.1:{port}", rec, connect_timeout_s=2) as obs:
        status, headers, body = _request(obs.url, "POST", *API_CALLS["anthropic"])
        events = rec.wait_ends(1)
    assert status == 502
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert body.startswith(b"ttft-probe observer:")
    assert len(body) < 100
    assert isinstance(events[-1], ProviderResponseEnd)
    assert events[-1].status is None


# --- keep-alive, 100-continue, request forwarding -----------------------------------------


def test_keep_alive_two_requests_one_connection() -> None:
    rec = Recorder()
    with FakeProvider(first_token_delay_ms=0) as fp, ProviderObserver(fp.url, rec) as obs:
        conn = _conn(obs.url)
        path, body = API_CALLS["anthropic"]
        socks = []
        for _ in range(2):
            status, _, _ = _request(obs.url, "POST", path, body, conn=conn)
            assert status == 200
            socks.append(conn.sock)
        assert socks[0] is not None
        assert socks[0] is socks[1]  # http.client would have reconnected after a close
        conn.close()
        events = rec.wait_ends(2)
        assert fp.wait_for(2, generation=True, timeout_s=TIMEOUT_S)  # logged after the reply
    assert [(type(e).__name__, e.request_id) for e in events] == [
        ("ProviderRequest", 1),
        ("ProviderFirstContent", 1),
        ("ProviderResponseEnd", 1),
        ("ProviderRequest", 2),
        ("ProviderFirstContent", 2),
        ("ProviderResponseEnd", 2),
    ]


def test_expect_100_continue_passes_through() -> None:
    rec = Recorder()
    body = json.dumps({"model": "m", "messages": USER}).encode()
    with FakeProvider(first_token_delay_ms=0) as fp, ProviderObserver(fp.url, rec) as obs:
        with socket.create_connection(("127.0.0.1", _port(obs.url)), timeout=TIMEOUT_S) as s:
            s.sendall(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            assert got.startswith(b"HTTP/1.1 100 Continue\r\n")
            s.sendall(body)
            while b'"stop_reason"' not in got:
                data = s.recv(65536)
                assert data
                got += data
        events = rec.wait_ends(1)
    assert b"HTTP/1.1 200 OK" in got
    assert isinstance(events[-1], ProviderResponseEnd)
    assert events[-1].status == 200


def test_request_is_forwarded_unchanged_but_host() -> None:
    up = ScriptedUpstream(lambda _req: [b"HTTP/1.1 204 No Content\r\n\r\n"])
    rec = Recorder()
    try:
        with ProviderObserver(up.url + "/v1", rec) as obs:
            assert obs.url.endswith("/v1")
            port = _port(obs.url)
            request = (
                b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                b"X-Mixed-Case: A b\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" % port
            )
            got = _raw_exchange(port, request, lambda b: b.endswith(b"\r\n\r\n"))
            rec.wait_ends(1)
    finally:
        up.close()
    assert got == b"HTTP/1.1 204 No Content\r\n\r\n"
    (forwarded,) = up.requests
    assert forwarded == (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"X-Mixed-Case: A b\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" % up.port
    )


# --- byte identity and read-level time stamps (scripted upstream) --------------------------


def test_response_bytes_are_identical_and_first_content_is_the_completing_read() -> None:
    delta = _text_delta("Hello")
    pieces = [SSE_HEAD + _chunk(PREAMBLE), _chunk(delta[:25]), _chunk(delta[25:]), b"0\r\n\r\n"]
    up = ScriptedUpstream(
        lambda _req: [pieces[0], 0.05, pieces[1], 0.05, pieces[2], 0.02, pieces[3]]
    )
    rec = Recorder()
    try:
        with ProviderObserver(up.url, rec) as obs:
            got = _raw_exchange(
                _port(obs.url),
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                lambda b: b.endswith(b"0\r\n\r\n"),
            )
            events = rec.wait_ends(1)
    finally:
        up.close()
    assert got == b"".join(pieces)  # framing, header case and order included
    first = events[1]
    assert isinstance(first, ProviderFirstContent)
    # The read that completed the event: after its bytes were sent, before the next piece
    # (20 ms later); not the read 50 ms earlier that carried the event's first half.
    assert up.sent_ns[2] <= first.t_ns < up.sent_ns[3]


def test_gzip_sse_and_close_delimited_body() -> None:
    body = gzip.compress(PREAMBLE + _text_delta("Hello"))
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Content-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    up = ScriptedUpstream(lambda _req: [head + body[:10], 0.05, body[10:], None])
    rec = Recorder()
    try:
        with ProviderObserver(up.url, rec) as obs:
            got = _raw_exchange(
                _port(obs.url),
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                lambda _b: False,  # until EOF: the proxy closes where the upstream did
            )
            events = rec.wait_ends(1)
    finally:
        up.close()
    assert got == head + body
    assert [type(e) for e in events] == [ProviderRequest, ProviderFirstContent, ProviderResponseEnd]
    assert events[1].t_ns >= up.sent_ns[1]


def test_https_upstream_with_sni(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    response = SSE_HEAD + _chunk(PREAMBLE) + _chunk(_text_delta("Hi")) + b"0\r\n\r\n"
    up = ScriptedUpstream(lambda _req: [response], tls=server_ctx)
    rec = Recorder()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        upstream = f"https://localhost:{up.port}"
        with ProviderObserver(upstream, rec, ssl_context=client_ctx) as obs:
            status, _, body = _request(obs.url, "POST", "/v1/messages", {"stream": True})
            events = rec.wait_ends(1)
    finally:
        up.close()
    assert status == 200
    assert body == PREAMBLE + _text_delta("Hi")
    # Every handshake (the request's and the pre-dialled spares') named the host.
    assert names
    assert set(names) == {"localhost"}
    assert b"\r\nHost: localhost:%d\r\n" % up.port in up.requests[0]
    assert [type(e) for e in events] == [ProviderRequest, ProviderFirstContent, ProviderResponseEnd]


# --- secrets, peers, callbacks, lifecycle --------------------------------------------------


@pytest.mark.fault("Observer", "secret in body, header value, header name, query, "
                   "malformed request",
                   outcome="none in the logs (DEBUG), upstream up or down", agent="—",
                   records_lost="n/a")
def test_no_body_header_or_key_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-ant-SECRET-d41d8cd98f00b204"
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    path, body = API_CALLS["anthropic"]
    planted = {**body, "messages": [{"role": "user", "content": secret}]}
    headers = {"x-api-key": secret, f"X-{secret}": "name-is-secret"}
    with FakeProvider(first_token_delay_ms=0, close_after_events=4, prompt_cache=False) as fp:
        with ProviderObserver(fp.url, rec) as obs:
            with pytest.raises(http.client.IncompleteRead):
                _request(obs.url, "POST", path + f"?k={secret}", planted, headers=headers)
            _raw_exchange(  # malformed request
                _port(obs.url), f"GARBAGE {secret}\r\n\r\n".encode(), lambda _b: False
            )
            rec.wait_ends(1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        with ProviderObserver(f"http://127.0.0.1:{dead}", rec, connect_timeout_s=2) as obs:
            _request(obs.url, "POST", path, planted, headers=headers)
    text = caplog.text + "".join(repr(r.args) + str(r.exc_info) for r in caplog.records)
    assert secret not in text
    assert "SECRET" not in text


@pytest.mark.parametrize(
    ("peer", "ok"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("10.0.0.7", 5000), False),
        (("192.168.1.2", 5000), False),
        (("::ffff:10.0.0.7", 5000, 0, 0), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (("not-an-ip", 1), False),
        (None, False),
        ("127.0.0.1", False),
    ],
)
@pytest.mark.fault("Observer", "peer addresses: IPv4/IPv6 loopback, v4-mapped, private, "
                   "documentation, unparsable",
                   outcome="only loopback peers accepted", agent="—", records_lost="n/a")
def test_is_loopback_peer(peer: object, ok: bool) -> None:
    assert is_loopback_peer(peer) is ok


class _PeerTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.peer = peer
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.fault("Observer", "connection from a non-loopback address",
                   outcome="refused (aborted before any upstream connection)", agent="—",
                   records_lost="n/a")
def test_non_loopback_peer_is_refused() -> None:
    observer = ProviderObserver("http://127.0.0.1:9", Recorder())
    link = _Link(observer)
    transport = _PeerTransport(("10.1.2.3", 40000))
    link.connection_made(transport)  # no loop needed: refused before connecting upstream
    assert transport.aborted
    assert not observer._links


def _listeners(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("tcp", "tcp6"):
        rows = Path(f"/proc/net/{table}").read_text("ascii").splitlines()[1:]
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if table == "tcp":
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.mark.fault("Observer", "bound to 127.0.0.1 only",
                   outcome="its one listening socket is 127.0.0.1:PORT (kernel table), "
                   "not 0.0.0.0 or ::", agent="—", records_lost="n/a")
def test_listens_on_loopback_only() -> None:
    with ProviderObserver("http://127.0.0.1:9", Recorder()) as obs:
        assert _listeners(_port(obs.url)) == {"127.0.0.1"}


def test_a_raising_callback_is_logged_once_and_forwarding_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[ObserverEvent] = []

    def boom(event: ObserverEvent) -> None:
        calls.append(event)
        raise RuntimeError("callback fault")

    caplog.set_level(logging.WARNING, logger="ttft_probe.observer")
    with FakeProvider(first_token_delay_ms=0) as fp, ProviderObserver(fp.url, boom) as obs:
        conn = _conn(obs.url)
        for _ in range(2):
            status, _, body = _request(obs.url, "POST", *API_CALLS["anthropic"], conn=conn)
            assert status == 200
            assert b"message_stop" in body
        conn.close()
    # Three timing events per request, and each body read after it was forwarded.
    assert len([e for e in calls if not isinstance(e, ProviderRequestBody)]) == 6
    assert len([e for e in calls if isinstance(e, ProviderRequestBody)]) == 2
    assert len([r for r in caplog.records if "on_event" in r.getMessage()]) == 1


def test_lifecycle() -> None:
    with pytest.raises(ConfigError):
        ProviderObserver("ftp://example.com", Recorder())
    with pytest.raises(ConfigError):
        ProviderObserver("https://user:key@example.com", Recorder())
    obs = ProviderObserver("https://api.openai.com/v1", Recorder())
    with pytest.raises(ObserverError):
        _ = obs.url
    url = obs.start()
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/v1")
    with pytest.raises(ObserverError):
        obs.start()
    t0 = time.monotonic()
    obs.stop()
    obs.stop()
    assert time.monotonic() - t0 < 3
    assert issubclass(ObserverError, TtftProbeError)
    assert issubclass(ObserverError, OSError)


@pytest.mark.fault("Observer", "stopped while a pre-dialled upstream connection completes",
                   outcome="that connection is closed with the loop (was a leaked socket)",
                   agent="—", records_lost="n/a")
def test_regression_a_dial_parked_after_shutdown_is_closed_with_the_loop() -> None:
    # Before: a pre-dialled upstream connection that completed after stop() had emptied
    # the pool stayed open when the loop closed (about 1 stop in 100 right after a
    # start): a leaked socket, and a ResourceWarning failing whichever test ran next.
    with FakeProvider(first_token_delay_ms=0) as fp:
        obs = ProviderObserver(fp.url, Recorder())
        obs.start()
        loop = obs._loop
        assert loop is not None
        deadline = time.monotonic() + 5
        while len(obs._pool) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        late: list[Any] = []

        def race() -> None:
            late.append(obs._pool.pop())  # a dial not yet parked when…
            obs._shutdown()  # …stop() empties the pool…
            obs._pool.append(late[0])  # …and parked right after it

        thread = obs._thread
        assert thread is not None
        loop.call_soon_threadsafe(race)
        thread.join(5)  # the loop ends on its own: no second shutdown drains the pool
        assert loop.is_closed()
        obs.stop()
    [parked] = late
    assert parked.transport is not None
    assert parked.transport.get_extra_info("socket").fileno() == -1  # closed, not leaked


def test_upstream_closing_an_idle_connection_closes_the_agents() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    up = ScriptedUpstream(lambda _req: [response, 0.1, None])
    rec = Recorder()
    try:
        with ProviderObserver(up.url, rec) as obs:
            with socket.create_connection(("127.0.0.1", _port(obs.url)), timeout=5) as s:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
                got = b""
                while True:
                    data = s.recv(4096)  # bounded by the socket timeout
                    if not data:
                        break
                    got += data
            rec.wait_ends(1)
    finally:
        up.close()
    assert got == response


def test_switching_protocols_becomes_a_raw_tunnel() -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )

    def script(request: bytes) -> list[Step]:
        if request.startswith(b"GET /v1/responses"):
            return [switch + b"hello"]
        return [b"pong:" + request]  # the scripted upstream reads "ping\r\n\r\n" as a request

    up = ScriptedUpstream(script)
    rec = Recorder()
    try:
        with ProviderObserver(up.url, rec) as obs:
            with socket.create_connection(("127.0.0.1", _port(obs.url)), timeout=5) as s:
                s.sendall(
                    b"GET /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n"
                )
                got = b""
                while not got.endswith(b"hello"):
                    got += s.recv(4096)
                assert got == switch + b"hello"
                s.sendall(b"ping\r\n\r\n")
                got = b""
                while not got.endswith(b"ping\r\n\r\n"):
                    got += s.recv(4096)
                assert got == b"pong:ping\r\n\r\n"
            events = rec.wait_ends(1)
    finally:
        up.close()
    assert isinstance(events[-1], ProviderResponseEnd)
    assert events[-1].status == 101


# --- reading a forwarded body ----------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "{}", '{"a":[]}', ' { "a" : [ 1 , {"b":[2]} ] , "c" : "x" , "d":null } ', "[1,2]", '"s"',
    '{"a":[1,]}', '{"a":1,}', "{1:2}", '{"a":1} x', '{"a":[1 2]}', '{"a":[1],"a":2}',
    '{"a" 1}', "{", '{"a":[', '  {"x":[[1,2],[3]]}  ', '{"a":[1,2]]}', "",
])
def test_the_piecewise_parse_is_json_loads(text: str) -> None:
    try:
        expected: object = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            _loads_yielding(text)
    else:
        assert _loads_yielding(text) == expected


def test_a_read_body_gives_its_model_tools_kind_and_section_digests() -> None:
    body = {"model": "claude-x", "max_tokens": 800, "tools": [{"name": "t"}],
            "system": [{"type": "text", "text": "s"}],
            "messages": [{"role": "user", "content": "x" * 70_000} for _ in range(20)]}
    raw = json.dumps(body).encode()
    read = analyze_body(3, "anthropic", RequestKind.GENERATION, gzip.compress(raw), b"gzip")
    assert (read.request_id, read.kind, read.model, read.has_tools) == (
        3, RequestKind.GENERATION, "claude-x", True)
    assert read.sections == request_sections("anthropic", body)
    # A body asking for one token is a quota check, one that must not generate a prewarm:
    # side calls, whose prompts are not compared.
    quota = analyze_body(4, "anthropic", RequestKind.GENERATION,
                         json.dumps({**body, "max_tokens": 1}).encode(), b"")
    assert (quota.kind, quota.sections) == (RequestKind.QUOTA, None)
    prewarm = analyze_body(5, "openai", RequestKind.GENERATION,
                           json.dumps({"model": "g", "generate": False}).encode(), b"")
    assert prewarm.kind is RequestKind.PREWARM
    # What cannot be read has no sections, and says nothing else either.
    for unreadable, encoding in ((b"not json", b""), (raw, b"zstd"), (None, b"")):
        read = analyze_body(6, "anthropic", RequestKind.GENERATION, unreadable, encoding,
                            "from-the-head")
        assert (read.kind, read.model, read.sections) == (
            RequestKind.GENERATION, "from-the-head", None)


def test_large_bodies_in_uneven_reads_and_a_pipelined_request_arrive_unchanged() -> None:
    # A Content-Length body goes upstream ahead of the observer's HTTP parser: what the
    # upstream gets must still be exactly what the agent sent, request after request.
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    up = ScriptedUpstream(lambda _req: [answer])
    rec = Recorder()
    bodies = [json.dumps({"model": "m", "messages": [
        {"role": "user", "content": f"{n} " + "y" * size}]}).encode()
        for n, size in ((1, 3_000_000), (2, 70_000), (3, 5))]
    stream = b"".join(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body) for body in bodies)
    try:
        with ProviderObserver(up.url, rec) as obs, socket.create_connection(
                ("127.0.0.1", _port(obs.url)), timeout=TIMEOUT_S) as s:
            for start, size in enumerate((1, 300_000, 65_537, 5, 2_000_000, 10**7)):
                begin = sum((1, 300_000, 65_537, 5, 2_000_000)[:start])
                s.sendall(stream[begin : begin + size])
            got = b""
            while got.count(b"{}") < len(bodies):
                data = s.recv(65536)
                assert data
                got += data
            rec.wait_ends(len(bodies))
    finally:
        up.close()
    assert [r.partition(b"\r\n\r\n")[2] for r in up.requests] == bodies
    ends = [e for e in rec.events if isinstance(e, ProviderResponseEnd)]
    assert [e.request_bytes for e in ends] == [len(b) for b in bodies]
