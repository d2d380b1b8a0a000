"""Where a run's record goes once the local store has it: one module per destination.

``store`` is the durable local store and outbox (SQLite); ``otel`` emits the run's
OpenTelemetry spans and metrics. Optional backends (OTLP exporters, PostHog, Langfuse)
are imported only when configured, never on ``import ttft_probe``.
"""
