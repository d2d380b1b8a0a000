"""The outbox: confirmed delivery, backoff, leases across processes, and flush."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from helpers.records import record
from helpers.waterfall import title_and_generation
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.sinks._base import Delivery
from ttft_probe.sinks.outbox import Deliverer, Outbox, SinkSpec, configured_sinks, started_wall_ns
from ttft_probe.sinks.store import Store


class RecordingSink:
    """A sink that confirms what it is told to; shared state lets tests flip it."""

    name: ClassVar[str] = "recording"
    up = True
    received: ClassVar[list[str]] = []
    lock = threading.Lock()

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> RecordingSink | None:
        return cls() if env.get("RECORDING_SINK") else None

    def deliver(self, batch: Sequence[Delivery], timeout_s: float) -> list[bool]:
        with self.lock:
            if not type(self).up:
                return [False] * len(batch)
            self.received.extend(d.record.run_id for d in batch)
            return [True] * len(batch)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset() -> None:
    RecordingSink.up = True
    RecordingSink.received.clear()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _runs(store: Store, n: int, sinks: Sequence[str] = ("recording",)) -> list[RunRecord]:
    records = [record(run_id=f"00000000-0000-4000-8000-{i:012d}",
                       started_at=f"2026-11-21T08:00:{i % 60:02d}.000000+00:00") for i in range(n)]
    for r in records:
        store.add(r, MarkerTimes(start_ns=10, first_token_ns=20), sinks)
    return records


def test_a_run_leaves_the_outbox_only_when_confirmed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    clock = Clock()
    records = _runs(store, 3)
    assert store.pending() == {"recording": 3}
    RecordingSink.up = False
    result = Outbox(store, [RecordingSink()], clock).deliver_pending()
    assert (result["recording"].delivered, result["recording"].failed) == (0, 3)
    assert store.pending() == {"recording": 3}
    # Backing off: not retried before its time …
    RecordingSink.up = True
    assert Outbox(store, [RecordingSink()], clock).deliver_pending()["recording"].delivered == 0
    clock.now += 2.5
    assert Outbox(store, [RecordingSink()], clock).deliver_pending()["recording"].delivered == 3
    assert store.pending() == {}
    assert RecordingSink.received == [r.run_id for r in records]


def test_flush_ignores_the_backoff(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    clock = Clock()
    _runs(store, 2)
    RecordingSink.up = False
    Outbox(store, [RecordingSink()], clock).deliver_pending()
    RecordingSink.up = True
    seen: list[int] = []
    result = Outbox(store, [RecordingSink()], clock).deliver_pending(
        due_only=False, progress=lambda _sink, n: seen.append(n))
    assert result["recording"].delivered == 2
    assert seen == [2]


def test_the_outbox_hands_each_sink_the_runs_waterfall(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    times = MarkerTimes(start_ns=10, first_token_ns=2_000_000_000)
    requests = title_and_generation(10)
    observed = record(run_id="00000000-0000-4000-8000-000000000001",
                      started_at="2026-11-21T08:00:00.000000+00:00")
    plain = record(run_id="00000000-0000-4000-8000-000000000002",
                   started_at="2026-11-21T08:00:01.000000+00:00")
    store.add(observed, times, ["recording"], requests=requests)
    store.add(plain, times, ["recording"])
    seen: list[Delivery] = []

    class Keeping(RecordingSink):
        def deliver(self, batch: Sequence[Delivery], timeout_s: float) -> list[bool]:
            seen.extend(batch)
            return super().deliver(batch, timeout_s)

    assert Outbox(store, [Keeping()]).deliver_pending()["recording"].delivered == 2
    by_run = {d.record.run_id: d for d in seen}
    waterfall = by_run[observed.run_id].requests
    assert [r.to_dict() for r in waterfall] == [r.to_dict() for r in requests]
    assert by_run[observed.run_id].first_generation == waterfall[1]
    assert by_run[plain.run_id].requests == ()
    assert by_run[plain.run_id].first_generation is None


def test_a_claimed_row_is_invisible_until_its_lease_runs_out(tmp_path: Path) -> None:
    # Process A claims and is SIGKILLed before settling: B must not deliver it at once,
    # and must deliver it once the lease expired.
    store = Store(tmp_path / "s.sqlite3")
    clock = Clock()
    _runs(store, 1)
    assert len(store.claim("recording", 10, lease_s=60, now=clock.now)) == 1
    assert Outbox(store, [RecordingSink()], clock).deliver_pending()["recording"].delivered == 0
    clock.now += 61
    assert Outbox(store, [RecordingSink()], clock).deliver_pending()["recording"].delivered == 1
    assert len(RecordingSink.received) == 1


def test_concurrent_outboxes_deliver_each_run_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    records = _runs(Store(path), 300)
    threads = [threading.Thread(target=lambda: Outbox(Store(path), [RecordingSink()])
                                .deliver_pending()) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(RecordingSink.received) == sorted(r.run_id for r in records)


def test_deliverer_thread_delivers_after_a_kick(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spec = SinkSpec("recording", "test_outbox:RecordingSink", {"RECORDING_SINK": "1"})
    deliverer = Deliverer([spec], lambda: Store(path))
    records = _runs(Store(path), 5)
    deliverer.kick()
    assert deliverer.wait_idle(10)
    assert sorted(RecordingSink.received) == sorted(r.run_id for r in records)
    deliverer.close()


def test_sinks_are_switched_on_by_their_own_variables() -> None:
    assert configured_sinks({}) == []
    names = [s.name for s in configured_sinks({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "POSTHOG_API_KEY": "k",
        "LANGFUSE_PUBLIC_KEY": "p", "LANGFUSE_SECRET_KEY": "s"})]
    assert names == ["otlp", "posthog", "langfuse"]
    assert configured_sinks({"LANGFUSE_PUBLIC_KEY": "p"}) == []
    assert configured_sinks({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                             "OTEL_SDK_DISABLED": "true"}) == []


def test_started_wall_ns_keeps_microseconds() -> None:
    assert started_wall_ns("1970-01-01T00:00:01.000002+00:00") == 1_000_002_000


def test_a_lease_held_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "s.sqlite3"
    _runs(Store(path), 2)
    # Another process claims both rows, then is SIGKILLed before it can settle them.
    code = ("import sys, time, os, signal\n"
            "from ttft_probe.sinks.store import Store\n"
            "Store(sys.argv[1]).claim('recording', 10, lease_s=600, now=time.time())\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60, check=False)
    assert done.returncode == -9
    assert Outbox(Store(path), [RecordingSink()]).deliver_pending()["recording"].delivered == 2
