"""``python -m ttft_probe`` is ``ttft-probe``."""

from ttft_probe._entry import main

main()
