"""Langfuse delivery of a run: one trace per run, through the real ``langfuse`` SDK (DESIGN §7).

How the outbox uses it::

    sink = LangfuseSink.from_environment(os.environ)   # None unless both keys are set
    if sink is not None:
        ok = sink.deliver([Delivery(record, times, started_wall_ns)], timeout_s=5.0)
        sink.close()                                   # bounded; stops every SDK thread

Configuration (:meth:`LangfuseSink.from_environment`): ``LANGFUSE_PUBLIC_KEY`` and
``LANGFUSE_SECRET_KEY`` switch it on; the server is ``LANGFUSE_BASE_URL``, else
``LANGFUSE_HOST`` (the SDK's own precedence), else ``https://cloud.langfuse.com``;
``LANGFUSE_TIMEOUT`` (s, default 5) bounds one export; ``LANGFUSE_TRACING_ENABLED=false``
switches the sink off.

What Langfuse receives for each run (OTLP/HTTP protobuf, gzip, Basic auth, at
``{host}/api/public/otel/v1/traces``; spans of the SDK's scope ``langfuse-sdk``):

- a root observation of type ``agent`` named ``invoke_agent {agent}``, from the run's
  start (``Delivery.started_wall_ns``) to its end (``Delivery.wall_ns(times.end_ns)``;
  without marker times ``started_wall_ns + total_duration_ms``). It carries the trace
  attributes: trace name ``invoke_agent {agent}``, ``session.id`` = ``conversation_id``,
  optional ``user.id`` and tags, and a few filterable trace metadata dimensions
  (:data:`TRACE_METADATA_FIELDS`);
- its child, one ``generation`` named ``chat {model}`` (``chat`` without a model), over
  the same interval, with ``completion_start_time`` = the ``firstToken`` wall time (so
  Langfuse's own "time to first token" is ``spawn_to_first_token_ms``), ``model`` =
  ``record.model`` (else the first generation request's model, with the provider
  observer) and ``usage_details`` ``input``/``output``/``cache_read_input_tokens``/
  ``cache_creation_input_tokens``: the whole turn's counts — the record's own, as the
  agent reported them, when it reported any, else (provider observer) the sum over the
  turn's requests that reported usage (``Delivery.requests``; DESIGN §10), ``input`` then
  being the input read anew (input − cache read − cache write), since Langfuse adds every
  usage type up into the total. The waterfall's requests are not sent as observations of
  their own: their usage would be counted twice in the trace's total (the OTLP sink
  carries one span per request);
- on both observations every contract field as metadata (``record.to_dict()``, one
  ``langfuse.observation.metadata.<field>`` each, JSON-encoded; a ``None`` field arrives
  as JSON ``null``, not absent). ``failed``/``timed_out`` runs have level ``ERROR``,
  ``cancelled`` ``WARNING``, with the status as status message.
- the prompt and answer text only when the run was made with the opt-in content capture
  (``Probe(capture_content=True)`` / ``--capture-content``; ``Delivery.content``,
  :mod:`ttft_probe.content`): on both observations ``input`` =
  ``[{"role": "user", "content": <prompt>}]`` and ``output`` =
  ``{"role": "assistant", "content": <answer>}`` (the ChatML shapes of Langfuse's own
  OpenAI integration, which its UI shows as a chat), each only when that text was seen,
  and ``content_truncated: true`` in the metadata when a text was cut at its cap. With
  this SDK (Langfuse v4 data model) the trace's input/output *is* its root
  observation's: trace-level input/output is deprecated and no longer written by the
  SDK. Without capture no ``input``/``output`` is sent at all.

Ids are fixed by the record (:func:`langfuse_ids`), so a redelivery is the same trace and
the same observations, never a second trace: the trace id is ``record.trace_id`` (the
run's W3C trace id) when it is valid, else ``Langfuse.create_trace_id(seed=run_id)``;
the observation ids are the first 8 bytes of SHA-256 of ``"{run_id}/invoke_agent"`` and
``"{run_id}/generation"`` (the SDK's own seeded-id recipe).

How this SDK version (langfuse 5.x, OpenTelemetry-based) is driven:

- Explicit times. ``Langfuse.start_observation`` has no start-time argument (it starts
  the OTel span "now"; only ``end(end_time=…)`` is explicit). The SDK's tracer is an
  OTel tracer of the provider it was given, so the spans are started on that private
  provider's ``langfuse-sdk`` tracer with ``start_time``, wrapped in the SDK's public
  observation classes (``LangfuseAgent``, ``LangfuseGeneration``), which write every
  Langfuse attribute, and ended with ``end(end_time=…)``. Trace attributes come from
  the SDK's ``propagate_attributes``.
- Isolation. The SDK installs a *global* ``TracerProvider`` when none is set, and keeps
  one client per public key in a process-wide registry. The sink gives it a private
  ``TracerProvider`` (``tracer_provider=``: ``ALWAYS_ON`` sampler, a deterministic id
  generator, no ``atexit`` hook) and takes its client out of that registry right after
  construction (restoring an application's client with the same key), so neither the
  global provider nor an application's own ``Langfuse()``/``get_client()`` ever sees
  this sink's objects, and the sink never borrows theirs. The SDK's own ``atexit``
  shutdown (which flushes and can block for the export timeout) is unregistered; the
  SDK's threads are daemons, and the outbox keeps every unconfirmed run.
- Confirmation. ``Langfuse.flush()`` reports nothing. The SDK accepts its exporter
  (``span_exporter=``): the sink passes an OTLP/HTTP exporter configured as the SDK
  would configure its own (endpoint, Basic auth, ``x-langfuse-*`` headers, gzip)
  wrapped in one that records each export's ``SpanExportResult`` per (trace id, span
  id). The SDK's batch processor exports on its own worker thread (a batch of two spans,
  one run, wakes it at once); :meth:`LangfuseSink.deliver` only waits, at most
  ``timeout_s``, for the results of its runs' spans. A run is ``True`` only when every
  one of the spans *this call* made was in an export the server answered with success
  (HTTP 2xx; the OTLP exporter itself retries 429/502/503/504 within
  ``LANGFUSE_TIMEOUT``). An export still in flight when ``deliver`` gives up finishes
  (or fails) in the background and counts for no later call; the outbox retries the
  run later with the same ids.
- Shutdown. :meth:`LangfuseSink.close` makes further exports fail at once (this also
  cuts the exporter's retry back-off short), then shuts the SDK client and the provider
  down on a helper thread and waits for it at most ``close_timeout_s`` (default
  ``export_timeout_s + 1``). An export already on the wire ends within the export
  timeout, so with the default no SDK thread is left running once ``close`` returns.

Importing this module imports neither ``langfuse`` nor the OpenTelemetry SDK; the first
:meth:`LangfuseSink.deliver` (or :meth:`LangfuseSink.prepare`) does. Nothing here raises
into the caller after construction: a failure is ``False`` for the runs concerned,
logged once per kind on ``ttft_probe.sinks.langfuse``, naming exception types only —
never keys, metadata values or bodies.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from ttft_probe import _semconv as sc
from ttft_probe._logonce import LogOnce
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord, Status
from ttft_probe.sinks._base import HEX_TRACE_ID, Delivery, turn_tokens

if TYPE_CHECKING:
    from langfuse import Langfuse
    from langfuse.types import SpanLevel
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from ttft_probe.content import CapturedContent
    from ttft_probe.waterfall import ModelRequest

__all__ = [
    "DEFAULT_HOST",
    "TRACES_PATH",
    "TRACE_METADATA_FIELDS",
    "LangfuseIds",
    "LangfuseSink",
    "langfuse_ids",
]

_log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "https://cloud.langfuse.com"
"""The SDK's default server."""
TRACES_PATH: Final = "/api/public/otel/v1/traces"
"""Langfuse's OTLP/HTTP trace ingestion path, below the host."""
TRACE_METADATA_FIELDS: Final = (
    "run_id",
    "agent",
    "runtime_family",
    "model",
    "status",
    "turn_ordinal",
    "session_resumed",
    "process_reused",
)
"""Record fields also set as *trace* metadata (short values Langfuse can filter traces by)."""

_TRACER_NAME: Final = "langfuse-sdk"
"""The SDK's tracer (instrumentation scope) name: ``langfuse._client.constants``."""
_METADATA_PREFIX: Final = "langfuse.observation.metadata"
_GENERATION: Final = "generation"
_CONTENT_TRUNCATED: Final = "content_truncated"
_DEFAULT_TIMEOUT_S: Final = 5.0
_SPANS_PER_RUN: Final = 2
"""The SDK's batch size: one run's spans fill a batch and wake its export thread at once."""
_BACKSTOP_FLUSH_S: Final = 0.5
"""The SDK's flush interval (s): exports a partial batch (and polls its score queue)."""
_PROPAGATED_MAX: Final = 200
"""Langfuse drops propagated trace attributes (session, user, tags) longer than this."""
_NS_PER_MS: Final = 1_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[int, int]
"""(trace id, span id) of one exported span."""


@attrs.frozen
class LangfuseIds:
    """The ids of a run's Langfuse trace, lowercase hex (32 digits, 16 and 16)."""

    trace_id: str
    agent_observation_id: str
    generation_observation_id: str


def _seeded_hex(seed: str, n_bytes: int) -> str:
    """First ``n_bytes`` of SHA-256 of ``seed``, as hex: the SDK's seeded-id recipe."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()[:n_bytes]
    if not any(digest):  # an all-zero id is invalid in OTel
        digest = b"\x00" * (n_bytes - 1) + b"\x01"
    return digest.hex()


def langfuse_ids(record: RunRecord) -> LangfuseIds:
    """The trace and observation ids of ``record``'s Langfuse trace; stable per run.

    The trace id is ``record.trace_id`` when it is 32 lowercase hex digits and not zero
    (the run's W3C trace id), else the SDK's ``Langfuse.create_trace_id(seed=run_id)``.
    """
    trace_id = record.trace_id
    if trace_id is None or not HEX_TRACE_ID.fullmatch(trace_id) or int(trace_id, 16) == 0:
        trace_id = _seeded_hex(record.run_id, 16)
    return LangfuseIds(
        trace_id=trace_id,
        agent_observation_id=_seeded_hex(f"{record.run_id}/{sc.INVOKE_AGENT}", 8),
        generation_observation_id=_seeded_hex(f"{record.run_id}/{_GENERATION}", 8),
    )


@attrs.frozen
class _WallTimes:
    """A run's times as Unix ns (wall clock)."""

    start_ns: int
    first_token_ns: int | None
    end_ns: int


def _wall_times(delivery: Delivery) -> _WallTimes:
    """Start, firstToken and end of the run, from its markers, else from its segments."""
    record, times, start = delivery.record, delivery.times, delivery.started_wall_ns

    def after_start(ms: float | None) -> int | None:
        return None if ms is None else start + max(0, round(ms * _NS_PER_MS))

    first = None if times is None else delivery.wall_ns(times.first_token_ns)
    if first is None:
        first = after_start(record.spawn_to_first_token_ms)
    end = None if times is None else delivery.wall_ns(times.end_ns)
    if end is None:
        end = after_start(record.total_duration_ms)
    if end is None:
        end = start if first is None else first
    return _WallTimes(start_ns=start, first_token_ns=first, end_ns=max(end, start))


def _utc(unix_ns: int) -> datetime:
    """Unix ns as an aware UTC datetime (µs: the resolution Langfuse keeps)."""
    return _EPOCH + timedelta(microseconds=unix_ns // 1000)


def _usage(
    record: RunRecord, requests: Sequence[ModelRequest] = ()
) -> dict[str, int] | None:
    """The generation's ``usage_details``: the whole turn's counts (:func:`turn_tokens`).

    Langfuse sums every usage type into the total, so ``input`` summed from requests
    (which count cached tokens in) is the input read anew: input − cache read − cache
    write; the record's own counts are the agent's, as it reported them. ``None`` when no
    count is known.
    """
    tokens = turn_tokens(record, requests)
    usage = {
        "input": tokens.fresh_input,
        "output": tokens.output,
        "cache_read_input_tokens": tokens.cache_read,
        "cache_creation_input_tokens": tokens.cache_write,
    }
    present = {k: v for k, v in usage.items() if v is not None}
    return present or None


def _content_io(content: CapturedContent | None) -> tuple[Any, Any]:
    """Observation ``input`` / ``output`` of opt-in captured content (ChatML), or ``None``."""
    if content is None:
        return None, None
    prompt = (
        None if content.input_text is None else [{"role": "user", "content": content.input_text}]
    )
    answer = (
        None
        if content.output_text is None
        else {"role": "assistant", "content": content.output_text}
    )
    return prompt, answer


def _level(status: Status) -> SpanLevel | None:
    if status in {Status.FAILED, Status.TIMED_OUT}:
        return "ERROR"
    if status is Status.CANCELLED:
        return "WARNING"
    return None


def _propagatable(value: str | None) -> str | None:
    """``value`` if Langfuse keeps it as a trace attribute (US-ASCII, ≤ 200 chars)."""
    if value is None or len(value) > _PROPAGATED_MAX or not value.isascii():
        return None
    return value


@attrs.define(eq=False)
class _Attempt:
    """One delivery attempt of one run: the export results of its spans so far.

    ``seq`` orders attempts against exports: only an export that started after the
    attempt was registered can hold the attempt's spans.
    """

    keys: frozenset[Key]
    seq: int
    results: dict[Key, bool] = attrs.Factory(dict)

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.keys)

    @property
    def confirmed(self) -> bool:
        return self.done and all(self.results.values())


class _Tracker:
    """Export results per span, handed from the SDK's export thread to waiting delivers.

    A result counts for an attempt only when its export started after the attempt was
    registered (and so before its spans ended): an earlier attempt of the same run, still
    being retried by the exporter, can neither fail nor confirm a later one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seq = 0
        self._watch: dict[Key, list[_Attempt]] = {}

    def expect(self, keys: Iterable[Key]) -> _Attempt:
        with self._cond:
            self._seq += 1
            attempt = _Attempt(frozenset(keys), self._seq)
            for key in attempt.keys:
                self._watch.setdefault(key, []).append(attempt)
        return attempt

    def export_started(self) -> int:
        """Mark the start of an export; pass the mark to :meth:`report`."""
        with self._cond:
            return self._seq

    def report(self, keys: Iterable[Key], *, ok: bool, started: int) -> None:
        with self._cond:
            for key in keys:
                for attempt in self._watch.get(key, ()):
                    if attempt.seq <= started:
                        attempt.results[key] = ok
            self._cond.notify_all()

    def wait(self, attempts: Sequence[_Attempt], deadline: float) -> None:
        """Until every attempt has all its results, or the monotonic ``deadline`` (s)."""
        with self._cond:
            while not all(a.done for a in attempts):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def forget(self, attempts: Iterable[_Attempt]) -> None:
        with self._cond:
            for attempt in attempts:
                for key in attempt.keys:
                    waiting = self._watch.get(key)
                    if waiting is None:
                        continue
                    waiting[:] = [a for a in waiting if a is not attempt]
                    if not waiting:
                        del self._watch[key]


class _IdPlan:
    """The ids the next spans get; read by the private provider's id generator.

    Set and cleared under the sink's emit lock, around the creation of one run's spans.
    """

    def __init__(self) -> None:
        self.trace_id: int | None = None
        self.span_ids: list[int] = []

    def set(self, ids: LangfuseIds) -> None:
        self.trace_id = int(ids.trace_id, 16)
        self.span_ids = [int(ids.agent_observation_id, 16), int(ids.generation_observation_id, 16)]

    def clear(self) -> None:
        self.trace_id = None
        self.span_ids = []

    def next_span_id(self) -> int | None:
        return self.span_ids.pop(0) if self.span_ids else None


@attrs.define
class _Pipeline:
    """The SDK objects of one sink, built on first use."""

    client: Langfuse
    provider: TracerProvider
    tracer: Tracer
    exporter: SpanExporter
    plan: _IdPlan
    tracker: _Tracker


class LangfuseSink:
    """Delivers runs to Langfuse, one trace per run, confirmed by the server.

    Implements :class:`~ttft_probe.sinks._base.Sink`. See the module docstring for what
    is sent and how confirmation and isolation work.

    Args:
        public_key: Langfuse public key (``pk-lf-…``).
        secret_key: Langfuse secret key (``sk-lf-…``).
        host: Base URL of the Langfuse server (``http://`` or ``https://``).
        export_timeout_s: Bound of one export, retries included (s).
        close_timeout_s: How long :meth:`close` waits for the SDK to stop (s); default
            ``export_timeout_s + 1``, enough for an export already on the wire to end.
        user_id: Langfuse user id set on every trace (optional).
        tags: Langfuse tags set on every trace.

    Raises:
        ConfigError: A key is empty or the host is not an http(s) URL.
    """

    name: ClassVar[str] = "langfuse"

    def __init__(
        self,
        *,
        public_key: str,
        secret_key: str,
        host: str = DEFAULT_HOST,
        export_timeout_s: float = _DEFAULT_TIMEOUT_S,
        close_timeout_s: float | None = None,
        user_id: str | None = None,
        tags: Sequence[str] = ("ttft_probe",),
    ) -> None:
        """See the class docstring."""
        if not public_key or not secret_key:
            raise ConfigError("Langfuse needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY")
        if not host.startswith(("http://", "https://")):
            raise ConfigError("LANGFUSE_HOST / LANGFUSE_BASE_URL must be an http(s) URL")
        if not export_timeout_s > 0:
            raise ConfigError("the Langfuse export timeout must be > 0 s")
        self._public_key = public_key
        self._secret_key = secret_key
        self._host = host.rstrip("/")
        self._export_timeout_s = float(export_timeout_s)
        self._close_timeout_s = (
            self._export_timeout_s + 1.0 if close_timeout_s is None else close_timeout_s
        )
        self._user_id = _propagatable(user_id)
        self._tags = [t for t in tags if _propagatable(t) is not None]
        self._lock = threading.Lock()  # pipeline, _closed, _broken
        self._emit_lock = threading.Lock()  # one run's spans at a time (the id plan)
        self._pipeline: _Pipeline | None = None
        self._broken = False
        self._closed = False
        self._warn = LogOnce(_log)

    def __repr__(self) -> str:
        """Names the host only: never a key."""
        return f"LangfuseSink(host={self._host!r})"

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> LangfuseSink | None:
        """The sink the Langfuse variables in ``env`` describe, or ``None`` (see module doc).

        Cheap: imports nothing.

        Raises:
            ConfigError: The host or ``LANGFUSE_TIMEOUT`` is invalid.
        """
        public_key = env.get("LANGFUSE_PUBLIC_KEY")
        secret_key = env.get("LANGFUSE_SECRET_KEY")
        if not public_key or not secret_key:
            return None
        if env.get("LANGFUSE_TRACING_ENABLED", "true").strip().lower() == "false":
            return None
        host = env.get("LANGFUSE_BASE_URL") or env.get("LANGFUSE_HOST") or DEFAULT_HOST
        raw_timeout = env.get("LANGFUSE_TIMEOUT")
        timeout_s = _DEFAULT_TIMEOUT_S
        if raw_timeout:
            try:
                timeout_s = float(raw_timeout)
            except ValueError:
                raise ConfigError("LANGFUSE_TIMEOUT must be a number of seconds") from None
        return cls(
            public_key=public_key, secret_key=secret_key, host=host, export_timeout_s=timeout_s
        )

    # --- Sink ---

    def prepare(self) -> bool:
        """Import the SDK and build the private pipeline now (idempotent).

        Returns:
            Whether the sink can deliver (``False`` after :meth:`close` or a failed build).
        """
        return self._ready() is not None

    def deliver(self, batch: Sequence[Delivery], timeout_s: float) -> Sequence[bool]:
        """Send each run as one trace; ``True`` where the server confirmed all its spans.

        Waits at most ``timeout_s`` seconds (after building the pipeline on first use,
        which imports the SDK). Never raises.
        """
        count = len(batch)
        if count == 0:
            return []
        try:
            pipeline = self._ready()
            deadline = time.monotonic() + max(0.0, timeout_s)
            if pipeline is None:
                return [False] * count
            with self._emit_lock:
                attempts = [self._emit(pipeline, delivery) for delivery in batch]
            live = [a for a in attempts if a is not None]
            try:
                pipeline.tracker.wait(live, deadline)
            finally:
                pipeline.tracker.forget(live)
            results = [a is not None and a.confirmed for a in attempts]
        except Exception as exc:  # noqa: BLE001 - a sink never raises into the outbox
            self._warn.warning("deliver", "Langfuse delivery failed (%s)", type(exc).__name__)
            return [False] * count
        if any(a is not None and not a.done for a in attempts):
            self._warn.warning(
                "timeout", "Langfuse did not confirm within %.1f s; will retry", timeout_s
            )
        elif not all(results):
            self._warn.warning("rejected", "Langfuse export failed; will retry")
        return results

    def close(self) -> None:
        """Stop the SDK's threads; wait at most ``close_timeout_s``. Never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            pipeline.exporter.shutdown()  # exports fail at once from now on
        except Exception as exc:  # noqa: BLE001
            self._warn.warning(
                "close", "Langfuse exporter shutdown failed (%s)", type(exc).__name__
            )
        worker = threading.Thread(
            target=self._teardown, args=(pipeline,), name="ttft-probe-langfuse-close", daemon=True
        )
        worker.start()
        worker.join(self._close_timeout_s)
        if worker.is_alive():
            self._warn.warning(
                "close_timeout",
                "Langfuse SDK did not stop within %.1f s; its threads end within the export "
                "timeout",
                self._close_timeout_s,
            )

    # --- internals ---

    def _ready(self) -> _Pipeline | None:
        with self._lock:
            if self._closed or self._broken:
                return None
            if self._pipeline is None:
                try:
                    self._pipeline = self._build()
                except Exception as exc:  # noqa: BLE001 - disable the sink, keep the runs
                    self._broken = True
                    self._warn.warning(
                        "build",
                        "Langfuse sink disabled: SDK set-up failed (%s)",
                        type(exc).__name__,
                    )
                    return None
            return self._pipeline

    def _build(self) -> _Pipeline:  # noqa: C901 - the SDK's objects, wired in one place
        import langfuse  # noqa: PLC0415 - optional backend, imported on first use
        from langfuse._client.resource_manager import (  # noqa: PLC0415
            LangfuseResourceManager,
        )
        from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: PLC0415
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.id_generator import (  # noqa: PLC0415
            IdGenerator,
            RandomIdGenerator,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: PLC0415

        from ttft_probe.telemetry.env import resource_from  # noqa: PLC0415

        plan = _IdPlan()
        tracker = _Tracker()
        random_ids = RandomIdGenerator()

        class PlannedIds(IdGenerator):
            """The run's fixed ids while its spans are made; random ids otherwise."""

            def generate_span_id(self) -> int:
                planned = plan.next_span_id()
                return random_ids.generate_span_id() if planned is None else planned

            def generate_trace_id(self) -> int:
                planned = plan.trace_id
                return random_ids.generate_trace_id() if planned is None else planned

            def is_trace_id_random(self) -> bool:
                return False

        class ConfirmingExporter(SpanExporter):
            """The SDK-configured OTLP exporter, reporting each span's result to the tracker."""

            def __init__(self, inner: SpanExporter) -> None:
                self._inner = inner
                self._shut = False

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                keys = [(s.context.trace_id, s.context.span_id) for s in spans if s.context]
                started = tracker.export_started()
                result = SpanExportResult.FAILURE
                if not self._shut:
                    try:
                        result = self._inner.export(spans)
                    except Exception:  # noqa: BLE001 - a failed export is a result
                        result = SpanExportResult.FAILURE
                tracker.report(keys, ok=result is SpanExportResult.SUCCESS, started=started)
                return result

            def shutdown(self) -> None:
                if not self._shut:
                    self._shut = True
                    self._inner.shutdown()

            def force_flush(self, timeout_millis: int = 30_000) -> bool:  # noqa: ARG002
                return True

        # The headers the SDK puts on its own exporter (langfuse._client.span_processor).
        basic = _basic_auth(self._public_key, self._secret_key)
        inner = OTLPSpanExporter(
            endpoint=self._host + TRACES_PATH,
            headers={
                "Authorization": basic,
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": langfuse.__version__,
                "x-langfuse-public-key": self._public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=self._export_timeout_s,
            compression=Compression.Gzip,
        )
        exporter = ConfirmingExporter(inner)
        provider = TracerProvider(
            resource=resource_from({}),
            sampler=ALWAYS_ON,
            id_generator=PlannedIds(),
            shutdown_on_exit=False,
        )
        client = _private_client(
            langfuse.Langfuse,
            LangfuseResourceManager,
            public_key=self._public_key,
            secret_key=self._secret_key,
            base_url=self._host,
            timeout=max(1, math.ceil(self._export_timeout_s)),
            tracing_enabled=True,
            flush_at=_SPANS_PER_RUN,
            flush_interval=_BACKSTOP_FLUSH_S,
            sample_rate=1.0,
            media_upload_thread_count=1,
            should_export_span=_export_every_span,
            tracer_provider=provider,
            span_exporter=exporter,
        )
        resources = client._resources  # noqa: SLF001 - verify the SDK took our provider
        if resources is None or resources.tracer_provider is not provider:
            if resources is not None:
                resources.shutdown()
            msg = "the SDK did not use the private tracer provider (tracing disabled?)"
            raise RuntimeError(msg)
        # The SDK's atexit hook flushes and can block for the export timeout; the outbox
        # keeps unconfirmed runs, and close() is bounded.
        atexit.unregister(resources.shutdown)
        tracer = provider.get_tracer(
            _TRACER_NAME, langfuse.__version__, attributes={"public_key": self._public_key}
        )
        return _Pipeline(
            client=client,
            provider=provider,
            tracer=tracer,
            exporter=exporter,
            plan=plan,
            tracker=tracker,
        )

    def _emit(self, pipeline: _Pipeline, delivery: Delivery) -> _Attempt | None:
        """Create and end one run's spans (caller holds the emit lock); ``None`` on a fault."""
        try:
            record = delivery.record
            ids = langfuse_ids(record)
            trace_id = int(ids.trace_id, 16)
            keys = [
                (trace_id, int(ids.agent_observation_id, 16)),
                (trace_id, int(ids.generation_observation_id, 16)),
            ]
        except Exception as exc:  # noqa: BLE001
            self._warn.warning("emit", "Langfuse: run skipped (%s)", type(exc).__name__)
            return None
        attempt = pipeline.tracker.expect(keys)  # before the spans end: exports are async
        try:
            _make_spans(pipeline, delivery, ids, user_id=self._user_id, tags=self._tags)
        except Exception as exc:  # noqa: BLE001
            pipeline.tracker.forget([attempt])
            self._warn.warning("emit", "Langfuse: run skipped (%s)", type(exc).__name__)
            return None
        return attempt

    def _teardown(self, pipeline: _Pipeline) -> None:
        steps = [pipeline.client.shutdown, pipeline.provider.shutdown]
        resources = pipeline.client._resources  # noqa: SLF001
        if resources is not None:
            # The prompt cache's idle refresh thread is otherwise only stopped at exit.
            steps.append(resources.prompt_cache._task_manager.shutdown)  # noqa: SLF001
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - each step on its own
                self._warn.warning("close", "Langfuse SDK shutdown failed (%s)", type(exc).__name__)


class _NotRecordingError(RuntimeError):
    """The private provider made a non-recording span (``OTEL_SDK_DISABLED=true``)."""


def _make_spans(
    pipeline: _Pipeline,
    delivery: Delivery,
    ids: LangfuseIds,
    *,
    user_id: str | None,
    tags: list[str],
) -> None:
    """Start and end the run's two spans with its fixed ids and wall times."""
    from langfuse import LangfuseAgent, LangfuseGeneration, propagate_attributes  # noqa: PLC0415
    from opentelemetry import context as otel_context  # noqa: PLC0415
    from opentelemetry import trace as otel_trace  # noqa: PLC0415

    record = delivery.record
    wall = _wall_times(delivery)
    name = f"{sc.INVOKE_AGENT} {record.agent}"
    metadata = record.to_dict()
    prompt, answer = _content_io(delivery.content)
    observation_metadata = metadata
    if delivery.content is not None and delivery.content.truncated:
        observation_metadata = {**metadata, _CONTENT_TRUNCATED: True}
    level = _level(record.status)
    status_message = None if level is None else record.status.value
    trace_metadata = {k: metadata[k] for k in TRACE_METADATA_FIELDS if metadata.get(k) is not None}
    first = delivery.first_generation
    model = record.model or (None if first is None else first.model)

    pipeline.plan.set(ids)
    # An empty context: no ambient span becomes the parent and no ambient Langfuse
    # attributes (an application's propagate_attributes) leak into the run's trace.
    token = otel_context.attach(otel_context.Context())
    try:
        root_span = pipeline.tracer.start_span(name, start_time=wall.start_ns)
        if not root_span.is_recording():
            raise _NotRecordingError
        with (
            otel_trace.use_span(root_span, end_on_exit=False),
            propagate_attributes(
                session_id=_propagatable(record.conversation_id),
                user_id=user_id,
                tags=tags or None,
                trace_name=_propagatable(name),
                metadata=trace_metadata,
            ),
        ):
            root = LangfuseAgent(
                otel_span=root_span,
                langfuse_client=pipeline.client,
                input=prompt,
                output=answer,
                metadata=observation_metadata,
                version=record.agent_version,
                level=level,
                status_message=status_message,
            )
            gen_span = pipeline.tracer.start_span(
                f"chat {model}" if model else "chat", start_time=wall.start_ns
            )
            generation = LangfuseGeneration(
                otel_span=gen_span,
                langfuse_client=pipeline.client,
                input=prompt,
                output=answer,
                metadata=observation_metadata,
                model=model,
                usage_details=_usage(record, delivery.requests),
                completion_start_time=None
                if wall.first_token_ns is None
                else _utc(wall.first_token_ns),
                level=level,
                status_message=status_message,
            )
        for span in (root_span, gen_span):
            _set_null_metadata(span, metadata)
        generation.end(end_time=wall.end_ns)
        root.end(end_time=wall.end_ns)
    finally:
        otel_context.detach(token)
        pipeline.plan.clear()


def _set_null_metadata(span: Span, metadata: Mapping[str, Any]) -> None:
    """Write ``None`` fields as JSON ``null``: the SDK skips them, the contract keeps them."""
    span.set_attributes(
        {f"{_METADATA_PREFIX}.{k}": "null" for k, v in metadata.items() if v is None}
    )


def _export_every_span(_span: ReadableSpan) -> bool:
    """The private provider holds only this sink's spans: export all of them."""
    return True


def _basic_auth(public_key: str, secret_key: str) -> str:
    import base64  # noqa: PLC0415

    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    return f"Basic {token}"


def _private_client(langfuse_cls: type[Langfuse], registry: Any, **kwargs: Any) -> Langfuse:
    """A ``Langfuse`` client of its own, kept out of the SDK's per-key registry.

    The SDK keeps one resource manager (provider, exporter, threads) per public key in
    ``LangfuseResourceManager._instances`` and hands it to every later ``Langfuse()``
    with that key, ignoring their ``tracer_provider``. An application's client with the
    same key is set aside while ours is built and put back afterwards, so neither side
    ever gets the other's.
    """
    public_key = kwargs["public_key"]
    instances: dict[str, Any] = registry._instances  # noqa: SLF001
    with registry._lock:  # noqa: SLF001 - the registry's own (reentrant) lock
        previous = instances.pop(public_key, None)
        try:
            return langfuse_cls(**kwargs)
        finally:
            instances.pop(public_key, None)
            if previous is not None:
                instances[public_key] = previous
