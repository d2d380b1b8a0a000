"""A local PostHog query API: evaluates HogQL over stored events with ClickHouse rules.

Listens on 127.0.0.1 (a free port) and answers ``POST /api/projects/<id>/query/`` with
``{"query": {"kind": "HogQLQuery", "query": "<SQL>"}}`` and ``Authorization: Bearer
<personal key>`` the way PostHog does: ``200 {"columns", "types", "results", "hasMore",
…}``; ``401`` for a missing or wrong key; ``404`` for another project; ``400`` for a
query it cannot run (a syntax error, or a function HogQL does not allow — e.g.
``quantileExactInclusive``).

The events are the ones the PostHog sink captured (``FakePostHog.events``, the wire
events): ``event``, ``uuid``, ``distinct_id``, ``timestamp`` (DateTime64(6, UTC)) and
``properties`` (the JSON string, as ClickHouse stores it). Events are deduplicated on
``uuid``, as PostHog's ingestion does.

The query is parsed (a tokenizer and a precedence-climbing parser) and evaluated, not
matched against a canned answer. What is supported is the SQL subset a report needs:
``SELECT <expr [AS alias]>, … FROM events | (<subquery>) [WHERE …] [GROUP BY …]
[ORDER BY … [ASC|DESC]] [LIMIT n]``; operators ``AND OR NOT = != <> < <= > >= + - * /``,
array subscripts ``a[i]``; the functions in :data:`FUNCTIONS` and the aggregates in
:data:`AGGREGATES`, with ClickHouse semantics: NULL propagates through operators and
functions, ``if``/``multiIf`` treat a NULL condition as false, aggregates skip NULLs,
``JSONExtract(json, key, 'Nullable(T)')`` is NULL for an absent key or a JSON ``null``,
``JSONExtractBool`` is 0/1, comparisons return 0/1 (``UInt8``), ``/`` is always
floating point, ``intDiv`` truncates toward zero, ``arrayElement`` is 1-based and gives
the type's default (0) out of range, non-aggregated columns of a grouped SELECT must be
GROUP BY keys.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

import attrs

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["AGGREGATES", "FUNCTIONS", "FakePostHogQuery", "QueryError", "run_query"]


class QueryError(Exception):
    """The query cannot be parsed or run (answered 400, as PostHog does)."""


# --- tokens ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    | (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
    | (?P<ident>[A-Za-z_$][A-Za-z0-9_$]*)
    | (?P<op><=|>=|!=|<>|[-+*/%=<>(),.\[\]])
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "GROUP", "BY", "ORDER", "LIMIT", "AS", "AND", "OR", "NOT",
     "NULL", "ASC", "DESC", "IS", "TRUE", "FALSE"}
)  # fmt: skip


@attrs.frozen
class _Tok:
    kind: str  # "string", "number", "ident", "kw", "op", "end"
    value: Any


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(f"Syntax error at position {pos}: {text[pos : pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        raw = match.group()
        if kind == "ws":
            continue
        if kind == "string":
            tokens.append(_Tok("string", re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif kind == "number":
            is_float = any(c in raw for c in ".eE")
            tokens.append(_Tok("number", float(raw) if is_float else int(raw)))
        elif kind == "ident" and raw.upper() in _KEYWORDS:
            tokens.append(_Tok("kw", raw.upper()))
        else:
            tokens.append(_Tok(str(kind), raw))
    tokens.append(_Tok("end", None))
    return tokens


# --- syntax tree ----------------------------------------------------------------------


@attrs.frozen
class Const:
    value: Any


@attrs.frozen
class Column:
    name: str


@attrs.frozen
class Call:
    name: str
    args: tuple[Any, ...]


@attrs.frozen
class Item:
    expr: Any
    alias: str


@attrs.frozen
class Select:
    items: tuple[Item, ...]
    source: Select | str
    where: Any | None
    group_by: tuple[Any, ...]
    order_by: tuple[tuple[Any, bool], ...]
    limit: int | None


_BINARY = {
    "OR": 1, "AND": 2,
    "=": 4, "!=": 4, "<>": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
    "+": 5, "-": 5, "*": 6, "/": 6, "%": 6,
}  # fmt: skip


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self) -> _Tok:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def accept(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None) -> _Tok:
        tok = self.take()
        if tok.kind != kind or (value is not None and tok.value != value):
            raise QueryError(f"Syntax error: expected {value or kind}, got {tok.value!r}")
        return tok

    def statement(self) -> Select:
        select = self.select()
        self.expect("end")
        return select

    def select(self) -> Select:
        self.expect("kw", "SELECT")
        items = [self.item()]
        while self.accept("op", ","):
            items.append(self.item())
        self.expect("kw", "FROM")
        source: Select | str
        if self.accept("op", "("):
            source = self.select()
            self.expect("op", ")")
        else:
            source = str(self.expect("ident").value)
        where = self.expr() if self.accept("kw", "WHERE") else None
        group_by: list[Any] = []
        if self.accept("kw", "GROUP"):
            self.expect("kw", "BY")
            group_by = [self.expr()]
            while self.accept("op", ","):
                group_by.append(self.expr())
        order_by: list[tuple[Any, bool]] = []
        if self.accept("kw", "ORDER"):
            self.expect("kw", "BY")
            while True:
                expr = self.expr()
                descending = self.accept("kw", "DESC")
                if not descending:
                    self.accept("kw", "ASC")
                order_by.append((expr, descending))
                if not self.accept("op", ","):
                    break
        limit = int(self.expect("number").value) if self.accept("kw", "LIMIT") else None
        return Select(tuple(items), source, where, tuple(group_by), tuple(order_by), limit)

    def item(self) -> Item:
        start = self.pos
        expr = self.expr()
        if self.accept("kw", "AS"):
            alias = str(self.expect("ident").value)
        elif isinstance(expr, Column):
            alias = expr.name
        else:  # ClickHouse names an unaliased column by its text
            alias = " ".join(str(t.value) for t in self.tokens[start : self.pos])
        return Item(expr, alias)

    def expr(self, min_prec: int = 1) -> Any:
        left = self.unary()
        while True:
            tok = self.peek()
            if tok.kind == "kw" and tok.value == "IS":
                self.take()
                negate = self.accept("kw", "NOT")
                self.expect("kw", "NULL")
                left = Call("isNotNull" if negate else "isNull", (left,))
                continue
            op = tok.value if tok.kind in {"op", "kw"} else None
            prec = _BINARY.get(op) if isinstance(op, str) else None
            if prec is None or prec < min_prec:
                return left
            self.take()
            right = self.expr(prec + 1)
            left = Call(f"op:{op}", (left, right))

    def unary(self) -> Any:
        if self.accept("kw", "NOT"):
            return Call("op:NOT", (self.expr(3),))
        if self.accept("op", "-"):
            return Call("op:neg", (self.unary(),))
        return self.postfix()

    def postfix(self) -> Any:
        expr = self.primary()
        while self.accept("op", "["):
            index = self.expr()
            self.expect("op", "]")
            expr = Call("arrayElement", (expr, index))
        return expr

    def primary(self) -> Any:
        tok = self.take()
        if tok.kind in {"string", "number"}:
            return Const(tok.value)
        if tok.kind == "kw" and tok.value in {"NULL", "TRUE", "FALSE"}:
            return Const({"NULL": None, "TRUE": 1, "FALSE": 0}[tok.value])
        if tok.kind == "op" and tok.value == "(":
            inner = self.expr()
            self.expect("op", ")")
            return inner
        if tok.kind == "ident":
            if self.accept("op", "("):
                args: list[Any] = []
                if not self.accept("op", ")"):
                    args.append(self.expr())
                    while self.accept("op", ","):
                        args.append(self.expr())
                    self.expect("op", ")")
                name = str(tok.value)
                if self.peek() == _Tok("op", "("):
                    raise QueryError(f"Unsupported function call '{name}(...)'")
                if name not in FUNCTIONS and name not in AGGREGATES:
                    raise QueryError(f"Unsupported function call '{name}(...)'")
                return Call(name, tuple(args))
            if tok.value == "properties" and self.accept("op", "."):
                return Call("_property", (Column("properties"), Const(self.expect("ident").value)))
            return Column(str(tok.value))
        raise QueryError(f"Syntax error: unexpected {tok.value!r}")


# --- scalar functions (ClickHouse semantics) ------------------------------------------


def _json(properties: Any) -> dict[str, Any]:
    if properties is None:
        return {}
    data = json.loads(properties) if isinstance(properties, str) else properties
    return data if isinstance(data, dict) else {}


def _extract(properties: Any, key: Any, type_name: Any) -> Any:
    """``JSONExtract(json, key, 'Nullable(T)')``: NULL when absent, ``null`` or not a T."""
    value = _json(properties).get(key)
    inner = str(type_name).removeprefix("Nullable(").removesuffix(")")
    if value is None:
        return None if str(type_name).startswith("Nullable(") else _DEFAULTS[inner]
    if inner == "Float64":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None
    if inner == "Int64":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if inner == "String":
        return value if isinstance(value, str) else None
    raise QueryError(f"JSONExtract to {type_name} is not supported here")


_DEFAULTS: dict[str, Any] = {"Float64": 0.0, "Int64": 0, "String": ""}


def _property(properties: Any, key: Any) -> str | None:
    """HogQL's ``properties.key``: the raw JSON value as a string, quotes stripped; NULL
    for an absent key or a JSON ``null``."""
    value = _json(properties).get(key)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _to_float(value: Any) -> float | None:
    """HogQL's ``toFloat``: ``accurateCastOrNull(x, 'Float64')``."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _extract_string(properties: Any, key: Any) -> str:
    value = _json(properties).get(key)
    return value if isinstance(value, str) else ""


def _extract_bool(properties: Any, key: Any) -> int:
    value = _json(properties).get(key)
    return 1 if value is True else 0


def _to_datetime(text: Any) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _if(cond: Any, then: Any, other: Any) -> Any:
    return then if cond else other  # NULL (None) and 0 are false


def _multi_if(*args: Any) -> Any:
    if len(args) % 2 != 1:
        raise QueryError("multiIf needs an odd number of arguments")
    for i in range(0, len(args) - 1, 2):
        if args[i]:
            return args[i + 1]
    return args[-1]


def _int_div(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if not isinstance(a, int) or not isinstance(b, int):
        a, b = int(a), int(b)
    if b == 0:
        raise QueryError("Division by zero")
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


def _array_element(array: Any, index: Any) -> Any:
    if array is None or index is None:
        return None
    if not isinstance(index, int):
        raise QueryError("Second argument for function arrayElement must be integer")
    n = len(array)
    if 1 <= index <= n:
        return array[index - 1]
    if -n <= index <= -1:
        return array[index]
    return 0.0 if not array or isinstance(array[0], float) else 0


def _strict(fn: Callable[..., Any]) -> Callable[..., Any]:
    """NULL in, NULL out (ClickHouse's default for functions of Nullable arguments)."""

    def wrapped(*args: Any) -> Any:
        return None if any(a is None for a in args) else fn(*args)

    return wrapped


def _cmp(op: str) -> Callable[..., Any]:
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<>": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return _strict(lambda a, b: int(compare[op](a, b)))


def _and(a: Any, b: Any) -> Any:
    if a == 0 or b == 0:
        return 0
    return None if a is None or b is None else 1


def _or(a: Any, b: Any) -> Any:
    if (a is not None and a != 0) or (b is not None and b != 0):
        return 1
    return None if a is None or b is None else 0


def _divide(a: float, b: float) -> float:
    if b == 0:
        return math.copysign(math.inf, a) if a else math.nan
    return a / b


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "JSONExtract": _extract,
    "JSONExtractString": _extract_string,
    "JSONExtractBool": _extract_bool,
    "toDateTime": _to_datetime,
    "toFloat": _to_float,
    "_property": _property,
    "if": _if,
    "multiIf": _multi_if,
    "isNull": lambda a: int(a is None),
    "isNotNull": lambda a: int(a is not None),
    "length": _strict(len),
    "arraySort": _strict(sorted),
    "arrayElement": _array_element,
    "intDiv": _int_div,
    "op:AND": _and,
    "op:OR": _or,
    "op:NOT": _strict(lambda a: int(not a)),
    "op:neg": _strict(lambda a: -a),
    "op:+": _strict(lambda a, b: a + b),
    "op:-": _strict(lambda a, b: a - b),
    "op:*": _strict(lambda a, b: a * b),
    "op:/": _strict(lambda a, b: _divide(float(a), float(b))),
    "op:%": _strict(lambda a, b: math.fmod(a, b) if isinstance(a, float) else _int_mod(a, b)),
    **{f"op:{op}": _cmp(op) for op in ("=", "!=", "<>", "<", "<=", ">", ">=")},
}
"""Scalar functions and operators; any other name is "Unsupported function call"."""


def _int_mod(a: int, b: int) -> int:
    return a - b * int(_int_div(a, b))


def _count(values: Sequence[tuple[Any, ...]]) -> int:
    return len(values)


def _count_if(values: Sequence[tuple[Any, ...]]) -> int:
    return sum(1 for (cond,) in values if cond)


def _group_array(values: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [v for (v,) in values if v is not None]


def _group_array_if(values: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [v for v, cond in values if cond and v is not None]


AGGREGATES: dict[str, tuple[int, Callable[[Sequence[tuple[Any, ...]]], Any]]] = {
    "count": (0, _count),
    "countIf": (1, _count_if),
    "groupArray": (1, _group_array),
    "groupArrayIf": (2, _group_array_if),
}
"""Aggregates: name → (argument count, function of the group's argument tuples)."""


# --- evaluation -----------------------------------------------------------------------

Row = Mapping[str, Any]


def _has_aggregate(expr: Any) -> bool:
    if isinstance(expr, Call):
        return expr.name in AGGREGATES or any(_has_aggregate(a) for a in expr.args)
    return False


def _eval(expr: Any, row: Row, group: Sequence[Row] | None = None) -> Any:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Column):
        if expr.name not in row:
            raise QueryError(f"Unable to resolve field: {expr.name}")
        return row[expr.name]
    if isinstance(expr, Call):
        if expr.name in AGGREGATES:
            arity, fn = AGGREGATES[expr.name]
            if len(expr.args) != arity:
                raise QueryError(f"Aggregation '{expr.name}' expects {arity} arguments")
            if group is None:
                raise QueryError(f"Aggregation '{expr.name}' used outside of an aggregation")
            if any(_has_aggregate(a) for a in expr.args):
                raise QueryError(f"Aggregation '{expr.name}' cannot be nested")
            return fn([tuple(_eval(a, r) for a in expr.args) for r in group])
        args = [_eval(a, row, group) for a in expr.args]
        try:
            return FUNCTIONS[expr.name](*args)
        except TypeError as exc:
            raise QueryError(f"Illegal arguments for '{expr.name}': {exc}") from exc
    raise QueryError(f"cannot evaluate {expr!r}")


def _rows_of(source: Select | str, events: Sequence[Row]) -> Sequence[Row]:
    if isinstance(source, Select):
        return _run(source, events)
    if source != "events":
        raise QueryError(f"Unknown table `{source}`.")
    return list(events)


def _substitute(expr: Any, aliases: Mapping[str, Any], depth: int = 0) -> Any:
    """Replace references to SELECT aliases by their expressions (ClickHouse does so)."""
    if depth > 32:
        raise QueryError("Cyclic aliases")
    if isinstance(expr, Column) and expr.name in aliases:
        return _substitute(aliases[expr.name], aliases, depth + 1)
    if isinstance(expr, Call):
        return Call(expr.name, tuple(_substitute(a, aliases, depth) for a in expr.args))
    return expr


def _run(select: Select, events: Sequence[Row]) -> list[dict[str, Any]]:
    aliases = {i.alias: i.expr for i in select.items if i.expr != Column(i.alias)}
    select = attrs.evolve(
        select,
        items=tuple(Item(_substitute(i.expr, aliases), i.alias) for i in select.items),
        where=None if select.where is None else _substitute(select.where, aliases),
        group_by=tuple(_substitute(g, aliases) for g in select.group_by),
    )
    rows = _rows_of(select.source, events)
    if select.where is not None:
        if _has_aggregate(select.where):
            raise QueryError("Aggregations are not allowed in WHERE")
        rows = [r for r in rows if _eval(select.where, r)]
    aggregated = bool(select.group_by) or any(_has_aggregate(i.expr) for i in select.items)
    out: list[dict[str, Any]] = []
    if aggregated:
        groups: dict[tuple[Any, ...], list[Row]] = {}
        for r in rows:
            groups.setdefault(tuple(_eval(g, r) for g in select.group_by), []).append(r)
        if not select.group_by and not groups:
            groups[()] = []
        for item in select.items:
            if not _has_aggregate(item.expr) and item.expr not in select.group_by:
                raise QueryError(
                    f"Column `{item.alias}` is not under aggregate function and not in GROUP BY"
                )
        for members in groups.values():
            first = members[0] if members else {}
            out.append({i.alias: _eval(i.expr, first, members) for i in select.items})
    else:
        out = [{i.alias: _eval(i.expr, r) for i in select.items} for r in rows]
    for expr, descending in reversed(select.order_by):

        def key(row: Row, e: Any = expr) -> tuple[int, Any]:
            return _order_key(_eval(e, row))

        out.sort(key=key, reverse=descending)
    return out if select.limit is None else out[: select.limit]


def _order_key(value: Any) -> tuple[int, Any]:
    return (1, 0) if value is None else (0, value)  # NULLs last


def _type_of(values: Iterable[Any]) -> str:
    present = [v for v in values if v is not None]
    nullable = any(v is None for v in values)
    if not present:
        return "Nullable(Nothing)"
    sample = present[0]
    if isinstance(sample, list):
        inner = [x for v in present for x in v]
        base = f"Array({_type_of(inner) if inner else 'Float64'})"
    elif isinstance(sample, float):
        base = "Float64"
    elif isinstance(sample, int):
        base = "UInt64" if all(isinstance(v, int) and v >= 0 for v in present) else "Int64"
    elif isinstance(sample, datetime):
        base = "DateTime64(6, 'UTC')"
    else:
        base = "String"
    return f"Nullable({base})" if nullable else base


def run_query(sql: str, events: Sequence[Row]) -> tuple[list[str], list[list[Any]], list[str]]:
    """Evaluate ``sql`` over ``events`` rows: (columns, result rows, ClickHouse types).

    Raises:
        QueryError: The query cannot be parsed or evaluated.
    """
    select = _Parser(sql).statement()
    rows = _run(select, events)
    columns = [item.alias for item in select.items]
    results = [[_jsonable(r[c]) for c in columns] for r in rows]
    types = [_type_of([r[c] for r in rows]) for c in columns]
    return columns, results, types


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One captured wire event as a row of the ``events`` table."""
    timestamp = _to_datetime(event.get("timestamp"))
    return {
        "event": event.get("event"),
        "uuid": event.get("uuid"),
        "distinct_id": event.get("distinct_id"),
        "timestamp": timestamp,
        "properties": json.dumps(event.get("properties", {})),
    }


# --- the server -----------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakePostHogQuery


_PATH = re.compile(r"^/api/(?:projects|environments)/(?P<project>[^/]+)/query/?$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._answer(
                404, {"type": "invalid_request", "code": "not_found", "detail": "Not found."}
            )
            return
        auth = self.headers.get("Authorization", "")
        fake.record(self.path, auth.removeprefix("Bearer "), raw)
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") != fake.personal_api_key:
            self._answer(
                401,
                {
                    "type": "authentication_error",
                    "code": "authentication_failed",
                    "detail": "Personal API key found in request Authorization header is invalid.",
                },
            )
            return
        if match.group("project") != fake.project_id:
            self._answer(
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
            self._answer(
                400,
                {
                    "type": "validation_error",
                    "code": "query_error",
                    "detail": str(exc),
                    "attr": None,
                },
            )
            return
        self._answer(
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

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep test output quiet."""


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


class FakePostHogQuery:
    """PostHog's query API on a free port of 127.0.0.1; a context manager.

    Args:
        events: Captured wire events (e.g. ``FakePostHog.events``).
        project_id: The project the API answers for.
        personal_api_key: The Bearer key it accepts.
    """

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
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-posthog-query", daemon=True
        )

    @property
    def host(self) -> str:
        """Base URL for ``POSTHOG_HOST``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

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

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
