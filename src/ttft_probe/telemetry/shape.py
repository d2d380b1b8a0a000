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
  session id), ``gen_ai.usage.*`` (the agent's own whole-turn counts, as the record holds
  them; a cache write under both ``gen_ai.usage.cache_write.input_tokens`` and the older
  ``gen_ai.usage.cache_creation.input_tokens``), ``process.exit_code``, and every
  non-``None`` record field as ``ttft_probe.<field>``. Status ``ERROR`` with
  ``error.type`` = the status for ``failed`` and ``timed_out``; unset otherwise. For
  Jaeger's tag search (exact match only) also ``ttft_probe.turn_cohort``
  (``turn_1``/``turn_2+``) and
  ``ttft_probe.dominant_segment`` (the largest of ``cli_ready``, ``session_init``,
  ``client_wait``, ``model_first_token``; only when the breakdown is complete).
- Captured content, only when the run was made with the opt-in content capture
  (``Probe(capture_content=True)`` / ``--capture-content``; :mod:`ttft_probe.content`),
  on the root span, the one carrying the agent's GenAI operation (the phase spans and
  the model request spans never get it): ``gen_ai.input.messages`` (the prompt) and
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
- With the provider observer (DESIGN §10), one span per model request of the turn
  (:class:`RequestSpan`, from :class:`ttft_probe.waterfall.ModelRequest`), kind ``CLIENT``
  (the GenAI inference span), named ``{gen_ai.operation.name} {model}`` (``chat
  claude-x``; the operation alone without a model): ``chat`` for Anthropic and OpenAI
  model calls, ``generate_content`` for Gemini's, the kind itself for calls that are no
  inference (``count_tokens``, ``head``, ``other``). Parent: ``model_first_token`` when
  the request arrived within it (both ends included), else the root. From the request's
  arrival to its end (to its last known time when the end was not seen). Attributes:
  ``gen_ai.operation.name``, ``gen_ai.provider.name`` (by the request's API: ``anthropic``,
  ``openai``, ``gcp.gemini``), ``gen_ai.request.model``, the usage the provider reported
  (``gen_ai.usage.input_tokens`` cached tokens included, ``gen_ai.usage.output_tokens``,
  ``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_write.input_tokens`` and
  its older name ``gen_ai.usage.cache_creation.input_tokens``),
  ``gen_ai.response.time_to_first_chunk`` (s, double: arrival → first content byte),
  ``http.response.status_code``, ``http.request.body.size`` (bytes),
  ``ttft_probe.request.kind``, ``ttft_probe.request.id`` and the cohort keys of the phase
  spans but the GenAI ones; a
  status of 400 or more is status ``ERROR`` with ``error.type`` = the status code (HTTP
  client span convention). No request body, digest or text is ever an attribute. Without
  marker times or requests there are none of these spans.
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
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ttft_probe import _semconv as sc
from ttft_probe.agents import provider_name
from ttft_probe.record import Marker, MarkerTimes, RunRecord, Status
from ttft_probe.waterfall import ModelRequest, RequestKind

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from ttft_probe.content import CapturedContent

__all__ = [
    "RequestSpan",
    "RunShape",
    "content_attributes",
    "metric_attributes",
    "request_operation",
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
_NS_PER_S: Final = 1e9
_HTTP_ERROR: Final = 400
_INFERENCE_KINDS: Final = frozenset(
    {
        RequestKind.GENERATION,
        RequestKind.TITLE,
        RequestKind.QUOTA,
        RequestKind.ROUTING,
        RequestKind.PREWARM,
    }
)
"""Kinds whose request is a model call (chat, messages, responses, generateContent)."""
_API_PROVIDERS: Final = {"anthropic": "anthropic", "openai": "openai", "gemini": "gcp.gemini"}
"""``gen_ai.provider.name`` of a request by its API (the observer's ``api``)."""


@attrs.frozen
class RequestSpan:
    """One model request of the run as a span (kind ``CLIENT``), made by :func:`run_shape`.

    Attributes:
        request_id: The observer's number of the request within the run (span ids derive
            from it).
        name: ``{gen_ai.operation.name} {model}`` (``chat claude-x``), or the operation alone.
        parent: ``"model_first_token"`` when the request arrived within that phase span,
            ``None`` for the root span.
        begin_ns: The request's arrival (monotonic ns).
        end_ns: The end of the exchange, else its last known time (monotonic ns).
        attributes: The span's attributes (see the module docstring).
        error_type: ``error.type`` (the HTTP status code as a string) for a status of 400
            or more: the span's status is then ``ERROR``; ``None`` otherwise.
    """

    request_id: int
    name: str
    parent: str | None
    begin_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue]
    error_type: str | None = None


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
        requests: One span per model request (provider observer only), in the order given.
    """

    name: str
    attributes: Mapping[str, AttributeValue]
    phase_attributes: Mapping[str, AttributeValue]
    events: tuple[tuple[str, int], ...]
    phases: tuple[tuple[str, int, int], ...]
    error_type: str | None
    requests: tuple[RequestSpan, ...] = ()

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
    requests: Sequence[ModelRequest] = (),
) -> RunShape:
    """The spans of a run, from its record and markers; without markers, the root alone.

    ``content`` (opt-in capture only) adds :func:`content_attributes` to the root span,
    the span carrying the GenAI operation; the phase spans never get them. ``requests``
    (the provider observer's waterfall, monotonic ns like ``times``) adds one
    :class:`RequestSpan` each; without marker times they are left out.

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
    phases = () if times is None else tuple(_phases(record, times))
    cohort = {key: attributes[key] for key in _PHASE_KEYS if key in attributes}
    return RunShape(
        name=root_span_name(record.agent),
        attributes=attributes,
        phase_attributes=phase_attributes,
        events=() if times is None else tuple(_events(record, times)),
        phases=phases,
        error_type=error_type,
        requests=() if times is None else _request_spans(requests, phases, cohort),
    )


def request_operation(request: ModelRequest) -> str:
    """``gen_ai.operation.name`` of a model request (GenAI semantic conventions).

    ``generate_content`` for a Gemini model call, ``chat`` for any other model call
    (generations and the side calls that are model calls: ``title``, ``quota``,
    ``routing``, ``prewarm``), else the kind itself (``count_tokens``, ``head``,
    ``other``): no predefined operation fits those.
    """
    if request.kind not in _INFERENCE_KINDS:
        return request.kind.value
    return sc.GEN_AI_OP_GENERATE_CONTENT if request.api == "gemini" else sc.GEN_AI_OP_CHAT


def _request_spans(
    requests: Sequence[ModelRequest],
    phases: Sequence[tuple[str, int, int]],
    cohort: Mapping[str, AttributeValue],
) -> tuple[RequestSpan, ...]:
    model_phase = next(
        ((begin, end) for name, begin, end in phases if name == sc.SPAN_MODEL_FIRST_TOKEN), None
    )
    spans: list[RequestSpan] = []
    for request in requests:
        known = [t for t in (request.first_content_ns, request.end_ns) if t is not None]
        end = max([request.arrival_ns, *known])
        inside = model_phase is not None and model_phase[0] <= request.arrival_ns <= model_phase[1]
        operation = request_operation(request)
        status = request.status
        error_type = str(status) if status is not None and status >= _HTTP_ERROR else None
        attributes: dict[str, AttributeValue] = dict(cohort)
        attributes.update(_request_attributes(request, operation))
        if error_type is not None:
            attributes[sc.ERROR_TYPE] = error_type
        spans.append(
            RequestSpan(
                request_id=request.request_id,
                name=operation if request.model is None else f"{operation} {request.model}",
                parent=sc.SPAN_MODEL_FIRST_TOKEN if inside else None,
                begin_ns=request.arrival_ns,
                end_ns=end,
                attributes=attributes,
                error_type=error_type,
            )
        )
    return tuple(spans)


def _request_attributes(request: ModelRequest, operation: str) -> dict[str, AttributeValue]:
    usage = request.usage
    first_chunk_s = (
        None
        if request.first_content_ns is None
        else max(0, request.first_content_ns - request.arrival_ns) / _NS_PER_S
    )
    values: tuple[tuple[str, AttributeValue | None], ...] = (
        (sc.GEN_AI_OPERATION_NAME, operation),
        (sc.GEN_AI_PROVIDER_NAME, _API_PROVIDERS.get(request.api)),
        (sc.GEN_AI_REQUEST_MODEL, request.model),
        (sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, first_chunk_s),
        (sc.HTTP_RESPONSE_STATUS_CODE, request.status),
        (sc.HTTP_REQUEST_BODY_SIZE, request.request_bytes),
        (sc.TTFT_REQUEST_KIND, request.kind.value),
        (sc.TTFT_REQUEST_ID, request.request_id),
    )
    attributes = _present(values)
    if usage is not None:
        attributes.update(
            _usage_attributes(
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
            )
        )
    return attributes


def _present(pairs: Iterable[tuple[str, AttributeValue | None]]) -> dict[str, AttributeValue]:
    return {key: value for key, value in pairs if value is not None}


def _usage_attributes(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
) -> dict[str, AttributeValue]:
    """``gen_ai.usage.*``; a cache write under its current and its older name (DESIGN §10)."""
    return _present(
        (
            (sc.GEN_AI_USAGE_INPUT_TOKENS, input_tokens),
            (sc.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens),
            (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, cache_read),
            (sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, cache_write),
            (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, cache_write),
        )
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
        (sc.PROCESS_EXIT_CODE, record.exit_code),
        (sc.TTFT_TURN_COHORT, _turn_cohort(record.turn_ordinal)),
        (_DOMINANT_SEGMENT, _dominant_segment(record)),
    )
    attributes.update({key: value for key, value in optional if value is not None})
    attributes.update(
        _usage_attributes(
            _genai_input_tokens(record),
            record.output_tokens,
            record.cache_read_input_tokens,
            record.cache_creation_input_tokens,
        )
    )
    return attributes


def _genai_input_tokens(record: RunRecord) -> int | None:
    """``gen_ai.usage.input_tokens`` of a record: every input token, cached ones included.

    The record keeps the agent's own count: an Anthropic agent's ``input_tokens`` are the
    uncached ones only, so for it the conventions' count is the sum of the three (DESIGN
    §10); OpenAI and Gemini counts already include cached tokens.
    """
    if record.input_tokens is None or provider_name(record.agent) != "anthropic":
        return record.input_tokens
    return (record.input_tokens + (record.cache_read_input_tokens or 0)
            + (record.cache_creation_input_tokens or 0))


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

