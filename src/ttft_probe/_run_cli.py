"""What ``ttft-probe run`` does once its options are read: probe the agent, say, exit.

Shared by the click command (:func:`ttft_probe.cli.run`) and the console script's fast
path (:func:`run_spawned`, in the worker :mod:`ttft_probe._lead` forked after the spawn),
which reads its options without click and so never loads it. Messages go to stderr as
plain lines, ``ttft-probe: …``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from ttft_probe._hints import granularity_hint
from ttft_probe.errors import TtftProbeError

if TYPE_CHECKING:
    from ttft_probe._prespawn import Spawned
    from ttft_probe._run import RunResult
    from ttft_probe.adapters._base import AdapterOptions
    from ttft_probe.record import MarkerTimes, RunRecord

__all__ = [
    "EXIT_USAGE",
    "STORE_WAIT_S",
    "breakdown_line",
    "fail",
    "ms_text",
    "resume_gc",
    "run_agent",
    "run_spawned",
    "say_warnings",
]

EXIT_USAGE = 2
STORE_WAIT_S = 2.0
"""How long `run` waits for its runs to be written after the agent exited (s)."""


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # noqa: T201 - the CLI's voice


def fail(message: str) -> NoReturn:
    """Say ``ttft-probe: error: message`` and exit 2 (a usage error)."""
    _say(f"ttft-probe: error: {message}")
    sys.exit(EXIT_USAGE)


class _StderrLines(logging.Handler):
    """The library's warnings as ``ttft-probe: warning: …`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _say(f"ttft-probe: {record.levelname.lower()}: {self.format(record)}")
        except Exception:  # noqa: BLE001 - a closed stderr: nowhere left to say it
            self.handleError(record)


def say_warnings() -> None:
    """Print the library's warnings (a store that cannot be written, …) in the CLI's voice.

    Without a handler they would go out bare, through logging's last-resort handler.
    """
    logger = logging.getLogger("ttft_probe")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())


def resume_gc() -> None:
    """Turn the cycle collector back on if the console script paused it while loading.

    What was loaded so far is frozen first: it is never garbage, and later collections
    during a long agent run need not walk it again.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def run_agent(
    command: list[str],
    *,
    agent: str | None = None,
    family: str | None = None,
    conversation_id: str | None = None,
    turn_ordinal: int | None = None,
    session_resumed: bool | None = None,
    timeout: float | None = None,
    adapter_options: AdapterOptions | None = None,
    observe_provider: bool | str = False,
    delivery_wait: float = 0.0,
    capture_content: bool = False,
    quiet: bool = False,
    store: str | None = None,
    spawned: Spawned | None = None,
) -> NoReturn:
    """Run ``command`` under a probe (or take over ``spawned``), say the breakdown, exit.

    Exits with the agent's status (128+N for signal N); 2 with ``ttft-probe: error: …``
    when the probe cannot be configured or the command cannot be started.
    """
    from ttft_probe.spawn import Probe  # noqa: PLC0415 - keep start-up cheap

    say_warnings()
    if observe_provider:
        # This process runs the observer thread next to the pump threads: hand the GIL
        # over within 0.5 ms rather than the default 5 ms, so that a request is
        # timestamped when it arrives, not when a pump thread lets go.
        sys.setswitchinterval(0.0005)
    try:
        probe = Probe(
            agent=agent,
            family=family,
            conversation_id=conversation_id,
            turn_ordinal=turn_ordinal,
            session_resumed=session_resumed,
            store=store,
            adapter_options=adapter_options,
            observe_provider=observe_provider,
            # A detached `flush` delivers, started once the runs are stored (probe.close):
            # never this process, which exits right after.
            deliver="detached",
            capture_content=capture_content,
        )
        resume_gc()
        # Spawned already: the lead process applies the timeout (_prespawn).
        outcome = probe.run(command, timeout=None if spawned else timeout, spawned=spawned)
    except TtftProbeError as exc:
        fail(str(exc))
    except FileNotFoundError:
        fail(f"command not found: {command[0]}")
    except PermissionError:
        fail(f"command not executable: {command[0]}")
    if not quiet:
        _say_breakdowns(outcome.results)
    if not probe.close(timeout=STORE_WAIT_S, delivery_wait=delivery_wait):
        from ttft_probe.sinks.store import default_store_path  # noqa: PLC0415

        where = store or default_store_path()
        kept = (f"the run was kept in {probe.spilled[0].parent} and the next ttft-probe "
                "command that opens the store adds it"
                if probe.spilled else "the run could not be kept for later either")
        _say(f"ttft-probe: warning: the store at {where} was still busy after "
             f"{STORE_WAIT_S:g} s (locked by another process, or a slow disk): {kept}; "
             "set TTFT_PROBE_HOME or --store to another location if it stays busy")
    if spawned is not None:
        sys.stderr.flush()
        spawned.release()  # the lead process exits with the agent's status now
    exit_now(outcome.exit_status)


def run_spawned(spawned: Spawned) -> NoReturn:
    """The console script's fast path: take over the agent :mod:`ttft_probe._prespawn` started.

    Its options were read by :func:`ttft_probe._prespawn.parse_run`, which accepts only
    what the click command reads the same way.
    """
    o = spawned.options or {}

    def text(key: str) -> str | None:
        value = o.get(key)
        return value if isinstance(value, str) else None

    turn = o.get("turn_ordinal")
    resumed = o.get("session_resumed")
    wait = o.get("delivery_wait")
    run_agent(
        list(spawned.argv),
        agent=text("agent"),
        family=text("family"),
        conversation_id=text("conversation_id"),
        turn_ordinal=turn if isinstance(turn, int) else None,
        session_resumed=resumed if isinstance(resumed, bool) else None,
        observe_provider=text("upstream") or bool(o.get("observe_provider")),
        delivery_wait=wait if isinstance(wait, float) else 0.0,
        capture_content=bool(o.get("capture_content")),
        quiet=bool(o.get("quiet")),
        store=text("store"),
        spawned=spawned,
    )


def _say_breakdowns(results: Sequence[RunResult]) -> None:
    """One breakdown line per run on stderr, each with its hints."""
    for result in results:
        _say(breakdown_line(result.record, result.times))
        for hint in (_hint(result.record, result.times), granularity_hint(result.record)):
            if hint:
                _say(f"ttft-probe: hint: {hint}")


def exit_now(status: int) -> NoReturn:
    """Exit with ``status`` without the interpreter's teardown.

    Collecting and tearing down every imported module costs ~20 ms on a small machine, all
    of it added to the agent's wall time. Nothing is left for it to do: the runs are
    stored (``Probe.close``), delivery is a detached process, and stdio and logging are
    flushed here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing to lose
            stream.flush()
    os._exit(status)


def ms_text(value: float | None) -> str:
    """A duration in ms with one decimal, or ``—`` for none."""
    return "—" if value is None else f"{value:.1f}"


def breakdown_line(record: RunRecord, times: MarkerTimes | None = None) -> str:
    """The one-line breakdown of a run that ``ttft-probe run`` prints to stderr.

    The segments are listed in the order they happened: a turn set up after its prompt
    (Claude Code in SDK mode, ``times.prompt_first``) shows ``client_wait`` before
    ``session_init``.
    """
    turn = f"turn {record.turn_ordinal}" if record.turn_ordinal else "turn ?"
    how = (
        "reused process"
        if record.process_reused
        else ("resumed" if record.session_resumed else "fresh")
    )
    if record.spawn_to_first_token_ms is None:
        body = "no first token"
    else:
        prompt_first = times is not None and times.prompt_first
        reused = record.process_reused
        # A reused process's run has no boot and (but for a turn set up after its prompt)
        # no session set-up of its own: those zeros are not measurements, so not shown.
        ready = None if reused and not record.cli_ready_ms else record.cli_ready_ms
        init = None if reused and not prompt_first else record.session_init_ms
        parts = [] if reused and ready is None else [f"cli_ready {ms_text(ready)}"]
        init_part = None if reused and init is None else f"session_init {ms_text(init)}"
        wait = f"client_wait {ms_text(record.client_wait_ms)}" if record.client_wait_ms else None
        parts += [p for p in ((wait, init_part) if prompt_first else (init_part, wait)) if p]
        model = f"model_first_token {ms_text(record.model_first_token_ms)}"
        if record.provider_first_byte_ms is not None and record.cli_forward_ms is not None:
            model += (f" (provider {ms_text(record.provider_first_byte_ms)}"
                      f" + cli forward {ms_text(record.cli_forward_ms)})")
        parts.append(model)
        body = f"first token {ms_text(record.spawn_to_first_token_ms)} ms = " + " + ".join(parts)
        if record.remainder_ms:
            body += f" + remainder {ms_text(record.remainder_ms)}"
        if record.first_token_granularity is not None:
            body += f" [{record.first_token_granularity.value}]"
    reason = record.timing_unavailable_reason
    tail = record.status.value + (f", {reason.value}" if reason else "")
    return f"ttft-probe: {record.agent} {turn} {how}: {body} | {tail}"


def _hint(record: RunRecord, times: MarkerTimes | None = None) -> str | None:
    if record.observer_error is not None:
        return f"the provider observer was off: {record.observer_error}"
    reason = record.timing_unavailable_reason
    if reason is not None and reason.value == "cli_ready_not_observable":
        return ("the client wrote its first message before the CLI showed it was ready, so "
                "the CLI's boot cannot be told from the client's wait: send a control_request "
                "initialize first and wait for its control_response (the Agent SDKs do)")
    if record.session_init_source is None or record.session_init_source.value != "init_message":
        return None
    if times is not None and times.prompt_first:
        return ("session_init_ms ends at the turn's init line, not at its first model "
                "request; add --observe-provider to time that request")
    if not record.process_reused:
        return ("session_init_ms is from the agent's init line, so the session set-up is "
                "inside cli_ready_ms; add --observe-provider to time the first model request")
    return None


