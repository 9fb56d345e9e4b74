"""vodup, the Python upload client, as a library against the whole local stack: our API (`chalice local`, the local
DynamoDB) signs, vodlocal stores and pushes NewFileUpload to our callback, and `GET /videos` shows the result."""

from __future__ import annotations

import _thread
import hashlib
import os
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chalicelib import vod_signature
from tests.conftest import TokenFactory, call, vodlocal_for, wait_for_video
from tests.signing_stub import SigningStub
from vodlocal import Handle, start
from vodup import (
    ApiClient,
    ApiSigner,
    DuplicateSignature,
    Network,
    Progress,
    SignatureExpired,
    UploadCancelled,
    Uploader,
    UploadInterrupted,
)

MiB = 1 << 20
UGC_ACTIONS = ("PrepareUploadUGC", "ApplyUploadUGC", "CommitUploadUGC")


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


class RecordingSigner(ApiSigner):
    """Our API's signer, remembering every signature it handed out."""

    def __init__(self, api: str, token: str, **intent: object) -> None:
        super().__init__(ApiClient(api, token), dict(intent))
        self.issued: list[str] = []

    def __call__(self) -> str:
        self.issued.append(super().__call__())
        return self.issued[-1]


class RecordingApi(ApiClient):
    """Our API's client, remembering every request it made (method, path)."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(base_url, token)
        self.asked: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        self.asked.append((method, path))
        return super().request(method, path, body, **params)


def uploader(signer: Callable[[], str], vod: Handle, tmp_path: Path, parallel: int = 2) -> Uploader:
    """1 MiB parts (COS's minimum) keep the files small; short retry pauses keep the error cases quick."""
    return Uploader(
        signer,
        part_size=MiB,
        parallel=parallel,
        retry_delay=0.01,
        state_dir=tmp_path / "state",
        network=Network(emulator=vod.url),
    )


def ctrl_c_after_the_first_part(up: Uploader, path: Path) -> UploadInterrupted:
    """Uploads ``path`` until its first part is stored, then pauses and sends Ctrl-C to the thread running it."""

    def interrupt_when_paused(progress: Progress) -> None:
        if progress.sent:
            up.pause()
            threading.Thread(target=_thread.interrupt_main).start()

    with pytest.raises(UploadInterrupted) as paused:
        up.upload(path, on_progress=interrupt_when_paused)
    return paused.value


def ugc_requests(vod: Handle) -> list[dict[str, object]]:
    return [r for r in vod.requests() if r.get("op") in UGC_ACTIONS]


def test_upload_with_cover_one_time_signatures_throughout_and_only_its_owner_sees_it(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, stage_env: dict[str, str], tmp_path: Path
) -> None:
    source, cover = os.urandom(3 * MiB + 4321), os.urandom(50_000)
    (tmp_path / "clip.mp4").write_bytes(source)
    (tmp_path / "cover.jpg").write_bytes(cover)
    alice = token_for("alice")
    signer = RecordingSigner(chalice_local, alice, title="With cover", withCover=True)
    progress: list[Progress] = []
    result = uploader(signer, vodlocal, tmp_path).upload(tmp_path / "clip.mp4", tmp_path / "cover.jpg", progress.append)

    assert result.upload_id == signer.upload_id and not result.resumed
    assert result.attribution in ("attributed", "duplicate") and result.attribution_error is None
    video = wait_for_video(chalice_local, alice, result.file_id)
    assert (video["uploadId"], video["title"], video["size"]) == (result.upload_id, "With cover", len(source))
    assert md5_of(fetch(video["mediaUrl"])) == md5_of(source) == video["md5"]
    assert md5_of(fetch(video["coverUrl"])) == md5_of(cover)
    assert (result.media_url, result.cover_url) == (video["mediaUrl"], video["coverUrl"])
    assert progress[-1] == Progress(len(source) + len(cover), len(source) + len(cover), resumed=False)
    # One fresh one-time signature from our API per VOD request, each accepted: Prepare, Apply, Commit.
    requests = ugc_requests(vodlocal)
    assert [r["op"] for r in requests] == list(UGC_ACTIONS) and not any("code" in r for r in requests)
    assert len(set(signer.issued)) == len(signer.issued) == len(requests)
    key = stage_env["VOD_SECRET_KEY"]
    assert all(vod_signature.verify(s, key).params.options.oneTimeValid == 1 for s in signer.issued)
    # Four parts of the video, one of the cover, each checked against its MD5.
    assert len(vodlocal.requests("UploadPart")) == 5
    status, mine = call("GET", f"{chalice_local}/videos", token=alice)
    assert status == 200 and [v["fileId"] for v in mine["videos"]] == [result.file_id]
    assert call("GET", f"{chalice_local}/videos", token=token_for("bob")) == (200, {"videos": [], "nextCursor": None})
    assert call("GET", f"{chalice_local}/videos/{result.file_id}", token=token_for("bob"))[0] == 404
    assert not list((tmp_path / "state").iterdir())  # nothing left to resume


def test_the_finished_upload_is_reported_and_attributed_before_vods_event(
    chalice_local: str, stage_env: dict[str, str], token_for: TokenFactory, tmp_path: Path, vod_port: int
) -> None:
    """vodlocal holds every event for a minute (a reorder group that never fills): the upload is attributed by
    vodup's report alone. A plain callable as get_signature reports nothing."""
    (tmp_path / "clip.mp4").write_bytes(os.urandom(MiB + 17))
    alice = token_for("alice")
    held = vodlocal_for(
        chalice_local, stage_env, tmp_path / "vodlocal", port=vod_port, reorder_window=2, reorder_hold=60
    )
    with start(held) as vod:
        api = RecordingApi(chalice_local, alice)
        result = uploader(ApiSigner(api), vod, tmp_path).upload(tmp_path / "clip.mp4")
        assert (result.attribution, result.attribution_error) == ("attributed", None)
        assert api.asked[-1] == ("POST", f"/uploads/{result.upload_id}/complete")
        status, upload = call("GET", f"{chalice_local}/uploads/{result.upload_id}", token=alice)
        assert (status, upload["status"], upload["video"]["fileId"]) == (200, "completed", result.file_id)
        assert vod.app.bus.deliveries == [], "vodlocal pushed the event: the attribution does not prove the report"

        unnamed = ApiSigner(ApiClient(chalice_local, alice))
        plain = uploader(lambda: unnamed(), vod, tmp_path).upload(tmp_path / "clip.mp4")
        assert (plain.attribution, plain.attribution_error) == (None, None)
        assert call("GET", f"{chalice_local}/uploads/{unnamed.upload_id}", token=alice)[1]["status"] == "open"


def test_a_failed_report_leaves_the_upload_to_vods_event(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    """The API cannot attribute a FileId that is not the intent's: the upload itself succeeded, the result
    says why the report failed, and VOD's event attributes the file."""

    class MisreportingSigner(ApiSigner):
        def done(self, file_id: str) -> str:
            return super().done("5285890799999999999")

    (tmp_path / "clip.mp4").write_bytes(os.urandom(MiB))
    alice = token_for("alice")
    result = uploader(MisreportingSigner(ApiClient(chalice_local, alice)), vodlocal, tmp_path).upload(
        tmp_path / "clip.mp4"
    )
    assert result.attribution is None and result.attribution_error is not None
    assert "422 file_refused" in result.attribution_error, result.attribution_error
    assert wait_for_video(chalice_local, alice, result.file_id)["uploadId"] == result.upload_id


def test_credentials_expiring_mid_upload_are_renewed_with_the_same_session(
    chalice_local: str, token_for: TokenFactory, stage_env: dict[str, str], tmp_path: Path, vod_port: int
) -> None:
    # vodlocal's temporary COS credentials live 2 s; the upload pauses after its first part for 3 s.
    vod = start(vodlocal_for(chalice_local, stage_env, tmp_path / "vodlocal", port=vod_port, cert_ttl=2))
    try:
        source = os.urandom(6 * MiB)
        (tmp_path / "clip.mp4").write_bytes(source)
        alice = token_for("alice")
        up = uploader(RecordingSigner(chalice_local, alice), vod, tmp_path, parallel=1)

        def pause_once(progress: Progress) -> None:
            if progress.sent == MiB:
                up.pause()  # from a worker thread; resumed from a third one
                threading.Timer(3.0, up.resume).start()

        result = up.upload(tmp_path / "clip.mp4", on_progress=pause_once)
        applies = vod.requests("ApplyUploadUGC")
        assert len(applies) >= 2, "the credentials were never renewed"
        assert len(vod.requests("InitiateMultipartUpload")) == 1  # one multipart upload, one session
        assert not [r for r in vod.requests() if r.get("error")], "COS refused a request"
        video = wait_for_video(chalice_local, alice, result.file_id)
        assert md5_of(fetch(video["mediaUrl"])) == md5_of(source)
    finally:
        vod.stop()


def test_cancel_from_another_thread_aborts_the_multipart_upload(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(os.urandom(5 * MiB))
    alice = token_for("alice")
    signer = ApiSigner(ApiClient(chalice_local, alice))
    up = uploader(signer, vodlocal, tmp_path, parallel=1)

    def cancel_after_first_part(progress: Progress) -> None:
        if progress.sent:
            up.pause()
            threading.Thread(target=up.cancel).start()

    with pytest.raises(UploadCancelled, match=r"^upload cancelled$"):
        up.upload(tmp_path / "clip.mp4", on_progress=cancel_after_first_part)
    assert len(vodlocal.requests("UploadPart")) == 1
    assert len(vodlocal.requests("AbortMultipartUpload")) == 1 and not vodlocal.requests("CommitUploadUGC")
    assert not list((tmp_path / "state").iterdir())  # a cancelled upload is not resumed
    # The API was told: the intent is cancelled, its slot free, and it signs no more for it.
    status, intent = call("GET", f"{chalice_local}/uploads/{signer.upload_id}", token=alice)
    assert (status, intent["status"]) == (200, "cancelled")


def test_ctrl_c_while_paused_keeps_the_stored_parts_for_a_resume(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    source = os.urandom(4 * MiB)
    (tmp_path / "clip.mp4").write_bytes(source)
    alice = token_for("alice")
    up = uploader(ApiSigner(ApiClient(chalice_local, alice)), vodlocal, tmp_path, parallel=1)
    paused = ctrl_c_after_the_first_part(up, tmp_path / "clip.mp4")
    assert (paused.sent, paused.total) == (MiB, len(source))

    progress: list[Progress] = []
    result = uploader(ApiSigner(ApiClient(chalice_local, alice)), vodlocal, tmp_path).upload(
        tmp_path / "clip.mp4", on_progress=progress.append
    )
    assert result.resumed and progress[0] == Progress(MiB, len(source), resumed=True)
    assert len(vodlocal.requests("UploadPart")) == 4
    assert md5_of(fetch(wait_for_video(chalice_local, alice, result.file_id)["mediaUrl"])) == md5_of(source)


def test_a_resume_signs_for_the_stored_intent_and_never_for_a_new_one(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(os.urandom(3 * MiB))
    alice = token_for("alice")
    first = ApiSigner(ApiClient(chalice_local, alice))
    ctrl_c_after_the_first_part(uploader(first, vodlocal, tmp_path, parallel=1), tmp_path / "clip.mp4")

    # A new process: its signer knows no intent, and takes the stored one. Every signature it asks for (the
    # re-apply, the commit) is for that intent; no new intent is created.
    api = RecordingApi(chalice_local, alice)
    result = uploader(ApiSigner(api), vodlocal, tmp_path).upload(tmp_path / "clip.mp4")
    assert result.resumed and result.upload_id == first.upload_id
    intent = f"/uploads/{first.upload_id}"
    assert len(api.asked) >= 3 and set(api.asked) == {("POST", f"{intent}/signature"), ("POST", f"{intent}/complete")}
    assert wait_for_video(chalice_local, alice, result.file_id)["uploadId"] == first.upload_id

    # A session opened by a get_signature with no intent (a plain callable here) cannot be resumed with an intent's
    # signatures: VOD keeps the sourceContext it was opened with. The upload starts over, on a new intent.
    (tmp_path / "clip.mp4").write_bytes(os.urandom(3 * MiB))
    unnamed = ApiSigner(ApiClient(chalice_local, alice))
    ctrl_c_after_the_first_part(uploader(lambda: unnamed(), vodlocal, tmp_path, parallel=1), tmp_path / "clip.mp4")
    api = RecordingApi(chalice_local, alice)
    result = uploader(ApiSigner(api), vodlocal, tmp_path).upload(tmp_path / "clip.mp4")
    assert not result.resumed and api.asked[0] == ("POST", "/uploads") and result.upload_id != unnamed.upload_id
    assert wait_for_video(chalice_local, alice, result.file_id)["uploadId"] == result.upload_id
    assert len(vodlocal.requests("InitiateMultipartUpload")) == 3  # the first upload's, the unnamed one's, this one's


def test_vod_error_codes_become_clear_exceptions(
    chalice_local: str, vodlocal: Handle, token_for: TokenFactory, stage_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x" * 1000)
    # A signing server whose clock is two hours behind: every signature expired an hour ago.
    late = SigningStub(stage_env["VOD_SECRET_ID"], stage_env["VOD_SECRET_KEY"], "", clock_offset=-7200)
    with pytest.raises(SignatureExpired) as expired:
        uploader(lambda: late.sign("late")["signature"], vodlocal, tmp_path).upload(tmp_path / "clip.mp4")
    assert expired.value.code == 10010 and "signature expired" in str(expired.value)

    # A get_signature that hands out one one-time signature again and again: vodlocal lets it serve the session
    # its Apply opened (as Tencent's mobile SDKs need, vodlocal/README.md), and refuses it for a second upload.
    signer = ApiSigner(ApiClient(chalice_local, token_for("alice")))
    first = signer()
    uploader(lambda: first, vodlocal, tmp_path).upload(tmp_path / "clip.mp4")
    with pytest.raises(DuplicateSignature) as reused:
        uploader(lambda: first, vodlocal, tmp_path).upload(tmp_path / "clip.mp4")
    assert reused.value.code == 10004 and "fresh one on every call" in str(reused.value)
