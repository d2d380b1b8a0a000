"""The local HTTP servers the fakes stand on: a port of 127.0.0.1, a thread, quiet handlers.

A fake (``FakeJaeger``, ``FakePostHog`` …) subclasses :class:`LocalFake`, names its
request handler (a :class:`Handler` subclass, which reaches the fake as ``self.fake``)
and its serving thread, and is a context manager that serves from ``__enter__`` to
``__exit__``::

    class _Handler(Handler["FakeThing"]):
        def do_POST(self) -> None:
            self.fake.add(json.loads(self.read_body()))
            self.send_json(200, {"ok": True})

    class FakeThing(LocalFake):
        handler = _Handler
        thread_name = "fake-thing"
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["Handler", "LocalFake", "LocalServer", "unused_port"]

F = TypeVar("F")
T = TypeVar("T")
HOST = "127.0.0.1"


def unused_port() -> int:
    """A free port of 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class LocalServer(ThreadingHTTPServer, Generic[F]):
    """An HTTP server bound to 127.0.0.1 for one fake, with the thread that serves it.

    Args:
        fake: What the handlers reach as ``self.fake``.
        handler: The request handler class.
        thread_name: The serving thread's name.
        port: The port to bind (``0``: a free one).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, fake: F, handler: type[Handler[F]], *, thread_name: str, port: int = 0
    ) -> None:
        """Bind the port (serving starts on :meth:`start`)."""
        super().__init__((HOST, port), handler)
        self.fake = fake
        self._thread = threading.Thread(target=self.serve_forever, name=thread_name, daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve on the serving thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if it started) and close the port."""
        if self._thread.ident is not None:
            self.shutdown()
            self._thread.join(5)
        self.server_close()


class Handler(BaseHTTPRequestHandler, Generic[F]):
    """A fake's request handler: its fake, the request body, JSON and byte answers; quiet."""

    server: LocalServer[F]

    @property
    def fake(self) -> F:
        """The fake this request came to."""
        return self.server.fake

    def read_body(self) -> bytes:
        """The request body as sent (``Content-Length`` bytes)."""
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def gunzip(self, body: bytes) -> bytes:
        """``body`` decompressed when the request says ``Content-Encoding: gzip``."""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            return gzip.decompress(body)
        return body

    def send_body(self, status: int, data: bytes, content_type: str) -> None:
        """Answer ``status`` with ``data`` (``Content-Type`` and ``Content-Length`` set)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status: int, payload: Any) -> None:
        """Answer ``status`` with ``payload`` as JSON."""
        self.send_body(status, json.dumps(payload).encode(), "application/json")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep test output quiet."""


class LocalFake:
    """A fake behind a :class:`LocalServer`; a context manager serving from enter to exit.

    What the fake keeps is guarded by ``_cond``: :meth:`keep` adds to it and wakes
    :meth:`wait_for`.

    Subclasses set :attr:`handler` and :attr:`thread_name` (and :attr:`server_class`, for
    a :class:`LocalServer` of their own), call ``super().__init__()`` and may extend
    :meth:`start` / :meth:`stop` (what ``__enter__`` / ``__exit__`` do).

    Args:
        listen: Bind a free port now; ``False`` keeps a port nothing listens on.
    """

    handler: ClassVar[type[Handler[Any]]]
    thread_name: ClassVar[str]
    server_class: ClassVar[type[LocalServer[Any]]] = LocalServer

    def __init__(self, *, listen: bool = True) -> None:
        """Bind the port, or pick one that stays closed (serving starts on ``__enter__``)."""
        self._cond = threading.Condition()
        self._server: LocalServer[Self] | None = None
        self._port = 0
        if listen:
            self.listen()
        else:
            self._port = unused_port()

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self._port}"

    def listen(self) -> None:
        """Bind the port (the same one again after :meth:`close`)."""
        self._server = self.server_class(
            self, self.handler, thread_name=self.thread_name, port=self._port
        )
        self._port = self._server.port

    def serve(self) -> None:
        """Serve on the bound port (nothing, if none is bound)."""
        if self._server is not None:
            self._server.start()

    def close(self) -> None:
        """Stop serving and close the port: connections are refused until :meth:`listen`."""
        if self._server is not None:
            self._server.stop()
        self._server = None

    def start(self) -> None:
        """What ``__enter__`` does: serve."""
        self.serve()

    def stop(self) -> None:
        """What ``__exit__`` does: stop serving and close the port."""
        self.close()

    def keep(self, into: list[T], *items: T) -> None:
        """Append ``items`` to ``into`` (a list the fake keeps) and wake waiters."""
        with self._cond:
            into.extend(items)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate()`` holds; return whether it did."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
