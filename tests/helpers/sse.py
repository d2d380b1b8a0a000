"""Server-sent events read back from a response body, for the tests of streaming servers."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["sse_events"]


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """``(event name, decoded data)`` of every non-blank event; ``None`` for what is absent."""
    events: list[tuple[str | None, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        events.append((name, data))
    return events
