"""The shapes every analysis shares: cohorts, percentile statistics, the report.

A report row is one agent × cohort: turn group (``"1"``, ``"2+"``, ``"?"`` when the
ordinal is unknown) × ``session_resumed`` × ``process_reused``. Runs that carry a
``timing_unavailable_reason`` or did not succeed are counted apart (``excluded``) and
never mixed into the percentiles. Every source (local store, PostHog, Jaeger) produces
the same :class:`Report` for the same runs.

Percentiles are exact and interpolated: linear interpolation between closest ranks
(Hyndman–Fan type 7, numpy's default, ClickHouse's ``quantileExactInclusive``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import attrs

from ttft_probe.record import RunRecord

__all__ = [
    "METRICS",
    "CohortKey",
    "CohortRow",
    "Report",
    "Stats",
    "build_report",
    "cohort_of",
    "included",
    "percentile",
    "session_init_share",
    "stats_of",
]

METRICS: Final = (
    "spawn_to_first_token_ms",
    "cli_ready_ms",
    "session_init_ms",
    "client_wait_ms",
    "model_first_token_ms",
)
"""The segments a report gives p50/p90 of, in ms; plus ``session_init_share`` (0–1)."""

TurnGroup = Literal["1", "2+", "?"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0–1) of ``values``, interpolated (type 7); ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@attrs.frozen
class Stats:
    """Count, p50 and p90 of one metric over a cohort's included runs."""

    n: int
    p50: float | None
    p90: float | None


def stats_of(values: Iterable[float | None]) -> Stats:
    """:class:`Stats` of the non-``None`` values."""
    present = [v for v in values if v is not None]
    return Stats(n=len(present), p50=percentile(present, 0.5), p90=percentile(present, 0.9))


@attrs.frozen(order=True)
class CohortKey:
    """agent × turn group × resumed × process reused."""

    agent: str
    turn: TurnGroup
    resumed: bool
    reused: bool

    @property
    def label(self) -> str:
        """Human label, e.g. ``turn 2+ · resumed``."""
        parts = [f"turn {self.turn}", "resumed" if self.resumed else "fresh"]
        if self.reused:
            parts.append("reused process")
        return " · ".join(parts)


def cohort_of(record: RunRecord) -> CohortKey:
    """The cohort a run belongs to."""
    ordinal = record.turn_ordinal
    turn: TurnGroup = "?" if ordinal is None else "1" if ordinal == 1 else "2+"
    return CohortKey(record.agent, turn, record.session_resumed, record.process_reused)


def included(record: RunRecord) -> bool:
    """Whether a run counts in the percentiles: succeeded, with a complete breakdown."""
    return record.status.value == "succeeded" and record.timing_unavailable_reason is None


def session_init_share(record: RunRecord) -> float | None:
    """``session_init_ms / spawn_to_first_token_ms`` (0–1), ``None`` when undefined."""
    total = record.spawn_to_first_token_ms
    init = record.session_init_ms
    if total is None or init is None or total <= 0:
        return None
    return init / total


@attrs.frozen
class CohortRow:
    """One report row: a cohort's counts and statistics.

    Attributes:
        key: The cohort.
        runs: Every run of the cohort in the window.
        excluded: Runs left out of the statistics (failed, or with a
            ``timing_unavailable_reason``).
        metrics: :data:`METRICS` name → statistics in ms.
        session_init_share: Statistics of ``session_init_ms / spawn_to_first_token_ms``.
    """

    key: CohortKey
    runs: int
    excluded: int
    metrics: dict[str, Stats]
    session_init_share: Stats


@attrs.frozen
class Report:
    """Rows sorted by cohort key; ``source`` names where the runs came from."""

    rows: tuple[CohortRow, ...]
    source: str


def build_report(records: Iterable[RunRecord], source: str) -> Report:
    """The report of ``records`` (already filtered to the window and agent)."""
    groups: dict[CohortKey, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(cohort_of(record), []).append(record)
    rows = []
    for key in sorted(groups):
        runs = groups[key]
        good = [r for r in runs if included(r)]
        rows.append(
            CohortRow(
                key=key,
                runs=len(runs),
                excluded=len(runs) - len(good),
                metrics={m: stats_of(getattr(r, m) for r in good) for m in METRICS},
                session_init_share=stats_of(session_init_share(r) for r in good),
            )
        )
    return Report(rows=tuple(rows), source=source)
