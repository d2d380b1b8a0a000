"""Where a report's runs come from: the local store, PostHog, or Jaeger (DESIGN §8).

:func:`load` gives the same :class:`~ttft_probe.analysis._model.Report` for the same runs
whichever source holds them::

    report = load("posthog", agent="claude_code", since=timedelta(days=7),
                  now=datetime.now(UTC))

- ``local``: the SQLite run store (``store_path``, default: the default store).
- ``posthog``: PostHog's query API; the percentiles are computed on PostHog's servers by
  one HogQL query (:mod:`ttft_probe.analysis.sources.posthog`).
- ``jaeger``: Jaeger's HTTP query API; runs are rebuilt from the root spans' attributes
  and the report is computed here (:mod:`ttft_probe.analysis.sources.jaeger`).

The window is ``now - since <= started_at <= now`` on the UTC wall clock (PostHog: the
event ``timestamp``, which the PostHog sink sets to ``started_at``); ``since=None`` means
no window. ``agent=None`` means every agent.

Configuration: each key of ``options`` wins over its environment variable (keys are
case-insensitive, ``-`` and ``_`` alike):

============================  ==============================  ===========================
option                        environment                     default
============================  ==============================  ===========================
``posthog_host``              ``POSTHOG_HOST``                ``https://us.posthog.com``
``posthog_project_id``        ``POSTHOG_PROJECT_ID``          (required)
``posthog_personal_api_key``  ``POSTHOG_PERSONAL_API_KEY``    (required)
``jaeger_url``                ``JAEGER_URL``                  ``http://localhost:16686``
``jaeger_api``                ``TTFT_PROBE_JAEGER_API``       ``auto`` (v3, v1 on 404)
``service_name``              ``OTEL_SERVICE_NAME``           ``ttft-probe``
``limit``                     ``TTFT_PROBE_JAEGER_LIMIT``     ``10000`` traces
``timeout_s``                 ``TTFT_PROBE_QUERY_TIMEOUT_S``  ``30`` s per request
============================  ==============================  ===========================

PostHog Cloud's ingestion hosts (``https://us.i.posthog.com``, ``eu.i…``) in
``POSTHOG_HOST`` are mapped to their app hosts, where the query API lives.

Missing or invalid configuration raises :class:`~ttft_probe.errors.ConfigError` naming
the variable to set; a backend that rejects the credentials (401/403) raises
``ConfigError`` too; an unreachable backend or an unexpected answer raises
:class:`SourceError`. Nothing here logs a key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from ttft_probe.analysis._model import Report, build_report
from ttft_probe.errors import ConfigError, TtftProbeError
from ttft_probe.record import RunRecord

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_TIMEOUT",
    "SOURCES",
    "Source",
    "SourceError",
    "in_window",
    "load",
    "option",
    "query_timeout_s",
    "started_at_of",
    "window_bounds",
]

Source = Literal["local", "posthog", "jaeger"]
SOURCES: tuple[Source, ...] = ("local", "posthog", "jaeger")


class SourceError(TtftProbeError, OSError):
    """A remote source could not be queried: unreachable, or an unexpected answer."""


def option(
    options: Mapping[str, str] | None,
    env: Mapping[str, str],
    key: str,
    env_name: str | None,
    default: str | None = None,
) -> str | None:
    """``options[key]`` (``-``/``_`` and case alike), else ``env[env_name]``, else default.

    Empty strings count as unset.
    """
    wanted = key.lower().replace("-", "_")
    for name, value in (options or {}).items():
        if name.lower().replace("-", "_") == wanted and value:
            return value
    if env_name is not None:
        value = env.get(env_name, "").strip()
        if value:
            return value
    return default


ENV_TIMEOUT: Final = "TTFT_PROBE_QUERY_TIMEOUT_S"
DEFAULT_TIMEOUT_S: Final = 30.0


def query_timeout_s(options: Mapping[str, str] | None, env: Mapping[str, str]) -> float:
    """The per-request timeout of a remote source, in seconds (option ``timeout_s``).

    Raises:
        ConfigError: It is set but not a positive number.
    """
    raw = option(options, env, "timeout_s", ENV_TIMEOUT)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{ENV_TIMEOUT} (timeout_s) must be a positive number of seconds")
    return value


def window_bounds(since: timedelta | None, now: datetime) -> tuple[datetime, datetime] | None:
    """``(now - since, now)`` as aware UTC datetimes; ``None`` without a window.

    Raises:
        ConfigError: ``now`` is naive, or ``since`` is negative.
    """
    if now.tzinfo is None:
        raise ConfigError("load(now=...) needs an aware datetime, e.g. datetime.now(UTC)")
    if since is None:
        return None
    if since < timedelta(0):
        raise ConfigError("the window (since) must not be negative")
    end = now.astimezone(UTC)
    return end - since, end


def started_at_of(record: RunRecord) -> datetime:
    """The run's ``started_at`` as an aware UTC datetime (naive values are taken as UTC)."""
    value = datetime.fromisoformat(record.started_at)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def in_window(
    records: Iterable[RunRecord],
    *,
    agent: str | None,
    since: timedelta | None,
    now: datetime,
) -> list[RunRecord]:
    """The runs of ``agent`` (all when ``None``) with ``now - since <= started_at <= now``.

    Raises:
        ConfigError: ``now`` is naive.
    """
    bounds = window_bounds(since, now)
    chosen = []
    for record in records:
        if agent is not None and record.agent != agent:
            continue
        if bounds is not None and not bounds[0] <= started_at_of(record) <= bounds[1]:
            continue
        chosen.append(record)
    return chosen


def load(
    source: Source,
    *,
    agent: str | None,
    since: timedelta | None,
    now: datetime,
    store_path: str | os.PathLike[str] | None = None,
    options: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Report:
    """The report of ``agent``'s runs (every agent when ``None``) in the window.

    Args:
        source: ``"local"``, ``"posthog"`` or ``"jaeger"``.
        agent: Only this agent's runs; ``None`` for all.
        since: The window's length back from ``now``; ``None`` for no window.
        now: The window's end (aware datetime).
        store_path: The local store (``local`` only; default: the default store).
        options: Source options (see the module docstring); they win over ``env``.
        env: The environment to read (default: ``os.environ``).

    Returns:
        The report; its ``source`` is the source's name.

    Raises:
        ConfigError: Unknown source, missing or invalid configuration, or credentials the
            backend rejected. The message names the variable to fix.
        SourceError: The backend is unreachable or answered unexpectedly.
        StoreError: The local store cannot be opened.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    window_bounds(since, now)  # configure loudly: a naive `now` fails for every source
    if source == "local":
        from ttft_probe.sinks.store import Store  # noqa: PLC0415 - only for this source

        store = Store(store_path)
        try:
            records = store.last()
        finally:
            store.close()
        return build_report(in_window(records, agent=agent, since=since, now=now), "local")
    if source == "posthog":
        from ttft_probe.analysis.sources import posthog as posthog_source  # noqa: PLC0415

        return posthog_source.load(agent=agent, since=since, now=now, options=options, env=environ)
    if source == "jaeger":
        from ttft_probe.analysis.sources import jaeger as jaeger_source  # noqa: PLC0415

        return jaeger_source.load(agent=agent, since=since, now=now, options=options, env=environ)
    raise ConfigError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
