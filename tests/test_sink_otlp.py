"""The durable OTLP sink: rebuilt spans on the wire, idempotent ids, bounded failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from helpers.otlp import attributes_of
from helpers.records import (
    ANCHOR,
    MS,
    SPAN_ID,
    START,
    STREAM_RUN_ID,
    TRACE_ID,
    stream_times,
    traced_record,
    wall,
)
from helpers.waterfall import title_and_generation
from otlp_receiver import OtlpReceiver
from ttft_probe import _semconv as sc
from ttft_probe.content import CapturedContent
from ttft_probe.record import MarkerTimes
from ttft_probe.sinks._base import Delivery, Sink
from ttft_probe.sinks.otlp import OtlpSink, build_spans, child_span_id, request_span_id
from ttft_probe.telemetry import Telemetry
from ttft_probe.waterfall import RequestKind

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

PARENT_ID = "a3ce929d0e0e4736"
SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
ROOT = "invoke_agent claude_code"
PHASES = ("cli_ready", "session_init", "model_first_token")


def delivery(times: MarkerTimes | None = None, **fields: Any) -> Delivery:
    times = times or stream_times()
    return Delivery(traced_record(times, **fields), times, ANCHOR.wall_ns_at(times.start_ns))


def sink_for(endpoint: str, **env: str) -> OtlpSink:
    sink = OtlpSink.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **env})
    assert sink is not None
    return sink


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


# --- configuration ---


def test_the_sink_implements_the_protocol() -> None:
    sink = sink_for("http://127.0.0.1:9")
    assert isinstance(sink, Sink)
    assert OtlpSink.name == "otlp"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4318/v1/metrics"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_no_sink_unless_otlp_traces_are_configured(env: dict[str, str]) -> None:
    assert OtlpSink.from_environment(env) is None


def test_endpoint_gets_the_traces_path_only_from_the_base_variable() -> None:
    assert sink_for("http://c:4318/").endpoint == "http://c:4318/v1/traces"
    traces = OtlpSink.from_environment(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/custom"}
    )
    assert traces is not None
    assert traces.endpoint == "http://c:9999/custom"
    grpc_sink = sink_for("http://c:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert grpc_sink.endpoint == "http://c:4317"


def test_grpc_protocol_selects_the_grpc_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    grpc_sink = sink_for("http://127.0.0.1:4317", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc")
    assert grpc_sink.protocol == "grpc"
    exporter = grpc_sink._exporter(1.0)
    assert isinstance(exporter, GrpcExporter)
    exporter.shutdown()
    http_sink = sink_for("http://127.0.0.1:4318")
    assert http_sink.protocol == "http/protobuf"
    assert isinstance(http_sink._exporter(1.0), HttpExporter)


def test_bad_explicit_configuration_is_loud() -> None:
    with pytest.raises(ValueError, match="protocol"):
        OtlpSink(protocol="http/json")
    with pytest.raises(ValueError, match="compression"):
        OtlpSink(compression="zstd")


def test_headers_timeout_and_service_name_from_the_environment() -> None:
    sink = sink_for(
        "http://c:4318",
        OTEL_EXPORTER_OTLP_HEADERS="Authorization=Basic%20abc,x-team = probe",
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="3.5",
        OTEL_SERVICE_NAME="my-product",
        OTEL_EXPORTER_OTLP_COMPRESSION="GZIP",
    )
    config = sink._config
    assert dict(config.headers) == {"authorization": "Basic abc", "x-team": "probe"}
    assert config.timeout_s == 3.5
    assert config.service_name == "my-product"
    assert config.compression == "gzip"


# --- the rebuilt spans ---


def test_rebuilt_spans_have_the_shape_of_the_live_spans() -> None:
    # The live path (a given provider: spans flow through it) against the rebuild.
    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tel = Telemetry(tracer_provider=tp, meter_provider=None)
    times = stream_times(prompt_sent_ns=START + 900 * MS)
    run = tel.start_run(agent="claude_code", start_ns=START, anchor=ANCHOR)
    record = traced_record(times, trace_id=run.trace_id_hex, span_id=run.span_id_hex)
    run.finish(record, times)
    live = {s.name: s for s in exporter.get_finished_spans()}
    rebuilt = {s.name: s for s in build_spans(Delivery(record, times, wall(START)))}
    tp.shutdown()

    assert set(live) == set(rebuilt) == {ROOT, *PHASES}

    def shape(span: ReadableSpan) -> tuple[Any, ...]:
        return (
            span.kind,
            span.context.trace_id,
            None if span.parent is None else span.parent.span_id,
            span.start_time,
            span.end_time,
            dict(span.attributes or {}),
            [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
            span.status.status_code,
            span.instrumentation_scope.name if span.instrumentation_scope else None,
        )

    assert shape(rebuilt[ROOT]) == shape(live[ROOT])
    assert rebuilt[ROOT].context.span_id == live[ROOT].context.span_id
    for name in PHASES:
        assert shape(rebuilt[name]) == shape(live[name])
        assert rebuilt[name].context.span_id == child_span_id(STREAM_RUN_ID, name)


def test_delivered_run_arrives_with_the_records_ids_links_times_and_attributes(
    rx: OtlpReceiver,
) -> None:
    d = delivery(stream_times(prompt_sent_ns=START + 900 * MS))
    assert sink_for(rx.endpoint).deliver([d], timeout_s=10) == [True]

    spans = {span.name: (resource, span) for resource, span in rx.spans()}
    assert set(spans) == {ROOT, *PHASES}
    resource, root = spans[ROOT]
    assert resource["service.name"] == "ttft-probe"
    assert root.trace_id.hex() == TRACE_ID
    assert root.span_id.hex() == SPAN_ID
    assert root.parent_span_id == b""
    assert root.kind == root.SPAN_KIND_CLIENT
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (
        wall(START),
        wall(START + 2000 * MS),
    )
    assert [(e.name, e.time_unix_nano) for e in root.events] == [
        ("processSpawned", wall(START)),
        ("cliReady", wall(START + 480 * MS)),
        ("sessionInitDone", wall(START + 900 * MS)),
        ("promptSent", wall(START + 900 * MS)),
        ("firstToken", wall(START + 1400 * MS)),
        ("processExited", wall(START + 2000 * MS)),
    ]
    a = attributes_of(root.attributes)
    assert a[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert a[sc.GEN_AI_AGENT_NAME] == "claude_code"
    assert a[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert a[sc.GEN_AI_REQUEST_MODEL] == "claude-x"
    assert a["ttft_probe.turn_ordinal"] == 2
    assert a["ttft_probe.turn_cohort"] == "turn_2+"
    assert a["ttft_probe.session_resumed"] is True
    assert a["ttft_probe.status"] == "succeeded"
    assert a["ttft_probe.cli_ready_ms"] == 480.0
    assert a["ttft_probe.session_init_ms"] == 420.0
    assert a["ttft_probe.model_first_token_ms"] == 500.0
    assert a["ttft_probe.dominant_segment"] == "model_first_token"
    assert a["ttft_probe.run_id"] == STREAM_RUN_ID

    expected = {
        "cli_ready": (START, START + 480 * MS),
        "session_init": (START + 480 * MS, START + 900 * MS),
        "model_first_token": (START + 900 * MS, START + 1400 * MS),
    }
    for name, (begin, end) in expected.items():
        _, child = spans[name]
        assert child.trace_id == root.trace_id
        assert child.parent_span_id == root.span_id
        assert child.span_id == child_span_id(STREAM_RUN_ID, name).to_bytes(8, "big")
        assert child.kind == child.SPAN_KIND_INTERNAL
        assert (child.start_time_unix_nano, child.end_time_unix_nano) == (wall(begin), wall(end))
        c = attributes_of(child.attributes)
        assert c["ttft_probe.turn_cohort"] == "turn_2+"
        assert c["ttft_probe.session_resumed"] is True


def test_the_roots_parent_is_kept(rx: OtlpReceiver) -> None:
    sink = sink_for(rx.endpoint)
    d = delivery()
    with_parent = attrs.evolve(d, record=attrs.evolve(d.record, parent_span_id=PARENT_ID))
    assert sink.deliver([with_parent], 10) == [True]
    spans = {span.name: span for _, span in rx.spans()}
    assert spans[ROOT].parent_span_id.hex() == PARENT_ID
    assert spans[ROOT].trace_id.hex() == TRACE_ID


def test_a_parent_given_as_an_argument(rx: OtlpReceiver) -> None:
    (root, *_) = build_spans(delivery(), parent_span_id=PARENT_ID)
    assert root.parent is not None
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.parent.trace_id == int(TRACE_ID, 16)


def test_redelivery_sends_identical_span_ids(rx: OtlpReceiver) -> None:
    sink = sink_for(rx.endpoint)
    d = delivery()
    assert sink.deliver([d], 10) == [True]
    assert sink.deliver([d], 10) == [True]
    sent = [(span.trace_id, span.span_id, span.name) for _, span in rx.spans()]
    assert len(sent) == 8
    assert len(set(sent)) == 4  # a receiver deduplicating by span id keeps one run


def test_failed_run_is_an_error_span(rx: OtlpReceiver) -> None:
    times = stream_times(first_token_ns=None)
    assert sink_for(rx.endpoint).deliver([delivery(times, status="timed_out")], 10) == [True]
    spans = {span.name: span for _, span in rx.spans()}
    assert set(spans) == {ROOT, "cli_ready", "session_init"}
    root = spans[ROOT]
    assert root.status.code == root.status.STATUS_CODE_ERROR
    assert attributes_of(root.attributes)[sc.ERROR_TYPE] == "timed_out"
    # No end-of-run guess: the root ends at the end marker.
    assert root.end_time_unix_nano == wall(START + 2000 * MS)


def test_a_run_without_marker_times_sends_its_root_alone(rx: OtlpReceiver) -> None:
    times = stream_times()
    record = traced_record(times)
    d = Delivery(record, None, wall(START))
    assert sink_for(rx.endpoint).deliver([d], 10) == [True]
    ((_, root),) = rx.spans()
    assert root.span_id.hex() == SPAN_ID
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (
        wall(START),
        wall(START + 2000 * MS),
    )
    assert list(root.events) == []


def test_a_record_without_ids_gets_stable_derived_ids(rx: OtlpReceiver) -> None:
    d = delivery(trace_id=None, span_id=None)
    first = {s.name: s.context for s in build_spans(d)}
    second = {s.name: s.context for s in build_spans(d)}
    assert first == second
    assert first[ROOT].trace_id != 0
    assert first[ROOT].span_id not in {first[name].span_id for name in PHASES}


def test_a_batch_of_runs_in_one_request(rx: OtlpReceiver) -> None:
    other = "9f0d7a52-1c1e-4d5c-8a7e-55b0b8c1d2e3"
    batch = [
        delivery(),
        delivery(run_id=other, trace_id="1" * 32, span_id="2" * 16),
    ]
    assert sink_for(rx.endpoint).deliver(batch, 10) == [True, True]
    assert len(rx.traces) == 1
    assert {span.trace_id.hex() for _, span in rx.spans()} == {TRACE_ID, "1" * 32}


def test_gzip_compression_on_the_wire(rx: OtlpReceiver) -> None:
    sink = sink_for(rx.endpoint, OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    assert sink.deliver([delivery()], 10) == [True]
    assert rx.encodings == ["gzip"]


# --- opt-in captured content ---

PROMPT = "naïve — 日本語: what is 2+2?"
ANSWER = "réponse — 日本語の答え 🚀 4"
CONTENT_KEYS = (sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES, sc.TTFT_CONTENT_TRUNCATED)


def with_content(d: Delivery, content: CapturedContent | None) -> Delivery:
    return Delivery(d.record, d.times, d.started_wall_ns, content=content)


def test_captured_content_arrives_on_the_root_span(rx: OtlpReceiver) -> None:
    d = with_content(delivery(), CapturedContent(input_text=PROMPT, output_text=ANSWER))
    assert sink_for(rx.endpoint).deliver([d], 10) == [True]

    spans = {span.name: attributes_of(span.attributes) for _, span in rx.spans()}
    root = spans[ROOT]
    assert root[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert json.loads(root[sc.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    ]
    assert json.loads(root[sc.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}
    ]
    assert PROMPT in root[sc.GEN_AI_INPUT_MESSAGES]  # UTF-8 on the wire, not \u-escaped
    assert sc.TTFT_CONTENT_TRUNCATED not in root
    for name in PHASES:
        assert not set(CONTENT_KEYS) & set(spans[name])


def test_truncated_content_is_flagged_on_the_wire(rx: OtlpReceiver) -> None:
    d = with_content(delivery(), CapturedContent(input_text=PROMPT, truncated=True))
    assert sink_for(rx.endpoint).deliver([d], 10) == [True]
    root = {span.name: attributes_of(span.attributes) for _, span in rx.spans()}[ROOT]
    assert json.loads(root[sc.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"] == PROMPT
    assert sc.GEN_AI_OUTPUT_MESSAGES not in root
    assert root[sc.TTFT_CONTENT_TRUNCATED] is True


def test_without_content_the_wire_has_no_content_keys(rx: OtlpReceiver) -> None:
    assert sink_for(rx.endpoint).deliver([delivery()], 10) == [True]
    (request,) = rx.traces
    payload = request.SerializeToString()
    for key in CONTENT_KEYS:
        assert key.encode() not in payload
    assert b"messages" not in payload


def test_live_and_rebuilt_root_spans_carry_the_same_content() -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tel = Telemetry(tracer_provider=tp, meter_provider=None)
    times = stream_times()
    content = CapturedContent(input_text=PROMPT, output_text=ANSWER, truncated=True)
    run = tel.start_run(agent="claude_code", start_ns=START, anchor=ANCHOR)
    record = traced_record(times, trace_id=run.trace_id_hex, span_id=run.span_id_hex)
    run.finish(record, times, content=content)
    live = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    rebuilt = {
        s.name: dict(s.attributes or {})
        for s in build_spans(Delivery(record, times, wall(START), content=content))
    }
    tp.shutdown()
    assert live == rebuilt
    assert live[ROOT][sc.TTFT_CONTENT_TRUNCATED] is True


def test_large_content_is_split_into_several_exports(
    rx: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ttft_probe.sinks import otlp

    monkeypatch.setattr(otlp, "_MAX_EXPORT_BYTES", 40_000)
    big = CapturedContent(input_text=PROMPT, output_text="日本語" * 5_000)  # 45 kB UTF-8
    runs = [with_content(delivery(run_id=f"r{i}", trace_id=f"{i + 1:032x}"), big) for i in range(3)]
    small = [delivery(run_id=f"s{i}", trace_id=f"{i + 11:032x}") for i in range(3)]
    assert sink_for(rx.endpoint).deliver([*runs, *small], 10) == [True] * 6

    # each large run alone, the three runs without content together
    def traces_in(request: ExportTraceServiceRequest) -> set[str]:
        return {
            span.trace_id.hex()
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }

    assert [len(traces_in(request)) for request in rx.traces] == [1, 1, 1, 3]
    roots = [attributes_of(s.attributes) for _, s in rx.spans() if s.name == ROOT]
    assert sum(sc.GEN_AI_OUTPUT_MESSAGES in a for a in roots) == 3


# --- the model requests (provider observer) ---

TITLE = "chat claude-haiku"
GENERATION = "chat claude-x"
REQUEST_KEYS = (
    sc.TTFT_REQUEST_KIND,
    sc.TTFT_REQUEST_ID,
    sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    sc.HTTP_RESPONSE_STATUS_CODE,
    sc.HTTP_REQUEST_BODY_SIZE,
)


def observed(times: MarkerTimes | None = None, **fields: Any) -> Delivery:
    """:func:`delivery` with the shared waterfall: a title side call, then the generation."""
    return attrs.evolve(delivery(times, **fields), requests=title_and_generation(START))


def test_model_requests_arrive_as_spans_under_the_phase_they_arrived_in(
    rx: OtlpReceiver,
) -> None:
    d = observed(cache_creation_input_tokens=7)
    assert sink_for(rx.endpoint).deliver([d], timeout_s=10) == [True]

    spans = {span.name: span for _, span in rx.spans()}
    assert set(spans) == {ROOT, *PHASES, TITLE, GENERATION}
    root = spans[ROOT]
    title, generation = spans[TITLE], spans[GENERATION]
    # The title came before the prompt (during session_init): under the root. The
    # generation came after it: under model_first_token (900 → 1400 ms).
    assert title.parent_span_id == root.span_id
    assert generation.parent_span_id == spans["model_first_token"].span_id
    assert generation.parent_span_id == child_span_id(STREAM_RUN_ID, "model_first_token").to_bytes(
        8, "big"
    )
    for span, request_id in ((title, 1), (generation, 2)):
        assert span.trace_id == root.trace_id
        assert span.span_id == request_span_id(STREAM_RUN_ID, request_id).to_bytes(8, "big")
        assert span.kind == span.SPAN_KIND_CLIENT
        assert span.status.code == span.status.STATUS_CODE_UNSET
    # Arrival → end; the title's end was not seen: it ends at its first content byte.
    assert (title.start_time_unix_nano, title.end_time_unix_nano) == (
        wall(START + 600 * MS),
        wall(START + 650 * MS),
    )
    assert (generation.start_time_unix_nano, generation.end_time_unix_nano) == (
        wall(START + 950 * MS),
        wall(START + 1900 * MS),
    )

    g = attributes_of(generation.attributes)
    assert g[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert g[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert g[sc.GEN_AI_REQUEST_MODEL] == "claude-x"
    assert g[sc.GEN_AI_USAGE_INPUT_TOKENS] == 3000  # cached tokens included
    assert g[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 50
    assert g[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2000
    assert g[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 900
    assert g[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 900
    ttfc = g[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(ttfc, float)  # a double on the wire, in seconds
    assert ttfc == pytest.approx(0.4)
    assert g[sc.HTTP_RESPONSE_STATUS_CODE] == 200
    assert g[sc.HTTP_REQUEST_BODY_SIZE] == 123_456
    assert g[sc.TTFT_REQUEST_KIND] == "generation"
    assert g[sc.TTFT_REQUEST_ID] == 2
    assert g["ttft_probe.turn_cohort"] == "turn_2+"
    assert g["ttft_probe.run_id"] == STREAM_RUN_ID
    assert sc.ERROR_TYPE not in g

    t = attributes_of(title.attributes)
    assert t[sc.GEN_AI_REQUEST_MODEL] == "claude-haiku"
    assert t[sc.TTFT_REQUEST_KIND] == "title"
    assert t[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == pytest.approx(0.05)
    assert not [key for key in t if key.startswith("gen_ai.usage.")]  # none reported

    # The root keeps the agent's own whole-turn usage; a cache write under both names.
    r = attributes_of(root.attributes)
    assert r[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 7
    assert r[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 7
    assert r[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"


def test_a_redelivered_waterfall_has_the_same_span_ids(rx: OtlpReceiver) -> None:
    sink = sink_for(rx.endpoint)
    d = observed()
    assert sink.deliver([d], 10) == [True]
    assert sink.deliver([d], 10) == [True]
    sent = [(span.trace_id, span.span_id, span.name) for _, span in rx.spans()]
    assert len(sent) == 12
    assert len(set(sent)) == 6


def test_request_kinds_name_their_operation_and_errors_mark_the_span() -> None:
    _, generation = title_and_generation(START, api="gemini", model="gemini-2.5-pro")
    failed = attrs.evolve(generation, request_id=3, status=429, usage=None)
    count = attrs.evolve(
        generation, request_id=4, kind=RequestKind.COUNT_TOKENS, model=None, usage=None
    )
    d = attrs.evolve(delivery(), requests=(generation, failed, count))
    spans = {
        s.context.span_id: s for s in build_spans(d) if s.name != ROOT and s.name not in PHASES
    }
    ok = spans[request_span_id(STREAM_RUN_ID, 2)]
    assert ok.name == "generate_content gemini-2.5-pro"
    assert (ok.attributes or {})[sc.GEN_AI_PROVIDER_NAME] == "gcp.gemini"
    assert ok.status.status_code is StatusCode.UNSET
    bad = spans[request_span_id(STREAM_RUN_ID, 3)]
    assert bad.status.status_code is StatusCode.ERROR
    assert (bad.attributes or {})[sc.ERROR_TYPE] == "429"
    assert (bad.attributes or {})[sc.HTTP_RESPONSE_STATUS_CODE] == 429
    counted = spans[request_span_id(STREAM_RUN_ID, 4)]
    assert counted.name == "count_tokens"
    assert (counted.attributes or {})[sc.GEN_AI_OPERATION_NAME] == "count_tokens"


def test_without_requests_or_marker_times_there_are_no_request_spans(rx: OtlpReceiver) -> None:
    plain = build_spans(delivery())
    assert {s.name for s in plain} == {ROOT, *PHASES}
    for span in plain:
        assert not set(REQUEST_KEYS) & set(span.attributes or {})
    # Requests cannot be placed without the run's markers: the root alone, as before.
    untimed = Delivery(traced_record(stream_times()), None, wall(START), None,
                       title_and_generation(START))
    assert [s.name for s in build_spans(untimed)] == [ROOT]


def test_live_request_spans_have_the_shape_of_the_rebuilt_ones() -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tel = Telemetry(tracer_provider=tp, meter_provider=None)
    times = stream_times()
    requests = title_and_generation(START)
    run = tel.start_run(agent="claude_code", start_ns=START, anchor=ANCHOR)
    record = traced_record(times, trace_id=run.trace_id_hex, span_id=run.span_id_hex)
    run.finish(record, times, requests=requests)
    live = exporter.get_finished_spans()
    rebuilt = build_spans(Delivery(record, times, wall(START), requests=requests))
    tp.shutdown()

    def shapes(spans: Sequence[ReadableSpan]) -> dict[str, tuple[Any, ...]]:
        names = {s.context.span_id: s.name for s in spans}
        return {
            s.name: (
                s.kind,
                None if s.parent is None else names[s.parent.span_id],
                s.start_time,
                s.end_time,
                dict(s.attributes or {}),
                s.status.status_code,
            )
            for s in spans
        }

    assert set(shapes(live)) == {ROOT, *PHASES, TITLE, GENERATION}
    assert shapes(live) == shapes(rebuilt)
    assert shapes(live)[GENERATION][1] == "model_first_token"
    assert shapes(live)[TITLE][1] == ROOT


# --- failures: False, bounded, never raised ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _StatusServer(ThreadingHTTPServer):
    daemon_threads = True
    status: int = 500
    delay_s: float = 0.0
    hits: int = 0


class _StatusHandler(BaseHTTPRequestHandler):
    server: _StatusServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.hits += 1
        time.sleep(self.server.delay_s)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    server = _StatusServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: _StatusServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


def test_collector_down_is_false_within_the_bound() -> None:
    sink = sink_for(f"http://127.0.0.1:{_free_port()}")
    started = time.monotonic()
    assert sink.deliver([delivery(), delivery(run_id="r2")], timeout_s=1.0) == [False, False]
    assert time.monotonic() - started < 1.5


def test_a_500_is_false_at_once(status_server: _StatusServer) -> None:
    sink = sink_for(_url(status_server))
    started = time.monotonic()
    assert sink.deliver([delivery()], timeout_s=5.0) == [False]
    assert time.monotonic() - started < 2.0  # 500 is not retried by the exporter
    assert status_server.hits == 1


def test_a_slow_collector_is_false_within_the_timeout(status_server: _StatusServer) -> None:
    status_server.status, status_server.delay_s = 200, 5.0
    sink = sink_for(_url(status_server), OTEL_EXPORTER_OTLP_TIMEOUT="30")
    started = time.monotonic()
    assert sink.deliver([delivery()], timeout_s=0.5) == [False]
    assert time.monotonic() - started < 1.0


def test_closed_sink_and_empty_batch() -> None:
    sink = sink_for("http://127.0.0.1:9")
    assert sink.deliver([], 1.0) == []
    sink.close()
    assert sink.deliver([delivery()], 1.0) == [False]


def test_a_run_whose_spans_cannot_be_built_fails_alone(
    rx: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ttft_probe.sinks import otlp

    real = otlp.build_spans

    def flaky(d: Delivery, *args: Any, **kwargs: Any) -> list[ReadableSpan]:
        if d.record.run_id == "bad":
            raise RuntimeError("corrupt row")
        return real(d, *args, **kwargs)

    monkeypatch.setattr(otlp, "build_spans", flaky)
    assert sink_for(rx.endpoint).deliver([delivery(run_id="bad"), delivery()], 10) == [
        False,
        True,
    ]


# --- gRPC on the wire ---


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def Export(  # noqa: N802 - the generated servicer's name
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        self.requests.append(request)
        return ExportTraceServiceResponse()


def test_grpc_delivery_on_the_wire() -> None:
    service = _TraceService()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        sink = sink_for(f"http://127.0.0.1:{port}", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        assert sink.deliver([delivery()], timeout_s=10) == [True]
    finally:
        server.stop(None)
    spans = [
        span
        for req in service.requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert {span.name for span in spans} == {ROOT, *PHASES}
    assert {span.trace_id.hex() for span in spans} == {TRACE_ID}


# --- laziness ---


def test_importing_the_sink_loads_no_exporter_or_sdk() -> None:
    code = (
        "import json, sys\n"
        "import ttft_probe.sinks.otlp as m\n"
        "m.OtlpSink.from_environment({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:9'})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS)])
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(proc.stdout)
    forbidden = ("opentelemetry.exporter", "opentelemetry.sdk", "grpc", "requests")
    assert [m for m in modules if m.startswith(forbidden)] == []
