"""Fixtures: a real local DynamoDB endpoint (moto server over HTTP), a fresh table per test, and the
Chalice test client on a generated stage whose environment points at them."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from chalice.test import Client

from chalicelib import container, vod_signature
from chalicelib.auth import load_or_create_local_key, mint_local_token
from chalicelib.credentials import SECRET_KEYS
from chalicelib.identity import LOCAL_ISSUER
from chalicelib.settings import Settings
from chalicelib.storage import Storage
from devstack.dynamodb import DynamoDBServer
from devstack.health import NotHealthy, wait_until_healthy
from devstack.table import ensure_table, local_client
from devstack.token import local_stage_env
from tests import vod_payloads as vod
from tests.fault_proxy import FaultProxy
from vodlocal import Config, Handle, start


def pytest_configure(config: pytest.Config) -> None:
    """A run started as a background job of a script (`make test &`, nohup) inherits SIGINT ignored, as does every
    process it starts: the tests that press Ctrl-C (tests/test_vodup.py in this process, tests/test_vodup_cli.py in
    vodup's) then wait for an interrupt that never comes, the first one for ever. Handle it as in a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    with DynamoDBServer() as server:
        yield server.endpoint_url


@pytest.fixture
def dynamodb(dynamodb_endpoint: str) -> Any:
    return local_client(dynamodb_endpoint)


@pytest.fixture
def table_name(dynamodb: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    ensure_table(dynamodb, name)
    return name


@pytest.fixture
def storage(dynamodb: Any, table_name: str) -> Storage:
    return Storage.over(dynamodb, table_name)


@pytest.fixture
def proxy(dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault-injecting proxy to the local DynamoDB endpoint (tests/fault_proxy.py), forwarding everything
    until a test sets its plan."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "local")
    faults = FaultProxy(dynamodb_endpoint, lambda _number, _operation: None)
    yield faults
    faults.stop()


@pytest.fixture
def stage_env(dynamodb_endpoint: str, table_name: str, tmp_path: Path) -> dict[str, str]:
    env = dict(local_stage_env())
    env.update(
        TABLE_NAME=table_name,
        DYNAMODB_ENDPOINT_URL=dynamodb_endpoint,
        LOCAL_JWT_KEY_FILE=str(tmp_path / "jwt-key.pem"),
    )
    return env


def patient_services(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> container.Services:
    """The app's services on the stage `env`, for a test of many racing requests. The local DynamoDB answers one
    request at a time, in the test's process, beside the racing threads: on a loaded machine the last in its queue
    waits seconds, past production's 1.2 s read timeout (chalicelib/settings.py), and is a 503 that DynamoDB, serving
    them in parallel, would not give. What such a test proves (atomicity) does not depend on the timeouts, so these
    services wait 10 s a call, 25 s a request; the tests of the timeouts (test_storage_stall.py) keep production's."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # botocore reads credentials from the process
        monkeypatch.setenv(name, env[name])
    patient = {**env, "DYNAMODB_READ_TIMEOUT_SECONDS": "10", "REQUEST_DEADLINE_SECONDS": "25"}
    return container.build_services(Settings.from_env(patient), patient)


def with_policy(env: dict[str, str], **default_overrides: Any) -> None:
    policy = json.loads(env["UPLOAD_POLICY"])
    policy["default"].update(default_overrides)
    env["UPLOAD_POLICY"] = json.dumps(policy)


ApiFactory = Callable[[], Any]


@pytest.fixture
def api_factory(stage_env: dict[str, str], tmp_path: Path) -> Iterator[ApiFactory]:
    """Builds a test client from `stage_env` as it is when called (tests may tweak it first)."""
    import app as application

    clients: list[Client] = []

    def make() -> Any:
        project = tmp_path / f"project-{len(clients)}"
        (project / ".chalice").mkdir(parents=True)
        config = {"version": "2.0", "app_name": "test", "stages": {"test": {"environment_variables": stage_env}}}
        (project / ".chalice" / "config.json").write_text(json.dumps(config))
        container.reset()
        client = Client(application.app, stage_name="test", project_dir=str(project))
        clients.append(client)
        return client.http

    yield make
    container.reset()


@pytest.fixture
def api(api_factory: ApiFactory) -> Any:
    return api_factory()


@pytest.fixture
def services(stage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The stage's services, built outside any request (as the scheduled functions and the race tests use them)."""
    from chalicelib.settings import Settings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # botocore reads credentials from the process
        monkeypatch.setenv(name, stage_env[name])
    yield container.build_services(Settings.from_env(stage_env), stage_env)
    container.reset()


TokenFactory = Callable[..., str]


@pytest.fixture
def token_for(stage_env: dict[str, str]) -> TokenFactory:
    def mint(user: str, groups: list[str] | None = None, ttl: int = 600) -> str:
        key = load_or_create_local_key(stage_env["LOCAL_JWT_KEY_FILE"])
        return mint_local_token(key, LOCAL_ISSUER, user, groups, ttl)

    return mint


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def app_project_copy(project: Path, stage_env: dict[str, str]) -> Path:
    """A copy of the app (app.py, chalicelib/) whose only stage, `test`, has this test's environment."""
    project.mkdir()
    shutil.copy(ROOT / "app.py", project / "app.py")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    config = {"version": "2.0", "app_name": "copy", "stages": {"test": {"environment_variables": stage_env}}}
    (project / ".chalice" / "config.json").write_text(json.dumps(config))
    return project


@pytest.fixture
def vod_port() -> int:
    """Where the `vodlocal` fixture listens: the API is told (VOD_API_ENDPOINT) before either starts."""
    return free_port()


@pytest.fixture
def chalice_local(stage_env: dict[str, str], tmp_path: Path, vod_port: int) -> Iterator[str]:
    """A copy of the app served on a free port with this test's stage environment, by `devstack.api`: what
    `make dev` runs, i.e. `chalice local --no-autoreload` with a deeper listen backlog. Its VOD API 3.0 is
    vodlocal's on `vod_port` unless the test named another."""
    stage_env.setdefault("VOD_API_ENDPOINT", f"http://127.0.0.1:{vod_port}")
    project = app_project_copy(tmp_path / "project", stage_env)
    port = free_port()
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "devstack.api", "--project-dir", str(project), "--stage", "test", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(f"{base}/health", process, timeout=30, name="the local API (devstack.api)")
        except NotHealthy as error:
            pytest.fail(str(error))
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def vodlocal_for(api_url: str, stage_env: dict[str, str], data_dir: Path, port: int = 0, **changes: Any) -> Config:
    """vodlocal (in-process, on `port`, by default any free one) pushing events to the API at `api_url` with the
    stage's keys."""
    return Config(
        port=port,
        data_dir=data_dir,
        secrets={stage_env["VOD_SECRET_ID"]: stage_env["VOD_SECRET_KEY"]},
        callback_url=f"{api_url}/vod/events/{stage_env['VOD_CALLBACK_TOKEN']}",
        sign_key=stage_env["VOD_SIGN_KEY"],
        **changes,
    )


def call(
    method: str, url: str, body: Any = None, token: str | None = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def vodlocal(chalice_local: str, stage_env: dict[str, str], tmp_path: Path, vod_port: int) -> Iterator[Handle]:
    """The whole local stack: `chalice local`, the local DynamoDB endpoint and vodlocal wired to its callback,
    and serving its API 3.0 where the API expects it."""
    handle = start(vodlocal_for(chalice_local, stage_env, tmp_path / "vodlocal", port=vod_port))
    yield handle
    handle.stop()


def wait_for_video(api: str, token: str, file_id: str, timeout: float = 15) -> dict[str, Any]:
    """`GET /videos/{fileId}` once the pushed NewFileUpload has attributed it to the token's user."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = call("GET", f"{api}/videos/{file_id}", token=token)
        if status == 200:
            return dict(body)
        time.sleep(0.1)
    pytest.fail(f"video {file_id} was never attributed")


# The files that take minutes, longest first, then the rest in pytest's order: `make test` gives each file to one
# pytest-xdist worker in collection order (--dist loadfile --no-loadscope-reorder), so the long ones start at once
# and the short ones fill the other workers around them.
SLOWEST_FILES = (
    "test_fault_injection.py",
    "test_rehearse.py",
    "test_deploy_role.py",
    "test_browser.py",
    "test_deploy.py",
    "test_pull_cadence.py",
    "test_vodup_cli.py",
    "test_devstack_shutdown.py",
    "test_api_events.py",
    "test_vodup.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: each file's tests keep their order


# Files whose tests each take minutes and share no fixture wider than a test's: a worker for each test.
ONE_WORKER_PER_TEST = ("tests/test_fault_injection.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` (a file's tests on one worker, in order), but ONE_WORKER_PER_TEST's tests each alone."""
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in ONE_WORKER_PER_TEST else path

    return FileScheduling(config, log) if config.getvalue("dist") == "loadfile" else None


# Every response of the app that a test gets through chalice's test client is checked against the
# OpenAPI document (tests/openapi_recorder.py); a mismatch fails the test that got it.
pytest_plugins = ["tests.openapi_recorder"]


# -- the API and the callback, as a user and as VOD --------------------------------------------------


class Stack:
    def __init__(self, api: Any, env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table: str) -> None:
        self.api, self.env, self.token_for, self.dynamodb, self.table = api, env, token_for, dynamodb, table

    def create_upload(self, user: str = "alice", body: dict[str, Any] | None = None) -> tuple[str, str]:
        response = self.api.post("/uploads", headers=bearer(self.token_for(user)), body=json.dumps(body or {}).encode())
        assert response.status_code == 201, response.body
        params = vod_signature.verify(response.json_body["signature"], self.env["VOD_SECRET_KEY"]).params
        assert params.options.sourceContext is not None
        return response.json_body["uploadId"], params.options.sourceContext

    def deliver(
        self,
        body: dict[str, Any] | bytes,
        *,
        token: str | None = None,
        sign: bool = True,
        content_type: str = "text/plain",
    ) -> Any:
        if isinstance(body, dict):
            body = json.dumps(vod.signed(body, self.env["VOD_SIGN_KEY"]) if sign else body).encode()
        path = f"/vod/events/{token if token is not None else self.env['VOD_CALLBACK_TOKEN']}"
        return self.api.post(path, headers={"Content-Type": content_type}, body=body)

    def videos(self, user: str = "alice") -> list[dict[str, Any]]:
        response = self.api.get("/videos", headers=bearer(self.token_for(user)))
        assert response.status_code == 200, response.body
        return list(response.json_body["videos"])

    def items(self) -> list[dict[str, Any]]:
        return list(self.dynamodb.scan(TableName=self.table)["Items"])


@pytest.fixture
def stack(api: Any, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str) -> Stack:
    return Stack(api, stage_env, token_for, dynamodb, table_name)


# -- VOD in PULL mode -----------------------------------------------------------------------------


def start_pull_vodlocal(
    stage_env: dict[str, str], data_dir: Path, confirm_window: float, pull_wait: float = 0.3, **config: Any
) -> Handle:
    """vodlocal in PULL mode, knowing the stage's VOD key pair, and the stage set to consume from it; `config`:
    other `vodlocal.Config` fields. `pull_wait`: how long an empty PullEvents holds (VOD's is 5 s)."""
    handle = start(
        Config(
            port=0,
            data_dir=data_dir,
            secrets={stage_env["VOD_SECRET_ID"]: stage_env["VOD_SECRET_KEY"]},
            mode="PULL",
            pull_wait=pull_wait,
            confirm_window=confirm_window,
            procedure_delay=0.2,
            **config,
        )
    )
    stage_env.update(EVENT_MODE="pull", VOD_API_ENDPOINT=handle.url, PULL_CONFIRM_WINDOW_SECONDS=str(confirm_window))
    return handle


@pytest.fixture
def pull_vod(
    request: pytest.FixtureRequest, stage_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Handle]:
    """Parametrize it indirectly with a dict of `vodlocal.Config` fields to change the emulator's."""
    overrides = getattr(request, "param", {})
    handle = start_pull_vodlocal(stage_env, tmp_path / "vodlocal", confirm_window=1.0, **overrides)
    stage_env["PULL_MAX_FAILURES"] = "2"
    for name, value in stage_env.items():  # the consumer runs outside any request: as in its own Lambda
        monkeypatch.setenv(name, value)
    container.reset()
    yield handle
    handle.stop()


class KeyRotation:
    """The stage's VOD key pair in a Secrets Manager secret (moto's server), re-read at every use
    (SECRETS_CACHE_SECONDS=0), and the operator's rotation of it: VOD then accepts only the new pair."""

    NEW_SECRET_ID = "AKIDrotatedKeyPair000000000000000000"
    NEW_SECRET_KEY = "rotated-vod-secret-key"

    def __init__(self, vod: Handle, stage_env: dict[str, str], endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self._vod = vod
        self._client = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint,  # moto's server answers every service
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        self._name = f"vod-upload/rotation-{uuid.uuid4().hex[:8]}"
        self._secret = {key: stage_env[key] for key in (*SECRET_KEYS, "VOD_SIGN_KEY")}
        self._client.create_secret(Name=self._name, SecretString=json.dumps(self._secret))
        stage_env.update(
            SECRETS_SOURCE="secretsmanager",
            SECRET_NAME=self._name,
            SECRETS_CACHE_SECONDS="0",
            AWS_ENDPOINT_URL_SECRETS_MANAGER=endpoint,
        )
        for variable, value in stage_env.items():
            monkeypatch.setenv(variable, value)
        container.reset()

    def rotate(self) -> None:
        accepted = cast(dict[str, str], self._vod.app.config.secrets)
        accepted.clear()
        accepted[self.NEW_SECRET_ID] = self.NEW_SECRET_KEY
        self._secret.update(VOD_SECRET_ID=self.NEW_SECRET_ID, VOD_SECRET_KEY=self.NEW_SECRET_KEY)
        self._client.put_secret_value(SecretId=self._name, SecretString=json.dumps(self._secret))


@pytest.fixture
def key_rotation(
    pull_vod: Handle, stage_env: dict[str, str], dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> KeyRotation:
    return KeyRotation(pull_vod, stage_env, dynamodb_endpoint, monkeypatch)
