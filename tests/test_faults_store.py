"""Store faults under `ttft-probe run` (issue 7): the disk never reaches the agent.

For every fault the agent's stdout, stderr and exit status are compared with the same
child run without the probe (stderr gains exactly one `ttft-probe: warning:` line when a
run could not be stored, naming what failed and the fix), the probe's wall time with
the fault is compared with a healthy store, and the store is read back afterwards.

The faults are real kernel errors, not mocks. The tests run as root, and root ignores
file modes, so `chmod` proves nothing:

- **read-only**: a read-only bind mount (EROFS, for root too) of the store's directory,
  and `chattr +i` (immutable files and directory: EPERM, for root too; ext4);
- **full**: a 16 KiB or 256 KiB tmpfs mounted over the store's directory (ENOSPC on
  every file the store writes, WAL and shared memory included). `RLIMIT_FSIZE` was
  the alternative: it gives EFBIG rather than ENOSPC and is inherited by the agent,
  and `/dev/full` fails one file, not the store's three.

Mounts are made inside a private mount namespace (`unshare -m`, or `unshare -rm` as an
unprivileged user), so nothing outside the test sees them and they vanish with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PROBE, assert_valid, script, stored
from fake_posthog import FakePostHog
from helpers.records import record
from ttft_probe.sinks.store import Store

TIMEOUT = 60
CHILD: list[dict[str, Any]] = [
    {"out": "first line\n"}, {"err": "a warning of its own\n"}, {"out": "answer\n"}, {"exit": 3},
]
SLACK_S = 0.5
"""How much longer than with a healthy store a run may take with a broken one (s)."""
INTEGRITY = ("import sqlite3, sys; "
             "print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")


def _namespace_prefix() -> list[str]:
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    pytest.skip("no private mount namespace here (unshare -m / -rm)")


def in_namespace(shell: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``shell`` (sh) in a private mount namespace; its mounts die with it."""
    return subprocess.run([*_namespace_prefix(), "sh", "-ec", shell], capture_output=True,
                          timeout=TIMEOUT, check=False, env=env)


def q(*argv: str | Path) -> str:
    return shlex.join(str(a) for a in argv)


def probe_run(home: Path, argv: list[str]) -> str:
    """Shell words: `ttft-probe run --quiet -- argv` with TTFT_PROBE_HOME=home."""
    return f"env TTFT_PROBE_HOME={q(home)} {q(*PROBE, 'run', '--quiet', '--', *argv)}"


def direct(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - t0


def healthy_seconds(tmp_path: Path, argv: list[str]) -> float:
    """Wall time of the same probed run on a healthy store (in a namespace, like the faults)."""
    home = tmp_path / "healthy"
    _, seconds = timed(in_namespace, probe_run(home, argv))
    return seconds


def assert_one_warning(without: bytes, under: bytes, *needles: str) -> str:
    """``under`` is ``without`` plus exactly one `ttft-probe: warning:` line holding needles."""
    assert under.startswith(without), under
    extra = under[len(without):].decode()
    [warning] = extra.splitlines()
    assert warning.startswith("ttft-probe: warning: "), warning
    for needle in needles:
        assert needle in warning, warning
    return warning


def seed(path: Path, n: int) -> list[str]:
    """A store at ``path`` holding ``n`` runs, closed (checkpointed into one file)."""
    store = Store(path)
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, n + 1)]
    for i, run_id in enumerate(ids):
        store.add(record(run_id=run_id, started_at=f"2026-11-21T08:00:0{i}.000000+00:00"))
    store.close()
    assert not path.with_name(path.name + "-wal").exists()
    return ids


# --- read-only --------------------------------------------------------------------------------


@pytest.mark.fault("Store", "read-only store directory",
                   outcome="agent untouched; one warning naming the fix and where the run was "
                   "kept ($TMPDIR); earlier runs intact; the run is added once the store can "
                   "be written", records_lost="0")
@pytest.mark.parametrize("case", ["read-only mount, store not created yet",
                                  "read-only mount, existing store",
                                  "chattr +i directory and files"])
def test_read_only_store(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spill_tmp = tmp_path / "tmp"
    spill_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill_tmp))  # the fallback spill directory
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    ro = tmp_path / "ro"
    ro.mkdir()
    home = ro / ("new" if case.endswith("not created yet") else "home")
    earlier = [] if case.endswith("not created yet") else seed(home / "runs.sqlite3", 2)
    healthy = healthy_seconds(tmp_path, argv)
    if case.startswith("chattr"):
        if subprocess.run(["chattr", "-R", "+i", str(ro)], capture_output=True, timeout=10,
                          check=False).returncode != 0:
            pytest.skip("chattr +i is not supported on this file system")
        try:
            under, seconds = timed(in_namespace, probe_run(home, argv))
        finally:
            subprocess.run(["chattr", "-R", "-i", str(ro)], timeout=10, check=True)
    else:
        shell = (f"mount --bind {q(ro)} {q(ro)}; mount -o remount,bind,ro {q(ro)}; "
                 f"exec {probe_run(home, argv)}")
        under, seconds = timed(in_namespace, shell)
    assert under.returncode == without.returncode == 3
    assert under.stdout == without.stdout
    [kept] = spill_tmp.glob("ttft-probe-spill-*/*.json")
    warning = assert_one_warning(without.stderr, under.stderr, "the run was not stored",
                                 str(home / "runs.sqlite3"), "TTFT_PROBE_HOME or --store",
                                 f"kept in {kept}")
    if not case.startswith("chattr"):
        assert "read-only file system" in warning
    assert seconds - healthy < SLACK_S, (seconds, healthy)
    runs = [r["run_id"] for r in stored(home)]  # writable again: `runs` adds the kept run
    assert runs == [*earlier, kept.stem]
    assert not kept.exists()


@pytest.mark.fault("Store", "read-only store directory",
                   outcome="agent untouched; one warning naming the fix and where the run was "
                   "kept ($TMPDIR); earlier runs intact; the run is added once the store can "
                   "be written", records_lost="0")
@pytest.mark.parametrize("wal", ["closed cleanly", "-wal left by `run`"])
def test_regression_runs_lists_a_store_on_a_read_only_disk(wal: str, tmp_path: Path) -> None:
    # Before: opening the store always wrote PRAGMA user_version (and took the write
    # lock), and SQLite cannot open a WAL store without its -shm on a read-only disk, so
    # a store on a read-only disk could not even be listed.
    ro = tmp_path / "ro"
    ids = seed(ro / "runs.sqlite3", 2)
    if wal != "closed cleanly":
        done = subprocess.run([*PROBE, "run", "--quiet", "--store", ro / "runs.sqlite3", "--",
                               "true"], capture_output=True, timeout=TIMEOUT, check=True)
        assert (ro / "runs.sqlite3-wal").stat().st_size > 0, done
        ids = [r["run_id"] for r in stored(ro)]
    listed = in_namespace(f"mount --bind {q(ro)} {q(ro)}; mount -o remount,bind,ro {q(ro)}; "
                          f"exec {q(*PROBE, 'runs', '--all', '--json', '--store', ro / 'runs.sqlite3')}")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(x)["run_id"] for x in listed.stdout.splitlines()] == ids


# --- full -------------------------------------------------------------------------------------


@pytest.mark.fault("Store", "full disk (tiny tmpfs)",
                   outcome="agent untouched; one warning naming the fix; earlier runs intact; "
                   "the run kept in $TMPDIR and added once space is freed",
                   records_lost="0")
def test_regression_full_disk_says_so_instead_of_cannot_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a COMMIT that failed for lack of space was followed by a ROLLBACK that
    # raised "cannot rollback - no transaction is active", hiding the real error, and
    # the message named no fix.
    spill_tmp = tmp_path / "tmp"
    spill_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill_tmp))  # the fallback spill directory
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    ok = script(tmp_path, [{"out": "ok\n"}, {"exit": 0}])
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    healthy = healthy_seconds(tmp_path, argv)
    faulty = (f"t0=$(date +%s%N); {probe_run(disk, argv)} >{q(out / 'stdout')} "
              f"2>{q(out / 'stderr')} || echo $? >{q(out / 'status')}; t1=$(date +%s%N)")
    listing = q(*PROBE, "runs", "--all", "--json", "--store", disk / "runs.sqlite3")
    check = q(sys.executable, "-c", INTEGRITY, disk / "runs.sqlite3")
    shell = "; ".join([
        f"mount -t tmpfs -o size=256k tmpfs {q(disk)}",
        probe_run(disk, ok),
        probe_run(disk, ok),
        f"dd if=/dev/zero of={q(disk / 'fill')} bs=4k 2>/dev/null || true",
        faulty,
        f"echo $((t1 - t0)) >{q(out / 'ns')}",
        f"rm {q(disk / 'fill')}",
        probe_run(disk, ok),
        f"{listing} >{q(out / 'runs')}",
        f"{check} >{q(out / 'integrity')}",
    ])
    done = in_namespace(shell)
    assert done.returncode == 0, done.stderr
    assert (out / "status").read_text().strip() == "3"
    assert (out / "stdout").read_bytes() == without.stdout
    assert_one_warning(without.stderr, (out / "stderr").read_bytes(), "the run was not stored",
                       "database or disk is full", "the disk is full", "TTFT_PROBE_HOME",
                       f"kept in {spill_tmp}")
    assert b"cannot rollback" not in (out / "stderr").read_bytes()
    assert int((out / "ns").read_text()) / 1e9 - healthy < SLACK_S
    runs = [json.loads(x) for x in (out / "runs").read_text().splitlines()]
    # Before the fill, the one kept while it was full (added by the next run), and after.
    assert sorted(r["exit_code"] for r in runs) == [0, 0, 0, 3]
    assert not list(spill_tmp.glob("ttft-probe-spill-*/*.json"))
    assert (out / "integrity").read_text().strip() == "ok"


@pytest.mark.fault("Store", "full disk (tiny tmpfs)",
                   outcome="agent untouched; one warning naming the fix; earlier runs intact; "
                   "the run kept in $TMPDIR and added once space is freed",
                   records_lost="0")
def test_full_disk_before_the_store_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spill_tmp = tmp_path / "tmp"
    spill_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill_tmp))  # the fallback spill directory
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    disk = tmp_path / "disk"
    disk.mkdir()
    healthy = healthy_seconds(tmp_path, argv)
    under, seconds = timed(in_namespace, f"mount -t tmpfs -o size=16k tmpfs {q(disk)}; "
                                         f"exec {probe_run(disk, argv)}")
    assert under.returncode == without.returncode == 3
    assert under.stdout == without.stdout
    assert_one_warning(without.stderr, under.stderr, "the run was not stored", "the disk is full",
                       "TTFT_PROBE_HOME or --store", f"kept in {spill_tmp}")
    assert seconds - healthy < SLACK_S
    [kept] = spill_tmp.glob("ttft-probe-spill-*/*.json")
    assert [r["run_id"] for r in stored(disk)] == [kept.stem]  # the tmpfs is gone: room again


# --- corrupted --------------------------------------------------------------------------------


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "random bytes":
        path.write_bytes(os.urandom(len(data)))
    elif how == "header zeroed":
        path.write_bytes(bytes(100) + data[100:])
    elif how == "pages after the first overwritten":
        path.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))
    elif how == "truncated to its first page":
        path.write_bytes(data[:4096])
    elif how == "not SQLite at all (a text file)":
        path.write_text("runs: []\n" * 50, "utf-8")
    else:
        raise AssertionError(how)


CORRUPTIONS = ["random bytes", "header zeroed", "pages after the first overwritten",
               "truncated to its first page", "not SQLite at all (a text file)"]


@pytest.mark.fault("Store", "corrupted database file",
                   outcome="agent untouched; file moved to `runs.sqlite3.corrupt-<time>` "
                   "byte for byte, a new store holds the run; one warning",
                   records_lost="0 (old file kept aside)")
@pytest.mark.parametrize("how", CORRUPTIONS)
def test_regression_corrupted_store_is_set_aside_and_recreated(
    how: str, tmp_path: Path, probe_home: Path
) -> None:
    # Before: every run failed to store ("file is not a database") and `ttft-probe runs`
    # exited 2, for good, until someone deleted the file by hand.
    db = probe_home / "runs.sqlite3"
    seed(db, 3)
    _corrupt(db, how)
    damaged = db.read_bytes()
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    under = subprocess.run([*PROBE, "run", "--quiet", "--", *argv], capture_output=True,
                           timeout=TIMEOUT, check=False)
    assert under.returncode == without.returncode == 3
    assert under.stdout == without.stdout
    warning = assert_one_warning(without.stderr, under.stderr, "was damaged",
                                 "moved it to runs.sqlite3.corrupt-", "started a new one")
    [aside] = probe_home.glob("runs.sqlite3.corrupt-*")
    assert aside.name in warning
    assert aside.read_bytes() == damaged
    [record] = stored(probe_home)
    assert_valid(record)
    assert record["exit_code"] == 3


@pytest.mark.fault("Store", "corrupted database file found by 5 processes at once",
                   outcome="set aside once (under a lock); all 5 runs in the new store",
                   records_lost="0")
def test_five_processes_finding_a_corrupted_store_set_it_aside_once(
    tmp_path: Path, probe_home: Path
) -> None:
    db = probe_home / "runs.sqlite3"
    seed(db, 3)
    _corrupt(db, "random bytes")
    argv = script(tmp_path, [{"out": "ok\n"}, {"exit": 0}])
    procs = [subprocess.Popen([*PROBE, "run", "--quiet", "--", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(5)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5
    assert [o for o, _ in outs] == [b"ok\n"] * 5
    assert len(list(probe_home.glob("runs.sqlite3.corrupt-*"))) == 1
    warnings = [e for _, e in outs if e]
    assert len(warnings) == 1, warnings  # only the process that moved it says so
    assert len({r["run_id"] for r in stored(probe_home)}) == 5


@pytest.mark.fault("Store", "garbage `-wal` file beside the store",
                   outcome="ignored by SQLite (bad checksums): earlier runs and the new one "
                   "kept, nothing set aside")
def test_garbage_wal_file_is_ignored(tmp_path: Path, probe_home: Path) -> None:
    db = probe_home / "runs.sqlite3"
    ids = seed(db, 3)
    db.with_name("runs.sqlite3-wal").write_bytes(os.urandom(64 * 1024))
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    under = subprocess.run([*PROBE, "run", "--quiet", "--", *argv], capture_output=True,
                           timeout=TIMEOUT, check=False)
    assert (under.returncode, under.stdout, under.stderr) == (3, without.stdout, without.stderr)
    records = stored(probe_home)
    assert [r["run_id"] for r in records][:3] == ids
    assert len(records) == 4
    assert not list(probe_home.glob("*.corrupt-*"))


# --- locked by another process ----------------------------------------------------------------


@contextlib.contextmanager
def locked(db: Path, seconds: float) -> Iterator[None]:
    """Another process's view: an exclusive transaction on ``db`` for ``seconds``."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(seconds, conn.execute, ["COMMIT"])
    release.start()
    try:
        yield
    finally:
        release.cancel()
        release.join()
        if conn.in_transaction:
            conn.execute("COMMIT")
        conn.close()


@pytest.mark.fault("Store", "locked by another process for 0.5 s",
                   outcome="the write waits for the lock; run stored; no warning")
def test_store_locked_briefly_waits_and_stores(tmp_path: Path, probe_home: Path) -> None:
    db = probe_home / "runs.sqlite3"
    ids = seed(db, 1)
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    with locked(db, 0.5):
        under = subprocess.run([*PROBE, "run", "--quiet", "--", *argv], capture_output=True,
                               timeout=TIMEOUT, check=False)
    assert (under.returncode, under.stdout, under.stderr) == (3, without.stdout, without.stderr)
    records = stored(probe_home)
    assert [r["run_id"] for r in records][:1] == ids
    assert len(records) == 2


@pytest.mark.fault("Store", "locked by another process for longer than `run` waits (2 s): "
                   "5 s and 60 s",
                   outcome="agent untouched; probe exits 2 s after it, saying the run was kept "
                   "in a spill file; the next command that opens the store adds it, once",
                   records_lost="0")
@pytest.mark.parametrize("lock_s", [5, 60])
def test_regression_store_locked_beyond_the_bound_spills_and_the_next_command_adds_it(
    tmp_path: Path, probe_home: Path, lock_s: int
) -> None:
    # Before: `run` gave up after 2 s and the run was lost (said on stderr).
    db = probe_home / "runs.sqlite3"
    ids = seed(db, 1)
    argv = script(tmp_path, CHILD)
    without = direct(argv)
    healthy = healthy_seconds(tmp_path, argv)
    t_locked = time.monotonic()
    with locked(db, lock_s):
        under, seconds = timed(direct, [*PROBE, "run", "--quiet", "--", *argv])
        assert seconds < healthy + 2.0 + SLACK_S, (seconds, healthy)
        spill_dir = probe_home / "runs.sqlite3.spill"
        [kept] = spill_dir.glob("*.json")
        time.sleep(max(0.0, lock_s - (time.monotonic() - t_locked)))  # the lock's whole span
    assert under.returncode == 3
    assert under.stdout == without.stdout
    assert_one_warning(without.stderr, under.stderr, f"the store at {db}",
                       "still busy after 2 s (locked by another process",
                       f"the run was kept in {spill_dir}", "TTFT_PROBE_HOME or --store")
    records = stored(probe_home)  # `ttft-probe runs` opens the store: it adds the run
    assert [r["run_id"] for r in records][:1] == ids
    assert len(records) == 2
    assert records[1]["run_id"] == kept.stem
    assert_valid(records[1])
    assert not kept.exists()
    assert len(stored(probe_home)) == 2  # exactly once


@pytest.mark.fault("Store", "50 probes at once with the store locked beyond their wait",
                   outcome="every output and exit code right; all 50 runs spilled, then in "
                   "the store once the lock goes away", records_lost="0")
def test_fifty_probes_with_a_locked_store_lose_nothing(tmp_path: Path, probe_home: Path) -> None:
    db = probe_home / "runs.sqlite3"
    seed(db, 1)
    argvs = [script(tmp_path, [{"out": f"writer {i}\n"}, {"exit": i % 5}]) for i in range(50)]
    with locked(db, 600):
        procs = [subprocess.Popen([*PROBE, "run", "--quiet", "--", *argv],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for argv in argvs]  # fmt: skip
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [i % 5 for i in range(50)]
        assert [o for o, _ in outs] == [f"writer {i}\n".encode() for i in range(50)]
        assert len(list((probe_home / "runs.sqlite3.spill").glob("*.json"))) == 50
    records = stored(probe_home)
    assert len(records) == 51
    assert len({r["run_id"] for r in records}) == 51


# --- 50 writers -------------------------------------------------------------------------------


@pytest.mark.fault("Store", "50 processes writing at once (new store, outbox on)",
                   outcome="every output and exit code right; 50 runs and 50 outbox rows "
                   "stored; no warning")
def test_fifty_processes_writing_at_once(tmp_path: Path, probe_home: Path) -> None:
    with FakePostHog(mode="down") as down:
        env = {**os.environ, "POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": down.host}
        argvs = [script(tmp_path, [{"out": f"writer {i}\n"}, {"exit": i % 5}])
                 for i in range(50)]
        procs = [subprocess.Popen([*PROBE, "run", "--quiet", "--", *argv], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for argv in argvs]
        try:
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                p.kill()
                p.wait(TIMEOUT)
    assert [o for o, _ in outs] == [f"writer {i}\n".encode() for i in range(50)]
    assert [e for _, e in outs] == [b""] * 50
    assert [p.returncode for p in procs] == [i % 5 for i in range(50)]
    records = stored(probe_home)
    assert len({r["run_id"] for r in records}) == len(records) == 50
    assert sorted(r["exit_code"] for r in records) == sorted(i % 5 for i in range(50))
    assert Store(probe_home / "runs.sqlite3").pending() == {"posthog": 50}
