"""Durable OTLP delivery of a run's spans, rebuilt from the stored record (DESIGN §7).

The live spans of :mod:`ttft_probe.telemetry.live` on ttft_probe's *private* provider are not
exported as they end: an in-memory batch processor loses them on SIGKILL and while the
collector is down. Instead the outbox hands the stored run to :class:`OtlpSink`, which
rebuilds the run's spans and exports them synchronously; the outbox marks the run
delivered only when the collector answered with success, and retries otherwise::

    sink = OtlpSink.from_environment(os.environ)   # None unless an OTLP endpoint is set
    if sink is not None:
        ok = sink.deliver([Delivery(record, times, started_wall_ns)], timeout_s=5.0)
        sink.close()

What is sent for each run is :func:`ttft_probe.telemetry.shape.run_shape` — the same spans,
attributes, events and status the live path emits — as SDK ``ReadableSpan`` objects:

- the root ``invoke_agent {agent}`` (kind ``CLIENT``) with exactly the record's
  ``trace_id`` and ``span_id``, so the span the child's ``TRACEPARENT`` named is the one
  that arrives. Its parent is the record's parent span (``parent_span_id``, when the
  record carries one, or the ``parent_span_id`` argument of :func:`build_spans`), in
  the same trace; otherwise it is a root. A record without ids
  (no span was made at spawn) gets ids derived from its ``run_id``: still stable.
- the phase spans (kind ``INTERNAL``) with span ids derived from ``run_id`` and the span
  name (:func:`child_span_id`), so a redelivery sends identical ids and a collector or
  trace store can drop the copy by span id;
- the run's model requests (``Delivery.requests``, provider observer only), one span
  each as :mod:`ttft_probe.telemetry.shape` describes them (kind ``CLIENT``, under
  ``model_first_token`` when the request arrived within it, else under the root), with
  span ids derived from ``run_id`` and the request's number (:func:`request_span_id`);
- explicit timestamps: every marker at ``Delivery.wall_ns(marker)``, the wall time the
  run's anchor gave it. The root ends at ``end_ns``; without it, at the last marker
  observed. A delivery without marker times sends the root alone, from
  ``started_wall_ns`` for ``total_duration_ms`` (0 when unknown).
- the run's prompt and answer text, only when the run was made with the opt-in content
  capture (``Delivery.content``; :mod:`ttft_probe.content`): on the root span, the one
  carrying the GenAI operation, ``gen_ai.input.messages`` / ``gen_ai.output.messages``
  (JSON strings of the GenAI message lists, each only when that text was seen) and
  ``ttft_probe.content_truncated`` = ``True`` when a text was cut — the same attributes
  the live root span gets (:func:`ttft_probe.telemetry.shape.content_attributes`). Without
  content the spans are exactly as before. Runs whose content makes a batch larger than
  about 3 MiB are exported in several requests (OTLP/gRPC receivers refuse messages over
  4 MiB by default), each run's spans in one.

Configuration (the OpenTelemetry SDK's variables, read from the mapping given to
:meth:`OtlpSink.from_environment`): ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is
appended for HTTP) or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as it is);
``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` ``http/protobuf`` (default) or ``grpc``;
``…_HEADERS`` (``k=v,k2=v2``, URL-encoded values), ``…_COMPRESSION`` (``gzip``,
``deflate``, ``none``), ``…_TIMEOUT`` (seconds, as the Python SDK reads it; default 10);
``OTEL_SERVICE_NAME`` (default ``ttft-probe``); ``OTEL_TRACES_EXPORTER`` must allow
``otlp`` and ``OTEL_SDK_DISABLED`` must not be ``true``. TLS files
(``…_CERTIFICATE``, ``…_CLIENT_KEY``, ``…_CLIENT_CERTIFICATE``) and
``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK from the process environment.

Importing this module imports no OpenTelemetry SDK or exporter module; the first
:meth:`OtlpSink.deliver` does. Nothing here raises into the caller: a failure is
``False`` for the runs concerned, logged once per kind on ``ttft_probe.sinks.otlp``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Self

import attrs

from ttft_probe import _semconv as sc
from ttft_probe._logonce import LogOnce
from ttft_probe._version import VERSION
from ttft_probe.sinks._base import HEX_SPAN_ID, HEX_TRACE_ID, Delivery, size_groups
from ttft_probe.telemetry.env import (
    GRPC,
    HTTP_PROTOBUF,
    otlp_configured,
    otlp_protocol,
    resource_from,
)
from ttft_probe.telemetry.shape import run_shape

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["OtlpSink", "build_spans", "child_span_id", "request_span_id"]

_log = logging.getLogger(__name__)

_SCOPE: Final = "ttft_probe"
_NS_PER_MS: Final = 1_000_000
_DEFAULT_TIMEOUT_S: Final = 10.0
_TRACES_PATH: Final = "/v1/traces"
_SAMPLED: Final = 0x01
_COMPRESSIONS: Final = frozenset({"gzip", "deflate", "none"})
_MAX_EXPORT_BYTES: Final = 3 * 1024 * 1024
"""Estimated size bound of one export: the runs of a batch are split into exports below
it (a run never split), since OTLP/gRPC receivers (the OTel Collector's, Jaeger's)
refuse a message over 4 MiB by default. Only captured content makes a batch that large."""
_SPAN_BYTES: Final = 1024
"""Estimated encoded size of a span apart from its string attribute values."""


def child_span_id(run_id: str, name: str) -> int:
    """The span id (64-bit, non-zero) of a run's span ``name``, derived from ``run_id``.

    BLAKE2b of ``"<run_id>/<name>"``: the same run always gets the same ids, so a retried
    delivery is the same spans, not new ones.
    """
    digest = hashlib.blake2b(f"{run_id}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def request_span_id(run_id: str, request_id: int) -> int:
    """The span id of a run's model request number ``request_id`` (64-bit, non-zero).

    :func:`child_span_id` of ``request/<request_id>``: a redelivered waterfall has the
    same span ids.
    """
    return child_span_id(run_id, f"request/{request_id}")


def _derived_trace_id(run_id: str) -> int:
    digest = hashlib.blake2b(f"{run_id}/trace".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big") or 1


def _hex_id(value: object, pattern: re.Pattern[str]) -> int | None:
    """A non-zero id from lowercase hex of the right length, else ``None``."""
    if not isinstance(value, str) or pattern.fullmatch(value.lower()) is None:
        return None
    return int(value, 16) or None


def build_spans(
    delivery: Delivery,
    resource: Resource | None = None,
    *,
    parent_span_id: str | None = None,
) -> list[ReadableSpan]:
    """The run's spans, rebuilt from its record and marker times; root first.

    Args:
        delivery: The stored run (record, marker times, start as Unix ns, the opt-in
            captured content, which goes on the root span when present, and the model
            requests, one span each).
        resource: The spans' resource (default: :func:`ttft_probe.telemetry.env.resource_from`
            of the process environment).
        parent_span_id: The root span's parent (16 hex digits, same trace); default: the
            record's ``parent_span_id``.

    Returns:
        ``ReadableSpan`` objects with explicit ids and timestamps (Unix ns). Imports the
        OpenTelemetry SDK.
    """
    import os  # noqa: PLC0415 - only for the default resource

    from opentelemetry.sdk.trace import Event, ReadableSpan  # noqa: PLC0415
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags  # noqa: PLC0415
    from opentelemetry.trace.status import Status, StatusCode  # noqa: PLC0415

    record, times = delivery.record, delivery.times
    if resource is None:
        resource = resource_from(os.environ)
    scope = InstrumentationScope(_SCOPE, VERSION)
    shape = run_shape(record, times, delivery.content, delivery.requests)

    trace_id = _hex_id(record.trace_id, HEX_TRACE_ID)
    root_id = _hex_id(record.span_id, HEX_SPAN_ID)
    if trace_id is None or root_id is None:  # no span was made at spawn: stable stand-ins
        trace_id = _derived_trace_id(record.run_id)
        root_id = child_span_id(record.run_id, shape.name)
    flags = TraceFlags(_SAMPLED)
    root_ctx = SpanContext(trace_id, root_id, is_remote=False, trace_flags=flags)
    parent_hex = parent_span_id if parent_span_id is not None else record.parent_span_id
    parent_id = _hex_id(parent_hex, HEX_SPAN_ID)
    parent_ctx = (
        None
        if parent_id is None
        else SpanContext(trace_id, parent_id, is_remote=False, trace_flags=flags)
    )

    def wall(mono_ns: int) -> int:
        value = delivery.wall_ns(mono_ns)
        return delivery.started_wall_ns if value is None else value

    start = delivery.started_wall_ns
    if times is None:
        duration_ms = record.total_duration_ms or 0.0
        end = start + max(0, round(duration_ms * _NS_PER_MS))
    else:
        observed = [
            t
            for t in (
                times.end_ns,
                times.first_token_ns,
                times.prompt_sent_ns,
                times.session_init_done_ns,
                times.cli_ready_ns,
            )
            if t is not None
        ]
        end = wall(times.end_ns if times.end_ns is not None else max(observed, default=0))
        end = max(end, start)

    status = (
        Status(StatusCode.UNSET)
        if shape.error_type is None
        else Status(StatusCode.ERROR, shape.status_description)
    )
    spans = [
        ReadableSpan(
            name=shape.name,
            context=root_ctx,
            parent=parent_ctx,
            resource=resource,
            attributes=dict(shape.attributes),
            events=[Event(name, timestamp=wall(t_ns)) for name, t_ns in shape.events],
            kind=SpanKind.CLIENT,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=scope,
        )
    ]
    spans.extend(
        ReadableSpan(
            name=name,
            context=SpanContext(
                trace_id,
                child_span_id(record.run_id, name),
                is_remote=False,
                trace_flags=flags,
            ),
            parent=root_ctx,
            resource=resource,
            attributes=dict(shape.phase_attributes),
            kind=SpanKind.INTERNAL,
            start_time=wall(begin_ns),
            end_time=wall(end_ns),
            instrumentation_scope=scope,
        )
        for name, begin_ns, end_ns in shape.phases
    )
    for request in shape.requests:
        parent_of_request = (
            root_ctx
            if request.parent is None
            else SpanContext(
                trace_id,
                child_span_id(record.run_id, request.parent),
                is_remote=False,
                trace_flags=flags,
            )
        )
        spans.append(
            ReadableSpan(
                name=request.name,
                context=SpanContext(
                    trace_id,
                    request_span_id(record.run_id, request.request_id),
                    is_remote=False,
                    trace_flags=flags,
                ),
                parent=parent_of_request,
                resource=resource,
                attributes=dict(request.attributes),
                kind=SpanKind.CLIENT,
                status=Status(StatusCode.UNSET)
                if request.error_type is None
                else Status(StatusCode.ERROR, f"HTTP {request.error_type}"),
                start_time=wall(request.begin_ns),
                end_time=wall(request.end_ns),
                instrumentation_scope=scope,
            )
        )
    return spans


@attrs.frozen
class _Config:
    protocol: str
    endpoint: str | None
    headers: Mapping[str, str]
    compression: str | None
    timeout_s: float
    service_name: str


class OtlpSink:
    """The OTLP trace sink of the outbox: one export per batch, confirmed or ``False``.

    Args:
        endpoint: The traces endpoint. HTTP: the full URL (``…/v1/traces``); gRPC:
            ``http://host:4317`` (``http`` means an insecure channel). ``None``: the
            exporter's own default and environment.
        protocol: ``"http/protobuf"`` (default) or ``"grpc"``.
        headers: Extra request headers (gRPC metadata).
        compression: ``"gzip"``, ``"deflate"``, ``"none"`` or ``None`` (exporter default).
        timeout_s: Upper bound (s) of one export, below the ``timeout_s`` of each
            :meth:`deliver` call.
        service_name: Resource ``service.name``.

    Raises:
        ValueError: An unknown protocol or compression (configure loudly).
    """

    name: ClassVar[str] = "otlp"

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        protocol: str = HTTP_PROTOBUF,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
        service_name: str = sc.SERVICE_NAME_DEFAULT,
    ) -> None:
        """Check and keep the configuration; nothing is imported or connected yet."""
        if protocol not in {HTTP_PROTOBUF, GRPC}:
            raise ValueError(f"OTLP protocol {protocol!r} is not supported (http/protobuf, grpc)")
        if compression is not None and compression not in _COMPRESSIONS:
            raise ValueError(f"OTLP compression {compression!r} is not gzip, deflate or none")
        self._config = _Config(
            protocol=protocol,
            endpoint=endpoint,
            headers=dict(headers or {}),
            compression=compression,
            timeout_s=timeout_s,
            service_name=service_name,
        )
        self._lock = threading.Lock()
        self._resource: Resource | None = None
        self._warn = LogOnce(_log)
        self._closed = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Self | None:
        """A sink configured by the ``OTEL_*`` variables of ``env``, or ``None``.

        ``None`` unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
        ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, ``OTEL_TRACES_EXPORTER`` allows
        ``otlp`` and ``OTEL_SDK_DISABLED`` is not ``true``. An unsupported protocol or
        compression, or a bad timeout, is logged and replaced by the default.
        """
        if not otlp_configured(env, "TRACES"):
            return None
        protocol = otlp_protocol(env, "TRACES")
        if protocol is None:
            _log.warning("ttft_probe: OTLP traces protocol is not supported; using http/protobuf")
            protocol = HTTP_PROTOBUF
        traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        endpoint = traces_endpoint or base
        if not traces_endpoint and base and protocol == HTTP_PROTOBUF:
            endpoint = base.rstrip("/") + _TRACES_PATH  # the spec's per-signal path
        compression = _signal_env(env, "COMPRESSION")
        if compression is not None:
            compression = compression.strip().lower()
            if compression not in _COMPRESSIONS:
                _log.warning("ttft_probe: OTLP compression %r is not supported", compression)
                compression = None
        timeout_s = _DEFAULT_TIMEOUT_S
        raw_timeout = _signal_env(env, "TIMEOUT")
        if raw_timeout is not None:
            try:
                timeout_s = float(raw_timeout)
            except ValueError:
                _log.warning("ttft_probe: OTLP timeout %r is not a number", raw_timeout)
        return cls(
            endpoint=endpoint,
            protocol=protocol,
            headers=_parse_headers(_signal_env(env, "HEADERS") or ""),
            compression=compression,
            timeout_s=timeout_s,
            service_name=env.get("OTEL_SERVICE_NAME") or sc.SERVICE_NAME_DEFAULT,
        )

    @property
    def protocol(self) -> str:
        """``"http/protobuf"`` or ``"grpc"``."""
        return self._config.protocol

    @property
    def endpoint(self) -> str | None:
        """The traces endpoint the exporter is given (``None``: the exporter's default)."""
        return self._config.endpoint

    def deliver(self, batch: Sequence[Delivery], timeout_s: float) -> list[bool]:
        """Export the spans of every run of ``batch`` in one OTLP request.

        Runs with captured content larger than about 3 MiB together are sent in several
        requests, one after the other (each run's spans in one); runs without content
        always fit in one.

        Returns:
            One bool per run, in order: ``True`` only when the exporter returned
            ``SUCCESS`` for its request (the collector answered 2xx / gRPC OK) within
            ``timeout_s`` seconds. A run whose spans cannot be built is ``False`` alone.
            Never raises.
        """
        results = [False] * len(batch)
        if not batch or self._closed:
            return results
        deadline = time.monotonic() + max(0.0, timeout_s)
        outcome: dict[int, bool] = {}
        worker = threading.Thread(
            target=self._export_batch,
            args=(batch, max(0.001, timeout_s), outcome),
            name="ttft_probe-otlp-export",
            daemon=True,  # a hung collector must not hold up interpreter exit
        )
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            self._warn.warning(
                "timeout", "ttft_probe: OTLP export did not finish within %.1f s", timeout_s
            )
        for index, ok in dict(outcome).items():  # requests answered in time, if any
            results[index] = ok
        return results

    def close(self) -> None:
        """Refuse further deliveries (every export has its own exporter). Never raises."""
        self._closed = True

    # --- internals ---

    def _export_batch(
        self, batch: Sequence[Delivery], timeout_s: float, outcome: dict[int, bool]
    ) -> None:
        try:
            from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: PLC0415

            resource = self._get_resource()
            built: list[tuple[int, list[ReadableSpan]]] = []
            for index, delivery in enumerate(batch):
                try:
                    built.append((index, build_spans(delivery, resource)))
                except Exception:  # noqa: BLE001 - one bad run must not block the batch
                    self._warn.warning(
                        "build", "ttft_probe: could not rebuild a run's spans", exc_info=True
                    )
            if not built:
                return
            exporter = self._exporter(min(self._config.timeout_s, timeout_s))
            try:
                sizes = [_estimated_size(run_spans) for _, run_spans in built]
                for group in size_groups(sizes, _MAX_EXPORT_BYTES):
                    runs = [built[i] for i in group]
                    spans = [span for _, run_spans in runs for span in run_spans]
                    ok = exporter.export(spans) is SpanExportResult.SUCCESS
                    if not ok:
                        self._warn.warning(
                            "export", "ttft_probe: the OTLP collector did not accept spans"
                        )
                    for index, _ in runs:
                        outcome[index] = ok
            finally:
                exporter.shutdown()
        except Exception:  # noqa: BLE001 - exporter faults are a False, never an exception
            self._warn.warning("export_fault", "ttft_probe: OTLP export failed", exc_info=True)

    def _get_resource(self) -> Resource:
        with self._lock:
            if self._resource is None:
                self._resource = resource_from({"OTEL_SERVICE_NAME": self._config.service_name})
            return self._resource

    def _exporter(self, timeout_s: float) -> SpanExporter:
        config = self._config
        if config.protocol == GRPC:
            return _grpc_exporter(config, timeout_s)
        from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: PLC0415
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(
            endpoint=config.endpoint,
            headers=config.headers or None,
            timeout=timeout_s,
            compression=None if config.compression is None else Compression(config.compression),
        )



def _estimated_size(spans: Sequence[ReadableSpan]) -> int:
    """A rough encoded size of ``spans``: long strings (captured content) dominate."""
    size = 0
    for span in spans:
        size += _SPAN_BYTES
        for value in (span.attributes or {}).values():
            if isinstance(value, str):
                size += len(value.encode())
    return size


def _grpc_exporter(config: _Config, timeout_s: float) -> SpanExporter:
    import grpc  # type: ignore[import-untyped]  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    compression = {
        "gzip": grpc.Compression.Gzip,
        "deflate": grpc.Compression.Deflate,
        "none": grpc.Compression.NoCompression,
    }.get(config.compression or "")
    return OTLPSpanExporter(
        endpoint=config.endpoint,
        headers=dict(config.headers) or None,
        timeout=timeout_s,
        compression=compression,
    )


def _signal_env(env: Mapping[str, str], suffix: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_<suffix>``, else ``OTEL_EXPORTER_OTLP_<suffix>``."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{suffix}") or env.get(f"OTEL_EXPORTER_OTLP_{suffix}")


def _parse_headers(raw: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``key=value`` pairs, comma-separated, URL-encoded."""
    from urllib.parse import unquote  # noqa: PLC0415

    headers: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers
