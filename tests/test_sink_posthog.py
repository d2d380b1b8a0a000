"""The PostHog sink, with the real ``posthog`` SDK, against a local capture server."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from fake_posthog import FakePostHog, Mode
from helpers.records import SECRET_MODEL, full_record
from helpers.waterfall import title_and_generation
from ttft_probe.content import CapturedContent
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord
from ttft_probe.sinks._base import Delivery, Sink
from ttft_probe.sinks.posthog import (
    DEFAULT_HOST,
    PostHogSink,
    ai_provider,
    install_id,
    install_id_path,
)
from ttft_probe.waterfall import RequestUsage

API_KEY = "phc_test_SECRET_key_0123456789"


def delivery(record: RunRecord) -> Delivery:
    return Delivery(record=record, times=None, started_wall_ns=1_735_787_045_678_901_000)


@pytest.fixture
def server() -> Iterator[FakePostHog]:
    with FakePostHog() as fake:
        yield fake


@pytest.fixture
def sink(server: FakePostHog) -> Iterator[PostHogSink]:
    s = PostHogSink(API_KEY, host=server.host, distinct_id="install-abc")
    yield s
    s.close()


def test_sink_satisfies_the_protocol(sink: PostHogSink) -> None:
    assert isinstance(sink, Sink)
    assert PostHogSink.name == "posthog"


def test_batch_arrives_as_run_finished_events(server: FakePostHog, sink: PostHogSink) -> None:
    r1, r2 = full_record(), full_record(status="failed", exit_code=1)
    assert sink.deliver([delivery(r1), delivery(r2)], timeout_s=5) == [True, True]

    assert len(server.requests) == 1  # one HTTP request per batch
    req = server.requests[0]
    assert req.path == "/batch/"
    assert req.encoding == "gzip"
    assert req.api_key == API_KEY
    assert req.body["historical_migration"] is False
    assert "sent_at" in req.body
    assert req.events[0] == {
        "event": "run_finished",
        "uuid": r1.run_id,
        "distinct_id": "install-abc",
        "timestamp": "2025-01-02T03:04:05.678901+00:00",
        "properties": {
            **r1.to_dict(),
            "$process_person_profile": False,
            "$geoip_disable": True,
        },
    }
    assert [e["uuid"] for e in server.events] == [r1.run_id, r2.run_id]
    assert server.events[1]["properties"]["status"] == "failed"


def test_uncompressed_body_is_accepted_too(server: FakePostHog) -> None:
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", gzip=False)
    try:
        assert sink.deliver([delivery(full_record())], timeout_s=5) == [True]
    finally:
        sink.close()
    assert server.requests[0].encoding is None
    assert len(server.events) == 1


def test_ai_generation_event(server: FakePostHog) -> None:
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="install-abc", ai_generation=True)
    record = full_record()
    try:
        assert sink.deliver([delivery(record)], timeout_s=5) == [True]
    finally:
        sink.close()
    run_finished, generation = server.events
    assert run_finished["event"] == "run_finished"
    assert generation == {
        "event": "$ai_generation",
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, record.run_id + "/$ai_generation")),
        "distinct_id": "install-abc",
        "timestamp": record.started_at,
        "properties": {
            "$ai_trace_id": "0af7651916cd43dd8448eb211c80319c",
            "$ai_span_id": "b7ad6b7169203331",
            "$ai_session_id": "conv-1",
            "$ai_span_name": "invoke_agent claude_code",
            "$ai_model": SECRET_MODEL,
            "$ai_provider": "anthropic",
            "$ai_latency": 4.25,
            "$ai_time_to_first_token": 1.5,
            "$ai_input_tokens": 12,
            "$ai_output_tokens": 34,
            "$ai_cache_read_input_tokens": 5600,
            "$ai_cache_creation_input_tokens": 78,
            "$ai_is_error": False,
            "run_id": record.run_id,
            "$process_person_profile": False,
            "$geoip_disable": True,
        },
    }


def test_ai_generation_of_a_failed_run_without_trace() -> None:
    sink = PostHogSink(API_KEY, host="http://127.0.0.1:9", distinct_id="d", ai_generation=True)
    record = full_record(
        agent="codex",
        status="failed",
        trace_id=None,
        span_id=None,
        conversation_id=None,
        spawn_to_first_token_ms=None,
        input_tokens=None,
    )
    props = sink.events(record)[1]["properties"]
    assert props["$ai_trace_id"] == record.run_id
    assert props["$ai_session_id"] == "sess-1"
    assert props["$ai_provider"] == "openai"
    assert props["$ai_is_error"] is True
    assert props["$ai_error"] == "failed"
    for absent in ("$ai_span_id", "$ai_time_to_first_token", "$ai_input_tokens"):
        assert absent not in props


# --- the model requests (provider observer) ---

FIRST_REQUEST_FIELDS = {
    "model_request_count": 2,
    "first_request_input_tokens": 3000,
    "first_request_cache_read_tokens": 2000,
    "first_request_cache_write_tokens": 900,
    "first_request_uncached_tokens": 1000,
    "first_request_bytes": 123_456,
    "prefix_status": "broken",
    "prefix_break": "system[1]",
    "prefix_reused_bytes": 4096,
}
TOKEN_KEYS = (
    "$ai_input_tokens",
    "$ai_output_tokens",
    "$ai_cache_read_input_tokens",
    "$ai_cache_creation_input_tokens",
)


def observed(record: RunRecord, *, api: str = "anthropic") -> Delivery:
    requests = title_and_generation(1_000_000_000, api=api)
    return attrs.evolve(delivery(record), requests=requests)


NO_OWN_USAGE = dict.fromkeys(("input_tokens", "output_tokens", "cache_read_input_tokens",
                              "cache_creation_input_tokens"))


def test_ai_generation_counts_the_whole_turn_and_run_finished_the_first_request(
    server: FakePostHog,
) -> None:
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", ai_generation=True)
    record = full_record(**FIRST_REQUEST_FIELDS, **NO_OWN_USAGE)
    title, generation = title_and_generation(1_000_000_000)
    tool_loop = attrs.evolve(generation, request_id=3, arrival_ns=generation.arrival_ns + 1,
                             usage=RequestUsage(4000, 3000, 0, 70))
    try:
        d = attrs.evolve(delivery(record), requests=(title, generation, tool_loop))
        assert sink.deliver([d], timeout_s=5) == [True]
    finally:
        sink.close()
    run_finished, ai_generation = server.events
    props = ai_generation["properties"]
    # The turn's cost is every request's: summed. Anthropic: PostHog counts cache tokens
    # apart from $ai_input_tokens ((3000 - 2000 - 900) + (4000 - 3000 - 0)).
    assert {k: props[k] for k in TOKEN_KEYS} == {
        "$ai_input_tokens": 100 + 1000,
        "$ai_output_tokens": 50 + 70,
        "$ai_cache_read_input_tokens": 2000 + 3000,
        "$ai_cache_creation_input_tokens": 900,
    }
    assert props["$ai_time_to_first_token"] == 1.5  # s: spawn to first token, as before
    assert props["$ai_latency"] == 4.25
    # run_finished is the record, its nine request and prefix fields (the first
    # generation request's) included, and no more.
    assert run_finished["properties"] == {
        **record.to_dict(),
        "$process_person_profile": False,
        "$geoip_disable": True,
    }
    assert {k: run_finished["properties"][k] for k in FIRST_REQUEST_FIELDS} == FIRST_REQUEST_FIELDS
    # Nothing of the requests themselves (no list, digest or side call) on the wire.
    body = json.dumps(server.requests[0].body)
    for absent in ("claude-haiku", "request_id", "arrival_ns", "digest", "sections"):
        assert absent not in body


def test_openai_and_gemini_input_tokens_include_the_cached_ones() -> None:
    sink = PostHogSink(API_KEY, host="http://127.0.0.1:9", distinct_id="d", ai_generation=True)
    for api, provider in (("openai", "openai"), ("gemini", "gemini")):
        d = observed(full_record(agent="opencode_acp", model=None, **NO_OWN_USAGE), api=api)
        props = sink.events(d.record, requests=d.requests)[1]["properties"]
        assert props["$ai_input_tokens"] == 3000
        assert props["$ai_cache_read_input_tokens"] == 2000
        # the agent does not tell its provider or model: the request does
        assert props["$ai_provider"] == provider
        assert props["$ai_model"] == "claude-x"


def test_without_a_reported_usage_the_records_own_tokens_stay() -> None:
    sink = PostHogSink(API_KEY, host="http://127.0.0.1:9", distinct_id="d", ai_generation=True)
    record = full_record()
    plain = sink.events(record)
    assert sink.events(record, requests=()) == plain  # observer off: unchanged
    title, generation = title_and_generation(0)
    silent = attrs.evolve(generation, usage=None)
    # no generation, one without usage, or one with usage: the agent's own counts (the
    # whole turn's) win over the requests'
    for requests in ((title,), (title, silent), (title, generation)):
        props = sink.events(record, requests=requests)[1]["properties"]
        assert {k: props[k] for k in TOKEN_KEYS} == {
            "$ai_input_tokens": 12,
            "$ai_output_tokens": 34,
            "$ai_cache_read_input_tokens": 5600,
            "$ai_cache_creation_input_tokens": 78,
        }


@pytest.mark.parametrize(
    ("agent", "provider"),
    [
        ("claude_code", "anthropic"),
        ("codex_acp", "openai"),
        ("gemini", "gemini"),  # PostHog's own value, not the GenAI "gcp.gemini"
        ("gemini_acp", "gemini"),
        ("opencode_acp", None),
    ],
)
def test_ai_provider_speaks_posthogs_values(agent: str, provider: str | None) -> None:
    assert ai_provider(agent) == provider

# --- opt-in captured content ---

PROMPT = "naïve — 日本語: what is 2+2?"
ANSWER = "réponse — 日本語の答え 🚀 4"
CONTENT_KEYS = ("$ai_input", "$ai_output_choices", "content_truncated")


def with_content(record: RunRecord, content: CapturedContent | None) -> Delivery:
    return Delivery(record, None, 1_735_787_045_678_901_000, content=content)


def test_captured_content_goes_into_the_ai_properties(server: FakePostHog) -> None:
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", ai_generation=True)
    record = full_record()
    content = CapturedContent(input_text=PROMPT, output_text=ANSWER)
    try:
        assert sink.deliver([with_content(record, content)], timeout_s=5) == [True]
    finally:
        sink.close()
    run_finished, generation = server.events
    props = run_finished["properties"]
    assert props["$ai_input"] == [{"role": "user", "content": PROMPT}]
    assert props["$ai_output_choices"] == [{"role": "assistant", "content": ANSWER}]
    assert "content_truncated" not in props
    # everything else exactly as without content
    plain = sink.events(record)
    assert {k: v for k, v in props.items() if k not in CONTENT_KEYS} == plain[0]["properties"]
    gen = generation["properties"]
    assert gen["$ai_input"] == props["$ai_input"]
    assert gen["$ai_output_choices"] == props["$ai_output_choices"]
    assert {k: v for k, v in gen.items() if k not in CONTENT_KEYS} == plain[1]["properties"]


def test_only_the_text_seen_is_sent_and_truncation_is_flagged(server: FakePostHog) -> None:
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
    content = CapturedContent(output_text=ANSWER, truncated=True)
    try:
        assert sink.deliver([with_content(full_record(), content)], timeout_s=5) == [True]
    finally:
        sink.close()
    (event,) = server.events
    props = event["properties"]
    assert "$ai_input" not in props
    assert props["$ai_output_choices"] == [{"role": "assistant", "content": ANSWER}]
    assert props["content_truncated"] is True


def test_without_content_the_body_has_no_content_keys(server: FakePostHog) -> None:
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", ai_generation=True)
    try:
        assert sink.deliver([delivery(full_record())], timeout_s=5) == [True]
    finally:
        sink.close()
    (request,) = server.requests
    body = json.dumps(request.body)
    for key in CONTENT_KEYS:
        assert f'"{key}"' not in body  # as a key ("$ai_input_tokens" is another one)
    assert '"role"' not in body


def test_an_oversized_answer_is_cut_to_fit_posthogs_event_limit(server: FakePostHog) -> None:
    from ttft_probe.sinks import posthog

    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", ai_generation=True)
    answer = "日本語 answer " * 100_000  # 1.2 M characters, far over 900 KiB as JSON
    content = CapturedContent(input_text=PROMPT, output_text=answer)
    try:
        assert sink.deliver([with_content(full_record(), content)], timeout_s=10) == [True]
    finally:
        sink.close()
    for event in server.events:
        assert len(json.dumps(event)) <= posthog._MAX_EVENT_BYTES
        props = event["properties"]
        assert props["$ai_input"] == [{"role": "user", "content": PROMPT}]  # short: kept
        sent = props["$ai_output_choices"][0]["content"]
        assert answer.startswith(sent)
        assert len(sent) > 50_000
        assert props["content_truncated"] is True


def test_large_content_is_split_into_requests_each_confirmed_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ttft_probe.sinks import posthog

    monkeypatch.setattr(posthog, "_MAX_REQUEST_BYTES", 20_000)
    content = CapturedContent(input_text=PROMPT, output_text="x" * 15_000)
    batch = [with_content(full_record(), content) for _ in range(2)]
    batch.append(delivery(full_record()))
    with FakePostHog(mode="flapping") as server:  # 500 on requests 1, 3 …; 200 on 2, 4 …
        sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
        try:
            assert sink.deliver(batch, timeout_s=5) == [False, True, True]
        finally:
            sink.close()
        # 15 kB runs cannot share a 20 kB request; the small run joins the second one
        first, second, small = (d.record.run_id for d in batch)
        assert [[e["uuid"] for e in r.events] for r in server.requests] == [
            [first],
            [second, small],
        ]


def test_retried_delivery_keeps_its_uuid(server: FakePostHog) -> None:
    """flapping: the first attempt gets 500, the retry 200; PostHog counts the run once."""
    server.mode = "flapping"
    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", ai_generation=True)
    record = full_record()
    try:
        assert sink.deliver([delivery(record)], timeout_s=5) == [False]
        assert sink.deliver([delivery(record)], timeout_s=5) == [True]
        assert sink.deliver([delivery(record)], timeout_s=5) == [False]
        assert sink.deliver([delivery(record)], timeout_s=5) == [True]
    finally:
        sink.close()
    attempts = [[e["uuid"] for e in r.events] for r in server.requests]
    assert len(attempts) == 4
    assert all(a == attempts[0] for a in attempts)
    assert attempts[0][0] == record.run_id
    assert len(server.events) == 4  # two accepted deliveries, two events each
    assert server.distinct_uuids == 2  # … but one run_finished and one $ai_generation


def test_unconfirmed_success_then_retry_is_counted_once() -> None:
    """The server took the batch but answered too late; the retry carries the same uuid."""
    with FakePostHog(mode="slow", delay_s=1.0) as server:
        sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
        record = full_record()
        try:
            assert sink.deliver([delivery(record)], timeout_s=0.3) == [False]
            assert server.wait_for(lambda: len(server.requests) == 1, timeout=5)
            server.mode = "ok"
            assert sink.deliver([delivery(record)], timeout_s=5) == [True]
        finally:
            sink.close()
        assert len(server.events) == 2
        assert server.distinct_uuids == 1


def test_server_down_fails_fast() -> None:
    with FakePostHog(mode="down") as server:
        sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
        started = time.monotonic()
        result = sink.deliver([delivery(full_record()), delivery(full_record())], timeout_s=5)
        elapsed = time.monotonic() - started
        sink.close()
    assert result == [False, False]
    assert elapsed < 1.0


def test_http_500_is_not_confirmed() -> None:
    with FakePostHog(mode="error") as server:
        sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
        try:
            assert sink.deliver([delivery(full_record())], timeout_s=5) == [False]
        finally:
            sink.close()
        assert len(server.requests) == 1  # the SDK's retries are off: one attempt
        assert server.events == []


def test_slow_server_is_bounded_by_timeout() -> None:
    with FakePostHog(mode="slow", delay_s=3.0) as server:
        sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
        started = time.monotonic()
        result = sink.deliver([delivery(full_record())], timeout_s=0.5)
        elapsed = time.monotonic() - started
        close_started = time.monotonic()
        sink.close()
        close_elapsed = time.monotonic() - close_started
    assert result == [False]
    assert 0.4 < elapsed < 1.0
    assert close_elapsed < 1.5


def test_deliver_after_close_and_empty_batch(sink: PostHogSink, server: FakePostHog) -> None:
    assert sink.deliver([], timeout_s=1) == []
    sink.close()
    assert sink.deliver([delivery(full_record())], timeout_s=1) == [False]
    assert server.requests == []


def test_no_background_threads_left(server: FakePostHog) -> None:
    import threading

    sink = PostHogSink(API_KEY, host=server.host, distinct_id="d")
    assert sink.deliver([delivery(full_record())], timeout_s=5) == [True]
    sink.close()
    names = {t.name for t in threading.enumerate()}
    assert "ttft-probe-posthog" not in names
    assert not any("posthog" in n.lower() and n != "fake-posthog" for n in names)


@pytest.mark.parametrize("capture_mode", ["v0", "v1"])
def test_sdk_client_sync_mode_swallows_failures(capture_mode: str) -> None:
    """Why the sink calls ``batch_post`` itself: ``Client(sync_mode=True)`` reports a 500
    only as a ``None`` return (and a logged traceback), one request per event.

    Also proves the fake speaks both of the SDK's capture protocols."""
    from posthog.client import Client

    cases: tuple[tuple[Mode, bool], ...] = (("ok", True), ("error", False))
    for mode, confirmed in cases:
        with FakePostHog(mode=mode) as server:
            client = Client(
                API_KEY, host=server.host, sync_mode=True, capture_mode=capture_mode, max_retries=0
            )
            try:
                sent = client.capture("e", distinct_id="d", uuid=str(uuid.uuid4()))
            finally:
                client.shutdown()
            assert (sent is not None) is confirmed
            assert len(server.requests) == 1
            assert server.requests[0].api_key == API_KEY
            assert len(server.events) == int(confirmed)


# --- configuration ---


def test_from_environment_needs_a_key(tmp_path: Path) -> None:
    assert PostHogSink.from_environment({}) is None
    assert PostHogSink.from_environment({"POSTHOG_API_KEY": ""}) is None
    assert PostHogSink.from_environment({"POSTHOG_HOST": "https://eu.i.posthog.com"}) is None


def test_from_environment_reads_the_variables(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sink = PostHogSink.from_environment({"POSTHOG_API_KEY": API_KEY, "TTFT_PROBE_HOME": str(home)})
    assert sink is not None
    assert sink.host == DEFAULT_HOST
    assert sink.ai_generation is False
    assert API_KEY not in repr(sink)
    sink = PostHogSink.from_environment(
        {
            "POSTHOG_PROJECT_API_KEY": API_KEY,
            "POSTHOG_HOST": "https://eu.i.posthog.com/",
            "TTFT_PROBE_POSTHOG_AI_GENERATION": "1",
            "TTFT_PROBE_HOME": str(home),
        },
        distinct_id="explicit",
    )
    assert sink is not None
    assert (sink.host, sink.ai_generation, sink.distinct_id) == (
        "https://eu.i.posthog.com",
        True,
        "explicit",
    )
    env = {"POSTHOG_API_KEY": API_KEY, "TTFT_PROBE_POSTHOG_AI_GENERATION": "1"}
    sink = PostHogSink.from_environment({**env, "TTFT_PROBE_HOME": str(home)}, ai_generation=False)
    assert sink is not None
    assert sink.ai_generation is False


@pytest.mark.parametrize(
    "env",
    [
        {"POSTHOG_HOST": "us.i.posthog.com"},
        {"TTFT_PROBE_POSTHOG_AI_GENERATION": "maybe"},
    ],
)
def test_bad_configuration_is_loud(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        PostHogSink.from_environment(
            {"POSTHOG_API_KEY": API_KEY, "TTFT_PROBE_HOME": str(tmp_path), **env}
        )


def test_install_id_is_stable_and_stored_under_the_home(tmp_path: Path) -> None:
    home = tmp_path / "probe-home"
    env = {"POSTHOG_API_KEY": API_KEY, "TTFT_PROBE_HOME": str(home)}
    first = PostHogSink.from_environment(env)
    second = PostHogSink.from_environment(env)
    assert first is not None
    assert second is not None
    assert first.distinct_id == second.distinct_id
    assert str(uuid.UUID(first.distinct_id)) == first.distinct_id
    assert install_id_path(env) == home / "install_id"
    assert (home / "install_id").read_text().strip() == first.distinct_id
    assert sorted(p.name for p in home.iterdir()) == ["install_id"]  # no temp file left
    other = PostHogSink.from_environment({**env, "TTFT_PROBE_HOME": str(tmp_path / "other")})
    assert other is not None
    assert other.distinct_id != first.distinct_id


def test_corrupt_install_id_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "install_id"
    path.write_text("not-a-uuid\n")
    new = install_id(path)
    assert str(uuid.UUID(new)) == new
    assert install_id(path) == new


def test_install_id_falls_back_when_home_is_unwritable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {"POSTHOG_API_KEY": API_KEY, "TTFT_PROBE_HOME": str(blocker / "home")}
    with caplog.at_level(logging.WARNING, logger="ttft_probe"):
        sink = PostHogSink.from_environment(env)
    assert sink is not None
    assert str(uuid.UUID(sink.distinct_id)) == sink.distinct_id
    assert "install id" in caplog.text


def test_import_does_not_import_posthog(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import ttft_probe.sinks.posthog as m\n"
        "assert 'posthog' not in sys.modules, 'imported on import'\n"
        "assert m.PostHogSink.from_environment({}) is None\n"
        f"s = m.PostHogSink.from_environment({{'POSTHOG_API_KEY': 'k', 'TTFT_PROBE_HOME': {str(tmp_path)!r}}})\n"
        "assert s is not None\n"
        "assert 'posthog' not in sys.modules, 'imported by from_environment'\n"
        "assert 'requests' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- privacy ---


def test_no_key_or_property_value_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    record = full_record()
    with caplog.at_level(logging.DEBUG):
        modes: tuple[Mode, ...] = ("ok", "error", "down")
        for mode in modes:
            with FakePostHog(mode=mode) as server:
                sink = PostHogSink(API_KEY, host=server.host, distinct_id="d", ai_generation=True)
                sink.deliver([delivery(record)], timeout_s=2)
                sink.deliver([delivery(record)], timeout_s=2)
                sink.close()
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "failed: HTTP 500" in text  # failures are logged …
    assert "connection error" in text
    for secret in (API_KEY, SECRET_MODEL, record.run_id, str(record.trace_id), "conv-1"):
        assert secret not in text  # … but never a key or a property
