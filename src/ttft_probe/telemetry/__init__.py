"""OpenTelemetry for the runs: live instrumentation, the span shape, the ``OTEL_*`` variables.

- :mod:`ttft_probe.telemetry.live`: :class:`Telemetry` and :class:`RunSpan`, the root
  span started at the spawn, its phase spans, events and metrics;
- :mod:`ttft_probe.telemetry.shape`: :func:`run_shape`, the spans of a run as a pure
  value, made by the live path and rebuilt by the durable OTLP sink
  (:mod:`ttft_probe.sinks.otlp`) from a stored record;
- :mod:`ttft_probe.telemetry.env`: the OpenTelemetry SDK's ``OTEL_*`` variables
  (whether OTLP export is configured, which protocol, the resource).

Importing this package imports no OpenTelemetry module; that waits for
:meth:`Telemetry.prepare` (or a sink's first delivery).
"""

from __future__ import annotations

from ttft_probe.telemetry.env import (
    GRPC,
    HTTP_PROTOBUF,
    otlp_configured,
    otlp_protocol,
    resource_from,
)
from ttft_probe.telemetry.live import ATEXIT_TIMEOUT_MS, RunSpan, Telemetry
from ttft_probe.telemetry.shape import (
    RunShape,
    content_attributes,
    root_span_name,
    run_shape,
)

__all__ = [
    "ATEXIT_TIMEOUT_MS",
    "GRPC",
    "HTTP_PROTOBUF",
    "RunShape",
    "RunSpan",
    "Telemetry",
    "content_attributes",
    "otlp_configured",
    "otlp_protocol",
    "resource_from",
    "root_span_name",
    "run_shape",
]
