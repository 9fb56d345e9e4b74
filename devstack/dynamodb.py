"""A local DynamoDB endpoint: moto's server, answering one request at a time.

Serving requests one by one makes condition checks and transactions atomic, as they are in
DynamoDB; moto's default threaded server (and moto in-process under threads) does not give that.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app  # type: ignore[attr-defined]
from werkzeug.serving import BaseWSGIServer, make_server


class DynamoDBServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
        app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=False)
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def start(self) -> DynamoDBServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dynamodb", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DynamoDBServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    server = DynamoDBServer(args.host, args.port)
    print(f"DynamoDB (moto, serialised) on {server.endpoint_url}", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
