"""The outbox: deliver every stored run to every configured sink, exactly once per uuid.

Each run is written to the local store first, with one ``deliveries`` row per sink that
was configured at the time (see :class:`~ttft_probe.sinks.store.Store`). A row leaves the
outbox only when its sink confirmed the run (:meth:`Sink.deliver` returned ``True``);
failures back off (2, 4, 8 … 300 s), a process killed mid-delivery leaves its leased rows
to the next process once the lease runs out, and ``ttft-probe flush`` delivers whatever
is left. Sinks are idempotent per run (PostHog ``uuid`` = ``run_id``; fixed span ids for
OTLP and Langfuse), so a retry after an unconfirmed success is not counted twice.

Who delivers: a :class:`Deliverer` thread of the process that stored the runs (the
library's default), or a :class:`DetachedFlush`, a ``ttft-probe flush`` process of its
own started once the runs are stored (``ttft-probe run``, which must not deliver in its
own process). The recorder (:mod:`ttft_probe._recorder`) holds one or the other and
drives both the same way: :meth:`kick` after a run is stored, :meth:`wait_idle` at close.

:data:`SINKS` is the one list of the sinks that exist: what switches each on (the
ecosystem's own variables) and which runs it takes. Their SDKs are imported only when
switched on, and only in the deliverer's thread, never on the agent's path:

========  ==============================================================================
sink      switched on by
========  ==============================================================================
otlp      ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
          (only runs whose spans no application pipeline exported)
posthog   ``POSTHOG_API_KEY`` (or ``POSTHOG_PROJECT_API_KEY``); ``POSTHOG_HOST``
langfuse  ``LANGFUSE_PUBLIC_KEY`` and ``LANGFUSE_SECRET_KEY``; ``LANGFUSE_HOST``
========  ==============================================================================
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import attrs

from ttft_probe.sinks._base import Delivery, Sink

if TYPE_CHECKING:
    from ttft_probe._run import RunResult
    from ttft_probe.sinks.store import Store

__all__ = [
    "SINKS",
    "Deliverer",
    "DetachedFlush",
    "Outbox",
    "RegisteredSink",
    "SinkSpec",
    "configured_sinks",
    "start_flush",
    "switch_on_hint",
]

_log = logging.getLogger("ttft_probe")

LEASE_S: Final = 60.0
"""How long a claimed row stays invisible to other processes (s, wall clock)."""
BATCH: Final = 100


@attrs.frozen
class SinkSpec:
    """A sink that the environment switches on, not yet imported.

    ``spans_only``: only runs whose spans still need delivery
    (:attr:`RunResult.needs_span_delivery`) get an outbox row for it.
    """

    name: str
    target: str  # "module:Class"
    env: Mapping[str, str] = attrs.field(repr=False)
    spans_only: bool = False

    def build(self) -> Sink | None:
        """Import the sink and build it from the environment (may raise ConfigError)."""
        module_name, _, cls_name = self.target.partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        sink: Sink | None = cls.from_environment(self.env)
        return sink

    def wants(self, result: RunResult) -> bool:
        """Whether ``result`` gets an outbox row for this sink."""
        return not self.spans_only or result.needs_span_delivery


@attrs.frozen
class RegisteredSink:
    """One row of :data:`SINKS`.

    Attributes:
        name: The outbox key (:attr:`Sink.name`).
        target: ``"module:Class"`` of the sink, imported only when it is switched on.
        switched_on_by: Groups of variables; any group whose variables are all set
            switches the sink on.
        spans_only: Only runs whose spans no application pipeline exported get a row:
            the OTLP sink sends the spans the private provider made but did not export.
    """

    name: str
    target: str
    switched_on_by: tuple[tuple[str, ...], ...]
    spans_only: bool = False

    def switched_on(self, env: Mapping[str, str]) -> bool:
        """Whether ``env`` switches this sink on."""
        return any(all(env.get(var) for var in group) for group in self.switched_on_by)


SINKS: Final = (
    RegisteredSink(
        "otlp",
        "ttft_probe.sinks.otlp:OtlpSink",
        (("OTEL_EXPORTER_OTLP_ENDPOINT",), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",)),
        spans_only=True,
    ),
    RegisteredSink(
        "posthog",
        "ttft_probe.sinks.posthog:PostHogSink",
        (("POSTHOG_API_KEY",), ("POSTHOG_PROJECT_API_KEY",)),
    ),
    RegisteredSink(
        "langfuse",
        "ttft_probe.sinks.langfuse:LangfuseSink",
        (("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"),),
    ),
)
"""The sinks that exist, in delivery order."""


def configured_sinks(env: Mapping[str, str] | None = None) -> list[SinkSpec]:
    """The sinks the environment switches on (cheap: reads variables, imports nothing)."""
    env = dict(os.environ if env is None else env)
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    return [
        SinkSpec(row.name, row.target, env, spans_only=row.spans_only)
        for row in SINKS
        if row.switched_on(env)
    ]


def switch_on_hint() -> str:
    """How to switch a sink on, for a message: each sink's first group of variables.

    ``OTEL_EXPORTER_OTLP_ENDPOINT, POSTHOG_API_KEY, or LANGFUSE_PUBLIC_KEY and
    LANGFUSE_SECRET_KEY``.
    """
    ways = [" and ".join(row.switched_on_by[0]) for row in SINKS]
    return ", ".join(ways[:-1]) + ", or " + ways[-1] if len(ways) > 1 else ways[0]


def started_wall_ns(started_at: str) -> int:
    """Unix ns of a record's ``started_at`` (ISO-8601 UTC, µs resolution)."""
    moment = datetime.fromisoformat(started_at)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@attrs.define
class SinkResult:
    """What one delivery pass did for one sink."""

    delivered: int = 0
    failed: int = 0
    error: str | None = None


class Outbox:
    """Delivers the store's pending rows to built sinks.

    Args:
        store: The store holding runs and their outbox rows.
        sinks: Built sinks, by name.
        clock: Wall clock in seconds (leases and backoff outlive the process).
    """

    def __init__(
        self, store: Store, sinks: Sequence[Sink], clock: Callable[[], float] = time.time
    ) -> None:
        """See the class docstring."""
        self._store = store
        self._sinks = list(sinks)
        self._clock = clock

    def deliver_pending(
        self,
        *,
        due_only: bool = True,
        timeout_s: float = 10.0,
        progress: Callable[[str, int], None] | None = None,
    ) -> dict[str, SinkResult]:
        """One pass: deliver every claimable row, sink by sink, in batches.

        A sink whose whole batch failed is left alone for the rest of the pass (its
        backend is down; its rows back off). ``due_only=False`` ignores the backoff (for
        ``flush``). ``progress(sink, n)`` is told of each settled batch. Never raises.
        """
        results: dict[str, SinkResult] = {}
        for sink in self._sinks:
            result = results.setdefault(sink.name, SinkResult())
            while True:
                now = self._clock()
                try:
                    claimed = self._store.claim(
                        sink.name, BATCH, lease_s=LEASE_S, now=now, due_only=due_only
                    )
                except Exception as exc:  # noqa: BLE001 - the store is retried next pass
                    result.error = f"store: {exc}"
                    break
                if not claimed:
                    break
                batch = [
                    Delivery(record, times, started_wall_ns(record.started_at), content, requests)
                    for record, times, content, requests in claimed
                ]
                ok = _deliver(sink, batch, timeout_s)
                done = [d.record.run_id for d, good in zip(batch, ok, strict=True) if good]
                bad = [d.record.run_id for d, good in zip(batch, ok, strict=True) if not good]
                error = f"{sink.name} did not confirm" if bad else None
                self._store.settle(sink.name, done, bad, now=self._clock(), error=error)
                result.delivered += len(done)
                result.failed += len(bad)
                if progress is not None:
                    progress(sink.name, len(batch))
                if not done:
                    result.error = error
                    break
        return results


def _deliver(sink: Sink, batch: Sequence[Delivery], timeout_s: float) -> list[bool]:
    try:
        ok = list(sink.deliver(batch, timeout_s))
    except Exception:  # noqa: BLE001 - a sink fault is a failed delivery, retried later
        _log.warning("the %s sink raised; its runs stay in the outbox", sink.name, exc_info=True)
        return [False] * len(batch)
    if len(ok) != len(batch):
        return [False] * len(batch)
    return [bool(x) for x in ok]


class Deliverer:
    """A background thread that builds the sinks and runs delivery passes when kicked.

    It starts building (importing) the sinks at once, so their SDKs load while the agent
    runs. :meth:`kick` asks for a pass (after a run was stored); :meth:`wait_idle` waits,
    bounded, until no pass is running or wanted.
    """

    def __init__(self, specs: Sequence[SinkSpec], store: Callable[[], Store]) -> None:
        """Start the thread; ``store`` opens the store inside it."""
        self._specs = list(specs)
        self._open_store = store
        self._cond = threading.Condition()
        self._wanted = False
        self._busy = True  # building the sinks counts as busy
        self._closed = False
        self.last: dict[str, SinkResult] = {}
        self._thread = threading.Thread(target=self._run, name="ttft-probe-delivery", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Ask for a delivery pass soon (never blocks)."""
        with self._cond:
            self._wanted = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no pass is running or wanted; ``True`` if so."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and not self._wanted, timeout)

    def close(self) -> None:
        """Stop after the current pass (does not wait for it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _build(self) -> list[Sink]:
        sinks: list[Sink] = []
        for spec in self._specs:
            try:
                sink = spec.build()
            except Exception as exc:  # noqa: BLE001 - one bad sink must not stop the others
                _log.warning("the %s sink is not available: %s", spec.name, exc)
                continue
            if sink is None:
                continue
            prepare = getattr(sink, "prepare", None)
            if callable(prepare):
                try:
                    prepare()
                except Exception as exc:  # noqa: BLE001 - delivery will report it again
                    _log.warning("preparing the %s sink failed: %s", spec.name, exc)
            sinks.append(sink)
        return sinks

    def _run(self) -> None:
        sinks = self._build()
        outbox: Outbox | None = None
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._wanted or self._closed)
                if self._closed and not self._wanted:
                    break
                self._wanted = False
                self._busy = True
            try:
                if outbox is None:
                    outbox = Outbox(self._open_store(), sinks)
                self.last = outbox.deliver_pending()
            except Exception:  # noqa: BLE001 - delivery never reaches the run
                _log.warning("a delivery pass failed; runs stay in the outbox", exc_info=True)
        for sink in sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                _log.warning("closing the %s sink failed", sink.name, exc_info=True)


def start_flush(store: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m ttft_probe flush --background [--store STORE]``, detached.

    The flush runs in a session of its own with its stdio on ``/dev/null``, so it outlives
    the caller and never writes to the caller's terminal; ``--background`` makes it quiet
    and leaves the work to a flush already running on the same store. ``store``: the
    store's path as given (``None``: the default store, found as the caller finds it).

    Raises:
        OSError: The process could not be started.
    """
    argv = [sys.executable, "-m", "ttft_probe", "flush", "--background"]
    if store is not None:
        argv += ["--store", store]
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
    )


class DetachedFlush:
    """Delivery by a detached ``ttft-probe flush`` (:func:`start_flush`), not by this process.

    The counterpart of :class:`Deliverer` for a process that must not deliver itself
    (``ttft-probe run`` exits as soon as its runs are stored). Nothing happens until
    :meth:`wait_idle`, called once the runs are stored: it starts the flush, once, and
    waits for it at most ``timeout`` s. The flush delivers these runs and whatever
    earlier ones left, then exits; what it does not confirm stays in the outbox.
    """

    def __init__(self, store: str | None) -> None:
        """Remember the store the flush is to deliver from (``None``: the default)."""
        self._store = store
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._failed = False

    def kick(self) -> None:
        """Nothing yet: the flush starts at :meth:`wait_idle`, after the runs are stored."""

    def wait_idle(self, timeout: float) -> bool:
        """Start the flush unless started, then wait up to ``timeout`` s for it to exit.

        Returns ``True`` when it exited in time. Never raises: a flush that cannot be
        started is logged (once) and leaves the runs in the outbox.
        """
        with self._lock:
            if self._process is None:
                if self._failed:
                    return False
                try:
                    self._process = start_flush(self._store)
                except OSError as exc:
                    self._failed = True
                    _log.warning("could not start delivery (%s); run `ttft-probe flush`", exc)
                    return False
            process = self._process
        if timeout <= 0:
            return process.poll() is not None
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        """Nothing to stop: the flush outlives this process by design."""
