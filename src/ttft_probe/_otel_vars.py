"""The ``OTEL_*`` variables that decide whether ttft_probe needs the OpenTelemetry SDK at all.

Standard library only (nothing but the mapping it is given): ``ttft-probe run`` reads them
before it spawns the agent, to know whether the run's trace ids can be drawn there
(:mod:`ttft_probe._prespawn`); :mod:`ttft_probe.telemetry.live` decides with the same rule.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

__all__ = ["SDK_SETTINGS", "otlp_configured", "sdk_needed"]

_OTLP: Final = "otlp"

SDK_SETTINGS: Final = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PYTHON_ID_GENERATOR",
    "OTEL_PYTHON_TRACER_PROVIDER",
    "OTEL_PYTHON_METER_PROVIDER",
)
"""Variables that change what the SDK's private provider would do: they keep the SDK path."""


def otlp_configured(env: Mapping[str, str], signal: str) -> bool:
    """Whether OTLP export of ``signal`` (``"TRACES"`` or ``"METRICS"``) is configured.

    True when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_<signal>_ENDPOINT``
    is set, ``OTEL_<signal>_EXPORTER`` (default ``otlp``) lists ``otlp``, and
    ``OTEL_SDK_DISABLED`` is not ``true`` (the OpenTelemetry configuration spec).
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    chosen = {s.strip().lower() for s in env.get(f"OTEL_{signal}_EXPORTER", _OTLP).split(",")}
    if _OTLP not in chosen:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def sdk_needed(env: Mapping[str, str]) -> bool:
    """Whether these variables alone make the live telemetry use the OpenTelemetry SDK.

    True when a variable of :data:`SDK_SETTINGS` is set or OTLP metrics export is
    configured. Otherwise (and when the application gave no provider and has not
    imported the OpenTelemetry API) a run's span is ids only: W3C ids drawn by ttft_probe,
    nothing recorded live (the durable OTLP sink rebuilds the spans from the record).
    """
    return any(env.get(name) for name in SDK_SETTINGS) or otlp_configured(env, "METRICS")
