"""ttft_probe: where an AI coding agent's wait before the first token goes.

Wraps the spawn of an agent CLI, watches its own protocol output, and splits
``spawn_to_first_token_ms`` into ``cli_ready_ms``, ``session_init_ms`` and
``model_first_token_ms`` (DESIGN §3), one ``run_finished`` record per turn.
"""

from __future__ import annotations

_TYPE_CHECKING = False
if _TYPE_CHECKING:
    from typing import Any as _Any

    from ttft_probe._run import RunResult
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

_HOME: dict[str, str] = {
    "__version__": "ttft_probe._version",
    "RunResult": "ttft_probe._run",
    "AdapterOptions": "ttft_probe.adapters._base",
    "ConfigError": "ttft_probe.errors",
    "StoreError": "ttft_probe.errors",
    "TtftProbeError": "ttft_probe.errors",
    "UnknownAdapterError": "ttft_probe.errors",
    "CONTRACT_VERSION": "ttft_probe.record",
    "MarkerTimes": "ttft_probe.record",
    "RunRecord": "ttft_probe.record",
    "RuntimeFamily": "ttft_probe.record",
    "Status": "ttft_probe.record",
    "TimingUnavailableReason": "ttft_probe.record",
    "record_schema": "ttft_probe.record",
    "Probe": "ttft_probe.spawn",
    "RunOutcome": "ttft_probe.spawn",
    "probe_of": "ttft_probe.spawn",
}
"""Where each public name lives: imported on first use, so ``import ttft_probe`` (and the
CLI, which imports only what a command needs) stays cheap (PEP 562). Not even ``typing``
is imported here: ``ttft-probe run`` spawns the agent before loading it."""


def __getattr__(name: str) -> _Any:
    """Import a public name from its module on first use."""
    module = _HOME.get(name)
    if module is None:
        msg = f"module 'ttft_probe' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415 - on first use only

    value = getattr(importlib.import_module(module), "VERSION" if name == "__version__" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, for ``dir()`` and completion."""
    return sorted([*__all__, "__version__"])


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
