"""The VOD callback and the read API, through the Chalice test client against local DynamoDB."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from chalicelib import source_context
from chalicelib.events import ProcessingUpdate, TaskOutput
from chalicelib.items import (
    MAX_SNAPSHOT_BYTES,
    MAX_TASK_FLOWS,
    processing_entry,
    stored_snapshot,
    video_key,
    video_upload_attributes,
)
from chalicelib.media import MediaFacts
from chalicelib.settings import Settings
from chalicelib.strict_json import dump_json
from chalicelib.videos import Video
from chalicelib.vod_notification import MAX_TASK_OUTPUTS, MAX_TEXT
from devstack.dynamodb import MAX_ITEM_BYTES, item_size
from tests import vod_payloads as vod
from tests.conftest import ApiFactory, Stack, TokenFactory, bearer, with_policy


def test_new_file_upload_attributes_the_video_to_its_owner_only(stack: Stack) -> None:
    upload_id, context = stack.create_upload(body={"title": "Holiday", "metadata": {"album": "2026"}})
    response = stack.deliver(vod.new_file_upload("5285890784273533167", context), content_type="application/json")
    assert response.status_code == 200, response.body
    assert response.json_body == {"code": 0, "outcome": "attributed"}

    [video] = stack.videos("alice")
    assert video["fileId"] == "5285890784273533167"
    assert video["uploadId"] == upload_id
    assert video["title"] == "Holiday" and video["metadata"] == {"album": "2026"}
    assert (video["size"], video["width"], video["height"], video["duration"]) == (7_700_180, 640, 480, 60.5)
    assert video["mediaUrl"].endswith("/f0.mp4") and video["storageRegion"] == "ap-guangzhou"
    assert stack.videos("bob") == []
    bob = bearer(stack.token_for("bob"))
    assert stack.api.get("/videos/5285890784273533167", headers=bob).status_code == 404
    alice = bearer(stack.token_for("alice"))
    assert stack.api.get("/videos/5285890784273533167", headers=alice).json_body["fileId"] == "5285890784273533167"
    upload = stack.api.get(f"/uploads/{upload_id}", headers=alice).json_body
    assert upload["status"] == "completed" and upload["fileId"] == "5285890784273533167"
    assert upload["video"]["mediaUrl"] == video["mediaUrl"]


def test_completion_releases_the_open_slot(
    api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> None:
    with_policy(stage_env, maxOpenIntents=1)
    stack = Stack(api_factory(), stage_env, token_for, dynamodb, table_name)
    _, context = stack.create_upload()
    refused = stack.api.post("/uploads", headers=bearer(token_for("alice")), body=b"")
    assert refused.status_code == 429
    assert stack.deliver(vod.new_file_upload("f-slot", context)).status_code == 200
    assert stack.api.post("/uploads", headers=bearer(token_for("alice")), body=b"").status_code == 201


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda s, b: s.deliver(b, token="wrong-token"), 403),
        (lambda s, b: s.deliver(b, token=""), 403),
        (lambda s, b: s.deliver(b, sign=False), 401),
        (lambda s, b: s.deliver(json.dumps({**vod.signed(b, "another-key")}).encode()), 401),
        (lambda s, b: s.deliver(json.dumps(vod.signed(b, s.env["VOD_SIGN_KEY"], int(time.time()) - 1)).encode()), 401),
        (lambda s, b: s.deliver(json.dumps({**vod.signed(b, s.env["VOD_SIGN_KEY"]), "T": "soon"}).encode()), 400),
    ],
    ids=["forged-token", "empty-token", "no-sign", "bad-sign", "expired-T", "non-integer-T"],
)
def test_unauthenticated_notifications_write_nothing(stack: Stack, mutate: Any, status: int) -> None:
    _, context = stack.create_upload()
    before = stack.items()
    response = mutate(stack, vod.new_file_upload("f-forged", context))
    assert response.status_code == status, response.body
    if response.json_body.get("error"):  # an empty token matches no route: API Gateway's own 403
        assert response.json_body["error"] in ("forbidden", "unauthorized", "invalid_request")
    assert stack.items() == before
    assert stack.videos() == []


def test_uppercase_sign_is_accepted(stack: Stack) -> None:
    _, context = stack.create_upload()
    body = vod.signed(vod.new_file_upload("f-upper", context), stack.env["VOD_SIGN_KEY"])
    body["Sign"] = body["Sign"].upper()
    assert stack.deliver(json.dumps(body).encode()).json_body["outcome"] == "attributed"


@pytest.mark.parametrize(
    ("context_of", "reason"),
    [
        (lambda upload_id, ctx: ctx[:-2] + ("AA" if not ctx.endswith("AA") else "BB"), "tag"),
        (lambda upload_id, ctx: ctx.replace(upload_id, "B" * 22), "tag"),
        (lambda upload_id, ctx: f"{upload_id}", "malformed"),
        (lambda upload_id, ctx: None, "malformed"),
        (lambda upload_id, ctx: "x" * 250, "malformed"),
    ],
    ids=["tampered-tag", "swapped-id", "bare-id", "no-context", "garbage"],
)
def test_forged_or_missing_context_is_an_orphan(stack: Stack, context_of: Any, reason: str) -> None:
    upload_id, context = stack.create_upload()
    response = stack.deliver(vod.new_file_upload("f-orphan", context_of(upload_id, context)))
    assert response.status_code == 200
    assert response.json_body["outcome"] == "orphan"
    assert stack.videos() == []
    [review] = _reviews(stack)
    assert review["kind"] == "orphan" and reason in review["reason"]


def _reviews(stack: Stack) -> list[dict[str, Any]]:
    from chalicelib.storage import Storage

    return Storage.over(stack.dynamodb, stack.table).reviews.pending()


def test_authentic_context_for_unknown_intent_is_an_orphan(stack: Stack) -> None:
    stranger = source_context.encode("C" * 22, stack.env["CONTEXT_TAG_KEY"].encode())
    assert stack.deliver(vod.new_file_upload("f-unknown", stranger)).json_body["outcome"] == "orphan"
    assert _reviews(stack)[0]["reason"] == "no such upload intent"


def test_duplicate_delivery_changes_nothing(stack: Stack) -> None:
    _, context = stack.create_upload()
    event = vod.new_file_upload("f-dup", context)
    assert stack.deliver(event).json_body["outcome"] == "attributed"
    after_first = stack.items()
    assert stack.deliver(event).json_body["outcome"] == "duplicate"
    assert stack.deliver(event).json_body["outcome"] == "duplicate"
    assert stack.items() == after_first


def test_replayed_signature_with_a_new_file_is_rejected_not_attributed(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    assert stack.deliver(vod.new_file_upload("f-first", context)).json_body["outcome"] == "attributed"
    response = stack.deliver(vod.new_file_upload("f-second", context))
    assert response.json_body["outcome"] == "rejected"
    assert [v["fileId"] for v in stack.videos()] == ["f-first"]
    [review] = _reviews(stack)
    assert review["fileId"] == "f-second" and review["kind"] == "rejected" and review["uploadId"] == upload_id
    alice = bearer(stack.token_for("alice"))
    assert stack.api.get("/videos/f-second", headers=alice).status_code == 404


FINISH = ("FINISH", [(10, "SUCCESS"), (20, "SUCCESS")])
PROGRESS = [
    ("PROCESSING", [(10, "PROCESSING"), (20, "WAITING")]),
    ("PROCESSING", [(10, "SUCCESS"), (20, "PROCESSING")]),
]


@pytest.mark.parametrize(
    "order",
    [
        ["upload", "p0", "p1", "finish"],
        ["finish", "p1", "upload", "p0"],
        ["p1", "finish", "p0", "upload", "finish"],
        ["upload", "finish", "finish", "p0"],
    ],
)
def test_processing_state_is_the_same_whatever_the_order(stack: Stack, order: list[str]) -> None:
    upload_id, context = stack.create_upload(body={"procedure": "LongVideoPreset"})
    task = "1500000001-procedurev2-abc"
    bodies = {
        "upload": vod.new_file_upload("f-proc", context, procedure_task_id=task),
        "p0": vod.procedure_state_changed("f-proc", task, *PROGRESS[0], session_context=context),
        "p1": vod.procedure_state_changed("f-proc", task, *PROGRESS[1], session_context=context),
        "finish": vod.procedure_state_changed(
            "f-proc", task, *FINISH, session_context=context, review_suggestion="pass"
        ),
    }
    for step in order:
        assert stack.deliver(bodies[step]).status_code == 200
    [video] = stack.videos()
    processing = video["processing"]
    assert processing["status"] == "FINISH" and processing["taskId"] == task
    assert [(t["definition"], t["status"]) for t in processing["tasks"]] == [(10, "SUCCESS"), (20, "SUCCESS")]
    assert all(t["url"].endswith(f".f{t['definition']}.mp4") for t in processing["tasks"])
    assert processing["review"] == [{"type": "Porn", "status": "SUCCESS", "suggestion": "pass"}]
    assert video["procedureTaskId"] == task and video["uploadId"] == upload_id


def test_processing_for_an_unknown_file_is_not_attributed(stack: Stack) -> None:
    assert stack.deliver(vod.procedure_state_changed("f-nobody", "t", *FINISH)).json_body["outcome"] == "updated"
    assert stack.videos() == []
    alice = bearer(stack.token_for("alice"))
    assert stack.api.get("/videos/f-nobody", headers=alice).status_code == 404


def test_file_deleted_hides_the_video(stack: Stack) -> None:
    _, context = stack.create_upload()
    stack.deliver(vod.new_file_upload("f-del", context))
    assert stack.deliver(vod.file_deleted("f-del", "f-unknown")).json_body["outcome"] == "deleted"
    assert stack.videos() == []
    alice = bearer(stack.token_for("alice"))
    assert stack.api.get("/videos/f-del", headers=alice).status_code == 404
    assert stack.deliver(vod.file_deleted("f-del")).status_code == 200


def test_other_event_types_are_acknowledged_and_counted(stack: Stack) -> None:
    for _ in range(2):
        assert stack.deliver(vod.other_event("PersistenceComplete")).json_body["outcome"] == "ignored"
    item = stack.dynamodb.get_item(
        TableName=stack.table, Key={"pk": {"S": "STATS#events"}, "sk": {"S": "PersistenceComplete"}}
    )["Item"]
    assert item["count"] == {"N": "2"}


def test_legacy_v2_events(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    assert stack.deliver(vod.legacy_new_file_upload("f-v2", context)).json_body["outcome"] == "attributed"
    assert stack.deliver(vod.legacy_procedure_state_changed("f-v2", "t-v2", "FINISH")).json_body["outcome"] == "updated"
    [video] = stack.videos()
    assert video["name"] == "legacy clip" and video["uploadId"] == upload_id
    assert video["processing"]["status"] == "FINISH"
    assert video["processing"]["tasks"][0]["definition"] == 20


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        (b"[]", 400, "body"),
        (b'{"hello": 1}', 400, "EventType"),
        (b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": 5}}', 400, "FileId"),
        (b'{"EventType": "NewFileUpload", "FileUploadEvent": null}', 400, "FileId"),
        (b'{"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {"TaskId": "t", "Status": "X"}}', 400,
         "FileId"),
        (b'{"EventType": "NewFileUpload", "x": "' + b"a" * 300_000 + b'"}', 413, None),
        (b"\xff\xfe\x00", 400, "body"),
    ],
)  # fmt: skip
def test_malformed_or_oversize_bodies_are_4xx(stack: Stack, body: bytes, status: int, field: str | None) -> None:
    response = stack.deliver(body)
    assert response.status_code == status, response.body
    if field:
        assert field in response.json_body["field"]


def test_pagination_newest_first_with_opaque_cursor(stack: Stack) -> None:
    ids = []
    for index in range(5):
        _, context = stack.create_upload(user="carol")
        file_id = f"f-page-{index}"
        ids.append(file_id)
        stack.deliver(vod.new_file_upload(file_id, context))
        time.sleep(1.01 if index == 2 else 0)  # two distinct receive seconds
    carol = bearer(stack.token_for("carol"))
    seen, cursor = [], None
    while True:
        query = "/videos?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = stack.api.get(query, headers=carol).json_body
        seen.extend(video["fileId"] for video in page["videos"])
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert set(seen[:2]) == {"f-page-3", "f-page-4"}
    bad_cursors = (
        "%21%21",
        "WzEsMl0",
        "WyIiLCAiIl0",
        "W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb",
    )
    for bad in (
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?limit=%C2%B2",
        "?limit=" + "9" * 5000,
        *(f"?cursor={cursor}" for cursor in bad_cursors),
    ):
        response = stack.api.get(f"/videos{bad}", headers=carol)
        assert response.status_code == 400, bad
    assert stack.api.get("/videos", headers={}).status_code == 401


def test_callback_logs_one_line_per_event_without_secrets(stack: Stack, capfd: Any) -> None:
    _, context = stack.create_upload()
    stack.deliver(vod.new_file_upload("f-log", context))
    stack.deliver(vod.new_file_upload("f-log", context), token="bad")
    out = capfd.readouterr().out
    events = [json.loads(line) for line in out.splitlines() if '"vod event' in line]
    assert [e["outcome"] for e in events] == ["attributed", "refused"]
    assert events[0]["fileId"] == "f-log" and events[0]["eventType"] == "NewFileUpload"
    for name in ("VOD_CALLBACK_TOKEN", "VOD_SIGN_KEY", "VOD_SECRET_KEY", "CONTEXT_TAG_KEY"):
        assert stack.env[name] not in out


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[" * 3000, "body"),
        (b'{"EventType": "NewFileUpload", "T": Infinity}', "body"),
        (b'{"EventType": "NewFileUpload", "T": 1e400}', "T"),
        (b'{"EventType": ""}', "EventType"),
        (b'{"EventType": 5}', "EventType"),
        (b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": 5}}', "FileIdSet"),
        (b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["' + b"x" * 65 + b'"]}}', "FileIdSet"),
        (b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ' + json.dumps(["f"] * 101).encode() + b"}}",
         "FileIdSet"),
        (b'{"version": "4.0", "eventType": "FileDeleted", "data": {"fileIdSet": 7}}', "fileIdSet"),
        (b'{"version": "4.0", "eventType": "NewFileUpload", "data": {"fileId": "' + b"9" * 3000 + b'"}}', "fileId"),
    ],
)  # fmt: skip
def test_hostile_bodies_are_400_not_500(stack: Stack, body: bytes, field: str) -> None:
    response = stack.deliver(body)
    assert response.status_code == 400, response.body
    assert field in response.json_body["field"]


def test_odd_but_harmless_shapes_are_accepted(stack: Stack) -> None:
    v2 = {
        "version": "4.0",
        "eventType": "ProcedureStateChanged",
        "data": {"fileId": "f-odd", "vodTaskId": "t", "status": "FINISH", "processTaskList": {"not": "a list"}},
    }
    assert stack.deliver(v2).json_body["outcome"] == "updated"
    review = vod.procedure_state_changed("f-odd", "t2", *FINISH, review_suggestion="pass")
    review["ProcedureStateChangeEvent"]["AiContentReviewResultSet"][0]["PornTask"]["Output"] = "garbage"
    assert stack.deliver(review).json_body["outcome"] == "updated"


def test_implausible_measurements_do_not_block_attribution(stack: Stack) -> None:
    _, context = stack.create_upload()
    event = vod.new_file_upload("f-meta", context)
    event["FileUploadEvent"]["MetaData"].update(Duration=1e300, Size=10**40, Width=-1)
    assert stack.deliver(event).json_body["outcome"] == "attributed"
    [video] = stack.videos()
    assert (video["duration"], video["size"], video["width"]) == (None, None, -1)


def test_snapshots_of_different_task_flows_do_not_overwrite_each_other(stack: Stack) -> None:
    _, context = stack.create_upload(body={"procedure": "LongVideoPreset"})
    stack.deliver(vod.new_file_upload("f-two", context, procedure_task_id="task-A"))
    stack.deliver(vod.procedure_state_changed("f-two", "task-B", *FINISH))
    stack.deliver(vod.procedure_state_changed("f-two", "task-A", *FINISH))
    stack.deliver(vod.procedure_state_changed("f-two", "task-B", *PROGRESS[0]))  # a late retry of B
    stack.deliver(vod.procedure_state_changed("f-two", "task-A", *PROGRESS[1]))  # a late retry of A
    [video] = stack.videos()
    assert video["processing"]["taskId"] == "task-A" and video["processing"]["status"] == "FINISH"
    assert [(t["taskId"], t["status"]) for t in video["processingTasks"]] == [
        ("task-A", "FINISH"),
        ("task-B", "FINISH"),
    ]


def test_deleted_video_is_not_shown_on_its_upload(stack: Stack) -> None:
    upload_id, context = stack.create_upload()
    stack.deliver(vod.new_file_upload("f-gone", context))
    stack.deliver(vod.file_deleted("f-gone"))
    upload = stack.api.get(f"/uploads/{upload_id}", headers=bearer(stack.token_for("alice"))).json_body
    assert upload["status"] == "completed" and upload["video"] is None


def test_missing_sign_key_refuses_callbacks_when_signing_is_required(
    api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory, dynamodb: Any, table_name: str
) -> None:
    sign_key = stage_env.pop("VOD_SIGN_KEY")
    stack = Stack(api_factory(), {**stage_env, "VOD_SIGN_KEY": sign_key}, token_for, dynamodb, table_name)
    _, context = stack.create_upload()
    before = stack.items()
    response = stack.deliver(vod.new_file_upload("f-unsigned", context), sign=False)
    assert response.status_code == 503 and "VOD_SIGN_KEY" in response.json_body["message"]
    assert stack.items() == before
    stage_env["REQUIRE_CALLBACK_SIGN"] = "false"
    relaxed = Stack(api_factory(), stack.env, token_for, dynamodb, table_name)
    assert relaxed.deliver(vod.new_file_upload("f-unsigned", context), sign=False).json_body["outcome"] == "attributed"


def large_task_flow(file_id: str, task_id: str, definitions: range) -> dict[str, Any]:
    """A finished task flow whose outputs carry long (but plausible) URLs, and a long message."""
    body = vod.procedure_state_changed(file_id, task_id, "FINISH", [(d, "SUCCESS") for d in definitions])
    event = body["ProcedureStateChangeEvent"]
    event["Message"] = "m" * 5000
    for result in event["MediaProcessResultSet"]:
        result["TranscodeTask"]["Output"]["Url"] += "?sign=" + "s" * 1500
    return body


def test_any_number_of_large_task_flow_updates_keeps_the_video_under_400_kb(stack: Stack) -> None:
    """Each flow's snapshot was kept whole, and every flow: real DynamoDB would refuse the update that takes
    the item past 400 KB, that event failing forever (the local endpoint now refuses it likewise)."""
    _, context = stack.create_upload(body={"procedure": "LongVideoPreset"})
    assert stack.deliver(vod.new_file_upload("f-big", context, procedure_task_id="task-own")).status_code == 200
    flows = ["task-own"] + [f"task-{n:02d}" for n in range(12)]
    for n, task in enumerate(flows):
        body = large_task_flow("f-big", task, range(100 * n, 100 * n + 50))
        assert len(json.dumps(body)) > 90_000
        response = stack.deliver(body)
        assert (response.status_code, response.json_body.get("outcome")) == (200, "updated"), response.body

    [item] = [item for item in stack.items() if item["pk"]["S"] == "VIDEO#f-big"]
    assert item_size(item) < MAX_ITEM_BYTES / 2
    alice = bearer(stack.token_for("alice"))
    video = stack.api.get("/videos/f-big", headers=alice).json_body
    # The upload's own flow, and the most recently updated others.
    assert [snapshot["taskId"] for snapshot in video["processingTasks"]] == sorted(["task-own", *flows[-7:]])
    assert video["processing"]["taskId"] == "task-own"
    [newest] = [snapshot for snapshot in video["processingTasks"] if snapshot["taskId"] == flows[-1]]
    # Of each kind of output, the last ones VOD listed, with their URLs whole.
    assert [task["definition"] for task in newest["tasks"]] == list(range(1240, 1250))
    assert all(task["url"].endswith("s" * 1500) for task in newest["tasks"])
    assert newest["message"] == "m" * 256


WIDE = "\U0001f600"  # 4 bytes in UTF-8, 12 as escaped JSON: the costliest character to store


def test_a_video_item_stays_under_400_kb_whatever_vod_sends() -> None:
    """The bounds, at their worst: every text at its longest in the costliest characters (past what a
    callback body could carry), the most outputs and reviews VOD can list, the most task flows kept."""
    text = WIDE * MAX_TEXT
    outputs = tuple(
        TaskOutput(WIDE * 100, WIDE * 100, 10**4000, text, 10**4000, {"PicInfoSet": [text] * 50, "Size": 10**300})
        for _ in range(MAX_TASK_OUTPUTS)
    )
    review = tuple({"type": WIDE * 64, "status": WIDE * 64, "suggestion": WIDE * 64} for _ in range(MAX_TASK_OUTPUTS))

    def update(task: int) -> ProcessingUpdate:
        task_id = f"{task:03d}" + WIDE * 125
        return ProcessingUpdate(task_id, "f", WIDE * 32, None, outputs, review, 10**4000, WIDE * 100_000)

    assert len(dump_json(stored_snapshot(update(0)))) <= MAX_SNAPSHOT_BYTES
    metadata = {"k": "x" * Settings.model_fields["max_metadata_bytes"].default}  # the default bound
    facts = MediaFacts(text, text, text, text, 10**18, 1e18, 10**18, 10**18, WIDE * 64, text, 10**18, text)
    video = Video("f" * 64, WIDE * 128, "u" * 22, 10**10, WIDE * 200, WIDE * 255, WIDE * 128, text, metadata, facts)
    flows = {update(task).task_id: processing_entry(update(task), 10**10) for task in range(MAX_TASK_FLOWS)}
    item = {**video_key(video.file_id), **video_upload_attributes(video), "processing": {"M": flows}}
    assert item_size(item) < MAX_ITEM_BYTES * 0.75
