"""`make rehearse`: the real deploy script, end to end, against local emulators.

No AWS account or VOD account is reachable here, so the rehearsal points the unmodified deploy
(deploy/deploy.py) at:
  - moto's server, extended by deploy/rehearsal_moto.py, for CloudFormation, S3, Secrets Manager, IAM, STS,
    Lambda, API Gateway and Cognito (AWS_ENDPOINT_URL);
  - vodlocal for VOD's ModifyEventConfig/DescribeEventConfig (VOD_API_ENDPOINT), with a key pair it
    knows, given to the deploy the way an operator's first deploy gives it.

It deploys three times: once; again from an empty build directory as a fresh CI checkout would (only the
state bucket remembers the first), checking that the second updated the same API and made no other; and,
after a video was written and `make destroy` ran, once more, checking the video is read back (the data stack
keeps the table), checking that `make destroy` removed the stage's event bus and the deploy made it again with its
dead-letter queue and the pipe from the table's stream to it (moto stores the pipe; nothing runs it: the
local stack's devstack/events.py plays its part). It also checks that the API carries the gateway responses the
deploy defines (deploy/gateway_responses.py): chalice really sends them in its document; moto applying them is
deploy/rehearsal_moto.py's model of what AWS does with them.

What cannot run here is API Gateway and Lambda executing the function (moto runs Lambda only in Docker and
has no execute-api endpoint). The smoke test therefore runs the deployed zip (the one whose CodeSha256
(emulated) Lambda reports) the way Lambda runs it: unpacked read-only, its handler invoked with API Gateway
proxy events in a `python -I -S -B` child whose path is the package and the runtime's boto3, with the
environment read back from Lambda, AWS calls going to moto and a token of a user of the pool the stack made
(deploy/unpacked.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.events import UploadedFile
from chalicelib.storage import Storage
from chalicelib.videos import Video
from deploy import bootstrap, gateway_responses, package, stack, stage, unpacked, vod_notify
from deploy import deploy as deployer

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
# Keys only vodlocal knows; the deploy stores them in the rehearsal stack's secret.
VOD_KEYS = {"VOD_SECRET_ID": "AKIDrehearsalDeployOnly000000000000", "VOD_SECRET_KEY": "rehearsal-vod-secret-key"}
# A VOD FileId (digits) for the video the rehearsal writes before `make destroy` and reads back after.
REHEARSAL_FILE_ID = "5285890800000001"
REPOSITORY = "example-org/vod-upload-backend"  # whose deploy jobs the rehearsal's deploy roles trust
WORK_DIR = ROOT / ".local" / "rehearsal"  # build directories and logs of the last `make rehearse`


@dataclass(frozen=True)
class Rehearsal:
    first: deployer.Outcome
    second: deployer.Outcome
    # After `make destroy` (the table kept) and another deploy: the video written before, read back.
    after_destroy: deployer.Outcome
    video_written: Video
    video_read: Video | None
    rest_apis: int
    event_config: vod_notify.EventConfig
    # Gateway response types the deploy defines, and those of them the API carries as defined.
    gateway_responses_defined: tuple[str, ...]
    gateway_responses_carried: tuple[str, ...]
    # What delivers domain events (infra/events.json) after the last deploy, and whether destroy removed the bus.
    delivery: EventDelivery
    bus_removed_by_destroy: bool


@dataclass(frozen=True)
class EventDelivery:
    bus_arn: str | None
    dead_letter_queue: str | None
    pipe_source: str | None  # the pipe's source: the table's stream, when it is right
    pipe_target: str | None  # the bus, when it is right
    table_stream: str | None

    @property
    def wired(self) -> bool:
        return (
            self.bus_arn is not None
            and self.dead_letter_queue is not None
            and self.pipe_source is not None
            and self.pipe_source == self.table_stream
            and self.pipe_target == self.bus_arn
        )


def event_delivery(aws: Any, stage_name: str) -> EventDelivery:
    """The stage's bus, dead-letter queue and outbox pipe as the emulated AWS reports them (None: missing)."""
    app, name = stack.APP_NAME, stack.table_name(stage_name)
    bus = _or_none(lambda: aws("events").describe_event_bus(Name=f"{app}-{stage_name}")["Arn"])
    queue = _or_none(lambda: aws("sqs").get_queue_url(QueueName=f"{app}-{stage_name}-outbox-dlq")["QueueUrl"])
    pipe = _or_none(lambda: aws("pipes").describe_pipe(Name=f"{app}-{stage_name}-outbox")) or {}
    stream = _or_none(lambda: aws("dynamodb").describe_table(TableName=name)["Table"].get("LatestStreamArn"))
    return EventDelivery(bus, queue, pipe.get("Source"), pipe.get("Target"), stream)


def _or_none(read: Any) -> Any:
    try:
        return read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in NOT_FOUND:
            return None
        raise


NOT_FOUND = ("ResourceNotFoundException", "NotFoundException", "AWS.SimpleQueueService.NonExistentQueue")


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
    """A smoke target: the zip (emulated) Lambda holds, unpacked read-only and run as Lambda runs it
    (deploy/unpacked.py) with the function's environment, behind an HTTP front that sends API Gateway proxy
    events to its handler; AWS calls go to moto."""

    @contextlib.contextmanager
    def target(deployed: stage.Deployed, project: Path, stage_name: str) -> Iterator[str]:
        function = deployer.aws_factory(environ)("lambda").get_function_configuration(
            FunctionName=deployed.function_arn
        )
        zip_path = package.zip_of(project)
        if function["CodeSha256"] != package.sha256_of(zip_path):
            raise deployer.DeployError(f"the function's code is not {zip_path}: nothing local to smoke-test")
        aws = {name: value for name, value in environ.items() if name.startswith("AWS_")}
        work = Path(tempfile.mkdtemp(prefix="function-", dir=project.parent))
        code = unpacked.unpack(zip_path, work / "task")
        runtime = unpacked.runtime_libraries()
        routes = unpacked.template_routes(json.loads(package.template_of(project).read_text()))
        with (project.parent / "function.log").open("wb") as log:
            running = unpacked.Function(code, runtime, {**function["Environment"]["Variables"], **aws}, log)
            try:
                with unpacked.serve(running, routes) as base:
                    yield base
            finally:
                running.stop()
                unpacked.writable(work)
                shutil.rmtree(work)

    return target


def rehearse(stage_name: str, work_dir: Path, report: Path | None = None) -> Rehearsal:
    with emulators(work_dir) as environ:
        smoke_target = served_locally(environ)
        aws = deployer.aws_factory(environ)
        storage = Storage.over(aws("dynamodb"), stack.table_name(stage_name))

        def deploy(run: str) -> deployer.Outcome:
            build_root = work_dir / f"build-{run}"
            shutil.rmtree(build_root, ignore_errors=True)
            return deployer.deploy(stage_name, environ, report, smoke_target=smoke_target, build_root=build_root)

        first, second = deploy("first"), deploy("fresh-checkout")
        video = write_video(storage, _an_intent_id(aws("dynamodb"), stack.table_name(stage_name)))
        for line in deployer.destroy(stage_name, environ, work_dir / "build-destroy"):
            deployer.say(line)
        bus_removed = event_delivery(aws, stage_name).bus_arn is None
        after_destroy = deploy("after-destroy")
        video_read = storage.videos.get_video(video.file_id)
        rest_apis = len(aws("apigateway").get_rest_apis()["items"])
        vod = vod_notify.client(VOD_KEYS["VOD_SECRET_ID"], VOD_KEYS["VOD_SECRET_KEY"], environ)
        project = work_dir / "build-after-destroy" / stage_name / "project"
        defined = gateway_responses.responses(gateway_responses.stage_origins(project, stage_name))
        carried = {
            item["responseType"]: item
            for item in aws("apigateway").get_gateway_responses(restApiId=after_destroy.rest_api_id)["items"]
        }
        as_defined = tuple(kind for kind, wanted in defined.items() if _carries(carried.get(kind), wanted))
        return Rehearsal(
            first,
            second,
            after_destroy,
            video,
            video_read,
            rest_apis,
            vod_notify.describe(vod),
            tuple(defined),
            as_defined,
            event_delivery(aws, stage_name),
            bus_removed,
        )


def _an_intent_id(dynamodb: Any, table: str) -> str:
    """An upload intent the smoke tests created (the rehearsal may scan; the app never does)."""
    items = dynamodb.scan(
        TableName=table, FilterExpression="sk = :intent", ExpressionAttributeValues={":intent": {"S": "UPLOAD"}}
    )["Items"]
    if not items:
        raise RuntimeError("the smoke tests left no upload intent to attribute a video to")
    return str(items[0]["pk"]["S"]).removeprefix("UPLOAD#")


def write_video(storage: Storage, upload_id: str) -> Video:
    """The intent's upload attributed as VOD's NewFileUpload attributes it: the video record written and the
    intent completed, by the repository's own transaction."""
    intent = storage.intents.get_intent(upload_id)
    if intent is None:
        raise RuntimeError(f"upload intent {upload_id} is not in the table")
    now = int(time.time())
    video = Video.attribute(intent, UploadedFile(REHEARSAL_FILE_ID, source_context=None), now)
    storage.videos.complete_upload(intent, video, now)
    return video


def _carries(carried: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    return carried is not None and all(carried.get(field) == value for field, value in wanted.items())


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
    kept = result.video_read == result.video_written
    print(f"rehearsal: API URL {result.after_destroy.api_url}")
    print(f"rehearsal: VOD event config read back from vodlocal: {vod_notify.summary(result.event_config)}")
    print(
        f"rehearsal: second deploy from a fresh build directory {'updated the same' if same else 'made ANOTHER'} "
        f"API ({result.second.rest_api_id})"
    )
    defined, carried = result.gateway_responses_defined, result.gateway_responses_carried
    print(
        f"rehearsal: gateway responses on the API: {len(carried)} of {len(defined)} as "
        f"defined" + ("" if carried == defined else f" (missing or different: {sorted(set(defined) - set(carried))})")
    )
    smoke_passed = result.first.smoke_passed and result.second.smoke_passed
    print(
        f"rehearsal: destroy, then deploy again: video {result.video_written.file_id} "
        + ("read back as written" if kept else f"NOT read back (found {result.video_read})")
        + f"; REST APIs in the account: {result.rest_apis}"
    )
    smoke_passed = smoke_passed and result.after_destroy.smoke_passed
    delivery = result.delivery
    print(
        f"rehearsal: domain events: bus {delivery.bus_arn or 'MISSING'}, dead-letter queue "
        f"{'present' if delivery.dead_letter_queue else 'MISSING'}, pipe from the table's stream "
        f"{'to the bus' if delivery.wired else 'NOT wired to the bus'}; destroy "
        f"{'removed' if result.bus_removed_by_destroy else 'did NOT remove'} the bus"
    )
    events_ok = delivery.wired and result.bus_removed_by_destroy
    passed = smoke_passed and same and result.rest_apis == 1 and carried == defined and kept and events_ok
    print(f"rehearsal: {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
