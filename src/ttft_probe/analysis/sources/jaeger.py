"""The Jaeger source: runs rebuilt from the root spans Jaeger's HTTP query API returns.

Every run's root span ``invoke_agent {agent}`` carries each non-null field of its
``run_finished`` record as the attribute ``ttft_probe.<field>`` (DESIGN §4, §7), with its
type (int, float, bool, string; enums as strings). This module asks Jaeger for the
service's traces in the window, rebuilds one :class:`~ttft_probe.record.RunRecord` per
root span (absent attributes are ``None``) and computes the report locally, exactly as
for the local store.

Requests (``JAEGER_URL``, default ``http://localhost:16686``):

- API v3 (Jaeger ≥ 1.50 / v2; OTLP-JSON answer ``{"result": {"resourceSpans": …}}``)::

    GET /api/v3/traces?query.service_name=ttft-probe
        &query.start_time_min=2024-05-01T12:00:00.000000000Z
        &query.start_time_max=2024-05-08T12:00:00.000000000Z
        &query.num_traces=10000[&query.operation_name=invoke_agent%20claude_code]

  Jaeger answers 404 with ``{"error": {"httpCode": 404, "message": "No traces found"}}``
  when nothing matched: that is an empty result, not a missing API.

- API v1 (the UI's API, every Jaeger; ``{"data": [{traceID, spans[{…, tags}], …}]}``)::

    GET /api/traces?service=ttft-probe&start=<µs>&end=<µs>&limit=10000
        [&tags={"ttft_probe.agent":"claude_code"}]

``jaeger_api`` / ``TTFT_PROBE_JAEGER_API`` (``--jaeger-api``): ``v3``, ``v1`` or ``auto``
(default: v3, and v1 when the v3 endpoint does not exist, i.e. a 404 that is not
"No traces found"). The service is ``OTEL_SERVICE_NAME`` or ``ttft-probe``. Without a
window (``since=None``) the query spans the epoch to a day after ``now``.

Jaeger matches a trace when any of its spans is in the time range, so the rebuilt runs
are filtered again on ``started_at`` (and the agent): the report covers exactly the runs
the local store's report covers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from ttft_probe import _semconv as sc
from ttft_probe.analysis._model import Report, build_report
from ttft_probe.analysis.sources import (
    SourceError,
    in_window,
    option,
    query_timeout_s,
    window_bounds,
)
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord

__all__ = [
    "DEFAULT_URL",
    "JaegerApi",
    "load",
    "records_from_v1",
    "records_from_v3",
    "v1_request",
    "v3_request",
]

_log = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://localhost:16686"
ENV_URL: Final = "JAEGER_URL"
ENV_API: Final = "TTFT_PROBE_JAEGER_API"
ENV_LIMIT: Final = "TTFT_PROBE_JAEGER_LIMIT"
ENV_SERVICE: Final = "OTEL_SERVICE_NAME"
_DEFAULT_LIMIT: Final = 10000
_NO_TRACES: Final = "No traces found"
_ROOT_PREFIX: Final = sc.INVOKE_AGENT + " "
_RUN_ID: Final = sc.record_key("run_id")
_AGENT: Final = sc.record_key("agent")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

JaegerApi = Literal["v3", "v1", "auto"]


# --- requests -------------------------------------------------------------------------


def _rfc3339(value: datetime) -> str:
    """RFC 3339 with ns digits in UTC, as Jaeger's v3 gateway parses it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _unix_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def v3_request(
    base_url: str, *, service: str, start: datetime, end: datetime, limit: int, agent: str | None
) -> str:
    """The v3 ``FindTraces`` URL (see the module docstring)."""
    params = {
        "query.service_name": service,
        "query.start_time_min": _rfc3339(start),
        "query.start_time_max": _rfc3339(end),
        "query.num_traces": str(limit),
    }
    if agent is not None:
        params["query.operation_name"] = _ROOT_PREFIX + agent
    return f"{base_url}/api/v3/traces?{urllib.parse.urlencode(params)}"


def v1_request(
    base_url: str, *, service: str, start: datetime, end: datetime, limit: int, agent: str | None
) -> str:
    """The v1 ``/api/traces`` search URL (see the module docstring)."""
    params = {
        "service": service,
        "start": str(_unix_us(start)),
        "end": str(_unix_us(end)),
        "limit": str(limit),
    }
    if agent is not None:
        params["tags"] = json.dumps({_AGENT: agent}, separators=(",", ":"))
    return f"{base_url}/api/traces?{urllib.parse.urlencode(params)}"


# --- answers --------------------------------------------------------------------------


def _otlp_value(value: Mapping[str, Any]) -> object:
    """The Python value of an OTLP/JSON ``AnyValue`` (int64 may come as a string)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        items = value["arrayValue"].get("values", [])
        return [_otlp_value(v) for v in items]
    return None


def _v1_value(tag: Mapping[str, Any]) -> object:
    kind = tag.get("type", "string")
    value = tag.get("value")
    if kind == "int64":
        return None if value is None else int(value)
    if kind == "float64":
        return None if value is None else float(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return value


def _record_of(name: str, attributes: Mapping[str, object]) -> RunRecord | None:
    """The run of a root span's attributes, ``None`` for another span or a broken one."""
    if not name.startswith(_ROOT_PREFIX) or _RUN_ID not in attributes:
        return None
    prefix = sc.TTFT_PREFIX
    fields = {k.removeprefix(prefix): v for k, v in attributes.items() if k.startswith(prefix)}
    try:
        return RunRecord.from_dict(fields)
    except (TypeError, ValueError) as exc:
        _log.warning("ttft_probe: skipping span %r of run %r: %s", name, fields.get("run_id"), exc)
        return None


def records_from_v3(body: Mapping[str, Any]) -> list[RunRecord]:
    """The runs of a v3 ``FindTraces`` / ``GetTrace`` answer (OTLP/JSON ``ResourceSpans``).

    Raises:
        SourceError: The answer is not of that shape.
    """
    result = body.get("result", body)
    chunks = result if isinstance(result, list) else [result]
    found = []
    try:
        for chunk in chunks:
            for rs in chunk.get("resourceSpans", []) or []:
                for ss in rs.get("scopeSpans", []) or []:
                    for span in ss.get("spans", []) or []:
                        attributes = {
                            kv["key"]: _otlp_value(kv.get("value", {}))
                            for kv in span.get("attributes", []) or []
                        }
                        record = _record_of(span.get("name", ""), attributes)
                        if record is not None:
                            found.append(record)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"Jaeger's v3 answer is not OTLP/JSON resource spans: {exc}") from exc
    return found


def records_from_v1(body: Mapping[str, Any]) -> list[RunRecord]:
    """The runs of a v1 ``/api/traces`` answer (``data[].spans[].tags``).

    Raises:
        SourceError: Jaeger reported errors, or the answer is not of that shape.
    """
    errors = body.get("errors")
    if errors:
        raise SourceError(f"Jaeger reported errors: {errors}")
    found = []
    try:
        for trace in body.get("data", []) or []:
            for span in trace.get("spans", []) or []:
                attributes = {tag["key"]: _v1_value(tag) for tag in span.get("tags", []) or []}
                record = _record_of(span.get("operationName", ""), attributes)
                if record is not None:
                    found.append(record)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"Jaeger's v1 answer is not a trace list: {exc}") from exc
    return found


def _unique(records: Iterable[RunRecord]) -> Iterator[RunRecord]:
    """Each run once (a redelivered trace may be stored twice)."""
    seen: set[str] = set()
    for record in records:
        if record.run_id not in seen:
            seen.add(record.run_id)
            yield record


# --- the source -----------------------------------------------------------------------


class _NoV3Error(Exception):
    """The v3 endpoint does not exist at this Jaeger (plain 404)."""


def _get(url: str, timeout_s: float) -> dict[str, Any]:
    """GET ``url`` and decode its JSON object; HTTP errors pass through as HTTPError."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        raw = response.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise SourceError(f"Jaeger did not answer {url} with JSON") from exc
    if not isinstance(body, dict):
        raise SourceError(f"Jaeger answered {url} with something other than an object")
    return body


def _error_body(exc: urllib.error.HTTPError) -> Any:
    """The JSON body of an error answer (``None`` if it has none); closes the answer."""
    try:
        return json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        return None
    finally:
        with contextlib.suppress(OSError, AttributeError):
            exc.close()


def _query_v3(url: str, timeout_s: float) -> list[RunRecord]:
    try:
        return records_from_v3(_get(url, timeout_s))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            body = _error_body(exc)
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and _NO_TRACES in str(error.get("message", "")):
                return []
            raise _NoV3Error from None
        _error_body(exc)
        raise SourceError(f"Jaeger's v3 query API answered {exc.code}: {exc.reason}") from None


def _query_v1(url: str, timeout_s: float) -> list[RunRecord]:
    try:
        return records_from_v1(_get(url, timeout_s))
    except urllib.error.HTTPError as exc:
        _error_body(exc)
        if exc.code == 404:
            base = url.split("/api/", maxsplit=1)[0]
            raise ConfigError(
                f"no Jaeger query API at {base} (404 for /api/traces); check {ENV_URL}"
            ) from None
        raise SourceError(f"Jaeger's query API answered {exc.code}: {exc.reason}") from None


def _settings(
    options: Mapping[str, str] | None, env: Mapping[str, str]
) -> tuple[str, JaegerApi, str, int, float]:
    url = option(options, env, "jaeger_url", ENV_URL, DEFAULT_URL) or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV_URL} must be an http:// or https:// URL, not {url!r}")
    api = (option(options, env, "jaeger_api", ENV_API, "auto") or "auto").lower()
    if api not in {"v3", "v1", "auto"}:
        raise ConfigError(f"--jaeger-api ({ENV_API}) must be v3, v1 or auto, not {api!r}")
    service = option(options, env, "service_name", ENV_SERVICE, sc.SERVICE_NAME_DEFAULT)
    limit_raw = option(options, env, "limit", ENV_LIMIT, str(_DEFAULT_LIMIT))
    try:
        limit = int(limit_raw or "")
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{ENV_LIMIT} (limit) must be a positive number of traces")
    timeout_s = query_timeout_s(options, env)
    chosen: JaegerApi = "v3" if api == "v3" else "v1" if api == "v1" else "auto"
    return url.rstrip("/"), chosen, service or sc.SERVICE_NAME_DEFAULT, limit, timeout_s


def load(
    *,
    agent: str | None,
    since: timedelta | None,
    now: datetime,
    options: Mapping[str, str] | None,
    env: Mapping[str, str],
) -> Report:
    """Query Jaeger and return the report (see the module docstring).

    Raises:
        ConfigError: An invalid option, or no Jaeger query API at ``JAEGER_URL``.
        SourceError: Jaeger is unreachable or answered unexpectedly.
    """
    base, api, service, limit, timeout_s = _settings(options, env)
    bounds = window_bounds(since, now)
    if bounds is None:
        start, end = _EPOCH, now.astimezone(UTC) + timedelta(days=1)
    else:
        start, end = bounds
    args: dict[str, Any] = {
        "service": service,
        "start": start,
        "end": end,
        "limit": limit,
        "agent": agent,
    }
    try:
        if api == "v1":
            records = _query_v1(v1_request(base, **args), timeout_s)
        else:
            try:
                records = _query_v3(v3_request(base, **args), timeout_s)
            except _NoV3Error:
                if api == "v3":
                    raise ConfigError(
                        f"Jaeger at {base} has no v3 query API (/api/v3/traces is 404); "
                        f"use --jaeger-api v1 ({ENV_API}=v1) or check {ENV_URL}"
                    ) from None
                records = _query_v1(v1_request(base, **args), timeout_s)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot reach Jaeger at {base}: {reason}; check {ENV_URL}") from None
    runs = list(_unique(records))
    if len(runs) >= limit:
        _log.warning(
            "ttft_probe: Jaeger returned %d runs, the trace limit; the report may miss runs "
            "(raise %s)",
            len(runs),
            ENV_LIMIT,
        )
    return build_report(in_window(runs, agent=agent, since=since, now=now), "jaeger")
