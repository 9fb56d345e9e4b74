"""A fault-injecting HTTP proxy between the app and the local DynamoDB endpoint, or vodlocal's API 3.0.

Each request is forwarded, or not, as a deterministic plan says (`FaultProxy.plan(request_number,
operation)` returns a fault name or None), so that a test run is reproducible:
  - `unreachable`: the connection is closed before anything is forwarded;
  - `throttled`: DynamoDB's ProvisionedThroughputExceededException, nothing forwarded;
  - `in_progress`: DynamoDB's TransactionInProgressException, nothing forwarded: what a TransactWriteItems
    retried with the ClientRequestToken of one still being applied meets (the local endpoint, serving one
    request at a time, never has one in progress);
  - `answer_lost`: forwarded (DynamoDB applies it), then the connection is closed without the answer;
  - `slow`: forwarded, and answered only after `slow_seconds` (past the client's read timeout);
  - `bad_gateway`: a 502 without a body, nothing forwarded (a load balancer in front of a failing VOD).
The operation is DynamoDB's (`X-Amz-Target`) or VOD's API 3.0 action (`X-TC-Action`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Plan = Callable[[int, str], str | None]
THROTTLED = {
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded (fault proxy)",
}
IN_PROGRESS = {
    "__type": "com.amazonaws.dynamodb.v20120810#TransactionInProgressException",
    "message": "The transaction with the given request token is already in progress. (fault proxy)",
}
REFUSALS = {"throttled": THROTTLED, "in_progress": IN_PROGRESS}  # answered 400, nothing forwarded


class FaultProxy:
    def __init__(self, upstream: str, plan: Plan, slow_seconds: float = 2.0, keep_host: bool = False) -> None:
        """`keep_host`: forward the client's Host header, which API 3.0's signature covers."""
        self.upstream = urlsplit(upstream)
        self.keep_host = keep_host
        self.plan = plan
        self.slow_seconds = slow_seconds
        self.faults: Counter[str] = Counter()
        self.requests = 0
        # (operation, body) of each request DynamoDB got whose answer the client did not (answer_lost, slow): a
        # write among them applied though its sender may have reported a failure.
        self.unanswered: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # DynamoDB's API is POST only
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = (self.headers.get("X-Amz-Target") or self.headers.get("X-TC-Action") or "").rsplit(".", 1)[
                    -1
                ]
                with proxy._lock:
                    proxy.requests += 1
                    fault = proxy.plan(proxy.requests, operation)
                    if fault:
                        proxy.faults[fault] += 1
                if fault == "unreachable":
                    self.close_connection = True
                    return
                if fault in REFUSALS:
                    self._answer(400, json.dumps(REFUSALS[fault]).encode())
                    return
                if fault == "bad_gateway":
                    self._answer(502, b"")
                    return
                status, answer = proxy.forward(body, dict(self.headers))
                if fault in ("answer_lost", "slow"):
                    with proxy._lock:
                        proxy.unanswered.append((operation, body))
                if fault == "answer_lost":
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_seconds)
                self._answer(status, answer)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a slow answer the client stopped waiting for: the fault the test asked for

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=30)
        try:
            forwarded = {k: v for k, v in headers.items() if self.keep_host or k != "Host"}
            connection.request("POST", "/", body=body, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
