"""The report sources: the same runs give the same report from every source.

The runs are made here, stored in a local store, delivered by the real PostHog sink to
the fake capture server (whose accepted events feed the fake query API) and by the real
OTLP sink to the fake Jaeger. Reports are compared with exact float equality: every
number crosses JSON as its shortest repr, which round-trips exactly.
"""

from __future__ import annotations

import json
import random
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from fake_jaeger import FakeJaeger
from fake_posthog import FakePostHog
from fake_posthog_query import FakePostHogQuery, QueryError, event_row, run_query
from ttft_probe.analysis._model import METRICS, PromptCache, Report, build_report, percentile
from ttft_probe.analysis.sources import SourceError, in_window, load
from ttft_probe.analysis.sources.jaeger import records_from_v1, records_from_v3
from ttft_probe.analysis.sources.posthog import app_host, hogql_query
from ttft_probe.errors import ConfigError
from ttft_probe.record import MarkerTimes, RunRecord
from ttft_probe.sinks._base import Delivery
from ttft_probe.sinks.otlp import OtlpSink
from ttft_probe.sinks.posthog import PostHogSink
from ttft_probe.sinks.store import Store

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
KEY = "phx_personal_test_key_0123456789"
PROJECT = "4242"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- the runs -------------------------------------------------------------------------


def _wall_ns(at: datetime) -> int:
    delta = at - EPOCH
    return ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


def _run(
    rng: random.Random,
    *,
    agent: str,
    at: datetime,
    turn: int | None,
    resumed: bool = False,
    reused: bool = False,
    status: str = "succeeded",
    reason: str | None = None,
    no_client_wait: bool = False,
    zero_total: bool = False,
    source: str | None = None,
    granularity: str | None = None,
    cache: dict[str, Any] | None = None,
) -> Delivery:
    """One run with awkward (µs-resolution) floats; its delivery for the sinks.

    ``cache``: the provider observer's request fields (contract 1.2), when it was on.
    """
    cli = 0.0 if reused else round(rng.uniform(80, 2500), 3)
    init_ms = 0.0 if reused else round(rng.lognormvariate(6, 0.8), 3)
    wait_ms = 0.0 if reused else round(rng.uniform(0, 40), 3)
    model_ms = round(rng.uniform(300, 4000), 3)
    init: float | None = init_ms
    wait: float | None = None if no_client_wait else wait_ms
    model: float | None = model_ms
    total: float | None = round(cli + init_ms + (wait or 0.0) + model_ms, 3)
    if reason is not None:  # the breakdown stops at the first missing link
        init, wait, model, total = None, None, None, None
    if zero_total:
        cli, init, wait, model, total = 0.0, 0.0, 0.0, 0.0, 0.0
    record = RunRecord(
        run_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        session_id=f"s-{rng.randrange(10**6)}",
        turn_ordinal=turn,
        session_resumed=resumed,
        process_reused=reused,
        agent=agent,
        runtime_family="claude-stream-json" if agent == "claude_code" else "json-event-stream",
        agent_version="1.2.3",
        model="model-x",
        status=status,
        exit_code=0 if status == "succeeded" else 1,
        spawn_to_first_token_ms=total,
        cli_ready_ms=cli,
        session_init_ms=init,
        client_wait_ms=wait,
        model_first_token_ms=model,
        remainder_ms=None if total is None else 0.0,
        total_duration_ms=None if total is None else round(total + rng.uniform(10, 900), 3),
        timing_unavailable_reason=reason,
        session_init_source=source,
        first_token_granularity=granularity if model is not None else None,
        input_tokens=rng.randrange(10, 5000),
        output_tokens=rng.randrange(1, 900),
        probe_version="0.0.test",
        started_at=at.isoformat(timespec="microseconds"),
        **(cache or {}),
    )
    start = 5_000_000_000

    def ns(ms: float | None) -> int | None:
        return None if ms is None else round(ms * 1_000_000)

    offsets = [cli, init, wait or 0.0, model]
    marks: list[int | None] = []
    acc = 0
    for value in offsets:
        step = ns(value)
        if step is None or (marks and marks[-1] is None):
            marks.append(None)
            continue
        acc += step
        marks.append(start + acc)
    times = MarkerTimes(
        start_ns=start,
        cli_ready_ns=marks[0],
        session_init_done_ns=marks[1],
        prompt_sent_ns=marks[2],
        first_token_ns=marks[3],
        end_ns=None
        if record.total_duration_ms is None
        else start + round(record.total_duration_ms * 1_000_000),
    )
    return Delivery(record=record, times=times, started_wall_ns=_wall_ns(at))


SECTIONS = ("system[1]", "messages[0]", "tools[3]", "system[0]")


def _cache_fields(crng: random.Random, turn: int | None, *, usage: bool) -> dict[str, Any]:
    """What the provider observer records: usage (when the provider said) and the prefix."""
    fields: dict[str, Any] = {
        "model_request_count": crng.randint(1, 4),
        "first_request_bytes": crng.randrange(2_000, 400_000),
    }
    if usage:
        total = crng.randrange(1_500, 60_000)
        read = 0 if turn == 1 else crng.randrange(0, total)
        fields |= {
            "first_request_input_tokens": total,
            "first_request_cache_read_tokens": read,
            "first_request_cache_write_tokens": crng.randrange(0, total - read + 1),
            "first_request_uncached_tokens": total - read,
        }
    if turn is None or turn == 1:
        fields["prefix_status"] = "no_previous"
    else:
        status = crng.choice(["stable", "broken", "broken", "unavailable"])
        fields["prefix_status"] = status
        if status == "broken":
            fields["prefix_break"] = crng.choice(SECTIONS)
        if status != "unavailable":
            fields["prefix_reused_bytes"] = crng.randrange(0, 300_000)
    return fields


def _make_runs() -> list[Delivery]:
    rng = random.Random(20250310)
    crng = random.Random(14)  # the observer's fields: the timing draws stay as they were
    runs: list[Delivery] = []

    def at(days: float) -> datetime:
        moment = NOW - timedelta(days=days)
        return moment.replace(microsecond=rng.randrange(10**6))

    for agent, count in (("claude_code", 70), ("codex", 40), ("gemini", 15)):
        for i in range(count):
            turn = 1 if i % 3 == 0 else (None if i % 11 == 5 else rng.randrange(2, 9))
            resumed = turn is not None and turn > 1 and i % 2 == 0
            reused = turn is not None and turn > 1 and i % 7 == 3
            status = "failed" if i % 13 == 4 else "timed_out" if i % 17 == 6 else "succeeded"
            reason = "no_first_token" if i % 9 == 2 else None
            days = rng.uniform(0.01, 13.5)  # about half outside the 7-day window
            # Observed: most of claude_code and codex, two gemini runs (too few to fit).
            watched = i % 5 != 1 and (i % 4 != 2 if agent != "gemini" else i in {0, 3})
            runs.append(
                _run(
                    rng,
                    agent=agent,
                    at=at(days),
                    turn=turn,
                    resumed=resumed,
                    reused=reused,
                    status=status,
                    reason=reason,
                    no_client_wait=agent == "gemini" and i % 4 == 1,
                    zero_total=agent == "codex" and i == 7,
                    # Timed without the observer: the session set-up is not separated.
                    source="init_message" if i % 5 == 1 and not reused else None,
                    granularity="message" if agent == "codex" and i % 2 == 0 else "delta",
                    cache=_cache_fields(crng, turn, usage=i % 7 != 3) if watched else None,
                )
            )
    # After `now` (clock skew): outside every window, inside "no window".
    runs.append(_run(rng, agent="codex", at=NOW + timedelta(hours=1), turn=2))
    return runs


RUNS = _make_runs()
_OTHER = random.Random(7)
OTHER_SERVICE_RUNS = [
    _run(_OTHER, agent="claude_code", at=NOW - timedelta(days=1, hours=i), turn=3) for i in range(3)
]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sources") / "runs.sqlite3"
    store = Store(path)
    for delivery in RUNS:
        store.add(delivery.record, delivery.times)
    store.close()
    return path


@pytest.fixture(scope="module")
def captured_events() -> list[dict[str, Any]]:
    """The events PostHog accepted from the real PostHog sink."""
    return _captured(RUNS[:60], RUNS[60:])


def _captured(*batches: Sequence[Delivery]) -> list[dict[str, Any]]:
    """The events PostHog accepted from the real PostHog sink for ``batches``, in order."""
    with FakePostHog() as capture:
        sink = PostHogSink("phc_project_key", host=capture.host, distinct_id="install-1")
        try:
            for batch in batches:
                assert sink.deliver(batch, timeout_s=20) == [True] * len(batch)
        finally:
            sink.close()
        assert capture.distinct_uuids == sum(len(batch) for batch in batches)
        return capture.events


@pytest.fixture(scope="module")
def posthog(captured_events: list[dict[str, Any]]) -> Iterator[FakePostHogQuery]:
    with FakePostHogQuery(captured_events, project_id=PROJECT, personal_api_key=KEY) as fake:
        yield fake


def _deliver_otlp(fake: FakeJaeger) -> None:
    for service, runs in (("ttft-probe", RUNS), ("other-service", OTHER_SERVICE_RUNS)):
        sink = OtlpSink(endpoint=fake.otlp_traces_endpoint, service_name=service)
        try:
            assert sink.deliver(runs, timeout_s=30) == [True] * len(runs)
        finally:
            sink.close()


@pytest.fixture(scope="module")
def jaeger() -> Iterator[FakeJaeger]:
    with FakeJaeger() as fake:
        _deliver_otlp(fake)
        yield fake


@pytest.fixture(scope="module")
def old_jaeger() -> Iterator[FakeJaeger]:
    with FakeJaeger(v3=False) as fake:
        _deliver_otlp(fake)
        yield fake


def _posthog_env(fake: FakePostHogQuery) -> dict[str, str]:
    return {
        "POSTHOG_HOST": fake.host,
        "POSTHOG_PROJECT_ID": PROJECT,
        "POSTHOG_PERSONAL_API_KEY": KEY,
    }


def _as_local(report: Report) -> Report:
    return attrs.evolve(report, source="local")


# --- the same report everywhere -------------------------------------------------------

WINDOWS = [
    pytest.param(None, None, id="all-agents-no-window"),
    pytest.param(None, WEEK, id="all-agents-7d"),
    pytest.param("claude_code", WEEK, id="claude_code-7d"),
    pytest.param("codex", None, id="codex-no-window"),
    pytest.param("gemini", timedelta(days=3), id="gemini-3d"),
    pytest.param("nobody", WEEK, id="unknown-agent"),
]


@pytest.mark.parametrize(("agent", "since"), WINDOWS)
def test_local_posthog_and_jaeger_give_the_same_report(
    agent: str | None,
    since: timedelta | None,
    store_path: Path,
    posthog: FakePostHogQuery,
    jaeger: FakeJaeger,
) -> None:
    local = load("local", agent=agent, since=since, now=NOW, store_path=store_path, env={})
    expected = build_report(
        in_window([d.record for d in RUNS], agent=agent, since=since, now=NOW), "local"
    )
    assert local == expected

    ph = load("posthog", agent=agent, since=since, now=NOW, env=_posthog_env(posthog))
    v3 = load(
        "jaeger",
        agent=agent,
        since=since,
        now=NOW,
        env={"JAEGER_URL": jaeger.url},
        options={"jaeger_api": "v3"},
    )
    v1 = load(
        "jaeger",
        agent=agent,
        since=since,
        now=NOW,
        env={"JAEGER_URL": jaeger.url},
        options={"jaeger-api": "v1"},
    )

    assert (ph.source, v3.source, v1.source) == ("posthog", "jaeger", "jaeger")
    assert _as_local(ph) == local
    assert _as_local(v3) == local
    assert _as_local(v1) == local
    if agent is not None:
        assert {row.key.agent for row in local.rows} <= {agent}


def test_the_data_covers_every_case(store_path: Path) -> None:
    """The fixture runs exercise cohorts, exclusions, missing metrics and the window."""
    report = load("local", agent=None, since=None, now=NOW, store_path=store_path, env={})
    turns = {row.key.turn for row in report.rows}
    assert turns == {"1", "2+", "?"}
    assert any(row.key.resumed for row in report.rows)
    assert any(row.key.reused for row in report.rows)
    assert sum(row.excluded for row in report.rows) > 10
    assert {row.key.agent for row in report.rows} == {"claude_code", "codex", "gemini"}
    gemini = [row for row in report.rows if row.key.agent == "gemini"]
    assert any(row.metrics["client_wait_ms"].n < row.metrics["cli_ready_ms"].n for row in gemini)
    week = load("local", agent=None, since=WEEK, now=NOW, store_path=store_path, env={})
    assert 0 < sum(r.runs for r in week.rows) < sum(r.runs for r in report.rows) - 1
    biggest = max(report.rows, key=lambda r: r.metrics["spawn_to_first_token_ms"].n)
    assert biggest.metrics["spawn_to_first_token_ms"].n >= 10
    # Cohorts that did not separate the session set-up, with no session-init figure.
    unseparated = [row for row in report.rows if not row.key.separated]
    assert unseparated
    assert all(row.metrics["session_init_ms"].n == row.session_init_share.n == 0
               for row in unseparated)
    assert any(row.metrics["cli_ready_ms"].n > 0 for row in unseparated)
    assert any(row.message_granular for row in report.rows)
    # The observer's fields: cohorts fully, partly and not observed; usage missing on some
    # observed runs; prefix breaks at several sections (ties too); a fit and a refusal.
    included = {row.key: row.runs - row.excluded for row in report.rows}
    caches = {row.key: row.prompt_cache for row in report.rows}
    assert any(c.observed == included[k] > 0 for k, c in caches.items())
    assert any(0 < c.observed < included[k] for k, c in caches.items())
    assert any(c.observed == 0 < included[k] for k, c in caches.items())
    assert any(c.uncached_tokens.n < c.observed for c in caches.values())
    assert any(c.top_break is not None and c.top_break_runs < c.prefix_broken
               for c in caches.values())
    assert all(c.prefix_stable + c.prefix_broken + c.prefix_no_previous
               + c.prefix_unavailable == c.observed for c in caches.values())
    costs = {cost.agent: cost for cost in report.context_cost}
    assert costs["claude_code"].slope_ms_per_1k is not None
    assert costs["codex"].message_granular > 0
    assert costs["gemini"].slope_ms_per_1k is None
    assert costs["gemini"].reason is not None


def test_jaeger_v1_shape_with_auto_falls_back_when_v3_is_missing(
    store_path: Path, old_jaeger: FakeJaeger
) -> None:
    local = load("local", agent="claude_code", since=WEEK, now=NOW, store_path=store_path, env={})
    before = len(old_jaeger.requests)
    report = load(
        "jaeger", agent="claude_code", since=WEEK, now=NOW, env={"JAEGER_URL": old_jaeger.url}
    )
    assert _as_local(report) == local
    paths = [path for path, _ in old_jaeger.requests[before:]]
    assert paths == ["/api/v3/traces", "/api/traces"]


def test_jaeger_v3_only_against_an_old_jaeger_names_the_fix(old_jaeger: FakeJaeger) -> None:
    with pytest.raises(ConfigError, match="--jaeger-api v1"):
        load(
            "jaeger",
            agent=None,
            since=WEEK,
            now=NOW,
            env={"JAEGER_URL": old_jaeger.url, "TTFT_PROBE_JAEGER_API": "v3"},
        )


def test_jaeger_no_traces_found_is_an_empty_report_not_a_fallback(jaeger: FakeJaeger) -> None:
    before = len(jaeger.requests)
    report = load("jaeger", agent="nobody", since=WEEK, now=NOW, env={"JAEGER_URL": jaeger.url})
    assert report == Report(rows=(), source="jaeger")
    assert [path for path, _ in jaeger.requests[before:]] == ["/api/v3/traces"]


def test_jaeger_requests_carry_service_window_agent_and_limit(jaeger: FakeJaeger) -> None:
    before = len(jaeger.requests)
    env = {
        "JAEGER_URL": jaeger.url,
        "OTEL_SERVICE_NAME": "ttft-probe",
        "TTFT_PROBE_JAEGER_LIMIT": "500",
    }
    load("jaeger", agent="codex", since=WEEK, now=NOW, env=env)
    load("jaeger", agent="codex", since=WEEK, now=NOW, env=env, options={"jaeger_api": "v1"})
    (p3, v3), (p1, v1) = jaeger.requests[before:]
    assert p3 == "/api/v3/traces"
    assert v3 == {
        "query.service_name": "ttft-probe",
        "query.start_time_min": "2025-03-03T12:00:00.000000000Z",
        "query.start_time_max": "2025-03-10T12:00:00.000000000Z",
        "query.num_traces": "500",
        "query.operation_name": "invoke_agent codex",
    }
    assert p1 == "/api/traces"
    assert v1 == {
        "service": "ttft-probe",
        "start": str(_wall_ns(NOW - WEEK) // 1000),
        "end": str(_wall_ns(NOW) // 1000),
        "limit": "500",
        "tags": '{"ttft_probe.agent":"codex"}',
    }


def test_jaeger_filters_on_the_server(jaeger: FakeJaeger) -> None:
    """The fake's search honours the service, time range, operation and limit."""
    start, end = _wall_ns(NOW - WEEK), _wall_ns(NOW)
    in_week = [d for d in RUNS if start <= d.started_wall_ns <= end]
    found = jaeger.find(
        service="ttft-probe", operation=None, tags={}, start_ns=start, end_ns=end, limit=10**6
    )
    assert len(found) == len(in_week)
    codex = jaeger.find(
        service="ttft-probe",
        operation="invoke_agent codex",
        tags={},
        start_ns=start,
        end_ns=end,
        limit=10**6,
    )
    assert len(codex) == len([d for d in in_week if d.record.agent == "codex"])
    tagged = jaeger.find(
        service="ttft-probe",
        operation=None,
        tags={"ttft_probe.agent": "codex"},
        start_ns=start,
        end_ns=end,
        limit=10**6,
    )
    assert len(tagged) == len(codex)
    assert (
        len(
            jaeger.find(
                service="ttft-probe", operation=None, tags={}, start_ns=start, end_ns=end, limit=5
            )
        )
        == 5
    )
    other = jaeger.find(
        service="other-service", operation=None, tags={}, start_ns=0, end_ns=end * 2, limit=100
    )
    assert len(other) == len(OTHER_SERVICE_RUNS)


def test_jaeger_service_name_comes_from_otel_service_name(jaeger: FakeJaeger) -> None:
    report = load(
        "jaeger",
        agent=None,
        since=None,
        now=NOW,
        env={"JAEGER_URL": jaeger.url, "OTEL_SERVICE_NAME": "other-service"},
    )
    assert _as_local(report) == build_report([d.record for d in OTHER_SERVICE_RUNS], "local")


def test_jaeger_records_are_rebuilt_field_for_field(jaeger: FakeJaeger) -> None:
    """Every record field survives both answer shapes, with its type."""
    expected = {d.record.run_id: d.record for d in RUNS}
    end = NOW + timedelta(days=1)
    query = {
        "query.service_name": "ttft-probe",
        "query.start_time_min": "1970-01-01T00:00:00Z",
        "query.start_time_max": end.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z",
        "query.num_traces": "100000",
    }
    for path, reader in (("/api/v3/traces", records_from_v3), ("/api/traces", records_from_v1)):
        if path == "/api/traces":
            query = {
                "service": "ttft-probe",
                "start": "0",
                "end": str(_wall_ns(end) // 1000),
                "limit": "100000",
            }
        url = f"{jaeger.url}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        rebuilt = reader(body)
        assert len(rebuilt) == len(RUNS)
        for record in rebuilt:
            assert record == expected[record.run_id]


# --- the PostHog query ----------------------------------------------------------------


def test_posthog_query_is_evaluated_not_canned(posthog: FakePostHogQuery) -> None:
    before = len(posthog.requests)
    load("posthog", agent="gemini", since=WEEK, now=NOW, env=_posthog_env(posthog))
    (request,) = posthog.requests[before:]
    assert request.path == f"/api/projects/{PROJECT}/query/"
    assert request.key == KEY
    sql = request.hogql
    assert sql is not None
    assert "WHERE event = 'run_finished'" in sql
    assert "timestamp >= toDateTime('2025-03-03T12:00:00.000000Z')" in sql
    assert "timestamp <= toDateTime('2025-03-10T12:00:00.000000Z')" in sql
    assert "JSONExtractString(properties, 'agent') = 'gemini'" in sql
    assert "GROUP BY agent, turn, resumed, reused" in sql
    # The fake runs any query over the events, e.g. a count by agent:
    columns, results, types = run_query(
        "SELECT JSONExtractString(properties, 'agent') AS agent, count() AS runs FROM events"
        " WHERE event = 'run_finished' GROUP BY agent ORDER BY agent",
        posthog.rows(),
    )
    assert columns == ["agent", "runs"]
    assert results == [["claude_code", 70], ["codex", 41], ["gemini", 15]]
    assert types == ["String", "UInt64"]


def test_hogql_quantiles_are_type_7() -> None:
    """The query's array formula gives exactly `percentile` for every n from 0 to 60."""
    rng = random.Random(3)
    for n in range(61):
        values = [round(rng.uniform(0, 5000), 3) for _ in range(n)]
        events = [
            {"event": "run_finished", "uuid": str(i), "timestamp": "2025-03-01T00:00:00+00:00",
             "properties": {"agent": "a", "turn_ordinal": 2, "session_resumed": True, "process_reused": False,
                            "status": "succeeded", "timing_unavailable_reason": None,
                            **dict.fromkeys(METRICS, v)}}
            for i, v in enumerate(values)
        ]  # fmt: skip
        columns, results, _ = run_query(
            hogql_query(agent=None, start=None, end=None), [event_row(e) for e in events]
        )
        if n == 0:
            assert results == []
            continue
        (row,) = results
        got = dict(zip(columns, row, strict=True))
        assert got["n_cli_ready_ms"] == n
        assert got["p50_cli_ready_ms"] == percentile(values, 0.5)
        assert got["p90_cli_ready_ms"] == percentile(values, 0.9)
        assert (got["turn"], got["resumed"], got["reused"]) == ("2+", 1, 0)


def test_fake_rejects_what_hogql_does_not_allow(posthog: FakePostHogQuery) -> None:
    with pytest.raises(QueryError, match="Unsupported function call 'quantileExactInclusive"):
        run_query(
            "SELECT quantileExactInclusive(0.5)(toFloat(properties.x)) FROM events", posthog.rows()
        )
    body = json.dumps(
        {"query": {"kind": "HogQLQuery", "query": "SELECT nope( FROM events"}}
    ).encode()
    request = urllib.request.Request(
        f"{posthog.host}/api/projects/{PROJECT}/query/",
        data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    info.value.close()


def test_posthog_wrong_key_is_a_clear_error_without_the_key(posthog: FakePostHogQuery) -> None:
    env = {**_posthog_env(posthog), "POSTHOG_PERSONAL_API_KEY": "phx_wrong_key_abcdef"}
    with pytest.raises(ConfigError, match=r"rejected the personal API key \(401") as info:
        load("posthog", agent=None, since=WEEK, now=NOW, env=env)
    assert "POSTHOG_PERSONAL_API_KEY" in str(info.value)
    assert "phx_wrong_key_abcdef" not in str(info.value)
    assert posthog.requests[-1].key == "phx_wrong_key_abcdef"  # it was sent, as a Bearer token


def test_posthog_unknown_project_names_the_variable(posthog: FakePostHogQuery) -> None:
    env = {**_posthog_env(posthog), "POSTHOG_PROJECT_ID": "999"}
    with pytest.raises(ConfigError, match="POSTHOG_PROJECT_ID"):
        load("posthog", agent=None, since=WEEK, now=NOW, env=env)


def test_an_ingestion_host_is_mapped_to_the_app_host() -> None:
    assert app_host("https://us.i.posthog.com") == "https://us.posthog.com"
    assert app_host("https://eu.i.posthog.com/") == "https://eu.posthog.com"
    assert app_host("https://posthog.example.com") == "https://posthog.example.com"


def test_options_win_over_the_environment(posthog: FakePostHogQuery, store_path: Path) -> None:
    env = {
        "POSTHOG_HOST": "http://127.0.0.1:9",
        "POSTHOG_PROJECT_ID": "1",
        "POSTHOG_PERSONAL_API_KEY": "nope",
    }
    options = {
        "posthog-host": posthog.host,
        "POSTHOG_PROJECT_ID": PROJECT,
        "posthog_personal_api_key": KEY,
    }
    report = load("posthog", agent="codex", since=WEEK, now=NOW, env=env, options=options)
    local = load("local", agent="codex", since=WEEK, now=NOW, store_path=store_path, env={})
    assert _as_local(report) == local


# --- configuration --------------------------------------------------------------------

MISSING = [
    pytest.param({"POSTHOG_PERSONAL_API_KEY": KEY}, "POSTHOG_PROJECT_ID", id="no-project"),
    pytest.param({"POSTHOG_PROJECT_ID": PROJECT}, "POSTHOG_PERSONAL_API_KEY", id="no-key"),
    pytest.param(
        {"POSTHOG_PROJECT_ID": PROJECT, "POSTHOG_PERSONAL_API_KEY": KEY, "POSTHOG_HOST": "ftp://x"},
        "POSTHOG_HOST",
        id="bad-host",
    ),
]


@pytest.mark.parametrize(("env", "variable"), MISSING)
def test_missing_posthog_configuration_names_the_variable(
    env: Mapping[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        load("posthog", agent=None, since=WEEK, now=NOW, env=env)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TTFT_PROBE_JAEGER_API": "v2"}, "--jaeger-api"),
        ({"JAEGER_URL": "localhost:16686"}, "JAEGER_URL"),
        ({"TTFT_PROBE_JAEGER_LIMIT": "0"}, "TTFT_PROBE_JAEGER_LIMIT"),
        ({"TTFT_PROBE_QUERY_TIMEOUT_S": "soon"}, "TTFT_PROBE_QUERY_TIMEOUT_S"),
    ],
)
def test_invalid_jaeger_configuration_names_the_variable(
    env: Mapping[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        load("jaeger", agent=None, since=WEEK, now=NOW, env=env)


def test_naive_now_and_unknown_source_are_config_errors(store_path: Path) -> None:
    with pytest.raises(ConfigError, match="aware"):
        load("local", agent=None, since=WEEK, now=datetime(2025, 3, 10), store_path=store_path)  # noqa: DTZ001
    with pytest.raises(ConfigError, match="unknown source"):
        load("langfuse", agent=None, since=WEEK, now=NOW)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_backends_are_source_errors() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(SourceError, match="cannot reach Jaeger"):
        load("jaeger", agent=None, since=WEEK, now=NOW, env={"JAEGER_URL": url})
    env = {"POSTHOG_HOST": url, "POSTHOG_PROJECT_ID": PROJECT, "POSTHOG_PERSONAL_API_KEY": KEY}
    with pytest.raises(SourceError, match="cannot reach PostHog") as info:
        load("posthog", agent=None, since=WEEK, now=NOW, env=env)
    assert KEY not in str(info.value)


# --- the gate: the same verdict from PostHog (ClickHouse) as from the local store -----


def test_gate_from_posthog_agrees_with_the_local_store(tmp_path: Path) -> None:
    """One agent's turn-2+ runs: a separated cohort and an unseparated one (no observer)."""
    from ttft_probe.analysis.gate import gate_records, gate_report

    rng = random.Random(11)
    runs = [
        _run(rng, agent="opencode_acp", at=NOW - timedelta(hours=i + 1), turn=2 + i % 4,
             resumed=True, source=None if i < 24 else "init_message",
             reason="no_first_token" if i % 10 == 9 else None)
        for i in range(30)
    ]  # fmt: skip
    events = _captured(runs)
    local_records = in_window([d.record for d in runs], agent="opencode_acp", since=WEEK,
                              now=NOW)
    local = gate_records(local_records, agent="opencode_acp", window=WEEK, source="local")
    with FakePostHogQuery(events, project_id=PROJECT, personal_api_key=KEY) as fake:
        report = load("posthog", agent="opencode_acp", since=WEEK, now=NOW,
                      env=_posthog_env(fake))
    remote = gate_report(report, agent="opencode_acp", window=WEEK)
    assert local.population.not_separated == 6 - 1  # one of the six has no first token
    assert local.population.n > 15
    # Every number the gate decided on, to the µs (the shares are the p50s' ratios there).
    assert remote.decision is local.decision
    assert remote.population.n == local.population.n
    assert remote.population.not_separated == local.population.not_separated
    assert remote.population.excluded == local.population.excluded
    assert remote.population.session_init_share == local.population.session_init_share
    assert remote.population.spawn_to_first_token_p50_ms == (
        local.population.spawn_to_first_token_p50_ms
    )


# --- prompt cache and cost of context: PostHog (ClickHouse) against the local store ---


def _observed_turn(rng: random.Random, i: int, *, agent: str, observed: bool) -> Delivery:
    """A resumed turn whose model wait grows by 50 ms per 1,000 uncached tokens."""
    uncached = rng.randrange(1_000, 40_000)
    read = rng.randrange(0, 80_000)
    status = ("stable", "broken", "broken", "no_previous")[i % 4]
    cache: dict[str, Any] | None = {
        "model_request_count": 1 + i % 3,
        "first_request_input_tokens": uncached + read,
        "first_request_cache_read_tokens": read,
        "first_request_cache_write_tokens": rng.randrange(0, uncached + 1),
        "first_request_uncached_tokens": uncached,
        "first_request_bytes": rng.randrange(10_000, 900_000),
        "prefix_status": status,
        "prefix_break": ("system[1]", "messages[0]")[i % 3 % 2] if status == "broken" else None,
    }
    delivery = _run(rng, agent=agent, at=NOW - timedelta(hours=i + 1), turn=2 + i % 5,
                    resumed=True, cache=cache if observed else None,
                    granularity="message" if i % 9 == 4 else "delta")  # fmt: skip
    model = round(400.0 + 0.05 * uncached + rng.gauss(0.0, 30.0), 3)
    return attrs.evolve(delivery, record=attrs.evolve(delivery.record, model_first_token_ms=model))


def test_prompt_cache_and_context_cost_from_posthog_agree_with_the_local_store() -> None:
    """Cache columns and the slope with its bootstrap interval, to the last bit.

    Through the real PostHog sink and the query on ClickHouse; one agent observed
    (y = 400 + 0.05·x + noise), one not (its figures are null, never 0).
    """
    rng = random.Random(50)
    runs = [_observed_turn(rng, i, agent="claude_code", observed=True) for i in range(40)]
    runs += [_observed_turn(rng, i, agent="codex", observed=False) for i in range(8)]
    runs.append(_run(rng, agent="claude_code", at=NOW - timedelta(hours=3), turn=3,
                     resumed=True, status="failed",
                     cache={"model_request_count": 1, "first_request_uncached_tokens": 10**6,
                            "prefix_status": "broken", "prefix_break": "tools[0]"}))  # fmt: skip
    events = _captured(runs)
    local = build_report(in_window([d.record for d in runs], agent=None, since=WEEK, now=NOW),
                         "local")  # fmt: skip
    with FakePostHogQuery(events, project_id=PROJECT, personal_api_key=KEY) as fake:
        remote = load("posthog", agent=None, since=WEEK, now=NOW, env=_posthog_env(fake))
    assert _as_local(remote) == local  # every row's cache figures and every context cost

    claude, codex = local.context_cost
    assert (claude.agent, claude.n, claude.message_granular) == ("claude_code", 40, 4)
    assert claude.slope_ms_per_1k is not None
    assert claude.ci95_ms_per_1k is not None
    assert claude.slope_ms_per_1k == pytest.approx(50.0, abs=3.0)
    assert claude.ci95_ms_per_1k[0] < 50.0 < claude.ci95_ms_per_1k[1]
    assert codex.slope_ms_per_1k is None
    assert codex.reason is not None
    assert "--observe-provider" in codex.reason
    by_agent = {row.key.agent: row.prompt_cache for row in local.rows}
    observed = by_agent["claude_code"]
    assert observed.observed == 40  # the failed run is excluded, its break not counted
    assert (observed.prefix_stable, observed.prefix_broken, observed.prefix_no_previous) == (
        10, 20, 10)  # fmt: skip
    assert observed.top_break == "system[1]"
    assert observed.top_break_runs == 13  # i % 4 in {1, 2} and i % 3 % 2 == 0
    assert by_agent["codex"] == PromptCache()  # nothing observed: no figure at all
    assert by_agent["codex"].cache_read_share is None
    assert by_agent["codex"].break_rate is None
