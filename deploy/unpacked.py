"""The deployment zip run the way Lambda runs it, on this machine: the cold-start bench and the rehearsal's smoke.

Lambda unpacks the zip into `/var/task` (read-only, also the working directory) and starts the runtime's
interpreter with `/var/task` first on `sys.path`, then the runtime's own libraries (boto3 and its
dependencies: the zip has none, requirements.txt says why). Here:
  - `unpack` extracts the zip and makes the copy read-only (`chmod a-w`; root writes anyway, so every child
    also runs with `-B`, and `bytecode_files` lets a caller check that none appeared);
  - `runtime_libraries` copies boto3's installed distributions (its dependency closure) out of this
    virtualenv and compiles them as a pip install into an image leaves them (timestamp pycs on files whose
    mtimes are kept), once per set of versions, shared read-only by every run;
  - `command` is the interpreter Lambda would start: `-I -S -B` (no user site, no site-packages, no
    PYTHON* variables, no bytecode written) with `sys.path` set to the package, then the runtime libraries,
    then the standard library; `FOREIGN_MODULES` lists what a child loaded from anywhere else (the
    repository, the virtualenv), which must be nothing;
  - `Function` is one warm execution environment: a child that imports the handler at its first event and
    answers API Gateway proxy events (`proxy_event`) on a pipe, one at a time, as Lambda invokes it; `serve`
    puts an HTTP front on it that maps requests to the routes of the packaged template, as API Gateway does.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

ACCOUNT = "123456789012"
API_ID = "a1b2c3d4e5"
API_STAGE = "api"  # api_gateway_stage in .chalice/config.json
RUNTIME_DISTRIBUTION = "boto3"  # what the Lambda Python runtime provides, with its dependencies
RUNTIME_CACHE = Path(__file__).resolve().parent.parent / ".local" / "runtime-libraries"
# requestContext.identity of a request without IAM or Cognito credentials: present, but null.
IDENTITY_UNSET = ("accountId", "caller", "user", "userArn", "accessKey", "cognitoIdentityPoolId",
                  "cognitoIdentityId", "cognitoAuthenticationType", "cognitoAuthenticationProvider")  # fmt: skip
FUNCTION_NAME = "vod-upload-backend"
MARKER = "FUNCTION-RESULT "  # a child's result line; the app logs to the same stdout
PATH_VARIABLE = "FUNCTION_SYS_PATH"  # the package and runtime directories, os.pathsep-separated

# Lambda's bootstrap has set sys.path before it imports the handler: not part of a cold start's cost.
BOOT = f"""\
import os, sys
sys.path[:0] = os.environ[{PATH_VARIABLE!r}].split(os.pathsep)
"""

# What the Lambda runtime passes as `context`: the attributes of its LambdaContext.
CONTEXT = f"""\
class LambdaContext:
    function_name = {FUNCTION_NAME!r}
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:{ACCOUNT}:function:vod-upload-backend"
    memory_limit_in_mb = "512"
    log_group_name = "/aws/lambda/vod-upload-backend"
    log_stream_name = "2026/11/24/[$LATEST]0123456789abcdef"
    identity = client_context = None
    def __init__(self, event, deadline):
        self.aws_request_id = event["requestContext"]["requestId"]
        self._deadline = deadline
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.perf_counter()) * 1000))
"""

# Modules this child loaded from outside the package, the runtime libraries and the standard library.
FOREIGN_MODULES = f"""\
def foreign_modules():
    allowed = os.environ[{PATH_VARIABLE!r}].split(os.pathsep)
    stdlib = os.path.dirname(os.__file__)
    foreign = []
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        if file.startswith(os.path.join(stdlib, "site-packages")):
            foreign.append(name)
        elif not any(file.startswith(root + os.sep) for root in [*allowed, stdlib]):
            foreign.append(name)
    return foreign
"""

# A warm execution environment: events in on stdin, one JSON line each; responses out on stdout.
_SERVE = (
    BOOT
    + "import json, time\n"
    + CONTEXT
    + FOREIGN_MODULES
    + f"""\
handler = None
for line in sys.stdin:
    event = json.loads(line)
    if handler is None:
        import app
        handler = app.app
    response = handler(event, LambdaContext(event, time.perf_counter() + 10))
    print({MARKER!r} + json.dumps({{"response": response, "foreign": foreign_modules()}}), flush=True)
"""
)


def command(code: str, *flags: str) -> list[str]:
    return [sys.executable, "-I", "-S", "-B", *flags, "-c", code]


def child_environment(stage_env: Mapping[str, str], *path: Path) -> dict[str, str]:
    """What Lambda's process environment holds that matters here: the stage's variables, the function's name
    and task root as the runtime sets them, no PYTHON*; `path`: the directories before the standard library
    on sys.path, in order."""
    lambda_env = {"AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME, "LAMBDA_TASK_ROOT": str(path[0]), "LANG": "C.UTF-8"}
    return {**stage_env, **lambda_env, PATH_VARIABLE: os.pathsep.join(map(str, path))}


def unpack(zip_path: Path, destination: Path, bytecode: bool = True) -> Path:
    """The zip extracted into `destination`, read-only; `bytecode=False`: without its `__pycache__`."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(destination)
    if not bytecode:
        for cache in sorted(destination.rglob("__pycache__"), reverse=True):
            shutil.rmtree(cache)
    _read_only(destination)
    return destination


def runtime_libraries() -> Path:
    """boto3 and its dependencies as the runtime provides them: copied from this interpreter's site-packages
    (their installed files only), compiled, read-only. Copied once per set of versions and Python, into
    `.local/runtime-libraries/`, then shared: copying botocore's 1,000 data files took half of a local smoke
    test's CPU. A copy appears there whole or not at all (built aside, then renamed)."""
    distributions = _closure(RUNTIME_DISTRIBUTION)
    versions = sorted(f"{d.metadata['Name'].lower()}=={d.version}" for d in distributions)
    key = hashlib.sha256(json.dumps([sys.version, *versions]).encode()).hexdigest()[:16]
    copy = RUNTIME_CACHE / key
    if copy.is_dir():
        return copy
    RUNTIME_CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{key}.building-", dir=RUNTIME_CACHE))
    try:
        _copy_compiled(distributions, building)
        with contextlib.suppress(OSError):  # another process finished the same copy first
            building.rename(copy)
    finally:
        if building.exists():  # not renamed: that other copy is used, or this one failed and is not left half made
            writable(building)
            shutil.rmtree(building)
    return copy


def _copy_compiled(distributions: list[importlib.metadata.Distribution], destination: Path) -> None:
    import compileall

    for distribution in distributions:
        for file in distribution.files or []:
            source = Path(str(distribution.locate_file(file)))
            if "__pycache__" in file.parts or ".." in file.parts or not source.is_file():
                continue
            target = destination / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    compileall.compile_dir(destination, quiet=2, workers=0)
    _read_only(destination)


def _closure(name: str) -> list[importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [name]
    while pending:
        distribution = importlib.metadata.distribution(pending.pop())
        key = distribution.metadata["Name"].lower()
        if key in found:
            continue
        found[key] = distribution
        for requirement in distribution.requires or []:
            if "extra ==" not in requirement:
                pending.append(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
    return list(found.values())


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable(root: Path) -> None:
    """Undoes `_read_only`, so that the copy can be deleted by a user other than root."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def bytecode_files(root: Path) -> set[Path]:
    return set(root.rglob("*.pyc"))


def proxy_event(
    method: str,
    resource: str,
    headers: Mapping[str, str],
    body: str | None,
    path_parameters: Mapping[str, str] | None = None,
    query: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The event API Gateway's REST API sends a Lambda proxy integration (payload format 1.0), as documented
    and as chalice's own local server imitates it (chalice/local.py, LambdaEventConverter)."""
    path = resource
    for name, value in (path_parameters or {}).items():
        path = path.replace(f"{{{name}}}", value)
    now = time.time()
    all_headers = {
        "Host": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "unpacked-function/1.0",
        "X-Amzn-Trace-Id": f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]}",
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **headers,
    }
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {name: [value] for name, value in all_headers.items()},
        "queryStringParameters": {name: values[-1] for name, values in query.items()} if query else None,
        "multiValueQueryStringParameters": dict(query) if query else None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{API_STAGE}{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": API_STAGE,
            "domainPrefix": API_ID,
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {
                "sourceIp": "127.0.0.1",
                "userAgent": all_headers["User-Agent"],
                **dict.fromkeys(IDENTITY_UNSET),
            },
            "domainName": all_headers["Host"],
            "apiId": API_ID,
        },
        "body": body,
        "isBase64Encoded": False,
    }


class FunctionError(RuntimeError):
    pass


class Function:
    """One execution environment of the unpacked function: invocations go to it one at a time."""

    def __init__(self, package: Path, runtime: Path, stage_env: Mapping[str, str], log: BinaryIO) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, running the package's handler
            command(_SERVE),
            cwd=package,
            env=child_environment(stage_env, package, runtime),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        self._log = log
        self._lock = threading.Lock()

    def invoke(self, event: Mapping[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps(event).encode() + b"\n")
            self._process.stdin.flush()
            for raw in self._process.stdout:
                line = raw.decode("utf-8", "replace")
                if not line.startswith(MARKER):
                    self._log.write(raw)  # the app's own log lines
                    continue
                result = json.loads(line[len(MARKER) :])
                if result["foreign"]:
                    raise FunctionError(f"the function loaded modules from outside its package: {result['foreign']}")
                response: dict[str, Any] = result["response"]
                return response
        raise FunctionError(f"the function exited ({self._process.wait()}); its stderr is in {self._log.name}")

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


def template_routes(template: Mapping[str, Any]) -> list[str]:
    """The API's resource paths, from the Swagger document of the packaged template."""
    api = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    return list(api["paths"])


@contextlib.contextmanager
def serve(function: Function, routes: list[str]) -> Iterator[str]:
    """An HTTP front on 127.0.0.1 that turns requests into proxy events for `function`; yields its URL."""
    from chalice.local import RouteMatcher  # the route matching chalice's local server shares with API Gateway

    matcher = RouteMatcher(routes)

    class Front(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            try:
                matched = matcher.match_route(self.path)
            except ValueError:
                self._answer(403, {"Content-Type": "application/json"}, '{"message":"Missing Authentication Token"}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else None
            headers = dict(self.headers.items())
            event = proxy_event(self.command, matched.route, headers, body, matched.captured, matched.query_params)
            response = function.invoke(event)
            self._answer(response["statusCode"], response.get("headers") or {}, response.get("body") or "")

        def _answer(self, status: int, headers: Mapping[str, str], body: str) -> None:
            data = body.encode()
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815 - the names http.server calls

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
