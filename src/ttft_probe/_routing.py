"""Where an agent's provider is, and how to point the agent at the observer instead.

Most agents read one base-URL variable (the table in :mod:`ttft_probe.agents`):
``ANTHROPIC_BASE_URL`` (Claude Code, claude-code-acp), ``GOOGLE_GEMINI_BASE_URL``
(Gemini CLI), ``OPENAI_BASE_URL`` (Codex with its built-in ``openai`` provider). The
upstream is the variable's current value, else the provider's public default.

Codex with a custom ``model_provider`` in ``$CODEX_HOME/config.toml`` (default
``~/.codex``) ignores ``OPENAI_BASE_URL``: the upstream is that provider's ``base_url``
and the agent is re-pointed with a ``-c model_providers.<id>.base_url="…"`` override
right after the executable (``codex`` and ``codex-acp`` both take ``-c``).

opencode (``opencode``, ``opencode acp``) has no base-URL variable of its own: its model
(``-m``/``--model`` ``provider/model``, else the config's ``model``) names a provider whose
``options.baseURL`` its configs may set (global ``$XDG_CONFIG_HOME/opencode``,
``$OPENCODE_CONFIG``, ``$OPENCODE_CONFIG_DIR``, ``opencode.json(c)`` and
``.opencode/opencode.json(c)`` from the root down to the working directory, then the
inline ``$OPENCODE_CONFIG_CONTENT``; later wins); without one, the ``anthropic`` and
``openai`` providers read ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL`` (defaults: the
public APIs' ``…/v1``), the AI SDK's rule. A config that cannot be read as JSON (JSONC
with comments) makes the route unknown: the observer stays off rather than guess.
The upstream is that URL's origin; the agent is re-pointed by merging
``{"provider": {id: {"options": {"baseURL": proxy + path}}}}`` into
``$OPENCODE_CONFIG_CONTENT``, the config opencode reads last.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from ttft_probe.agents import DEFAULT_UPSTREAMS, ResolvedAgent, find_executable

__all__ = ["DEFAULT_UPSTREAMS", "Route", "route_for"]



@attrs.frozen
class Route:
    """How one agent reaches its provider.

    Attributes:
        upstream: The base URL the agent would use without the observer.
        env_var: The variable to set to the observer's URL, or ``None``.
        codex_provider: The codex provider id to override with ``-c``, or ``None``.
        opencode_provider: The opencode provider id whose ``baseURL`` to override in
            ``$OPENCODE_CONFIG_CONTENT``, or ``None``.
        opencode_path: The path of that provider's base URL (e.g. ``/v1``), kept after
            the observer's origin.
    """

    upstream: str
    env_var: str | None = None
    codex_provider: str | None = None
    opencode_provider: str | None = None
    opencode_path: str = ""

    def apply(
        self, argv: Sequence[str], env: Mapping[str, str], proxy_url: str
    ) -> tuple[list[str], dict[str, str]]:
        """``argv`` and ``env`` with the agent pointed at ``proxy_url``."""
        new_env = dict(env)
        new_argv = list(argv)
        if self.env_var is not None:
            new_env[self.env_var] = proxy_url
        if self.opencode_provider is not None:
            # route_for gave this route only when the inline config (if any) parsed.
            inline = json.loads(env.get(_OPENCODE_INLINE) or "{}")
            providers = _dict_at(inline, "provider")
            options = _dict_at(_dict_at(providers, self.opencode_provider), "options")
            path = "" if urllib.parse.urlsplit(proxy_url).path.strip("/") else self.opencode_path
            options["baseURL"] = proxy_url.rstrip("/") + path
            new_env[_OPENCODE_INLINE] = json.dumps(inline)
        if self.codex_provider is not None:
            idx, _ = find_executable(new_argv)
            override = f"model_providers.{self.codex_provider}.base_url={json.dumps(proxy_url)}"
            new_argv[idx + 1 : idx + 1] = ["-c", override]
        return new_argv, new_env


_OPENCODE_INLINE: Final = "OPENCODE_CONFIG_CONTENT"
_OPENCODE_DEFAULTS: Final[Mapping[str, tuple[str, str]]] = {
    # provider id → (the AI SDK's base-URL variable, its default)
    "anthropic": ("ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1"),
    "openai": ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
}


def _dict_at(parent: dict[str, object], key: str) -> dict[str, object]:
    """``parent[key]``, made a new ``{}`` when it is missing or not an object."""
    child = parent.get(key)
    if not isinstance(child, dict):
        child = parent[key] = {}
    return child


_OPENCODE_FILES: Final = ("opencode.json", "opencode.jsonc", "config.json")


def _opencode_paths(env: Mapping[str, str]) -> list[Path]:
    """Where opencode may find config files, the one read first first (later wins).

    Global (``$XDG_CONFIG_HOME/opencode``), ``$OPENCODE_CONFIG``, ``$OPENCODE_CONFIG_DIR``,
    then from the filesystem root down to the working directory each directory's
    ``opencode.json(c)`` and ``.opencode/opencode.json(c)``.
    """
    xdg = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    paths = [Path(xdg) / "opencode" / name for name in _OPENCODE_FILES]
    if env.get("OPENCODE_CONFIG"):
        paths.append(Path(env["OPENCODE_CONFIG"]))
    if env.get("OPENCODE_CONFIG_DIR"):
        paths += [Path(env["OPENCODE_CONFIG_DIR"]) / name for name in _OPENCODE_FILES[:2]]
    cwd = Path.cwd()
    for folder in (*reversed(cwd.parents), cwd):
        paths += [folder / name for name in _OPENCODE_FILES[:2]]
        paths += [folder / ".opencode" / name for name in _OPENCODE_FILES[:2]]
    return paths


def _opencode_configs(env: Mapping[str, str]) -> list[dict[str, object]] | None:
    """The config objects of opencode, first to last; ``None`` when one cannot be read.

    A config this module cannot parse (JSONC with comments, a broken file) might set the
    provider's ``baseURL``: the route is then unknown rather than guessed, so the
    agent's requests never go to a host its user did not configure.
    """
    texts: list[str] = []
    for path in _opencode_paths(env):
        try:
            texts.append(path.read_text("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            return None
    texts.append(env.get(_OPENCODE_INLINE) or "")
    configs = []
    for text in texts:
        if not text.strip():
            continue
        try:
            config = json.loads(text)
        except ValueError:
            return None
        if not isinstance(config, dict):
            return None
        configs.append(config)
    return configs


def _opencode_model(argv: Sequence[str], configs: Sequence[dict[str, object]]) -> object:
    """The ``provider/model`` opencode runs: ``-m``/``--model``, else the last config's."""
    model: object = None
    for config in configs:
        model = config.get("model", model)
    for i, arg in enumerate(argv):
        if arg in {"-m", "--model"} and i + 1 < len(argv):
            model = argv[i + 1]
        elif arg.startswith("--model="):
            model = arg.split("=", 1)[1]
    return model


def _opencode_route(argv: Sequence[str], env: Mapping[str, str]) -> Route | None:
    """The provider route of opencode (the module docstring), ``None`` when unknown."""
    configs = _opencode_configs(env)
    if configs is None:
        return None
    model = _opencode_model(argv, configs)
    if not isinstance(model, str) or "/" not in model:
        return None
    provider = model.split("/", 1)[0]
    base: object = None
    for config in configs:
        entry = config.get("provider")
        entry = entry.get(provider) if isinstance(entry, dict) else None
        options = entry.get("options") if isinstance(entry, dict) else None
        if isinstance(options, dict) and isinstance(options.get("baseURL"), str):
            base = options["baseURL"]
    if base is None and provider in _OPENCODE_DEFAULTS:
        var, default = _OPENCODE_DEFAULTS[provider]
        base = env.get(var) or default
    if not isinstance(base, str):
        return None
    parts = urllib.parse.urlsplit(base)
    if not parts.scheme or not parts.netloc:
        return None
    return Route(upstream=f"{parts.scheme}://{parts.netloc}", opencode_provider=provider,
                 opencode_path=parts.path.rstrip("/"))


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


def route_for(
    agent: ResolvedAgent, env: Mapping[str, str] | None = None, argv: Sequence[str] = ()
) -> Route | None:
    """The provider route of ``agent`` under ``env`` (default ``os.environ``).

    ``argv`` is the agent's command line (opencode's ``--model`` may name the provider).
    Returns ``None`` when the agent's provider is unknown (no base-URL variable in the
    agent table, or an opencode model whose provider has no known base URL), so the
    observer cannot be put in front of it.
    """
    env = os.environ if env is None else env
    if agent.spec is not None and agent.spec.executable == "opencode":
        return _opencode_route(argv, env)
    var = agent.spec.base_url_env if agent.spec is not None else None
    if var is None:
        return None
    if var == "OPENAI_BASE_URL":
        custom = _codex_custom_provider(env)
        if custom is not None:
            return Route(upstream=custom[1], codex_provider=custom[0])
    return Route(upstream=env.get(var) or DEFAULT_UPSTREAMS[var], env_var=var)
