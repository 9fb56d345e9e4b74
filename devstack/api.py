"""Serve the Chalice app the way `chalice local --stage <stage> --no-autoreload` does, with a deep listen backlog.

`python -m devstack.api --project-dir . --stage local --port 8000`. `devstack.run` runs this as a child and
restarts it when the app's code or config changes (it watches only those files; chalice's own autoreloader
polls the whole tree, `.venv` and the data directories included, and restarts on every data write).

The stage is loaded with chalice's own pieces, in the order `chalice local` uses them: `AWS_CHALICE_CLI_MODE`,
`CLIFactory(project_dir, environ=os.environ)`, chdir to the project, `create_config_obj(chalice_stage_name=…)`,
whose `chalice_app` applies the stage's environment variables to `os.environ` before importing `app`, then
`validate_routes` and `LocalDevServer`. Two differences: the listen backlog is `--backlog` (128) rather
than socketserver's 5, which resets connections in local bursts; and a path no route matches is a 404 in
the API's error shape rather than API Gateway's `403 Missing Authentication Token`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack.framing import BAD_LENGTH, READ_TIMEOUT_SECONDS, QuietDisconnects, declared_length

DEFAULT_BACKLOG = 128


def create_server(
    project_dir: Path,
    stage: str,
    host: str,
    port: int,
    backlog: int = DEFAULT_BACKLOG,
    overrides: dict[str, str] | None = None,
) -> Any:
    """A bound `chalice.local.LocalDevServer` for the stage (the stage's environment is now in os.environ).

    `overrides` are merged over the stage's environment variables as chalice merges its user-provided params."""
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.validate import validate_routes
    from chalice.local import (
        ChaliceRequestHandler,
        CustomLocalChalice,
        ForbiddenError,
        LocalChalice,
        LocalDevServer,
        LocalGatewayException,
        ThreadedHTTPServer,
    )

    os.environ["AWS_CHALICE_CLI_MODE"] = "true"  # as chalice's CLI sets it
    factory = CLIFactory(str(project_dir), environ=os.environ)
    os.chdir(project_dir)
    user_params = {"environment_variables": overrides} if overrides else None
    config = factory.create_config_obj(chalice_stage_name=stage, user_provided_params=user_params)
    app_obj = config.chalice_app  # applies config.environment_variables to os.environ, then imports app
    validate_routes(app_obj.routes)

    class Server(QuietDisconnects, ThreadedHTTPServer):
        request_queue_size = backlog
        dropped_label = "API"

    class Handler(ChaliceRequestHandler):
        """API Gateway, and chalice local after it, answer a path that no route matches with
        `403 {"message": "Missing Authentication Token"}` (the app has no authorizers, so that is the only
        403 the gateway itself produces). The API's documented answer is a 404 in its own error shape. And
        chalice local reads the body by a `Content-Length` it trusts (devstack/framing.py)."""

        timeout = READ_TIMEOUT_SECONDS

        def _generic_handle(self) -> None:
            if declared_length(self.headers) is None:
                self.close_connection = True  # the body's end is unknown: nothing more can be read from it
                self._send_http_response(400, {"Content-Type": "application/json"}, json.dumps(BAD_LENGTH))
                return
            super()._generic_handle()

        # chalice binds these to its own `_generic_handle` when its class is made.
        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle  # noqa: N815

        def _send_error_response(self, error: LocalGatewayException) -> None:
            if isinstance(error, ForbiddenError):
                body = json.dumps({"error": "not_found", "message": f"no route for {self.command} {self.path}"})
                self._send_http_response(404, {"Content-Type": "application/json"}, body[:1000])
                return
            super()._send_error_response(error)

    # What chalice.local.create_local_server does, with our server and handler classes.
    CustomLocalChalice.__bases__ = (LocalChalice, app_obj.__class__)
    app_obj.__class__ = CustomLocalChalice
    return LocalDevServer(app_obj, config, host, port, handler_cls=Handler, server_cls=Server)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    parser.add_argument("--stage", default="local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG)
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable over the stage's (devstack: DYNAMODB_ENDPOINT_URL on another port); no secrets",
    )
    args = parser.parse_args(argv)
    # `chalice local` logs to stdout at INFO with bare messages, as Lambda does.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    overrides = dict(item.partition("=")[::2] for item in args.override)
    server = create_server(args.project_dir.resolve(), args.stage, args.host, args.port, args.backlog, overrides)

    def stop(_signum: int, _frame: object) -> None:
        # serve_forever runs in this (the main) thread: shut it down from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        server.serve_forever()
    finally:
        server.server.server_close()


if __name__ == "__main__":
    main()
