"""Wrap an agent launch: pump its stdio through, timestamp it, and record every run.

Use :class:`Probe` as a context manager that spawns the agent::

    with ttft_probe.Probe(agent="claude_code") as probe:
        proc = probe.popen(["claude", "-p", "hi", "--output-format", "stream-json", "--verbose"],
                           stdout=subprocess.PIPE)
        out, _ = proc.communicate()
    print(probe.records[0].spawn_to_first_token_ms)

or as a decorator of a function that launches the agent and returns the process (a
``subprocess.Popen`` or an ``asyncio.subprocess.Process``; ``async def`` works too)::

    @ttft_probe.Probe(agent="codex_acp")
    async def start_agent() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec("codex-acp", stdin=PIPE, stdout=PIPE)

The process comes back with its ``stdout``/``stderr`` (and, for request-driven families,
``stdin``) replaced by pass-through streams that behave like the originals: every chunk
is handed on before it is parsed, back-pressure is preserved, EOF and exit codes are the
child's own. Each finished run goes to the local store and to ``on_record``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    ParamSpec,
    Self,
    TypeVar,
    cast,
    overload,
)

import attrs

from ttft_probe import _version
from ttft_probe._clock import WallAnchor, monotonic_ns
from ttft_probe._otel_vars import sdk_needed
from ttft_probe._prespawn import (
    Buffer,
    Child,
    Discard,
    ExitWatch,
    Flag,
    Spawned,
    pump,
    readable,
    spawn,
    trace_ids,
    traceparent,
)
from ttft_probe._recorder import Recorder
from ttft_probe._run import CallerContext, ExitInfo, ProcessTracker, RunResult
from ttft_probe.adapters._base import AdapterOptions, adapter_for
from ttft_probe.agents import ResolvedAgent, resolve_agent, tees_stdin
from ttft_probe.errors import ConfigError
from ttft_probe.record import ObserverStatus
from ttft_probe.sinks.outbox import configured_sinks

if TYPE_CHECKING:
    import asyncio
    import subprocess
    from types import TracebackType

    from ttft_probe._prespawn import BoundObserver, Sink
    from ttft_probe._routing import Route
    from ttft_probe.observer import ProviderObserver
    from ttft_probe.record import RunRecord
    from ttft_probe.sinks.store import Store
    from ttft_probe.telemetry import Telemetry

__all__ = ["Probe", "RunOutcome", "TrackedProcess", "probe_of"]

_log = logging.getLogger("ttft_probe")

_CHUNK: Final = 65536
DEFAULT_DRAIN_TIMEOUT_S: Final = 0.2
"""After the child exits, how long (s) to wait for its stdout EOF before finishing the run
(a grandchild may hold the pipe open forever)."""
SETTLE_TIMEOUT_S: Final = 10.0
"""How long :meth:`Probe.run` waits for the recorder to build the runs' records (s); only a
resumed session's history lookup, behind a store locked by another process, takes long."""

P = ParamSpec("P")
T = TypeVar("T")


class TrackedProcess:
    """One agent process under the probe: its tracker, pump threads and exit watcher.

    Attributes:
        tracker: Turns the process's output into runs.
        done: Set when the process has exited and the recorder thread built its runs.
    """

    def __init__(self, tracker: ProcessTracker) -> None:
        """Track a process whose runs ``tracker`` builds."""
        self.tracker = tracker
        self.done = threading.Event()
        self._stdout_eof = Flag()
        self.exit_info: ExitInfo | None = None
        self.cancelled = False
        self.timed_out = False
        self.probe_killed = False
        self._poll: Callable[[], int | None] = lambda: None
        self._observation: _Observation | None = None

    @property
    def results(self) -> list[RunResult]:
        """Finished runs so far (record + marker times)."""
        return list(self.tracker.results)

    # --- sync pumping ------------------------------------------------------------

    def pump(
        self,
        src: int,
        dst: int | None,
        *,
        kind: str,
        close_dst: bool,
        sink: Sink | None = None,
    ) -> None:
        """Copy ``src`` → ``dst`` in a thread, timestamping each read before parsing.

        ``kind`` is ``stdout``, ``stderr`` or ``stdin``. ``dst=None`` discards (the caller
        asked for DEVNULL). When ``dst`` breaks (EPIPE), ``src`` is closed so the writer
        sees the same broken pipe it would have seen without the probe. ``sink``: where
        reads go (default: the tracker; a :class:`~ttft_probe._prespawn.Buffer` when the
        tracker comes after the spawn).
        """
        eof = self._stdout_eof if kind == "stdout" else None
        pump(src, dst, kind=kind, sink=sink or self.tracker, close_dst=close_dst, eof=eof)

    def adopt(self, spawned: Spawned) -> None:
        """Take over an agent spawned first: its buffered reads, then its pumps' reads."""
        self.adopt_buffer(spawned.buffer, spawned.stdout_eof, cast("Child", spawned.child).poll)

    def adopt_buffer(
        self, buffer: Buffer, stdout_eof: Flag, poll: Callable[[], int | None]
    ) -> None:
        """Take over pumps started before the tracker: their reads so far, then each read."""
        self._stdout_eof = stdout_eof
        self.bind(poll)
        buffer.attach(self.tracker.adopt, self.tracker)

    def finish(self, returncode: int | None, t_exit: int, drain_timeout: float) -> None:
        """The child exited at ``t_exit``: wait (bounded) for stdout EOF, then end its runs."""
        self._stdout_eof.wait(drain_timeout)
        info = ExitInfo(
            t_ns=t_exit, returncode=returncode, cancelled=self.cancelled,
            timed_out=self.timed_out, probe_killed=self.probe_killed,
        )  # fmt: skip
        self.exit_info = info
        if self._observation is not None:
            self._observation.drain()  # the last request's body belongs to these runs
        self.tracker.on_exit(info)
        if self._observation is not None:
            self._observation.stop()
        # Done once the recorder thread has built every run of the process, too.
        self.tracker.when_settled(self.done.set)

    def watch_exit(self, pid: int, returncode: Callable[[], int | None], drain: float) -> None:
        """Finish the runs when process ``pid`` exits, from a thread of its own.

        For a process reaped by someone else (an event loop's child watcher): the exit is
        seen on a pidfd (Linux) without reaping it, then ``returncode()`` is polled (up to
        2 s) for the status its reaper read. Without a pidfd, ``returncode()`` is polled.
        """

        def run() -> None:
            t_exit = _wait_pid_exit(pid, returncode)
            code = returncode()
            for _ in range(200):
                if code is not None:
                    break
                time.sleep(0.01)
                code = returncode()
            self.finish(code, t_exit, drain)

        threading.Thread(target=run, name="ttft-probe-exit", daemon=True).start()

    def attach_observer(self, observation: _Observation) -> None:
        """Route the provider observer's events of this process to its tracker."""
        self._observation = observation
        observation.deliver_to(self.tracker)

    def stdout_closed(self) -> None:
        """Stdout is done (or not observed): :meth:`finish` need not wait for its EOF."""
        self._stdout_eof.set()

    def bind(self, poll: Callable[[], int | None]) -> None:
        """Give the tracker the process's ``poll`` (return code or ``None`` while running)."""
        self._poll = poll

    def poll(self) -> int | None:
        """The process's return code if it has exited, else ``None``."""
        return self._poll()


def _wait_pid_exit(pid: int, returncode: Callable[[], int | None]) -> int:
    """Block until ``pid`` exits; the monotonic ns at which that was seen."""
    try:
        fd: int | None = os.pidfd_open(pid)
    except (OSError, AttributeError):  # already reaped, or no pidfd on this platform
        fd = None
    if fd is not None:
        try:
            readable(fd)
        finally:
            os.close(fd)
    else:
        while returncode() is None:
            time.sleep(0.01)
    return monotonic_ns()


def _watch_sync(
    proc: subprocess.Popen[Any],
    tracked: TrackedProcess,
    drain: float,
    exited: ExitWatch | None = None,
) -> None:
    """Finish ``tracked``'s runs when ``proc`` exits (at ``exited``'s time, if watched)."""

    def run() -> None:
        try:
            returncode: int | None = proc.wait()
        except Exception:  # noqa: BLE001 - the watcher must always finish the run
            returncode = proc.returncode
        t_exit = exited.at() if exited is not None else monotonic_ns()
        tracked.finish(returncode, t_exit, drain)

    threading.Thread(target=run, name="ttft-probe-exit", daemon=True).start()


def _mirror_reader(original: IO[Any], fd: int) -> IO[Any]:
    """A file object on ``fd`` that reads like ``original`` (binary/text, buffering)."""
    if isinstance(original, io.TextIOWrapper):
        return io.TextIOWrapper(
            open(fd, "rb", closefd=True), encoding=original.encoding, errors=original.errors
        )
    buffered = not isinstance(original, io.FileIO)
    return open(fd, "rb", buffering=-1 if buffered else 0)


def _mirror_writer(original: IO[Any], fd: int) -> IO[Any]:
    """A file object on ``fd`` that writes like ``original`` (binary/text, buffering)."""
    if isinstance(original, io.TextIOWrapper):
        return io.TextIOWrapper(
            open(fd, "wb", closefd=True),
            encoding=original.encoding,
            errors=original.errors,
            write_through=True,
            line_buffering=original.line_buffering,
        )
    buffered = not isinstance(original, io.FileIO)
    return open(fd, "wb", buffering=-1 if buffered else 0)


def _cmdline(pid: int, wait_s: float = 0.1) -> list[str]:
    """The argv of process ``pid`` as the kernel has it; ``[]`` if it cannot be read.

    Right after a spawn, ``/proc/PID/cmdline`` can still be empty (the child has not
    finished its exec): it is read again, every ms, for up to ``wait_s`` seconds.
    """
    deadline = monotonic_ns() + int(wait_s * 1e9)
    while True:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if argv or monotonic_ns() >= deadline:
            return argv
        time.sleep(0.001)


class Probe:
    """Probe agent launches: a context manager, a decorator, or both.

    Args:
        agent: Agent name for the records (default: inferred from the executable).
        family: Runtime family (default: the agent's, or inferred from the command).
        conversation_id: Conversation the run belongs to (default: the agent's session
            id, or the id of the session it resumes).
        turn_ordinal: 1 for a conversation's first message, 2+ after; later runs in the
            same long-lived process count on from it (default: inferred — resume flags,
            ACP ``session/load`` history, prompts counted within a session, and earlier
            runs of the same session in the store).
        session_resumed: Whether the agent continues an existing session (default:
            inferred from resume flags / ACP ``session/load`` and ``session/resume``).
        store: Where runs are kept: a path to the SQLite file, a :class:`Store`, ``None``
            for the default location (``TTFT_PROBE_HOME`` or the user state dir), or
            ``False`` for no store.
        telemetry: OpenTelemetry spans and metrics: ``True`` (configured from the
            environment; uses the application's providers when set), a ``Telemetry``, or
            ``False``.
        adapter_options: Per-marker regexes for the ``plain`` family.
        on_record: Called with each finished ``RunRecord`` (from a background thread).
        drain_timeout: After the child exits, seconds to wait for its stdout EOF.
        observe_provider: Put the provider observer (DESIGN §6) between the agent and its
            provider: ``True`` for the upstream the agent would use (its base-URL
            variable, codex's config, or the public default), or an upstream URL. It
            times the first model request (``sessionInitDone`` for stream agents) and
            the provider's first content byte (``provider_first_byte_ms``,
            ``cli_forward_ms``). Needs the probe to spawn the agent.
        deliver: Send each stored run to the sinks the environment configures (OTLP,
            PostHog, Langfuse; see :mod:`ttft_probe.sinks.outbox`), from a background
            thread through the store's outbox. ``"detached"``: deliver nothing in this
            process; :meth:`close` hands the outbox to a detached ``ttft-probe flush``
            and waits ``delivery_wait`` s for it (what ``ttft-probe run`` does: it exits
            as soon as its runs are stored). ``False``: queue them in the outbox only,
            for ``ttft-probe flush`` (or a later probe) to deliver.
        capture_content: Keep each run's prompt and answer text, as the agent's streams
            carry them (:mod:`ttft_probe.content`), in the store and in the spans,
            PostHog and Langfuse. Off by default; this is the only switch. Even on, argv
            and the environment are never captured.
        end_with_probe: An agent started by :meth:`run` gets SIGTERM when this process
            dies, by any signal, SIGKILL included (Linux ``PR_SET_PDEATHSIG``; an ACP
            agent would otherwise wait on its stdin for good). ``False`` keeps the agent
            running on, as before. Not for :meth:`popen` and
            :meth:`create_subprocess_exec`: the kernel sends the signal when the *thread*
            that spawned the agent ends, and those return while the agent runs.
            (``ttft-probe run`` itself ends the agent from its worker process.)

    Raises:
        ConfigError: An unknown family or agent/family mismatch (before any spawn).
    """

    def __init__(
        self,
        *,
        agent: str | None = None,
        family: str | None = None,
        conversation_id: str | None = None,
        turn_ordinal: int | None = None,
        session_resumed: bool | None = None,
        store: str | os.PathLike[str] | Store | bool | None = None,
        telemetry: Telemetry | bool = True,
        adapter_options: AdapterOptions | None = None,
        on_record: Callable[[RunRecord], None] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
        observe_provider: bool | str = False,
        deliver: bool | Literal["detached"] = True,
        capture_content: bool = False,
        end_with_probe: bool = True,
    ) -> None:
        """See the class docstring."""
        if turn_ordinal is not None and turn_ordinal < 1:
            raise ConfigError("turn_ordinal must be 1 or more (1 = a conversation's first turn)")
        if family is not None:
            # Validate now: configure loudly, before anything is spawned.
            resolve_agent(["probe-check"], agent=None, family=family)
        self._options: dict[str, Any] = {
            "agent": agent,
            "family": family,
            "conversation_id": conversation_id,
            "turn_ordinal": turn_ordinal,
            "session_resumed": session_resumed,
            "store": store,
            "telemetry": telemetry,
            "adapter_options": adapter_options,
            "on_record": on_record,
            "drain_timeout": drain_timeout,
            "observe_provider": observe_provider,
            "deliver": deliver,
            "capture_content": bool(capture_content),
            "end_with_probe": bool(end_with_probe),
        }
        self.processes: list[TrackedProcess] = []
        specs = configured_sinks() if store is not False else []
        self._recorder = Recorder(
            self._store_opener(store),
            on_record,
            specs,
            deliver=deliver,
            flush_store=_flush_store(store),
            store_path=None if store is False else functools.partial(_store_path, store),
        )
        self.spilled: list[Path] = []
        """Runs :meth:`close` kept in spill files because the store was busy (paths)."""
        self._telemetry: Telemetry | None = None
        # At interpreter exit, runs of processes that already ended still get stored.
        weakref.finalize(self, _settle, self.processes, self._recorder)

    # --- configuration -----------------------------------------------------------

    @staticmethod
    def _store_opener(store: object) -> Callable[[], Store] | None:
        if store is False:
            return None
        from ttft_probe.sinks.store import Store  # noqa: PLC0415 - sqlite3 only when used

        if isinstance(store, Store):
            return lambda: store
        if store is None or store is True:
            return Store
        path = Path(cast("str", store))
        return lambda: Store(path)

    def _get_telemetry(self) -> Telemetry | None:
        option = self._options["telemetry"]
        if option is False:
            return None
        if self._telemetry is None:
            if option is True:
                from ttft_probe.telemetry import Telemetry  # noqa: PLC0415 - lazy OTel

                self._telemetry = Telemetry.from_environment()
            else:
                self._telemetry = cast("Telemetry", option)
            # Import the SDK and pick providers now, not inside the first run's window.
            self._telemetry.prepare()
        return self._telemetry

    def _resolve(self, argv: Sequence[str]) -> ResolvedAgent:
        return resolve_agent(
            argv or [self._options["agent"] or "agent"],
            agent=self._options["agent"],
            family=self._options["family"],
        )

    def _track(
        self,
        argv: Sequence[str],
        spawn_ns: int | None = None,
        observer: _Observation | None = None,
        trace_ids: tuple[int, int] | None = None,
    ) -> TrackedProcess:
        """Build the tracker of one process; ``spawn_ns`` default: now, after all set-up."""
        resolved = self._resolve(argv)
        options = self._options["adapter_options"] or AdapterOptions()
        observed = observer is not None and observer.status is ObserverStatus.ON
        o = self._options
        adapter = adapter_for(
            resolved.family,
            attrs.evolve(
                options,
                provider_observed=observed,
                capture_content=o["capture_content"],
                argv=argv,
            ),
        )
        telemetry = self._get_telemetry()
        anchor = WallAnchor.now()
        if spawn_ns is None:
            spawn_ns = monotonic_ns()
        tracker = ProcessTracker(
            agent=resolved,
            adapter=adapter,
            spawn_ns=spawn_ns,
            anchor=anchor,
            caller=CallerContext(o["conversation_id"], o["turn_ordinal"], o["session_resumed"]),
            submit=self._recorder.submit,
            probe_version=_version.VERSION,
            telemetry=telemetry,
            capture_content=o["capture_content"],
            trace_ids=trace_ids,
        )
        tracked = TrackedProcess(tracker)
        if observer is not None:
            tracker.set_observer(observer.status, observer.error)
            tracked.attach_observer(observer)
        elif o["observe_provider"]:
            tracker.set_observer(
                ObserverStatus.FAILED,
                "the provider observer needs the probe to start the agent "
                "(Probe.popen, Probe.create_subprocess_exec or ttft-probe run)",
            )
        self.processes.append(tracked)
        return tracked

    def _plan(self, argv: Sequence[str], env: Mapping[str, str] | None) -> _Launch:
        """What to spawn a process with, decided before the spawn and without loading much.

        With ``observe_provider``, the provider observer is started first and the agent
        pointed at it; if it cannot start, the agent goes to its provider directly and
        the runs say why (``observer_status="failed"``, ``observer_error``). The child's
        ``TRACEPARENT`` names the run's root span: ids drawn here when the span will be
        ids only; when an OpenTelemetry SDK makes the span, the tracker (and its span) is
        built here, before the spawn, and its ids are the SDK's.
        """
        argv = list(argv)
        child_env = dict(os.environ if env is None else env)
        resolved = self._resolve(argv)
        observation = None
        if self._options["observe_provider"]:
            observation = _Observation.start(
                resolved, child_env, option=self._options["observe_provider"], argv=argv
            )
            if observation.route is not None and observation.url is not None:
                argv, child_env = observation.route.apply(argv, child_env, observation.url)
        tee = tees_stdin(resolved.family, argv)
        if tee is None:  # a plugin family: its adapter says
            tee = bool(adapter_for(resolved.family, AdapterOptions(argv=argv)).tees_stdin)
        launch = _Launch(argv, child_env, tee, observation)
        mode = self._span_ids()
        if mode == "sdk":
            launch.tracked = self._track(argv, observer=observation)
            traceparent_ = launch.tracked.tracker.traceparent
            if traceparent_:
                child_env["TRACEPARENT"] = traceparent_
        elif mode == "own":
            launch.trace_ids = trace_ids()
            child_env["TRACEPARENT"] = traceparent(launch.trace_ids)
        return launch

    def _span_ids(self) -> Literal["sdk", "own"] | None:
        """Who makes the run spans' ids: an OpenTelemetry SDK, ttft_probe, or nobody.

        Decided like :meth:`Telemetry._ids_only <ttft_probe.telemetry.Telemetry>` without
        importing the telemetry when nothing calls for the SDK.
        """
        option = self._options["telemetry"]
        if option is False:
            return None
        plain = (
            option is True
            and self._telemetry is None
            and "opentelemetry.trace" not in sys.modules
            and "opentelemetry.metrics" not in sys.modules
            and not sdk_needed(os.environ)
        )
        if plain:
            return "own"
        telemetry = self._get_telemetry()
        if telemetry is None:
            return None
        if telemetry.sdk_spans:
            return "sdk"
        return "own" if telemetry.makes_own_ids else None

    def _tracked_after_spawn(
        self, launch: _Launch, spawn_ns: int, stdout_eof: Flag, poll: Callable[[], int | None]
    ) -> TrackedProcess:
        """The tracker of a process spawned from ``launch``, taking over its pumps' buffer."""
        tracked = launch.tracked
        if tracked is None:
            tracked = self._track(
                launch.argv,
                spawn_ns=spawn_ns,
                observer=launch.observation,
                trace_ids=launch.trace_ids,
            )
        tracked.adopt_buffer(launch.buffer, stdout_eof, poll)
        return tracked

    def _spawn_failed(self, launch: _Launch) -> None:
        """The spawn raised: record the agent's own failure as a failed run."""
        tracked = launch.tracked or self._track(launch.argv, observer=launch.observation)
        tracked.finish(None, monotonic_ns(), 0)

    # --- results -----------------------------------------------------------------

    @property
    def records(self) -> list[RunRecord]:
        """Every finished run's record, in the order the runs finished.

        A record is built on the probe's background recorder a moment after its turn ends
        (never on the thread that carries the agent's bytes): :meth:`wait`, or leaving the
        ``with`` block, waits for the runs of exited processes; :meth:`flush` for those of
        a process that is still running (a long-lived agent between turns).
        """
        return [r.record for p in self.processes for r in p.results]

    @property
    def results(self) -> list[RunResult]:
        """Every finished run with its marker times (monotonic ns)."""
        return [r for p in self.processes for r in p.results]

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` s until every turn ended so far is built and stored.

        For a process that keeps running between turns (ACP, an SDK's agent): after a
        turn's answer arrived, its record is in :attr:`records` once this returns ``True``.
        """
        return self._recorder.flush(timeout)

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` s for every tracked process to end and its runs to be stored.

        Returns ``True`` when all of them finished in time.
        """
        deadline = monotonic_ns() + int(timeout * 1e9)
        for p in self.processes:
            left = max(0.0, (deadline - monotonic_ns()) / 1e9)
            if not p.done.wait(left):
                return False
        left = max(0.0, (deadline - monotonic_ns()) / 1e9)
        return self._recorder.flush(left)

    def close(self, timeout: float = 5.0, delivery_wait: float = 5.0) -> bool:
        """Store every finished run and flush telemetry (bounded by ``timeout`` s).

        Then wait up to ``delivery_wait`` s for the sinks to confirm; whatever they have
        not confirmed by then stays in the outbox.

        Returns:
            ``False`` when finished runs were still waiting for the store after
            ``timeout`` (another process kept it locked): they are then kept in spill
            files (:attr:`spilled`) beside the store, which the next process that opens
            the store adds to it, exactly once. A store that failed (a read-only or full
            disk) was already logged, once, with where its runs were kept, and does not
            count here.
        """
        written = self._recorder.flush(timeout)
        if not written:
            self.spilled = self._recorder.spill()
        self._recorder.deliver(delivery_wait)
        if self._telemetry is not None and self._options["telemetry"] is True:
            try:
                self._telemetry.shutdown(int(timeout * 1000))
            except Exception:  # noqa: BLE001 - telemetry never reaches the application
                _log.warning("telemetry shutdown failed", exc_info=True)
        return written

    # --- sync --------------------------------------------------------------------

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Spawn the agent like ``subprocess.Popen(args, **kwargs)``, under the probe.

        ``stdout``/``stderr`` keep their meaning (``PIPE``: read them from the returned
        process; ``None``: inherited; a file: written there) — the probe reads the child's
        real pipes and passes every byte on before parsing. For request-driven families
        with ``stdin=PIPE``, what you write is passed on and read for request ids. The
        child gets ``TRACEPARENT``. Exceptions from ``Popen`` itself propagate unchanged.

        Raises:
            ConfigError: ``shell=True`` or a string command (the probe needs the argv).
        """
        if isinstance(args, str | bytes) or kwargs.get("shell"):
            raise ConfigError("pass the agent command as a list of arguments, without shell=True")
        import subprocess  # noqa: PLC0415 - only callers of popen pay for it

        launch = self._plan([os.fspath(a) for a in args], kwargs.get("env"))
        kwargs["env"] = launch.env
        want_out = kwargs.pop("stdout", None)
        want_err = kwargs.pop("stderr", None)
        merged = want_err == subprocess.STDOUT
        spawn_ns = monotonic_ns()
        try:
            proc = subprocess.Popen(
                launch.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                **kwargs,
            )
        except BaseException:
            # The agent's own failure stays its own: record it, then re-raise unchanged.
            self._spawn_failed(launch)
            raise
        # Spawned: the pumps (to the buffer) and the exit stamp first, then the tracker.
        exited = ExitWatch(proc.pid)
        stdout_eof = Flag()
        self._connect_sync(proc, launch, stdout_eof, want_out, None if merged else want_err)
        tracked = self._tracked_after_spawn(launch, spawn_ns, stdout_eof, proc.poll)
        _watch_sync(proc, tracked, float(self._options["drain_timeout"]), exited)
        self._recorder.open_store_early()
        self._recorder.start_delivery()
        return proc

    def attach(
        self, proc: subprocess.Popen[Any], spawn_ns: int | None = None
    ) -> subprocess.Popen[Any]:
        """Probe a process the caller already started with ``stdout=PIPE``.

        ``spawn_ns`` is the monotonic ns just before the spawn (default: now). The
        process's ``stdout``, ``stderr`` and, for request-driven families, ``stdin`` are
        replaced by pass-through streams. A process without a stdout pipe cannot be
        observed: it is returned untouched and a warning is logged.
        """
        t0 = monotonic_ns() if spawn_ns is None else spawn_ns
        if proc.stdout is None:
            _log.warning("the agent was started without stdout=PIPE; ttft_probe cannot observe it")
            return proc
        argv = [os.fspath(a) for a in proc.args] if isinstance(proc.args, list | tuple) else []
        tracked = self._track_attached(argv or _cmdline(proc.pid), t0)
        return proc if tracked is None else self._attach_pipes(proc, tracked)

    def track(self, argv: Sequence[str], *, spawn_ns: int) -> TrackedProcess:
        """Track a process whose streams you feed to the probe yourself.

        For transports whose pipes the probe cannot swap (``claude-agent-sdk`` reads Claude
        Code through anyio streams: see :mod:`ttft_probe.integrations.claude_agent_sdk`).
        Feed ``tracked.tracker``: :meth:`~ttft_probe._run.ProcessTracker.arrive` when bytes
        are read from the agent's stdout (or about to be written to its stdin), then
        :meth:`~ttft_probe._run.ProcessTracker.passed` once they reached their reader;
        ``on_stdout_eof`` at EOF; and end it with :meth:`TrackedProcess.watch_exit` or
        :meth:`TrackedProcess.finish`.

        Args:
            argv: The agent's command line (its family and resume flags are read from it).
            spawn_ns: Monotonic ns just before the spawn (``processSpawned``).

        Raises:
            ConfigError: The family or agent options do not fit the command.
        """
        tracked = self._track(argv, spawn_ns)
        self._recorder.open_store_early()
        self._recorder.start_delivery()
        return tracked

    def _track_attached(self, argv: Sequence[str], spawn_ns: int) -> TrackedProcess | None:
        """Track a process the caller started; ``None`` (logged) if that fails."""
        try:
            return self._track(argv, spawn_ns)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - the caller's process must come back intact
            _log.warning("could not attach the probe", exc_info=True)
            return None

    @staticmethod
    def _connect_sync(
        proc: subprocess.Popen[Any],
        launch: _Launch,
        stdout_eof: Flag,
        want_out: Any,
        want_err: Any,
    ) -> None:
        """Wire the real pipes of a process we spawned to what the caller asked for."""
        assert proc.stdout is not None  # noqa: S101 - we spawned it with PIPE
        real_out = proc.stdout
        real_err = proc.stderr
        sink = launch.buffer
        proc.stdout = Probe._route(sink, real_out, want_out, "stdout", stdout_eof)
        if real_err is not None:
            proc.stderr = Probe._route(sink, real_err, want_err, "stderr", None)
        if launch.tees_stdin:
            Probe._tee_stdin(proc, sink)

    @staticmethod
    def _route(
        sink: Sink, real: IO[Any], want: Any, kind: str, eof: Flag | None
    ) -> IO[Any] | None:
        import subprocess  # noqa: PLC0415 - loaded by popen already

        src = os.dup(real.fileno())
        real.close()
        if want == subprocess.PIPE:
            r, w = os.pipe()
            pump(src, w, kind=kind, sink=sink, close_dst=True, eof=eof)
            return _mirror_reader(real, r)
        if want == subprocess.DEVNULL:
            pump(src, None, kind=kind, sink=sink, close_dst=False, eof=eof)
            return None
        if want is None:
            dst = os.dup(1 if kind == "stdout" else 2)
        elif isinstance(want, int):
            dst = os.dup(want)
        else:
            dst = os.dup(want.fileno())
        pump(src, dst, kind=kind, sink=sink, close_dst=True, eof=eof)
        return None

    def _attach_pipes(
        self, proc: subprocess.Popen[Any], tracked: TrackedProcess
    ) -> subprocess.Popen[Any]:
        drain = float(self._options["drain_timeout"])
        tracked.bind(proc.poll)
        for kind in ("stdout", "stderr"):
            real = getattr(proc, kind)
            if real is None:
                if kind == "stdout":
                    tracked.stdout_closed()
                continue
            src = os.dup(real.fileno())
            r, w = os.pipe()
            tracked.pump(src, w, kind=kind, close_dst=True)
            setattr(proc, kind, _mirror_reader(real, r))
            real.close()
        if tracked.tracker.tees_stdin:
            self._tee_stdin(proc, tracked.tracker)
        _watch_sync(proc, tracked, drain)
        return proc

    @staticmethod
    def _tee_stdin(proc: subprocess.Popen[Any], sink: Sink) -> None:
        """Copy what the caller writes to the agent's stdin through a pump into ``sink``."""
        if proc.stdin is None:
            return
        real = proc.stdin
        dst = os.dup(real.fileno())
        r, w = os.pipe()
        pump(r, dst, kind="stdin", sink=sink, close_dst=True)
        proc.stdin = _mirror_writer(real, w)
        real.close()

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float | None = None,
        spawned: Spawned | None = None,
    ) -> RunOutcome:
        """Run the agent with this process's own stdin/stdout/stderr passed straight through.

        What ``ttft-probe run`` does: the child's stdout and stderr bytes are copied to
        fds 1 and 2 as they arrive (before parsing); its stdin is this process's stdin —
        inherited untouched, or, for request-driven families, copied through so request
        ids can be read. SIGTERM and SIGHUP are forwarded to the child, and SIGINT too
        unless the terminal already delivered it to the child's process group. After
        ``timeout`` seconds (counted from the spawn) the child is terminated (then
        killed) and the run is ``timed_out``.

        The agent is spawned first and the tracker built while it boots: the pumps
        timestamp and queue every read until then (:mod:`ttft_probe._prespawn`). Only when
        the application's OpenTelemetry SDK makes the run's span (its ids go into the
        child's ``TRACEPARENT``) is the tracker built first.

        Args:
            args: The agent command.
            timeout: Seconds after the spawn to end the agent (``None``: never).
            spawned: An agent :func:`ttft_probe._prespawn.start` already spawned from
                ``args`` (``ttft-probe run``'s worker: the lead process pumps, forwards
                signals and applies the timeout), or one :func:`~ttft_probe._prespawn.spawn`
                started; the probe takes it over.

        Returns:
            The child's exit status as a shell reports it (128+N when killed by signal N)
            and the finished runs. Exceptions from spawning (a missing executable) are
            recorded as a failed run and re-raised unchanged.

        A standard fd that is closed in this process (``ttft-probe run -- agent >&-``) is
        closed in the child too, as it would be without the probe: the child gets the
        same EBADF, and that stream is not observed.
        """
        tracked = None
        if spawned is None:
            tracked, spawned = self._spawn_first([os.fspath(a) for a in args])
        spawned.taken = True
        child = cast("Child", spawned.child)
        if tracked is None:
            tracked = self._take_over(spawned)
        if tracked is None:  # the agent runs on untracked, its bytes passing through
            try:
                code = child.wait()
            finally:
                spawned.restore_signals()
            return RunOutcome(_shell_status(code), [])
        self._recorder.open_store_early()
        self._recorder.start_delivery()
        try:
            returncode = _wait(child, tracked, spawned, timeout)
            t_exit = spawned.exited.at() if spawned.exited is not None else monotonic_ns()
        finally:
            spawned.restore_signals()
        tracked.cancelled = tracked.cancelled or spawned.cancelled
        tracked.timed_out = tracked.timed_out or spawned.timed_out
        tracked.probe_killed = spawned.probe_killed
        tracked.finish(returncode, t_exit, float(self._options["drain_timeout"]))
        tracked.done.wait(SETTLE_TIMEOUT_S)  # the recorder thread builds the records
        return RunOutcome(exit_status=_shell_status(returncode), results=tracked.results)

    def _spawn_first(self, argv: list[str]) -> tuple[TrackedProcess | None, Spawned]:
        """Spawn for :meth:`run`: the agent first unless the SDK makes its span (see there)."""
        launch = self._plan(argv, None)
        spawned = Spawned()
        spawned.trace_ids = launch.trace_ids
        spawned.observation = launch.observation
        try:
            spawn(
                launch.argv, launch.env, tees_stdin=launch.tees_stdin, spawned=spawned,
                end_with_parent=self._options["end_with_probe"],
            )  # fmt: skip
        except BaseException:
            self._spawn_failed(launch)
            raise
        if launch.tracked is not None:
            launch.tracked.adopt(spawned)
        return launch.tracked, spawned

    def _take_over(self, spawned: Spawned) -> TrackedProcess | None:
        """Build the tracker of an agent spawned first and hand it the pumps' reads.

        ``None`` (logged) if the tracker cannot be built: nothing of the probe's may stop
        the agent, which then runs on untracked.
        """
        observation = cast("_Observation | None", spawned.observation)
        bound = spawned.observer
        if observation is None and bound is not None:
            observation = _Observation.adopt(bound)
        try:
            tracked = self._track(
                spawned.argv,
                spawn_ns=spawned.spawn_ns,
                observer=observation,
                trace_ids=spawned.trace_ids,
            )
        except Exception:  # noqa: BLE001 - the agent runs on; its bytes still pass through
            _log.warning("could not track the agent; it runs on unobserved", exc_info=True)
            spawned.buffer.attach(lambda _queue: None, Discard())
            return None
        tracked.adopt(spawned)
        return tracked

    # --- asyncio -----------------------------------------------------------------

    async def create_subprocess_exec(
        self, program: str | os.PathLike[str], *args: str | os.PathLike[str], **kwargs: Any
    ) -> asyncio.subprocess.Process:
        """Spawn like ``asyncio.create_subprocess_exec``, under the probe.

        Pass ``stdout=PIPE`` (and ``stdin=PIPE`` for ACP agents) as usual; the returned
        process's streams are pass-through. The child gets ``TRACEPARENT``.
        """
        import asyncio  # noqa: PLC0415 - only async callers pay for asyncio

        launch = self._plan([os.fspath(program), *(os.fspath(a) for a in args)],
                            kwargs.get("env"))  # fmt: skip
        kwargs["env"] = launch.env
        if kwargs.get("stdout") is None:
            kwargs["stdout"] = asyncio.subprocess.PIPE
        spawn_ns = monotonic_ns()
        try:
            proc = await asyncio.create_subprocess_exec(*launch.argv, **kwargs)
        except BaseException:
            self._spawn_failed(launch)
            raise
        # The event loop reads the pipes only once this coroutine yields: no read can
        # come before the tracker, built now, without yielding.
        tracked = launch.tracked or self._track(
            launch.argv, spawn_ns=spawn_ns, observer=launch.observation,
            trace_ids=launch.trace_ids,
        )  # fmt: skip
        self._recorder.open_store_early()
        self._recorder.start_delivery()
        return self._attach_async(proc, tracked)

    def attach_async(
        self, proc: asyncio.subprocess.Process, spawn_ns: int | None = None
    ) -> asyncio.subprocess.Process:
        """Probe an asyncio process the caller started with ``stdout=PIPE``.

        Must be called from the process's event loop. ``spawn_ns``: monotonic ns just
        before the spawn (default: now).
        """
        t0 = monotonic_ns() if spawn_ns is None else spawn_ns
        if proc.stdout is None:
            _log.warning("the agent was started without stdout=PIPE; ttft_probe cannot observe it")
            return proc
        tracked = self._track_attached(_cmdline(proc.pid), t0)
        return proc if tracked is None else self._attach_async(proc, tracked)

    def _attach_async(
        self, proc: asyncio.subprocess.Process, tracked: TrackedProcess
    ) -> asyncio.subprocess.Process:
        import asyncio  # noqa: PLC0415 - only async callers pay for asyncio

        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        tracker = tracked.tracker
        tracked.bind(lambda: proc.returncode)
        for kind in ("stdout", "stderr"):
            real = getattr(proc, kind)
            if real is None:
                if kind == "stdout":
                    tracked.stdout_closed()
                continue
            proxy = asyncio.StreamReader(limit=getattr(real, "_limit", 2**16), loop=loop)
            setattr(proc, kind, proxy)
            tasks.append(loop.create_task(_apump(real, proxy, tracked, kind)))
        if proc.stdin is not None and tracker.tees_stdin:
            proc.stdin = _tee_writer_class()(proc.stdin, tracker)
        drain = float(self._options["drain_timeout"])

        async def watch() -> None:
            try:
                t_exit = await _exited(proc)
            except Exception:  # noqa: BLE001 - the watcher must always finish the run
                t_exit = monotonic_ns()
            returncode = proc.returncode
            if tasks[:1]:
                # Bounded wait for stdout EOF; asyncio.wait leaves the pump running (a
                # grandchild may hold the pipe) and keeps no future of its outcome around.
                await asyncio.wait(tasks[:1], timeout=drain)
            tracked.finish(returncode, t_exit, 0)

        watcher = loop.create_task(watch())
        tasks.append(watcher)
        # Keep the tasks alive for the process's lifetime.
        proc.__dict__.setdefault("_ttft_probe_tasks", []).extend(tasks)
        return proc

    # --- context manager and decorator ----------------------------------------

    def __enter__(self) -> Self:
        """Enter: the probe spawns with :meth:`popen`."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait (bounded) for exited processes' runs to be stored; never raises."""
        _settle(self.processes, self._recorder)

    async def __aenter__(self) -> Self:
        """Enter: the probe spawns with :meth:`create_subprocess_exec`."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait (bounded) for exited processes' runs to be stored; never raises."""
        import asyncio  # noqa: PLC0415 - only async callers pay for asyncio

        # The exit watchers run on this loop: yield to them while they finish.
        for _ in range(100):
            if all(p.done.is_set() or p.poll() is None for p in self.processes):
                break
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(
            None, _settle, self.processes, self._recorder
        )

    def fresh(self) -> Probe:
        """A new probe with the same options (each decorated call gets its own)."""
        return Probe(**self._options)

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function that launches the agent and returns its process.

        Each call gets a fresh probe; the returned process carries it as
        ``proc.ttft_probe`` (see :func:`probe_of`).
        """
        import inspect  # noqa: PLC0415 - only decorators pay for it

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                import asyncio  # noqa: PLC0415 - only async callers pay for asyncio

                probe = self.fresh()
                probe._get_telemetry()  # noqa: SLF001 - set up before the clock starts
                t0 = monotonic_ns()
                result = await fn(*args, **kwargs)
                if isinstance(result, asyncio.subprocess.Process):
                    result = probe.attach_async(result, t0)
                    result.ttft_probe = probe  # type: ignore[attr-defined]
                return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            import subprocess  # noqa: PLC0415 - the caller launched one

            probe = self.fresh()
            probe._get_telemetry()  # noqa: SLF001 - set up before the clock starts
            t0 = monotonic_ns()
            result = fn(*args, **kwargs)
            if isinstance(result, subprocess.Popen):
                result = probe.attach(result, t0)
                result.ttft_probe = probe  # type: ignore[attr-defined]
            return result

        return wrapper


async def _apump(
    real: asyncio.StreamReader, proxy: asyncio.StreamReader, tracked: TrackedProcess, kind: str
) -> None:
    tracker = tracked.tracker
    try:
        while True:
            try:
                data = await real.read(_CHUNK)
            except Exception:  # noqa: BLE001 - a broken pipe ends the stream like EOF
                data = b""
            t = monotonic_ns()
            if not data:
                break
            proxy.feed_data(data)
            if kind == "stdout":
                tracker.on_stdout(data, t)
            else:
                tracker.on_stderr(t)
    finally:
        proxy.feed_eof()
        if kind == "stdout":
            tracker.on_stdout_eof(monotonic_ns())
            tracked.stdout_closed()


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """Wait for the process to exit; return the monotonic ns at which it did.

    ``Process.wait()`` on Python 3.11 also waits for every pipe to close, which never
    happens while a grandchild holds one (npm launchers leave the native agent running
    behind them), so the exit is watched on a pidfd (Linux), else by polling.
    """
    import asyncio  # noqa: PLC0415 - only async callers pay for asyncio

    loop = asyncio.get_running_loop()
    try:
        fd: int | None = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        fd = None
    if fd is not None:
        exited: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    else:
        while proc.returncode is None:  # noqa: ASYNC110 - no pidfd: nothing to wait on
            await asyncio.sleep(0.01)
    t_exit = monotonic_ns()
    for _ in range(400):  # asyncio's child watcher reaps it and sets returncode
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.005)
    return t_exit


@functools.cache
def _tee_writer_class() -> Callable[[asyncio.StreamWriter, ProcessTracker], asyncio.StreamWriter]:
    """The class of a teed stdin writer (built on first use: asyncio is imported lazily)."""
    import asyncio  # noqa: PLC0415 - only async callers pay for asyncio

    class TeeStreamWriter(asyncio.StreamWriter):
        """The agent's stdin as a writer that also hands the probe what the client writes.

        It writes first, then parses. A real ``StreamWriter``, so that clients that check
        for one (the ACP SDK's connections do) accept it; it shares the original's
        transport and protocol.
        """

        def __init__(self, real: asyncio.StreamWriter, tracker: ProcessTracker) -> None:
            protocol, reader, loop = (getattr(real, a) for a in ("_protocol", "_reader", "_loop"))
            super().__init__(real.transport, protocol, reader, loop)
            self._real = real
            self._tracker = tracker

        def write(self, data: bytes | bytearray | memoryview) -> None:
            super().write(data)
            self._tracker.on_stdin(bytes(data), monotonic_ns())

        def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
            for chunk in data:
                self.write(chunk)

        async def wait_closed(self) -> None:
            # The subprocess protocol knows the writer it made, not this one.
            await self._real.wait_closed()

    return TeeStreamWriter


def probe_of(proc: object) -> Probe | None:
    """The probe a decorated launch attached to ``proc``, if any."""
    found = getattr(proc, "ttft_probe", None)
    return found if isinstance(found, Probe) else None


def _flush_store(store: object) -> str | None:
    """The ``--store`` of a detached flush for a ``Probe(store=…)`` (``None``: the default)."""
    if store is None or isinstance(store, bool):
        return None
    from ttft_probe.sinks.store import Store  # noqa: PLC0415 - sqlite3 only when used

    if isinstance(store, Store):
        return str(store.path)
    return os.fspath(cast("str | os.PathLike[str]", store))


def _store_path(store: object) -> Path:
    """The file of a ``Probe(store=…)``: the one given, or the default location."""
    given = _flush_store(store)
    if given is not None:
        return Path(given)
    from ttft_probe.sinks.store import default_store_path  # noqa: PLC0415

    return default_store_path()


def _settle(processes: list[TrackedProcess], recorder: Recorder, timeout: float = 5.0) -> None:
    """Wait for the runs of processes that have exited, then for the store writes."""
    for p in processes:
        # A process still running (a long-lived ACP agent) keeps being tracked.
        if p.poll() is not None:
            p.done.wait(1.0)
    recorder.flush(timeout)


@attrs.frozen
class RunOutcome:
    """What :meth:`Probe.run` returns: the shell-style exit status and the finished runs."""

    exit_status: int
    results: list[RunResult]


def _shell_status(returncode: int | None) -> int:
    """A return code as a shell reports it: 128+N for signal N, 255 when unknown.

    Unknown: the lead process of ``ttft-probe run`` died, and nobody gets this status.
    """
    if returncode is None:
        return 255
    return 128 - returncode if returncode < 0 else returncode


class _Launch:
    """A process about to be spawned: what with, and what is ready for it already."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        tees_stdin: bool,  # noqa: FBT001
        observation: _Observation | None,
    ) -> None:
        self.argv = argv
        self.env = env
        self.tees_stdin = tees_stdin
        self.observation = observation
        self.buffer = Buffer()
        self.tracked: TrackedProcess | None = None
        self.trace_ids: tuple[int, int] | None = None


def _wait(
    child: Child, tracked: TrackedProcess, spawned: Spawned, timeout: float | None
) -> int | None:
    """The child's return code; after ``timeout`` s from the spawn: SIGTERM, 5 s, SIGKILL.

    ``None`` only for an agent taken over from ``ttft-probe run``'s lead process that died
    (the agent's code is then unknown: it was not this process's child).
    """
    if timeout is None:
        return child.wait()
    left = timeout - (monotonic_ns() - spawned.spawn_ns) / 1e9
    code = child.wait(left)
    if code is not None:
        return code
    tracked.timed_out = True
    child.terminate()
    code = child.wait(5)
    if code is not None:
        return code
    child.kill()
    return cast("int", child.wait())


class _Observation:
    """One process's provider observer: its route, proxy URL and event delivery."""

    def __init__(
        self,
        status: ObserverStatus,
        error: str | None = None,
        route: Route | None = None,
        observer: ProviderObserver | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.route = route
        self.url = url
        self._observer = observer
        self._tracker: ProcessTracker | None = None
        self._early: list[object] = []
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        agent: ResolvedAgent,
        env: Mapping[str, str],
        *,
        option: bool | str,
        argv: Sequence[str] = (),
    ) -> _Observation:
        from ttft_probe._routing import route_for  # noqa: PLC0415 - only with the observer

        route = route_for(agent, env, argv)
        if route is None:
            return cls(
                ObserverStatus.FAILED,
                f"no known provider base URL for agent {agent.name!r}; "
                "pass --agent for a known agent",
            )
        upstream = option if isinstance(option, str) else route.upstream
        self = cls(ObserverStatus.ON, route=route)
        try:
            from ttft_probe.observer import ProviderObserver  # noqa: PLC0415 - only when asked

            observer = ProviderObserver(upstream, self._on_event)
            self.url = observer.start()
        except Exception as exc:  # noqa: BLE001 - the agent then goes to its provider directly
            _log.warning("the provider observer could not start (%s); running without it", exc)
            return cls(ObserverStatus.FAILED, f"{type(exc).__name__}: {exc}"[:200])
        self._observer = observer
        return self

    @classmethod
    def adopt(cls, bound: BoundObserver) -> _Observation:
        """Serve the socket :mod:`ttft_probe._prespawn` bound before the spawn.

        The agent already points at ``bound.url``. If the observer cannot serve it, or
        the agent connected before it served (its requests' times would be those of the
        observer's first reads), the runs say ``observer_status="failed"`` and why; the
        bytes are forwarded all the same when it serves.
        """
        self = cls(ObserverStatus.ON, url=bound.url)
        try:
            from ttft_probe.observer import ProviderObserver  # noqa: PLC0415 - only when asked

            observer = ProviderObserver(bound.upstream, self._on_event)
            observer.start(sock=bound.sock)
        except Exception as exc:  # noqa: BLE001 - the run goes on without it
            with contextlib.suppress(Exception):
                bound.sock.close()  # type: ignore[attr-defined]
            _log.warning("the provider observer could not start (%s); running without it", exc)
            return cls(ObserverStatus.FAILED, f"{type(exc).__name__}: {exc}"[:200])
        self._observer = observer
        if observer.started_late:
            self.status = ObserverStatus.FAILED
            self.error = (
                "the agent connected to the observer before it was serving; "
                "its request times are unknown"
            )
        return self

    def deliver_to(self, tracker: ProcessTracker) -> None:
        # Under the lock: an event arriving meanwhile (from the observer's loop or reader
        # thread) waits for the early ones, so a body never overtakes its request.
        with self._lock:
            self._tracker = tracker
            early, self._early = self._early, []
            for event in early:
                self._dispatch(tracker, event)

    def _on_event(self, event: object) -> None:
        if self.status is not ObserverStatus.ON:
            return  # forwarded, but its times are not the run's
        with self._lock:
            tracker = self._tracker
            if tracker is None:
                self._early.append(event)
                return
            self._dispatch(tracker, event)

    @staticmethod
    def _dispatch(tracker: ProcessTracker, event: object) -> None:
        from ttft_probe.observer import (  # noqa: PLC0415
            ProviderFirstContent,
            ProviderRequest,
            ProviderRequestBody,
            ProviderResponseEnd,
        )

        if isinstance(event, ProviderRequest):
            tracker.provider_request(
                event.request_id, event.t_ns, generation=event.generation, api=event.api,
                kind=event.kind,
            )  # fmt: skip
        elif isinstance(event, ProviderFirstContent):
            tracker.provider_first_content(event.request_id, event.t_ns)
        elif isinstance(event, ProviderRequestBody):
            tracker.provider_body(
                event.request_id, kind=event.kind, model=event.model, has_tools=event.has_tools,
                sections=event.sections,
            )  # fmt: skip
        elif isinstance(event, ProviderResponseEnd):
            tracker.provider_end(
                event.request_id, event.t_ns, status=event.status,
                request_bytes=event.request_bytes, usage=event.usage,
            )  # fmt: skip

    def drain(self) -> None:
        """Let the observer report the request bodies it is still reading (bounded)."""
        if self._observer is not None:
            self._observer.drain(1.0)

    def stop(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
            except Exception:  # noqa: BLE001 - shutting the proxy down never reaches the run
                _log.warning("the provider observer did not stop cleanly", exc_info=True)
