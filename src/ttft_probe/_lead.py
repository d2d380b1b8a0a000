"""``ttft-probe run``'s two processes after the spawn: the lead pumps, the worker loads.

:func:`split` forks the worker right after :func:`ttft_probe._prespawn.start` spawned the
agent (before any thread exists). The lead never loads the probe: its pump threads forward
each read of the agent's stdout and of the client's stdin, timestamp it and send a copy to
the worker as a frame (:class:`Relay`: kind byte, monotonic ns, payload length, payload),
in the order the reads arrived; its main thread forwards SIGINT/SIGTERM/SIGHUP (installed
before the spawn), ends the agent at ``--timeout``, stamps the agent's exit on a pidfd and
sends it. The worker feeds the frames into the tracker (:meth:`Buffer.record`) once the
probe is loaded and says when its runs are stored; the lead then exits with the agent's
status. Why two processes: a read stamped by a thread of the process that is importing
the probe waits for the GIL behind the import (0.2–9 ms late, measured on a 2-core
machine); the lead's threads never wait behind anything but each other.

Standard library only, like :mod:`ttft_probe._prespawn` (no ``contextlib``: plain
``try``/``except``/``pass``).
"""

from __future__ import annotations

import _thread
import os

from ttft_probe._prespawn import (
    Arrival,
    Flag,
    Spawned,
    _forward,
    cast_child,
    monotonic_ns,
    readable,
    start_pumps,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Final, Literal
else:
    import _signal

__all__ = ["Relay", "Reported", "split"]

_STDOUT, _STDIN, _STDERR, _EOF, _EXIT = range(5)
_HEAD: Final = 13  # kind (1 byte), t_ns (8), payload length (4)


class Relay:
    """The lead's sink: every read, framed, to the worker, in arrival order, once forwarded.

    The same ordering rule as the tracker's (:meth:`ttft_probe._run.ProcessTracker.arrive`):
    reads are timestamped and queued under one lock, and sent only when they and every
    read before them were forwarded. A worker that is gone (EPIPE) turns the relay off;
    the bytes still pass through.
    """

    def __init__(self, fd: int) -> None:
        """Send frames on pipe ``fd`` (owned from now on)."""
        self._fd = fd
        self._lock = _thread.allocate_lock()
        self._queue: list[Arrival] = []
        self._stderr_seen = False

    def arrive(self, stream: Literal["stdout", "stdin"], data: bytes) -> Arrival:
        """Timestamp and queue a read (see :class:`Buffer`)."""
        with self._lock:
            arrival = Arrival(stream, data, monotonic_ns())
            self._queue.append(arrival)
        return arrival

    def passed(self, arrival: Arrival) -> None:
        """``arrival`` was forwarded: send every forwarded read at the head of the queue."""
        with self._lock:
            arrival.forwarded = True
            queue = self._queue
            while queue and queue[0].forwarded:
                item = queue.pop(0)
                self._send(_STDOUT if item.stream == "stdout" else _STDIN, item.t_ns, item.data)

    def on_stderr(self, t_ns: int) -> None:
        """The first stderr write is all the tracker keeps."""
        with self._lock:
            if not self._stderr_seen:
                self._stderr_seen = True
                self._send(_STDERR, t_ns, b"")

    def on_stdout_eof(self, t_ns: int) -> None:
        """Stdout ended at ``t_ns``."""
        with self._lock:
            self._send(_EOF, t_ns, b"")

    def exit(self, t_ns: int, returncode: int, *, cancelled: bool, timed_out: bool) -> None:
        """The agent exited at ``t_ns`` with ``returncode`` (``-N``: signal N)."""
        flags = (1 if cancelled else 0) | (2 if timed_out else 0)
        payload = returncode.to_bytes(4, "big", signed=True) + bytes([flags])
        with self._lock:
            self._send(_EXIT, t_ns, payload)

    def _send(self, kind: int, t_ns: int, data: bytes) -> None:
        if self._fd < 0:
            return
        head = bytes([kind]) + t_ns.to_bytes(8, "big") + len(data).to_bytes(4, "big")
        try:  # header and data in one call, without copying the data into a frame
            sent = os.writev(self._fd, [head, data])
        except OSError:
            sent = -1
        total = _HEAD + len(data)
        if 0 <= sent < total:  # a full pipe took part of it: the rest, in order
            rest = (head + data)[sent:] if sent < _HEAD else data[sent - _HEAD :]
            sent = total if _forward(self._fd, rest) else -1
        if sent < 0:
            os.close(self._fd)
            self._fd = -1


class Reported:
    """The agent as the worker sees it: ``Child``'s interface, its exit as the lead reports.

    ``send_signal`` does nothing: the lead forwards signals and ends the agent at its
    timeout. ``kill`` (for :meth:`Spawned.abandon`) signals the agent directly.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.t_ns: int | None = None
        self.start_time = _start_time(pid)
        self._exited = Flag()

    def reported(self, t_ns: int, returncode: int | None) -> None:
        self.t_ns = t_ns
        self.returncode = returncode
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._exited.wait(timeout)
        return self.returncode

    @property
    def exited(self) -> bool:
        """Whether the agent's end was reported (its code may be unknown: ``None``)."""
        return self._exited.is_set()

    def send_signal(self, signum: int) -> None:
        """The lead forwards signals; nothing to do here."""

    def terminate(self) -> None:
        """The lead ends the agent at its timeout; nothing to do here."""

    def kill(self) -> None:
        try:  # noqa: SIM105 - no contextlib here (see the module)
            os.kill(self.pid, _signal.SIGKILL)
        except OSError:
            pass
        self.reported(monotonic_ns(), -int(_signal.SIGKILL))

    def at(self) -> int:
        """When the agent exited (monotonic ns), as the lead saw it."""
        return self.t_ns if self.t_ns is not None else monotonic_ns()


def _dispatch(kind: int, t_ns: int, data: bytes, spawned: Spawned, child: Reported) -> None:
    """One frame from the lead, into the worker's buffer or the agent's reported exit."""
    if kind in {_STDOUT, _STDIN}:
        spawned.buffer.record("stdout" if kind == _STDOUT else "stdin", data, t_ns)
    elif kind == _STDERR:
        spawned.buffer.on_stderr(t_ns)
    elif kind == _EOF:
        spawned.buffer.on_stdout_eof(t_ns)
        spawned.stdout_eof.set()
    elif kind == _EXIT:
        spawned.cancelled = bool(data[4] & 1)
        spawned.timed_out = bool(data[4] & 2)
        child.reported(t_ns, int.from_bytes(data[:4], "big", signed=True))


def _read_frames(fd: int, spawned: Spawned, child: Reported) -> None:
    """Worker side: feed the lead's frames into ``spawned``'s buffer until the pipe ends.

    Whatever a frame's handling raises, the pipe is drained to its end (the lead must
    never block on a full pipe) and the agent's end is reported, so the worker finishes.
    """
    buf = bytearray()
    start = 0  # where the next frame begins in buf
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            if start:
                del buf[:start]
                start = 0
            buf += chunk
            view = memoryview(buf)
            try:
                while len(buf) - start >= _HEAD:
                    size = int.from_bytes(view[start + 9 : start + _HEAD], "big")
                    end = start + _HEAD + size
                    if len(buf) < end:
                        break
                    kind = buf[start]
                    t_ns = int.from_bytes(view[start + 1 : start + 9], "big")
                    data = view[start + _HEAD : end].tobytes()
                    start = end
                    try:
                        _dispatch(kind, t_ns, data, spawned, child)
                    except Exception:  # noqa: BLE001, S112 - a fault in one frame: on to the next
                        continue
            finally:
                view.release()
    finally:
        os.close(fd)
        if not child.exited:  # the lead died without a word: nothing more will come
            _lead_died(spawned, child)


GRACE_S: Final = 5.0
"""After SIGTERM, how long an agent whose probe was killed gets before SIGKILL (s)."""


def _start_time(pid: int) -> str | None:
    """Process ``pid``'s start time (``/proc/PID/stat`` field 22), to tell it from a successor."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[-1].split()[19].decode()


def _lead_died(spawned: Spawned, child: Reported) -> None:
    """The lead was killed: end the agent it started, then report the run as probe_killed.

    Nobody pumps the agent's pipes any more, and an ACP agent would wait on its stdin for
    good: it gets SIGTERM, :data:`GRACE_S` to exit, then SIGKILL (as at ``--timeout``).
    Only the process the lead started is signalled (its start time is checked first). Its
    exit code is unknown here (it is not this process's child): ``None``.
    """
    spawned.probe_killed = True
    pid = child.pid
    if child.start_time is not None and _start_time(pid) == child.start_time:
        _end(pid)
    t_ns = monotonic_ns()
    spawned.buffer.on_stdout_eof(t_ns)
    spawned.stdout_eof.set()
    child.reported(t_ns, None)


def _end(pid: int) -> None:
    """SIGTERM ``pid``, wait up to :data:`GRACE_S` on a pidfd, then SIGKILL it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    try:
        for signum, wait in ((_signal.SIGTERM, GRACE_S), (_signal.SIGKILL, GRACE_S)):
            try:
                os.kill(pid, signum)
            except OSError:
                return
            if readable(fd, wait):
                return
    finally:
        os.close(fd)


def _become_worker(spawned: Spawned, frames: int, done: int) -> Spawned:
    """In the forked worker: let go of the lead's fds and handlers; read its frames."""
    for fd in spawned._pipes.values():  # noqa: SLF001 - its own state
        os.close(fd)
    spawned._pipes = {}  # noqa: SLF001
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the agent's stdio is the lead's to pump; stderr stays for messages
        os.dup2(null, fd)
    os.close(null)
    spawned.restore_signals()
    # A Ctrl-C, a hang-up or a SIGTERM sent to the whole process group (`timeout`, a
    # service manager) is the agent's and the lead's to act on; the worker records the
    # outcome the lead reports (cancelled), which it could not if it died with them.
    for signum in (_signal.SIGINT, _signal.SIGHUP, _signal.SIGTERM):
        _signal.signal(signum, _signal.SIG_IGN)
    child = Reported(cast_child(spawned).pid)
    spawned.child = child  # type: ignore[assignment]
    spawned.exited = child
    spawned._done_fd = done  # noqa: SLF001
    _thread.start_new_thread(_read_frames, (frames, spawned, child))
    return spawned


def _lead(spawned: Spawned, frames: int, done: int) -> None:
    """In the lead: pump, forward signals, end the agent at its timeout, wait, exit.

    Never returns: exits with the agent's status once the worker said its runs are
    stored (or is gone), and every byte of the agent's stdout was forwarded.
    """
    relay = Relay(frames)
    start_pumps(spawned, relay)
    try:
        import fcntl  # noqa: PLC0415 - after the pumps: a shared library to load

        fcntl.fcntl(frames, fcntl.F_SETPIPE_SZ, 1 << 20)  # room while the worker loads
    except OSError:
        pass
    child = cast_child(spawned)
    options = spawned.options or {}
    timeout = options.get("timeout")
    timed_out = False
    if isinstance(timeout, float):
        left = timeout - (monotonic_ns() - spawned.spawn_ns) / 1e9
        if child.wait(left) is None:
            timed_out = True
            child.terminate()
            if child.wait(5) is None:
                child.kill()
    code = child.wait()
    assert code is not None  # noqa: S101 - wait() without a timeout
    exited = spawned.exited
    t_exit = exited.at() if exited is not None else monotonic_ns()
    relay.exit(t_exit, code, cancelled=spawned.cancelled, timed_out=timed_out)
    wait = options.get("delivery_wait")
    limit = 20.0 + (wait if isinstance(wait, float) else 0.0)
    try:  # noqa: SIM105 - no contextlib here (see the module)
        readable(done, limit)  # the worker's byte, or its end
    except OSError:
        pass
    spawned.stdout_eof.wait(0.2)  # every byte of stdout forwarded (a grandchild may hold it)
    spawned.restore_signals()
    os._exit(128 - code if code < 0 else code)


def _above_std(*fds: int) -> tuple[int, ...]:
    """``fds`` moved above 0–2: a standard fd the probe was started without stays free.

    The worker points its own fds 0 and 1 at /dev/null; a pipe that landed there (the
    lowest free fd) would be lost.
    """
    moved = []
    for fd in fds:
        low = []
        high = fd
        while high <= 2:
            low.append(high)
            high = os.dup(high)  # non-inheritable, like the pipe
        for old in low:
            os.close(old)
        moved.append(high)
    return tuple(moved)


def split(spawned: Spawned) -> Spawned:
    """Fork the worker that loads the probe; this process stays the lead (see :func:`start`)."""
    frames_r, frames_w = _above_std(*os.pipe())
    done_r, done_w = _above_std(*os.pipe())
    pid = os.fork()
    if pid == 0:
        os.close(frames_w)
        os.close(done_r)
        return _become_worker(spawned, frames_r, done_w)
    os.close(frames_r)
    os.close(done_w)
    if spawned.observer is not None:
        spawned.observer.sock.close()  # type: ignore[attr-defined]  # the worker's now
    _lead(spawned, frames_w, done_r)
    raise AssertionError("unreachable")  # pragma: no cover - _lead exits
