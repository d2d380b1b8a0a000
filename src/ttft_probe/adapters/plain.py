"""Marker rules of the ``plain`` family (DESIGN §3): any CLI that prints its answer.

There is no protocol, so the markers come from the arrival of stdout chunks (raw reads,
``framing="chunks"``), optionally overridden by user regexes from
:class:`~ttft_probe.adapters.AdapterOptions`.

===================  ===================================================================
marker / event       rule
===================  ===================================================================
``cliReady``         the first non-empty stdout chunk; with ``cli_ready_regex``, the
                     chunk in which the pattern first matches
``sessionInitDone``  not observable (``session_init_observable`` is ``False``; the
                     provider observer marks it outside this adapter); with
                     ``session_init_regex``, the chunk in which the pattern first
                     matches (``session_init_source="user_regex"``)
``firstToken``       with ``first_token_regex``: the chunk in which the pattern first
                     matches. Otherwise the first non-empty stdout text after the
                     preceding marker: after the line that matched ``session_init_regex``
                     (else the line that matched ``cli_ready_regex``); with neither, the
                     first non-empty chunk itself, so ``firstToken`` equals
                     ``cliReady``. Granularity ``delta``, kind ``text``.
``TurnEnded``        :meth:`PlainAdapter.close` (stdout EOF)
``ContentObserved``  only with ``capture_content``: all stdout text, role ``assistant``,
                     one event per chunk that completes some text, after that chunk's
                     markers. It is decoded incrementally as UTF-8 (undecodable bytes
                     replaced), so a character split across reads comes out whole;
                     :meth:`PlainAdapter.close` flushes an unfinished one (as U+FFFD)
                     before ``TurnEnded``. The prompt is on the command line: not read.
===================  ===================================================================

With the provider observer (``AdapterOptions.provider_observed``) and no
``session_init_regex``, ``sessionInitDone`` is the first generation request (marked by the
run state) and the default ``firstToken`` is the first non-empty stdout chunk *after*
it (:meth:`PlainAdapter.model_request` arms it). If the CLI printed nothing before that
request, ``cliReady`` is the request itself: a CLI that calls the model is up.

Patterns are searched line by line in the stdout text decoded as UTF-8 (undecodable
bytes replaced), with the ``CR`` of ``CRLF`` line ends stripped. The unterminated last line is
searched too, as it grows, because a streaming answer need not end its line; a pattern
anchored with ``$`` can therefore match a line prefix. The partial line kept between
chunks is bounded (its tail is kept), so one endless line costs bounded memory.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, ClassVar, Final, Literal

from ttft_probe.adapters._base import (
    AdapterOptions,
    ContentObserved,
    Event,
    MarkerObserved,
    TurnEnded,
)
from ttft_probe.record import (
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
    SessionInitSource,
)

if TYPE_CHECKING:
    import re

__all__ = ["PlainAdapter"]

_MAX_PARTIAL: Final = 64 * 1024
"""Characters of an unterminated line kept between chunks for regex matching."""


class PlainAdapter:
    """Adapter for CLIs that print plain text (see the module table)."""

    family: ClassVar[str] = RuntimeFamily.PLAIN
    framing: ClassVar[Literal["lines", "chunks"]] = "chunks"
    request_driven: ClassVar[bool] = False
    tees_stdin: ClassVar[bool] = False

    def __init__(self, options: AdapterOptions | None = None) -> None:
        """Create an adapter; ``options`` may carry the three marker regexes."""
        opts = options or AdapterOptions()
        self._capture = opts.capture_content
        self._cli_re = opts.cli_ready_regex
        self._init_re = opts.session_init_regex
        self._token_re = opts.first_token_regex
        # The marker whose line arms the default firstToken rule (None: armed at start).
        self._observed = opts.provider_observed and opts.session_init_regex is None
        self._arming: Marker | None = (
            Marker.SESSION_INIT_DONE
            if self._init_re is not None or self._observed
            else Marker.CLI_READY
            if self._cli_re is not None
            else None
        )
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._seen: set[Marker] = set()
        self._armed = self._arming is None and self._token_re is None
        self._await_eol = False  # the arming line matched before its newline arrived
        self._ended = False

    @property
    def session_init_observable(self) -> bool:
        """``True`` with ``session_init_regex`` or the provider observer."""
        return self._init_re is not None or self._observed

    def model_request(self, t_ns: int) -> list[Event]:
        """First model request (observer): arm ``firstToken`` for the next output."""
        if not self._observed or Marker.SESSION_INIT_DONE in self._seen:
            return []
        events: list[Event] = []
        if self._cli_re is None:
            self._mark(Marker.CLI_READY, t_ns, events)
        # Recorded by the run state with source model_request; here it only arms the token.
        self._seen.add(Marker.SESSION_INIT_DONE)
        if self._token_re is None:
            self._armed = True
        return events

    def feed_stdout(self, data: bytes, t_ns: int) -> list[Event]:
        """Take one raw stdout chunk that arrived at ``t_ns``."""
        if not data or (not self._capture and self._done()):
            return []
        events: list[Event] = []
        if not self._done():
            if self._cli_re is None:
                self._mark(Marker.CLI_READY, t_ns, events)
            if self._armed:
                self._mark(Marker.FIRST_TOKEN, t_ns, events)
        scan = not self._done() and self._needs_text()
        if not (scan or self._capture):
            return events
        # Decoded only while a pattern still needs text, or for content capture.
        text = self._decoder.decode(data)
        if scan:
            self._scan(text, t_ns, events)
        if self._capture and text:
            events.append(ContentObserved("assistant", text))
        return events

    def feed_stdin(self, line: bytes, t_ns: int) -> list[Event]:  # noqa: ARG002 - protocol
        """Stdin is not teed for this family; nothing to parse."""
        return []

    def close(self, t_ns: int) -> list[Event]:
        """Stdout EOF ends the turn (after the last, unfinished character, when capturing)."""
        if self._ended:
            return []
        self._ended = True
        events: list[Event] = []
        if self._capture:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                events.append(ContentObserved("assistant", tail))
        events.append(TurnEnded(t_ns))
        return events

    def _done(self) -> bool:
        return Marker.FIRST_TOKEN in self._seen and Marker.CLI_READY in self._seen and (
            self._init_re is None or Marker.SESSION_INIT_DONE in self._seen
        )

    def _needs_text(self) -> bool:
        pending = any(rx is not None and m not in self._seen for m, rx in self._patterns())
        return pending or (Marker.FIRST_TOKEN not in self._seen and self._token_re is None)

    def _patterns(self) -> tuple[tuple[Marker, re.Pattern[str] | None], ...]:
        return (
            (Marker.CLI_READY, self._cli_re),
            (Marker.SESSION_INIT_DONE, self._init_re),
            (Marker.FIRST_TOKEN, self._token_re),
        )

    def _scan(self, text: str, t_ns: int, events: list[Event]) -> None:
        combined = self._partial + text
        pos = 0
        while True:
            nl = combined.find("\n", pos)
            complete = nl != -1
            line = combined[pos:nl] if complete else combined[pos:]
            self._match(line.removesuffix("\r"), t_ns, events)
            if not complete:
                break
            pos = nl + 1
            if self._await_eol:
                self._await_eol = False
                self._armed = True
            if self._armed and pos < len(combined):
                # Text after the arming line's newline is all new in this chunk.
                self._mark(Marker.FIRST_TOKEN, t_ns, events)
        if self._armed and self._decoder.getstate()[0]:
            # The chunk ends inside a character that follows the arming line's newline: its
            # first bytes are the answer's first bytes, as for any other first chunk.
            self._mark(Marker.FIRST_TOKEN, t_ns, events)
        self._partial = combined[pos:][-_MAX_PARTIAL:]

    def _match(self, line: str, t_ns: int, events: list[Event]) -> None:
        for marker, rx in self._patterns():
            if rx is None or marker in self._seen or rx.search(line) is None:
                continue
            self._mark(marker, t_ns, events)
            if marker is self._arming and self._token_re is None:
                # The token is the text after this line, once its newline arrives.
                self._await_eol = True

    def _mark(self, marker: Marker, t_ns: int, events: list[Event]) -> None:
        if marker in self._seen:
            return
        self._seen.add(marker)
        if marker is Marker.FIRST_TOKEN:
            self._armed = False
            events.append(
                MarkerObserved(
                    marker,
                    t_ns,
                    granularity=FirstTokenGranularity.DELTA,
                    kind=FirstTokenKind.TEXT,
                )
            )
        elif marker is Marker.SESSION_INIT_DONE:
            events.append(
                MarkerObserved(marker, t_ns, session_init_source=SessionInitSource.USER_REGEX)
            )
        else:
            events.append(MarkerObserved(marker, t_ns))
