"""The local store: every run in SQLite, written first and durably.

The database lives at ``$TTFT_PROBE_HOME/runs.sqlite3`` when ``TTFT_PROBE_HOME`` is set,
else in the platform's user state directory (``platformdirs.user_state_dir``, e.g.
``~/.local/state/ttft-probe`` on Linux). It runs in WAL mode; ``PRAGMA user_version``
holds the schema version and :data:`MIGRATIONS` brings an older file up to date.

One row per run: the ``run_finished`` record as JSON plus indexed columns for the
queries the CLI makes, and the run's marker times (monotonic ns) for audit.

Faults: a file SQLite reports as damaged (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) is
moved aside to ``runs.sqlite3.corrupt-<UTC time>`` (with its ``-wal``) and a new store
is started in its place, once, under a lock, whichever process finds it first. Any
other failure (a read-only or full disk, a missing directory) raises
:class:`~ttft_probe.errors.StoreError` whose message says what failed and how to fix it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from ttft_probe._home import ENV_HOME, home_dir
from ttft_probe.errors import StoreError
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.waterfall import ModelRequest, Section

if TYPE_CHECKING:
    from ttft_probe.content import CapturedContent

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Store", "default_store_path", "spill", "spill_dirs"]

_log = logging.getLogger("ttft_probe")

T = TypeVar("T")

DB_NAME: Final = "runs.sqlite3"
_DAMAGED: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
"""SQLite primary result codes that mean the file itself is damaged (not the disk)."""

MIGRATIONS: Final[Sequence[str]] = (
    # 1: one row per run.
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        agent TEXT NOT NULL,
        session_id TEXT,
        conversation_id TEXT,
        turn_ordinal INTEGER,
        status TEXT NOT NULL,
        record_json TEXT NOT NULL,
        markers_json TEXT
    );
    CREATE INDEX runs_started_at ON runs (started_at);
    CREATE INDEX runs_agent_started_at ON runs (agent, started_at);
    CREATE INDEX runs_session_id ON runs (session_id);
    """,
    # 2: the outbox — one row per run and configured sink until that sink confirmed it.
    """
    CREATE TABLE deliveries (
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        sink TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        lease_until REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        last_error TEXT,
        delivered_at REAL,
        PRIMARY KEY (run_id, sink)
    );
    CREATE INDEX deliveries_pending ON deliveries (sink, delivered_at, next_attempt_at);
    """,
    # 3: the arm of each run of an A/B experiment (ttft-probe ab), kept out of the record.
    """
    CREATE TABLE experiment_runs (
        run_id TEXT PRIMARY KEY REFERENCES runs (run_id),
        experiment_id TEXT NOT NULL,
        arm TEXT NOT NULL,
        pair INTEGER,
        position INTEGER
    );
    CREATE INDEX experiment_runs_experiment ON experiment_runs (experiment_id, pair);
    """,
    # 4: the prompt and answer text of a run made with the opt-in content capture
    # (ttft_probe.content); NULL for every other run. Kept out of the record.
    """
    ALTER TABLE runs ADD COLUMN content_json TEXT;
    """,
    # 5: a run's model requests (the waterfall, observer only; kept out of the record),
    # each conversation's latest prompt prefix (salted section digests only, no text), and
    # the store's own settings (the per-install salt of those digests).
    """
    ALTER TABLE runs ADD COLUMN requests_json TEXT;
    CREATE TABLE prefixes (
        conversation_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        sections_json TEXT NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open, without hiding the error that got here.

    A ``COMMIT`` that failed on a full disk has often rolled back already; a second
    ``ROLLBACK`` would raise "no transaction is active" in place of the real error.
    """
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _damaged(exc: BaseException) -> bool:
    """Whether SQLite said the database file itself is damaged."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DAMAGED


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _fix(path: Path, exc: BaseException) -> str:
    """How to get past ``exc`` on the store at ``path``: a hint for the user."""
    elsewhere = f"set {ENV_HOME} or --store to a writable location"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    os_errno = getattr(exc, "errno", None)
    folder = next((p for p in path.parents if p.exists()), None)
    try:
        fs = os.statvfs(folder) if folder is not None else None
    except OSError:
        fs = None
    low_space = fs is not None and fs.f_bavail * fs.f_frsize < 256 * 1024
    if (
        primary == sqlite3.SQLITE_FULL
        or os_errno in {errno.ENOSPC, errno.EDQUOT}
        or (low_space and primary in {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN})
    ):
        return f"the disk is full: free some space there, or {elsewhere} on another disk"
    if os_errno == errno.EROFS or (fs is not None and fs.f_flag & os.ST_RDONLY):
        return f"{folder} is on a read-only file system: {elsewhere}"
    if primary == sqlite3.SQLITE_BUSY:
        return "another process kept the store locked; try again"
    return elsewhere


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip()
    except OSError:
        return "unknown-boot"


_BOOT: Final = _boot_id()


def _owner() -> str:
    """Who holds a lease: this boot of this machine, this process."""
    return f"{_BOOT}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    """Whether the process that holds a lease still runs (unknown owners count as alive)."""
    boot, _, pid = owner.rpartition(":")
    if boot != _BOOT or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    # A killed process nobody reaped yet (a zombie) holds nothing any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _times(markers_json: str | None) -> MarkerTimes | None:
    return None if markers_json is None else MarkerTimes(**json.loads(markers_json))


def _sections_json(sections: Sequence[Section]) -> str:
    return json.dumps([[s.name, s.digest.hex(), s.size] for s in sections])


def _requests(requests_json: str | None) -> list[ModelRequest] | None:
    if requests_json is None:
        return None
    return [ModelRequest.from_dict(r) for r in json.loads(requests_json)]


def _content(content_json: str | None) -> CapturedContent | None:
    if content_json is None:
        return None
    from ttft_probe.content import CapturedContent  # noqa: PLC0415 - only with capture on

    return CapturedContent.from_json(content_json)


SPILL_FALLBACK_ENV: Final = "TMPDIR"


def spill_dirs(store_path: Path) -> list[Path]:
    """Where runs the store could not take wait: beside it, then the fallback directory.

    ``<store>.spill/`` next to the store file; if that cannot be written (a read-only or
    full disk), ``ttft-probe-spill-<uid>/`` in the temporary directory (``$TMPDIR``, else
    ``/tmp``), shared by every store of the user (each file names its store).
    """
    temp = os.environ.get(SPILL_FALLBACK_ENV) or "/tmp"  # noqa: S108 - a per-user 0700 dir
    fallback = Path(temp) / f"ttft-probe-spill-{os.getuid()}"
    return [store_path.with_name(store_path.name + ".spill"), fallback]


def _own_private_dir(directory: Path) -> bool:
    """Whether ``directory`` is a real directory of this user that only this user can use.

    The fallback is in a shared ``/tmp``: one made there by someone else (or a link to
    elsewhere) is neither written to nor read from.
    """
    import stat  # noqa: PLC0415

    try:
        info = directory.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    )


def _spilled_files(store_path: Path) -> list[Path]:
    found: list[Path] = []
    for directory in spill_dirs(store_path):
        if directory.is_symlink() or (directory.exists() and not _own_private_dir(directory)):
            continue
        with contextlib.suppress(OSError):  # no such directory: nothing spilled there
            found.extend(sorted(directory.glob("*.json")))
    return found


def spill(
    store_path: Path,
    record: RunRecord,
    times: MarkerTimes | None = None,
    sinks: Sequence[str] = (),
    content: CapturedContent | None = None,
    *,
    requests: Sequence[ModelRequest] | None = None,
    prefix: tuple[str, Sequence[Section]] | None = None,
) -> Path:
    """Keep a run the store could not take (locked, full) in a file, for the next opener.

    Writes what :meth:`Store.add` would have inserted to ``<run_id>.json`` in the first
    of :func:`spill_dirs` that can be written (a temporary file renamed into place, so a
    reader never sees half of it). :meth:`Store.import_spilled` adds it exactly once.

    Raises:
        OSError: Neither directory could be written.
    """
    entry = _entry(
        record, times=times, sinks=sinks, content=content, requests=requests, prefix=prefix
    )
    entry["store"] = str(store_path.resolve())
    data = json.dumps(entry)
    error: OSError | None = None
    for directory in spill_dirs(store_path):
        target = directory / f"{record.run_id}.json"
        temp = directory / f".{record.run_id}.{os.getpid()}.tmp"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _own_private_dir(directory):
                raise PermissionError(f"{directory} is not a private directory of this user")
            temp.write_text(data, "utf-8")
            temp.replace(target)
        except OSError as exc:
            error = exc
            with contextlib.suppress(OSError):
                temp.unlink()
            continue
        return target
    assert error is not None  # noqa: S101 - one attempt per directory failed
    raise error


_spill_warned: set[str] = set()


def _warn_spill(path: Path, exc: BaseException) -> None:
    if str(path) not in _spill_warned:
        _spill_warned.add(str(path))
        _log.warning("a spilled run at %s cannot be read (%s); it was left there", path, exc)


def _entry(
    record: RunRecord,
    *,
    times: MarkerTimes | None,
    sinks: Sequence[str],
    content: CapturedContent | None,
    requests: Sequence[ModelRequest] | None,
    prefix: tuple[str, Sequence[Section]] | None,
) -> dict[str, object]:
    """The rows one run makes: ``runs``, its outbox ``sinks`` and its ``prefix``."""
    markers = None
    if times is not None:
        markers = json.dumps(
            {
                "start_ns": times.start_ns,
                "cli_ready_ns": times.cli_ready_ns,
                "session_init_done_ns": times.session_init_done_ns,
                "prompt_sent_ns": times.prompt_sent_ns,
                "first_token_ns": times.first_token_ns,
                "end_ns": times.end_ns,
                "first_stderr_ns": times.first_stderr_ns,
            }
        )
    row = [
        record.run_id,
        record.started_at,
        record.agent,
        record.session_id,
        record.conversation_id,
        record.turn_ordinal,
        record.status.value,
        record.to_json(),
        markers,
        None if content is None else content.to_json(),
        None if requests is None else json.dumps([r.to_dict() for r in requests]),
    ]
    return {
        "row": row,
        "sinks": list(sinks),
        "prefix": None if prefix is None else [prefix[0], _sections_json(prefix[1])],
    }


def _insert(conn: sqlite3.Connection, entry: dict[str, object]) -> bool:
    """Insert one run's rows (:func:`_entry`) in a transaction; ``False`` if it was there.

    The outbox rows go in only with the run: a run already stored keeps the deliveries
    it has (one of them may be done), so a second insert never makes a second delivery.
    """
    row = entry["row"]
    assert isinstance(row, list)  # noqa: S101 - _entry's shape
    run_id = row[0]
    with _transaction(conn):
        cur = conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, started_at, agent, session_id,"
            " conversation_id, turn_ordinal, status, record_json, markers_json,"
            " content_json, requests_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )
        if cur.rowcount != 1:
            return False
        sinks = entry.get("sinks") or []
        assert isinstance(sinks, list)  # noqa: S101
        conn.executemany(
            "INSERT OR IGNORE INTO deliveries (run_id, sink) VALUES (?, ?)",
            [(run_id, sink) for sink in sinks],
        )
        prefix = entry.get("prefix")
        if isinstance(prefix, list):
            conn.execute(
                "INSERT OR REPLACE INTO prefixes (conversation_id, run_id, sections_json)"
                " VALUES (?, ?, ?)",
                (prefix[0], run_id, prefix[1]),
            )
    return True


def default_store_path() -> Path:
    """Where the store lives: ``$TTFT_PROBE_HOME/runs.sqlite3`` or the user state dir."""
    return home_dir() / DB_NAME


class Store:
    """The SQLite store. Thread-safe: one connection per thread.

    Raises:
        StoreError: The file cannot be created, opened, read or written (the message
            names the fix: free space, or point ``TTFT_PROBE_HOME`` / ``--store``
            elsewhere), or its schema is newer than this version of ttft_probe
            understands. A damaged file is not an error: it is set aside and replaced.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        """Open (creating or migrating) the store at ``path`` (default: the default path)."""
        self.path = Path(path) if path is not None else default_store_path()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connect()
        try:
            self.import_spilled()
        except Exception as exc:  # noqa: BLE001 - still locked, say: the next opener adds them
            _log.debug("spilled runs not added yet: %s", exc)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if _inode(self.path) == self._local.inode:
                return conn
            # Another process set the file aside (or it was deleted): follow the path.
            self.close()
        for attempt in (1, 2):
            inode = _inode(self.path)
            try:
                conn = self._open()
            except StoreError:
                raise
            except sqlite3.Error as exc:
                if attempt == 1 and _damaged(exc):
                    self._set_aside(inode, exc)
                    continue
                conn = self._open_read_only()
                if conn is None:
                    raise self._error("open", exc) from exc
            except OSError as exc:
                raise self._error("create", exc) from exc
            self._local.conn = conn
            self._local.inode = _inode(self.path)
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            with self._lock:
                self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_read_only(self) -> sqlite3.Connection | None:
        """Open a store on a read-only disk for reading, or ``None``.

        SQLite cannot open a WAL database whose directory it cannot write unless its
        ``-shm`` exists. Without a ``-wal`` beside it (nothing to replay), the file can be
        read as ``immutable``; writes then fail with "attempt to write a readonly database".
        """
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            if not self.path.is_file() or os.access(self.path.parent, os.W_OK):
                return None
            if wal.exists() and wal.stat().st_size > 0:
                return None
        except OSError:
            return None
        uri = f"{self.path.resolve().as_uri()}?immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error:
            version = None
        if version != SCHEMA_VERSION:
            conn.close()
            return None
        return conn

    def _error(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"cannot {action} the run store at {self.path}: {exc}; {_fix(self.path, exc)}"
        )

    def _run(self, action: str, op: Callable[[sqlite3.Connection], T]) -> T:
        """``op`` on this thread's connection; a damaged file is set aside and ``op`` retried.

        Raises:
            StoreError: Any other SQLite failure, with the fix in its message.
        """
        for attempt in (1, 2):
            conn = self._connect()
            inode = self._local.inode
            try:
                return op(conn)
            except sqlite3.Error as exc:
                if attempt == 1 and _damaged(exc):
                    self._set_aside(inode, exc)
                    continue
                raise self._error(action, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _set_aside(self, inode: int | None, exc: BaseException) -> None:
        """Move a damaged store (and its ``-wal``) aside so that a new one can start.

        ``inode`` is the file that failed. Under an exclusive lock, so that two processes
        that both found the damage move it once: a process that comes second finds a
        different file at the path (the new store) and leaves it alone.

        Raises:
            StoreError: The file cannot be moved (a read-only directory, say).
        """
        self.close()
        lock_path = self.path.with_name(self.path.name + ".lock")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            with lock_path.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if inode is None or _inode(self.path) != inode:
                    return  # already replaced by another process (or gone)
                self.path.rename(aside)
                for suffix in ("-wal", "-journal", "-shm"):
                    side = self.path.with_name(self.path.name + suffix)
                    with contextlib.suppress(FileNotFoundError):
                        side.rename(aside.with_name(aside.name + suffix))
        except OSError as err:
            msg = (
                f"the run store at {self.path} is damaged ({exc}) and cannot be moved aside: "
                f"{err}; {_fix(self.path, err)}"
            )
            raise StoreError(msg) from err
        _log.warning(
            "the run store at %s was damaged (%s): moved it to %s and started a new one",
            self.path, exc, aside.name,
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return  # the common case: no write, no lock
        with _transaction(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                msg = (
                    f"the run store at {self.path} has schema {version}, newer than this "
                    f"ttft_probe understands ({SCHEMA_VERSION}); upgrade ttft-probe"
                )
                raise StoreError(msg)
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def add(
        self,
        record: RunRecord,
        times: MarkerTimes | None = None,
        sinks: Sequence[str] = (),
        content: CapturedContent | None = None,
        *,
        requests: Sequence[ModelRequest] | None = None,
        prefix: tuple[str, Sequence[Section]] | None = None,
    ) -> None:
        """Insert one run, and an outbox row per sink in ``sinks``, in one transaction.

        Idempotent by ``run_id``. ``times`` are the run's marker times (monotonic ns).
        ``content`` is the run's captured prompt and answer text (opt-in; else ``None``).
        ``requests`` is its waterfall (observer only); ``prefix`` is ``(conversation_id,
        salted section digests)`` of its first generation request, which becomes the
        conversation's latest prefix.

        Raises:
            StoreError: The run could not be written (the message names the fix).
        """
        entry = _entry(
            record, times=times, sinks=sinks, content=content, requests=requests, prefix=prefix
        )
        self._run("write to", lambda conn: _insert(conn, entry))

    def import_spilled(self) -> int:
        """Add the runs spilled for this store (:func:`spill`) and delete their files.

        Exactly once: a run already in the store (its own process wrote it after all, or
        another process imported the file first) is skipped with its outbox rows, so no
        sink gets it twice. A file that cannot be read is left where it is (logged once
        per process). Called whenever a store is opened; returns how many runs it added.
        """
        added = 0
        for path in _spilled_files(self.path):
            try:
                entry = json.loads(path.read_text("utf-8"))
                if not isinstance(entry, dict) or not isinstance(entry.get("row"), list):
                    raise ValueError("not a spilled run")  # noqa: TRY004
            except (OSError, ValueError) as exc:
                _warn_spill(path, exc)
                continue
            if entry.get("store") != str(self.path.resolve()):
                continue  # another store's, in the shared fallback directory
            try:
                added += int(self._run("write to", functools.partial(_insert, entry=entry)))
            except StoreError:
                raise  # the store is busy or failing: the next opener tries again
            except Exception as exc:  # noqa: BLE001 - a malformed file is left, said once
                _warn_spill(path, exc)
                continue
            with contextlib.suppress(FileNotFoundError):  # another process got there first
                path.unlink()
        return added

    # --- the outbox ------------------------------------------------------------------

    def claim(
        self, sink: str, limit: int, *, lease_s: float, now: float, due_only: bool = True
    ) -> list[
        tuple[RunRecord, MarkerTimes | None, CapturedContent | None, tuple[ModelRequest, ...]]
    ]:
        """Lease up to ``limit`` undelivered runs of ``sink`` for ``lease_s`` seconds.

        Each comes as (record, marker times or ``None``, captured content or ``None``,
        model requests: the waterfall, empty when the run was made without the observer).

        A leased row is invisible to other claims (another probe process delivering at
        the same time) until it is settled or its lease runs out (a process killed
        mid-delivery). ``due_only``: skip rows whose backoff has not expired. ``now`` is
        Unix time in seconds (wall clock: leases outlive the process).
        """
        # Backoff applies unless the caller delivers everything now (`ttft-probe flush`).
        not_before = now if due_only else float("inf")
        return self._run("claim runs in", lambda conn: self._claim(
            conn, sink, limit, lease_s=lease_s, now=now, not_before=not_before))

    @staticmethod
    def _claim(
        conn: sqlite3.Connection,
        sink: str,
        limit: int,
        *,
        lease_s: float,
        now: float,
        not_before: float,
    ) -> list[
        tuple[RunRecord, MarkerTimes | None, CapturedContent | None, tuple[ModelRequest, ...]]
    ]:
        with _transaction(conn):
            # Leases held by processes that died (SIGKILL mid-delivery) are free at once.
            holders = conn.execute(
                "SELECT DISTINCT lease_owner FROM deliveries WHERE sink = ?"
                " AND delivered_at IS NULL AND lease_until > ?",
                (sink, now),
            ).fetchall()
            dead = [h for (h,) in holders if h is not None and not _owner_alive(h)]
            rows = conn.execute(
                "SELECT d.run_id, r.record_json, r.markers_json, r.content_json,"
                " r.requests_json"
                " FROM deliveries d"
                " JOIN runs r ON r.run_id = d.run_id"
                " WHERE d.sink = ? AND d.delivered_at IS NULL AND d.next_attempt_at <= ?"
                " AND (d.lease_until <= ? OR d.lease_owner IN (SELECT value FROM json_each(?)))"
                " ORDER BY r.started_at, d.rowid LIMIT ?",
                (sink, not_before, now, json.dumps(dead), limit),
            ).fetchall()
            owner = _owner()
            conn.executemany(
                "UPDATE deliveries SET lease_until = ?, lease_owner = ?"
                " WHERE run_id = ? AND sink = ?",
                [(now + lease_s, owner, run_id, sink) for run_id, *_ in rows],
            )
        return [
            (
                RunRecord.from_dict(json.loads(rec)),
                _times(markers),
                _content(content),
                tuple(_requests(requests) or ()),
            )
            for _, rec, markers, content, requests in rows
        ]

    def settle(
        self,
        sink: str,
        delivered: Sequence[str],
        failed: Sequence[str],
        *,
        now: float,
        error: str | None = None,
    ) -> None:
        """Mark runs delivered (confirmed by ``sink``) or failed (retried after backoff).

        The backoff after the n-th failed attempt is min(2**n, 300) seconds.
        """

        def update(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    "UPDATE deliveries SET delivered_at = ?, lease_until = 0, last_error = NULL"
                    " WHERE run_id = ? AND sink = ?",
                    [(now, run_id, sink) for run_id in delivered],
                )
                conn.executemany(
                    "UPDATE deliveries SET attempts = attempts + 1, lease_until = 0,"
                    " last_error = ?, next_attempt_at = ? + MIN(300, 1 << MIN(attempts + 1, 9))"
                    " WHERE run_id = ? AND sink = ?",
                    [(error, now, run_id, sink) for run_id in failed],
                )

        self._run("write to", update)

    def pending(self) -> dict[str, int]:
        """Undelivered runs per sink."""
        rows = self._run("read", lambda conn: conn.execute(
            "SELECT sink, COUNT(*) FROM deliveries WHERE delivered_at IS NULL GROUP BY sink"
        ).fetchall())
        return dict(rows)

    def last(self, n: int | None = None) -> list[RunRecord]:
        """The ``n`` most recent runs (all when ``None``), oldest first."""
        if n is None:
            rows = self._run("read", lambda conn: conn.execute(
                "SELECT record_json FROM runs ORDER BY started_at, rowid"
            ).fetchall())
        else:
            rows = self._run("read", lambda conn: conn.execute(
                "SELECT record_json FROM (SELECT record_json, started_at, rowid FROM runs"
                " ORDER BY started_at DESC, rowid DESC LIMIT ?) ORDER BY started_at, rowid",
                (n,),
            ).fetchall())
        return [RunRecord.from_dict(json.loads(r[0])) for r in rows]

    def find(self, prefix: str, limit: int = 4) -> list[RunRecord]:
        """Up to ``limit`` runs whose ``run_id`` starts with ``prefix`` (lower case), by id.

        Matched in SQL (no record is decoded but the matches), so a large store answers
        as fast as a small one.
        """
        wanted = prefix.lower()
        rows = self._run("read", lambda conn: conn.execute(
            "SELECT record_json FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id"
            " LIMIT ?",
            (len(wanted), wanted, limit),
        ).fetchall())
        return [RunRecord.from_dict(json.loads(r[0])) for r in rows]

    def __iter__(self) -> Iterator[RunRecord]:
        """Every run, oldest first."""
        return iter(self.last())

    def marker_times(self, run_id: str) -> MarkerTimes | None:
        """The stored marker times (monotonic ns) of a run, ``None`` if unknown."""
        row = self._run("read", lambda conn: conn.execute(
            "SELECT markers_json FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone())
        if row is None or row[0] is None:
            return None
        return MarkerTimes(**json.loads(row[0]))

    def content(self, run_id: str) -> CapturedContent | None:
        """The prompt and answer text captured with a run (``--capture-content``).

        ``None`` when the run is unknown or was made without content capture.
        """
        row = self._run("read", lambda conn: conn.execute(
            "SELECT content_json FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone())
        return None if row is None else _content(row[0])

    def requests(self, run_id: str) -> list[ModelRequest] | None:
        """A run's model requests (the waterfall), ``None`` without the observer."""
        row = self._run("read", lambda conn: conn.execute(
            "SELECT requests_json FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone())
        return None if row is None else _requests(row[0])

    def prefix(self, conversation_id: str) -> tuple[Section, ...] | None:
        """The salted section digests of the conversation's latest turn, ``None`` if none."""
        row = self._run("read", lambda conn: conn.execute(
            "SELECT sections_json FROM prefixes WHERE conversation_id = ?", (conversation_id,)
        ).fetchone())
        if row is None:
            return None
        return tuple(
            Section(name, bytes.fromhex(digest), int(size))
            for name, digest, size in json.loads(row[0])
        )

    def salt(self) -> bytes:
        """This store's secret salt for prefix digests (made once, on first use)."""

        def read_or_make(conn: sqlite3.Connection) -> str:
            with _transaction(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES ('prefix_salt', ?)",
                    (os.urandom(32).hex(),),
                )
                row = conn.execute(
                    "SELECT value FROM settings WHERE key = 'prefix_salt'"
                ).fetchone()
            return str(row[0])

        return bytes.fromhex(self._run("write to", read_or_make))

    def session_history(self, session_id: str) -> tuple[int, str | None]:
        """For a resumed session: (runs stored with this session id, their conversation id).

        The turn ordinal of a resumed run is the number of earlier turns plus one; the
        conversation id is carried over from the session's first run.
        """

        def query(conn: sqlite3.Connection) -> tuple[tuple[int, int | None], tuple[str] | None]:
            row = conn.execute(
                "SELECT COUNT(*), MAX(turn_ordinal) FROM runs WHERE session_id = ?", (session_id,)
            ).fetchone()
            conv = conn.execute(
                "SELECT conversation_id FROM runs WHERE session_id = ?"
                " AND conversation_id IS NOT NULL ORDER BY started_at LIMIT 1",
                (session_id,),
            ).fetchone()
            return row, conv

        (count, max_turn), conv = self._run("read", query)
        return max(count, max_turn or 0), (conv[0] if conv else None)

    def close(self) -> None:
        """Close this thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # --- A/B experiments (ttft-probe ab) ------------------------------------------------

    def add_experiment_run(
        self, run_id: str, experiment_id: str, arm: str, pair: int | None, position: int | None
    ) -> None:
        """Tag a run as part of the A/B experiment ``experiment_id``; idempotent by ``run_id``.

        ``arm`` is ``fresh``, ``resumed`` or ``priming``; ``pair`` is 1-based (``None`` for
        the priming run); ``position`` is the run's place in its pair (1 = ran first).
        """

        def insert(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO experiment_runs"
                    " (run_id, experiment_id, arm, pair, position) VALUES (?,?,?,?,?)",
                    (run_id, experiment_id, arm, pair, position),
                )

        self._run("write to", insert)

    def experiment_runs(
        self, experiment_id: str
    ) -> list[tuple[RunRecord, str, int | None, int | None]]:
        """The stored runs of an experiment as (record, arm, pair, position), in pair order."""
        rows = self._run("read", lambda conn: conn.execute(
            "SELECT r.record_json, e.arm, e.pair, e.position FROM experiment_runs e"
            " JOIN runs r ON r.run_id = e.run_id WHERE e.experiment_id = ?"
            " ORDER BY e.pair IS NOT NULL, e.pair, e.position",
            (experiment_id,),
        ).fetchall())
        return [
            (RunRecord.from_dict(json.loads(rec)), arm, pair, pos) for rec, arm, pair, pos in rows
        ]
