"""PULL mode: the consumer pulls VOD's queued events from vodlocal through the official SDK, applies them
through the event service against the local DynamoDB, and confirms only what is durably applied."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib import container
from chalicelib.pull_consumer import PullConsumer, PulledEvent, QueueUnavailable
from chalicelib.vod_api import VodEventQueue
from tests.conftest import ApiFactory, TokenFactory, bearer
from tests.vodlocal.conftest import apply_and_store, ugc
from vodlocal import Handle

CONSUMER_SECONDS = 8.0  # one pull and its confirm fit, with the emulator's short long-poll


Post = Callable[[str, bytes], dict[str, Any]]  # (path, body) -> the JSON answer


def upload_through(vod: Handle, post: Post, payload: bytes = b"pulled-video") -> str:
    """What a client SDK does with our API (`post`, as a user): a signature to apply, another to commit.
    Returns the upload id."""
    return commit_through(vod, post, payload)[0]


def commit_through(vod: Handle, post: Post, payload: bytes = b"pulled-video") -> tuple[str, str]:
    """`upload_through`, returning the upload id and the FileId the Commit answered."""
    created = post("/uploads", b'{"title": "pulled"}')
    data = apply_and_store(vod, created["signature"], payload)
    renewed = post(f"/uploads/{created['uploadId']}/signature", b"")
    commit = ugc(vod, "CommitUploadUGC", {"signature": renewed["signature"], "vodSessionKey": data["vodSessionKey"]})
    assert commit["code"] == 0, commit
    return created["uploadId"], commit["data"]["fileId"]


def as_user(api: Any, token: str) -> Post:
    """`post` through the chalice test client."""
    return lambda path, body: dict(api.post(path, headers=bearer(token), body=body).json_body)


def attributed_file(api: Any, token: str, upload_id: str) -> str | None:
    body = api.get(f"/uploads/{upload_id}", headers=bearer(token)).json_body
    return body["video"]["fileId"] if body["status"] == "completed" and body["video"] else None


@dataclass
class FaultyQueue:
    """The real queue (vodlocal through the SDK) with faults VOD's side cannot be asked for: confirms that
    are lost, and an event that can never apply."""

    real: Any
    lose_confirms: int = 0
    poison: list[PulledEvent] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)

    def pull(self) -> list[PulledEvent]:
        return self.real.pull() + self.poison

    def confirm(self, handles: list[str]) -> None:
        if self.lose_confirms:
            self.lose_confirms -= 1
            raise QueueUnavailable("the consumer crashed between its writes and ConfirmEvents")
        self.confirmed += handles
        self.poison = [event for event in self.poison if event.handle not in handles]  # VOD forgets it
        real = [handle for handle in handles if not handle.startswith("poison-")]
        if real:
            self.real.confirm(real)


def real_queue(stage_env: dict[str, str]) -> VodEventQueue:
    return VodEventQueue(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], stage_env["VOD_API_ENDPOINT"], None)


def consumer(queue: Any) -> PullConsumer:
    services = container.services()
    return PullConsumer(queue, services.events, services.repository, services.settings.pull_max_failures)


def test_pulled_uploads_are_attributed_once_and_confirmed(
    pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory
) -> None:
    api = api_factory()
    tokens = {user: token_for(user) for user in ("alice", "bob")}
    uploads = {user: upload_through(pull_vod, as_user(api, token)) for user, token in tokens.items()}
    report = container.services().pull_consumer.run(CONSUMER_SECONDS)
    assert report.outcomes.get("attributed") == 2, report
    for user, upload_id in uploads.items():
        assert attributed_file(api, tokens[user], upload_id) is not None
    assert container.services().pull_consumer.run(CONSUMER_SECONDS).pulled == 0  # confirmed: not delivered again


def test_a_crash_before_the_confirm_redelivers_and_the_redelivery_applies_nothing_twice(
    pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    api = api_factory()
    token = token_for("alice")
    upload_id = upload_through(pull_vod, as_user(api, token))
    queue = FaultyQueue(real_queue(stage_env), lose_confirms=1)
    report = consumer(queue).run(CONSUMER_SECONDS)
    # Applied, its confirm lost; delivered again after vodlocal's 1 s window, a duplicate, then confirmed.
    assert report.outcomes == {"attributed": 1, "duplicate": 1} and report.unconfirmed == 1, report
    assert len(queue.confirmed) == 1
    file_id = attributed_file(api, token, upload_id)
    assert file_id is not None
    videos = api.get("/videos", headers=bearer(token)).json_body["videos"]
    assert [video["fileId"] for video in videos] == [file_id]
    assert consumer(queue).run(CONSUMER_SECONDS).pulled == 0


def test_an_event_that_never_applies_is_parked_with_its_body_and_confirmed(
    pull_vod: Handle, stage_env: dict[str, str]
) -> None:
    body = json.dumps({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": ""}}).encode()
    queue = FaultyQueue(real_queue(stage_env), poison=[PulledEvent("poison-1", body)])
    report = consumer(queue).run(CONSUMER_SECONDS)
    # Failures are counted per event until the stage's limit (2); then it is parked and confirmed.
    assert (report.failed, report.parked, queue.confirmed) == (1, 1, ["poison-1"]), report
    [parked] = container.services().repository.dead_letters()
    assert parked["failures"] == 2 and parked["eventType"] == "NewFileUpload" and parked["body"] == body.decode()
    assert parked["lastError"] == "InvalidRequest: FileId: String should have at least 1 character"
