"""HTTP front door: dispatches on the ``Host`` header like the real services, and in-process start/stop.

Hosts (``Host`` header, or an absolute request URI when the emulator is used as an HTTP proxy):

* ``vod2.qcloud.com`` / ``vod2.dnsv1.com``: UGC upload API (``POST /v3/index.php?Action=...``)
* ``<bucket>-<appid>.cos.<region>.myqcloud.com`` (or ``.tencentcos.cn``): COS object API
* ``cos.<region>.myqcloud.com``: the region-race HEAD probe
* ``vod.tencentcloudapi.com``: API 3.0 (TC3); also any host when ``X-TC-Action`` is present (SDK endpoint override)
* ``vodreport.qcloud.com``: the Web SDK's telemetry (accepted and dropped)
* anything else (e.g. ``127.0.0.1:8001``): ``/_cos/<bucket>-<appid>/<key>`` path-style COS (MediaUrl/CoverUrl),
  ``/v3/index.php`` UGC, ``/_vodlocal/health`` and ``/_vodlocal/requests`` (the request log, JSON).
"""

from __future__ import annotations

import collections
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from vodlocal import cors
from vodlocal.api3 import Api3Service
from vodlocal.config import Config
from vodlocal.cos import REGION_ABBREVIATIONS, CosError, CosService, error_response
from vodlocal.eventconfig import EventConfig, EventConfigStore
from vodlocal.events import EventBus
from vodlocal.httpkit import BodyReader, MalformedBody, Request, Response
from vodlocal.media import MediaRepository
from vodlocal.store import Store
from vodlocal.tls import TlsFiles, ensure_certificate
from vodlocal.ugc import UgcService

log = logging.getLogger("vodlocal")

UGC_HOSTS = frozenset({"vod2.qcloud.com", "vod2.dnsv1.com"})
API3_HOSTS = frozenset({"vod.tencentcloudapi.com", "vod.intl.tencentcloudapi.com"})
REPORT_HOST = "vodreport.qcloud.com"
BUCKET_HOST = re.compile(r"(?P<bucket>[a-z0-9-]+-\d+)\.cos\.(?P<region>[a-z0-9-]+)\.(?:myqcloud\.com|tencentcos\.cn)\Z")
REGION_HOST = re.compile(r"cos\.[a-z0-9-]+\.(?:myqcloud\.com|tencentcos\.cn)\Z")
# The VOD hosts (UGC, API 3.0, reporter) answer any origin: the Web SDK calls them from every site. COS answers by
# the buckets' CORS rules instead (vodlocal/cors.py).
OPEN_CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}


class App:
    """All services wired together over one data directory."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.base_url = config.public_base_url or f"http://{config.host}:{config.port}"
        self.store = Store(config.data_dir)
        self.cos = CosService(self.store, config)
        # The stored event config (ModifyEventConfig) governs delivery; the flags only seed it when none is stored.
        self.event_config = EventConfigStore(self.store, EventConfig.seed(config))
        self.bus = EventBus(self.store, config, self.event_config)
        self.media = MediaRepository(self.store)
        self.ugc = UgcService(self.store, config, self.cos, self.bus, self.media, lambda: self.base_url)
        self.api3 = Api3Service(config, self.bus, self.media, self.cos)
        self.request_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=50_000)

    @staticmethod
    def is_cos(req: Request) -> bool:
        return BUCKET_HOST.match(req.host) is not None or (req.host not in UGC_HOSTS and req.path.startswith("/_cos/"))

    def unreadable(self, req: Request, message: str) -> Response:
        """The answer to a request whose body cannot be read: COS's XML error to a COS client, JSON otherwise."""
        if self.is_cos(req):
            req.log["error"] = "InvalidRequest"
            return error_response(CosError(400, "InvalidRequest", message), req)
        return Response.json({"error": message}, 400)

    def route(self, req: Request) -> Response:
        bucket = BUCKET_HOST.match(req.host)
        is_cos = self.is_cos(req)
        if req.method == "OPTIONS":
            if is_cos:
                return cors.preflight(self.config.cos_cors, req)
            req.log["op"] = "CORS"
            return Response(
                200,
                {
                    **OPEN_CORS_HEADERS,
                    "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE, HEAD",
                    "Access-Control-Allow-Headers": req.header("access-control-request-headers", "*"),
                    "Access-Control-Max-Age": "600",
                },
            )
        resp = self._dispatch(req, bucket)
        cors_headers = cors.actual_headers(self.config.cos_cors, req) if is_cos else OPEN_CORS_HEADERS
        resp.headers = {**cors_headers, **resp.headers}
        return resp

    def _dispatch(self, req: Request, bucket: re.Match[str] | None) -> Response:
        host = req.host
        if host in UGC_HOSTS:
            return self.ugc.handle(req) if req.path == "/v3/index.php" else Response(404)
        if host in API3_HOSTS or req.header("x-tc-action"):
            return self.api3.handle(req)
        if host == REPORT_HOST:
            req.log["op"] = "Report"
            req.body.drain()
            return Response.json({"code": 0})
        if bucket:
            return self.cos.handle(req, bucket["bucket"], req.path[1:], bucket["region"])
        if REGION_HOST.match(host):
            req.log["op"] = "RegionProbe"
            return Response(200)
        return self._local(req)

    def _local(self, req: Request) -> Response:
        path = req.path
        if path.startswith("/_cos/"):
            bucket, _, key = path[len("/_cos/") :].partition("/")
            return self.cos.handle(req, bucket, key)
        if path == "/v3/index.php":
            return self.ugc.handle(req)
        if path in ("/", "/_vodlocal/health"):
            return Response.json({"ok": True, "mode": self.event_config.current().mode})
        if path == "/_vodlocal/requests":
            return Response.json(list(self.request_log))
        return Response.json({"error": f"no route for host {req.raw_host!r} path {path!r}"}, 404)

    def close(self) -> None:
        self.bus.close()
        self.store.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vodlocal"
    app: App  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _serve(self) -> None:
        target = self.path
        host_header = self.headers.get("Host", "")
        if target.startswith(("http://", "https://")):  # proxy-style absolute URI
            parts = urlsplit(target)
            host_header = parts.netloc
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        raw_path, _, query = target.partition("?")
        host = host_header.rsplit(":", 1)[0] if not host_header.startswith("[") else host_header
        headers = {k.lower(): v for k, v in self.headers.items()}
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        raw_length = headers.get("content-length", "").strip()
        readable = not raw_length or (raw_length.isascii() and raw_length.isdigit())  # also rejects "-1"
        req = Request(
            self.command,
            host.lower(),
            host_header,
            unquote(raw_path),
            raw_path,
            Request.parse_query(query),
            headers,
            BodyReader(self.rfile, int(raw_length or 0) if readable else 0, chunked),
        )
        if not readable:
            # The body's extent is unknown: answer and drop the connection rather than guess.
            self.close_connection = True
            self._write(self.app.unreadable(req, f"invalid Content-Length {raw_length[:40]!r}"))
            return
        started = time.time()
        try:
            resp = self.app.route(req)
        except ConnectionError as exc:
            log.info("client went away: %s", exc)
            self.close_connection = True
            self._record(req, 499, started)
            return
        except MalformedBody as exc:
            resp = self.app.unreadable(req, str(exc))
            self.close_connection = True
        except Exception:
            log.exception("unhandled error for %s %s%s", self.command, host, raw_path)
            resp = Response.json({"error": "internal error"}, 500)
            self.close_connection = True
        if not req.body.finished:  # unread, or a handler stopped part-way (e.g. a body over its limit)
            try:
                req.body.drain()
            except (ConnectionError, ValueError):
                pass
            self.close_connection = self.close_connection or not req.body.finished
        self._record(req, resp.status, started)
        self._write(resp)

    def _record(self, req: Request, status: int, started: float) -> None:
        entry: dict[str, Any] = {
            "t": started,
            "method": req.method,
            "host": req.host,
            "path": req.raw_path,
            "query": dict(req.query),
            "status": status,
            "ms": round((time.time() - started) * 1e3, 1),
        }
        entry.update(req.log)
        self.app.request_log.append(entry)

    def _write(self, resp: Response) -> None:
        try:
            self.send_response(resp.status)
            headers = dict(resp.headers)
            if resp.stream is None:
                headers["Content-Length"] = str(len(resp.body))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            if resp.stream is None:
                self.wfile.write(resp.body)
            else:
                for chunk in resp.stream:
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if resp.on_close is not None:
                resp.on_close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that drops a TLS connection mid-handshake, or refuses the certificate, is not our error.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _TlsServer(_Server):
    """HTTPS, and plain HTTP on the same port. The SDK's COS layer takes the page's scheme (an http page's uploads
    go to http://<bucket>.cos…), while its VOD calls are always https: a browser that sends all the SDK's hosts
    to this one port reaches vodlocal both ways. The first byte tells them apart (22: a TLS handshake)."""

    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # In the connection's own thread (ThreadingMixIn), so a client that sends nothing holds up no one else.
        if request.recv(1, socket.MSG_PEEK) != b"\x16":
            super().finish_request(request, client_address)
            return
        with self.context.wrap_socket(request, server_side=True) as secure:
            super().finish_request(secure, client_address)


@dataclass
class Handle:
    """A running emulator (see ``start``)."""

    app: App
    servers: list[_Server]
    threads: list[threading.Thread]
    url: str
    tls: TlsFiles | None = None  # with ``Config.tls_port``: the certificate served on ``tls_port``

    @property
    def port(self) -> int:
        return int(self.servers[0].server_address[1])

    @property
    def tls_port(self) -> int | None:
        return int(self.servers[1].server_address[1]) if len(self.servers) > 1 else None

    def requests(self, op: str | None = None) -> list[dict[str, Any]]:
        return [r for r in list(self.app.request_log) if op is None or r.get("op") == op]

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.app.close()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(config: Config) -> Handle:
    """Bind (port 0 = any free port), start serving in background threads and return a handle. With
    ``tls_port``, HTTPS is served there too, by the same app, with a certificate from ``vodlocal.tls``."""
    handler: type[_Handler] = type("Handler", (_Handler,), {})
    servers = [_Server((config.host, config.port), handler)]
    tls: TlsFiles | None = None
    if config.tls_port is not None:
        tls = ensure_certificate(config.tls_dir, tuple({*REGION_ABBREVIATIONS, config.region}))
        secure = _TlsServer((config.host, config.tls_port), handler)
        secure.context = tls.server_context()
        servers.append(secure)
    port = int(servers[0].server_address[1])
    config = replace(config, port=port)
    app = App(config)
    handler.app = app
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="vodlocal-http", daemon=True)
        for server in servers
    ]
    for thread in threads:
        thread.start()
    url = f"http://{config.host}:{port}"
    log.info("vodlocal listening on %s (data dir %s, mode %s)", url, config.data_dir, app.event_config.current().mode)
    return Handle(app, servers, threads, url, tls)
