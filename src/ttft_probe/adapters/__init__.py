"""Sans-I/O adapters: one module per runtime family, the protocol, and the registry.

A runtime family is a name. Each built-in one (:class:`RuntimeFamily`, e.g.
``acp-json-rpc``) has its marker rules (DESIGN §3, "Markers per family") in one module of
this package named after it (:mod:`ttft_probe.adapters.acp_json_rpc`), whose class is
``<CamelName>Adapter`` (``AcpJsonRpcAdapter``): adding a built-in family is that module
plus its :class:`RuntimeFamily` member (and its agents in :mod:`ttft_probe.agents`).

A plugin family comes from its own distribution, as an entry point in the
``ttft_probe.adapters`` group (:data:`ENTRY_POINT_GROUP`) whose name is the family's
name and whose object is called with :class:`AdapterOptions` and returns an
:class:`Adapter`; it is then used like a built-in one (``--family NAME``,
``Probe(family=NAME)``). This module exports everything such an adapter needs: the
protocol, the events, the marker and token enums, :class:`LineSplitter` and the
``decode_*`` helpers (the README has a complete example).

:func:`adapter_for` builds an adapter by family name and imports only that module;
:func:`check_family` validates a name; :func:`registered_families` lists them all.
"""

from __future__ import annotations

from ttft_probe.adapters._base import (
    ENTRY_POINT_GROUP,
    Adapter,
    AdapterOptions,
    AgentInfo,
    AgentReportedTimings,
    ContentObserved,
    Event,
    LineSplitter,
    MarkerObserved,
    SessionObserved,
    TurnEnded,
    UsageReported,
    adapter_for,
    check_family,
    decode_count,
    decode_ms,
    decode_name,
    decode_object,
    decode_text,
    registered_families,
)
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
    SessionInitSource,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AdapterOptions",
    "AgentInfo",
    "AgentReportedTimings",
    "ContentObserved",
    "Event",
    "FirstTokenGranularity",
    "FirstTokenKind",
    "LineSplitter",
    "Marker",
    "MarkerObserved",
    "RuntimeFamily",
    "SessionInitSource",
    "SessionObserved",
    "TurnEnded",
    "UsageReported",
    "adapter_for",
    "check_family",
    "decode_count",
    "decode_ms",
    "decode_name",
    "decode_object",
    "decode_text",
    "registered_families",
]
