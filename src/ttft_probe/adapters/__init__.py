"""Sans-I/O adapters: one module per runtime family, plus the protocol and the registry.

=======================  =========================================================
family                   module
=======================  =========================================================
``claude-stream-json``   :mod:`ttft_probe.adapters.claude_stream_json`
``json-event-stream``    :mod:`ttft_probe.adapters.json_event_stream`
``acp-json-rpc``         :mod:`ttft_probe.adapters.acp_json_rpc`
``plain``                :mod:`ttft_probe.adapters.plain`
=======================  =========================================================

Each family's marker rules live in its one module (DESIGN §3, "Markers per family");
:func:`adapter_for` builds an adapter by family name and imports only that module.
"""

from __future__ import annotations

from ttft_probe.adapters._base import (
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
    registered_families,
)

__all__ = [
    "Adapter",
    "AdapterOptions",
    "AgentInfo",
    "AgentReportedTimings",
    "ContentObserved",
    "Event",
    "LineSplitter",
    "MarkerObserved",
    "SessionObserved",
    "TurnEnded",
    "UsageReported",
    "adapter_for",
    "registered_families",
]
