"""The report: which runs, and how they read — a table, JSON, and where runs come from.

The statistics themselves (cohorts, exclusion, percentiles) live in
:mod:`ttft_probe.analysis._model`; this module selects the runs of a window, loads them
from a source (the local store, or PostHog / Jaeger through
:mod:`ttft_probe.analysis.sources`), and renders a :class:`~ttft_probe.analysis._model.Report`
as rich tables (:func:`report_table`, then :func:`prompt_cache_tables`: the prompt cache
per cohort and the cost of context per agent, DESIGN §10) or as JSON
(:func:`report_to_json`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from ttft_probe.analysis._model import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    METRICS,
    NOT_OBSERVED,
    NOT_SEPARATED,
    CohortRow,
    ContextCost,
    PromptCache,
    Report,
    Stats,
    build_report,
)
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord

if TYPE_CHECKING:
    import os

    from rich.console import RenderableType
    from rich.table import Table

__all__ = [
    "SOURCES",
    "Source",
    "format_since",
    "load_runs",
    "parse_since",
    "prompt_cache_tables",
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
    cache = row.prompt_cache
    data["prompt_cache"] = _prompt_cache_json(cache) if cache.observed else None
    unobserved = row.runs - row.excluded - cache.observed
    if unobserved:
        data["not_observed"] = {"runs": unobserved, "reason": NOT_OBSERVED}
    return data


def _prompt_cache_json(cache: PromptCache) -> dict[str, Any]:
    top = cache.top_break
    return {
        "observed": cache.observed,
        "first_request_uncached_tokens": _stats_json(cache.uncached_tokens),
        "cache_read_share": cache.cache_read_share,
        "cache_read_tokens": cache.cache_read_tokens,
        "input_tokens": cache.input_tokens,
        "share_runs": cache.share_runs,
        "prefix": {
            "stable": cache.prefix_stable,
            "broken": cache.prefix_broken,
            "no_previous": cache.prefix_no_previous,
            "unavailable": cache.prefix_unavailable,
            "break_rate": cache.break_rate,
            "top_break": None if top is None else {"section": top, "runs": cache.top_break_runs},
        },
    }


def _context_cost_json(cost: ContextCost) -> dict[str, Any]:
    data: dict[str, Any] = {
        "agent": cost.agent,
        "runs": cost.n,
        "slope_ms_per_1k_uncached_tokens": cost.slope_ms_per_1k,
        "ci95_ms_per_1k_uncached_tokens": (
            None if cost.ci95_ms_per_1k is None else list(cost.ci95_ms_per_1k)
        ),
        "intercept_ms": cost.intercept_ms,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": BOOTSTRAP_SEED,
        "message_granular": cost.message_granular,
        "reason": cost.reason,
    }
    if cost.message_granular:
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

    Prompt cache (DESIGN §10; only from runs timed with ``--observe-provider``), per row::

        "prompt_cache": {"observed": 38,
                         "first_request_uncached_tokens": {"n": 38, "p50": 24512.0,
                                                           "p90": 30001.5},
                         "cache_read_share": 0.21, "cache_read_tokens": 250000,
                         "input_tokens": 1190476, "share_runs": 38,
                         "prefix": {"stable": 20, "broken": 10, "no_previous": 8,
                                    "unavailable": 0, "break_rate": 0.333,
                                    "top_break": {"section": "system[1]", "runs": 7}}}

    Tokens are counts; ``cache_read_share`` is cache read / input tokens pooled over the
    ``share_runs`` runs reporting both (0–1); ``break_rate`` is broken / (stable + broken)
    (``null`` when no turn had a previous one to compare). ``"prompt_cache": null`` when
    no included run was observed; ``"not_observed": {"runs": n, "reason": …}``
    (:data:`~ttft_probe.analysis._model.NOT_OBSERVED`) counts the included runs without
    the observer, which are never counted as 0.

    Top level, ``"context_cost"``: one entry per agent, the OLS slope of
    ``model_first_token_ms`` on ``first_request_uncached_tokens``
    (:class:`~ttft_probe.analysis._model.ContextCost`)::

        {"agent": "claude_code", "runs": 38,
         "slope_ms_per_1k_uncached_tokens": 49.7,
         "ci95_ms_per_1k_uncached_tokens": [44.1, 55.0], "intercept_ms": 402.3,
         "resamples": 2000, "seed": 0, "message_granular": 0, "reason": null}

    With too few runs the slope, interval and intercept are ``null`` and ``reason`` says
    what is missing.
    """
    return {
        "source": report.source,
        "rows": [_row_json(row) for row in report.rows],
        "context_cost": [_context_cost_json(cost) for cost in report.context_cost],
    }


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


_OBSERVER_OFF: Final = "[yellow]observer off[/]"
_DASH: Final = "[dim]—[/]"


def _tokens_pair(stats: Stats) -> str:
    if stats.p50 is None or stats.p90 is None:
        return _DASH
    return f"{stats.p50:,.0f} [dim]/[/] {stats.p90:,.0f}"


def _cache_cells(row: CohortRow) -> list[str]:
    """observed, uncached tokens, cache read, prefix broken, first break."""
    cache = row.prompt_cache
    included = row.runs - row.excluded
    if cache.observed == 0:
        return [_OBSERVER_OFF if included else _DASH, *[_DASH] * 4]
    observed = str(cache.observed)
    if cache.observed < included:
        observed += f" [dim]of {included}[/]"
    share = cache.cache_read_share
    share_cell = _DASH if share is None else f"{share:.0%}"
    rate = cache.break_rate
    compared = cache.prefix_stable + cache.prefix_broken
    if rate is not None:
        broken = f"{cache.prefix_broken} [dim]of {compared}[/] ({rate:.0%})"
    elif cache.prefix_no_previous:
        broken = "[dim]no previous turn[/]"
    else:
        broken = _DASH
    top = cache.top_break
    first = _DASH if top is None else f"{top} [dim]×{cache.top_break_runs}[/]"
    return [observed, _tokens_pair(cache.uncached_tokens), share_cell, broken, first]


def _cache_table(report: Report) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rendering only

    caption = [
        (
            "first generation request of each turn, read by --observe-provider; uncached = "
            "input − cache read tokens; cache read = cache read / input tokens over the "
            "observed runs"
        ),
        (
            "prefix broken = turns whose request changed a section the previous turn's "
            "request had (stable + broken turns compared); first break = the section most "
            "of them changed first"
        ),
    ]
    if any(row.runs - row.excluded > row.prompt_cache.observed for row in report.rows):
        caption.append(
            "observer off = timed without --observe-provider: no usage or prefix was "
            "read (not 0); rerun with `ttft-probe run --observe-provider`"
        )
    table = Table(
        title=f"Prompt cache ({report.source}) — why the model segment grows",
        title_justify="left",
        caption="\n".join(caption),
        caption_justify="left",
    )
    table.add_column("agent", style="bold")
    table.add_column("cohort")
    table.add_column("observed", justify="right")
    table.add_column("uncached tokens p50 / p90", justify="right")
    table.add_column("cache read", justify="right", style="magenta")
    table.add_column("prefix broken", justify="right")
    table.add_column("first break")
    previous = None
    for index, row in enumerate(report.rows):
        nxt = report.rows[index + 1].key.agent if index + 1 < len(report.rows) else None
        table.add_row(
            row.key.agent if row.key.agent != previous else "",
            row.key.label,
            *_cache_cells(row),
            end_section=nxt is not None and nxt != row.key.agent,
        )
        previous = row.key.agent
    return table


def _cost_table(report: Report) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rendering only

    caption = [
        (
            "OLS of model_first_token_ms on first_request_uncached_tokens over each agent's "
            f"observed runs; 95 % pairs-bootstrap interval ({BOOTSTRAP_RESAMPLES:,} "
            f"resamples, seed {BOOTSTRAP_SEED}); at 0 tokens = the line's intercept"
        )
    ]
    if any(cost.message_granular for cost in report.context_cost):
        caption.append(f"* {MESSAGE_LATE}")
    table = Table(
        title="Cost of context — ms of model wait per 1,000 uncached input tokens",
        title_justify="left",
        caption="\n".join(caption),
        caption_justify="left",
    )
    table.add_column("agent", style="bold")
    table.add_column("runs", justify="right")
    table.add_column("ms / 1k tokens", justify="right", style="bold")
    table.add_column("95 % interval", justify="right")
    table.add_column("at 0 tokens", justify="right")
    table.add_column("note", max_width=64, overflow="fold")
    for cost in report.context_cost:
        if cost.slope_ms_per_1k is None or cost.intercept_ms is None:
            reason = cost.reason or "no slope"
            table.add_row(cost.agent, str(cost.n), _DASH, _DASH, _DASH, f"[yellow]{reason}[/]")
            continue
        late = _MESSAGE_LATE if cost.message_granular else ""
        ci = cost.ci95_ms_per_1k
        interval = _DASH if ci is None else f"{ci[0]:,.1f} [dim]…[/] {ci[1]:,.1f}"
        table.add_row(
            cost.agent,
            str(cost.n),
            f"{cost.slope_ms_per_1k:,.1f}{late}",
            interval,
            f"{cost.intercept_ms:,.0f} ms",
            "",
        )
    return table


def prompt_cache_tables(report: Report) -> list[RenderableType]:
    """What to print under :func:`report_table`: why the model segment grows (DESIGN §10).

    A table per agent × cohort of the prompt cache (observed runs; p50 / p90 of
    ``first_request_uncached_tokens``; cache read / input tokens; how often the prefix
    broke, and the section most breaks start at), then a table per agent of the cost of
    context (:class:`~ttft_probe.analysis._model.ContextCost`). Cohorts timed without
    ``--observe-provider`` read "observer off", never 0. When no run in the report was
    observed, one line says so and names ``--observe-provider`` instead.
    """
    if not any(row.prompt_cache.observed for row in report.rows):
        if not report.rows:
            return []
        return [
            (
                "[dim]Prompt cache and cost of context: observer off — no run in the window "
                "was timed with --observe-provider, so no usage or prefix was read; rerun "
                "with `ttft-probe run --observe-provider`.[/]"
            )
        ]
    return [_cache_table(report), _cost_table(report)]
