"""Driving a real tracker with timed reads, outside any process: the adapter fuzz kit.

Shared by the adapter fuzz tests and the content-capture tests: :func:`run_reads` feeds
``(stream, bytes, t_ns)`` reads to a :class:`ProcessTracker` through a :class:`Spy` on
the family's adapter (or a plugin-style one such as :class:`NeverEndingAcp`), then EOF
and exit, and returns the :class:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, cast

import attrs

from ttft_probe._clock import WallAnchor
from ttft_probe._run import CallerContext, ExitInfo, ProcessTracker, RunResult
from ttft_probe.adapters import (
    Adapter,
    AdapterOptions,
    Event,
    MarkerObserved,
    adapter_for,
)
from ttft_probe.agents import resolve_agent
from ttft_probe.record import Marker, RuntimeFamily

ANCHOR = WallAnchor(wall_ns=1_750_000_000_000_000_000, mono_ns=0)
KILLED = -15
"""Exit status of the runs here: a long-lived ACP agent is ended by a signal, and an
abnormal exit makes a request-driven process that saw no prompt still leave one record."""

CLAUDE = RuntimeFamily.CLAUDE_STREAM_JSON
EVENTS = RuntimeFamily.JSON_EVENT_STREAM
ACP = RuntimeFamily.ACP_JSON_RPC
PLAIN = RuntimeFamily.PLAIN

Stream = str
"""``"stdout"`` (the agent's output) or ``"stdin"`` (what the client wrote to the agent)."""
Read = tuple[Stream, bytes]


class InjectedFaultError(RuntimeError):
    """The parser fault a :class:`Spy` raises on purpose."""


class Spy:
    """Forwards to a real adapter and keeps the events it returns; faults on call ``fault_at``.

    The two class variables are those of the wrapped adapter (see :func:`spy_on`); the
    mode flags are the wrapped instance's (Claude Code's SDK mode sets them per instance).
    """

    family: ClassVar[str]
    framing: ClassVar[Literal["lines", "chunks"]]

    def __init__(self, inner: Adapter, fault_at: int | None) -> None:
        self.inner = inner
        self.request_driven = inner.request_driven
        self.tees_stdin = inner.tees_stdin
        self.prompt_first = getattr(inner, "prompt_first", False)
        self.fault_at = fault_at
        self.calls = 0
        self.fault_ns: int | None = None
        self.events: list[Event] = []

    @property
    def session_init_observable(self) -> bool:
        return self.inner.session_init_observable

    @property
    def cli_ready_observable(self) -> bool:
        return bool(getattr(self.inner, "cli_ready_observable", True))

    def _call(self, method: Callable[..., Sequence[Event]], *args: Any) -> list[Event]:
        self.calls += 1
        if self.calls == self.fault_at:
            self.fault_ns = args[-1]
            raise InjectedFaultError("injected parser fault")
        events = list(method(*args))
        self.events.extend(events)
        return events

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        return self._call(self.inner.feed_stdout, data, t_ns)

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:
        return self._call(self.inner.feed_stdin, line, t_ns)

    def close(self, t_ns: int) -> list[Event]:
        return self._call(self.inner.close, t_ns)

    def model_request(self, t_ns: int) -> list[Event]:
        return self._call(self.inner.model_request, t_ns)

    def line_filter(self) -> tuple[bytes, ...] | None:
        """The wrapped adapter's line filter: the tracker skips lines just as in a run.

        None while a fault is planned: ``fault_at`` counts one call per line.
        """
        inner = getattr(self.inner, "line_filter", None)
        if inner is None or self.fault_at is not None:
            return None
        return cast("tuple[bytes, ...] | None", inner())


_SPY_CLASSES: dict[str, type[Spy]] = {}


def spy_on(inner: Adapter, fault_at: int | None = None) -> Spy:
    cls = _SPY_CLASSES.get(inner.family)
    if cls is None:
        attrs_ = {"family": inner.family, "framing": inner.framing}
        cls = _SPY_CLASSES[inner.family] = cast("type[Spy]", type("Spied", (Spy,), attrs_))
    return cls(inner, fault_at)


@attrs.define
class Outcome:
    results: list[RunResult]
    spy: Spy
    eof_ns: int
    exit_ns: int

    def only(self) -> RunResult:
        assert len(self.results) == 1, self.results
        return self.results[0]

    def events_of(self, marker: Marker) -> list[MarkerObserved]:
        return [e for e in self.spy.events if isinstance(e, MarkerObserved) and e.marker is marker]


def run_reads(
    family: RuntimeFamily,
    reads: Sequence[tuple[Stream, bytes, int]],
    *,
    options: AdapterOptions | None = None,
    fault_at: int | None = None,
    returncode: int = KILLED,
    adapter: Adapter | None = None,
    capture_content: bool = False,
) -> Outcome:
    """Feed timed reads (``t_ns`` increasing) to a tracker, then EOF and exit after the last.

    ``adapter``: drive this one (a plugin-style test adapter) instead of the family's own.
    ``capture_content``: the run's content capture, for the tracker and the family's adapter.
    """
    if adapter is not None:
        inner = adapter
    else:
        opts = attrs.evolve(options or AdapterOptions(), capture_content=capture_content)
        inner = adapter_for(family.value, opts)
    spy = spy_on(inner, fault_at)
    tracker = ProcessTracker(
        agent=resolve_agent(["agent"], family=family.value),
        adapter=spy,
        spawn_ns=0,
        anchor=ANCHOR,
        caller=CallerContext(),
        probe_version="fuzz",
        capture_content=capture_content,
    )
    results = tracker.results
    last = 0
    for stream, data, t_ns in reads:
        assert t_ns > last
        last = t_ns
        if stream == "stdout":
            tracker.on_stdout(data, t_ns)
        else:
            tracker.on_stdin(data, t_ns)
    tracker.on_stdout_eof(last + 1)
    tracker.on_exit(ExitInfo(t_ns=last + 2, returncode=returncode))
    assert tracker.settled.is_set()
    return Outcome(results, spy, last + 1, last + 2)


def timed(reads: Sequence[Read]) -> list[tuple[Stream, bytes, int]]:
    """One read per item, at t = 1, 2, 3, … ns."""
    return [(stream, data, t) for t, (stream, data) in enumerate(reads, start=1)]


class NeverEndingAcp:
    """A plugin-style request-driven adapter that never ends a turn: each stdin line is a
    prompt for session ``S``, each stdout line a token (tests subclass it)."""

    family: ClassVar[str] = ACP
    framing: ClassVar[Literal["lines", "chunks"]] = "lines"
    request_driven: ClassVar[bool] = True
    tees_stdin: ClassVar[bool] = True
    session_init_observable = True

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        return [MarkerObserved(Marker.FIRST_TOKEN, t_ns, session_id="S")]

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:
        return [MarkerObserved(Marker.PROMPT_SENT, t_ns, session_id="S")]

    def close(self, t_ns: int) -> list[Event]:
        return []

    def model_request(self, t_ns: int) -> list[Event]:
        return []
