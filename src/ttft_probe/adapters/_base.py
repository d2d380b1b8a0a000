"""The adapter protocol, the events adapters emit, and the adapter registry.

An adapter is a sans-I/O parser (like h11's ``receive_data``/``next_event``): it is fed
the agent's stdout (and, for request-driven families, the client's stdin) with the
monotonic time in ns at which the bytes arrived, and returns events. It does no I/O and
reads no clock, so every marker rule is testable from a recorded transcript.

Each runtime family's marker rules live in exactly one module of this package.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol, runtime_checkable

import attrs

from ttft_probe.errors import UnknownAdapterError
from ttft_probe.record import (
    FAMILY_NAME,
    FirstTokenGranularity,
    FirstTokenKind,
    Marker,
    RuntimeFamily,
    SessionInitSource,
)

if TYPE_CHECKING:
    import re

    from ttft_probe.content import Role

__all__ = [
    "Adapter",
    "AdapterOptions",
    "AgentInfo",
    "AgentReportedTimings",
    "ContentObserved",
    "Event",
    "LineSplitter",
    "MarkerObserved",
    "SessionObserved",
    "TurnEnded",
    "UsageReported",
    "adapter_for",
    "check_family",
    "decode_count",
    "decode_ms",
    "decode_name",
    "decode_object",
    "decode_text",
    "registered_families",
]

_log = logging.getLogger("ttft_probe")


@attrs.frozen
class MarkerObserved:
    """A marker was observed at ``t_ns`` (monotonic ns).

    ``session_id`` attributes request-driven markers (``sessionInitDone``,
    ``promptSent``, ``firstToken``) to a session; ``None`` for stream agents.
    ``PROMPT_SENT`` starts a turn on a request-driven agent.
    """

    marker: Marker
    t_ns: int
    session_id: str | None = None
    session_init_source: SessionInitSource | None = None
    granularity: FirstTokenGranularity | None = None
    kind: FirstTokenKind | None = None


@attrs.frozen
class SessionObserved:
    """The agent named its session.

    ``resumed`` is ``True`` when the agent continued an existing session (ACP
    ``session/load`` / ``session/resume``, app-server ``thread/resume``), ``False`` when it
    created one, ``None`` when the message does not say. ``prior_turns`` counts the user
    turns the agent replayed while loading (``user_message_chunk`` runs during
    ``session/load``), when it replays them.
    """

    session_id: str
    resumed: bool | None = None
    prior_turns: int | None = None


@attrs.frozen
class TurnEnded:
    """The agent finished a turn at ``t_ns`` (stream ``result`` line; ACP prompt result).

    ``failed`` when the agent reported an error; ``cancelled`` when the turn ended because
    the client cancelled it (ACP ``stopReason: "cancelled"``).
    """

    t_ns: int
    session_id: str | None = None
    failed: bool = False
    cancelled: bool = False


@attrs.frozen
class UsageReported:
    """Token usage the agent reported for the turn; ``None`` where it did not say."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    session_id: str | None = None


@attrs.frozen
class AgentInfo:
    """Model and version as the agent reports them."""

    model: str | None = None
    agent_version: str | None = None


@attrs.frozen
class AgentReportedTimings:
    """Timings the agent reports about itself, in ms on its own clock.

    Claude Code's ``result`` line carries ``ttft_ms``, ``time_to_request_ms`` and
    ``duration_api_ms``; its clock starts ~250 ms after spawn, so these are kept apart
    as ``agent_reported_*`` and never mixed into the segments.
    """

    ttft_ms: float | None = None
    time_to_request_ms: float | None = None
    duration_api_ms: float | None = None


@attrs.frozen
class ContentObserved:
    """Message text the adapter saw; emitted only when ``AdapterOptions.capture_content``.

    ``role`` is ``"user"`` for prompt text, ``"assistant"`` for answer text (a delta or a
    whole message: the run appends them in order). ``session_id`` attributes it on
    request-driven agents; ``None`` for stream agents. See :mod:`ttft_probe.content` for
    the protocol fields each family reads.
    """

    role: Role
    text: str
    session_id: str | None = None


Event = (
    MarkerObserved
    | SessionObserved
    | TurnEnded
    | UsageReported
    | AgentInfo
    | AgentReportedTimings
    | ContentObserved
)


def _argv(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class AdapterOptions:
    """Per-run options an adapter may use.

    ``cli_ready_regex`` / ``session_init_regex`` / ``first_token_regex`` override each
    marker of the ``plain`` family: the marker is the arrival of the chunk in which the
    pattern first matches (searched in decoded stdout text, line by line).
    ``provider_observed``: the provider observer (DESIGN §6) reports the first model
    request through :meth:`Adapter.model_request`.
    ``capture_content``: emit :class:`ContentObserved` for prompt and answer text (the
    opt-in content capture, :mod:`ttft_probe.content`); while it is on, ``line_filter``
    returns ``None`` (every line is parsed).
    ``argv``: the agent's command line, so that a family can read the flags that change
    its protocol (Claude Code's ``--input-format stream-json``); the probe fills it in. It
    stays in memory: no adapter may put it in an event.
    """

    cli_ready_regex: re.Pattern[str] | None = None
    session_init_regex: re.Pattern[str] | None = None
    first_token_regex: re.Pattern[str] | None = None
    provider_observed: bool = False
    capture_content: bool = False
    argv: tuple[str, ...] = attrs.field(default=(), converter=_argv, repr=False)


@runtime_checkable
class Adapter(Protocol):
    """Protocol: the marker rules of one runtime family, as a sans-I/O parser.

    ``framing`` says what :meth:`feed_stdout` receives: ``"lines"`` (one complete line
    without its newline, from :class:`LineSplitter`) or ``"chunks"`` (raw reads). Stdin
    always arrives as lines. ``t_ns`` is the monotonic time in ns at which the bytes
    (for a line: its last byte) arrived. Implementations must not raise for any input
    they do not understand; the caller treats a raised exception as a parser fault and
    disables the adapter for the rest of the run.

    ``request_driven`` (turns start at a prompt the client writes to stdin, as ACP's
    ``session/prompt``) and ``tees_stdin`` may be class variables or set per instance, as
    by a family whose command line selects its protocol.

    Optional, outside the protocol (so that older plugins still satisfy it):

    * a ``lines`` adapter may define ``line_filter() -> tuple[bytes, ...] | None``. A tuple
      says that, in the adapter's present state, a stdout line holding none of those
      substrings yields no event and changes no state; the caller may then skip such lines
      without splitting them (:meth:`LineSplitter.feed_matching`). This is what keeps the
      per-line cost after the first token near zero (the pass-through benchmark); ``None``
      means every line.
    * a request-driven adapter may set ``prompt_first = True``: each turn's own set-up
      (``sessionInitDone``) follows its prompt, and turns are served one at a time in the
      order of their prompts (Claude Code's ``--input-format stream-json``). Default
      ``False``: a session is set up once, before its prompts (ACP).
    * ``cli_ready_observable`` (default ``True``): ``False`` once the adapter knows it
      cannot see this process's ``cliReady``; a run without it then says so
      (``cli_ready_not_observable``) instead of ``no_cli_ready``.
    """

    family: ClassVar[str]
    framing: ClassVar[Literal["lines", "chunks"]]

    @property
    def request_driven(self) -> bool:
        """Turns start at a prompt the client writes to stdin, not at the spawn."""
        ...

    @property
    def tees_stdin(self) -> bool:
        """The caller must feed the client's stdin lines to :meth:`feed_stdin`."""
        ...

    @property
    def session_init_observable(self) -> bool:
        """Whether this adapter can ever mark ``sessionInitDone`` on its own."""
        ...

    def feed_stdout(self, data: bytes, t_ns: int) -> Sequence[Event]:
        """Parse agent stdout (a line or a chunk, per ``framing``) and return events."""
        ...

    def feed_stdin(self, line: bytes, t_ns: int) -> Sequence[Event]:
        """Parse one line the client wrote to the agent's stdin and return events."""
        ...

    def close(self, t_ns: int) -> Sequence[Event]:
        """Stdout reached EOF at ``t_ns``; return any final events."""
        ...

    def model_request(self, t_ns: int) -> Sequence[Event]:
        """The provider observer saw the turn's first generation request arrive at ``t_ns``.

        For stream families that request *is* ``sessionInitDone`` (the run state applies
        that); an adapter returns only what its own family's rules derive from it.
        """
        ...


AdapterFactory = Callable[[AdapterOptions], Adapter]


def decode_object(line: bytes) -> dict[str, Any] | None:
    """One JSON line as an object, or ``None`` for anything else (never raises)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


_MAX_COUNT: Final = 2**63 - 1
"""Largest token count kept: SQLite ``INTEGER`` and OTLP ``int`` attributes are int64."""


def decode_name(value: object) -> str | None:
    r"""A non-empty JSON string as an id or name for the record, else ``None`` (never raises).

    JSON can carry lone UTF-16 surrogates (``"\ud800"``), which no UTF-8 sink can store
    (SQLite raises ``UnicodeEncodeError`` on them, losing the record); such a string is kept
    with each surrogate as its ``\udXXX`` escape, so it stays distinct and the same wherever
    the agent repeats it (a session id on stdout and stdin).
    """
    return _storable(value, readable=False)


def decode_text(value: object) -> str | None:
    r"""Message text for content capture: a non-empty JSON string, else ``None`` (never raises).

    Lone UTF-16 surrogates (``"\ud800"`` in JSON) become U+FFFD: the text is kept for
    reading, and no UTF-8 sink could store them.
    """
    return _storable(value, readable=True)


def _storable(value: object, *, readable: bool) -> str | None:
    r"""A non-empty string made UTF-8-safe, else ``None``.

    Lone surrogates become U+FFFD (``readable``) or their ``\udXXX`` escapes (ids stay
    distinct).
    """
    if not isinstance(value, str) or not value:
        return None
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        if readable:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def decode_count(value: object) -> int | None:
    """A token count: an integral JSON number in ``0 … 2**63-1``, else ``None`` (never raises).

    The record's schema requires counts ``>= 0``; larger ones fit no int64 store or exporter.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():  # also NaN and ±inf
        return None
    count = int(value)
    return count if 0 <= count <= _MAX_COUNT else None


def decode_ms(value: object) -> float | None:
    """A duration in ms: a finite JSON number ``>= 0``, else ``None`` (never raises).

    ``NaN``/``Infinity`` (and ``1e999``, which decodes to infinity) cannot be written as
    JSON, an integer beyond float range cannot be converted, and the schema requires
    durations ``>= 0``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        ms = float(value)
    except OverflowError:
        return None
    return ms if math.isfinite(ms) and ms >= 0 else None


class LineSplitter:
    """Splits a byte stream into lines (LF-terminated, a trailing CR stripped).

    Lines longer than ``max_line`` bytes are dropped (counted in :attr:`dropped`), so a
    single huge line costs bounded memory; no marker rule needs a line that long.
    """

    def __init__(self, max_line: int = 8 * 1024 * 1024) -> None:
        """Create a splitter that keeps at most ``max_line`` bytes of a partial line."""
        self._buf = bytearray()
        self._max = max_line
        self._skipping = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete lines ``data`` finishes (without their newlines)."""
        if b"\n" not in data:
            self._append(data)
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        lines: list[bytes] = []
        head = parts[0]
        if self._skipping:
            self._skipping = False
            self.dropped += 1
        elif self._buf:
            self._buf += head
            if len(self._buf) <= self._max:
                lines.append(bytes(self._buf))
            else:
                self.dropped += 1
            self._buf.clear()
        elif len(head) <= self._max:
            lines.append(head)
        else:
            self.dropped += 1
        for part in parts[1:]:
            if len(part) <= self._max:
                lines.append(part)
            else:
                self.dropped += 1
        self._append(tail)
        return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]

    def feed_matching(self, data: bytes, needles: Sequence[bytes]) -> list[bytes]:
        """Like :meth:`feed`, but lines holding none of ``needles`` may be left out.

        For an adapter whose :meth:`Adapter.line_filter` says such lines cannot matter
        (typically after the turn's first token). A read whose finished lines hold no
        needle (each needle non-empty, without a newline) is not split at all: only its
        unfinished last line is kept. Otherwise this is :meth:`feed`, every line included,
        so the adapter still sees them in order and can change its filter part-way.
        """
        end = data.rfind(b"\n")
        if end < 0:
            self._append(data)
            return []
        if self._may_hold(data, end, needles):
            return self.feed(data)
        if self._skipping:  # an over-long line ended in this read
            self._skipping = False
            self.dropped += 1
        self._buf.clear()
        self._append(data[end + 1 :])
        return []

    def _may_hold(self, data: bytes, end: int, needles: Sequence[bytes]) -> bool:
        """Whether a line finished in ``data[:end]`` (with the kept partial line) holds a needle."""
        buf = self._buf
        for needle in needles:
            if data.find(needle, 0, end) >= 0:
                return True
            if buf and not self._skipping:
                if needle in buf:
                    return True
                k = len(needle) - 1
                if k and needle in bytes(buf[-k:]) + data[:k]:
                    return True
        return False

    def flush(self) -> bytes | None:
        """Return the unterminated last line at EOF, if any."""
        if self._skipping or not self._buf:
            return None
        line = bytes(self._buf)
        self._buf.clear()
        return line

    def _append(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        if len(self._buf) + len(data) > self._max:
            self._buf.clear()
            self._skipping = True
            return
        self._buf += data


ENTRY_POINT_GROUP: Final = "ttft_probe.adapters"
"""The entry-point group under which a distribution registers a family's adapter."""


def _builtin_target(family: RuntimeFamily) -> str:
    """``module:Class`` of a built-in family (``acp-json-rpc``: ``AcpJsonRpcAdapter``)."""
    module = family.value.replace("-", "_")
    cls = "".join(part.capitalize() for part in module.split("_")) + "Adapter"
    return f"ttft_probe.adapters.{module}:{cls}"


_BUILTIN: Final[dict[str, str]] = {str(f): _builtin_target(f) for f in RuntimeFamily}
"""The built-in families' adapters: one per :class:`~ttft_probe.record.RuntimeFamily` member."""


def _load(target: str) -> AdapterFactory:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    factory: AdapterFactory = getattr(module, attr)
    return factory


def registered_families() -> dict[str, str]:
    """Family name → ``module:attr`` of its adapter: built-ins plus entry-point plugins.

    Plugins register under the ``ttft_probe.adapters`` entry-point group, the entry
    point's name being the family's name (:data:`~ttft_probe.record.FAMILY_NAME`; others
    are skipped, with a warning); a built-in family cannot be overridden by a plugin.
    """
    from importlib.metadata import entry_points  # noqa: PLC0415 - ~20 ms, only for plugins

    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not FAMILY_NAME.fullmatch(ep.name):
            _log.warning("adapter plugin %r: not a family name (%s); skipped", ep.name,
                         FAMILY_NAME.pattern)  # fmt: skip
            continue
        found.setdefault(ep.name, ep.value)
    return found


def check_family(family: str) -> str:
    """``family`` if a built-in or installed plugin adapter has that name.

    Cheap for a built-in name; a plugin's name is looked up among the installed
    distributions' entry points.

    Raises:
        UnknownAdapterError: No adapter has that name (the message lists the known ones
            and says how a plugin registers).
    """
    if family in _BUILTIN:
        return family
    known = registered_families()
    if family not in known:
        raise _unknown(family, known)
    return family


def _unknown(family: str, known: Iterable[str]) -> UnknownAdapterError:
    return UnknownAdapterError(
        f"unknown runtime family {family!r}; known: {', '.join(sorted(known))} "
        f"(a plugin adds one with an entry point in the {ENTRY_POINT_GROUP!r} group)"
    )


def adapter_for(family: str, options: AdapterOptions | None = None) -> Adapter:
    """Build the adapter of ``family`` (a built-in or an installed plugin's name).

    Raises:
        UnknownAdapterError: No built-in or plugin adapter has that name (the message
            lists the known ones). A plugin that fails to import is logged and treated
            as absent.
    """
    builtin = _BUILTIN.get(family)
    known = {family: builtin} if builtin is not None else registered_families()
    target = known.get(family)
    if target is None:
        raise _unknown(family, known)
    try:
        factory = _load(target)
    except Exception:
        if builtin is not None:
            raise
        _log.warning("adapter plugin %r failed to import; skipped", family, exc_info=True)
        raise UnknownAdapterError(
            f"adapter plugin {family!r} failed to import; built-in families: "
            f"{', '.join(sorted(_BUILTIN))}"
        ) from None
    return factory(options or AdapterOptions())
