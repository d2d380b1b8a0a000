"""PostHog delivery: each run as a ``run_finished`` event, confirmed by PostHog's answer.

Switched on by ``POSTHOG_API_KEY`` (or ``POSTHOG_PROJECT_API_KEY``); ``POSTHOG_HOST``
defaults to ``https://us.i.posthog.com``. ``TTFT_PROBE_POSTHOG_AI_GENERATION=1`` adds a
``$ai_generation`` event per run for PostHog's LLM analytics.

Wire format: the SDK's ``/batch/`` capture endpoint (capture v0), one ``POST`` per
:meth:`PostHogSink.deliver` call (split only past the SDK's 5 MiB batch size, each run's
events in one request), body gzipped as the SDK does it::

    {"api_key": "<key>", "batch": [event, ...], "historical_migration": false,
     "sent_at": "<now, ISO-8601 UTC>"}

    event = {
        "event": "run_finished",
        "uuid": record.run_id,             # PostHog deduplicates retries on it
        "distinct_id": "<install id>",     # or the one configured
        "timestamp": record.started_at,
        "properties": {**record.to_dict(),
                       "$process_person_profile": False, "$geoip_disable": True},
    }

Captured content: only when the run was made with the opt-in content capture
(``Probe(capture_content=True)`` / ``--capture-content``; ``Delivery.content``,
:mod:`ttft_probe.content`), the ``properties`` also hold the prompt and the answer in
PostHog's LLM-analytics properties, each only when that text was seen::

    "$ai_input": [{"role": "user", "content": "<prompt text>"}],
    "$ai_output_choices": [{"role": "assistant", "content": "<answer text>"}],

and so does the optional ``$ai_generation`` event (the event PostHog's LLM analytics
shows them on). ``content_truncated: true`` is added when a text was cut: at capture
(its cap) or here, where the texts are shortened so that each event stays within the
SDK's 900 KiB per event (PostHog answers a larger event with 413, failing its whole
request). Without capture none of these keys is sent; the properties are as above.

``$process_person_profile: false`` keeps PostHog from creating a person per install;
``$geoip_disable: true`` is the SDK's own default for server-side capture (no location
is derived from the sender's address). The optional ``$ai_generation`` event carries the
property names of PostHog's LLM analytics schema (``$ai_latency`` = ``total_duration_ms``
and ``$ai_time_to_first_token`` = ``spawn_to_first_token_ms``, both in seconds) and its
own stable uuid, ``uuid5(NAMESPACE_URL, run_id + "/$ai_generation")``, so it is as
idempotent as the run itself.

Its token counts (``$ai_input_tokens``, ``$ai_output_tokens``,
``$ai_cache_read_input_tokens``, ``$ai_cache_creation_input_tokens``) are the whole
turn's, so that PostHog's cost is the turn's: the agent's own counts from the record
when it reported any, else, with the provider observer, the sum over every request of
the turn that reported usage (``Delivery.requests``; DESIGN §10;
:func:`~ttft_probe.sinks._base.turn_tokens`). The first generation request's own usage
is in the ``run_finished`` event (``first_request_*``). PostHog counts Anthropic's cache
tokens apart from ``$ai_input_tokens`` and everyone else's within it, so counts summed
from requests to the Anthropic API give the input read anew (input − cache read − cache
write); for OpenAI and Gemini it includes cached tokens. ``$ai_provider`` and
``$ai_model`` fall back to the request's API and model when the agent's name and the
record do not tell them. No request body, digest or other
request detail is ever sent; the ``run_finished`` event is the record alone (its
``first_request_*`` and ``prefix_*`` fields included, as the contract has them).

Confirmation: the SDK's ``capture()`` only queues; its consumer thread retries and then
drops a batch without telling the caller. This sink therefore calls the SDK's request
layer (``posthog.request.batch_post``) directly and synchronously, with a private
``requests`` session without retries, in a short-lived worker thread that
:meth:`PostHogSink.deliver` waits for at most ``timeout_s`` seconds (so even a hung DNS
lookup cannot hold the outbox). A run is ``True`` only when PostHog answered 2xx; a
refused connection, a timeout, any other status or any fault makes every run of that
request ``False``. No ``posthog.Client`` is created: no consumer threads, no atexit flush.

Distinct id: unless one is configured, a random UUID kept in ``install_id`` next to the
run store (``$TTFT_PROBE_HOME``, else ``platformdirs.user_state_dir("ttft-probe")``). It
identifies an install, never a person: nothing is derived from the host or user name.

Privacy: event properties and the api key are never logged. The SDK's own DEBUG line
that prints every request body is filtered out of the ``posthog`` logger once the SDK
is imported. ``posthog`` itself is imported on the first :meth:`PostHogSink.deliver`,
never on import of this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from ttft_probe._home import home_dir
from ttft_probe._logonce import LogOnce
from ttft_probe.agents import provider_name
from ttft_probe.errors import ConfigError
from ttft_probe.record import RunRecord, Status
from ttft_probe.sinks._base import Delivery, first_generation, size_groups, turn_tokens

if TYPE_CHECKING:
    from ttft_probe.content import CapturedContent
    from ttft_probe.waterfall import ModelRequest

__all__ = [
    "AI_GENERATION_EVENT",
    "AI_INPUT",
    "AI_OUTPUT_CHOICES",
    "DEFAULT_HOST",
    "EVENT",
    "INSTALL_ID_FILE",
    "PostHogSink",
    "ai_provider",
    "install_id",
    "install_id_path",
]

_log = logging.getLogger("ttft_probe.sinks.posthog")

EVENT: Final = "run_finished"
AI_GENERATION_EVENT: Final = "$ai_generation"
DEFAULT_HOST: Final = "https://us.i.posthog.com"
INSTALL_ID_FILE: Final = "install_id"
AI_INPUT: Final = "$ai_input"
"""The prompt (opt-in content capture only): ``[{"role": "user", "content": text}]``."""
AI_OUTPUT_CHOICES: Final = "$ai_output_choices"
"""The answer (opt-in content capture only): ``[{"role": "assistant", "content": text}]``."""

ENV_API_KEY: Final = "POSTHOG_API_KEY"
ENV_PROJECT_API_KEY: Final = "POSTHOG_PROJECT_API_KEY"
ENV_HOST: Final = "POSTHOG_HOST"
ENV_AI_GENERATION: Final = "TTFT_PROBE_POSTHOG_AI_GENERATION"

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})
_ERROR_STATUSES: Final = frozenset({Status.FAILED, Status.TIMED_OUT})
_MS_PER_S: Final = 1000.0
_CLOSE_WAIT_S: Final = 1.0
"""How long :meth:`PostHogSink.close` waits for requests still in flight (s)."""
_MAX_EVENT_BYTES: Final = 900 * 1024
"""The SDK's per-event cap (``posthog.consumer.MAX_MSG_SIZE``; PostHog's own is ~1 MB)."""
_MAX_REQUEST_BYTES: Final = 5 * 1024 * 1024
"""The SDK's batch cap (``posthog.consumer.BATCH_SIZE_LIMIT``; PostHog's body cap is 20 MiB)."""
_CONTENT_TRUNCATED: Final = "content_truncated"

# PostHog's own ``$ai_provider`` values, as its SDK wrappers send them, where they are
# not the ``gen_ai.provider.name`` of :data:`ttft_probe.agents.PROVIDERS`.
_AI_PROVIDER_BY_GEN_AI: Final = {"gcp.gemini": "gemini"}
# PostHog's ``$ai_provider`` of a model request by the observer's API name.
_AI_PROVIDER_BY_API: Final = {"anthropic": "anthropic", "openai": "openai", "gemini": "gemini"}
# The APIs whose cache tokens PostHog counts apart from ``$ai_input_tokens``.
_EXCLUSIVE_CACHE_APIS: Final = frozenset({"anthropic"})

_sdk_lock = threading.Lock()
_sdk_request: Any = None


class _DropRequestBodies(logging.Filter):
    """Drops the SDK's DEBUG line that prints each request body (event properties)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "making request" not in str(record.msg)


def _sdk() -> Any:
    """``posthog.request``, imported on first use; the body-logging filter installed."""
    global _sdk_request  # noqa: PLW0603 - one import per process, shared by every sink
    with _sdk_lock:
        if _sdk_request is None:
            module = importlib.import_module("posthog.request")
            sdk_logger = logging.getLogger("posthog")
            if not any(isinstance(f, _DropRequestBodies) for f in sdk_logger.filters):
                sdk_logger.addFilter(_DropRequestBodies())
            _sdk_request = module
        return _sdk_request


def _no_retry_session() -> Any:
    """A ``requests`` session that tries once (the outbox owns retries and backoff)."""
    requests = importlib.import_module("requests")
    adapters = importlib.import_module("requests.adapters")
    session = requests.Session()
    adapter = adapters.HTTPAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def ai_provider(agent: str) -> str | None:
    """PostHog's ``$ai_provider`` for an agent name, or ``None`` when it cannot be told.

    ``claude*`` → ``anthropic``, ``codex*`` → ``openai``, ``gemini*`` → ``gemini`` (the
    values PostHog's own SDK wrappers send): the agent's ``gen_ai.provider.name``
    (:func:`ttft_probe.agents.provider_name`) in PostHog's spelling. Other agents depend
    on their configuration.
    """
    provider = provider_name(agent)
    return None if provider is None else _AI_PROVIDER_BY_GEN_AI.get(provider, provider)


def install_id_path(env: Mapping[str, str]) -> Path:
    """``$TTFT_PROBE_HOME/install_id``, else ``install_id`` in the user state dir."""
    return home_dir(env) / INSTALL_ID_FILE


def install_id(path: Path) -> str:
    """The install's random id, read from ``path`` or created there (a UUID4 string).

    Creation is atomic (written to a temporary file, then hard-linked into place), so
    processes that start together agree on one id. A file that does not hold a UUID is
    replaced.

    Raises:
        OSError: The directory cannot be created or the file cannot be read or written.
    """
    existing = _read_install_id(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    new_id = str(uuid.uuid4())
    tmp = path.with_name(f".{path.name}.{new_id}")
    tmp.write_text(new_id + "\n", encoding="ascii")
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_install_id(path)
            if existing is not None:
                return existing
            os.replace(tmp, path)  # an invalid file: replace it
        except OSError:
            # No hard links on this file system: exclusive create (a reader racing the
            # write may see an empty file and replace it; rare and harmless).
            with path.open("x", encoding="ascii") as f:
                f.write(new_id + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return new_id


def _read_install_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _parse_flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off")


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / _MS_PER_S


def _token_properties(record: RunRecord, requests: Sequence[ModelRequest]) -> dict[str, int | None]:
    """The ``$ai_*_tokens`` of a run: the whole turn's (:func:`turn_tokens`).

    PostHog counts Anthropic's cache tokens apart from ``$ai_input_tokens`` (its cost
    model adds them back) and OpenAI's and Gemini's within it: counts summed from requests
    to the Anthropic API give the input read anew (input − cache read − cache write); the
    record's own counts are the agent's, as it reported them.
    """
    tokens = turn_tokens(record, requests)
    exclusive = tokens.api in _EXCLUSIVE_CACHE_APIS
    return {
        "$ai_input_tokens": tokens.fresh_input if exclusive else tokens.input,
        "$ai_output_tokens": tokens.output,
        "$ai_cache_read_input_tokens": tokens.cache_read,
        "$ai_cache_creation_input_tokens": tokens.cache_write,
    }


def _json_size(value: object) -> int:
    """Bytes of ``value`` as the SDK serialises it (``json.dumps``, ASCII escapes)."""
    return len(json.dumps(value))


def _fit(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose JSON string takes at most ``limit`` bytes."""
    if _json_size(text) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if _json_size(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low]


def _content_properties(content: CapturedContent | None, base: Mapping[str, Any]) -> dict[str, Any]:
    """``$ai_input`` / ``$ai_output_choices`` of opt-in captured content, each if seen.

    The texts are shortened (prompt and answer sharing the room fairly) so that ``base``
    (the largest event that carries them) plus these properties stays within
    :data:`_MAX_EVENT_BYTES`; ``content_truncated`` is ``True`` when a text was cut,
    here or at capture.
    """
    if content is None:
        return {}
    texts = [content.input_text, content.output_text]
    sizes = [_json_size(t) for t in texts if t is not None]
    cut = content.truncated
    overhead = _json_size(_render(["", ""], truncated=True)) + 2  # keys, roles, separators
    room = max(_MAX_EVENT_BYTES - _json_size(base) - overhead, 0)
    if sum(sizes) > room:
        cut = True
        share = room // len(sizes)
        if len(sizes) == 2 and min(sizes) <= share:  # the short text is kept whole
            share = room - min(sizes)
        texts = [None if t is None else _fit(t, share) for t in texts]
    return _render(texts, truncated=cut)


def _render(texts: list[str | None], *, truncated: bool) -> dict[str, Any]:
    prompt, answer = texts
    props: dict[str, Any] = {}
    if prompt is not None:
        props[AI_INPUT] = [{"role": "user", "content": prompt}]
    if answer is not None:
        props[AI_OUTPUT_CHOICES] = [{"role": "assistant", "content": answer}]
    if truncated:
        props[_CONTENT_TRUNCATED] = True
    return props


class PostHogSink:
    """Delivers runs to PostHog as ``run_finished`` events (see the module docstring).

    Args:
        api_key: The project API key (``phc_…``). Never logged.
        host: PostHog's ingestion host; ``https://us.posthog.com`` and the like are
            mapped to their ingestion hosts as the SDK does it.
        distinct_id: The events' ``distinct_id``.
        ai_generation: Also send a ``$ai_generation`` event per run.
        gzip: Gzip the request body (``Content-Encoding: gzip``).

    Raises:
        ConfigError: ``host`` is not an ``http(s)://`` URL, or ``distinct_id`` is empty.
    """

    name: ClassVar[str] = "posthog"

    def __init__(
        self,
        api_key: str,
        *,
        distinct_id: str,
        host: str = DEFAULT_HOST,
        ai_generation: bool = False,
        gzip: bool = True,
    ) -> None:
        """See the class docstring."""
        if not api_key:
            raise ConfigError("PostHog needs an api key (POSTHOG_API_KEY)")
        if not host.startswith(("http://", "https://")):
            raise ConfigError("POSTHOG_HOST must be an http:// or https:// URL")
        if not distinct_id:
            raise ConfigError("the PostHog distinct_id must not be empty")
        self._api_key = api_key
        self.host = host.rstrip("/")
        self.distinct_id = distinct_id
        self.ai_generation = ai_generation
        self.gzip = gzip
        self._lock = threading.Lock()
        self._in_flight: set[threading.Thread] = set()
        self._warn = LogOnce(_log)
        self._closed = False

    def __repr__(self) -> str:
        """Host and options; never the api key."""
        return (
            f"PostHogSink(host={self.host!r}, distinct_id={self.distinct_id!r}, "
            f"ai_generation={self.ai_generation!r})"
        )

    @classmethod
    def from_environment(
        cls,
        env: Mapping[str, str],
        *,
        distinct_id: str | None = None,
        ai_generation: bool | None = None,
    ) -> PostHogSink | None:
        """The sink the environment configures, or ``None`` without an api key.

        Reads ``POSTHOG_API_KEY`` (else ``POSTHOG_PROJECT_API_KEY``), ``POSTHOG_HOST``,
        ``TTFT_PROBE_POSTHOG_AI_GENERATION`` and, for the install id,
        ``TTFT_PROBE_HOME``. Explicit ``distinct_id`` / ``ai_generation`` win over the
        environment. Imports no SDK (it only checks that ``posthog`` is installed).

        Raises:
            ConfigError: A variable holds an invalid value, or ``posthog`` is not
                installed.
        """
        api_key = env.get(ENV_API_KEY) or env.get(ENV_PROJECT_API_KEY)
        if not api_key:
            return None
        if importlib.util.find_spec("posthog") is None:
            raise ConfigError(f"{ENV_API_KEY} is set but the posthog package is not installed")
        host = env.get(ENV_HOST, "").strip() or DEFAULT_HOST
        if ai_generation is None:
            ai_generation = _parse_flag(env, ENV_AI_GENERATION)
        if distinct_id is None:
            path = install_id_path(env)
            try:
                distinct_id = install_id(path)
            except OSError as exc:
                # Telemetry must not stop a run: fall back to an id for this process.
                _log.warning(
                    "cannot keep the PostHog install id in %s (%s); using one for this "
                    "process only",
                    path,
                    type(exc).__name__,
                )
                distinct_id = str(uuid.uuid4())
        return cls(api_key, host=host, distinct_id=distinct_id, ai_generation=ai_generation)

    # --- the wire events ---

    def events(
        self,
        record: RunRecord,
        *,
        content: CapturedContent | None = None,
        requests: Sequence[ModelRequest] = (),
    ) -> list[dict[str, Any]]:
        """The capture events for one run, exactly as they go on the wire (pure).

        ``content`` is the run's opt-in captured prompt and answer text (``None`` unless
        the run was made with content capture): it adds ``$ai_input`` /
        ``$ai_output_choices`` to the events' properties, each only when that text exists
        (and ``content_truncated`` when a text was cut; see the module docstring).
        ``requests`` is the run's waterfall (provider observer only): the
        ``$ai_generation`` event then takes its token counts from the first generation
        request's usage (see the module docstring); ``run_finished`` is unchanged.
        """
        events: list[dict[str, Any]] = [
            {
                "event": EVENT,
                "uuid": record.run_id,
                "distinct_id": self.distinct_id,
                "timestamp": record.started_at,
                "properties": {
                    **record.to_dict(),
                    "$process_person_profile": False,
                    "$geoip_disable": True,
                },
            }
        ]
        if self.ai_generation:
            events.append(self._ai_generation_event(record, requests))
        if content is not None:
            content_props = _content_properties(content, max(events, key=_json_size))
            for event in events:
                event["properties"].update(content_props)
        return events

    def _ai_generation_event(
        self, record: RunRecord, requests: Sequence[ModelRequest]
    ) -> dict[str, Any]:
        first = first_generation(requests)
        request_model = None if first is None else first.model
        request_provider = None if first is None else _AI_PROVIDER_BY_API.get(first.api)
        props: dict[str, Any] = {
            "$ai_trace_id": record.trace_id or record.conversation_id or record.run_id,
            "$ai_span_id": record.span_id,
            "$ai_session_id": record.conversation_id or record.session_id,
            "$ai_span_name": f"invoke_agent {record.agent}",
            "$ai_model": record.model or request_model,
            "$ai_provider": ai_provider(record.agent) or request_provider,
            "$ai_latency": _seconds(record.total_duration_ms),
            "$ai_time_to_first_token": _seconds(record.spawn_to_first_token_ms),
            **_token_properties(record, requests),
            "$ai_is_error": record.status in _ERROR_STATUSES,
            "$ai_error": record.status.value if record.status in _ERROR_STATUSES else None,
        }
        props = {k: v for k, v in props.items() if v is not None}
        props["run_id"] = record.run_id
        props["$process_person_profile"] = False
        props["$geoip_disable"] = True
        return {
            "event": AI_GENERATION_EVENT,
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{record.run_id}/{AI_GENERATION_EVENT}")),
            "distinct_id": self.distinct_id,
            "timestamp": record.started_at,
            "properties": props,
        }

    # --- delivery ---

    def prepare(self) -> None:
        """Import the SDK now (the deliverer does this while the agent runs)."""
        _sdk()
        _no_retry_session().close()

    def deliver(self, batch: Sequence[Delivery], timeout_s: float) -> list[bool]:
        """Send ``batch`` in one request; ``True`` per run when PostHog answered 2xx.

        Only events larger than 5 MiB together (captured content) are split into several
        requests, one after the other, each run's events in one. Waits at most
        ``timeout_s`` seconds in all. Never raises: any fault is ``False`` for every run
        of the request concerned, logged once per kind (without properties or keys).
        """
        if not batch:
            return []
        results = [False] * len(batch)
        if self._closed:
            return results
        deadline = time.monotonic() + max(timeout_s, 0.0)
        try:
            per_run = [
                self.events(d.record, content=d.content, requests=d.requests) for d in batch
            ]
            sizes = [sum(_json_size(event) for event in events) for events in per_run]
            sdk = _sdk()
        except Exception as exc:  # noqa: BLE001 - a sink never raises into the outbox
            self._failed(type(exc).__name__, len(batch))
            return results
        # One request unless the events are larger than 5 MiB together (captured content).
        for number, runs in enumerate(size_groups(sizes, _MAX_REQUEST_BYTES)):
            events = [event for index in runs for event in per_run[index]]
            remaining = timeout_s if number == 0 else deadline - time.monotonic()
            if number and remaining <= 0:  # the time went on earlier requests
                outcome: str | None = "timeout"
            else:
                outcome = self._post(sdk, events, remaining)
            if outcome is not None:
                self._failed(outcome, len(runs))
                continue
            for index in runs:
                results[index] = True
        return results

    def _post(self, sdk: Any, events: list[dict[str, Any]], timeout_s: float) -> str | None:
        """One ``POST /batch/``: ``None`` on 2xx, else the kind of failure."""
        result: list[str | None] = []
        done = threading.Event()
        host = sdk.determine_server_host(self.host)

        def send() -> None:
            session = None
            try:
                session = _no_retry_session()
                sdk.batch_post(
                    self._api_key,
                    host,
                    gzip=self.gzip,
                    timeout=timeout_s,
                    batch=events,
                    historical_migration=False,
                    session=session,
                )
                result.append(None)
            except sdk.APIError as exc:
                status = exc.status
                ok = isinstance(status, int) and 200 <= status < 300
                result.append(None if ok else f"HTTP {status}")
            except sdk.RequestsTimeout:
                result.append("timeout")
            except sdk.RequestsConnectionError:
                result.append("connection error")
            except Exception as exc:  # noqa: BLE001 - reported as a failed delivery
                result.append(type(exc).__name__)
            finally:
                if session is not None:
                    session.close()
                done.set()
                with self._lock:
                    self._in_flight.discard(threading.current_thread())

        worker = threading.Thread(target=send, name="ttft-probe-posthog", daemon=True)
        with self._lock:
            self._in_flight.add(worker)
        try:
            worker.start()
        except RuntimeError as exc:  # can't start new thread
            with self._lock:
                self._in_flight.discard(worker)
            return type(exc).__name__
        if not done.wait(max(timeout_s, 0.0)) or not result:
            return "timeout"
        return result[0]

    def _failed(self, kind: str, n: int) -> None:
        said = self._warn.warning(
            kind,
            "PostHog delivery of %d run(s) to %s failed: %s (the outbox retries)",
            n,
            self.host,
            kind,
        )
        if not said:
            _log.debug("PostHog delivery of %d run(s) failed: %s", n, kind)

    def close(self) -> None:
        """Stop delivering; wait at most 1 s for a request still in flight. Never raises."""
        self._closed = True
        with self._lock:
            workers = list(self._in_flight)
        for worker in workers:
            worker.join(_CLOSE_WAIT_S / max(len(workers), 1))
