"""Probe an ACP agent started by the ``agent-client-protocol`` SDK's ``spawn_agent_process``.

A drop-in for ``acp.spawn_agent_process``: the same arguments and the same
``(ClientSideConnection, process)`` pair, with the agent spawned by
:meth:`ttft_probe.Probe.create_subprocess_exec`. Every ``session/prompt`` becomes a
``run_finished`` record (the ``acp-json-rpc`` family, DESIGN §3)::

    from ttft_probe.integrations.acp import spawn_agent_process   # instead of acp's

    async with spawn_agent_process(MyClient(), "claude-agent-acp") as (conn, process):
        await conn.initialize(protocol_version=1)
        session = await conn.new_session(cwd=str(work), mcp_servers=[])
        await conn.prompt(session_id=session.session_id, prompt=[text_block("Hi")])

Bytes pass through the probe's pumps before they are parsed; the agent's environment
and shutdown (stdin EOF, then ``terminate``, then ``kill``) are the SDK's.
``observe_provider`` works here: the probe spawns the agent.

Needs ``agent-client-protocol`` 0.12 or later (``pip install 'ttft-probe[acp]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from ttft_probe.errors import ConfigError
from ttft_probe.spawn import Probe

try:
    from acp import Agent, Client
    from acp.client.connection import ClientSideConnection
    from acp.transports import default_environment
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "ttft_probe.integrations.acp needs agent-client-protocol 0.12 or later: "
        "pip install 'ttft-probe[acp]'"
    ) from exc

__all__ = ["spawn_agent_process"]

_SHUTDOWN_TIMEOUT_S = 2.0
"""As the SDK's ``spawn_stdio_transport``: the wait for an exit after stdin EOF, then after
``terminate``."""


@contextlib.asynccontextmanager
async def spawn_agent_process(
    to_client: Callable[[Agent], Client] | Client,
    command: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    transport_kwargs: Mapping[str, Any] | None = None,
    probe: Probe | None = None,
    conversation_id: str | None = None,
    **connection_kwargs: Any,
) -> AsyncIterator[tuple[ClientSideConnection, asyncio.subprocess.Process]]:
    """Spawn an ACP agent under the probe and connect to it, as ``acp.spawn_agent_process``.

    Args:
        to_client: Your ``Client`` (or a factory taking the agent connection).
        command: The agent executable.
        *args: Its arguments.
        env: Variables added to the SDK's trimmed default environment.
        cwd: The agent's working directory.
        transport_kwargs: ``stderr`` (default ``PIPE``), ``limit`` and
            ``shutdown_timeout`` (s), as the SDK takes them.
        probe: The :class:`~ttft_probe.Probe` to record with; default: a new one, closed
            when the block ends.
        conversation_id: Your conversation's id for the records (default: the ACP
            session id). Ignored when ``probe`` is given.
        connection_kwargs: Passed to ``ClientSideConnection``.

    Yields:
        ``(connection, process)``, with ``process.stdout``/``stdin`` the probe's
        pass-through streams.
    """
    owned = probe is None
    probe = probe if probe is not None else Probe(conversation_id=conversation_id)
    options = dict(transport_kwargs or {})
    shutdown = float(options.pop("shutdown_timeout", _SHUTDOWN_TIMEOUT_S))
    spawn_kwargs: dict[str, Any] = {"stderr": options.pop("stderr", asyncio.subprocess.PIPE)}
    if options.get("limit") is not None:
        spawn_kwargs["limit"] = options.pop("limit")
    merged_env = dict(default_environment())
    merged_env.update(env or {})
    process = await probe.create_subprocess_exec(
        command,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=merged_env,
        cwd=None if cwd is None else str(cwd),
        **spawn_kwargs,
    )
    try:
        assert process.stdin is not None  # noqa: S101 - spawned with PIPE
        assert process.stdout is not None  # noqa: S101
        conn = ClientSideConnection(to_client, process.stdin, process.stdout, **connection_kwargs)
        try:
            yield conn, process
        finally:
            await conn.close()
    finally:
        await _shut_down(process, shutdown)
        _release_pipes(process)
        if owned:
            await probe.__aexit__(None, None, None)
            await asyncio.get_running_loop().run_in_executor(None, _close_probe, probe)


def _close_probe(probe: Probe) -> None:
    probe.close(timeout=5.0, delivery_wait=0.0)


def _release_pipes(process: asyncio.subprocess.Process) -> None:
    """Close the exited agent's pipes, ending the probe's reads of them.

    An npm launcher's native child can keep them open after the launcher exits; asyncio
    then never closes the process transport, and the SDK's own shutdown leaves it so.
    """
    transport = getattr(process, "_transport", None)
    if transport is not None and process.returncode is not None:
        with contextlib.suppress(Exception):
            transport.close()


async def _shut_down(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """Stdin EOF, a grace period, then ``terminate`` and ``kill`` (the SDK's own order)."""
    stdin = process.stdin
    if stdin is not None:
        try:
            stdin.write_eof()
        except (AttributeError, OSError, RuntimeError):
            stdin.close()
        with contextlib.suppress(Exception):
            await stdin.drain()
        with contextlib.suppress(Exception):
            stdin.close()
        with contextlib.suppress(Exception):
            await stdin.wait_closed()
    try:
        await asyncio.wait_for(process.wait(), timeout=grace_s)
    except TimeoutError:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=grace_s)
        except TimeoutError:
            process.kill()
            await process.wait()
