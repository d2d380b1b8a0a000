"""Run the real agent CLIs offline against a provider URL (DESIGN §9).

The CLIs are pinned in ``agents/package.json`` and installed with
``cd agents && npm ci``. For each agent this module knows the command line (one-shot
and ACP) and writes the scratch configuration that points it at a provider (normally
:class:`~ttft_probe.testing.fake_provider.FakeProvider`) with dummy keys and every
update check, telemetry and analytics switch off.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ttft_probe.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "ACP_AGENTS",
    "AGENTS_BIN_ENV",
    "ONE_SHOT_AGENTS",
    "acp_command",
    "agent_bin_dir",
    "agent_environment",
    "clean_environment",
    "find_session_id",
    "one_shot_command",
    "sdk_command",
]

AGENTS_BIN_ENV = "TTFT_PROBE_AGENTS_BIN"
"""Environment variable naming a ``node_modules/.bin`` directory to use instead."""

ONE_SHOT_AGENTS = ("claude_code", "codex", "gemini")
"""Agents run once per turn by :func:`one_shot_command`."""

ACP_AGENTS = ("claude_code_acp", "codex_acp", "gemini_acp", "opencode_acp")
"""Agents that speak ACP over stdio, started by :func:`acp_command`."""

OPENCODE_MODEL = "anthropic/claude-sonnet-4-5"
"""opencode's model: its ``anthropic`` provider, which the config points at the provider URL."""

GEMINI_MODEL = "gemini-2.5-flash"
"""Gemini is pinned: the default "auto" model first asks a routing classifier for JSON."""

CODEX_MODEL = "gpt-5.5"
"""Codex model; older names make codex print a model-metadata warning item."""

DUMMY_KEY = "sk-ttft-probe-dummy"
"""Placeholder API key given to every agent; never a real key."""

_FAKE_PROVIDER_ID = "ttft_fake"
_FAKE_KEY_ENV = "TTFT_FAKE_PROVIDER_API_KEY"

# Variables of the real environment that would point an agent at a real provider or
# account, or make it think it runs inside another agent. All of them are dropped.
_DROP = re.compile(
    r"^(ANTHROPIC_|CLAUDE|OPENAI_|CODEX_|AZURE_OPENAI|GEMINI_|GOOGLE_|VERTEX|CLOUD_ML_"
    r"|AWS_BEARER_TOKEN_BEDROCK|OTEL_|TRACEPARENT|TRACESTATE|XDG_|OPENCODE)"
)

_COMMON = {
    # Local traffic must never go through a proxy of the machine.
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "NO_UPDATE_NOTIFIER": "1",
    "NO_COLOR": "1",
    "DISABLE_AUTOUPDATER": "1",
}

_CLAUDE = {
    "ANTHROPIC_API_KEY": DUMMY_KEY,
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
}


def agent_bin_dir() -> Path:
    """The ``node_modules/.bin`` directory holding the pinned agent CLIs.

    ``$TTFT_PROBE_AGENTS_BIN`` wins; otherwise ``agents/node_modules/.bin`` of the
    source tree (found upwards from this file and from the working directory).

    Returns:
        The directory (absolute).

    Raises:
        ConfigError: It does not exist; install the CLIs with ``cd agents && npm ci``.
    """
    override = os.environ.get(AGENTS_BIN_ENV)
    if override:
        path = Path(override).resolve()
        if not path.is_dir():
            raise ConfigError(f"${AGENTS_BIN_ENV} names {path}, which is not a directory")
        return path
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "agents" / "node_modules" / ".bin"
            if candidate.is_dir():
                return candidate
    raise ConfigError(
        "the agent CLIs are not installed: run `cd agents && npm ci --no-audit --no-fund` "
        f"in the source tree, or set ${AGENTS_BIN_ENV} to a node_modules/.bin directory"
    )


def _bin(name: str) -> str:
    return str(agent_bin_dir() / name)


def one_shot_command(agent: str, prompt: str, resume_id: str | None = None) -> list[str]:
    """The argv of one turn of a one-shot agent, per DESIGN §9.

    Args:
        agent: ``claude_code``, ``codex`` or ``gemini``.
        prompt: The user message.
        resume_id: Continue this session (claude session id, codex thread id); for
            gemini any non-``None`` value resumes the latest session (``--resume latest``).

    Returns:
        The argv, its executable an absolute path under :func:`agent_bin_dir`.

    Raises:
        ConfigError: Unknown agent, or the CLIs are not installed.
    """
    if agent == "claude_code":
        argv = [
            _bin("claude"),
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        ]
        return [*argv, "--resume", resume_id] if resume_id else argv
    if agent == "codex":
        argv = [_bin("codex"), "exec", "--json", "--skip-git-repo-check"]
        return [*argv, "resume", resume_id, prompt] if resume_id else [*argv, prompt]
    if agent == "gemini":
        argv = [_bin("gemini"), "-p", prompt, "--output-format", "stream-json", "-m", GEMINI_MODEL]
        return [*argv, "--resume", "latest"] if resume_id else argv
    raise ConfigError(f"unknown one-shot agent {agent!r}; expected one of {ONE_SHOT_AGENTS}")


def sdk_command(agent: str = "claude_code") -> list[str]:
    """The argv Claude Code runs with under ``claude-agent-sdk``: SDK mode (DESIGN §3).

    ``--input-format stream-json``: one long-lived process, a turn per user message written
    to its stdin as a JSON line; ``--include-partial-messages`` for delta first tokens.

    Raises:
        ConfigError: Not ``claude_code``, or the CLIs are not installed.
    """
    if agent != "claude_code":
        raise ConfigError(f"SDK mode is Claude Code's: expected 'claude_code', not {agent!r}")
    return [
        _bin("claude"),
        "--output-format",
        "stream-json",
        "--verbose",
        "--input-format",
        "stream-json",
        "--include-partial-messages",
    ]


def acp_command(agent: str) -> list[str]:
    """The argv of a long-lived ACP agent (newline-delimited JSON-RPC 2.0 on stdio).

    Args:
        agent: ``claude_code_acp`` (the ``claude-agent-acp`` binary), ``codex_acp``,
            ``gemini_acp`` or ``opencode_acp``.

    Raises:
        ConfigError: Unknown agent, or the CLIs are not installed.
    """
    if agent == "claude_code_acp":
        return [_bin("claude-agent-acp")]
    if agent == "codex_acp":
        return [_bin("codex-acp")]
    if agent == "gemini_acp":
        return [_bin("gemini"), "--acp", "-m", GEMINI_MODEL]
    if agent == "opencode_acp":
        return [_bin("opencode"), "acp"]
    raise ConfigError(f"unknown ACP agent {agent!r}; expected one of {ACP_AGENTS}")


def _clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not _DROP.match(k)}


def _write_codex_config(codex_home: Path, provider_url: str) -> None:
    codex_home.mkdir(parents=True, exist_ok=True)
    base_url = provider_url.rstrip("/") + "/v1"
    (codex_home / "config.toml").write_text(
        f"""\
model = "{CODEX_MODEL}"
model_provider = "{_FAKE_PROVIDER_ID}"
check_for_update_on_startup = false

[model_providers.{_FAKE_PROVIDER_ID}]
name = "ttft_probe fake provider"
base_url = "{base_url}"
wire_api = "responses"
env_key = "{_FAKE_KEY_ENV}"

[analytics]
enabled = false

[otel]
exporter = "none"
""",
        encoding="utf-8",
    )


def _write_gemini_settings(home: Path) -> None:
    settings = {
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "security": {"folderTrust": {"enabled": False}, "auth": {"selectedType": "gemini-api-key"}},
        "ide": {"enabled": False},
    }
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(
        json.dumps(settings, indent=2) + "\n", encoding="utf-8"
    )


def _write_opencode_config(home: Path, provider_url: str) -> None:
    config = {
        "$schema": "https://opencode.ai/config.json",
        "model": OPENCODE_MODEL,
        "provider": {
            "anthropic": {"options": {"baseURL": provider_url + "/v1", "apiKey": DUMMY_KEY}}
        },
        "autoupdate": False,
        "share": "disabled",
    }
    (home / ".config" / "opencode").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "opencode" / "opencode.json").write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )


def clean_environment(home: Path, *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with no provider key, base URL or agent variable, ``HOME`` scratch.

    ``environ`` (default ``os.environ``) without those variables, with ``HOME`` and the
    XDG directories under ``home`` (created if missing). What every agent set-up below
    starts from; alone, it is the set-up of an agent this module does not know: it can
    reach no real provider with the user's credentials.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = _clean_environ(os.environ if environ is None else environ)
    env.update(_COMMON)
    env["HOME"] = str(home)
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        env[var] = str(home / sub)
    return env


def agent_environment(
    agent: str,
    provider_url: str,
    home: Path,
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write ``agent``'s scratch config under ``home`` and return the environment to run it.

    The environment is ``environ`` (default ``os.environ``) without any real provider
    key, base URL or agent variable, with ``HOME`` and the XDG directories under
    ``home``, and with the agent pointed at ``provider_url`` with dummy keys:

    - ``claude_code`` / ``claude_code_acp``: ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_API_KEY``,
      ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``, ``DISABLE_TELEMETRY=1``; the ACP
      agent also gets ``IS_SANDBOX=1`` when running as root (else ``session/new`` fails).
    - ``codex`` / ``codex_acp``: ``CODEX_HOME=home/.codex`` with a ``config.toml`` whose
      ``[model_providers.ttft_fake]`` has ``base_url = provider_url + "/v1"`` and
      ``wire_api = "responses"``; analytics, OTel export and update checks off.
    - ``gemini`` / ``gemini_acp``: ``GOOGLE_GEMINI_BASE_URL``, ``GEMINI_API_KEY`` and
      ``home/.gemini/settings.json`` (auto-update, usage statistics, telemetry, folder
      trust and IDE off; API-key auth).
    - ``opencode_acp``: ``home/.config/opencode/opencode.json`` with the model
      (:data:`OPENCODE_MODEL`) and its ``anthropic`` provider's ``baseURL`` at
      ``provider_url + "/v1"``, auto-update and sharing off; ``OPENCODE_DISABLE_MODELS_FETCH=1``
      (no models.dev download).

    Args:
        agent: An agent of :data:`ONE_SHOT_AGENTS` or :data:`ACP_AGENTS`.
        provider_url: The provider's base URL, ``http://127.0.0.1:PORT``.
        home: A scratch directory, created if missing; it becomes ``HOME``.
        environ: The environment to start from.

    Returns:
        The full environment for the child process.

    Raises:
        ConfigError: Unknown agent.
    """
    env = clean_environment(home, environ=environ)
    url = provider_url.rstrip("/")
    if agent in {"claude_code", "claude_code_acp"}:
        env.update(_CLAUDE)
        env["ANTHROPIC_BASE_URL"] = url
        if agent == "claude_code_acp" and _is_root():
            env["IS_SANDBOX"] = "1"
    elif agent in {"codex", "codex_acp"}:
        _write_codex_config(home / ".codex", url)
        env["CODEX_HOME"] = str(home / ".codex")
        env[_FAKE_KEY_ENV] = DUMMY_KEY
        env["OPENAI_API_KEY"] = DUMMY_KEY
    elif agent in {"gemini", "gemini_acp"}:
        _write_gemini_settings(home)
        env["GEMINI_API_KEY"] = DUMMY_KEY
        env["GOOGLE_GEMINI_BASE_URL"] = url
    elif agent == "opencode_acp":
        _write_opencode_config(home, url)
        env["OPENCODE_DISABLE_MODELS_FETCH"] = "1"
        env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"
    else:
        known = (*ONE_SHOT_AGENTS, *ACP_AGENTS)
        raise ConfigError(f"unknown agent {agent!r}; expected one of {known}")
    return env


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_session_id(agent: str, stdout_lines: Iterable[str]) -> str | None:
    """The session id a one-shot run printed, for resuming it.

    Reads claude's ``{"type": "system", "subtype": "init", "session_id": …}``, codex's
    ``{"type": "thread.started", "thread_id": …}`` and gemini's
    ``{"type": "init", "session_id": …}``.

    Args:
        agent: ``claude_code``, ``codex`` or ``gemini``.
        stdout_lines: The run's stdout, one JSON line each; other lines are skipped.

    Returns:
        The first id found, or ``None``.
    """
    for line in stdout_lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        kind = msg.get("type")
        if agent == "claude_code" and kind == "system" and msg.get("subtype") == "init":
            value = msg.get("session_id")
        elif agent == "codex" and kind == "thread.started":
            value = msg.get("thread_id")
        elif agent == "gemini" and kind == "init":
            value = msg.get("session_id")
        else:
            continue
        if isinstance(value, str) and value:
            return value
    return None
