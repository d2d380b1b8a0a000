"""Spawn first: start the agent and its pipe pumps before the rest of the probe is loaded.

``ttft-probe run`` sits in front of every agent launch, so whatever it does before the
spawn is added to the wait it measures — and the record cannot show it, since the record
starts at the spawn. This module is what runs before the spawn, and it is kept to the
standard library's C core (``os``, ``_thread``, ``select``, ``_signal``, ``_socket``: the
C modules under ``threading``, ``signal`` and ``socket``, documented or not; no
``contextlib`` either, hence the plain ``try``/``except``/``pass`` blocks; no
``typing``, ``enum``, ``re``, ``subprocess`` or ``threading``, each several ms of imports)
plus :mod:`ttft_probe.agents` (the agent table, stdlib only):

1. :func:`start` reads the options of ``ttft-probe run`` that change the spawn. Anything it
   cannot judge exactly as the full parser would (``--help``, a plugin ``--family``, a
   regex, an unknown option, no ``--``) makes it step aside *before* spawning: the full
   CLI then parses, fails or spawns as it always did.
2. It starts the agent (``os.posix_spawnp``) with SIGINT/SIGTERM/SIGHUP already forwarded
   to it, then forks a *worker* and stays the *lead*. The lead never loads the probe: its
   pump threads forward each read, timestamp it and send a copy (a frame: kind, monotonic
   ns, bytes) to the worker (:class:`Relay`); its main thread forwards signals, ends the
   agent at ``--timeout``, stamps the agent's exit, and exits with the agent's status once
   the worker says the runs are stored. A read is timestamped by a thread that never
   waits for the GIL behind an import: loading the probe in the same process would make
   a read that arrives meanwhile wait for the loading thread to let go (measured: 0.2–9
   ms late on a 2-core machine), which a second process avoids.
3. The worker loads the CLI and the probe while the agent boots, builds the tracker and
   hands it the frames received so far (:meth:`Buffer.attach`): the tracker parses them
   with the times the lead read them at, so every marker is the one it would have been
   with the tracker there from the first byte.

:func:`spawn` is the same start for a caller that has the probe loaded already
(:meth:`ttft_probe.Probe.run`): one process, the pumps feeding a :class:`Buffer` until the
tracker exists.

With ``--observe-provider`` the observer's listening socket is bound here, so its port goes
into the agent's environment; the observer's loop adopts the socket once loaded
(:meth:`ttft_probe.observer.ProviderObserver.start`). The run's W3C trace ids are drawn here
when no ``OTEL_*`` variable calls for the OpenTelemetry SDK (:mod:`ttft_probe._otel_vars`).
"""

from __future__ import annotations

import _thread
import os
import time

from ttft_probe import agents
from ttft_probe._otel_vars import sdk_needed

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, typed
    from collections.abc import Callable, Mapping, Sequence
    from typing import Final, Literal, Protocol

    from ttft_probe._lead import Reported

    class Sink(Protocol):
        """Where a pump reports what it read: a :class:`Buffer` or the tracker itself."""

        def arrive(self, stream: Literal["stdout", "stdin"], data: bytes) -> Arrival: ...
        def passed(self, arrival: Arrival) -> None: ...
        def on_stderr(self, t_ns: int) -> None: ...
        def on_stdout_eof(self, t_ns: int) -> None: ...

else:
    import _signal  # the C module under `signal`, which loads enum


__all__ = [
    "Arrival",
    "BoundObserver",
    "Buffer",
    "Child",
    "Discard",
    "ExitWatch",
    "Flag",
    "Spawned",
    "pump",
    "readable",
    "spawn",
    "start",
    "started",
    "trace_ids",
    "traceparent",
]

_CHUNK: Final = 65536
monotonic_ns = time.monotonic_ns


# --- the pumps ---------------------------------------------------------------------


class Arrival:
    """A chunk read from the agent's stdout or the client's stdin, at ``t_ns`` (monotonic ns).

    ``forwarded`` turns ``True`` once the chunk reached its reader; only then is it parsed.
    """

    __slots__ = ("data", "forwarded", "stream", "t_ns")

    def __init__(
        self, stream: Literal["stdout", "stdin"], data: bytes, t_ns: int, *, forwarded: bool = False
    ) -> None:
        """See the class docstring."""
        self.stream = stream
        self.data = data
        self.t_ns = t_ns
        self.forwarded = forwarded

    def __repr__(self) -> str:
        return f"Arrival({self.stream!r}, {len(self.data)} bytes, t_ns={self.t_ns})"


_POLL_MAX_S: Final = 2_000_000.0
"""The longest single ``poll`` (s): its timeout is a C int of ms."""


def readable(fd: int, timeout: float | None = None) -> bool:
    """Wait until ``fd`` is readable (a pidfd: the process exited), up to ``timeout`` s.

    ``poll`` rather than ``select``: an fd numbered 1024 or more (a library caller with
    many files open) is fine, and any timeout is (waited in steps).
    """
    import select  # noqa: PLC0415 - after the spawn

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = None if timeout is None else monotonic_ns() + int(max(0.0, timeout) * 1e9)
    while True:
        left = _POLL_MAX_S if deadline is None else (deadline - monotonic_ns()) / 1e9
        if poller.poll(int(min(max(left, 0.0), _POLL_MAX_S) * 1000)):
            return True
        if deadline is not None and monotonic_ns() >= deadline:
            return False


class Flag:
    """A one-way flag threads can wait on (``threading.Event``'s ``set``/``wait``/``is_set``)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        """A flag that is not set."""
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        """Set it, waking every waiter. Idempotent."""
        if self._lock.locked():
            try:  # noqa: SIM105 - no contextlib before the spawn (see the module)
                self._lock.release()
            except RuntimeError:  # another thread set it meanwhile
                pass

    def is_set(self) -> bool:
        """Whether it is set."""
        return not self._lock.locked()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s (``None``: forever) until it is set; whether it is."""
        if not self._lock.locked():
            return True
        if self._lock.acquire(blocking=True, timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()
        return not self._lock.locked()


class Buffer:
    """What the pumps read before the tracker existed, in arrival order; then the tracker.

    Each read is timestamped under one lock, so stdout and stdin reads queue in the order
    they truly arrived. :meth:`attach` hands the queue to the tracker (which parses what was
    already forwarded) and from then on every call goes straight to the tracker.
    """

    def __init__(self) -> None:
        """An empty buffer without a tracker."""
        self._lock = _thread.allocate_lock()
        self._target: Sink | None = None
        self._queue: list[Arrival] = []
        self._stderr_ns: int | None = None
        self._eof_ns: int | None = None

    def arrive(self, stream: Literal["stdout", "stdin"], data: bytes) -> Arrival:
        """Timestamp ``data`` just read from ``stream`` and queue it (see the tracker's)."""
        with self._lock:
            target = self._target
            if target is None:
                arrival = Arrival(stream, data, monotonic_ns())
                self._queue.append(arrival)
                return arrival
        return target.arrive(stream, data)

    def passed(self, arrival: Arrival) -> None:
        """``arrival`` was forwarded: parse it (once a tracker is attached)."""
        with self._lock:
            target = self._target
            if target is None:
                arrival.forwarded = True
                return
        target.passed(arrival)

    def on_stderr(self, t_ns: int) -> None:
        """The agent wrote to stderr at ``t_ns`` (the first write is what counts)."""
        with self._lock:
            target = self._target
            if target is None:
                if self._stderr_ns is None:
                    self._stderr_ns = t_ns
                return
        target.on_stderr(t_ns)

    def on_stdout_eof(self, t_ns: int) -> None:
        """The agent's stdout reached EOF at ``t_ns``."""
        with self._lock:
            target = self._target
            if target is None:
                self._eof_ns = t_ns
                return
        target.on_stdout_eof(t_ns)

    def record(self, stream: Literal["stdout", "stdin"], data: bytes, t_ns: int) -> None:
        """A read the lead process made at ``t_ns`` and already forwarded (worker side)."""
        with self._lock:
            target = self._target
            if target is None:
                self._queue.append(Arrival(stream, data, t_ns, forwarded=True))
                return
        feed = getattr(target, "on_stdout" if stream == "stdout" else "on_stdin")
        feed(data, t_ns)

    def attach(self, adopt: Callable[[list[Arrival]], None], target: Sink) -> None:
        """Hand the queue to ``adopt`` (the tracker's), then route everything to ``target``.

        Under the buffer's lock: a read arriving meanwhile waits, so nothing overtakes the
        queued reads. The first stderr write and stdout's EOF, if they came already, follow.
        """
        with self._lock:
            queue, self._queue = self._queue, []
            adopt(queue)
            if self._stderr_ns is not None:
                target.on_stderr(self._stderr_ns)
            if self._eof_ns is not None:
                target.on_stdout_eof(self._eof_ns)
            self._target = target


class Discard:
    """A sink that keeps nothing: for an agent whose tracker could not be built."""

    def arrive(self, stream: Literal["stdout", "stdin"], data: bytes) -> Arrival:  # noqa: ARG002
        """A read, not kept."""
        return Arrival(stream, b"", 0)

    def passed(self, arrival: Arrival) -> None:
        """Nothing to parse."""

    def on_stderr(self, t_ns: int) -> None:
        """Not kept."""

    def on_stdout_eof(self, t_ns: int) -> None:
        """Not kept."""

    def on_stdout(self, data: bytes, t_ns: int) -> None:
        """A read the lead made (worker side): not kept."""

    def on_stdin(self, data: bytes, t_ns: int) -> None:
        """A read the lead made (worker side): not kept."""


def _read(fd: int) -> bytes:
    """One read of up to 64 KiB; b"" at EOF or when the pipe broke."""
    try:
        return os.read(fd, _CHUNK)
    except OSError:
        return b""


def _forward(fd: int | None, data: bytes) -> bool:
    """Write all of ``data`` to ``fd`` (``None`` discards); ``False`` once the reader is gone.

    When the reader went away (EPIPE), the caller stops reading the agent's pipe and
    closes it, so the agent meets the same broken pipe it would have met without us.
    """
    if fd is None:
        return True
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        return False
    return True


def _copy(  # noqa: PLR0917 - the thread's argument tuple
    src: int, dst: int | None, kind: str, sink: Sink, close_dst: bool, eof: Flag | None  # noqa: FBT001
) -> None:
    try:
        while data := _read(src):
            if kind == "stderr":
                sink.on_stderr(monotonic_ns())
                if not _forward(dst, data):
                    break
                continue
            arrival = sink.arrive(kind, data)  # type: ignore[arg-type]
            delivered = _forward(dst, data)
            sink.passed(arrival)
            if not delivered:
                break
    finally:
        t_end = monotonic_ns()
        try:  # noqa: SIM105 - no contextlib before the spawn (see the module)
            os.close(src)
        except OSError:
            pass
        if close_dst and dst is not None:
            try:  # noqa: SIM105
                os.close(dst)
            except OSError:
                pass
        if kind == "stdout":
            sink.on_stdout_eof(t_end)
        if eof is not None:
            eof.set()


def pump(
    src: int, dst: int | None, *, kind: str, sink: Sink, close_dst: bool, eof: Flag | None = None
) -> None:
    """Copy ``src`` → ``dst`` on a new thread, timestamping each read before it is parsed.

    ``kind`` is ``stdout``, ``stderr`` or ``stdin``; ``dst=None`` discards. Each stdout or
    stdin read is timestamped (``sink.arrive``), forwarded, then parsed (``sink.passed``);
    stderr only timestamps its first write. When ``dst`` breaks (EPIPE) ``src`` is closed,
    so the writer sees the broken pipe it would have seen without the probe. ``eof`` is
    set when the pump ends.
    """
    _thread.start_new_thread(_copy, (src, dst, kind, sink, close_dst, eof))


# --- the child -----------------------------------------------------------------------


class Child:
    """A process started by :func:`spawn`: ``subprocess.Popen``'s ``poll``/``wait``/signals.

    Attributes:
        pid: The process id.
        returncode: ``None`` while it runs; its exit code, or ``-N`` when signal N ended it.
    """

    def __init__(self, pid: int) -> None:
        """Watch process ``pid``, a child of this process."""
        self.pid = pid
        self.returncode: int | None = None
        self._lock = _thread.allocate_lock()

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            self.returncode = 255 if self.returncode is None else self.returncode
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        """The return code if the process has exited, else ``None`` (never blocks)."""
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                if self.returncode is None:
                    self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` s (``None``: until it exits); the return code or ``None``."""
        if timeout is not None:
            try:
                fd = os.pidfd_open(self.pid)
            except OSError:  # already reaped
                fd = None
            if fd is not None:
                try:
                    readable(fd, timeout)
                finally:
                    os.close(fd)
            return self.poll()
        with self._lock:
            while self.returncode is None:
                self._reap(0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` unless the process has been reaped already."""
        if self.poll() is None:
            try:  # noqa: SIM105 - no contextlib before the spawn (see the module)
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(15)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(9)


class ExitWatch:
    """The monotonic ns a child exited at, seen on a pidfd without reaping it.

    Started right after the spawn, on a thread of its own: the exit is stamped when it
    happens even if whoever reaps the child (``waitpid``) gets to it later, e.g. while
    the probe is still loading. Without pidfds (not Linux ≥ 5.3) :meth:`at` is the reap.
    """

    def __init__(self, pid: int) -> None:
        """Watch child ``pid``."""
        self.t_ns: int | None = None
        self._seen = Flag()
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._seen.set()
            return
        _thread.start_new_thread(self._watch, (fd,))

    def _watch(self, fd: int) -> None:
        try:
            readable(fd)
        finally:
            self.t_ns = monotonic_ns()
            os.close(fd)
            self._seen.set()

    def at(self) -> int:
        """When it exited; call once it was reaped (waits at most 50 ms for the watcher)."""
        self._seen.wait(0.05)
        return self.t_ns if self.t_ns is not None else monotonic_ns()


# --- the spawn -----------------------------------------------------------------------


def closed_std_fds() -> frozenset[int]:
    """Which of fds 0, 1 and 2 are not open in this process."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    return frozenset(closed)


def _inherited_fds(keep: Sequence[int]) -> list[int]:
    """This process's inheritable fds above 2 (closed in the child, as ``Popen`` does)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found = []
    for name in names:
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the listing's own fd, closed by now
                pass
    return found


def _file_actions(pipes: dict[int, tuple[int, int]]) -> list[tuple[int, ...]]:
    """``posix_spawn`` file actions: each pipe's end onto its standard fd; others closed."""
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, r if fd == 0 else w, fd) for fd, (r, w) in pipes.items()
    ]
    keep = [fd for pair in pipes.values() for fd in pair]
    actions.extend((os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_fds(keep))
    return actions


class _Signals:
    """SIGINT/SIGTERM/SIGHUP forwarded to the child while it runs (main thread only)."""

    def __init__(self, spawned: Spawned) -> None:
        self._spawned = spawned
        self._previous: dict[int, _signal._HANDLER] = {}

    def install(self) -> None:
        """Install the handlers; off the main thread (where Python refuses them) none are."""
        for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
            try:
                self._previous[signum] = _signal.signal(signum, self._handler)
            except ValueError:  # not the main thread
                return

    def restore(self) -> None:
        """Put the previous handlers back."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            _signal.signal(signum, handler)

    def _handler(self, signum: int, _frame: object) -> None:
        spawned = self._spawned
        spawned.cancelled = True
        child = spawned.child
        if child is None or child.poll() is not None:
            return
        if signum == _signal.SIGINT and _terminal_delivers_to(child.pid):
            return
        child.send_signal(signum)


def _terminal_delivers_to(pid: int) -> bool:
    """Whether a SIGINT typed at the terminal reaches ``pid``'s process group itself."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(tty) == os.getpgid(pid)
    except OSError:
        return False
    finally:
        os.close(tty)


class Spawned:
    """An agent started by :func:`spawn`, its pumps running, waiting for its tracker.

    Attributes:
        argv: The command as spawned (after any observer re-pointing).
        child: The process.
        spawn_ns: Monotonic ns just before the spawn (``processSpawned``).
        buffer: The pumps' sink until the tracker attaches.
        stdout_eof: Set when the stdout pump ended (at once when stdout is not observed).
        tees_stdin: Whether this process's stdin is copied through to the child.
        cancelled: A forwarded signal (SIGINT/SIGTERM/SIGHUP) arrived.
        trace_ids: (trace id, span id) in the child's ``TRACEPARENT``, or ``None``.
        observer: The observer's pre-bound socket, URL and upstream, or ``None``.
        options: What :func:`start` read of the command line (``None`` from :func:`spawn`).
    """

    def __init__(self) -> None:
        """See the class docstring; :func:`spawn` fills it."""
        self.argv: list[str] = []
        self.child: Child | None = None
        self.spawn_ns = 0
        self.buffer = Buffer()
        self.stdout_eof = Flag()
        self.tees_stdin = False
        self.cancelled = False
        self.trace_ids: tuple[int, int] | None = None
        self.observer: BoundObserver | None = None
        self.options: dict[str, object] | None = None
        self.observation: object = None
        """The library's own observer, started before a :meth:`Probe.run` spawn."""
        self.taken = False
        """A probe took the agent over (:meth:`ttft_probe.Probe.run`)."""
        self.exited: ExitWatch | Reported | None = None
        self.timed_out = False
        """The lead process ended the agent at ``--timeout`` (worker side)."""
        self.probe_killed = False
        """The lead process died before the agent exited; the worker ended it."""
        self._pipes: dict[int, int] = {}
        self._done_fd: int | None = None
        self._signals: _Signals | None = None

    def restore_signals(self) -> None:
        """Give SIGINT/SIGTERM/SIGHUP their previous handlers back (after the child exited)."""
        if self._signals is not None:
            self._signals.restore()
            self._signals = None

    def abandon(self) -> None:
        """End the child (SIGKILL) and reap it: the probe cannot go on after all."""
        self.restore_signals()
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(1.0)

    def release(self) -> None:
        """Worker side: the runs are stored and said; the lead process may exit now.

        The worker lets go of stderr first: whoever reads the probe's stderr to its end
        (a shell's ``$(…)``, ``communicate()``) is then done when the lead exits, not when
        the worker has finished tearing down.
        """
        fd, self._done_fd = self._done_fd, None
        if fd is not None:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
            try:
                os.write(fd, b"1")
                os.close(fd)
            except OSError:  # the lead is gone: nobody to tell
                pass


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    tees_stdin: bool,
    spawned: Spawned | None = None,
    pumps: bool = True,
    end_with_parent: bool = False,
) -> Spawned:
    """Start ``argv`` with this process's stdio, copied through pumps; see the module.

    The child's stdout and stderr are pipes pumped to this process's fds 1 and 2 (a closed
    standard fd stays closed in the child, and that stream is not observed); its stdin is
    this process's, inherited, or with ``tees_stdin`` a pipe pumped from fd 0. Like
    ``subprocess.Popen``'s defaults: SIGPIPE and SIGXFSZ are reset to their default
    action and this process's other inheritable fds are closed in the child.

    ``end_with_parent``: the child gets SIGTERM when this process dies, by any signal,
    SIGKILL included (Linux ``PR_SET_PDEATHSIG``, set between fork and exec, so this
    spawn forks instead of ``posix_spawn``). The kernel sends it when the *thread* that
    spawned the child ends: only for a caller that waits for the child on that thread
    (:meth:`ttft_probe.Probe.run`).

    Raises:
        OSError: From the spawn itself (``FileNotFoundError`` for a missing executable,
            ``PermissionError`` for one that cannot be executed), after closing every fd
            and restoring the signal handlers.
    """
    spawned = spawned or Spawned()
    closed = closed_std_fds()
    # Hold the closed standard fds until the spawn (non-inheritable, so the child finds
    # them closed): no pipe of ours may land on them.
    holders = [os.open(os.devnull, os.O_RDWR) for _ in closed]
    tee = tees_stdin and 0 not in closed
    pipes: dict[int, tuple[int, int]] = {}
    try:
        for fd in (0, 1, 2):
            if (tee if fd == 0 else fd not in closed):
                pipes[fd] = os.pipe()
        actions = _file_actions(pipes)
        signals = _Signals(spawned)
        signals.install()
        spawned._signals = signals  # noqa: SLF001 - its own helper
        spawned.argv = list(argv)
        spawned.tees_stdin = tee
        spawned.spawn_ns = monotonic_ns()
        try:
            if end_with_parent:
                pid = _spawn_ending_with_parent(spawned.argv, env, actions)
            else:
                pid = os.posix_spawnp(
                    spawned.argv[0],
                    spawned.argv,
                    env,
                    file_actions=actions,
                    setsigdef=_DEFAULT_SIGNALS,
                )
        except BaseException:
            spawned.restore_signals()
            raise
    except BaseException:
        for r, w in pipes.values():
            os.close(r)
            os.close(w)
        raise
    finally:
        for fd in holders:
            os.close(fd)
    spawned.child = Child(pid)
    for fd, (r, w) in pipes.items():  # the child's ends
        os.close(r if fd == 0 else w)
    spawned._pipes = {fd: (w if fd == 0 else r) for fd, (r, w) in pipes.items()}  # noqa: SLF001
    if pumps:
        start_pumps(spawned, spawned.buffer)
    return spawned


def start_pumps(spawned: Spawned, sink: Sink) -> None:
    """Start the pumps of a :func:`spawn` made with ``pumps=False``, and its exit watch."""
    ends = spawned._pipes  # noqa: SLF001 - its own state
    if 1 in ends:
        pump(ends[1], os.dup(1), kind="stdout", sink=sink, close_dst=True, eof=spawned.stdout_eof)
    else:
        spawned.stdout_eof.set()
    if 2 in ends:
        pump(ends[2], os.dup(2), kind="stderr", sink=sink, close_dst=True)
    if 0 in ends:
        pump(os.dup(0), ends[0], kind="stdin", sink=sink, close_dst=True)
    spawned.exited = ExitWatch(cast_child(spawned).pid)


def cast_child(spawned: Spawned) -> Child:
    """The spawned process (set once :func:`spawn` returned)."""
    child = spawned.child
    if child is None:  # pragma: no cover - spawn sets it before returning
        raise RuntimeError("not spawned")
    return child


_DEFAULT_SIGNALS: Final = (_signal.SIGPIPE, _signal.SIGXFSZ)
"""Python ignores these; a child gets their default action back (Popen's restore_signals)."""
_PR_SET_PDEATHSIG: Final = 1


def _which(program: str, env: Mapping[str, str]) -> str:
    """``program`` as ``execvpe`` would find it on ``env``'s PATH (resolved before a fork).

    Raises:
        OSError: ``FileNotFoundError`` or ``PermissionError``, as the exec would.
    """
    if "/" in program:
        return program
    denied = False
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = True
    code = 13 if denied else 2  # EACCES, ENOENT
    raise OSError(code, os.strerror(code), program)


def _spawn_ending_with_parent(
    argv: list[str], env: Mapping[str, str], actions: list[tuple[int, ...]]
) -> int:
    """Fork, set ``PR_SET_PDEATHSIG`` (SIGTERM) and the file actions, exec ``argv``; its pid.

    An exec failure is reported through a close-on-exec pipe and raised here as the
    ``OSError`` ``posix_spawnp`` would raise (``FileNotFoundError``, ``PermissionError``).
    """
    import ctypes  # noqa: PLC0415 - only this spawn needs prctl

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    program = _which(argv[0], env)
    parent = os.getpid()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing but system calls until exec
        code = 5
        try:
            # A SIGTERM from the kernel must end this child, not reach the handler it
            # inherited (which forwards to a child this copy does not have).
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
            prctl(_PR_SET_PDEATHSIG, int(_signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(128 + int(_signal.SIGTERM))
            for action in actions:
                if action[0] == os.POSIX_SPAWN_DUP2:
                    os.dup2(action[1], action[2])
                else:
                    os.close(action[1])
            for signum in _DEFAULT_SIGNALS:
                _signal.signal(signum, _signal.SIG_DFL)
            os.execve(program, argv, env)  # noqa: S606 - the agent's own argv, as given
        except BaseException as exc:  # noqa: BLE001 - whatever it was, report it and exit
            code = getattr(exc, "errno", None) or 5  # EIO when it was no OSError
        finally:
            os.write(err_w, str(code).encode())
            os._exit(127)
    os.close(err_w)
    try:
        report = os.read(err_r, 16)
    finally:
        os.close(err_r)
    if report:  # exec failed: the child wrote why and exited
        os.waitpid(pid, 0)
        code = int(report)
        raise OSError(code, os.strerror(code), argv[0])
    return pid


def trace_ids() -> tuple[int, int]:
    """A random non-zero (128-bit trace id, 64-bit span id) for the run's root span."""
    trace_id = span_id = 0
    while trace_id == 0:
        trace_id = int.from_bytes(os.urandom(16), "big")
    while span_id == 0:
        span_id = int.from_bytes(os.urandom(8), "big")
    return trace_id, span_id


def traceparent(ids: tuple[int, int]) -> str:
    """W3C ``traceparent`` of a root span with ``ids``: sampled, random trace id (``03``)."""
    return f"00-{ids[0]:032x}-{ids[1]:016x}-03"


# --- the observer's socket -------------------------------------------------------------


class BoundObserver:
    """The observer's listening socket, bound before the spawn.

    Attributes:
        sock: A listening ``_socket.socket`` on 127.0.0.1 (the observer adopts it).
        url: The base URL given to the agent: ``http://127.0.0.1:PORT`` + upstream path.
        upstream: The provider URL the observer forwards to.
        env_var: The agent's base-URL variable set to ``url``.
    """

    def __init__(self, sock: object, url: str, upstream: str, env_var: str) -> None:
        """See the class docstring."""
        self.sock = sock
        self.url = url
        self.upstream = upstream
        self.env_var = env_var


def simple_url_path(url: str) -> str | None:
    """The path of an ``http(s)://host[:port][/path]`` URL, or ``None`` for any other shape.

    Only URLs whose parts ``urllib.parse.urlsplit`` cannot read otherwise get a path:
    no credentials, IPv6 brackets, query, fragment, whitespace or control characters, a
    non-empty host and a port of 1–65535 digits if any. Anything else is left to the full
    path (the observer's own check), which then decides exactly as it always did.
    """
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            rest = url[len(scheme) :]
            break
    else:
        return None
    if any(c in rest for c in "@[]?#\\%") or any(ord(c) <= 32 or ord(c) >= 127 for c in rest):
        return None
    host, slash, path = rest.partition("/")
    name, colon, port = host.partition(":")
    if not name or (colon and not (port.isdigit() and 0 < int(port) < 65536)):
        return None
    return slash + path


def _bind_observer(
    resolved: agents.ResolvedAgent, env: Mapping[str, str], upstream: str | None
) -> BoundObserver | None:
    """Bind the observer's socket for an agent with a plain base-URL variable, else ``None``.

    ``None`` leaves the observer to the full path: opencode (its route reads its configs),
    codex with a ``config.toml`` (a custom provider may need a ``-c`` override), an
    upstream URL of an unusual shape (:func:`simple_url_path`).
    """
    spec = resolved.spec
    var = spec.base_url_env if spec is not None else None
    if var is None or spec is None or spec.executable == "opencode":
        return None
    if var == "OPENAI_BASE_URL":
        home = env.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
        if os.path.exists(os.path.join(home, "config.toml")):
            return None
    if var not in agents.DEFAULT_UPSTREAMS:
        return None
    target = upstream or env.get(var) or agents.DEFAULT_UPSTREAMS[var]
    path = simple_url_path(target)
    if path is None:
        return None
    import _socket  # noqa: PLC0415 - the C module: `socket` loads enum and selectors

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except OSError:
        sock.close()
        return None
    port = sock.getsockname()[1]
    return BoundObserver(sock, f"http://127.0.0.1:{port}{path}", target, var)


# --- `ttft-probe run`'s options -----------------------------------------------------------

_FLAGS: Final = {
    "--observe-provider": ("observe_provider", True),
    "--capture-content": ("capture_content", True),
    "-q": ("quiet", True),
    "--quiet": ("quiet", True),
    "--resumed": ("session_resumed", True),
    "--fresh": ("session_resumed", False),
}
_VALUED: Final = {
    "--agent": "agent",
    "--family": "family",
    "--conversation": "conversation_id",
    "--turn": "turn_ordinal",
    "--timeout": "timeout",
    "--upstream": "upstream",
    "--delivery-wait": "delivery_wait",
    "--store": "store",
}


_MAX_S: Final = 1e9
"""Seconds above which a ``--timeout`` is left to the full parser (about 32 years)."""


def _number(text: str) -> float | None:
    """``text`` as a finite float, as click's FLOAT reads it, or ``None``."""
    try:
        value = float(text)
    except ValueError:
        return None
    finite = -float("inf") < value < float("inf")  # NaN compares false too
    return value if finite else None


def _value(key: str, text: str) -> object:
    """An option's value as click would read it, or ``None`` where it might not."""
    if key == "turn_ordinal":
        digits = text.isascii() and text.isdigit()  # "²" is a digit int() refuses
        return int(text) if digits and int(text) >= 1 else None
    if key in {"timeout", "delivery_wait"}:
        number = _number(text)
        if number is None or number < 0 or number > _MAX_S or (key == "timeout" and number == 0):
            return None  # the full parser reads it (and the library waits in steps)
        return number
    if key == "family" and text not in agents.BUILTIN_FAMILIES:
        return None  # a plugin's: its adapter, loaded by the full parser, decides
    if key == "store" and os.path.isdir(text):
        return None  # click.Path(dir_okay=False) rejects it
    return text or None


def parse_run(args: Sequence[str]) -> dict[str, object] | None:
    """The options of ``ttft-probe run ARGS`` that change the spawn, or ``None``.

    ``None`` whenever the full parser might read ``args`` otherwise or reject them: an
    option not listed here, a bad value, no ``--`` or nothing after it, a family that is
    not built in. The full parser re-reads the command line either way.
    """
    if "--" not in args:
        return None
    split = list(args).index("--")
    head, command = list(args[:split]), list(args[split + 1 :])
    if not command or not command[0]:
        return None
    opts: dict[str, object] = {"command": command}
    i = 0
    while i < len(head):
        arg = head[i]
        i += 1
        if arg in _FLAGS:
            key, flag = _FLAGS[arg]
            opts[key] = flag
            continue
        name, eq, text = arg.partition("=")
        if not eq:
            if i >= len(head) or head[i].startswith("-"):
                return None  # no value, or one click might read otherwise
            text = head[i]
            i += 1
        value = _value(_VALUED[name], text) if name in _VALUED else None
        if value is None:
            return None
        opts[_VALUED[name]] = value
    return opts


_STARTED: list[Spawned] = []


def started() -> Spawned | None:
    """The agent :func:`start` spawned in this process, once; ``None`` if it did not."""
    return _STARTED.pop() if _STARTED else None


def start(  # noqa: PLR0911 - each return is one reason to leave it to the full CLI
    args: Sequence[str], env: Mapping[str, str] | None = None
) -> Spawned | None:
    """Spawn the agent of ``ttft-probe run ARGS`` now, if it can be done without the probe.

    Returns, in the worker, the :class:`Spawned` agent (also kept for :func:`started`);
    the lead never returns (see the module). ``None`` when the full CLI must decide
    (:func:`parse_run`; an agent whose stdin handling, route or telemetry needs more than
    the agent table; a spawn that failed — the full path then fails the same way and
    says so).
    """
    opts = parse_run(args)
    if opts is None:
        return None
    environ = os.environ if env is None else env
    if sdk_needed(environ):
        return None
    command = opts["command"]
    assert isinstance(command, list)  # noqa: S101 - parse_run's shape
    agent = opts.get("agent")
    family = opts.get("family")
    try:
        resolved = agents.resolve_agent(
            command,
            agent=agent if isinstance(agent, str) else None,
            family=family if isinstance(family, str) else None,
        )
    except Exception:  # noqa: BLE001 - the full path reports it
        return None
    tee = agents.tees_stdin(resolved.family, command)
    if tee is None:
        return None
    child_env = dict(environ)
    spawned = Spawned()
    spawned.options = opts
    if opts.get("observe_provider") or opts.get("upstream"):
        if closed_std_fds():
            return None  # its socket would take a standard fd the agent must find closed
        upstream = opts.get("upstream")
        bound = _bind_observer(resolved, environ, upstream if isinstance(upstream, str) else None)
        if bound is None:
            return None
        spawned.observer = bound
        child_env[bound.env_var] = bound.url
    spawned.trace_ids = ids = trace_ids()
    child_env["TRACEPARENT"] = traceparent(ids)
    try:
        spawn(command, child_env, tees_stdin=tee, spawned=spawned, pumps=False)
    except OSError:
        if spawned.observer is not None:
            spawned.observer.sock.close()  # type: ignore[attr-defined]
        return None
    from ttft_probe._lead import split  # noqa: PLC0415 - after the spawn

    worker = split(spawned)  # only the worker returns
    _STARTED.append(worker)
    return worker
