"""Probe every turn of ``claude-agent-sdk``: ``ClaudeSDKClient`` and ``query()``.

The SDK runs Claude Code in SDK mode (``--input-format stream-json``, DESIGN §3): one
process per client, one turn per message. Hand the SDK a probed transport and each turn
becomes a ``run_finished`` record, in the SDK's own process and subprocess::

    from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient
    from ttft_probe.integrations.claude_agent_sdk import probed_transport

    options = ClaudeAgentOptions(include_partial_messages=True)
    async with ClaudeSDKClient(options, transport=probed_transport(options)) as client:
        await client.query("Fix the failing test")
        async for message in client.receive_response():
            ...

``query(prompt=…, options=options, transport=probed_transport(options))`` works the same.
The transport is the SDK's own subprocess transport (same command line, environment and
shutdown); it also reads what crosses the CLI's stdin and stdout, timestamped as it is
read or written and parsed after the SDK has it.

What differs from ``ttft-probe run``:

* ``processSpawned`` is taken as the transport starts connecting: the SDK's own work
  before the spawn (finding the CLI, building its command line, well under 10 ms) counts
  as the CLI's boot, as it does for the product's user.
* The CLI's stderr is not read (the SDK reads it only for its ``stderr`` callback), so
  records have no ``first_stderr_ms``; the provider observer needs ``ttft-probe run``
  (``ttft-probe shim … --observe-provider`` gives the SDK an executable that uses it).
* Any transport with a custom ``Transport`` skips the SDK's session-store resume
  (``session_store`` options): that is the SDK's rule for custom transports.

Needs ``claude-agent-sdk`` 0.2.190 or later (``pip install 'ttft-probe[claude-agent-sdk]'``):
the transport builds on its ``SubprocessCLITransport``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ttft_probe._clock import monotonic_ns
from ttft_probe.errors import ConfigError
from ttft_probe.spawn import DEFAULT_DRAIN_TIMEOUT_S, Probe

try:
    import anyio
    from anyio.abc import ByteReceiveStream, ByteSendStream
    from anyio.streams.text import TextReceiveStream, TextSendStream
    from claude_agent_sdk import ClaudeAgentOptions
    from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "ttft_probe.integrations.claude_agent_sdk needs claude-agent-sdk 0.2.190 or later: "
        "pip install 'ttft-probe[claude-agent-sdk]'"
    ) from exc

if TYPE_CHECKING:
    from ttft_probe._prespawn import Arrival
    from ttft_probe._run import ProcessTracker
    from ttft_probe.spawn import TrackedProcess

__all__ = ["ProbedTransport", "probed_transport"]


def probed_transport(
    options: ClaudeAgentOptions | None = None,
    *,
    probe: Probe | None = None,
    conversation_id: str | None = None,
) -> ProbedTransport:
    """A transport for ``ClaudeSDKClient(options, transport=…)`` or ``query(…, transport=…)``.

    Args:
        options: The options you give the SDK (the same object): the transport builds the
            CLI's command line from them, as the SDK's own transport does.
        probe: The :class:`~ttft_probe.Probe` to record with (its store, sinks, caller
            context); default: a new one, closed with the transport.
        conversation_id: Your conversation's id for the records (default: the session
            id Claude Code reports). Ignored when ``probe`` is given.

    Returns:
        A :class:`ProbedTransport`; connect it once (the SDK does).
    """
    opts = options if options is not None else ClaudeAgentOptions()
    return ProbedTransport(opts, probe=probe, conversation_id=conversation_id)


class ProbedTransport(SubprocessCLITransport):
    """The SDK's subprocess transport, with Claude Code's stdio read by a probe.

    See :func:`probed_transport`. Each user message the SDK writes is a turn; its record
    is stored when the turn's ``result`` arrives, and the last ones when the process ends.
    """

    def __init__(
        self,
        options: ClaudeAgentOptions,
        *,
        probe: Probe | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """Build the transport; nothing runs before :meth:`connect`."""
        if options.can_use_tool and not options.permission_prompt_tool_name:
            # As the SDK configures its own transport: permission prompts over stdio.
            options = dataclasses.replace(options, permission_prompt_tool_name="stdio")
        super().__init__(prompt=_no_prompt(), options=options)
        self._owns_probe = probe is None
        self._probe = probe if probe is not None else Probe(conversation_id=conversation_id)
        self._tracked: TrackedProcess | None = None
        self._stdout_tap: _StdoutTap | None = None

    @property
    def probe(self) -> Probe:
        """The probe recording this transport's turns (``probe.records`` holds them)."""
        return self._probe

    async def connect(self) -> None:
        """Start Claude Code as the SDK does, and start reading its stdio."""
        if self._process:
            return
        spawn_ns = monotonic_ns()
        await super().connect()
        process = self._process
        if process is None or process.stdout is None or process.stdin is None:
            return  # the SDK raised already if it could not start the CLI
        argv = self._build_command()  # the command line the SDK just ran (pure)
        tracked = self._tracked = self._probe.track(argv, spawn_ns=spawn_ns)
        self._stdout_tap = _StdoutTap(process.stdout, tracked)
        self._stdout_stream = TextReceiveStream(self._stdout_tap)
        self._stdin_stream = TextSendStream(_StdinTap(process.stdin, tracked.tracker))
        tracked.watch_exit(process.pid, lambda: process.returncode, DEFAULT_DRAIN_TIMEOUT_S)

    async def close(self) -> None:
        """Close as the SDK does; the turns still open are recorded when the CLI exits."""
        if self._stdout_tap is not None:
            self._stdout_tap.settle()
        await super().close()
        tracked = self._tracked
        if tracked is not None:
            # The SDK waited for the exit; let the watcher finish the open turns (bounded).
            await anyio.to_thread.run_sync(tracked.done.wait, 5.0)
        if self._owns_probe:
            await anyio.to_thread.run_sync(_close_probe, self._probe)


def _close_probe(probe: Probe) -> None:
    probe.close(timeout=5.0, delivery_wait=0.0)


async def _no_prompt() -> AsyncIterator[dict[str, Any]]:
    """The transport's ``prompt``: the SDK writes the messages itself (it streams)."""
    nothing: tuple[dict[str, Any], ...] = ()
    for message in nothing:
        yield message


class _StdoutTap(ByteReceiveStream):
    """Claude Code's stdout as the SDK reads it, each read timestamped on arrival.

    A read is parsed when the SDK asks for the next one, i.e. after the SDK has handled
    it: the probe's parsing never delays a message on its way to the application.
    """

    def __init__(self, inner: ByteReceiveStream, tracked: TrackedProcess) -> None:
        self._inner = inner
        self._tracked = tracked
        self._pending: Arrival | None = None

    def settle(self) -> None:
        """Parse the last read, which the SDK has had by now."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._tracked.tracker.passed(pending)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self.settle()
        try:
            data: bytes = await self._inner.receive(max_bytes)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._tracked.tracker.on_stdout_eof(monotonic_ns())
            self._tracked.stdout_closed()
            raise
        self._pending = self._tracked.tracker.arrive("stdout", data)
        return data

    async def aclose(self) -> None:
        self.settle()
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes


class _StdinTap(ByteSendStream):
    """What the SDK writes to Claude Code's stdin, timestamped as it is written.

    Parsed once written; bytes that could not be written are not parsed (they were never
    a message the CLI got).
    """

    def __init__(self, inner: ByteSendStream, tracker: ProcessTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    async def send(self, item: bytes) -> None:
        arrival = self._tracker.arrive("stdin", bytes(item))
        try:
            await self._inner.send(item)
        except BaseException:
            arrival.data = b""
            raise
        finally:
            self._tracker.passed(arrival)

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes
