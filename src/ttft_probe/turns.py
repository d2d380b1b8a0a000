"""The turn assembler: adapter events in, closed turns out — the turn/session state machine.

:class:`TurnAssembler` is pure, like the adapters: no threads, no clock, no I/O. It is fed
the events an adapter returned (each carrying the monotonic ns at which its bytes
arrived), the provider observer's request times and the process's exit, and returns each
turn as a :class:`ClosedTurn` the moment it ends. The threaded shell
(:class:`ttft_probe._run.ProcessTracker`) only orders the arrivals, splits lines and feeds
it; the record is built from a closed turn later, on the recorder thread.

Which run a marker belongs to (DESIGN §3):

* a **stream** agent (one-shot CLI) has exactly one turn, from spawn to process exit;
  its ``TurnEnded`` (the ``result`` line) only sets the outcome and :attr:`ClosedTurn.ended_ns`;
* a **request-driven** agent (ACP, app-server) has one turn per ``promptSent``: the first
  starts at spawn and gets the process's ``cliReady`` and its session's
  ``sessionInitDone``; every later one is ``process_reused`` and starts at its prompt;
* a **prompt_first** agent (Claude Code in SDK mode) sets each turn up after its prompt
  and serves its prompts one at a time, in order: a prompt sent while a turn is open
  waits in a queue, and its ``cliReady`` is when the open turn ended.

Use it to see how a plugin adapter's events become turns::

    asm = TurnAssembler(spawn_ns=0, request_driven=adapter.request_driven)
    closed = asm.feed(adapter.feed_stdout(line, t_ns))     # zero or more ClosedTurn
    closed += asm.exit(ExitInfo(t_ns=t_exit, returncode=0))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

from ttft_probe.adapters._base import (
    AgentInfo,
    AgentReportedTimings,
    ContentObserved,
    Event,
    MarkerObserved,
    SessionObserved,
    TurnEnded,
    UsageReported,
)
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    MarkerTimes,
    Segments,
    SessionInitSource,
    Status,
    compute_segments,
    ns_to_ms,
)
from ttft_probe.waterfall import ModelRequest, RequestKind

if TYPE_CHECKING:
    from ttft_probe.content import CapturedContent, ContentBuffer
    from ttft_probe.waterfall import RequestUsage, Section

__all__ = ["ClosedTurn", "ExitInfo", "SessionFacts", "TurnAssembler"]

_ROLES = frozenset({"user", "assistant"})
"""The roles of :class:`ContentObserved` text (``ttft_probe.content.Role``)."""


@attrs.frozen
class ExitInfo:
    """How the process ended: its return code (negative = killed by that signal) and why.

    ``t_ns`` is the monotonic ns at which the exit was seen. ``cancelled``: the probe
    forwarded a user's SIGINT/SIGTERM; ``timed_out``: the probe ended it at its deadline;
    ``probe_killed``: the probe's own lead process died (``ttft-probe run`` killed): its
    worker ended the agent and records what was seen until then.
    """

    t_ns: int
    returncode: int | None
    cancelled: bool = False
    timed_out: bool = False
    probe_killed: bool = False


@attrs.frozen
class SessionFacts:
    """What a request-driven agent said about a turn's session, when the turn closed.

    ``resumed``: ``SessionObserved.resumed`` (ACP ``session/load``/``session/resume``,
    app-server ``thread/resume``), ``None`` when nothing said; ``prior_turns``: the user
    turns replayed while loading; ``prompts``: the prompts of this session in this process
    so far (this turn's included).
    """

    resumed: bool | None = None
    prior_turns: int | None = None
    prompts: int = 0


@attrs.frozen
class ClosedTurn:
    """One finished turn: its markers, segments and outcome, before identity is known.

    ``times`` are monotonic ns; ``segments`` are the timing contract applied to them
    (:func:`ttft_probe.record.compute_segments`). ``run_index`` counts the process's turns
    from 0 in the order their prompts came. ``ended_ns`` is the adapter's ``TurnEnded``
    (for a stream agent its ``result`` line, while ``times.end_ns`` is the exit);
    ``session`` is ``None`` except for a request-driven agent that sets a session up once
    (ACP). ``exit_code``/``signal`` are set only on turns closed by the exit.
    """

    run_index: int
    process_reused: bool
    session_id: str | None
    times: MarkerTimes
    segments: Segments
    status: Status
    ended_ns: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    session_init_source: SessionInitSource | None = None
    first_token_granularity: FirstTokenGranularity | None = None
    first_token_kind: FirstTokenKind | None = None
    usage: UsageReported = attrs.field(factory=UsageReported)
    reported: AgentReportedTimings | None = None
    model: str | None = None
    agent_version: str | None = None
    adapter_error: str | None = None
    provider_first_byte_ms: float | None = None
    cli_forward_ms: float | None = None
    session: SessionFacts | None = None
    content: CapturedContent | None = None
    requests: tuple[ModelRequest, ...] = ()
    """The turn's model-bound requests in order of arrival (the waterfall; observer only)."""


@attrs.define
class _Request:
    """A model request being observed (mutable until its turn closes)."""

    request_id: int
    api: str
    kind: RequestKind
    arrival_ns: int
    model: str | None = None
    first_content_ns: int | None = None
    end_ns: int | None = None
    status: int | None = None
    request_bytes: int | None = None
    usage: RequestUsage | None = None
    has_tools: bool = False
    sections: tuple[Section, ...] | None = None
    body_read: bool = False  # its body's report arrived (it may come after the turn closed)


@attrs.define
class _Turn:
    start_ns: int
    process_reused: bool
    session_id: str | None = None
    cli_ready_ns: int | None = None
    session_init_done_ns: int | None = None
    session_init_source: SessionInitSource | None = None
    prompt_sent_ns: int | None = None
    first_token_ns: int | None = None
    granularity: FirstTokenGranularity | None = None
    kind: FirstTokenKind | None = None
    end_ns: int | None = None
    ended_ns: int | None = None
    run_index: int = 0
    failed: bool = False
    cancelled: bool = False
    usage: UsageReported | None = None
    reported: AgentReportedTimings | None = None
    # Provider observer: generation request id -> (arrival ns, first content ns | None).
    provider: dict[int, tuple[int, int | None]] = attrs.Factory(dict)
    requests: dict[int, _Request] = attrs.Factory(dict)  # the waterfall (observer only)
    content: ContentBuffer | None = None  # only with content capture


@attrs.define
class _Session:
    init_done_ns: int | None = None
    source: SessionInitSource | None = None
    resumed: bool | None = None
    prior_turns: int | None = None
    prompts: int = 0


class TurnAssembler:
    """The turns of one agent process, from its adapter's events. Pure; not thread-safe.

    Args:
        spawn_ns: Monotonic ns just before the spawn (``processSpawned``): the first
            turn's start.
        request_driven: Turns start at a prompt the client writes (``Adapter.request_driven``).
        prompt_first: Each turn is set up after its prompt and prompts are served in order
            (the adapter's optional ``prompt_first``; only with ``request_driven``).
        session_init_observable: The adapter can mark ``sessionInitDone`` on its own.
        cli_ready_observable: Asked when a turn closes: whether the adapter could see
            ``cliReady`` (its optional ``cli_ready_observable``; default: yes).
        capture_content: Keep :class:`ContentObserved` text on each turn; off, it is ignored.

    Every method returns the turns it closed, in order. Nothing raises for any sequence
    of events: a marker that belongs to no open turn is dropped.
    """

    def __init__(
        self,
        *,
        spawn_ns: int,
        request_driven: bool,
        prompt_first: bool = False,
        session_init_observable: bool = True,
        cli_ready_observable: Callable[[], bool] = lambda: True,
        capture_content: bool = False,
    ) -> None:
        """See the class docstring."""
        self._request_driven = request_driven
        self._prompt_first = request_driven and prompt_first
        self._init_observable = session_init_observable
        self._ready_observable = cli_ready_observable
        self._capture = capture_content
        self._cli_ready_ns: int | None = None
        self._first_stderr_ns: int | None = None
        self._model: str | None = None
        self._agent_version: str | None = None
        self._adapter_error: str | None = None
        self._sessions: dict[str | None, _Session] = {}
        self._last_session: str | None = None
        self._turns: dict[str | None, _Turn] = {}
        self._queued: list[_Turn] = []  # prompt_first: prompts waiting for the open turn
        self._provider_turn: dict[int, _Turn] = {}
        self._request_turn: dict[int, _Turn] = {}  # every observed request, until it closes
        self._closed: list[ClosedTurn] = []
        self._exited = False
        self._first = _Turn(start_ns=spawn_ns, process_reused=False)
        self._starts: list[int] = [spawn_ns]
        self._runs_started = 0
        if not request_driven:
            self._turns[None] = self._first
            self._runs_started = 1

    @property
    def prompt_first(self) -> bool:
        """Whether turns are set up after their prompts and served in order."""
        return self._prompt_first

    @property
    def turn_starts(self) -> list[int]:
        """Monotonic ns at which each turn started, by run index (the first: the spawn).

        Grows as prompts open turns; a shell starts each turn's span from it.
        """
        return list(self._starts)

    @property
    def exited(self) -> bool:
        """Whether :meth:`exit` was called (every turn is closed then)."""
        return self._exited

    # --- input -----------------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> list[ClosedTurn]:
        """Apply adapter events, in order; returns the turns they closed."""
        for ev in events:
            if isinstance(ev, MarkerObserved):
                self._on_marker(ev)
            elif isinstance(ev, SessionObserved):
                self._on_session(ev)
            elif isinstance(ev, TurnEnded):
                self._on_turn_ended(ev)
            elif isinstance(ev, ContentObserved):
                self._on_content(ev)
            else:
                self._on_report(ev)
        return self._take_closed()

    def adapter_failed(self, error: str) -> None:
        """The adapter raised (``error`` names the fault): markers after it are missing."""
        if self._adapter_error is None:
            self._adapter_error = error

    def stderr(self, t_ns: int) -> None:
        """The agent wrote to stderr at ``t_ns`` (only the first write is kept)."""
        if self._first_stderr_ns is None:
            self._first_stderr_ns = t_ns

    def provider_request(
        self,
        request_id: int,
        t_ns: int,
        *,
        generation: bool = True,
        api: str = "other",
        kind: RequestKind = RequestKind.GENERATION,
    ) -> bool:
        """The observer saw request ``request_id`` reach the provider at ``t_ns``.

        Every request joins the waterfall of the turn in flight, else of the latest open
        turn (a long-lived agent's requests between turns, e.g. while loading a session,
        belong to none). A generation request of the turn in flight also times the model:
        for a stream agent, and each turn of a ``prompt_first`` agent, the first one is
        ``sessionInitDone`` (DESIGN §3: "first model-bound request").

        Returns:
            ``True`` when this request was that ``sessionInitDone``: the shell then tells
            the adapter (``Adapter.model_request``) and feeds back what it returns.
        """
        turn = self._turn_in_flight()
        owner = turn or self._latest_open_turn()
        if owner is not None:
            owner.requests[request_id] = _Request(request_id, api, kind, t_ns)
            self._request_turn[request_id] = owner
        if turn is None or not generation:
            return False
        first = not turn.provider
        turn.provider[request_id] = (t_ns, None)
        self._provider_turn[request_id] = turn
        if first and (self._prompt_first or not self._request_driven):
            turn.session_init_done_ns = t_ns
            turn.session_init_source = SessionInitSource.MODEL_REQUEST
            return True
        return False

    def provider_first_content(self, request_id: int, t_ns: int) -> None:
        """The upstream's first content byte for ``request_id`` arrived at ``t_ns``."""
        turn = self._provider_turn.pop(request_id, None)
        if turn is not None and request_id in turn.provider:
            turn.provider[request_id] = (turn.provider[request_id][0], t_ns)
        request = self._request(request_id)
        if request is not None and request.first_content_ns is None:
            request.first_content_ns = t_ns

    def provider_body(
        self,
        request_id: int,
        *,
        kind: RequestKind,
        model: str | None,
        has_tools: bool,
        sections: tuple[Section, ...] | None,
    ) -> None:
        """What request ``request_id``'s body said (read after it was forwarded)."""
        request = self._request(request_id)
        if request is not None:
            request.kind = kind
            request.model = model or request.model
            request.has_tools = has_tools
            request.sections = sections
            request.body_read = True

    def provider_end(
        self,
        request_id: int,
        t_ns: int,
        *,
        status: int | None,
        request_bytes: int | None = None,
        usage: RequestUsage | None = None,
    ) -> None:
        """Request ``request_id``'s exchange ended at ``t_ns`` with ``status`` and ``usage``."""
        request = self._request(request_id)
        if request is not None:
            request.end_ns = t_ns
            request.status = status
            request.request_bytes = request_bytes
            request.usage = usage

    def _request(self, request_id: int) -> _Request | None:
        turn = self._request_turn.get(request_id)
        return None if turn is None else turn.requests.get(request_id)

    def exit(self, info: ExitInfo) -> list[ClosedTurn]:
        """The process ended: close every open (and queued) turn. Idempotent."""
        if self._exited:
            return []
        self._exited = True
        open_turns = [*self._turns.values(), *self._queued]
        self._turns.clear()
        self._queued.clear()
        if self._request_driven and self._runs_started == 0 and _abnormal(info):
            # Died before any prompt: one failed run says so.
            open_turns = [self._first]
        for turn in open_turns:
            if turn.end_ns is None or not self._request_driven:
                turn.end_ns = info.t_ns
            self._closed.append(self._close(turn, info))
        return self._take_closed()

    # --- the state machine -----------------------------------------------------------

    def _take_closed(self) -> list[ClosedTurn]:
        closed, self._closed = self._closed, []
        return closed

    def _turn_in_flight(self) -> _Turn | None:
        if not self._request_driven:
            return self._turns.get(None)
        waiting = [t for t in self._turns.values() if t.first_token_ns is None]
        return max(waiting, key=lambda t: t.prompt_sent_ns or 0, default=None)

    def _latest_open_turn(self) -> _Turn | None:
        return max(self._turns.values(), key=lambda t: t.prompt_sent_ns or 0, default=None)

    def _turn_for(self, session_id: str | None) -> _Turn | None:
        if not self._request_driven:
            return self._turns.get(None)
        if session_id in self._turns:
            return self._turns[session_id]
        if session_id is None and len(self._turns) == 1:
            return next(iter(self._turns.values()))
        return None

    def _session(self, session_id: str | None) -> _Session:
        return self._sessions.setdefault(session_id, _Session())

    def _on_report(self, ev: object) -> None:
        """What the agent says about itself: usage, model and version, its own timings."""
        if isinstance(ev, UsageReported):
            turn = self._turn_for(ev.session_id)
            if turn is not None:
                turn.usage = ev
        elif isinstance(ev, AgentInfo):
            self._model = ev.model or self._model
            self._agent_version = ev.agent_version or self._agent_version
        elif isinstance(ev, AgentReportedTimings):
            turn = self._turn_for(None)
            if turn is not None:
                turn.reported = ev

    def _on_content(self, ev: ContentObserved) -> None:
        """Append prompt or answer text to its turn's content (capture on only)."""
        if not self._capture or ev.role not in _ROLES or not isinstance(ev.text, str):
            return  # off, or a plugin's event that is not prompt or answer text
        if self._prompt_first and ev.role == "user" and self._queued:
            turn: _Turn | None = self._queued[-1]  # the prompt just queued
        else:
            turn = self._turn_for(ev.session_id)
        if turn is None:
            return
        if turn.content is None:
            from ttft_probe.content import ContentBuffer  # noqa: PLC0415 - capture only

            turn.content = ContentBuffer()
        turn.content.add(ev.role, ev.text)

    def _on_marker(self, ev: MarkerObserved) -> None:
        if ev.marker is Marker.CLI_READY:
            if self._cli_ready_ns is None:
                self._cli_ready_ns = ev.t_ns
            return
        if ev.marker is Marker.SESSION_INIT_DONE:
            if self._prompt_first or not self._request_driven:
                turn = self._turn_for(ev.session_id)
                # The observer's model request, when there is one, wins over init lines.
                if turn is not None and turn.session_init_done_ns is None and not turn.provider:
                    turn.session_init_done_ns = ev.t_ns
                    turn.session_init_source = ev.session_init_source
                return
            sess = self._session(ev.session_id)
            if sess.init_done_ns is None:
                sess.init_done_ns = ev.t_ns
                sess.source = ev.session_init_source
            self._last_session = ev.session_id
            return
        if ev.marker is Marker.PROMPT_SENT:
            self._on_prompt(ev)
            return
        if ev.marker is Marker.FIRST_TOKEN:
            turn = self._turn_for(ev.session_id)
            if turn is not None and turn.first_token_ns is None:
                turn.first_token_ns = ev.t_ns
                turn.granularity = ev.granularity
                turn.kind = ev.kind

    def _open(self, t_ns: int) -> _Turn:
        """The turn a prompt at ``t_ns`` opens: the first one, or a reused process's next."""
        if self._runs_started == 0:
            turn = self._first
        else:
            turn = _Turn(start_ns=t_ns, process_reused=True)
            self._starts.append(t_ns)
        turn.run_index = self._runs_started
        self._runs_started += 1
        turn.prompt_sent_ns = t_ns
        return turn

    def _on_prompt(self, ev: MarkerObserved) -> None:
        if not self._request_driven:
            return
        sid = ev.session_id
        if self._prompt_first:
            turn = self._open(ev.t_ns)
            turn.session_id = sid
            if sid in self._turns:
                self._queued.append(turn)  # served when the open turn ends
            else:
                self._turns[sid] = turn
            return
        if self._runs_started > 0 and sid in self._turns:
            # A new prompt while the session's turn is still open (an adapter that did not
            # end it): that turn ends here, failed, rather than being overwritten and lost.
            self._on_turn_ended(TurnEnded(ev.t_ns, session_id=sid, failed=True))
        if self._runs_started == 0:
            sess = self._sessions.get(sid)
            if sess is None and sid is None:  # a prompt naming no session: the one just made
                sess = self._sessions.get(self._last_session)
            if sess is not None:
                self._first.session_init_done_ns = sess.init_done_ns
                self._first.session_init_source = sess.source
        turn = self._open(ev.t_ns)
        turn.session_id = sid
        self._session(sid).prompts += 1
        self._turns[sid] = turn

    def _on_session(self, ev: SessionObserved) -> None:
        if self._prompt_first:
            # The session the turn in flight runs in (its own system/init names it).
            turn = self._turn_for(None)
            if turn is not None:
                turn.session_id = ev.session_id
            return
        if not self._request_driven:
            turn = self._turns.get(None)
            if turn is not None and turn.session_id is None:
                turn.session_id = ev.session_id
            return
        sess = self._session(ev.session_id)
        if ev.resumed is not None:
            sess.resumed = ev.resumed
        if ev.prior_turns is not None:
            sess.prior_turns = ev.prior_turns

    def _on_turn_ended(self, ev: TurnEnded) -> None:
        turn = self._turn_for(ev.session_id)
        if turn is None:
            return
        turn.failed = turn.failed or ev.failed
        turn.cancelled = turn.cancelled or ev.cancelled
        if turn.ended_ns is None:
            turn.ended_ns = ev.t_ns
        if not self._request_driven:
            # A one-shot run ends at process exit, which brings the exit code.
            return
        turn.end_ns = ev.t_ns
        key = ev.session_id if ev.session_id in self._turns else next(iter(self._turns))
        del self._turns[key]
        if self._queued:
            # The next prompt's turn is served now: the CLI was not ready for it before.
            nxt = self._turns[key] = self._queued.pop(0)
            nxt.cli_ready_ns = ev.t_ns
        self._closed.append(self._close(turn, None))

    def _close(self, turn: _Turn, info: ExitInfo | None) -> ClosedTurn:
        reused = turn.process_reused
        cli_ready = None if reused else self._cli_ready_ns
        # A reused process's run has no set-up of its own, except a prompt_first turn's.
        own_init = self._prompt_first or not reused
        ready_observable = self._cli_ready_observable()
        times = MarkerTimes(
            start_ns=turn.start_ns,
            cli_ready_ns=(turn.cli_ready_ns or turn.start_ns) if reused else cli_ready,
            session_init_done_ns=turn.session_init_done_ns if own_init else turn.start_ns,
            prompt_sent_ns=turn.prompt_sent_ns,
            first_token_ns=turn.first_token_ns,
            end_ns=turn.end_ns,
            first_stderr_ns=None if reused else self._first_stderr_ns,
        )
        segments = compute_segments(
            times,
            request_driven=self._request_driven,
            process_reused=reused,
            session_init_observable=self._init_observable,
            exited_early=info is not None and cli_ready is None and ready_observable,
            adapter_failed=self._adapter_error is not None and turn.first_token_ns is None,
            prompt_first=self._prompt_first,
            cli_ready_observable=ready_observable,
            probe_killed=info is not None and info.probe_killed,
        )
        returncode = None if info is None else info.returncode
        session = None
        if self._request_driven and not self._prompt_first:
            sess = self._sessions.get(turn.session_id) or _Session()
            session = SessionFacts(sess.resumed, sess.prior_turns, sess.prompts)
        content = None
        if self._capture:
            from ttft_probe.content import ContentBuffer  # noqa: PLC0415 - capture only

            content = (turn.content or ContentBuffer()).result()
        provider_ms, forward_ms = _provider_timings(turn)
        for request_id in turn.requests:
            self._request_turn.pop(request_id, None)
        return ClosedTurn(
            run_index=turn.run_index,
            process_reused=reused,
            session_id=turn.session_id,
            times=times,
            segments=segments,
            status=_status(turn, info),
            ended_ns=turn.ended_ns,
            exit_code=None if returncode is None or returncode < 0 else returncode,
            signal=None if returncode is None or returncode >= 0 else -returncode,
            session_init_source=turn.session_init_source if own_init else None,
            first_token_granularity=turn.granularity,
            first_token_kind=turn.kind,
            usage=turn.usage or UsageReported(),
            reported=turn.reported,
            model=self._model,
            agent_version=self._agent_version,
            adapter_error=self._adapter_error,
            provider_first_byte_ms=provider_ms,
            cli_forward_ms=forward_ms,
            session=session,
            content=content,
            requests=_waterfall(turn.requests.values()),
        )

    def _cli_ready_observable(self) -> bool:
        if self._adapter_error is not None:
            return True  # a disabled adapter says nothing either way
        try:
            return bool(self._ready_observable())
        except Exception:  # noqa: BLE001 - a plugin's faulty property means: observable
            return True


def _abnormal(info: ExitInfo) -> bool:
    return info.returncode != 0 or info.cancelled or info.timed_out or info.probe_killed


def _status(turn: _Turn, info: ExitInfo | None) -> Status:  # noqa: PLR0911 - one per cause
    if info is not None and info.probe_killed:
        return Status.FAILED
    if info is not None and info.timed_out:
        return Status.TIMED_OUT
    if turn.cancelled or (info is not None and info.cancelled):
        return Status.CANCELLED
    if turn.failed:
        return Status.FAILED
    if info is None or (turn.ended_ns is not None and turn.prompt_sent_ns is not None):
        return Status.SUCCEEDED
    if turn.prompt_sent_ns is not None:
        # A request-driven turn still open when the process ended did not finish.
        return Status.FAILED
    return Status.SUCCEEDED if info.returncode == 0 else Status.FAILED


def _provider_timings(turn: _Turn) -> tuple[float | None, float | None]:
    """provider_first_byte_ms and cli_forward_ms of a turn (observer only).

    The response that produced the first token is the one whose first content byte came
    last before it (side calls, such as a title or quota request, answer earlier and are
    never printed). provider_first_byte_ms is that request's arrival to that byte;
    cli_forward_ms is that byte to the first token on stdout.
    """
    token = turn.first_token_ns
    answered = [
        (arrival, first)
        for arrival, first in turn.provider.values()
        if first is not None and (token is None or first <= token)
    ]
    if not answered:
        return None, None
    arrival, first = max(answered, key=lambda pair: pair[1] or 0)
    assert first is not None  # noqa: S101 - filtered above
    return ns_to_ms(first - arrival), None if token is None else ns_to_ms(token - first)


def _waterfall(requests: Iterable[_Request]) -> tuple[ModelRequest, ...]:
    """A turn's requests in order of arrival, side generations named.

    A generation whose body offers no tools while another generation of the turn offers
    tools is a side call (``title``: a title or a summary, as claude-agent-acp and opencode
    make). A generation whose body was not read yet when the turn closed keeps its kind.
    """
    ordered = sorted(requests, key=lambda r: (r.arrival_ns, r.request_id))
    tools = any(r.has_tools for r in ordered if r.kind is RequestKind.GENERATION)
    return tuple(
        ModelRequest(
            request_id=r.request_id,
            api=r.api,
            kind=RequestKind.TITLE
            if tools and r.kind is RequestKind.GENERATION and r.body_read and not r.has_tools
            else r.kind,
            arrival_ns=r.arrival_ns,
            model=r.model,
            first_content_ns=r.first_content_ns,
            end_ns=r.end_ns,
            status=r.status,
            request_bytes=r.request_bytes,
            usage=r.usage,
            has_tools=r.has_tools,
            sections=r.sections,
        )
        for r in ordered
    )
