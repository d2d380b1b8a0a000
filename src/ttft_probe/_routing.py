"""Where an agent's provider is, and how to point the agent at the observer instead.

Most agents read one base-URL variable (the table in :mod:`ttft_probe.agents`):
``ANTHROPIC_BASE_URL`` (Claude Code, claude-code-acp), ``GOOGLE_GEMINI_BASE_URL``
(Gemini CLI), ``OPENAI_BASE_URL`` (Codex with its built-in ``openai`` provider). The
upstream is the variable's current value, else the provider's public default.

Codex with a custom ``model_provider`` in ``$CODEX_HOME/config.toml`` (default
``~/.codex``) ignores ``OPENAI_BASE_URL``: the upstream is that provider's ``base_url``
and the agent is re-pointed with a ``-c model_providers.<id>.base_url="…"`` override
right after the executable (``codex`` and ``codex-acp`` both take ``-c``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from ttft_probe.agents import ResolvedAgent, find_executable

__all__ = ["DEFAULT_UPSTREAMS", "Route", "route_for"]

DEFAULT_UPSTREAMS: Final[Mapping[str, str]] = {
    "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
    "OPENAI_BASE_URL": "https://api.openai.com/v1",
    "GOOGLE_GEMINI_BASE_URL": "https://generativelanguage.googleapis.com",
}
"""The provider each base-URL variable points at when it is unset."""


@attrs.frozen
class Route:
    """How one agent reaches its provider.

    Attributes:
        upstream: The base URL the agent would use without the observer.
        env_var: The variable to set to the observer's URL, or ``None``.
        codex_provider: The codex provider id to override with ``-c``, or ``None``.
    """

    upstream: str
    env_var: str | None = None
    codex_provider: str | None = None

    def apply(
        self, argv: Sequence[str], env: Mapping[str, str], proxy_url: str
    ) -> tuple[list[str], dict[str, str]]:
        """``argv`` and ``env`` with the agent pointed at ``proxy_url``."""
        new_env = dict(env)
        new_argv = list(argv)
        if self.env_var is not None:
            new_env[self.env_var] = proxy_url
        if self.codex_provider is not None:
            idx, _ = find_executable(new_argv)
            override = f"model_providers.{self.codex_provider}.base_url={json.dumps(proxy_url)}"
            new_argv[idx + 1 : idx + 1] = ["-c", override]
        return new_argv, new_env


def _codex_custom_provider(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(provider id, base_url) of a custom codex provider from config.toml, if any."""
    import tomllib  # noqa: PLC0415 - only codex with an observer reads it

    home = Path(env.get("CODEX_HOME") or Path(env.get("HOME", "~")).expanduser() / ".codex")
    try:
        config = tomllib.loads((home / "config.toml").read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    provider = config.get("model_provider")
    providers = config.get("model_providers")
    if not isinstance(provider, str) or not isinstance(providers, dict):
        return None
    entry = providers.get(provider)
    if not isinstance(entry, dict) or not isinstance(entry.get("base_url"), str):
        return None
    return provider, str(entry["base_url"])


def route_for(agent: ResolvedAgent, env: Mapping[str, str] | None = None) -> Route | None:
    """The provider route of ``agent`` under ``env`` (default ``os.environ``).

    Returns ``None`` when the agent's provider is unknown (no base-URL variable in the
    agent table), so the observer cannot be put in front of it.
    """
    env = os.environ if env is None else env
    var = agent.spec.base_url_env if agent.spec is not None else None
    if var is None:
        return None
    if var == "OPENAI_BASE_URL":
        custom = _codex_custom_provider(env)
        if custom is not None:
            return Route(upstream=custom[1], codex_provider=custom[0])
    return Route(upstream=env.get(var) or DEFAULT_UPSTREAMS[var], env_var=var)
