"""One run's waterfall: its markers and every model request on one time axis (``show``).

:func:`build_view` is pure: from a run's record, its marker times and the model requests
the provider observer saw (:class:`~ttft_probe.waterfall.ModelRequest`) it builds a
:class:`WaterfallView`, every time in ms from the run's origin — ``processSpawned`` for a
spawned run, the turn's ``promptSent`` for a turn on a reused process (DESIGN §3). What
was not observed stays ``None`` with a note saying why; it is never drawn as 0.

The view is rendered three ways: :meth:`WaterfallView.to_dict` (JSON),
:func:`waterfall_renderables` (rich: a header, one table of markers and requests with a
proportional bar per row on the common axis, the prefix and first-request usage lines)
and :func:`write_waterfall_chart` (a matplotlib Gantt chart, PNG or SVG). matplotlib is
imported only by the chart functions, rich only by the renderer.

:func:`find_run` and :func:`load_view` read a run from the local store by its id or a
unique prefix of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ttft_probe.errors import ConfigError
from ttft_probe.record import Marker, MarkerTimes, ObserverStatus, RunRecord, ns_to_ms
from ttft_probe.waterfall import ModelRequest, RequestKind

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import RenderableType

    from ttft_probe.sinks.store import Store

__all__ = [
    "BAR_WIDTH",
    "END",
    "KIND_COLOURS",
    "NOT_OBSERVED",
    "NOT_STORED",
    "OBSERVER_OFF",
    "RECORD_FIELDS",
    "SEGMENTS",
    "MarkerRow",
    "RequestRow",
    "WaterfallView",
    "build_view",
    "find_run",
    "load_view",
    "waterfall_figure",
    "waterfall_renderables",
    "write_waterfall_chart",
]

END: Final = "end"
"""Name of the turn's end marker in the view (the agent's result, or ``processExited``)."""

RECORD_FIELDS: Final = (
    "model_request_count",
    "first_request_input_tokens",
    "first_request_cache_read_tokens",
    "first_request_cache_write_tokens",
    "first_request_uncached_tokens",
    "first_request_bytes",
    "prefix_status",
    "prefix_break",
    "prefix_reused_bytes",
)
"""The record fields of DESIGN §10 (contract 1.2) that the view carries unchanged."""

SEGMENTS: Final = (
    "spawn_to_first_token_ms",
    "cli_ready_ms",
    "session_init_ms",
    "client_wait_ms",
    "model_first_token_ms",
    "remainder_ms",
    "provider_first_byte_ms",
    "cli_forward_ms",
)
"""The record's segments (ms) that the view carries unchanged, ``None`` staying ``None``."""

KIND_COLOURS: Final[Mapping[str, str]] = {
    # Okabe–Ito: distinguishable with the common colour-vision deficiencies.
    RequestKind.GENERATION: "#009E73",
    RequestKind.COUNT_TOKENS: "#E69F00",
    RequestKind.TITLE: "#CC79A7",
    RequestKind.QUOTA: "#D55E00",
    RequestKind.ROUTING: "#56B4E9",
    RequestKind.PREWARM: "#0072B2",
    RequestKind.HEAD: "#999999",
    RequestKind.OTHER: "#BBBBBB",
}
"""Colour of each request kind, in the terminal bars and the chart."""

OBSERVER_OFF: Final = "observer off: rerun with --observe-provider to see model requests"
NOT_OBSERVED: Final = "not observed"
NOT_STORED: Final = "not stored"
_REUSED: Final = "none of its own (reused process)"
_KIB: Final = 1024


@attrs.frozen
class MarkerRow:
    """One marker of the run: its contract name and when it was, in ms from the origin.

    ``at_ms`` is ``None`` when the marker was not observed (or has no meaning for this
    run); ``note`` then says which.
    """

    name: str
    at_ms: float | None
    note: str | None = None


@attrs.frozen
class RequestRow:
    """One model request, in ms from the run's origin, with the usage its provider reported.

    ``start_ms`` is the arrival of the request head, ``first_byte_ms`` the upstream's
    first content byte (generation responses only), ``end_ms`` the end of the exchange.
    Token counts are ``None`` where the provider did not say; ``input_tokens`` includes
    cached tokens and ``uncached_tokens`` is ``input_tokens - cache_read_tokens``.
    ``first_generation`` marks the turn's first generation request, the one the record's
    ``first_request_*`` fields describe.
    """

    request_id: int
    api: str
    kind: str
    model: str | None
    status: int | None
    start_ms: float
    first_byte_ms: float | None
    end_ms: float | None
    request_bytes: int | None
    input_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    uncached_tokens: int | None
    output_tokens: int | None
    first_generation: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready properties."""
        return attrs.asdict(self)


@attrs.frozen
class WaterfallView:
    """What ``ttft-probe show`` shows of one run; built by :func:`build_view`.

    ``origin`` names time 0 of every ``*_ms``: ``processSpawned`` (a spawned run),
    ``promptSent`` (a turn on a reused process), ``first model request`` (marker times
    not stored), or ``None`` (neither markers nor requests). ``requests`` is ``None``
    when no requests are known for the run; ``requests_note`` then says why (the
    observer was off, failed, or stored none). ``segments`` and ``record_fields`` are the
    record's values unchanged (``None`` stays ``None``).
    """

    run_id: str
    agent: str
    turn_ordinal: int | None
    how: str
    status: str
    timing_unavailable_reason: str | None
    origin: str | None
    markers: tuple[MarkerRow, ...]
    segments: Mapping[str, float | None]
    observer_status: str
    requests: tuple[RequestRow, ...] | None
    requests_note: str | None
    record_fields: Mapping[str, Any]

    @property
    def first_generation(self) -> RequestRow | None:
        """The turn's first generation request, if the observer saw one."""
        return next((r for r in self.requests or () if r.first_generation), None)

    @property
    def span_ms(self) -> tuple[float, float]:
        """The common time axis: (earliest, latest) known time in ms, ``0`` included."""
        values = [m.at_ms for m in self.markers if m.at_ms is not None]
        for r in self.requests or ():
            values += [v for v in (r.start_ms, r.first_byte_ms, r.end_ms) if v is not None]
        low, high = min([0.0, *values]), max([0.0, *values])
        return low, (high if high > low else low + 1.0)

    def title(self) -> str:
        """``agent · run RUN_ID · turn N (how)``."""
        turn = f"turn {self.turn_ordinal}" if self.turn_ordinal else "turn ?"
        return f"{self.agent} · run {self.run_id} · {turn} ({self.how})"

    def to_dict(self) -> dict[str, Any]:
        """The view as one JSON-ready object.

        ``markers`` maps each marker's name to ms from ``origin`` (``null``: not
        observed; ``marker_notes`` says why), ``requests`` is a list of
        :meth:`RequestRow.to_dict` (``null`` without the observer, ``requests_note``
        says why), ``record`` holds the nine DESIGN §10 fields.
        """
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "turn_ordinal": self.turn_ordinal,
            "how": self.how,
            "status": self.status,
            "timing_unavailable_reason": self.timing_unavailable_reason,
            "origin": self.origin,
            "markers": {m.name: m.at_ms for m in self.markers},
            "marker_notes": {m.name: m.note for m in self.markers if m.note is not None},
            "segments": dict(self.segments),
            "observer_status": self.observer_status,
            "requests": None
            if self.requests is None
            else [r.to_dict() for r in self.requests],
            "requests_note": self.requests_note,
            "record": dict(self.record_fields),
        }


# --- building the view --------------------------------------------------------------------


def _how(record: RunRecord) -> str:
    if record.process_reused:
        return "process_reused"
    return "resumed" if record.session_resumed else "fresh"


def _markers(times: MarkerTimes | None, *, reused: bool) -> tuple[str | None, list[MarkerRow]]:
    """The origin's name and the marker rows, in the contract's order."""
    if times is None:
        names = [Marker.PROCESS_SPAWNED, Marker.CLI_READY, Marker.SESSION_INIT_DONE,
                 Marker.FIRST_TOKEN]
        return None, [MarkerRow(n.value, None, NOT_STORED) for n in names] + [
            MarkerRow(END, None, NOT_STORED)
        ]

    def at(t_ns: int | None, note: str = NOT_OBSERVED) -> MarkerRow:
        ms = None if t_ns is None else ns_to_ms(t_ns - times.start_ns)
        return MarkerRow("", ms, note if ms is None else None)

    rows: list[MarkerRow] = []
    if reused:
        # A reused process's turn starts at its prompt; the process was set up before it.
        origin = Marker.PROMPT_SENT.value
        rows.append(MarkerRow(Marker.PROCESS_SPAWNED.value, None, "earlier (reused process)"))
        rows.append(MarkerRow(Marker.PROMPT_SENT.value, 0.0, "turn start"))
        # A turn set up after its prompt (prompt_first) has a session set-up of its own;
        # a reused process's cliReady is its turn start by construction, never a reading.
        for name, t_ns, own in (
            (Marker.CLI_READY, times.cli_ready_ns, False),
            (Marker.SESSION_INIT_DONE, times.session_init_done_ns, times.prompt_first),
        ):
            if own or (t_ns is not None and t_ns != times.start_ns):
                rows.append(attrs.evolve(at(t_ns), name=name.value))
            else:
                rows.append(MarkerRow(name.value, None, _REUSED))
    else:
        origin = Marker.PROCESS_SPAWNED.value
        rows.append(MarkerRow(origin, 0.0))
        rows.append(attrs.evolve(at(times.cli_ready_ns), name=Marker.CLI_READY.value))
        rows.append(attrs.evolve(at(times.session_init_done_ns),
                                 name=Marker.SESSION_INIT_DONE.value))
        if times.prompt_sent_ns is not None:  # stream agents have their prompt on argv
            rows.append(attrs.evolve(at(times.prompt_sent_ns), name=Marker.PROMPT_SENT.value))
    rows.append(attrs.evolve(at(times.first_token_ns), name=Marker.FIRST_TOKEN.value))
    rows.append(attrs.evolve(at(times.end_ns), name=END))
    return origin, rows


def _requests_note(record: RunRecord, requests: Sequence[ModelRequest] | None) -> str | None:
    if requests is not None:
        return None
    if record.observer_status is ObserverStatus.OFF:
        return OBSERVER_OFF
    if record.observer_status is ObserverStatus.FAILED:
        why = f": {record.observer_error}" if record.observer_error else ""
        return f"observer failed{why}; no model requests were seen"
    return "the observer was on, but no model requests were stored with this run"


def _request_row(request: ModelRequest, origin_ns: int, *, first: bool) -> RequestRow:
    def ms(t_ns: int | None) -> float | None:
        return None if t_ns is None else ns_to_ms(t_ns - origin_ns)

    usage = request.usage
    return RequestRow(
        request_id=request.request_id,
        api=request.api,
        kind=request.kind.value,
        model=request.model,
        status=request.status,
        start_ms=ns_to_ms(request.arrival_ns - origin_ns),
        first_byte_ms=ms(request.first_content_ns),
        end_ms=ms(request.end_ns),
        request_bytes=request.request_bytes,
        input_tokens=None if usage is None else usage.input_tokens,
        cache_read_tokens=None if usage is None else usage.cache_read_tokens,
        cache_write_tokens=None if usage is None else usage.cache_write_tokens,
        uncached_tokens=None if usage is None else usage.uncached_tokens,
        output_tokens=None if usage is None else usage.output_tokens,
        first_generation=first,
    )


def build_view(
    record: RunRecord,
    times: MarkerTimes | None,
    requests: Sequence[ModelRequest] | None,
) -> WaterfallView:
    """The waterfall of one run, every time in ms from its origin (pure).

    Args:
        record: The run's ``run_finished`` record.
        times: Its marker times (monotonic ns), ``None`` if the store has none.
        requests: Its model requests (same monotonic clock), ``None`` when the observer
            was off.

    Returns:
        The view; requests in order of arrival.
    """
    origin, markers = _markers(times, reused=record.process_reused)
    ordered = sorted(requests or (), key=lambda r: (r.arrival_ns, r.request_id))
    origin_ns: int | None = None if times is None else times.start_ns
    if origin_ns is None and ordered:
        origin, origin_ns = "first model request", ordered[0].arrival_ns
    first = next((r for r in ordered if r.kind is RequestKind.GENERATION), None)
    rows = (
        None
        if requests is None or origin_ns is None
        else tuple(_request_row(r, origin_ns, first=r is first) for r in ordered)
    )
    data = record.to_dict()
    return WaterfallView(
        run_id=record.run_id,
        agent=record.agent,
        turn_ordinal=record.turn_ordinal,
        how=_how(record),
        status=record.status.value,
        timing_unavailable_reason=None
        if record.timing_unavailable_reason is None
        else record.timing_unavailable_reason.value,
        origin=origin,
        markers=tuple(markers),
        segments={name: data[name] for name in SEGMENTS},
        observer_status=record.observer_status.value,
        requests=rows,
        requests_note=_requests_note(record, requests),
        record_fields={name: data[name] for name in RECORD_FIELDS},
    )


def find_run(store: Store, run_id: str) -> RunRecord:
    """The stored run whose id is ``run_id``, or the only one whose id starts with it.

    Raises:
        ConfigError: No run matches, or several do (the message says what to do).
        StoreError: The store cannot be read.
    """
    wanted = run_id.strip().lower()
    if not wanted:
        raise ConfigError("give a run id (or the start of one); `ttft-probe runs` lists them")
    matches = store.find(wanted)
    exact = [r for r in matches if r.run_id.lower() == wanted]
    if exact:
        return exact[0]
    if not matches:
        raise ConfigError(f"no run {run_id}… in {store.path}; `ttft-probe runs` lists them "
                          "(or point --store at another store)")
    if len(matches) > 1:
        shown = ", ".join(r.run_id for r in matches[:3]) + (", …" if len(matches) > 3 else "")
        count = f"{len(matches)}" if len(matches) <= 3 else "more than 3"
        raise ConfigError(f"{count} runs start with {run_id} ({shown}): give more of "
                          "the run id; `ttft-probe runs` lists them")
    return matches[0]


def load_view(store: Store, run_id: str) -> WaterfallView:
    """:func:`build_view` of the run ``run_id`` (or a unique prefix of it) in ``store``.

    Raises:
        ConfigError: No run or several runs match ``run_id``.
        StoreError: The store cannot be read.
    """
    record = find_run(store, run_id)
    return build_view(record, store.marker_times(record.run_id), store.requests(record.run_id))


# --- the terminal ------------------------------------------------------------------------

BAR_WIDTH: Final = 40
"""Columns of the proportional timeline in the terminal table."""
_WAIT, _STREAM, _WHOLE, _MARK = "█", "░", "▒", "┃"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _kib(value: int | None) -> str:
    return "—" if value is None else f"{value / _KIB:,.1f}"


class _Axis:
    """Maps ms on the view's common axis to a column of a ``width``-column bar."""

    def __init__(self, low: float, high: float, width: int) -> None:
        self.low, self.high, self.width = low, high, width

    def col(self, ms: float) -> int:
        return round((ms - self.low) / (self.high - self.low) * (self.width - 1))

    def marker(self, at_ms: float) -> str:
        return " " * self.col(at_ms) + _MARK

    def request(self, row: RequestRow) -> str:
        """Spaces, then ``█`` up to the first byte and ``░`` on to the end (``▒``: no byte)."""
        start = self.col(row.start_ms)
        known = [v for v in (row.first_byte_ms, row.end_ms) if v is not None]
        end = max([start, *(self.col(v) for v in known)])
        if row.first_byte_ms is None:
            return " " * start + _WHOLE * (end - start + 1)
        waited = max(self.col(row.first_byte_ms) - start, 1)
        return " " * start + _WAIT * waited + _STREAM * max(end - start + 1 - waited, 0)


def _axis_header(low: float, high: float, width: int) -> str:
    left, right = f"{low:,.0f}", f"{high:,.0f} ms"
    return left + " " * max(width - len(left) - len(right), 1) + right


def _prefix_line(view: WaterfallView) -> str:
    fields = view.record_fields
    status, where, reused = (fields["prefix_status"], fields["prefix_break"],
                             fields["prefix_reused_bytes"])
    if status is None:
        off = view.observer_status == ObserverStatus.OFF
        return "prefix: not checked" + (" (observer off)" if off else "")
    reused_text = "" if reused is None else f" · {reused:,} bytes reused ({_kib(reused)} KiB)"
    meaning = {
        "stable": "the previous turn's first request is unchanged at the start of this one",
        "broken": f"everything from {where} on is no longer served from the prompt cache",
        "no_previous": "no earlier turn of this conversation was seen",
        "unavailable": "the observer read no generation request body",
    }.get(str(status), "")
    at = f" at {where}" if where is not None else ""
    return f"prefix: {status}{at}{reused_text} — {meaning}"


def _usage_line(view: WaterfallView) -> str:
    fields = view.record_fields
    first = view.first_generation
    head = "first generation request" + (f" (#{first.request_id})" if first else "")
    if view.requests is None and fields["first_request_input_tokens"] is None:
        off = view.observer_status == ObserverStatus.OFF
        return f"{head}: {NOT_OBSERVED}" + (" (observer off)" if off else "")
    total = fields["first_request_input_tokens"]
    read = fields["first_request_cache_read_tokens"]
    write = fields["first_request_cache_write_tokens"]
    uncached = fields["first_request_uncached_tokens"]
    parts = []
    if total is None:
        parts.append("the provider reported no input usage")
    else:
        parts.append(f"{total:,} input tokens = {_count(read)} cache read + "
                     f"{_count(uncached)} uncached")
        if write is not None:
            parts.append(f"{write:,} cache write")
        if read is not None and total:
            parts.append(f"{read / total:.1%} from the cache")
    if first is not None and first.output_tokens is not None:
        parts.append(f"{first.output_tokens:,} output tokens")
    if fields["first_request_bytes"] is not None:
        parts.append(f"{_kib(fields['first_request_bytes'])} KiB body")
    count = fields["model_request_count"]
    if count is not None:
        parts.append(f"{count} model request{'s' if count != 1 else ''} in the turn")
    return f"{head}: " + " · ".join(parts)


def _segments_line(view: WaterfallView) -> str:
    seg = view.segments
    parts = [f"{name.removesuffix('_ms')} {_ms(seg[name])}"
             for name in ("cli_ready_ms", "session_init_ms", "client_wait_ms",
                          "model_first_token_ms")]
    return (f"segments (ms): spawn_to_first_token {_ms(seg['spawn_to_first_token_ms'])} = "
            + " + ".join(parts))


_COLUMNS: Final = [
    ("#", "right"), ("kind / marker", "left"), ("model", "left"), ("status", "right"),
    ("start", "right"), ("first byte", "right"), ("end", "right"), ("KiB", "right"),
    ("input", "right"), ("cache read", "right"), ("cache write", "right"),
    ("uncached", "right"), ("output", "right"),
]


def waterfall_renderables(view: WaterfallView, *, width: int = BAR_WIDTH) -> list[RenderableType]:
    """The view for a rich console: header, segments, one table, prefix and usage lines.

    The table has a row per marker, then one per model request, each with a
    ``width``-column bar on the common axis (``┃`` a marker; ``█`` a request from its
    arrival to its first content byte, ``░`` on to its end, ``▒`` a request without a
    content byte). A marker that was not observed reads "not observed" (or why it has
    no value), never 0.
    """
    from rich.table import Table  # noqa: PLC0415 - rendering only
    from rich.text import Text  # noqa: PLC0415

    low, high = view.span_ms
    axis = _Axis(low, high, width)
    status = view.status + (f" ({view.timing_unavailable_reason})"
                            if view.timing_unavailable_reason else "")
    header = Text.assemble((view.title(), "bold"), f" · {status}")
    origin = view.origin or "the run's start"
    legend = f"timeline: {_ms(low)} → {_ms(high)} ms, {width} columns; {_MARK} marker"
    if view.requests:
        legend += (f" · {_WAIT} request to its first content byte · {_STREAM} on to its end · "
                   f"{_WHOLE} request without a content byte · * the turn's first generation "
                   "request")
    what = "markers and model requests" if view.requests else "markers"
    table = Table(title=f"{what}, ms from {origin}", title_justify="left", caption=legend,
                  caption_justify="left")
    # Without requests only the marker columns are filled: leave the others out.
    columns = _COLUMNS if view.requests else [("marker", "left"), ("at", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column(_axis_header(low, high, width), no_wrap=True, min_width=width)
    for i, m in enumerate(view.markers):
        bar = (Text(axis.marker(m.at_ms), style="bold")
               if m.at_ms is not None else Text(m.note or NOT_OBSERVED, style="dim"))
        cells = ["", m.name, "", "", _ms(m.at_ms), *[""] * 8] if view.requests else [
            m.name, _ms(m.at_ms)]
        table.add_row(*cells, bar, end_section=i == len(view.markers) - 1)
    for r in view.requests or ():
        table.add_row(
            str(r.request_id),
            r.kind + ("*" if r.first_generation else ""),
            r.model or "—",
            "—" if r.status is None else str(r.status),
            _ms(r.start_ms), _ms(r.first_byte_ms), _ms(r.end_ms),
            _kib(r.request_bytes),
            _count(r.input_tokens), _count(r.cache_read_tokens), _count(r.cache_write_tokens),
            _count(r.uncached_tokens), _count(r.output_tokens),
            Text(axis.request(r), style=KIND_COLOURS.get(r.kind, "")),
        )
    out: list[RenderableType] = [header, _segments_line(view), table]
    if view.requests is None:
        out.append(Text(view.requests_note or "no model requests are known for this run"))
    elif not view.requests:
        out.append(Text("the observer saw no model-bound request in this turn"))
    out += [Text(_prefix_line(view)), Text(_usage_line(view))]
    return out


# --- the chart ---------------------------------------------------------------------------

_INK: Final = "#222222"
_MUTED: Final = "#666666"


def waterfall_figure(view: WaterfallView) -> Figure:
    """The view as a Gantt-style matplotlib figure (object API: no pyplot state).

    One horizontal bar per request from its arrival to its end, coloured by kind, with a
    darker bar from its arrival to its first content byte; a dashed vertical line per
    observed marker, labelled; x in ms from the origin. Each request's bar has the
    ``gid`` ``request-<id>`` (its first-byte mark ``request-<id>-first-byte``), kept as
    the element id in SVG output.
    """
    from matplotlib.colors import to_rgb  # noqa: PLC0415 - matplotlib only for charts
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    from ttft_probe.analysis.chart import style_axis  # noqa: PLC0415 - imports matplotlib

    rows = view.requests or ()
    fig = Figure(figsize=(12.0, 2.6 + 0.5 * max(len(rows), 1)),
                 layout=ConstrainedLayoutEngine(h_pad=0.1, w_pad=0.1))
    fig.suptitle(view.title(), fontsize=13, fontweight="bold", color=_INK, x=0.01, ha="left")
    ax = fig.add_subplot()
    low, high = view.span_ms
    ax.set_xlim(low, high + 0.3 * (high - low))
    missing = [m.name for m in view.markers if m.note in {NOT_OBSERVED, NOT_STORED}]
    ax.set_xlabel(f"ms from {view.origin or 'the run start'}"
                  + (f" · not observed: {', '.join(missing)}" if missing else ""), fontsize=10)
    minimum = 0.003 * (high - low)  # so that an instant request is still a visible sliver
    for y, r in enumerate(rows):
        colour = KIND_COLOURS.get(r.kind, KIND_COLOURS[RequestKind.OTHER])
        end = max(v for v in (r.start_ms, r.first_byte_ms, r.end_ms) if v is not None)
        ax.barh(y, max(end - r.start_ms, minimum), left=r.start_ms, height=0.56, color=colour,
                alpha=0.45, edgecolor=colour, gid=f"request-{r.request_id}")
        if r.first_byte_ms is not None:
            dark = tuple(0.6 * c for c in to_rgb(colour))
            ax.barh(y, max(r.first_byte_ms - r.start_ms, minimum), left=r.start_ms,
                    height=0.56, color=dark, gid=f"request-{r.request_id}-first-byte")
        ax.annotate(_bar_label(r), (end, y), xytext=(5, 0), textcoords="offset points",
                    va="center", fontsize=8.5, color=_INK)
    if rows:
        ax.set_yticks(range(len(rows)),
                      [f"#{r.request_id} {r.kind}{'*' if r.first_generation else ''}\n"
                       f"{r.model or '—'}" for r in rows], fontsize=8.5)
        ax.set_ylim(len(rows) - 0.5, -0.9)  # first request on top, room for marker labels
    else:
        ax.set_yticks([])
        ax.set_ylim(0.5, -0.9)
        ax.text(0.5, 0.4, view.requests_note or "the observer saw no model-bound request",
                transform=ax.transAxes, ha="center", va="center", color=_MUTED, fontsize=11,
                bbox={"facecolor": "white", "edgecolor": "none"})
    observed = [(m.name, m.at_ms) for m in view.markers if m.at_ms is not None]
    for i, (name, at_ms) in enumerate(observed):
        ax.axvline(at_ms, color=_INK, linestyle="--", linewidth=0.9, alpha=0.7, zorder=0.8)
        # Alternate two heights so that labels of close markers do not overlap.
        ax.text(at_ms, -0.62 - 0.2 * (i % 2), f" {name} {at_ms:,.0f}", fontsize=8,
                color=_INK, va="center", ha="left")
    style_axis(ax)
    kinds = list(dict.fromkeys(r.kind for r in rows))
    handles = [Patch(facecolor=KIND_COLOURS.get(k, KIND_COLOURS[RequestKind.OTHER]), alpha=0.6,
                     label=k) for k in kinds]
    if any(r.first_byte_ms is not None for r in rows):
        handles.append(Patch(facecolor="#555555", label="darker: arrival → first content byte"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
                   frameon=False, fontsize=9)
    return fig


def _bar_label(r: RequestRow) -> str:
    parts = []
    if r.first_byte_ms is not None:
        parts.append(f"{r.first_byte_ms - r.start_ms:,.0f} ms to first byte")
    elif r.end_ms is not None:
        parts.append(f"{r.end_ms - r.start_ms:,.0f} ms")
    if r.uncached_tokens is not None:
        parts.append(f"{r.uncached_tokens:,} uncached")
    if r.cache_read_tokens is not None:  # 0 cached is the broken-cache case: shown
        parts.append(f"{r.cache_read_tokens:,} cached")
    if r.status is not None and r.status >= 400:
        parts.append(f"HTTP {r.status}")
    return " · ".join(parts)


def write_waterfall_chart(view: WaterfallView, path: str | os.PathLike[str]) -> Path:
    """Draw :func:`waterfall_figure` to ``path``: ``.png`` (150 dpi) or ``.svg`` by extension.

    Returns:
        The path written.

    Raises:
        ConfigError: The extension is not ``.png`` or ``.svg`` (checked before drawing).
        OSError: The file cannot be written.
    """
    out = Path(path)
    fmt = {".png": "png", ".svg": "svg"}.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"chart file {out.name!r}: use a .png or .svg name")
    from ttft_probe.analysis.chart import save_figure  # noqa: PLC0415 - matplotlib only here

    save_figure(waterfall_figure(view), out, fmt)
    return out
