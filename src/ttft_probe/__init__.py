"""ttft_probe: where an AI coding agent's wait before the first token goes.

Wraps the spawn of an agent CLI, watches its own protocol output, and splits
``spawn_to_first_token_ms`` into ``cli_ready_ms``, ``session_init_ms`` and
``model_first_token_ms`` (DESIGN §3), one ``run_finished`` record per turn.
"""

from __future__ import annotations

from ttft_probe.errors import ConfigError, StoreError, TtftProbeError, UnknownAdapterError
from ttft_probe.record import RunRecord

__all__ = [
    "ConfigError",
    "RunRecord",
    "StoreError",
    "TtftProbeError",
    "UnknownAdapterError",
]
