"""Marker rules of the ``claude-stream-json`` family (DESIGN §3).

Claude Code run as ``claude -p PROMPT --output-format stream-json --verbose
[--include-partial-messages]`` prints one JSON object per stdout line (the SDK message
types ``system``, ``stream_event``, ``assistant``, ``user``, ``result``).

========================  =============================================================
marker / event            protocol message and field
========================  =============================================================
``cliReady``              the first stdout line that decodes to a JSON object
``sessionInitDone``       ``{"type":"system","subtype":"init"}``
                          (``session_init_source="init_message"``; the provider observer,
                          when used, supersedes it outside this adapter)
``SessionObserved``       ``init.session_id`` (``resumed`` is left to the command line)
``AgentInfo``             ``init.model``, ``init.claude_code_version``
``firstToken`` (delta)    the first ``{"type":"stream_event"}`` whose ``event`` is a
                          ``content_block_delta`` with a ``text_delta`` carrying non-empty
                          ``delta.text`` (kind ``text``) or a ``thinking_delta`` carrying
                          non-empty ``delta.thinking`` (kind ``thinking``)
``firstToken`` (message)  only when the turn has no ``stream_event`` at all (run without
                          ``--include-partial-messages``): the first
                          ``{"type":"assistant"}`` whose ``message.content`` holds a
                          ``text`` block with non-empty ``text`` or a ``thinking`` block
                          with non-empty ``thinking``; messages Claude Code makes up
                          itself (``message.model == "<synthetic>"``, e.g. an API error
                          text) are not model output and never a token
(subagents)               a ``stream_event`` or ``assistant`` message with a non-null
                          ``parent_tool_use_id`` comes from a subagent (the Task tool): it
                          is neither the turn's first token nor its answer text
``TurnEnded``             ``{"type":"result"}``; failed when ``is_error`` is true or
                          ``subtype`` is not ``"success"``
``UsageReported``         ``result.usage``: ``input_tokens``, ``output_tokens``,
                          ``cache_read_input_tokens``, ``cache_creation_input_tokens``
``AgentReportedTimings``  ``result.ttft_ms``, ``result.time_to_request_ms``,
                          ``result.duration_api_ms`` (Claude's own clock; never a marker)
``ContentObserved``       only with ``capture_content``, role ``assistant``: each
                          ``text_delta``'s non-empty ``delta.text``; in a turn without
                          ``stream_event`` lines, the non-empty ``text`` of each
                          ``assistant`` message's ``text`` blocks (not ``<synthetic>``
                          ones) — never both, so no text is doubled. Thinking and tool
                          input are not content. No prompt text in one-shot mode: it is on
                          the command line, which is never read.
========================  =============================================================

**SDK mode** (DESIGN §3, "Claude Code in SDK mode"): with ``--input-format stream-json``
on the command line — how ``claude-agent-sdk`` runs Claude Code — one long-lived process
serves one turn per user message written to its stdin, so the adapter is request-driven
and reads the client's stdin lines (:meth:`ClaudeStreamJsonAdapter.feed_stdin`):

========================  =============================================================
marker / event            protocol message and field
========================  =============================================================
``cliReady``              the stdout ``{"type":"control_response"}`` whose
                          ``response.request_id`` answers the client's stdin
                          ``{"type":"control_request","request":{"subtype":"initialize"}}``
                          when the client sent one before its first message; otherwise
                          the first stdout JSON line if it came before that message. The
                          CLI prints nothing until a message arrives, so without the
                          ``initialize`` handshake its readiness cannot be told from the
                          client's wait: ``cli_ready_observable`` turns ``False``
``promptSent``            each stdin ``{"type":"user"}`` line whose ``message`` is an
                          object; the turns are served in that order, one at a time (a
                          message sent while a turn is open waits for it)
``sessionInitDone``       the turn's own ``system``/``init`` (one per user message; the
                          observer's first generation request supersedes it)
``firstToken``            as above, for the turn in flight only (none while no turn is)
``TurnEnded``             the turn's ``result``; ``cancelled`` when the client sent a
                          ``control_request`` ``interrupt`` while it was in flight (a
                          ``result`` still follows). A ``result`` with no turn in flight
                          ends nothing
``ContentObserved``       also role ``user``: the text of the stdin message's ``content``
                          (a string, or its ``text`` blocks)
========================  =============================================================

Other control traffic — ``can_use_tool`` requests from the CLI and the client's answers,
``set_permission_mode``, any unknown ``control_request`` — is neither a token nor a turn
boundary.

``cliReady`` is marked once per process; the other markers once per turn (a ``result``
line ends the turn). Lines that are not JSON objects, or objects of an unknown shape, are
ignored; so are token counts that are not integers ``>= 0`` and timings that are not
finite numbers ``>= 0`` (the record's schema admits neither).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from ttft_probe.adapters._base import (
    AdapterOptions,
    AgentInfo,
    AgentReportedTimings,
    ContentObserved,
    Event,
    MarkerObserved,
    SessionObserved,
    TurnEnded,
    UsageReported,
    decode_count,
    decode_ms,
    decode_name,
    decode_object,
    decode_text,
)
from ttft_probe.agents import sdk_mode
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
    SessionInitSource,
)

__all__ = ["ClaudeStreamJsonAdapter"]

# Once the turn's first token is seen, only the ``result`` line still matters; a line
# without this substring cannot be it (inside JSON strings the quotes are escaped).
_RESULT_NEEDLES: Final = (b'"result"',)
# Claude Code's own messages (e.g. "API Error: …") carry this model name: not model output.
_SYNTHETIC_MODEL: Final = "<synthetic>"
_DELTA_KINDS: Final = {
    "text_delta": ("text", FirstTokenKind.TEXT),
    "thinking_delta": ("thinking", FirstTokenKind.THINKING),
}
_BLOCK_KINDS: Final = {
    "text": ("text", FirstTokenKind.TEXT),
    "thinking": ("thinking", FirstTokenKind.THINKING),
}
_TIMING_KEYS: Final = ("ttft_ms", "time_to_request_ms", "duration_api_ms")


class ClaudeStreamJsonAdapter:
    """Adapter for Claude Code's ``--output-format stream-json`` (see the module tables).

    ``request_driven``, ``tees_stdin`` and ``prompt_first`` are ``True`` in SDK mode
    (``--input-format stream-json`` in ``AdapterOptions.argv``), ``False`` otherwise.
    """

    family: ClassVar[str] = RuntimeFamily.CLAUDE_STREAM_JSON
    framing: ClassVar[Literal["lines", "chunks"]] = "lines"

    def __init__(self, options: AdapterOptions | None = None) -> None:
        """Create an adapter; of ``options`` it uses ``capture_content`` and ``argv``."""
        self._options = options or AdapterOptions()
        self._capture = self._options.capture_content
        sdk = sdk_mode(self._options.argv)
        self.request_driven = self.tees_stdin = self.prompt_first = sdk
        self._sdk = sdk
        self._cli_ready = False
        self._ready_lost = False  # SDK mode: a message came before any readiness signal
        self._initialize_id: object = None  # SDK mode: the initialize request's id
        self._open = 0  # SDK mode: user messages not yet answered by a result
        self._cancelled = False  # SDK mode: the client interrupted the turn in flight
        self._new_turn()

    def _new_turn(self) -> None:
        self._init_seen = False
        self._first_token = False
        self._saw_stream_event = False

    @property
    def session_init_observable(self) -> bool:
        """Always ``True``: the ``system``/``init`` message marks ``sessionInitDone``."""
        return True

    @property
    def cli_ready_observable(self) -> bool:
        """``False`` in SDK mode once a message came before any readiness signal."""
        return not self._ready_lost

    def line_filter(self) -> tuple[bytes, ...] | None:
        """After the turn's init and first token only its ``result`` line can matter.

        In SDK mode also between turns (no message waiting), once ready. ``None`` (every
        line) while capturing content: later text matters too.
        """
        if self._capture:
            return None
        if not self._sdk:
            return _RESULT_NEEDLES if self._turn_marked else None
        if self._awaiting_ready or (self._open and not self._turn_marked):
            return None
        return _RESULT_NEEDLES

    @property
    def _awaiting_ready(self) -> bool:
        return not (self._cli_ready or self._ready_lost)

    @property
    def _turn_marked(self) -> bool:
        return self._first_token and self._init_seen

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        """Parse one stdout line (without its newline) that arrived at ``t_ns``."""
        needles = self.line_filter()
        if needles is not None and not any(n in data for n in needles):
            return []
        msg = decode_object(data)
        if msg is None:
            return []
        events: list[Event] = []
        kind = msg.get("type")
        if self._awaiting_ready and (
            self._initialize_id is None or self._answers_initialize(kind, msg)
        ):
            self._cli_ready = True
            events.append(MarkerObserved(Marker.CLI_READY, t_ns))
        if self._sdk and not self._open:
            # Between turns: nothing is a marker; a stray ``result`` ends no turn.
            return events
        self._on_message(kind, msg, t_ns, events)
        return events

    def _on_message(
        self, kind: object, msg: dict[str, Any], t_ns: int, events: list[Event]
    ) -> None:
        """A stdout message of the turn in flight."""
        if kind == "system" and msg.get("subtype") == "init":
            self._on_init(msg, t_ns, events)
        elif kind == "result":
            self._on_result(msg, t_ns, events)
        elif _from_subagent(msg):
            return
        elif kind == "stream_event":
            self._saw_stream_event = True
            self._on_stream_event(msg, t_ns, events)
        elif kind == "assistant":
            self._on_assistant(msg, t_ns, events)

    def _answers_initialize(self, kind: object, msg: dict[str, Any]) -> bool:
        if kind != "control_response":
            return False
        response = msg.get("response")
        return isinstance(response, dict) and _same_id(
            response.get("request_id"), self._initialize_id
        )

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:
        """SDK mode: a user message starts a turn; ``initialize`` and ``interrupt`` are noted.

        Outside SDK mode stdin is not teed, and nothing is parsed.
        """
        if not self._sdk:
            return []
        msg = decode_object(line)
        if msg is None:
            return []
        kind = msg.get("type")
        if kind == "user" and isinstance(msg.get("message"), dict):
            return self._on_user_message(msg["message"], t_ns)
        if kind == "control_request":
            request = msg.get("request")
            subtype = request.get("subtype") if isinstance(request, dict) else None
            if subtype == "initialize" and self._awaiting_ready and not self._open:
                request_id = msg.get("request_id")
                if _usable_id(request_id):
                    self._initialize_id = request_id
            elif subtype == "interrupt" and self._open:
                self._cancelled = True
        return []

    def _on_user_message(self, message: dict[str, Any], t_ns: int) -> list[Event]:
        if self._awaiting_ready:
            self._ready_lost = True
        self._open += 1
        events: list[Event] = [MarkerObserved(Marker.PROMPT_SENT, t_ns)]
        if self._capture:
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if isinstance(blocks, list):
                for block in blocks:
                    if isinstance(block, dict) and block.get("type") == "text":
                        text = decode_text(block.get("text"))
                        if text is not None:
                            events.append(ContentObserved("user", text))
        return events

    def close(self, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """EOF: the turn ends at its ``result`` line, not at EOF; nothing to add."""
        return []

    def model_request(self, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """The observer's model request adds nothing to this family's own rules."""
        return []

    def _on_init(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        if self._init_seen:
            return
        self._init_seen = True
        events.append(
            MarkerObserved(
                Marker.SESSION_INIT_DONE,
                t_ns,
                session_init_source=SessionInitSource.INIT_MESSAGE,
            )
        )
        session_id = decode_name(msg.get("session_id"))
        if session_id is not None:
            events.append(SessionObserved(session_id))
        model = decode_name(msg.get("model"))
        version = decode_name(msg.get("claude_code_version"))
        if model is not None or version is not None:
            events.append(AgentInfo(model=model, agent_version=version))

    def _on_stream_event(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        if self._first_token and not self._capture:
            return
        event = msg.get("event")
        if not isinstance(event, dict) or event.get("type") != "content_block_delta":
            return
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return
        rule = _DELTA_KINDS.get(str(delta.get("type")))
        if rule is None:
            return
        field, token_kind = rule
        text = delta.get(field)
        if isinstance(text, str) and text:
            self._mark_token(t_ns, events, FirstTokenGranularity.DELTA, token_kind)
            if self._capture and token_kind is FirstTokenKind.TEXT:
                events.append(ContentObserved("assistant", decode_text(text) or text))

    def _mark_token(
        self,
        t_ns: int,
        events: list[Event],
        granularity: FirstTokenGranularity,
        kind: FirstTokenKind,
    ) -> None:
        """Mark ``firstToken`` once per turn."""
        if self._first_token:
            return
        self._first_token = True
        events.append(MarkerObserved(Marker.FIRST_TOKEN, t_ns, granularity=granularity, kind=kind))

    def _on_assistant(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        # With --include-partial-messages the deltas came first; the whole message that
        # follows them is never a token, nor content (the deltas were).
        if self._saw_stream_event or (self._first_token and not self._capture):
            return
        message = msg.get("message")
        if not isinstance(message, dict) or message.get("model") == _SYNTHETIC_MODEL:
            return
        content = message.get("content")
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            rule = _BLOCK_KINDS.get(str(block.get("type")))
            if rule is None:
                continue
            field, token_kind = rule
            text = block.get(field)
            if not isinstance(text, str) or not text:
                continue
            # The message's first non-empty block is the token; later blocks are not.
            self._mark_token(t_ns, events, FirstTokenGranularity.MESSAGE, token_kind)
            if not self._capture:
                return
            if token_kind is FirstTokenKind.TEXT:
                events.append(ContentObserved("assistant", decode_text(text) or text))

    def _on_result(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        usage = msg.get("usage")
        if isinstance(usage, dict):
            report = UsageReported(
                input_tokens=decode_count(usage.get("input_tokens")),
                output_tokens=decode_count(usage.get("output_tokens")),
                cache_read_input_tokens=decode_count(usage.get("cache_read_input_tokens")),
                cache_creation_input_tokens=decode_count(usage.get("cache_creation_input_tokens")),
            )
            if report != UsageReported():
                events.append(report)
        timings = _find_timings(msg)
        if timings is not None:
            events.append(timings)
        failed = msg.get("is_error") is True or msg.get("subtype") != "success"
        events.append(TurnEnded(t_ns, failed=failed, cancelled=self._cancelled))
        self._new_turn()
        self._cancelled = False
        self._open = max(0, self._open - 1)


def _from_subagent(msg: dict[str, Any]) -> bool:
    """A message of a subagent (Task tool): it carries a non-null ``parent_tool_use_id``."""
    return msg.get("parent_tool_use_id") is not None


def _usable_id(value: object) -> bool:
    return (isinstance(value, str) and bool(value)) or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def _same_id(value: object, expected: object) -> bool:
    """Ids match by type and value (``1`` and ``"1"`` differ; ``True`` is no id)."""
    return _usable_id(value) and type(value) is type(expected) and value == expected


def _find_timings(msg: dict[str, Any]) -> AgentReportedTimings | None:
    """Claude's self-reported timings: top-level fields (2.1.x), else one level down."""
    candidates = [msg, *(v for v in msg.values() if isinstance(v, dict))]
    for obj in candidates:
        values = {key: decode_ms(obj.get(key)) for key in _TIMING_KEYS}
        if any(v is not None for v in values.values()):
            return AgentReportedTimings(**values)
    return None
