"""The fake provider streams the three APIs with the injected delay, and logs ground truth."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers.sse import sse_events
from ttft_probe.testing.fake_provider import DEFAULT_ANSWER, FakeProvider

TIMEOUT_S = 10
DELAY_MS = 80


def _conn(fp: FakeProvider) -> http.client.HTTPConnection:
    url = urlsplit(fp.url)
    assert url.hostname is not None
    return http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_S)


def _post(
    conn: http.client.HTTPConnection, path: str, body: dict[str, Any]
) -> http.client.HTTPResponse:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def _sse(resp: http.client.HTTPResponse) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data) of every SSE event of a streamed response body."""
    return [(name, data) for name, data in sse_events(resp.read().decode()) if data is not None]


def _only_generation(fp: FakeProvider) -> dict[str, Any]:
    assert fp.wait_for(1, generation=True, timeout_s=TIMEOUT_S)
    (entry,) = fp.generations()
    return entry


def _assert_delayed(entry: dict[str, Any], delay_ms: float) -> None:
    assert entry["first_token_ns"] is not None
    assert entry["first_token_ns"] - entry["arrival_ns"] >= delay_ms * 1_000_000
    assert entry["end_ns"] >= entry["first_token_ns"]


USER = [{"role": "user", "content": "hi"}]


def test_anthropic_stream_events_text_and_log() -> None:
    with FakeProvider(first_token_delay_ms=DELAY_MS) as fp:
        conn = _conn(fp)
        resp = _post(
            conn, "/v1/messages?beta=true", {"model": "m", "stream": True, "messages": USER}
        )
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/event-stream"
        assert resp.getheader("Transfer-Encoding") == "chunked"
        events = _sse(resp)
        conn.close()
        entry = _only_generation(fp)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert len(deltas) >= 3
    assert all(deltas)
    assert "".join(deltas) == DEFAULT_ANSWER
    assert events[-2][1]["usage"]["output_tokens"] > 0
    assert entry["api"] == "anthropic"
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/messages"  # the query is never logged
    assert entry["stream"] is True
    assert entry["resumed"] is False
    assert entry["status"] == 200
    assert entry["model"] == "m"
    _assert_delayed(entry, DELAY_MS)
    json.dumps(entry)


def test_anthropic_json_count_tokens_and_warmup() -> None:
    with FakeProvider(first_token_delay_ms=DELAY_MS) as fp:
        conn = _conn(fp)  # one keep-alive connection for all four requests
        conn.request("HEAD", "/")
        head = conn.getresponse()
        head.read()
        conn.request("GET", "/")
        root = conn.getresponse()
        root.read()
        counted = _post(conn, "/v1/messages/count_tokens", {"messages": USER})
        tokens = json.loads(counted.read())
        resp = _post(conn, "/v1/messages", {"model": "m", "messages": USER})
        message = json.loads(resp.read())
        conn.close()
        assert fp.wait_for(4, timeout_s=TIMEOUT_S)
        log = fp.log
        entry = _only_generation(fp)
    assert (head.status, root.status, counted.status, resp.status) == (200, 200, 200, 200)
    assert tokens["input_tokens"] > 0
    assert message["content"] == [{"type": "text", "text": DEFAULT_ANSWER}]
    assert message["stop_reason"] == "end_turn"
    assert [(e["method"], e["generation"]) for e in log] == [
        ("HEAD", False),
        ("GET", False),
        ("POST", False),
        ("POST", True),
    ]
    assert all(e["first_token_ns"] is None for e in log[:3])
    assert entry["stream"] is False
    _assert_delayed(entry, DELAY_MS)


def test_openai_responses_stream_and_models() -> None:
    with FakeProvider(first_token_delay_ms=DELAY_MS) as fp:
        conn = _conn(fp)
        body = {"model": "gpt-5.5", "stream": True, "input": [{"role": "user", "content": "x"}]}
        events = _sse(_post(conn, "/v1/responses", body))
        conn.request("GET", "/v1/models")
        models = json.loads(conn.getresponse().read())
        conn.close()
        entry = _only_generation(fp)
    types = [d["type"] for _, d in events]
    assert [n for n, _ in events] == types
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [d["delta"] for _, d in events if d["type"] == "response.output_text.delta"]
    assert "".join(deltas) == DEFAULT_ANSWER
    assert events[-1][1]["response"]["usage"]["output_tokens"] > 0
    assert "gpt-5.5" in [m["id"] for m in models["data"]]
    assert entry["api"] == "openai"
    _assert_delayed(entry, DELAY_MS)


def test_gemini_stream_generate_and_count() -> None:
    base = "/v1beta/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    with FakeProvider(first_token_delay_ms=DELAY_MS) as fp:
        conn = _conn(fp)
        chunks = [d for _, d in _sse(_post(conn, f"{base}:streamGenerateContent?alt=sse", body))]
        whole = json.loads(_post(conn, f"{base}:generateContent", body).read())
        count = json.loads(_post(conn, f"{base}:countTokens", body).read())
        conn.close()
        assert fp.wait_for(2, generation=True, timeout_s=TIMEOUT_S)
        streamed, single = fp.generations()
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert len(texts) >= 3
    assert "".join(texts) == DEFAULT_ANSWER
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] > 0
    assert whole["candidates"][0]["content"]["parts"][0]["text"] == DEFAULT_ANSWER
    assert count["totalTokens"] > 0
    assert streamed["api"] == "gemini"
    assert streamed["path"] == f"{base}:streamGenerateContent"
    assert streamed["model"] == "gemini-2.5-flash"
    _assert_delayed(streamed, DELAY_MS)
    _assert_delayed(single, DELAY_MS)


@pytest.mark.parametrize(
    ("path", "history"),
    [
        ("/v1/messages", {"messages": [*USER, {"role": "assistant", "content": "a"}, *USER]}),
        ("/v1/responses", {"input": [{"role": "user"}, {"role": "assistant"}]}),
        ("/v1beta/models/g:streamGenerateContent", {"contents": [{"role": "model"}]}),
    ],
)
def test_resumed_conversation_gets_the_extra_delay(path: str, history: dict[str, Any]) -> None:
    with FakeProvider(first_token_delay_ms=DELAY_MS, resumed_extra_delay_ms=120) as fp:
        conn = _conn(fp)
        _post(conn, path, {"stream": True, **history}).read()
        conn.close()
        entry = _only_generation(fp)
    assert entry["resumed"] is True
    _assert_delayed(entry, DELAY_MS + 120)


def test_fault_status_with_retry_after_then_success() -> None:
    with FakeProvider(
        first_token_delay_ms=0, fault_status=429, retry_after_s=2, fault_count=1
    ) as fp:
        conn = _conn(fp)
        first = _post(conn, "/v1/messages", {"stream": True, "messages": USER})
        error = json.loads(first.read())
        second = _post(conn, "/v1/messages", {"stream": True, "messages": USER})
        second.read()
        conn.close()
        assert fp.wait_for(2, timeout_s=TIMEOUT_S)
        failed, ok = fp.generations()
    assert first.status == 429
    assert first.getheader("Retry-After") == "2"
    assert error["error"]["code"] == 429
    assert second.status == 200
    assert (failed["status"], failed["first_token_ns"]) == (429, None)
    assert ok["status"] == 200
    assert ok["first_token_ns"] is not None


def test_fault_status_500_for_every_call() -> None:
    with FakeProvider(first_token_delay_ms=0, fault_status=500) as fp:
        conn = _conn(fp)
        statuses = []
        for _ in range(2):
            resp = _post(conn, "/v1/responses", {"stream": True, "input": []})
            resp.read()
            statuses.append(resp.status)
        conn.close()
    assert statuses == [500, 500]


@pytest.mark.parametrize(("after", "token"), [(2, False), (5, True)])
def test_close_mid_stream(after: int, token: bool) -> None:
    # Anthropic preamble is 3 events: after 2 no text was sent, after 5 two deltas were.
    with FakeProvider(first_token_delay_ms=10, close_after_events=after) as fp:
        conn = _conn(fp)
        resp = _post(conn, "/v1/messages", {"stream": True, "messages": USER})
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        conn.close()
        entry = _only_generation(fp)
    assert info.value.partial.count(b"event: ") == after
    assert (entry["first_token_ns"] is not None) is token


def test_log_never_holds_bodies_headers_or_keys() -> None:
    with FakeProvider(first_token_delay_ms=0) as fp:
        conn = _conn(fp)
        conn.request(
            "POST",
            "/v1beta/models/g:generateContent?key=SECRET-KEY",
            json.dumps({"contents": [{"role": "user", "parts": [{"text": "SECRET-PROMPT"}]}]}),
            {"x-goog-api-key": "SECRET-KEY"},
        )
        conn.getresponse().read()
        conn.close()
        entry = _only_generation(fp)
    assert "SECRET" not in json.dumps(entry)
    assert set(entry) == {
        "api",
        "method",
        "path",
        "generation",
        "stream",
        "model",
        "resumed",
        "arrival_ns",
        "first_token_ns",
        "end_ns",
        "status",
    }


def test_unknown_path_is_404_and_other() -> None:
    with FakeProvider(first_token_delay_ms=0) as fp:
        conn = _conn(fp)
        resp = _post(conn, "/nope", {})
        resp.read()
        conn.close()
        assert fp.wait_for(1, timeout_s=TIMEOUT_S)
        (entry,) = fp.log
    assert resp.status == 404
    assert (entry["api"], entry["generation"]) == ("other", False)


def test_command_line_ready_line_log_file_and_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "provider.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ttft_probe.testing.fake_provider",
            "--port",
            "0",
            "--first-token-delay-ms",
            str(DELAY_MS),
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(TIMEOUT_S)
        assert ready, "no READY line"
        word, url = ready[0].split()
        assert word == "READY"
        assert url.startswith("http://127.0.0.1:")
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT_S)
        _post(conn, "/v1/messages", {"stream": True, "messages": USER}).read()
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    _assert_delayed(entry, DELAY_MS)
