"""The fake provider streams the three APIs with the injected delay, and logs ground truth."""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from helpers.sse import sse_events
from ttft_probe.testing import fake_provider
from ttft_probe.testing.fake_provider import DEFAULT_ANSWER, FakeProvider

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

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
    assert all(e[k] is None for e in log[:3] for k in CACHE_KEYS)  # generation calls only
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
        *CACHE_KEYS,
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


@contextmanager
def _command_line(*args: str) -> Iterator[http.client.HTTPConnection]:
    """Run ``python -m ttft_probe.testing.fake_provider ARGS``; a connection to it.

    Checks the READY line on the way in, and on the way out that SIGTERM ends it with 0
    and that it printed nothing else.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttft_probe.testing.fake_provider", "--port", "0", *args],
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
        yield conn
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


def test_command_line_ready_line_log_file_and_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "provider.jsonl"
    with _command_line("--first-token-delay-ms", str(DELAY_MS), "--log", str(log)) as conn:
        _post(conn, "/v1/messages", {"stream": True, "messages": USER}).read()
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    _assert_delayed(entry, DELAY_MS)
    assert entry["cache_read_tokens"] == 0


# --- the prompt cache ---------------------------------------------------------------------

CACHE_KEYS = (
    "request_bytes",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "uncached_tokens",
    "cached_sections",
    "first_uncached_section",
    "added_delay_ms",
)


def _strip_marks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_marks(v) for v in value]
    return value


def _tokens(*values: Any) -> int:
    """The tokens of these sections, worked out here independently of the fake."""
    total = 0
    for value in values:
        text = json.dumps(
            _strip_marks(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        total += max(1, len(text.encode()) // 4)
    return total


def _generate(fp: FakeProvider, path: str, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Send one generation call: (its SSE events or JSON answer, its log entry)."""
    before = len(fp.generations())  # every earlier call was awaited here
    conn = _conn(fp)
    resp = _post(conn, path, body)
    if resp.getheader("Content-Type") == "text/event-stream":
        answer: Any = _sse(resp)
    else:
        answer = json.loads(resp.read())
    conn.close()
    assert fp.wait_for(before + 1, generation=True, timeout_s=TIMEOUT_S)
    return answer, fp.generations()[-1]


def _message_start_usage(events: list[tuple[str | None, dict[str, Any]]]) -> dict[str, Any]:
    (start,) = [d for n, d in events if n == "message_start"]
    usage: dict[str, Any] = start["message"]["usage"]
    return usage


TOOL: dict[str, Any] = {
    "name": "read",
    "description": "Read a file. " * 8,
    "input_schema": {"type": "object"},
}
SYSTEM: list[dict[str, Any]] = [
    {"type": "text", "text": "You are a careful coding agent. " * 4},
    {"type": "text", "text": "Project notes: tabs, not spaces. " * 4},
]
TURN_1: list[dict[str, Any]] = [
    {"role": "user", "content": "Which files are here? Please list them all."}
]
TURN_2: list[dict[str, Any]] = [
    *TURN_1,
    {"role": "assistant", "content": "README.md and main.py."},
    {"role": "user", "content": "Read main.py."},
]


def _anthropic_body(
    messages: list[dict[str, Any]], system: list[dict[str, Any]] = SYSTEM
) -> dict[str, Any]:
    return {"model": "m", "stream": True, "tools": [TOOL], "system": system, "messages": messages}


def _anthropic_prefix(body: dict[str, Any], messages: int) -> int:
    """Tokens of the sections up to and including ``messages[messages - 1]``."""
    return _tokens(body["model"], *body["tools"], *body["system"], *body["messages"][:messages])


def test_anthropic_repeat_is_read_from_the_cache() -> None:
    body = _anthropic_body(TURN_1)
    total = _anthropic_prefix(body, 1)
    with FakeProvider(first_token_delay_ms=0) as fp:
        first_events, first = _generate(fp, "/v1/messages", body)
        again_events, again = _generate(fp, "/v1/messages", body)
    assert _message_start_usage(first_events) == {
        "input_tokens": total,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert {k: first[k] for k in CACHE_KEYS} == {
        "request_bytes": len(json.dumps(body)),
        "input_tokens": total,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "uncached_tokens": total,
        "cached_sections": 0,
        "first_uncached_section": "model",
        "added_delay_ms": 0,
    }
    assert _message_start_usage(again_events) == {
        "input_tokens": 0,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": total,
    }
    assert {k: again[k] for k in CACHE_KEYS} == {
        "request_bytes": len(json.dumps(body)),
        "input_tokens": total,
        "cache_read_tokens": total,
        "cache_write_tokens": 0,
        "uncached_tokens": 0,
        "cached_sections": 5,  # model, tools[0], system[0], system[1], messages[0]
        "first_uncached_section": None,
        "added_delay_ms": 0,
    }


def test_anthropic_appended_message_and_changed_system_block() -> None:
    turn_1 = _anthropic_body(TURN_1)
    turn_2 = _anthropic_body(TURN_2)
    edited = _anthropic_body(TURN_2, [SYSTEM[0], {"type": "text", "text": "Use spaces."}])
    with FakeProvider(first_token_delay_ms=0) as fp:
        _generate(fp, "/v1/messages", turn_1)
        second_events, second = _generate(fp, "/v1/messages", turn_2)
        edited_events, changed = _generate(fp, "/v1/messages", edited)
        _, reordered = _generate(fp, "/v1/messages", {**turn_2, "model": "other"})
    cached = _anthropic_prefix(turn_1, 1)
    assert (second["cached_sections"], second["first_uncached_section"]) == (5, "messages[1]")
    assert second["cache_read_tokens"] == cached
    assert second["input_tokens"] == _anthropic_prefix(turn_2, 3)
    assert second["uncached_tokens"] == _tokens(*TURN_2[1:])
    assert _message_start_usage(second_events)["cache_read_input_tokens"] == cached
    assert _message_start_usage(second_events)["input_tokens"] == _tokens(*TURN_2[1:])
    # A changed second system block: only model, the tool and system[0] stay cached.
    assert (changed["cached_sections"], changed["first_uncached_section"]) == (3, "system[1]")
    assert changed["cache_read_tokens"] == _tokens("m", TOOL, SYSTEM[0])
    assert changed["cache_read_tokens"] < second["cache_read_tokens"]
    assert _message_start_usage(edited_events)["cache_read_input_tokens"] == _tokens(
        "m", TOOL, SYSTEM[0]
    )
    # The cache is per model: the model's own section is the first one and it differs.
    assert (reordered["cached_sections"], reordered["first_uncached_section"]) == (0, "model")


def test_anthropic_cache_control_is_not_content_and_decides_the_write() -> None:
    mark = {"type": "ephemeral"}
    marked_system: list[dict[str, Any]] = [SYSTEM[0], {**SYSTEM[1], "cache_control": mark}]
    last: dict[str, Any] = {"type": "text", "text": "Read main.py.", "cache_control": mark}
    moved = [*TURN_2[:2], {"role": "user", "content": [last]}]
    with FakeProvider(first_token_delay_ms=0) as fp:
        first_events, first = _generate(fp, "/v1/messages", _anthropic_body(TURN_2, marked_system))
        # The marker moved to the last message, whose content is now a list: the system
        # and the first two messages are still cached, the changed last message is not.
        moved_events, moved_entry = _generate(fp, "/v1/messages", _anthropic_body(moved))
        # Same content as the first call, marker moved from system[1] to system[0].
        remarked: list[dict[str, Any]] = [{**SYSTEM[0], "cache_control": mark}, SYSTEM[1]]
        _, remarked_entry = _generate(fp, "/v1/messages", _anthropic_body(TURN_2, remarked))
        # No marker at all: the uncached rest is plain input, nothing is written.
        plain_events, plain = _generate(
            fp, "/v1/messages", _anthropic_body([*TURN_2, {"role": "user", "content": "ok"}])
        )
    total = _anthropic_prefix(_anthropic_body(TURN_2), 3)
    assert _message_start_usage(first_events) == {
        "input_tokens": 0,
        "output_tokens": 1,
        "cache_creation_input_tokens": total,
        "cache_read_input_tokens": 0,
    }
    assert (first["cache_write_tokens"], first["uncached_tokens"]) == (total, total)
    assert (moved_entry["cached_sections"], moved_entry["first_uncached_section"]) == (
        6,
        "messages[2]",
    )
    written = _tokens(moved[2])
    assert _message_start_usage(moved_events) == {
        "input_tokens": 0,
        "output_tokens": 1,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": _anthropic_prefix(_anthropic_body(TURN_2), 2),
    }
    assert moved_entry["cache_write_tokens"] == written
    assert remarked_entry["cache_read_tokens"] == total
    assert remarked_entry["first_uncached_section"] is None
    assert remarked_entry["cache_write_tokens"] == 0
    assert plain["first_uncached_section"] == "messages[3]"
    assert _message_start_usage(plain_events) == {
        "input_tokens": _tokens({"role": "user", "content": "ok"}),
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": total,
    }
    assert plain["cache_write_tokens"] == 0


def test_anthropic_json_answer_string_system_and_gzip_body() -> None:
    body = {"model": "m", "system": "Be brief. " * 10, "messages": TURN_1}
    data = gzip.compress(json.dumps(body).encode())
    with FakeProvider(first_token_delay_ms=0) as fp:
        _generate(fp, "/v1/messages", body)
        conn = _conn(fp)
        conn.request(
            "POST",
            "/v1/messages",
            data,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        message = json.loads(conn.getresponse().read())
        conn.close()
        assert fp.wait_for(2, generation=True, timeout_s=TIMEOUT_S)
        entry = fp.generations()[-1]
    total = _tokens("m", body["system"], *TURN_1)
    assert message["usage"] == {
        "input_tokens": 0,
        "output_tokens": 15,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": total,
    }
    assert entry["request_bytes"] == len(data)  # as received, still compressed
    assert (entry["cached_sections"], entry["input_tokens"]) == (3, total)


def test_openai_responses_report_cached_tokens() -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "List files."}]}]
    body: dict[str, Any] = {
        "model": "gpt-5.5",
        "stream": True,
        "instructions": "You are codex. " * 10,
        "tools": [{"type": "function", "name": "shell"}],
        "input": items,
    }
    longer = {**body, "input": [*items, {"role": "assistant", "content": "a.py"}]}
    with FakeProvider(first_token_delay_ms=0) as fp:
        first_events, first = _generate(fp, "/v1/responses", body)
        events, entry = _generate(fp, "/v1/responses", longer)
        whole, single = _generate(fp, "/v1/responses", {**longer, "stream": False})
        _, text_input = _generate(fp, "/v1/responses", {"model": "gpt-5.5", "input": "hi"})
    completed = events[-1][1]
    assert completed["type"] == "response.completed"
    cached = _tokens("gpt-5.5", body["instructions"], *body["tools"], *items)
    total = cached + _tokens(longer["input"][1])
    assert completed["response"]["usage"] == {
        "input_tokens": total,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": 15,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": total + 15,
    }
    assert first_events[-1][1]["response"]["usage"]["input_tokens_details"] == {"cached_tokens": 0}
    assert (first["first_uncached_section"], first["cache_write_tokens"]) == ("model", None)
    assert (entry["cached_sections"], entry["first_uncached_section"]) == (4, "input[1]")
    assert (entry["cache_read_tokens"], entry["uncached_tokens"]) == (cached, total - cached)
    assert entry["cache_write_tokens"] is None
    assert whole["usage"]["input_tokens_details"] == {"cached_tokens": total}
    assert single["first_uncached_section"] is None
    assert (text_input["input_tokens"], text_input["first_uncached_section"]) == (
        _tokens("gpt-5.5", "hi"),
        "input[0]",
    )


def test_gemini_reports_cached_content_tokens() -> None:
    base = "/v1beta/models/gemini-2.5-pro"
    contents = [{"role": "user", "parts": [{"text": "Explain this repository to me."}]}]
    system = {"parts": [{"text": "You are Gemini CLI. " * 10}]}
    body: dict[str, Any] = {"systemInstruction": system, "contents": contents}
    longer = {**body, "contents": [*contents, {"role": "model", "parts": [{"text": "ok"}]}]}
    with FakeProvider(first_token_delay_ms=0) as fp:
        first_events, first = _generate(fp, f"{base}:streamGenerateContent?alt=sse", body)
        events, entry = _generate(fp, f"{base}:streamGenerateContent?alt=sse", longer)
        whole, _ = _generate(fp, f"{base}:generateContent", longer)
        _, other_model = _generate(fp, "/v1beta/models/g:generateContent", longer)
    cached = _tokens(body["systemInstruction"], *contents)
    total = cached + _tokens(longer["contents"][1])
    first_usage = first_events[-1][1]["usageMetadata"]
    assert "cachedContentTokenCount" not in first_usage  # as Gemini: only when above 0
    assert first_usage["promptTokenCount"] == cached
    assert all("usageMetadata" not in d for _, d in events[:-1])
    assert events[-1][1]["usageMetadata"] == {
        "promptTokenCount": total,
        "cachedContentTokenCount": cached,
        "candidatesTokenCount": 15,
        "totalTokenCount": total + 15,
    }
    assert whole["usageMetadata"]["cachedContentTokenCount"] == total
    assert first["first_uncached_section"] == "systemInstruction"  # no model in the body
    assert (entry["cached_sections"], entry["first_uncached_section"]) == (2, "contents[1]")
    assert (entry["cache_read_tokens"], entry["cache_write_tokens"]) == (cached, None)
    assert other_model["cache_read_tokens"] == 0  # the model in the path keys the cache


def test_no_prompt_cache_caches_nothing() -> None:
    body = _anthropic_body(TURN_1, [{**SYSTEM[0], "cache_control": {"type": "ephemeral"}}])
    with FakeProvider(first_token_delay_ms=0, prompt_cache=False) as fp:
        _generate(fp, "/v1/messages", body)
        events, entry = _generate(fp, "/v1/messages", body)
    total = _tokens("m", TOOL, SYSTEM[0], *TURN_1)
    assert _message_start_usage(events) == {
        "input_tokens": total,  # no cache, so nothing is written to one either
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert {k: entry[k] for k in CACHE_KEYS if k != "request_bytes"} == {
        "input_tokens": total,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "uncached_tokens": total,
        "cached_sections": 0,
        "first_uncached_section": "model",
        "added_delay_ms": 0,
    }


def test_command_line_no_prompt_cache_and_uncached_token_delay(tmp_path: Path) -> None:
    log = tmp_path / "provider.jsonl"
    args = ("--first-token-delay-ms", "0", "--log", str(log))
    rate = ("--uncached-token-delay-ms", "0.5")
    body = _anthropic_body(TURN_1)
    for extra in ((), ("--no-prompt-cache",)):
        with _command_line(*args, *rate, *extra) as conn:
            for _ in range(2):
                _post(conn, "/v1/messages", body).read()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    total = _anthropic_prefix(body, 1)
    assert [e["cache_read_tokens"] for e in entries] == [0, total, 0, 0]
    assert [e["added_delay_ms"] for e in entries] == [total * 0.5, 0, total * 0.5, total * 0.5]
    for entry in entries:
        _assert_delayed(entry, entry["added_delay_ms"])


@pytest.mark.parametrize("stream", [True, False])
def test_uncached_tokens_delay_the_first_token(stream: bool) -> None:
    rate_ms = 1.5
    body = {**_anthropic_body(TURN_1), "stream": stream}
    longer = {**_anthropic_body(TURN_2), "stream": stream}
    with FakeProvider(first_token_delay_ms=20, uncached_token_delay_ms=rate_ms) as fp:
        _, cold = _generate(fp, "/v1/messages", body)
        _, warm = _generate(fp, "/v1/messages", body)
        _, grown = _generate(fp, "/v1/messages", longer)
    assert cold["uncached_tokens"] > 40  # a delay well above the timer's noise
    for entry in (cold, warm, grown):
        assert entry["added_delay_ms"] == pytest.approx(entry["uncached_tokens"] * rate_ms)
        _assert_delayed(entry, 20 + entry["added_delay_ms"])
    assert warm["added_delay_ms"] == 0
    assert 0 < grown["added_delay_ms"] < cold["added_delay_ms"]
    assert grown["first_token_ns"] - grown["arrival_ns"] < (
        cold["first_token_ns"] - cold["arrival_ns"]
    )


def test_a_faulted_call_is_counted_but_not_remembered() -> None:
    body = _anthropic_body(TURN_1)
    with FakeProvider(
        first_token_delay_ms=0, uncached_token_delay_ms=1, fault_status=500, fault_count=1
    ) as fp:
        _, failed = _generate(fp, "/v1/messages", body)
        _, retried = _generate(fp, "/v1/messages", body)
        _, again = _generate(fp, "/v1/messages", body)
    total = _anthropic_prefix(body, 1)
    assert failed["status"] == 500
    assert (failed["input_tokens"], failed["cache_read_tokens"]) == (total, 0)
    assert failed["added_delay_ms"] == 0  # no first token was held
    assert (retried["status"], retried["cache_read_tokens"]) == (200, 0)
    assert retried["added_delay_ms"] == total
    assert again["cache_read_tokens"] == total


def test_the_cache_forgets_the_oldest_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_provider, "CACHE_MEMORY", 2)
    bodies = [_anthropic_body([{"role": "user", "content": f"question {i}"}]) for i in range(3)]
    with FakeProvider(first_token_delay_ms=0) as fp:
        for body in bodies:
            _generate(fp, "/v1/messages", body)
        _, forgotten = _generate(fp, "/v1/messages", bodies[0])
        _, kept = _generate(fp, "/v1/messages", bodies[2])
    # The two remembered requests share model, tool and system; their messages differ.
    assert (forgotten["cached_sections"], forgotten["first_uncached_section"]) == (
        4,
        "messages[0]",
    )
    assert (kept["cached_sections"], kept["first_uncached_section"]) == (5, None)
