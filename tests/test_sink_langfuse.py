"""The Langfuse sink, with the real langfuse SDK against a local OTLP ingestion server."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import attrs
import pytest

from conftest import TESTS
from fake_langfuse import TRACES_PATH, FakeLangfuse, ReceivedSpan
from helpers.waterfall import title_and_generation
from ttft_probe.content import CapturedContent
from ttft_probe.errors import ConfigError
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.sinks._base import Delivery, Sink
from ttft_probe.sinks.langfuse import DEFAULT_HOST, LangfuseSink, langfuse_ids
from ttft_probe.waterfall import RequestUsage

PK = "pk-lf-test-4f1c"
SK = "sk-lf-test-9b7e"
MS = 1_000_000
WALL0 = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z
MONO0 = 5_000_000_000


def make_delivery(**overrides: Any) -> Delivery:
    """A complete run: every marker observed, usage reported."""
    times = MarkerTimes(
        start_ns=MONO0,
        cli_ready_ns=MONO0 + 300 * MS,
        session_init_done_ns=MONO0 + 450 * MS,
        prompt_sent_ns=MONO0 + 450 * MS,
        first_token_ns=MONO0 + 1_010 * MS,
        end_ns=MONO0 + 2_500 * MS,
        first_stderr_ns=MONO0 + 20 * MS,
    )
    fields: dict[str, Any] = {
        "run_id": str(uuid.uuid4()),
        "conversation_id": "conv-7",
        "session_id": "sess-7",
        "turn_ordinal": 2,
        "session_resumed": True,
        "agent": "claude_code",
        "runtime_family": "claude-stream-json",
        "agent_version": "2.1.197",
        "model": "claude-sonnet-4-5",
        "status": "succeeded",
        "exit_code": 0,
        "spawn_to_first_token_ms": 1010.0,
        "cli_ready_ms": 300.0,
        "session_init_ms": 150.0,
        "client_wait_ms": 0.0,
        "model_first_token_ms": 560.0,
        "remainder_ms": 0.0,
        "total_duration_ms": 2500.0,
        "first_stderr_ms": 20.0,
        "session_init_source": "init_message",
        "first_token_granularity": "delta",
        "first_token_kind": "text",
        "input_tokens": 1200,
        "output_tokens": 42,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 7,
        "trace_id": uuid.uuid4().hex,
        "span_id": uuid.uuid4().hex[:16],
        "probe_version": "0.1.0",
        "started_at": "2026-01-01T00:00:00.123456+00:00",
    }
    fields.update(overrides)
    return Delivery(record=RunRecord(**fields), times=times, started_wall_ns=WALL0)


def wall(mono_ns: int) -> int:
    return WALL0 + (mono_ns - MONO0)


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans}


def decoded_metadata(span: ReceivedSpan, prefix: str) -> dict[str, Any]:
    return {
        k.removeprefix(prefix + "."): json.loads(v)
        for k, v in span.attributes.items()
        if k.startswith(prefix + ".")
    }


def sdk_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before``, other than the fake server's request handlers."""
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and "process_request_thread" not in t.name
    ]


@pytest.fixture
def fake() -> Iterator[FakeLangfuse]:
    with FakeLangfuse(public_key=PK, secret_key=SK, slow_s=4.0) as server:
        yield server


@pytest.fixture
def make_sink() -> Iterator[Callable[..., LangfuseSink]]:
    sinks: list[LangfuseSink] = []

    def build(host: str, **kwargs: Any) -> LangfuseSink:
        kwargs.setdefault("public_key", PK)
        kwargs.setdefault("secret_key", SK)
        sink = LangfuseSink(host=host, **kwargs)
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        sink.close()


# --- configuration ---


def test_import_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "import ttft_probe.sinks.langfuse as m\n"
        "m.LangfuseSink.from_environment({'LANGFUSE_PUBLIC_KEY': 'pk', 'LANGFUSE_SECRET_KEY': 'sk'})\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] == 'langfuse'"
        " or k.startswith('opentelemetry.sdk'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_from_environment() -> None:
    assert LangfuseSink.from_environment({}) is None
    assert LangfuseSink.from_environment({"LANGFUSE_PUBLIC_KEY": PK}) is None
    keys = {"LANGFUSE_PUBLIC_KEY": PK, "LANGFUSE_SECRET_KEY": SK}
    assert LangfuseSink.from_environment({**keys, "LANGFUSE_TRACING_ENABLED": "false"}) is None

    sink = LangfuseSink.from_environment(keys)
    assert isinstance(sink, LangfuseSink)
    assert isinstance(sink, Sink)
    assert sink.name == "langfuse"
    assert repr(sink) == f"LangfuseSink(host={DEFAULT_HOST!r})"
    assert PK not in repr(sink)
    assert SK not in repr(sink)

    host = LangfuseSink.from_environment({**keys, "LANGFUSE_HOST": "http://h:3000/"})
    assert repr(host) == "LangfuseSink(host='http://h:3000')"
    both = {**keys, "LANGFUSE_HOST": "http://old:1", "LANGFUSE_BASE_URL": "http://new:2"}
    assert repr(LangfuseSink.from_environment(both)) == "LangfuseSink(host='http://new:2')"

    with pytest.raises(ConfigError):
        LangfuseSink.from_environment({**keys, "LANGFUSE_HOST": "cloud.langfuse.com"})
    with pytest.raises(ConfigError):
        LangfuseSink.from_environment({**keys, "LANGFUSE_TIMEOUT": "soon"})


def test_ids_are_the_sdks_seeded_ids() -> None:
    from langfuse import Langfuse
    from langfuse._client.constants import LANGFUSE_TRACER_NAME

    from ttft_probe.sinks import langfuse as sink_module

    record = make_delivery(trace_id=None).record
    ids = langfuse_ids(record)
    assert ids.trace_id == Langfuse.create_trace_id(seed=record.run_id)
    assert langfuse_ids(record) == ids
    with_trace = make_delivery().record
    assert langfuse_ids(with_trace).trace_id == with_trace.trace_id
    assert sink_module._TRACER_NAME == LANGFUSE_TRACER_NAME


# --- what the server receives ---


def test_deliver_sends_one_trace_with_a_generation(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    delivery = make_delivery()
    record, times = delivery.record, delivery.times
    assert times is not None
    sink = make_sink(fake.url, user_id="user-1", tags=("ttft_probe", "nightly"))

    assert sink.deliver([delivery], timeout_s=10) == [True]

    spans = fake.spans()
    assert sorted(s.name for s in spans) == ["chat claude-sonnet-4-5", "invoke_agent claude_code"]
    root = by_name(spans)["invoke_agent claude_code"]
    gen = by_name(spans)["chat claude-sonnet-4-5"]
    ids = langfuse_ids(record)

    # ids and parent link: one trace, the run's W3C trace id; the generation under the root
    assert root.trace_id == gen.trace_id == record.trace_id == ids.trace_id
    assert root.span_id == ids.agent_observation_id
    assert root.parent_span_id == ""
    assert gen.span_id == ids.generation_observation_id
    assert gen.parent_span_id == root.span_id

    # explicit wall times: the run's start and end, to the ns
    assert root.start_ns == gen.start_ns == WALL0 == delivery.started_wall_ns
    assert root.end_ns == gen.end_ns == wall(times.end_ns or 0)
    completion = json.loads(gen.attributes["langfuse.observation.completion_start_time"])
    first_token_us = wall(times.first_token_ns or 0) // 1000
    moment = datetime.fromisoformat(completion)
    assert completion == "2026-01-01T00:00:01.133456Z"
    assert (moment.timestamp() * 1_000_000) == pytest.approx(first_token_us, abs=1)

    # Langfuse's own vocabulary
    assert root.attributes["langfuse.observation.type"] == "agent"
    assert gen.attributes["langfuse.observation.type"] == "generation"
    assert gen.attributes["langfuse.observation.model.name"] == "claude-sonnet-4-5"
    assert json.loads(gen.attributes["langfuse.observation.usage_details"]) == {
        "input": 1200,
        "output": 42,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 7,
    }
    assert root.attributes["langfuse.version"] == "2.1.197"
    assert "langfuse.observation.level" not in gen.attributes
    for span in (root, gen):
        assert span.attributes["session.id"] == "conv-7"
        assert span.attributes["user.id"] == "user-1"
        assert span.attributes["langfuse.trace.name"] == "invoke_agent claude_code"
        assert span.attributes["langfuse.trace.tags"] == ["ttft_probe", "nightly"]
        assert decoded_metadata(span, "langfuse.trace.metadata") == {
            "run_id": record.run_id,
            "agent": "claude_code",
            "runtime_family": "claude-stream-json",
            "model": "claude-sonnet-4-5",
            "status": "succeeded",
            "turn_ordinal": 2,
            "session_resumed": True,
            "process_reused": False,
        }
        # every contract field, None included, with its JSON value
        assert decoded_metadata(span, "langfuse.observation.metadata") == record.to_dict()
        assert span.scope_name == "langfuse-sdk"
        assert span.scope_attributes == {"public_key": PK}
        assert not any(k.endswith((".input", ".output")) for k in span.attributes)
    assert root.attributes["langfuse.internal.is_app_root"] is True

    # the request: OTLP protobuf, gzip, the SDK's headers (auth checked by the server)
    (request,) = fake.requests()
    assert (request.method, request.path, request.status) == ("POST", TRACES_PATH, 200)
    assert request.content_encoding == "gzip"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["x-langfuse-ingestion-version"] == "4"
    assert request.headers["x-langfuse-public-key"] == PK
    assert request.headers["x-langfuse-sdk-name"] == "python"


# --- opt-in captured content ---

PROMPT = "naïve — 日本語: what is 2+2?"
ANSWER = "réponse — 日本語の答え 🚀 4"
INPUT = "langfuse.observation.input"
OUTPUT = "langfuse.observation.output"


def with_content(delivery: Delivery, content: CapturedContent | None) -> Delivery:
    return Delivery(delivery.record, delivery.times, delivery.started_wall_ns, content=content)


def test_captured_content_is_the_input_and_output_of_both_observations(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    content = CapturedContent(input_text=PROMPT, output_text=ANSWER)
    delivery = with_content(make_delivery(), content)
    assert make_sink(fake.url).deliver([delivery], timeout_s=10) == [True]

    spans = by_name(fake.spans())
    root = spans["invoke_agent claude_code"]  # the root observation: the trace's input/output
    gen = spans["chat claude-sonnet-4-5"]
    for span in (root, gen):
        assert json.loads(span.attributes[INPUT]) == [{"role": "user", "content": PROMPT}]
        assert json.loads(span.attributes[OUTPUT]) == {"role": "assistant", "content": ANSWER}
        # the metadata is the record alone: no truncation flag
        metadata = decoded_metadata(span, "langfuse.observation.metadata")
        assert metadata == delivery.record.to_dict()


def test_only_the_text_seen_is_sent_and_truncation_is_in_the_metadata(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    content = CapturedContent(input_text=PROMPT, truncated=True)
    delivery = with_content(make_delivery(), content)
    assert make_sink(fake.url).deliver([delivery], timeout_s=10) == [True]
    for span in fake.spans():
        assert json.loads(span.attributes[INPUT]) == [{"role": "user", "content": PROMPT}]
        assert OUTPUT not in span.attributes
        metadata = decoded_metadata(span, "langfuse.observation.metadata")
        assert metadata == {**delivery.record.to_dict(), "content_truncated": True}


def test_without_content_no_input_or_output_is_sent(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    assert make_sink(fake.url).deliver([make_delivery()], timeout_s=10) == [True]
    spans = fake.spans()
    assert len(spans) == 2
    for span in spans:
        payload = json.dumps(span.attributes)
        for key in (INPUT, OUTPUT, "content_truncated", "trace.input", "trace.output"):
            assert key not in payload
        assert '"role"' not in payload


def test_missing_fields_arrive_as_null_and_failed_runs_as_errors(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    delivery = make_delivery(
        status="timed_out",
        model=None,
        first_token_granularity=None,
        first_token_kind=None,
        spawn_to_first_token_ms=None,
        model_first_token_ms=None,
        remainder_ms=None,
        timing_unavailable_reason="no_first_token",
        input_tokens=None,
        output_tokens=None,
        cache_read_input_tokens=None,
        cache_creation_input_tokens=None,
        conversation_id=None,
    )
    delivery = Delivery(
        record=delivery.record, times=None, started_wall_ns=delivery.started_wall_ns
    )
    sink = make_sink(fake.url)
    assert sink.deliver([delivery], timeout_s=10) == [True]

    spans = by_name(fake.spans())
    gen = spans["chat"]
    root = spans["invoke_agent claude_code"]
    assert "langfuse.observation.completion_start_time" not in gen.attributes
    assert "langfuse.observation.usage_details" not in gen.attributes
    assert "langfuse.observation.model.name" not in gen.attributes
    assert "session.id" not in gen.attributes
    # without marker times: start + total_duration_ms
    assert gen.end_ns == root.end_ns == WALL0 + 2_500 * MS
    for span in (root, gen):
        assert span.attributes["langfuse.observation.level"] == "ERROR"
        assert span.attributes["langfuse.observation.status_message"] == "timed_out"
        metadata = decoded_metadata(span, "langfuse.observation.metadata")
        assert metadata == delivery.record.to_dict()
        assert metadata["model_first_token_ms"] is None
        assert metadata["timing_unavailable_reason"] == "no_first_token"


def test_the_generation_carries_the_whole_turns_usage(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    # The agent reported no usage: the turn's is the sum over its requests that did.
    plain = make_delivery(model=None)
    plain = attrs.evolve(plain, record=attrs.evolve(
        plain.record, input_tokens=None, output_tokens=None, cache_read_input_tokens=None,
        cache_creation_input_tokens=None))
    title, generation = title_and_generation(MONO0)
    tool_loop = attrs.evolve(generation, request_id=3, arrival_ns=generation.arrival_ns + 1,
                             usage=RequestUsage(4000, 3000, 0, 70))
    observed = attrs.evolve(plain, requests=(title, generation, tool_loop))
    assert make_sink(fake.url).deliver([observed], timeout_s=10) == [True]

    # Still one trace of two observations: the requests add no observations of their own.
    spans = by_name(fake.spans())
    assert sorted(spans) == ["chat claude-x", "invoke_agent claude_code"]
    gen = spans["chat claude-x"]  # the record has no model: the generation request's
    assert gen.attributes["langfuse.observation.model.name"] == "claude-x"
    # Langfuse adds the usage types up: "input" is what was read anew, summed over the
    # turn's requests: (3000 - 2000 - 900) + (4000 - 3000 - 0).
    assert json.loads(gen.attributes["langfuse.observation.usage_details"]) == {
        "input": 100 + 1000,
        "output": 50 + 70,
        "cache_read_input_tokens": 2000 + 3000,
        "cache_creation_input_tokens": 900,
    }
    ids = langfuse_ids(observed.record)
    assert gen.span_id == ids.generation_observation_id
    # Time to first token is still the run's: spawn to the first token.
    completion = json.loads(gen.attributes["langfuse.observation.completion_start_time"])
    assert completion == "2026-01-01T00:00:01.133456Z"


def test_the_agents_own_turn_usage_wins_over_the_requests(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    # The agent's own counts cover the whole turn (its tool loop included): they stay.
    own = make_delivery()
    observed = attrs.evolve(own, requests=title_and_generation(MONO0))
    assert make_sink(fake.url).deliver([observed], timeout_s=10) == [True]
    gen = by_name(fake.spans())["chat claude-sonnet-4-5"]
    assert json.loads(gen.attributes["langfuse.observation.usage_details"]) == {
        "input": own.record.input_tokens,
        "output": own.record.output_tokens,
        "cache_read_input_tokens": own.record.cache_read_input_tokens,
        "cache_creation_input_tokens": own.record.cache_creation_input_tokens,
    }


def test_without_reported_usage_the_records_own_counts_stay(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    title, generation = title_and_generation(MONO0)
    silent = attrs.evolve(make_delivery(), requests=(title, attrs.evolve(generation, usage=None)))
    assert make_sink(fake.url).deliver([silent], timeout_s=10) == [True]
    gen = by_name(fake.spans())["chat claude-sonnet-4-5"]
    assert json.loads(gen.attributes["langfuse.observation.usage_details"]) == {
        "input": 1200,
        "output": 42,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 7,
    }


def test_redelivery_sends_the_same_trace_and_observation_ids(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    delivery = make_delivery(trace_id=None)
    assert make_sink(fake.url).deliver([delivery], timeout_s=10) == [True]
    # a retry, even from a new sink (next process start), is the same trace
    assert make_sink(fake.url).deliver([delivery], timeout_s=10) == [True]

    spans = fake.spans()
    assert len(spans) == 4
    first, second = spans[:2], spans[2:]

    def shape(batch: list[ReceivedSpan]) -> set[tuple[str, str, str, str, int, int]]:
        return {
            (s.name, s.trace_id, s.span_id, s.parent_span_id, s.start_ns, s.end_ns) for s in batch
        }

    assert shape(first) == shape(second)
    assert {s.trace_id for s in spans} == {langfuse_ids(delivery.record).trace_id}
    assert by_name(first)["chat claude-sonnet-4-5"].attributes == (
        by_name(second)["chat claude-sonnet-4-5"].attributes
    )


def test_a_batch_is_one_trace_per_run(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    batch = [make_delivery(agent=f"agent_{i}") for i in range(3)]
    assert make_sink(fake.url).deliver(batch, timeout_s=10) == [True, True, True]
    spans = fake.spans()
    assert len(spans) == 6
    for delivery in batch:
        mine = [s for s in spans if s.trace_id == delivery.record.trace_id]
        assert sorted(s.name for s in mine) == [
            "chat claude-sonnet-4-5",
            f"invoke_agent {delivery.record.agent}",
        ]


def test_ambient_context_does_not_leak_into_the_trace(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    from langfuse import propagate_attributes
    from opentelemetry.sdk.trace import TracerProvider

    app_tracer = TracerProvider().get_tracer("app")
    sink = make_sink(fake.url)
    with (
        app_tracer.start_as_current_span("app-request"),
        propagate_attributes(user_id="app-user", session_id="app-session", tags=["app"]),
    ):
        assert sink.deliver([make_delivery()], timeout_s=10) == [True]
    root = by_name(fake.spans())["invoke_agent claude_code"]
    assert root.parent_span_id == ""
    assert root.attributes["session.id"] == "conv-7"
    assert "user.id" not in root.attributes
    assert root.attributes["langfuse.trace.tags"] == ["ttft_probe"]


# --- confirmation and faults ---


def test_wrong_credentials_are_not_confirmed(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    sink = make_sink(fake.url, secret_key="sk-lf-wrong")
    started = time.monotonic()
    assert sink.deliver([make_delivery()], timeout_s=5) == [False]
    assert time.monotonic() - started < 2.0  # 401 is final: no waiting for the timeout
    assert [r.status for r in fake.requests()] == [401]
    assert fake.spans() == []


def test_server_error_is_not_confirmed(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    fake.set_fault("500")
    sink = make_sink(fake.url)
    started = time.monotonic()
    assert sink.deliver([make_delivery(), make_delivery()], timeout_s=5) == [False, False]
    assert time.monotonic() - started < 2.0
    assert {r.status for r in fake.requests()} == {500}
    fake.set_fault(None)
    assert sink.deliver([make_delivery()], timeout_s=5) == [True]


def test_server_down_is_not_confirmed_within_the_timeout_then_retry_succeeds(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    delivery = make_delivery()
    fake.set_fault("down")
    sink = make_sink(fake.url, export_timeout_s=3.0)
    sink.prepare()  # the SDK import is not what is timed here
    started = time.monotonic()
    assert sink.deliver([delivery], timeout_s=1.0) == [False]
    # at the timeout, or earlier when the exporter's next back-off would pass its own
    assert time.monotonic() - started < 2.0
    assert fake.spans() == []

    fake.set_fault(None)  # the outbox's retry, once the server is back
    assert sink.deliver([delivery], timeout_s=8.0) == [True]
    assert {s.trace_id for s in fake.spans()} == {delivery.record.trace_id}


def test_late_failure_of_an_earlier_attempt_does_not_fail_the_retry(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    delivery = make_delivery()
    fake.set_fault("slow")  # the first export hangs, then times out after 1.5 s
    sink = make_sink(fake.url, export_timeout_s=1.5)
    sink.prepare()
    assert sink.deliver([delivery], timeout_s=0.3) == [False]
    fake.set_fault(None)
    # the first export's failure (same span ids) lands while this retry waits
    started = time.monotonic()
    assert sink.deliver([delivery], timeout_s=8.0) == [True]
    assert time.monotonic() - started > 1.0  # it did wait behind the failing export
    assert [s.trace_id for s in fake.spans()] == [delivery.record.trace_id] * 2


def test_tracker_counts_only_exports_started_after_the_attempt() -> None:
    from ttft_probe.sinks.langfuse import _Tracker

    tracker = _Tracker()
    old_export = tracker.export_started()
    attempt = tracker.expect([(1, 2), (1, 3)])
    tracker.report([(1, 2), (1, 3)], ok=False, started=old_export)
    assert attempt.results == {}
    new_export = tracker.export_started()
    tracker.report([(1, 2)], ok=True, started=new_export)
    assert not attempt.done
    tracker.report([(1, 3)], ok=True, started=new_export)
    assert attempt.confirmed
    tracker.forget([attempt])
    tracker.report([(1, 2)], ok=False, started=tracker.export_started())
    assert attempt.confirmed


def test_slow_server_is_not_confirmed_within_the_timeout(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    before = set(threading.enumerate())
    fake.set_fault("slow")  # answers after 4 s
    sink = make_sink(fake.url, export_timeout_s=2.0)
    sink.prepare()
    started = time.monotonic()
    assert sink.deliver([make_delivery()], timeout_s=1.0) == [False]
    assert 0.9 < time.monotonic() - started < 2.0

    # close() waits for the export on the wire (bounded by its 2 s timeout), no longer
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 3.2
    assert sdk_threads(before) == []


def test_flapping_server_is_confirmed_through_the_exporters_retry(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    fake.set_fault("flapping")  # 503, then 200
    sink = make_sink(fake.url)
    assert sink.deliver([make_delivery()], timeout_s=8.0) == [True]
    assert [r.status for r in fake.requests()] == [503, 200]
    assert len(fake.spans()) == 2


def test_close_is_bounded_and_stops_every_sdk_thread_while_the_server_is_down(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink]
) -> None:
    before = set(threading.enumerate())
    fake.set_fault("down")
    sink = make_sink(fake.url, export_timeout_s=10.0)
    assert sink.deliver([make_delivery()], timeout_s=0.5) == [False]
    assert sdk_threads(before)  # the SDK's threads; its exporter is retrying
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 1.5  # the retry back-off is cut short
    assert sdk_threads(before) == []
    assert sink.deliver([make_delivery()], timeout_s=1) == [False]
    assert sink.prepare() is False


def test_sdk_disabled_by_otel_sdk_disabled_is_not_confirmed(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    sink = make_sink(fake.url)
    started = time.monotonic()
    assert sink.deliver([make_delivery()], timeout_s=5) == [False]
    assert time.monotonic() - started < 1.0
    assert fake.requests() == []


def test_no_keys_or_metadata_in_logs(
    fake: FakeLangfuse, make_sink: Callable[..., LangfuseSink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    delivery = make_delivery(adapter_error="ParseError in firstToken rule")
    assert make_sink(fake.url).deliver([delivery], timeout_s=10) == [True]
    assert make_sink(fake.url, secret_key="sk-lf-wrong").deliver([delivery], 5) == [False]
    fake.set_fault("500")
    assert make_sink(fake.url).deliver([delivery], timeout_s=5) == [False]
    text = caplog.text
    assert "Langfuse export failed" in text  # something was logged
    for secret in (PK, SK, "sk-lf-wrong", delivery.record.run_id, "conv-7", "ParseError"):
        assert secret not in text


# --- isolation (fresh interpreters) ---

_GLOBAL_PROVIDER_CHILD = """
import sys, uuid
sys.path.insert(0, {tests!r})
from opentelemetry import trace
from fake_langfuse import FakeLangfuse
from ttft_probe.record import RunRecord
from ttft_probe.sinks._base import Delivery
from ttft_probe.sinks.langfuse import LangfuseSink

record = RunRecord(run_id=str(uuid.uuid4()), agent="codex", runtime_family="json-event-stream",
                   status="succeeded", probe_version="0", started_at="2026-01-01T00:00:00+00:00")
with FakeLangfuse(public_key="pk", secret_key="sk") as fake:
    sink = LangfuseSink(public_key="pk", secret_key="sk", host=fake.url)
    assert sink.deliver([Delivery(record, None, 1_767_225_600_000_000_000)], 10) == [True]
    sink.close()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, trace.ProxyTracerProvider), provider
    from langfuse import get_client
    from langfuse._client.resource_manager import LangfuseResourceManager
    assert LangfuseResourceManager._instances == {{}}, "the sink's client is not registered"
print("ok")
"""

_APP_CLIENT_CHILD = """
import sys, uuid
sys.path.insert(0, {tests!r})
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from fake_langfuse import FakeLangfuse
from ttft_probe.record import RunRecord
from ttft_probe.sinks._base import Delivery
from ttft_probe.sinks.langfuse import LangfuseSink

app_spans = InMemorySpanExporter()
app_provider = TracerProvider()
app_provider.add_span_processor(SimpleSpanProcessor(app_spans))
trace.set_tracer_provider(app_provider)

record = RunRecord(run_id=str(uuid.uuid4()), agent="codex", runtime_family="json-event-stream",
                   status="succeeded", probe_version="0", started_at="2026-01-01T00:00:00+00:00")
with FakeLangfuse(public_key="pk", secret_key="sk") as fake:
    from langfuse import Langfuse, get_client
    app_client = Langfuse(public_key="pk", secret_key="sk", base_url=fake.url)  # same key
    sink = LangfuseSink(public_key="pk", secret_key="sk", host=fake.url)
    assert sink.deliver([Delivery(record, None, 1_767_225_600_000_000_000)], 10) == [True]
    assert app_spans.get_finished_spans() == (), "the sink's spans reached the app's provider"
    assert get_client(public_key="pk")._resources is app_client._resources
    assert app_client._resources.tracer_provider is app_provider
    sink.close()
    assert trace.get_tracer_provider() is app_provider
    # the application's client still works after the sink is gone
    app_client.start_observation(name="app-span").end()
    app_client.flush()
    assert "app-span" in {{s.name for s in fake.spans()}}
    assert "app-span" in {{s.name for s in app_spans.get_finished_spans()}}
    app_client.shutdown()
print("ok")
"""


@pytest.mark.parametrize(
    "child", [_GLOBAL_PROVIDER_CHILD, _APP_CLIENT_CHILD], ids=["no_app_provider", "app_client"]
)
def test_global_provider_and_app_client_are_untouched(child: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", child.format(tests=str(TESTS))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


_EXIT_WITHOUT_CLOSE_CHILD = """
import sys, time, uuid
sys.path.insert(0, {tests!r})
from fake_langfuse import FakeLangfuse
from ttft_probe.record import RunRecord
from ttft_probe.sinks._base import Delivery
from ttft_probe.sinks.langfuse import LangfuseSink

record = RunRecord(run_id=str(uuid.uuid4()), agent="codex", runtime_family="json-event-stream",
                   status="succeeded", probe_version="0", started_at="2026-01-01T00:00:00+00:00")
fake = FakeLangfuse(public_key="pk", secret_key="sk").__enter__()
fake.set_fault("down")
sink = LangfuseSink(public_key="pk", secret_key="sk", host=fake.url, export_timeout_s=20)
assert sink.deliver([Delivery(record, None, 1_767_225_600_000_000_000)], 0.5) == [False]
print("delivered", flush=True)
# no close(): the SDK's atexit flush (up to the 20 s export timeout) must not run
"""


def test_exit_without_close_does_not_wait_for_the_sdk() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_CLOSE_CHILD.format(tests=str(TESTS))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "delivered"
    assert time.monotonic() - started < 8.0
