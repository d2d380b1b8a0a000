"""A small in-process OTLP/HTTP receiver: proves ttft_probe's telemetry on the wire.

Listens on 127.0.0.1 (a free port), accepts ``POST /v1/traces`` and ``POST /v1/metrics``
with ``application/x-protobuf`` bodies (optionally ``Content-Encoding: gzip``), decodes
them with ``opentelemetry-proto`` and keeps the decoded requests for assertions::

    with OtlpReceiver() as rx:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.endpoint
        ...
        assert rx.wait_for(lambda: rx.span_names() >= {"cli_ready"}, timeout=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers.http import Handler, LocalFake
from helpers.otlp import attributes_of

if TYPE_CHECKING:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpReceiver"]


class _Handler(Handler["OtlpReceiver"]):
    def do_POST(self) -> None:  # noqa: N802 - the base class names it
        body = self.gunzip(self.read_body())
        rx = self.fake
        response: bytes
        if self.path == "/v1/traces":
            traces = ExportTraceServiceRequest()
            traces.ParseFromString(body)
            rx.add(traces, self.headers.get("Content-Encoding"))
            response = ExportTraceServiceResponse().SerializeToString()
        elif self.path == "/v1/metrics":
            metrics = ExportMetricsServiceRequest()
            metrics.ParseFromString(body)
            rx.add(metrics, self.headers.get("Content-Encoding"))
            response = ExportMetricsServiceResponse().SerializeToString()
        else:
            self.send_error(404)
            return
        self.send_body(200, response, "application/x-protobuf")


class OtlpReceiver(LocalFake):
    """OTLP/HTTP receiver on a free port of 127.0.0.1; a context manager."""

    handler = _Handler
    thread_name = "otlp-receiver"

    def __init__(self) -> None:
        """Bind the port (serving starts on ``__enter__``)."""
        super().__init__()
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.encodings: list[str | None] = []

    @property
    def endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return self.url

    def add(
        self, request: ExportTraceServiceRequest | ExportMetricsServiceRequest, encoding: str | None
    ) -> None:
        """Store one decoded request and wake waiters."""
        with self._cond:
            if isinstance(request, ExportTraceServiceRequest):
                self.traces.append(request)
            else:
                self.metrics.append(request)
            self.encodings.append(encoding)
            self._cond.notify_all()

    # --- views for assertions ---

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every received span with its resource's attributes."""
        with self._cond:
            return [
                (attributes_of(rs.resource.attributes), span)
                for req in self.traces
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]

    def span_names(self) -> set[str]:
        """Names of every received span."""
        return {span.name for _, span in self.spans()}

    def metric_list(self) -> list[tuple[dict[str, Any], Metric]]:
        """Every received metric with its resource's attributes."""
        with self._cond:
            return [
                (attributes_of(rm.resource.attributes), metric)
                for req in self.metrics
                for rm in req.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            ]

    def metric_names(self) -> set[str]:
        """Names of every received metric."""
        return {metric.name for _, metric in self.metric_list()}
