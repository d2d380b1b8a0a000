"""A local PostHog capture server: proves the PostHog sink on the wire.

Listens on 127.0.0.1 (a free port) and speaks the capture endpoints the ``posthog``
SDK posts to:

- ``POST /batch/`` (capture v0; also the AI lane's ``/i/v0/ai/batch/``): JSON body
  ``{"api_key", "batch": [event, ...], "sent_at", "historical_migration"}``, gzipped when
  ``Content-Encoding: gzip`` (or the old ``?compression=gzip-js`` query); answers
  ``200 {"status": 1}``.
- ``POST /i/v1/analytics/events`` (capture v1, ``capture_mode="v1"``): Bearer auth,
  ``{"created_at", "batch": [...]}`` with ``gzip``/``deflate`` encodings; answers
  ``200 {"results": {uuid: {"result": "ok"}}}``.

Fault modes (set ``mode`` before or during a test)::

    FakePostHog()                       # answers 200
    FakePostHog(mode="error")           # answers 500
    FakePostHog(mode="slow", delay_s=3) # answers 200 after delay_s
    FakePostHog(mode="flapping")        # 500 on requests 1, 3, 5 …, 200 on 2, 4 …
    FakePostHog(mode="down")            # nothing listens on the port (refused)

Every request is recorded (``.requests``); events only from requests that were answered
2xx are in ``.events``, the way PostHog would count them, and ``distinct_uuids`` is the
number of distinct event uuids among them (PostHog deduplicates on uuid).
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import attrs

from helpers.http import Handler, LocalFake, LocalServer

__all__ = ["FakePostHog", "Mode", "ReceivedRequest"]

Mode = Literal["ok", "error", "slow", "flapping", "down"]

V0_PATHS = frozenset({"/batch", "/batch/", "/i/v0/ai/batch", "/i/v0/ai/batch/"})
V1_PATH = "/i/v1/analytics/events"


@attrs.frozen
class ReceivedRequest:
    """One request as the server saw it, body decoded."""

    path: str
    headers: dict[str, str]
    encoding: str | None
    body: dict[str, Any]
    status: int

    @property
    def api_key(self) -> str | None:
        """The project key: ``api_key`` in a v0 body, the Bearer token in v1."""
        key = self.body.get("api_key")
        if isinstance(key, str):
            return key
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    @property
    def events(self) -> list[dict[str, Any]]:
        """The batch's events."""
        batch = self.body.get("batch", [])
        return list(batch) if isinstance(batch, list) else []


class _Server(LocalServer["FakePostHog"]):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) is expected here: stay quiet."""


def _decode(raw: bytes, encoding: str | None, query: dict[str, list[str]]) -> bytes:
    enc = (encoding or "").lower()
    if enc == "gzip" or query.get("compression") == ["gzip-js"]:
        return gzip.decompress(raw)
    if enc == "deflate":
        return zlib.decompress(raw)
    return raw


class _Handler(Handler["FakePostHog"]):
    def do_POST(self) -> None:  # noqa: N802 - the base class names it
        fake = self.fake
        url = urlsplit(self.path)
        raw = self.read_body()
        if url.path not in V0_PATHS and url.path != V1_PATH:
            self.send_json(404, {"detail": "not found"})
            return
        encoding = self.headers.get("Content-Encoding")
        try:
            body = json.loads(_decode(raw, encoding, parse_qs(url.query)))
        except (OSError, ValueError, zlib.error):
            self.send_json(400, {"detail": "undecodable body"})
            return
        status = fake.next_status()
        if status == 200 and fake.delay_s > 0 and fake.closing.wait(fake.delay_s):
            return  # shutting down: drop the connection
        fake.add(
            ReceivedRequest(
                path=url.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                encoding=encoding,
                body=body,
                status=status,
            )
        )
        if status != 200:
            self.send_json(status, {"detail": "injected fault"})
        elif url.path == V1_PATH:
            uuids = [e.get("uuid") for e in body.get("batch", [])]
            self.send_json(200, {"results": {u: {"result": "ok"} for u in uuids if u}})
        else:
            self.send_json(200, {"status": 1})


class FakePostHog(LocalFake):
    """PostHog capture server on a free port of 127.0.0.1; a context manager.

    Args:
        mode: The fault mode (see the module docstring); may be changed later.
        delay_s: How long ``slow`` waits before answering (s).
    """

    handler = _Handler
    thread_name = "fake-posthog"
    server_class = _Server

    def __init__(self, mode: Mode = "ok", *, delay_s: float = 3.0) -> None:
        """Bind the port (``down`` binds nothing; serving starts on ``__enter__``)."""
        self.mode: Mode = mode
        self._delay_s = delay_s
        self.closing = threading.Event()
        self._count = 0
        self.requests: list[ReceivedRequest] = []
        super().__init__(listen=mode != "down")  # down: a port nobody listens on

    @property
    def host(self) -> str:
        """Base URL for ``POSTHOG_HOST``."""
        return self.url

    @property
    def delay_s(self) -> float:
        """The answer delay of the current mode (s)."""
        return self._delay_s if self.mode == "slow" else 0.0

    def stop(self) -> None:
        """Drop the answers still waiting; stop serving and close the port."""
        self.closing.set()
        self.close()

    def next_status(self) -> int:
        """The status to answer the next request with, per the mode."""
        with self._cond:
            self._count += 1
            n = self._count
        if self.mode == "error" or (self.mode == "flapping" and n % 2 == 1):
            return 500
        return 200

    def add(self, request: ReceivedRequest) -> None:
        """Store one decoded request and wake waiters."""
        self.keep(self.requests, request)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Events of every request answered 2xx, in arrival order."""
        with self._cond:
            return [e for r in self.requests if 200 <= r.status < 300 for e in r.events]

    @property
    def distinct_uuids(self) -> int:
        """How many distinct event uuids were accepted (what PostHog would count)."""
        return len({e.get("uuid") for e in self.events})
