"""Exceptions ttft_probe raises. All subclass :class:`TtftProbeError`.

Configure loudly, run quietly: these are raised before anything is spawned. After the
spawn no instrumentation fault reaches the application; the agent's own failures (a
missing executable, say) are re-raised unchanged.
"""

from __future__ import annotations

__all__ = ["ConfigError", "StoreError", "TtftProbeError", "UnknownAdapterError"]


class TtftProbeError(Exception):
    """Base class of every error ttft_probe raises."""


class ConfigError(TtftProbeError, ValueError):
    """An option, environment variable or agent name is invalid; the message names the fix."""


class UnknownAdapterError(ConfigError, LookupError):
    """No adapter is registered for the requested runtime family."""


class StoreError(TtftProbeError, OSError):
    """The local store cannot be opened or read (writes never raise into a run)."""
