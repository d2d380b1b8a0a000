"""The spans and metric attributes of one run, as pure values of its record and markers.

:func:`run_shape` is what the live root span (:mod:`ttft_probe.telemetry.live`) emits
and what the durable OTLP sink (:mod:`ttft_probe.sinks.otlp`) rebuilds from a stored
record: one shape, two emitters. Nothing here imports OpenTelemetry or reads a clock.

What is emitted (names in :mod:`ttft_probe._semconv`):

- Root span ``invoke_agent {agent}``, kind ``CLIENT``: the GenAI "invoke agent client
  span" (the agent runs in another process; ``INTERNAL`` is for agents in the same
  process). ``gen_ai.operation.name``, ``gen_ai.agent.name``, ``gen_ai.provider.name``
  (:func:`ttft_probe.agents.provider_name`: claude*→``anthropic``, codex*→``openai``,
  gemini*→``gcp.gemini``; omitted otherwise)
  are set at creation for samplers; at finish ``gen_ai.request.model``,
  ``gen_ai.agent.version``, ``gen_ai.conversation.id`` (conversation id, else the agent's
  session id), ``gen_ai.usage.*``, ``process.exit_code``, and every non-``None`` record
  field as ``ttft_probe.<field>``. Status ``ERROR`` with ``error.type`` = the status for
  ``failed`` and ``timed_out``; unset otherwise. For Jaeger's tag search (exact match
  only) also ``ttft_probe.turn_cohort`` (``turn_1``/``turn_2+``) and
  ``ttft_probe.dominant_segment`` (the largest of ``cli_ready``, ``session_init``,
  ``client_wait``, ``model_first_token``; only when the breakdown is complete).
- Captured content, only when the run was made with the opt-in content capture
  (``Probe(capture_content=True)`` / ``--capture-content``; :mod:`ttft_probe.content`),
  on the root span, the one carrying the GenAI operation (there is no separate model
  span; the phase spans never get it): ``gen_ai.input.messages`` (the prompt) and
  ``gen_ai.output.messages`` (the answer), each the JSON string of the GenAI message
  list (``[{"role": "user", "parts": [{"type": "text", "content": …}]}]``, non-ASCII
  kept as it is) and each omitted when that text was not seen;
  ``ttft_probe.content_truncated`` = ``True`` only when a text was cut at its cap
  (:func:`content_attributes`). Without capture none of these keys exists: the spans
  are exactly as before.
- Child spans ``cli_ready``, ``session_init``, ``client_wait`` (only when
  ``client_wait_ms`` is non-zero) and ``model_first_token``, each only when both of its
  markers exist and are in order, with explicit start and end times. They carry the
  cohort attributes (``gen_ai.operation.name``, ``gen_ai.agent.name``,
  ``ttft_probe.run_id``, ``ttft_probe.turn_ordinal``, ``ttft_probe.turn_cohort``,
  ``ttft_probe.session_resumed``, ``ttft_probe.process_reused``, ``ttft_probe.status``)
  so that one span answers "slow ``session_init`` on turn 2+" in Jaeger, whose search
  matches operation, duration and tags on the same span.
- Root span events ``processSpawned`` (not for a reused process), ``cliReady``,
  ``sessionInitDone``, ``promptSent``, ``firstToken`` and ``processExited`` (at
  ``times.end_ns``, only when the record has an exit code or signal), explicit times.
- Histograms in seconds: ``ttft_probe.spawn_to_first_token``, ``ttft_probe.cli_ready``,
  ``ttft_probe.session_init``, ``ttft_probe.client_wait``, ``ttft_probe.model_first_token``
  and ``gen_ai.client.operation.time_to_first_chunk`` (= ``model_first_token_ms`` only:
  its definition starts at the request, not at spawn). Attributes:
  ``gen_ai.operation.name``, ``gen_ai.agent.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``ttft_probe.turn_cohort`` (``turn_1``/``turn_2+``),
  ``ttft_probe.session_resumed``, ``ttft_probe.process_reused``, ``ttft_probe.status``,
  ``error.type`` (:func:`metric_attributes`). ``None`` values are not recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs

from ttft_probe import _semconv as sc
from ttft_probe.agents import provider_name
from ttft_probe.record import Marker, MarkerTimes, RunRecord, Status

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from ttft_probe.content import CapturedContent

__all__ = [
    "RunShape",
    "content_attributes",
    "metric_attributes",
    "root_span_name",
    "run_shape",
]

_ERROR_STATUSES: Final = frozenset({Status.FAILED, Status.TIMED_OUT})
_DOMINANT_SEGMENT: Final = "ttft_probe.dominant_segment"
"""Root span attribute: the largest segment's span name (not a record field)."""
_PHASE_KEYS: Final = (  # the root's keys copied onto every phase span
    sc.record_key("run_id"),
    sc.record_key("turn_ordinal"),
    sc.TTFT_TURN_COHORT,
    sc.TTFT_SESSION_RESUMED,
    sc.TTFT_PROCESS_REUSED,
    sc.TTFT_STATUS,
)

@attrs.frozen
class RunShape:
    """The spans of one run as a value, made by :func:`run_shape`.

    What :class:`RunSpan` emits live and what the OTLP sink rebuilds from a stored record.

    Times are monotonic ns (markers); the caller maps them to wall time.

    Attributes:
        name: The root span's name, ``invoke_agent {agent}`` (kind ``CLIENT``).
        attributes: The root span's attributes (record fields, GenAI keys, ``error.type``,
            search keys; the captured content's keys when content was given).
        phase_attributes: The attributes of every phase span (the cohort keys).
        events: Marker events ``(name, monotonic ns)``, in contract order.
        phases: Phase spans ``(name, begin ns, end ns)`` (kind ``INTERNAL``).
        error_type: ``error.type`` (the status) for failed and timed-out runs: the root
            span's status is then ``ERROR``; ``None`` otherwise (status unset).
    """

    name: str
    attributes: Mapping[str, AttributeValue]
    phase_attributes: Mapping[str, AttributeValue]
    events: tuple[tuple[str, int], ...]
    phases: tuple[tuple[str, int, int], ...]
    error_type: str | None

    @property
    def status_description(self) -> str | None:
        """The root span's status description (``run failed``, …), ``None`` if unset."""
        return None if self.error_type is None else f"run {self.error_type}"


def root_span_name(agent: str) -> str:
    """``invoke_agent {agent}``: the GenAI name of the root span."""
    return f"{sc.INVOKE_AGENT} {agent}"


def run_shape(
    record: RunRecord,
    times: MarkerTimes | None,
    content: CapturedContent | None = None,
) -> RunShape:
    """The spans of a run, from its record and markers; without markers, the root alone.

    ``content`` (opt-in capture only) adds :func:`content_attributes` to the root span,
    the span carrying the GenAI operation; the phase spans never get them.

    Pure: imports no OpenTelemetry module, reads no clock.
    """
    attributes = _span_attributes(record)
    error_type = record.status.value if record.status in _ERROR_STATUSES else None
    if error_type is not None:
        attributes[sc.ERROR_TYPE] = error_type
    attributes.update(content_attributes(content))
    phase_attributes: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: sc.INVOKE_AGENT,
        sc.GEN_AI_AGENT_NAME: record.agent,
    }
    phase_attributes.update({key: attributes[key] for key in _PHASE_KEYS if key in attributes})
    return RunShape(
        name=root_span_name(record.agent),
        attributes=attributes,
        phase_attributes=phase_attributes,
        events=() if times is None else tuple(_events(record, times)),
        phases=() if times is None else tuple(_phases(record, times)),
        error_type=error_type,
    )


def content_attributes(content: CapturedContent | None) -> dict[str, AttributeValue]:
    """The span attributes of a run's opt-in captured content; empty without content.

    ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (OTel GenAI semantic
    conventions): the JSON strings of :meth:`CapturedContent.input_messages` /
    :meth:`CapturedContent.output_messages` (``ensure_ascii=False``), each only when its
    list is not empty; ``ttft_probe.content_truncated`` = ``True`` only when a text was
    cut at its cap. The one rendering of content for the live spans and the OTLP sink.
    """
    if content is None:
        return {}
    attributes: dict[str, AttributeValue] = {}
    for key, messages in (
        (sc.GEN_AI_INPUT_MESSAGES, content.input_messages()),
        (sc.GEN_AI_OUTPUT_MESSAGES, content.output_messages()),
    ):
        if messages:
            attributes[key] = json.dumps(messages, ensure_ascii=False)
    if content.truncated:
        attributes[sc.TTFT_CONTENT_TRUNCATED] = True
    return attributes


def _turn_cohort(turn_ordinal: int | None) -> str | None:
    if turn_ordinal is None:
        return None
    return "turn_1" if turn_ordinal == 1 else "turn_2+"


def _dominant_segment(record: RunRecord) -> str | None:
    """The span name of the largest segment; ``None`` unless the breakdown is complete."""
    if record.timing_unavailable_reason is not None or record.spawn_to_first_token_ms is None:
        return None
    segments = (
        (sc.SPAN_CLI_READY, record.cli_ready_ms),
        (sc.SPAN_SESSION_INIT, record.session_init_ms),
        (sc.SPAN_CLIENT_WAIT, record.client_wait_ms),
        (sc.SPAN_MODEL_FIRST_TOKEN, record.model_first_token_ms),
    )
    present = [(ms, name) for name, ms in segments if ms is not None]
    if not present:
        return None
    return max(present)[1]


def _span_attributes(record: RunRecord) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        sc.record_key(field): value
        for field, value in record.to_dict().items()
        if value is not None
    }
    attributes[sc.GEN_AI_OPERATION_NAME] = sc.INVOKE_AGENT
    attributes[sc.GEN_AI_AGENT_NAME] = record.agent
    optional: tuple[tuple[str, str | int | None], ...] = (
        (sc.GEN_AI_PROVIDER_NAME, provider_name(record.agent)),
        (sc.GEN_AI_REQUEST_MODEL, record.model),
        (sc.GEN_AI_AGENT_VERSION, record.agent_version),
        (sc.GEN_AI_CONVERSATION_ID, record.conversation_id or record.session_id),
        (sc.GEN_AI_USAGE_INPUT_TOKENS, record.input_tokens),
        (sc.GEN_AI_USAGE_OUTPUT_TOKENS, record.output_tokens),
        (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, record.cache_read_input_tokens),
        (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, record.cache_creation_input_tokens),
        (sc.PROCESS_EXIT_CODE, record.exit_code),
        (sc.TTFT_TURN_COHORT, _turn_cohort(record.turn_ordinal)),
        (_DOMINANT_SEGMENT, _dominant_segment(record)),
    )
    attributes.update({key: value for key, value in optional if value is not None})
    return attributes


def _events(record: RunRecord, times: MarkerTimes) -> list[tuple[str, int]]:
    """Marker events (name, monotonic ns) in contract order, observed markers only."""
    reused = record.process_reused
    prompt = times.prompt_sent_ns
    if prompt is None and reused:
        prompt = times.start_ns  # a reused process's run starts at its prompt
    exited = record.exit_code is not None or record.signal is not None
    candidates: tuple[tuple[Marker, int | None], ...] = (
        (Marker.PROCESS_SPAWNED, None if reused else times.start_ns),
        (Marker.CLI_READY, times.cli_ready_ns),
        (Marker.SESSION_INIT_DONE, times.session_init_done_ns),
        (Marker.PROMPT_SENT, prompt),
        (Marker.FIRST_TOKEN, times.first_token_ns),
        (Marker.PROCESS_EXITED, times.end_ns if exited else None),
    )
    return [(marker.value, t) for marker, t in candidates if t is not None]


def _phases(record: RunRecord, times: MarkerTimes) -> list[tuple[str, int, int]]:
    """Phase spans (name, begin ns, end ns): both markers present and in order."""
    if times.prompt_first:
        return _prompt_first_phases(record, times)
    prompt = times.prompt_sent_ns
    init = times.session_init_done_ns
    candidates: list[tuple[str, int | None, int | None]] = []
    if record.process_reused:
        if prompt is None:
            prompt = times.start_ns  # a reused process's run starts at its prompt
    else:
        if prompt is None and record.model_first_token_ms is not None:
            # Stream agents: the prompt is on the command line, promptSent = sessionInitDone.
            prompt = init
        candidates += [
            (sc.SPAN_CLI_READY, times.start_ns, times.cli_ready_ns),
            (sc.SPAN_SESSION_INIT, times.cli_ready_ns, init),
        ]
        if record.client_wait_ms:
            candidates.append((sc.SPAN_CLIENT_WAIT, init, times.prompt_sent_ns))
    candidates.append((sc.SPAN_MODEL_FIRST_TOKEN, prompt, times.first_token_ns))
    return _in_order(candidates)


def _prompt_first_phases(record: RunRecord, times: MarkerTimes) -> list[tuple[str, int, int]]:
    """Phases of a turn set up after its prompt (Claude Code in SDK mode).

    ``cli_ready`` → ``client_wait`` → ``session_init`` → ``model_first_token``, as
    :func:`~ttft_probe.record.compute_segments` with ``prompt_first`` counts them: the
    set-up starts at the prompt, or at ``cliReady`` when the prompt waited for the CLI.
    """
    ready, prompt = times.cli_ready_ns, times.prompt_sent_ns
    assert prompt is not None  # noqa: S101 - MarkerTimes.prompt_first says so
    candidates: list[tuple[str, int | None, int | None]] = []
    if record.cli_ready_ms:
        candidates.append((sc.SPAN_CLI_READY, times.start_ns, ready))
    if record.client_wait_ms:
        candidates.append((sc.SPAN_CLIENT_WAIT, ready, prompt))
    if ready is not None:
        candidates.append((sc.SPAN_SESSION_INIT, max(prompt, ready), times.session_init_done_ns))
    candidates.append((sc.SPAN_MODEL_FIRST_TOKEN, times.session_init_done_ns, times.first_token_ns))
    return _in_order(candidates)


def _in_order(
    candidates: list[tuple[str, int | None, int | None]],
) -> list[tuple[str, int, int]]:
    return [
        (name, begin, end)
        for name, begin, end in candidates
        if begin is not None and end is not None and end >= begin
    ]


def metric_attributes(record: RunRecord) -> dict[str, AttributeValue]:
    """The attributes of a run's histogram points: the cohort keys, no ``None`` values."""
    attributes: dict[str, AttributeValue] = {
        sc.GEN_AI_OPERATION_NAME: sc.INVOKE_AGENT,
        sc.GEN_AI_AGENT_NAME: record.agent,
        sc.TTFT_SESSION_RESUMED: record.session_resumed,
        sc.TTFT_PROCESS_REUSED: record.process_reused,
        sc.TTFT_STATUS: record.status.value,
    }
    provider = provider_name(record.agent)
    if provider is not None:
        attributes[sc.GEN_AI_PROVIDER_NAME] = provider
    if record.model is not None:
        attributes[sc.GEN_AI_REQUEST_MODEL] = record.model
    cohort = _turn_cohort(record.turn_ordinal)
    if cohort is not None:
        attributes[sc.TTFT_TURN_COHORT] = cohort
    if record.status in _ERROR_STATUSES:
        attributes[sc.ERROR_TYPE] = record.status.value
    return attributes

