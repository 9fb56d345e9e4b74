"""ModifyEventConfig / DescribeEventConfig through the official tencentcloud-sdk-python-vod, and the stored event
config governing delivery: mode, NotificationUrl, SignKey and the event switches."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models, vod_client

from chalicelib import callback_auth
from tests.vodlocal.conftest import (
    SECRET_ID,
    SECRET_KEY,
    SIGN_KEY,
    CallbackReceiver,
    SigningStub,
    refusing_url,
    upload,
    wait_until_pushed,
)
from tests.vodlocal.test_api3 import client, confirm, pull
from vodlocal import Config, Handle, start
from vodlocal.config import from_args

SEEDED = {  # what the emu_config fixture's flags seed: a callback URL turns both switches ON
    "Mode": "PUSH",
    "UploadMediaCompleteEventSwitch": "ON",
    "DeleteMediaCompleteEventSwitch": "ON",
    "PersistenceCompleteEventSwitch": "OFF",
}


def modify(vod: vod_client.VodClient, **fields: Any) -> models.ModifyEventConfigResponse:
    req = models.ModifyEventConfigRequest()
    for name, value in fields.items():
        assert hasattr(req, name), name
        setattr(req, name, value)
    return vod.ModifyEventConfig(req)


def describe(vod: vod_client.VodClient) -> dict[str, Any]:
    resp = vod.DescribeEventConfig(models.DescribeEventConfigRequest())
    assert resp.RequestId
    fields: dict[str, Any] = json.loads(resp.to_json_string())
    fields.pop("RequestId")
    return fields


def pull_until(vod: vod_client.VodClient, count: int, timeout: float = 10) -> list[models.EventContent]:
    events: list[models.EventContent] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        batch = pull(vod)
        if batch:
            confirm(vod, [e.EventHandle for e in batch])
        events += batch
    return events


def pulled_types(vod: vod_client.VodClient) -> list[str]:
    """Everything queued right now (the emulator's pull_wait bounds the wait), confirmed."""
    batch = pull(vod)
    if batch:
        confirm(vod, [e.EventHandle for e in batch])
    return [e.EventType for e in batch]


@pytest.fixture
def other_callbacks() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.stop()


def test_modify_then_describe_round_trips(emulator: Handle, other_callbacks: CallbackReceiver) -> None:
    vod = client(emulator)
    resp = modify(
        vod,
        SubAppId=1500000001,
        Mode="PULL",
        NotificationUrl=other_callbacks.url,
        UploadMediaCompleteEventSwitch="OFF",
        DeleteMediaCompleteEventSwitch="OFF",
        PersistenceCompleteEventSwitch="ON",
        SignKey="RotatedKey2024",
    )
    assert resp.RequestId
    expected = {
        "Mode": "PULL",
        "NotificationUrl": other_callbacks.url,
        "UploadMediaCompleteEventSwitch": "OFF",
        "DeleteMediaCompleteEventSwitch": "OFF",
        "PersistenceCompleteEventSwitch": "ON",
    }
    assert describe(vod) == expected
    assert describe(client(emulator, via_proxy=True)) == expected  # Host: vod.tencentcloudapi.com as well
    raw = vod.call_json("DescribeEventConfig", {"SubAppId": 1500000001})["Response"]
    assert set(raw) == {*expected, "RequestId"}  # as in the SDK model: the SignKey is never returned
    assert emulator.app.event_config.current().sign_key == "RotatedKey2024"
    assert set(vod.call_json("ModifyEventConfig", {})["Response"]) == {"RequestId"}  # nothing given: no change
    assert describe(vod) == expected


def test_partial_modify_keeps_other_fields(emulator: Handle, callbacks: CallbackReceiver) -> None:
    vod = client(emulator)
    assert describe(vod) == {**SEEDED, "NotificationUrl": callbacks.url}
    modify(vod, UploadMediaCompleteEventSwitch="OFF")
    assert describe(vod) == {**SEEDED, "NotificationUrl": callbacks.url, "UploadMediaCompleteEventSwitch": "OFF"}
    modify(vod, Mode="PULL")
    modify(vod, NotificationUrl="")  # an empty string clears the URL (documented)
    assert describe(vod) == {**SEEDED, "Mode": "PULL", "NotificationUrl": "", "UploadMediaCompleteEventSwitch": "OFF"}
    assert emulator.app.event_config.current().sign_key == SIGN_KEY  # untouched by all three
    modify(vod, SignKey="")  # clears the key (inferred: the docs only say letters and digits, at most 32)
    assert emulator.app.event_config.current().sign_key == ""


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Mode": "QUEUE"}, "InvalidParameterValue"),
        ({"Mode": "pull"}, "InvalidParameterValue"),
        ({"Mode": ""}, "InvalidParameterValue"),
        ({"UploadMediaCompleteEventSwitch": "on"}, "InvalidParameterValue"),
        ({"DeleteMediaCompleteEventSwitch": "TRUE"}, "InvalidParameterValue"),
        ({"PersistenceCompleteEventSwitch": ""}, "InvalidParameterValue"),
        ({"SignKey": "has-dash"}, "InvalidParameterValue"),
        ({"SignKey": "a" * 33}, "InvalidParameterValue"),
        ({"SignKey": "ключ"}, "InvalidParameterValue"),
        ({"NotificationUrl": "ftp://127.0.0.1/cb"}, "InvalidParameterValue"),
        ({"NotificationUrl": "not a url"}, "InvalidParameterValue"),
        ({"NotificationUrl": "http:///no-host"}, "InvalidParameterValue"),
        ({"UploadMediaCompleteEventSwitch": True}, "InvalidParameter"),
        ({"Mode": ["PULL"]}, "InvalidParameter"),
        ({"SubAppId": "1500000001"}, "InvalidParameter"),
        ({"SubAppId": -1}, "InvalidParameterValue.SubAppId"),
        ({"UploadMediaCompleteSwitch": "ON"}, "UnknownParameter"),  # a typo is not silently ignored
        # One bad field rejects the whole request: the valid Mode is not applied either.
        ({"Mode": "PULL", "SignKey": "bad key"}, "InvalidParameterValue"),
    ],
)
def test_invalid_values_are_rejected(
    emulator: Handle, callbacks: CallbackReceiver, params: dict[str, Any], code: str
) -> None:
    vod = client(emulator)
    with pytest.raises(TencentCloudSDKException) as bad:
        vod.call_json("ModifyEventConfig", params)
    assert bad.value.code == code
    assert describe(vod) == {**SEEDED, "NotificationUrl": callbacks.url}
    assert emulator.app.event_config.current().sign_key == SIGN_KEY


def test_describe_rejects_unknown_parameters(emulator: Handle) -> None:
    with pytest.raises(TencentCloudSDKException) as bad:
        client(emulator).call_json("DescribeEventConfig", {"Mode": "PULL"})
    assert bad.value.code == "UnknownParameter"


def test_switching_to_pull_sends_new_events_to_pull_events(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    vod = client(emulator)
    first = upload(emulator, signing)["commit"]["fileId"]
    callbacks.wait(lambda evs: len(evs) >= 1)
    assert pull(vod) == []  # PUSH mode: nothing is queued
    modify(vod, Mode="PULL")
    second = upload(emulator, signing)["commit"]["fileId"]
    events = pull_until(vod, 1)
    assert [(e.EventType, e.FileUploadEvent.FileId) for e in events] == [("NewFileUpload", second)]
    assert events[0].EventHandle
    modify(vod, Mode="PUSH")  # and back: the URL was kept
    third = upload(emulator, signing)["commit"]["fileId"]
    pushed = callbacks.wait(lambda evs: len(evs) >= 2)
    assert [e["FileUploadEvent"]["FileId"] for e in pushed] == [first, third]
    assert pulled_types(vod) == []


def test_changed_sign_key_and_url_apply_to_the_next_push(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver, other_callbacks: CallbackReceiver
) -> None:
    vod = client(emulator)
    upload(emulator, signing)
    old = callbacks.wait(lambda evs: len(evs) >= 1)[0]
    assert old["Sign"] == callback_auth.sign(SIGN_KEY, old["T"])
    modify(vod, SignKey="Rotated0123456789abcdefABCDEF01")  # 32 characters, the maximum
    upload(emulator, signing)
    new = callbacks.wait(lambda evs: len(evs) >= 2)[1]
    assert new["Sign"] == callback_auth.sign("Rotated0123456789abcdefABCDEF01", new["T"])
    assert new["T"] > time.time() + 590
    modify(vod, NotificationUrl=other_callbacks.url, SignKey="")
    file_id = upload(emulator, signing)["commit"]["fileId"]
    moved = other_callbacks.wait(lambda evs: len(evs) >= 1)[0]
    assert moved["FileUploadEvent"]["FileId"] == file_id
    assert "Sign" not in moved and "T" not in moved  # no SignKey, no Sign/T
    assert len(callbacks.events) == 2


def test_upload_switch_off_suppresses_new_file_upload(
    emulator: Handle, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    vod = client(emulator)
    modify(vod, UploadMediaCompleteEventSwitch="OFF")
    signing.options = {"procedure": "LongVideoPreset", "taskNotifyMode": "Finish"}
    file_id = upload(emulator, signing)["commit"]["fileId"]
    # ProcedureStateChanged has no switch: it still arrives, and NewFileUpload (sent first) never does.
    events = callbacks.wait(lambda evs: len(evs) >= 1)
    wait_until_pushed(emulator)  # the last event of this upload is delivered: nothing else of it can come
    assert [e["EventType"] for e in callbacks.events] == ["ProcedureStateChanged"]
    assert events[0]["ProcedureStateChangeEvent"]["FileId"] == file_id
    stored = emulator.app.store.one("SELECT count(*) AS n FROM events WHERE event_type = 'NewFileUpload'")
    assert stored is not None and stored["n"] == 0
    modify(vod, UploadMediaCompleteEventSwitch="ON")
    signing.options = {}
    again = upload(emulator, signing)["commit"]["fileId"]
    callbacks.wait(lambda evs: len(evs) >= 2)
    assert callbacks.of_type("NewFileUpload")[0]["FileUploadEvent"]["FileId"] == again


def test_delete_switch_governs_file_deleted(emu_config: Config, signing: SigningStub) -> None:
    with start(replace(emu_config, mode="PULL", callback_url=None, pull_wait=0.3)) as emulator:
        vod = client(emulator)
        modify(vod, DeleteMediaCompleteEventSwitch="OFF")
        ids = [upload(emulator, signing)["commit"]["fileId"] for _ in range(2)]
        assert [e.EventType for e in pull_until(vod, 2)] == ["NewFileUpload", "NewFileUpload"]
        delete = models.DeleteMediaRequest()
        delete.FileId = ids[0]
        vod.DeleteMedia(delete)
        assert pulled_types(vod) == []
        modify(vod, DeleteMediaCompleteEventSwitch="ON")
        delete.FileId = ids[1]
        vod.DeleteMedia(delete)
        events = pull_until(vod, 1)
        assert [(e.EventType, e.FileDeleteEvent.FileIdSet) for e in events] == [("FileDeleted", [ids[1]])]


def test_config_survives_a_restart(restartable: Callable[[], Handle], signing: SigningStub) -> None:
    emulator = restartable()
    modify(client(emulator), Mode="PULL", SignKey="Persisted42", PersistenceCompleteEventSwitch="ON")
    before = describe(client(emulator))
    emulator = restartable()  # same flags (they name a PUSH URL): the stored config still wins
    vod = client(emulator)
    assert describe(vod) == before
    assert before["Mode"] == "PULL" and before["PersistenceCompleteEventSwitch"] == "ON"
    assert emulator.app.event_config.current().sign_key == "Persisted42"
    file_id = upload(emulator, signing)["commit"]["fileId"]
    assert [e.FileUploadEvent.FileId for e in pull_until(vod, 1)] == [file_id]


def test_flags_seed_only_an_empty_data_dir(
    emu_config: Config, callbacks: CallbackReceiver, other_callbacks: CallbackReceiver
) -> None:
    with start(emu_config) as emulator:  # first start: seeded from the flags
        assert describe(client(emulator)) == {**SEEDED, "NotificationUrl": callbacks.url}
    changed = replace(emu_config, mode="PULL", callback_url=other_callbacks.url, sign_key="OtherKey")
    with start(changed) as emulator:  # nothing modified, but a config is stored: the new flags do not apply
        assert describe(client(emulator)) == {**SEEDED, "NotificationUrl": callbacks.url}
        assert emulator.app.event_config.current().sign_key == SIGN_KEY
    with start(replace(changed, data_dir=emu_config.data_dir.parent / "fresh")) as emulator:
        assert describe(client(emulator)) == {**SEEDED, "Mode": "PULL", "NotificationUrl": other_callbacks.url}


def test_without_a_delivery_target_the_seed_is_vods_default(emu_config: Config) -> None:
    with start(replace(emu_config, callback_url=None, sign_key=None)) as emulator:
        assert describe(client(emulator)) == {
            "Mode": "PUSH",
            "NotificationUrl": "",
            "UploadMediaCompleteEventSwitch": "OFF",
            "DeleteMediaCompleteEventSwitch": "OFF",
            "PersistenceCompleteEventSwitch": "OFF",
        }
        assert emulator.app.event_config.current().sign_key == ""


def test_environment_seeds_the_config_as_make_dev_passes_it(
    tmp_path: Path, signing: SigningStub, callbacks: CallbackReceiver
) -> None:
    env = {
        "VODLOCAL_SECRETS": f"{SECRET_ID}:{SECRET_KEY}",
        "VODLOCAL_CALLBACK_URL": callbacks.url,
        "VODLOCAL_SIGN_KEY": "EnvSignKey0123",
    }
    config = replace(from_args(["--port", "0", "--data-dir", str(tmp_path / "vodlocal")], env), push_backoff=())
    with start(config) as emulator:
        assert describe(client(emulator)) == {**SEEDED, "NotificationUrl": callbacks.url}
        upload(emulator, signing)
        event = callbacks.wait(lambda evs: len(evs) >= 1)[0]
        assert event["EventType"] == "NewFileUpload" and event["Sign"] == callback_auth.sign(
            "EnvSignKey0123", event["T"]
        )
        modify(client(emulator), UploadMediaCompleteEventSwitch="OFF")
    env["VODLOCAL_SIGN_KEY"] = "ChangedInTheEnv"
    with start(replace(from_args(["--port", "0", "--data-dir", str(tmp_path / "vodlocal")], env))) as emulator:
        assert describe(client(emulator))["UploadMediaCompleteEventSwitch"] == "OFF"
        assert emulator.app.event_config.current().sign_key == "EnvSignKey0123"


def test_pending_push_joins_the_pull_queue_when_the_mode_changes(
    emu_config: Config, signing: SigningStub, silent_url: str
) -> None:
    # A callback that never answers: the first attempt times out after 1 s, and its retry finds PULL mode.
    with start(replace(emu_config, callback_url=silent_url, push_timeout=1.0, pull_wait=0.3)) as emulator:
        vod = client(emulator)
        file_id = upload(emulator, signing)["commit"]["fileId"]
        modify(vod, Mode="PULL")  # while the first attempt waits for its reply
        events = pull_until(vod, 1)
        assert [(e.EventType, e.FileUploadEvent.FileId) for e in events] == [("NewFileUpload", file_id)]
        # Only the timed-out first attempt: no retry goes out after the switch.
        assert [d.get("timeout") for d in emulator.app.bus.deliveries] == [True]


def test_pending_push_retry_after_a_refused_connection_joins_the_pull_queue(
    emu_config: Config, signing: SigningStub
) -> None:
    # push_retry_on="network" (not VOD's documented rule) retries a refused connection after the 1 s backoff.
    config = replace(emu_config, callback_url=refusing_url(), push_retry_on="network", push_backoff=(1.0,))
    with start(replace(config, pull_wait=0.3)) as emulator:
        vod = client(emulator)
        file_id = upload(emulator, signing)["commit"]["fileId"]
        modify(vod, Mode="PULL")  # while the PUSH waits out its 1 s backoff
        events = pull_until(vod, 1)
        assert [(e.EventType, e.FileUploadEvent.FileId) for e in events] == [("NewFileUpload", file_id)]
        # At most the refused first attempt: no retry goes out after the switch.
        assert len(emulator.app.bus.deliveries) <= 1
