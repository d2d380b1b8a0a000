"""Probe every turn of the ``openai-codex`` SDK: ``Codex`` and ``AsyncCodex``.

The SDK starts ``codex app-server`` (JSON-RPC over stdio, the ``acp-json-rpc`` family's
app-server rules, DESIGN §3) and runs each thread's turns on it. Use these classes where you
would use the SDK's; each turn becomes a ``run_finished`` record::

    from ttft_probe.integrations.openai_codex import ProbedCodex

    with ProbedCodex() as codex:          # instead of Codex()
        thread = codex.thread_start()
        result = thread.run("Fix the failing test")

``ProbedAsyncCodex`` stands in for ``AsyncCodex`` the same way. The app-server process is
the SDK's own (same command line, environment and shutdown); its stdout, stderr and stdin
pass through the probe's pumps (bytes first, parsed after), as with
:meth:`ttft_probe.Probe.attach`. ``processSpawned`` is taken just before the SDK starts
the process. The provider observer needs ``ttft-probe run`` (``ttft-probe shim`` writes a
``codex_bin`` that uses it).

Needs ``openai-codex`` 0.163 or later (``pip install 'ttft-probe[openai-codex]'``).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from threading import Thread
from typing import Any, Self

from ttft_probe._clock import monotonic_ns
from ttft_probe.errors import ConfigError
from ttft_probe.spawn import Probe

try:
    from openai_codex import AsyncCodex, Codex, CodexConfig
    from openai_codex._initialize_metadata import validate_initialize_metadata
    from openai_codex.client import CodexClient
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "ttft_probe.integrations.openai_codex needs openai-codex 0.163 or later: "
        "pip install 'ttft-probe[openai-codex]'"
    ) from exc

__all__ = ["ProbedAsyncCodex", "ProbedCodex"]


class ProbedCodex(Codex):
    """``Codex`` whose ``codex app-server`` is probed: one record per turn.

    Args:
        config: The SDK's ``CodexConfig``.
        probe: The :class:`~ttft_probe.Probe` to record with; default: a new one, closed
            with the client.
        conversation_id: Your conversation's id for the records (default: the thread id).
            Ignored when ``probe`` is given.

    Raises:
        Whatever ``Codex()`` raises when the app-server cannot start.
    """

    def __init__(
        self,
        config: CodexConfig | None = None,
        *,
        probe: Probe | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """Start the app-server as ``Codex()`` does, under the probe."""
        client = self._probed = _ProbedCodexClient(config, probe, conversation_id)
        # Codex.__init__, with the probed client in place of its own.
        self._client = client
        try:
            client.start()
            self._init = validate_initialize_metadata(client.initialize())
        except Exception:
            client.close()
            raise

    def __enter__(self) -> Self:
        """Enter as ``Codex`` does."""
        return self

    @property
    def probe(self) -> Probe:
        """The probe recording this client's turns (``probe.records`` holds them)."""
        return self._probed.probe


class ProbedAsyncCodex(AsyncCodex):
    """``AsyncCodex`` whose ``codex app-server`` is probed: one record per turn.

    Arguments as for :class:`ProbedCodex`; the app-server starts when the SDK starts it
    (``async with`` or the first call).
    """

    def __init__(
        self,
        config: CodexConfig | None = None,
        *,
        probe: Probe | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """Create the client as ``AsyncCodex()`` does, with a probed app-server."""
        super().__init__(config)
        self._probed = _ProbedCodexClient(config, probe, conversation_id)
        self._client._sync = self._probed  # noqa: SLF001 - the SDK's sync client, not started yet

    async def __aenter__(self) -> Self:
        """Start the app-server as ``AsyncCodex`` does."""
        await super().__aenter__()
        return self

    @property
    def probe(self) -> Probe:
        """The probe recording this client's turns (``probe.records`` holds them)."""
        return self._probed.probe


class _ProbedCodexClient(CodexClient):
    """The SDK's app-server client; its process is handed to the probe as it starts."""

    def __init__(
        self, config: CodexConfig | None, probe: Probe | None, conversation_id: str | None
    ) -> None:
        super().__init__(config=config)
        self._owns_probe = probe is None
        self.probe = probe if probe is not None else Probe(conversation_id=conversation_id)
        self._spawn_ns = 0

    def start(self) -> None:
        if self._proc is None:
            self._spawn_ns = monotonic_ns()
        super().start()

    def _start_stderr_drain_thread(self) -> None:
        # Called by start() right after the spawn, before any reader thread exists: the
        # pipes are swapped for the probe's pass-through ones before anyone reads them.
        if self._proc is not None:
            self._proc = self.probe.attach(self._proc, self._spawn_ns)
        super()._start_stderr_drain_thread()

    def close(self) -> None:
        proc = self._proc
        super().close()
        _close_pipes(proc, (self._reader_thread, self._stderr_thread))
        if self._owns_probe:
            self.probe.close(timeout=5.0, delivery_wait=0.0)


def _close_pipes(proc: subprocess.Popen[Any] | None, readers: Sequence[Thread | None]) -> None:
    """Close the pass-through stdout and stderr the SDK reads and never closes itself.

    Only once its reader threads ended (the process is gone, they read EOF): a file
    closed under a reading thread would make it raise.
    """
    if proc is None or any(t is not None and t.is_alive() for t in readers):
        return
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
