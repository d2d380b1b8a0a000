"""The contract every delivery sink (OTLP, PostHog, Langfuse) implements.

The outbox (``sinks/outbox.py``) hands a sink a batch of stored runs and marks each run
delivered only when :meth:`Sink.deliver` returned ``True`` for it — a confirmation from
the backend itself (an HTTP 2xx the SDK call reported synchronously), never "queued".
Backends retry on their own schedule; the outbox retries with backoff. A sink therefore
must be idempotent per run (PostHog: the event ``uuid`` is the ``run_id``; OTLP and
Langfuse: span ids are fixed by the record) so that a retried delivery is not counted
twice downstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Protocol, runtime_checkable

import attrs

from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.waterfall import ModelRequest, RequestKind

if TYPE_CHECKING:
    from ttft_probe.content import CapturedContent

__all__ = ["HEX_SPAN_ID", "HEX_TRACE_ID", "Delivery", "Sink", "first_generation", "size_groups"]

HEX_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
"""A W3C trace id as records carry it (``trace_id``): 32 lowercase hex digits."""
HEX_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")
"""A W3C span id as records carry it (``span_id``, ``parent_span_id``): 16 lowercase hex."""


def first_generation(requests: Iterable[ModelRequest]) -> ModelRequest | None:
    """The turn's first ``generation`` request (side calls never are); ``None`` if none.

    The request whose usage the record's ``first_request_*`` fields hold (DESIGN §10).
    """
    return next((r for r in requests if r.kind is RequestKind.GENERATION), None)


@attrs.frozen
class TurnTokens:
    """A turn's token counts for a per-run event (PostHog ``$ai_generation``, Langfuse).

    The whole turn, never one request of it: the agent's own counts from the record when
    it reported any; otherwise, with the provider observer, the sum over every model
    request of the turn that reported usage (side calls cost tokens too). ``fresh_input``
    is the input read anew (input − cache read − cache write); ``input`` counts cached
    tokens in — except from the record, which keeps the agent's own figure (Anthropic
    agents: uncached only). ``None`` where nothing was reported.
    """

    input: int | None = None
    fresh_input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    api: str | None = None  # the requests' API when the counts came from them


def turn_tokens(record: RunRecord, requests: Iterable[ModelRequest]) -> TurnTokens:
    """The :class:`TurnTokens` of ``record``'s turn, its waterfall ``requests`` given."""
    own = (record.input_tokens, record.output_tokens, record.cache_read_input_tokens,
           record.cache_creation_input_tokens)
    if any(v is not None for v in own):
        return TurnTokens(input=record.input_tokens, fresh_input=record.input_tokens,
                          output=record.output_tokens, cache_read=record.cache_read_input_tokens,
                          cache_write=record.cache_creation_input_tokens)
    used = [r for r in requests if r.usage is not None]
    if not used:
        return TurnTokens()

    def total(values: Iterable[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    usages = [r.usage for r in used if r.usage is not None]
    fresh = [None if u.input_tokens is None else
             max(0, u.input_tokens - (u.cache_read_tokens or 0) - (u.cache_write_tokens or 0))
             for u in usages]
    return TurnTokens(
        input=total(u.input_tokens for u in usages),
        fresh_input=total(fresh),
        output=total(u.output_tokens for u in usages),
        cache_read=total(u.cache_read_tokens for u in usages),
        cache_write=total(u.cache_write_tokens for u in usages),
        api=used[0].api,
    )


def _request_tuple(requests: Iterable[ModelRequest]) -> tuple[ModelRequest, ...]:
    return tuple(requests)


@attrs.frozen
class Delivery:
    """One stored run to deliver: its record and its marker times (monotonic ns).

    ``started_wall_ns`` is the run's start as Unix ns (wall clock), so sinks can place
    every marker in wall time: ``started_wall_ns + (marker_ns - times.start_ns)``.
    ``content`` is the run's prompt and answer text, present only when the run was made
    with the opt-in content capture (:mod:`ttft_probe.content`); a sink sends it only then.
    ``requests`` is the run's waterfall (DESIGN §10): every model-bound request the
    provider observer saw, in order, with times in monotonic ns like the markers (place
    them with :meth:`wall_ns`); empty when the observer was off. Only counts, times,
    statuses and sizes: it holds no request body or digest.
    """

    record: RunRecord
    times: MarkerTimes | None
    started_wall_ns: int
    content: CapturedContent | None = None
    requests: tuple[ModelRequest, ...] = attrs.field(default=(), converter=_request_tuple)

    @property
    def first_generation(self) -> ModelRequest | None:
        """:func:`first_generation` of :attr:`requests`."""
        return first_generation(self.requests)

    def wall_ns(self, mono_ns: int | None) -> int | None:
        """Unix ns (wall) of a marker's monotonic reading, ``None`` if it is ``None``."""
        if mono_ns is None or self.times is None:
            return None
        return self.started_wall_ns + (mono_ns - self.times.start_ns)


@runtime_checkable
class Sink(Protocol):
    """Protocol: one delivery destination.

    ``name`` is the outbox key (``"otlp"``, ``"posthog"``, ``"langfuse"``). Implementations
    import their SDK lazily, never raise from :meth:`deliver` (a failure is ``False``,
    logged once per kind), and bound each call by ``timeout_s`` seconds.

    The outbox builds a sink with its class's ``from_environment(env: Mapping[str, str])
    -> Sink | None`` (``None``: not configured). A sink may also have a ``prepare()``
    method (not part of this protocol, looked up by name): the deliverer calls it in its
    own thread right after building the sink, so the SDK is imported while the agent
    runs rather than after it exited.
    """

    name: ClassVar[str]

    def deliver(self, batch: Sequence[Delivery], timeout_s: float) -> Sequence[bool]:
        """Send ``batch``; one ``True`` per run the backend confirmed, in order."""
        ...

    def close(self) -> None:
        """Release connections and SDK resources (bounded, never raises)."""
        ...


def size_groups(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """The indices of ``sizes``, in order, grouped so that each group sums to ``<= limit``.

    For a sink that splits a batch across requests, one size per run (a run is never
    split): an item larger than ``limit`` is a group of its own. Bytes, or any unit.
    """
    groups: list[list[int]] = []
    total = 0
    for index, size in enumerate(sizes):
        if not groups or total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += size
    return groups
