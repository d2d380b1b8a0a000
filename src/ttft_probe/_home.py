"""Where ttft_probe keeps its state: the run store, the outbox and PostHog's install id."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["ENV_HOME", "home_dir"]

ENV_HOME: Final = "TTFT_PROBE_HOME"


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$TTFT_PROBE_HOME`` (``~`` expanded), else the platform's user state directory.

    The state directory is ``platformdirs.user_state_dir("ttft-probe")``, e.g.
    ``~/.local/state/ttft-probe`` on Linux. ``env`` defaults to the process environment.
    The directory is not created here.
    """
    home = (os.environ if env is None else env).get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    import platformdirs  # noqa: PLC0415 - only needed when no home is configured

    return Path(platformdirs.user_state_dir("ttft-probe", appauthor=False))
