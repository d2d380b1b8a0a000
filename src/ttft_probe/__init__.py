"""ttft_probe: where an AI coding agent's wait before the first token goes.

Wraps the spawn of an agent CLI, watches its own protocol output, and splits
``spawn_to_first_token_ms`` into ``cli_ready_ms``, ``session_init_ms`` and
``model_first_token_ms`` (DESIGN §3), one ``run_finished`` record per turn.
"""

from __future__ import annotations

from ttft_probe._run import RunResult
from ttft_probe._version import VERSION as _VERSION
from ttft_probe.adapters._base import AdapterOptions
from ttft_probe.errors import ConfigError, StoreError, TtftProbeError, UnknownAdapterError
from ttft_probe.record import (
    CONTRACT_VERSION,
    MarkerTimes,
    RunRecord,
    RuntimeFamily,
    Status,
    TimingUnavailableReason,
    record_schema,
)
from ttft_probe.spawn import Probe, RunOutcome, probe_of

__version__ = _VERSION

__all__ = [
    "CONTRACT_VERSION",
    "AdapterOptions",
    "ConfigError",
    "MarkerTimes",
    "Probe",
    "RunOutcome",
    "RunRecord",
    "RunResult",
    "RuntimeFamily",
    "Status",
    "StoreError",
    "TimingUnavailableReason",
    "TtftProbeError",
    "UnknownAdapterError",
    "probe_of",
    "record_schema",
]
