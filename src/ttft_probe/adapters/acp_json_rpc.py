"""Marker rules of the ``acp-json-rpc`` family (DESIGN §3).

The Agent Client Protocol (https://agentclientprotocol.com): newline-delimited JSON-RPC
2.0 over stdio, spoken by claude-code-acp, codex-acp, ``gemini --acp`` and ``opencode
acp``. ``codex app-server`` speaks the same framing without the ``"jsonrpc"`` field and
with its own method names; its rules are listed beside ACP's. The client's requests are
read from the agent's stdin (:meth:`AcpJsonRpcAdapter.feed_stdin`) so that results on
stdout can be matched to them by request ``id``.

==================  ====================================================================
marker / event      protocol message and field
==================  ====================================================================
``cliReady``        the first well-formed JSON-RPC message on stdout (an object with
                    ``"jsonrpc":"2.0"``, a string ``method``, or an ``id`` with a
                    ``result``/``error``) — normally the ``initialize`` result
``AgentInfo``       ``initialize`` result ``agentInfo.version`` (app-server:
                    ``userAgent``); ``session/new`` result ``models.currentModelId``
                    (app-server: ``thread/start`` / ``thread/resume`` result ``model``)
``sessionInitDone`` the result of ``session/new``, ``session/load`` or
                    ``session/resume`` (app-server: ``thread/start``, ``thread/resume``),
                    matched by the ``id`` of the request read from stdin;
                    ``session_init_source="session_result"``. The session id is
                    ``result.sessionId`` for ``session/new`` (app-server:
                    ``result.thread.id``) and the request's ``params.sessionId``
                    (``params.threadId``) for load / resume.
``SessionObserved`` with that marker: ``resumed`` is ``True`` for load / resume;
                    ``prior_turns`` counts the runs of ``user_message_chunk`` updates
                    replayed between the ``session/load`` request and its result
                    (app-server: the ``thread.turns`` of the ``thread/resume`` result)
``promptSent``      the ``session/prompt`` request line on stdin (app-server:
                    ``turn/start``), ``session_id=params.sessionId`` (``params.threadId``);
                    the same request sent again (same ``id``) while in flight is not a
                    new prompt
``firstToken``      the first ``session/update`` notification whose
                    ``params.update.sessionUpdate`` is ``agent_message_chunk`` (kind
                    ``text``) or ``agent_thought_chunk`` (kind ``thinking``) with
                    non-empty ``update.content.text``, for a session whose prompt is in
                    flight (sent on stdin and not yet answered) and no earlier prompt of
                    which is still answering (see ``TurnEnded``); granularity ``delta``.
                    App-server: the first non-empty ``params.delta`` of
                    ``item/agentMessage/delta`` (``text``) or of
                    ``item/reasoning/textDelta`` / ``item/reasoning/summaryTextDelta``
                    (``thinking``) for a thread whose turn is in flight.
``TurnEnded``       the result or error of the ``session/prompt`` request, matched by
                    ``id``: ``cancelled`` when ``result.stopReason == "cancelled"``,
                    ``failed`` for a JSON-RPC error. App-server: the ``turn/completed``
                    notification (``turn.status`` ``failed`` → failed, ``interrupted``
                    → cancelled), or an error answering ``turn/start``. A prompt sent
                    while the session's previous one is in flight (ACP allows one at a
                    time) ends that previous turn, failed, at the new prompt; its result
                    (app-server: its ``turn/completed``) is awaited before the new
                    prompt's first token, since chunks until then may still be its answer.
``TurnEnded`` (v2)  ACP v2 (``initialize`` answered with ``protocolVersion`` 2, or the
                    session sent a ``state_update``): the ``session/prompt`` result only
                    accepts the prompt and never ends the turn; the ``session/update``
                    ``state_update`` with ``state: "idle"`` does (``stopReason:
                    "cancelled"`` → cancelled). ``session/close`` answered while a turn
                    of that session is open ends it, cancelled.
``firstToken`` (v2) also the v2 whole-message upserts ``agent_message`` (``text``) and
                    ``agent_thought`` (``thinking``) with a non-empty ``text`` block in
                    ``content``: granularity ``message``
``UsageReported``   ``session/prompt`` ``result.usage`` or a ``usage_update`` carrying
                    ``inputTokens``/``outputTokens``/``cachedReadTokens``/
                    ``cachedWriteTokens`` (ACP's context-window ``used``/``size`` is not
                    token usage); app-server ``thread/tokenUsage/updated``
                    ``params.tokenUsage.last``
``ContentObserved`` only with ``capture_content``. ``user``: the non-empty ``text`` of
                    each ``params.prompt[]`` block with ``type == "text"`` of a
                    ``session/prompt`` request on stdin that marks ``promptSent``
                    (app-server: ``turn/start`` ``params.input[]``).
                    ``assistant``: the non-empty ``update.content.text`` of each
                    ``agent_message_chunk`` whose ``content.type`` is ``"text"``
                    (app-server: ``item/agentMessage/delta`` ``params.delta``), by the
                    same attribution as ``firstToken``: only for a session whose prompt
                    is in flight and no earlier prompt of which is still answering.
                    ``session_id`` as for the markers. History replayed by
                    ``session/load``, thoughts and ``user_message_chunk`` echoes are
                    not content.
==================  ====================================================================

Hazards handled here, each seen on the real agents:

* ``session/load`` replays the whole history as ``agent_message_chunk`` /
  ``user_message_chunk`` *before* its result: never a token (no prompt is in flight, and
  updates of a loading session are only counted).
* claude-code-acp sends an *empty* ``agent_message_chunk`` ~60 ms after the prompt: not
  a token (the text must be non-empty).
* ``available_commands_update``, ``usage_update``, ``current_mode_update``, ``plan``,
  ``tool_call`` and ``configWarning``-style notifications are not tokens; neither is any
  update kind this module does not name (ACP adds kinds; unknown ones are ignored).

Hostile input is ignored rather than trusted: a message of the wrong shape marks nothing,
a response to an unknown (or already answered) ``id`` is dropped, a notification that
names its session by no usable id (a number, ``""``) is nobody's (one that names none is
the only session in flight's), token counts must be integers ``>= 0``, and ids and names
with lone surrogates are kept escaped (see :func:`~ttft_probe.adapters._base.decode_name`).

Every marker but ``cliReady`` carries its session id, and each session has its own turn
state, so several prompts per process (turn 2, 3, …) and concurrent sessions each get
their own ``promptSent`` / ``firstToken`` / ``TurnEnded``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, Literal

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

__all__ = ["AcpJsonRpcAdapter"]

_CREATE_METHODS: Final = frozenset({"session/new", "thread/start"})
_RESUME_METHODS: Final = frozenset({"session/load", "session/resume", "thread/resume"})
_CLOSE: Final = "session/close"
_ACP_PROMPT: Final = "session/prompt"
_APP_SERVER_PROMPT: Final = "turn/start"
# Where a prompt request carries its content blocks (``{"type": "text", "text": …}``).
_PROMPT_BLOCKS: Final = {_ACP_PROMPT: "prompt", _APP_SERVER_PROMPT: "input"}
_TRACKED_METHODS: Final = frozenset(
    {"initialize", _ACP_PROMPT, _APP_SERVER_PROMPT, _CLOSE} | _CREATE_METHODS | _RESUME_METHODS
)
_CHUNK_KINDS: Final = {
    "agent_message_chunk": FirstTokenKind.TEXT,
    "agent_thought_chunk": FirstTokenKind.THINKING,
}
# ACP v2 whole-message upserts: ``content`` is a list of blocks (granularity ``message``).
_MESSAGE_KINDS: Final = {
    "agent_message": FirstTokenKind.TEXT,
    "agent_thought": FirstTokenKind.THINKING,
}
_STATE_UPDATE: Final = "state_update"
_APP_SERVER_DELTAS: Final = {
    "item/agentMessage/delta": FirstTokenKind.TEXT,
    "item/reasoning/textDelta": FirstTokenKind.THINKING,
    "item/reasoning/summaryTextDelta": FirstTokenKind.THINKING,
}
# Updates that end a run of replayed ``user_message_chunk`` (one user turn) during load.
_RUN_BREAKERS: Final = frozenset(
    {"agent_message_chunk", "agent_thought_chunk", "tool_call", "tool_call_update", "plan"}
    | {"agent_message", "agent_thought"}  # ACP v2
)
# When no session waits for a token and none is loading, only responses, usage and
# app-server turn ends matter; a line holding none of these substrings is none of them.
_LATE_NEEDLES: Final = (
    b'"result"', b'"error"', b"turn/completed", b"usage", b"Usage", b"state_update"
)
_USER_AGENT_VERSION: Final = re.compile(r"^[^/\s]+/(\S+)")
# Bounds on remembered requests and sessions, so a misbehaving peer costs bounded memory.
_MAX_PENDING: Final = 4096
_MAX_SESSIONS: Final = 1024
_MAX_SUPERSEDED: Final = 64

_RequestKey = tuple[bool, int | str]


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(obj: dict[str, Any], key: str) -> int | None:
    return decode_count(obj.get(key))


def _request_key(value: object) -> _RequestKey | None:
    """A JSON-RPC id as a dict key (``1`` and ``"1"`` are different ids)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (True, value)
    if isinstance(value, float) and value.is_integer():
        return (True, int(value))
    if isinstance(value, str):
        return (False, value)
    return None


_SESSION_KEYS: Final = ("sessionId", "threadId")


def _session_param(params: dict[str, Any]) -> str | None:
    return decode_name(params.get("sessionId")) or decode_name(params.get("threadId"))


def _count_replayed(session: _Session, kind: object) -> None:
    """Count the user turns of history replayed while loading: runs of user messages."""
    if not isinstance(kind, str):  # a list or object would not even hash
        return
    if kind in {"user_message_chunk", "user_message"}:
        if not session.in_user_run:
            session.user_runs += 1
            session.in_user_run = True
    elif kind in _RUN_BREAKERS:
        session.in_user_run = False


def _usage(obj: object, session_id: str | None) -> UsageReported | None:
    data = _dict(obj)
    report = UsageReported(
        input_tokens=_count(data, "inputTokens"),
        output_tokens=_count(data, "outputTokens"),
        cache_read_input_tokens=_count(data, "cachedReadTokens")
        if "cachedReadTokens" in data
        else _count(data, "cachedInputTokens"),
        cache_creation_input_tokens=_count(data, "cachedWriteTokens")
        if "cachedWriteTokens" in data
        else _count(data, "cacheWriteInputTokens"),
        session_id=session_id,
    )
    return None if report == UsageReported(session_id=session_id) else report


class _Session:
    """Turn state of one session (ACP ``sessionId``, app-server ``threadId``)."""

    __slots__ = (
        "first_token",
        "in_user_run",
        "loading",
        "prompt_key",
        "state_updates",
        "superseded",
        "user_runs",
    )

    def __init__(self) -> None:
        self.loading = False
        self.user_runs = 0
        self.in_user_run = False
        self.prompt_key: _RequestKey | None = None
        self.first_token = False
        # Prompts replaced by a later prompt before their turn ended, oldest first.
        self.superseded: list[_RequestKey] = []
        # The agent reports its turns' ends by state_update (ACP v2): a prompt's result
        # only acknowledges it.
        self.state_updates = False

    @property
    def awaiting(self) -> bool:
        """A line about this session may still hold a marker other than a turn end."""
        return self.loading or (self.prompt_key is not None and not self.first_token)


class AcpJsonRpcAdapter:
    """Adapter for ACP agents and ``codex app-server`` (see the module table)."""

    family: ClassVar[str] = RuntimeFamily.ACP_JSON_RPC
    framing: ClassVar[Literal["lines", "chunks"]] = "lines"
    request_driven: ClassVar[bool] = True
    tees_stdin: ClassVar[bool] = True

    def __init__(self, options: AdapterOptions | None = None) -> None:
        """Create an adapter; of ``options`` only ``capture_content`` is used."""
        self._options = options or AdapterOptions()
        self._capture = self._options.capture_content
        self._cli_ready = False
        # request id → (method, session id named in its params)
        self._pending: dict[_RequestKey, tuple[str, str | None]] = {}
        self._sessions: dict[str | None, _Session] = {}
        self._awaiting = False
        self._v2 = False  # the agent answered initialize with protocolVersion >= 2

    @property
    def session_init_observable(self) -> bool:
        """Always ``True``: the session result marks ``sessionInitDone``."""
        return True

    # --- stdin: the client's requests ------------------------------------------------

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:
        """Remember a request the client wrote; a prompt request marks ``promptSent``."""
        msg = decode_object(line)
        if msg is None:
            return []
        method = msg.get("method")
        key = _request_key(msg.get("id"))
        # ``in`` a frozenset hashes the value: a list or object as method would raise.
        if key is None or not isinstance(method, str) or method not in _TRACKED_METHODS:
            return []
        params = _dict(msg.get("params"))
        session_id = _session_param(params)
        self._remember(key, str(method), session_id)
        events: list[Event] = []
        if method in _RESUME_METHODS:
            session = self._session(session_id)
            session.loading = method == "session/load"
            session.user_runs = 0
            session.in_user_run = False
        elif method in _PROMPT_BLOCKS:
            started = self._on_prompt(key, session_id, t_ns, events)
            if started and self._capture:
                self._prompt_content(params.get(_PROMPT_BLOCKS[method]), session_id, events)
        self._refresh()
        return events

    def _on_prompt(
        self, key: _RequestKey, session_id: str | None, t_ns: int, events: list[Event]
    ) -> bool:
        """Start the prompt's turn; ``False`` when it is the one in flight, sent again."""
        session = self._session(session_id)
        if session.prompt_key == key:
            return False  # the request in flight, sent again: still the same turn
        if session.prompt_key is not None:
            # One prompt at a time per session (ACP): the turn in flight ends here, its
            # result unseen, and until that result (app-server: its turn/completed) comes,
            # a chunk may still be its answer, not the new prompt's first token.
            session.superseded = [*session.superseded, session.prompt_key][-_MAX_SUPERSEDED:]
            events.append(TurnEnded(t_ns, session_id=session_id, failed=True))
        session.prompt_key = key
        session.first_token = False
        events.append(MarkerObserved(Marker.PROMPT_SENT, t_ns, session_id=session_id))
        return True

    def _prompt_content(self, blocks: object, session_id: str | None, events: list[Event]) -> None:
        """The text blocks of a prompt that started a turn, as ``user`` content."""
        if not isinstance(blocks, list):
            return
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "text":
                text = decode_text(block.get("text"))
                if text is not None:
                    events.append(ContentObserved("user", text, session_id=session_id))

    # --- stdout: the agent's responses and notifications -----------------------------

    def line_filter(self) -> tuple[bytes, ...] | None:
        """With no prompt awaiting its first token, only results, errors and usage matter.

        ``None`` (every line) while capturing content: later chunks matter too.
        """
        if self._capture:
            return None
        return _LATE_NEEDLES if self._cli_ready and not self._awaiting else None

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        """Parse one stdout line (without its newline) that arrived at ``t_ns``."""
        needles = self.line_filter()
        if needles is not None and not any(n in data for n in needles):
            return []
        msg = decode_object(data)
        if msg is None:
            return []
        method = msg.get("method")
        is_response = "id" in msg and ("result" in msg or "error" in msg)
        if not (msg.get("jsonrpc") == "2.0" or isinstance(method, str) or is_response):
            return []
        events: list[Event] = []
        if not self._cli_ready:
            self._cli_ready = True
            events.append(MarkerObserved(Marker.CLI_READY, t_ns))
        if isinstance(method, str):
            if "id" not in msg:  # a request from the agent (permission, fs, …) is ignored
                self._on_notification(method, _dict(msg.get("params")), t_ns, events)
        elif is_response:
            self._on_response(msg, t_ns, events)
        self._refresh()
        return events

    def close(self, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """EOF: turns still in flight stay open; the run sees the process exit."""
        return []

    def model_request(self, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """The observer's model request adds nothing to this family's own rules."""
        return []

    # --- responses -------------------------------------------------------------------

    def _on_response(self, msg: dict[str, Any], t_ns: int, events: list[Event]) -> None:
        key = _request_key(msg.get("id"))
        pending = self._pending.pop(key, None) if key is not None else None
        if pending is None:
            return
        method, session_id = pending
        failed = "error" in msg
        result = _dict(msg.get("result"))
        if method == "initialize":
            self._on_initialize(result, events)
        elif method in _CREATE_METHODS or method in _RESUME_METHODS:
            self._on_session_result(method, session_id, result, t_ns, events, failed=failed)
        elif method == _CLOSE:
            self._on_close(session_id, t_ns, events)
        elif method == _ACP_PROMPT or (method == _APP_SERVER_PROMPT and failed):
            self._on_prompt_result(key, session_id, result, t_ns, events, failed=failed)

    def _on_prompt_result(
        self,
        key: _RequestKey | None,
        session_id: str | None,
        result: dict[str, Any],
        t_ns: int,
        events: list[Event],
        *,
        failed: bool,
    ) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        if not failed and (self._v2 or session.state_updates):
            return  # ACP v2: the result accepts the prompt; state_update idle ends the turn
        if session.prompt_key != key:
            # A prompt superseded by a later one on the same session: its turn already
            # ended; its answer is over now.
            if key in session.superseded:
                session.superseded.remove(key)
            return
        usage = _usage(result.get("usage"), session_id)
        if usage is not None:
            events.append(usage)
        cancelled = result.get("stopReason") == "cancelled"
        self._end_turn(session, session_id, t_ns, events, failed=failed, cancelled=cancelled)

    def _on_close(self, session_id: str | None, t_ns: int, events: list[Event]) -> None:
        """``session/close`` answered: a turn still open there ended, cancelled."""
        session = self._sessions.pop(session_id, None)
        if session is not None and session.prompt_key is not None:
            self._end_turn(session, session_id, t_ns, events, failed=False, cancelled=True)

    def _on_initialize(self, result: dict[str, Any], events: list[Event]) -> None:
        protocol = result.get("protocolVersion")
        self._v2 = isinstance(protocol, int) and not isinstance(protocol, bool) and protocol >= 2
        version = decode_name(_dict(result.get("agentInfo")).get("version")) or decode_name(
            _dict(result.get("info")).get("version")  # ACP v2
        )
        if version is None:
            match = _USER_AGENT_VERSION.match(decode_name(result.get("userAgent")) or "")
            version = match.group(1) if match else None
        if version is not None:
            events.append(AgentInfo(agent_version=version))

    def _on_session_result(
        self,
        method: str,
        requested_id: str | None,
        result: dict[str, Any],
        t_ns: int,
        events: list[Event],
        *,
        failed: bool,
    ) -> None:
        resumed = method in _RESUME_METHODS
        thread = _dict(result.get("thread"))
        found_id = decode_name(result.get("sessionId")) or decode_name(thread.get("id"))
        session_id = (requested_id or found_id) if resumed else (found_id or requested_id)
        session = self._sessions.get(requested_id) if resumed else None
        prior = None
        if session is not None:
            session.loading = False
            prior = session.user_runs or None
        if failed or session_id is None:
            return
        turns = thread.get("turns")
        if prior is None and resumed and isinstance(turns, list) and turns:
            prior = len(turns)
        self._session(session_id)
        events.append(
            MarkerObserved(
                Marker.SESSION_INIT_DONE,
                t_ns,
                session_id=session_id,
                session_init_source=SessionInitSource.SESSION_RESULT,
            )
        )
        events.append(SessionObserved(session_id, resumed=resumed, prior_turns=prior))
        model = decode_name(_dict(result.get("models")).get("currentModelId")) or decode_name(
            result.get("model")
        )
        if model is not None:
            events.append(AgentInfo(model=model))

    # --- notifications ---------------------------------------------------------------

    def _on_notification(
        self, method: str, params: dict[str, Any], t_ns: int, events: list[Event]
    ) -> None:
        session_id = _session_param(params)
        if session_id is None and any(params.get(k) is not None for k in _SESSION_KEYS):
            # It names a session, by no usable id (a number, "", a list): it cannot be
            # attributed, not even to the only session in flight.
            return
        if method == "session/update":
            self._on_session_update(session_id, _dict(params.get("update")), t_ns, events)
        elif method in _APP_SERVER_DELTAS:
            self._on_app_server_delta(method, session_id, params.get("delta"), t_ns, events)
        elif method == "turn/completed":
            named = self._sessions.get(session_id)
            if named is not None and named.superseded:
                # The oldest superseded turn is complete (its run ended at the next prompt).
                named.superseded.pop(0)
                return
            session_id, session = self._in_flight(session_id)
            if session is not None:
                status = _dict(params.get("turn")).get("status")
                self._end_turn(
                    session,
                    session_id,
                    t_ns,
                    events,
                    failed=status == "failed",
                    cancelled=status == "interrupted",
                )
        elif method == "thread/tokenUsage/updated":
            usage = _usage(_dict(params.get("tokenUsage")).get("last"), session_id)
            if usage is not None:
                events.append(usage)

    def _on_app_server_delta(
        self, method: str, session_id: str | None, delta: object, t_ns: int, events: list[Event]
    ) -> None:
        if _text(delta) is not None:
            self._mark_token(session_id, _APP_SERVER_DELTAS[method], t_ns, events)
        if self._capture and method == "item/agentMessage/delta":
            self._answer_content(session_id, delta, events)

    def _on_session_update(
        self, session_id: str | None, update: dict[str, Any], t_ns: int, events: list[Event]
    ) -> None:
        kind = update.get("sessionUpdate")
        session = self._sessions.get(session_id)
        if session is not None and session.loading:
            _count_replayed(session, kind)  # history replayed by session/load: never a token
            return
        token_kind = _CHUNK_KINDS.get(str(kind))
        if token_kind is not None:
            content = _dict(update.get("content"))
            if _text(content.get("text")) is not None:
                self._mark_token(session_id, token_kind, t_ns, events)
            if self._capture and kind == "agent_message_chunk" and content.get("type") == "text":
                self._answer_content(session_id, content.get("text"), events)
        elif str(kind) in _MESSAGE_KINDS:
            self._on_whole_message(session_id, str(kind), update.get("content"), t_ns, events)
        elif kind == _STATE_UPDATE:
            self._on_state_update(session_id, update, t_ns, events)
        elif kind == "usage_update":
            usage = _usage(update, session_id)
            if usage is not None:
                events.append(usage)

    def _on_whole_message(
        self, session_id: str | None, kind: str, content: object, t_ns: int, events: list[Event]
    ) -> None:
        """ACP v2 ``agent_message`` / ``agent_thought``: a whole message's blocks at once."""
        blocks = content if isinstance(content, list) else []
        texts = [b.get("text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
        if not any(_text(t) is not None for t in texts):
            return
        self._mark_token(
            session_id, _MESSAGE_KINDS[kind], t_ns, events, FirstTokenGranularity.MESSAGE
        )
        if self._capture and kind == "agent_message":
            for text in texts:
                self._answer_content(session_id, text, events)

    def _on_state_update(
        self, session_id: str | None, update: dict[str, Any], t_ns: int, events: list[Event]
    ) -> None:
        """ACP v2 ``state_update``: ``idle`` ends the session's turn.

        ``stopReason`` says how; from the first one on, the session's prompt results only
        accept prompts.
        """
        named = self._sessions.get(session_id)
        if named is not None:
            named.state_updates = True
        if update.get("state") != "idle":
            return
        session_id, session = self._in_flight(session_id)
        if session is None:
            return
        usage = _usage(update.get("usage"), session_id)
        if usage is not None:
            events.append(usage)
        self._end_turn(
            session,
            session_id,
            t_ns,
            events,
            failed=False,
            cancelled=update.get("stopReason") == "cancelled",
        )

    # --- turn state ------------------------------------------------------------------

    def _mark_token(
        self,
        session_id: str | None,
        kind: FirstTokenKind,
        t_ns: int,
        events: list[Event],
        granularity: FirstTokenGranularity = FirstTokenGranularity.DELTA,
    ) -> None:
        session_id, session = self._in_flight(session_id)
        if session is None or session.first_token or session.superseded:
            return
        session.first_token = True
        events.append(
            MarkerObserved(
                Marker.FIRST_TOKEN, t_ns, session_id=session_id, granularity=granularity, kind=kind
            )
        )

    def _answer_content(self, session_id: str | None, value: object, events: list[Event]) -> None:
        """Answer text for the session's turn in flight, attributed as ``firstToken`` is."""
        text = decode_text(value)
        if text is None:
            return
        session_id, session = self._in_flight(session_id)
        if session is None or session.superseded:
            return
        events.append(ContentObserved("assistant", text, session_id=session_id))

    def _end_turn(
        self,
        session: _Session,
        session_id: str | None,
        t_ns: int,
        events: list[Event],
        *,
        failed: bool,
        cancelled: bool,
    ) -> None:
        session.prompt_key = None
        session.first_token = False
        events.append(TurnEnded(t_ns, session_id=session_id, failed=failed, cancelled=cancelled))

    def _in_flight(self, session_id: str | None) -> tuple[str | None, _Session | None]:
        """The session named (or, when none is named, the only one) with a prompt in flight."""
        if session_id is None:
            flying = [(sid, s) for sid, s in self._sessions.items() if s.prompt_key is not None]
            return flying[0] if len(flying) == 1 else (None, None)
        session = self._sessions.get(session_id)
        if session is None or session.prompt_key is None:
            return session_id, None
        return session_id, session

    def _session(self, session_id: str | None) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= _MAX_SESSIONS:
                idle = next(
                    (sid for sid, s in self._sessions.items() if s.prompt_key is None),
                    next(iter(self._sessions)),
                )
                del self._sessions[idle]
            session = self._sessions[session_id] = _Session()
        return session

    def _remember(self, key: _RequestKey, method: str, session_id: str | None) -> None:
        self._pending.pop(key, None)
        if len(self._pending) >= _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._pending[key] = (method, session_id)

    def _refresh(self) -> None:
        self._awaiting = any(s.awaiting for s in self._sessions.values())
