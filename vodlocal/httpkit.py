"""A minimal request/response model shared by the service modules (no framework)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from io import BufferedIOBase
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

CHUNK = 1 << 20


class BodyTooLarge(ValueError):
    """``BodyReader.read`` went past its limit (``drain`` can still skip the rest)."""


class MalformedBody(ValueError):
    """The chunked transfer coding could not be parsed."""


class BodyReader:
    """Reads a request body once, either by Content-Length or chunked transfer coding.

    A handler that stops part-way (e.g. ``read`` over its limit) leaves the rest to ``drain``, which
    resumes where it stopped, so the connection stays usable for the next request.
    """

    def __init__(self, stream: BufferedIOBase, length: int | None, chunked: bool) -> None:
        self._stream = stream
        self._remaining = length or 0
        self._chunked = chunked
        self._chunks = self._iter_chunked() if chunked else self._iter_sized()
        self.consumed = False  # a handler has started reading
        self.finished = not chunked and not length  # the whole body has been read

    def iter_chunks(self) -> Iterator[bytes]:
        if self.consumed:
            return
        self.consumed = True
        # Not ``yield from``: closing this generator (a handler giving up) must not close ``_chunks``.
        for chunk in self._chunks:  # noqa: UP028
            yield chunk

    def _iter_sized(self) -> Iterator[bytes]:
        while self._remaining > 0:
            data = self._stream.read(min(CHUNK, self._remaining))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self._remaining -= len(data)
            yield data
        self.finished = True

    def _iter_chunked(self) -> Iterator[bytes]:
        while True:
            size_line = self._stream.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line or b"0", 16)
            except ValueError as exc:
                raise MalformedBody(f"bad chunk size line {size_line[:40]!r}") from exc
            if size < 0:
                raise MalformedBody(f"bad chunk size line {size_line[:40]!r}")
            if size == 0:
                while self._stream.readline(1024).strip():
                    pass
                self.finished = True
                return
            while size > 0:
                data = self._stream.read(min(CHUNK, size))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                size -= len(data)
                yield data
            self._stream.readline(16)

    def read(self, limit: int = 64 << 20) -> bytes:
        parts: list[bytes] = []
        total = 0
        for chunk in self.iter_chunks():
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge("request body too large")
            parts.append(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        """Read and discard whatever of the body is still unread."""
        self.consumed = True
        for _ in self._chunks:
            pass


@dataclass
class Request:
    method: str
    host: str  # lower-case, without port
    raw_host: str  # the Host header as sent
    path: str  # percent-decoded path
    raw_path: str  # path as sent, without the query
    query: list[tuple[str, str]]
    headers: Mapping[str, str]  # lower-case keys
    body: BodyReader
    log: dict[str, object] = field(default_factory=dict)

    @classmethod
    def parse_query(cls, query: str) -> list[tuple[str, str]]:
        return parse_qsl(query, keep_blank_values=True)

    def arg(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def has_arg(self, name: str) -> bool:
        return any(key == name for key, _ in self.query)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> object:
        raw = self.body.read()
        return json.loads(raw.decode("utf-8")) if raw.strip() else {}


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Iterable[bytes] | None = None  # when set, ``headers`` must carry Content-Length
    on_close: Callable[[], None] | None = None

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Response:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls(status, {"Content-Type": "application/json"}, data)

    @classmethod
    def xml(cls, root: str, fields: Iterable[tuple[str, object]], status: int = 200) -> Response:
        return cls(status, {"Content-Type": "application/xml"}, xml_document(root, fields).encode("utf-8"))


def xml_element(name: str, value: object) -> str:
    if isinstance(value, list):
        return "".join(xml_element(name, item) for item in value)
    if isinstance(value, tuple | dict):
        items = value.items() if isinstance(value, dict) else value
        return f"<{name}>{''.join(xml_element(k, v) for k, v in items)}</{name}>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def xml_document(root: str, fields: Iterable[tuple[str, object]]) -> str:
    inner = "".join(xml_element(k, v) for k, v in fields)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{inner}</{root}>'
