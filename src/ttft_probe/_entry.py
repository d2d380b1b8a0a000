"""The ``ttft-probe`` console script: the CLI, with the cycle collector paused while it loads."""

from __future__ import annotations

import gc


def main() -> None:
    """Run :func:`ttft_probe.cli.main` with the cycle collector off until a command starts.

    Loading the CLI and the probe allocates many objects and no cyclic garbage; the
    collector's passes over them cost ~7 ms of ``ttft-probe run`` start-up on a 2-core
    machine (BENCHMARKS.md, start-up). Every command turns the collector back on before
    its own work (``run``: just before the agent is spawned, with the loaded objects
    frozen out of later collections).
    """
    gc.disable()
    from ttft_probe.cli import main as cli  # noqa: PLC0415 - after the collector is paused

    cli()
