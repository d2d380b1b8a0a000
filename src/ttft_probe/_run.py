"""Run state: one :class:`ProcessTracker` per agent process turns adapter events into runs.

A stream agent (one-shot CLI) has exactly one run, from spawn to exit. A request-driven
agent (ACP, app-server, Claude Code in SDK mode) has one run per prompt: the first starts
at spawn, every later one is ``process_reused`` and starts at its prompt (DESIGN §3). A
``prompt_first`` adapter (Claude Code in SDK mode) sets each turn up after its prompt and
serves its prompts one at a time, in order: a prompt sent while a turn is open waits in a
queue, and its turn starts being served when the open one ends. The tracker
is fed from the pump threads (stdout, stdin, stderr) under one lock, never raises into
them, and hands each finished run to ``emit`` (the recorder thread).
"""

from __future__ import annotations

import collections
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import attrs

from ttft_probe._clock import monotonic_ns
from ttft_probe.adapters._base import (
    Adapter,
    AgentInfo,
    AgentReportedTimings,
    ContentObserved,
    Event,
    LineSplitter,
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
    ObserverStatus,
    RunRecord,
    SessionInitSource,
    Status,
    compute_segments,
    ns_to_ms,
)

if TYPE_CHECKING:
    from ttft_probe._clock import WallAnchor
    from ttft_probe.agents import ResolvedAgent
    from ttft_probe.content import CapturedContent, ContentBuffer
    from ttft_probe.telemetry import RunSpan, Telemetry

__all__ = ["CallerContext", "ExitInfo", "ProcessTracker", "RunResult"]

_log = logging.getLogger("ttft_probe")
_ROLES = frozenset({"user", "assistant"})
"""The roles of :class:`ContentObserved` text (``ttft_probe.content.Role``)."""


@attrs.frozen
class CallerContext:
    """What the caller says about the run(s); ``None`` means "infer it"."""

    conversation_id: str | None = None
    turn_ordinal: int | None = None
    session_resumed: bool | None = None


@attrs.frozen
class ExitInfo:
    """How the process ended: its return code (negative = killed by that signal) and why.

    ``cancelled``: the probe forwarded a user's SIGINT/SIGTERM; ``timed_out``: the probe
    ended it at its deadline.
    """

    t_ns: int
    returncode: int | None
    cancelled: bool = False
    timed_out: bool = False


@attrs.frozen
class RunResult:
    """A finished run: the record plus its marker times (monotonic ns) for audit."""

    record: RunRecord
    times: MarkerTimes
    needs_span_delivery: bool = False
    """The run's spans were recorded by ttft_probe's private provider and still have to be
    sent by the durable OTLP sink (an application's provider exports its own)."""
    content: CapturedContent | None = None
    """The run's prompt and answer text; only with the opt-in content capture."""


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
    ended: bool = False
    run_index: int = 0
    failed: bool = False
    cancelled: bool = False
    usage: UsageReported | None = None
    reported: AgentReportedTimings | None = None
    span: RunSpan | None = None
    # Provider observer: generation request id -> (arrival ns, first content ns | None).
    provider: dict[int, tuple[int, int | None]] = attrs.Factory(dict)
    content: ContentBuffer | None = None  # only with content capture


@attrs.define
class Arrival:
    """A chunk read from the agent's stdout or the client's stdin, at ``t_ns`` (monotonic)."""

    stream: Literal["stdout", "stdin"]
    data: bytes
    t_ns: int
    forwarded: bool = False


@attrs.frozen
class _Identity:
    conversation_id: str | None
    session_id: str | None
    turn_ordinal: int | None
    session_resumed: bool


@attrs.define
class _Session:
    init_done_ns: int | None = None
    source: SessionInitSource | None = None
    resumed: bool | None = None
    prior_turns: int | None = None
    prompts: int = 0


class ProcessTracker:
    """All runs of one agent process. Thread-safe; never raises into its callers.

    Args:
        agent: The resolved agent (name, family, resume flags).
        adapter: The family adapter; disabled for the rest of the process if it raises.
        spawn_ns: Monotonic ns just before the spawn (``processSpawned``).
        anchor: Wall-clock anchor taken at spawn; ``started_at`` derives from it.
        caller: Caller-supplied conversation id, turn ordinal, resumed flag.
        emit: Receives each finished run (called with the tracker's lock released).
        probe_version: Goes into every record.
        telemetry: Starts and finishes the OTel spans; ``None`` for no telemetry.
        history: Looks up a resumed session's earlier runs: (turns, conversation_id).
        capture_content: Keep the prompt and answer text the adapter reports
            (:class:`ContentObserved`) on each run; the adapter must have been built with
            ``AdapterOptions(capture_content=True)``. Off: such events are ignored.
    """

    def __init__(
        self,
        *,
        agent: ResolvedAgent,
        adapter: Adapter,
        spawn_ns: int,
        anchor: WallAnchor,
        caller: CallerContext,
        emit: Callable[[RunResult], None],
        probe_version: str,
        telemetry: Telemetry | None = None,
        history: Callable[[str], tuple[int, str | None]] | None = None,
        capture_content: bool = False,
    ) -> None:
        self.agent = agent
        self._adapter: Adapter | None = adapter
        self._request_driven = adapter.request_driven
        self._prompt_first = self._request_driven and getattr(adapter, "prompt_first", False)
        self.tees_stdin = adapter.tees_stdin
        self._init_observable = adapter.session_init_observable
        self._lines = adapter.framing == "lines"
        self._spawn_ns = spawn_ns
        self._anchor = anchor
        self._caller = caller
        self._emit = emit
        self._version = probe_version
        self._telemetry = telemetry
        self._history = history
        self._capture = capture_content
        self._lock = threading.Lock()
        self._arrivals: collections.deque[Arrival] = collections.deque()
        self._out_split = LineSplitter()
        self._in_split = LineSplitter()
        self._adapter_error: str | None = None
        self._cli_ready_ns: int | None = None
        self._first_stderr_ns: int | None = None
        self._model: str | None = None
        self._agent_version: str | None = None
        self._sessions: dict[str | None, _Session] = {}
        self._last_session: str | None = None
        self._turns: dict[str | None, _Turn] = {}
        self._queued: list[_Turn] = []  # prompt_first: prompts waiting for the open turn
        self._history_cache: tuple[int, str | None] | None = None
        self._runs_started = 0
        self._finished = False
        self._observer = ObserverStatus.OFF
        self._observer_error: str | None = None
        self._provider_turn: dict[int, _Turn] = {}
        self._done: list[RunResult] = []
        self.results: list[RunResult] = []
        self._first = _Turn(start_ns=spawn_ns, process_reused=False)
        if telemetry is not None:
            self._first.span = self._start_span(spawn_ns)
        if not self._request_driven:
            self._turns[None] = self._first
            self._runs_started = 1

    @property
    def traceparent(self) -> str | None:
        """W3C ``traceparent`` of the first run's root span, to hand to the child."""
        span = self._first.span
        return None if span is None else span.traceparent

    def _start_span(self, start_ns: int) -> RunSpan | None:
        if self._telemetry is None:
            return None
        try:
            return self._telemetry.start_run(
                agent=self.agent.name, start_ns=start_ns, anchor=self._anchor
            )
        except Exception:  # noqa: BLE001 - telemetry never reaches the run
            _log.warning("could not start the run span; continuing without it", exc_info=True)
            return None

    # --- feeding -------------------------------------------------------------------

    def arrive(self, stream: Literal["stdout", "stdin"], data: bytes) -> Arrival:
        """Timestamp a chunk just read from ``stream``, before it is forwarded.

        The monotonic reading is taken under the tracker's lock and queued in the same
        step, so the queue holds stdout and stdin chunks in the order they truly arrived
        (a client's ``session/prompt`` sent after it read the ``session/load`` result is
        parsed after that result). Call :meth:`passed` once the chunk was forwarded.
        """
        with self._lock:
            arrival = Arrival(stream, data, monotonic_ns())
            self._arrivals.append(arrival)
        return arrival

    def passed(self, arrival: Arrival) -> None:
        """``arrival`` reached its consumer: parse every forwarded chunk, in arrival order.

        A chunk is parsed only after it was forwarded (bytes pass through first); one
        that is still being forwarded holds back the chunks behind it.
        """
        with self._lock:
            arrival.forwarded = True
            self._parse_forwarded()
        self._flush_done()

    def on_stdout(self, data: bytes, t_ns: int) -> None:
        """Parse stdout bytes read at ``t_ns`` (single-threaded callers, e.g. asyncio)."""
        with self._lock:
            self._arrivals.append(Arrival("stdout", data, t_ns, forwarded=True))
            self._parse_forwarded()
        self._flush_done()

    def on_stdin(self, data: bytes, t_ns: int) -> None:
        """Parse stdin bytes forwarded at ``t_ns`` (single-threaded callers, e.g. asyncio)."""
        with self._lock:
            self._arrivals.append(Arrival("stdin", data, t_ns, forwarded=True))
            self._parse_forwarded()
        self._flush_done()

    def _parse_forwarded(self) -> None:
        queue = self._arrivals
        while queue and queue[0].forwarded:
            item = queue.popleft()
            adapter = self._adapter
            if adapter is None:
                continue
            if item.stream == "stdin":
                for line in self._in_split.feed(item.data):
                    self._guarded(adapter.feed_stdin, line, item.t_ns)
            elif self._lines:
                for line in self._stdout_lines(adapter, item.data):
                    self._guarded(adapter.feed_stdout, line, item.t_ns)
            else:
                self._guarded(adapter.feed_stdout, item.data, item.t_ns)

    def _stdout_lines(self, adapter: Adapter, data: bytes) -> list[bytes]:
        """The stdout lines of ``data`` the adapter needs (all, unless it has a line filter)."""
        line_filter = getattr(adapter, "line_filter", None)
        needles = None
        if line_filter is not None:
            try:
                needles = line_filter()
            except Exception:  # noqa: BLE001 - a faulty filter means: every line
                needles = None
        if needles:
            return self._out_split.feed_matching(data, needles)
        return self._out_split.feed(data)

    def set_observer(self, status: ObserverStatus, error: str | None = None) -> None:
        """Record whether the provider observer runs for this process (and why not)."""
        self._observer = status
        self._observer_error = error

    def provider_request(self, request_id: int, t_ns: int, *, generation: bool) -> None:
        """The observer saw a request reach the provider at ``t_ns`` (monotonic ns).

        Generation requests belong to the turn in flight (a long-lived agent's requests
        between turns, e.g. while loading a session, belong to none). For stream agents,
        and each turn of a ``prompt_first`` agent, the first one is ``sessionInitDone``
        (DESIGN §3: "first model-bound request").
        """
        if not generation:
            return
        with self._lock:
            turn = self._turn_in_flight()
            if turn is None:
                return
            first = not turn.provider
            turn.provider[request_id] = (t_ns, None)
            self._provider_turn[request_id] = turn
            if first and (self._prompt_first or not self._request_driven):
                turn.session_init_done_ns = t_ns
                turn.session_init_source = SessionInitSource.MODEL_REQUEST
                adapter = self._adapter
                if adapter is not None:
                    self._guarded(adapter.model_request, t_ns)
        self._flush_done()

    def provider_first_content(self, request_id: int, t_ns: int) -> None:
        """The upstream's first content byte for ``request_id`` arrived at ``t_ns``."""
        with self._lock:
            turn = self._provider_turn.pop(request_id, None)
            if turn is not None and request_id in turn.provider:
                turn.provider[request_id] = (turn.provider[request_id][0], t_ns)

    def _turn_in_flight(self) -> _Turn | None:
        if not self._request_driven:
            return self._turns.get(None)
        waiting = [t for t in self._turns.values() if t.first_token_ns is None]
        return max(waiting, key=lambda t: t.prompt_sent_ns or 0, default=None)

    def on_stderr(self, t_ns: int) -> None:
        """The agent wrote to stderr at ``t_ns`` (only the first write is recorded)."""
        if self._first_stderr_ns is None:
            self._first_stderr_ns = t_ns

    def on_stdout_eof(self, t_ns: int) -> None:
        """Stdout reached EOF: flush a last unterminated line and close the adapter."""
        with self._lock:
            if self._adapter is None:
                return
            adapter = self._adapter
            tail = self._out_split.flush() if self._lines else None
            if tail:
                self._guarded(adapter.feed_stdout, tail, t_ns)
            self._guarded(adapter.close, t_ns)
        self._flush_done()

    def on_exit(self, info: ExitInfo) -> None:
        """The process ended: finish every open run and emit it."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            open_turns = [*self._turns.items(), *((t.session_id, t) for t in self._queued)]
            self._turns.clear()
            self._queued.clear()
            if self._request_driven and self._runs_started == 0 and _abnormal(info):
                # Died before any prompt: one failed run says so.
                open_turns = [(None, self._first)]
            for _key, turn in open_turns:
                if turn.end_ns is None or not self._request_driven:
                    turn.end_ns = info.t_ns
                self._done.append(self._finish(turn, info))
        self._flush_done()

    # --- internals -----------------------------------------------------------------

    def _flush_done(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self.results.extend(done)
        for result in done:
            try:
                self._emit(result)
            except Exception:  # noqa: BLE001 - a sink fault never reaches the run
                _log.warning("could not hand a finished run to the recorder", exc_info=True)

    def _guarded(self, method: Callable[..., Sequence[Event]], *args: object) -> None:
        """Call an adapter method and apply its events; a fault disables the adapter."""
        adapter = self._adapter
        if adapter is None:
            return
        try:
            # Read in here: a plugin's events may be a generator that faults part-way.
            events = list(method(*args))
        except Exception as exc:  # noqa: BLE001 - a parser fault disables the parser only
            self._adapter = None
            self._adapter_error = f"{type(exc).__name__} in the {adapter.family} adapter"
            _log.warning("%s; marker parsing is off for the rest of this run", self._adapter_error)
            return
        self._apply(events)

    def _apply(self, events: Sequence[Event]) -> None:
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

    def _on_report(self, ev: UsageReported | AgentInfo | AgentReportedTimings) -> None:
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

    def _on_prompt(self, ev: MarkerObserved) -> None:
        if not self._request_driven:
            return
        sid = ev.session_id
        if self._prompt_first:
            self._on_queued_prompt(ev)
            return
        if self._runs_started > 0 and sid in self._turns:
            # A new prompt while the session's turn is still open (an adapter that did not
            # end it): that turn ends here, failed, rather than being overwritten and lost.
            self._on_turn_ended(TurnEnded(ev.t_ns, session_id=sid, failed=True))
        if self._runs_started == 0:
            turn = self._first
            sess = self._sessions.get(sid)
            if sess is None and sid is None:  # a prompt naming no session: the one just made
                sess = self._sessions.get(self._last_session)
            if sess is not None:
                turn.session_init_done_ns = sess.init_done_ns
                turn.session_init_source = sess.source
        else:
            turn = _Turn(start_ns=ev.t_ns, process_reused=True)
            turn.span = self._start_span(ev.t_ns)
        turn.run_index = self._runs_started
        self._runs_started += 1
        turn.session_id = sid
        turn.prompt_sent_ns = ev.t_ns
        self._session(sid).prompts += 1
        self._turns[sid] = turn

    def _on_queued_prompt(self, ev: MarkerObserved) -> None:
        """``prompt_first``: a prompt opens a turn, or waits behind the open one."""
        if self._runs_started == 0:
            turn = self._first
        else:
            turn = _Turn(start_ns=ev.t_ns, process_reused=True)
            turn.span = self._start_span(ev.t_ns)
        turn.run_index = self._runs_started
        self._runs_started += 1
        turn.session_id = ev.session_id
        turn.prompt_sent_ns = ev.t_ns
        if ev.session_id in self._turns:
            self._queued.append(turn)
        else:
            self._turns[ev.session_id] = turn

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
        if not self._request_driven:
            # A one-shot run ends at process exit, which brings the exit code.
            return
        turn.end_ns = ev.t_ns
        turn.ended = True
        key = ev.session_id if ev.session_id in self._turns else next(iter(self._turns))
        del self._turns[key]
        if self._queued:
            # The next prompt's turn is served now: the CLI was not ready for it before.
            nxt = self._turns[key] = self._queued.pop(0)
            nxt.cli_ready_ns = ev.t_ns
        self._done.append(self._finish(turn, None))

    def _finish(self, turn: _Turn, info: ExitInfo | None) -> RunResult:
        cli_ready = None if turn.process_reused else self._cli_ready_ns
        # A reused process's run has no set-up of its own, except a prompt_first turn's.
        own_init = self._prompt_first or not turn.process_reused
        ready_observable = self._cli_ready_observable()
        times = MarkerTimes(
            start_ns=turn.start_ns,
            cli_ready_ns=(turn.cli_ready_ns or turn.start_ns)
            if turn.process_reused
            else cli_ready,
            session_init_done_ns=turn.session_init_done_ns if own_init else turn.start_ns,
            prompt_sent_ns=turn.prompt_sent_ns,
            first_token_ns=turn.first_token_ns,
            end_ns=turn.end_ns,
            first_stderr_ns=self._first_stderr_ns if not turn.process_reused else None,
        )
        segs = compute_segments(
            times,
            request_driven=self._request_driven,
            process_reused=turn.process_reused,
            session_init_observable=self._init_observable,
            exited_early=info is not None and cli_ready is None and ready_observable,
            adapter_failed=self._adapter_error is not None and turn.first_token_ns is None,
            prompt_first=self._prompt_first,
            cli_ready_observable=ready_observable,
        )
        who = self._identity(turn)
        usage = turn.usage or UsageReported()
        provider_ms, forward_ms = _provider_timings(turn)
        record = RunRecord(
            run_id=str(uuid.uuid4()),
            conversation_id=who.conversation_id,
            session_id=who.session_id,
            turn_ordinal=who.turn_ordinal,
            session_resumed=who.session_resumed,
            process_reused=turn.process_reused,
            agent=self.agent.name,
            runtime_family=self.agent.family,
            agent_version=self._agent_version,
            model=self._model,
            status=_status(turn, info),
            exit_code=None
            if info is None or info.returncode is None or info.returncode < 0
            else info.returncode,
            signal=None
            if info is None or info.returncode is None or info.returncode >= 0
            else -info.returncode,
            **attrs.asdict(segs, recurse=False),
            session_init_source=turn.session_init_source if own_init else None,
            first_token_granularity=turn.granularity,
            first_token_kind=turn.kind,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            agent_reported_ttft_ms=turn.reported.ttft_ms if turn.reported else None,
            agent_reported_time_to_request_ms=turn.reported.time_to_request_ms
            if turn.reported
            else None,
            agent_reported_duration_api_ms=turn.reported.duration_api_ms if turn.reported else None,
            adapter_error=self._adapter_error,
            observer_status=self._observer,
            observer_error=self._observer_error,
            provider_first_byte_ms=provider_ms,
            cli_forward_ms=forward_ms,
            trace_id=turn.span.trace_id_hex if turn.span else None,
            span_id=turn.span.span_id_hex if turn.span else None,
            parent_span_id=turn.span.parent_span_id_hex if turn.span else None,
            probe_version=self._version,
            started_at=_iso(self._anchor.wall_ns_at(turn.start_ns)),
        )
        content = None
        if self._capture:
            from ttft_probe.content import ContentBuffer  # noqa: PLC0415 - capture only

            content = (turn.content or ContentBuffer()).result()
        if turn.span is not None:
            try:
                turn.span.finish(record, times, content=content)
            except Exception:  # noqa: BLE001 - telemetry never reaches the run
                _log.warning("could not finish the run span", exc_info=True)
        return RunResult(
            record=record,
            times=times,
            needs_span_delivery=turn.span is not None and turn.span.needs_delivery,
            content=content,
        )

    def _cli_ready_observable(self) -> bool:
        """Whether the adapter could see ``cliReady`` (optional attribute; default yes)."""
        adapter = self._adapter
        try:
            return adapter is None or bool(getattr(adapter, "cli_ready_observable", True))
        except Exception:  # noqa: BLE001 - a plugin's faulty property means: observable
            return True

    def _identity(self, turn: _Turn) -> _Identity:
        """conversation_id, session_id, turn_ordinal and session_resumed of a turn."""
        caller = self._caller
        sid = turn.session_id
        first_run = not turn.process_reused
        if self._prompt_first:
            # One conversation per process: its turns in order, after a resumed
            # session's earlier runs (looked up once: this process's own runs are not
            # "earlier" ones, whatever session id the agent gives them).
            resumed = self.agent.resumed
            ordinal: int | None = None if resumed else turn.run_index + 1
        elif self._request_driven:
            sess = self._sessions.get(sid) or _Session()
            resumed = bool(sess.resumed)
            ordinal = None
            if sess.resumed is False:
                ordinal = sess.prompts
            elif sess.prior_turns is not None:
                ordinal = sess.prior_turns + sess.prompts
        else:
            resumed = self.agent.resumed
            ordinal = None if resumed else 1
        conversation = caller.conversation_id
        if resumed and self._history is not None:
            lookup = self.agent.resume_session_id or sid
            if lookup is not None:
                earlier, conv = self._earlier_runs(lookup)
                if ordinal is None and earlier:
                    ordinal = earlier + 1 + (turn.run_index if self._prompt_first else 0)
                conversation = conversation or conv
        if caller.session_resumed is not None and first_run:
            resumed = caller.session_resumed
        if caller.turn_ordinal is not None:
            ordinal = caller.turn_ordinal + turn.run_index
        return _Identity(
            conversation_id=conversation or self.agent.resume_session_id or sid,
            session_id=sid,
            turn_ordinal=ordinal,
            session_resumed=resumed,
        )

    def _earlier_runs(self, session_id: str) -> tuple[int, str | None]:
        """The store's runs of ``session_id`` and its conversation id: ``(0, None)`` if none.

        A ``prompt_first`` process looks up once, before its first turn is stored, so its
        own turns never count as earlier ones.
        """
        if self._prompt_first and self._history_cache is not None:
            return self._history_cache
        assert self._history is not None  # noqa: S101 - the caller checked
        try:
            found = self._history(session_id)
        except Exception:  # noqa: BLE001 - the store is advisory here
            found = (0, None)
        if self._prompt_first:
            self._history_cache = found
        return found


def _abnormal(info: ExitInfo) -> bool:
    return info.returncode != 0 or info.cancelled or info.timed_out


def _status(turn: _Turn, info: ExitInfo | None) -> Status:
    if info is not None and info.timed_out:
        return Status.TIMED_OUT
    if turn.cancelled or (info is not None and info.cancelled):
        return Status.CANCELLED
    if turn.failed:
        return Status.FAILED
    if info is None or (turn.ended and turn.prompt_sent_ns is not None):
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


def _iso(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9, tz=UTC).isoformat(timespec="microseconds")
