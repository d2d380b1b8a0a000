"""``ttft-probe``: a thin command line over the library.

It parses options, calls :mod:`ttft_probe`, and maps :class:`TtftProbeError` to exit
code 2. Everything a library user would also need lives in the library.
"""

from __future__ import annotations

import fcntl
import re
import sys
from typing import TYPE_CHECKING

import click

from ttft_probe._run_cli import (
    breakdown_line,
    fail,
    ms_text,
    resume_gc,
    run_agent,
    say_warnings,
)
from ttft_probe._version import VERSION
from ttft_probe.errors import TtftProbeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ttft_probe.analysis.gate import AbEffect as AbEffectForGate
    from ttft_probe.record import RunRecord

__all__ = ["breakdown_line", "main"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_store_option = click.option(
    "--store",
    "store",
    type=click.Path(dir_okay=False),
    envvar=None,
    help="SQLite file of the run store. Default: $TTFT_PROBE_HOME/runs.sqlite3, else the "
    "user state dir (e.g. ~/.local/state/ttft-probe/runs.sqlite3).",
)


_EPILOG = """Examples:

\b
  ttft-probe run -- claude -p "hi" --output-format stream-json --verbose --include-partial-messages
  ttft-probe run --observe-provider -- codex exec --json --skip-git-repo-check "hi"
  ttft-probe run --turn 2 -- codex exec --json resume THREAD_ID "and now?"
  ttft-probe runs --last 5
  ttft-probe show RUN_ID --chart waterfall.png
  ttft-probe report --since 7d --chart ttft.png
  ttft-probe gate --agent claude_code
"""


@click.group(context_settings=CONTEXT, epilog=_EPILOG)
@click.version_option(VERSION, prog_name="ttft-probe")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Where does an AI coding agent's wait before the first token go?

    Put `ttft-probe run --` in front of an agent command. The agent runs exactly as it
    would (same output, same exit code); ttft-probe watches its protocol output and
    splits spawn-to-first-token into cli_ready_ms (the CLI booting), session_init_ms
    (creating or resuming the session) and model_first_token_ms (the model's own first
    token). Every turn is kept in a local SQLite store; `ttft-probe runs` lists them,
    `ttft-probe show RUN_ID` draws one run's waterfall of model requests,
    `ttft-probe report` and `ttft-probe gate` answer what to fix, `ttft-probe ab`
    measures fresh against resumed, `ttft-probe flush` delivers queued runs.
    """
    if ctx.invoked_subcommand != "run":  # `run` resumes it once the probe is loaded
        resume_gc()


_agent_option = click.option(
    "--agent",
    help="Agent name for the record (default: inferred from the executable, "
    "e.g. claude_code, codex, gemini, claude_code_acp, codex_acp, opencode_acp).",
)
def _check_family(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from ttft_probe.adapters import check_family  # noqa: PLC0415 - only when given

    try:
        return None if value is None else check_family(value)
    except TtftProbeError as exc:
        raise click.BadParameter(str(exc)) from None


_family_option = click.option(
    "--family",
    metavar="NAME",
    callback=_check_family,
    help="Runtime family whose marker rules apply: claude-stream-json, json-event-stream, "
    "acp-json-rpc, plain, or an installed plugin's (default: inferred from the command).",
)
_conversation_option = click.option(
    "--conversation",
    "conversation_id",
    metavar="ID",
    help="Conversation id (default: the agent's session id).",
)
_observe_option = click.option(
    "--observe-provider", is_flag=True,
    help="Put a local pass-through proxy between the agent and its provider to time the "
    "first model request (sessionInitDone for one-shot CLIs) and the provider's first "
    "content byte. Points the agent's base-URL variable (or codex's provider base_url) at "
    "127.0.0.1; bodies, headers and keys are never logged.")
_upstream_option = click.option(
    "--upstream", metavar="URL",
    help="With --observe-provider: the provider to forward to (default: what the agent "
    "would use — its base-URL variable, codex's config, or the public API).")
_capture_option = click.option(
    "--capture-content", is_flag=True,
    help="Also keep each turn's prompt and answer text, as the agent's stdin and stdout "
    "carry them, in the store and in the spans, PostHog and Langfuse. Off by default: "
    "without it no prompt or answer text, argv or environment is kept or sent. Even with "
    "it, argv and the environment never are.")


@main.command(context_settings=CONTEXT)
@_agent_option
@_family_option
@_conversation_option
@click.option(
    "--turn",
    "turn_ordinal",
    type=click.IntRange(min=1),
    metavar="N",
    help="Turn ordinal: 1 for a conversation's first message, 2+ after "
    "(default: inferred from resume flags, ACP session/load and the store).",
)
@click.option(
    "--resumed/--fresh",
    "session_resumed",
    default=None,
    help="Whether the agent continues an existing session (default: inferred).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="End the agent after this long; the run is recorded as timed_out.",
)
@click.option("--ready-regex", metavar="REGEX", help="plain family: the line marking cliReady.")
@click.option(
    "--session-regex", metavar="REGEX", help="plain family: the line marking sessionInitDone."
)
@click.option("--token-regex", metavar="REGEX", help="plain family: the line marking firstToken.")
@_observe_option
@_upstream_option
@click.option("--delivery-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="SECONDS",
              help="Delivery to the configured sinks (OTLP, PostHog, Langfuse) runs in a "
              "detached `ttft-probe flush` after the agent exits; wait at most this long for it. "
              "What is not confirmed stays queued for the next run or `ttft-probe flush`.")
@_capture_option
@click.option("-q", "--quiet", is_flag=True, help="Do not print the breakdown to stderr.")
@_store_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    agent: str | None,
    family: str | None,
    conversation_id: str | None,
    turn_ordinal: int | None,
    session_resumed: bool | None,
    timeout: float | None,
    ready_regex: str | None,
    session_regex: str | None,
    token_regex: str | None,
    observe_provider: bool,
    upstream: str | None,
    delivery_wait: float,
    capture_content: bool,
    quiet: bool,
    store: str | None,
    command: tuple[str, ...],
) -> None:
    """Run an agent command under the probe: `ttft-probe run [OPTIONS] -- COMMAND...`.

    The command's stdin, stdout and stderr pass through unchanged and ttft-probe exits
    with its exit code (128+N when a signal N ended it); SIGINT and SIGTERM reach it.
    At the end one line per turn goes to stderr, e.g. "ttft-probe: claude_code turn 1
    fresh: first token 1162.0 ms = cli_ready 601.9 + session_init 55.9 +
    model_first_token 504.2 [delta] | succeeded", with a hint when the breakdown could
    be sharper (--observe-provider, --include-partial-messages).
    """
    from ttft_probe._prespawn import started  # noqa: PLC0415 - keep start-up cheap
    from ttft_probe.adapters._base import AdapterOptions  # noqa: PLC0415

    run_agent(
        list(command),
        agent=agent,
        family=family,
        conversation_id=conversation_id,
        turn_ordinal=turn_ordinal,
        session_resumed=session_resumed,
        timeout=timeout,
        adapter_options=AdapterOptions(
            cli_ready_regex=_regex(ready_regex, "--ready-regex"),
            session_init_regex=_regex(session_regex, "--session-regex"),
            first_token_regex=_regex(token_regex, "--token-regex"),
        ),
        observe_provider=upstream or observe_provider,
        delivery_wait=delivery_wait,
        capture_content=capture_content,
        quiet=quiet,
        store=store,
        spawned=started(),  # the agent, if the console script spawned it already (_entry)
    )


def _flush_in_background(store: str | None) -> None:
    """Hand the outbox to a detached `ttft-probe flush` when a sink is configured.

    For `ab`, whose probes only queue (``run_ab`` is a library call): the runs are
    already in the store; the flush delivers them without holding up this process.
    ``run`` gets the same flush from its probe (``Probe(deliver="detached")``).
    """
    from ttft_probe.sinks.outbox import configured_sinks, start_flush  # noqa: PLC0415

    if not configured_sinks():
        return
    try:
        start_flush(store)
    except OSError as exc:
        click.echo(f"ttft-probe: could not start delivery ({exc}); run `ttft-probe flush`",
                   err=True)


def _regex(pattern: str | None, flag: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise click.BadParameter(f"not a valid regular expression: {exc}", param_hint=flag) from exc


_DOCTOR_EXIT = {True: 0, False: 1}
_DOCTOR_HELP = """Check that the probe sees every marker of an agent command.

`ttft-probe doctor [OPTIONS] -- COMMAND...`

Runs COMMAND once, as you would run it under `ttft-probe run`, against a fake provider
built into ttft-probe (first token 300 ms after each request), never a real one: the
agent gets a scratch HOME, a dummy key and its base URL pointed at the fake provider;
your provider keys and base URLs are left out of its environment. Where the agent waits
for a client (Claude Code with --input-format stream-json, ACP agents, codex
app-server), doctor plays one and sends one short message.

It prints, for each marker of the family (cliReady, sessionInitDone, promptSent,
firstToken), whether it was seen and when (ms from the spawn), and what to change
when it was not. Nothing is stored or sent.

\b
Exit status: 0 every marker the family defines was seen, 1 one was not, 2 a usage
error (no command, an unknown family, a command that is not found).

\b
Examples:
  ttft-probe doctor -- claude -p hi --output-format stream-json --verbose
  ttft-probe doctor -- claude --output-format stream-json --verbose --input-format stream-json
  ttft-probe doctor -- codex-acp
  ttft-probe doctor --family plain -- my-agent "say hi"
"""


@main.command(context_settings=CONTEXT, help=_DOCTOR_HELP)
@_agent_option
@_family_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True, metavar="SECONDS", help="How long the agent gets to answer.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def doctor(agent: str | None, family: str | None, timeout: float,
           command: tuple[str, ...]) -> None:
    """Check that the probe sees every marker of COMMAND (see `--help`)."""
    from ttft_probe.doctor import check_command, run_doctor  # noqa: PLC0415 - doctor only

    say_warnings()
    try:
        check_command(command)
        report = run_doctor(command, agent=agent, family=family, timeout=timeout)
    except TtftProbeError as exc:
        fail(str(exc))
    except FileNotFoundError:
        fail(f"command not found: {command[0]}")
    except PermissionError:
        fail(f"command not executable: {command[0]}")
    _print_doctor(report)
    sys.exit(_DOCTOR_EXIT[report.ok])


def _print_doctor(report: DoctorReport) -> None:
    """Each marker, seen or not (with the fix), the notes, and the agent's output on failure."""
    click.echo(f"ttft-probe doctor: {report.agent} ({report.family}, {report.mode}) "
               "against the built-in fake provider")
    for check in report.checks:
        when = f"{check.at_ms:9.1f} ms" if check.at_ms is not None else "        —   "
        state = "seen    " if check.seen else "NOT SEEN"
        detail = f"  {check.detail}" if check.detail else ""
        click.echo(f"  {check.marker.value:<16} {state} {when}{detail}")
        if check.fix is not None:
            click.echo(f"    fix: {check.fix}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    if not report.ok:
        click.echo(f"  the agent exited with {report.exit_code}; the fake provider answered "
                   f"{report.provider_requests} generation request(s)")
        for name, tail in (("stdout", report.stdout_tail), ("stderr", report.stderr_tail)):
            if tail.strip():
                click.echo(f"  its {name} (last lines):")
                for line in tail.strip().splitlines()[-8:]:
                    click.echo(f"    {line[:200]}")
    verdict = "every marker was seen" if report.ok else "a marker was not seen"
    click.echo(f"ttft-probe doctor: {verdict}")


_SHIM_HELP = """Write an executable NAME that runs COMMAND under the probe.

`ttft-probe shim [OPTIONS] NAME -- COMMAND...`

For SDKs that start the agent themselves from an executable path, in any language:
give them NAME instead of the agent. NAME runs `ttft-probe run [OPTIONS] -- COMMAND`
with the arguments the SDK passes appended, so every turn is recorded (SDK mode,
app-server and ACP agents: one record per message). COMMAND's executable is resolved
to its absolute path now, so NAME may even be called like the agent.

\b
Examples:
  ttft-probe shim ./claude-probed -- claude
    # TypeScript Claude Agent SDK: query({ prompt, options: {
    #   pathToClaudeCodeExecutable: "./claude-probed" } })
  ttft-probe shim --observe-provider ./codex-probed -- codex
    # openai-codex: CodexConfig(codex_bin="./codex-probed")
  ttft-probe shim ./agent-acp -- npx claude-agent-acp
    # any ACP client: spawn "./agent-acp"
"""
_SHIM_TEMPLATE = """#!/bin/sh
# Written by `ttft-probe shim` (ttft-probe {version}): runs the agent under `ttft-probe run`,
# with the arguments this script is given after the agent command. Delete it to stop probing.
exec {run} -- {command} "$@"
"""


@main.command(context_settings=CONTEXT, help=_SHIM_HELP)
@_agent_option
@_family_option
@_conversation_option
@_observe_option
@_upstream_option
@_capture_option
@_store_option
@click.option("--show-breakdown", is_flag=True,
              help="Let `ttft-probe run` print its breakdown line on stderr (off: SDKs read "
              "the agent's stderr, e.g. into their error messages).")
@click.option("--force", is_flag=True, help="Overwrite NAME if it exists.")
@click.argument("name", type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def shim(
    agent: str | None,
    family: str | None,
    conversation_id: str | None,
    observe_provider: bool,
    upstream: str | None,
    capture_content: bool,
    store: str | None,
    show_breakdown: bool,
    force: bool,
    name: str,
    command: tuple[str, ...],
) -> None:
    """Write an executable that runs an agent under the probe (see `--help`)."""
    import shlex  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    target = Path(name).absolute()
    executable = shutil.which(command[0])
    if executable is None:
        fail(f"command not found: {command[0]} (give its path, or put it on PATH)")
    if Path(executable).resolve() == target.resolve():
        fail(f"{command[0]} resolves to the shim itself ({target}): give the agent's real path")
    if target.exists() and not force:
        fail(f"{target} exists; pass --force to overwrite it")
    run_argv = [sys.executable, "-m", "ttft_probe", "run"]
    if not show_breakdown:
        run_argv.append("--quiet")
    for flag, value in (("--agent", agent), ("--family", family),
                        ("--conversation", conversation_id), ("--upstream", upstream),
                        ("--store", str(Path(store).absolute()) if store else None)):
        if value is not None:
            run_argv += [flag, value]
    for flag, on in (("--observe-provider", observe_provider),
                     ("--capture-content", capture_content)):
        if on:
            run_argv.append(flag)
    agent_argv = [str(Path(executable).absolute()), *command[1:]]
    text = _SHIM_TEMPLATE.format(version=VERSION, run=shlex.join(run_argv),
                                 command=shlex.join(agent_argv))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o755)
    except OSError as exc:
        fail(f"could not write {target}: {exc.strerror or exc}")
    click.echo(f"ttft-probe: wrote {target}: it runs {shlex.join(agent_argv)} under "
               "ttft-probe run; give it to your SDK in place of the agent")


@main.command(context_settings=CONTEXT)
@click.option(
    "--last",
    "last",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    metavar="N",
    help="Show the N most recent runs.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every stored run.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run_finished records as JSON lines instead of a table.",
)
@_store_option
def runs(last: int, show_all: bool, as_json: bool, store: str | None) -> None:
    """List stored runs, oldest first: a table, or `--json` records (one per line)."""
    from ttft_probe.sinks.store import Store  # noqa: PLC0415 - keep start-up cheap

    say_warnings()
    try:
        records = Store(store).last(None if show_all else last)
    except TtftProbeError as exc:
        fail(str(exc))
    if as_json:
        for record in records:
            click.echo(record.to_json())
        return
    _print_table(records)


_SHOW_HELP = """One run's waterfall: its markers and every model request on one time axis.

RUN_ID is a run id as `ttft-probe runs` lists it: the whole id or a unique start of it
(the table's 8 characters are enough). Times are ms from the spawn (processSpawned), or
from the turn's prompt (promptSent) for a turn on an already running process.

The table has a row per marker (processSpawned, cliReady, sessionInitDone, promptSent,
firstToken, end) and one per model request the provider observer saw in the turn: its
kind (generation, or a side call: count_tokens, title, quota, routing, prewarm, head,
other), model, HTTP status, start, first content byte and end, request body (KiB), and
the usage the provider reported: input tokens (cached included), cache read, cache
write, uncached (input − cache read) and output tokens; each with a bar on the common
axis. Below it: whether the prompt prefix was reused from the previous turn (and the
first section that changed) and the first generation request's usage. A marker that was
not observed reads "not observed", never 0; model requests are only known for runs
made with `ttft-probe run --observe-provider`.

Exit status: 0, or 2 when no stored run or several match RUN_ID, or the store cannot be
read.

\b
Examples:
  ttft-probe show 3f2b8c1e
  ttft-probe show 3f2b8c1e --chart turn2.svg
  ttft-probe show 3f2b8c1e --json
"""


@main.command("show", context_settings=CONTEXT, help=_SHOW_HELP)
@click.argument("run_id", metavar="RUN_ID")
@click.option("--json", "as_json", is_flag=True,
              help="Print the waterfall as one JSON object (markers and requests in ms from "
              "the spawn, the request usage, the record's usage and prefix fields).")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also draw the waterfall to FILE, .png or .svg: a bar per model request "
              "(darker up to its first content byte), a line per marker.")
@_store_option
def show_command(run_id: str, as_json: bool, chart_path: str | None, store: str | None) -> None:
    """One run's waterfall: its markers and every model request on one time axis."""
    import json  # noqa: PLC0415 - keep start-up cheap

    from ttft_probe.analysis.waterfall_view import (  # noqa: PLC0415
        load_view,
        waterfall_renderables,
        write_waterfall_chart,
    )
    from ttft_probe.sinks.store import Store  # noqa: PLC0415

    say_warnings()
    try:
        view = load_view(Store(store), run_id)
        if chart_path is not None:
            write_waterfall_chart(view, chart_path)
    except TtftProbeError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the chart: {exc}")
    if as_json:
        click.echo(json.dumps(view.to_dict(), indent=2))
    else:
        from rich.console import Console  # noqa: PLC0415 - only for the table

        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = max(console.width, 200)
        for part in waterfall_renderables(view):
            console.print(part)
    if chart_path is not None:
        click.echo(f"ttft-probe: chart written to {chart_path}", err=True)


@main.command(context_settings=CONTEXT)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="SECONDS", help="Per-batch bound for each sink.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--background", is_flag=True, hidden=True,
              help="Started by `run`: quiet, and exit at once if another flush is running.")
@_store_option
def flush(timeout: float, quiet: bool, background: bool, store: str | None) -> None:
    """Deliver every run still in the outbox to the configured sinks, now.

    Runs are sent to OTLP (OTEL_EXPORTER_OTLP_ENDPOINT), PostHog (POSTHOG_API_KEY,
    POSTHOG_HOST) and Langfuse (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_HOST)
    as those variables configure them; a run leaves the outbox only when its sink
    confirmed it. Exits 0 when nothing is left for a configured sink, 1 otherwise.
    """
    from rich.console import Console  # noqa: PLC0415 - only for flush
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from ttft_probe.sinks.outbox import Outbox, configured_sinks, switch_on_hint  # noqa: PLC0415
    from ttft_probe.sinks.store import Store  # noqa: PLC0415

    quiet = quiet or background
    console = Console(stderr=True, quiet=quiet)
    try:
        db = Store(store)
    except TtftProbeError as exc:
        fail(str(exc))
    # One flush at a time per store. A background flush leaves the work to one already
    # running: that one claims until nothing is left, new runs included.
    lock = db.path.with_name(db.path.name + ".flush.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (fcntl.LOCK_NB if background else 0))
    except BlockingIOError:
        sys.exit(0)
    specs = configured_sinks()
    pending = db.pending()
    if not specs:
        queued = ", ".join(f"{n} for {sink}" for sink, n in pending.items()) or "nothing"
        console.print(f"No sink is configured (set {switch_on_hint()}). Pending: {queued}.")
        sys.exit(1 if pending else 0)
    sinks = []
    for spec in specs:
        try:
            sink = spec.build()
        except TtftProbeError as exc:
            fail(f"{spec.name}: {exc}")
        if sink is not None:
            sinks.append(sink)
    total = sum(pending.get(s.name, 0) for s in sinks)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=False, disable=quiet) as bar:
        task = bar.add_task("delivering", total=total)
        results = Outbox(db, sinks).deliver_pending(
            due_only=False, timeout_s=timeout,
            progress=lambda _sink, n: bar.advance(task, n))
    for sink in sinks:
        sink.close()
    left = {name: n for name, n in db.pending().items() if name in {s.name for s in sinks}}
    for name, result in results.items():
        line = f"{name}: {result.delivered} delivered"
        if left.get(name):
            line += f", {left[name]} still queued ({result.error or 'not confirmed'})"
        console.print(line)
    sys.exit(1 if any(left.values()) else 0)


_since_option = click.option(
    "--since",
    default="7d",
    show_default=True,
    metavar="AGE",
    help="Window: runs that started in the last AGE, e.g. 30m, 12h, 7d, 2w; 'all' for every "
    "stored run. Wall clock (started_at, UTC).",
)
_source_option = click.option(
    "--source",
    type=click.Choice(["local", "posthog", "jaeger"]),
    default="local",
    show_default=True,
    help="Where the runs come from: the local store (needs no configuration), PostHog "
    "(the production cut; HogQL query API) or Jaeger (HTTP query API).",
)


_REPORT_HELP = """Where the wait goes, per agent and cohort: p50 / p90 of every segment.

One row per agent × cohort. A cohort is the turn (1 = a conversation's first
message, 2+ = a later one, ? = unknown) × fresh or resumed session × whether the
turn ran on an already running (reused) process. Cells are p50 / p90 in ms of
spawn_to_first_token_ms and of each segment (cli_ready, session_init, client_wait,
model_first_token); "init share" is session_init_ms / spawn_to_first_token_ms.

Excluded runs (failed, cancelled, timed out, or with a timing_unavailable_reason
such as a missing marker) are counted in their own column and never enter the
percentiles.

"Not separated": runs timed without --observe-provider end their session init at
the agent's init line, which a one-shot CLI prints first, so their session_init_ms
is 0 by construction and the session set-up is inside cli_ready_ms. Their cohorts
("init not separated") show no session_init figure and no init share, and their
cli_ready (marked †) is the boot and the session set-up together. Rerun the agent
under `ttft-probe run --observe-provider` to split them. A model segment marked *
holds whole-message first tokens, late by the message's generation time.

Why the model segment grows (runs timed with --observe-provider): a second table
gives per cohort the p50 / p90 uncached input tokens of each turn's first model
request, the cache-read share of its input tokens, how often its prompt prefix
broke against the previous turn and at which section; a third gives per agent the
cost of context, the slope of model_first_token_ms per 1,000 uncached tokens with
a bootstrap 95 % interval. Cohorts timed without the observer read "observer off".

\b
Examples:
  ttft-probe report
  ttft-probe report --agent claude_code --since 2w --chart report.png
  ttft-probe report --json --since all
"""


@main.command("report", context_settings=CONTEXT, help=_REPORT_HELP)
@click.option("--agent", metavar="NAME", help="Only this agent (default: every agent).")
@_since_option
@_source_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as JSON (ms; shares as fractions 0–1) instead of a table.")
@click.option("--chart", "chart_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also draw the report to FILE, .png or .svg: the p50 of each segment "
              "stacked per cohort, and the spread of spawn-to-first-token.")
@_store_option
def report_command(
    agent: str | None,
    since: str,
    source: str,
    as_json: bool,
    chart_path: str | None,
    store: str | None,
) -> None:
    """Where the wait goes, per agent and cohort: p50 / p90 of every segment."""
    import json  # noqa: PLC0415 - keep start-up cheap
    from datetime import UTC, datetime  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from ttft_probe.analysis.report import (  # noqa: PLC0415
        load_runs,
        parse_since,
        prompt_cache_tables,
        report_table,
        report_to_json,
    )

    try:
        window = parse_since(since)
        result, records = load_runs(
            source, agent=agent, since=window, now=datetime.now(UTC), store=store
        )
        if chart_path is not None:
            from ttft_probe.analysis.chart import write_chart  # noqa: PLC0415 - matplotlib

            write_chart(result, records, chart_path)
    except TtftProbeError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the chart: {exc}")
    if as_json:
        click.echo(json.dumps(report_to_json(result), indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 160)
        if result.rows:
            console.print(report_table(result))
            for part in prompt_cache_tables(result):
                console.print(part)
        else:
            who = f"{agent} " if agent else ""
            console.print(f"No {who}runs in the window ({since}, source {source}).")
    if chart_path is not None:
        click.echo(f"ttft-probe: chart written to {chart_path}", err=True)


_GATE_HELP = """Go / no-go for session reuse, from the session_init share of the wait.

Population: the agent's succeeded runs with complete timing in the window, turn 2+
by default (failed runs and runs with a missing marker are excluded and counted),
whose session set-up was separated: runs timed without --observe-provider end
their session init at the agent's init line (0 by construction for a one-shot CLI,
the set-up hidden in cli_ready_ms), so they are left out and counted.
Statistic: p50 and p90 over runs of session_init_ms / spawn_to_first_token_ms.
Shares are fractions (0.30 = 30 %); "at least" includes equality.

\b
Verdict, first rule that holds, and exit code:
  not_separated      no run separated its session set-up (all were
                     timed without --observe-provider): no decision    exit 4
  insufficient_data  fewer than --min-runs runs                        exit 3
  session_reuse      GO: p50 share >= --p50-threshold (0.30)
                     or p90 share >= --p90-threshold (0.40)            exit 0
  warm_process_pool  p50 of cli_ready_ms / spawn_to_first_token_ms
                     >= --cli-ready-threshold (0.50) and above the
                     p50 model_first_token share                       exit 10
  provider_side      otherwise: the wait is the model / provider       exit 11
A bad option or an unavailable source exits 2.

With --source posthog the production cut decides; a local A/B (`ttft-probe ab`)
only sizes the effect.

\b
Examples:
  ttft-probe gate
  ttft-probe gate --since 2w --turns all --json
  ttft-probe gate --source posthog --p50-threshold 0.25 && echo "build session reuse"
"""


def _ab_effect(experiment_id: str, segment: str, store: str | None) -> AbEffectForGate:
    """A stored A/B experiment's effect on ``segment``, in the gate's terms.

    Raises:
        ConfigError: The experiment is not in the store, or no pair has the segment.
    """
    from ttft_probe.analysis.ab import analyze, load_experiment  # noqa: PLC0415
    from ttft_probe.analysis.gate import AbEffect  # noqa: PLC0415
    from ttft_probe.errors import ConfigError  # noqa: PLC0415
    from ttft_probe.sinks.store import Store  # noqa: PLC0415

    pairs = load_experiment(Store(store), experiment_id)
    if not pairs:
        raise ConfigError(f"no A/B experiment {experiment_id!r} in the store; "
                          "run `ttft-probe ab` first, or check --store")
    effect = analyze(experiment_id, pairs).effect(segment)
    if effect.n == 0 or effect.ci_low_ms is None or effect.ci_high_ms is None:
        raise ConfigError(f"A/B experiment {experiment_id!r} has no complete pair for {segment}")
    # resumed − fresh: positive is what resuming per turn costs, i.e. what reuse saves.
    return AbEffect(segment=segment, mean_diff_ms=effect.mean_ms or 0.0,
                    ci_low_ms=effect.ci_low_ms, ci_high_ms=effect.ci_high_ms, n_pairs=effect.n)


@main.command("gate", context_settings=CONTEXT, help=_GATE_HELP)
@click.option("--agent", default="claude_code", show_default=True, metavar="NAME",
              help="The agent to decide for.")
@_since_option
@click.option("--turns", type=click.Choice(["2+", "all"]), default="2+", show_default=True,
              help="Population: turn 2+ only (the turns session reuse would speed up), or "
              "every turn.")
@click.option("--p50-threshold", type=click.FloatRange(0, 1), default=0.30, show_default=True,
              metavar="SHARE", help="GO when the p50 session_init share is at least this.")
@click.option("--p90-threshold", type=click.FloatRange(0, 1), default=0.40, show_default=True,
              metavar="SHARE", help="GO when the p90 session_init share is at least this.")
@click.option("--cli-ready-threshold", type=click.FloatRange(0, 1), default=0.50,
              show_default=True, metavar="SHARE",
              help="warm_process_pool when the p50 cli_ready share is at least this (and above "
              "the model's share).")
@click.option("--min-runs", type=click.IntRange(min=1), default=20, show_default=True,
              metavar="N", help="insufficient_data below N runs in the population.")
@_source_option
@click.option("--ab", "ab_experiment", metavar="EXPERIMENT_ID",
              help="A stored `ttft-probe ab` experiment that sizes the effect: the verdict "
              "stays the source's (the production cut decides), the text adds the A/B's "
              "paired difference and names a disagreement.")
@click.option("--ab-segment", default="spawn_to_first_token_ms", show_default=True,
              type=click.Choice(["spawn_to_first_token_ms", "cli_ready_ms", "session_init_ms",
                                 "client_wait_ms", "model_first_token_ms"]),
              help="The segment whose A/B difference (resumed − fresh) sizes the effect.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdict and every number it used as JSON.")
@_store_option
def gate_command(
    agent: str,
    since: str,
    turns: str,
    p50_threshold: float,
    p90_threshold: float,
    cli_ready_threshold: float,
    min_runs: int,
    source: str,
    ab_experiment: str | None,
    ab_segment: str,
    as_json: bool,
    store: str | None,
) -> None:
    """Go / no-go for session reuse, from the session_init share of the wait."""
    import json  # noqa: PLC0415 - keep start-up cheap
    from datetime import UTC, datetime  # noqa: PLC0415

    from ttft_probe.analysis.gate import Thresholds, combine, run_gate  # noqa: PLC0415
    from ttft_probe.analysis.report import parse_since  # noqa: PLC0415

    try:
        verdict = run_gate(
            source,
            agent=agent,
            turns="all" if turns == "all" else "2+",
            window=parse_since(since),
            now=datetime.now(UTC),
            thresholds=Thresholds(
                p50_share=p50_threshold,
                p90_share=p90_threshold,
                cli_ready_share=cli_ready_threshold,
                min_runs=min_runs,
            ),
            store=store,
        )
        if ab_experiment is not None:
            verdict = combine(verdict, _ab_effect(ab_experiment, ab_segment, store))
    except TtftProbeError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(f"verdict: {verdict.decision.value} (exit {verdict.exit_code})")
        click.echo(verdict.explanation)
    sys.exit(verdict.exit_code)


def _print_table(records: Sequence[RunRecord]) -> None:
    from rich.console import Console  # noqa: PLC0415 - only for the table
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)
    if not records:
        console.print("No runs stored yet. Run an agent with `ttft-probe run -- COMMAND`.")
        return
    from ttft_probe.analysis._model import init_separated, message_granular  # noqa: PLC0415

    caption = []
    if not all(init_separated(r) for r in records):
        caption.append("† cli_ready is the CLI's boot and the session set-up together: session "
                       "init not separated (run without --observe-provider)")
    if any(message_granular(r) for r in records):
        caption.append("* the first token is a whole message, late by its generation time")
    table = Table(title="ttft-probe runs (ms)", title_justify="left",
                  caption="\n".join(caption) or None, caption_justify="left")
    for name, justify in [
        ("started (UTC)", "left"),
        ("agent", "left"),
        ("turn", "right"),
        ("how", "left"),
        ("first token", "right"),
        ("cli_ready", "right"),
        ("session_init", "right"),
        ("client_wait", "right"),
        ("model", "right"),
        ("status", "left"),
        ("run_id", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in records:
        how = "reused" if r.process_reused else ("resumed" if r.session_resumed else "fresh")
        status = r.status.value
        if r.timing_unavailable_reason is not None:
            status += f" ({r.timing_unavailable_reason.value})"
        table.add_row(
            r.started_at[:19].replace("T", " "),
            r.agent,
            str(r.turn_ordinal or "?"),
            how,
            ms_text(r.spawn_to_first_token_ms),
            ms_text(r.cli_ready_ms) + ("" if init_separated(r) else "†"),
            ms_text(r.session_init_ms) if init_separated(r) else "not separated",
            ms_text(r.client_wait_ms),
            ms_text(r.model_first_token_ms) + ("*" if message_granular(r) else ""),
            status,
            r.run_id[:8],
        )
    console.print(table)


# --- ab: paired fresh-vs-resumed runs ---------------------------------------------------

if TYPE_CHECKING:
    from ttft_probe.analysis.ab import AbResult, Experiment
    from ttft_probe.doctor import DoctorReport
    from ttft_probe.sinks.store import Store

EXIT_TOO_MANY_FAILED = 1


@main.command(context_settings=CONTEXT)
@click.option("--fresh", "fresh_cmd", metavar="CMD",
              help="The command that starts a new conversation, as one shell-quoted string.")
@click.option("--resumed", "resumed_cmd", metavar="CMD",
              help="The command that resumes one; `{session}` in it becomes the session id "
              "of a priming run of the fresh command.")
@click.option("-n", "--pairs", "pairs", type=click.IntRange(min=1), default=30, show_default=True,
              metavar="N", help="Pairs to run (DESIGN asks for at least 30).")
@click.option("--agent", help="Agent name for the records (default: inferred from the executable).")
@_family_option
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the bootstrap resampling (the same runs give the same interval).")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.95, show_default=True, help="Confidence level of the intervals.")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              metavar="B", help="Bootstrap resamples per interval.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, metavar="SECONDS",
              help="End a run after this long; it counts as failed (timed_out).")
@click.option("--max-failed-pairs", type=click.IntRange(min=0), metavar="K",
              help="Stop, and exit 1, once more than K pairs had a failed run "
              "[default: N // 10].")
@click.option("--experiment", "experiment_id", metavar="ID",
              help="Analyse the stored experiment ID again instead of running one.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-run messages.")
@_observe_option
@_store_option
def ab(
    fresh_cmd: str | None,
    resumed_cmd: str | None,
    pairs: int,
    agent: str | None,
    family: str | None,
    seed: int,
    confidence: float,
    resamples: int,
    timeout: float,
    max_failed_pairs: int | None,
    experiment_id: str | None,
    as_json: bool,
    quiet: bool,
    observe_provider: bool,
    store: str | None,
) -> None:
    """A/B test: paired fresh vs resumed runs, and what resuming does to each segment.

    Runs N pairs. Each pair runs the --fresh command and the --resumed command back to
    back, alternating which goes first (pair i: fresh first when i is even, resumed first
    when it is odd). Commands are split like a shell would (shlex), run in the current
    directory with this environment, stdin from /dev/null and their output discarded.
    When --resumed holds {session}, the fresh command runs once first (a priming run, not
    counted) and every resumed run resumes the session it reported (so that session's
    history grows by one turn per pair).

    Every run is kept in the store with its experiment id, arm (fresh, resumed, priming)
    and pair; `ttft-probe ab --experiment ID` analyses it again.

    For each segment (spawn_to_first_token_ms, cli_ready_ms, session_init_ms,
    client_wait_ms, model_first_token_ms) it prints the paired difference resumed − fresh
    in ms: mean, median and a percentile-bootstrap confidence interval of the mean over
    pairs (--resamples, --seed). A pair where either run failed or lacks the segment is
    dropped for that segment and counted. Without --observe-provider a one-shot CLI's
    session set-up is not separated from its boot: session_init_ms is then no
    measurement ("not separated") and cli_ready_ms holds both (marked †).

    Exit status: 0 when no more than --max-failed-pairs pairs had a failed run; 1 when
    more did (the experiment stops there; what ran is still reported) or the priming run
    failed; 2 for bad options.

    \b
    Example (Claude Code):
      C='claude -p hi --output-format stream-json --verbose --include-partial-messages'
      ttft-probe ab -n 30 --fresh "$C" --resumed "$C --resume {session}"
    """  # noqa: D301 - \b is click's no-rewrap marker, the character itself
    import json  # noqa: PLC0415 - keep start-up cheap

    from ttft_probe.analysis.ab import (  # noqa: PLC0415
        MIN_PAIRS,
        ExperimentError,
        analyze,
        load_experiment,
    )
    from ttft_probe.sinks.store import Store  # noqa: PLC0415

    if experiment_id is None and (fresh_cmd is None or resumed_cmd is None):
        fail("ab needs --fresh CMD and --resumed CMD (or --experiment ID to analyse a stored one)")
    if experiment_id is not None and (fresh_cmd is not None or resumed_cmd is not None):
        fail("--experiment analyses a stored experiment: leave out --fresh and --resumed")
    exit_status = 0
    try:
        db = Store(store)
        if experiment_id is not None:
            loaded = load_experiment(db, experiment_id)
        else:
            assert fresh_cmd is not None  # noqa: S101 - checked above
            assert resumed_cmd is not None  # noqa: S101
            if pairs < MIN_PAIRS and not quiet:
                click.echo(f"ttft-probe: warning: {pairs} pairs; DESIGN asks for at least "
                           f"{MIN_PAIRS} for a trustworthy interval", err=True)
            try:
                experiment = _run_ab_with_progress(
                    fresh_cmd, resumed_cmd, pairs=pairs, agent=agent,
                    family=family, db=db, timeout=timeout, max_failed_pairs=max_failed_pairs,
                    quiet=quiet, observe_provider=observe_provider)
            except ExperimentError as exc:
                click.echo(f"ttft-probe: error: {exc}", err=True)
                sys.exit(EXIT_TOO_MANY_FAILED)
            experiment_id = experiment.experiment_id
            loaded = list(experiment.pairs)
            allowed = pairs // 10 if max_failed_pairs is None else max_failed_pairs
            if sum(not p.complete for p in loaded) > allowed:
                exit_status = EXIT_TOO_MANY_FAILED
        result = analyze(experiment_id, loaded, confidence=confidence, resamples=resamples,
                         seed=seed)
    except TtftProbeError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        _print_ab(result, planned=None if exit_status == 0 else pairs)
    _flush_in_background(store)
    sys.exit(exit_status)


def _run_ab_with_progress(
    fresh_cmd: str,
    resumed_cmd: str,
    *,
    pairs: int,
    agent: str | None,
    family: str | None,
    db: Store,
    timeout: float,
    max_failed_pairs: int | None,
    quiet: bool,
    observe_provider: bool,
) -> Experiment:
    """Run the experiment with a progress bar (and failure lines) on stderr."""
    from rich.console import Console  # noqa: PLC0415 - only for ab
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from ttft_probe.analysis.ab import (  # noqa: PLC0415
        SESSION_PLACEHOLDER,
        RunEvent,
        run_experiment,
    )

    console = Console(stderr=True, quiet=quiet)
    priming = SESSION_PLACEHOLDER in resumed_cmd
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task("priming" if priming else "pair 1", total=2 * pairs + priming)

        def on_run(event: RunEvent) -> None:
            bar.advance(task)
            if event.pair is not None:
                bar.update(task, description=f"pair {event.pair}/{pairs}")
            if not event.ok:
                where = "priming run" if event.pair is None else f"pair {event.pair} {event.role}"
                console.print(f"ttft-probe: {where} failed: {event.detail}", markup=False,
                              highlight=False)

        return run_experiment(
            fresh_cmd, resumed_cmd, n=pairs, agent=agent, family=family, store=db,
            timeout=timeout, max_failed_pairs=max_failed_pairs, on_run=on_run,
            observe_provider=observe_provider)


def _print_ab(result: AbResult, planned: int | None) -> None:
    from rich.console import Console  # noqa: PLC0415 - only for the table
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    level = f"{result.confidence * 100:g} %"
    table = Table(
        title=f"ttft-probe ab: resumed − fresh (ms), {level} bootstrap CI of the mean",
        title_justify="left",
        caption=f"{result.complete_pairs}/{result.pairs} complete pairs · percentile bootstrap, "
        f"B={result.resamples}, seed {result.seed} · pair i: fresh first when i is even",
        caption_justify="left",
    )
    for name, justify in [("segment", "left"), ("pairs", "right"), ("dropped", "right"),
                          ("fresh mean", "right"), ("resumed mean", "right"),
                          ("Δ mean", "right"), ("Δ median", "right"), (f"{level} CI", "right"),
                          ("≠ 0?", "left")]:
        # The segment names and intervals stay whole; narrow terminals wrap the headers.
        table.add_column(name, justify=justify,  # type: ignore[arg-type]
                         no_wrap=name == "segment" or name.endswith("CI"))
    for e in result.effects:
        ci = "—" if e.ci_low_ms is None else f"[{e.ci_low_ms:.1f}, {ms_text(e.ci_high_ms)}]"
        verdict = "" if e.ci_low_ms is None else ("yes" if e.excludes_zero else "no")
        name = e.segment
        if e.not_separated and e.segment == "cli_ready_ms":
            name += " †"  # the boot and the session set-up together
        elif e.not_separated and e.segment == "session_init_ms" and not e.n:
            ci, verdict = "not separated", ""
        table.add_row(name, str(e.n), str(e.dropped), ms_text(e.fresh_mean_ms),
                      ms_text(e.resumed_mean_ms), ms_text(e.mean_ms), ms_text(e.median_ms), ci,
                      verdict)
    console.print(table)
    unseparated = max(e.not_separated for e in result.effects)
    if unseparated:
        console.print(f"† {unseparated} pairs did not separate the session set-up: "
                      "session_init_ms is no measurement there (left out) and cli_ready_ms "
                      "holds the boot and the session set-up together. Run the experiment "
                      "with the provider observer (`ttft-probe ab --observe-provider …`) to "
                      "split them.", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Experiment {result.experiment_id}; analyse it again with "
                  f"`ttft-probe ab --experiment {result.experiment_id}`.", markup=False,
                  highlight=False, soft_wrap=True)
    if planned is not None:
        console.print(f"Too many pairs failed: {result.failed_pairs} of {result.pairs} run "
                      f"({planned} planned); see the messages above.", markup=False,
                      soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    main()
