"""Prove the probe is cheap: its own cost against the same work without it (issue 6).

Run ``.venv/bin/python benchmarks/suite.py`` (several minutes on 2 cores; ``--smoke`` for
a tiny version that checks the machinery in well under a minute, which CI runs through
``tests/test_benchmarks_smoke.py``). It measures, each against a baseline doing the same
work without the probe:

1. added first-byte latency of ``ttft-probe run`` and of the library wrapper (sync and
   asyncio) over stamped stream-json lines;
2. pass-through throughput of >= 1 GiB of realistic stream-json against ``cat`` and a
   plain Python pipe reader;
3. start-up cost of ``ttft-probe run -- true`` against ``true``, and what the CLI path
   imports (``-X importtime``);
4. the probe's peak RSS for 1 GiB of output and for a single 100 MiB line;
5. 1,000 sequential and 100 concurrent runs into one store: per-run overhead and every
   record present;
6. what the provider observer adds to the first content byte with 1 MiB request bodies,
   and how much of it is reading and hashing the bodies (``observer_latency.py``);
7. how much later the agent starts through ``ttft-probe run`` than when launched directly
   (spawn delay), and how long after the agent's last byte the probe exits (exit delay);

then rewrites ``BENCHMARKS.md`` (``--out``) with the machine, each figure's median and
spread, the ratios, and each target met or missed. Where a target is missed and
``py-spy`` is installed (not a dependency), the throughput case is profiled and the top
frames go into the notes; the start-up notes use the import-time breakdown.

Every probe runs with ``TTFT_PROBE_HOME`` set to a fresh temporary directory and with no
``OTEL_*``, ``POSTHOG_*``, ``LANGFUSE_*`` or ``TTFT_PROBE_*`` variable: no exporter is
configured.
"""

# ruff: noqa: INP001

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
CHILDREN: Final = HERE / "suite_children.py"
PEAK_RSS: Final = HERE / "suite_peak_rss.py"
DEFAULT_OUT: Final = ROOT / "BENCHMARKS.md"
PY: Final = sys.executable
PROBE: Final = (
    str(Path(sys.executable).with_name("ttft-probe"))
    if Path(sys.executable).with_name("ttft-probe").exists()
    else shutil.which("ttft-probe") or "ttft-probe"
)
FAMILY: Final = ["--family", "claude-stream-json"]
MIB: Final = 1 << 20
FORBIDDEN_PREFIXES: Final = ("posthog", "langfuse", "grpc", "opentelemetry.exporter")
EXPORTER_ENV_PREFIXES: Final = ("OTEL_", "POSTHOG_", "LANGFUSE_", "TTFT_PROBE_")
TIMEOUT_S: Final = 600.0
SECTIONS: Final = (
    "1. Added first-byte latency",
    "2. Pass-through throughput",
    "3. Start-up cost",
    "4. Memory",
    "5. Many runs",
    "6. Provider observer: large request bodies",
    "7. Spawn and exit delay",
)

console = Console(stderr=True, highlight=False)


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one suite run."""

    smoke: bool
    latency_rounds: int
    latency_lines: int
    latency_interval_us: int
    throughput_bytes: int
    throughput_rounds: int
    parse_bytes: int
    startup_runs: int
    importtime_runs: int
    memory_stream: tuple[int, int]
    memory_line: tuple[int, int]
    memory_rounds: int
    sequential_runs: int
    concurrent_runs: int
    profile: bool
    observer_rounds: int = 90
    spawn_rounds: int = 30

    @classmethod
    def make(cls, *, smoke: bool, profile: bool) -> Config:
        """The full suite, or the smoke version (same code paths, tiny sizes)."""
        if smoke:
            return cls(
                smoke=True,
                latency_rounds=1,
                latency_lines=40,
                latency_interval_us=1500,
                throughput_bytes=8 * MIB,
                throughput_rounds=1,
                parse_bytes=4 * MIB,
                startup_runs=3,
                importtime_runs=1,
                memory_stream=(2 * MIB, 8 * MIB),
                memory_line=(9 * MIB, 12 * MIB),
                memory_rounds=1,
                sequential_runs=4,
                concurrent_runs=4,
                profile=False,
                observer_rounds=3,
                spawn_rounds=2,
            )
        return cls(
            smoke=False,
            latency_rounds=5,
            latency_lines=300,
            latency_interval_us=1500,
            throughput_bytes=1 << 30,
            throughput_rounds=3,
            parse_bytes=256 * MIB,
            startup_runs=40,
            importtime_runs=5,
            memory_stream=(64 * MIB, 1 << 30),
            memory_line=(10 * MIB, 100 * MIB),
            memory_rounds=3,
            sequential_runs=1000,
            concurrent_runs=100,
            profile=profile,
        )


# --- figures and report model -------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure: its median, spread, optional ratio and target."""

    name: str
    unit: str
    median: float
    spread: tuple[float, float] | None = None
    spread_kind: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None
    how: str = ""
    digits: int = 1


@dataclass
class Section:
    """One numbered part of the report."""

    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- statistics ---------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def p10_p90(values: Sequence[float]) -> tuple[float, float]:
    """The 10th and 90th percentiles."""
    return pct(values, 0.10), pct(values, 0.90)


def min_max(values: Sequence[float]) -> tuple[float, float]:
    """The smallest and largest value."""
    return min(values), max(values)


# --- processes ----------------------------------------------------------------------------


_pycache: list[Path] = []
"""The private bytecode cache of this suite run (set by :func:`run_suite`)."""


def clean_env(home: Path) -> dict[str, str]:
    """This environment without exporter settings, with ``TTFT_PROBE_HOME=home``.

    Bytecode goes to the suite's own ``PYTHONPYCACHEPREFIX``: with
    ``PYTHONDONTWRITEBYTECODE`` set (as in some sandboxes), every edited module would be
    compiled again at every start, which an installed package never does.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(EXPORTER_ENV_PREFIXES)}
    env.pop("TRACEPARENT", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if _pycache:
        env["PYTHONPYCACHEPREFIX"] = str(_pycache[0])
    env["TTFT_PROBE_HOME"] = str(home)
    env["TTFT_BENCH_PROBE"] = PROBE  # for suite_children.py's `consume cli`
    return env


def run_json(argv: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv`` and parse the one JSON object it prints; fail loudly otherwise."""
    proc = subprocess.run(
        argv, env=env, capture_output=True, timeout=TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[:6])} … failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def wall_ms(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall time in ms of one run of ``argv`` (spawn to reaped), which must exit 0."""
    t0 = time.perf_counter_ns()
    proc = subprocess.run(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT_S,
        check=False,
    )
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed


def stored_records(store_home: Path) -> list[dict[str, Any]]:
    """Every ``run_finished`` record in the store under ``store_home`` (``ttft-probe runs``)."""
    proc = subprocess.run(
        [PROBE, "runs", "--all", "--json"],
        env=clean_env(store_home),
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


class Steps:
    """Progress display: one bar for the whole suite, one line per step."""

    def __init__(self, progress: Progress, total: int) -> None:
        """Track ``total`` steps on ``progress``."""
        self.progress = progress
        self.task = progress.add_task("starting", total=total)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Show ``what`` while it runs, then advance the bar."""
        self.progress.update(self.task, description=what)
        t0 = time.perf_counter()
        yield
        self.progress.console.print(f"  [dim]{what}: {time.perf_counter() - t0:.1f} s[/dim]")
        self.progress.advance(self.task)


def warm_up(home: Path) -> None:
    """Run each kind of process once so that its bytecode is cached and files are in cache."""
    env = clean_env(home)
    cat = shutil.which("cat") or "/bin/cat"
    transcript = ROOT / "tests" / "transcripts" / "claude-stream-json" / "claude_fresh.jsonl"
    true = shutil.which("true") or "/bin/true"
    for argv in (
        [PROBE, "run", "-q", "--", true],
        [PROBE, "run", "-q", *FAMILY, "--", cat, str(transcript)],
        [PROBE, "runs", "--all", "--json"],
        [PY, "-X", "importtime", "-m", "ttft_probe", "run", "-q", "--", true],
        *([PY, str(CHILDREN), "consume", mode, "8", "100"] for mode in LATENCY_MODES),
    ):
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=TIMEOUT_S, check=True)
    for first, relay in throughput_modes(MIB).values():
        _chain(first, relay, env)


def rotate(items: Sequence[str], i: int) -> list[str]:
    """``items`` rotated by ``i`` (interleaves modes so drift hits all of them alike)."""
    k = i % len(items)
    return [*items[k:], *items[:k]]


# --- 1. added first-byte latency ----------------------------------------------------------

LATENCY_MODES: Final = ("direct", "cli", "lib", "async-direct", "async-lib")
LATENCY_PAIRS: Final = (
    ("cli", "direct", "`ttft-probe run`"),
    ("lib", "direct", "library `Probe.popen`"),
    ("async-lib", "async-direct", "library `Probe.create_subprocess_exec`"),
)


def bench_latency(cfg: Config, steps: Steps, home: Path) -> Section:
    """Receive − send time of stamped lines, with and without the probe."""
    modes = list(LATENCY_MODES)
    per_round: dict[str, list[list[float]]] = {m: [] for m in modes}
    env = clean_env(home)
    for r in range(cfg.latency_rounds):
        with steps.step(f"latency round {r + 1}/{cfg.latency_rounds}: {', '.join(modes)}"):
            for mode in rotate(modes, r):
                out = run_json(
                    [PY, str(CHILDREN), "consume", mode, str(cfg.latency_lines),
                     str(cfg.latency_interval_us)],
                    env,
                )
                per_round[mode].append([ns / 1000 for ns in out["added_ns"]])
    pooled = {m: [v for rnd in per_round[m] for v in rnd] for m in modes}
    n = len(pooled["direct"])
    sec = Section(
        SECTIONS[0],
        f"A child (`suite_children.py lines`) prints a recorded Claude Code stream-json turn "
        f"as {cfg.latency_lines} lines, one every {cfg.latency_interval_us / 1000:g} ms (each "
        f"read is a fresh wake-up), stamping `time.monotonic_ns()` into each line's `uuid` "
        f"just before its `os.write`. A consumer process reads the stream in 64 KiB "
        f"`os.read`s and takes `time.monotonic_ns()` when a line's last byte arrives "
        f"(CLOCK_MONOTONIC is system-wide). {cfg.latency_rounds} interleaved round(s) per "
        f"mode, {n} lines per mode in all. Added = probe percentile − direct percentile; "
        f"spread = min–max of that difference over the rounds.",
    )
    for mode, base, label in LATENCY_PAIRS:
        for q, name, limit in ((0.5, "p50", 100.0), (0.99, "p99", 1000.0)):
            added = pct(pooled[mode], q) - pct(pooled[base], q)
            rounds = [
                pct(a, q) - pct(b, q) for a, b in zip(per_round[mode], per_round[base], strict=True)
            ]
            sec.figures.append(
                Figure(
                    f"added first-byte latency {name}, {label}",
                    "µs",
                    added,
                    min_max(rounds),
                    "min–max over rounds",
                    ratio=f"{pct(pooled[mode], q):.0f} vs {pct(pooled[base], q):.0f} µs direct",
                    target=f"< {limit:g} µs",
                    met=added < limit,
                    how=f"{name} of {len(pooled[mode])} lines through {label} minus {name} of "
                    f"{len(pooled[base])} lines read {'by asyncio ' if 'async' in base else ''}"
                    f"straight from the child's pipe.",
                    digits=0,
                )
            )
    sec.extra += [
        "Per-line receive − send distributions (µs):",
        "",
        "| mode | lines | p10 | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "direct": "direct pipe (`subprocess.Popen`)",
        "cli": "`ttft-probe run`",
        "lib": "`Probe.popen`",
        "async-direct": "direct pipe (`asyncio.create_subprocess_exec`)",
        "async-lib": "`Probe.create_subprocess_exec`",
    }
    for mode in modes:
        v = pooled[mode]
        sec.extra.append(
            f"| {labels[mode]} | {len(v)} | {pct(v, 0.1):.0f} | {pct(v, 0.5):.0f} "
            f"| {pct(v, 0.9):.0f} | {pct(v, 0.99):.0f} | {max(v):.0f} |"
        )
    _latency_notes(sec)
    return sec


# --- 2. throughput ------------------------------------------------------------------------


def _chain(first: list[str], relay: list[str] | None, env: dict[str, str]) -> dict[str, Any]:
    """``first [| relay] | sink``; the sink's JSON report."""
    head = subprocess.Popen(first, stdout=subprocess.PIPE, env=env)
    assert head.stdout is not None  # noqa: S101 - spawned with PIPE
    procs = [head]
    feed = head.stdout
    if relay is not None:
        mid = subprocess.Popen(relay, stdin=feed, stdout=subprocess.PIPE, env=env)
        feed.close()
        assert mid.stdout is not None  # noqa: S101 - spawned with PIPE
        feed = mid.stdout
        procs.append(mid)
    sink = subprocess.Popen(
        [PY, str(CHILDREN), "sink"], stdin=feed, stdout=subprocess.PIPE, env=env
    )
    feed.close()
    out, _ = sink.communicate(timeout=TIMEOUT_S)
    for p in procs:
        if p.wait(timeout=TIMEOUT_S) != 0:
            raise SystemExit(f"{p.args!r} exited {p.returncode}")
    report: dict[str, Any] = json.loads(out)
    return report


def _rate_mb_s(report: dict[str, Any]) -> float:
    seconds = (int(report["end_ns"]) - int(report["first_ns"])) / 1e9
    return (int(report["bytes"]) - int(report["first_bytes"])) / seconds / 1e6


def throughput_modes(size: int) -> dict[str, tuple[list[str], list[str] | None]]:
    """Mode → (first command, relay or ``None``) of the throughput pipelines."""
    gen = [PY, str(CHILDREN), "gen", str(size)]
    return {
        "generator alone": (gen, None),
        "cat": (gen, ["cat"]),
        "Python pipe reader": ([PY, str(CHILDREN), "relay", "--", *gen], None),
        "ttft-probe run": ([PROBE, "run", "-q", *FAMILY, "--", *gen], None),
    }


def bench_throughput(cfg: Config, steps: Steps, home: Path) -> Section:
    """MB/s of a long stream-json answer through each relay."""
    env = clean_env(home)
    modes = throughput_modes(cfg.throughput_bytes)
    rates: dict[str, list[float]] = {m: [] for m in modes}
    sizes: set[int] = set()
    for r in range(cfg.throughput_rounds):
        with steps.step(
            f"throughput round {r + 1}/{cfg.throughput_rounds}: "
            f"{cfg.throughput_bytes / MIB:.0f} MiB through each relay"
        ):
            for mode in rotate(list(modes), r):
                first, relay = modes[mode]
                report = _chain(first, relay, env)
                sizes.add(report["bytes"])
                rates[mode].append(_rate_mb_s(report))
    if len(sizes) != 1:
        raise SystemExit(f"relays delivered different byte counts: {sorted(sizes)}")
    with steps.step("throughput: the probe's parsing alone, in process"):
        parse = run_json([PY, str(CHILDREN), "parse", str(cfg.parse_bytes)], env)
    parse_mb_s = parse["bytes"] / parse["total_s"] / 1e6
    split_ns = parse["split_s"] / parse["lines"] * 1e9
    parse_ns = parse["total_s"] / parse["lines"] * 1e9
    records = stored_records(home)
    found = sum(1 for rec in records if rec.get("spawn_to_first_token_ms") is not None)
    size_mib = sizes.pop() / MIB
    probe = rates["ttft-probe run"]
    vs_relay = [p / b for p, b in zip(probe, rates["Python pipe reader"], strict=True)]
    vs_cat = [p / b for p, b in zip(probe, rates["cat"], strict=True)]
    sec = Section(
        SECTIONS[1],
        f"`suite_children.py gen` writes a recorded Claude Code turn's start (init, "
        f"message_start, …), then {size_mib:.0f} MiB of `content_block_delta` lines (~256 B "
        f"each, one pre-built 1 MiB block written with `os.write` over and over), then the "
        f"turn's end (`result`). A sink process reads it to EOF with `os.readv` into a 4 MiB "
        f"buffer; MB/s = 10⁶ bytes/s from the sink's first byte to EOF. Relays: `cat`; the "
        f"plain Python pipe reader (`suite_children.py relay`: spawns the generator, 64 KiB "
        f"`os.read` → `os.write` to stdout, the probe's work minus parsing); "
        f"`ttft-probe run {' '.join(FAMILY)} -q`. {cfg.throughput_rounds} interleaved "
        f"round(s); spread = min–max. The probe found the first token in {found} of "
        f"{len(records)} runs.",
    )
    hows = {
        "generator alone": "generator → sink, no relay (for reference: with one pipe instead of "
        "two there is less buffering between the processes, so it is not a ceiling).",
        "cat": "generator | cat | sink.",
        "Python pipe reader": "relay spawns the generator; relay | sink.",
        "ttft-probe run": "ttft-probe run spawns the generator; probe | sink.",
    }
    for mode, values in rates.items():
        sec.figures.append(
            Figure(f"throughput, {mode}", "MB/s", statistics.median(values), min_max(values),
                   "min–max", how=hows[mode], digits=0)
        )
    sec.figures.append(
        Figure(
            "parsing alone after the first token (splitter + Claude adapter, no I/O)",
            "MB/s",
            parse_mb_s,
            ratio=f"{parse_ns:.0f} ns per {parse['bytes'] / parse['lines']:.0f}-byte line in "
            f"all, {split_ns:.0f} of them splitting; {parse['handed']:,} of "
            f"{parse['lines']:,} lines handed to the adapter",
            how=f"`suite_children.py parse`: {parse['bytes'] / MIB:.0f} MiB of the same lines in "
            "64 KiB chunks through `LineSplitter` (`feed_matching` with the adapter's "
            "`line_filter` when it has one, as the probe does; else `feed`) and the adapter's "
            "`feed_stdout`, in one process, timed once splitting only and once splitting and "
            "parsing (a single timing: no spread). The probe does this on its pump thread "
            "between one forward and the next read.",
            digits=0,
        )
    )
    missed = statistics.median(vs_relay) < 0.9
    if missed:
        relay_mb_s = statistics.median(rates["Python pipe reader"])
        serial = 1 / (1 / relay_mb_s + 1 / parse_mb_s)
        sec.notes.append(
            f"Throughput target missed: `ttft-probe run` relays at "
            f"{statistics.median(vs_relay):.2f}× the plain Python pipe reader "
            f"({statistics.median(probe):.0f} MB/s against {relay_mb_s:.0f} MB/s; target "
            f"≥ 0.9×). The pump thread forwards a chunk, then parses it, then reads the next: "
            f"parsing alone runs at {parse_mb_s:.0f} MB/s ({parse_ns:.0f} ns per line, "
            f"{split_ns:.0f} of them splitting, after the first token), "
            f"so relaying and parsing in series give at most {serial:.0f} MB/s "
            f"({serial / relay_mb_s:.2f}×). For 0.9×, parsing must run at ≥ 9× the relay's "
            f"rate, ≥ {9 * relay_mb_s:.0f} MB/s here: per-line Python work after the first "
            "token has to go."
        )
    sec.figures += [
        Figure(
            "throughput ratio, ttft-probe run / Python pipe reader",
            "×",
            statistics.median(vs_relay),
            min_max(vs_relay),
            "min–max over rounds",
            ratio="per round, same round's runs",
            target="≥ 0.9×",
            met=not missed,
            how="probe MB/s divided by the Python pipe reader's MB/s of the same round.",
            digits=2,
        ),
        Figure(
            "throughput ratio, ttft-probe run / cat",
            "×",
            statistics.median(vs_cat),
            min_max(vs_cat),
            "min–max over rounds",
            ratio="per round, same round's runs",
            how="probe MB/s divided by cat's MB/s of the same round.",
            digits=2,
        ),
    ]
    return sec


def profile_throughput(cfg: Config, home: Path) -> list[str]:
    """py-spy the probe relaying the throughput stream; Markdown lines of its hot frames."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PY).parent))
    if spy is None:
        return ["py-spy is not installed, so no profile was taken (`pip install py-spy`)."]
    raw = home / "throughput.pyspy.txt"
    first, _ = throughput_modes(min(cfg.throughput_bytes, 512 * MIB))["ttft-probe run"]
    report = _chain(
        [spy, "record", "--threads", "--format", "raw", "--rate", "250", "-o", str(raw),
         "--", PY, *first], None, clean_env(home),
    )
    self_ns: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if "ttft-probe-stdout" not in stack:
            continue
        frames = [
            f.split(" (", 1)[0] + " (" + f.rsplit("/", 1)[-1]
            for f in stack.split(";")
            if not f.startswith(("thread (", "process ")) and "threading.py" not in f
        ]
        if not frames:
            continue
        total += int(count)
        self_ns[frames[-1]] += int(count)
        for frame in set(frames):
            incl[frame] += int(count)
    if not total:
        return ["py-spy recorded no samples of the stdout pump thread."]
    lines = [
        (
            f"py-spy (`record --threads`, {total} samples of the `ttft-probe-stdout` pump "
            f"thread, {report['bytes'] / MIB:.0f} MiB at {_rate_mb_s(report):.0f} MB/s under "
            "the profiler). Share of the pump thread's samples:"
        ),
        "",
        "| frame (self) | self | | frame (inclusive) | inclusive |",
        "|---|---:|---|---|---:|",
    ]
    for (sk, sv), (ik, iv) in zip(self_ns.most_common(8), incl.most_common(8), strict=False):
        lines.append(f"| `{sk}` | {sv / total:.0%} | | `{ik}` | {iv / total:.0%} |")
    relay = sum(v for k, v in self_ns.items() if k.startswith(("_read ", "_forward ")))
    lines += [
        "",
        (
            f"Reading and forwarding (`_read`, `_forward`: what the plain Python pipe reader "
            f"does) take {relay / total:.0%} of the pump thread's samples, the rest "
            f"({1 - relay / total:.0%}) is parsing on the same thread between one forward and "
            "the next read. py-spy counts a thread inside a syscall that is not asleep, or "
            "waiting for a CPU or the GIL, as busy, so on a loaded machine the syscall share "
            "grows; the in-process parsing rate above does not depend on that."
        ),
    ]
    return lines


# --- 3. start-up --------------------------------------------------------------------------


@dataclass
class ImportLine:
    """One line of ``-X importtime``."""

    name: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportLine]:
    """The ``import time:`` lines of ``python -X importtime`` stderr."""
    found = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        raw = parts[2][1:]
        name = raw.strip()
        found.append(
            ImportLine(name, int(parts[0]), int(parts[1]), (len(raw) - len(raw.lstrip())) // 2)
        )
    return found


def _importtime(cfg: Config, steps: Steps, env: dict[str, str], true: str) -> tuple[
    list[float], list[ImportLine]
]:
    """Import-time totals (ms) of each run, and the lines of the median run."""
    what = f"start-up: python -X importtime -m ttft_probe run -- true (×{cfg.importtime_runs})"
    runs = []
    with steps.step(what):
        for _ in range(cfg.importtime_runs):
            proc = subprocess.run(
                [PY, "-X", "importtime", "-m", "ttft_probe", "run", "--", true],
                env=env, capture_output=True, timeout=TIMEOUT_S, check=True,
            )
            lines = parse_importtime(proc.stderr.decode())
            runs.append((sum(ln.cumulative_us for ln in lines if ln.depth == 0), lines))
    runs.sort(key=lambda r: r[0])
    return [r[0] / 1000 for r in runs], runs[len(runs) // 2][1]


def bench_startup(cfg: Config, steps: Steps, home: Path) -> Section:
    """``ttft-probe run -- true`` against ``true``, plus the CLI path's imports."""
    env = clean_env(home)
    true = shutil.which("true") or "/bin/true"
    totals, lines = _importtime(cfg, steps, env, true)
    names = [ln.name for ln in lines]
    # Everything `run` imports after the interpreter's own start-up, in its order (not
    # the entry module: importing it would run the CLI).
    top = [ln.name for ln in lines if ln.depth == 0]
    first = next((i for i, n in enumerate(top) if n.startswith("ttft_probe")), 0)
    run_imports = [n for n in top[first:] if n not in {"runpy", "ttft_probe.__main__"}]
    # Each `python -c` ends as `ttft-probe run` does, with os._exit (no interpreter teardown).
    floor = "python -c 'import os; os._exit(0)'"
    cli = "python -c 'import ttft_probe.cli; …'"
    all_imports = f"python -c 'import …' (the {len(run_imports)} top-level imports of run)"
    probe_cmd = "ttft-probe run -- true"
    quit_now = "; import os; os._exit(0)"
    paused = "import gc; gc.disable(); "  # as the console script loads (ttft_probe._entry)
    cmds = {
        "true": [true],
        floor: [PY, "-c", quit_now.removeprefix("; ")],
        cli: [PY, "-c", paused + "import ttft_probe.cli" + quit_now],
        all_imports: [PY, "-c", paused + "import " + ", ".join(run_imports) + quit_now],
        probe_cmd: [PROBE, "run", "--", true],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    with steps.step(f"start-up: {cfg.startup_runs} interleaved runs of each command"):
        for cmd in cmds.values():  # warm the page cache; not counted
            wall_ms(cmd, env)
        for i in range(cfg.startup_runs):
            for name in rotate(list(cmds), i):
                times[name].append(wall_ms(cmds[name], env))
    added = [p - t for p, t in zip(times[probe_cmd], times["true"], strict=True)]
    med = {k: statistics.median(v) for k, v in times.items()}
    sec = Section(
        SECTIONS[2],
        f"Wall time from `subprocess.run` to the child reaped, {cfg.startup_runs} interleaved "
        f"runs of each command after one unrecorded warm-up each; spread = p10–p90. No "
        f"exporter configured; the store is a fresh `TTFT_PROBE_HOME`. The `python -c` rows "
        f"split the probe's time: the interpreter, importing the CLI module, importing "
        f"everything `run` imports (the top-level names of `-X importtime`: "
        f"`{' '.join(run_imports)}`); "
        f"the rest is the run's own work (spawn, pump threads, store). The import rows pause "
        f"the cycle collector and each row ends with `os._exit(0)`, as `ttft-probe run` "
        f"does, so none pays for interpreter teardown.",
    )
    for name, values in times.items():
        sec.figures.append(
            Figure(f"start-up, `{name}`", "ms", med[name], p10_p90(values),
                   "p10–p90", how=f"{len(values)} runs of `{name}`.", digits=1)
        )
    median_added = statistics.median(added)
    forbidden = sorted({n for n in names if n.startswith(FORBIDDEN_PREFIXES)})
    otel_sdk = any(n.startswith("opentelemetry.sdk") for n in names)
    sec.figures += [
        Figure(
            f"start-up added to `true`, `{probe_cmd}`",
            "ms",
            median_added,
            p10_p90(added),
            "p10–p90",
            ratio=f"{med[probe_cmd]:.0f} ms = interpreter {med[floor]:.0f} + imports "
            f"{med[all_imports] - med[floor]:.0f} + run {med[probe_cmd] - med[all_imports]:.0f}",
            target="< 60 ms",
            met=median_added < 60,
            how="per pair of consecutive runs: probe wall time − `true` wall time.",
        ),
        Figure(
            "modules from posthog, langfuse, grpc or opentelemetry.exporter imported",
            "modules",
            float(len(forbidden)),
            target="0",
            met=not forbidden,
            how="names in `-X importtime` of `python -m ttft_probe run -- true`"
            + (f": {', '.join(forbidden)}" if forbidden else "; none found")
            + f". opentelemetry.sdk imported: {'yes' if otel_sdk else 'no'}.",
            digits=0,
        ),
        Figure(
            "import time of the CLI path (`-X importtime`, sum of top-level cumulative)",
            "ms",
            statistics.median(totals),
            min_max(totals),
            "min–max",
            how=f"{len(totals)} run(s) of `python -X importtime -m ttft_probe run -- true` "
            f"(the instrumentation inflates it); {len(lines)} modules imported in the median "
            "run.",
        ),
    ]
    by_cum = sorted(lines, key=lambda ln: ln.cumulative_us, reverse=True)[:15]
    sec.extra += [
        (
            "Largest cumulative imports of the median `-X importtime` run "
            "(depth 0 = imported by the interpreter, `-m` or lazily by the run; 1 = by that "
            "module, …):"
        ),
        "",
        "| module | depth | cumulative ms | self ms |",
        "|---|---:|---:|---:|",
        *(
            f"| `{ln.name}` | {ln.depth} | {ln.cumulative_us / 1000:.1f} "
            f"| {ln.self_us / 1000:.1f} |"
            for ln in by_cum
        ),
    ]
    if median_added >= 60:
        sec.notes.append(
            f"Start-up target missed: `{probe_cmd}` takes {med[probe_cmd]:.0f} ms, "
            f"{median_added:.0f} ms more than `true` (target < 60 ms): the interpreter "
            f"{med[floor]:.0f} ms; importing `ttft_probe.cli` (with the `ttft_probe` package) "
            f"{med[cli] - med[floor]:.0f} ms more; the rest of what `run` imports "
            f"{med[all_imports] - med[cli]:.0f} ms more; the run's own work (spawn, threads, "
            f"store) {med[probe_cmd] - med[all_imports]:.0f} ms. The import table of section 3 "
            "names the modules that bound the import share."
        )
    return sec


# --- 4. memory ----------------------------------------------------------------------------


def _peak(role: str, size: int, cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    return run_json([PY, "-I", "-S", str(PEAK_RSS), role, str(size), "--", *cmd], env)


def bench_memory(cfg: Config, steps: Steps, home: Path) -> Section:
    """The probe process's peak RSS for long output and for one huge line."""
    env = clean_env(home)
    cat = shutil.which("cat") or "/bin/cat"
    probe_cat = [PROBE, "run", "-q", *FAMILY, "--", cat]
    small_s, big_s = cfg.memory_stream
    small_l, big_l = cfg.memory_line
    stream = (f"{small_s / MIB:.0f} MiB of stream-json", f"{big_s / MIB:.0f} MiB of stream-json")
    line = (f"one {small_l / MIB:.0f} MiB line", f"one {big_l / MIB:.0f} MiB line")
    floor_case = "floor: `cat` through the same launcher"
    cap = _line_cap()
    cases: dict[str, tuple[str, int, list[str]]] = {
        floor_case: ("gen", small_s, [cat]),
        "`ttft-probe run -- true` (no output)": ("none", 0, [PROBE, "run", "-q", "--", "true"]),
        stream[0]: ("gen", small_s, probe_cat),
        stream[1]: ("gen", big_s, probe_cat),
        line[0]: ("bigline", small_l, probe_cat),
        line[1]: ("bigline", big_l, probe_cat),
    }
    if cap is not None:
        cases[f"one line just under the splitter's {cap / MIB:g} MiB cap"] = (
            "bigline", cap - 4096, probe_cat
        )
    peaks: dict[str, list[float]] = {k: [] for k in cases}
    hwm: dict[str, list[float]] = {k: [] for k in cases}
    floors: list[float] = []
    for r in range(cfg.memory_rounds):
        with steps.step(f"memory round {r + 1}/{cfg.memory_rounds}: {len(cases)} cases"):
            for name, (role, size, cmd) in cases.items():
                out = _peak(role, size, cmd, env)
                if out["status"] != 0:
                    raise SystemExit(f"memory case {name!r} exited {out['status']}")
                if role != "none" and out["sink"]["bytes"] < size:
                    raise SystemExit(f"memory case {name!r}: only {out['sink']['bytes']} bytes")
                peaks[name].append(out["maxrss_kib"] / 1024)
                hwm[name].append(out["hwm_kib"] / 1024)
                floors.append(out["floor_kib"] / 1024)
    agree = max(
        abs(a - b) for k in (*stream, *line) for a, b in zip(peaks[k], hwm[k], strict=True)
    )
    sec = Section(
        SECTIONS[3],
        "Peak RSS of the `ttft-probe run` process only: `suite_peak_rss.py` (a launcher that "
        "imports only `os` and `sys`) runs `generator | ttft-probe run -q "
        f"{' '.join(FAMILY)} -- cat | sink` and takes the probe's `ru_maxrss` from `os.wait4`. "
        "That covers the probe and its reaped children, so the probe's child is `cat` (the "
        "generator and sink are the launcher's); on Linux it also covers the image the probe "
        "was exec'd from (the launcher forked, up to "
        f"{max(floors):.1f} MiB), so `cat` through the same launcher is shown as the floor. "
        f"Cross-check: the probe's `VmHWM`, polled every 2 ms, agrees within {agree:.1f} MiB "
        f"in the stream and line cases. {cfg.memory_rounds} round(s); spread = min–max. "
        "1 MiB = 2²⁰ bytes.",
    )
    for name, values in peaks.items():
        probe_case = name != floor_case
        sec.figures.append(
            Figure(
                f"peak RSS, {name}",
                "MiB",
                statistics.median(values),
                min_max(values),
                "min–max",
                target="< 50 MiB" if probe_case else "",
                met=statistics.median(values) < 50 if probe_case else None,
                how=_memory_how(name),
            )
        )
    for label, (small, big) in (("stream", stream), ("single line", line)):
        deltas = [b - s for s, b in zip(peaks[small], peaks[big], strict=True)]
        growth = statistics.median(deltas)
        sec.figures.append(
            Figure(
                f"peak RSS growth with output size, {label} ({big} − {small})",
                "MiB",
                growth,
                min_max(deltas),
                "min–max over rounds",
                ratio=f"{(big_s / small_s) if label == 'stream' else (big_l / small_l):.0f}× "
                "the output",
                target="< 4 MiB (independent of size)",
                met=growth < 4,
                how="difference of the two peaks above, per round.",
            )
        )
    return sec


def _line_cap() -> int | None:
    """The line splitter's default ``max_line`` (bytes), if it can be read."""
    try:
        from ttft_probe.adapters._base import LineSplitter  # noqa: PLC0415 - only for this
    except ImportError:
        return None
    default = inspect.signature(LineSplitter).parameters.get("max_line")
    return default.default if default is not None and isinstance(default.default, int) else None


def _memory_how(name: str) -> str:
    if name.startswith("floor"):
        return "`cat` alone in the probe's place: what the method cannot see below."
    if name.startswith("`ttft"):
        return "the probe's start-up and shutdown alone."
    if "cap" in name:
        return (
            "the worst single line: the longest one the line splitter keeps "
            "(`LineSplitter` `max_line` − 4 KiB; longer lines are dropped unread), so the "
            "adapter decodes it."
        )
    if "line" in name:
        return (
            "a tool-result `user` line of that size (written in 1 MiB pieces) before the "
            "first token, while the adapter still decodes every line."
        )
    return "a long answer of `content_block_delta` lines, as in section 2."


# --- 5. many runs -------------------------------------------------------------------------


def _transcripts(folder: Path, n: int, tag: str) -> list[tuple[str, Path]]:
    """``n`` copies of a short recorded Claude turn, each with its own session id."""
    source = ROOT / "tests" / "transcripts" / "claude-stream-json" / "claude_fresh.jsonl"
    lines = [
        json.loads(raw)["line"]
        for raw in source.read_text(encoding="utf-8").splitlines()
        if json.loads(raw).get("stream") == "stdout"
    ]
    text = "\n".join(lines) + "\n"
    old = "caa12134-f130-4ca7-a8ec-8ad64b0ee7e0"
    out = []
    for i in range(n):
        session = f"{tag}0000-0000-4000-8000-{i:012d}"[-36:]
        path = folder / f"{tag}-{i}.jsonl"
        path.write_text(text.replace(old, session), encoding="utf-8")
        out.append((session, path))
    return out


def _check_records(home: Path, sessions: set[str]) -> tuple[int, int, int]:
    """(records, distinct expected sessions found, records with a first token)."""
    records = stored_records(home)
    found = {r.get("conversation_id") for r in records} & sessions
    tokens = sum(1 for r in records if r.get("spawn_to_first_token_ms") is not None)
    return len(records), len(found), tokens


def _stderr_problems(folder: Path) -> int:
    bad = 0
    for path in folder.glob("*.err"):
        text = path.read_text(encoding="utf-8", errors="replace").lower()
        if any(word in text for word in ("traceback", "error", "warning", "locked")):
            bad += 1
    return bad


def bench_observer_bodies(cfg: Config, steps: Steps, home: Path) -> Section:  # noqa: ARG001
    """The observer's added first-content latency with 1 MiB request bodies (issue 14)."""
    sys.path.insert(0, str(HERE))
    try:
        import observer_latency  # noqa: PLC0415 - a sibling script, imported when run
    finally:
        sys.path.remove(str(HERE))
    results = {}
    for delay in (0.0, 20.0):
        with steps.step(f"observer, 1 MiB bodies, provider after {delay:g} ms: "
                        f"{cfg.observer_rounds} rounds"):
            results[delay] = observer_latency.measure_body_cost(cfg.observer_rounds, delay)
    now, later = results[0.0], results[20.0]
    sec = Section(
        SECTIONS[5],
        "A raw-socket client sends streaming generation requests with ~1 MiB bodies (a "
        "200-turn transcript, rotating the Anthropic, OpenAI Responses and Gemini APIs) over "
        "keep-alive connections to the fake provider (own process) directly, through an "
        "observer (own process, as `ttft-probe run --observe-provider` runs it) and through "
        "an observer that forwards bodies without reading them; "
        f"{cfg.observer_rounds} interleaved rounds; time from send to the bytes that complete "
        "the first content event. The observer reads a body (parse, section digests) on its "
        "reader thread after forwarding it, handing the GIL over as it goes.",
    )
    sec.figures.append(Figure(
        "reading + hashing a 1 MiB request body, added to the first content byte",
        "µs", now["reading_median_us"], None, "",
        ratio=f"{now['observer_median_us']:.0f} vs {now['unread_median_us']:.0f} µs unread",
        target="< 1000 µs", met=now["reading_median_us"] < 1000,
        how="median per round of (observer reading bodies − observer forwarding them "
            "unread), provider answering at once (the worst case: the read overlaps the "
            f"answer); p90 {now['reading_p90_us']:.0f} µs; {now['bodies_hashed']} bodies hashed.",
        digits=0))
    sec.figures.append(Figure(
        "observer's added first-byte latency, 1 MiB request bodies",
        "µs", later["added_median_us"], None, "",
        ratio=f"{later['observer_median_us']:.0f} vs {later['direct_median_us']:.0f} µs direct",
        target="< 1000 µs", met=later["added_median_us"] < 1000,
        how="median per round of (observer − direct), provider answering 20 ms after the "
            "request (real providers take 200 ms or more): the body is read while the "
            "provider works.",
        digits=0))
    sec.figures.append(Figure(
        "observer's added first-byte latency, 1 MiB request bodies, provider answering at once",
        "µs", now["added_median_us"], None, "",
        ratio=f"{now['observer_median_us']:.0f} vs {now['direct_median_us']:.0f} µs direct",
        how="median per round of (observer − direct); mostly forwarding the 1 MiB body through "
            "the observer's HTTP parser before the provider can answer, which an unread "
            f"forward costs too ({now['unread_median_us'] - now['direct_median_us']:.0f} µs).",
        digits=0))
    return sec


BOOT_S: Final = 0.3
"""How long the stamping child lives, like an agent booting (real ones: 100–2,000 ms)."""
STAMP_CHILD: Final = [
    PY, "-S", "-c",
    ("import os, time; os.write(1, b'%d\\n' % time.monotonic_ns()); "
     f"time.sleep({BOOT_S}); os.write(1, b'%d\\n' % time.monotonic_ns())"),
]
"""A child whose first act is to print CLOCK_MONOTONIC (ns); after BOOT_S it prints it again
as its last byte and exits."""


def _stamped_run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(spawn delay, exit delay) in ms of one run of ``argv`` ending in STAMP_CHILD.

    Spawn delay: the child's first stamp − the monotonic time just before ``argv`` was
    executed. Exit delay: the time ``argv`` was reaped − the child's last stamp (its last
    byte).
    """
    t0 = time.monotonic_ns()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    t_exit = time.monotonic_ns()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} … failed ({proc.returncode}): {err.decode()}")
    first, last = (int(v) for v in out.split()[-2:])
    return (first - t0) / 1e6, (t_exit - last) / 1e6


def bench_spawn(cfg: Config, steps: Steps, home: Path) -> Section:
    """Spawn delay and exit delay of `ttft-probe run` against a direct launch (issue 15)."""
    env = clean_env(home)
    wrapper = [PY, "-S", "-c", "import os, sys; os.execv(sys.argv[1], sys.argv[1:])"]
    modes = {
        "direct": STAMP_CHILD,
        "python -S wrapper (the floor)": [*wrapper, *STAMP_CHILD],
        "ttft-probe run": [PROBE, "run", "--quiet", "--family", "plain", "--", *STAMP_CHILD],
        "ttft-probe run --observe-provider": [
            PROBE, "run", "--quiet", "--family", "plain", "--agent", "claude_code",
            "--observe-provider", "--", *STAMP_CHILD],
    }
    spawn: dict[str, list[float]] = {m: [] for m in modes}
    exits: dict[str, list[float]] = {m: [] for m in modes}
    with steps.step(f"spawn and exit delay: {cfg.spawn_rounds} interleaved rounds"):
        for argv in modes.values():  # warm-up, not counted
            _stamped_run(argv, env)
        for i in range(cfg.spawn_rounds):
            for mode in rotate(list(modes), i):
                a, b = _stamped_run(modes[mode], env)
                spawn[mode].append(a)
                exits[mode].append(b)
    med = {m: statistics.median(v) for m, v in spawn.items()}
    sec = Section(
        SECTIONS[6],
        f"A child (`python -S`) prints `time.monotonic_ns()` as its first act, lives "
        f"{BOOT_S * 1000:.0f} ms (an agent's boot takes 100–2,000 ms: the probe loads in "
        f"that time) and prints it again as its last byte; it is "
        f"launched directly, through a minimal `python -S` wrapper that execs it (the floor "
        f"of any Python wrapper), and through `ttft-probe run` without and with "
        f"`--observe-provider`; {cfg.spawn_rounds} interleaved rounds after one warm-up each. "
        f"Spawn delay = the child's first stamp − the monotonic time just before the launch; "
        f"added = p50 of the mode − p50 direct. Exit delay = the launcher reaped − the child's "
        f"last stamp (its last byte). No exporter configured; a fresh `TTFT_PROBE_HOME`. "
        f"A child that exits at once is section 3's `ttft-probe run -- true`.",
    )
    for mode, target in (("ttft-probe run", 20.0), ("ttft-probe run --observe-provider", 30.0),
                         ("python -S wrapper (the floor)", None)):
        added = med[mode] - med["direct"]
        sec.figures.append(Figure(
            f"spawn delay added, `{mode}`", "ms", added, None, "",
            ratio=f"{med[mode]:.1f} vs {med['direct']:.1f} ms direct (p10–p90 "
                  f"{pct(spawn[mode], 0.1):.1f}–{pct(spawn[mode], 0.9):.1f})",
            target="" if target is None else f"< {target:g} ms",
            met=None if target is None else added < target,
            how=f"p50 of {len(spawn[mode])} launches minus p50 of {len(spawn['direct'])} "
                "direct launches.",
        ))
    for mode in ("ttft-probe run", "direct"):
        values = exits[mode]
        sec.figures.append(Figure(
            f"exit delay, `{mode}`", "ms", statistics.median(values), p10_p90(values),
            "p10–p90",
            target="< 10 ms" if mode != "direct" else "",
            met=statistics.median(values) < 10 if mode != "direct" else None,
            how="p50 of (launcher reaped − the child's last-byte stamp); for `direct` that "
                "is the child's own exit.",
        ))
    added = med["ttft-probe run"] - med["direct"]
    if added >= 20:
        sec.notes.append(
            f"Spawn delay target missed: the agent starts {added:.0f} ms later through "
            f"`ttft-probe run` than directly (a bare `python -S` wrapper costs "
            f"{med['python -S wrapper (the floor)'] - med['direct']:.0f} ms). Before the spawn "
            "`run` loads only the interpreter's site, `ttft_probe._prespawn` and the agent "
            "table; see whether an option made it take the full CLI path first."
        )
    return sec


def bench_many(cfg: Config, steps: Steps, home: Path) -> Section:
    """Sequential and concurrent runs into one store each: overhead and completeness."""
    cat = shutil.which("cat") or "/bin/cat"
    seq_home = home / "sequential"
    con_home = home / "concurrent"
    logs = home / "stderr"
    for d in (seq_home, con_home, logs):
        d.mkdir(parents=True)
    seq = _transcripts(home, cfg.sequential_runs, "5e9")
    con = _transcripts(home, cfg.concurrent_runs, "c0c")
    env = clean_env(seq_home)
    probe_ms: list[float] = []
    direct_ms: list[float] = []
    chunk = max(1, cfg.sequential_runs // 10)
    for start in range(0, cfg.sequential_runs, chunk):
        part = seq[start : start + chunk]
        with steps.step(
            f"sequential runs {start + 1}–{start + len(part)} of {cfg.sequential_runs}"
        ):
            for i, (_, path) in enumerate(part, start):
                argv = [PROBE, "run", *FAMILY, "--", cat, str(path)]
                pair = [("probe", argv), ("direct", [cat, str(path)])]
                for kind, cmd in pair if i % 2 else pair[::-1]:
                    t0 = time.perf_counter_ns()
                    with (logs / f"seq-{kind}-{i}.err").open("wb") as err:
                        rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                            timeout=TIMEOUT_S, check=False).returncode
                    (probe_ms if kind == "probe" else direct_ms).append(
                        (time.perf_counter_ns() - t0) / 1e6
                    )
                    if rc != 0:
                        raise SystemExit(f"sequential run {i} ({kind}) exited {rc}")
    seq_records, seq_found, seq_tokens = _check_records(seq_home, {s for s, _ in seq})
    with steps.step(f"{cfg.concurrent_runs} concurrent runs into one store"):
        con_probe = _concurrent(
            [[PROBE, "run", *FAMILY, "--", cat, str(p)] for _, p in con], con_home, logs, "con"
        )
        con_direct = _concurrent([[cat, str(p)] for _, p in con], con_home, logs, "con-direct")
    con_records, con_found, con_tokens = _check_records(con_home, {s for s, _ in con})
    added = [p - d for p, d in zip(probe_ms, direct_ms, strict=True)]
    tenth = max(1, len(probe_ms) // 10)
    early, late = probe_ms[:tenth], probe_ms[-tenth:]
    n_seq, n_con = cfg.sequential_runs, cfg.concurrent_runs
    problems = _stderr_problems(logs)
    sec = Section(
        SECTIONS[4],
        f"Each run is `ttft-probe run {' '.join(FAMILY)} -- cat TURN.jsonl` where TURN.jsonl "
        f"is a recorded Claude Code turn (tests/transcripts) with its own session id, so "
        f"every run is a complete turn with a first token and a distinct conversation; "
        f"baseline `cat TURN.jsonl`. Sequential: {n_seq} probe runs, each paired with a "
        f"direct run (order alternating), into one store. Concurrent: {n_con} probe runs "
        f"started at once into another store, then {n_con} direct runs likewise. Records are "
        f"counted with `ttft-probe runs --all --json`. Runs whose stderr mentions an error, "
        f"a warning or a locked database: {problems}.",
    )
    sec.figures += [
        Figure("sequential: wall time per run, `cat` alone", "ms", statistics.median(direct_ms),
               p10_p90(direct_ms), "p10–p90", how=f"{len(direct_ms)} runs.", digits=2),
        Figure("sequential: wall time per run, under `ttft-probe run`", "ms",
               statistics.median(probe_ms), p10_p90(probe_ms), "p10–p90",
               how=f"{len(probe_ms)} runs.", digits=1),
        Figure("sequential: per-run overhead", "ms", statistics.median(added), p10_p90(added),
               "p10–p90", how="per pair: probe run − direct run.", digits=1),
        Figure(
            "sequential: store growth effect (p10 of the last 10 % − p10 of the first 10 %)",
            "ms",
            pct(late, 0.1) - pct(early, 0.1),
            ratio=f"p10 {pct(early, 0.1):.1f} → {pct(late, 0.1):.1f} ms, median "
            f"{statistics.median(early):.1f} → {statistics.median(late):.1f} ms as the store "
            f"grows to {n_seq} runs",
            how="wall time of the last tenth of the probe runs against the first tenth; p10, "
            "not the median, so that bursts of load from other processes on the machine do "
            "not pass for growth (a single difference: no spread).",
        ),
        Figure(
            f"sequential: records present ({n_seq} runs)",
            "records",
            float(seq_found),
            ratio=f"{seq_found}/{n_seq} sessions; {seq_records} records; "
            f"{seq_tokens} with a first token",
            target=f"= {n_seq}",
            met=seq_found == n_seq == seq_records,
            how="distinct expected conversation ids among the stored records.",
            digits=0,
        ),
        Figure(
            f"concurrent: wall time of one run, {n_con} at once",
            "ms",
            statistics.median(con_probe.each_ms),
            p10_p90(con_probe.each_ms),
            "p10–p90",
            ratio=f"`cat`: {statistics.median(con_direct.each_ms):.1f} ms",
            how=f"each run from its spawn to its exit while all {n_con} share "
            f"{os.cpu_count()} cores.",
        ),
        Figure(
            f"concurrent: batch wall time, {n_con} runs",
            "s",
            con_probe.batch_s,
            ratio=f"{n_con} `cat`s: {con_direct.batch_s * 1000:.0f} ms",
            how="from the first spawn to the last exit (a single batch: no spread).",
            digits=2,
        ),
        Figure(
            "concurrent: per-run overhead (batch wall time / runs)",
            "ms",
            (con_probe.batch_s - con_direct.batch_s) * 1000 / n_con,
            how="(probe batch − direct batch) / runs: the machine's cost per probed run "
            "(a single batch: no spread).",
        ),
        Figure(
            f"concurrent: records present ({n_con} runs)",
            "records",
            float(con_found),
            ratio=f"{con_found}/{n_con} sessions; {con_records} records; "
            f"{con_tokens} with a first token; exit codes: {con_probe.failed} non-zero",
            target=f"= {n_con}",
            met=con_found == n_con == con_records and not con_probe.failed,
            how="distinct expected conversation ids among the stored records.",
            digits=0,
        ),
    ]
    return sec


@dataclass
class Batch:
    """Timing of one batch of concurrent runs."""

    batch_s: float
    each_ms: list[float]
    failed: int


def _concurrent(cmds: list[list[str]], home: Path, logs: Path, tag: str) -> Batch:
    """Start every command at once; reap them as they exit (no polling: 2 cores are busy)."""
    env = clean_env(home)
    pending: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
    t0 = time.perf_counter_ns()
    for i, cmd in enumerate(cmds):
        with (logs / f"{tag}-{i}.err").open("wb") as err:
            p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        pending[p.pid] = (p, time.perf_counter_ns())
    each: list[float] = []
    failed = 0
    while pending:
        pid, status = os.wait()  # the suite has no other child now
        t = time.perf_counter_ns()
        if pid not in pending:
            continue
        p, started = pending.pop(pid)
        p.returncode = os.waitstatus_to_exitcode(status)
        failed += p.returncode != 0
        each.append((t - started) / 1e6)
    return Batch((time.perf_counter_ns() - t0) / 1e9, each, failed)


# --- machine and report -------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU, cores, RAM, kernel, OS, Python, package version and source revision."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / MIB:.1f} GiB"
                break
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    revision = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True, timeout=10)
        revision = head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    version = subprocess.run([PROBE, "--version"], capture_output=True, text=True, check=False)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPU": model,
        "logical cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "RAM": ram,
        "kernel": platform.release(),
        "OS": os_name,
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "ttft-probe": version.stdout.strip() or "unknown",
        "source": revision,
        "bytecode": "compiled once into the suite's own PYTHONPYCACHEPREFIX before timing "
        "(as an installed package has it)",
        "load average at start (1, 5, 15 min)": load,
    }


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def render(sections: list[Section], host: dict[str, str], cfg: Config, meta: dict[str, str]) -> str:
    """The Markdown report."""
    figures = [f for s in sections for f in s.figures]
    targeted = [f for f in figures if f.met is not None]
    missed = [f for f in targeted if not f.met]
    lines = [
        "# Benchmarks: what the probe costs",
        "",
        "Generated by `.venv/bin/python benchmarks/suite.py"
        + (" --smoke" if cfg.smoke else "")
        + "` — do not edit by hand; re-run it. "
        + ("**Smoke run: tiny sizes, figures are not meaningful.** " if cfg.smoke else "")
        + f"Run on {meta['date']} in {meta['duration']}.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in host.items()),
        "",
        "## Targets",
        "",
        *(
            [
                (
                    f"**The machine was busy**: load average {meta['load_start']} at the start "
                    f"and {meta['load_end']} at the end on {os.cpu_count()} cores (other "
                    "processes shared the CPUs). Timing figures are noisier and slower than on "
                    "a quiet machine; re-run before comparing them."
                ),
                "",
            ]
            if meta["busy"] == "yes"
            else []
        ),
        f"{len(targeted) - len(missed)} of {len(targeted)} targets met"
        + (": missed — " + "; ".join(f"{f.name} ({_fmt(f.median, f.digits)} {f.unit}, "
                                      f"target {f.target})" for f in missed) if missed else ".")
        + (" See the notes." if missed else ""),
        "",
    ]
    for sec in sections:
        lines += [f"## {sec.title}", "", sec.intro, ""]
        lines += [
            "| figure | median | spread | ratio / context | target | status |",
            "|---|---:|---|---|---|---|",
        ]
        for f in sec.figures:
            spread = (
                f"{_fmt(f.spread[0], f.digits)} – {_fmt(f.spread[1], f.digits)} ({f.spread_kind})"
                if f.spread is not None
                else "—"
            )
            status = "—" if f.met is None else ("met" if f.met else "**missed**")
            lines.append(
                f"| {f.name} | {_fmt(f.median, f.digits)} {f.unit} | {spread} | "
                f"{f.ratio or '—'} | {f.target or '—'} | {status} |"
            )
        lines += ["", "How measured:", ""]
        lines += [f"- *{f.name}*: {f.how}" for f in sec.figures]
        if sec.extra:
            lines += ["", *sec.extra]
        lines.append("")
    notes = [n for s in sections for n in s.notes]
    lines += ["## Notes", ""]
    if notes:
        for n in notes:
            lines += [n, ""]
    else:
        lines += ["Every target is met.", ""]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def _latency_notes(sec: Section) -> None:
    missed = [f for f in sec.figures if f.met is False]
    if missed:
        sec.notes.append(
            "Latency target missed: "
            + "; ".join(f"{f.name} = {f.median:.0f} µs (target {f.target})" for f in missed)
            + ". The per-line distributions above show whether it is the whole distribution "
            "or its tail (GIL hand-over between the pump thread and the parser, or "
            "scheduling on a busy machine)."
        )


def run_suite(cfg: Config, out: Path) -> int:
    """Run every benchmark, write the report to ``out``; 0 when it was written."""
    t_start = time.perf_counter()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = os.getloadavg()
    host = machine()
    total = (
        cfg.latency_rounds
        + cfg.throughput_rounds
        + 1  # parsing alone
        + 2  # start-up runs, importtime
        + cfg.memory_rounds
        + len(range(0, cfg.sequential_runs, max(1, cfg.sequential_runs // 10)))
        + 1  # concurrent
        + 1  # warm-up
        + 2  # observer with large bodies
        + 1  # spawn and exit delay
    )
    sections: list[Section] = []
    with (
        tempfile.TemporaryDirectory(prefix="ttft-bench-") as tmp,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        steps = Steps(progress, total)
        _pycache[:] = [Path(tmp) / "pycache"]
        (Path(tmp) / "warm-up").mkdir()
        with steps.step("warm-up: every kind of process once (bytecode, page cache)"):
            warm_up(Path(tmp) / "warm-up")
        benches: list[Callable[[Config, Steps, Path], Section]] = [
            bench_latency,
            bench_throughput,
            bench_startup,
            bench_memory,
            bench_many,
            bench_observer_bodies,
            bench_spawn,
        ]
        for bench, title in zip(benches, SECTIONS, strict=True):
            progress.console.print(f"[bold]{title}")
            home = Path(tmp) / bench.__name__
            home.mkdir()
            sec = bench(cfg, steps, home)
            if bench is bench_throughput and sec.notes and cfg.profile:
                progress.console.print("  profiling the probe's throughput run (py-spy)…")
                sec.notes[-1] += "\n\n" + "\n".join(profile_throughput(cfg, home))
            sections.append(sec)
    _pycache.clear()
    minutes, seconds = divmod(int(time.perf_counter() - t_start), 60)
    meta = {"date": date, "duration": f"{minutes} min {seconds} s"}
    load_end = os.getloadavg()
    host["load average at the end"] = ", ".join(f"{x:.2f}" for x in load_end)
    cores = os.cpu_count() or 1
    # The suite itself keeps about 2 processes busy; more than the cores is someone else.
    meta["busy"] = "yes" if load_start[0] > cores or load_end[1] > 2 * cores else "no"
    meta["load_start"] = f"{load_start[0]:.1f}"
    meta["load_end"] = f"{load_end[0]:.1f} (5-min {load_end[1]:.1f})"
    report = render(sections, host, cfg, meta)
    out.write_text(report, encoding="utf-8")
    figures = [f for s in sections for f in s.figures if f.met is not None]
    for f in figures:
        mark = "[green]met[/green]" if f.met else "[red]missed[/red]"
        console.print(f"{mark}  {f.name}: {_fmt(f.median, f.digits)} {f.unit} (target {f.target})",
                      soft_wrap=True)
    console.print(f"written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the suite."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: checks that every benchmark runs (CI); not a measurement")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"report to write (default: {DEFAULT_OUT.name} at the repo root)")
    parser.add_argument("--no-profile", action="store_true",
                        help="do not profile missed targets with py-spy")
    args = parser.parse_args(argv)
    if shutil.which(PROBE) is None:
        parser.error("ttft-probe not found: run with the project's virtualenv Python")
    cfg = Config.make(smoke=args.smoke, profile=not args.no_profile)
    return run_suite(cfg, args.out)


if __name__ == "__main__":
    sys.exit(main())
