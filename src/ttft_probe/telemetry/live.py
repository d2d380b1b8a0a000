"""OpenTelemetry for one run: the ``invoke_agent`` root span, phase spans, marker events, metrics.

How the spawn wrapper uses it::

    tel = Telemetry.from_environment()   # cheap: imports no OpenTelemetry module yet
    tel.prepare()                        # optional: import the SDK, build providers now
    anchor, start_ns = WallAnchor.now(), monotonic_ns()
    run = tel.start_run(agent="claude_code", start_ns=start_ns, anchor=anchor)
    if run.traceparent is not None:
        child_env["TRACEPARENT"] = run.traceparent      # before the child starts
    ...                                                  # spawn, pump, adapter
    record = RunRecord(..., trace_id=run.trace_id_hex, span_id=run.span_id_hex)
    run.finish(record, times, content=content)           # spans, events, metrics; ends the root
    if run.needs_delivery:                               # private provider: nothing exported yet
        ...                                              # outbox row for the OTLP sink (otlp.py)
    tel.shutdown(timeout_ms=2000)                        # private providers only, bounded

API:

- :meth:`Telemetry.from_environment` / ``Telemetry(tracer_provider=…, meter_provider=…)``.
  Explicit providers belong to the caller (tests, embedding applications); they are used
  as they are and never shut down.
- :meth:`Telemetry.prepare` imports the SDK and builds the providers and instruments
  (idempotent; :meth:`Telemetry.start_run` calls it). Call it before reading ``start_ns``
  so the first run's ``cli_ready_ms`` does not include the SDK import (tens of ms).
- :meth:`Telemetry.start_run` starts the root span at ``anchor.wall_ns_at(start_ns)`` and
  returns a :class:`RunSpan` with ``traceparent``, ``trace_id_hex``, ``span_id_hex`` and
  ``context`` (all ``None`` when the provider in use records nothing: ``OTEL_SDK_DISABLED``,
  a no-op provider, or an internal fault).
- :meth:`RunSpan.finish` adds the record's attributes (and the opt-in captured content,
  when given), the marker events, the phase spans and, when the provider observer's
  model requests are given, one span per request, sets the status, ends the root span
  at ``times.end_ns`` (or now) and records the histograms. Idempotent.
- :attr:`RunSpan.needs_delivery` says whether the run's spans still have to be delivered
  by the durable OTLP sink (:mod:`ttft_probe.sinks.otlp`); :attr:`RunSpan.parent_span_id_hex`
  is the root span's parent, for that sink to rebuild the same link.
- :meth:`Telemetry.shutdown` flushes and shuts down the *private* providers within
  ``timeout_ms`` and returns whether that finished in time. ``Telemetry`` is also a
  context manager that calls it.

What is emitted (the spans, their events and the histograms' attributes) is made, and
described, in :mod:`ttft_probe.telemetry.shape`; this module records it.

Every wall-clock time is ``anchor.wall_ns_at(monotonic ns)``: the wall clock is read once,
in the anchor (DESIGN §3).

Providers (DESIGN §5), decided once, at the first :meth:`Telemetry.prepare`: a global
``TracerProvider`` / ``MeterProvider`` the application has set is used as it is.
Otherwise a *private* SDK provider is made (``set_tracer_provider`` is never called) with
resource ``service.name`` = ``OTEL_SERVICE_NAME`` or ``ttft-probe``. Records always carry
real trace and span ids (and the root span's context goes to the child as
``TRACEPARENT``), but the private provider exports nothing: an in-memory
``BatchSpanProcessor`` loses its spans on SIGKILL or while the collector is down, so the
run's spans are rebuilt from the stored record by the durable OTLP sink
(:mod:`ttft_probe.sinks.otlp`) and leave the outbox only once the collector confirmed them.
Since such a provider would only make ids, it is not even built when nothing else could see
a live span (no provider given, the application has not imported the OpenTelemetry API, no
OTLP metrics, no sampler or id-generator variable): the ids are then drawn as the SDK draws
them and no OpenTelemetry module is imported at all (the *ids-only* mode; :attr:`RunSpan.context`
is ``None`` there).
Spans of the *application's* provider flow through the application's pipeline as before.
Metrics are low-priority telemetry and stay periodic: a private meter provider with an OTLP
exporter exists only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set, ``OTEL_METRICS_EXPORTER`` does not exclude
``otlp`` and ``OTEL_SDK_DISABLED`` is not ``true``; ``OTEL_EXPORTER_OTLP[_METRICS]_PROTOCOL``
picks ``http/protobuf`` (default) or ``grpc``; the exporter reads the rest of the ``OTEL_*``
variables itself. Exporter modules are imported only then. Private providers do not
register ``atexit`` handlers of their own (the SDK's would wait up to 30 s for an
unreachable collector); a bounded one (:data:`ATEXIT_TIMEOUT_MS`) stands in until
:meth:`Telemetry.shutdown` is called.

Faults: nothing here raises into the caller after construction. Faults are logged once
per kind on the ``ttft_probe.sinks.otel`` logger and the run goes on.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import sys
import threading
from typing import TYPE_CHECKING, Final, Self

import attrs

from ttft_probe import _semconv as sc
from ttft_probe._clock import WallAnchor, monotonic_ns
from ttft_probe._logonce import LogOnce
from ttft_probe._otel_vars import sdk_needed
from ttft_probe._version import VERSION
from ttft_probe.agents import provider_name
from ttft_probe.telemetry.env import (
    GRPC,
    HTTP_PROTOBUF,
    otlp_configured,
    otlp_protocol,
    resource_from,
)
from ttft_probe.telemetry.shape import metric_attributes, root_span_name, run_shape

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from ttft_probe.content import CapturedContent
    from ttft_probe.record import MarkerTimes, RunRecord
    from ttft_probe.waterfall import ModelRequest

__all__ = ["ATEXIT_TIMEOUT_MS", "RunSpan", "Telemetry"]

# The logger keeps the name it had as ``ttft_probe.sinks.otel``: users' logging
# configuration refers to it.
_log = logging.getLogger("ttft_probe.sinks.otel")

ATEXIT_TIMEOUT_MS: Final = 2000
"""Bound (ms) of the flush at interpreter exit when :meth:`Telemetry.shutdown` was not called."""

_SCOPE: Final = "ttft_probe"
_SAMPLED: Final = 0x01
_RANDOM_TRACE_ID: Final = 0x02
_NS_PER_MS: Final = 1_000_000
_MS_PER_S: Final = 1000.0
_HISTOGRAMS: Final = (
    (sc.METRIC_SPAWN_TO_FIRST_TOKEN, "Spawn (or prompt, on a reused process) to first token."),
    (sc.METRIC_CLI_READY, "Spawn to the CLI's first protocol output (processSpawned → cliReady)."),
    (sc.METRIC_SESSION_INIT, "Session created or resumed (cliReady → sessionInitDone)."),
    (sc.METRIC_CLIENT_WAIT, "Client's wait for the prompt (sessionInitDone → promptSent)."),
    (sc.METRIC_MODEL_FIRST_TOKEN, "Prompt to first token (promptSent → firstToken)."),
    (
        sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
        "Time to receive the first chunk, from when the prompt was sent to the agent.",
    ),
)



@attrs.frozen
class _Setup:
    """Providers and instruments in use, decided once per :class:`Telemetry`.

    ``tracer`` is ``None`` in the ids-only mode (see :meth:`Telemetry._ids_only`).
    """

    tracer: Tracer | None
    histograms: dict[str, Histogram] | None
    private_tracer_provider: SdkTracerProvider | None
    private_meter_provider: SdkMeterProvider | None

    @property
    def private_traces(self) -> bool:
        """Whether ttft_probe makes the run's trace ids itself (and exports no live span)."""
        return self.tracer is None or self.private_tracer_provider is not None




class _IdsOnlySpan:
    """The root span of the ids-only mode: W3C ids, nothing recorded or exported.

    Ids are drawn as the SDK's ``RandomIdGenerator`` draws them (``random.getrandbits``,
    never zero); the trace flags are ``03`` as the SDK sets them for a root span under its
    default sampler (``parentbased_always_on``): *sampled*, and *random trace id* (W3C
    Trace Context Level 2).
    """

    __slots__ = ("_ids",)
    parent = None

    def __init__(self, ids: tuple[int, int] | None = None) -> None:
        """Draw new ids, or take ``ids`` (trace id, span id; non-zero) drawn before the spawn."""
        if ids is None:
            trace_id = span_id = 0
            while trace_id == 0:
                trace_id = random.getrandbits(128)
            while span_id == 0:
                span_id = random.getrandbits(64)
        else:
            trace_id, span_id = ids
        self._ids = _SpanIds(trace_id, span_id, _SAMPLED | _RANDOM_TRACE_ID)

    def get_span_context(self) -> _SpanIds:
        return self._ids

    def is_recording(self) -> bool:
        return False


class Telemetry:
    """The OpenTelemetry side of the runs of one process (or one wrapper).

    Args:
        tracer_provider: Use this provider instead of the global or a private one. The
            caller owns it: :meth:`shutdown` leaves it alone.
        meter_provider: Likewise for metrics.

    Thread-safe: runs may start and finish concurrently from several threads.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        """Remember explicit providers; nothing is imported or built yet."""
        self._given_tracer_provider = tracer_provider
        self._given_meter_provider = meter_provider
        self._lock = threading.Lock()
        self._setup: _Setup | None = None
        self._setup_failed = False
        self._warn = LogOnce(_log)
        self._atexit_registered = False
        self._shut_down = False

    @classmethod
    def from_environment(cls) -> Self:
        """A ``Telemetry`` configured by the global providers and the ``OTEL_*`` variables.

        Cheap: the environment is read and providers are chosen at :meth:`prepare`.
        """
        return cls()

    def __enter__(self) -> Self:
        """Return ``self``; leaving the block calls :meth:`shutdown`."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Shut down the private providers (default bound)."""
        self.shutdown()

    def prepare(self) -> None:
        """Import the SDK and choose or build the providers and instruments; idempotent.

        Never raises: a fault is logged once and later runs get a non-recording span.
        """
        self._get_setup()

    @property
    def makes_own_ids(self) -> bool:
        """Whether runs' spans are ids only (drawn by ttft_probe; see :meth:`_ids_only`).

        Then the ids can be drawn before the spawn and passed to :meth:`start_run`.
        Chooses the providers (:meth:`prepare`) if that was not done yet.
        """
        setup = self._get_setup()
        return setup is not None and setup.tracer is None

    @property
    def sdk_spans(self) -> bool:
        """Whether an OpenTelemetry SDK (the application's or a private one) makes the spans."""
        setup = self._get_setup()
        return setup is not None and setup.tracer is not None

    def start_run(
        self,
        *,
        agent: str,
        start_ns: int,
        anchor: WallAnchor,
        parent: Context | None = None,
        model: str | None = None,
        conversation_id: str | None = None,
        ids: tuple[int, int] | None = None,
    ) -> RunSpan:
        """Start the root span ``invoke_agent {agent}`` of one run, before the child starts.

        Args:
            agent: The agent name (``claude_code``, …): the span name and
                ``gen_ai.agent.name``.
            start_ns: Monotonic ns of the run's start (``processSpawned``, or
                ``promptSent`` on a reused process); the span starts at its wall time.
            anchor: The run's wall-clock anchor.
            parent: Context holding the parent span; ``None`` uses the current context.
            model: ``gen_ai.request.model`` when already known at spawn (for samplers).
            conversation_id: ``gen_ai.conversation.id`` when already known at spawn.
            ids: (trace id, span id) already handed to the child in its ``TRACEPARENT``
                (drawn before the spawn by :mod:`ttft_probe._prespawn`, only when
                :func:`~ttft_probe._otel_vars.sdk_needed` said no). Used when the span is
                ids only; when the SDK makes the span after all, its own ids win and a
                warning says the child's ``TRACEPARENT`` names another span.

        Returns:
            The run's span handle. Never raises.
        """
        try:
            setup = self._get_setup()
            if setup is None:
                return RunSpan(self, None, None, anchor, start_ns)
            if setup.tracer is None:
                return RunSpan(self, setup, _IdsOnlySpan(ids), anchor, start_ns)
            if ids is not None:
                self._warn.warning(
                    "preset_ids", "ttft_probe: the agent's TRACEPARENT was drawn before the "
                    "OpenTelemetry SDK was chosen; its spans are not linked to the run's span",
                )
            from opentelemetry.trace import SpanKind  # noqa: PLC0415 - lazy by design

            attributes: dict[str, AttributeValue] = {
                sc.GEN_AI_OPERATION_NAME: sc.INVOKE_AGENT,
                sc.GEN_AI_AGENT_NAME: agent,
            }
            provider = provider_name(agent)
            if provider is not None:
                attributes[sc.GEN_AI_PROVIDER_NAME] = provider
            if model is not None:
                attributes[sc.GEN_AI_REQUEST_MODEL] = model
            if conversation_id is not None:
                attributes[sc.GEN_AI_CONVERSATION_ID] = conversation_id
            span = setup.tracer.start_span(
                root_span_name(agent),
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=anchor.wall_ns_at(start_ns),
            )
        except Exception:  # noqa: BLE001 - instrumentation must not reach the run
            self._warn.warning(
                "start_run", "ttft_probe: could not start the run span", exc_info=True
            )
            return RunSpan(self, None, None, anchor, start_ns)
        return RunSpan(self, setup, span, anchor, start_ns)

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Flush and shut down the private providers, waiting at most ``timeout_ms``.

        Providers the application owns (global or passed in) are left alone. What is not
        delivered in time is dropped; the exporters' threads are daemons and do not hold
        up interpreter exit. Final: spans of later runs still get ids but are not
        exported; a second call returns ``True`` at once. Never raises.

        Returns:
            ``True`` when everything finished within ``timeout_ms``.
        """
        with self._lock:
            setup = None if self._shut_down else self._setup
            self._shut_down = True
            if self._atexit_registered:
                atexit.unregister(self._shutdown_at_exit)
                self._atexit_registered = False
        if setup is None:
            return True
        jobs: list[tuple[str, Callable[[], object]]] = []
        tracer_provider = setup.private_tracer_provider
        meter_provider = setup.private_meter_provider
        if tracer_provider is not None:
            jobs.append(("traces", lambda: _close_tracer_provider(tracer_provider, timeout_ms)))
        if meter_provider is not None:
            jobs.append(("metrics", lambda: meter_provider.shutdown(timeout_millis=timeout_ms)))
        threads = [
            threading.Thread(
                target=self._guarded,
                args=(f"shutdown_{signal}", job),
                name=f"ttft_probe-otel-shutdown-{signal}",
                daemon=True,
            )
            for signal, job in jobs
        ]
        deadline = monotonic_ns() + timeout_ms * _NS_PER_MS
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0, deadline - monotonic_ns()) / 1e9)
        late = [t.name for t in threads if t.is_alive()]
        if late:
            self._warn.warning(
                "shutdown_timeout",
                "ttft_probe: OpenTelemetry shutdown did not finish within %d ms (%s); "
                "undelivered telemetry is dropped",
                timeout_ms,
                ", ".join(late),
            )
        return not late

    # --- internals ---

    def _shutdown_at_exit(self) -> None:
        self.shutdown(ATEXIT_TIMEOUT_MS)

    def _guarded(self, key: str, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - exporter faults never reach the caller
            self._warn.warning(key, "ttft_probe: OpenTelemetry %s failed", key, exc_info=True)

    def _get_setup(self) -> _Setup | None:
        with self._lock:
            if self._setup is None and not self._setup_failed:
                try:
                    self._setup = self._build()
                except Exception:  # noqa: BLE001 - run without telemetry rather than fail
                    self._setup_failed = True
                    self._warn.warning(
                        "setup", "ttft_probe: OpenTelemetry setup failed", exc_info=True
                    )
                else:
                    uses_private = (
                        self._setup.private_tracer_provider is not None
                        or self._setup.private_meter_provider is not None
                    )
                    if uses_private and not self._atexit_registered:
                        atexit.register(self._shutdown_at_exit)
                        self._atexit_registered = True
            return self._setup

    def _ids_only(self) -> bool:
        """Whether no OpenTelemetry pipeline could see a live span, so the SDK is skipped.

        True when no provider was given, the application has not imported the
        OpenTelemetry API (so it cannot have set a global provider), no OTLP metrics
        export is configured and no variable of :data:`~ttft_probe._otel_vars.SDK_SETTINGS`
        is set. The private
        provider would then only make ids (it exports nothing: the durable OTLP sink
        rebuilds the spans from the record), so ids are made without importing the SDK
        (tens of ms of start-up).
        """
        return (
            self._given_tracer_provider is None
            and self._given_meter_provider is None
            and "opentelemetry.trace" not in sys.modules
            and "opentelemetry.metrics" not in sys.modules
            and not sdk_needed(os.environ)
        )

    def _build(self) -> _Setup:
        if self._ids_only():
            return _Setup(
                tracer=None,
                histograms=None,
                private_tracer_provider=None,
                private_meter_provider=None,
            )
        version = VERSION
        resource: Resource | None = None

        tracer_provider = self._given_tracer_provider or _global_tracer_provider()
        private_tp: SdkTracerProvider | None = None
        if tracer_provider is None:
            resource = _resource()
            private_tp = self._private_tracer_provider(resource)
            tracer_provider = private_tp

        meter_provider = self._given_meter_provider or _global_meter_provider()
        private_mp: SdkMeterProvider | None = None
        if meter_provider is None:
            private_mp = self._private_meter_provider(resource or _resource())
            meter_provider = private_mp

        histograms: dict[str, Histogram] | None = None
        if meter_provider is not None:
            meter = meter_provider.get_meter(_SCOPE, version)
            histograms = {
                name: meter.create_histogram(
                    name,
                    unit="s",
                    description=description,
                    explicit_bucket_boundaries_advisory=sc.SECONDS_BUCKETS,
                )
                for name, description in _HISTOGRAMS
            }
        return _Setup(
            tracer=tracer_provider.get_tracer(_SCOPE, version),
            histograms=histograms,
            private_tracer_provider=private_tp,
            private_meter_provider=private_mp,
        )

    def _private_tracer_provider(self, resource: Resource) -> SdkTracerProvider:
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415

        # No span processor: the private provider makes the ids and the TRACEPARENT
        # context; the durable OTLP sink sends the spans, rebuilt from the stored record.
        return SdkTracerProvider(resource=resource, shutdown_on_exit=False)

    def _private_meter_provider(self, resource: Resource) -> SdkMeterProvider | None:
        if not otlp_configured(os.environ, "METRICS"):
            return None
        try:
            exporter = _metric_exporter(self._otlp_protocol("METRICS"))
        except Exception:  # noqa: BLE001
            self._warn.warning(
                "metric_exporter", "ttft_probe: OTLP metric exporter unavailable", exc_info=True
            )
            return None
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415

        reader = PeriodicExportingMetricReader(exporter)
        return SdkMeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)

    def _otlp_protocol(self, signal: str) -> str:
        protocol = otlp_protocol(os.environ, signal)
        if protocol is None:
            self._warn.warning(
                f"protocol_{signal}",
                "ttft_probe: OTLP protocol %r is not supported; using http/protobuf",
                os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
            )
            protocol = HTTP_PROTOBUF
        return protocol


class RunSpan:
    """The root span of one run, from :meth:`Telemetry.start_run` until :meth:`finish`.

    Not thread-safe by itself: one run is finished by one caller.
    """

    __slots__ = ("_anchor", "_finished", "_setup", "_span", "_start_ns", "_telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        setup: _Setup | None,
        span: Span | _IdsOnlySpan | None,
        anchor: WallAnchor,
        start_ns: int,
    ) -> None:
        """Wrap a started root span (``None`` for a run without telemetry)."""
        self._telemetry = telemetry
        self._setup = setup
        self._span = span
        self._anchor = anchor
        self._start_ns = start_ns
        self._finished = False

    @property
    def recording(self) -> bool:
        """Whether the root span records (sampled, real provider, no fault)."""
        return self._span is not None and self._span.is_recording()

    @property
    def needs_delivery(self) -> bool:
        """Whether the run's spans are exported only by the durable OTLP sink.

        ``True`` when ttft_probe's private provider made a sampled root span: it exports
        nothing itself, so the run needs an outbox row for :mod:`ttft_probe.sinks.otlp`.
        ``False`` when the application's (or a given) provider made it, whose pipeline
        exports the spans, and when there is no valid or sampled span at all.
        """
        setup, ctx = self._setup, self._valid_context()
        if setup is None or not setup.private_traces or ctx is None:
            return False
        return bool(ctx.trace_flags & _SAMPLED)

    @property
    def parent_span_id_hex(self) -> str | None:
        """The root span's parent span id (16 hex digits; same trace), or ``None``.

        The span that was current at :meth:`Telemetry.start_run` (the application's), or
        the explicit ``parent``; the OTLP sink needs it to rebuild the same link.
        """
        if self._valid_context() is None:
            return None
        parent = getattr(self._span, "parent", None)  # SDK spans only
        span_id = getattr(parent, "span_id", 0)
        return f"{span_id:016x}" if isinstance(span_id, int) and span_id else None

    @property
    def trace_id_hex(self) -> str | None:
        """The trace id, 32 lowercase hex digits; ``None`` without a valid span context."""
        ctx = self._valid_context()
        return None if ctx is None else f"{ctx.trace_id:032x}"

    @property
    def span_id_hex(self) -> str | None:
        """The root span's id, 16 lowercase hex digits; ``None`` without a valid context."""
        ctx = self._valid_context()
        return None if ctx is None else f"{ctx.span_id:016x}"

    @property
    def traceparent(self) -> str | None:
        """W3C ``traceparent`` of the root span (``00-<trace>-<span>-<flags>``) or ``None``.

        Hand it to the child as the ``TRACEPARENT`` environment variable.
        """
        ctx = self._valid_context()
        if ctx is None:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    @property
    def context(self) -> Context | None:
        """An OpenTelemetry context holding the root span, to parent other spans on it."""
        if self._span is None or isinstance(self._span, _IdsOnlySpan):
            return None
        from opentelemetry.trace import set_span_in_context  # noqa: PLC0415

        return set_span_in_context(self._span)

    def finish(
        self,
        record: RunRecord,
        times: MarkerTimes,
        *,
        content: CapturedContent | None = None,
        requests: Sequence[ModelRequest] = (),
    ) -> None:
        """Emit the run: attributes, events, phase spans, status, end, histograms.

        Args:
            record: The run's ``run_finished`` record.
            times: The run's markers (monotonic ns); the same ones the record came from.
            content: The run's prompt and answer text, only when it was captured with the
                opt-in content capture: the root span then also gets
                :func:`content_attributes`. ``None`` (the default) adds nothing.
            requests: The run's model requests (the provider observer's waterfall,
                monotonic ns): one ``CLIENT`` span each, under ``model_first_token`` or the
                root (:class:`ttft_probe.telemetry.shape.RequestSpan`). Empty (the default)
                adds nothing.

        Idempotent, never raises; a fault is logged once and the rest still runs.
        """
        if self._finished:
            return
        self._finished = True
        span, setup = self._span, self._setup
        if span is None or isinstance(span, _IdsOnlySpan) or setup is None:
            return
        assert setup.tracer is not None  # noqa: S101 - a real span comes from a real tracer
        try:
            self._emit_spans(
                span, setup.tracer, record, times, content=content, requests=requests
            )
        except Exception:  # noqa: BLE001 - instrumentation must not reach the run
            self._telemetry._warn.warning(  # noqa: SLF001 - one LogOnce per Telemetry
                "finish_spans", "ttft_probe: could not emit the run's spans", exc_info=True
            )
            if span.is_recording():  # never leave the root span open
                with contextlib.suppress(Exception):  # the fault is logged once, above
                    self._end_root(span, times)
        if setup.histograms is not None:
            try:
                _record_histograms(setup.histograms, record)
            except Exception:  # noqa: BLE001
                self._telemetry._warn.warning(  # noqa: SLF001
                    "finish_metrics",
                    "ttft_probe: could not record the run's metrics",
                    exc_info=True,
                )

    def _valid_context(self) -> _SpanIds | None:
        if self._span is None:
            return None
        ctx = self._span.get_span_context()
        if not ctx.is_valid:
            return None
        return _SpanIds(ctx.trace_id, ctx.span_id, int(ctx.trace_flags))

    def _emit_spans(
        self,
        span: Span,
        tracer: Tracer,
        record: RunRecord,
        times: MarkerTimes,
        *,
        content: CapturedContent | None,
        requests: Sequence[ModelRequest],
    ) -> None:
        from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context  # noqa: PLC0415

        wall = self._anchor.wall_ns_at
        shape = run_shape(record, times, content, requests)
        span.set_attributes(shape.attributes)
        for name, t_ns in shape.events:
            span.add_event(name, timestamp=wall(t_ns))
        parent = set_span_in_context(span)
        contexts: dict[str, Context] = {}
        for name, begin_ns, end_ns in shape.phases:
            child = tracer.start_span(
                name,
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=shape.phase_attributes,
                start_time=wall(begin_ns),
            )
            child.end(end_time=wall(end_ns))
            contexts[name] = set_span_in_context(child)
        for request in shape.requests:
            child = tracer.start_span(
                request.name,
                context=parent if request.parent is None else contexts[request.parent],
                kind=SpanKind.CLIENT,
                attributes=request.attributes,
                start_time=wall(request.begin_ns),
            )
            if request.error_type is not None:
                child.set_status(StatusCode.ERROR, f"HTTP {request.error_type}")
            child.end(end_time=wall(request.end_ns))
        if shape.error_type is not None:
            span.set_status(StatusCode.ERROR, shape.status_description)
        self._end_root(span, times)

    def _end_root(self, span: Span, times: MarkerTimes) -> None:
        """End the root span at ``times.end_ns``, or now when the run has no end marker."""
        end_ns = times.end_ns if times.end_ns is not None else monotonic_ns()
        span.end(end_time=self._anchor.wall_ns_at(max(end_ns, self._start_ns)))


@attrs.frozen
class _SpanIds:
    trace_id: int
    span_id: int
    trace_flags: int
    is_valid: bool = True


# --- what a run emits (pure functions of the record and markers) ---


def _record_histograms(histograms: dict[str, Histogram], record: RunRecord) -> None:
    attributes = metric_attributes(record)
    values_ms = (
        (sc.METRIC_SPAWN_TO_FIRST_TOKEN, record.spawn_to_first_token_ms),
        (sc.METRIC_CLI_READY, record.cli_ready_ms),
        (sc.METRIC_SESSION_INIT, record.session_init_ms),
        (sc.METRIC_CLIENT_WAIT, record.client_wait_ms),
        (sc.METRIC_MODEL_FIRST_TOKEN, record.model_first_token_ms),
        (sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, record.model_first_token_ms),
    )
    for name, value_ms in values_ms:
        if value_ms is not None:
            histograms[name].record(value_ms / _MS_PER_S, attributes)



# --- providers and exporters (imported lazily) ---


def _resource() -> Resource:
    return resource_from(os.environ)


def _global_tracer_provider() -> TracerProvider | None:
    """The application's global tracer provider, or ``None`` when only the proxy is set."""
    from opentelemetry import trace  # noqa: PLC0415

    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def _global_meter_provider() -> MeterProvider | None:
    """The application's global meter provider, or ``None`` when only the proxy is set."""
    from opentelemetry import metrics  # noqa: PLC0415
    from opentelemetry.metrics._internal import _ProxyMeterProvider  # noqa: PLC0415

    provider = metrics.get_meter_provider()
    return None if isinstance(provider, _ProxyMeterProvider) else provider



def _metric_exporter(protocol: str) -> MetricExporter:
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


def _close_tracer_provider(provider: SdkTracerProvider, timeout_ms: int) -> None:
    provider.force_flush(timeout_ms)
    provider.shutdown()
