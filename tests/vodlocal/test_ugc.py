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
)
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
    once = signing.sign(signing.new_upload())["signature"]
    assert ugc(emulator, "PrepareUploadUGC", {"signature": once})["code"] == 0  # Prepare does not spend it
    opened = ugc(emulator, "ApplyUploadUGC", apply_body(once, 3))["data"]
    key = opened["vodSessionKey"]
    # The same Apply again (an SDK retry after a lost answer) gets the same session; any other is a replay.
    assert ugc(emulator, "ApplyUploadUGC", apply_body(once, 3))["data"]["vodSessionKey"] == key
    replay = ugc(emulator, "ApplyUploadUGC", apply_body(once, 4))
    assert (replay["code"], replay["message"]) == (10004, "duplicate vod signature")
    # A fresh signature joins the session on resume, and cannot open another one after that.
    fresh = signing.sign("u")["signature"]
    assert ugc(emulator, "ApplyUploadUGC", {"signature": fresh, "vodSessionKey": key})["code"] == 0
    assert ugc(emulator, "ApplyUploadUGC", apply_body(fresh, 3))["code"] == 10004
    other = ugc(emulator, "ApplyUploadUGC", apply_body(signing.sign("u")["signature"], 3))["data"]
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
        {"signature": signing.sign("u")["signature"], "vodSessionKey": done["apply"]["vodSessionKey"]},
    )
    assert again["data"] == done["commit"]
    callbacks.wait(lambda evs: any(e.get("EventType") == "NewFileUpload" for e in evs))
    time.sleep(0.3)  # grace period: a duplicate delivery would arrive within it
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
        time.sleep(0.8)
        assert callbacks.of_type("ProcedureStateChanged") == []
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
        {"signature": signing.sign("c")["signature"], "vodSessionKey": done["apply"]["vodSessionKey"]},
    )
    assert again["data"]["fileId"] == done["commit"]["fileId"]
    assert ugc(emulator, "ApplyUploadUGC", apply_body(once, 2))["code"] == 10004  # still remembered as used


def test_undelivered_push_resumes_after_restart(
    restartable: Callable[[], Handle], signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    callbacks.delay = 0.5  # the emulator stops while the first delivery is still in flight
    emulator = restartable()
    file_id = upload(emulator, signing)["commit"]["fileId"]
    time.sleep(0.1)
    restartable()  # stop + start on the same data directory
    events = callbacks.wait(lambda evs: len(evs) >= 2)
    assert [e["FileUploadEvent"]["FileId"] for e in events] == [file_id, file_id]  # at-least-once


def test_concurrent_commits_create_the_media_once(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = apply_and_store(emulator, signing.sign(signing.new_upload())["signature"], b"abc")
    service = emulator.app.ugc
    create_media = service._create_media

    def slow_create_media(*args: Any) -> Any:
        time.sleep(0.3)  # widen the window between "not committed yet" and "mark committed"
        return create_media(*args)

    monkeypatch.setattr(service, "_create_media", slow_create_media)
    bodies = [{"signature": signing.sign("u")["signature"], "vodSessionKey": data["vodSessionKey"]} for _ in range(4)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda body: ugc(emulator, "CommitUploadUGC", body), bodies))
    assert all(r["code"] == 0 for r in replies), replies
    assert all(r["data"] == replies[0]["data"] for r in replies)
    store = emulator.app.store
    assert store.one("SELECT count(*) AS n FROM events WHERE event_type = 'NewFileUpload'")["n"] == 1
    callbacks.wait(lambda evs: any(e.get("EventType") == "NewFileUpload" for e in evs))
    time.sleep(0.3)  # grace period: a duplicate delivery would arrive within it
    assert len(callbacks.of_type("NewFileUpload")) == 1
