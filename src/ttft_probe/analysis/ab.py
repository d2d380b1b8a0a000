"""The A/B test of DESIGN §8: paired fresh-vs-resumed runs and their per-segment effect.

An experiment runs ``n`` pairs. Pair ``i`` (1-based) runs the fresh command and the
resumed command back to back, alternating which goes first (:func:`order_of`: fresh
first when ``i`` is even, resumed first when it is odd), so that drift of the machine
(caches warming, a noisy neighbour) hits both arms alike. When the resumed command holds
``{session}``, one priming run of the fresh command comes first (not counted) and every
resumed run resumes the session it created.

Every run is stored in the local store like any other run; the store's
``experiment_runs`` table maps its ``run_id`` to (experiment id, arm, pair, position),
so the arms can be read back (:meth:`~ttft_probe.sinks.store.Store.experiment_runs`)
without anything added to the ``run_finished`` record.

The effect on each segment (:data:`SEGMENTS`) is the paired difference resumed − fresh
in ms: mean, median, and a percentile-bootstrap confidence interval of the mean over
pairs (:func:`bootstrap_ci`; B = 10 000 resamples, seeded, so a result is reproducible).
A pair where either run failed or lacks the segment is dropped for that segment and
counted (``dropped``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from ttft_probe.analysis._model import NOT_SEPARATED, init_separated, measured, percentile
from ttft_probe.errors import ConfigError, TtftProbeError

if TYPE_CHECKING:
    from ttft_probe.record import RunRecord
    from ttft_probe.sinks.store import Store
    from ttft_probe.spawn import Probe

__all__ = [
    "DEFAULT_PAIRS",
    "DEFAULT_RESAMPLES",
    "MIN_PAIRS",
    "SEGMENTS",
    "SESSION_PLACEHOLDER",
    "AbEffect",
    "AbPair",
    "AbResult",
    "Arm",
    "Experiment",
    "ExperimentError",
    "PairedDifferences",
    "RunEvent",
    "analyze",
    "bootstrap_ci",
    "effect_of",
    "load_experiment",
    "order_of",
    "paired_differences",
    "run_experiment",
]

SEGMENTS: Final = (
    "spawn_to_first_token_ms",
    "cli_ready_ms",
    "session_init_ms",
    "client_wait_ms",
    "model_first_token_ms",
)
"""The segments an A/B compares (the contract's names, ms on the monotonic clock)."""

DEFAULT_PAIRS: Final = 30
MIN_PAIRS: Final = 30
"""DESIGN §8 asks for at least this many pairs; fewer are allowed but flagged."""
DEFAULT_RESAMPLES: Final = 10_000
SESSION_PLACEHOLDER: Final = "{session}"
"""In the resumed command: replaced by the session id of the priming run."""

Arm = Literal["fresh", "resumed"]
Role = Literal["fresh", "resumed", "priming"]


class ExperimentError(TtftProbeError, RuntimeError):
    """The experiment could not go on: the priming run failed or gave no session id."""


# --- statistics (pure) --------------------------------------------------------------


def order_of(pair: int) -> tuple[Arm, Arm]:
    """The order of the two runs of pair ``pair`` (1-based): fresh first when it is even.

    Raises:
        ValueError: ``pair`` is less than 1.
    """
    if pair < 1:
        raise ValueError("pairs are numbered from 1")
    return ("fresh", "resumed") if pair % 2 == 0 else ("resumed", "fresh")


@attrs.frozen
class PairedDifferences:
    """The differences resumed − fresh (ms) of the pairs that have both values.

    Attributes:
        diffs: One per usable pair, in pair order.
        dropped: Pairs left out because either value was missing.
    """

    diffs: tuple[float, ...]
    dropped: int


def paired_differences(pairs: Iterable[tuple[float | None, float | None]]) -> PairedDifferences:
    """Resumed − fresh for each ``(fresh, resumed)`` pair; pairs with a ``None`` are dropped."""
    diffs: list[float] = []
    dropped = 0
    for fresh, resumed in pairs:
        if fresh is None or resumed is None:
            dropped += 1
        else:
            diffs.append(resumed - fresh)
    return PairedDifferences(tuple(diffs), dropped)


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    statistic: Callable[[Sequence[float]], float] = statistics.fmean,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` (default: the mean).

    Draws ``resamples`` samples of ``len(values)`` with replacement (``random.Random(seed)``,
    so the same inputs give the same interval), and returns the ``(1 − confidence) / 2``
    and ``(1 + confidence) / 2`` quantiles of the statistic over them (linear
    interpolation, type 7). Efron & Tibshirani, *An Introduction to the Bootstrap*, §13.3.

    Returns:
        ``(low, high)`` in the unit of ``values``.

    Raises:
        ValueError: ``values`` is empty, ``confidence`` is not in (0, 1) or ``resamples``
            is less than 1.
    """
    import random  # noqa: PLC0415 - only the A/B needs it

    if not values:
        raise ValueError("no values to bootstrap")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1 (exclusive)")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    data = list(values)
    n = len(data)
    rng = random.Random(seed)  # noqa: S311 - resampling, not cryptography
    stats = sorted(statistic(rng.choices(data, k=n)) for _ in range(resamples))
    alpha = (1 - confidence) / 2
    low = percentile(stats, alpha)
    high = percentile(stats, 1 - alpha)
    assert low is not None  # noqa: S101 - stats is not empty
    assert high is not None  # noqa: S101
    return low, high


@attrs.frozen
class AbEffect:
    """The effect of resuming on one segment: resumed − fresh, in ms.

    ``None`` statistics mean no pair had the segment in both runs.

    Attributes:
        segment: The segment's contract name, e.g. ``model_first_token_ms``.
        n: Pairs used.
        dropped: Pairs dropped (either run failed or lacks the segment).
        mean_ms: Mean paired difference.
        median_ms: Median paired difference.
        ci_low_ms: Lower end of the bootstrap interval of the mean.
        ci_high_ms: Upper end.
        confidence: The interval's confidence level (0–1).
        fresh_mean_ms: Mean of the fresh arm over the pairs used.
        resumed_mean_ms: Mean of the resumed arm over the pairs used.
        not_separated: Complete pairs with a run that did not separate its session
            set-up (timed without the provider observer): for ``session_init_ms`` they
            are dropped (the value is no measurement); for ``cli_ready_ms`` their value
            is the boot and the session set-up together.
    """

    segment: str
    n: int
    dropped: int
    mean_ms: float | None
    median_ms: float | None
    ci_low_ms: float | None
    ci_high_ms: float | None
    confidence: float
    fresh_mean_ms: float | None = None
    resumed_mean_ms: float | None = None
    not_separated: int = 0

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or below 0 (a detected effect)."""
        if self.ci_low_ms is None or self.ci_high_ms is None:
            return False
        return self.ci_low_ms > 0 or self.ci_high_ms < 0

    def contains(self, value_ms: float) -> bool:
        """Whether ``value_ms`` lies inside the interval (``False`` without one)."""
        if self.ci_low_ms is None or self.ci_high_ms is None:
            return False
        return self.ci_low_ms <= value_ms <= self.ci_high_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; with ``note`` naming what ``not_separated`` means when > 0."""
        data = attrs.asdict(self)
        if self.not_separated:
            data["note"] = NOT_SEPARATED
        return data


def effect_of(
    segment: str,
    pairs: Iterable[tuple[float | None, float | None]],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> AbEffect:
    """The :class:`AbEffect` of ``(fresh, resumed)`` values of one segment."""
    usable = list(pairs)
    paired = paired_differences(usable)
    if not paired.diffs:
        return AbEffect(segment, 0, paired.dropped, None, None, None, None, confidence)
    low, high = bootstrap_ci(paired.diffs, confidence=confidence, resamples=resamples, seed=seed)
    both = [(f, r) for f, r in usable if f is not None and r is not None]
    return AbEffect(
        segment=segment,
        n=len(paired.diffs),
        dropped=paired.dropped,
        mean_ms=statistics.fmean(paired.diffs),
        median_ms=statistics.median(paired.diffs),
        ci_low_ms=low,
        ci_high_ms=high,
        confidence=confidence,
        fresh_mean_ms=statistics.fmean(f for f, _ in both),
        resumed_mean_ms=statistics.fmean(r for _, r in both),
    )


# --- pairs and results ---------------------------------------------------------------


@attrs.frozen
class AbPair:
    """One pair: its number, which arm ran first, and each arm's run (``None``: no run).

    A run that did not succeed is kept (it is in the store) but contributes no segment.
    """

    index: int
    first: Arm
    fresh: RunRecord | None
    resumed: RunRecord | None

    @property
    def complete(self) -> bool:
        """Both runs exist and succeeded."""
        return _ok(self.fresh) and _ok(self.resumed)

    def values(self, segment: str) -> tuple[float | None, float | None]:
        """``(fresh, resumed)`` of ``segment`` in ms.

        ``None`` for a missing or failed run, or for a value that is no measurement (an
        unseparated ``session_init_ms``).
        """
        return _value(self.fresh, segment), _value(self.resumed, segment)

    @property
    def separated(self) -> bool:
        """Both runs separated their session set-up (see ``init_separated``)."""
        return all(r is None or init_separated(r) for r in (self.fresh, self.resumed))


def _ok(record: RunRecord | None) -> bool:
    return record is not None and record.status.value == "succeeded"


def _value(record: RunRecord | None, segment: str) -> float | None:
    if record is None or not _ok(record):
        return None
    return measured(record, segment)


@attrs.frozen
class AbResult:
    """The outcome of an experiment: counts and one :class:`AbEffect` per segment.

    Attributes:
        experiment_id: The id its runs carry in the store.
        pairs: Pairs run (or loaded).
        complete_pairs: Pairs whose two runs both succeeded.
        confidence: Confidence level of the intervals (0–1).
        resamples: Bootstrap resamples per interval.
        seed: The bootstrap's seed.
        effects: One per :data:`SEGMENTS`, in that order.
    """

    experiment_id: str
    pairs: int
    complete_pairs: int
    confidence: float
    resamples: int
    seed: int
    effects: tuple[AbEffect, ...]

    @property
    def failed_pairs(self) -> int:
        """Pairs where at least one run is missing or did not succeed."""
        return self.pairs - self.complete_pairs

    def effect(self, segment: str) -> AbEffect:
        """The effect on ``segment``.

        Raises:
            KeyError: Not one of :data:`SEGMENTS`.
        """
        for e in self.effects:
            if e.segment == segment:
                return e
        raise KeyError(segment)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts, ``order``, and ``segments`` keyed by segment name."""
        return {
            "experiment_id": self.experiment_id,
            "pairs": self.pairs,
            "complete_pairs": self.complete_pairs,
            "failed_pairs": self.failed_pairs,
            "order": "alternating (pair i: fresh first when i is even)",
            "difference": "resumed - fresh (ms)",
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "segments": {
                e.segment: {k: v for k, v in e.to_dict().items() if k != "segment"}
                for e in self.effects
            },
        }


def analyze(
    experiment_id: str,
    pairs: Sequence[AbPair],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> AbResult:
    """The per-segment effects of ``pairs`` (see the module docstring).

    Raises:
        ValueError: ``confidence`` is not in (0, 1) or ``resamples`` is less than 1.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1 (exclusive)")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    unseparated = sum(p.complete and not p.separated for p in pairs)
    effects = []
    for segment in SEGMENTS:
        effect = effect_of(
            segment,
            (p.values(segment) for p in pairs),
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
        if unseparated and segment in {"session_init_ms", "cli_ready_ms"}:
            # Those pairs are dropped from session_init for being unseparated, not failed.
            dropped = effect.dropped - (unseparated if segment == "session_init_ms" else 0)
            effect = attrs.evolve(effect, dropped=dropped, not_separated=unseparated)
        effects.append(effect)
    return AbResult(
        experiment_id=experiment_id,
        pairs=len(pairs),
        complete_pairs=sum(p.complete for p in pairs),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        effects=tuple(effects),
    )


# --- running an experiment ------------------------------------------------------------


@attrs.frozen
class RunEvent:
    """One finished run of an experiment, for progress reporting.

    Attributes:
        role: ``fresh``, ``resumed`` or ``priming``.
        pair: Its pair (1-based); ``None`` for the priming run.
        record: The stored record, ``None`` when no run was recorded.
        ok: The run succeeded.
        detail: Why it did not (exit status, last stderr line), else ``""``.
    """

    role: Role
    pair: int | None
    record: RunRecord | None
    ok: bool
    detail: str = ""


@attrs.frozen
class Experiment:
    """What :func:`run_experiment` did.

    Attributes:
        experiment_id: The id its runs carry in the store.
        pairs: The pairs run, in order.
        priming: The priming run's record (``None`` without ``{session}``).
        session_id: The session every resumed run resumed (``None`` without priming).
        stopped_early: More pairs failed than allowed, so the rest were not run.
    """

    experiment_id: str
    pairs: tuple[AbPair, ...]
    priming: RunRecord | None
    session_id: str | None
    stopped_early: bool


def _command(value: str | Sequence[str], what: str) -> list[str]:
    try:
        argv = shlex.split(value) if isinstance(value, str) else list(value)
    except ValueError as exc:
        raise ConfigError(f"{what} command: {exc}") from exc
    if not argv:
        raise ConfigError(f"the {what} command is empty")
    exe = argv[0]
    if shutil.which(exe) is None:
        raise ConfigError(f"{what} command: {exe!r} not found or not executable")
    return argv


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-4096:]
    except OSError:
        return ""
    lines = [x for x in data.decode(errors="replace").splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


class _Runner:
    """Runs one command under a probe, its stdio kept off the terminal."""

    def __init__(self, probe: Probe, timeout: float | None, scratch: Path) -> None:
        self.probe = probe
        self.timeout = timeout
        self.scratch = scratch

    def run(self, argv: Sequence[str]) -> tuple[RunRecord | None, str]:
        """Run ``argv`` once; (its record, why it failed or ``""``)."""
        err_path = self.scratch / f"stderr-{uuid.uuid4().hex}"
        with err_path.open("wb") as err:
            try:
                proc = self.probe.popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
            except OSError as exc:
                self.probe.wait(10.0)
                return self._last_record(), f"could not start: {exc}"
            tracked = self.probe.processes[-1]
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                tracked.timed_out = True
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        # The run is finished and stored once its exit watcher and the recorder are done.
        self.probe.wait(30.0)
        results = tracked.results
        record = results[0].record if results else None
        detail = ""
        if record is None:
            detail = f"no run recorded (exit status {proc.returncode})"
        elif record.status.value != "succeeded":
            reason = record.timing_unavailable_reason
            detail = f"{record.status.value}, exit code {record.exit_code}" + (
                f", {reason.value}" if reason else ""
            )
        if detail:
            last = _tail(err_path)
            if last:
                detail += f": {last}"
        with contextlib.suppress(OSError):
            err_path.unlink()
        return record, detail

    def _last_record(self) -> RunRecord | None:
        results = self.probe.processes[-1].results if self.probe.processes else []
        return results[0].record if results else None


def _prime(
    runner: _Runner,
    argv: Sequence[str],
    db: Store,
    experiment_id: str,
    notify: Callable[[RunEvent], None],
) -> tuple[RunRecord, str]:
    """Run the fresh command once: (its record, the session id it reported).

    Raises:
        ExperimentError: It failed, or reported no session id.
    """
    record, detail = runner.run(argv)
    if record is not None:
        db.add_experiment_run(record.run_id, experiment_id, "priming", None, None)
    notify(RunEvent("priming", None, record, _ok(record), detail))
    if record is None or not _ok(record):
        raise ExperimentError(f"the priming run of the fresh command failed: {detail}")
    if not record.session_id:
        raise ExperimentError(
            "the priming run reported no session id to fill {session} with; pass --agent or "
            "--family so the probe can read it, or put the session id in the command yourself"
        )
    return record, record.session_id


def run_experiment(
    fresh: str | Sequence[str],
    resumed: str | Sequence[str],
    *,
    n: int = DEFAULT_PAIRS,
    agent: str | None = None,
    family: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    timeout: float | None = None,
    max_failed_pairs: int | None = None,
    experiment_id: str | None = None,
    on_run: Callable[[RunEvent], None] | None = None,
    observe_provider: bool | str = False,
) -> Experiment:
    """Run ``n`` pairs of the fresh and the resumed command and store every run with its arm.

    Commands are strings (split with :func:`shlex.split`) or argv lists; they run in the
    current directory with this process's environment, stdin from ``/dev/null`` and
    their stdout and stderr discarded (the probe still reads them). When the resumed
    command holds ``{session}``, the fresh command runs once first (the priming run,
    stored with arm ``priming``) and ``{session}`` becomes the session id it reported;
    note that every resumed run then resumes that same session, whose history grows by
    one turn per resumed run.

    Args:
        fresh: The command that starts a new conversation.
        resumed: The command that resumes one, optionally with ``{session}``.
        n: Pairs to run.
        agent: Agent name for the records (default: inferred from the executable).
        family: Runtime family (default: the agent's, or inferred).
        store: The store path, a :class:`Store`, or ``None`` for the default location.
        timeout: End a run after this many seconds (it is then ``timed_out``).
        max_failed_pairs: Stop once more pairs than this failed (default: ``n // 10``).
        experiment_id: Id for the store (default: a new UUID4).
        on_run: Called after each run, in this thread.
        observe_provider: Run every command with the provider observer (see
            :class:`~ttft_probe.Probe`), which separates the session set-up of one-shot
            CLIs from their boot; without it their ``session_init_ms`` is no measurement.

    Returns:
        The pairs run.

    Raises:
        ConfigError: A command is empty, unparsable or not found, ``{session}`` is in
            the fresh command, ``n`` < 1, or an unknown agent or family.
        ExperimentError: The priming run failed or reported no session id.
        StoreError: The store cannot be opened.
    """
    from ttft_probe.sinks.store import Store  # noqa: PLC0415 - sqlite3 only when used
    from ttft_probe.spawn import Probe  # noqa: PLC0415

    fresh_argv = _command(fresh, "fresh")
    resumed_argv = _command(resumed, "resumed")
    if any(SESSION_PLACEHOLDER in a for a in fresh_argv):
        raise ConfigError(f"{SESSION_PLACEHOLDER} belongs in the resumed command only")
    if n < 1:
        raise ConfigError("n must be at least 1")
    allowed = n // 10 if max_failed_pairs is None else max_failed_pairs
    db = store if isinstance(store, Store) else Store(store)
    exp_id = experiment_id or str(uuid.uuid4())
    probes = {
        arm: Probe(
            agent=agent,
            family=family,
            session_resumed=arm == "resumed",
            store=db,
            deliver=False,
            observe_provider=observe_provider,
        )
        for arm in ("fresh", "resumed")
    }
    notify = on_run or (lambda _event: None)

    with tempfile.TemporaryDirectory(prefix="ttft-probe-ab-") as tmp:
        runners = {arm: _Runner(probes[arm], timeout, Path(tmp)) for arm in probes}
        priming: RunRecord | None = None
        session: str | None = None
        if any(SESSION_PLACEHOLDER in a for a in resumed_argv):
            priming, session = _prime(runners["fresh"], fresh_argv, db, exp_id, notify)
            resumed_argv = [a.replace(SESSION_PLACEHOLDER, session) for a in resumed_argv]
        argv_of = {"fresh": fresh_argv, "resumed": resumed_argv}
        pairs: list[AbPair] = []
        for i in range(1, n + 1):
            got: dict[Arm, RunRecord | None] = {}
            order = order_of(i)
            for position, arm in enumerate(order, start=1):
                record, detail = runners[arm].run(argv_of[arm])
                if record is not None:
                    db.add_experiment_run(record.run_id, exp_id, arm, i, position)
                got[arm] = record
                notify(RunEvent(arm, i, record, _ok(record), detail))
            pairs.append(AbPair(i, order[0], got["fresh"], got["resumed"]))
            if sum(not p.complete for p in pairs) > allowed:
                break
    for probe in probes.values():
        probe.close(timeout=5.0, delivery_wait=0.0)
    return Experiment(exp_id, tuple(pairs), priming, session, stopped_early=len(pairs) < n)


def load_experiment(store: Store, experiment_id: str) -> list[AbPair]:
    """The pairs of a stored experiment, in pair order (the priming run left out).

    Raises:
        ConfigError: No run in the store carries ``experiment_id``.
    """
    rows = store.experiment_runs(experiment_id)
    if not rows:
        raise ConfigError(f"no experiment {experiment_id!r} in the store at {store.path}")
    by_pair: dict[int, dict[str, tuple[int | None, RunRecord]]] = {}
    for record, arm, pair, position in rows:
        if pair is not None and arm in {"fresh", "resumed"}:
            by_pair.setdefault(pair, {})[arm] = (position, record)
    pairs = []
    for i in sorted(by_pair):
        arms = by_pair[i]
        fresh = arms.get("fresh")
        resumed = arms.get("resumed")
        first: Arm = order_of(i)[0]
        if fresh is not None and fresh[0] == 1:
            first = "fresh"
        elif resumed is not None and resumed[0] == 1:
            first = "resumed"
        pairs.append(AbPair(i, first, fresh[1] if fresh else None, resumed[1] if resumed else None))
    return pairs
