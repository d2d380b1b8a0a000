"""Warnings said once per key: a repeated internal fault is logged once, not once per run.

Configure loudly, run quietly: a collector that is down, a full disk or a broken SDK
fails every run the same way, and one line says so. Each :class:`LogOnce` remembers its
own keys, so its owner decides the scope (a process, a sink, a recorder).
"""

from __future__ import annotations

import logging
import threading

__all__ = ["LogOnce"]


class LogOnce:
    """Logs a warning on ``logger`` the first time its key is seen. Thread-safe."""

    __slots__ = ("_lock", "_logger", "_seen")

    def __init__(self, logger: logging.Logger) -> None:
        """Remember ``logger``; no key is seen yet."""
        self._logger = logger
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` as a warning unless ``key`` was logged before.

        Returns:
            ``True`` when it was logged now, ``False`` when ``key`` had been logged (the
            caller may then log at a lower level).
        """
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.warning(msg, *args, exc_info=exc_info, stacklevel=2)
        return True
