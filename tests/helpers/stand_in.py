"""Steps for the scripted stand-in child (``conftest.script``): Claude Code's stream-json lines."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DELTA", "claude_init", "line"]

DELTA: dict[str, Any] = {
    "type": "stream_event",
    "event": {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hi"},
    },
}
"""A text delta, "Hi": the run's first token."""


def claude_init(session_id: str) -> dict[str, Any]:
    """Claude Code's ``system`` / ``init`` line for ``session_id`` (model ``claude-x``)."""
    return {"type": "system", "subtype": "init", "session_id": session_id, "model": "claude-x"}


def line(obj: dict[str, Any]) -> dict[str, str]:
    """The step that writes ``obj`` to stdout as one JSON line."""
    return {"out": json.dumps(obj) + "\n"}
