"""The one table of known agents: name → runtime family, resume flags, base-URL variable.

The family of a command is inferred from its executable name and flags when the user
gives none (``claude -p … --output-format stream-json`` is ``claude-stream-json``,
``claude -p …`` without it prints plain text, ``gemini --acp`` speaks ACP, …). Unknown
executables are ``plain``.

Standard library only, and only ``os`` of it: ``ttft-probe run`` reads this table before it
spawns the agent (:mod:`ttft_probe._prespawn`), when nothing else of the probe is loaded.
Families are their names (``RuntimeFamily`` values, which compare equal to them).

The model provider an agent name implies (:data:`PROVIDERS`, :func:`provider_name`) is
here too, as the OpenTelemetry GenAI ``gen_ai.provider.name`` value; sinks whose wire
format names providers otherwise (PostHog's ``$ai_provider``) translate from it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Final

__all__ = [
    "AGENTS",
    "DEFAULT_UPSTREAMS",
    "PROVIDERS",
    "AgentSpec",
    "ResolvedAgent",
    "find_executable",
    "flag_value",
    "provider_name",
    "resolve_agent",
    "sdk_mode",
    "tees_stdin",
]

_CLAUDE_STREAM_JSON: Final = "claude-stream-json"
_JSON_EVENT_STREAM: Final = "json-event-stream"
_ACP_JSON_RPC: Final = "acp-json-rpc"
_PLAIN: Final = "plain"
BUILTIN_FAMILIES: Final = frozenset(
    {_CLAUDE_STREAM_JSON, _JSON_EVENT_STREAM, _ACP_JSON_RPC, _PLAIN}
)
"""The built-in family names (``RuntimeFamily``'s values)."""


class _Frozen:
    """A small immutable value: fields in ``_fields`` order, compared and shown by value.

    Here rather than ``attrs``: this table is read before the agent is spawned, when every
    ms of imports is added to the agent's start (:mod:`ttft_probe._prespawn`).
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __init__(self, *args: object, **kwargs: object) -> None:
        names = self._fields
        values = dict(zip(names, args, strict=False))
        values.update(kwargs)
        defaults: dict[str, object] = getattr(type(self), "_defaults", {})
        for name in names:
            object.__setattr__(self, name, values[name] if name in values else defaults[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({fields})"


def flag_value(argv: Sequence[str], *names: str) -> str | None:
    """Value of the first ``--flag VALUE`` / ``--flag=VALUE`` among ``names``, else ``None``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def _has(argv: Sequence[str], *names: str) -> bool:
    return any(
        a in names or any(a.startswith(n + "=") for n in names if n.startswith("--")) for a in argv
    )


class Resume(_Frozen):
    """How a command line says "continue a session": resumed, and the id if given."""

    __slots__ = ("resumed", "session_id")
    _fields = ("resumed", "session_id")
    _defaults: Final = {"session_id": None}
    resumed: bool
    session_id: str | None


def _claude_resume(argv: Sequence[str]) -> Resume:
    sid = flag_value(argv, "--resume", "-r", "--session-id")
    if _has(argv, "--resume", "-r"):
        return Resume(resumed=True, session_id=sid)
    if _has(argv, "--continue", "-c"):
        return Resume(resumed=True)
    return Resume(resumed=False)


def _codex_resume(argv: Sequence[str]) -> Resume:
    # `codex exec [opts] resume THREAD_ID PROMPT` or `codex exec resume --last PROMPT`.
    if "resume" in argv:
        i = list(argv).index("resume")
        rest = [a for a in argv[i + 1 :] if not a.startswith("-")]
        return Resume(resumed=True, session_id=rest[0] if len(rest) > 1 else None)
    return Resume(resumed=False)


def _gemini_resume(argv: Sequence[str]) -> Resume:
    if _has(argv, "--resume", "-r"):
        sid = flag_value(argv, "--resume", "-r")
        return Resume(resumed=True, session_id=None if sid in {None, "latest"} else sid)
    return Resume(resumed=False)


def _opencode_resume(argv: Sequence[str]) -> Resume:
    if _has(argv, "--session", "-s"):
        return Resume(resumed=True, session_id=flag_value(argv, "--session", "-s"))
    return Resume(resumed=_has(argv, "--continue", "-c"))


def _no_resume(_argv: Sequence[str]) -> Resume:
    return Resume(resumed=False)


def _any(_argv: Sequence[str]) -> bool:
    return True


class AgentSpec(_Frozen):
    """One known agent.

    Attributes:
        name: Agent name as it appears in records (``claude_code``, ``codex_acp``, …).
        family: Its runtime family.
        executable: The executable name that identifies it.
        base_url_env: The variable that points it at a provider (for the observer).
        matches: Predicate on the arguments after the executable (e.g. ``--acp``).
        resume: Reads the resume flags of a one-shot command line.
    """

    __slots__ = ("base_url_env", "executable", "family", "matches", "name", "resume")
    _fields = ("name", "family", "executable", "base_url_env", "matches", "resume")
    _defaults: Final = {"base_url_env": None, "matches": _any, "resume": _no_resume}
    name: str
    family: str
    executable: str
    base_url_env: str | None
    matches: Callable[[Sequence[str]], bool]
    resume: Callable[[Sequence[str]], Resume]


def _stream_json(argv: Sequence[str]) -> bool:
    return flag_value(argv, "--output-format", "-o") == "stream-json"


AGENTS: tuple[AgentSpec, ...] = (
    # Order matters: the first spec whose executable and predicate match wins.
    AgentSpec(
        "claude_code",
        _CLAUDE_STREAM_JSON,
        "claude",
        "ANTHROPIC_BASE_URL",
        _stream_json,
        _claude_resume,
    ),
    AgentSpec("claude_code", _PLAIN, "claude", "ANTHROPIC_BASE_URL", resume=_claude_resume),
    AgentSpec(
        "codex_app_server", _ACP_JSON_RPC, "codex", "OPENAI_BASE_URL", lambda a: "app-server" in a
    ),
    AgentSpec(
        "codex",
        _JSON_EVENT_STREAM,
        "codex",
        "OPENAI_BASE_URL",
        lambda a: "exec" in a and "--json" in a,
        _codex_resume,
    ),
    AgentSpec("codex", _PLAIN, "codex", "OPENAI_BASE_URL", resume=_codex_resume),
    AgentSpec(
        "gemini_acp",
        _ACP_JSON_RPC,
        "gemini",
        "GOOGLE_GEMINI_BASE_URL",
        lambda a: _has(a, "--acp", "--experimental-acp"),
    ),
    AgentSpec(
        "gemini",
        _JSON_EVENT_STREAM,
        "gemini",
        "GOOGLE_GEMINI_BASE_URL",
        _stream_json,
        _gemini_resume,
    ),
    AgentSpec("gemini", _PLAIN, "gemini", "GOOGLE_GEMINI_BASE_URL", resume=_gemini_resume),
    AgentSpec("claude_code_acp", _ACP_JSON_RPC, "claude-code-acp", "ANTHROPIC_BASE_URL"),
    AgentSpec("claude_code_acp", _ACP_JSON_RPC, "claude-agent-acp", "ANTHROPIC_BASE_URL"),
    AgentSpec("codex_acp", _ACP_JSON_RPC, "codex-acp", "OPENAI_BASE_URL"),
    AgentSpec("opencode_acp", _ACP_JSON_RPC, "opencode", None, lambda a: "acp" in a),
    AgentSpec("opencode", _PLAIN, "opencode", None, resume=_opencode_resume),
    AgentSpec("cursor_agent", _JSON_EVENT_STREAM, "cursor-agent", None, _stream_json),
    AgentSpec("cursor_agent", _PLAIN, "cursor-agent"),
)

DEFAULT_UPSTREAMS: Final[Mapping[str, str]] = {
    "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
    "OPENAI_BASE_URL": "https://api.openai.com/v1",
    "GOOGLE_GEMINI_BASE_URL": "https://generativelanguage.googleapis.com",
}
"""The provider each base-URL variable points at when it is unset (the observer's upstream)."""

PROVIDERS: Final = (
    # agent-name prefix, ``gen_ai.provider.name`` (a well-known value of the OTel GenAI
    # semantic conventions). Agents not listed (opencode, cursor-agent, plain CLIs) talk
    # to whatever provider they are configured for.
    ("claude", "anthropic"),
    ("codex", "openai"),
    ("gemini", "gcp.gemini"),
)


def provider_name(agent: str) -> str | None:
    """``gen_ai.provider.name`` for an agent name, or ``None`` when it cannot be told.

    ``claude*`` → ``anthropic``, ``codex*`` → ``openai``, ``gemini*`` → ``gcp.gemini``
    (:data:`PROVIDERS`, well-known values of the GenAI conventions); anything else
    (``opencode_acp``, a plain CLI) → ``None``, since its provider depends on its
    configuration. Case-insensitive.
    """
    name = agent.lower()
    for prefix, provider in PROVIDERS:
        if name.startswith(prefix):
            return provider
    return None


# Launchers whose own argv precede the agent's executable.
_LAUNCHERS = frozenset({"node", "npx", "bunx", "bun", "pnpx", "env", "exec", "nice", "timeout"})


class ResolvedAgent(_Frozen):
    """What a command line turned out to be.

    Attributes:
        name: Agent name for the record.
        family: Runtime family whose adapter parses it.
        spec: The matching table row, ``None`` for an unknown executable.
        resumed: The command line asks to continue a session.
        resume_session_id: The session id it names, when it names one.
    """

    __slots__ = ("family", "name", "resume_session_id", "resumed", "spec")
    _fields = ("name", "family", "spec", "resumed", "resume_session_id")
    name: str
    family: str
    spec: AgentSpec | None
    resumed: bool
    resume_session_id: str | None


def find_executable(argv: Sequence[str]) -> tuple[int, str]:
    """Index and name of the agent executable, looking past launchers such as ``npx``."""
    known = {s.executable for s in AGENTS}
    for i, arg in enumerate(argv):
        base = os.path.basename(arg).removesuffix(".js").removesuffix(".exe")
        if base in known:
            return i, base
        if i > 0 and not arg.startswith("-") and "=" not in arg:
            # The first operand of a launcher is the program: an npm package path
            # such as .../claude-code-acp/dist/index.js names the agent in its path.
            for spec in AGENTS:
                if f"/{spec.executable}/" in arg:
                    return i, spec.executable
            break
        if base not in _LAUNCHERS:
            break
    return 0, os.path.basename(argv[0])


def resolve_agent(
    argv: Sequence[str], *, agent: str | None = None, family: str | None = None
) -> ResolvedAgent:
    """Work out agent name, family and resume intent from a command line.

    Args:
        argv: The agent command (``["claude", "-p", "hi", …]``).
        agent: An explicit agent name; when it is in the table its family is the default.
        family: An explicit runtime family (built-in or an installed plugin's); wins over
            everything inferred.

    Raises:
        ConfigError: ``argv`` is empty, or no adapter has the name ``family``
            (:class:`~ttft_probe.errors.UnknownAdapterError`, naming the known ones).
    """
    if not argv:
        from ttft_probe.errors import ConfigError  # noqa: PLC0415 - only to say so

        raise ConfigError("no command given: put the agent command after `--`")
    fam = family
    if family is not None and family not in BUILTIN_FAMILIES:
        from ttft_probe.adapters._base import check_family  # noqa: PLC0415 - a plugin's name

        fam = check_family(family)
    idx, exe = find_executable(argv)
    rest = argv[idx + 1 :]
    candidates = [
        c
        for c in AGENTS
        if (c.name == agent if agent is not None else c.executable == exe)
        and (fam is None or c.family == fam)
    ]
    # The first row whose flags match; with an explicit agent name, its first row else.
    spec = next((c for c in candidates if c.matches(rest)), None)
    if spec is None and agent is not None and candidates:
        spec = candidates[0]
    resume = spec.resume(rest) if spec is not None else Resume(resumed=False)
    return ResolvedAgent(
        name=agent or (spec.name if spec is not None else exe),
        family=fam or (spec.family if spec is not None else _PLAIN),
        spec=spec,
        resumed=resume.resumed,
        resume_session_id=resume.session_id,
    )


def sdk_mode(argv: Sequence[str]) -> bool:
    """Whether a Claude Code command line runs it in SDK mode (``--input-format stream-json``).

    Its stdin then carries the client's messages (DESIGN §3, SDK mode): the probe reads it.
    """
    return flag_value(argv, "--input-format") == "stream-json"


def tees_stdin(family: str, argv: Sequence[str]) -> bool | None:
    """Whether a built-in family's adapter reads the agent's stdin, for ``argv``.

    ``True`` for ``acp-json-rpc`` (requests go in on stdin) and for ``claude-stream-json``
    in SDK mode (:func:`sdk_mode`); ``False`` for the other built-ins; ``None`` for a
    plugin family, whose adapter alone can tell. The adapters' own ``tees_stdin`` agree
    (tests/test_prespawn.py holds them to it).
    """
    if family == _ACP_JSON_RPC:
        return True
    if family == _CLAUDE_STREAM_JSON:
        return sdk_mode(argv)
    if family in BUILTIN_FAMILIES:
        return False
    return None
