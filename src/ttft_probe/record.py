"""Markers, segments and the ``run_finished`` record: the timing contract in code.

The contract (DESIGN §3)::

    processSpawned ─cli_ready_ms─▶ cliReady ─session_init_ms─▶ sessionInitDone
        ─client_wait_ms─▶ promptSent ─model_first_token_ms─▶ firstToken
    └──────────────────────── spawn_to_first_token_ms ──────────────────────────┘
    remainder_ms = spawn_to_first_token_ms − (sum of the four segments that exist)

All marker times are monotonic-clock readings in ns; all segments are ms (float). For
stream agents ``promptSent`` is ``sessionInitDone`` (the prompt is on the command line),
so ``client_wait_ms`` is 0. A marker that was not observed is ``None``: the segments that
need it are ``None`` and the run carries a :class:`TimingUnavailableReason`; nothing is
ever estimated or replaced by another duration.
"""

from __future__ import annotations

import enum
import itertools
import json
import re
from typing import Any, Final

import attrs

__all__ = [
    "CONTRACT_VERSION",
    "FAMILY_NAME",
    "FirstTokenGranularity",
    "FirstTokenKind",
    "Marker",
    "MarkerTimes",
    "ObserverStatus",
    "PrefixStatus",
    "RunRecord",
    "RuntimeFamily",
    "Segments",
    "SessionInitSource",
    "Status",
    "TimingUnavailableReason",
    "compute_segments",
    "ns_to_ms",
    "record_schema",
]

CONTRACT_VERSION: Final = "1.3"
"""Version of the ``run_finished`` contract; the JSON Schema's ``$id`` carries it too."""

_NS_PER_MS: Final = 1_000_000


class Marker(enum.StrEnum):
    """The timestamped moments of a run (DESIGN §2), named as the contract names them."""

    PROCESS_SPAWNED = "processSpawned"
    CLI_READY = "cliReady"
    SESSION_INIT_DONE = "sessionInitDone"
    PROMPT_SENT = "promptSent"
    FIRST_TOKEN = "firstToken"
    PROCESS_EXITED = "processExited"


FAMILY_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""What a runtime family's name may be (built-in or a plugin's entry-point name)."""


class RuntimeFamily(enum.StrEnum):
    """The built-in runtime families: how an agent talks on stdio; one adapter each.

    A family is a name (``RunRecord.runtime_family`` is a ``str``): these, or a plugin's
    registered under the ``ttft_probe.adapters`` entry-point group (:mod:`ttft_probe.adapters`).
    Each member is also the registry line of its adapter: the module
    ``ttft_probe.adapters.<name with _>`` and its class ``<CamelName>Adapter``.
    """

    CLAUDE_STREAM_JSON = "claude-stream-json"
    JSON_EVENT_STREAM = "json-event-stream"
    ACP_JSON_RPC = "acp-json-rpc"
    PLAIN = "plain"


class Status(enum.StrEnum):
    """How a run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class TimingUnavailableReason(enum.StrEnum):
    """Why a run's breakdown is incomplete: the first missing or disordered link."""

    PROCESS_EXITED_BEFORE_READY = "process_exited_before_ready"
    NO_CLI_READY = "no_cli_ready"
    CLI_READY_NOT_OBSERVABLE = "cli_ready_not_observable"
    SESSION_INIT_NOT_OBSERVABLE = "session_init_not_observable"
    NO_SESSION_INIT = "no_session_init"
    NO_PROMPT = "no_prompt"
    NO_FIRST_TOKEN = "no_first_token"
    MARKERS_OUT_OF_ORDER = "markers_out_of_order"
    ADAPTER_ERROR = "adapter_error"
    PROBE_KILLED = "probe_killed"
    """The probe itself was killed during the run: the markers it saw until then are kept."""


class SessionInitSource(enum.StrEnum):
    """Which observation marked ``sessionInitDone``.

    ``model_request``: the observer saw the first generation request (DESIGN §6).
    ``init_message``: the agent's own init line on stdout (claude ``system``/``init``,
    codex ``turn.started``, gemini ``init``). ``session_result``: the JSON-RPC result of
    ``session/new``, ``session/load`` or ``session/resume`` (``thread/start``,
    ``thread/resume`` for app-server). ``user_regex``: a user-supplied pattern (plain).
    """

    MODEL_REQUEST = "model_request"
    INIT_MESSAGE = "init_message"
    SESSION_RESULT = "session_result"
    USER_REGEX = "user_regex"


class ObserverStatus(enum.StrEnum):
    """The provider observer (DESIGN §6) for the run: not asked for, running, or failed.

    ``failed``: it was asked for but could not start (``observer_error`` says why); the
    agent then talked to its provider directly and the run has no provider timings.
    """

    OFF = "off"
    ON = "on"
    FAILED = "failed"


class FirstTokenGranularity(enum.StrEnum):
    """How fine-grained the first token was.

    ``delta``: the first streamed piece of the answer. ``message``: only a whole message
    was visible, so firstToken is late by that message's generation time.
    """

    DELTA = "delta"
    MESSAGE = "message"


class FirstTokenKind(enum.StrEnum):
    """Whether the first token was answer text or reasoning ("thinking") text."""

    TEXT = "text"
    THINKING = "thinking"


class PrefixStatus(enum.StrEnum):
    """How a turn's first generation request compares with the previous turn's (DESIGN §10).

    Section by section in the provider's cache order (:mod:`ttft_probe.waterfall`):
    ``stable``: every section of the previous request is unchanged at the start of this
    one (the provider can serve it from its prompt cache). ``broken``: a section changed
    (``prefix_break`` names the first). ``no_previous``: the conversation has no earlier
    turn the observer saw. ``unavailable``: the observer was on but saw no generation
    request body it could read.
    """

    STABLE = "stable"
    BROKEN = "broken"
    NO_PREVIOUS = "no_previous"
    UNAVAILABLE = "unavailable"


@attrs.frozen
class MarkerTimes:
    """Monotonic ns of each marker of one run; ``None`` where it was not observed.

    ``start_ns`` is ``processSpawned`` for a spawned run and ``promptSent`` for a run on a
    reused process. ``end_ns`` is the end of the turn (the agent's result, or
    ``processExited``).
    """

    start_ns: int
    cli_ready_ns: int | None = None
    session_init_done_ns: int | None = None
    prompt_sent_ns: int | None = None
    first_token_ns: int | None = None
    end_ns: int | None = None
    first_stderr_ns: int | None = None

    @property
    def prompt_first(self) -> bool:
        """The turn was set up after its prompt (Claude Code in SDK mode, DESIGN §3).

        Read off the markers' own order: ``promptSent`` before ``sessionInitDone``. ACP
        sessions are set up before their prompts; stream agents have no ``promptSent``.
        """
        prompt, init = self.prompt_sent_ns, self.session_init_done_ns
        return prompt is not None and init is not None and prompt < init

    def as_offsets_ms(self) -> dict[str, float | None]:
        """Each marker as ms since ``start_ns`` (monotonic), keyed by marker name."""

        def off(t: int | None) -> float | None:
            return None if t is None else _ms(t - self.start_ns)

        return {
            Marker.PROCESS_SPAWNED.value: 0.0,
            Marker.CLI_READY.value: off(self.cli_ready_ns),
            Marker.SESSION_INIT_DONE.value: off(self.session_init_done_ns),
            Marker.PROMPT_SENT.value: off(self.prompt_sent_ns),
            Marker.FIRST_TOKEN.value: off(self.first_token_ns),
            Marker.PROCESS_EXITED.value: off(self.end_ns),
        }


@attrs.frozen
class Segments:
    """The breakdown of one run, in ms (float, monotonic). See the module docstring."""

    spawn_to_first_token_ms: float | None
    cli_ready_ms: float | None
    session_init_ms: float | None
    client_wait_ms: float | None
    model_first_token_ms: float | None
    remainder_ms: float | None
    total_duration_ms: float | None
    first_stderr_ms: float | None
    timing_unavailable_reason: TimingUnavailableReason | None


def ns_to_ms(delta_ns: int) -> float:
    """A monotonic difference in ns as the contract's ms: float, rounded to 1 µs."""
    return round(delta_ns / _NS_PER_MS, 3)


_ms = ns_to_ms


def compute_segments(  # noqa: C901 - the contract's cases, in its order
    times: MarkerTimes,
    *,
    request_driven: bool,
    process_reused: bool,
    session_init_observable: bool = True,
    exited_early: bool = False,
    adapter_failed: bool = False,
    prompt_first: bool = False,
    cli_ready_observable: bool = True,
    probe_killed: bool = False,
) -> Segments:
    """Apply the timing contract to one run's markers.

    Args:
        times: The run's markers (monotonic ns).
        request_driven: ``True`` for ACP / app-server agents, whose model time starts at
            ``promptSent``; ``False`` for stream agents, where ``promptSent`` is
            ``sessionInitDone`` and ``client_wait_ms`` is 0.
        process_reused: No spawn for this run: it starts at ``promptSent``, and
            ``cli_ready_ms``, ``session_init_ms`` and ``client_wait_ms`` are 0 — unless
            ``prompt_first``, where the turn's own set-up is measured, and a prompt that
            waited for the turn before it has that wait as ``cli_ready_ms`` (``cliReady``
            is then the end of that turn: the CLI was not ready for it before).
        session_init_observable: ``False`` when the family cannot see ``sessionInitDone``
            at all (plain without the observer); the reason then says so.
        exited_early: The process exited before ``cliReady``.
        adapter_failed: The adapter faulted; markers after the fault are missing.
        prompt_first: The agent sets up each turn after its prompt (Claude Code with
            ``--input-format stream-json``): the chain is ``processSpawned → cliReady →
            promptSent → sessionInitDone → firstToken`` with the segments ``cli_ready_ms``,
            ``client_wait_ms``, ``session_init_ms``, ``model_first_token_ms``. A prompt
            written before ``cliReady`` waited in the pipe for the CLI: its client wait is
            0 and its session set-up starts at ``cliReady``. Without ``cliReady`` nothing
            tells the CLI's boot from the set-up, so ``session_init_ms`` is ``None`` too.
        cli_ready_observable: ``False`` when the family could not see this run's
            ``cliReady`` (the reason then says so, not ``no_cli_ready``).
        probe_killed: The probe was killed before the run ended (its worker saw the
            process that carried the agent's bytes die): a missing marker's reason is
            then ``probe_killed``, whatever link is missing.

    Returns:
        The segments. Each is ``None`` when either of its markers is missing or the pair
        is out of order; ``remainder_ms`` is non-zero exactly when that happened before
        the first token.
    """
    start = times.start_ns
    ready, init, prompt = times.cli_ready_ns, times.session_init_done_ns, times.prompt_sent_ns
    if prompt_first:
        if process_reused:
            ready = start if ready is None else ready
            prompt = start if prompt is None else prompt
        if ready is None:
            prompt = None
        elif prompt is not None:
            prompt = max(prompt, ready)
        # The chain runs spawn, cliReady, promptSent, sessionInitDone, firstToken.
        chain = [start, ready, prompt, init, times.first_token_ns]
        names = ("cli_ready", "client_wait", "session_init", "model_first_token")
    else:
        if process_reused:
            ready = init = prompt = start
        elif not request_driven:
            prompt = init
        chain = [start, ready, init, prompt, times.first_token_ns]
        names = ("cli_ready", "session_init", "client_wait", "model_first_token")

    seg_ns: list[int | None] = []
    disordered = False
    for a, b in itertools.pairwise(chain):
        if a is None or b is None:
            seg_ns.append(None)
        elif b < a:
            seg_ns.append(None)
            disordered = True
        else:
            seg_ns.append(b - a)
    segs = dict(zip(names, (None if d is None else _ms(d) for d in seg_ns), strict=True))

    first = times.first_token_ns
    s2ft_ns = first - start if first is not None and first >= start else None
    s2ft = None if s2ft_ns is None else _ms(s2ft_ns)
    # In integer ns, so that a complete chain leaves exactly 0, not a rounding residue.
    remainder = None if s2ft_ns is None else _ms(s2ft_ns - sum(d for d in seg_ns if d is not None))

    reason = _reason(
        ready=chain[1],
        init=init,
        prompt=prompt,
        first=first,
        disordered=disordered,
        request_driven=request_driven or prompt_first,
        prompt_first=prompt_first,
        session_init_observable=session_init_observable,
        cli_ready_observable=cli_ready_observable,
        exited_early=exited_early,
        adapter_failed=adapter_failed,
    )
    if probe_killed and reason is not None:
        reason = TimingUnavailableReason.PROBE_KILLED
    return Segments(
        spawn_to_first_token_ms=s2ft,
        cli_ready_ms=segs["cli_ready"],
        session_init_ms=segs["session_init"],
        client_wait_ms=segs["client_wait"],
        model_first_token_ms=segs["model_first_token"],
        remainder_ms=remainder,
        total_duration_ms=None if times.end_ns is None else _ms(times.end_ns - start),
        first_stderr_ms=None
        if times.first_stderr_ns is None
        else _ms(times.first_stderr_ns - start),
        timing_unavailable_reason=reason,
    )


def _reason(  # noqa: PLR0911 - one return per link of the chain reads best
    *,
    ready: int | None,
    init: int | None,
    prompt: int | None,
    first: int | None,
    disordered: bool,
    request_driven: bool,
    prompt_first: bool,
    session_init_observable: bool,
    cli_ready_observable: bool,
    exited_early: bool,
    adapter_failed: bool,
) -> TimingUnavailableReason | None:
    """The first missing link, in the chain's own order.

    (``prompt_first`` puts the prompt before the session set-up.)
    """
    if adapter_failed:
        return TimingUnavailableReason.ADAPTER_ERROR
    if disordered:
        return TimingUnavailableReason.MARKERS_OUT_OF_ORDER
    if ready is None:
        if exited_early:
            return TimingUnavailableReason.PROCESS_EXITED_BEFORE_READY
        return (
            TimingUnavailableReason.NO_CLI_READY
            if cli_ready_observable
            else TimingUnavailableReason.CLI_READY_NOT_OBSERVABLE
        )
    if prompt_first and prompt is None:
        return TimingUnavailableReason.NO_PROMPT
    if init is None:
        if not session_init_observable:
            return TimingUnavailableReason.SESSION_INIT_NOT_OBSERVABLE
        return TimingUnavailableReason.NO_SESSION_INIT
    if request_driven and prompt is None:
        return TimingUnavailableReason.NO_PROMPT
    if first is None:
        return TimingUnavailableReason.NO_FIRST_TOKEN
    return None


def _family_name(_inst: object, _attr: object, value: str) -> None:
    if not FAMILY_NAME.fullmatch(value):
        raise ValueError(f"runtime_family {value!r} is not a family name ({FAMILY_NAME.pattern})")


def _opt_float(v: float | None) -> float | None:
    return None if v is None else float(v)


def _reason_or_none(v: str | None) -> TimingUnavailableReason | None:
    return None if v is None else TimingUnavailableReason(v)


def _source_or_none(v: str | None) -> SessionInitSource | None:
    return None if v is None else SessionInitSource(v)


def _granularity_or_none(v: str | None) -> FirstTokenGranularity | None:
    return None if v is None else FirstTokenGranularity(v)


def _kind_or_none(v: str | None) -> FirstTokenKind | None:
    return None if v is None else FirstTokenKind(v)


def _prefix_or_none(v: str | None) -> PrefixStatus | None:
    return None if v is None else PrefixStatus(v)


def _observer(v: str) -> ObserverStatus:
    return ObserverStatus(v)


@attrs.frozen(kw_only=True)
class RunRecord:
    """The ``run_finished`` record: one per run, the same fields in every sink (DESIGN §4).

    Durations are ms (float, µs resolution) on the monotonic clock; ``started_at`` is the
    run's start as ISO-8601 UTC wall time. ``agent_reported_*`` are the agent's own
    self-reported timings (Claude Code's ``result`` line), on the agent's clock: they are
    never mixed into the segments. ``adapter_error`` names a parser fault (the exception
    type and the marker rule it broke), never the content of the line.
    ``provider_first_byte_ms`` and ``cli_forward_ms`` exist only with the provider
    observer: the provider's own latency for the request whose answer produced the first
    token, and the time the agent took to print it after the first content byte arrived.
    """

    run_id: str
    conversation_id: str | None = None
    session_id: str | None = None
    turn_ordinal: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    session_resumed: bool = False
    process_reused: bool = False
    agent: str
    runtime_family: str = attrs.field(converter=str, validator=_family_name)
    agent_version: str | None = None
    model: str | None = None
    status: Status = attrs.field(converter=Status)
    exit_code: int | None = None
    signal: int | None = None
    spawn_to_first_token_ms: float | None = attrs.field(default=None, converter=_opt_float)
    cli_ready_ms: float | None = attrs.field(default=None, converter=_opt_float)
    session_init_ms: float | None = attrs.field(default=None, converter=_opt_float)
    client_wait_ms: float | None = attrs.field(default=None, converter=_opt_float)
    model_first_token_ms: float | None = attrs.field(default=None, converter=_opt_float)
    remainder_ms: float | None = attrs.field(default=None, converter=_opt_float)
    provider_first_byte_ms: float | None = attrs.field(default=None, converter=_opt_float)
    cli_forward_ms: float | None = attrs.field(default=None, converter=_opt_float)
    total_duration_ms: float | None = attrs.field(default=None, converter=_opt_float)
    first_stderr_ms: float | None = attrs.field(default=None, converter=_opt_float)
    timing_unavailable_reason: TimingUnavailableReason | None = attrs.field(
        default=None, converter=_reason_or_none
    )
    session_init_source: SessionInitSource | None = attrs.field(
        default=None, converter=_source_or_none
    )
    first_token_granularity: FirstTokenGranularity | None = attrs.field(
        default=None, converter=_granularity_or_none
    )
    first_token_kind: FirstTokenKind | None = attrs.field(
        default=None, converter=_kind_or_none
    )
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    agent_reported_ttft_ms: float | None = attrs.field(default=None, converter=_opt_float)
    agent_reported_time_to_request_ms: float | None = attrs.field(
        default=None, converter=_opt_float
    )
    agent_reported_duration_api_ms: float | None = attrs.field(default=None, converter=_opt_float)
    adapter_error: str | None = None
    observer_status: ObserverStatus = attrs.field(default=ObserverStatus.OFF, converter=_observer)
    observer_error: str | None = None
    model_request_count: int | None = None
    first_request_input_tokens: int | None = None
    first_request_cache_read_tokens: int | None = None
    first_request_cache_write_tokens: int | None = None
    first_request_uncached_tokens: int | None = None
    first_request_bytes: int | None = None
    prefix_status: PrefixStatus | None = attrs.field(default=None, converter=_prefix_or_none)
    prefix_break: str | None = None
    prefix_reused_bytes: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    probe_version: str
    contract_version: str = CONTRACT_VERSION
    started_at: str

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready properties (enums as their string values)."""
        return attrs.asdict(self, value_serializer=_serialize)

    def to_json(self) -> str:
        """One compact JSON object (a JSON line without the newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild a record from :meth:`to_dict` output; unknown keys are ignored.

        Raises:
            TypeError: A required field is missing.
            ValueError: A field holds a value outside its enum or range.
        """
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _serialize(_inst: object, _field: object, value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    return value


def record_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``run_finished``, shipped in the package."""
    from importlib import resources  # noqa: PLC0415 - ~10 ms; only the schema needs it

    text = resources.files("ttft_probe").joinpath("run_finished.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
