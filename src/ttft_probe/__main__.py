"""``python -m ttft_probe`` is ``ttft-probe``."""

from ttft_probe.cli import main

main()
