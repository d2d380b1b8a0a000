"""The PostHog source: one HogQL query, percentiles computed on PostHog's servers.

Request (PostHog's query API, a personal API key with the *Query Read* scope)::

    POST {POSTHOG_HOST}/api/projects/{POSTHOG_PROJECT_ID}/query/
    Authorization: Bearer {POSTHOG_PERSONAL_API_KEY}
    {"query": {"kind": "HogQLQuery", "query": "<the query of hogql_query()>"},
     "name": "ttft_probe report"}

The answer's ``columns`` name the values of each row of ``results``; one row per
agent × cohort, which :func:`report_from_response` turns into the
:class:`~ttft_probe.analysis._model.Report` the local store gives for the same runs.

The query (:func:`hogql_query`) reads the ``run_finished`` events the PostHog sink sent
(properties = the record's fields) in three steps: per event, the cohort columns and the
metrics; per cohort, the counts and the sorted arrays of the included runs' values
(``arraySort(groupArrayIf(...))``; NULLs are skipped); per cohort again, n, p50 and p90.

Why not ``quantileExactInclusive``: HogQL only lets through the aggregations on its
allow-list (``posthog/hogql/functions/aggregations.py``), and among the quantiles that
is ``quantile`` (a reservoir sample), ``quantiles`` and ``quantileExact`` (no
interpolation), none of them ``quantileExactInclusive``. So the type-7 quantile
(``quantileExactInclusive``'s definition, :func:`~ttft_probe.analysis._model.percentile`)
is written out with allowed array functions: for ``q = k/d``, ``pos = (n-1)·q``::

    a[lo+1] + (a[hi+1] - a[lo+1]) * ((n-1)*q - lo)
    lo = intDiv((n-1)*k, d),  hi = intDiv((n-1)*k + d-1, d)

the same floating-point operations in the same order as the local computation, so both
give bit-identical results.

Property access uses ClickHouse's ``JSONExtract*`` on the raw ``properties`` JSON with
explicit types (``Nullable(Float64)``, ``Nullable(Int64)``, ``JSONExtractBool``), not
``properties.x``: the latter is typed by PostHog's property definitions (a boolean may
come back as ``'true'`` or as ``true`` depending on them), the former does not depend
on them. Booleans come back as ``UInt8`` (0/1); JSON ``null`` and absent properties as
NULL.

The prompt-cache figures (DESIGN §10) come from the same query, per cohort, over the
included runs the provider observer watched (``model_request_count`` not NULL): n / p50 /
p90 of ``first_request_uncached_tokens`` (the same array quantile), the runs reporting
both input and cache-read tokens and the sum of each (``sumIf``, exact integers; the
share is their ratio, divided here as for the local store), the count of each
``prefix_status``, and the section most broken runs name first: with ``b`` the sorted
array of their ``prefix_break``::

    c = arrayMap(s -> countEqual(b, s), b)             -- each one's count
    top_break_runs = arrayMax(c)
    top_break = arrayElement(b, indexOf(c, arrayMax(c)))  -- first in order on a tie

The cost of context needs every run's point, not a statistic: ``context_points`` is each
cohort's array of ``(first_request_uncached_tokens, model_first_token_ms, whole-message
first token)`` tuples, and :func:`report_from_response` fits each agent's slope from them
with :func:`~ttft_probe.analysis._model.fit_context_cost`, exactly as for the local store
(the fit sorts its points, so the order ClickHouse returns them in does not matter).
``countEqual``, ``arrayMax`` and ``indexOf`` are on HogQL's allow-list of array
functions (``posthog/hogql/functions/clickhouse/arrays.py``), as are lambdas.
"""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Final

from ttft_probe.analysis._model import (
    METRICS,
    CohortKey,
    CohortRow,
    ContextPoint,
    PromptCache,
    Report,
    Stats,
    TurnGroup,
    fit_context_cost,
)
from ttft_probe.analysis.sources import (
    ENV_TIMEOUT,
    SourceError,
    option,
    query_timeout_s,
    window_bounds,
)
from ttft_probe.errors import ConfigError

__all__ = [
    "DEFAULT_HOST",
    "EVENT",
    "QUANTILES",
    "SHARE",
    "app_host",
    "hogql_query",
    "load",
    "report_from_response",
]

DEFAULT_HOST: Final = "https://us.posthog.com"
"""PostHog's app host (the query API lives there, not on the ``i.`` ingestion host)."""
EVENT: Final = "run_finished"
SHARE: Final = "session_init_share"
"""Column stem of ``session_init_ms / spawn_to_first_token_ms``."""
UNCACHED: Final = "first_request_uncached_tokens"
"""Column stem of the observed runs' uncached input tokens of the first model request."""
_PREFIX_STATUSES: Final = ("stable", "broken", "no_previous", "unavailable")
_CACHE_COLUMNS: Final = (
    "observed_runs",
    "share_runs",
    "cache_read_tokens",
    "input_tokens",
    *(f"prefix_{status}" for status in _PREFIX_STATUSES),
    "top_break",
    "top_break_runs",
    "context_points",
)
QUANTILES: Final = ((50, 0.5), (90, 0.9))
"""(column label, quantile) pairs: ``p50_<metric>``, ``p90_<metric>``."""

ENV_HOST: Final = "POSTHOG_HOST"
ENV_PROJECT_ID: Final = "POSTHOG_PROJECT_ID"
ENV_PERSONAL_API_KEY: Final = "POSTHOG_PERSONAL_API_KEY"
_ROW_LIMIT: Final = 10000
_APP_HOSTS: Final = {"us.i.posthog.com": "us.posthog.com", "eu.i.posthog.com": "eu.posthog.com"}
_TURNS: Final[frozenset[str]] = frozenset({"1", "2+", "?"})


def _sql_string(value: str) -> str:
    """A HogQL string literal (ClickHouse escaping: backslash and single quote)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_datetime(value: datetime) -> str:
    """``toDateTime('<ISO-8601 UTC, µs>')``: parsed best-effort, the ``Z`` makes it UTC."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"toDateTime({_sql_string(text)})"


def _prop(name: str, clickhouse_type: str) -> str:
    return f"JSONExtract(properties, {_sql_string(name)}, {_sql_string(clickhouse_type)})"


def _quantile(array: str, q: float) -> str:
    """The type-7 quantile ``q`` of the sorted array column ``array`` (see module doc)."""
    frac = Fraction(repr(q))
    k, d = frac.numerator, frac.denominator
    n1 = f"(length({array}) - 1)"
    lo = f"intDiv({n1} * {k}, {d})"
    hi = f"intDiv({n1} * {k} + {d - 1}, {d})"
    a_lo = f"arrayElement({array}, {lo} + 1)"
    a_hi = f"arrayElement({array}, {hi} + 1)"
    return f"if(length({array}) = 0, NULL, {a_lo} + ({a_hi} - {a_lo}) * ({n1} * {q!r} - {lo}))"


def _cache_per_cohort() -> list[str]:
    """The per-cohort aggregates of the prompt cache (observed, included runs only)."""
    seen = "included AND observed"
    both = f"{seen} AND isNotNull(input_1) AND isNotNull(cache_read_1)"
    return [
        f"countIf({seen}) AS observed_runs",
        f"arraySort(groupArrayIf({UNCACHED}, {seen})) AS v_{UNCACHED}",
        f"countIf({both}) AS share_runs",
        f"sumIf(ifNull(cache_read_1, 0), {both}) AS cache_read_tokens",
        f"sumIf(ifNull(input_1, 0), {both}) AS input_tokens",
        *(
            f"countIf({seen} AND prefix_status = {_sql_string(status)}) AS prefix_{status}"
            for status in _PREFIX_STATUSES
        ),
        (
            f"arraySort(groupArrayIf(prefix_break, {seen} AND prefix_status = 'broken'))"
            " AS v_prefix_break"
        ),
        (
            "groupArrayIf((uncached_tokens, model_first_token_ms, message), included"
            " AND isNotNull(uncached_tokens) AND isNotNull(model_first_token_ms))"
            " AS context_points"
        ),
    ]


def _cache_per_row() -> list[str]:
    """The prompt-cache columns of a row; the most frequent break (module docstring)."""
    breaks = "v_prefix_break"
    counts = f"arrayMap(s -> countEqual({breaks}, s), {breaks})"
    none = f"length({breaks}) = 0"
    return [
        "observed_runs",
        "share_runs",
        "cache_read_tokens",
        "input_tokens",
        *(f"prefix_{status}" for status in _PREFIX_STATUSES),
        (
            f"if({none}, NULL, arrayElement({breaks}, indexOf({counts}, arrayMax({counts}))))"
            " AS top_break"
        ),
        f"if({none}, 0, arrayMax({counts})) AS top_break_runs",
        "context_points",
    ]


def hogql_query(*, agent: str | None, start: datetime | None, end: datetime | None) -> str:
    """The HogQL query of the report: one row per agent × cohort.

    Args:
        agent: Only this agent's events (``properties.agent``); ``None`` for all.
        start: The window's start (``timestamp >=``), ``None`` for none.
        end: The window's end (``timestamp <=``), ``None`` for none.

    Returns:
        The query. Columns: ``agent``, ``turn`` (``'1'``/``'2+'``/``'?'``), ``resumed``,
        ``reused``, ``separated`` (0/1; see
        :func:`~ttft_probe.analysis._model.init_separated`), ``runs``, ``excluded``,
        ``message_granular``, then for every metric ``m`` of
        :data:`~ttft_probe.analysis._model.METRICS`, ``session_init_share`` and
        ``first_request_uncached_tokens``: ``n_<m>``, ``p50_<m>``, ``p90_<m>`` (ms; the
        share as a fraction; tokens). An unseparated run's ``session_init_ms`` is no
        measurement: it is NULL, as the local store leaves it out. Then the prompt cache
        (module docstring): ``observed_runs``, ``share_runs``, ``cache_read_tokens``,
        ``input_tokens`` (token sums), ``prefix_stable``, ``prefix_broken``,
        ``prefix_no_previous``, ``prefix_unavailable``, ``top_break`` (NULL without
        breaks), ``top_break_runs`` and ``context_points`` (``[[tokens, ms, 0/1], …]``).
    """
    ordinal = _prop("turn_ordinal", "Nullable(Int64)")
    metrics = [
        f"if(separated, {_prop(m, 'Nullable(Float64)')}, NULL) AS {m}"
        if m == "session_init_ms"
        else f"{_prop(m, 'Nullable(Float64)')} AS {m}"
        for m in METRICS
    ]
    per_event = [
        "JSONExtractString(properties, 'agent') AS agent",
        f"multiIf(isNull({ordinal}), '?', {ordinal} = 1, '1', '2+') AS turn",
        "JSONExtractBool(properties, 'session_resumed') AS resumed",
        "JSONExtractBool(properties, 'process_reused') AS reused",
        "JSONExtractString(properties, 'session_init_source') != 'init_message' AS separated",
        (
            "JSONExtractString(properties, 'status') = 'succeeded'"
            f" AND isNull({_prop('timing_unavailable_reason', 'Nullable(String)')}) AS included"
        ),
        "JSONExtractString(properties, 'first_token_granularity') = 'message' AS message",
        *metrics,
        f"isNotNull({_prop('model_request_count', 'Nullable(Int64)')}) AS observed",
        f"{_prop(UNCACHED, 'Nullable(Float64)')} AS {UNCACHED}",
        f"{_prop(UNCACHED, 'Nullable(Int64)')} AS uncached_tokens",
        f"{_prop('first_request_input_tokens', 'Nullable(Int64)')} AS input_1",
        f"{_prop('first_request_cache_read_tokens', 'Nullable(Int64)')} AS cache_read_1",
        "JSONExtractString(properties, 'prefix_status') AS prefix_status",
        f"{_prop('prefix_break', 'Nullable(String)')} AS prefix_break",
    ]
    where = [f"event = {_sql_string(EVENT)}"]
    if start is not None:
        where.append(f"timestamp >= {_sql_datetime(start)}")
    if end is not None:
        where.append(f"timestamp <= {_sql_datetime(end)}")
    if agent is not None:
        where.append(f"JSONExtractString(properties, 'agent') = {_sql_string(agent)}")

    share = "if(spawn_to_first_token_ms > 0, session_init_ms / spawn_to_first_token_ms, NULL)"
    per_cohort = [
        "agent",
        "turn",
        "resumed",
        "reused",
        "separated",
        "count() AS runs",
        "countIf(NOT included) AS excluded",
        "countIf(included AND message) AS message_granular",
        *(f"arraySort(groupArrayIf({m}, included)) AS v_{m}" for m in METRICS),
        f"arraySort(groupArrayIf({share}, included)) AS v_{SHARE}",
        *_cache_per_cohort(),
    ]
    stats = []
    for m in (*METRICS, SHARE, UNCACHED):
        stats.append(f"length(v_{m}) AS n_{m}")
        stats.extend(f"{_quantile(f'v_{m}', q)} AS p{label}_{m}" for label, q in QUANTILES)
    stats.extend(_cache_per_row())
    keys = "agent, turn, resumed, reused, separated"
    sep = ",\n    "
    return (
        f"SELECT\n    {keys},\n    runs,\n    excluded,\n    message_granular,\n"
        f"    {sep.join(stats)}\n"
        f"FROM (\n"
        f"SELECT\n    {sep.join(per_cohort)}\n"
        f"FROM (\n"
        f"SELECT\n    {sep.join(per_event)}\n"
        f"FROM events\n"
        f"WHERE {' AND '.join(where)}\n"
        f")\n"
        f"GROUP BY {keys}\n"
        f")\n"
        f"ORDER BY {keys}\n"
        f"LIMIT {_ROW_LIMIT}"
    )


def _bool(value: object, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in {0, 1}:
        return bool(value)
    if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
        return value.lower() in {"true", "1"}
    raise SourceError(f"PostHog returned {value!r} for the boolean column {column!r}")


def _int(value: object, column: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SourceError(f"PostHog returned {value!r} for the count column {column!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise SourceError(f"PostHog returned {value!r} for the count {column!r}") from exc


def _float(value: object, column: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SourceError(f"PostHog returned {value!r} for the number column {column!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise SourceError(f"PostHog returned {value!r} for the number {column!r}") from exc
    return None if math.isnan(number) else number


def _stats(row: Mapping[str, Any], stem: str) -> Stats:
    n = _int(row[f"n_{stem}"], f"n_{stem}")
    if n == 0:
        return Stats(n=0, p50=None, p90=None)
    return Stats(
        n=n,
        p50=_float(row[f"p50_{stem}"], f"p50_{stem}"),
        p90=_float(row[f"p90_{stem}"], f"p90_{stem}"),
    )


def report_from_response(body: Mapping[str, Any], source: str = "posthog") -> Report:
    """The report from a query API answer (``columns`` + ``results``) to :func:`hogql_query`.

    Raises:
        SourceError: The answer lacks a column or holds a value of the wrong kind.
    """
    columns = body.get("columns")
    results = body.get("results")
    if not isinstance(columns, list) or not isinstance(results, list):
        raise SourceError("PostHog's answer has no 'columns' and 'results'")
    needed = {"agent", "turn", "resumed", "reused", "separated", "runs", "excluded",
              "message_granular", *_CACHE_COLUMNS}
    for m in (*METRICS, SHARE, UNCACHED):
        needed |= {f"n_{m}", f"p50_{m}", f"p90_{m}"}
    missing = needed - set(columns)
    if missing:
        raise SourceError(
            f"PostHog's answer lacks the columns {sorted(missing)}: it is not the answer to the "
            f"query ttft-probe sent; check that {ENV_HOST} names PostHog itself (the app host, "
            "not a proxy) and that this ttft-probe matches its ttft_probe events"
        )
    rows = []
    points: dict[str, list[ContextPoint]] = {}
    for values in results:
        if not isinstance(values, Sequence) or len(values) != len(columns):
            raise SourceError("PostHog's answer has a row that does not match its columns")
        row = dict(zip(columns, values, strict=True))
        turn = row["turn"]
        if turn not in _TURNS:
            raise SourceError(f"PostHog returned the turn group {turn!r}")
        turn_group: TurnGroup = turn
        key = CohortKey(
            agent=str(row["agent"]),
            turn=turn_group,
            resumed=_bool(row["resumed"], "resumed"),
            reused=_bool(row["reused"], "reused"),
            separated=_bool(row["separated"], "separated"),
        )
        rows.append(
            CohortRow(
                key=key,
                runs=_int(row["runs"], "runs"),
                excluded=_int(row["excluded"], "excluded"),
                metrics={m: _stats(row, m) for m in METRICS},
                session_init_share=_stats(row, SHARE),
                message_granular=_int(row["message_granular"], "message_granular"),
                prompt_cache=_prompt_cache(row),
            )
        )
        points.setdefault(key.agent, []).extend(_points(row["context_points"]))
    rows.sort(key=lambda r: r.key)
    costs = tuple(fit_context_cost(agent, points[agent]) for agent in sorted(points))
    return Report(rows=tuple(rows), source=source, context_cost=costs)


def _prompt_cache(row: Mapping[str, Any]) -> PromptCache:
    top = row["top_break"]
    if top is not None and not isinstance(top, str):
        raise SourceError(f"PostHog returned {top!r} for the prefix section 'top_break'")
    return PromptCache(
        observed=_int(row["observed_runs"], "observed_runs"),
        uncached_tokens=_stats(row, UNCACHED),
        share_runs=_int(row["share_runs"], "share_runs"),
        cache_read_tokens=_int(row["cache_read_tokens"], "cache_read_tokens"),
        input_tokens=_int(row["input_tokens"], "input_tokens"),
        prefix_stable=_int(row["prefix_stable"], "prefix_stable"),
        prefix_broken=_int(row["prefix_broken"], "prefix_broken"),
        prefix_no_previous=_int(row["prefix_no_previous"], "prefix_no_previous"),
        prefix_unavailable=_int(row["prefix_unavailable"], "prefix_unavailable"),
        top_break=top or None,
        top_break_runs=_int(row["top_break_runs"], "top_break_runs") if top else 0,
    )


def _points(value: object) -> list[ContextPoint]:
    """``context_points``: ``[[tokens, ms, whole message], …]`` (tuples come as arrays)."""
    if not isinstance(value, list):
        raise SourceError(f"PostHog returned {value!r} for the array 'context_points'")
    points = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise SourceError(f"PostHog returned {item!r} in 'context_points'")
        ms = _float(item[1], "context_points")
        if ms is None:
            raise SourceError("PostHog returned a point without model_first_token_ms")
        points.append((_int(item[0], "context_points"), ms, _bool(item[2], "context_points")))
    return points


def app_host(host: str) -> str:
    """PostHog Cloud's app host for its ingestion host (``us.i…`` → ``us.posthog.com``).

    ``POSTHOG_HOST`` often names the capture host, which does not serve the query API.
    Other hosts (self-hosted) are kept, without a trailing ``/``.
    """
    parts = urllib.parse.urlsplit(host.rstrip("/"))
    mapped = _APP_HOSTS.get(parts.netloc.lower())
    if mapped is None:
        return host.rstrip("/")
    return urllib.parse.urlunsplit(parts._replace(netloc=mapped))


def load(
    *,
    agent: str | None,
    since: timedelta | None,
    now: datetime,
    options: Mapping[str, str] | None,
    env: Mapping[str, str],
) -> Report:
    """Query PostHog and return the report (see the module docstring).

    Raises:
        ConfigError: ``POSTHOG_PROJECT_ID`` or ``POSTHOG_PERSONAL_API_KEY`` is missing,
            ``POSTHOG_HOST`` is not an http(s) URL, or PostHog rejected the key (401/403)
            or does not know the project (404).
        SourceError: PostHog is unreachable, refused the query, or answered unexpectedly.
    """
    host = app_host(option(options, env, "posthog_host", ENV_HOST, DEFAULT_HOST) or DEFAULT_HOST)
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV_HOST} must be an http:// or https:// URL, not {host!r}")
    project = option(options, env, "posthog_project_id", ENV_PROJECT_ID)
    if project is None:
        raise ConfigError(
            f"the posthog source needs {ENV_PROJECT_ID} (the project's id, in PostHog's "
            "project settings)"
        )
    key = option(options, env, "posthog_personal_api_key", ENV_PERSONAL_API_KEY)
    if key is None:
        raise ConfigError(
            f"the posthog source needs {ENV_PERSONAL_API_KEY}: a personal API key with the "
            "Query Read scope (not the phc_ project key used for capture)"
        )
    timeout_s = query_timeout_s(options, env)
    bounds = window_bounds(since, now)
    query = hogql_query(
        agent=agent,
        start=None if bounds is None else bounds[0],
        end=None if bounds is None else bounds[1],
    )
    url = f"{host.rstrip('/')}/api/projects/{urllib.parse.quote(project, safe='')}/query/"
    payload = {"query": {"kind": "HogQLQuery", "query": query}, "name": "ttft_probe report"}
    body = _post(url, payload, key=key, timeout_s=timeout_s)
    return report_from_response(body)


def _post(url: str, payload: Mapping[str, Any], *, key: str, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the URL's scheme was checked
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code in {401, 403}:
            raise ConfigError(
                f"PostHog rejected the personal API key ({exc.code}: {detail}); check "
                f"{ENV_PERSONAL_API_KEY} (it needs the Query Read scope) and "
                f"{ENV_PROJECT_ID}"
            ) from None
        if exc.code == 404:
            raise ConfigError(
                f"PostHog does not know this project (404: {detail}); check "
                f"{ENV_PROJECT_ID} and {ENV_HOST}"
            ) from None
        if exc.code == 400:
            raise SourceError(
                f"PostHog refused the report's query (400: {detail}); check that {ENV_HOST} "
                "names PostHog's app host, or use --source local"
            ) from None
        raise SourceError(
            f"PostHog's query API answered {exc.code} ({detail}); try again later, or use "
            "--source local"
        ) from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise SourceError(
                f"PostHog at {url} did not answer within {timeout_s:g} s; raise "
                f"{ENV_TIMEOUT} or check {ENV_HOST}"
            ) from None
        raise SourceError(
            f"cannot reach PostHog at {url} ({reason}); check {ENV_HOST} and the network"
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise SourceError(
            f"the query API at {url} did not answer with JSON; check that {ENV_HOST} names "
            "PostHog's app host"
        ) from None
    if not isinstance(body, dict):
        raise SourceError("PostHog's query API answered with something other than an object")
    if body.get("error"):
        raise SourceError(f"PostHog could not run the query: {body['error']}")
    return body


def _detail(exc: urllib.error.HTTPError) -> str:
    """PostHog's ``detail`` message of an error answer (short; never the request).

    Closes the answer.
    """
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return exc.reason if isinstance(exc.reason, str) else "error"
    finally:
        with contextlib.suppress(OSError, AttributeError):
            exc.close()
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail[:300]
    return exc.reason if isinstance(exc.reason, str) else "error"
