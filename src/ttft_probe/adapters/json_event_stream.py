"""Marker rules of the ``json-event-stream`` family (DESIGN §3).

One JSON event per stdout line, told apart by its ``type``. Three dialects share the
family: Codex (``codex exec --json``, ``thread.*``/``turn.*``/``item.*`` events), Gemini
CLI (``gemini -p … --output-format stream-json``: ``init``, ``message``, ``tool_use``,
``tool_result``, ``error``, ``result``) and cursor-agent (``--output-format
stream-json``: ``system``, ``assistant``, ``thinking``, ``result``, shaped like Claude's
SDK messages). Unknown event types are ignored.

==================  ====================================================================
marker / event      protocol message and field
==================  ====================================================================
``cliReady``        the first stdout line that decodes to a JSON object (any event)
``sessionInitDone`` codex ``{"type":"turn.started"}``; gemini ``{"type":"init"}``;
                    cursor ``{"type":"system","subtype":"init"}`` — all with
                    ``session_init_source="init_message"``
``SessionObserved`` codex ``thread.started.thread_id``; gemini ``init.session_id``;
                    cursor ``init.session_id``
``AgentInfo``       gemini / cursor ``init.model``
``firstToken``      gemini: the first ``{"type":"message","role":"assistant"}`` with
                    non-empty string ``content`` (granularity ``delta``, kind ``text``).
                    codex: the first ``item.started`` / ``item.updated`` /
                    ``item.completed`` whose ``item.type`` is ``agent_message`` (kind
                    ``text``) or ``reasoning`` (kind ``thinking``) with non-empty
                    ``item.text`` — granularity ``message``, codex exec prints no
                    deltas. cursor: the first ``{"type":"thinking"}`` with non-empty
                    ``text`` (``delta``, ``thinking``) or ``{"type":"assistant"}`` with a
                    non-empty ``text`` block in ``message.content`` (``message``,
                    ``text``; cursor does not say whether it streams partial output)
``TurnEnded``       codex ``turn.completed`` / ``turn.failed`` (failed); gemini
                    ``result`` (failed unless ``status == "success"``); cursor ``result``
                    (failed when ``is_error`` or ``subtype != "success"``). A top-level
                    ``{"type":"error"}`` does not end the turn by itself: codex also
                    emits it for retried stream errors and follows a fatal one with
                    ``turn.failed``, gemini with a ``result``. If the stream ends after an
                    ``error`` without a turn end, :meth:`close` ends the turn as failed.
``UsageReported``   codex ``turn.completed.usage`` (``input_tokens``,
                    ``cached_input_tokens`` → ``cache_read_input_tokens``,
                    ``cache_write_input_tokens`` → ``cache_creation_input_tokens``,
                    ``output_tokens``); gemini ``result.stats`` (``input_tokens``,
                    ``output_tokens``, ``cached`` → ``cache_read_input_tokens``); cursor
                    ``result.usage`` when present
``ContentObserved`` only with ``capture_content``. Codex: ``item.text`` of each
                    ``item.completed`` whose ``item.type`` is ``agent_message``
                    (``assistant``; ``item.started``/``item.updated`` would repeat it).
                    Gemini: ``content`` of each ``{"type":"message"}``, role ``user`` →
                    ``user`` (the prompt, echoed), role ``assistant`` → ``assistant``
                    (delta or whole). Cursor: ``result.result`` of a result that did
                    not fail (``assistant``), the turn's answer text — its
                    ``assistant`` frames are not used: with ``--stream-partial-output``
                    they repeat the deltas as snapshots.
                    Only non-empty strings; reasoning and thinking are not content.
==================  ====================================================================

``cliReady`` is marked once per process, the other markers once per turn. Token counts
that are not integers ``>= 0`` are ignored (the record's schema admits none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from ttft_probe.adapters._base import (
    AdapterOptions,
    AgentInfo,
    ContentObserved,
    Event,
    MarkerObserved,
    SessionObserved,
    TurnEnded,
    UsageReported,
    decode_count,
    decode_name,
    decode_object,
    decode_text,
)
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
    SessionInitSource,
)

if TYPE_CHECKING:
    from ttft_probe.content import Role

__all__ = ["JsonEventStreamAdapter"]

# After the turn's first token only turn ends, errors and a (late) codex thread id matter;
# a line holding none of these substrings cannot be one (inside JSON strings the quotes are
# escaped).
_LATE_NEEDLES: Final = (b"turn.", b'"result"', b'"error"', b"thread.started")
_CODEX_ITEM_KINDS: Final = {
    "agent_message": FirstTokenKind.TEXT,
    "reasoning": FirstTokenKind.THINKING,
}
# Token-count field names, first match wins: codex / gemini / claude-like / camelCase.
_INPUT_KEYS: Final = ("input_tokens", "inputTokens")
_OUTPUT_KEYS: Final = ("output_tokens", "outputTokens")
_CACHE_READ_KEYS: Final = (
    "cached_input_tokens",
    "cache_read_input_tokens",
    "cached",
    "cacheReadTokens",
)
_CACHE_WRITE_KEYS: Final = (
    "cache_write_input_tokens",
    "cache_creation_input_tokens",
    "cacheWriteTokens",
)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(obj: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        count = decode_count(obj.get(key))
        if count is not None:
            return count
    return None


def _usage(obj: object) -> UsageReported | None:
    if not isinstance(obj, dict):
        return None
    report = UsageReported(
        input_tokens=_count(obj, _INPUT_KEYS),
        output_tokens=_count(obj, _OUTPUT_KEYS),
        cache_read_input_tokens=_count(obj, _CACHE_READ_KEYS),
        cache_creation_input_tokens=_count(obj, _CACHE_WRITE_KEYS),
    )
    return None if report == UsageReported() else report


class JsonEventStreamAdapter:
    """Adapter for codex ``exec --json``, gemini and cursor-agent stream-json output."""

    family: ClassVar[str] = RuntimeFamily.JSON_EVENT_STREAM
    framing: ClassVar[Literal["lines", "chunks"]] = "lines"
    request_driven: ClassVar[bool] = False
    tees_stdin: ClassVar[bool] = False

    def __init__(self, options: AdapterOptions | None = None) -> None:
        """Create an adapter; of ``options`` only ``capture_content`` is used."""
        self._options = options or AdapterOptions()
        self._capture = self._options.capture_content
        self._cli_ready = False
        self._new_turn()

    def _new_turn(self) -> None:
        self._init_seen = False
        self._first_token = False
        self._error_seen = False

    @property
    def session_init_observable(self) -> bool:
        """Always ``True``: codex ``turn.started`` / gemini ``init`` mark it."""
        return True

    def line_filter(self) -> tuple[bytes, ...] | None:
        """After the turn's start and first token only lines naming a late event matter.

        ``None`` (every line) while capturing content: later text matters too.
        """
        if self._capture:
            return None
        return _LATE_NEEDLES if self._first_token and self._init_seen else None

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        """Parse one stdout line (without its newline) that arrived at ``t_ns``."""
        needles = self.line_filter()
        if needles is not None and not any(n in data for n in needles):
            return []
        msg = decode_object(data)
        if msg is None:
            return []
        events: list[Event] = []
        if not self._cli_ready:
            self._cli_ready = True
            events.append(MarkerObserved(Marker.CLI_READY, t_ns))
        kind = msg.get("type")
        if not isinstance(kind, str):
            return events
        self._dispatch(kind, msg, t_ns, events)
        return events

    def _dispatch(  # noqa: C901 - one arm per event type reads best
        self, kind: str, msg: dict[str, Any], t_ns: int, events: list[Event]
    ) -> None:
        match kind:
            case "thread.started":
                self._codex_thread_started(msg, events)
            case "turn.started":
                self._mark_init(t_ns, events)
            case "item.started" | "item.updated" | "item.completed":
                self._codex_item(msg, t_ns, events)
            case "turn.completed":
                self._end_turn(t_ns, events, failed=False, usage=_usage(msg.get("usage")))
            case "turn.failed":
                self._end_turn(t_ns, events, failed=True, usage=_usage(msg.get("usage")))
            case "error":
                self._error_seen = True
            case "init" | "system" if kind == "init" or msg.get("subtype") == "init":
                self._on_init_message(msg, t_ns, events)
            case "message":
                self._gemini_message(msg, t_ns, events)
            case "result":
                self._result(msg, t_ns, events)
            case "thinking":
                self._cursor_thinking(msg, t_ns, events)
            case "assistant":
                self._cursor_assistant(msg, t_ns, events)
            case _:
                pass

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """Stdin is not teed for this family; nothing to parse."""
        return []

    def close(self, t_ns: int) -> list[Event]:
        """EOF: a turn that reported an ``error`` but never ended is ended as failed."""
        if self._error_seen:
            self._new_turn()
            return [TurnEnded(t_ns, failed=True)]
        return []

    def model_request(self, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """The observer's model request adds nothing to this family's own rules."""
        return []

    # --- markers ---------------------------------------------------------------------

    def _mark_init(self, t_ns: int, events: list[Event]) -> None:
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

    def _mark_token(
        self,
        t_ns: int,
        events: list[Event],
        granularity: FirstTokenGranularity,
        kind: FirstTokenKind,
    ) -> None:
        if self._first_token:
            return
        self._first_token = True
        events.append(MarkerObserved(Marker.FIRST_TOKEN, t_ns, granularity=granularity, kind=kind))

    def _content(
        self, role: Role, value: object, events: list[Event]
    ) -> None:
        """Report ``value`` as ``role``'s text when capturing and it is a non-empty string."""
        if not self._capture:
            return
        text = decode_text(value)
        if text is not None:
            events.append(ContentObserved(role, text))

    def _end_turn(
        self, t_ns: int, events: list[Event], *, failed: bool, usage: UsageReported | None
    ) -> None:
        if usage is not None:
            events.append(usage)
        events.append(TurnEnded(t_ns, failed=failed))
        self._new_turn()

    # --- codex exec --json -----------------------------------------------------------

    def _codex_thread_started(self, msg: dict[str, Any], events: list[Event]) -> None:
        thread_id = decode_name(msg.get("thread_id"))
        if thread_id is not None:
            events.append(SessionObserved(thread_id))

    def _codex_item(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        item = msg.get("item")
        if not isinstance(item, dict):
            return
        kind = _CODEX_ITEM_KINDS.get(str(item.get("type")))
        if kind is not None and _text(item.get("text")) is not None:
            self._mark_token(t_ns, events, FirstTokenGranularity.MESSAGE, kind)
            if kind is FirstTokenKind.TEXT and msg.get("type") == "item.completed":
                self._content("assistant", item.get("text"), events)

    # --- gemini stream-json ----------------------------------------------------------

    def _gemini_message(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        role = msg.get("role")
        if role == "assistant" and _text(msg.get("content")) is not None:
            self._mark_token(t_ns, events, FirstTokenGranularity.DELTA, FirstTokenKind.TEXT)
            self._content("assistant", msg.get("content"), events)
        elif role == "user":
            self._content("user", msg.get("content"), events)

    def _result(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        if "status" in msg:  # gemini
            failed = msg.get("status") != "success"
            usage = _usage(msg.get("stats"))
        else:  # cursor-agent, shaped like Claude's result
            failed = msg.get("is_error") is True or msg.get("subtype") != "success"
            usage = _usage(msg.get("usage"))
            if not failed:  # a failed result's text is the error message, not an answer
                self._content("assistant", msg.get("result"), events)
        self._end_turn(t_ns, events, failed=failed, usage=usage)

    # --- cursor-agent stream-json ----------------------------------------------------

    def _cursor_thinking(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        if _text(msg.get("text")) is not None:
            self._mark_token(t_ns, events, FirstTokenGranularity.DELTA, FirstTokenKind.THINKING)

    def _cursor_assistant(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        message = msg.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return
        for block in content:
            if (
                isinstance(block, dict)
                and block.get("type") == "text"
                and _text(block.get("text")) is not None
            ):
                self._mark_token(t_ns, events, FirstTokenGranularity.MESSAGE, FirstTokenKind.TEXT)
                return

    def _on_init_message(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        if self._init_seen:
            return
        self._mark_init(t_ns, events)
        session_id = decode_name(msg.get("session_id"))
        if session_id is not None:
            events.append(SessionObserved(session_id))
        model = decode_name(msg.get("model"))
        if model is not None:
            events.append(AgentInfo(model=model))

