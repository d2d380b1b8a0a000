"""The provider observer: a local pass-through reverse proxy that time-stamps model calls.

DESIGN §6. One-shot agent CLIs make their model-bound request invisibly; pointing the
agent's base-URL variable (``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL`` or a codex provider
``base_url``, ``GOOGLE_GEMINI_BASE_URL``) at the URL :meth:`ProviderObserver.start` returns
makes every request pass through this proxy, which forwards it unchanged to the real
upstream and reports three kinds of event to an ``on_event`` callback:

- :class:`ProviderRequest` when a request's head has been read from the agent (for a Gemini
  generate call: once its body has shown whether it is a JSON utility call, but still
  time-stamped at the head);
- :class:`ProviderFirstContent` once per generation response, when the bytes carrying the
  first model output arrived from the upstream;
- :class:`ProviderResponseEnd` exactly once per request: when the upstream's response was
  complete, when it failed (``status`` is ``None`` if it failed before a status line), or
  when the agent went away first (not for a request cut off by :meth:`~ProviderObserver.stop`).

All ``t_ns`` are :func:`ttft_probe._clock.monotonic_ns` readings (``CLOCK_MONOTONIC``, ns),
taken when the bytes were read from the socket, before anything else was done with them.
``on_event`` runs on the proxy's thread; it must be cheap. An exception it raises is logged
once and otherwise ignored.

API: ``ProviderObserver(upstream, on_event, *, ssl_context=None, connect_timeout_s=30.0)``;
``start(timeout=5.0) -> str`` (the base URL for the agent, also :attr:`ProviderObserver.url`),
``stop(timeout=2.0)`` (idempotent, bounded), or use it as a context manager. The event
classes are frozen ``attrs`` classes; ``ObserverEvent`` is their union. The two rules a
caller may want on their own are public too: :func:`classify_request` and
:func:`is_loopback_peer`. Raises :class:`ObserverError` (a ``TtftProbeError`` and an
``OSError``) when it cannot start, :class:`~ttft_probe.errors.ConfigError` for a bad
``upstream``.

Classification (method and path only, plus the body of Gemini generate calls); ``api`` is
the path's shape, ``generation`` is true only for ``POST`` to:

- anthropic: ``…/v1/messages`` (not ``…/v1/messages/count_tokens`` or other sub-paths);
- openai: ``…/responses``, ``…/chat/completions``, ``…/completions`` (not ``…/models``,
  ``…/models/{id}``, ``…/embeddings``, ``…/responses/{id}``); Anthropic's model list has
  the same shape as OpenAI's and is reported as ``openai`` (nothing is timed from it);
- gemini: ``…/models/{m}:streamGenerateContent`` and ``…:generateContent``, unless the body
  asks for JSON (``generationConfig.responseMimeType == "application/json"``: Gemini CLI's
  routing and next-speaker checks); ``:countTokens`` and the rest are not;
- other (``HEAD /``, ``GET /``, anything else): never.

First content (of a 2xx response to a generation call; error bodies are never content):

- ``text/event-stream`` bodies are decoded for observation only (chunked framing by h11,
  ``gzip``/``deflate`` ``Content-Encoding`` by :mod:`zlib`, incrementally) and split into SSE
  events; the first event carrying non-empty model output is the first content:
  Anthropic ``content_block_delta`` with a non-empty ``text_delta.text`` or
  ``thinking_delta.thinking``; OpenAI Responses ``response.output_text.delta``,
  ``response.reasoning_text.delta``, ``response.reasoning_summary_text.delta`` or
  ``response.refusal.delta`` with a non-empty ``delta``; chat-completions chunks with a
  non-empty ``choices[].delta.content`` (or ``reasoning_content``/``reasoning``/``refusal``);
  Gemini chunks with a non-empty ``candidates[].content.parts[].text``. Preamble events
  (``message_start``, ``response.created``, pings, tool-call argument deltas) are not content.
- Any other body (a non-streaming JSON answer): its first body byte.

The time stamp is that of the upstream read that carried the completing bytes of the event.

Faithfulness: response bytes are forwarded raw, read by read, before they are parsed, so
the agent receives exactly the upstream's status line, headers (order and case), framing
and body. The request head is re-serialised by h11 with the ``Host`` value replaced (h11
writes ``Host`` first); the target and every other header are kept; the request body is
streamed (``Content-Length`` or chunked, as the agent framed it). One upstream connection
per agent connection, opened when the agent connects; when the upstream closes (idle or
mid-response) the agent's connection is closed at the same point; an upstream that cannot
be reached is answered with ``502`` and a short text body. ``Expect: 100-continue`` and
``101 Switching Protocols`` (then a raw tunnel) pass through. HTTP/1.1 only (an HTTP/1.0
request is answered with ``505``). Only loopback peers are served.

Nothing here logs or stores a body, a header value, a header name, a key or a path: log
lines carry request ids, api names, statuses and exception type names only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import json
import logging
import queue
import re
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal, Self, cast
from urllib.parse import urlsplit

import attrs
import h11

from ttft_probe._clock import monotonic_ns
from ttft_probe._logonce import LogOnce
from ttft_probe.errors import ConfigError, TtftProbeError
from ttft_probe.waterfall import (
    RequestKind,
    RequestUsage,
    Section,
    merge_usage,
    request_sections,
    usage_from_payload,
)

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "Api",
    "ObserverError",
    "ObserverEvent",
    "ProviderFirstContent",
    "ProviderObserver",
    "ProviderRequest",
    "ProviderRequestBody",
    "ProviderResponseEnd",
    "classify_request",
    "is_loopback_peer",
]

logger = logging.getLogger(__name__)

Api = Literal["anthropic", "openai", "gemini", "other"]
"""The provider API a request belongs to, by the shape of its path."""

_APIS: frozenset[str] = frozenset({"anthropic", "openai", "gemini", "other"})


class ObserverError(TtftProbeError, OSError):
    """The observer cannot start (no free port, thread did not come up in time, …)."""


@attrs.frozen
class ProviderRequest:
    """A request's head has been read from the agent.

    Attributes:
        request_id: 1, 2, … in order of arrival, per observer.
        t_ns: Monotonic ns (``CLOCK_MONOTONIC``) when the request head was complete.
        api: The provider API, by path shape.
        generation: Whether this is a model generation call (module docstring).
    """

    request_id: int = attrs.field(validator=attrs.validators.gt(0))
    t_ns: int
    api: Api = attrs.field(validator=attrs.validators.in_(_APIS))
    generation: bool
    kind: RequestKind = RequestKind.OTHER
    """What the request is for, by method and path (a POST body may refine it:
    :class:`ProviderRequestBody`)."""


@attrs.frozen
class ProviderFirstContent:
    """The first bytes carrying model output arrived from the upstream (once per response).

    Attributes:
        request_id: The :class:`ProviderRequest` this answers.
        t_ns: Monotonic ns when the upstream read carrying the completing bytes of the
            first content event returned (before it was forwarded).
    """

    request_id: int = attrs.field(validator=attrs.validators.gt(0))
    t_ns: int


@attrs.frozen
class ProviderResponseEnd:
    """The exchange is over (exactly once per request).

    Attributes:
        request_id: The :class:`ProviderRequest` this ends.
        t_ns: Monotonic ns when the end was read (or the failure noticed).
        status: The upstream's HTTP status; ``None`` if the upstream failed (or could not
            be reached) before sending one.
        request_bytes: The request body's size in bytes, as the agent sent it.
        usage: The token usage a 2xx generation response reported (DESIGN §10), ``None``
            when it reported none.
    """

    request_id: int = attrs.field(validator=attrs.validators.gt(0))
    t_ns: int
    status: int | None
    request_bytes: int = 0
    usage: RequestUsage | None = None


@attrs.frozen
class ProviderRequestBody:
    """What a request's body says, read after the request was forwarded (POST bodies only).

    Attributes:
        request_id: The :class:`ProviderRequest` whose body this is.
        kind: What the request is for (:class:`~ttft_probe.waterfall.RequestKind`), now that
            the body is known (``quota``, ``prewarm``, ``routing`` …).
        model: The model the body asks for.
        has_tools: The body offers the model tools.
        sections: The body's section digests in its provider's cache order
            (:func:`~ttft_probe.waterfall.request_sections`); ``None`` when the body could
            not be read (too large, an undecodable encoding, not JSON). Digests only: no
            text leaves the observer.
    """

    request_id: int = attrs.field(validator=attrs.validators.gt(0))
    kind: RequestKind
    model: str | None = None
    has_tools: bool = False
    sections: tuple[Section, ...] | None = attrs.field(default=None, repr=False)


ObserverEvent = ProviderRequest | ProviderFirstContent | ProviderResponseEnd | ProviderRequestBody
"""Everything ``on_event`` is called with."""

# --- classification -------------------------------------------------------------------

_GEMINI_PATH = re.compile(r"/models/[^/:]+:(?P<method>[A-Za-z]+)$")
_GEMINI_MODEL = re.compile(r"/models/(?P<model>[^/:]+):[A-Za-z]+$")
_GEMINI_GENERATE = frozenset({"generateContent", "streamGenerateContent"})
_OPENAI_GENERATE = ("/responses", "/chat/completions", "/completions")
_OPENAI_OTHER = re.compile(r"/(?:models(?:/[^/:]+)?|embeddings|responses/[^/]+)$")
_ANTHROPIC = re.compile(r"/v1/messages(?P<rest>/.*)?$")


def classify_request(method: str, path: str) -> tuple[Api, bool | None]:
    """The API and whether a request is a generation call, by method and path.

    Args:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request target; a query string is ignored.

    Returns:
        ``(api, generation)``; ``generation`` is ``None`` for a Gemini generate call,
        whose body decides (a JSON utility call is not a generation).
    """
    path = path.split("?", 1)[0].rstrip("/") or "/"
    post = method.upper() == "POST"
    gemini = _GEMINI_PATH.search(path)
    if gemini is not None:
        if post and gemini["method"] in _GEMINI_GENERATE:
            return "gemini", None
        return "gemini", False
    anthropic = _ANTHROPIC.search(path)
    if anthropic is not None:
        return "anthropic", post and anthropic["rest"] is None
    if path.endswith(_OPENAI_GENERATE):
        return "openai", post
    if _OPENAI_OTHER.search(path):
        return "openai", False
    return "other", False


def _request_kind(method: str, path: str, *, generation: bool | None) -> RequestKind:
    """What a request is for, by method and path (its body may refine a generation)."""
    if method.upper() == "HEAD":
        return RequestKind.HEAD
    if generation is None or generation:
        return RequestKind.GENERATION  # a Gemini generate call's body may make it routing
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith(("/count_tokens", ":countTokens")):
        return RequestKind.COUNT_TOKENS
    return RequestKind.OTHER


_AGENT_SLICE: Final = 64 << 10
"""Bytes of one agent read handed to h11 at a time."""
_MAX_BODY: Final = 32 << 20
"""Largest request body kept (bytes) to read its sections after it was forwarded."""
_MAX_TOKEN_KEYS: Final = ("max_tokens", "max_output_tokens", "max_completion_tokens")


_DECODER: Final = json.JSONDecoder()
_WS: Final = re.compile(r"[ \t\n\r]*")
_YIELD_EVERY: Final = 64 << 10
"""Characters parsed between two hand-overs of the GIL (:func:`_loads_yielding`)."""


class _Piecewise:
    """A JSON text parsed one object member and one array item at a time."""

    __slots__ = ("parsed", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.parsed = 0

    def skip(self) -> str:
        """Skip whitespace; the next character (``""`` at the end)."""
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
        return self.text[self.pos : self.pos + 1]

    def take(self, allowed: str) -> str:
        """Consume the next character, one of ``allowed``; it."""
        char = self.skip()
        if not char or char not in allowed:
            raise ValueError(f"expected one of {allowed!r} at {self.pos}")
        self.pos += 1
        return char

    def value(self) -> object:
        """One whole value (the GIL is held while the C decoder runs)."""
        self.skip()
        start = self.pos
        value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        self.parsed += self.pos - start
        if self.parsed >= _YIELD_EVERY:
            self.parsed = 0
            time.sleep(0)  # hand the GIL over
        return value

    def array(self) -> list[object]:
        """An array whose ``[`` was consumed, item by item."""
        items: list[object] = []
        if self.skip() == "]":
            self.pos += 1
            return items
        while True:
            items.append(self.value())
            if self.take(",]") == "]":
                return items

    def member_value(self) -> object:
        """An object member's value: an array item by item, anything else whole."""
        if self.skip() == "[":
            self.pos += 1
            return self.array()
        return self.value()


def _loads_yielding(text: str) -> object:
    """``json.loads(text)``, parsed one top-level member and one array item at a time.

    ``json.loads`` holds the GIL for its whole run (some ms for a 1 MiB body), during
    which the observer's loop thread could not forward an answer's first bytes nor the
    pump threads timestamp the agent's output. Parsed piecewise, the GIL is handed over
    (``time.sleep(0)``) every :data:`_YIELD_EVERY` characters, so the longest hold is one
    message's parse. The result equals ``json.loads(text)``.

    Raises:
        ValueError: ``text`` is not one JSON value.
    """
    doc = _Piecewise(text)
    if doc.skip() != "{":
        return json.loads(text)
    doc.pos += 1
    result: dict[str, object] = {}
    if doc.skip() == "}":
        doc.pos += 1
    else:
        while True:
            key = doc.value()
            if not isinstance(key, str):
                raise ValueError("an object key must be a string")  # noqa: TRY004 - as json
            doc.take(":")
            result[key] = doc.member_value()
            if doc.take(",}") == "}":
                break
    if doc.skip():
        raise ValueError("extra data after the JSON value")
    return result


def analyze_body(  # noqa: PLR0917 - called with a job's arguments, in order
    request_id: int,
    api: Api,
    kind: RequestKind,
    body: bytes | None,
    encoding: bytes,
    model: str | None = None,
) -> ProviderRequestBody:
    """Read a forwarded request body: its model, tools, refined kind and section digests.

    ``body`` is the body as sent (``None`` when it was too large to keep); ``encoding`` its
    ``Content-Encoding``. Never raises: a body that cannot be read has no sections.
    """
    obj: object = None
    if body is not None:
        try:
            decoder = _Decoder.for_encoding(encoding)
            raw = body if decoder is None else decoder.decode(body)
            obj = _loads_yielding(raw.decode("utf-8-sig")) if raw else None
        except (ValueError, zlib.error, RecursionError):
            obj = None
    if not isinstance(obj, dict):
        return ProviderRequestBody(request_id, kind, model)
    name = obj.get("model")
    model = name if isinstance(name, str) and name else model
    if kind is RequestKind.GENERATION:
        limit = next((obj[k] for k in _MAX_TOKEN_KEYS if isinstance(obj.get(k), int)), None)
        config = obj.get("generationConfig")
        if limit is None and isinstance(config, dict):
            limit = config.get("maxOutputTokens")
        if obj.get("generate") is False:
            kind = RequestKind.PREWARM
        elif isinstance(limit, int) and not isinstance(limit, bool) and limit <= 1:
            kind = RequestKind.QUOTA
    sections = None
    if kind is RequestKind.GENERATION:
        try:
            sections = request_sections(api, obj)
        except (ValueError, TypeError, RecursionError):
            sections = None
    return ProviderRequestBody(request_id, kind, model, bool(obj.get("tools")), sections)


# A JSON key can only appear unescaped as a key: inside a JSON string a quote is escaped.
_JSON_MIME = re.compile(rb'"response_?mime_?type"\s*:\s*"application/json"', re.IGNORECASE)
_SNIFF_KEEP = 1 << 20  # bytes of a Gemini body kept to confirm a regex hit with json
_SNIFF_OVERLAP = 128


class _GeminiSniffer:
    """Decides from a Gemini generate call's body whether it is a JSON utility call."""

    __slots__ = ("_buf", "_decoder", "_hit", "_kept", "_tail")

    def __init__(self, content_encoding: bytes) -> None:
        self._decoder = _Decoder.for_encoding(content_encoding)
        self._buf = bytearray()
        self._kept = True
        self._tail = b""
        self._hit = False

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decode(data)
        if not data:
            return
        if not self._hit:
            window = self._tail + data
            self._hit = _JSON_MIME.search(window) is not None
            self._tail = window[-_SNIFF_OVERLAP:]
        if self._kept:
            self._buf += data
            if len(self._buf) > _SNIFF_KEEP:
                self._kept = False
                self._buf = bytearray()

    def is_utility(self) -> bool:
        """Whether the body (so far) asks for a JSON answer."""
        if not self._hit:
            return False
        if not self._kept:
            return True
        try:
            body = json.loads(self._buf)
        except ValueError:
            return True  # incomplete or odd: the unescaped key says enough
        if not isinstance(body, dict):
            return True
        for key in ("generationConfig", "generation_config"):
            config = body.get(key)
            if isinstance(config, dict):
                mime = config.get("responseMimeType", config.get("response_mime_type"))
                return bool(mime == "application/json")
        return False


# --- first content ----------------------------------------------------------------------


class _Decoder:
    """Incremental ``gzip``/``deflate`` decoding (zlib or raw deflate) for observation."""

    __slots__ = ("_raw_fallback", "_started", "_z")

    def __init__(self, *, raw_fallback: bool) -> None:
        self._z = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header
        self._raw_fallback = raw_fallback
        self._started = False

    @classmethod
    def for_encoding(cls, encoding: bytes) -> _Decoder | None:
        """A decoder for a ``Content-Encoding`` value, ``None`` for identity.

        Raises:
            ValueError: An encoding zlib cannot decode (``br``, ``zstd``, …).
        """
        value = encoding.strip().lower()
        if value in {b"", b"identity"}:
            return None
        if value in {b"gzip", b"x-gzip"}:
            return cls(raw_fallback=False)
        if value == b"deflate":
            return cls(raw_fallback=True)  # servers often send raw deflate for "deflate"
        raise ValueError("unsupported content encoding")

    def decode(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data)
        except zlib.error:
            if self._started or not self._raw_fallback:
                raise
            self._z = zlib.decompressobj(wbits=-15)
            out = self._z.decompress(data)
        self._started = self._started or bool(out)
        while self._z.eof and self._z.unused_data:  # concatenated gzip members
            rest = self._z.unused_data
            self._z = zlib.decompressobj(wbits=47)
            out += self._z.decompress(rest)
        return out


_SSE_BOUNDARY = re.compile(rb"\r?\n\r?\n|\r\r")
_SSE_PREFILTER = re.compile(rb'text_delta|thinking_delta|\.delta"|"choices"|"candidates"')
_MAX_SSE_EVENT = 16 << 20
_OPENAI_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.refusal.delta",
    }
)
_CHAT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _payload_has_content(obj: object) -> bool:  # noqa: C901, PLR0911 - one branch per API
    """Whether one decoded SSE ``data`` payload carries non-empty model output."""
    if not isinstance(obj, dict):
        return False
    kind = obj.get("type")
    if kind == "content_block_delta":
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return False
        if delta.get("type") == "text_delta":
            return _nonempty_str(delta.get("text"))
        if delta.get("type") == "thinking_delta":
            return _nonempty_str(delta.get("thinking"))
        return False
    if kind in _OPENAI_DELTAS:
        return _nonempty_str(obj.get("delta"))
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and any(_nonempty_str(delta.get(f)) for f in _CHAT_FIELDS):
                return True
    candidates = obj.get("candidates")
    if isinstance(candidates, list):
        for candidate in candidates:
            content = candidate.get("content") if isinstance(candidate, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            if isinstance(parts, list) and any(
                isinstance(p, dict) and _nonempty_str(p.get("text")) for p in parts
            ):
                return True
    return False


def _sse_data(block: bytes) -> bytes | None:
    """The data of one complete SSE event block (its ``data:`` lines joined); ``None`` if none."""
    data = [line[5:].removeprefix(b" ") for line in block.splitlines() if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


def _event_has_content(block: bytes) -> bool:
    """Whether one complete SSE event block carries non-empty model output."""
    if _SSE_PREFILTER.search(block) is None:
        return False
    data = _sse_data(block)
    if data is None:
        return False
    try:
        payload = json.loads(data)
    except ValueError:
        return False
    return _payload_has_content(payload)


class _SseEvents:
    """Sans-I/O: a (possibly compressed) SSE body fed in pieces, cut into complete events.

    :meth:`feed` returns the event blocks a piece completed. ``failed`` turns true when
    the body cannot be read on: a piece that does not decode, or an event longer than
    :data:`_MAX_SSE_EVENT` (its bytes are dropped; the blocks completed before it are
    still returned).
    """

    __slots__ = ("_buf", "_decoder", "failed")

    def __init__(self, decoder: _Decoder | None) -> None:
        self._decoder = decoder
        self._buf = bytearray()
        self.failed = False

    def feed(self, data: bytes) -> list[bytes]:
        """The event blocks (without their blank line) that ``data`` completed."""
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data)
            except zlib.error:
                self.failed = True
                return []
        buf = self._buf
        start = max(0, len(buf) - 3)  # a boundary may straddle two reads
        buf += data
        blocks = []
        end = 0
        while (boundary := _SSE_BOUNDARY.search(buf, start)) is not None:
            blocks.append(bytes(buf[end : boundary.start()]))
            end = start = boundary.end()
        del buf[:end]
        if len(buf) > _MAX_SSE_EVENT:
            self.failed = True
            self._buf = bytearray()
        return blocks

    def rest(self) -> bytes:
        """What was fed after the last complete event (an event without its blank line)."""
        return bytes(self._buf)


class _ContentDetector:
    """Sans-I/O: fed a response body (de-chunked), says when the first content completed."""

    __slots__ = ("_disabled", "_events", "_sse")

    def __init__(self, *, sse: bool, content_encoding: bytes) -> None:
        self._sse = sse
        self._disabled = False
        self._events: _SseEvents | None = None
        if sse:
            try:
                self._events = _SseEvents(_Decoder.for_encoding(content_encoding))
            except ValueError:
                self._disabled = True
                _warn.warning(
                    "sse_encoding",
                    "an SSE body's content encoding is not decodable; "
                    "its first content is not observed",
                )

    def feed(self, data: bytes) -> bool:
        """Feed body bytes; ``True`` when they complete the first content."""
        if self._disabled or not data:
            return False
        if self._events is None:
            return True
        events = self._events
        for block in events.feed(data):
            if _event_has_content(block):
                self._disabled = True  # found: nothing more to do for this response
                self._events = None
                return True
        if events.failed:
            self._disabled = True
        return False


_USAGE_NEEDLE: Final = b"sage"  # "usage", "usageMetadata": only such events are decoded
_MAX_JSON_BODY: Final = 4 << 20


class _UsageReader:
    """Sans-I/O: fed a 2xx generation response body (de-chunked), gathers its token usage.

    SSE bodies are split into events and only those holding ``usage``/``usageMetadata``
    are decoded (:func:`~ttft_probe.waterfall.usage_from_payload`); a JSON body is kept (up
    to 4 MiB) and read at the end. Never raises; an undecodable body reports no usage.
    """

    __slots__ = ("_api", "_buf", "_decoder", "_disabled", "_events", "_usage")

    def __init__(self, api: Api, *, sse: bool, content_encoding: bytes) -> None:
        self._api = api
        self._buf = bytearray()  # a JSON body, read at the end
        self._usage: RequestUsage | None = None
        self._disabled = False
        self._decoder: _Decoder | None = None
        self._events: _SseEvents | None = None
        try:
            decoder = _Decoder.for_encoding(content_encoding)
        except ValueError:
            self._disabled = True
            return
        if sse:
            self._events = _SseEvents(decoder)
        else:
            self._decoder = decoder

    def feed(self, data: bytes) -> None:
        """Feed body bytes as they were forwarded."""
        if self._disabled or not data:
            return
        events = self._events
        if events is not None:
            for block in events.feed(data):
                if _USAGE_NEEDLE in block:
                    self._read_event(block)
            self._disabled = events.failed
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data)
            except zlib.error:
                self._disabled = True
                return
        if len(self._buf) + len(data) > _MAX_JSON_BODY:
            self._disabled = True
            self._buf = bytearray()
            return
        self._buf += data

    def _read_event(self, block: bytes) -> None:
        data = _sse_data(block)
        if data is not None:
            self._add(data)

    def _add(self, raw: bytes | bytearray) -> None:
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            return
        self._usage = merge_usage(self._usage, usage_from_payload(self._api, payload))

    def result(self) -> RequestUsage | None:
        """The usage gathered so far (the whole body's, once it ended)."""
        if self._disabled:
            return self._usage
        if self._events is not None:
            rest = self._events.rest()
            if rest.strip():
                self._read_event(rest)  # a last event without its blank line
        elif self._buf:
            self._add(self._buf)
        self._buf = bytearray()
        self._events = None
        self._disabled = True
        return self._usage


# --- peers and logging ------------------------------------------------------------------


def is_loopback_peer(peername: object) -> bool:
    """Whether a socket peer name (``(host, port, …)``) is a loopback address.

    IPv4-mapped IPv6 loopback (``::ffff:127.0.0.1``) counts; anything unparsable does not.
    """
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return False
    try:
        address = ipaddress.ip_address(peername[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


_warn = LogOnce(logger)
"""Warnings said the first time their key is seen in this process (never data)."""


# --- the proxy ------------------------------------------------------------------------

_MAX_HEAD = 1 << 20  # bytes of a request or response head
_MAX_PENDING = 1 << 20  # request bytes buffered while the upstream connection opens


def _plain_response(status: bytes, text: bytes) -> bytes:
    """A complete ``Connection: close`` response with a short text body."""
    return (
        b"HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (status, len(text), text)
    )


_BAD_GATEWAY = _plain_response(b"502 Bad Gateway", b"ttft-probe observer: upstream unreachable\n")
_BAD_REQUEST = _plain_response(b"400 Bad Request", b"ttft-probe observer: malformed request\n")
_HTTP_VERSION = _plain_response(
    b"505 HTTP Version Not Supported", b"ttft-probe observer: HTTP/1.1 only\n"
)
_LINGER_AFTER_ERROR_S = 2.0


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""


class _Exchange:
    """One request/response on a link (mutable, loop thread only)."""

    __slots__ = (
        "api",
        "body",
        "body_bytes",
        "body_left",
        "detector",
        "encoding",
        "ended",
        "generation",
        "kind",
        "model",
        "preforwarded",
        "reported",
        "request_id",
        "sniffer",
        "status",
        "t_ns",
        "usage",
    )

    def __init__(self, request_id: int, t_ns: int, api: Api, *, generation: bool | None) -> None:
        self.request_id = request_id
        self.t_ns = t_ns
        self.api: Api = api
        self.generation = generation
        self.kind = RequestKind.OTHER
        self.sniffer: _GeminiSniffer | None = None
        self.reported = False
        self.status: int | None = None
        self.detector: _ContentDetector | None = None
        self.usage: _UsageReader | None = None
        self.ended = False
        self.body: bytearray | None = None  # kept to be read after it was forwarded
        self.body_bytes = 0
        # A Content-Length body's bytes h11 has not seen yet, and those of them already
        # forwarded ahead of h11 (``None``: no Content-Length, e.g. chunked).
        self.body_left: int | None = None
        self.preforwarded = 0
        self.encoding = b""
        self.model: str | None = None


class _Parked(asyncio.Protocol):
    """A pre-connected upstream connection waiting for an agent connection to adopt it.

    Agents such as codex open a new connection per request; dialling the upstream only
    then would put the TCP (and TLS) handshake between the agent's request and the
    provider. A few connections are kept ready instead (:data:`_POOL_SIZE`), dropped
    when the upstream closes them or after :data:`_POOL_MAX_AGE_S`.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.born = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        _nodelay(self.transport)

    def data_received(self, data: bytes) -> None:  # noqa: ARG002 - nothing is expected
        # An idle connection must not talk; one that does is not reusable.
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self.lost = True

    def usable(self) -> bool:
        return (
            not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
            and time.monotonic() - self.born < _POOL_MAX_AGE_S
        )


_POOL_SIZE: Final = 2
_POOL_MAX_AGE_S: Final = 30.0


class _Upstream(asyncio.Protocol):
    """The upstream side of a link; everything is delegated to the link."""

    def __init__(self, link: _Link) -> None:
        self._link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # TCP or TLS (uvloop's too)
        self._link.upstream_made(transport)

    def data_received(self, data: bytes) -> None:
        self._link.upstream_data(data, monotonic_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        self._link.upstream_lost(exc)

    def pause_writing(self) -> None:
        self._link.pause_agent("upstream_full")

    def resume_writing(self) -> None:
        self._link.resume_agent("upstream_full")


_FINISHED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)


class _Link(asyncio.Protocol):
    """One agent connection and its upstream connection (the agent-side protocol).

    Runs on the proxy's loop only. Upstream bytes are written to the agent as they arrive
    and parsed afterwards by an h11 client connection that also frames the forwarded
    request; agent bytes are parsed by an h11 server connection (one per cycle).
    """

    def __init__(self, observer: ProviderObserver) -> None:
        self._obs = observer
        self._agent: asyncio.Transport | None = None
        self._up: asyncio.Transport | None = None
        self._pending: list[bytes] | None = []  # request bytes while connecting
        self._pending_size = 0
        self._up_failed = False
        self._up_h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self._agent_h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self._exchange: _Exchange | None = None
        self._agent_paused: set[str] = set()
        self._up_paused = False
        self._tunnel = False
        self._closing = False  # an error answer was sent; close once the request is read
        self._closed = False
        self._batch: list[bytes] | None = None  # upstream writes of one agent read
        # Reports (and body reads) held until the agent's bytes were forwarded.
        self._deferred: list[ObserverEvent | Callable[[], None]] | None = None
        self._connect_task: asyncio.Task[None] | None = None

    # --- agent side -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # a TCP server (uvloop's too)
        if not is_loopback_peer(transport.get_extra_info("peername")):
            _warn.warning("peer", "observer: refused a connection from a non-loopback peer")
            self._closed = True
            transport.abort()
            return
        self._agent = transport
        _nodelay(transport)
        self._obs._links.add(self)  # noqa: SLF001
        parked = self._obs._take_parked()  # noqa: SLF001
        if parked is not None and parked.transport is not None:
            upstream = _Upstream(self)
            parked.transport.set_protocol(upstream)
            self.upstream_made(parked.transport)
        else:
            # Connect now, as the agent would have: the handshake overlaps the request.
            self._connect_task = asyncio.get_running_loop().create_task(self._connect())
        # Top the pool up once this request is under way, not in its critical path.
        asyncio.get_running_loop().call_later(0.05, self._obs._refill_pool)  # noqa: SLF001

    def data_received(self, data: bytes) -> None:
        t_ns = monotonic_ns()
        if self._tunnel:
            self._up_write(data)
            return
        exchange = self._exchange
        if (
            exchange is not None
            and exchange.body_left
            and not exchange.preforwarded
            and not self._closing
            and not self._up_failed
            and self._agent_h11.their_state is h11.SEND_BODY
        ):
            # A Content-Length body goes upstream before h11 parses it: the provider can
            # start on it while h11 (pure Python) works through the same bytes.
            exchange.preforwarded = min(len(data), exchange.body_left)
            self._up_send(h11.Data(data=data[: exchange.preforwarded]))
        # h11 handles a large read (a request body) in less time in slices: its receive
        # buffer copies what is left on every extraction.
        for start in range(0, len(data), _AGENT_SLICE) if len(data) > _AGENT_SLICE else (0,):
            try:
                self._agent_h11.receive_data(data[start : start + _AGENT_SLICE])
            except RuntimeError:
                return  # data after the agent's EOF cannot happen; be safe
            self._agent_events(t_ns)

    def eof_received(self) -> bool:
        if self._tunnel:
            if self._up is not None and self._up.can_write_eof():
                self._up.write_eof()
            return True
        with contextlib.suppress(RuntimeError):
            self._agent_h11.receive_data(b"")
        self._agent_events(monotonic_ns())
        return True  # a half-closed agent still gets its response

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self._close(abort_upstream=True)
        self._obs._links.discard(self)  # noqa: SLF001

    def pause_writing(self) -> None:
        self._up_paused = True
        if self._up is not None:
            self._up.pause_reading()

    def resume_writing(self) -> None:
        self._up_paused = False
        if self._up is not None and not self._up.is_closing():
            self._up.resume_reading()

    def pause_agent(self, reason: str) -> None:
        """Stop reading from the agent until every pause reason is gone."""
        if self._agent is not None and not self._agent_paused and not self._agent.is_closing():
            self._agent.pause_reading()
        self._agent_paused.add(reason)

    def resume_agent(self, reason: str) -> None:
        """Drop one pause reason; read from the agent again if none is left."""
        if reason not in self._agent_paused:
            return
        self._agent_paused.discard(reason)
        if self._agent is not None and not self._agent_paused and not self._agent.is_closing():
            self._agent.resume_reading()

    def _agent_events(self, t_ns: int) -> None:
        """Handle what the agent sent; forward it upstream in one write, then report.

        One write per agent read: a request's head and body in separate writes would cost
        the upstream a second wake-up before it can answer.
        """
        if self._batch is not None:
            return  # re-entered through a cycle: the running loop picks the events up
        batch: list[bytes] = []
        deferred: list[ObserverEvent | Callable[[], None]] = []
        self._batch, self._deferred = batch, deferred
        try:
            self._agent_event_loop(t_ns)
        finally:
            self._batch = None
            self._deferred = None
            if batch:
                self._up_write(b"".join(batch))
            for item in deferred:  # in order: a body is read only after its head was reported
                if isinstance(item, ProviderRequest | ProviderFirstContent | ProviderResponseEnd
                              | ProviderRequestBody):  # fmt: skip
                    self._obs._emit(item)  # noqa: SLF001
                else:
                    item()

    def _agent_event_loop(self, t_ns: int) -> None:
        while not self._closed and not self._tunnel:
            try:
                event = self._agent_h11.next_event()  # re-read: a cycle replaces it
            except h11.RemoteProtocolError as exc:
                self._agent_protocol_error(exc)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                self.pause_agent("cycle")
                return
            if isinstance(event, h11.Request):
                self._request_head(event, t_ns)
            elif isinstance(event, h11.Data):
                self._request_data(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._request_end(event)
            elif isinstance(event, h11.ConnectionClosed):
                if self._exchange is None or self._closing:
                    self._close(abort_upstream=False)
                return

    def _request_data(self, data: bytes) -> None:
        """Forward a piece of the request body, then keep it to read (bounded)."""
        exchange = self._exchange
        if exchange is not None and exchange.sniffer is not None:
            self._sniff(exchange, data)
        ahead = 0
        if exchange is not None:
            ahead = min(len(data), exchange.preforwarded)
            exchange.preforwarded -= ahead
            if exchange.body_left is not None:
                exchange.body_left -= len(data)
        if not self._closing and ahead < len(data):
            self._up_send(h11.Data(data=data[ahead:] if ahead else data))
        if exchange is None:
            return
        exchange.body_bytes += len(data)
        body = exchange.body
        if body is not None:
            if len(body) + len(data) > _MAX_BODY:
                exchange.body = None  # too large to read: no sections
            else:
                body += data

    def _agent_protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        logger.debug("observer: malformed request from the agent (%s)", type(exc).__name__)
        if self._exchange is None and self._agent is not None:
            self._agent.write(_BAD_REQUEST)
        self._close(abort_upstream=True)

    def _request_head(self, event: h11.Request, t_ns: int) -> None:
        obs = self._obs
        if event.http_version != b"1.1":
            if self._agent is not None:
                self._agent.write(_HTTP_VERSION)
            self._close(abort_upstream=True)
            return
        obs._last_id += 1  # noqa: SLF001
        api, generation = classify_request(
            event.method.decode("ascii", "replace"), event.target.decode("ascii", "replace")
        )
        exchange = _Exchange(obs._last_id, t_ns, api, generation=generation)  # noqa: SLF001
        target = event.target.decode("ascii", "replace")
        exchange.kind = _request_kind(
            event.method.decode("ascii", "replace"), target, generation=generation
        )
        if exchange.kind is RequestKind.GENERATION:
            exchange.body = bytearray()
            exchange.encoding = _header(event.headers, b"content-encoding")
            gemini = _GEMINI_MODEL.search(target.split("?", 1)[0])
            exchange.model = gemini["model"] if gemini is not None else None
        self._exchange = exchange
        if generation is None:
            try:
                exchange.sniffer = _GeminiSniffer(_header(event.headers, b"content-encoding"))
            except ValueError:  # a body we cannot decode: count it as a generation
                exchange.generation = True
        if self._up_failed:
            self._bad_gateway(exchange, t_ns)
            return
        host = obs._host  # noqa: SLF001
        headers = [
            (name, host if name.lower() == b"host" else value)
            for name, value in event.headers.raw_items()
        ]
        self._up_send(h11.Request(method=event.method, target=event.target, headers=headers))
        length = _header(event.headers, b"content-length")
        if length.isdigit() and not _header(event.headers, b"transfer-encoding"):
            exchange.body_left = int(length)
        if exchange.sniffer is None:
            self._report_request(exchange)  # after forwarding: the callback costs nothing

    def _sniff(self, exchange: _Exchange, data: bytes) -> None:
        assert exchange.sniffer is not None  # noqa: S101 - checked by the caller
        try:
            exchange.sniffer.feed(data)
        except zlib.error:
            exchange.sniffer = None
            exchange.generation = True
            self._report_request(exchange)

    def _request_end(self, event: h11.EndOfMessage) -> None:
        if self._closing:
            self._close(abort_upstream=True)
            return
        self._up_send(h11.EndOfMessage(headers=event.headers))
        exchange = self._exchange
        if exchange is not None and not exchange.reported:
            self._report_request(exchange)
        if exchange is not None and exchange.kind is RequestKind.GENERATION:
            body, exchange.body = exchange.body, None
            job = functools.partial(
                self._obs._read_body,  # noqa: SLF001
                analyze_body, exchange.request_id, exchange.api, exchange.kind,
                None if body is None else bytes(body), exchange.encoding, exchange.model,
            )  # fmt: skip
            # Read once forwarded (and reported), on the observer's reader thread.
            if self._deferred is not None:
                self._deferred.append(job)
            else:
                job()
        self._maybe_cycle()

    def _report_request(self, exchange: _Exchange) -> None:
        if exchange.reported:
            return
        if exchange.sniffer is not None:
            exchange.generation = not exchange.sniffer.is_utility()
            exchange.sniffer = None
            if not exchange.generation:
                exchange.kind = RequestKind.ROUTING
        exchange.reported = True
        self._emit(
            ProviderRequest(
                request_id=exchange.request_id,
                t_ns=exchange.t_ns,
                api=exchange.api,
                generation=bool(exchange.generation),
                kind=exchange.kind,
            )
        )

    def _bad_gateway(self, exchange: _Exchange, t_ns: int) -> None:
        """Answer 502, end the exchange, close once the request was read (bounded wait)."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._report_request(exchange)
        self._end(exchange, t_ns)
        agent = self._agent
        if agent is None or agent.is_closing() or self._agent_h11.their_state is h11.DONE:
            if agent is not None and not agent.is_closing():
                agent.write(_BAD_GATEWAY)
            self._close(abort_upstream=True)
            return
        agent.write(_BAD_GATEWAY)
        # Read the rest of the request first: closing on unread data would reset the
        # connection and could destroy the 502 before the agent reads it.
        asyncio.get_running_loop().call_later(_LINGER_AFTER_ERROR_S, self.abort_both)

    def _emit(self, event: ObserverEvent) -> None:
        if self._deferred is not None:
            self._deferred.append(event)  # reported once the agent's bytes were forwarded
        else:
            self._obs._emit(event)  # noqa: SLF001

    # --- upstream side --------------------------------------------------------------

    async def _connect(self) -> None:
        obs = self._obs
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(obs.connect_timeout_s):
                await loop.create_connection(
                    lambda: _Upstream(self),
                    obs._up_host,  # noqa: SLF001
                    obs._up_port,  # noqa: SLF001
                    ssl=obs._ssl,  # noqa: SLF001
                    server_hostname=obs._up_host if obs._ssl else None,  # noqa: SLF001
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self._upstream_unreachable(exc)

    def _upstream_unreachable(self, exc: BaseException) -> None:
        _warn.warning(
            "connect", "observer: the upstream cannot be reached (%s)", type(exc).__name__
        )
        logger.debug("observer: upstream connect failed (%s)", type(exc).__name__)
        self._up_failed = True
        self._pending = None
        self.resume_agent("connecting")
        exchange = self._exchange
        if exchange is not None and not self._closed:
            self._bad_gateway(exchange, monotonic_ns())

    def upstream_made(self, transport: asyncio.Transport) -> None:
        if self._closed:
            transport.abort()
            return
        self._up = transport
        _nodelay(transport)
        pending, self._pending = self._pending, None
        if pending:
            transport.write(b"".join(pending))
        if self._up_paused:
            transport.pause_reading()
        self.resume_agent("connecting")

    def _up_send(self, event: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        try:
            data = self._up_h11.send(event)
        except h11.LocalProtocolError as exc:
            logger.debug("observer: cannot forward a request (%s)", type(exc).__name__)
            if self._exchange is not None:
                self._bad_gateway(self._exchange, monotonic_ns())
            return
        if data:
            self._up_write(data)

    def _up_write(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        elif self._up is not None:
            if not self._up.is_closing():
                self._up.write(data)
        elif self._pending is not None:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > _MAX_PENDING:
                self.pause_agent("connecting")

    def upstream_data(self, data: bytes, t_ns: int) -> None:
        agent = self._agent
        if agent is not None and not agent.is_closing():
            agent.write(data)  # forward first, look afterwards
        if self._tunnel or self._closed:
            return
        try:
            self._up_h11.receive_data(data)
        except RuntimeError:
            return
        self._upstream_events(t_ns)

    def _upstream_events(self, t_ns: int) -> None:  # noqa: C901 - one branch per event
        conn = self._up_h11
        while not self._closed:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                logger.debug("observer: upstream protocol error (%s)", type(exc).__name__)
                self._upstream_broken(t_ns)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                if conn.their_state is h11.SWITCHED_PROTOCOL:
                    self._start_tunnel(t_ns)
                return
            if isinstance(event, h11.ConnectionClosed):
                self._upstream_broken(t_ns)  # idle or not: the agent's connection goes too
                return
            exchange = self._exchange
            if exchange is None:
                continue  # not reached: h11 rejects a response nobody asked for
            if isinstance(event, h11.Data):
                detector = exchange.detector
                if detector is not None and detector.feed(event.data):
                    exchange.detector = None
                    self._emit(ProviderFirstContent(request_id=exchange.request_id, t_ns=t_ns))
                if exchange.usage is not None:
                    exchange.usage.feed(event.data)
            elif isinstance(event, h11.Response):
                self._response_head(exchange, event)
            elif isinstance(event, h11.EndOfMessage):
                self._end(exchange, t_ns)
                self._maybe_cycle()

    def _response_head(self, exchange: _Exchange, event: h11.Response) -> None:
        exchange.status = event.status_code
        if not exchange.reported:
            self._report_request(exchange)
        if exchange.generation and 200 <= event.status_code < 300:
            content_type = _header(event.headers, b"content-type").lower()
            sse = content_type.startswith(b"text/event-stream")
            encoding = _header(event.headers, b"content-encoding")
            exchange.detector = _ContentDetector(sse=sse, content_encoding=encoding)
            exchange.usage = _UsageReader(exchange.api, sse=sse, content_encoding=encoding)

    def _end(self, exchange: _Exchange, t_ns: int) -> None:
        if exchange.ended:
            return
        exchange.ended = True
        exchange.detector = None
        reader, exchange.usage = exchange.usage, None
        if not exchange.reported:
            self._report_request(exchange)
        self._emit(
            ProviderResponseEnd(
                request_id=exchange.request_id,
                t_ns=t_ns,
                status=exchange.status,
                request_bytes=exchange.body_bytes,
                usage=None if reader is None else reader.result(),
            )
        )

    def _start_tunnel(self, t_ns: int) -> None:
        """After ``101 Switching Protocols``: bytes flow raw both ways until either closes."""
        self._tunnel = True
        exchange = self._exchange
        if exchange is not None:
            exchange.status = 101
            self._end(exchange, t_ns)
        rest, _closed = self._agent_h11.trailing_data
        if rest:
            self._up_write(rest)
        self.resume_agent("cycle")

    def _maybe_cycle(self) -> None:
        """Start the next request/response cycle, or close both sides if one must close."""
        up = self._up_h11
        if up.our_state is not h11.DONE or up.their_state is not h11.DONE:
            if up.our_state in _FINISHED and up.their_state in _FINISHED:
                self._close(abort_upstream=False)  # e.g. ``Connection: close``
            return
        up.start_next_cycle()
        self._exchange = None
        rest, closed = self._agent_h11.trailing_data
        self._agent_h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        if rest:
            self._agent_h11.receive_data(rest)
        if closed:
            self._agent_h11.receive_data(b"")
        self.resume_agent("cycle")
        if rest or closed:
            self._agent_events(monotonic_ns())

    def upstream_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        t_ns = monotonic_ns()
        if exc is not None:
            logger.debug("observer: upstream connection lost (%s)", type(exc).__name__)
        if not self._tunnel and self._up_h11.their_state not in (h11.ERROR, h11.CLOSED):
            with contextlib.suppress(RuntimeError):
                self._up_h11.receive_data(b"")
            self._upstream_events(t_ns)  # a close-delimited body ends here
        self._upstream_broken(t_ns)

    def _upstream_broken(self, t_ns: int) -> None:
        """The upstream closed or misbehaved: end the exchange, close the agent there too."""
        exchange = self._exchange
        if exchange is not None:
            self._end(exchange, t_ns)
        self._close(abort_upstream=True)

    # --- teardown -------------------------------------------------------------------

    def abort_both(self) -> None:
        """Close the agent's connection (after flushing) and drop the upstream's."""
        self._close(abort_upstream=True)

    def _close(self, *, abort_upstream: bool) -> None:
        if self._closed:
            return
        self._closed = True
        exchange = self._exchange
        if exchange is not None and not exchange.ended:
            self._end(exchange, monotonic_ns())
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self._agent is not None:
            self._agent.close()  # sends what was forwarded, then FIN
        if self._up is not None:
            if abort_upstream:
                self._up.abort()
            else:
                self._up.close()

    def abort(self) -> None:
        """Drop both connections now (observer shutdown)."""
        self._closed = True
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self._agent is not None:
            self._agent.abort()
        if self._up is not None:
            self._up.abort()


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ProviderObserver:
    """A local pass-through reverse proxy in front of one provider base URL.

    Use it as a context manager or call :meth:`start` / :meth:`stop`; give the agent the
    URL :meth:`start` returns instead of ``upstream``.

    Args:
        upstream: The base URL the agent would otherwise use, ``http://`` or ``https://``,
            e.g. ``"https://api.anthropic.com"`` or ``"http://127.0.0.1:8080/v1"``.
        on_event: Called on the proxy thread with each :data:`ObserverEvent`; must be
            cheap; an exception it raises is logged once and ignored.
        ssl_context: TLS context for an ``https`` upstream (default:
            :func:`ssl.create_default_context`, which verifies against the system CAs,
            with SNI); tests pass one that trusts their own certificate.
        connect_timeout_s: Give up connecting to the upstream after this many seconds
            (the agent then gets ``502``).

    Raises:
        ConfigError: ``upstream`` is not an ``http``/``https`` URL with a host, or carries
            credentials, a query or a fragment.
    """

    def __init__(  # noqa: D107 - documented on the class
        self,
        upstream: str,
        on_event: Callable[[ObserverEvent], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 30.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError("the observer's upstream must be an http:// or https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError(
                "the observer's upstream URL must not carry credentials, a query or a fragment"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError("the observer's upstream URL has an invalid port") from exc
        https = parts.scheme == "https"
        default_port = 443 if https else 80
        self._up_host = parts.hostname
        self._up_port = port or default_port
        name = parts.hostname
        host = (f"[{name}]" if ":" in name else name).encode("idna")
        if port is not None and port != default_port:
            host += b":%d" % port
        self._host = host
        self._prefix = parts.path
        self._ssl: ssl.SSLContext | None = None
        if https:
            self._ssl = ssl_context or ssl.create_default_context()
        self._on_event = on_event
        self.connect_timeout_s = connect_timeout_s
        self._links: set[_Link] = set()
        self._pool: collections.deque[_Parked] = collections.deque()
        self._dialling: set[asyncio.Task[None]] = set()
        self._last_id = 0
        self._callback_failed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._url: str | None = None
        self._reads: queue.SimpleQueue[Callable[[], ObserverEvent] | None] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._unread = 0
        self._read_cond = threading.Condition()
        self.started_late = False
        """A connection was already waiting on an adopted socket when serving began: the
        times of its requests are those of the loop's first reads, not of their arrival."""

    @property
    def url(self) -> str:
        """The base URL to give the agent (``http://127.0.0.1:PORT`` + upstream path).

        Raises:
            ObserverError: The observer is not running.
        """
        if self._url is None:
            raise ObserverError("the observer is not running")
        return self._url

    def start(self, timeout: float = 5.0, *, sock: object = None) -> str:
        """Listen on a free port of 127.0.0.1 and serve on a daemon thread.

        Args:
            timeout: Seconds to wait for the listener to come up.
            sock: A socket already bound and listening on 127.0.0.1 (a ``socket.socket``
                or the C module's ``_socket.socket``), to serve instead of binding one:
                ``ttft-probe run`` binds it before spawning the agent, so the agent's
                environment can carry its port (:mod:`ttft_probe._prespawn`). The
                observer owns it from then on. A connection already waiting on it when
                serving starts sets :attr:`started_late`.

        Returns:
            The base URL to give the agent: ``http://127.0.0.1:PORT`` followed by the
            upstream's path prefix (``https://api.openai.com/v1`` →
            ``http://127.0.0.1:PORT/v1``).

        Raises:
            ObserverError: It is already running, or cannot bind or start in time.
        """
        if self._thread is not None:
            raise ObserverError("the observer is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        listener = None
        if sock is not None:
            fileno = sock.detach()  # type: ignore[attr-defined]
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=fileno)
            self.started_late = bool(select.select([listener], [], [], 0)[0])
        thread = threading.Thread(
            target=self._serve,
            args=(ready, failure, listener),
            name="ttft-probe-observer",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        if not ready.wait(timeout):
            self.stop()
            raise ObserverError(f"the observer did not start within {timeout} s")
        if failure:
            self.stop()
            raise ObserverError(f"the observer cannot listen: {failure[0]}") from failure[0]
        url = self._url
        if url is None:  # the thread died without an OSError
            self.stop()
            raise ObserverError("the observer's thread failed to start")
        return url

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every connection, and join the thread (bounded).

        Idempotent; returns after at most about ``timeout`` seconds.
        """
        thread, self._thread = self._thread, None
        loop = self._loop
        self._url = None
        if thread is None:
            return
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._shutdown)
        thread.join(timeout)
        if thread.is_alive():
            _warn.warning("stop", "observer: the proxy thread did not stop within %s s", timeout)
        self.drain(timeout)
        reader, self._reader = self._reader, None
        if reader is not None:
            self._reads.put(None)

    def drain(self, timeout: float = 1.0) -> bool:
        """Wait up to ``timeout`` s until every forwarded request body was read and reported.

        Call it before closing a process's runs, so the last request's
        :class:`ProviderRequestBody` is not missed. ``True`` when nothing is left.
        """
        with self._read_cond:
            return self._read_cond.wait_for(lambda: self._unread == 0, timeout)

    def _read_body(self, read: Callable[..., ObserverEvent], *args: object) -> None:
        """Run ``read(*args)`` on the reader thread and emit its event (loop thread calls)."""
        with self._read_cond:
            self._unread += 1
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._read_loop, name="ttft-probe-observer-reader", daemon=True
                )
                self._reader.start()
        self._reads.put(lambda: read(*args))

    def _read_loop(self) -> None:
        while True:
            job = self._reads.get()
            if job is None:
                return
            try:
                self._emit(job())
            except Exception:  # noqa: BLE001 - a body that cannot be read is no fault
                _warn.warning("read_body", "observer: a request body could not be read")
            finally:
                job = None
                with self._read_cond:
                    self._unread -= 1
                    self._read_cond.notify_all()

    def __enter__(self) -> Self:
        """Start (see :meth:`start`)."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop (see :meth:`stop`)."""
        self.stop()

    # --- the proxy thread -----------------------------------------------------------

    def _take_parked(self) -> _Parked | None:
        """A ready upstream connection from the pool, or ``None`` (stale ones are closed)."""
        while self._pool:
            parked = self._pool.popleft()
            if parked.usable():
                return parked
            if parked.transport is not None:
                parked.transport.close()
        return None

    def _refill_pool(self) -> None:
        """Dial upstream connections until :data:`_POOL_SIZE` are ready or being made."""
        loop = asyncio.get_running_loop()
        while len(self._pool) + len(self._dialling) < _POOL_SIZE:
            task = loop.create_task(self._dial())
            self._dialling.add(task)
            task.add_done_callback(self._dialling.discard)

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, parked = await loop.create_connection(
                    _Parked,
                    self._up_host,
                    self._up_port,
                    ssl=self._ssl,
                    server_hostname=self._up_host if self._ssl else None,
                )
        except (OSError, TimeoutError):
            return  # a link dials on its own and reports the failure to its agent
        self._pool.append(parked)

    def _serve(
        self,
        ready: threading.Event,
        failure: list[BaseException],
        listener: socket.socket | None = None,
    ) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = None
        try:
            try:
                if listener is not None:
                    serving = loop.create_server(lambda: _Link(self), sock=listener)
                else:
                    serving = loop.create_server(lambda: _Link(self), "127.0.0.1", 0)
                server = loop.run_until_complete(serving)
            except OSError as exc:
                failure.append(exc)
                ready.set()
                return
            self._server = server
            loop.call_soon(self._refill_pool)
            port = server.sockets[0].getsockname()[1]
            self._url = f"http://127.0.0.1:{port}{self._prefix}"
            logger.debug("observer: listening on 127.0.0.1:%d", port)
            ready.set()
            loop.run_forever()
        finally:
            ready.set()
            self._finish_loop(loop)

    def _abort_parked(self) -> None:
        while self._pool:
            parked = self._pool.popleft()
            if parked.transport is not None:
                parked.transport.abort()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_parked()
        for link in list(self._links):
            link.abort()
        self._links.clear()
        # Stop after the transports' connection_lost callbacks (scheduled by abort) ran,
        # so every socket is closed before the loop is.
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.stop)

    def _finish_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            # A dial that completed after _shutdown emptied the pool parked its connection
            # there: close it too (its socket is closed by the loop run below), or it
            # leaks until the garbage collector finds it.
            self._abort_parked()
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _emit(self, event: ObserverEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a callback fault must never break forwarding
            if not self._callback_failed:
                self._callback_failed = True
                logger.warning(
                    "observer: the on_event callback raised; further errors are not logged",
                    exc_info=True,
                )
