"""The go/no-go gate (DESIGN §8): is session reuse worth building?

Population: succeeded runs with a complete breakdown (see
:func:`ttft_probe.analysis._model.included`) of one agent over a window, turn 2+ by
default (``turns="all"`` takes every turn, unknown ordinals included). Statistic: the
share ``session_init_ms / spawn_to_first_token_ms`` per run, its p50 and p90.

Runs that did not separate their session set-up (``session_init_source="init_message"``,
:func:`~ttft_probe.analysis._model.init_separated`) have no session-init share to decide
on: they are left out of the population and counted (``not_separated``).

The rule, in order (every threshold is a :class:`Thresholds` field; "≥" is inclusive):

0. ``not_separated`` — no run separated its session set-up, and some did not: the gate
   cannot tell session reuse from a warm pool; it names ``--observe-provider``.
1. ``insufficient_data`` — fewer than ``min_runs`` runs in the population.
2. ``session_reuse`` (GO) — p50 share ≥ ``p50_share`` (30 %) **or** p90 share ≥
   ``p90_share`` (40 %).
3. ``warm_process_pool`` — ``cli_ready_ms`` dominates: the p50 of
   ``cli_ready_ms / spawn_to_first_token_ms`` is ≥ ``cli_ready_share`` (50 %) **and**
   larger than the p50 of ``model_first_token_ms / spawn_to_first_token_ms``.
4. ``provider_side`` — otherwise: neither the session nor the CLI start-up is where the
   wait goes, so it is the model / provider.

From an aggregated source (a :class:`~ttft_probe.analysis._model.Report` without per-run
records) the population must be a single cohort row, and the cli_ready and model
shares are the ratios of the segments' p50 to the p50 of ``spawn_to_first_token_ms``.

When the production cut (PostHog) and a local A/B both exist, the production cut
decides and the A/B only sizes the effect: :func:`combine`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import attrs

from ttft_probe.analysis._model import (
    Report,
    Stats,
    cohort_of,
    included,
    init_separated,
    percentile,
    session_init_share,
    stats_of,
)
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord

__all__ = [
    "EXIT_CODES",
    "TOLERANCE",
    "AbEffect",
    "Decision",
    "Population",
    "Thresholds",
    "Turns",
    "Verdict",
    "combine",
    "decide",
    "gate_records",
    "gate_report",
    "population_of",
    "population_of_report",
    "run_gate",
]

Turns = Literal["2+", "all"]

TOLERANCE: Final = 1e-9
"""Shares within this of a threshold count as at it (float rounding of ms ratios)."""


class Decision(enum.StrEnum):
    """What the gate says to build next."""

    SESSION_REUSE = "session_reuse"
    WARM_PROCESS_POOL = "warm_process_pool"
    PROVIDER_SIDE = "provider_side"
    INSUFFICIENT_DATA = "insufficient_data"
    NOT_SEPARATED = "not_separated"


EXIT_CODES: Final = {
    Decision.SESSION_REUSE: 0,
    Decision.INSUFFICIENT_DATA: 3,
    Decision.NOT_SEPARATED: 4,
    Decision.WARM_PROCESS_POOL: 10,
    Decision.PROVIDER_SIDE: 11,
}
"""``ttft-probe gate`` exit code per decision (2 is a configuration error)."""


def _in_range(low: float, high: float) -> Any:
    def check(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
        if not low <= value <= high:
            raise ConfigError(f"{attr.name} must be between {low} and {high}, not {value}")

    return check


@attrs.frozen(kw_only=True)
class Thresholds:
    """The gate's thresholds; shares are fractions (0–1) of spawn-to-first-token."""

    p50_share: float = attrs.field(default=0.30, validator=_in_range(0, 1))
    p90_share: float = attrs.field(default=0.40, validator=_in_range(0, 1))
    cli_ready_share: float = attrs.field(default=0.50, validator=_in_range(0, 1))
    min_runs: int = attrs.field(default=20, validator=_in_range(1, float("inf")))


@attrs.frozen(kw_only=True)
class Population:
    """The numbers the gate decides on.

    Attributes:
        n: Runs in the population (succeeded, complete breakdown, positive total,
            session set-up separated).
        excluded: Runs of the agent, window and turns that were left out because they
            failed or lack a marker.
        not_separated: Succeeded, complete runs left out because their session set-up
            was not separated (no session-init figure to decide on).
        session_init_share: p50 / p90 of ``session_init_ms / spawn_to_first_token_ms``.
        cli_ready_share_p50: p50 of ``cli_ready_ms / spawn_to_first_token_ms``.
        model_share_p50: p50 of ``model_first_token_ms / spawn_to_first_token_ms``.
        spawn_to_first_token_p50_ms: p50 of ``spawn_to_first_token_ms`` (ms).
    """

    n: int
    excluded: int
    session_init_share: Stats
    cli_ready_share_p50: float | None
    model_share_p50: float | None
    spawn_to_first_token_p50_ms: float | None
    not_separated: int = 0


def _in_turns(record: RunRecord, turns: Turns) -> bool:
    return turns == "all" or cohort_of(record).turn == "2+"


def _share(part: float | None, total: float | None) -> float | None:
    if part is None or total is None or total <= 0:
        return None
    return part / total


def population_of(records: Iterable[RunRecord], *, turns: Turns = "2+") -> Population:
    """The population of ``records`` (already filtered to one agent and the window)."""
    chosen = [r for r in records if _in_turns(r, turns)]
    complete = [r for r in chosen if included(r)]
    unseparated = [r for r in complete if not init_separated(r)]
    good = [r for r in complete if init_separated(r) and session_init_share(r) is not None]
    cli = [_share(r.cli_ready_ms, r.spawn_to_first_token_ms) for r in good]
    model = [_share(r.model_first_token_ms, r.spawn_to_first_token_ms) for r in good]
    return Population(
        n=len(good),
        excluded=len(chosen) - len(good) - len(unseparated),
        not_separated=len(unseparated),
        session_init_share=stats_of(session_init_share(r) for r in good),
        cli_ready_share_p50=percentile([v for v in cli if v is not None], 0.5),
        model_share_p50=percentile([v for v in model if v is not None], 0.5),
        spawn_to_first_token_p50_ms=percentile(
            [r.spawn_to_first_token_ms for r in good if r.spawn_to_first_token_ms is not None],
            0.5,
        ),
    )


def population_of_report(report: Report, *, agent: str, turns: Turns = "2+") -> Population:
    """The population from an aggregated report (one cohort row must hold it all).

    Raises:
        ConfigError: The population spans several cohort rows, whose pooled percentiles
            cannot be recovered from per-cohort percentiles.
    """
    chosen = [
        row
        for row in report.rows
        if row.key.agent == agent and (turns == "all" or row.key.turn == "2+")
    ]
    rows = [row for row in chosen if row.key.separated]
    unseparated = sum(row.runs - row.excluded for row in chosen if not row.key.separated)
    excluded_elsewhere = sum(row.excluded for row in chosen if not row.key.separated)
    with_runs = [row for row in rows if row.runs - row.excluded > 0]
    if len(with_runs) > 1:
        labels = ", ".join(row.key.label for row in with_runs)
        raise ConfigError(
            f"the {report.source} source gave per-cohort percentiles for {len(with_runs)} "
            f"cohorts ({labels}); the gate needs one population — use a source with per-run "
            "records (local, jaeger)"
        )
    if not with_runs:
        return Population(
            n=0,
            excluded=sum(row.excluded for row in rows) + excluded_elsewhere,
            session_init_share=Stats(0, None, None),
            cli_ready_share_p50=None,
            model_share_p50=None,
            spawn_to_first_token_p50_ms=None,
            not_separated=unseparated,
        )
    (row,) = with_runs
    total = row.metrics.get("spawn_to_first_token_ms", Stats(0, None, None)).p50

    def ratio(metric: str) -> float | None:
        stats = row.metrics.get(metric)
        return None if stats is None else _share(stats.p50, total)

    return Population(
        n=row.session_init_share.n,
        excluded=sum(r.excluded for r in rows)
        + excluded_elsewhere
        + row.runs
        - row.excluded
        - row.session_init_share.n,
        session_init_share=row.session_init_share,
        cli_ready_share_p50=ratio("cli_ready_ms"),
        model_share_p50=ratio("model_first_token_ms"),
        spawn_to_first_token_p50_ms=total,
        not_separated=unseparated,
    )


@attrs.frozen(kw_only=True)
class AbEffect:
    """A local A/B result for one segment: paired differences with a 95 % CI.

    ``mean_diff_ms`` is the mean paired difference of ``segment`` in ms, signed so that
    positive is time session reuse would save (e.g. resumed − fresh ``session_init_ms``).
    """

    segment: str
    mean_diff_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n_pairs: int

    @property
    def significant(self) -> bool:
        """The 95 % CI lies entirely above zero: reuse would save real time."""
        return self.ci_low_ms > 0


@attrs.frozen(kw_only=True)
class Verdict:
    """The gate's answer and every number it used.

    Attributes:
        decision: What to build next.
        agent: The agent gated on.
        turns: ``"2+"`` or ``"all"``.
        window: The window length (``None``: every stored run).
        source: Where the runs came from (``local``, ``posthog``, ``jaeger``).
        population: The numbers decided on.
        thresholds: The thresholds applied.
        explanation: One paragraph naming the numbers.
        ab: The A/B effect added by :func:`combine`, if any.
    """

    decision: Decision
    agent: str
    turns: Turns
    window: timedelta | None
    source: str
    population: Population
    thresholds: Thresholds
    explanation: str
    ab: AbEffect | None = None

    @property
    def exit_code(self) -> int:
        """The ``ttft-probe gate`` exit code (:data:`EXIT_CODES`)."""
        return EXIT_CODES[self.decision]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: shares as fractions (0–1), durations in ms, window in seconds."""
        pop = self.population
        return {
            "verdict": self.decision.value,
            "exit_code": self.exit_code,
            "agent": self.agent,
            "turns": self.turns,
            "window_s": None if self.window is None else self.window.total_seconds(),
            "source": self.source,
            "n": pop.n,
            "excluded": pop.excluded,
            "not_separated": pop.not_separated,
            "session_init_share": {
                "p50": pop.session_init_share.p50,
                "p90": pop.session_init_share.p90,
            },
            "cli_ready_share_p50": pop.cli_ready_share_p50,
            "model_share_p50": pop.model_share_p50,
            "spawn_to_first_token_p50_ms": pop.spawn_to_first_token_p50_ms,
            "thresholds": attrs.asdict(self.thresholds),
            "ab": None if self.ab is None else attrs.asdict(self.ab),
            "explanation": self.explanation,
        }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _at_least(value: float | None, threshold: float) -> bool:
    return value is not None and value >= threshold - TOLERANCE


def _window_text(window: timedelta | None) -> str:
    if window is None:
        return "all stored runs"
    from ttft_probe.analysis.report import format_since  # noqa: PLC0415 - avoid a cycle

    return f"the last {format_since(window)}"


def decide(
    population: Population,
    *,
    agent: str,
    turns: Turns = "2+",
    window: timedelta | None,
    source: str,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Apply the rule of the module docstring to ``population``."""
    th = thresholds or Thresholds()
    pop = population
    p50, p90 = pop.session_init_share.p50, pop.session_init_share.p90
    turn_text = "turn 2+" if turns == "2+" else "all-turn"
    left_out = (
        f", {pop.not_separated} left out whose session init was not separated"
        if pop.not_separated
        else ""
    )
    who = (
        f"{pop.n} succeeded {agent} {turn_text} runs with complete timing "
        f"over {_window_text(window)} ({pop.excluded} excluded{left_out}, source {source})"
    )
    shares = f"session_init_ms is {_pct(p50)} of spawn-to-first-token at p50 and {_pct(p90)} at p90"
    limits = f"thresholds {_pct(th.p50_share)} at p50 or {_pct(th.p90_share)} at p90"
    observe = (
        f" Add --observe-provider to `ttft-probe run` for the {pop.not_separated} runs whose "
        "session set-up is not separated, and the gate can use them."
        if pop.not_separated
        else ""
    )
    if pop.n == 0 and pop.not_separated:
        decision = Decision.NOT_SEPARATED
        text = (
            f"Not separated: none of the {pop.not_separated} succeeded {agent} {turn_text} "
            f"runs over {_window_text(window)} (source {source}) separated its session "
            "set-up from the CLI's boot. They were timed without --observe-provider, so "
            "their session init ends at the agent's init line (for a one-shot CLI its first "
            "line: session_init_ms is 0 by construction and the set-up is inside "
            "cli_ready_ms). The gate cannot tell session reuse from a warm process pool "
            "from them. Rerun the agent under `ttft-probe run --observe-provider` (or "
            "Probe(observe_provider=True)) to time the first model request."
        )
    elif pop.n < th.min_runs:
        decision = Decision.INSUFFICIENT_DATA
        text = (
            f"Insufficient data: only {who}; the gate needs at least {th.min_runs}. "
            f"No decision — collect more runs or widen --since.{observe}"
        )
    elif _at_least(p50, th.p50_share) or _at_least(p90, th.p90_share):
        decision = Decision.SESSION_REUSE
        text = (
            f"GO for session reuse: over {who}, {shares}, at or above the {limits}. "
            f"Reusing sessions would remove that share of the wait.{observe}"
        )
    elif _at_least(pop.cli_ready_share_p50, th.cli_ready_share) and (
        pop.cli_ready_share_p50 or 0.0
    ) > (pop.model_share_p50 or 0.0):
        decision = Decision.WARM_PROCESS_POOL
        text = (
            f"No-go for session reuse, build a warm process pool: over {who}, {shares}, "
            f"below the {limits}; cli_ready_ms dominates at {_pct(pop.cli_ready_share_p50)} "
            f"at p50 (≥ {_pct(th.cli_ready_share)}, and above the model's "
            f"{_pct(pop.model_share_p50)}).{observe}"
        )
    else:
        decision = Decision.PROVIDER_SIDE
        text = (
            f"No-go for session reuse, the wait is on the provider side: over {who}, "
            f"{shares}, below the {limits}; cli_ready_ms is {_pct(pop.cli_ready_share_p50)} "
            f"at p50 (warm-pool threshold {_pct(th.cli_ready_share)}) against the model's "
            f"{_pct(pop.model_share_p50)}.{observe}"
        )
    return Verdict(
        decision=decision,
        agent=agent,
        turns=turns,
        window=window,
        source=source,
        population=pop,
        thresholds=th,
        explanation=text,
    )


def gate_records(
    records: Iterable[RunRecord],
    *,
    agent: str,
    turns: Turns = "2+",
    window: timedelta | None,
    source: str = "local",
    thresholds: Thresholds | None = None,
) -> Verdict:
    """The verdict for ``records`` already selected to ``agent`` and ``window``."""
    own = [r for r in records if r.agent == agent]
    return decide(
        population_of(own, turns=turns),
        agent=agent,
        turns=turns,
        window=window,
        source=source,
        thresholds=thresholds,
    )


def gate_report(
    report: Report,
    *,
    agent: str,
    turns: Turns = "2+",
    window: timedelta | None,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """The verdict for an aggregated report (the production cut from PostHog).

    Raises:
        ConfigError: See :func:`population_of_report`.
    """
    return decide(
        population_of_report(report, agent=agent, turns=turns),
        agent=agent,
        turns=turns,
        window=window,
        source=report.source,
        thresholds=thresholds,
    )


def run_gate(
    source: str = "local",
    *,
    agent: str = "claude_code",
    turns: Turns = "2+",
    window: timedelta | None = timedelta(days=7),
    now: datetime,
    thresholds: Thresholds | None = None,
    store: str | os.PathLike[str] | None = None,
) -> Verdict:
    """Load ``agent``'s runs of the window from ``source`` and decide.

    Raises:
        ConfigError: Unknown or unavailable source, or an aggregated source whose
            population spans several cohorts.
        StoreError: The local store cannot be opened.
    """
    from ttft_probe.analysis.report import load_runs  # noqa: PLC0415 - avoid a cycle

    report, records = load_runs(source, agent=agent, since=window, now=now, store=store)
    if records is None:
        return gate_report(report, agent=agent, turns=turns, window=window, thresholds=thresholds)
    return gate_records(
        records, agent=agent, turns=turns, window=window, source=source, thresholds=thresholds
    )


def combine(production: Verdict, ab: AbEffect | None) -> Verdict:
    """The production verdict, with the A/B sizing the effect; the decision never changes.

    The production cut (PostHog) decides. The A/B adds its size to the explanation, and
    a disagreement is named: production says reuse but the A/B's 95 % CI reaches zero, or
    production says no but the A/B finds a saving whose CI is above zero.
    """
    if ab is None:
        return production
    text = (
        f"{production.explanation} The A/B sizes the effect at {ab.mean_diff_ms:,.0f} ms "
        f"of {ab.segment} (95% CI {ab.ci_low_ms:,.0f} to {ab.ci_high_ms:,.0f} ms, "
        f"{ab.n_pairs} pairs)."
    )
    go = production.decision is Decision.SESSION_REUSE
    if production.decision is Decision.INSUFFICIENT_DATA:
        text += " With too few production runs the A/B alone does not decide."
    elif go and not ab.significant:
        text += (
            " The A/B disagrees: its interval includes no saving; the production cut "
            "decides, so the verdict stands."
        )
    elif not go and ab.significant:
        text += (
            " The A/B disagrees: it finds a saving from reuse, but production shares are "
            "below the thresholds; the production cut decides, so the verdict stands."
        )
    return attrs.evolve(production, explanation=text, ab=ab)
