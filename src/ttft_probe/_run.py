"""Run state: the threaded shell around a :class:`~ttft_probe.turns.TurnAssembler`.

One :class:`ProcessTracker` per agent process. It is fed from the pump threads (stdout,
stdin, stderr) and the provider observer, orders their arrivals under one lock, splits
lines, calls the adapter and hands the adapter's events to its assembler, which holds the
whole turn/session state machine. Each turn the assembler closes goes to ``submit`` as a
:class:`PendingRun`; the recorder thread then does everything slow, in order: the
identity lookup in the store's history, building the :class:`~ttft_probe.record.RunRecord`,
finishing the spans, storing (:class:`RunBuilder`). No store access, and no wait on another
thread, happens while the tracker's lock is held, so the probe never delays the bytes it
forwards. The tracker never raises into its callers.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ttft_probe._clock import monotonic_ns
from ttft_probe._prespawn import Arrival
from ttft_probe.adapters._base import Adapter, Event, LineSplitter
from ttft_probe.record import MarkerTimes, ObserverStatus, PrefixStatus, RunRecord
from ttft_probe.turns import ClosedTurn, ExitInfo, TurnAssembler
from ttft_probe.waterfall import ModelRequest, RequestKind, Section, compare_prefix, salted

if TYPE_CHECKING:
    from ttft_probe._clock import WallAnchor
    from ttft_probe.agents import ResolvedAgent
    from ttft_probe.content import CapturedContent
    from ttft_probe.telemetry import RunSpan, Telemetry
    from ttft_probe.waterfall import RequestUsage

__all__ = [
    "CallerContext",
    "ExitInfo",
    "History",
    "PendingRun",
    "Prefixes",
    "ProcessTracker",
    "RunBuilder",
    "RunResult",
]

_log = logging.getLogger("ttft_probe")

History = Callable[[str], tuple[int, str | None]]
"""Looks up a session's earlier stored runs: ``(count, conversation_id)``; may block."""
Prefixes = Callable[[str], tuple[bytes, tuple["Section", ...] | None]]
"""Looks up a conversation's latest stored prompt prefix: ``(salt, salted digests | None)``;
may block."""


@attrs.frozen
class CallerContext:
    """What the caller says about the run(s); ``None`` means "infer it"."""

    conversation_id: str | None = None
    turn_ordinal: int | None = None
    session_resumed: bool | None = None


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
    requests: tuple[ModelRequest, ...] | None = None
    """The run's model requests (the waterfall); only with the provider observer."""
    prefix: tuple[str, tuple[Section, ...]] | None = attrs.field(default=None, repr=False)
    """``(conversation_id, salted section digests)`` of the run's first generation request,
    the conversation's prefix for its next turn."""


@attrs.frozen
class _Identity:
    conversation_id: str | None
    session_id: str | None
    turn_ordinal: int | None
    session_resumed: bool


class RunBuilder:
    """Turns one process's closed turns into records; used by one thread (the recorder's).

    Args:
        agent: The resolved agent (name, family, resume flags).
        caller: Caller-supplied conversation id, turn ordinal, resumed flag.
        anchor: Wall-clock anchor taken at spawn; ``started_at`` derives from it.
        probe_version: Goes into every record.
        request_driven: The adapter's ``request_driven``.
        prompt_first: The assembler's ``prompt_first``.

    ``observer`` / ``observer_error`` say whether the provider observer runs for the
    process (set before its first turn closes).
    """

    def __init__(
        self,
        *,
        agent: ResolvedAgent,
        caller: CallerContext,
        anchor: WallAnchor,
        probe_version: str,
        request_driven: bool,
        prompt_first: bool,
    ) -> None:
        """See the class docstring."""
        self.agent = agent
        self.observer = ObserverStatus.OFF
        self.observer_error: str | None = None
        self._caller = caller
        self._anchor = anchor
        self._version = probe_version
        self._request_driven = request_driven
        self._prompt_first = prompt_first
        self._history_cache: tuple[int, str | None] | None = None
        self._prefixes: dict[str, tuple[Section, ...]] = {}  # this process's latest, salted
        self._salt: bytes | None = None

    def build(
        self,
        turn: ClosedTurn,
        span: RunSpan | None,
        history: History | None,
        prefixes: Prefixes | None = None,
    ) -> RunResult:
        """The run of ``turn``: identity, record, then its spans finished.

        ``history`` is asked only for a resumed session, ``prefixes`` only with the observer
        for a conversation this process has no earlier turn of (both may block: call this
        from the recorder thread, after the process's earlier runs were stored).
        """
        who = self.identity(turn, history)
        cache, prefix = self._cache_fields(turn, who.conversation_id, prefixes)
        usage = turn.usage
        reported = turn.reported
        record = RunRecord(
            run_id=str(uuid.uuid4()),
            conversation_id=who.conversation_id,
            session_id=who.session_id,
            turn_ordinal=who.turn_ordinal,
            session_resumed=who.session_resumed,
            process_reused=turn.process_reused,
            agent=self.agent.name,
            runtime_family=self.agent.family,
            agent_version=turn.agent_version,
            model=turn.model,
            status=turn.status,
            exit_code=turn.exit_code,
            signal=turn.signal,
            **attrs.asdict(turn.segments, recurse=False),
            session_init_source=turn.session_init_source,
            first_token_granularity=turn.first_token_granularity,
            first_token_kind=turn.first_token_kind,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            agent_reported_ttft_ms=reported.ttft_ms if reported else None,
            agent_reported_time_to_request_ms=reported.time_to_request_ms if reported else None,
            agent_reported_duration_api_ms=reported.duration_api_ms if reported else None,
            adapter_error=turn.adapter_error,
            observer_status=self.observer,
            observer_error=self.observer_error,
            provider_first_byte_ms=turn.provider_first_byte_ms,
            cli_forward_ms=turn.cli_forward_ms,
            **cache,
            trace_id=span.trace_id_hex if span else None,
            span_id=span.span_id_hex if span else None,
            parent_span_id=span.parent_span_id_hex if span else None,
            probe_version=self._version,
            started_at=_iso(self._anchor.wall_ns_at(turn.times.start_ns)),
        )
        observed = self.observer is ObserverStatus.ON
        if span is not None:
            try:
                span.finish(record, turn.times, content=turn.content,
                            requests=turn.requests if observed else ())
            except Exception:  # noqa: BLE001 - telemetry never reaches the run
                _log.warning("could not finish the run span", exc_info=True)
        return RunResult(
            record=record,
            times=turn.times,
            needs_span_delivery=span is not None and span.needs_delivery,
            content=turn.content,
            requests=turn.requests if observed else None,
            prefix=prefix,
        )

    def _cache_fields(
        self, turn: ClosedTurn, conversation_id: str | None, prefixes: Prefixes | None
    ) -> tuple[dict[str, Any], tuple[str, tuple[Section, ...]] | None]:
        """The record's request and prompt-cache fields (DESIGN §10), and the prefix to keep.

        All ``None`` without the observer. The turn's first generation request is the first
        ``generation`` of its waterfall (side calls never are).
        """
        if self.observer is not ObserverStatus.ON:
            return {}, None
        requests = turn.requests
        first = next((r for r in requests if r.kind is RequestKind.GENERATION), None)
        usage = first.usage if first is not None else None
        fields: dict[str, Any] = {
            "model_request_count": len(requests),
            "first_request_bytes": first.request_bytes if first is not None else None,
        }
        if usage is not None:
            fields |= {
                "first_request_input_tokens": usage.input_tokens,
                "first_request_cache_read_tokens": usage.cache_read_tokens,
                "first_request_cache_write_tokens": usage.cache_write_tokens,
                "first_request_uncached_tokens": usage.uncached_tokens,
            }
        if first is None or first.sections is None:
            return fields | {"prefix_status": PrefixStatus.UNAVAILABLE}, None
        if conversation_id is None:
            return fields | {"prefix_status": PrefixStatus.NO_PREVIOUS}, None
        found = self._previous_prefix(conversation_id, prefixes)
        if found is None:  # the store could not be read: no comparison, nothing kept
            return fields | {"prefix_status": PrefixStatus.UNAVAILABLE}, None
        salt, previous = found
        current = salted(first.sections, salt)
        check = compare_prefix(previous, current)
        self._prefixes[conversation_id] = current
        fields |= {
            "prefix_status": check.status,
            "prefix_break": check.first_break,
            "prefix_reused_bytes": check.reused_bytes,
        }
        return fields, (conversation_id, current)

    def _previous_prefix(
        self, conversation_id: str, prefixes: Prefixes | None
    ) -> tuple[bytes, tuple[Section, ...] | None] | None:
        """The salt and the conversation's previous prefix: this process's, else the store's.

        Without a store the salt is made here, and turns compare within this process only.
        ``None`` when the store could not be read (busy, locked): a salt made up then would
        not match the install's, and every later comparison would read as broken.
        """
        known = self._prefixes.get(conversation_id)
        stored = None
        if prefixes is not None and (self._salt is None or known is None):
            try:
                salt, stored = prefixes(conversation_id)
            except LookupError:  # no store: compare within this process
                salt = None
            except Exception:  # noqa: BLE001 - the store is advisory here
                _log.debug("the stored prompt prefix could not be read", exc_info=True)
                return None
            self._salt = self._salt or salt
        if self._salt is None:
            self._salt = os.urandom(32)
        return self._salt, known if known is not None else stored

    def identity(self, turn: ClosedTurn, history: History | None) -> _Identity:
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
            sess = turn.session
            resumed = bool(sess and sess.resumed)
            ordinal = None
            if sess is not None and sess.resumed is False:
                ordinal = sess.prompts
            elif sess is not None and sess.prior_turns is not None:
                ordinal = sess.prior_turns + sess.prompts
        else:
            resumed = self.agent.resumed
            ordinal = None if resumed else 1
        conversation = caller.conversation_id
        if resumed and history is not None:
            lookup = self.agent.resume_session_id or sid
            if lookup is not None:
                earlier, conv = self._earlier_runs(lookup, history)
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

    def _earlier_runs(self, session_id: str, history: History) -> tuple[int, str | None]:
        """The store's runs of ``session_id`` and its conversation id: ``(0, None)`` if none.

        A ``prompt_first`` process looks up once, before its first turn is stored, so its
        own turns never count as earlier ones.
        """
        if self._prompt_first and self._history_cache is not None:
            return self._history_cache
        try:
            found = history(session_id)
        except Exception:  # noqa: BLE001 - the store is advisory here
            found = (0, None)
        if self._prompt_first:
            self._history_cache = found
        return found


@attrs.define
class PendingRun:
    """A closed turn on its way to the recorder thread, which builds and stores it."""

    turn: ClosedTurn
    span: RunSpan | None
    builder: RunBuilder
    settle: Callable[[RunResult | None], None]
    settled: bool = attrs.field(default=False, init=False)
    """Whether it was handed back to its process (built or not)."""

    def build(
        self, history: History | None, prefixes: Prefixes | None = None
    ) -> RunResult | None:
        """Build the run (see :meth:`RunBuilder.build`) and hand it to its tracker.

        Returns ``None`` (logged) if building failed; the tracker still counts it settled.
        """
        result: RunResult | None = None
        try:
            result = self.builder.build(self.turn, self.span, history, prefixes)
        except Exception:  # noqa: BLE001 - a faulty build loses this record, not the run
            _log.warning("could not build the run's record", exc_info=True)
        self.settled = True
        try:
            self.settle(result)
        except Exception:  # noqa: BLE001 - the recorder thread must live on
            _log.warning("could not hand the run back to its process", exc_info=True)
        return result


class ProcessTracker:
    """All runs of one agent process. Thread-safe; never raises into its callers.

    Args:
        agent: The resolved agent (name, family, resume flags).
        adapter: The family adapter; disabled for the rest of the process if it raises.
        spawn_ns: Monotonic ns just before the spawn (``processSpawned``).
        anchor: Wall-clock anchor taken at spawn; ``started_at`` derives from it.
        caller: Caller-supplied conversation id, turn ordinal, resumed flag.
        submit: Receives each closed turn as a :class:`PendingRun` (called with the
            tracker's lock released); whoever receives it calls :meth:`PendingRun.build`,
            normally the recorder thread. ``None``: each run is built at once, on the
            calling thread, without store history (replaying a transcript, tests).
        probe_version: Goes into every record.
        telemetry: Starts the OTel spans; ``None`` for no telemetry.
        capture_content: Keep the prompt and answer text the adapter reports on each run;
            the adapter must have been built with ``AdapterOptions(capture_content=True)``.
        trace_ids: (trace id, span id) of the first run's root span when they were drawn
            before the spawn and already handed to the child (:mod:`ttft_probe._prespawn`).

    Attributes:
        results: The built runs, in the order their turns closed.
        settled: Set once the process exited and every one of its runs was built.
    """

    def __init__(
        self,
        *,
        agent: ResolvedAgent,
        adapter: Adapter,
        spawn_ns: int,
        anchor: WallAnchor,
        caller: CallerContext,
        submit: Callable[[PendingRun], None] | None = None,
        probe_version: str,
        telemetry: Telemetry | None = None,
        capture_content: bool = False,
        trace_ids: tuple[int, int] | None = None,
    ) -> None:
        """See the class docstring."""
        self.agent = agent
        self._adapter: Adapter | None = adapter
        request_driven = adapter.request_driven
        self.tees_stdin = adapter.tees_stdin
        self._lines = adapter.framing == "lines"
        self._assembler = TurnAssembler(
            spawn_ns=spawn_ns,
            request_driven=request_driven,
            prompt_first=bool(getattr(adapter, "prompt_first", False)),
            session_init_observable=adapter.session_init_observable,
            cli_ready_observable=lambda: bool(getattr(adapter, "cli_ready_observable", True)),
            capture_content=capture_content,
        )
        self._builder = RunBuilder(
            agent=agent,
            caller=caller,
            anchor=anchor,
            probe_version=probe_version,
            request_driven=request_driven,
            prompt_first=self._assembler.prompt_first,
        )
        self._anchor = anchor
        self._submit = submit or _build_now
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()  # keeps submissions in closing order
        self._arrivals: collections.deque[Arrival] = collections.deque()
        self._out_split = LineSplitter()
        self._in_split = LineSplitter()
        self._spans: dict[int, RunSpan | None] = {0: self._start_span(spawn_ns, trace_ids)}
        self._spans_started = 1
        self._pending: list[PendingRun] = []
        self._unsettled = 0
        self.results: list[RunResult] = []
        self.settled = threading.Event()
        self._on_settled: list[Callable[[], None]] = []

    @property
    def traceparent(self) -> str | None:
        """W3C ``traceparent`` of the first run's root span, to hand to the child."""
        span = self._spans.get(0)
        return None if span is None else span.traceparent

    def _start_span(self, start_ns: int, ids: tuple[int, int] | None = None) -> RunSpan | None:
        if self._telemetry is None:
            return None
        try:
            return self._telemetry.start_run(
                agent=self.agent.name, start_ns=start_ns, anchor=self._anchor, ids=ids
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
        self._hand_over()

    def adopt(self, arrivals: list[Arrival]) -> None:
        """Take reads made before this tracker existed, in arrival order, with their times.

        For an agent spawned first (:mod:`ttft_probe._prespawn`): its pumps queued each read
        with the monotonic time it was read at; the forwarded ones are parsed now, the rest
        when :meth:`passed` says so. Call before any :meth:`arrive`.
        """
        with self._lock:
            self._arrivals.extend(arrivals)
            self._parse_forwarded()
        self._hand_over()

    def on_stdout(self, data: bytes, t_ns: int) -> None:
        """Parse stdout bytes read at ``t_ns`` (single-threaded callers, e.g. asyncio)."""
        with self._lock:
            self._arrivals.append(Arrival("stdout", data, t_ns, forwarded=True))
            self._parse_forwarded()
        self._hand_over()

    def on_stdin(self, data: bytes, t_ns: int) -> None:
        """Parse stdin bytes forwarded at ``t_ns`` (single-threaded callers, e.g. asyncio)."""
        with self._lock:
            self._arrivals.append(Arrival("stdin", data, t_ns, forwarded=True))
            self._parse_forwarded()
        self._hand_over()

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
        self._builder.observer = status
        self._builder.observer_error = error

    def provider_request(
        self,
        request_id: int,
        t_ns: int,
        *,
        generation: bool,
        api: str = "other",
        kind: RequestKind | None = None,
    ) -> None:
        """The observer saw a request reach the provider at ``t_ns`` (monotonic ns).

        Every request joins its turn's waterfall; a generation request may be the turn's
        ``sessionInitDone`` (:meth:`TurnAssembler.provider_request`), which the adapter
        then hears of too.
        """
        if kind is None:
            kind = RequestKind.GENERATION if generation else RequestKind.OTHER
        with self._lock:
            init = self._assembler.provider_request(
                request_id, t_ns, generation=generation, api=api, kind=kind
            )
            if init and self._adapter is not None:
                self._guarded(self._adapter.model_request, t_ns)
        self._hand_over()

    def provider_first_content(self, request_id: int, t_ns: int) -> None:
        """The upstream's first content byte for ``request_id`` arrived at ``t_ns``."""
        with self._lock:
            self._assembler.provider_first_content(request_id, t_ns)

    def provider_body(
        self,
        request_id: int,
        *,
        kind: RequestKind,
        model: str | None,
        has_tools: bool,
        sections: tuple[Section, ...] | None,
    ) -> None:
        """What a forwarded request's body said (an observer ``ProviderRequestBody``)."""
        with self._lock:
            self._assembler.provider_body(
                request_id, kind=kind, model=model, has_tools=has_tools, sections=sections
            )

    def provider_end(
        self,
        request_id: int,
        t_ns: int,
        *,
        status: int | None,
        request_bytes: int | None = None,
        usage: RequestUsage | None = None,
    ) -> None:
        """A request's exchange ended at ``t_ns`` (status, body size, reported usage)."""
        with self._lock:
            self._assembler.provider_end(
                request_id, t_ns, status=status, request_bytes=request_bytes, usage=usage
            )

    def on_stderr(self, t_ns: int) -> None:
        """The agent wrote to stderr at ``t_ns`` (only the first write is recorded)."""
        with self._lock:
            self._assembler.stderr(t_ns)

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
        self._hand_over()

    def on_exit(self, info: ExitInfo) -> None:
        """The process ended: close every open run and hand it over. Idempotent."""
        with self._lock:
            if self._assembler.exited:
                return
            self._closed(self._assembler.exit(info))
            fire = self._unsettled == 0
        if fire:
            self._fire_settled()
        self._hand_over()

    # --- internals -----------------------------------------------------------------

    def _guarded(self, method: Callable[..., Sequence[Event]], *args: object) -> None:
        """Call an adapter method and feed its events; a fault disables the adapter."""
        adapter = self._adapter
        if adapter is None:
            return
        try:
            # Read in here: a plugin's events may be a generator that faults part-way.
            events = list(method(*args))
        except Exception as exc:  # noqa: BLE001 - a parser fault disables the parser only
            self._adapter = None
            error = f"{type(exc).__name__} in the {adapter.family} adapter"
            self._assembler.adapter_failed(error)
            _log.warning("%s; marker parsing is off for the rest of this run", error)
            return
        self._closed(self._assembler.feed(events))

    def _closed(self, turns: list[ClosedTurn]) -> None:
        """Start the spans of turns opened since, and queue the closed ones (lock held)."""
        starts = self._assembler.turn_starts
        for index in range(self._spans_started, len(starts)):
            self._spans[index] = self._start_span(starts[index])
        self._spans_started = len(starts)
        for turn in turns:
            self._unsettled += 1
            span = self._spans.pop(turn.run_index, None)
            self._pending.append(PendingRun(turn, span, self._builder, self._settle))

    def _hand_over(self) -> None:
        """Submit the closed turns in the order they closed, with the lock released."""
        if not self._pending:
            return
        with self._submit_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            for run in pending:
                try:
                    self._submit(run)
                except Exception:  # noqa: BLE001 - a recorder fault never reaches the run
                    _log.warning("could not hand a finished run to the recorder", exc_info=True)
                    if not run.settled:
                        self._settle(None)

    def _settle(self, result: RunResult | None) -> None:
        """A run was built (``None``: lost); called from the recorder thread."""
        with self._lock:
            if result is not None:
                self.results.append(result)
            self._unsettled -= 1
            fire = self._unsettled == 0 and self._assembler.exited
        if fire:
            self._fire_settled()

    def when_settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once :attr:`settled` is set (at once if it is already)."""
        with self._lock:
            if not self.settled.is_set():
                self._on_settled.append(callback)
                return
        callback()

    def _fire_settled(self) -> None:
        with self._lock:
            self.settled.set()
            callbacks, self._on_settled = self._on_settled, []
        for callback in callbacks:
            callback()


def _build_now(run: PendingRun) -> None:
    run.build(None)


def _iso(wall_ns: int) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9, tz=UTC).isoformat(timespec="microseconds")
