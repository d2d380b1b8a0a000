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

**Why the model segment grows** (DESIGN §10, issue 14). With the provider observer a run
carries its first generation request's usage and prefix stability
(``first_request_*_tokens``, ``prefix_status``, ``prefix_break``). Each row has their
:class:`PromptCache` figures; each agent has its :class:`ContextCost`, the slope of
``model_first_token_ms`` on ``first_request_uncached_tokens``. Runs timed without the
observer have none of these fields: a cohort of them has no prompt-cache figure (not 0),
and :data:`NOT_OBSERVED` says why.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import attrs

from ttft_probe.record import RunRecord

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "FIT_MIN_DISTINCT",
    "FIT_MIN_RUNS",
    "METRICS",
    "NOT_OBSERVED",
    "NOT_SEPARATED",
    "CohortKey",
    "CohortRow",
    "ContextCost",
    "ContextPoint",
    "PromptCache",
    "Report",
    "Stats",
    "build_report",
    "cohort_of",
    "context_cost_of",
    "context_point",
    "fit_context_cost",
    "included",
    "init_separated",
    "measured",
    "message_granular",
    "observed",
    "percentile",
    "prompt_cache_of",
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

NOT_OBSERVED: Final = (
    "observer off: these runs were timed without --observe-provider, so the usage and the "
    "prefix of their first model request (first_request_*_tokens, prefix_status) were "
    "never read; run them with `ttft-probe run --observe-provider` to see uncached "
    "tokens, the cache-read share and prefix breaks"
)
"""Why a cohort has no prompt-cache figure, and the fix; shown wherever it is missing."""

FIT_MIN_RUNS: Final = 5
FIT_MIN_DISTINCT: Final = 3
"""Different uncached token counts a slope needs: with two, one point decides it."""
"""Fewest observed runs (with differing uncached tokens) a :class:`ContextCost` is fit on."""
BOOTSTRAP_RESAMPLES: Final = 2000
"""Resamples of the context-cost interval."""
BOOTSTRAP_SEED: Final = 0
"""Seed of the context-cost bootstrap (``random.Random``): the same runs, the same interval."""


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


def observed(record: RunRecord) -> bool:
    """Whether the provider observer watched the run (its request fields are filled).

    The observer sets ``model_request_count`` on every run it watched (0 when it saw no
    model request); without it the nine request fields of contract 1.2 are all null.
    """
    return record.model_request_count is not None


def _no_values() -> Stats:
    return Stats(n=0, p50=None, p90=None)


@attrs.frozen
class PromptCache:
    """A cohort's prompt-cache figures: its included runs' first generation requests.

    From the record fields the provider observer fills (DESIGN §10, issue 14); runs
    without the observer (:func:`observed` false) are left out, never counted as 0.

    Attributes:
        observed: Included runs the observer watched.
        uncached_tokens: Statistics of ``first_request_uncached_tokens`` (tokens: input
            minus cache read) over the observed runs that report it.
        share_runs: Observed runs reporting both ``first_request_input_tokens`` and
            ``first_request_cache_read_tokens``.
        cache_read_tokens: Sum of ``first_request_cache_read_tokens`` over those runs.
        input_tokens: Sum of ``first_request_input_tokens`` (cached included) over them.
        prefix_stable: Runs whose prefix was ``stable`` against the previous turn's.
        prefix_broken: Runs whose prefix was ``broken``.
        prefix_no_previous: Runs with no previous turn to compare with (``no_previous``).
        prefix_unavailable: Runs whose request body could not be read (``unavailable``).
        top_break: The section most broken runs name first (``prefix_break``, e.g.
            ``system[1]``); on a tie, the first in sorted order. ``None`` without breaks.
        top_break_runs: How many broken runs name ``top_break``.
    """

    observed: int = 0
    uncached_tokens: Stats = attrs.field(factory=_no_values)
    share_runs: int = 0
    cache_read_tokens: int = 0
    input_tokens: int = 0
    prefix_stable: int = 0
    prefix_broken: int = 0
    prefix_no_previous: int = 0
    prefix_unavailable: int = 0
    top_break: str | None = None
    top_break_runs: int = 0

    @property
    def cache_read_share(self) -> float | None:
        """Cache read / input tokens (0–1), pooled over the runs that report both.

        Token-weighted, as the provider bills and as the seed spec's "first-call cache
        hit ~21 %" counts: a 300-token turn weighs what its tokens weigh, not as much as
        a 30k-token one (a per-run share's median would). ``None`` without such runs
        or without input tokens.
        """
        if self.share_runs == 0 or self.input_tokens <= 0:
            return None
        return self.cache_read_tokens / self.input_tokens

    @property
    def break_rate(self) -> float | None:
        """``broken / (stable + broken)`` (0–1): how often a turn's cached prefix broke.

        Only turns that had a previous request to compare with count; ``None`` when none
        had (e.g. every turn 1).
        """
        compared = self.prefix_stable + self.prefix_broken
        return None if compared == 0 else self.prefix_broken / compared


def prompt_cache_of(records: Iterable[RunRecord]) -> PromptCache:
    """The :class:`PromptCache` of a cohort's runs (the included and observed ones)."""
    runs = [r for r in records if included(r) and observed(r)]
    both = [
        r
        for r in runs
        if r.first_request_input_tokens is not None
        and r.first_request_cache_read_tokens is not None
    ]
    statuses = [None if r.prefix_status is None else r.prefix_status.value for r in runs]
    breaks = sorted(
        r.prefix_break
        for r in runs
        if r.prefix_break is not None
        and r.prefix_status is not None
        and r.prefix_status.value == "broken"
    )
    top_break, top_runs = None, 0
    for section in breaks:  # sorted: a tie keeps the first section in order
        count = breaks.count(section)
        if count > top_runs:
            top_break, top_runs = section, count
    return PromptCache(
        observed=len(runs),
        uncached_tokens=stats_of(
            None
            if r.first_request_uncached_tokens is None
            else float(r.first_request_uncached_tokens)
            for r in runs
        ),
        share_runs=len(both),
        cache_read_tokens=sum(r.first_request_cache_read_tokens or 0 for r in both),
        input_tokens=sum(r.first_request_input_tokens or 0 for r in both),
        prefix_stable=statuses.count("stable"),
        prefix_broken=statuses.count("broken"),
        prefix_no_previous=statuses.count("no_previous"),
        prefix_unavailable=statuses.count("unavailable"),
        top_break=top_break,
        top_break_runs=top_runs,
    )


ContextPoint = tuple[int, float, bool]
"""One run of a context-cost fit: (``first_request_uncached_tokens``,
``model_first_token_ms``, whether the first token was a whole message)."""


def context_point(record: RunRecord) -> ContextPoint | None:
    """The run's point of the context-cost fit; ``None`` unless it is in the fit.

    In the fit: included runs with ``first_request_uncached_tokens`` (the observer's)
    and a measured ``model_first_token_ms``.
    """
    x = record.first_request_uncached_tokens
    y = measured(record, "model_first_token_ms")
    if not included(record) or x is None or y is None:
        return None
    return (x, y, message_granular(record))


@attrs.frozen
class ContextCost:
    """The cost of context for one agent: ms of model wait per 1,000 uncached tokens.

    The ordinary least-squares line ``model_first_token_ms = intercept_ms + slope ·
    first_request_uncached_tokens`` over the agent's runs in the fit
    (:func:`context_point`, every cohort together), with a 95 % pairs-bootstrap
    percentile interval of the slope (:data:`BOOTSTRAP_RESAMPLES` resamples of the runs
    with replacement, ``random.Random(BOOTSTRAP_SEED)``, the 2.5 % and 97.5 % type-7
    percentiles; resamples whose uncached tokens are all equal have no slope and are
    dropped; Efron & Tibshirani, *An Introduction to the Bootstrap*, §9.5 and §13.3).
    DESIGN §10: uncached input tokens are what the provider must process before its
    first token, so this slope is what a broken prompt cache costs per turn.

    Attributes:
        agent: The agent.
        n: Runs in the fit.
        slope_ms_per_1k: ms per 1,000 uncached input tokens; ``None`` when not fit.
        ci95_ms_per_1k: The 95 % interval of the slope, ``(low, high)``, same unit.
        intercept_ms: The line's ``model_first_token_ms`` at 0 uncached tokens.
        message_granular: Runs in the fit whose first token was a whole message: their
            ``model_first_token_ms`` is late by the message's generation time.
        reason: Why there is no slope (fewer than :data:`FIT_MIN_RUNS` runs, or no
            spread in uncached tokens); ``None`` when there is one.
    """

    agent: str
    n: int
    slope_ms_per_1k: float | None = None
    ci95_ms_per_1k: tuple[float, float] | None = None
    intercept_ms: float | None = None
    message_granular: int = 0
    reason: str | None = None


def _not_fit(n: int, *, distinct: int) -> str:
    why = f"needs ≥{FIT_MIN_RUNS} observed runs with differing uncached tokens, has {n}"
    if n >= 2 and distinct == 1:
        why += ", all with the same uncached tokens"
    elif n >= FIT_MIN_RUNS and distinct < FIT_MIN_DISTINCT:
        why += f" with only {distinct} different counts (≥{FIT_MIN_DISTINCT} needed)"
    if n == 0:
        why += "; time runs with `ttft-probe run --observe-provider`"
    return why


def fit_context_cost(agent: str, points: Iterable[ContextPoint]) -> ContextCost:
    """The :class:`ContextCost` of ``agent`` from its runs' points.

    The points are sorted first, so the slope and its interval depend on the set of
    runs only, not on the order a source returns them in: the local store and PostHog
    give the same numbers to the last bit.
    """
    ordered = sorted(points)
    n = len(ordered)
    late = sum(p[2] for p in ordered)
    xs = [float(p[0]) for p in ordered]
    distinct = len(set(xs))
    if n < FIT_MIN_RUNS or distinct < FIT_MIN_DISTINCT:
        reason = _not_fit(n, distinct=distinct)
        return ContextCost(agent=agent, n=n, message_granular=late, reason=reason)
    ys = [p[1] for p in ordered]
    mean_x = math.fsum(xs) / n
    mean_y = math.fsum(ys) / n
    # Centred on the means: the sums below stay small, so no cancellation.
    u = [x - mean_x for x in xs]
    v = [y - mean_y for y in ys]
    slope = math.fsum(a * b for a, b in zip(u, v, strict=True)) / math.fsum(a * a for a in u)
    uu = [a * a for a in u]
    uv = [a * b for a, b in zip(u, v, strict=True)]
    rng = random.Random(BOOTSTRAP_SEED)  # noqa: S311 - resampling, not cryptography
    population = range(n)
    slopes = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = rng.choices(population, k=n)
        # Sorted by x, the lowest and highest index hold the least and greatest x.
        if xs[min(pick)] == xs[max(pick)]:
            continue
        su = sum(map(u.__getitem__, pick))
        sv = sum(map(v.__getitem__, pick))
        sxx = sum(map(uu.__getitem__, pick)) - su * su / n
        sxy = sum(map(uv.__getitem__, pick)) - su * sv / n
        slopes.append(sxy / sxx)
    low = percentile(slopes, 0.025)
    high = percentile(slopes, 0.975)
    return ContextCost(
        agent=agent,
        n=n,
        slope_ms_per_1k=slope * 1000,
        ci95_ms_per_1k=None if low is None or high is None else (low * 1000, high * 1000),
        intercept_ms=mean_y - slope * mean_x,
        message_granular=late,
    )


def context_cost_of(records: Iterable[RunRecord]) -> tuple[ContextCost, ...]:
    """One :class:`ContextCost` per agent of ``records``, sorted by agent."""
    points: dict[str, list[ContextPoint]] = {}
    for record in records:
        mine = points.setdefault(record.agent, [])
        point = context_point(record)
        if point is not None:
            mine.append(point)
    return tuple(fit_context_cost(agent, points[agent]) for agent in sorted(points))


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
        prompt_cache: The prompt-cache figures of the runs the observer watched.
    """

    key: CohortKey
    runs: int
    excluded: int
    metrics: dict[str, Stats]
    session_init_share: Stats
    message_granular: int = 0
    prompt_cache: PromptCache = attrs.field(factory=PromptCache)


@attrs.frozen
class Report:
    """Rows sorted by cohort key; ``source`` names where the runs came from.

    ``context_cost`` has one :class:`ContextCost` per agent of the rows, sorted by agent.
    """

    rows: tuple[CohortRow, ...]
    source: str
    context_cost: tuple[ContextCost, ...] = ()


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
                prompt_cache=prompt_cache_of(good),
            )
        )
    everything = [r for runs in groups.values() for r in runs]
    return Report(rows=tuple(rows), source=source, context_cost=context_cost_of(everything))
