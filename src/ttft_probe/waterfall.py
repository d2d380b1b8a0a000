"""A turn's model requests (the waterfall), their usage, and the stability of the prompt prefix.

DESIGN §10. With the provider observer on, every model-bound request of a turn becomes a
:class:`ModelRequest`: its kind, its times (monotonic ns: arrival of the head, first
content byte, end), its HTTP status, the bytes of its body, and the token usage the
provider reported. The waterfall is kept beside the record in the store (like captured
content), never in the ``run_finished`` event.

Usage, where each API reports it (:func:`usage_from_payload`):

=========================  ==================================================================
API                        fields
=========================  ==================================================================
Anthropic Messages         ``message_start.message.usage`` and ``message_delta.usage``:
                           ``input_tokens`` (uncached), ``cache_read_input_tokens``,
                           ``cache_creation_input_tokens``, ``output_tokens``
OpenAI Responses           ``response.completed`` → ``response.usage``: ``input_tokens``
                           (cached included), ``input_tokens_details.cached_tokens``,
                           ``output_tokens``
OpenAI Chat Completions    the last chunk's ``usage``: ``prompt_tokens`` (cached included),
                           ``prompt_tokens_details.cached_tokens``, ``completion_tokens``
Gemini                     ``usageMetadata`` (the last one is final): ``promptTokenCount``
                           (cached included), ``cachedContentTokenCount`` (absent when
                           0: proto3 JSON omits zero values), ``candidatesTokenCount``
=========================  ==================================================================

:attr:`RequestUsage.input_tokens` counts every input token, cached ones included, as the
OpenTelemetry GenAI conventions count ``gen_ai.usage.input_tokens`` (for Anthropic: the sum
of its three input fields).

Prefix stability: a request body is cut into *sections* in the provider's cache order
(:func:`request_sections`): Anthropic ``tools[i]`` → ``system[i]`` → ``messages[i]``; OpenAI
``instructions`` → ``tools[i]`` → ``input[i]`` (Chat Completions: ``tools[i]`` →
``messages[i]``); Gemini ``systemInstruction`` → ``tools[i]`` → ``contents[i]``; the model
comes first (a provider's cache is per model). Each section is its canonical JSON (keys
sorted, ``cache_control`` markers left out, as they mark where to cache and are no part of
the cached text) reduced to a 16-byte BLAKE2b digest; no text is kept. :func:`compare_prefix`
compares a turn's first generation request with the previous turn's of the same
conversation and names the first section that changed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from ttft_probe.adapters._base import decode_count
from ttft_probe.record import PrefixStatus

__all__ = [
    "ModelRequest",
    "PrefixCheck",
    "PrefixStatus",
    "RequestKind",
    "RequestUsage",
    "Section",
    "compare_prefix",
    "merge_usage",
    "request_sections",
    "salted",
    "usage_from_payload",
]

DIGEST_BYTES: Final = 16


class RequestKind(enum.StrEnum):
    """What a model-bound request was for.

    ``generation``: the turn's model call (answer, tool loop). Side calls:
    ``count_tokens`` (Anthropic ``…/messages/count_tokens``, Gemini ``:countTokens``),
    ``title`` (a generation without tools while the turn's other generations have tools: a
    title or summary), ``quota`` (a generation asking for at most one token), ``routing``
    (Gemini CLI's JSON calls: routing, next speaker), ``prewarm`` (OpenAI Responses with
    ``generate: false``), ``head`` (``HEAD``: a connectivity check), ``other`` (model lists
    and anything else).
    """

    GENERATION = "generation"
    COUNT_TOKENS = "count_tokens"
    TITLE = "title"
    QUOTA = "quota"
    ROUTING = "routing"
    PREWARM = "prewarm"
    HEAD = "head"
    OTHER = "other"


@attrs.frozen
class RequestUsage:
    """Token usage one response reported; ``None`` where the provider did not say.

    ``input_tokens`` includes cached tokens (GenAI convention); ``cache_read_tokens`` were
    served from the provider's prompt cache; ``cache_write_tokens`` were written to it
    (Anthropic only).
    """

    input_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    # Anthropic's own ``input_tokens`` (uncached only), kept so that usage reported in parts
    # (message_start, message_delta) is summed once over the merged parts.
    anthropic_input: int | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def uncached_tokens(self) -> int | None:
        """Input tokens not read from the cache (``input_tokens - cache_read_tokens``).

        ``None`` unless both are known: a provider that did not say what it read from its
        cache has no uncached count.
        """
        if self.input_tokens is None or self.cache_read_tokens is None:
            return None
        return max(0, self.input_tokens - self.cache_read_tokens)

    def to_dict(self) -> dict[str, int | None]:
        """The four counts by name (JSON-ready)."""
        return {
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestUsage:
        """The inverse of :meth:`to_dict` (unknown keys ignored, bad values ``None``)."""
        return cls(**{name: decode_count(data.get(name)) for name in _COUNTS})


_COUNTS: Final = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


@attrs.frozen
class Section:
    """One section of a request body: its name (``system[1]``), digest and size (bytes)."""

    name: str
    digest: bytes
    size: int


@attrs.frozen
class ModelRequest:
    """One model-bound request of a turn, as the provider observer saw it.

    Times are monotonic ns (``CLOCK_MONOTONIC``, as the run's markers): the arrival of the
    request head, the upstream's first content byte (generation responses only), the end
    of the exchange. ``request_bytes`` is the request body as sent (before any decoding);
    ``sections`` (in memory only, never stored) are its digests for the prefix check.
    """

    request_id: int
    api: str
    kind: RequestKind
    arrival_ns: int
    model: str | None = None
    first_content_ns: int | None = None
    end_ns: int | None = None
    status: int | None = None
    request_bytes: int | None = None
    usage: RequestUsage | None = None
    has_tools: bool = False
    sections: tuple[Section, ...] | None = attrs.field(default=None, eq=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: every field but the section digests (JSON-ready)."""
        return {
            "request_id": self.request_id,
            "api": self.api,
            "kind": self.kind.value,
            "model": self.model,
            "arrival_ns": self.arrival_ns,
            "first_content_ns": self.first_content_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "request_bytes": self.request_bytes,
            "usage": None if self.usage is None else self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRequest:
        """The inverse of :meth:`to_dict`."""
        usage = data.get("usage")
        return cls(
            request_id=int(data["request_id"]),
            api=str(data["api"]),
            kind=RequestKind(data["kind"]),
            model=data.get("model"),
            arrival_ns=int(data["arrival_ns"]),
            first_content_ns=data.get("first_content_ns"),
            end_ns=data.get("end_ns"),
            status=data.get("status"),
            request_bytes=data.get("request_bytes"),
            usage=RequestUsage.from_dict(usage) if isinstance(usage, Mapping) else None,
        )


# --- usage ------------------------------------------------------------------------------


def _get(obj: object, *path: str) -> object:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _sum(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def usage_from_payload(api: str, payload: object) -> RequestUsage | None:
    """The usage one decoded response payload (an SSE event's data, or a JSON body) carries.

    ``None`` when it carries none. Anthropic's ``message_start`` gives the input counts,
    its ``message_delta`` the (cumulative) output; merge them with :func:`merge_usage`.
    """
    if not isinstance(payload, dict):
        return None
    reader = _USAGE_READERS.get(api)
    return None if reader is None else reader(payload)


def _anthropic_usage(payload: dict[str, Any]) -> RequestUsage | None:
    usage = payload.get("usage")
    if usage is None:
        usage = _get(payload, "message", "usage")
    if not isinstance(usage, dict):
        return None
    return _anthropic(
        decode_count(usage.get("input_tokens")),
        decode_count(usage.get("cache_read_input_tokens")),
        decode_count(usage.get("cache_creation_input_tokens")),
        decode_count(usage.get("output_tokens")),
    )


def _anthropic(
    uncached: int | None, read: int | None, write: int | None, output: int | None
) -> RequestUsage:
    """Anthropic usage from its own fields: every input token is uncached + read + write."""
    return RequestUsage(
        input_tokens=None if uncached is None else _sum(uncached, read, write),
        cache_read_tokens=read,
        cache_write_tokens=write,
        output_tokens=output,
        anthropic_input=uncached,
    )


def _gemini_usage(payload: dict[str, Any]) -> RequestUsage | None:
    meta = payload.get("usageMetadata")
    if not isinstance(meta, dict):
        return None
    prompt = decode_count(meta.get("promptTokenCount"))
    cached = decode_count(meta.get("cachedContentTokenCount"))
    if cached is None and prompt is not None and "cachedContentTokenCount" not in meta:
        # The API's JSON is proto3's: a zero count is left out, not unknown.
        cached = 0
    return RequestUsage(
        input_tokens=prompt,
        cache_read_tokens=cached,
        output_tokens=decode_count(meta.get("candidatesTokenCount")),
    )


def _openai_usage(payload: dict[str, Any]) -> RequestUsage | None:
    usage = payload.get("usage")
    if usage is None and payload.get("type") in {"response.completed", "response.done"}:
        usage = _get(payload, "response", "usage")
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:  # Chat Completions
        return RequestUsage(
            input_tokens=decode_count(usage.get("prompt_tokens")),
            cache_read_tokens=decode_count(_get(usage, "prompt_tokens_details", "cached_tokens")),
            output_tokens=decode_count(usage.get("completion_tokens")),
        )
    return RequestUsage(
        input_tokens=decode_count(usage.get("input_tokens")),
        cache_read_tokens=decode_count(_get(usage, "input_tokens_details", "cached_tokens")),
        output_tokens=decode_count(usage.get("output_tokens")),
    )


_USAGE_READERS: Final = {
    "anthropic": _anthropic_usage,
    "gemini": _gemini_usage,
    "openai": _openai_usage,
}


def merge_usage(earlier: RequestUsage | None, later: RequestUsage | None) -> RequestUsage | None:
    """``later``'s counts where it has them, ``earlier``'s elsewhere (streams report in parts).

    Anthropic parts are merged field by field of Anthropic's own usage and summed after,
    so a ``message_delta`` that repeats ``input_tokens`` without the cache fields keeps
    the cache counts of ``message_start`` in the total.
    """
    if earlier is None or later is None:
        return later or earlier
    if earlier.anthropic_input is not None or later.anthropic_input is not None:

        def pick(name: str) -> int | None:
            value: int | None = getattr(later, name)
            return value if value is not None else getattr(earlier, name)

        return _anthropic(pick("anthropic_input"), pick("cache_read_tokens"),
                          pick("cache_write_tokens"), pick("output_tokens"))
    return RequestUsage(
        **{
            f.name: getattr(later, f.name)
            if getattr(later, f.name) is not None
            else getattr(earlier, f.name)
            for f in attrs.fields(RequestUsage)
            if f.name in _COUNTS
        }
    )


# --- sections -----------------------------------------------------------------------------


def _strip_cache_control(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _section(name: str, value: object) -> Section:
    data = json.dumps(
        _strip_cache_control(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8", "surrogatepass")
    import hashlib  # noqa: PLC0415 - only with the observer: not on every run's start-up

    return Section(name, hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest(), len(data))


def _items(name: str, value: object) -> list[Section]:
    """``name[i]`` per item of a list; a lone string or object is ``name[0]``."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [_section(f"{name}[{i}]", item) for i, item in enumerate(items)]


_ORDER: Final[Mapping[str, tuple[tuple[str, bool], ...]]] = {
    # (key, one section per list item)
    "anthropic": (("tools", True), ("system", True), ("messages", True)),
    "openai": (("instructions", False), ("tools", True), ("input", True), ("messages", True)),
    "gemini": (
        ("systemInstruction", False),
        ("system_instruction", False),
        ("tools", True),
        ("contents", True),
    ),
}


def request_sections(api: str, body: Mapping[str, Any]) -> tuple[Section, ...] | None:
    """A request body's sections in its provider's cache order; ``None`` for another API.

    The model is the first section (``model``), when the body names it.
    """
    order = _ORDER.get(api)
    if order is None:
        return None
    sections: list[Section] = []
    if "model" in body:
        sections.append(_section("model", body["model"]))
    for key, per_item in order:
        if key not in body:
            continue
        if per_item:
            sections += _items(key, body[key])
        else:
            sections.append(_section(key, body[key]))
    return tuple(sections)


def salted(sections: Iterable[Section], salt: bytes) -> tuple[Section, ...]:
    """The sections with digests keyed by ``salt``, a per-install secret.

    A stored digest then cannot be matched against the digest of a known prompt.
    """
    import hashlib  # noqa: PLC0415 - only with the observer: not on every run's start-up

    return tuple(
        Section(s.name, hashlib.blake2b(s.digest, key=salt, digest_size=DIGEST_BYTES).digest(),
                s.size)
        for s in sections
    )


@attrs.frozen
class PrefixCheck:
    """The outcome of :func:`compare_prefix`: status, first changed section, bytes reused."""

    status: PrefixStatus
    first_break: str | None = None
    reused_bytes: int | None = None


def compare_prefix(previous: Sequence[Section] | None, current: Sequence[Section]) -> PrefixCheck:
    """Compare a turn's first generation request with the previous turn's, in cache order.

    ``stable`` when all of ``previous`` is the start of ``current``; else ``broken`` at the
    first section whose digest (or name) differs, or at the first section ``current``
    lacks. ``reused_bytes`` is the size of the sections both share from the start.
    """
    if previous is None:
        return PrefixCheck(PrefixStatus.NO_PREVIOUS)
    reused = 0
    for index, old in enumerate(previous):
        new = current[index] if index < len(current) else None
        if new is None or new.name != old.name or new.digest != old.digest:
            name = new.name if new is not None else old.name
            return PrefixCheck(PrefixStatus.BROKEN, name, reused)
        reused += new.size
    return PrefixCheck(PrefixStatus.STABLE, None, reused)
