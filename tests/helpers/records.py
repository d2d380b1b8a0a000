"""Run records and marker times for the tests: one factory and the presets modules share.

:func:`record` is the factory (a valid record from the required fields, then the
overrides); the presets below it fix the other values a group of tests holds its
assertions to: a stream agent's run timed by :func:`stream_times` (the OTel and OTLP
sinks), a run with every usual field (the PostHog sink), a run split 500 + 100 ms (the
A/B analysis) and the report's ``rec`` dated back from :data:`NOW`.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ttft_probe._clock import WallAnchor
from ttft_probe.record import MarkerTimes, RunRecord, compute_segments

__all__ = [
    "ANCHOR",
    "MS",
    "NOW",
    "RECORD_ID",
    "SECRET_MODEL",
    "SPAN_ID",
    "START",
    "STREAM_RUN_ID",
    "TRACE_ID",
    "ab_record",
    "full_record",
    "rec",
    "record",
    "stream_record",
    "stream_times",
    "traced_record",
    "wall",
]

MS = 1_000_000
RECORD_ID = "3f2b8c1e-8d4a-4e3b-9a57-0c2f1d9e8b7a"
"""The run id of a :func:`record` that is given none."""


def record(**fields: Any) -> RunRecord:
    """A succeeded ``claude_code`` run with only the required fields set, then ``fields``."""
    values: dict[str, Any] = {
        "run_id": RECORD_ID,
        "agent": "claude_code",
        "runtime_family": "claude-stream-json",
        "status": "succeeded",
        "probe_version": "0",
        "started_at": "2026-11-21T08:00:00.000000+00:00",
    }
    values.update(fields)
    return RunRecord(**values)


# --- a stream agent's run, timed (the OTel and OTLP sinks) ---

ANCHOR = WallAnchor(wall_ns=1_750_000_000_000_000_000, mono_ns=10_000_000_000)
START = 10_000_123_456
"""The run's start on the monotonic clock (ns)."""
STREAM_RUN_ID = "0b7c2f1e-5d7a-4c7b-9d55-3f1f3b0f6a11"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def stream_times(**overrides: int | None) -> MarkerTimes:
    """A stream agent's run: ready 480 ms, session 900 ms, first token 1400 ms, end 2000 ms."""
    base: dict[str, int | None] = {
        "cli_ready_ns": START + 480 * MS,
        "session_init_done_ns": START + 900 * MS,
        "first_token_ns": START + 1400 * MS,
        "end_ns": START + 2000 * MS,
    }
    base.update(overrides)
    return MarkerTimes(start_ns=START, **base)


def wall(mono_ns: int) -> int:
    """``mono_ns`` on the wall clock, by :data:`ANCHOR`."""
    return ANCHOR.wall_ns_at(mono_ns)


def stream_record(
    times: MarkerTimes,
    *,
    request_driven: bool = False,
    process_reused: bool = False,
    **fields: Any,
) -> RunRecord:
    """The record of a stream agent's run: segments computed from ``times``, then ``fields``."""
    segments = compute_segments(times, request_driven=request_driven, process_reused=process_reused)
    values: dict[str, Any] = {
        "run_id": STREAM_RUN_ID,
        "probe_version": "0.1.0.dev0",
        "started_at": "2025-06-15T12:00:00Z",
        "process_reused": process_reused,
        **attrs.asdict(segments, recurse=False),
    }
    values.update(fields)
    return record(**values)


def traced_record(times: MarkerTimes, **fields: Any) -> RunRecord:
    """:func:`stream_record` of a second, resumed turn with trace ids, model and exit code."""
    values: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "turn_ordinal": 2,
        "session_resumed": True,
        "model": "claude-x",
        "exit_code": 0,
    }
    values.update(fields)
    return stream_record(times, **values)


# --- a run with every usual field (the PostHog sink) ---

SECRET_MODEL = "model-SECRET-value-42"
"""The model of a :func:`full_record`: it must not reach what is not meant to carry it."""


def full_record(**fields: Any) -> RunRecord:
    """A run with ids, versions, a full breakdown and usage; a fresh ``run_id``; ``fields``."""
    values: dict[str, Any] = {
        "run_id": str(uuid.uuid4()),
        "conversation_id": "conv-1",
        "session_id": "sess-1",
        "turn_ordinal": 1,
        "agent": "claude_code",
        "runtime_family": "claude-stream-json",
        "agent_version": "2.0.0",
        "model": SECRET_MODEL,
        "status": "succeeded",
        "exit_code": 0,
        "spawn_to_first_token_ms": 1500.0,
        "cli_ready_ms": 300.0,
        "session_init_ms": 200.0,
        "client_wait_ms": 0.0,
        "model_first_token_ms": 1000.0,
        "remainder_ms": 0.0,
        "total_duration_ms": 4250.0,
        "input_tokens": 12,
        "output_tokens": 34,
        "cache_read_input_tokens": 5600,
        "cache_creation_input_tokens": 78,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "probe_version": "0.1.0",
        "started_at": "2025-01-02T03:04:05.678901+00:00",
    }
    values.update(fields)
    return record(**values)


# --- a run split 500 + 100 ms (the A/B analysis) ---


def ab_record(**fields: Any) -> RunRecord:
    """A run of 600 ms (ready 500, model 100, nothing else), a random ``run_id``; ``fields``."""
    values: dict[str, Any] = {
        "run_id": f"00000000-0000-4000-8000-{random.randrange(16**12):012x}",
        "spawn_to_first_token_ms": 600.0,
        "cli_ready_ms": 500.0,
        "session_init_ms": 0.0,
        "client_wait_ms": 0.0,
        "model_first_token_ms": 100.0,
        "remainder_ms": 0.0,
    }
    values.update(fields)
    return record(**values)


# --- the report's runs, dated back from NOW ---

NOW = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)


def rec(
    *,
    agent: str = "claude_code",
    turn: int | None = 2,
    resumed: bool = True,
    reused: bool = False,
    total: float | None = 1000.0,
    cli: float | None = 400.0,
    init: float | None = 300.0,
    model: float | None = 300.0,
    status: str = "succeeded",
    reason: str | None = None,
    age: timedelta = timedelta(hours=1),
    now: datetime = NOW,
) -> RunRecord:
    """A run ``age`` before ``now`` with this breakdown (ms); a fresh ``run_id``."""
    return record(
        run_id=str(uuid.uuid4()),
        agent=agent,
        status=status,
        turn_ordinal=turn,
        session_resumed=resumed,
        process_reused=reused,
        spawn_to_first_token_ms=total,
        cli_ready_ms=cli,
        session_init_ms=init,
        client_wait_ms=0.0,
        model_first_token_ms=model,
        timing_unavailable_reason=reason,
        probe_version="0.0.0",
        started_at=(now - age).isoformat(timespec="microseconds"),
    )
