"""Where an agent's provider is, and how the observer is put in front of it (_routing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttft_probe._routing import Route, route_for
from ttft_probe.agents import resolve_agent

PROXY = "http://127.0.0.1:4321"


def _route(argv: list[str], env: dict[str, str]) -> Route | None:
    return route_for(resolve_agent(argv), env, argv)


def test_a_base_url_variable_is_the_upstream_and_is_pointed_at_the_proxy() -> None:
    env = {"ANTHROPIC_BASE_URL": "http://10.0.0.1:9"}
    route = _route(["claude", "-p", "hi"], env)
    assert route == Route(upstream="http://10.0.0.1:9", env_var="ANTHROPIC_BASE_URL")
    argv, new_env = route.apply(["claude", "-p", "hi"], env, PROXY)
    assert argv == ["claude", "-p", "hi"]
    assert new_env["ANTHROPIC_BASE_URL"] == PROXY
    assert env["ANTHROPIC_BASE_URL"] == "http://10.0.0.1:9"  # the caller's mapping is kept
    assert _route(["claude", "-p", "hi"], {}) == Route(
        upstream="https://api.anthropic.com", env_var="ANTHROPIC_BASE_URL")


def test_codex_with_a_custom_provider_is_re_pointed_with_a_config_override(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.toml").write_text(
        'model_provider = "mine"\n[model_providers.mine]\nbase_url = "http://10.0.0.2:7/v1"\n')
    env = {"CODEX_HOME": str(tmp_path)}
    route = _route(["codex", "exec", "hi"], env)
    assert route is not None
    assert route.upstream == "http://10.0.0.2:7/v1"
    argv, _ = route.apply(["codex", "exec", "hi"], env, PROXY)
    assert argv == ["codex", "-c", f'model_providers.mine.base_url="{PROXY}"', "exec", "hi"]


def _opencode_home(tmp_path: Path, config: dict[str, object]) -> dict[str, str]:
    (tmp_path / "opencode").mkdir()
    (tmp_path / "opencode" / "opencode.json").write_text(json.dumps(config))
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def test_opencode_routes_through_its_models_provider_base_url(tmp_path: Path) -> None:
    env = _opencode_home(tmp_path, {
        "model": "anthropic/claude-sonnet-4-5",
        "provider": {"anthropic": {"options": {"baseURL": "http://10.0.0.3:5/v1", "apiKey": "k"}}},
    })
    env["OPENCODE_CONFIG_CONTENT"] = json.dumps({"share": "disabled"})
    route = _route(["opencode", "acp"], env)
    assert route is not None
    assert route.upstream == "http://10.0.0.3:5"  # the origin: requests keep their /v1 path
    argv, new_env = route.apply(["opencode", "acp"], env, PROXY)
    assert argv == ["opencode", "acp"]
    inline = json.loads(new_env["OPENCODE_CONFIG_CONTENT"])
    # Merged into what the caller had inline (read last by opencode), nothing else lost.
    assert inline == {"share": "disabled",
                      "provider": {"anthropic": {"options": {"baseURL": PROXY + "/v1"}}}}


def test_opencode_model_option_and_the_ai_sdk_default_variable(tmp_path: Path) -> None:
    env = _opencode_home(tmp_path, {"model": "anthropic/claude-sonnet-4-5"})
    env["OPENAI_BASE_URL"] = "http://10.0.0.4:6/v1"
    route = _route(["opencode", "run", "-m", "openai/gpt-5", "hi"], env)
    assert route is not None
    assert (route.upstream, route.opencode_provider, route.opencode_path) == (
        "http://10.0.0.4:6", "openai", "/v1")
    route = _route(["opencode", "run", "hi"], env)
    assert route is not None
    assert route.upstream == "https://api.anthropic.com"


@pytest.mark.parametrize("config", [{}, {"model": "someprovider/x"}, {"model": "nomodelslash"}])
def test_opencode_without_a_known_provider_url_has_no_route(
    tmp_path: Path, config: dict[str, object]
) -> None:
    assert _route(["opencode", "acp"], _opencode_home(tmp_path, config)) is None


def test_opencode_config_that_cannot_be_read_leaves_the_route_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A JSONC config might set the provider's baseURL: no route rather than a guessed host.
    env = _opencode_home(tmp_path, {"model": "anthropic/claude-sonnet-4-5"})
    assert _route(["opencode", "acp"], env) is not None
    project = tmp_path / "project"
    (project / ".opencode").mkdir(parents=True)
    (project / ".opencode" / "opencode.jsonc").write_text(
        '{ // a gateway\n "provider": {"anthropic": {"options": {"baseURL": "http://gw/v1"}}}}')
    monkeypatch.chdir(project)
    assert _route(["opencode", "acp"], env) is None
    monkeypatch.chdir(tmp_path)
    assert _route(["opencode", "acp"], {**env, "OPENCODE_CONFIG_CONTENT": "{ // x\n}"}) is None


def test_opencode_project_config_wins_over_the_global_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _opencode_home(tmp_path, {
        "model": "anthropic/claude-sonnet-4-5",
        "provider": {"anthropic": {"options": {"baseURL": "http://global:1/v1"}}}})
    project = tmp_path / "project"
    project.mkdir()
    (project / "opencode.json").write_text(json.dumps(
        {"provider": {"anthropic": {"options": {"baseURL": "http://project:2/v1"}}}}))
    monkeypatch.chdir(project)
    route = _route(["opencode", "acp"], env)
    assert route is not None
    assert route.upstream == "http://project:2"


def test_opencode_behind_an_explicit_upstream_keeps_the_observers_path(tmp_path: Path) -> None:
    env = _opencode_home(tmp_path, {"model": "anthropic/claude-sonnet-4-5"})
    route = _route(["opencode", "acp"], env)
    assert route is not None
    # With --upstream https://gw/v1 the observer's own URL already ends in /v1.
    _, new_env = route.apply(["opencode", "acp"], env, PROXY + "/v1")
    inline = json.loads(new_env["OPENCODE_CONFIG_CONTENT"])
    assert inline["provider"]["anthropic"]["options"]["baseURL"] == PROXY + "/v1"
