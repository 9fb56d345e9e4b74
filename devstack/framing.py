"""What the dev stack's own HTTP servers (the API as `chalice local` serves it, the page's server) do with a client
that frames its request badly or goes away: a JSON 400 for a `Content-Length` that is not a number, a read given up
after `READ_TIMEOUT_SECONDS`, and one line, not a traceback, in `make dev`'s output for a client gone mid-request.
On a cloud stage API Gateway does this framing; locally nothing else would. `BackgroundServer` runs such a server
(the page's, the events sink's) in a thread."""

from __future__ import annotations

import socketserver
import sys
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# A client that declares a body and never sends it is given up on after this (as a handler's `timeout`).
READ_TIMEOUT_SECONDS = 10.0
BAD_LENGTH = {
    "error": "invalid_request",
    "message": "Content-Length: must be a number of bytes",
    "field": "Content-Length",
}


def declared_length(headers: Message) -> int | None:
    """The body's length as the request declares it (0 without one); None when that is not a number of bytes."""
    declared = (headers.get("Content-Length") or "0").strip()
    return int(declared) if declared.isdigit() else None


class QuietDisconnects(socketserver.BaseServer):
    """Put first in a server's bases: `dropped_label` then says whose request was dropped."""

    dropped_label = "server"

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)
            return
        host = client_address[0] if isinstance(client_address, tuple) else client_address
        print(f"{self.dropped_label}: a request from {host} was dropped ({type(error).__name__})", file=sys.stderr)


class _QuietServer(QuietDisconnects, ThreadingHTTPServer):
    daemon_threads = True


class BackgroundServer:
    """One of the dev stack's servers in a daemon thread (port 0: any free port), `label` naming it in the line
    printed for a dropped request."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int, label: str) -> None:
        self.server = _QuietServer((host, port), handler)
        self.server.dropped_label = label
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
