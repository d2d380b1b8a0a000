"""The recorder: takes closed turns off the pump threads, builds their runs and stores them.

Everything slow happens here, off the agent's path, in order for each run: the identity
lookup in the store's history (for a resumed session), building the record and finishing
its spans (:meth:`ttft_probe._run.PendingRun.build`, on the builder thread), then writing
the store with its outbox rows, kicking the deliverer (:mod:`ttft_probe.sinks.outbox`) and
calling user callbacks (on the writer thread). A slow or failing disk therefore never
delays the bytes the agent prints, nor the records of later turns; a history lookup waits
until every run built before it is written, so it always sees them. :meth:`Recorder.flush`
waits (bounded) until everything queued so far is written.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from ttft_probe._logonce import LogOnce

if TYPE_CHECKING:
    from ttft_probe._run import PendingRun, RunResult
    from ttft_probe.record import RunRecord
    from ttft_probe.sinks.outbox import Deliverer, DetachedFlush, SinkSpec
    from ttft_probe.sinks.store import Store
    from ttft_probe.waterfall import Section

__all__ = ["DETACHED", "Recorder"]

DETACHED: Final = "detached"
"""``deliver`` value: a detached ``ttft-probe flush`` delivers, started by ``deliver()``."""

_log = logging.getLogger("ttft_probe")


class Recorder:
    """Builds closed turns' runs, stores them and hands them to callbacks, off the hot path.

    Args:
        store: Opens the store lazily in the writer thread (``None``: no store).
        on_record: Called with each record after it is stored; exceptions are logged.
        sinks: The configured sinks: each run gets an outbox row per sink.
        deliver: ``True``: deliver from a thread of this process (a
            :class:`~ttft_probe.sinks.outbox.Deliverer`). :data:`DETACHED`: a detached
            ``ttft-probe flush`` delivers (a :class:`~ttft_probe.sinks.outbox.DetachedFlush`,
            started by :meth:`deliver`); ``ttft-probe run`` does this, to deliver nothing in
            its own process. ``False``: leave the outbox to another process.
        flush_store: With :data:`DETACHED`, the flush's ``--store`` (``None``: default).
        store_path: The store file's path, for runs it cannot take (:meth:`spill`).
    """

    def __init__(
        self,
        store: Callable[[], Store] | None,
        on_record: Callable[[RunRecord], None] | None = None,
        sinks: Sequence[SinkSpec] = (),
        *,
        deliver: bool | Literal["detached"] = True,
        flush_store: str | None = None,
        store_path: Callable[[], Path] | None = None,
    ) -> None:
        self._open_store = store
        self._specs = list(sinks) if store is not None else []
        self._deliver = deliver
        self._flush_store = flush_store
        self._deliverer: Deliverer | DetachedFlush | None = None
        self._start_lock = threading.Lock()
        self._store: Store | None = None
        self._store_path = store_path
        self._waiting: dict[str, RunResult] = {}  # built, not yet written
        self._open_early = False
        self._on_record = on_record
        self._queue: queue.SimpleQueue[PendingRun | None] = queue.SimpleQueue()
        self._writes: queue.SimpleQueue[RunResult] = queue.SimpleQueue()
        self._pending = 0  # submitted, not yet written (or lost)
        self._unwritten = 0  # built, not yet written
        self._cond = threading.Condition()
        self._store_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._warn = LogOnce(_log)

    def start_delivery(self) -> None:
        """Start the deliverer, which imports the sinks' SDKs in its own thread.

        Called right after the agent was spawned, so the imports overlap the agent's run
        rather than the probe's own start-up. Idempotent; a no-op without sinks. With
        :data:`DETACHED` this only prepares the flush; :meth:`deliver` starts it.
        """
        if not self._specs or not self._deliver or self._deliverer is not None:
            return
        if self._open_store is None:
            return
        with self._start_lock:
            if self._deliverer is None:
                from ttft_probe.sinks import outbox  # noqa: PLC0415 - only with sinks

                self._deliverer = (
                    outbox.DetachedFlush(self._flush_store)
                    if self._deliver == DETACHED
                    else outbox.Deliverer(self._specs, self._open_store)
                )

    def open_store_early(self) -> None:
        """Start the recorder's threads now; the writer opens the store as its first act.

        Called right after the spawn: starting threads, importing ``sqlite3``, connecting
        and checking the schema then overlap the agent's run instead of delaying the first
        record (and the exit of ``ttft-probe run``, which waits for it). The connection is
        the writer thread's own, the one its writes use (a damaged file is set aside by
        the thread that finds it). A store that cannot be opened is met again, and
        reported, by the first write. Idempotent.
        """
        if self._open_store is not None:
            self._open_early = True
        self._start_threads()

    def _start_threads(self) -> None:
        with self._cond:
            if not self._threads:
                self._threads = [
                    threading.Thread(target=loop, name=f"ttft-probe-{name}", daemon=True)
                    for name, loop in (("recorder", self._build_loop), ("writer", self._write_loop))
                ]
                for thread in self._threads:
                    thread.start()

    def submit(self, run: PendingRun) -> None:
        """Queue a closed turn to build and store; never blocks, never raises."""
        with self._cond:
            self._pending += 1
        self._start_threads()
        self._queue.put(run)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every submitted run is built and written.

        Returns ``True`` if so. Must not be called from the recorder thread itself.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def deliver(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the delivery of what is stored; ``True`` if done.

        Whatever is not confirmed by then stays in the outbox for the next process or
        ``ttft-probe flush``. With :data:`DETACHED`, this starts the flush (which also
        takes what earlier runs left) and waits for it.
        """
        if self._deliver == DETACHED:
            self.start_delivery()
        if self._deliverer is None:
            return True
        return self._deliverer.wait_idle(timeout)

    def _build_loop(self) -> None:
        while True:
            run = self._queue.get()
            if run is None:
                return
            result = run.build(self._history, self._prefixes)  # never raises
            run = None  # hold no run (nor its tracker) while waiting for the next
            with self._cond:
                if result is None:  # lost: nothing to write
                    self._pending -= 1
                    self._cond.notify_all()
                    continue
                self._unwritten += 1
                self._waiting[result.record.run_id] = result
            self._writes.put(result)
            result = None

    def _write_loop(self) -> None:
        if self._open_early:
            with contextlib.suppress(Exception):  # the first write meets it again, and says so
                self._open()
        while True:
            result: RunResult | None = self._writes.get()
            try:
                assert result is not None  # noqa: S101 - only results are queued
                self._write(result)
            finally:
                with self._cond:
                    if result is not None:
                        self._waiting.pop(result.record.run_id, None)
                result = None
                with self._cond:
                    self._unwritten -= 1
                    self._pending -= 1
                    self._cond.notify_all()

    def _open(self) -> Store:
        with self._store_lock:
            if self._store is None:
                assert self._open_store is not None  # noqa: S101 - the callers checked
                self._store = self._open_store()
            return self._store

    def _history(self, session_id: str) -> tuple[int, str | None]:
        """The store's earlier runs of ``session_id``, once every run built so far is written.

        Builder thread; may block (a store locked by another process).
        """
        if self._open_store is None:
            return 0, None
        with self._cond:
            self._cond.wait_for(lambda: self._unwritten == 0)
        return self._open().session_history(session_id)

    def _prefixes(self, conversation_id: str) -> tuple[bytes, tuple[Section, ...] | None]:
        """The store's salt and the conversation's latest prefix, once earlier runs are written.

        Builder thread; may block. Raises when there is no store (the builder then keeps
        prefixes in memory).
        """
        if self._open_store is None:
            raise LookupError("no store")
        with self._cond:
            self._cond.wait_for(lambda: self._unwritten == 0)
        store = self._open()
        return store.salt(), store.prefix(conversation_id)

    def spill(self) -> list[Path]:
        """Keep every built run the store has not taken yet in a spill file; their paths.

        For a store locked (or slow) beyond the caller's wait: :func:`ttft_probe.sinks.store.
        spill` writes each beside the store (or in the fallback directory) and the next
        process that opens the store adds it, exactly once (should this process's writer
        still get to it, the import skips it). Runs not yet built (a resumed session's
        history lookup waiting on the lock) cannot be kept.
        """
        with self._cond:
            waiting = list(self._waiting.values())
        return [path for path in map(self._spill_one, waiting) if path is not None]

    def _spill_one(self, result: RunResult) -> Path | None:
        if self._store_path is None:
            return None
        from ttft_probe.sinks.store import spill  # noqa: PLC0415 - only when needed

        sinks = [spec.name for spec in self._specs if spec.wants(result)]
        try:
            return spill(
                self._store_path(), result.record, result.times, sinks, result.content,
                requests=result.requests, prefix=result.prefix,
            )  # fmt: skip
        except OSError as exc:
            self._warn.warning("spill", "the run could not be kept for later either: %s", exc)
            return None

    def _write(self, result: RunResult) -> None:
        if self._open_store is not None:
            try:
                sinks = [spec.name for spec in self._specs if spec.wants(result)]
                self._open().add(
                    result.record, result.times, sinks, result.content,
                    requests=result.requests, prefix=result.prefix,
                )  # fmt: skip
                self.start_delivery()
                if self._deliverer is not None:
                    self._deliverer.kick()
            except Exception as exc:  # noqa: BLE001 - the disk never reaches the run
                # Once per recorder: a read-only or full disk fails every run the same way.
                # A StoreError's message names the fix (free space, TTFT_PROBE_HOME).
                kept = self._spill_one(result)
                where = (f"; kept in {kept}, which the next ttft-probe command that opens "
                         "the store adds to it") if kept else ""
                self._warn.warning("store", "the run was not stored: %s%s", exc, where)
        if self._on_record is not None:
            try:
                self._on_record(result.record)
            except Exception:  # noqa: BLE001 - a user callback never reaches the run
                _log.warning("on_record callback raised", exc_info=True)
