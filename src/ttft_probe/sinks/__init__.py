"""Where a run's record goes once the local store has it: one module per destination.

``store`` is the durable local store, ``outbox`` delivers what it holds to the sinks the
environment switches on (``otlp``, ``posthog``, ``langfuse``). The run's live
OpenTelemetry spans and metrics are not a sink: they are :mod:`ttft_probe.telemetry`.
Optional backends (OTLP exporters, PostHog, Langfuse) are imported only when
configured, never on ``import ttft_probe``.
"""
