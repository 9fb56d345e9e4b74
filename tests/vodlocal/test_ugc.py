"""VOD UGC API semantics: signature verification, sessions, commit, events (driven over plain HTTP)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests

from chalicelib import callback_auth, vod_signature
from tests.vodlocal.conftest import (
    SECRET_ID,
    SECRET_KEY,
    SIGN_KEY,
    CallbackReceiver,
    SigningStub,
    apply_and_store,
    apply_body,
    cos_client,
    ugc,
    upload,
    wait_until_pushed,
)
from tests.waiting import wait_until
from vodlocal import Config, Handle, start


def raw_signature(pairs: list[tuple[str, object]], key: str = SECRET_KEY) -> str:
    original = urlencode(pairs, quote_via=quote).encode()
    return base64.b64encode(vod_signature.mac_of(key, original) + original).decode()


def now_pairs(validity: int = 600, **extra: object) -> list[tuple[str, object]]:
    now = int(time.time())
    return [
        ("secretId", SECRET_ID),
        ("currentTimeStamp", now),
        ("expireTime", now + validity),
        ("random", 7),
        *extra.items(),
    ]


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        (raw_signature(now_pairs(), key="wrong-key"), 10002),  # bad MAC
        (raw_signature([("secretId", "AKIDunknown"), *now_pairs()[1:]]), 10002),  # unknown SecretId
        (raw_signature(now_pairs(validity=7_776_001)), 10002),  # beyond the 90-day cap
        (raw_signature([*now_pairs()[:3], ("random", "1.5")]), 10002),  # non-integer random
        (raw_signature([*now_pairs()[:1], ("currentTimeStamp", f"{time.time():.3f}"), *now_pairs()[2:]]), 10002),
        (raw_signature(now_pairs(oneTimeValid=2)), 10002),
        (
            raw_signature(
                [
                    ("secretId", SECRET_ID),
                    ("currentTimeStamp", 1_700_000_000),
                    ("expireTime", 1_700_000_600),
                    ("random", 1),
                ]
            ),
            10010,
        ),  # expired
        ("not base64!", 10002),
    ],
)
def test_signature_rejections(emulator: Handle, signature: str, code: int) -> None:
    reply = ugc(emulator, "ApplyUploadUGC", apply_body(signature, 10))
    assert reply["code"] == code, reply
    assert reply["message"]


def test_ninety_day_cap_accepts_exactly_ninety_days(emulator: Handle) -> None:
    reply = ugc(emulator, "ApplyUploadUGC", apply_body(raw_signature(now_pairs(validity=7_776_000)), 10))
    assert reply["code"] == 0, reply


def test_one_time_signature_serves_the_session_it_opened(emulator: Handle, signing: SigningStub) -> None:
    intent = signing.new_upload()
    once = signing.sign(intent)["signature"]
    assert ugc(emulator, "PrepareUploadUGC", {"signature": once})["code"] == 0  # Prepare does not spend it
    opened = ugc(emulator, "ApplyUploadUGC", apply_body(once, 3))["data"]
    key = opened["vodSessionKey"]
    # The same Apply again (an SDK retry after a lost answer) gets the same session; any other is a replay.
    assert ugc(emulator, "ApplyUploadUGC", apply_body(once, 3))["data"]["vodSessionKey"] == key
    replay = ugc(emulator, "ApplyUploadUGC", apply_body(once, 4))
    assert (replay["code"], replay["message"]) == (10004, "duplicate vod signature")
    # A fresh signature joins the session on resume, and cannot open another one after that.
    fresh = signing.sign(intent)["signature"]
    assert ugc(emulator, "ApplyUploadUGC", {"signature": fresh, "vodSessionKey": key})["code"] == 0
    assert ugc(emulator, "ApplyUploadUGC", apply_body(fresh, 3))["code"] == 10004
    other = ugc(emulator, "ApplyUploadUGC", apply_body(signing.sign(intent)["signature"], 3))["data"]
    assert (
        ugc(emulator, "ApplyUploadUGC", {"signature": once, "vodSessionKey": other["vodSessionKey"]})["code"] == 10004
    )
    client = cos_client(emulator, opened["storageRegionV5"], SECRET_ID, SECRET_KEY)
    client.put_object(
        Bucket=f"{opened['storageBucket']}-{opened['storageAppId']}",
        Key=opened["video"]["storagePath"][1:],
        Body=b"abc",
    )
    commit_other = ugc(emulator, "CommitUploadUGC", {"signature": once, "vodSessionKey": other["vodSessionKey"]})
    assert commit_other["code"] == 10004
    assert ugc(emulator, "CommitUploadUGC", {"signature": once, "vodSessionKey": key})["code"] == 0
    assert ugc(emulator, "ApplyUploadUGC", apply_body(once, 3))["code"] == 10004  # a replay after the commit
    reusable = raw_signature(now_pairs())
    assert all(ugc(emulator, "ApplyUploadUGC", apply_body(reusable, 1))["code"] == 0 for _ in range(3))


def test_strict_rule_spends_a_one_time_signature_on_every_request(emu_config: Config, signing: SigningStub) -> None:
    with start(replace(emu_config, one_time_signatures="strict")) as emulator:
        once = signing.sign(signing.new_upload())["signature"]
        assert ugc(emulator, "PrepareUploadUGC", {"signature": once})["code"] == 0
        again = ugc(emulator, "ApplyUploadUGC", apply_body(once, 3))
        assert (again["code"], again["message"]) == (10004, "duplicate vod signature")


def test_concurrent_applies_with_one_signature_open_one_session(emulator: Handle, signing: SigningStub) -> None:
    once = signing.sign(signing.new_upload())["signature"]
    sizes = [3, 5] * 4  # two different uploads, each sent four times at once
    with ThreadPoolExecutor(len(sizes)) as pool:
        replies = list(pool.map(lambda size: ugc(emulator, "ApplyUploadUGC", apply_body(once, size)), sizes))
    codes = {size: {r["code"] for s, r in zip(sizes, replies, strict=True) if s == size} for size in set(sizes)}
    assert sorted(map(sorted, codes.values())) == [[0], [10004]], codes
    assert len({r["data"]["vodSessionKey"] for r in replies if r["code"] == 0}) == 1
    assert len(emulator.app.store.query("SELECT session_key FROM sessions")) == 1


def refused_as_not_its_own(reply: dict[str, Any], field: str, owner: str) -> None:
    """The refusal of a signature of another intent: code 10002, nothing in `data` (no credentials)."""
    assert (reply["code"], reply["data"]) == (10002, {}), reply
    assert reply["message"] == f"ugc upload | invalid signature: its {field} is not the {owner}'s"


def test_a_session_is_served_only_by_signatures_of_its_own_intent(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    alice = signing.new_upload()
    key = apply_and_store(emulator, signing.sign(alice)["signature"], b"alice's video")["vodSessionKey"]
    # Another intent's signature (another user's, or the same user's next upload) and Alice's session key,
    # which is readable where her client keeps it: no credentials for her paths, no commit of her session.
    bob = signing.sign(signing.new_upload())["signature"]
    for action in ("ApplyUploadUGC", "CommitUploadUGC"):
        refused_as_not_its_own(
            ugc(emulator, action, {"signature": bob, "vodSessionKey": key}), "sourceContext", "session"
        )
    assert emulator.app.store.query("SELECT file_id FROM media") == []
    # The refusals did not spend Bob's one-time signature: it still opens his own upload.
    assert ugc(emulator, "ApplyUploadUGC", apply_body(bob, 3))["code"] == 0
    # Alice's own intent, with fresh signatures, resumes and commits her session.
    assert (
        ugc(emulator, "ApplyUploadUGC", {"signature": signing.sign(alice)["signature"], "vodSessionKey": key})["code"]
        == 0
    )
    commit = ugc(emulator, "CommitUploadUGC", {"signature": signing.sign(alice)["signature"], "vodSessionKey": key})
    assert commit["code"] == 0, commit
    event = callbacks.wait(lambda evs: len(evs) >= 1)[0]["FileUploadEvent"]
    assert event["MediaBasicInfo"]["SourceInfo"]["SourceContext"] == alice
    assert event["MetaData"]["Md5"] == hashlib.md5(b"alice's video", usedforsecurity=False).hexdigest()
    # Once committed, the session's answer is still Alice's only.
    late = ugc(emulator, "CommitUploadUGC", {"signature": signing.sign("bob")["signature"], "vodSessionKey": key})
    refused_as_not_its_own(late, "sourceContext", "session")


def test_a_session_is_served_only_in_its_own_sub_application(emulator: Handle, signing: SigningStub) -> None:
    intent = signing.new_upload()

    def signed(sub_app: int | None) -> str:
        signing.options = {"oneTimeValid": 1} if sub_app is None else {"oneTimeValid": 1, "vodSubAppId": sub_app}
        return str(signing.sign(intent)["signature"])

    key = apply_and_store(emulator, signed(1500000077), b"abc")["vodSessionKey"]
    for other in (1500000078, 0, None, 1500000001):  # another sub-application, and the primary one
        for action in ("ApplyUploadUGC", "CommitUploadUGC"):
            reply = ugc(emulator, action, {"signature": signed(other), "vodSessionKey": key})
            refused_as_not_its_own(reply, "vodSubAppId", "session")
    assert ugc(emulator, "ApplyUploadUGC", {"signature": signed(1500000077), "vodSessionKey": key})["code"] == 0
    # The primary application has three documented names: no vodSubAppId, 0 and the account's AppId.
    primary = apply_and_store(emulator, signed(None), b"abc")["vodSessionKey"]
    assert ugc(emulator, "ApplyUploadUGC", {"signature": signed(0), "vodSessionKey": primary})["code"] == 0
    assert ugc(emulator, "CommitUploadUGC", {"signature": signed(1500000001), "vodSessionKey": primary})["code"] == 0


def test_a_cover_is_replaced_only_with_the_files_own_source_context(emulator: Handle, signing: SigningStub) -> None:
    done = upload(emulator, signing)
    file_id = done["commit"]["fileId"]
    before = emulator.app.media.get(file_id)
    assert before is not None
    # The FileId is public (it is in the media URL); a signature of another intent cannot replace its cover.
    cover = {"fileId": file_id, "coverName": "poster", "coverType": "jpg", "coverSize": 5, "uploadFromWeb": True}
    stranger = ugc(emulator, "ApplyUploadUGC", {"signature": signing.sign(signing.new_upload())["signature"], **cover})
    refused_as_not_its_own(stranger, "sourceContext", "file")
    assert emulator.app.media.get(file_id) == before
    # The file's own intent can.
    data = ugc(emulator, "ApplyUploadUGC", {"signature": signing.sign(done["intent"])["signature"], **cover})["data"]
    cert = data["tempCertificate"]
    client = cos_client(emulator, data["storageRegionV5"], cert["secretId"], cert["secretKey"], cert["token"])
    client.put_object(
        Bucket=f"{data['storageBucket']}-{data['storageAppId']}", Key=data["cover"]["storagePath"][1:], Body=b"cover"
    )
    commit = ugc(
        emulator,
        "CommitUploadUGC",
        {"signature": signing.sign(done["intent"])["signature"], "vodSessionKey": data["vodSessionKey"]},
    )
    assert commit["code"] == 0 and commit["data"]["fileId"] == file_id, commit
    assert requests.get(commit["data"]["cover"]["url"], timeout=10).content == b"cover"


def test_apply_response_fields_and_resume(emulator: Handle, signing: SigningStub) -> None:
    body = {**apply_body(signing.sign("u")["signature"], 100), "coverName": "c", "coverType": "JPG", "coverSize": 5}
    data = ugc(emulator, "ApplyUploadUGC", body, host="vod2.dnsv1.com")["data"]
    assert data["storageRegionV5"] == data["StorageRegionV5"] == "ap-guangzhou"
    assert len(str(data["timestamp"])) == 10 and len(str(data["tempCertificate"]["expiredTime"])) == 10
    assert data["video"]["storagePath"].startswith(f"/{data['storageBucket']}/")
    assert data["cover"]["storagePath"].endswith(".jpg")
    assert data["storageAppId"] == data["appId"] == 1500000001
    resumed = ugc(
        emulator,
        "ApplyUploadUGC",
        {"signature": signing.sign("u")["signature"], "vodSessionKey": data["vodSessionKey"], "uploadFromWeb": True},
    )
    assert resumed["code"] == 0
    assert resumed["data"]["video"] == {**resumed["data"]["video"], "storagePath": data["video"]["storagePath"]}
    assert resumed["data"]["tempCertificate"]["secretId"] != data["tempCertificate"]["secretId"]
    stale = ugc(emulator, "ApplyUploadUGC", {"signature": signing.sign("u")["signature"], "vodSessionKey": "nope"})
    assert stale["code"] == 10003
    # Sessions are resumable for one day.
    emulator.app.store.execute("UPDATE sessions SET data = json_set(data, '$.created', ?)", (time.time() - 86_401,))
    expired = ugc(
        emulator,
        "ApplyUploadUGC",
        {"signature": signing.sign("u")["signature"], "vodSessionKey": data["vodSessionKey"]},
    )
    assert expired["code"] == 10003


def test_commit_requires_uploaded_bytes_and_is_idempotent(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    data = ugc(emulator, "ApplyUploadUGC", apply_body(signing.sign("u")["signature"], 3))["data"]
    early = ugc(
        emulator,
        "CommitUploadUGC",
        {"signature": signing.sign("u")["signature"], "vodSessionKey": data["vodSessionKey"]},
    )
    assert early["code"] == 10005
    done = upload(emulator, signing, b"abc")
    again = ugc(
        emulator,
        "CommitUploadUGC",
        {"signature": signing.sign(done["intent"])["signature"], "vodSessionKey": done["apply"]["vodSessionKey"]},
    )
    assert again["data"] == done["commit"]
    callbacks.wait(lambda evs: any(e.get("EventType") == "NewFileUpload" for e in evs))
    wait_until_pushed(emulator)  # a duplicate would have been delivered by now
    assert len(callbacks.of_type("NewFileUpload")) == 1


def test_signature_parameters_reach_the_event(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    signing.options = {"classId": 7, "storageRegion": "ap-chongqing", "vodSubAppId": 1500000001}
    done = upload(emulator, signing, b"x" * 1000)
    assert done["apply"]["storageRegionV5"] == "ap-chongqing" and done["apply"]["storageRegion"] == "cq"
    event = callbacks.wait(lambda evs: len(evs) >= 1)[0]
    assert set(event) >= {"EventType", "FileUploadEvent", "ProcedureStateChangeEvent", "Sign", "T"}
    task = event["FileUploadEvent"]
    assert task["FileId"] == done["commit"]["fileId"] and task["ProcedureTaskId"] == ""
    info = task["MediaBasicInfo"]
    assert (info["ClassId"], info["StorageRegion"], info["Type"], info["Name"]) == (7, "ap-chongqing", "mp4", "clip")
    assert task["MetaData"]["Md5"] == hashlib.md5(b"x" * 1000, usedforsecurity=False).hexdigest()
    assert event["T"] > time.time() + 590
    assert event["Sign"] == callback_auth.sign(SIGN_KEY, event["T"])


@pytest.mark.parametrize(
    ("mode", "statuses"), [("Finish", ["FINISH"]), ("Change", ["PROCESSING", "FINISH"]), ("None", [])]
)
def test_procedure_notifications(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, mode: str, statuses: list[str]
) -> None:
    signing.options = {
        "procedure": "LongVideoPreset",
        "taskNotifyMode": mode,
        "sessionContext": "req-7f3c",
        "taskPriority": 3,
    }
    done = upload(emulator, signing)
    first = callbacks.wait(lambda evs: len(evs) >= 1)[0]
    task_id = first["FileUploadEvent"]["ProcedureTaskId"]
    assert task_id.startswith("1500000001-Procedure-")
    if not statuses:
        # A control upload notified of every change, made after: its FINISH comes a procedure delay later than
        # this upload's FINISH would have, so by then that one would be in.
        signing.options = {**signing.options, "taskNotifyMode": "Change"}
        control = upload(emulator, signing)["commit"]["fileId"]
        callbacks.wait(
            lambda evs: any((e.get("ProcedureStateChangeEvent") or {}).get("Status") == "FINISH" for e in evs)
        )
        assert {e["ProcedureStateChangeEvent"]["FileId"] for e in callbacks.of_type("ProcedureStateChanged")} == {
            control
        }
        return
    callbacks.wait(lambda evs: len([e for e in evs if e["EventType"] == "ProcedureStateChanged"]) >= len(statuses))
    events = [e["ProcedureStateChangeEvent"] for e in callbacks.of_type("ProcedureStateChanged")]
    assert [e["Status"] for e in events] == statuses
    final = events[-1]
    assert (final["TaskId"], final["FileId"], final["SessionContext"]) == (
        task_id,
        done["commit"]["fileId"],
        "req-7f3c",
    )
    assert (final["TasksNotifyMode"], final["TasksPriority"]) == (mode, 3)
    transcode = final["MediaProcessResultSet"][0]
    assert transcode["Type"] == "Transcode" and transcode["TranscodeTask"]["Status"] == "SUCCESS"
    assert transcode["TranscodeTask"]["Output"]["Md5"] == final["MetaData"]["Md5"]


def test_push_duplicates_and_retries(emu_config: Config, signing: SigningStub, callbacks: CallbackReceiver) -> None:
    with start(replace(emu_config, duplicate_deliveries=2)) as emulator:
        upload(emulator, signing)
        events = callbacks.wait(lambda evs: len(evs) >= 2)
        assert events[0]["FileUploadEvent"]["FileId"] == events[1]["FileUploadEvent"]["FileId"]
    callbacks.events.clear()
    callbacks.delay = 0.4
    with start(replace(emu_config, push_timeout=0.2)) as emulator:
        upload(emulator, signing)
        callbacks.wait(lambda evs: len(evs) >= 3)  # 1 send + 2 retries, each timed out by the emulator
        deliveries = emulator.app.bus.deliveries
        assert [d["attempt"] for d in deliveries] == [0, 1, 2] and all("error" in d for d in deliveries)


def test_state_survives_restart(restartable: Callable[[], Handle], signing: SigningStub) -> None:
    emulator = restartable()
    done = upload(emulator, signing, b"persisted")
    once = raw_signature(now_pairs(oneTimeValid=1))
    assert ugc(emulator, "ApplyUploadUGC", apply_body(once, 1))["code"] == 0
    emulator = restartable()
    path = done["commit"]["video"]["url"].split("/_cos/", 1)[1]  # the port changed: same path, new base
    assert requests.get(f"{emulator.url}/_cos/{path}", timeout=10).content == b"persisted"
    again = ugc(
        emulator,
        "CommitUploadUGC",
        {"signature": signing.sign(done["intent"])["signature"], "vodSessionKey": done["apply"]["vodSessionKey"]},
    )
    assert again["data"]["fileId"] == done["commit"]["fileId"]
    assert ugc(emulator, "ApplyUploadUGC", apply_body(once, 2))["code"] == 10004  # still remembered as used


def test_undelivered_push_resumes_after_restart(
    restartable: Callable[[], Handle], signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    callbacks.delay = 0.5  # the emulator stops while the first delivery is still in flight
    emulator = restartable()
    file_id = upload(emulator, signing)["commit"]["fileId"]
    wait_until(lambda: callbacks.arrived, "the first delivery never reached the receiver", timeout=15)
    restartable()  # stop + start on the same data directory, while the receiver still holds that delivery
    events = callbacks.wait(lambda evs: len(evs) >= 2)
    assert [e["FileUploadEvent"]["FileId"] for e in events] == [file_id, file_id]  # at-least-once


def test_concurrent_commits_create_the_media_once(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    intent = signing.new_upload()
    data = apply_and_store(emulator, signing.sign(intent)["signature"], b"abc")
    service = emulator.app.ugc
    create_media = service._create_media

    def slow_create_media(*args: Any) -> Any:
        time.sleep(0.3)  # widen the window between "not committed yet" and "mark committed"
        return create_media(*args)

    monkeypatch.setattr(service, "_create_media", slow_create_media)
    bodies = [
        {"signature": signing.sign(intent)["signature"], "vodSessionKey": data["vodSessionKey"]} for _ in range(4)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda body: ugc(emulator, "CommitUploadUGC", body), bodies))
    assert all(r["code"] == 0 for r in replies), replies
    assert all(r["data"] == replies[0]["data"] for r in replies)
    store = emulator.app.store
    assert store.one("SELECT count(*) AS n FROM events WHERE event_type = 'NewFileUpload'")["n"] == 1
    callbacks.wait(lambda evs: any(e.get("EventType") == "NewFileUpload" for e in evs))
    wait_until_pushed(emulator)  # a duplicate would have been delivered by now
    assert len(callbacks.of_type("NewFileUpload")) == 1
