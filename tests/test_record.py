"""The timing contract (DESIGN §3) and the run_finished record (DESIGN §4)."""

from __future__ import annotations

import attrs
import pytest

from conftest import assert_valid
from helpers.records import record
from ttft_probe.record import (
    MarkerTimes,
    RunRecord,
    TimingUnavailableReason,
    compute_segments,
    record_schema,
)

MS = 1_000_000


def t(spawn: int = 0, /, **offsets_ms: float | None) -> MarkerTimes:
    def at(name: str) -> int | None:
        v = offsets_ms.get(name)
        return None if v is None else spawn + round(v * MS)

    return MarkerTimes(
        start_ns=spawn,
        cli_ready_ns=at("ready"),
        session_init_done_ns=at("init"),
        prompt_sent_ns=at("prompt"),
        first_token_ns=at("first"),
        end_ns=at("end"),
    )


def test_stream_agent_complete_chain_sums_exactly() -> None:
    s = compute_segments(
        t(10**12, ready=480.123457, init=480.2, first=1010.000001, end=1200),
        request_driven=False,
        process_reused=False,
    )
    assert s.cli_ready_ms == 480.123
    assert s.session_init_ms == 0.077
    assert s.client_wait_ms == 0.0
    assert s.model_first_token_ms == 529.8
    assert s.spawn_to_first_token_ms == 1010.0
    assert s.remainder_ms == 0.0
    assert s.total_duration_ms == 1200.0
    assert s.timing_unavailable_reason is None


def test_request_driven_agent_has_client_wait() -> None:
    s = compute_segments(
        t(ready=310, init=1400, prompt=1450, first=1970), request_driven=True, process_reused=False
    )
    assert (s.cli_ready_ms, s.session_init_ms, s.client_wait_ms, s.model_first_token_ms) == (
        310.0,
        1090.0,
        50.0,
        520.0,
    )
    assert s.spawn_to_first_token_ms == 1970.0
    assert s.remainder_ms == 0.0


def test_reused_process_starts_at_the_prompt() -> None:
    s = compute_segments(
        MarkerTimes(start_ns=5 * MS, prompt_sent_ns=5 * MS, first_token_ns=600 * MS),
        request_driven=True,
        process_reused=True,
    )
    assert (s.cli_ready_ms, s.session_init_ms, s.client_wait_ms) == (0.0, 0.0, 0.0)
    assert s.model_first_token_ms == s.spawn_to_first_token_ms == 595.0
    assert s.remainder_ms == 0.0


def test_missing_session_init_is_null_never_guessed() -> None:
    s = compute_segments(
        t(ready=100, first=900),
        request_driven=False,
        process_reused=False,
        session_init_observable=False,
    )
    assert s.session_init_ms is None
    assert s.model_first_token_ms is None
    assert s.cli_ready_ms == 100.0
    assert s.spawn_to_first_token_ms == 900.0
    # The audit trail: the part no segment explains.
    assert s.remainder_ms == 800.0
    assert s.timing_unavailable_reason is TimingUnavailableReason.SESSION_INIT_NOT_OBSERVABLE


@pytest.mark.parametrize(
    ("kwargs", "offsets", "reason"),
    [
        ({"exited_early": True}, {}, TimingUnavailableReason.PROCESS_EXITED_BEFORE_READY),
        ({}, {}, TimingUnavailableReason.NO_CLI_READY),
        ({}, {"ready": 10}, TimingUnavailableReason.NO_SESSION_INIT),
        ({}, {"ready": 10, "init": 20}, TimingUnavailableReason.NO_FIRST_TOKEN),
        ({"adapter_failed": True}, {"ready": 10}, TimingUnavailableReason.ADAPTER_ERROR),
    ],
)
def test_reasons(
    kwargs: dict[str, bool], offsets: dict[str, float], reason: TimingUnavailableReason
) -> None:
    s = compute_segments(t(**offsets), request_driven=False, process_reused=False, **kwargs)
    assert s.timing_unavailable_reason is reason
    assert s.spawn_to_first_token_ms is None


def test_prompt_missing_on_request_driven_agent() -> None:
    s = compute_segments(t(ready=10, init=20, first=30), request_driven=True, process_reused=False)
    assert s.timing_unavailable_reason is TimingUnavailableReason.NO_PROMPT
    assert s.client_wait_ms is None
    assert s.model_first_token_ms is None


def test_out_of_order_markers_make_nulls_and_a_remainder() -> None:
    # firstToken before sessionInitDone: neither segment is negative, both are null.
    s = compute_segments(
        t(ready=100, init=700, first=500), request_driven=False, process_reused=False
    )
    assert s.session_init_ms == 600.0
    assert s.model_first_token_ms is None
    assert s.timing_unavailable_reason is TimingUnavailableReason.MARKERS_OUT_OF_ORDER
    assert s.remainder_ms == 500.0 - 100.0 - 600.0


def test_schema_lists_exactly_the_record_fields() -> None:
    schema = record_schema()
    names = [f.name for f in attrs.fields(RunRecord)]
    assert list(schema["properties"]) == names
    assert schema["required"] == names
    assert schema["additionalProperties"] is False


def test_record_round_trips_and_validates() -> None:
    r = record(cli_ready_ms=1, timing_unavailable_reason="no_first_token", turn_ordinal=2)
    assert_valid(r)
    assert RunRecord.from_dict(r.to_dict()) == r
    assert r.to_dict()["timing_unavailable_reason"] == "no_first_token"


def test_record_is_frozen_and_validated() -> None:
    r = record()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        r.agent = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="turn_ordinal"):
        record(turn_ordinal=0)
    with pytest.raises(ValueError, match="sometimes"):
        record(status="sometimes")
