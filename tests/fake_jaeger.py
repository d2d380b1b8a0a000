"""A local Jaeger: OTLP/HTTP in, Jaeger's HTTP query APIs (v3 and v1) out.

Listens on 127.0.0.1 (a free port). Like Jaeger all-in-one it accepts spans on
``POST /v1/traces`` (OTLP/HTTP protobuf, optionally gzipped; what the OTLP sink sends)
and answers queries about them in the shapes of Jaeger's own snapshots
(``fixtures/jaeger/``):

- ``GET /api/v3/traces?query.service_name=&query.start_time_min=&query.start_time_max=
  [&query.operation_name=][&query.num_traces=]`` → ``{"result": {"resourceSpans": […]}}``
  (OTLP/JSON: hex ids, ns times as decimal strings, ``intValue`` as a string, enums as
  numbers); ``404 {"error": {"httpCode": 404, "message": "No traces found"}}`` when
  nothing matched; ``400`` without a service or a time range.
- ``GET /api/v3/traces/<trace id>`` → ``{"result": {"resourceSpans": […]}}``.
- ``GET /api/traces?service=&start=<µs>&end=<µs>&limit=[&operation=][&tags={json}]``
  → ``{"data": [{traceID, spans[{…, tags[{key, type, value}], logs}], processes}], …}``.
- ``GET /api/services`` → ``{"data": [service names], …}``.

Search follows Jaeger's storage semantics: a trace matches when one of its spans is of
the service, has the operation (span name, when asked), carries every tag asked for
(compared as strings, span or resource attributes) and starts within the range; whole
traces are returned, newest first, at most ``limit`` / ``num_traces`` of them.

``FakeJaeger(v3=False)`` is a Jaeger without the v3 API: ``/api/v3/*`` answers a plain
``404 page not found``, as an older query service does.
"""

from __future__ import annotations

import calendar
import json
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import attrs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers.http import Handler, LocalFake
from helpers.otlp import attributes_of, value_of

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["FakeJaeger", "StoredSpan"]

_KIND_NAMES = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


@attrs.frozen
class StoredSpan:
    """One received span with its resource and scope."""

    resource: dict[str, Any]
    resource_json: list[dict[str, Any]]
    scope_name: str
    scope_version: str
    span: Span

    @property
    def service(self) -> str:
        """The resource's ``service.name``."""
        return str(self.resource.get("service.name", ""))

    @property
    def trace_id(self) -> str:
        """The trace id as 32 hex digits."""
        return self.span.trace_id.hex()


def _otlp_json_value(value: AnyValue) -> dict[str, Any]:
    """OTLP/JSON ``AnyValue`` (protojson: int64 as a decimal string)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": value.string_value}
    if kind == "bool_value":
        return {"boolValue": value.bool_value}
    if kind == "int_value":
        return {"intValue": str(value.int_value)}
    if kind == "double_value":
        return {"doubleValue": value.double_value}
    if kind == "array_value":
        return {"arrayValue": {"values": [_otlp_json_value(v) for v in value.array_value.values]}}
    return {}


def _otlp_json_attributes(kvs: Any) -> list[dict[str, Any]]:
    return [{"key": kv.key, "value": _otlp_json_value(kv.value)} for kv in kvs]


def _v1_tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, list):
        return {"key": key, "type": "string", "value": json.dumps(value)}
    return {"key": key, "type": "string", "value": str(value)}


def _as_string(value: Any) -> str:
    """Jaeger's ``AsString`` of a tag value (how tag search compares)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_rfc3339_ns(text: str) -> int:
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"cannot parse {text!r} as RFC 3339")
    base, frac, zone = match.groups()
    seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


class _Handler(Handler["FakeJaeger"]):
    def do_POST(self) -> None:  # noqa: N802 - the base class names it
        body = self.read_body()
        if self.path != "/v1/traces":
            self.send_json(404, {"error": "not found"})
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.gunzip(body))
        self.fake.ingest(request)
        data = ExportTraceServiceResponse().SerializeToString()
        self.send_body(200, data, "application/x-protobuf")

    def do_GET(self) -> None:  # noqa: N802 - the base class names it
        fake = self.fake
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fake.record(url.path, params)
        if url.path.startswith("/api/v3/") and not fake.v3:
            self._text(404, "404 page not found\n")
        elif url.path == "/api/v3/traces":
            self._v3_find(params)
        elif url.path.startswith("/api/v3/traces/"):
            spans = fake.trace(url.path.rsplit("/", 1)[1])
            if spans:
                self.send_json(200, {"result": fake.v3_result([spans])})
            else:
                self._v3_error(404, "trace not found")
        elif url.path == "/api/traces":
            self._v1_find(params)
        elif url.path == "/api/services":
            services = sorted({s.service for s in fake.spans()})
            self.send_json(
                200,
                {"data": services, "total": len(services), "limit": 0, "offset": 0, "errors": None},
            )
        else:
            self._text(404, "404 page not found\n")

    def _v3_find(self, params: Mapping[str, str]) -> None:
        fake = self.fake
        service = params.get("query.service_name")
        if not service:
            self._v3_error(400, "service_name is required")
            return
        try:
            start = _parse_rfc3339_ns(params["query.start_time_min"])
            end = _parse_rfc3339_ns(params["query.start_time_max"])
            limit = int(params.get("query.num_traces") or params.get("query.search_depth") or "100")
        except (KeyError, ValueError) as exc:
            self._v3_error(400, f"malformed parameters: {exc}")
            return
        traces = fake.find(
            service=service,
            operation=params.get("query.operation_name") or None,
            tags={},
            start_ns=start,
            end_ns=end,
            limit=limit,
        )
        if not traces:
            self._v3_error(404, "No traces found")
            return
        self.send_json(200, {"result": fake.v3_result(traces)})

    def _v1_find(self, params: Mapping[str, str]) -> None:
        fake = self.fake
        service = params.get("service")
        if not service:
            self._v1_error(400, "parameter 'service' is required")
            return
        try:
            end_us = int(params["end"]) if "end" in params else time.time_ns() // 1000
            start_us = int(params["start"]) if "start" in params else end_us - 3_600_000_000
            limit = int(params.get("limit", "100"))
            tags = json.loads(params["tags"]) if "tags" in params else {}
        except ValueError as exc:
            self._v1_error(400, f"malformed parameters: {exc}")
            return
        if not isinstance(tags, dict):
            self._v1_error(400, "malformed parameter 'tags'")
            return
        traces = fake.find(
            service=service,
            operation=params.get("operation") or None,
            tags={str(k): str(v) for k, v in tags.items()},
            start_ns=start_us * 1000,
            end_ns=end_us * 1000 + 999,
            limit=limit,
        )
        self.send_json(
            200,
            {
                "data": [fake.v1_trace(t) for t in traces],
                "total": 0,
                "limit": 0,
                "offset": 0,
                "errors": None,
            },
        )

    def _v3_error(self, code: int, message: str) -> None:
        self.send_json(code, {"error": {"httpCode": code, "message": message}})

    def _v1_error(self, code: int, message: str) -> None:
        self.send_json(
            code,
            {
                "data": None,
                "total": 0,
                "limit": 0,
                "offset": 0,
                "errors": [{"code": code, "msg": message}],
            },
        )

    def _text(self, status: int, text: str) -> None:
        self.send_body(status, text.encode(), "text/plain; charset=utf-8")


class FakeJaeger(LocalFake):
    """Jaeger all-in-one stand-in on a free port of 127.0.0.1; a context manager.

    ``url`` is the base URL for ``JAEGER_URL`` (query API) and the OTLP traces endpoint's.

    Args:
        v3: Serve the v3 query API (``False``: an older Jaeger, v1 only).
    """

    handler = _Handler
    thread_name = "fake-jaeger"

    def __init__(self, *, v3: bool = True) -> None:
        """Bind the port (serving starts on ``__enter__``)."""
        self.v3 = v3
        self._lock = threading.Lock()
        self._spans: list[StoredSpan] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        super().__init__()

    @property
    def otlp_traces_endpoint(self) -> str:
        """``…/v1/traces``: where the OTLP sink delivers."""
        return f"{self.url}/v1/traces"

    # --- storage ---

    def ingest(self, request: ExportTraceServiceRequest) -> None:
        """Store every span of a decoded OTLP export request."""
        with self._lock:
            for rs in request.resource_spans:
                resource = attributes_of(rs.resource.attributes)
                resource_json = _otlp_json_attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        copy = type(span)()
                        copy.CopyFrom(span)
                        self._spans.append(
                            StoredSpan(
                                resource, resource_json, ss.scope.name, ss.scope.version, copy
                            )
                        )

    def spans(self) -> list[StoredSpan]:
        """Every stored span."""
        with self._lock:
            return list(self._spans)

    def record(self, path: str, params: dict[str, str]) -> None:
        """Keep one query request for assertions."""
        with self._lock:
            self.requests.append((path, params))

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """The spans of one trace."""
        return [s for s in self.spans() if s.trace_id == trace_id.lower()]

    def find(
        self,
        *,
        service: str,
        operation: str | None,
        tags: Mapping[str, str],
        start_ns: int,
        end_ns: int,
        limit: int,
    ) -> list[list[StoredSpan]]:
        """Matching traces (whole), newest first, at most ``limit``."""
        traces: dict[str, list[StoredSpan]] = {}
        for stored in self.spans():
            traces.setdefault(stored.trace_id, []).append(stored)

        def matches(stored: StoredSpan) -> bool:
            span = stored.span
            if stored.service != service:
                return False
            if operation is not None and span.name != operation:
                return False
            if not start_ns <= span.start_time_unix_nano <= end_ns:
                return False
            attributes = {**stored.resource, **attributes_of(span.attributes)}
            return all(k in attributes and _as_string(attributes[k]) == v for k, v in tags.items())

        found = [spans for spans in traces.values() if any(matches(s) for s in spans)]
        found.sort(key=lambda spans: max(s.span.start_time_unix_nano for s in spans), reverse=True)
        return found[: max(0, limit)]

    # --- answer shapes ---

    def v3_result(self, traces: list[list[StoredSpan]]) -> dict[str, Any]:
        """OTLP/JSON ``{"resourceSpans": …}``: per trace, spans grouped by resource and scope."""
        resource_spans: list[dict[str, Any]] = []
        for spans in traces:
            groups: dict[tuple[str, str, str], list[StoredSpan]] = {}
            for stored in spans:
                key = (
                    json.dumps(stored.resource_json, sort_keys=True),
                    stored.scope_name,
                    stored.scope_version,
                )
                groups.setdefault(key, []).append(stored)
            for members in groups.values():
                head = members[0]
                resource_spans.append(
                    {
                        "resource": {"attributes": head.resource_json},
                        "scopeSpans": [
                            {
                                "scope": {"name": head.scope_name, "version": head.scope_version},
                                "spans": [_v3_span(s.span) for s in members],
                            }
                        ],
                    }
                )
        return {"resourceSpans": resource_spans}

    def v1_trace(self, spans: list[StoredSpan]) -> dict[str, Any]:
        """One trace in the v1 (UI API) shape."""
        processes: dict[str, dict[str, Any]] = {}
        process_ids: dict[str, str] = {}
        out = []
        for stored in spans:
            key = json.dumps(stored.resource_json, sort_keys=True)
            if key not in process_ids:
                pid = f"p{len(process_ids) + 1}"
                process_ids[key] = pid
                processes[pid] = {
                    "serviceName": stored.service,
                    "tags": [
                        _v1_tag(k, v) for k, v in stored.resource.items() if k != "service.name"
                    ],
                }
            out.append(_v1_span(stored, process_ids[key]))
        return {
            "traceID": spans[0].trace_id,
            "spans": out,
            "processes": processes,
            "warnings": None,
        }


def _v3_span(span: Span) -> dict[str, Any]:
    data: dict[str, Any] = {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "parentSpanId": span.parent_span_id.hex(),
        "flags": span.flags,
        "name": span.name,
        "kind": int(span.kind),
        "startTimeUnixNano": str(span.start_time_unix_nano),
        "endTimeUnixNano": str(span.end_time_unix_nano),
        "attributes": _otlp_json_attributes(span.attributes),
        "events": [
            {
                "timeUnixNano": str(e.time_unix_nano),
                "name": e.name,
                "attributes": _otlp_json_attributes(e.attributes),
            }
            for e in span.events
        ],
        "status": {"code": int(span.status.code)},
    }
    if span.status.message:
        data["status"]["message"] = span.status.message
    return data


def _v1_span(stored: StoredSpan, process_id: str) -> dict[str, Any]:
    span = stored.span
    tags = [_v1_tag(kv.key, value_of(kv.value)) for kv in span.attributes]
    tags.append(_v1_tag("otel.scope.name", stored.scope_name))
    tags.append(_v1_tag("otel.scope.version", stored.scope_version))
    tags.append(_v1_tag("span.kind", _KIND_NAMES.get(int(span.kind), "unspecified")))
    if span.status.code == 2:
        tags.append(_v1_tag("otel.status_code", "ERROR"))
        tags.append(_v1_tag("error", True))
        if span.status.message:
            tags.append(_v1_tag("otel.status_description", span.status.message))
    references = []
    if span.parent_span_id:
        references.append(
            {
                "refType": "CHILD_OF",
                "traceID": span.trace_id.hex(),
                "spanID": span.parent_span_id.hex(),
            }
        )
    return {
        "traceID": span.trace_id.hex(),
        "spanID": span.span_id.hex(),
        "flags": span.flags,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_time_unix_nano // 1000,
        "duration": (span.end_time_unix_nano - span.start_time_unix_nano) // 1000,
        "tags": tags,
        "logs": [
            {
                "timestamp": e.time_unix_nano // 1000,
                "fields": [_v1_tag("event", e.name)]
                + [_v1_tag(kv.key, value_of(kv.value)) for kv in e.attributes],
            }
            for e in span.events
        ],
        "processID": process_id,
        "warnings": None,
    }
