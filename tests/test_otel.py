"""OpenTelemetry sink: spans, events, metrics, provider selection, laziness, and the wire."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.metrics import NoOpHistogram, NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from helpers import transcripts
from helpers.otlp import attributes_of
from helpers.records import ANCHOR, MS, START, stream_record, stream_times, wall
from otlp_receiver import OtlpReceiver
from ttft_probe import _semconv as sc
from ttft_probe._clock import WallAnchor
from ttft_probe._run import CallerContext, ExitInfo, ProcessTracker
from ttft_probe.adapters import adapter_for
from ttft_probe.agents import provider_name, resolve_agent
from ttft_probe.content import CapturedContent
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.telemetry import RunSpan, Telemetry

if TYPE_CHECKING:
    from collections.abc import Iterator

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT_S = 60


# --- in-memory harness (explicit providers: no global state touched) ---


@attrs.define
class Harness:
    tel: Telemetry
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def run(
        self,
        record: RunRecord,
        times: MarkerTimes,
        agent: str | None = None,
        content: CapturedContent | None = None,
    ) -> RunSpan:
        span = self.tel.start_run(
            agent=agent or record.agent, start_ns=times.start_ns, anchor=ANCHOR
        )
        if content is None:
            span.finish(record, times)
        else:
            span.finish(record, times, content=content)
        return span

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.exporter.get_finished_spans()}

    def root(self) -> ReadableSpan:
        (root,) = [s for s in self.exporter.get_finished_spans() if s.name.startswith("invoke")]
        return root

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }

    def point(self, name: str) -> HistogramDataPoint:
        (point,) = self.metrics()[name].data.data_points
        assert isinstance(point, HistogramDataPoint)
        return point


@pytest.fixture
def h() -> Iterator[Harness]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Harness(Telemetry(tracer_provider=tp, meter_provider=mp), exporter, reader)
    tp.shutdown()
    mp.shutdown()


# --- spans ---


def test_root_span_is_an_invoke_agent_client_span_with_genai_attributes(h: Harness) -> None:
    times = stream_times()
    record = stream_record(
        times,
        model="claude-sonnet-4-5",
        conversation_id="conv-1",
        session_id="sess-1",
        turn_ordinal=2,
        session_resumed=True,
        exit_code=0,
        input_tokens=12,
        output_tokens=34,
        cache_read_input_tokens=5,
        agent_version="2.1.197",
    )
    h.run(record, times)
    root = h.root()
    assert root.name == "invoke_agent claude_code"
    assert root.kind is SpanKind.CLIENT
    assert root.parent is None
    a = dict(root.attributes or {})
    assert a[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert a[sc.GEN_AI_AGENT_NAME] == "claude_code"
    assert a[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert a[sc.GEN_AI_REQUEST_MODEL] == "claude-sonnet-4-5"
    assert a[sc.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert a[sc.GEN_AI_AGENT_VERSION] == "2.1.197"
    # GenAI counts every input token; Anthropic's own input_tokens are the uncached ones.
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 12 + 5
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 34
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 5
    assert sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in a
    assert sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS not in a
    assert a[sc.PROCESS_EXIT_CODE] == 0
    assert root.status.status_code is StatusCode.UNSET


def test_an_openai_agents_input_count_already_includes_its_cached_tokens(h: Harness) -> None:
    times = stream_times()
    record = attrs.evolve(stream_record(times, input_tokens=100, cache_read_input_tokens=40),
                          agent="codex")
    h.run(record, times)
    a = dict(h.root().attributes or {})
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 40


def test_a_cache_write_is_sent_under_its_current_and_its_older_name(h: Harness) -> None:
    # DESIGN §10: gen_ai.usage.cache_write.input_tokens replaced
    # gen_ai.usage.cache_creation.input_tokens; both go out while backends catch up.
    times = stream_times()
    h.run(stream_record(times, input_tokens=12, cache_creation_input_tokens=900), times)
    a = dict(h.root().attributes or {})
    assert a["gen_ai.usage.cache_write.input_tokens"] == 900
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 900
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 12 + 900  # cache writes are input too
    # Without the observer's requests the run has only its root and phase spans.
    assert set(h.spans()) == {
        "invoke_agent claude_code", "cli_ready", "session_init", "model_first_token"
    }


def test_every_non_null_record_field_is_a_ttft_probe_attribute(h: Harness) -> None:
    times = stream_times()
    record = stream_record(times, turn_ordinal=1, model="m")
    h.run(record, times)
    a = dict(h.root().attributes or {})
    expected = {f"ttft_probe.{k}": v for k, v in record.to_dict().items() if v is not None}
    # Plus two derived keys for Jaeger's exact-match tag search (not record fields).
    expected["ttft_probe.turn_cohort"] = "turn_1"
    expected["ttft_probe.dominant_segment"] = "model_first_token"
    assert {k: v for k, v in a.items() if k.startswith("ttft_probe.")} == expected
    assert a["ttft_probe.cli_ready_ms"] == 480.0
    assert a["ttft_probe.session_init_ms"] == 420.0
    assert a["ttft_probe.model_first_token_ms"] == 500.0
    assert a["ttft_probe.turn_ordinal"] == 1
    assert a["ttft_probe.session_resumed"] is False
    assert a["ttft_probe.status"] == "succeeded"
    assert a["ttft_probe.runtime_family"] == "claude-stream-json"
    assert "ttft_probe.session_id" not in a  # None is skipped, never "None"
    assert sc.PROCESS_EXIT_CODE not in a


@pytest.mark.parametrize(
    ("marker_ms", "dominant"),
    [
        ({"cli_ready_ns": 900, "session_init_done_ns": 1000}, "cli_ready"),
        ({"cli_ready_ns": 100, "session_init_done_ns": 1000}, "session_init"),
        ({"cli_ready_ns": 100, "session_init_done_ns": 200}, "model_first_token"),
    ],
)
def test_root_span_names_the_dominant_segment_for_tag_search(
    h: Harness, marker_ms: dict[str, int], dominant: str
) -> None:
    times = stream_times(
        **{k: START + v * MS for k, v in marker_ms.items()}, first_token_ns=START + 1400 * MS
    )
    h.run(stream_record(times, turn_ordinal=3, session_resumed=True), times)
    a = dict(h.root().attributes or {})
    assert a["ttft_probe.dominant_segment"] == dominant
    assert a["ttft_probe.turn_cohort"] == "turn_2+"
    assert a["ttft_probe.turn_ordinal"] == 3
    assert a["ttft_probe.session_resumed"] is True


def test_no_dominant_segment_or_cohort_when_unknown(h: Harness) -> None:
    times = stream_times(first_token_ns=None)  # incomplete: no claim about the biggest part
    h.run(stream_record(times), times)
    a = dict(h.root().attributes or {})
    assert "ttft_probe.dominant_segment" not in a
    assert "ttft_probe.turn_cohort" not in a


def test_root_span_times_are_anchor_converted_markers(h: Harness) -> None:
    times = stream_times()
    h.run(stream_record(times), times)
    root = h.root()
    assert root.start_time == wall(START)
    assert root.end_time == wall(START + 2000 * MS)


def test_root_span_ends_now_when_the_run_has_no_end_marker(h: Harness) -> None:
    times = stream_times(end_ns=None)
    anchor_now = WallAnchor.now()
    span = h.tel.start_run(agent="claude_code", start_ns=START, anchor=anchor_now)
    before = anchor_now.wall_ns_at(time.monotonic_ns())
    span.finish(stream_record(times), times)
    after = anchor_now.wall_ns_at(time.monotonic_ns())
    root = h.root()
    assert root.end_time is not None
    assert before <= root.end_time <= after


def test_phase_spans_are_children_with_explicit_marker_times(h: Harness) -> None:
    times = stream_times()
    span = h.run(stream_record(times), times)
    spans = h.spans()
    root = h.root()
    assert set(spans) == {root.name, "cli_ready", "session_init", "model_first_token"}
    expected = {
        "cli_ready": (START, START + 480 * MS),
        "session_init": (START + 480 * MS, START + 900 * MS),
        "model_first_token": (START + 900 * MS, START + 1400 * MS),
    }
    for name, (begin, end) in expected.items():
        child = spans[name]
        assert child.parent is not None
        assert child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.kind is SpanKind.INTERNAL
        assert (child.start_time, child.end_time) == (wall(begin), wall(end))
        # The cohort keys, so one span answers "slow session_init on turn 2+" in Jaeger.
        assert dict(child.attributes or {}) == {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.GEN_AI_AGENT_NAME: "claude_code",
            "ttft_probe.run_id": "0b7c2f1e-5d7a-4c7b-9d55-3f1f3b0f6a11",
            sc.TTFT_SESSION_RESUMED: False,
            sc.TTFT_PROCESS_REUSED: False,
            sc.TTFT_STATUS: "succeeded",
        }
    assert span.trace_id_hex == f"{root.context.trace_id:032x}"
    assert span.span_id_hex == f"{root.context.span_id:016x}"


def test_client_wait_span_only_for_a_request_driven_wait(h: Harness) -> None:
    times = stream_times(prompt_sent_ns=START + 1000 * MS)
    record = stream_record(
        times, request_driven=True, agent="codex_acp", runtime_family="acp-json-rpc"
    )
    assert record.client_wait_ms == 100.0
    h.run(record, times)
    spans = h.spans()
    assert (spans["client_wait"].start_time, spans["client_wait"].end_time) == (
        wall(START + 900 * MS),
        wall(START + 1000 * MS),
    )
    model = spans["model_first_token"]
    assert (model.start_time, model.end_time) == (wall(START + 1000 * MS), wall(START + 1400 * MS))


def test_no_phase_span_for_a_missing_marker(h: Harness) -> None:
    times = stream_times(session_init_done_ns=None, first_token_ns=None)
    record = stream_record(times)
    assert record.timing_unavailable_reason is not None
    h.run(record, times)
    assert set(h.spans()) == {"invoke_agent claude_code", "cli_ready"}
    events = [e.name for e in h.root().events]
    assert events == ["processSpawned", "cliReady"]


def test_request_driven_run_without_prompt_has_no_model_span(h: Harness) -> None:
    times = stream_times()  # no promptSent: the model segment cannot be told
    record = stream_record(times, request_driven=True, runtime_family="acp-json-rpc")
    assert record.model_first_token_ms is None
    h.run(record, times)
    assert "model_first_token" not in h.spans()


def test_markers_are_root_span_events_with_explicit_times(h: Harness) -> None:
    times = stream_times(prompt_sent_ns=START + 900 * MS)
    h.run(stream_record(times, exit_code=0), times)
    events = [(e.name, e.timestamp) for e in h.root().events]
    assert events == [
        ("processSpawned", wall(START)),
        ("cliReady", wall(START + 480 * MS)),
        ("sessionInitDone", wall(START + 900 * MS)),
        ("promptSent", wall(START + 900 * MS)),
        ("firstToken", wall(START + 1400 * MS)),
        ("processExited", wall(START + 2000 * MS)),
    ]


def test_reused_process_run_starts_at_its_prompt(h: Harness) -> None:
    times = MarkerTimes(start_ns=START, first_token_ns=START + 700 * MS, end_ns=START + 900 * MS)
    record = stream_record(times, process_reused=True, session_resumed=True, turn_ordinal=3)
    h.run(record, times)
    spans = h.spans()
    assert set(spans) == {"invoke_agent claude_code", "model_first_token"}
    assert (spans["model_first_token"].start_time, spans["model_first_token"].end_time) == (
        wall(START),
        wall(START + 700 * MS),
    )
    assert [e.name for e in h.root().events] == ["promptSent", "firstToken"]


@pytest.mark.parametrize("status", ["failed", "timed_out"])
def test_failed_and_timed_out_runs_are_errors(h: Harness, status: str) -> None:
    times = stream_times(first_token_ns=None)
    h.run(stream_record(times, status=status, exit_code=1), times)
    root = h.root()
    assert root.status.status_code is StatusCode.ERROR
    assert (root.attributes or {})[sc.ERROR_TYPE] == status


def test_cancelled_run_is_not_an_error(h: Harness) -> None:
    times = stream_times()
    h.run(stream_record(times, status="cancelled"), times)
    assert h.root().status.status_code is StatusCode.UNSET
    assert sc.ERROR_TYPE not in (h.root().attributes or {})


def test_traceparent_names_the_root_span(h: Harness) -> None:
    span = h.tel.start_run(agent="gemini", start_ns=START, anchor=ANCHOR)
    assert span.traceparent is not None
    version, trace_id, span_id, flags = span.traceparent.split("-")
    assert (version, trace_id, span_id) == ("00", span.trace_id_hex, span.span_id_hex)
    assert int(flags, 16) & 0x01  # sampled (the SDK may also set 0x02, "random trace id")
    assert span.recording
    assert span.parent_span_id_hex is None
    # A given provider's pipeline exports the spans: nothing for the durable OTLP sink.
    assert span.needs_delivery is False
    times = stream_times()
    span.finish(stream_record(times, agent="gemini"), times)
    assert not span.recording


def test_parent_context_is_honoured(h: Harness) -> None:
    app = TracerProvider(shutdown_on_exit=False).get_tracer("app")
    with app.start_as_current_span("request") as outer:
        span = h.tel.start_run(agent="codex", start_ns=START, anchor=ANCHOR)
    times = stream_times()
    span.finish(stream_record(times, agent="codex"), times)
    root = h.root()
    assert root.parent is not None
    assert root.parent.span_id == outer.get_span_context().span_id
    assert span.parent_span_id_hex == f"{outer.get_span_context().span_id:016x}"
    assert (root.attributes or {})[sc.GEN_AI_PROVIDER_NAME] == "openai"

    explicit = trace.set_span_in_context(trace.NonRecordingSpan(outer.get_span_context()))
    h.exporter.clear()
    span = h.tel.start_run(agent="codex", start_ns=START, anchor=ANCHOR, parent=explicit)
    span.finish(stream_record(times, agent="codex"), times)
    assert h.root().parent is not None


def test_finish_twice_emits_once(h: Harness) -> None:
    times = stream_times()
    span = h.run(stream_record(times), times)
    span.finish(stream_record(times), times)
    assert len(h.exporter.get_finished_spans()) == 4
    assert h.point(sc.METRIC_CLI_READY).count == 1


@pytest.mark.parametrize(
    ("agent", "provider"),
    [
        ("claude_code", "anthropic"),
        ("claude_code_acp", "anthropic"),
        ("codex", "openai"),
        ("codex_acp", "openai"),
        ("gemini", "gcp.gemini"),
        ("gemini_acp", "gcp.gemini"),
        ("opencode_acp", None),
        ("plain", None),
    ],
)
def test_provider_name_from_agent(agent: str, provider: str | None) -> None:
    assert provider_name(agent) == provider


def test_provider_name_is_omitted_when_unknown(h: Harness) -> None:
    times = stream_times()
    h.run(stream_record(times, agent="opencode_acp", runtime_family="acp-json-rpc"), times)
    assert sc.GEN_AI_PROVIDER_NAME not in (h.root().attributes or {})
    assert sc.GEN_AI_PROVIDER_NAME not in (h.point(sc.METRIC_CLI_READY).attributes or {})


# --- opt-in captured content ---

PROMPT = "naïve — 日本語: what is 2+2?"
ANSWER = "réponse — 日本語の答え 🚀 4"
CONTENT_KEYS = (sc.GEN_AI_INPUT_MESSAGES, sc.GEN_AI_OUTPUT_MESSAGES, sc.TTFT_CONTENT_TRUNCATED)


def test_captured_content_is_on_the_root_span_as_genai_messages(h: Harness) -> None:
    times = stream_times()
    content = CapturedContent(input_text=PROMPT, output_text=ANSWER)
    h.run(stream_record(times), times, content=content)
    spans = h.spans()
    a = dict(spans["invoke_agent claude_code"].attributes or {})
    assert a[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"  # the span of the GenAI operation
    assert json.loads(str(a[sc.GEN_AI_INPUT_MESSAGES])) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    ]
    assert json.loads(str(a[sc.GEN_AI_OUTPUT_MESSAGES])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}
    ]
    assert PROMPT in str(a[sc.GEN_AI_INPUT_MESSAGES])  # non-ASCII kept, not \u-escaped
    assert ANSWER in str(a[sc.GEN_AI_OUTPUT_MESSAGES])
    assert sc.TTFT_CONTENT_TRUNCATED not in a
    for name in ("cli_ready", "session_init", "model_first_token"):
        assert not set(CONTENT_KEYS) & set(spans[name].attributes or {})


def test_truncated_content_is_flagged_and_an_unseen_text_is_omitted(h: Harness) -> None:
    times = stream_times()
    h.run(stream_record(times), times, content=CapturedContent(output_text=ANSWER, truncated=True))
    a = dict(h.root().attributes or {})
    assert sc.GEN_AI_INPUT_MESSAGES not in a
    assert json.loads(str(a[sc.GEN_AI_OUTPUT_MESSAGES]))[0]["parts"][0]["content"] == ANSWER
    assert a[sc.TTFT_CONTENT_TRUNCATED] is True


def test_without_content_no_span_has_content_attributes(h: Harness) -> None:
    times = stream_times()
    record = stream_record(times)
    h.run(record, times)  # finish(record, times): the call without the keyword
    without = {s.name: dict(s.attributes or {}) for s in h.exporter.get_finished_spans()}
    h.exporter.clear()
    h.run(record, times, content=CapturedContent())  # nothing seen: nothing added either
    empty = {s.name: dict(s.attributes or {}) for s in h.exporter.get_finished_spans()}
    assert without == empty
    for attributes in without.values():
        assert not set(CONTENT_KEYS) & set(attributes)
        assert not any("messages" in key or "content" in key for key in attributes)


# --- metrics ---


def test_histograms_in_seconds_per_segment(h: Harness) -> None:
    times = stream_times()
    record = stream_record(times, turn_ordinal=2, session_resumed=True, model="m1")
    h.run(record, times)
    metrics = h.metrics()
    expected_s = {
        sc.METRIC_SPAWN_TO_FIRST_TOKEN: 1.4,
        sc.METRIC_CLI_READY: 0.48,
        sc.METRIC_SESSION_INIT: 0.42,
        sc.METRIC_CLIENT_WAIT: 0.0,
        sc.METRIC_MODEL_FIRST_TOKEN: 0.5,
        sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: 0.5,
    }
    assert set(metrics) == set(expected_s)
    for name, seconds in expected_s.items():
        assert metrics[name].unit == "s"
        point = h.point(name)
        assert point.count == 1
        assert point.sum == pytest.approx(seconds)
        assert list(point.explicit_bounds) == list(sc.SECONDS_BUCKETS)
        assert dict(point.attributes or {}) == {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.GEN_AI_AGENT_NAME: "claude_code",
            sc.GEN_AI_PROVIDER_NAME: "anthropic",
            sc.GEN_AI_REQUEST_MODEL: "m1",
            sc.TTFT_TURN_COHORT: "turn_2+",
            sc.TTFT_SESSION_RESUMED: True,
            sc.TTFT_PROCESS_REUSED: False,
            sc.TTFT_STATUS: "succeeded",
        }


def test_time_to_first_chunk_is_prompt_to_first_token_only(h: Harness) -> None:
    # Request-driven: a long client wait must not leak into time_to_first_chunk.
    times = stream_times(prompt_sent_ns=START + 1200 * MS)
    record = stream_record(
        times, request_driven=True, runtime_family="acp-json-rpc", turn_ordinal=1
    )
    h.run(record, times)
    assert record.model_first_token_ms == 200.0
    assert record.spawn_to_first_token_ms == 1400.0
    chunk = h.point(sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK)
    assert chunk.sum == pytest.approx(0.2)
    assert chunk.sum == pytest.approx(h.point(sc.METRIC_MODEL_FIRST_TOKEN).sum)
    assert h.point(sc.METRIC_CLIENT_WAIT).sum == pytest.approx(0.3)
    assert h.point(sc.METRIC_SPAWN_TO_FIRST_TOKEN).sum == pytest.approx(1.4)
    assert chunk.attributes is not None
    assert chunk.attributes[sc.TTFT_TURN_COHORT] == "turn_1"


def test_missing_segments_are_not_recorded(h: Harness) -> None:
    times = stream_times(first_token_ns=None)
    h.run(stream_record(times, status="timed_out"), times)
    metrics = h.metrics()
    assert set(metrics) == {
        sc.METRIC_CLI_READY,
        sc.METRIC_SESSION_INIT,
        sc.METRIC_CLIENT_WAIT,
    }
    attributes = h.point(sc.METRIC_CLI_READY).attributes or {}
    assert attributes[sc.ERROR_TYPE] == "timed_out"
    assert sc.TTFT_TURN_COHORT not in attributes


# --- faults never reach the caller ---


class _ExplodingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("exporter down")


class _BrokenHistogram(NoOpHistogram):
    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("metrics down")


class _BrokenMeter(NoOpMeter):
    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenHistogram(str(args[0]))


class _BrokenMeterProvider(ApiMeterProvider):
    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenMeter(str(args[0]))


class _BrokenTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no tracer for you")


def test_exporter_faults_are_logged_once_and_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(_ExplodingProcessor())
    tel = Telemetry(tracer_provider=tp, meter_provider=_BrokenMeterProvider())
    times = stream_times()
    for _ in range(3):
        span = tel.start_run(agent="claude_code", start_ns=START, anchor=ANCHOR)
        span.finish(stream_record(times), times)
        assert not span.recording  # the root span was ended despite the fault
    warnings = [r for r in caplog.records if r.name == "ttft_probe.sinks.otel"]
    assert [r.getMessage() for r in warnings] == [
        "ttft_probe: could not emit the run's spans",
        "ttft_probe: could not record the run's metrics",
    ]
    assert tel.shutdown(100)


def test_broken_provider_gives_a_run_without_ids() -> None:
    tel = Telemetry(tracer_provider=_BrokenTracerProvider(), meter_provider=_BrokenMeterProvider())
    span = tel.start_run(agent="claude_code", start_ns=START, anchor=ANCHOR)
    assert (span.traceparent, span.trace_id_hex, span.span_id_hex, span.context) == (
        None,
        None,
        None,
        None,
    )
    times = stream_times()
    span.finish(stream_record(times), times)
    assert tel.shutdown(100)


def test_noop_provider_gives_no_ids() -> None:
    tel = Telemetry(
        tracer_provider=trace.NoOpTracerProvider(), meter_provider=_BrokenMeterProvider()
    )
    span = tel.start_run(agent="claude_code", start_ns=START, anchor=ANCHOR)
    assert span.traceparent is None
    assert not span.recording


# --- subprocesses: globals, laziness, the wire ---

CHILD_RUN = textwrap.dedent(
    """
    import json, sys
    import attrs
    from ttft_probe._clock import WallAnchor, monotonic_ns
    from ttft_probe.record import MarkerTimes, RunRecord, compute_segments
    from ttft_probe.telemetry import Telemetry

    MS = 1_000_000
    anchor = WallAnchor.now()
    t0 = monotonic_ns()
    times = MarkerTimes(
        start_ns=t0, cli_ready_ns=t0 + 300 * MS, session_init_done_ns=t0 + 500 * MS,
        first_token_ns=t0 + 900 * MS, end_ns=t0 + 1200 * MS,
    )
    segs = compute_segments(times, request_driven=False, process_reused=False)

    def synthetic_run(tel, **start):
        run = tel.start_run(agent="claude_code", start_ns=t0, anchor=anchor, **start)
        record = RunRecord(
            run_id="0b7c2f1e-5d7a-4c7b-9d55-3f1f3b0f6a11", agent="claude_code",
            runtime_family="claude-stream-json", status="succeeded", probe_version="0",
            started_at="2025-06-15T12:00:00Z", model="claude-x", turn_ordinal=1,
            trace_id=run.trace_id_hex, span_id=run.span_id_hex, **attrs.asdict(segs),
        )
        run.finish(record, times)
        return run, record

    def deliver(record):
        import os
        from ttft_probe.sinks._base import Delivery
        from ttft_probe.sinks.otlp import OtlpSink

        sink = OtlpSink.from_environment(os.environ)
        if sink is None:
            return None
        (ok,) = sink.deliver([Delivery(record, times, anchor.wall_ns_at(t0))], 10.0)
        sink.close()
        return ok
    """
)


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS)])
    env.update(overrides)
    return env


def run_child(code: str, **env: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["_stderr"] = proc.stderr
    return result


def test_importing_does_not_load_exporters_or_optional_sdks() -> None:
    out = run_child(
        textwrap.dedent(
            """
            import json, sys
            import ttft_probe
            import ttft_probe.telemetry
            from ttft_probe.telemetry import Telemetry
            Telemetry.from_environment()
            print(json.dumps({"modules": sorted(sys.modules)}))
            """
        ),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    loaded = [m for m in out["modules"] if not m.startswith("_")]
    forbidden = ("opentelemetry.exporter", "opentelemetry.sdk", "grpc", "posthog", "langfuse")
    assert [m for m in loaded if m.startswith(forbidden)] == []


def test_a_run_without_configuration_installs_no_global_and_loads_no_exporter() -> None:
    out = run_child(
        CHILD_RUN
        + textwrap.dedent(
            """
            tel = Telemetry.from_environment()
            run, record = synthetic_run(tel)
            ok = tel.shutdown(2000)
            from opentelemetry import metrics, trace
            from opentelemetry.metrics._internal import _ProxyMeterProvider
            print(json.dumps({
                "ok": ok,
                "tracer_proxy": isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider),
                "meter_proxy": isinstance(metrics.get_meter_provider(), _ProxyMeterProvider),
                "traceparent": run.traceparent,
                "needs_delivery": run.needs_delivery,
                "trace_id": run.trace_id_hex,
                "span_id": run.span_id_hex,
                "private_meter": tel._setup.private_meter_provider is not None,
                "loaded": sorted(
                    m for m in sys.modules if m.startswith(("opentelemetry.exporter", "grpc"))
                ),
            }))
            """
        )
    )
    assert out["ok"] is True
    assert out["tracer_proxy"] is True
    assert out["meter_proxy"] is True
    assert out["private_meter"] is False
    assert out["loaded"] == []
    assert out["needs_delivery"] is True  # private provider: only the OTLP sink could send it
    assert len(out["trace_id"]) == 32
    assert int(out["trace_id"], 16) != 0
    assert len(out["span_id"]) == 16
    assert out["traceparent"].startswith(f"00-{out['trace_id']}-{out['span_id']}-")


def test_nothing_configured_makes_ids_without_importing_opentelemetry() -> None:
    out = run_child(
        CHILD_RUN
        + textwrap.dedent(
            """
            tel = Telemetry.from_environment()
            run, record = synthetic_run(tel)
            print(json.dumps({
                "traceparent": run.traceparent,
                "needs_delivery": run.needs_delivery,
                "context": run.context,
                "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
            }))
            """
        )
    )
    assert out["loaded"] == []
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-03", out["traceparent"])
    assert out["needs_delivery"] is True
    assert out["context"] is None


def test_a_sampler_variable_keeps_the_sdk_and_its_decision() -> None:
    out = run_child(
        CHILD_RUN
        + textwrap.dedent(
            """
            tel = Telemetry.from_environment()
            run, record = synthetic_run(tel)
            print(json.dumps({
                "traceparent": run.traceparent,
                "needs_delivery": run.needs_delivery,
                "sdk": "opentelemetry.sdk.trace" in sys.modules,
            }))
            """
        ),
        OTEL_TRACES_SAMPLER="always_off",
    )
    assert out["sdk"] is True
    assert int(out["traceparent"][-2:], 16) & 0x01 == 0  # not sampled, as the SDK decided
    assert out["needs_delivery"] is False


def test_exporter_none_disables_otlp_even_with_an_endpoint() -> None:
    out = run_child(
        CHILD_RUN
        + textwrap.dedent(
            """
            tel = Telemetry.from_environment()
            run, record = synthetic_run(tel)
            tel.shutdown(2000)
            print(json.dumps({
                "span_id": run.span_id_hex,
                "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry.exporter")),
            }))
            """
        ),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
    )
    assert out["span_id"] is not None
    assert out["loaded"] == []


def test_application_global_providers_are_used_and_left_running() -> None:
    out = run_child(
        CHILD_RUN
        + textwrap.dedent(
            """
            from opentelemetry import metrics, trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            exporter = InMemorySpanExporter()
            tp = TracerProvider()
            tp.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(tp)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

            tel = Telemetry.from_environment()
            app = trace.get_tracer("app")
            with app.start_as_current_span("handle_message") as outer:
                run, record = synthetic_run(tel)
            ok = tel.shutdown(1000)
            with app.start_as_current_span("after_shutdown"):
                pass
            spans = {s.name: s for s in exporter.get_finished_spans()}
            root = spans["invoke_agent claude_code"]
            data = reader.get_metrics_data()
            names = sorted(
                m.name for rm in data.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics
            )
            print(json.dumps({
                "ok": ok,
                "spans": sorted(spans),
                "root_parent": root.parent.span_id == outer.get_span_context().span_id,
                "root_id": f"{root.context.span_id:016x}" == run.span_id_hex,
                "needs_delivery": run.needs_delivery,
                "private": [
                    tel._setup.private_tracer_provider is None,
                    tel._setup.private_meter_provider is None,
                ],
                "metrics": names,
            }))
            """
        ),
        # Even with an endpoint set, the application's providers win.
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert out["ok"] is True
    assert out["spans"] == sorted(
        [
            "after_shutdown",
            "cli_ready",
            "handle_message",
            "invoke_agent claude_code",
            "model_first_token",
            "session_init",
        ]
    )
    assert out["root_parent"] is True
    assert out["root_id"] is True
    assert out["needs_delivery"] is False  # the application's pipeline sends the spans
    assert out["private"] == [True, True]
    assert sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK in out["metrics"]
    assert sc.METRIC_SESSION_INIT in out["metrics"]


WIRE_CHILD = CHILD_RUN + textwrap.dedent(
    """
    import os
    tel = Telemetry.from_environment()
    run, record = synthetic_run(tel)
    ok = tel.shutdown(10_000)
    delivered = deliver(record) if os.environ.get("TEST_DELIVER") == "1" else None
    print(json.dumps({"ok": ok, "trace_id": run.trace_id_hex, "span_id": run.span_id_hex,
                      "needs_delivery": run.needs_delivery, "delivered": delivered}))
    """
)


WANTED_METRICS = {
    sc.METRIC_SPAWN_TO_FIRST_TOKEN,
    sc.METRIC_CLI_READY,
    sc.METRIC_SESSION_INIT,
    sc.METRIC_MODEL_FIRST_TOKEN,
    sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
}


def test_private_provider_exports_metrics_but_leaves_spans_to_the_durable_sink() -> None:
    # A BatchSpanProcessor would lose spans on SIGKILL and while the collector is down,
    # and together with the OTLP sink would send every span twice: it is gone.
    with OtlpReceiver() as rx:
        out = run_child(WIRE_CHILD, OTEL_EXPORTER_OTLP_ENDPOINT=rx.endpoint)
        assert out["ok"] is True, out["_stderr"]
        assert out["needs_delivery"] is True
        assert out["delivered"] is None  # this child did not deliver
        assert rx.wait_for(lambda: rx.metric_names() >= WANTED_METRICS, timeout=10)
        time.sleep(0.2)
        assert rx.traces == []
        assert len(out["span_id"]) == 16  # the ids (and TRACEPARENT) still exist


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_otlp_http_on_the_wire(compression: str) -> None:
    with OtlpReceiver() as rx:
        out = run_child(
            WIRE_CHILD,
            OTEL_EXPORTER_OTLP_ENDPOINT=rx.endpoint,
            OTEL_EXPORTER_OTLP_COMPRESSION=compression,
            TEST_DELIVER="1",
        )
        assert out["ok"] is True, out["_stderr"]
        assert out["delivered"] is True, out["_stderr"]
        wanted_spans = {
            "invoke_agent claude_code",
            "cli_ready",
            "session_init",
            "model_first_token",
        }
        wanted_metrics = WANTED_METRICS
        assert rx.wait_for(
            lambda: wanted_spans <= rx.span_names() and wanted_metrics <= rx.metric_names(),
            timeout=10,
        ), (rx.span_names(), rx.metric_names(), out["_stderr"])

    # Each span exactly once: the sink's copy, none from a live processor.
    assert sorted(span.name for _, span in rx.spans()) == sorted(wanted_spans)
    spans = {span.name: (resource, span) for resource, span in rx.spans()}
    resource, root = spans["invoke_agent claude_code"]
    assert resource["service.name"] == "ttft-probe"
    assert root.trace_id.hex() == out["trace_id"]
    assert root.span_id.hex() == out["span_id"]
    assert root.kind == root.SPAN_KIND_CLIENT
    attributes = attributes_of(root.attributes)
    assert attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert attributes[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attributes[sc.GEN_AI_REQUEST_MODEL] == "claude-x"
    assert attributes["ttft_probe.cli_ready_ms"] == 300.0
    assert [e.name for e in root.events] == [
        "processSpawned",
        "cliReady",
        "sessionInitDone",
        "firstToken",
    ]
    for name in ("cli_ready", "session_init", "model_first_token"):
        _, child = spans[name]
        assert child.parent_span_id == root.span_id
        assert child.trace_id == root.trace_id
    _, model = spans["model_first_token"]
    assert model.end_time_unix_nano - model.start_time_unix_nano == 400 * MS

    metrics = {metric.name: (res, metric) for res, metric in rx.metric_list()}
    for name in wanted_metrics:
        res, metric = metrics[name]
        assert res["service.name"] == "ttft-probe"
        assert metric.unit == "s"
        (point,) = metric.histogram.data_points
        assert point.count == 1
    assert metrics[sc.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK][1].histogram.data_points[
        0
    ].sum == pytest.approx(0.4)
    assert metrics[sc.METRIC_SPAWN_TO_FIRST_TOKEN][1].histogram.data_points[0].sum == pytest.approx(
        0.9
    )
    if compression == "gzip":
        assert set(rx.encodings) == {"gzip"}


def test_grpc_protocol_selects_the_grpc_metric_exporter_and_no_span_exporter() -> None:
    out = run_child(
        CHILD_RUN
        + textwrap.dedent(
            """
            tel = Telemetry.from_environment()
            run, record = synthetic_run(tel)
            tel.shutdown(200)
            print(json.dumps({
                "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry.exporter")),
            }))
            """
        ),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    loaded = out["loaded"]
    assert "opentelemetry.exporter.otlp.proto.grpc.metric_exporter" in loaded
    assert "opentelemetry.exporter.otlp.proto.http.metric_exporter" not in loaded
    # Spans go through the durable sink (tests/test_sink_otlp.py covers its gRPC exporter).
    assert "opentelemetry.exporter.otlp.proto.grpc.trace_exporter" not in loaded
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" not in loaded


def test_service_name_comes_from_otel_service_name() -> None:
    with OtlpReceiver() as rx:
        out = run_child(
            WIRE_CHILD,
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=rx.endpoint + "/v1/traces",
            OTEL_SERVICE_NAME="my-product",
            TEST_DELIVER="1",
        )
        assert out["ok"] is True
        assert out["delivered"] is True
        assert rx.wait_for(lambda: bool(rx.traces), timeout=10)
    assert {resource["service.name"] for resource, _ in rx.spans()} == {"my-product"}
    assert rx.metrics == []  # only the traces endpoint was configured


def test_shutdown_is_bounded_when_the_collector_hangs() -> None:
    # A listening socket that never answers: the exporter would wait its full timeout.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        port = blackhole.getsockname()[1]
        started = time.monotonic()
        out = run_child(
            CHILD_RUN
            + textwrap.dedent(
                """
                import time
                tel = Telemetry.from_environment()
                synthetic_run(tel)
                t = time.monotonic()
                ok = tel.shutdown(300)
                took = time.monotonic() - t
                again = tel.shutdown(300)
                print(json.dumps({"ok": ok, "took": took, "again": again}))
                """
            ),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_TIMEOUT="30",
        )
        elapsed = time.monotonic() - started
    assert out["ok"] is False
    assert out["took"] < 2.0
    assert out["again"] is True  # idempotent
    assert elapsed < 15.0  # the child exits without waiting for the exporter's 30 s
    assert "did not finish within 300 ms" in out["_stderr"]


# --- one root span per run, from a real tracker ---


class _CountingProcessor(SpanProcessor):
    """The ids of the root (``invoke_agent``) spans started and ended."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.name.startswith("invoke_agent"):
            self.started.append(f"{span.get_span_context().span_id:016x}")

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        if span.name.startswith("invoke_agent"):
            self.ended.append(f"{span.context.span_id:016x}")


@pytest.mark.parametrize("case", [
    "acp-json-rpc/synthetic_concurrent_sessions",  # two turns open at once
    "acp-json-rpc/synthetic_two_turns_one_process",  # one turn after the other
    "claude-stream-json/claude_sdk_queued",  # a prompt queued behind the open turn
])  # fmt: skip
def test_each_run_of_a_long_lived_process_has_one_root_span_ended_once(case: str) -> None:
    tr = transcripts.load(case)
    counting = _CountingProcessor()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(counting)
    tracker = ProcessTracker(
        agent=resolve_agent(tr.meta["argv"]),
        adapter=adapter_for(tr.family, tr.options()),
        spawn_ns=0,
        anchor=ANCHOR,
        caller=CallerContext(),
        probe_version="test",
        telemetry=Telemetry(tracer_provider=tp),
    )
    for line in tr.lines:
        if line.stream in {"stdout", "stdin"}:
            feed = tracker.on_stdout if line.stream == "stdout" else tracker.on_stdin
            feed(line.data + b"\n", line.t_ns)
    tracker.on_stdout_eof(tr.eof_ns)
    tracker.on_exit(ExitInfo(t_ns=tr.eof_ns + 1, returncode=0))
    runs = tracker.results
    assert len(runs) == len(tr.expected["turns"]) >= 2
    # One root span per run, each ended once; no span left open; each record names its own.
    assert len(counting.started) == len(set(counting.started)) == len(runs)
    assert sorted(counting.ended) == sorted(counting.started)
    assert sorted(r.record.span_id or "" for r in runs) == sorted(counting.started)
    tp.shutdown()
