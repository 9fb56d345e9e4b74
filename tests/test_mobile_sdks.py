"""Tencent's Android, iOS and mini-program upload SDKs, replayed request by request (tests/mobile_clients.py)
against vodlocal, with their signatures from our API and their events pulled and applied by the PULL
consumer: each upload ends attributed to its user exactly once."""

from __future__ import annotations

import os
from typing import Any, Literal

import pytest

from chalicelib import container
from chalicelib.policy import ClientKind
from tests.conftest import ApiFactory, TokenFactory, bearer
from tests.mobile_clients import Media, Network, SigningApi, TXUGCPublish, VodWxUploader
from tests.test_pull_consumer import CONSUMER_SECONDS, as_user, attributed_file
from tests.vodlocal.conftest import MiB, apply_and_store, ugc
from vodlocal import Handle

VIDEO = Media(os.urandom(2 * MiB + 1000))  # three parts of the SDK's 1 MiB


class App:
    """An app built on one SDK, as one user: it signs through our API as docs/sdk-wiring.md says."""

    def __init__(self, api: Any, token: str) -> None:
        self.api, self.token = api, token

    def signing(self, client: ClientKind, body: dict[str, Any] | None = None) -> SigningApi:
        return SigningApi(as_user(self.api, self.token), client, body or {"title": "phone clip"})

    def attributed(self, signing: SigningApi, file_id: str | None, **outcomes: int) -> None:
        """The consumer applies the queued events with these outcomes, and the upload is the user's only video."""
        report = container.services().pull_consumer.run(CONSUMER_SECONDS)
        assert report.outcomes == (outcomes or {"attributed": 1}), report
        assert signing.upload_id is not None and file_id is not None
        assert attributed_file(self.api, self.token, signing.upload_id) == file_id
        videos = self.api.get("/videos", headers=bearer(self.token)).json_body["videos"]
        assert [video["fileId"] for video in videos] == [file_id]


@pytest.fixture
def app(pull_vod: Handle, api_factory: ApiFactory, token_for: TokenFactory) -> App:
    return App(api_factory(), token_for("alice"))


def actions(network: Network) -> list[str]:
    return [action for action, _ in network.sent]


@pytest.mark.parametrize("platform", ["android", "ios"])
def test_one_signature_goes_to_prepare_apply_and_commit(
    pull_vod: Handle, app: App, platform: Literal["android", "ios"]
) -> None:
    network = Network(pull_vod)
    signing = app.signing(platform)
    result = TXUGCPublish(network, platform).publish_video(signing.signature(), VIDEO)
    assert result.code == 0, result
    assert actions(network) == ["PrepareUploadUGC", "ApplyUploadUGC", "CommitUploadUGC"]
    assert len({body["signature"] for _, body in network.sent}) == 1
    app.attributed(signing, result.video_id)


def test_an_apply_and_a_commit_resent_after_lost_answers_make_one_upload(pull_vod: Handle, app: App) -> None:
    network = Network(pull_vod, lose={"ApplyUploadUGC": 1, "CommitUploadUGC": 2})
    signing = app.signing("android")
    result = TXUGCPublish(network).publish_video(signing.signature(), VIDEO)
    assert result.code == 0, result
    applies = [body for action, body in network.sent if action == "ApplyUploadUGC"]
    assert len(applies) == 2 and applies[0] == applies[1]  # the same request, the same signature
    assert len(network.signatures("CommitUploadUGC")) == 3
    assert len(pull_vod.app.store.query("SELECT session_key FROM sessions")) == 1  # the retry got its session
    app.attributed(signing, result.video_id)


def test_cancel_then_resume_with_a_new_signature_and_the_stored_session_key(pull_vod: Handle, app: App) -> None:
    network = Network(pull_vod)
    sdk = TXUGCPublish(network, cancel_after_parts=1)
    signing = app.signing("android")
    assert sdk.publish_video(signing.signature(), VIDEO).code == 1017  # canclePublish()
    [record] = sdk.prefs.values()
    sent_before = len(pull_vod.requests("UploadPart"))
    # The app's resume: a new publishVideo with a new signature from POST /uploads/{id}/signature.
    result = sdk.publish_video(signing.signature(), VIDEO)
    assert result.code == 0, result
    first, resumed = (body for action, body in network.sent if action == "ApplyUploadUGC")
    assert resumed["vodSessionKey"] == record["vodSessionKey"] and resumed["signature"] != first["signature"]
    assert network.signatures("CommitUploadUGC") == [resumed["signature"]]
    assert len(pull_vod.requests("UploadPart")) - sent_before == 2  # COS kept the first part
    assert len(pull_vod.requests("InitiateMultipartUpload")) == 1 and sdk.prefs == {}
    app.attributed(signing, result.video_id)


def test_a_stored_session_resumes_only_with_a_signature_of_its_own_intent(pull_vod: Handle, app: App) -> None:
    network = Network(pull_vod)
    sdk = TXUGCPublish(network, cancel_after_parts=1)
    first = app.signing("android")
    assert sdk.publish_video(first.signature(), VIDEO).code == 1017
    [record] = sdk.prefs.values()
    # Wired wrong: a new intent for the same video. The SDK sends its stored session key with that intent's
    # signature; VOD refuses it and the SDK drops its resume record, so the next publish starts over.
    second = app.signing("android")
    assert sdk.publish_video(second.signature(), VIDEO).code == 1001
    assert network.sent[-1] == ("ApplyUploadUGC", {**network.sent[-1][1], "vodSessionKey": record["vodSessionKey"]})
    assert [r.get("code") for r in pull_vod.requests("ApplyUploadUGC")] == [None, 10002] and sdk.prefs == {}
    result = sdk.publish_video(second.signature(), VIDEO)
    assert result.code == 0, result
    app.attributed(second, result.video_id)
    assert first.upload_id is not None and attributed_file(app.api, app.token, first.upload_id) is None


def test_another_users_session_key_gets_no_credentials_with_your_signature(
    pull_vod: Handle, app: App, token_for: TokenFactory
) -> None:
    alice = app.signing("android")
    alice_sdk = TXUGCPublish(Network(pull_vod), cancel_after_parts=1)
    assert alice_sdk.publish_video(alice.signature(), VIDEO).code == 1017
    [record] = alice_sdk.prefs.values()
    # Bob reads Alice's session key (it is in her app's storage, her browser's, vodup's state file) and
    # plants it as his SDK's resume record for his own video: his bytes must not land in her session.
    bob = App(app.api, token_for("bob"))
    bobs_video = Media(os.urandom(5000), name="bob")
    planted = {"vodSessionKey": record["vodSessionKey"], "expiredTime": record["expiredTime"]}
    bob_sdk = TXUGCPublish(Network(pull_vod), prefs={bobs_video.key: planted})
    assert bob_sdk.publish_video(bob.signing("android").signature(), bobs_video).code == 1001
    assert [r.get("code") for r in pull_vod.requests("ApplyUploadUGC")] == [None, 10002]
    # Alice resumes with her own intent: her video, attributed to her; Bob has none.
    result = alice_sdk.publish_video(alice.signature(), VIDEO)
    assert result.code == 0, result
    app.attributed(alice, result.video_id)
    assert bob.api.get("/videos", headers=bearer(bob.token)).json_body["videos"] == []


def test_another_users_session_key_commits_nothing_with_your_signature(
    pull_vod: Handle, app: App, token_for: TokenFactory
) -> None:
    alice = app.signing("android")
    data = apply_and_store(pull_vod, alice.signature(), VIDEO.video)  # her bytes are in COS, not yet committed
    bobs = App(app.api, token_for("bob")).signing("android").signature()
    refused = ugc(pull_vod, "CommitUploadUGC", {"signature": bobs, "vodSessionKey": data["vodSessionKey"]})
    assert refused["code"] == 10002 and not pull_vod.app.store.query("SELECT file_id FROM media"), refused
    commit = ugc(pull_vod, "CommitUploadUGC", {"signature": alice.signature(), "vodSessionKey": data["vodSessionKey"]})
    assert commit["code"] == 0, commit
    app.attributed(alice, commit["data"]["fileId"])


def test_a_cover_is_uploaded_with_the_video(pull_vod: Handle, app: App) -> None:
    signing = app.signing("ios")
    result = TXUGCPublish(Network(pull_vod), "ios").publish_video(signing.signature(), Media(b"v" * 5000, b"jpg"))
    assert result.code == 0 and result.cover_url, result
    app.attributed(signing, result.video_id)
    video = app.api.get(f"/videos/{result.video_id}", headers=bearer(app.token)).json_body
    assert video["coverUrl"] == result.cover_url


@pytest.mark.parametrize("pull_vod", [{"cert_ttl": 1}], indirect=True)
def test_expired_cos_credentials_are_renewed_by_an_apply_with_the_session_key(pull_vod: Handle, app: App) -> None:
    network = Network(pull_vod)
    signing = app.signing("android")
    result = TXUGCPublish(network, stall_after_parts=1).publish_video(signing.signature(), VIDEO)
    assert result.code == 0, result
    first, renewal = (body for action, body in network.sent if action == "ApplyUploadUGC")
    assert renewal == {**first, "vodSessionKey": renewal["vodSessionKey"]}  # same signature, same fields
    parts = [r["status"] for r in pull_vod.requests() if "partNumber" in r["query"]]
    assert parts == [200, 403, 200, 200]  # COS refused the stale credentials once
    app.attributed(signing, result.video_id)


def test_the_mini_program_signs_each_apply_attempt_and_commits_with_the_last(pull_vod: Handle, app: App) -> None:
    network = Network(pull_vod, lose={"ApplyUploadUGC": 1})
    signing = app.signing("miniprogram")
    result = VodWxUploader(network, signing.signature).start(Media(b"w" * 5000, b"jpg"))
    assert result.code == 0 and result.cover_url, result
    applies = network.signatures("ApplyUploadUGC")
    assert "PrepareUploadUGC" not in actions(network) and len(set(applies)) == 2
    assert network.signatures("CommitUploadUGC") == applies[-1:]
    app.attributed(signing, result.video_id)


def test_a_second_upload_for_one_intent_is_kept_for_review_not_attributed(pull_vod: Handle, app: App) -> None:
    # Every answer to the Commit is lost: the app sees 1006 and publishes again with a new signature. Its
    # resume record went with the video's COS upload, so that is a new session and a second VOD file.
    network = Network(pull_vod, lose={"CommitUploadUGC": 4})
    sdk = TXUGCPublish(network)
    signing = app.signing("android")
    assert sdk.publish_video(signing.signature(), VIDEO).code == 1006
    again = sdk.publish_video(signing.signature(), VIDEO)
    assert again.code == 0, again
    files = [row["file_id"] for row in pull_vod.app.store.query("SELECT file_id FROM media")]
    assert len(files) == 2 and again.video_id in files
    [first] = [file_id for file_id in files if file_id != again.video_id]
    app.attributed(signing, first, attributed=1, rejected=1)
    [review] = container.services().storage.reviews.pending()
    assert (review["fileId"], review["kind"]) == (again.video_id, "rejected")


@pytest.mark.parametrize("pull_vod", [{"one_time_signatures": "strict"}], indirect=True)
def test_the_strict_rule_rejects_the_mobile_sdks(pull_vod: Handle, app: App) -> None:
    network = Network(pull_vod)
    sdk = TXUGCPublish(network)
    signing = app.signing("android")
    assert sdk.publish_video(signing.signature(), VIDEO).code == 1001  # Prepare spent it before the Apply
    assert sdk.publish_video(signing.signature(), VIDEO).code == 1006  # no Prepare now; the Apply spent it
    assert [r.get("code") for r in pull_vod.requests("CommitUploadUGC")] == [10004]
    assert container.services().pull_consumer.run(CONSUMER_SECONDS).pulled == 0
