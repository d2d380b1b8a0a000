"""The OpenTelemetry SDK's ``OTEL_*`` variables, read as the configuration spec says.

Shared by the live telemetry (:mod:`ttft_probe.telemetry.live`: whether to export
metrics, and how) and the durable OTLP sink (:mod:`ttft_probe.sinks.otlp`). Pure
functions of an environment mapping; only :func:`resource_from` imports the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from ttft_probe import _semconv as sc
from ttft_probe._otel_vars import otlp_configured

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

__all__ = ["GRPC", "HTTP_PROTOBUF", "otlp_configured", "otlp_protocol", "resource_from"]

_OTLP: Final = "otlp"
HTTP_PROTOBUF: Final = "http/protobuf"
"""``OTEL_EXPORTER_OTLP_PROTOCOL`` value of OTLP over HTTP with protobuf bodies (the default)."""
GRPC: Final = "grpc"
"""``OTEL_EXPORTER_OTLP_PROTOCOL`` value of OTLP over gRPC."""


def resource_from(env: Mapping[str, str]) -> Resource:
    """The SDK resource: ``service.name`` = ``OTEL_SERVICE_NAME`` or ``ttft-probe``.

    ``Resource.create`` also merges the SDK's defaults and ``OTEL_RESOURCE_ATTRIBUTES``
    (read from the process environment by the SDK). Imports the SDK.
    """
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    name = env.get("OTEL_SERVICE_NAME") or sc.SERVICE_NAME_DEFAULT
    return Resource.create({sc.SERVICE_NAME: name})



def otlp_protocol(env: Mapping[str, str], signal: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_<signal>_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``.

    Returns:
        :data:`HTTP_PROTOBUF` (also when unset) or :data:`GRPC`; ``None`` for any other
        value (``http/json`` is not supported by the Python exporters).
    """
    raw = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or HTTP_PROTOBUF
    )
    protocol = raw.strip().lower()
    return protocol if protocol in {HTTP_PROTOBUF, GRPC} else None

