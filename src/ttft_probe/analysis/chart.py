"""The report as a picture: where the wait goes, and how much it varies.

One row per agent × cohort. Left: the p50 of each segment as a stacked horizontal bar
(``cli_ready``, ``session_init``, ``client_wait``, ``model_first_token``) with the p50
of ``spawn_to_first_token_ms`` marked and labelled — the p50s of the parts do not add up
to the p50 of the whole, so the marker is measured, not summed. What is not a plain
measurement is drawn so: a cohort that did not separate its session set-up has no
``session_init`` bar and a hatched ``cli_ready`` bar labelled boot + session set-up; a
cohort whose first tokens were whole messages has a dotted ``model_first_token`` bar.
Right: the distribution of ``spawn_to_first_token_ms`` (box: quartiles, whiskers 5–95 %;
dots: every run).

matplotlib is imported only here, and only its object API (``Figure``) is used, so
drawing never touches pyplot's global state or the user's backend; the file is rendered
by Agg (PNG) or the SVG backend, chosen by the file's extension.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ttft_probe.analysis._model import (
    CohortKey,
    CohortRow,
    Report,
    cohort_of,
    included,
    percentile,
)
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord

__all__ = ["FORMATS", "SEGMENT_COLOURS", "save_figure", "style_axis", "write_chart"]

FORMATS: Final = {".png": "png", ".svg": "svg"}
"""File extensions :func:`write_chart` understands, and the format each one selects."""

SEGMENT_COLOURS: Final = {
    # Okabe–Ito: distinguishable with the common colour-vision deficiencies.
    "cli_ready_ms": "#56B4E9",
    "session_init_ms": "#D55E00",
    "client_wait_ms": "#BBBBBB",
    "model_first_token_ms": "#009E73",
}
"""Colour of each segment in the stacked bars."""

_LABELS: Final = {
    "cli_ready_ms": "cli_ready (CLI boot)",
    "session_init_ms": "session_init (create / resume session)",
    "client_wait_ms": "client_wait (client to prompt)",
    "model_first_token_ms": "model_first_token (provider)",
}
_BOOT_AND_INIT: Final = "cli_ready (boot + session set-up: init not separated)"
_MESSAGE_LATE: Final = "model_first_token (whole message: late by its generation)"
_HATCHES: Final = {_BOOT_AND_INIT: "///", _MESSAGE_LATE: "..."}
_INK: Final = "#222222"
_MUTED: Final = "#666666"


def _row_label(key: CohortKey, runs: int, excluded: int, *, agents: int) -> str:
    head = f"{key.agent}\n{key.label}" if agents > 1 else key.label
    tail = f"n = {runs - excluded}" + (f" · {excluded} excluded" if excluded else "")
    return f"{head}\n{tail}"


def write_chart(
    report: Report,
    records: Sequence[RunRecord] | None,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw ``report`` (and the per-run distribution from ``records``) to ``path``.

    Args:
        report: The report to draw; one row per cohort.
        records: The runs the report was built from, for the distribution panel;
            ``None`` (an aggregated source) leaves that panel with a note.
        path: Output file; ``.png`` (150 dpi) or ``.svg`` by extension.
        title: Figure title (default: names the source).

    Returns:
        The path written.

    Raises:
        ConfigError: The extension is not ``.png`` or ``.svg``.
        OSError: The file cannot be written.
    """
    out = Path(path)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"chart file {out.name!r}: use a .png or .svg name")

    rows = list(report.rows)
    height = 1.9 + 0.95 * max(len(rows), 1)
    fig = Figure(figsize=(13.0, height), layout=ConstrainedLayoutEngine(h_pad=0.12, w_pad=0.12))
    fig.suptitle(
        title or "Where the wait before the first token goes",
        fontsize=15,
        fontweight="bold",
        color=_INK,
        x=0.01,
        ha="left",
    )
    if not rows:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No runs in the window.", ha="center", va="center", fontsize=13)
        save_figure(fig, out, fmt)
        return out

    values = None if records is None else _values_by_cohort(records)
    xmax = _x_extent(rows, values)
    bars, dist = fig.subplots(1, 2, sharey=True, sharex=True, width_ratios=[1.3, 1.0])
    bars.set_xlim(0, xmax)
    used = _draw_bars(bars, rows, xmax)
    bars.set_title(
        "Median breakdown: p50 of each segment, stacked; % = session_init share",
        fontsize=11,
        color=_MUTED,
        loc="left",
    )
    bars.set_xlabel("ms (p50 per segment)", fontsize=10)
    dist.set_title(
        "Spread: spawn → first token of every run", fontsize=11, color=_MUTED, loc="left"
    )
    dist.set_xlabel("spawn_to_first_token_ms, ms (box 25–75 %, whiskers 5–95 %)", fontsize=10)
    if values is None:
        dist.text(
            0.5,
            0.5,
            "per-run values are not available\nfrom this source",
            transform=dist.transAxes,
            ha="center",
            va="center",
            color=_MUTED,
        )
    else:
        _draw_distribution(dist, rows, values)
    agents = len({row.key.agent for row in rows})
    bars.set_yticks(
        range(len(rows)),
        [_row_label(r.key, r.runs, r.excluded, agents=agents) for r in rows],
        fontsize=9.5,
    )
    bars.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    for ax in (bars, dist):
        style_axis(ax)
    dist.tick_params(axis="y", labelleft=False)
    handles: list[Patch | Line2D] = [
        Patch(
            facecolor=SEGMENT_COLOURS.get(m, SEGMENT_COLOURS["cli_ready_ms"])
            if m != _MESSAGE_LATE
            else SEGMENT_COLOURS["model_first_token_ms"],
            hatch=_HATCHES.get(m),
            edgecolor="white",
            label=_LABELS.get(m, m),
        )
        for m in used
    ]
    handles.append(Line2D([], [], color=_INK, linewidth=2.4, label="p50 spawn → first token"))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=9.5
    )
    save_figure(fig, out, fmt)
    return out


def _values_by_cohort(records: Sequence[RunRecord]) -> dict[CohortKey, list[float]]:
    """``spawn_to_first_token_ms`` of the included runs, per cohort, sorted."""
    values: dict[CohortKey, list[float]] = {}
    for record in records:
        if included(record) and record.spawn_to_first_token_ms is not None:
            values.setdefault(cohort_of(record), []).append(record.spawn_to_first_token_ms)
    return {key: sorted(v) for key, v in values.items()}


def _x_extent(rows: Sequence[CohortRow], values: dict[CohortKey, list[float]] | None) -> float:
    """One ms scale for both panels: the widest bar or run, plus room for labels."""
    widest = 0.0
    for row in rows:
        stacked = sum(
            s.p50 for m in SEGMENT_COLOURS if (s := row.metrics.get(m)) and s.p50 is not None
        )
        total = row.metrics.get("spawn_to_first_token_ms")
        widest = max(widest, stacked, total.p50 if total and total.p50 is not None else 0.0)
    for v in (values or {}).values():
        widest = max(widest, v[-1])
    return widest * 1.18 if widest > 0 else 1.0


def _legend_key(row: CohortRow, metric: str) -> str:
    """The legend entry of a segment bar: its own, or what makes it no plain measurement."""
    if metric == "cli_ready_ms" and not row.key.separated:
        return _BOOT_AND_INIT
    if metric == "model_first_token_ms" and row.message_granular:
        return _MESSAGE_LATE
    return metric


def _draw_bars(ax: Axes, rows: Sequence[CohortRow], xmax: float) -> list[str]:
    """(a) p50 segments stacked, p50 spawn-to-first-token marked; the legend keys drawn."""
    used: list[str] = []
    for y, row in enumerate(rows):
        left = 0.0
        for metric, colour in SEGMENT_COLOURS.items():
            stats = row.metrics.get(metric)
            value = stats.p50 if stats is not None else None
            if not value:
                continue
            key = _legend_key(row, metric)
            if key not in used:
                used.append(key)
            ax.barh(
                y,
                value,
                left=left,
                height=0.62,
                color=colour,
                edgecolor="white",
                linewidth=0.8,
                hatch=_HATCHES.get(key),
            )
            if value >= 0.05 * xmax:
                text = f"{value:,.0f}"
                share = row.session_init_share.p50
                if metric == "session_init_ms" and share is not None:
                    text += f"\n{share:.0%}"
                ink = _INK if metric in {"cli_ready_ms", "client_wait_ms"} else "white"
                ax.text(
                    left + value / 2,
                    y,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color=ink,
                    fontweight="bold",
                    linespacing=1.05,
                )
            left += value
        total = row.metrics.get("spawn_to_first_token_ms")
        if total is not None and total.p50 is not None:
            ax.plot(
                [total.p50, total.p50],
                [y - 0.42, y + 0.42],
                color=_INK,
                linewidth=2.4,
                solid_capstyle="butt",
            )
            ax.annotate(
                f"{total.p50:,.0f} ms",
                (max(total.p50, left), y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=10.5,
                fontweight="bold",
                color=_INK,
            )
    order = [*SEGMENT_COLOURS, _BOOT_AND_INIT, _MESSAGE_LATE]
    return sorted(used, key=order.index)


def _draw_distribution(
    ax: Axes, rows: Sequence[CohortRow], values: dict[CohortKey, list[float]]
) -> None:
    """(b) box (quartiles, 5–95 % whiskers) and every run as a dot, per cohort."""
    present = [(y, values[row.key]) for y, row in enumerate(rows) if values.get(row.key)]
    if not present:
        return
    ax.boxplot(
        [d for _, d in present],
        positions=[y for y, _ in present],
        orientation="horizontal",
        widths=0.5,
        whis=(5, 95),
        showfliers=False,
        patch_artist=True,
        manage_ticks=False,
        boxprops={"facecolor": "#F4F4F4", "edgecolor": _MUTED},
        medianprops={"color": _INK, "linewidth": 2.4},
        whiskerprops={"color": _MUTED},
        capprops={"color": _MUTED},
    )
    for y, d in present:
        # Deterministic jitter: spread the dots by rank, not by a random draw.
        offsets = [((i * 0.618034) % 1.0 - 0.5) * 0.5 for i in range(len(d))]
        ax.scatter(
            d, [y + o for o in offsets], s=9, color="#0072B2", alpha=0.4, linewidths=0, zorder=3
        )
        p90 = percentile(d, 0.9)
        if p90 is not None:
            ax.annotate(
                f"p90 {p90:,.0f}",
                (d[-1], y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
                color=_MUTED,
            )


def style_axis(ax: Axes) -> None:
    """Give ``ax`` the charts' look: a light x grid behind, ms ticks, only the bottom spine."""
    ax.grid(axis="x", color="#E4E4E4", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", length=0)
    ax.xaxis.set_major_formatter("{x:,.0f}")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def save_figure(fig: Figure, out: Path, fmt: str) -> None:
    """Write ``fig`` to ``out`` as ``fmt`` (``png`` at 150 dpi, or ``svg``) on white.

    Without the date or software stamps that would make two runs' files differ.
    """
    metadata: dict[str, str | None] = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(out, format=fmt, dpi=150, metadata=metadata, facecolor="white")
