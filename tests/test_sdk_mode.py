"""Claude Code in SDK mode (``--input-format stream-json``) under `ttft-probe run` (issue 11).

This is how ``claude-agent-sdk`` runs Claude Code: one long-lived process, a user message
written to its stdin per turn. :class:`~realcli.SdkClient` drives the real CLI as the SDK
does (an ``initialize`` handshake, then messages) with pauses of its own, and every turn
must come out as a record whose segments hold the CLI's and the model's time and none of
the client's pauses. The fake provider's log (first token after DELAY_MS) is the ground
truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import DELAY_MS
from realcli import (
    MS,
    PAUSE_S,
    Agent,
    SdkClient,
    assert_complete,
    assert_first_token_matches,
    assert_model_segment,
    assert_pause_in_no_segment,
    records_of,
)
from ttft_probe.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.realcli


@pytest.mark.parametrize("observe", [False, True], ids=["init-line", "observer"])
def test_two_turns_with_client_pauses(
    observe: bool, provider: FakeProvider, scratch: Path
) -> None:
    a = Agent("claude_code", provider, scratch)
    t_launch = time.monotonic_ns()
    client = SdkClient(a, *(["--observe-provider"] if observe else []))
    try:
        client.initialize()
        t_ready_seen = time.monotonic_ns()
        time.sleep(PAUSE_S)
        client.turn("Say hello")
        time.sleep(PAUSE_S)
        client.turn("Say it again")
    finally:
        stderr = client.end()
    first, second = records_of(a)
    for record in (first, second):
        assert_complete(record)
        assert record.session_init_source is not None
        assert record.session_init_source.value == ("model_request" if observe else "init_message")
        assert_model_segment(record)
        assert_first_token_matches(provider, a.times(record), record)
    assert (first.turn_ordinal, first.process_reused, first.session_resumed) == (1, False, False)
    # The CLI was ready when it answered the handshake; the client's pause is client_wait.
    assert first.cli_ready_ms is not None
    assert first.cli_ready_ms < (t_ready_seen - t_launch) / MS
    assert first.client_wait_ms is not None
    assert first.client_wait_ms >= PAUSE_S * 1000
    assert (second.turn_ordinal, second.session_id) == (2, first.session_id)
    assert second.conversation_id == first.conversation_id == first.session_id
    assert_pause_in_no_segment(second)
    if observe:
        for record in (first, second):
            assert record.provider_first_byte_ms is not None
            assert record.provider_first_byte_ms >= DELAY_MS
    # One breakdown line per turn, in the order the segments happened.
    lines = [x for x in stderr.decode().splitlines() if x.startswith("ttft-probe: claude_code")]
    assert lines[0].startswith("ttft-probe: claude_code turn 1 fresh: first token ")
    assert " + client_wait " in lines[0]
    assert lines[0].index("client_wait") < lines[0].index("session_init")
    assert lines[1].startswith("ttft-probe: claude_code turn 2 reused process: first token ")
    # No boot of its own: its cli_ready is 0 by construction, not a measurement, not shown.
    assert "cli_ready" not in lines[1]
    assert " = session_init " in lines[1]


def test_message_sent_during_a_turn_waits_for_it(provider: FakeProvider, scratch: Path) -> None:
    a = Agent("claude_code", provider, scratch)
    client = SdkClient(a)
    try:
        client.initialize()
        client.user("Say hello")
        time.sleep(0.05)
        client.user("Say it again")  # the SDK queues it: the first turn is still open
        client.wait_for("result")
        client.wait_for("result")
    finally:
        stderr = client.end()
    first, second = records_of(a)
    # Its wait for the first turn is shown: a measured cli_ready, not one by construction.
    assert b"turn 2 reused process: first token" in stderr
    assert b"= cli_ready " in stderr.split(b"turn 2 reused process")[1]
    assert_complete(first)
    assert_complete(second)
    first_times, second_times = a.times(first), a.times(second)
    assert first_times.end_ns is not None
    assert second_times.first_token_ns is not None
    # The second turn took no token of the first answer: its own came after that result.
    assert second_times.first_token_ns > first_times.end_ns
    assert second_times.prompt_sent_ns is not None
    assert second_times.prompt_sent_ns < first_times.end_ns
    # It waited for the CLI (the first turn) from its message to that result: cli_ready.
    assert second.cli_ready_ms is not None
    assert second.cli_ready_ms == pytest.approx(
        (first_times.end_ns - second_times.prompt_sent_ns) / MS, abs=0.002)
    assert second.client_wait_ms == 0
    assert_first_token_matches(provider, first_times, first)
    assert_first_token_matches(provider, second_times, second)


def test_interrupted_turn_is_cancelled(provider: FakeProvider, scratch: Path) -> None:
    a = Agent("claude_code", provider, scratch)
    client = SdkClient(a)
    try:
        client.initialize()
        client.user("Say something long")
        time.sleep(DELAY_MS / 1000 / 3)  # before the provider's first token
        client.interrupt()
        client.wait_for("result")
        client.turn("Say hello")
    finally:
        client.end()
    cancelled, after = records_of(a)
    assert cancelled.status.value == "cancelled"
    assert cancelled.first_token_granularity is None
    assert cancelled.timing_unavailable_reason is not None
    assert cancelled.timing_unavailable_reason.value == "no_first_token"
    assert_complete(after)
    assert after.turn_ordinal == 2
    assert_first_token_matches(provider, a.times(after), after)


def test_without_the_initialize_handshake_cli_ready_is_not_observable(
    provider: FakeProvider, scratch: Path
) -> None:
    a = Agent("claude_code", provider, scratch)
    client = SdkClient(a)
    try:
        client.turn("Say hello")  # no initialize: the CLI prints nothing before this
        client.turn("Say it again")
    finally:
        stderr = client.end()
    first, second = records_of(a)
    assert first.cli_ready_ms is None
    assert first.client_wait_ms is None
    assert first.session_init_ms is None
    assert first.timing_unavailable_reason is not None
    assert first.timing_unavailable_reason.value == "cli_ready_not_observable"
    assert_model_segment(first)
    assert b"send a control_request initialize first" in stderr
    assert_complete(second)
    assert_model_segment(second)


def test_client_closing_stdin_mid_turn_loses_no_record(
    provider: FakeProvider, scratch: Path
) -> None:
    a = Agent("claude_code", provider, scratch)
    client = SdkClient(a)
    try:
        client.initialize()
        client.user("Say hello")
    finally:
        client.end()  # stdin closes while the turn is answering: the CLI finishes it, exits
    assert client.proc.returncode == 0  # the agent's own exit status, through the probe
    [record] = records_of(a)
    assert_complete(record)
    assert_first_token_matches(provider, a.times(record), record)


def test_resumed_session_counts_on_from_its_earlier_runs(
    provider: FakeProvider, scratch: Path
) -> None:
    a = Agent("claude_code", provider, scratch)
    client = SdkClient(a)
    try:
        client.initialize()
        session = client.turn("Say hello")["session_id"]
    finally:
        client.end()
    client = SdkClient(a, agent_args=("--resume", session))  # as the SDK's `resume=` does
    try:
        client.initialize()
        client.turn("Say it again")
        client.turn("And once more")
    finally:
        client.end()
    first, resumed, later = records_of(a)
    assert (first.turn_ordinal, first.session_resumed) == (1, False)
    assert (resumed.turn_ordinal, resumed.session_resumed, resumed.process_reused) == (2, True, False)
    assert (later.turn_ordinal, later.session_resumed, later.process_reused) == (3, True, True)
    assert resumed.conversation_id == later.conversation_id == first.conversation_id
    for record in (resumed, later):
        assert_complete(record)
        assert_first_token_matches(provider, a.times(record), record)
