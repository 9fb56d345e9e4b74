"""API 3.0 through the official tencentcloud-sdk-python-vod: PULL events, DescribeMediaInfos, DeleteMedia."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717 import models, vod_client

from tests.vodlocal.conftest import SECRET_ID, SECRET_KEY, SigningStub, upload
from vodlocal import Config, Handle, start
from vodlocal.events import file_deleted


@pytest.fixture
def pull_emulator(emu_config: Config) -> Iterator[Handle]:
    with start(replace(emu_config, mode="PULL", confirm_window=2.0, pull_wait=0.3, callback_url=None)) as handle:
        yield handle


def client(
    emulator: Handle, key: str = SECRET_KEY, secret_id: str = SECRET_ID, via_proxy: bool = False
) -> vod_client.VodClient:
    if via_proxy:  # real Host (vod.tencentcloudapi.com), emulator as HTTP proxy
        http = HttpProfile(protocol="http", proxy=emulator.url)
    else:  # endpoint override: Host is 127.0.0.1:<port>, dispatched on X-TC-Action
        http = HttpProfile(protocol="http", endpoint=emulator.url.removeprefix("http://"))
    return vod_client.VodClient(credential.Credential(secret_id, key), "ap-guangzhou", ClientProfile(httpProfile=http))


def pull(vod: vod_client.VodClient) -> list[models.EventContent]:
    return list(vod.PullEvents(models.PullEventsRequest()).EventSet or [])


def confirm(vod: vod_client.VodClient, handles: list[str]) -> None:
    req = models.ConfirmEventsRequest()
    req.EventHandles = handles
    vod.ConfirmEvents(req)


CONTROL = "control-event"


def pulled_until_a_control_is_due_again(emulator: Handle, vod: vod_client.VodClient) -> list[models.EventContent]:
    """What PullEvents hands out, besides a control event pulled now and never confirmed, until the control is
    handed out again: its confirm window has then passed, and so has that of every event pulled before it, so an
    unconfirmed one would be among these. The positive signal that an empty answer is final, not merely early.
    (With injected duplicates the control's fresh copies come first: only a lease beyond them is a redelivery.)"""
    emulator.app.bus.emit(file_deleted(CONTROL))
    others: list[models.EventContent] = []
    leases = 0
    deadline = time.monotonic() + 3 * emulator.app.config.confirm_window + 5
    while leases <= emulator.app.config.duplicate_deliveries:
        assert time.monotonic() < deadline, "the control event never came back"
        for event in pull(vod):
            if event.EventType == "FileDeleted" and event.FileDeleteEvent.FileIdSet == [CONTROL]:
                leases += 1
            else:
                others.append(event)
    return others


def test_pull_confirm_and_redelivery(pull_emulator: Handle, signing: SigningStub) -> None:
    vod = client(pull_emulator)
    assert pull(vod) == []
    done = upload(pull_emulator, signing)
    first = pull(vod)
    assert [e.EventType for e in first] == ["NewFileUpload"]
    assert first[0].FileUploadEvent.FileId == done["commit"]["fileId"]
    assert first[0].FileUploadEvent.MediaBasicInfo.SourceInfo.SourceType == "Upload"
    assert pull(vod) == []  # in flight, not yet due again
    time.sleep(2.1)
    again = pull(vod)
    assert [e.FileUploadEvent.FileId for e in again] == [done["commit"]["fileId"]]
    assert again[0].EventHandle != first[0].EventHandle
    with pytest.raises(TencentCloudSDKException) as stale:
        confirm(vod, [first[0].EventHandle])
    assert stale.value.code == "InvalidParameterValue"  # replaced by the redelivery's handle
    confirm(vod, [again[0].EventHandle])
    assert pulled_until_a_control_is_due_again(pull_emulator, vod) == []


def test_pull_returns_at_most_16(pull_emulator: Handle) -> None:
    for n in range(20):
        pull_emulator.app.bus.emit(file_deleted(f"id-{n}"))
    vod = client(pull_emulator, via_proxy=True)
    batch = pull(vod)
    assert len(batch) == 16
    confirm(vod, [e.EventHandle for e in batch])
    rest = pull(vod)
    assert [e.FileDeleteEvent.FileIdSet[0] for e in rest] == [f"id-{n}" for n in range(16, 20)]


def test_describe_and_delete_media(pull_emulator: Handle, signing: SigningStub) -> None:
    vod = client(pull_emulator)
    done = upload(pull_emulator, signing, b"payload")
    file_id = done["commit"]["fileId"]
    confirm(vod, [e.EventHandle for e in pull(vod)])
    req = models.DescribeMediaInfosRequest()
    req.FileIds = [file_id, "404"]
    info = vod.DescribeMediaInfos(req)
    assert info.NotExistFileIdSet == ["404"]
    media = info.MediaInfoSet[0]
    assert (media.FileId, media.MetaData.Size, media.BasicInfo.MediaUrl) == (file_id, 7, done["commit"]["video"]["url"])
    delete = models.DeleteMediaRequest()
    delete.FileId = file_id
    vod.DeleteMedia(delete)
    events = pull(vod)
    assert [(e.EventType, e.FileDeleteEvent.FileIdSet) for e in events] == [("FileDeleted", [file_id])]
    assert requests.get(done["commit"]["video"]["url"], timeout=10).status_code == 404
    with pytest.raises(TencentCloudSDKException) as gone:
        vod.DeleteMedia(delete)
    assert gone.value.code == "ResourceNotFound.FileNotExist"


def test_describe_media_infos_finds_a_file_in_its_own_application_only(
    pull_emulator: Handle, signing: SigningStub
) -> None:
    signing.options = {"oneTimeValid": 1, "vodSubAppId": 1500000009}
    done = upload(pull_emulator, signing)
    file_id = done["commit"]["fileId"]
    vod = client(pull_emulator)

    def described(sub_app_id: int | None) -> models.DescribeMediaInfosResponse:
        req = models.DescribeMediaInfosRequest()
        req.FileIds = [file_id]
        req.SubAppId = sub_app_id
        return vod.DescribeMediaInfos(req)

    [media] = described(1500000009).MediaInfoSet
    source = media.BasicInfo.SourceInfo
    assert (media.FileId, source.SourceType, source.SourceContext) == (file_id, "Upload", done["intent"])
    # The primary application has three names (none, 0, the AppId); the file is in none of them.
    for other in (None, 0, pull_emulator.app.config.app_id, 1500000008):
        answer = described(other)
        assert (answer.MediaInfoSet, answer.NotExistFileIdSet) == ([], [file_id]), other


def test_delete_media_finds_a_file_in_its_own_application_only(pull_emulator: Handle, signing: SigningStub) -> None:
    signing.options = {"oneTimeValid": 1, "vodSubAppId": 1500000009}
    file_id = upload(pull_emulator, signing)["commit"]["fileId"]
    vod = client(pull_emulator)
    confirm(vod, [e.EventHandle for e in pull(vod)])

    def delete(sub_app_id: int | None) -> None:
        req = models.DeleteMediaRequest()
        req.FileId = file_id
        req.SubAppId = sub_app_id
        vod.DeleteMedia(req)

    for other in (None, 0, pull_emulator.app.config.app_id, 1500000008):
        with pytest.raises(TencentCloudSDKException) as elsewhere:
            delete(other)
        assert elsewhere.value.code == "ResourceNotFound.FileNotExist", other
    assert pull_emulator.app.media.get(file_id) is not None and pull(vod) == []
    delete(1500000009)
    assert pull_emulator.app.media.get(file_id) is None
    assert [(e.EventType, e.FileDeleteEvent.FileIdSet) for e in pull(vod)] == [("FileDeleted", [file_id])]


def test_tc3_signature_is_verified(pull_emulator: Handle) -> None:
    with pytest.raises(TencentCloudSDKException) as bad:
        pull(client(pull_emulator, key="wrong"))
    assert bad.value.code == "AuthFailure.SignatureFailure"
    with pytest.raises(TencentCloudSDKException) as unknown:
        pull(client(pull_emulator, secret_id="AKIDnobody"))
    assert unknown.value.code == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize("filters", ["basicInfo", 5, {"a": 1}, [["basicInfo"]], [{"x": 1}]])
def test_describe_media_infos_rejects_bad_filters(pull_emulator: Handle, filters: object) -> None:
    with pytest.raises(TencentCloudSDKException) as bad:
        client(pull_emulator).call_json("DescribeMediaInfos", {"FileIds": ["1"], "Filters": filters})
    assert bad.value.code == "InvalidParameter"
