"""Advice on a run's breakdown that the CLI and ``doctor`` both give: one wording each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ttft_probe.record import RunRecord

__all__ = ["granularity_hint", "structured_output_hint"]

_STRUCTURED: Final = {
    "claude_code": "add --output-format stream-json --verbose --include-partial-messages",
    "codex": "run `codex exec --json …` (or `codex app-server`)",
    "gemini": "add --output-format stream-json",
}


def granularity_hint(record: RunRecord) -> str | None:
    """What to do about a first token that is a whole message (late by its generation time).

    ``None`` for a delta-granularity (or missing) first token.
    """
    granularity = record.first_token_granularity
    if granularity is None or granularity.value != "message":
        return None
    if record.agent == "claude_code":
        return (
            "the first token is a whole message, late by its generation time; add "
            "--include-partial-messages to the claude command for deltas"
        )
    if record.agent == "codex":
        return (
            "the first token is a whole message (codex exec prints no deltas), late by its "
            "generation time; `codex app-server` streams deltas"
        )
    return "the first token is a whole message (this agent prints no deltas), so it is late"


def structured_output_hint(agent: str) -> str | None:
    """For a known agent run with plain-text output: the flags that give its protocol."""
    how = _STRUCTURED.get(agent)
    if how is None:
        return None
    return f"it prints plain text, so the session set-up is not visible: {how}"
