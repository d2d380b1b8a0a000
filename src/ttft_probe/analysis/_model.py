"""The shapes every analysis shares: cohorts, percentile statistics, the report.

A report row is one agent × cohort: turn group (``"1"``, ``"2+"``, ``"?"`` when the
ordinal is unknown) × ``session_resumed`` × ``process_reused`` × whether the session
set-up was separated from the rest (see :func:`init_separated`). Runs that carry a
``timing_unavailable_reason`` or did not succeed are counted apart (``excluded``) and
never mixed into the percentiles. Every source (local store, PostHog, Jaeger) produces
the same :class:`Report` for the same runs.

**Only what was measured is a number** (DESIGN §8). A run whose ``sessionInitDone`` is
the agent's own init line (``session_init_source="init_message"``, no provider observer)
did not separate its session set-up: for a one-shot CLI the init line is the first line,
so ``session_init_ms`` is 0 by construction and the set-up is inside ``cli_ready_ms``.
Such runs form cohorts of their own whose ``session_init_ms`` and session-init share have
no values (``n`` 0), and whose ``cli_ready_ms`` is the boot and the session set-up
together; :data:`NOT_SEPARATED` says why and what to do.

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
    "NOT_SEPARATED",
    "CohortKey",
    "CohortRow",
    "Report",
    "Stats",
    "build_report",
    "cohort_of",
    "included",
    "init_separated",
    "measured",
    "message_granular",
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

NOT_SEPARATED: Final = (
    "session init not separated: these runs were timed without --observe-provider, so "
    "their session set-up ends at the agent's init line (session_init_source=init_message): "
    "a one-shot CLI prints it first, leaving session_init_ms 0 by construction and the "
    "set-up inside cli_ready_ms; run them with `ttft-probe run --observe-provider` to time "
    "the first model request"
)
"""Why a cohort has no session-init figure, and the fix; shown wherever it is missing."""


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
    """agent × turn group × resumed × process reused × session set-up separated.

    ``separated`` is ``False`` for the runs :func:`init_separated` rejects: their
    ``session_init_ms`` is not a measurement and their ``cli_ready_ms`` is the boot and
    the session set-up together.
    """

    agent: str
    turn: TurnGroup
    resumed: bool
    reused: bool
    separated: bool = True

    @property
    def label(self) -> str:
        """Human label, e.g. ``turn 2+ · resumed`` or ``turn 1 · fresh · init not separated``."""
        parts = [f"turn {self.turn}", "resumed" if self.resumed else "fresh"]
        if self.reused:
            parts.append("reused process")
        if not self.separated:
            parts.append("init not separated")
        return " · ".join(parts)


def init_separated(record: RunRecord) -> bool:
    """Whether the run timed its session set-up apart from the CLI's boot.

    ``False`` when ``sessionInitDone`` was the agent's own init line
    (``session_init_source == "init_message"``): see :data:`NOT_SEPARATED`. A model
    request (the observer), an ACP session result or a user regex separate it.
    """
    source = record.session_init_source
    return source is None or source.value != "init_message"


def message_granular(record: RunRecord) -> bool:
    """Whether the first token was a whole message (late by its generation time)."""
    granularity = record.first_token_granularity
    return granularity is not None and granularity.value == "message"


def cohort_of(record: RunRecord) -> CohortKey:
    """The cohort a run belongs to."""
    ordinal = record.turn_ordinal
    turn: TurnGroup = "?" if ordinal is None else "1" if ordinal == 1 else "2+"
    return CohortKey(
        record.agent, turn, record.session_resumed, record.process_reused, init_separated(record)
    )


def included(record: RunRecord) -> bool:
    """Whether a run counts in the percentiles: succeeded, with a complete breakdown."""
    return record.status.value == "succeeded" and record.timing_unavailable_reason is None


def session_init_share(record: RunRecord) -> float | None:
    """``session_init_ms / spawn_to_first_token_ms`` (0–1), ``None`` when undefined.

    ``None`` too when the session set-up was not separated (:func:`init_separated`).
    """
    total = record.spawn_to_first_token_ms
    init = measured(record, "session_init_ms")
    if total is None or init is None or total <= 0:
        return None
    return init / total


def measured(record: RunRecord, metric: str) -> float | None:
    """The run's value of ``metric`` (ms) if it is a measurement, else ``None``.

    ``session_init_ms`` of a run that did not separate its session set-up is not one.
    """
    if metric == "session_init_ms" and not init_separated(record):
        return None
    value: float | None = getattr(record, metric)
    return value


@attrs.frozen
class CohortRow:
    """One report row: a cohort's counts and statistics.

    Attributes:
        key: The cohort.
        runs: Every run of the cohort in the window.
        excluded: Runs left out of the statistics (failed, or with a
            ``timing_unavailable_reason``).
        metrics: :data:`METRICS` name → statistics in ms (``session_init_ms`` has no
            values when ``key.separated`` is ``False``).
        session_init_share: Statistics of ``session_init_ms / spawn_to_first_token_ms``.
        message_granular: Included runs whose first token was a whole message: their
            ``model_first_token_ms`` is late by the message's generation time.
    """

    key: CohortKey
    runs: int
    excluded: int
    metrics: dict[str, Stats]
    session_init_share: Stats
    message_granular: int = 0


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
                metrics={m: stats_of(measured(r, m) for r in good) for m in METRICS},
                session_init_share=stats_of(session_init_share(r) for r in good),
                message_granular=sum(message_granular(r) for r in good),
            )
        )
    return Report(rows=tuple(rows), source=source)
