"""One HTTP exchange that a server cannot stretch or swell: a single deadline for all of it (connect, headers,
body) and a bound on the answer's size. Our API and VOD's UGC API are both spoken through it; COS traffic goes
through its SDK."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit


class ExchangeFailed(Exception):
    """No usable answer: ``kind`` is ``deadline``, ``too_large`` or ``unreachable``; the message is one line."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        """The body's JSON; a ``ValueError`` for anything else, including nesting deeper than the parser goes."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


class _Deadline:
    """Shuts the connection down when the time is up. A timeout per socket read cannot do it: a server sending
    one byte every few seconds never lets a single read time out."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock.dup()  # shutdown acts on the connection, also once TLS has taken over ``sock``
        self._lock = threading.Lock()
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock.close()


_TLS = ssl.create_default_context()


def exchange(
    method: str,
    url: str,
    *,
    ends: float,
    max_bytes: int,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    proxy: str | None = None,
) -> Reply:
    """``method url`` answered by ``ends`` (a ``time.monotonic()`` instant) with at most ``max_bytes`` of body.
    ``proxy``: an ``http://host:port`` HTTP proxy for a plain-HTTP ``url`` (vodlocal as the emulator)."""
    target = urlsplit(url)
    via = urlsplit(proxy) if proxy else target
    tls = via.scheme == "https"
    host, port = via.hostname or "", via.port or (443 if tls else 80)
    request_target = url if proxy else (target.path or "/") + (f"?{target.query}" if target.query else "")
    deadline: _Deadline | None = None
    connection: http.client.HTTPConnection | None = None
    where = f"{target.scheme}://{target.netloc}"
    try:
        remaining = ends - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        raw = socket.create_connection((host, port), timeout=remaining)
        deadline = _Deadline(raw, ends - time.monotonic())
        if tls:
            connection = http.client.HTTPSConnection(host, port, context=_TLS)
            connection.sock = _TLS.wrap_socket(raw, server_hostname=host)
        else:
            connection = http.client.HTTPConnection(host, port)
            connection.sock = raw
        connection.request(method, request_target, body=body, headers={"Host": target.netloc, **(headers or {})})
        response = connection.getresponse()
        declared = response.getheader("Content-Length") or ""
        too_large = ExchangeFailed("too_large", f"{where} sent an answer over {max_bytes} bytes; not read")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large
        data = response.read(max_bytes + 1)
        if deadline.expired:
            raise TimeoutError
        if len(data) > max_bytes:
            raise too_large
        return Reply(response.status, response.reason, response.msg, data)
    except (OSError, http.client.HTTPException) as exc:
        if (deadline is not None and deadline.expired) or isinstance(exc, TimeoutError):
            raise ExchangeFailed("deadline", f"{where} gave no complete answer in time") from None
        raise ExchangeFailed("unreachable", f"{where} did not answer: {exc}") from None
    finally:
        if deadline is not None:
            deadline.close()
        if connection is not None:
            connection.close()
