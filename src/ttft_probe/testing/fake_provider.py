"""A small streaming fake LLM provider on 127.0.0.1, the ground truth for real-CLI tests.

It speaks just enough of three provider APIs for the real agent CLIs (DESIGN §9) to
complete a turn offline:

- Anthropic Messages: ``POST /v1/messages`` (SSE when ``stream`` is true, else JSON),
  ``POST /v1/messages/count_tokens``, ``HEAD /`` and ``GET /``.
- OpenAI Responses: ``POST /v1/responses`` (SSE as codex reads it), ``GET /v1/models``.
- Gemini: ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``,
  ``:generateContent`` and ``:countTokens``.

Every generation call answers with the same short text, split into a few deltas
``delta_interval_ms`` apart. The stream's preamble (``message_start``,
``response.created``, …) is sent at once; the first text delta is held until
``first_token_delay_ms`` after the request arrived, plus ``resumed_extra_delay_ms`` when
the request's history already holds an assistant turn (a resumed conversation), plus
``uncached_token_delay_ms`` per uncached input token (below).

Prompt cache. A generation request's body is cut into *sections* in the provider's cache
order, each one value of the body as canonical JSON (keys sorted, no spaces, UTF-8, every
``cache_control`` key removed at any depth: a cache marker is not cached content). First
``model`` (when the body has it; Gemini names it in the path), then

- Anthropic: ``tools[i]``, ``system[i]`` (a string system is ``system[0]``, a list one
  section per block), ``messages[i]``;
- OpenAI Responses: ``instructions``, ``tools[i]``, ``input[i]`` (a string input is
  ``input[0]``);
- Gemini: ``systemInstruction`` (or ``system_instruction``), ``tools[i]``,
  ``contents[i]``.

A section counts ``max(1, bytes // 4)`` tokens; a request's input tokens are the sum over
its sections (``count_tokens`` / ``countTokens`` answer a rougher ~4-bytes-per-token count
of the whole body). The cached prefix is the longest run of leading sections equal, in
name and content, to the leading sections of any of the last 1000 answered generation
requests of the same API and model; a request is remembered after its own answer was
worked out, and a call answered with a fault is not remembered. With ``prompt_cache``
off, nothing is ever cached. The usage is reported in each API's own fields:

- Anthropic ``usage`` (``message_start`` and the JSON message): ``cache_read_input_tokens``
  the cached tokens; the uncached rest is ``cache_creation_input_tokens`` when the body
  holds a ``cache_control`` marker anywhere (and the cache is on), else ``input_tokens``;
  the other of the two is 0.
- OpenAI ``response.usage`` (``response.completed`` and the JSON response):
  ``input_tokens`` (cached included), ``input_tokens_details.cached_tokens``,
  ``output_tokens``, ``total_tokens``.
- Gemini ``usageMetadata`` (last chunk, JSON answer): ``promptTokenCount`` (cached
  included), ``cachedContentTokenCount`` (only when above 0), ``candidatesTokenCount``,
  ``totalTokenCount``.

Every request is logged as one JSON-serialisable dict: ``api``, ``method``, ``path``
(without the query), ``generation``, ``stream``, ``model`` (the model asked for, generation
calls only), ``resumed``, ``status`` and the monotonic
readings ``arrival_ns`` (request head read), ``first_token_ns`` (just before the first
text delta was written; ``None`` if none) and ``end_ns``. The monotonic clock
(``CLOCK_MONOTONIC``) is shared by every process on Linux, so these readings are the
ground truth a probe's markers are compared against. Generation calls also log the
prompt cache's ground truth (``None`` for every other request): ``request_bytes`` (the
body's length as received, before any ``Content-Encoding`` was undone), ``input_tokens``
(all input tokens), ``cache_read_tokens`` (the cached prefix's tokens),
``cache_write_tokens`` (Anthropic's ``cache_creation_input_tokens``; ``None`` for the other
APIs), ``uncached_tokens`` (input minus cache read), ``cached_sections`` (how many leading
sections were cached), ``first_uncached_section`` (the name of the first section past the
cached prefix, e.g. ``"messages[3]"``; ``None`` when every section was cached or there is
none) and ``added_delay_ms`` (``uncached_tokens × uncached_token_delay_ms``, the extra hold
of the first text delta in ms; 0 for a call answered with a fault). A body the fake
cannot decode (e.g. ``zstd``) counts as ``{}``: no sections, 0 input tokens. Bodies,
headers and keys are never logged.

Run it alone with ``python -m ttft_probe.testing.fake_provider``: it prints one line
``READY http://127.0.0.1:PORT`` when listening and appends the log as JSON lines to
``--log FILE``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType, TracebackType

__all__ = ["DEFAULT_ANSWER", "FakeProvider", "LogEntry", "main", "split_answer"]

DEFAULT_ANSWER = "The quick brown fox jumps over the lazy dog, twice and then once more."
"""The fixed answer of every generation call."""

LogEntry = dict[str, Any]
"""One request of the log (keys as in the module docstring)."""

Api = Literal["anthropic", "openai", "gemini", "other"]

_GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>\w+)$")

# (SSE event name or None, JSON payload, payload carries answer text)
_Event = tuple[str | None, dict[str, Any], bool]


def split_answer(text: str, parts: int = 5) -> list[str]:
    """``text`` cut at word boundaries into about ``parts`` non-empty deltas."""
    words = text.split(" ")
    size = max(1, -(-len(words) // parts))
    chunks = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [c if i == len(chunks) - 1 else c + " " for i, c in enumerate(chunks)]


def _rough_tokens(body: dict[str, Any]) -> int:
    """A stable, plausible token count for a request body (about 4 bytes per token)."""
    return max(1, len(json.dumps(body)) // 4)


CACHE_MEMORY = 1000
"""How many earlier generation requests per API the prompt cache remembers."""

_Section = tuple[str, bytes]
"""A section of a request body: its name (``"messages[2]"``) and canonical JSON."""


def _without_cache_control(value: Any) -> Any:
    """``value`` with every ``cache_control`` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def _has_cache_control(value: Any) -> bool:
    """Whether ``value`` holds a ``cache_control`` key anywhere."""
    if isinstance(value, dict):
        return "cache_control" in value or any(_has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


def _canonical(value: Any) -> bytes:
    """The canonical JSON of ``value`` (cache markers removed), UTF-8."""
    text = json.dumps(
        _without_cache_control(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return text.encode()


def _section_tokens(canonical: bytes) -> int:
    return max(1, len(canonical) // 4)


def _prompt_sections(api: Api, body: dict[str, Any]) -> list[_Section]:
    """The sections of a generation request's body, in the provider's cache order."""
    sections: list[_Section] = []

    def single(name: str, *keys: str) -> None:
        for key in keys:
            if body.get(key) is not None:
                sections.append((name, _canonical(body[key])))
                return

    def listed(name: str, *keys: str) -> None:
        for key in keys:
            value = body.get(key)
            if value is None:
                continue
            items = value if isinstance(value, list) else [value]
            sections.extend((f"{name}[{i}]", _canonical(v)) for i, v in enumerate(items))
            return

    single("model", "model")
    if api == "anthropic":
        listed("tools", "tools")
        listed("system", "system")
        listed("messages", "messages")
    elif api == "openai":
        single("instructions", "instructions")
        listed("tools", "tools")
        listed("input", "input")
    elif api == "gemini":
        single("systemInstruction", "systemInstruction", "system_instruction")
        listed("tools", "tools")
        listed("contents", "contents")
    return sections


def _prefix_keys(api: Api, model: str, sections: Sequence[_Section]) -> list[bytes]:
    """One key per leading run of sections: equal keys, equal (API, model, run)."""
    key = hashlib.blake2b(f"{api}\0{model}".encode(), digest_size=16).digest()
    keys = []
    for name, canonical in sections:
        digest = hashlib.blake2b(canonical, digest_size=16).digest()
        key = hashlib.blake2b(key + name.encode() + b"\0" + digest, digest_size=16).digest()
        keys.append(key)
    return keys


@dataclass(frozen=True)
class _Prompt:
    """A generation request's input as the prompt cache saw it."""

    sections: list[_Section]
    cached_sections: int
    marked: bool  # the body holds a cache_control marker

    @property
    def input_tokens(self) -> int:
        return sum(_section_tokens(c) for _, c in self.sections)

    @property
    def cached_tokens(self) -> int:
        return sum(_section_tokens(c) for _, c in self.sections[: self.cached_sections])

    @property
    def uncached_tokens(self) -> int:
        return self.input_tokens - self.cached_tokens

    @property
    def first_uncached_section(self) -> str | None:
        if self.cached_sections < len(self.sections):
            return self.sections[self.cached_sections][0]
        return None


class _ClientGoneError(Exception):
    """The client closed the connection, or a fault asked us to drop it."""


class _Handler(BaseHTTPRequestHandler):
    """One connection; ``server.provider`` holds the options and the log."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a delta must leave now, not after the next ACK
    server_version = "ttft-probe-fake-provider"
    sys_version = ""

    server: _Server
    _entry: LogEntry

    # --- plumbing ---------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the default stderr access log (it would print paths and clients)."""

    def _begin(self) -> None:
        path = self.path.split("?", 1)[0]
        self._entry = {
            "api": _classify(path),
            "method": self.command,
            "path": path,
            "generation": False,
            "stream": False,
            "model": None,
            "resumed": False,
            "arrival_ns": time.monotonic_ns(),
            "first_token_ns": None,
            "end_ns": None,
            "status": None,
        }
        self._raw_bytes = 0

    def _finish(self) -> None:
        self._entry["end_ns"] = time.monotonic_ns()
        self.server.provider._record(self._entry)  # noqa: SLF001

    def _read_body(self) -> dict[str, Any]:
        """The request's JSON body (``{}`` if absent or unreadable)."""
        raw = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in {b"\r\n", b"\n", b""}:
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
        self._raw_bytes = len(raw)
        encoding = self.headers.get("Content-Encoding", "").lower()
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            elif encoding:
                return {}  # e.g. zstd: not in the stdlib; answer anyway
            body = json.loads(raw) if raw else {}
        except (OSError, ValueError, zlib.error):
            return {}
        return body if isinstance(body, dict) else {}

    def _send_json(self, status: int, payload: dict[str, Any], *, token: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if token:
            self._entry["first_token_ns"] = time.monotonic_ns()  # just before the write
        self.wfile.write(data)
        self.wfile.flush()
        self._entry["status"] = status

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._entry["status"] = status

    def _write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGoneError from exc

    def _wait_first_token(self) -> None:
        """Sleep until the injected first-token delay after arrival has passed."""
        provider = self.server.provider
        delay_ms = provider.first_token_delay_ms
        if self._entry["resumed"]:
            delay_ms += provider.resumed_extra_delay_ms
        delay_ms += self._entry["added_delay_ms"] or 0
        due_ns = self._entry["arrival_ns"] + int(delay_ms * 1_000_000)
        remaining_ns = due_ns - time.monotonic_ns()
        if remaining_ns > 0:
            time.sleep(remaining_ns / 1e9)

    def _stream_sse(self, preamble: Sequence[_Event], answer: Sequence[_Event]) -> None:
        """Send an SSE body: ``preamble`` at once, ``answer`` after the injected delay.

        Events carrying answer text are ``delta_interval_ms`` apart; ``first_token_ns`` is
        read just before the first of them is written. A ``close_after_events`` fault drops
        the connection once that many events were sent.
        """
        provider = self.server.provider
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self._entry["status"] = 200
        sent = 0
        for phase, events in (("preamble", preamble), ("answer", answer)):
            if phase == "answer":
                self._wait_first_token()
            for name, payload, has_text in events:
                if provider.close_after_events is not None and sent >= provider.close_after_events:
                    self.close_connection = True
                    raise _ClientGoneError
                if has_text and self._entry["first_token_ns"] is not None:
                    time.sleep(provider.delta_interval_ms / 1000)
                head = f"event: {name}\n" if name else ""
                chunk = f"{head}data: {json.dumps(payload)}\n\n".encode()
                if has_text and self._entry["first_token_ns"] is None:
                    # Read just BEFORE the write: a reading after it could land after the
                    # agent already printed the token when this thread is descheduled.
                    self._entry["first_token_ns"] = time.monotonic_ns()
                self._write_chunk(chunk)
                sent += 1
        self._write_chunk(b"")

    def _generation(
        self, api: Api, body: dict[str, Any], *, model: str, stream: bool, resumed: bool
    ) -> _Prompt | None:
        """Log a generation call and its prompt; ``None`` when it was answered with a fault.

        The prompt cache is consulted for every call, but only a call that is answered
        (no fault) is remembered by it.
        """
        provider = self.server.provider
        self._entry.update(generation=True, stream=stream, model=model, resumed=resumed)
        status, retry_after = provider._take_fault()  # noqa: SLF001
        prompt = provider._prompt(api, model, body, remember=status is None)  # noqa: SLF001
        self._entry.update(
            request_bytes=self._raw_bytes,
            input_tokens=prompt.input_tokens,
            cache_read_tokens=prompt.cached_tokens,
            cache_write_tokens=None,
            uncached_tokens=prompt.uncached_tokens,
            cached_sections=prompt.cached_sections,
            first_uncached_section=prompt.first_uncached_section,
            added_delay_ms=0.0,
        )
        if api == "anthropic":
            self._entry["cache_write_tokens"] = _anthropic_usage(provider, prompt)[
                "cache_creation_input_tokens"
            ]
        if status is not None:
            self._send_fault(status, retry_after)
            return None
        self._entry["added_delay_ms"] = prompt.uncached_tokens * provider.uncached_token_delay_ms
        return prompt

    def _send_fault(self, status: int, retry_after: int | None) -> None:
        """Answer with the configured fault status."""
        payload = {"error": {"type": "fake_fault", "code": status, "message": "injected fault"}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self._entry["status"] = status

    # --- dispatch -----------------------------------------------------------------------

    def do_HEAD(self) -> None:
        """``HEAD`` anything: 200, empty (Claude Code's connection warm-up)."""
        self._begin()
        try:
            self._send_empty(200)
        finally:
            self._finish()

    def do_GET(self) -> None:
        """``GET /`` and ``GET /v1/models``; anything else is 404."""
        self._begin()
        try:
            path = self._entry["path"]
            if path.rstrip("/") in {"", "/v1"}:
                self._send_json(200, {"ok": True})
            elif path.rstrip("/").endswith("/models"):
                self._send_json(200, _openai_models())
            else:
                self._send_json(404, {"error": {"message": "not found"}})
        except OSError:
            self.close_connection = True
        finally:
            self._finish()

    def do_POST(self) -> None:
        """Route a ``POST`` to the API it belongs to."""
        self._begin()
        try:
            body = self._read_body()
            path = self._entry["path"]
            gemini = _GEMINI_PATH.match(path)
            if path.endswith("/messages/count_tokens"):
                self._send_json(200, {"input_tokens": _rough_tokens(body)})
            elif path.endswith("/messages"):
                self._anthropic(body)
            elif path.endswith("/responses"):
                self._openai(body)
            elif gemini and gemini["method"] == "countTokens":
                self._send_json(200, {"totalTokens": _rough_tokens(body)})
            elif gemini and gemini["method"] in {"generateContent", "streamGenerateContent"}:
                self._gemini(body, gemini["model"], stream=gemini["method"].startswith("stream"))
            else:
                self._send_json(404, {"error": {"message": "not found"}})
        except (_ClientGoneError, OSError):
            self.close_connection = True
        finally:
            self._finish()

    # --- the three APIs -----------------------------------------------------------------

    def _anthropic(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        model = str(body.get("model") or "claude-fake")
        prompt = self._generation(
            "anthropic",
            body,
            model=model,
            stream=bool(body.get("stream")),
            resumed=isinstance(messages, list)
            and any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages),
        )
        if prompt is None:
            return
        provider = self.server.provider
        msg_id = f"msg_{uuid.uuid4().hex[:24]}"
        usage_in = _anthropic_usage(provider, prompt)
        deltas = split_answer(provider.answer)
        if not self._entry["stream"]:
            self._wait_first_token()
            self._send_json(
                200, _anthropic_message(msg_id, model, provider.answer, usage_in), token=True
            )
            return
        start = _anthropic_message(msg_id, model, "", usage_in)
        start["content"] = []
        start["stop_reason"] = None
        start["usage"]["output_tokens"] = 1
        preamble: list[_Event] = [
            ("message_start", {"type": "message_start", "message": start}, False),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                False,
            ),
            ("ping", {"type": "ping"}, False),
        ]
        answer: list[_Event] = [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": d},
                },
                True,
            )
            for d in deltas
        ]
        answer += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}, False),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(deltas) * 3},
                },
                False,
            ),
            ("message_stop", {"type": "message_stop"}, False),
        ]
        self._stream_sse(preamble, answer)

    def _openai(self, body: dict[str, Any]) -> None:
        items = body.get("input")
        model = str(body.get("model") or "gpt-fake")
        prompt = self._generation(
            "openai",
            body,
            model=model,
            stream=bool(body.get("stream")),
            resumed=isinstance(items, list)
            and any(isinstance(i, dict) and i.get("role") == "assistant" for i in items),
        )
        if prompt is None:
            return
        provider = self.server.provider
        resp_id = f"resp_{uuid.uuid4().hex}"
        item_id = f"msg_{uuid.uuid4().hex}"
        usage = _openai_usage(prompt.input_tokens, prompt.cached_tokens, 15)
        done_item = {
            "type": "message",
            "id": item_id,
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": provider.answer, "annotations": []}],
        }
        if not self._entry["stream"]:
            self._wait_first_token()
            resp = _openai_response(resp_id, model, "completed", [done_item], usage)
            self._send_json(200, resp, token=True)
            return
        seq = iter(range(1_000_000))

        def ev(kind: str, *, has_text: bool = False, **fields: Any) -> _Event:
            return (kind, {"type": kind, "sequence_number": next(seq), **fields}, has_text)

        part0 = {"type": "output_text", "text": "", "annotations": []}
        preamble = [
            ev(
                "response.created",
                response=_openai_response(resp_id, model, "in_progress", [], None),
            ),
            ev(
                "response.in_progress",
                response=_openai_response(resp_id, model, "in_progress", [], None),
            ),
            ev(
                "response.output_item.added",
                output_index=0,
                item={
                    "type": "message",
                    "id": item_id,
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            ),
            ev(
                "response.content_part.added",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part=part0,
            ),
        ]
        answer = [
            ev(
                "response.output_text.delta",
                has_text=True,
                item_id=item_id,
                output_index=0,
                content_index=0,
                delta=d,
                logprobs=[],
            )
            for d in split_answer(provider.answer)
        ]
        answer += [
            ev(
                "response.output_text.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                text=provider.answer,
                logprobs=[],
            ),
            ev(
                "response.content_part.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part=done_item["content"][0],
            ),
            ev("response.output_item.done", output_index=0, item=done_item),
            ev(
                "response.completed",
                response=_openai_response(resp_id, model, "completed", [done_item], usage),
            ),
        ]
        self._stream_sse(preamble, answer)

    def _gemini(self, body: dict[str, Any], model: str, *, stream: bool) -> None:
        contents = body.get("contents")
        prompt = self._generation(
            "gemini",
            body,
            model=model,
            stream=stream,
            resumed=isinstance(contents, list)
            and any(isinstance(c, dict) and c.get("role") == "model" for c in contents),
        )
        if prompt is None:
            return
        provider = self.server.provider
        if not stream:
            self._wait_first_token()
            self._send_json(
                200,
                _gemini_chunk(model, _gemini_answer(body, provider.answer), prompt, final=True),
                token=True,
            )
            return
        deltas = split_answer(provider.answer)
        answer: list[_Event] = [
            (None, _gemini_chunk(model, d, prompt, final=i == len(deltas) - 1), True)
            for i, d in enumerate(deltas)
        ]
        self._stream_sse([], answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: FakeProvider


def _classify(path: str) -> Api:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1/responses", "/v1/models", "/v1/chat")):
        return "openai"
    if _GEMINI_PATH.match(path):
        return "gemini"
    return "other"


def _anthropic_usage(provider: FakeProvider, prompt: _Prompt) -> dict[str, int]:
    """Anthropic's input usage: ``input_tokens`` counts only uncached input."""
    to_cache = provider.prompt_cache and prompt.marked
    return {
        "input_tokens": 0 if to_cache else prompt.uncached_tokens,
        "cache_creation_input_tokens": prompt.uncached_tokens if to_cache else 0,
        "cache_read_input_tokens": prompt.cached_tokens,
    }


def _anthropic_message(
    msg_id: str, model: str, text: str, usage_in: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage_in["input_tokens"],
            "output_tokens": 15,
            "cache_creation_input_tokens": usage_in["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage_in["cache_read_input_tokens"],
        },
    }


def _openai_usage(input_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _openai_response(
    resp_id: str, model: str, status: str, output: list[Any], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": None,
    }


def _openai_models() -> dict[str, Any]:
    ids = ["gpt-5.5", "gpt-5", "gpt-4.1"]
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": "fake"} for i in ids],
    }


def _gemini_answer(body: dict[str, Any], answer: str) -> str:
    """The text of a non-streaming Gemini answer.

    Gemini CLI asks small structured questions with ``generateContent`` (e.g. "who speaks
    next"); when the request wants JSON, answer with a JSON object that ends the turn.
    """
    config = body.get("generationConfig") or {}
    if isinstance(config, dict) and config.get("responseMimeType") == "application/json":
        return json.dumps({"reasoning": answer, "next_speaker": "user"})
    return answer


def _gemini_chunk(model: str, text: str, prompt: _Prompt, *, final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    chunk: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": model,
        "responseId": uuid.uuid4().hex[:20],
    }
    if final:
        candidate["finishReason"] = "STOP"
        usage: dict[str, int] = {"promptTokenCount": prompt.input_tokens}
        if prompt.cached_tokens > 0:
            usage["cachedContentTokenCount"] = prompt.cached_tokens
        usage["candidatesTokenCount"] = 15
        usage["totalTokenCount"] = prompt.input_tokens + 15
        chunk["usageMetadata"] = usage
    return chunk


class FakeProvider:
    """The fake provider server, run in a background thread on 127.0.0.1.

    Use it as a context manager (``with FakeProvider(first_token_delay_ms=300) as fp:``),
    point the agent at :attr:`url`, and read the ground truth from :attr:`log`.

    Args:
        first_token_delay_ms: Delay from a generation request's arrival to its first text
            delta (ms, monotonic).
        resumed_extra_delay_ms: Added to the delay when the request's history already
            holds an assistant turn (ms).
        port: TCP port; 0 picks a free one.
        answer: The fixed answer text of every generation call.
        delta_interval_ms: Gap between two text deltas (ms).
        fault_status: Answer generation calls with this HTTP status instead (e.g. 500, 429).
        retry_after_s: ``Retry-After`` header value (seconds) sent with ``fault_status``.
        fault_count: Only the first this-many generation calls fail; ``None``: all of them.
        close_after_events: Drop the connection of a streaming generation call after this
            many SSE events (preamble included).
        log_path: Also append every log entry as a JSON line to this file.
        prompt_cache: Simulate the provider's prompt cache (module docstring); ``False``:
            nothing is ever cached, token counts are unchanged.
        uncached_token_delay_ms: Added to the first-token delay per uncached input token
            of the request (ms per token).
    """

    def __init__(  # noqa: D107 - documented on the class
        self,
        first_token_delay_ms: float = 500,
        resumed_extra_delay_ms: float = 0,
        *,
        port: int = 0,
        answer: str = DEFAULT_ANSWER,
        delta_interval_ms: float = 5,
        fault_status: int | None = None,
        retry_after_s: int | None = None,
        fault_count: int | None = None,
        close_after_events: int | None = None,
        log_path: Path | None = None,
        prompt_cache: bool = True,
        uncached_token_delay_ms: float = 0.0,
    ) -> None:
        self.first_token_delay_ms = first_token_delay_ms
        self.resumed_extra_delay_ms = resumed_extra_delay_ms
        self.answer = answer
        self.delta_interval_ms = delta_interval_ms
        self.fault_status = fault_status
        self.retry_after_s = retry_after_s
        self.close_after_events = close_after_events
        self.prompt_cache = prompt_cache
        self.uncached_token_delay_ms = uncached_token_delay_ms
        self._faults_left = fault_count
        self._port = port
        self._log_path = log_path
        self._entries: list[LogEntry] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Per API: the prefix keys of the last CACHE_MEMORY remembered requests, and how
        # many of those requests hold each key.
        self._cache_requests: dict[Api, deque[list[bytes]]] = {}
        self._cache_keys: dict[bytes, int] = {}

    _LOG_KEYS: ClassVar[tuple[str, ...]] = (
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
        "request_bytes",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "uncached_tokens",
        "cached_sections",
        "first_uncached_section",
        "added_delay_ms",
    )

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._server is None:
            raise RuntimeError("the fake provider is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def log(self) -> list[LogEntry]:
        """A copy of the log: one dict per finished request, in order of completion."""
        with self._lock:
            return [dict(e) for e in self._entries]

    def generations(self) -> list[LogEntry]:
        """The log's generation calls, in order of arrival."""
        return sorted((e for e in self.log if e["generation"]), key=lambda e: e["arrival_ns"])

    def wait_for(self, count: int, *, timeout_s: float = 10, generation: bool = False) -> bool:
        """Wait until the log holds ``count`` entries (generation calls only, if asked).

        Returns:
            Whether the count was reached within ``timeout_s`` seconds.
        """

        def reached() -> bool:
            return sum(1 for e in self._entries if e["generation"] or not generation) >= count

        with self._changed:
            return self._changed.wait_for(reached, timeout=timeout_s)

    def start(self) -> FakeProvider:
        """Start listening in a background thread; returns ``self``.

        Raises:
            RuntimeError: It is already running.
            OSError: The port cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the fake provider is already running")
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.provider = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-provider",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and join the server thread; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        """Start the server (see :meth:`start`)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server (see :meth:`stop`)."""
        self.stop()

    def _take_fault(self) -> tuple[int | None, int | None]:
        """The fault status (and Retry-After) for the next generation call, if any."""
        with self._lock:
            if self.fault_status is None:
                return None, None
            if self._faults_left is not None:
                if self._faults_left <= 0:
                    return None, None
                self._faults_left -= 1
            return self.fault_status, self.retry_after_s

    def _prompt(self, api: Api, model: str, body: dict[str, Any], *, remember: bool) -> _Prompt:
        """Cut ``body`` into sections and look its prefix up in the prompt cache.

        The lookup and the remembering are one step, so concurrent requests see each
        other in some order.
        """
        sections = _prompt_sections(api, body)
        marked = _has_cache_control(body)
        if not self.prompt_cache:
            return _Prompt(sections, 0, marked)
        keys = _prefix_keys(api, model, sections)
        with self._lock:
            cached = 0
            while cached < len(keys) and keys[cached] in self._cache_keys:
                cached += 1
            if remember:
                requests = self._cache_requests.setdefault(api, deque())
                if len(requests) >= CACHE_MEMORY:
                    for key in requests.popleft():
                        self._cache_keys[key] -= 1
                        if not self._cache_keys[key]:
                            del self._cache_keys[key]
                requests.append(keys)
                for key in keys:
                    self._cache_keys[key] = self._cache_keys.get(key, 0) + 1
        return _Prompt(sections, cached, marked)

    def _record(self, entry: LogEntry) -> None:
        clean = {k: entry.get(k) for k in self._LOG_KEYS}
        with self._changed:
            self._entries.append(clean)
            if self._log_path is not None:
                with self._log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(clean) + "\n")
            self._changed.notify_all()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ttft_probe.testing.fake_provider",
        description="A streaming fake LLM provider (Anthropic, OpenAI Responses, Gemini).",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-token-delay-ms", type=float, default=500)
    parser.add_argument("--resumed-extra-delay-ms", type=float, default=0)
    parser.add_argument("--fault-status", type=int, default=None)
    parser.add_argument("--retry-after-s", type=int, default=None)
    parser.add_argument("--fault-count", type=int, default=None)
    parser.add_argument("--close-after-events", type=int, default=None)
    parser.add_argument("--log", type=Path, default=None, help="append JSON lines here")
    parser.add_argument(
        "--no-prompt-cache",
        dest="prompt_cache",
        action="store_false",
        help="cache nothing (every input token is uncached)",
    )
    parser.add_argument(
        "--uncached-token-delay-ms",
        type=float,
        default=0.0,
        help="extra first-token delay per uncached input token (ms)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake provider until SIGTERM or SIGINT.

    Prints exactly one line, ``READY http://127.0.0.1:PORT``, once it is listening.

    Returns:
        The exit status, 0.
    """
    args = _parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    provider = FakeProvider(
        args.first_token_delay_ms,
        args.resumed_extra_delay_ms,
        port=args.port,
        fault_status=args.fault_status,
        retry_after_s=args.retry_after_s,
        fault_count=args.fault_count,
        close_after_events=args.close_after_events,
        log_path=args.log,
        prompt_cache=args.prompt_cache,
        uncached_token_delay_ms=args.uncached_token_delay_ms,
    )
    with provider:
        sys.stdout.write(f"READY {provider.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
