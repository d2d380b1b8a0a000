"""Attribute keys, span, event and metric names: the telemetry vocabulary in one place.

``gen_ai.*`` keys follow the OpenTelemetry GenAI semantic conventions (agent spans:
``invoke_agent {gen_ai.agent.name}``; metrics: ``gen_ai.client.operation.time_to_first_chunk``);
``process.*`` and ``error.type`` follow the general conventions; ``service.name`` is the
resource key. Every field of the ``run_finished`` record is also a span attribute under
:data:`TTFT_PREFIX` (``ttft_probe.cli_ready_ms``, …), keyed by :func:`record_key`.

Metric names carry no unit suffix; every histogram here is in seconds (unit ``"s"``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ERROR_TYPE",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_AGENT_VERSION",
    "GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK",
    "GEN_AI_CONVERSATION_ID",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_OP_CHAT",
    "GEN_AI_OP_GENERATE_CONTENT",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK",
    "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "HTTP_REQUEST_BODY_SIZE",
    "HTTP_RESPONSE_STATUS_CODE",
    "INVOKE_AGENT",
    "METRIC_CLIENT_WAIT",
    "METRIC_CLI_READY",
    "METRIC_MODEL_FIRST_TOKEN",
    "METRIC_SESSION_INIT",
    "METRIC_SPAWN_TO_FIRST_TOKEN",
    "PROCESS_EXIT_CODE",
    "SECONDS_BUCKETS",
    "SERVICE_NAME",
    "SERVICE_NAME_DEFAULT",
    "SPAN_CLIENT_WAIT",
    "SPAN_CLI_READY",
    "SPAN_MODEL_FIRST_TOKEN",
    "SPAN_SESSION_INIT",
    "TTFT_CONTENT_TRUNCATED",
    "TTFT_PREFIX",
    "TTFT_PROCESS_REUSED",
    "TTFT_REQUEST_ID",
    "TTFT_REQUEST_KIND",
    "TTFT_SESSION_RESUMED",
    "TTFT_STATUS",
    "TTFT_TURN_COHORT",
    "record_key",
]

# --- GenAI semantic conventions (development status; keys as of semconv-genai 1.41) ---
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_VERSION: Final = "gen_ai.agent.version"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
"""Tokens written to the provider's prompt cache: the current GenAI name (DESIGN §10)."""
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
"""The older name of :data:`GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS`, sent beside it (same value)
while backends catch up."""
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
"""Span attribute of one model request: its arrival to the provider's first content byte,
in seconds (double)."""
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Opt-in content: the prompt as a JSON string of the GenAI input-messages shape."""
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""Opt-in content: the answer as a JSON string of the GenAI output-messages shape."""

INVOKE_AGENT: Final = "invoke_agent"
"""Value of ``gen_ai.operation.name`` and the first word of the root span's name."""
GEN_AI_OP_CHAT: Final = "chat"
"""``gen_ai.operation.name`` of a chat or messages request (Anthropic, OpenAI)."""
GEN_AI_OP_GENERATE_CONTENT: Final = "generate_content"
"""``gen_ai.operation.name`` of a Gemini ``generateContent`` request."""

# --- general conventions ---
ERROR_TYPE: Final = "error.type"
PROCESS_EXIT_CODE: Final = "process.exit_code"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_REQUEST_BODY_SIZE: Final = "http.request.body.size"
"""Bytes of a request body as sent (before any content decoding)."""
SERVICE_NAME: Final = "service.name"
SERVICE_NAME_DEFAULT: Final = "ttft-probe"
"""``service.name`` of the private providers when ``OTEL_SERVICE_NAME`` is not set."""

# --- ttft_probe's own keys ---
TTFT_PREFIX: Final = "ttft_probe."
TTFT_STATUS: Final = "ttft_probe.status"
TTFT_SESSION_RESUMED: Final = "ttft_probe.session_resumed"
TTFT_PROCESS_REUSED: Final = "ttft_probe.process_reused"
TTFT_TURN_COHORT: Final = "ttft_probe.turn_cohort"
"""Metric attribute: ``"turn_1"`` or ``"turn_2+"`` (absent when the ordinal is unknown)."""
TTFT_CONTENT_TRUNCATED: Final = "ttft_probe.content_truncated"
"""``True`` on the span carrying opt-in content when a text was cut at its cap."""
TTFT_REQUEST_KIND: Final = "ttft_probe.request.kind"
"""A model request span's kind: ``generation`` or a side call (``title``, ``count_tokens``,
…; :class:`ttft_probe.waterfall.RequestKind`)."""
TTFT_REQUEST_ID: Final = "ttft_probe.request.id"
"""A model request span's number within its run (the observer's ``request_id``)."""


def record_key(field: str) -> str:
    """Span attribute key of a ``run_finished`` field: ``ttft_probe.<field>``."""
    return TTFT_PREFIX + field


# --- child spans: one per segment of the timing contract (DESIGN §3) ---
SPAN_CLI_READY: Final = "cli_ready"
SPAN_SESSION_INIT: Final = "session_init"
SPAN_CLIENT_WAIT: Final = "client_wait"
SPAN_MODEL_FIRST_TOKEN: Final = "model_first_token"

# --- metrics: histograms in seconds ---
METRIC_SPAWN_TO_FIRST_TOKEN: Final = "ttft_probe.spawn_to_first_token"
METRIC_CLI_READY: Final = "ttft_probe.cli_ready"
METRIC_SESSION_INIT: Final = "ttft_probe.session_init"
METRIC_CLIENT_WAIT: Final = "ttft_probe.client_wait"
METRIC_MODEL_FIRST_TOKEN: Final = "ttft_probe.model_first_token"
GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
"""Prompt → first chunk only: the GenAI definition starts at the request, not at spawn."""

SECONDS_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
"""Explicit bucket boundaries (s): the GenAI conventions' advice for time-to-first-chunk."""
