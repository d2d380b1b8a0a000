"""The report: which runs, and how they read — a table, JSON, and where runs come from.

The statistics themselves (cohorts, exclusion, percentiles) live in
:mod:`ttft_probe.analysis._model`; this module selects the runs of a window, loads them
from a source (the local store, or PostHog / Jaeger through
:mod:`ttft_probe.analysis.sources`), and renders a :class:`~ttft_probe.analysis._model.Report`
as a rich table (:func:`report_table`) or as JSON (:func:`report_to_json`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from ttft_probe.analysis._model import (
    METRICS,
    NOT_SEPARATED,
    CohortRow,
    Report,
    Stats,
    build_report,
)
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord

if TYPE_CHECKING:
    import os

    from rich.table import Table

__all__ = [
    "SOURCES",
    "Source",
    "format_since",
    "load_runs",
    "parse_since",
    "report_table",
    "report_to_json",
    "select",
    "started_at_of",
]

Source = Literal["local", "posthog", "jaeger"]
SOURCES: Final = ("local", "posthog", "jaeger")
"""Where runs can come from; ``local`` is the SQLite store and needs no configuration."""

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNIT_S: Final = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_SHORT: Final = {
    "spawn_to_first_token_ms": "first token",
    "cli_ready_ms": "cli_ready",
    "session_init_ms": "session_init",
    "client_wait_ms": "client_wait",
    "model_first_token_ms": "model",
}


def parse_since(text: str) -> timedelta | None:
    """A window length such as ``30m``, ``12h``, ``7d``, ``2w``; ``all`` means no window.

    Raises:
        ConfigError: ``text`` is neither ``all`` nor a positive number with a unit
            ``m`` (minutes), ``h`` (hours), ``d`` (days) or ``w`` (weeks).
    """
    if text.strip().lower() == "all":
        return None
    match = _SINCE.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"--since {text!r}: give a positive length with a unit, e.g. 30m, 12h, 7d, 2w "
            "(or 'all' for every stored run)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def format_since(window: timedelta | None) -> str:
    """A window for display, in whole days, hours or minutes: ``7d``, ``12h``, ``all``."""
    if window is None:
        return "all"
    seconds = window.total_seconds()
    for unit in ("d", "h", "m"):
        count = seconds / _UNIT_S[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds / 60:g}m"


def started_at_of(record: RunRecord) -> datetime:
    """The run's ``started_at`` as an aware UTC datetime (naive stamps are taken as UTC)."""
    stamp = datetime.fromisoformat(record.started_at)
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC)


def select(
    records: Iterable[RunRecord],
    *,
    agent: str | None = None,
    since: timedelta | None = None,
    now: datetime,
) -> list[RunRecord]:
    """The runs of one agent (all agents when ``None``) that started in the window.

    The window is ``now - since <= started_at <= now`` on the UTC wall clock
    (``started_at``); with ``since=None`` there is no window. Order is kept.

    Raises:
        ConfigError: ``now`` is a naive datetime.
    """
    if now.tzinfo is None:
        raise ConfigError("select(now=...) needs an aware datetime, e.g. datetime.now(UTC)")
    low = None if since is None else now - since
    chosen = []
    for record in records:
        if agent is not None and record.agent != agent:
            continue
        if low is not None and not low <= started_at_of(record) <= now:
            continue
        chosen.append(record)
    return chosen


def load_runs(
    source: Source | str,
    *,
    agent: str | None,
    since: timedelta | None,
    now: datetime,
    store: str | os.PathLike[str] | None = None,
) -> tuple[Report, list[RunRecord] | None]:
    """The report of one agent's (or every agent's) runs in a window, from ``source``.

    ``local`` reads the SQLite store (``store``, default path when ``None``). ``posthog``
    and ``jaeger`` go through :func:`ttft_probe.analysis.sources.load`, configured by its
    environment variables.

    Returns:
        The report, and the per-run records when the source gives them (``None`` when it
        returns only aggregated cohorts).

    Raises:
        ConfigError: Unknown source, or the remote sources are not available.
        StoreError: The local store cannot be opened.
    """
    if source == "local":
        from ttft_probe.sinks.store import Store  # noqa: PLC0415 - only for the local source

        records = select(Store(store).last(), agent=agent, since=since, now=now)
        return build_report(records, "local"), records
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    try:
        # Imported by name: the remote sources are optional and may be absent.
        sources = importlib.import_module("ttft_probe.analysis.sources")
    except ImportError as exc:
        raise ConfigError(
            f"the {source} source is not available in this version of ttft-probe "
            f"(ttft_probe.analysis.sources: {exc}); use --source local"
        ) from exc
    loaded = sources.load(source, agent=agent, since=since, now=now)
    if isinstance(loaded, Report):
        return loaded, None
    records = select(list(loaded), agent=agent, since=since, now=now)
    return build_report(records, source), records


def _stats_json(stats: Stats) -> dict[str, Any]:
    return {"n": stats.n, "p50": stats.p50, "p90": stats.p90}


MESSAGE_LATE: Final = (
    "first token is a whole message: model_first_token_ms is late by the message's "
    "generation time (for Claude Code, add --include-partial-messages)"
)
"""What a flag on the model segment of a cohort with whole-message first tokens means."""


def _row_json(row: CohortRow) -> dict[str, Any]:
    separated = row.key.separated
    metrics: dict[str, Any] = {m: _stats_json(row.metrics[m]) for m in METRICS if m in row.metrics}
    data: dict[str, Any] = {
        "agent": row.key.agent,
        "turn": row.key.turn,
        "resumed": row.key.resumed,
        "reused": row.key.reused,
        "separated": separated,
        "cohort": row.key.label,
        "runs": row.runs,
        "excluded": row.excluded,
        "included": row.runs - row.excluded,
        "metrics": metrics,
        "session_init_share": _stats_json(row.session_init_share) if separated else None,
        "cli_ready_covers": "boot" if separated else "boot + session set-up",
        "message_granular": row.message_granular,
    }
    if not separated:
        metrics["session_init_ms"] = None
        data["not_separated"] = {"runs": row.runs - row.excluded, "reason": NOT_SEPARATED}
    if row.message_granular:
        data["model_first_token_note"] = MESSAGE_LATE
    return data


def report_to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data, rows in the report's (sorted) order.

    Shape::

        {"source": "local",
         "rows": [{"agent": "claude_code", "turn": "2+", "resumed": true, "reused": false,
                   "separated": true, "cohort": "turn 2+ · resumed", "runs": 40,
                   "excluded": 2, "included": 38,
                   "metrics": {"spawn_to_first_token_ms": {"n": 38, "p50": 1810.0,
                                                           "p90": 2400.5}, ...},
                   "session_init_share": {"n": 38, "p50": 0.41, "p90": 0.52},
                   "cli_ready_covers": "boot", "message_granular": 0}]}

    Durations are ms; ``session_init_share`` is a fraction (0–1); a statistic with no
    values is ``null``. A cohort that did not separate its session set-up
    (``"separated": false``) has ``session_init_ms`` and ``session_init_share`` ``null``,
    ``"cli_ready_covers": "boot + session set-up"`` and ``"not_separated": {"runs": n,
    "reason": …}`` (:data:`~ttft_probe.analysis._model.NOT_SEPARATED`). A cohort with
    whole-message first tokens counts them in ``message_granular`` and says what that
    means in ``model_first_token_note``.
    """
    return {"source": report.source, "rows": [_row_json(row) for row in report.rows]}


def _ms_pair(stats: Stats | None) -> str:
    if stats is None or stats.p50 is None or stats.p90 is None:
        return "[dim]—[/]"
    return f"{stats.p50:,.0f} [dim]/[/] {stats.p90:,.0f}"


def _share_pair(stats: Stats) -> str:
    if stats.p50 is None or stats.p90 is None:
        return "[dim]—[/]"
    return f"{stats.p50:.0%} [dim]/[/] {stats.p90:.0%}"


_NOT_SEPARATED_CELL: Final = "[yellow]not separated[/]"
_BOOT_AND_INIT: Final = "[yellow]†[/]"
_MESSAGE_LATE: Final = "[yellow]*[/]"


def _cells(row: CohortRow) -> list[str]:
    """The row's metric cells, each ``p50 / p90``, with what is not a measurement said."""
    cells = []
    for metric in METRICS:
        cell = _ms_pair(row.metrics.get(metric))
        if metric == "cli_ready_ms" and not row.key.separated:
            cell += _BOOT_AND_INIT
        elif metric == "session_init_ms" and not row.key.separated:
            cell = _NOT_SEPARATED_CELL
        elif metric == "model_first_token_ms" and row.message_granular:
            cell += _MESSAGE_LATE
        cells.append(cell)
    share = _share_pair(row.session_init_share) if row.key.separated else _NOT_SEPARATED_CELL
    return [*cells, share]


def report_table(report: Report, *, title: str | None = None) -> Table:
    """A rich table: one row per agent × cohort, each cell ``p50 / p90``.

    Columns: runs, excluded (failed or timing unavailable; never in the percentiles),
    the p50 / p90 in ms of ``spawn_to_first_token_ms`` and of each segment, and the
    ``session_init_ms`` share of spawn-to-first-token as %.
    """
    from rich.table import Table  # noqa: PLC0415 - rendering only

    caption = [
        (
            "excluded = failed, cancelled, timed out, or timing unavailable; counted apart, "
            "never in the percentiles"
        )
    ]
    if any(not row.key.separated for row in report.rows):
        caption.append(
            "† cli_ready is the CLI's boot and the session set-up together: session init "
            "not separated (timed without --observe-provider); rerun with "
            "`ttft-probe run --observe-provider` to split them"
        )
    if any(row.message_granular for row in report.rows):
        caption.append(f"* {MESSAGE_LATE}")
    table = Table(
        title=title or f"ttft-probe report ({report.source}) — p50 / p90, ms",
        title_justify="left",
        caption="\n".join(caption),
        caption_justify="left",
    )
    table.add_column("agent", style="bold")
    table.add_column("cohort")
    table.add_column("runs", justify="right")
    table.add_column("excluded", justify="right", style="yellow")
    for metric in METRICS:
        style = "bold" if metric == "spawn_to_first_token_ms" else None
        table.add_column(_SHORT[metric], justify="right", style=style)
    table.add_column("init share", justify="right", style="magenta")
    previous = None
    for index, row in enumerate(report.rows):
        nxt = report.rows[index + 1].key.agent if index + 1 < len(report.rows) else None
        table.add_row(
            row.key.agent if row.key.agent != previous else "",
            row.key.label,
            str(row.runs),
            str(row.excluded) if row.excluded else "[dim]0[/]",
            *_cells(row),
            end_section=nxt is not None and nxt != row.key.agent,
        )
        previous = row.key.agent
    return table
