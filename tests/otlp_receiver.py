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

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpReceiver", "attributes_of", "value_of"]


def value_of(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (scalars and arrays)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind)


def attributes_of(kvs: Any) -> dict[str, Any]:
    """OTLP ``repeated KeyValue`` as a dict."""
    items: list[KeyValue] = list(kvs)
    return {kv.key: value_of(kv.value) for kv in items}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        rx = self.server.receiver
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
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep test output quiet."""


class OtlpReceiver:
    """OTLP/HTTP receiver on a free port of 127.0.0.1; a context manager."""

    def __init__(self) -> None:
        """Bind the port (serving starts on ``__enter__``)."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.encodings: list[str | None] = []

    @property
    def endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

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

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate()`` holds; return whether it did."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

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
