"""A local stand-in for a Langfuse server: its OTLP ingestion endpoint, decoded.

No Langfuse server can run here, so the real ``langfuse`` SDK talks to this one. It
listens on a free port of 127.0.0.1 and answers:

- ``POST /api/public/otel/v1/traces``: an OTLP/HTTP ``ExportTraceServiceRequest``
  (protobuf, ``Content-Encoding: gzip`` or none), as Langfuse's OTLP ingestion takes it.
  HTTP Basic auth must be ``public_key:secret_key`` (401 otherwise). Every span of an
  accepted request is kept as a :class:`ReceivedSpan`.
- ``GET /api/public/health`` and ``GET /api/public/projects``: minimal answers, in case
  the SDK asks at start-up (5.0.4 does not).

Faults (:meth:`FakeLangfuse.set_fault`): ``"down"`` (the port stops listening:
connection refused), ``"500"`` (every ingestion answers 500), ``"slow"`` (answers after
``slow_s`` seconds), ``"flapping"`` (odd-numbered ingestion requests answer 503, even
ones succeed). ``None`` restores normal service on the same port::

    with FakeLangfuse(public_key="pk-lf-test", secret_key="sk-lf-test") as fake:
        sink = LangfuseSink(public_key=..., secret_key=..., host=fake.url)
        ...
        assert fake.wait_for(lambda: len(fake.spans()) >= 2, timeout=5)
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any, Literal

import attrs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers.http import Handler, LocalFake
from helpers.otlp import attributes_of

__all__ = ["TRACES_PATH", "FakeLangfuse", "Fault", "ReceivedRequest", "ReceivedSpan"]

TRACES_PATH = "/api/public/otel/v1/traces"
Fault = Literal["down", "500", "slow", "flapping"]


@attrs.frozen
class ReceivedSpan:
    """One decoded span: ids as lowercase hex (``parent_span_id`` ``""`` for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    kind: int
    attributes: dict[str, Any]
    scope_name: str
    scope_version: str
    scope_attributes: dict[str, Any]
    resource_attributes: dict[str, Any]


@attrs.frozen
class ReceivedRequest:
    """One HTTP request as the server saw it (never its credentials)."""

    method: str
    path: str
    status: int
    content_encoding: str | None
    headers: dict[str, str]


class _Handler(Handler["FakeLangfuse"]):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the base class names it
        fake = self.fake
        if not fake.authorized(self.headers.get("Authorization")):
            self._answer(401, b'{"message":"unauthorized"}', "application/json")
            return
        if self.path.startswith("/api/public/health"):
            self._answer(200, b'{"status":"OK","version":"3.0.0"}', "application/json")
        elif self.path.startswith("/api/public/projects"):
            body = {"data": [{"id": "fake-project", "name": "fake", "metadata": {}}]}
            self._answer(200, json.dumps(body).encode(), "application/json")
        else:
            self._answer(404, b"{}", "application/json")

    def do_POST(self) -> None:  # noqa: N802 - the base class names it
        fake = self.fake
        body = self.read_body()
        if self.path != TRACES_PATH:
            self._answer(404, b"{}", "application/json")
            return
        if not fake.authorized(self.headers.get("Authorization")):
            self._answer(401, b'{"message":"unauthorized"}', "application/json")
            return
        status = fake.ingestion_status()
        if status == 200:
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.gunzip(body))
            fake.add_spans(request)
            self._answer(
                200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
            )
        else:
            self._answer(status, b'{"message":"fault"}', "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.fake.record(
            ReceivedRequest(
                method=self.command,
                path=self.path,
                status=status,
                content_encoding=self.headers.get("Content-Encoding"),
                headers={
                    k.lower(): v
                    for k, v in self.headers.items()
                    if k.lower().startswith("x-langfuse") or k.lower() == "content-type"
                },
            )
        )
        self.send_body(status, body, content_type)


class FakeLangfuse(LocalFake):
    """Langfuse's OTLP ingestion on a free port of 127.0.0.1; a context manager.

    Args:
        public_key: The public key (Basic auth user name) the server accepts.
        secret_key: The secret key (Basic auth password) the server accepts.
        slow_s: How long a ``"slow"`` answer waits (s).
    """

    handler = _Handler
    thread_name = "fake-langfuse"

    def __init__(self, *, public_key: str, secret_key: str, slow_s: float = 3.0) -> None:
        """Bind the port (serving starts on ``__enter__``)."""
        token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        self._expected_auth = f"Basic {token}"
        self.slow_s = slow_s
        self._fault: Fault | None = None
        self._ingestions = 0
        self._released = threading.Event()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ReceivedRequest] = []
        super().__init__()  # bound now, so `url` (as LANGFUSE_HOST takes it) is known

    # --- lifecycle ---

    def stop(self) -> None:
        """Wake "slow" answers still waiting; stop serving and close the port."""
        self._released.set()
        self.close()

    def set_fault(self, fault: Fault | None) -> None:
        """Switch the fault mode; ``"down"`` closes the port, ``None`` reopens it."""
        with self._cond:
            previous, self._fault, self._ingestions = self._fault, fault, 0
        if fault == "down" and previous != "down":
            self.close()
        elif fault != "down" and previous == "down":
            self.listen()
            self.serve()

    # --- request handling (server threads) ---

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the expected credentials."""
        return header == self._expected_auth

    def ingestion_status(self) -> int:
        """The status this ingestion request gets under the current fault (may wait)."""
        with self._cond:
            fault = self._fault
            self._ingestions += 1
            count = self._ingestions
        if fault == "500":
            return 500
        if fault == "flapping":
            return 503 if count % 2 == 1 else 200
        if fault == "slow":
            self._released.wait(self.slow_s)
        return 200

    def add_spans(self, request: ExportTraceServiceRequest) -> None:
        """Keep every span of one accepted request and wake waiters."""
        spans = [
            ReceivedSpan(
                name=span.name,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
                kind=span.kind,
                attributes=attributes_of(span.attributes),
                scope_name=ss.scope.name,
                scope_version=ss.scope.version,
                scope_attributes=attributes_of(ss.scope.attributes),
                resource_attributes=attributes_of(rs.resource.attributes),
            )
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        self.keep(self._spans, *spans)

    def record(self, request: ReceivedRequest) -> None:
        """Keep one request's outline and wake waiters."""
        self.keep(self._requests, request)

    # --- views for assertions ---

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    def requests(self) -> list[ReceivedRequest]:
        """Every request answered so far, in order."""
        with self._cond:
            return list(self._requests)
