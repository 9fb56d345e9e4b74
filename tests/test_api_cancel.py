"""`DELETE /uploads/{uploadId}`: the owner cancels an upload. Through the Chalice test client against the local
DynamoDB endpoint, with VOD's events pushed to the callback or pulled from vodlocal, and the report of the SDK's
FileId (`POST /uploads/{id}/complete`) asking vodlocal.

The rule for an upload that still arrives (docs/api.md): the first of the cancel and the attribution to be
stored wins. Cancel first: the upload is not attributed, it is kept for review (the sweep deletes it). Upload
first: the cancel is a 409 and the video stays."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import container, vod_signature
from chalicelib.domain_events import UPLOAD_CANCELLED, DomainEvent
from chalicelib.errors import UploadClosed
from chalicelib.identity import Principal
from chalicelib.storage import Storage
from chalicelib.uploads import ClientFields
from tests import vod_payloads as vod
from tests.conftest import ApiFactory, Stack, TokenFactory, bearer, with_policy
from tests.test_api_complete import complete
from tests.test_pull_consumer import CONSUMER_SECONDS, as_user
from tests.test_sweep import GRACE, exists_in_vod, media_at, sweep_ahead
from tests.vodlocal.conftest import apply_and_store, ugc
from vodlocal import Handle


def cancel(stack: Stack, upload_id: str, user: str = "alice") -> Any:
    return stack.api.delete(f"/uploads/{upload_id}", headers=bearer(stack.token_for(user)))


def outbox(stack: Stack) -> list[dict[str, Any]]:
    return [item for item in stack.items() if item["pk"]["S"].startswith("OUTBOX#")]


def reviews(stack: Stack) -> list[dict[str, Any]]:
    return Storage.over(stack.dynamodb, stack.table).reviews.pending()


def cancelled_event_id(upload_id: str) -> str:
    """The id of an upload's `upload.cancelled`: its natural key is the upload id, whenever it happened."""
    return DomainEvent(UPLOAD_CANCELLED, key=upload_id, occurred_at=0).event_id


def upload_status(stack: Stack, upload_id: str, user: str = "alice") -> dict[str, Any]:
    response = stack.api.get(f"/uploads/{upload_id}", headers=bearer(stack.token_for(user)))
    assert response.status_code == 200, response.body
    return dict(response.json_body)


def test_the_owner_cancels_and_the_upload_says_so(stack: Stack) -> None:
    upload_id, _ = stack.create_upload(body={"title": "Oops"})
    response = cancel(stack, upload_id)
    assert response.status_code == 200, response.body
    body = response.json_body
    assert (body["uploadId"], body["status"], body["title"], body["fileId"], body["video"]) == (
        upload_id,
        "cancelled",
        "Oops",
        None,
        None,
    )
    assert isinstance(body["cancelledAt"], int) and body["cancelledAt"] >= body["createdAt"]
    assert upload_status(stack, upload_id) == body


def test_the_cancel_frees_the_open_slot_at_once(
    api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> None:
    with_policy(stage_env, maxOpenIntents=1)
    stack = Stack(api_factory(), stage_env, token_for, dynamodb, table_name)
    upload_id, _ = stack.create_upload()
    full = stack.api.post("/uploads", headers=bearer(token_for("alice")), body=b"")
    assert (full.status_code, full.json_body["limit"]) == (429, "open_intents")
    assert cancel(stack, upload_id).status_code == 200
    assert Storage.over(dynamodb, table_name).intents.open_slots("alice") == []
    stack.create_upload()  # asserts the 201


def test_no_signature_is_issued_for_a_cancelled_upload(stack: Stack) -> None:
    upload_id, _ = stack.create_upload()
    assert cancel(stack, upload_id).status_code == 200
    before = stack.items()
    refused = stack.api.post(f"/uploads/{upload_id}/signature", headers=bearer(stack.token_for("alice")), body=b"")
    assert refused.status_code == 409, refused.body
    assert (refused.json_body["error"], refused.json_body["reason"]) == ("conflict", "cancelled")
    assert "cancelled" in refused.json_body["message"]
    assert stack.items() == before
    assert upload_status(stack, upload_id)["signaturesMinted"] == 1


def test_a_second_cancel_answers_the_same_and_writes_nothing(stack: Stack) -> None:
    upload_id, _ = stack.create_upload()
    first = cancel(stack, upload_id)
    after_first = stack.items()
    second = cancel(stack, upload_id)
    assert (second.status_code, second.json_body) == (first.status_code, first.json_body)
    assert stack.items() == after_first


def test_the_cancel_writes_one_upload_cancelled_event_in_the_outbox(stack: Stack) -> None:
    upload_id, _ = stack.create_upload()
    assert outbox(stack) == []
    cancelled_at = cancel(stack, upload_id).json_body["cancelledAt"]
    cancel(stack, upload_id)
    [row] = outbox(stack)
    identifier = cancelled_event_id(upload_id)
    assert (row["pk"]["S"], row["sk"]["S"], row["eventId"]["S"]) == (f"OUTBOX#{identifier}", "EVENT", identifier)
    fields = {name: row[name]["S"] for name in ("type", "schemaVersion", "owner", "uploadId", "fileId")}
    assert fields == {
        "type": "upload.cancelled",
        "schemaVersion": "1",
        "owner": "alice",
        "uploadId": upload_id,
        "fileId": "",
    }
    assert json.loads(row["data"]["S"]) == {"previousStatus": "open", "signaturesMinted": 1}
    assert row["data"]["S"] == json.dumps(json.loads(row["data"]["S"]), sort_keys=True, separators=(",", ":"))
    assert row["occurredAt"]["S"] == datetime.fromtimestamp(cancelled_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert int(row["ttl"]["N"]) == cancelled_at + 7 * 86_400
    other, _ = stack.create_upload()
    cancel(stack, other)
    assert len(outbox(stack)) == 2  # one per cancelled upload


def test_another_users_or_an_unknown_upload_is_404_as_for_get(stack: Stack) -> None:
    upload_id, _ = stack.create_upload()
    before = stack.items()
    foreign_get = stack.api.get(f"/uploads/{upload_id}", headers=bearer(stack.token_for("mallory")))
    for path_id, user in ((upload_id, "mallory"), ("A" * 22, "alice"), ("not-an-id", "alice")):
        refused = cancel(stack, path_id, user)
        assert (refused.status_code, refused.json_body) == (404, foreign_get.json_body), (path_id, refused.body)
    assert stack.items() == before
    assert upload_status(stack, upload_id)["status"] == "open"


def test_an_expired_upload_can_still_be_cancelled(stack: Stack) -> None:
    """An expired intent may still receive a late upload (PULL keeps events for days): its owner can refuse it."""
    upload_id, _ = stack.create_upload()
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"UPLOAD#{upload_id}"}, "sk": {"S": "UPLOAD"}},
        UpdateExpression="SET #status = :expired",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":expired": {"S": "expired"}},
    )
    response = cancel(stack, upload_id)
    assert (response.status_code, response.json_body["status"]) == (200, "cancelled"), response.body
    [row] = outbox(stack)
    assert json.loads(row["data"]["S"])["previousStatus"] == "expired"


# -- the rule, both orders: the first of the cancel and the attribution to be stored wins ----------------------


def test_upload_event_then_cancel_the_cancel_is_a_409_and_the_video_stays(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    assert stack.deliver(vod.new_file_upload("f-first", context)).json_body["outcome"] == "attributed"
    before = stack.items()
    refused = cancel(stack, upload_id)
    assert refused.status_code == 409, refused.body
    assert (refused.json_body["error"], refused.json_body["reason"]) == ("conflict", "already_completed")
    assert "f-first" in refused.json_body["message"]
    assert stack.items() == before  # no outbox row for a refused cancel
    assert [video["fileId"] for video in stack.videos()] == ["f-first"]
    assert upload_status(stack, upload_id)["status"] == "completed"


def test_cancel_then_upload_event_the_upload_is_kept_for_review_not_attributed(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    cancelled = cancel(stack, upload_id).json_body
    answer = stack.deliver(vod.new_file_upload("f-late", context))
    assert answer.status_code == 200, answer.body
    assert answer.json_body == {"code": 0, "outcome": "rejected"}
    assert stack.videos() == []
    alice = bearer(stack.token_for("alice"))
    assert stack.api.get("/videos/f-late", headers=alice).status_code == 404
    assert upload_status(stack, upload_id) == cancelled
    [review] = reviews(stack)
    assert (review["fileId"], review["kind"], review["uploadId"], review["intentOwner"]) == (
        "f-late",
        "rejected",
        upload_id,
        "alice",
    )
    assert "cancelled" in review["reason"]
    assert stack.deliver(vod.new_file_upload("f-late", context)).json_body["outcome"] == "rejected"
    assert len(reviews(stack)) == 1  # the redelivery adds neither a review nor an event
    assert sorted(row["type"]["S"] for row in outbox(stack)) == ["upload.cancelled", "upload.kept_for_review"]


# -- a real upload through vodlocal that the SDK finishes around the cancel ------------------------------------


@dataclass
class BeforeCommit:
    """An upload whose SDK has stored the file in VOD and holds its commit signature: only the Commit is left."""

    vod: Handle
    stack: Stack
    token: str
    upload_id: str
    session_key: str
    signature: str

    def commit(self) -> str:
        """The SDK's CommitUploadUGC: the FileId VOD answers (VOD then queues its NewFileUpload)."""
        body = {"signature": self.signature, "vodSessionKey": self.session_key}
        answer = ugc(self.vod, "CommitUploadUGC", body)
        assert answer["code"] == 0, answer
        file_id: str = answer["data"]["fileId"]
        return file_id

    def report(self, file_id: str) -> Any:
        return complete(self.stack.api, self.token, self.upload_id, file_id)


@pytest.fixture
def before_commit(
    pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory, dynamodb: Any, table_name: str
) -> BeforeCommit:
    api, alice = api_factory(), token_for("alice")
    post = as_user(api, alice)
    created = post("/uploads", b"{}")
    data = apply_and_store(pull_vod, created["signature"], b"cancelled-video")
    renewed = post(f"/uploads/{created['uploadId']}/signature", b"")
    stack = Stack(api, {}, token_for, dynamodb, table_name)
    return BeforeCommit(pull_vod, stack, alice, created["uploadId"], data["vodSessionKey"], renewed["signature"])


def pull_outcomes() -> dict[str, int]:
    return dict(container.services().pull_consumer.run(CONSUMER_SECONDS).outcomes)


def test_pull_cancel_then_the_sdks_report_and_event_are_refused_and_the_sweep_deletes_the_file(
    before_commit: BeforeCommit, stage_env: dict[str, str]
) -> None:
    sdk, stack = before_commit, before_commit.stack
    assert cancel(stack, sdk.upload_id).status_code == 200
    file_id = sdk.commit()  # the SDK finished meanwhile

    reported = sdk.report(file_id)
    assert reported.status_code == 409, reported.body
    assert (reported.json_body["error"], reported.json_body["reason"]) == ("conflict", "cancelled")
    assert pull_outcomes() == {"rejected": 1}
    assert stack.videos() == []
    assert [(review["fileId"], review["kind"]) for review in reviews(stack)] == [(file_id, "rejected")]
    assert upload_status(stack, sdk.upload_id)["status"] == "cancelled"

    # Kept for review like any unattributed upload: the sweep deletes it from VOD once its grace period is over.
    deleting = sweep_ahead(GRACE + 1, "delete", media_at(stage_env, stage_env["VOD_API_ENDPOINT"])).run(30)
    assert (deleting.due_for_deletion, deleting.deleted) == ([file_id], 1), deleting
    assert not exists_in_vod(stage_env, file_id)


def test_pull_the_sdks_report_then_cancel_is_a_409(before_commit: BeforeCommit) -> None:
    sdk, stack = before_commit, before_commit.stack
    file_id = sdk.commit()
    assert sdk.report(file_id).json_body["outcome"] == "attributed"

    refused = cancel(stack, sdk.upload_id)
    assert (refused.status_code, refused.json_body["reason"]) == (409, "already_completed"), refused.body
    assert pull_outcomes() == {"duplicate": 1}
    assert [video["fileId"] for video in stack.videos()] == [file_id]
    assert reviews(stack) == []
    assert [row["type"]["S"] for row in outbox(stack)] == ["upload.attributed"]  # the refused cancel adds none


def test_pull_event_then_cancel_is_a_409(before_commit: BeforeCommit) -> None:
    sdk, stack = before_commit, before_commit.stack
    file_id = sdk.commit()
    assert pull_outcomes() == {"attributed": 1}

    refused = cancel(stack, sdk.upload_id)
    assert (refused.status_code, refused.json_body["reason"]) == (409, "already_completed"), refused.body
    assert [video["fileId"] for video in stack.videos()] == [file_id]
    assert [row["type"]["S"] for row in outbox(stack)] == ["upload.attributed"]  # the refused cancel adds none


# -- at the same moment: exactly one of the cancel and the attribution wins ------------------------------------

CANCELS = DELIVERIES = 4


@pytest.mark.parametrize("repetition", range(8))
def test_cancels_and_deliveries_at_the_same_moment_settle_one_way_only(
    services: Any, dynamodb: Any, table_name: str, repetition: int
) -> None:
    """Copies of the cancel and of VOD's event for one upload, all at once: either every cancel answers the
    cancelled upload and every event is rejected (kept for review), or every cancel is a 409 and the upload is
    attributed once. Never both, never neither; one outbox row exactly when the cancel won."""
    alice = Principal("alice", {})
    issued = services.uploads.create(alice, ClientFields(title=f"race {repetition}"), None)
    upload_id = issued.intent.upload_id
    secrets = services.secrets.get()
    context = vod_signature.verify(issued.signature, secrets.vod_secret_key).params.options.sourceContext
    body = json.dumps(vod.signed(vod.new_file_upload(f"race-{repetition}", context), secrets.sign_key)).encode()
    results: list[str] = []
    barrier = threading.Barrier(CANCELS + DELIVERIES)

    def cancel_it() -> None:
        barrier.wait()
        try:
            results.append(f"cancel:{services.uploads.cancel(alice, upload_id).status}")
        except UploadClosed as closed:
            results.append(f"cancel:{closed.reason}")

    def deliver() -> None:
        barrier.wait()
        results.append(f"event:{services.events.receive(secrets.callback_token, body).outcome}")

    threads = [threading.Thread(target=cancel_it) for _ in range(CANCELS)]
    threads += [threading.Thread(target=deliver) for _ in range(DELIVERIES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    intent = services.storage.intents.get_intent(upload_id)
    videos, _ = services.storage.videos.list_videos("alice", 100, None)
    outbox_rows = [
        item
        for item in dynamodb.scan(TableName=table_name)["Items"]
        if item["pk"]["S"] == f"OUTBOX#{cancelled_event_id(upload_id)}"
    ]
    if intent.status == "cancelled":
        assert Counter(results) == Counter({"cancel:cancelled": CANCELS, "event:rejected": DELIVERIES}), results
        assert videos == [] and len(services.storage.reviews.pending()) == 1 and len(outbox_rows) == 1
    else:
        assert Counter(results) == Counter(
            {"cancel:already_completed": CANCELS, "event:attributed": 1, "event:duplicate": DELIVERIES - 1}
        ), results
        assert [video.file_id for video in videos] == [f"race-{repetition}"]
        assert services.storage.reviews.pending() == [] and outbox_rows == []
    assert services.storage.intents.open_slots("alice") == []
