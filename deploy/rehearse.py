"""`make rehearse`: the real deploy script, end to end, against local emulators.

No AWS account or VOD account is reachable here, so the rehearsal points the unmodified deploy
(deploy/deploy.py) at:
  - moto's server, extended by deploy/rehearsal_moto.py, for CloudFormation, S3, Secrets Manager, IAM, STS,
    Lambda, API Gateway and Cognito (AWS_ENDPOINT_URL);
  - vodlocal for VOD's ModifyEventConfig/DescribeEventConfig (VOD_API_ENDPOINT), with a key pair it
    knows, given to the deploy the way an operator's first deploy gives it.

It deploys twice: once, and again from an empty build directory as a fresh CI checkout would (only the
state bucket remembers the first), and checks that the second updated the same API and made no other.

What cannot run here is API Gateway and Lambda executing the function (moto runs Lambda only in Docker and
has no execute-api endpoint). The smoke test therefore calls the deployed function's code and its
environment as read back from (emulated) Lambda, served locally by devstack.api, with AWS calls going to
moto and a token of a user of the pool the stack made.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy import bootstrap, stage, vod_notify
from deploy import deploy as deployer
from devstack.health import wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# Keys only vodlocal knows; the deploy stores them in the rehearsal stack's secret.
VOD_KEYS = {"VOD_SECRET_ID": "AKIDrehearsalDeployOnly000000000000", "VOD_SECRET_KEY": "rehearsal-vod-secret-key"}
START_TIMEOUT_SECONDS = 60
REPOSITORY = "example-org/vod-upload-backend"  # whose deploy jobs the rehearsal's deploy roles trust
WORK_DIR = ROOT / ".local" / "rehearsal"  # build directories and logs of the last `make rehearse`


@dataclass(frozen=True)
class Rehearsal:
    first: deployer.Outcome
    second: deployer.Outcome
    rest_apis: int
    event_config: vod_notify.EventConfig


@contextlib.contextmanager
def emulators(data_dir: Path) -> Iterator[dict[str, str]]:
    """moto and vodlocal on free ports of 127.0.0.1; yields the environment that points the deploy at them."""
    from deploy import rehearsal_moto  # applies the patches before moto's CloudFormation is first used
    from vodlocal import start
    from vodlocal.config import from_args

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    moto, moto_url = rehearsal_moto.serve()
    vod_env = {"VODLOCAL_SECRETS": f"{VOD_KEYS['VOD_SECRET_ID']}:{VOD_KEYS['VOD_SECRET_KEY']}"}
    vodlocal = start(from_args(["--port", "0", "--data-dir", str(data_dir / "vodlocal")], env=vod_env))
    try:
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "rehearsal",
            "AWS_SECRET_ACCESS_KEY": "rehearsal",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "VOD_API_ENDPOINT": vodlocal.url,
            **VOD_KEYS,
        }
        # What an administrator does once per stage of an account, before its first deploy.
        bootstrap.bootstrap_all(environ, REPOSITORY)
        yield environ
    finally:
        vodlocal.stop()
        moto.stop()


def served_locally(environ: Mapping[str, str]) -> deployer.SmokeTarget:
    """A smoke target: the deployed function, as (emulated) Lambda holds it, served by devstack.api."""

    @contextlib.contextmanager
    def target(deployed: stage.Deployed, project: Path, stage_name: str) -> Iterator[str]:
        function = deployer.aws_factory(environ)("lambda").get_function_configuration(
            FunctionName=deployed.function_arn
        )
        port = _free_port()
        log_path = project.parent / f"api-{port}.log"
        overrides = [f"--override={name}={value}" for name, value in function["Environment"]["Variables"].items()]
        command = [sys.executable, "-m", "devstack.api", "--project-dir", str(project), "--stage", stage_name]
        log = log_path.open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own module
            [*command, "--port", str(port), *overrides],
            cwd=ROOT,
            env={**os.environ, **environ},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(
                f"{base}/health",
                process,
                START_TIMEOUT_SECONDS,
                name="the deployed function, served locally",
                log=log_path,
            )
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)
            log.close()

    return target


def rehearse(stage_name: str, work_dir: Path, report: Path | None = None) -> Rehearsal:
    with emulators(work_dir) as environ:
        smoke_target = served_locally(environ)
        outcomes = []
        for run in ("first", "fresh-checkout"):
            build_root = work_dir / f"build-{run}"
            shutil.rmtree(build_root, ignore_errors=True)
            outcomes.append(
                deployer.deploy(stage_name, environ, report, smoke_target=smoke_target, build_root=build_root)
            )
        aws = deployer.aws_factory(environ)
        rest_apis = len(aws("apigateway").get_rest_apis()["items"])
        vod = vod_notify.client(VOD_KEYS["VOD_SECRET_ID"], VOD_KEYS["VOD_SECRET_KEY"], environ)
        return Rehearsal(outcomes[0], outcomes[1], rest_apis, vod_notify.describe(vod))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve() -> None:
    """Run the emulators until SIGTERM/SIGINT, first printing the `export` lines that point a deploy at them:
    `make deploy` and `make destroy` can then be tried by hand, or by a test."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as work_dir, emulators(Path(work_dir)) as environ:
        exports = [f"export {k}={shlex.quote(v)}" for k, v in environ.items() if k not in ("PATH", "HOME")]
        print("\n".join([*exports, "# emulators ready; Ctrl-C stops them"]), flush=True)
        stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--report", type=Path, help="write the smoke results as JSON here")
    parser.add_argument("--serve", action="store_true", help="only run the emulators (see `serve`)")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    try:
        result = rehearse(args.stage, WORK_DIR, args.report)
    except deployer.FAILURES as error:
        print(f"rehearsal: FAILED: {error}", file=sys.stderr)
        return 1
    same = result.first.rest_api_id == result.second.rest_api_id
    print(f"rehearsal: API URL {result.second.api_url}")
    print(f"rehearsal: VOD event config read back from vodlocal: {vod_notify.summary(result.event_config)}")
    print(
        f"rehearsal: second deploy from a fresh build directory {'updated the same' if same else 'made ANOTHER'} "
        f"API ({result.second.rest_api_id}); REST APIs in the account: {result.rest_apis}"
    )
    passed = result.first.smoke_passed and result.second.smoke_passed and same and result.rest_apis == 1
    print(f"rehearsal: {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
