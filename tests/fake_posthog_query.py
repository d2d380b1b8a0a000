"""A local PostHog query API that runs HogQL on a real ClickHouse engine (chdb).

Listens on 127.0.0.1 (a free port) and answers ``POST /api/projects/<id>/query/`` with
``{"query": {"kind": "HogQLQuery", "query": "<SQL>"}}`` and ``Authorization: Bearer
<personal key>`` the way PostHog does: ``200 {"columns", "types", "results", "hasMore",
…}``; ``401`` for a missing or wrong key; ``404`` for another project; ``400`` for a
query it cannot run (ClickHouse's own error, or a function HogQL does not allow — e.g.
``quantileExactInclusive``).

Every query runs, as written, on ClickHouse in process (``chdb``, the ``chdb-core-lite``
build) over an ``events`` table shaped as PostHog's: ``uuid``, ``event``,
``distinct_id``, ``timestamp`` ``DateTime64(6, 'UTC')`` and ``properties`` (the JSON
string, read with ``JSONExtract…``), holding the events the PostHog sink captured
(``FakePostHog.events``), deduplicated on ``uuid`` as PostHog's ingestion does (a later
copy replaces an earlier one). The session runs in UTC, as a PostHog project set to UTC.

What ClickHouse cannot say is HogQL's own: the functions it lets through.
:data:`HOGQL_FUNCTIONS` is that allow-list (for the functions a report uses and the
common ones beside them; PostHog's ``posthog/hogql/functions`` is the reference), checked
before ClickHouse sees the query. PostHog's parser (``hogql-parser``) imports PostHog's
application code and cannot be used alone.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from helpers.http import Handler, LocalFake


def _import_chdb() -> Any:
    """``chdb.session``, imported without the SIGPIPE block it puts on the importing thread.

    Loading the engine blocks SIGPIPE in the calling thread's signal mask, which every
    child process started from that thread afterwards inherits: a child then gets EPIPE
    where it would have died of SIGPIPE, and tests comparing exit statuses (141) fail.
    """
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    from chdb import session

    signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return session


chdb_session = _import_chdb()

__all__ = ["HOGQL_FUNCTIONS", "FakePostHogQuery", "QueryError", "event_row", "run_query"]


class QueryError(Exception):
    """The query cannot be run (answered 400, as PostHog does)."""


HOGQL_FUNCTIONS: frozenset[str] = frozenset({
    # conditionals and NULLs
    "if", "multiIf", "isNull", "isNotNull", "ifNull", "coalesce", "nullIf", "assumeNotNull",
    # arithmetic, comparison, logic
    "plus", "minus", "multiply", "divide", "intDiv", "modulo", "abs", "round", "floor",
    "ceil", "sqrt", "exp", "log", "pow", "least", "greatest", "equals", "notEquals",
    "less", "greater", "lessOrEquals", "greaterOrEquals", "and", "or", "not",
    # conversions and dates
    "toInt", "toFloat", "toString", "toDate", "toDateTime", "toDateTime64", "toUnixTimestamp",
    "now", "today", "toStartOfDay", "toStartOfHour", "dateDiff", "parseDateTimeBestEffort",
    # strings and JSON
    "length", "lower", "upper", "concat", "substring", "replaceAll", "like", "ilike",
    "JSONExtract", "JSONExtractString", "JSONExtractBool", "JSONExtractInt", "JSONExtractFloat",
    "JSONExtractRaw", "JSONHas",
    # arrays
    "arraySort", "arrayElement", "arrayMap", "arrayFilter", "arrayJoin", "has", "empty",
    "notEmpty", "arraySlice", "arrayReverse", "arraySum", "countEqual", "arrayMax", "indexOf",
    # aggregations (HogQL's allow-list: of the exact quantiles only quantileExact)
    "count", "countIf", "sum", "sumIf", "avg", "avgIf", "min", "minIf", "max", "maxIf",
    "uniq", "uniqIf", "groupArray", "groupArrayIf", "any", "anyIf", "argMax", "argMin",
    "quantile", "quantiles", "quantileExact", "median",
})  # fmt: skip
"""Functions HogQL lets through (a subset of PostHog's list); any other is a 400."""

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "AS", "FROM", "SELECT", "WHERE", "IS", "ON",
                       "USING", "BY", "EXISTS", "LIMIT", "VALUES", "OVER"})  # fmt: skip
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_SETTINGS = {
    # As PostHog answers: counts as numbers, NaN and infinities as null.
    "output_format_json_quote_64bit_integers": 0,
    "output_format_json_quote_denormals": 0,
}


def check_hogql(sql: str) -> None:
    """Raise as HogQL does for a function it does not allow (string literals aside).

    Raises:
        QueryError: ``Unsupported function call '<name>(...)'``.
    """
    for name in _CALL.findall(_STRING.sub("''", sql)):
        if name.upper() in _KEYWORDS:
            continue
        if name not in HOGQL_FUNCTIONS:
            raise QueryError(f"Unsupported function call '{name}(...)'")


class _Engine:
    """One chdb session, each query in a database of its own; thread-safe."""

    def __init__(self) -> None:
        self._session = chdb_session.Session()
        self._session.query("SET session_timezone = 'UTC'")
        self._lock = threading.Lock()

    def run(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        database = f"q_{uuid.uuid4().hex}"
        with self._lock:
            self._session.query(f"CREATE DATABASE {database}")
            try:
                self._session.query(f"USE {database}")
                self._session.query(
                    "CREATE TABLE events (uuid String, event String, distinct_id String, "
                    "timestamp DateTime64(6, 'UTC'), properties String) ENGINE = Memory"
                )
                if rows:
                    data = "\n".join(json.dumps(row) for row in rows)
                    self._session.query(f"INSERT INTO events FORMAT JSONEachRow {data}")
                settings = ", ".join(f"{k} = {v}" for k, v in _SETTINGS.items())
                result = self._session.query(f"{sql}\nSETTINGS {settings}", "JSONCompact")
            except RuntimeError as exc:  # ClickHouse's own message: "Code: 62. DB::…"
                raise QueryError(str(exc).strip()) from None
            finally:
                self._session.query(f"DROP DATABASE IF EXISTS {database}")
        answer: dict[str, Any] = json.loads(result.bytes())
        return answer


@functools.cache
def _engine() -> _Engine:
    """The tests' one chdb session (made on first use: it loads the engine)."""
    return _Engine()


def run_query(
    sql: str, rows: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[list[Any]], list[str]]:
    """Run ``sql`` on ClickHouse over ``rows`` (the ``events`` table; see :func:`event_row`).

    Returns:
        ``(columns, results, types)`` as PostHog's query API gives them.

    Raises:
        QueryError: HogQL does not allow a function of it, or ClickHouse cannot run it.
    """
    check_hogql(sql)
    answer = _engine().run(sql, rows)
    meta = answer["meta"]
    return [m["name"] for m in meta], answer["data"], [m["type"] for m in meta]


def event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One captured wire event as a row of the ``events`` table (JSONEachRow-ready)."""
    stamp = datetime.fromisoformat(str(event.get("timestamp")))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return {
        "uuid": str(event.get("uuid")),
        "event": str(event.get("event")),
        "distinct_id": str(event.get("distinct_id", "")),
        "timestamp": stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "properties": json.dumps(event.get("properties", {})),
    }


# --- the server -----------------------------------------------------------------------


_PATH = re.compile(r"^/api/(?:projects|environments)/(?P<project>[^/]+)/query/?$")


class _Handler(Handler["FakePostHogQuery"]):
    def do_POST(self) -> None:  # noqa: N802 - the base class names it
        fake = self.fake
        raw = self.read_body()
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self.send_json(
                404, {"type": "invalid_request", "code": "not_found", "detail": "Not found."}
            )
            return
        auth = self.headers.get("Authorization", "")
        fake.record(self.path, auth.removeprefix("Bearer "), raw)
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") != fake.personal_api_key:
            self.send_json(
                401,
                {
                    "type": "authentication_error",
                    "code": "authentication_failed",
                    "detail": "Personal API key found in request Authorization header is invalid.",
                },
            )
            return
        if match.group("project") != fake.project_id:
            self.send_json(
                404,
                {"type": "invalid_request", "code": "not_found", "detail": "Project not found."},
            )
            return
        try:
            body = json.loads(raw)
            query = body["query"]
            if query.get("kind") != "HogQLQuery" or not isinstance(query.get("query"), str):
                raise QueryError("only HogQLQuery is supported here")
            columns, results, types = run_query(query["query"], fake.rows())
        except (QueryError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.send_json(
                400,
                {
                    "type": "validation_error",
                    "code": "query_error",
                    "detail": str(exc),
                    "attr": None,
                },
            )
            return
        self.send_json(
            200,
            {
                "cache_key": None,
                "clickhouse": None,
                "columns": columns,
                "error": None,
                "explain": None,
                "hasMore": False,
                "hogql": query["query"],
                "is_cached": False,
                "limit": len(results),
                "metadata": None,
                "modifiers": {},
                "offset": 0,
                "query": query["query"],
                "query_status": None,
                "results": results,
                "timezone": "UTC",
                "timings": [],
                "types": [[c, t] for c, t in zip(columns, types, strict=True)],
            },
        )


@attrs.frozen
class QueryRequest:
    """One request as the server saw it (the key as sent, the decoded body)."""

    path: str
    key: str
    body: bytes

    @property
    def hogql(self) -> str | None:
        """The HogQL text of the request, if it had one."""
        try:
            query = json.loads(self.body)["query"]["query"]
        except (ValueError, KeyError, TypeError):
            return None
        return query if isinstance(query, str) else None


class FakePostHogQuery(LocalFake):
    """PostHog's query API on a free port of 127.0.0.1; a context manager.

    Args:
        events: Captured wire events (e.g. ``FakePostHog.events``).
        project_id: The project the API answers for.
        personal_api_key: The Bearer key it accepts.
    """

    handler = _Handler
    thread_name = "fake-posthog-query"

    def __init__(
        self,
        events: Iterable[Mapping[str, Any]] = (),
        *,
        project_id: str = "4242",
        personal_api_key: str = "phx_test_personal_key",
    ) -> None:
        """Store the events and bind the port (serving starts on ``__enter__``)."""
        self.project_id = project_id
        self.personal_api_key = personal_api_key
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, Any]] = {}
        self.requests: list[QueryRequest] = []
        self.add_events(events)
        super().__init__()

    @property
    def host(self) -> str:
        """Base URL for ``POSTHOG_HOST``."""
        return self.url

    def add_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Ingest wire events; a repeated ``uuid`` replaces the earlier copy."""
        with self._lock:
            for event in events:
                self._events[str(event.get("uuid"))] = event_row(event)

    def rows(self) -> list[dict[str, Any]]:
        """The ``events`` table."""
        with self._lock:
            return list(self._events.values())

    def record(self, path: str, key: str, body: bytes) -> None:
        """Keep one request for assertions."""
        with self._lock:
            self.requests.append(QueryRequest(path, key, body))
