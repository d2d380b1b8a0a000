"""The ``ttft-probe`` console script: spawn first, then the CLI with the cycle collector paused."""

from __future__ import annotations

import gc
import sys


def main() -> None:
    """Run :func:`ttft_probe.cli.main`; for ``ttft-probe run``, spawn the agent before that.

    ``ttft-probe run [OPTIONS] -- COMMAND`` starts the agent before anything else of the
    probe is loaded (:func:`ttft_probe._prespawn.start`, standard library only), so the
    probe's own start-up overlaps the agent's boot instead of delaying it; the worker it
    forks takes the agent over without loading click (:func:`ttft_probe._run_cli.run_spawned`).
    Whatever it cannot judge alone (``--help``, an option error, a plugin family…) it
    leaves to the CLI, which then parses and spawns as always. Should the worker stop
    before taking the agent over, the agent is ended.

    Loading the CLI and the probe allocates many objects and no cyclic garbage; the
    collector's passes over them cost ~7 ms of ``ttft-probe run`` start-up on a 2-core
    machine (BENCHMARKS.md, start-up). Every command turns the collector back on before
    its own work (``run``: once the probe is loaded, with the loaded objects frozen out of
    later collections).
    """
    spawned = None
    if sys.argv[1:2] == ["run"]:
        from ttft_probe._prespawn import start  # noqa: PLC0415 - only `run` spawns

        spawned = start(sys.argv[2:])  # returns in the worker process only
    gc.disable()
    try:
        if spawned is not None:
            from ttft_probe._run_cli import run_spawned  # noqa: PLC0415 - no click needed

            run_spawned(spawned)
        from ttft_probe.cli import main as cli  # noqa: PLC0415 - after the collector is paused

        cli()
    finally:
        if spawned is not None and not spawned.taken:
            spawned.abandon()
