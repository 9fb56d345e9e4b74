"""The reference upload page (web/) in a real headless Chromium (Debian's `chromium`, driven by Playwright),
against the real local stack over HTTP: the API (`chalice local`), DynamoDB, the page's server
(devstack/web.py) and vodlocal, which the unmodified Web SDK reaches over HTTPS under its own host names
(devstack/browser.py). Nothing in the browser is stubbed: CORS preflights, file pickers, the SDK's browser
code and its localStorage resume all run as they would for a user.

A missing browser fails these tests (`make browser` installs it); it never skips them."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from devstack.browser import chromium_executable, local_stack_flags
from devstack.web import LocalPage, WebServer
from tests.conftest import ROOT, TokenFactory, call, free_port, vodlocal_for, with_policy
from tests.vodlocal.conftest import apply_and_store, ugc
from tests.waiting import wait_until
from vodlocal import Handle, start

MiB = 1 << 20
PARTS = 10
SCREENSHOT = ROOT / ".local" / "screenshots" / "upload-page.png"
# Headless and fit for a container (no sandbox without user namespaces, no GPU).
HEADLESS_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu"]
WAIT_MS = 30_000


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def web_port() -> int:
    return free_port()


@pytest.fixture
def stage_env(stage_env: dict[str, str], web_port: int) -> dict[str, str]:
    """The API allows the page's origin, http://127.0.0.1:<port>, and no other; uploads get a task flow, whose
    status VOD reports after the upload."""
    stage_env["CORS_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{web_port}"
    with_policy(stage_env, defaultProcedure="LongVideoPreset")
    return stage_env


@pytest.fixture
def vod(
    request: pytest.FixtureRequest, chalice_local: str, stage_env: dict[str, str], tmp_path: Path, vod_port: int
) -> Iterator[Handle]:
    """Parametrize it indirectly with a dict of `vodlocal.Config` fields to change."""
    changes = getattr(request, "param", {})
    data_dir, tls_dir = tmp_path / "vodlocal", tmp_path / "tls"
    with start(
        vodlocal_for(chalice_local, stage_env, data_dir, port=vod_port, tls_port=0, tls_dir=tls_dir, **changes)
    ) as h:
        yield h


@pytest.fixture
def site(chalice_local: str, stage_env: dict[str, str], web_port: int, vod: Handle) -> Iterator[WebServer]:
    # 1 MiB parts, one at a time: an upload of a few MiB has parts to pause, reload and count between.
    page = LocalPage(
        chalice_local, Path(stage_env["LOCAL_JWT_KEY_FILE"]), upload={"chunkSize": MiB, "chunkParallelLimit": 1}
    )
    with WebServer(page, port=web_port) as server:
        yield server


@pytest.fixture
def browser(vod: Handle, tmp_path: Path) -> Iterator[Any]:
    executable = chromium_executable()
    if executable is None:
        pytest.fail("Chromium is not installed: `make browser` (apt-get install chromium) or set CHROMIUM")
    assert vod.tls is not None and vod.tls_port is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile: no localStorage from another test
            executable_path=executable,
            headless=True,
            args=[*HEADLESS_FLAGS, *local_stack_flags(vod.tls_port, vod.tls.spki_sha256)],
            viewport={"width": 1000, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


class Page:
    """The upload page in the browser, by its data-testid hooks."""

    def __init__(self, context: Any, url: str) -> None:
        self.page = context.pages[0] if context.pages else context.new_page()
        # What the page said, for a failing test's report.
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.console.append(f"uncaught: {error}"))
        self.page.goto(url)

    def hook(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def sign_in(self, name: str) -> None:
        self.hook("signin-name").fill(name)
        self.hook("signin").click()
        self.page.wait_for_function(
            "n => document.querySelector('[data-testid=user]').textContent.includes(n)", arg=name
        )

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()

    def choose(self, video: Path, cover: Path | None = None) -> None:
        self.hook("file").set_input_files(video)
        if cover is not None:
            self.hook("cover").set_input_files(cover)

    def start_upload(self) -> str:
        """Clicks Upload; the id of the intent the page opens for it (its `POST /uploads`)."""
        with self.page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/uploads")) as opened:
            self.hook("upload").click()
        return str(opened.value.json()["uploadId"])

    def controls(self) -> dict[str, Any]:
        """The upload section's state: which controls are enabled, the files chosen, the progress shown."""
        progress = self.hook("progress")
        return {
            "state": progress.get_attribute("data-state"),
            "percent": progress.get_attribute("data-percent"),
            "bar": progress.locator("progress").evaluate("bar => bar.value"),
            "files": self.hook("file").evaluate("input => input.files.length"),
            **{testid: self.hook(testid).is_enabled() for testid in ("file", "upload", "pause", "resume", "cancel")},
        }

    def wait_for_state(self, state: str) -> None:
        try:
            self.page.wait_for_function(
                "s => document.querySelector('[data-testid=progress]').dataset.state === s", arg=state
            )
        except Exception:
            pytest.fail(f"the upload never reached {state!r}; the page's console:\n" + "\n".join(self.console[-30:]))

    def uploaded_file_id(self) -> str:
        """The FileId the finished upload reports ("Uploaded: <name> (file <FileId>)")."""
        text = str(self.hook("progress").text_content())
        return text.split("(file ")[1].split(")")[0]

    def wait_for_video(self, file_id: str) -> Any:
        item = self.page.locator(f'[data-testid=video][data-file-id="{file_id}"]')
        item.wait_for()
        return item

    def local_storage(self) -> dict[str, str]:
        stored: dict[str, str] = self.page.evaluate("() => Object.fromEntries(Object.entries(localStorage))")
        return stored

    def error(self) -> str:
        self.hook("error").wait_for()
        return str(self.hook("error").text_content())


def slow_network(page: Page) -> None:
    """A slow uplink (Chromium's own throttling, as DevTools applies it): parts take long enough to be
    interrupted between."""
    session = page.page.context.new_cdp_session(page.page)
    session.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2 * MiB},
    )


def done_parts(vod: Handle, after: int = 0) -> list[dict[str, Any]]:
    """UploadParts vodlocal stored (200), from the `after`-th request of its log on."""
    return [r for r in vod.requests()[after:] if r.get("op") == "UploadPart" and r["status"] == 200]


def part_numbers(parts: list[dict[str, Any]]) -> set[int]:
    return {int(part["query"]["partNumber"]) for part in parts}


def wait_for(condition: Callable[[], bool], page: Page) -> None:
    """Polls a condition on the stack's side while the page runs (the browser's own clock paces it)."""
    for _ in range(WAIT_MS // 50):
        if condition():
            return
        page.page.wait_for_timeout(50)
    pytest.fail("the condition never held")


def upload_slowly(browser: Any, site: WebServer, vod: Handle, user: str, path: Path, parts: int) -> tuple[Page, str]:
    """`user` signs in and uploads `path` over a slow uplink: the page once vodlocal has stored `parts` of the
    upload's parts, and the intent the page opened for it."""
    started = len(vod.requests())
    page = Page(browser, site.url)
    slow_network(page)
    page.sign_in(user)
    page.choose(path)
    intent = page.start_upload()
    wait_for(lambda: len(done_parts(vod, started)) >= parts, page)
    return page, intent


def pause(page: Page) -> None:
    page.hook("pause").click()
    page.wait_for_state("paused")


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(PARTS * MiB - 1000)
    path = tmp_path / "holiday.mp4"
    path.write_bytes(data)
    return path, data


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def video_of(api: str, token: str, file_id: str) -> dict[str, Any]:
    status, body = call("GET", f"{api}/videos/{file_id}", token=token)
    assert status == 200, body
    return dict(body)


def test_upload_with_a_cover_is_listed_and_playable_for_its_owner_only(
    site: WebServer, browser: Any, vod: Handle, chalice_local: str, token_for: TokenFactory, tmp_path: Path
) -> None:
    video, cover = os.urandom(3 * MiB + 4321), os.urandom(30_000)
    (tmp_path / "beach.mp4").write_bytes(video)
    (tmp_path / "beach.jpg").write_bytes(cover)
    page = Page(browser, site.url)
    page.sign_in("alice")
    page.choose(tmp_path / "beach.mp4", tmp_path / "beach.jpg")
    page.hook("upload").click()
    page.wait_for_state("done")
    assert "Uploaded: beach.mp4" in str(page.hook("progress").text_content())
    file_id = page.uploaded_file_id()
    item = page.wait_for_video(file_id)
    stored = video_of(chalice_local, token_for("alice"), file_id)
    assert stored["md5"] == md5_of(video) and md5_of(fetch(stored["coverUrl"])) == md5_of(cover)
    # The page plays the media URL: its <video> asked vodlocal for the stored bytes.
    assert item.locator("video").get_attribute("src") == stored["mediaUrl"]
    wait_for(lambda: any(r["path"].startswith("/_cos/") and r["method"] == "GET" for r in vod.requests()), page)
    assert md5_of(fetch(stored["mediaUrl"])) == md5_of(video)
    # The page follows the processing status as VOD's ProcedureStateChanged reaches the backend.
    expect(item.get_by_test_id("video-status")).to_have_text("processing: FINISH", timeout=WAIT_MS)
    # The browser's own CORS path: the SDK's COS requests were preflighted and answered by the bucket's rules.
    assert vod.requests("CORSPreflight") and all(r["status"] == 200 for r in vod.requests("CORSPreflight"))
    assert {r["host"] for r in vod.requests("ApplyUploadUGC")} == {"vod2.qcloud.com"}
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.sign_out()
    page.sign_in("bob")
    page.page.wait_for_function("() => !document.getElementById('no-videos').hidden")
    assert page.page.locator("[data-testid=video]").count() == 0
    assert call("GET", f"{chalice_local}/videos/{file_id}", token=token_for("bob"))[0] == 404


@pytest.mark.parametrize("vod", [{"reorder_window": 50, "reorder_hold": 120.0}], indirect=True)
def test_the_page_reports_the_finished_upload_and_it_is_listed_before_vods_event(
    site: WebServer, browser: Any, vod: Handle, chalice_local: str, token_for: TokenFactory, clip: tuple[Path, bytes]
) -> None:
    """vodlocal holds every event for two minutes (a reorder group that never fills): the video the page lists
    was attributed by the page's own report."""
    path, data = clip
    page = Page(browser, site.url)
    page.sign_in("alice")
    page.choose(path)
    page.hook("upload").click()
    page.wait_for_state("done")
    page.page.wait_for_function("() => document.querySelector('[data-testid=progress]').dataset.reported")
    assert page.hook("progress").get_attribute("data-reported") == "attributed", page.console
    file_id = page.uploaded_file_id()
    page.wait_for_video(file_id)
    assert video_of(chalice_local, token_for("alice"), file_id)["md5"] == md5_of(data)
    assert vod.app.bus.deliveries == [], "vodlocal pushed an event: the listing does not prove the report"
    assert [r["status"] for r in vod.requests("DescribeMediaInfos")] == [200]


def test_pause_resume_and_a_reload_resend_only_the_missing_parts(
    site: WebServer, browser: Any, vod: Handle, chalice_local: str, token_for: TokenFactory, clip: tuple[Path, bytes]
) -> None:
    path, data = clip
    page, _ = upload_slowly(browser, site, vod, "alice", path, parts=2)
    pause(page)
    assert page.hook("resume").is_enabled()
    paused_at = len(vod.requests())
    before_pause = part_numbers(done_parts(vod))
    page.hook("resume").click()
    wait_for(lambda: len(done_parts(vod, paused_at)) >= 2, page)
    resumed = part_numbers(done_parts(vod, paused_at))
    assert not resumed & before_pause, "a resume after a pause sent a part COS already had"

    page.page.reload()
    reloaded_at = len(vod.requests())
    before_reload = part_numbers(done_parts(vod))
    assert len(before_reload) < PARTS
    slow_network(page)
    page.choose(path)
    assert page.hook("resumable").is_visible()  # the page knows this file's upload can resume
    page.hook("upload").click()
    page.wait_for_state("done")
    after_reload = part_numbers(done_parts(vod, reloaded_at))
    # Counted at vodlocal: exactly the parts COS did not have, each once, in the same multipart upload.
    assert after_reload == set(range(1, PARTS + 1)) - before_reload, (before_reload, after_reload)
    assert len(done_parts(vod, reloaded_at)) == len(after_reload)
    assert len({part["query"]["uploadId"] for part in done_parts(vod)}) == 1
    assert [r["status"] for r in vod.requests("ListParts")[-1:]] == [200]
    file_id = page.uploaded_file_id()
    page.wait_for_video(file_id)
    stored = video_of(chalice_local, token_for("alice"), file_id)
    assert stored["md5"] == md5_of(data)
    # One intent from the first signature to the commit, across the pause and the reload: three applies and
    # the commit, at least, were signed for it.
    status, intent = call("GET", f"{chalice_local}/uploads/{stored['uploadId']}", token=token_for("alice"))
    assert status == 200 and intent["status"] == "completed" and intent["signaturesMinted"] >= 4, intent
    assert not any(key.startswith("webugc_") for key in page.local_storage())


def test_cancel_forgets_the_upload_and_cancels_its_intent(
    chalice_local: str,
    site: WebServer,
    browser: Any,
    vod: Handle,
    clip: tuple[Path, bytes],
    token_for: TokenFactory,
) -> None:
    page, intent = upload_slowly(browser, site, vod, "alice", clip[0], parts=1)
    assert any(key.startswith("webugc_") for key in page.local_storage())
    page.hook("cancel").click()
    page.wait_for_state("idle")
    expect(page.hook("progress")).to_have_attribute("data-cancelled", "cancelled")
    expect(page.hook("progress")).to_contain_text("Cancelled.")
    status, upload = call("GET", f"{chalice_local}/uploads/{intent}", token=token_for("alice"))
    assert (status, upload["status"]) == (200, "cancelled"), upload
    stored = page.local_storage()
    assert not any(key.startswith("webugc_") for key in stored), stored
    assert json.loads(stored["vodupload.intents"]) == {}
    assert page.hook("progress").get_attribute("data-percent") == "0"
    assert page.hook("upload").is_enabled() and not page.hook("pause").is_enabled()
    # Choosing the same file again offers no resume: the next upload starts afresh.
    page.choose(clip[0])
    assert not page.hook("resumable").is_visible()


def test_a_cancel_after_the_upload_was_attributed_is_too_late_and_the_video_stays(
    chalice_local: str,
    site: WebServer,
    browser: Any,
    vod: Handle,
    clip: tuple[Path, bytes],
    token_for: TokenFactory,
) -> None:
    """The user presses Cancel after the upload was attributed (here, while the page is paused: a file committed
    with the intent's signature, whose event VOD pushed): the page says it is too late, and lists the video."""
    page, intent = upload_slowly(browser, site, vod, "alice", clip[0], parts=1)
    pause(page)
    alice = token_for("alice")
    signature = call("POST", f"{chalice_local}/uploads/{intent}/signature", token=alice)[1]["signature"]
    session = apply_and_store(vod, signature, b"finished-first")
    again = call("POST", f"{chalice_local}/uploads/{intent}/signature", token=alice)[1]["signature"]
    committed = ugc(vod, "CommitUploadUGC", {"signature": again, "vodSessionKey": session["vodSessionKey"]})
    file_id = committed["data"]["fileId"]
    wait_until(
        lambda: call("GET", f"{chalice_local}/uploads/{intent}", token=alice)[1]["fileId"] == file_id,
        "VOD's pushed event never attributed the upload",
        poll=0.1,
    )

    page.hook("cancel").click()
    expect(page.hook("progress")).to_have_attribute("data-cancelled", "too_late")
    expect(page.hook("progress")).to_contain_text("Too late to cancel")
    page.wait_for_video(file_id)
    assert call("GET", f"{chalice_local}/uploads/{intent}", token=alice)[1]["status"] == "completed"


def test_a_page_on_a_disallowed_origin_is_refused(site: WebServer, browser: Any, vod: Handle, tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(os.urandom(1000))
    # The same server under another origin (localhost rather than 127.0.0.1): the API allows only the first.
    page = Page(browser, site.url.replace("127.0.0.1", "localhost"))
    page.sign_in("mallory")  # the page's own server signs in: only the API is cross-origin
    assert "Could not load your videos" in page.error()
    page.choose(tmp_path / "clip.mp4")
    page.hook("upload").click()
    page.wait_for_state("failed")
    assert "Upload failed" in page.error()
    assert vod.requests("ApplyUploadUGC") == []


@pytest.fixture
def same_name_and_size(clip: tuple[Path, bytes], tmp_path: Path) -> tuple[Path, bytes]:
    """Other bytes under the clip's file name and size: the SDK's resume key is the same."""
    data = os.urandom(len(clip[1]))
    path = tmp_path / "other" / clip[0].name
    path.parent.mkdir()
    path.write_bytes(data)
    return path, data


def assert_lands_with_its_uploader(
    api: str,
    token_for: TokenFactory,
    file_id: str,
    *,
    uploader: str,
    data: bytes,
    intent: str,
    other: str,
    others_intent: str,
) -> None:
    """The video `file_id` is `uploader`'s, of `data`, and completed `uploader`'s `intent`; the `other` user
    has no video, and their intent is still open."""
    mine, theirs = token_for(uploader), token_for(other)
    video = video_of(api, mine, file_id)
    assert (video["md5"], video["uploadId"]) == (md5_of(data), intent), video
    assert call("GET", f"{api}/videos/{file_id}", token=theirs)[0] == 404
    assert call("GET", f"{api}/videos", token=theirs)[1]["videos"] == []
    status, body = call("GET", f"{api}/uploads/{intent}", token=mine)
    assert status == 200 and (body["status"], body["fileId"]) == ("completed", file_id), body
    status, body = call("GET", f"{api}/uploads/{others_intent}", token=theirs)
    assert status == 200 and (body["status"], body["fileId"]) == ("open", None), body


@pytest.mark.parametrize("alice_leaves", ["signing out", "closing the tab"])
def test_on_a_shared_browser_the_next_user_uploads_into_their_own_account(
    alice_leaves: str,
    site: WebServer,
    browser: Any,
    vod: Handle,
    chalice_local: str,
    token_for: TokenFactory,
    clip: tuple[Path, bytes],
    same_name_and_size: tuple[Path, bytes],
) -> None:
    """Alice pauses an upload and leaves; Bob, in the same browser, uploads other bytes under the same file
    name and size, which the SDK keys its resume state by. Bob's upload is Bob's, from its first signature to
    the video; Alice's paused intent stays hers, and nothing of hers is offered to Bob. Signing out forgets
    Alice's resume state; a closed tab leaves it in localStorage, for Alice alone."""
    (alice_path, alice_data), (bob_path, bob_data) = clip, same_name_and_size
    page, alice_intent = upload_slowly(browser, site, vod, "alice", alice_path, parts=2)
    pause(page)
    assert any(key.startswith("webugc_") for key in page.local_storage())

    if alice_leaves == "signing out":
        page.sign_out()
        page.hook("signin-name").wait_for()
        # Nothing of Alice's upload is left on screen or to resume.
        assert page.controls() == {
            "state": "idle",
            "percent": "0",
            "bar": 0,
            "files": 0,
            **{"file": True, "upload": False, "pause": False, "resume": False, "cancel": False},
        }
        stored = page.local_storage()
        assert not any(key.startswith(("webugc_", "cos_sdk_")) for key in stored), stored
        assert "alice" not in json.loads(stored.get("vodupload.intents", "{}"))
    else:
        page.page.close()  # the token was the tab's (sessionStorage); localStorage stays
        page = Page(browser, site.url)

    page.sign_in("bob")
    page.choose(bob_path)
    assert not page.hook("resumable").is_visible()
    bob_intent = page.start_upload()
    page.wait_for_state("done")
    file_id = page.uploaded_file_id()
    page.wait_for_video(file_id)  # listed for Bob
    assert_lands_with_its_uploader(
        chalice_local,
        token_for,
        file_id,
        uploader="bob",
        data=bob_data,
        intent=bob_intent,
        other="alice",
        others_intent=alice_intent,
    )
    kept = json.loads(page.local_storage()["vodupload.intents"])
    assert "bob" not in kept
    if alice_leaves == "closing the tab":
        assert kept["alice"][f"{alice_path.name}_{len(alice_data)};"]["uploadId"] == alice_intent


def test_a_resumed_upload_signs_only_for_the_intent_that_opened_its_session(
    site: WebServer,
    browser: Any,
    vod: Handle,
    chalice_local: str,
    token_for: TokenFactory,
    clip: tuple[Path, bytes],
    same_name_and_size: tuple[Path, bytes],
) -> None:
    """Alice, then Bob, pause an upload of the same file name and size and close the tab: the SDK's one session
    under that name and size is now Bob's. Alice comes back and resumes her intent: in a session of its own,
    never in Bob's with her intent's signatures."""
    (alice_path, alice_data), (bob_path, _) = clip, same_name_and_size
    page, alice_intent = upload_slowly(browser, site, vod, "alice", alice_path, parts=2)
    pause(page)
    page.page.close()
    page, bob_intent = upload_slowly(browser, site, vod, "bob", bob_path, parts=2)
    pause(page)
    page.page.close()

    page = Page(browser, site.url)
    page.sign_in("alice")
    page.choose(alice_path)
    assert page.hook("resumable").is_visible()  # her intent, still open
    page.hook("upload").click()
    page.wait_for_state("done")
    file_id = page.uploaded_file_id()
    page.wait_for_video(file_id)
    assert_lands_with_its_uploader(
        chalice_local,
        token_for,
        file_id,
        uploader="alice",
        data=alice_data,
        intent=alice_intent,
        other="bob",
        others_intent=bob_intent,
    )
