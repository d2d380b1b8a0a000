"""The one place ttft_probe reads time.

Every marker is a reading of the monotonic clock in integer nanoseconds
(``time.monotonic_ns``, which is ``CLOCK_MONOTONIC`` on Linux and so shared by every
process on the machine). Wall-clock times, for spans and events, are derived from one
:class:`WallAnchor` taken at spawn plus monotonic offsets, so a clock step during a
run can never produce a negative segment.
"""

from __future__ import annotations

import time

import attrs

__all__ = ["WallAnchor", "monotonic_ns"]

monotonic_ns = time.monotonic_ns
"""Monotonic clock reading in ns (``CLOCK_MONOTONIC``); the only clock markers use."""


@attrs.frozen
class WallAnchor:
    """A simultaneous pair of readings: wall clock and monotonic clock, both in ns.

    Attributes:
        wall_ns: Unix time in ns (wall clock) at the anchor.
        mono_ns: Monotonic clock in ns at the same instant.
    """

    wall_ns: int
    mono_ns: int

    @classmethod
    def now(cls) -> WallAnchor:
        """Take an anchor: the wall clock read between two monotonic readings."""
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        return cls(wall_ns=wall, mono_ns=(before + after) // 2)

    def wall_ns_at(self, mono_ns: int) -> int:
        """Unix time in ns (wall) of a monotonic reading ``mono_ns`` (ns)."""
        return self.wall_ns + (mono_ns - self.mono_ns)
