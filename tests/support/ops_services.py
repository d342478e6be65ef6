"""Real HTTP services on 127.0.0.1 for the ops tests: healthy, slow, failing, gated, flapping,
sluggish.

One `ThreadingHTTPServer` serves every behaviour by path, so a test can register one
service per behaviour against the same port. Nothing is mocked: Harken's checks and
`call` open real sockets to it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any


class ServiceState:
    """What the tests control and observe (thread-safe)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.flappy_up = True
        self.flappy_checks = 0
        self.gate = threading.Event()
        self.gated_waiting = threading.Event()
        self.release = threading.Event()
        """Set when the test ends, so handlers held by `/slow` return."""
        self.sluggish_delay = 0.0
        """How long `/sluggish` takes to answer, in seconds (the test sets it)."""

    def set_flappy(self, up: bool) -> None:
        with self.changed:
            self.flappy_up = up
            self.flappy_checks = 0

    def wait_flappy_checks(self, count: int, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.flappy_checks >= count, timeout):
                raise TimeoutError(f"fewer than {count} checks of /flappy within {timeout} s")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _send(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/slow":
            # Answers long after any check's timeout (until the test ends).
            state.release.wait(30)
            self._send(200, {"status": "late"})
        elif self.path == "/sluggish":
            # A service that answers, but as slowly as the test says.
            with state.changed:
                delay = state.sluggish_delay
            if delay > 0:
                state.release.wait(delay)
            self._send(200, {"status": "ok"})
        elif self.path == "/fail":
            self._send(500, {"error": "boom"})
        elif self.path == "/gated":
            state.gated_waiting.set()
            state.gate.wait(30)
            self._send(200, {"status": "ok"})
        elif self.path == "/flappy":
            with state.changed:
                state.flappy_checks += 1
                up = state.flappy_up
                state.changed.notify_all()
            self._send(200 if up else 503, {"up": up})
        elif self.path == "/v1/status":
            self._send(200, {"version": "1.2.3", "healthy": True})
        elif self.path == "/v1/big":
            self._send(200, b"x" * 100_000, "text/plain")
        elif self.path == "/admin/drop-tables":
            self._send(200, {"dropped": True})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        self._send(200, {"echo": body})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServiceState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def serving(server: HTTPServer) -> Iterator[None]:
    """Serve `server` (bound to 127.0.0.1) on a thread of its own; stop it on exit."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def running_services() -> Iterator[tuple[str, ServiceState]]:
    """(base URL, state) of a server on 127.0.0.1, stopped on exit."""
    state = ServiceState()
    server = _Server(state)
    with serving(server):
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", state
        finally:
            # Let requests held by the test go, so that shutting down does not wait.
            state.release.set()
            state.gate.set()


def dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
