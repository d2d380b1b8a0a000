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
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Protocol, runtime_checkable

import attrs

from ttft_probe.record import MarkerTimes, RunRecord

if TYPE_CHECKING:
    from ttft_probe.content import CapturedContent

__all__ = ["HEX_SPAN_ID", "HEX_TRACE_ID", "Delivery", "Sink", "size_groups"]

HEX_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
"""A W3C trace id as records carry it (``trace_id``): 32 lowercase hex digits."""
HEX_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")
"""A W3C span id as records carry it (``span_id``, ``parent_span_id``): 16 lowercase hex."""


@attrs.frozen
class Delivery:
    """One stored run to deliver: its record and its marker times (monotonic ns).

    ``started_wall_ns`` is the run's start as Unix ns (wall clock), so sinks can place
    every marker in wall time: ``started_wall_ns + (marker_ns - times.start_ns)``.
    ``content`` is the run's prompt and answer text, present only when the run was made
    with the opt-in content capture (:mod:`ttft_probe.content`); a sink sends it only then.
    """

    record: RunRecord
    times: MarkerTimes | None
    started_wall_ns: int
    content: CapturedContent | None = None

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
