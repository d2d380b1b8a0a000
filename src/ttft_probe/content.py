"""Opt-in content capture: a run's prompt and answer text. Off by default.

Nothing here runs unless the one option is on: ``Probe(capture_content=True)`` or
``ttft-probe run --capture-content``. With it off, no prompt text, answer text, argv or
environment reaches the store, the logs or any sink (``docs/RELIABILITY.md``, redaction).

With it on, the adapters report the message text they see on the streams the probe
already reads (:class:`ttft_probe.adapters.ContentObserved`):

- ``user``: the prompt, where the protocol carries it past the probe — the ACP
  ``session/prompt`` request's ``params.prompt`` text blocks (``turn/start``
  ``params.input`` for ``codex app-server``) on stdin, and the user ``message`` event
  Gemini CLI's ``stream-json`` echoes. A prompt given on the command line is never read:
  argv stays out even with capture on.
- ``assistant``: the answer text — Claude ``text_delta`` deltas (without partial
  messages: the ``assistant`` messages' text blocks; never thinking or tool input), ACP
  ``agent_message_chunk`` text of the prompt in flight (not ``session/load`` history;
  app-server ``item/agentMessage/delta``), Codex ``item.completed`` ``agent_message``
  text, Gemini assistant ``message`` events, cursor-agent's successful ``result``, and a
  plain CLI's stdout text.

The text is kept per run, capped at :data:`MAX_CHARS` characters per role, stored with
the run (the store's ``content_json``) and sent where its backend has a place for it:
the OTel GenAI ``gen_ai.input.messages`` / ``gen_ai.output.messages`` span attributes,
PostHog's ``$ai_input`` / ``$ai_output_choices`` properties and Langfuse's trace
input/output. It is never part of the ``run_finished`` contract record.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import attrs

__all__ = ["MAX_CHARS", "CapturedContent", "ContentBuffer", "Role"]

MAX_CHARS: Final = 100_000
"""Most characters kept per role and run; the rest is dropped and ``truncated`` set."""

Role = Literal["user", "assistant"]


def _parts(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "content": text}]


@attrs.frozen
class CapturedContent:
    """The prompt and answer text of one run, ``None`` where none was seen.

    ``truncated`` is ``True`` when either text reached :data:`MAX_CHARS` and was cut.
    """

    input_text: str | None = None
    output_text: str | None = None
    truncated: bool = False

    def input_messages(self) -> list[dict[str, Any]]:
        """``gen_ai.input.messages`` (OTel GenAI): ``[{"role": "user", "parts": [...]}]``.

        Empty when no prompt text was seen.
        """
        if self.input_text is None:
            return []
        return [{"role": "user", "parts": _parts(self.input_text)}]

    def output_messages(self) -> list[dict[str, Any]]:
        """``gen_ai.output.messages`` (OTel GenAI): ``[{"role": "assistant", "parts": [...]}]``.

        Empty when no answer text was seen.
        """
        if self.output_text is None:
            return []
        return [{"role": "assistant", "parts": _parts(self.output_text)}]

    def to_json(self) -> str:
        """The stored form: ``{"input_text", "output_text", "truncated"}`` as JSON."""
        return json.dumps(attrs.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> CapturedContent | None:
        """Parse :meth:`to_json` output; ``None`` for ``None`` or anything unreadable."""
        if not text:
            return None
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        inp, out = obj.get("input_text"), obj.get("output_text")
        return cls(
            input_text=inp if isinstance(inp, str) else None,
            output_text=out if isinstance(out, str) else None,
            truncated=obj.get("truncated") is True,
        )


class ContentBuffer:
    """Collects one run's text as the adapter reports it (appending, capped per role)."""

    def __init__(self) -> None:
        """Start empty."""
        self._text: dict[Role, list[str]] = {"user": [], "assistant": []}
        self._size: dict[Role, int] = {"user": 0, "assistant": 0}
        self._truncated = False

    def add(self, role: Role, text: str) -> None:
        """Append ``text`` to ``role``'s text, up to :data:`MAX_CHARS` in all."""
        room = MAX_CHARS - self._size[role]
        if len(text) > room:
            text = text[: max(room, 0)]
            self._truncated = True
        if text:
            self._text[role].append(text)
            self._size[role] += len(text)

    def result(self) -> CapturedContent:
        """What was collected; a role with nothing seen is ``None``."""
        user, assistant = self._text["user"], self._text["assistant"]
        return CapturedContent(
            input_text="".join(user) if user else None,
            output_text="".join(assistant) if assistant else None,
            truncated=self._truncated,
        )
