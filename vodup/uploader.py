"""``Uploader``: one video (and optionally its cover) to VOD with a signature source, as the Web SDK does it
(vod-protocol.md §4), plus what the Web SDK lacks: resume after a crash from a local state file, pause, and a
cancel (of a running upload, or of an interrupted one) that aborts the multipart uploads and takes the intent
back."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import requests
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosClientError, CosServiceError

from vodup.api import FinishedVideo
from vodup.errors import (
    ApiError,
    InputError,
    IntegrityError,
    SessionExpired,
    TransferError,
    UploadCancelled,
    UploadInterrupted,
    VodError,
    VodupError,
    one_line,
)
from vodup.state import FileState, LocalFile, StateStore, UploadState
from vodup.ugc import Applied, Committed, GetSignature, MediaUrl, Network, UgcClient, backoff

MiB = 1 << 20
MIN_PART_SIZE = MiB  # COS refuses smaller parts, except the last (vodlocal/README.md, COS)
MAX_PARTS = 10_000
# The Web SDK renews the temporary credentials once 90 % of their lifetime has passed (vod-js-sdk.md §1.5).
RENEW_AT = 0.9
# COS errors that expired temporary credentials cause, and that new ones (a re-apply) cure; so does an
# AccessDenied saying "expired". A skewed clock is not cured by them: the SDK signs with the local time.
CREDENTIAL_ERRORS = frozenset({"ExpiredToken", "InvalidAccessKeyId"})
# 4xx codes worth another attempt: the bytes were damaged on the way, or arrived too slowly.
RETRYABLE_4XX = frozenset({"BadDigest", "RequestTimeout", "SlowDown"})
# VOD's videoName/coverName may not hold these (vod-js-sdk.md §1.2).
_BAD_NAME_CHARS = str.maketrans({c: "_" for c in '\\/:*?"<>|'})

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    sent: int  # bytes stored so far, video and cover together
    total: int
    resumed: bool  # this upload continues an interrupted one


@dataclass(frozen=True)
class UploadResult:
    file_id: str
    media_url: str
    cover_url: str | None
    upload_id: str | None  # the signer's context (our API's upload intent) when it has one
    resumed: bool
    # What the signer's report of the finished upload did (our API: "attributed", or "duplicate" when VOD's event
    # was first); None when the signer takes no report, or the report failed (``attribution_error``): the file is
    # in VOD all the same, and VOD's event attributes it.
    attribution: str | None = None
    attribution_error: str | None = None


@runtime_checkable
class ResumableSigner(Protocol):
    """A ``get_signature`` that signs for something (an upload intent): a resumed upload must keep signing for
    the same one, since VOD's session keeps the first signature's ``sourceContext``."""

    def context(self) -> str | None: ...

    def resume(self, context: str) -> None: ...


@runtime_checkable
class ReportsOutcome(Protocol):
    """A signer that can tell the video its intent ended in: a resume whose Commit went through before (its answer
    lost to a kill) finds it there once the signer refuses to sign for a finished intent."""

    def finished(self) -> FinishedVideo | None: ...


def multipart_etag(parts: dict[int, str]) -> str:
    """A multipart object's ETag: the MD5 of its parts' MD5s, and their count."""
    joined = b"".join(bytes.fromhex(etag.strip('"')) for _, etag in sorted(parts.items()))
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"


def service_failure(exc: CosServiceError) -> tuple[int, str, str]:
    """The status, COS error code and message of a refusal. An answer that is not COS's XML error (a proxy's page,
    a JSON body) has no code: the SDK's own ``get_error_code`` raises ``KeyError`` on a JSON body without one."""
    digest = exc.get_digest_msg()
    fields = digest if isinstance(digest, dict) else {}
    code = str(fields.get("code") or "")
    message = one_line(str(fields.get("message") or ""), 200) if code else "an answer that is not COS's XML error"
    return int(exc.get_status_code()), code, message


@runtime_checkable
class ReportingSigner(Protocol):
    """A ``get_signature`` told when its upload is done, with the FileId (our API then attributes it at once)."""

    def done(self, file_id: str) -> str: ...


@runtime_checkable
class CancellingSigner(Protocol):
    """A ``get_signature`` told when its upload is cancelled (our API then frees the intent and signs no more for
    it). Raises a ``VodupError`` when it could not tell (an ``ApiError`` 409: an upload was attributed already)."""

    def cancel_intent(self) -> None: ...


def media_fields(kind: str, local: LocalFile) -> dict[str, Any]:
    """ApplyUploadUGC's ``<kind>Name``/``<kind>Type``/``<kind>Size``: the name without its extension, the lower-case
    extension, the size (vod-js-sdk.md §1.4)."""
    stem, dot, ext = Path(local.path).name.rpartition(".")
    name = (stem if dot else ext).translate(_BAD_NAME_CHARS)[:128] or kind
    return {f"{kind}Name": name, f"{kind}Type": ext.lower() if dot else "", f"{kind}Size": local.size}


class Storage:
    """The COS target of an upload session, with temporary credentials renewed (a re-apply with the session key)
    before they expire, or when COS says they did."""

    def __init__(
        self, data: Applied, kinds: Iterable[str], reapply: Callable[[], Applied], network: Network, parallel: int
    ) -> None:
        self._kinds = tuple(kinds)
        self._reapply = reapply
        self._network = network
        # Our own pool, sized to the parallelism: the SDK's shared default holds 10 connections.
        self._http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=max(parallel, 2))
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)
        self._lock = threading.Lock()
        self.generation = 0
        self._use(data)

    def _use(self, data: Applied) -> None:
        cert = data.tempCertificate
        paths = {"video": data.video, "cover": data.cover}
        missing = [kind for kind in self._kinds if paths[kind] is None]
        if missing:
            raise VodError("ApplyUploadUGC", -1, f"unexpected answer: no storage path for the {missing[0]}")
        self.bucket = f"{data.storageBucket}-{data.storageAppId}"
        self.keys = {kind: stored.storagePath.lstrip("/") for kind, stored in paths.items() if stored is not None}
        lifetime = max(cert.expiredTime - data.timestamp, 0)
        self._renew_at = time.monotonic() + RENEW_AT * lifetime
        config = CosConfig(
            Region=data.storageRegionV5,
            SecretId=cert.secretId,
            SecretKey=cert.secretKey,
            Token=cert.token,
            Scheme=self._network.scheme,
            Proxies=self._network.proxies,
            Timeout=self._network.timeout,
        )
        # Retries are ours (with back-off and credential renewal), so the SDK makes one attempt.
        self._client = CosS3Client(config, retry=0, session=self._http)
        self.generation += 1

    def client(self) -> tuple[CosS3Client, int]:
        with self._lock:
            if time.monotonic() >= self._renew_at:
                self._use(self._reapply())
            return self._client, self.generation

    def renew(self, generation: int) -> None:
        """New credentials, unless another thread already renewed those of ``generation``: each renewal spends
        a signature, and the API caps them per upload."""
        with self._lock:
            if generation == self.generation:
                self._use(self._reapply())

    def close(self) -> None:
        self._http.close()


@dataclass
class _Transfer:
    """One ``upload()`` call's moving parts."""

    state: UploadState
    storage: Storage
    fds: dict[str, int]
    total: int
    resumed: bool
    on_progress: Callable[[Progress], None] | None
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, size: int) -> None:
        with self.lock:
            self.sent += size
            if self.on_progress is not None:
                self.on_progress(Progress(self.sent, self.total, self.resumed))


class Uploader:
    """Uploads with signatures from ``get_signature`` (any callable returning a VOD upload signature; it is called
    once per VOD request, so one-time signatures work). ``pause``, ``resume`` and ``cancel`` may be called from any
    thread while ``upload`` runs; a pause lets the parts in flight finish and starts no new one."""

    def __init__(
        self,
        get_signature: GetSignature,
        *,
        part_size: int = 8 * MiB,
        parallel: int = 6,
        retries: int = 5,
        retry_delay: float = 1.0,
        state_dir: Path | None = None,
        network: Network | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (COS's minimum)")
        if parallel < 1 or retries < 0:
            raise ValueError("parallel must be >= 1 and retries >= 0")
        self.get_signature = get_signature
        self.part_size = part_size
        self.parallel = parallel
        self.retries = retries
        self.retry_delay = retry_delay
        self.states = StateStore(state_dir)
        self.network = network or Network()
        self._running = threading.Event()
        self._running.set()
        self._cancelled = threading.Event()
        self._stopping = threading.Event()

    # --- control, from any thread --------------------------------------------------------------------
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()

    # --- the upload ----------------------------------------------------------------------------------
    def upload(
        self, path: str | Path, cover: str | Path | None = None, on_progress: Callable[[Progress], None] | None = None
    ) -> UploadResult:
        """Uploads ``path`` (and ``cover``), resuming the interrupted upload of the very same files if there is one.
        ``on_progress`` is called from the part threads, one call at a time: once when the transfer starts (with the
        bytes a resume finds stored), then after each stored part."""
        files = {"video": self._local(path, "video")}
        if cover is not None:
            files["cover"] = self._local(cover, "cover")
        self.states.open()
        self._cancelled.clear()
        self._stopping.clear()
        # The files are opened before anything is asked of the API, so an unreadable one costs no upload intent.
        with self._open(files) as fds, requests.Session() as http:
            ugc = UgcClient(self.get_signature, self.network, http, retry_delay=self.retry_delay)
            state, data, resumed = self._session(ugc, files)
            total = sum(f.size for f in files.values())
            if data is None:  # everything is stored: only the Commit is left
                if on_progress is not None:
                    on_progress(Progress(total, total, resumed))
            else:
                storage = Storage(
                    data,
                    files,
                    lambda: ugc.call("ApplyUploadUGC", {"vodSessionKey": state.session_key}, Applied),
                    self.network,
                    self.parallel,
                )
                transfer = _Transfer(state, storage, fds, total, resumed, on_progress)
                try:
                    self._transfer(transfer)
                except UploadCancelled:
                    self._abort(state, storage)
                    raise UploadCancelled(self._cancel_intent()) from None
                finally:
                    storage.close()
            committed = self._commit(ugc, state)
        self.states.drop(state)
        attribution, attribution_error = self._report(committed.fileId)
        return UploadResult(
            file_id=committed.fileId,
            media_url=committed.video.url,
            cover_url=committed.cover.url if committed.cover else None,
            upload_id=self._signer_context(),
            resumed=resumed,
            attribution=attribution,
            attribution_error=attribution_error,
        )

    def discard(self, path: str | Path, cover: str | Path | None = None) -> str | None:
        """Cancels the interrupted upload of ``path`` (and ``cover``), one that is not running: aborts its multipart
        uploads so COS frees the parts, forgets its resume state, and tells a ``CancellingSigner`` (our API frees the
        intent). Returns the intent it was signed for (None: none this signer signs for, so none was cancelled). An
        ``InputError`` when there is no such upload to cancel; the ``VodupError`` of the signer when it could not
        tell the API (the rest is done)."""
        files = {"video": self._local(path, "video")}
        if cover is not None:
            files["cover"] = self._local(cover, "cover")
        self.states.open()
        state = self.states.load(files)
        if state is None:
            raise InputError(f"no interrupted upload of {str(path)!r} to cancel (or it is older than a day)")
        signs_for_it = self._resumed_signer(state)
        unfinished = [kind for kind, plan in state.transfers.items() if plan.upload_id is not None and not plan.done]
        if unfinished and signs_for_it:
            self._abort_with_fresh_credentials(state, files)
        self.states.drop(state)
        if not signs_for_it:
            return None  # signed for an intent this signer does not sign for (or a context it refuses): not told
        if isinstance(self.get_signature, CancellingSigner):
            self.get_signature.cancel_intent()
        return state.signer_context

    def _abort_with_fresh_credentials(self, state: UploadState, files: dict[str, LocalFile]) -> None:
        """Aborts the session's multipart uploads with credentials of a re-apply. Without them (VOD forgot the
        session, the API no longer signs for it) the parts are left to COS, which expires them."""
        with requests.Session() as http:
            ugc = UgcClient(self.get_signature, self.network, http, retry_delay=self.retry_delay)

            def reapply() -> Applied:
                return ugc.call("ApplyUploadUGC", {"vodSessionKey": state.session_key}, Applied)

            try:
                storage = Storage(reapply(), files, reapply, self.network, self.parallel)
            except VodupError:
                return
            try:
                self._abort(state, storage)
            finally:
                storage.close()

    def _cancel_intent(self) -> str:
        """Tells a ``CancellingSigner`` that its upload was cancelled; what to say of the cancel."""
        if not isinstance(self.get_signature, CancellingSigner):
            return "upload cancelled"
        try:
            self.get_signature.cancel_intent()
        except VodupError as error:
            return f"upload cancelled, but the API was not told ({error}): its intent stays open until its window ends"
        return "upload cancelled"

    def _commit(self, ugc: UgcClient, state: UploadState) -> Committed:
        """CommitUploadUGC. A repeated Commit gets the first one's result (vodlocal's answer; VOD documents none),
        but once the first one's NewFileUpload has reached our API, the API signs no more for the intent: it tells
        the video instead."""
        try:
            return ugc.call("CommitUploadUGC", {"vodSessionKey": state.session_key}, Committed)
        except ApiError:
            video = self.get_signature.finished() if isinstance(self.get_signature, ReportsOutcome) else None
            if video is None:
                raise
            cover = MediaUrl(url=video.coverUrl) if video.coverUrl else None
            return Committed(fileId=video.fileId, video=MediaUrl(url=video.mediaUrl), cover=cover)

    def _report(self, file_id: str) -> tuple[str | None, str | None]:
        """Tells a ``ReportingSigner`` the upload is done: (its outcome, or the error that kept it from it)."""
        if not isinstance(self.get_signature, ReportingSigner):
            return None, None
        try:
            return self.get_signature.done(file_id), None
        except VodupError as error:
            return None, str(error)

    def _signer_context(self) -> str | None:
        return self.get_signature.context() if isinstance(self.get_signature, ResumableSigner) else None

    def _resumed_signer(self, state: UploadState) -> bool:
        """Whether ``get_signature`` now signs for ``state``'s session: VOD keeps the ``sourceContext`` of the
        signature that opened it, so a resume signs for the stored intent (a ``ResumableSigner`` resumed to it),
        never for a fresh one; a session opened without an intent is resumed only without one. A context the
        signer refuses (a state file edited by hand) is not resumed either."""
        if not isinstance(self.get_signature, ResumableSigner):
            return state.signer_context is None
        if state.signer_context is None:
            return False
        try:
            self.get_signature.resume(state.signer_context)
        except VodupError:
            return False
        return True

    @staticmethod
    def _local(path: str | Path, kind: str) -> LocalFile:
        target = Path(path)
        if not target.is_file():
            raise InputError(f"{kind} file {str(path)!r} does not exist or is not a regular file")
        return LocalFile.of(target)

    @contextmanager
    def _open(self, files: dict[str, LocalFile]) -> Iterator[dict[str, int]]:
        fds: dict[str, int] = {}
        try:
            for kind, local in files.items():
                try:
                    fds[kind] = os.open(local.path, os.O_RDONLY)
                except OSError as exc:
                    raise InputError(f"{kind} file {local.path!r} cannot be read: {exc.strerror}") from exc
            yield fds
        finally:
            for fd in fds.values():
                os.close(fd)

    def _session(self, ugc: UgcClient, files: dict[str, LocalFile]) -> tuple[UploadState, Applied | None, bool]:
        """The interrupted session of these very files (same path, size, mtime), re-applied for fresh credentials,
        or a new one. A session VOD no longer knows is dropped, like the Web SDK does. A session whose files are
        all stored needs no credentials (``None``): it was stopped in its Commit, which VOD may have done already,
        and then refuses an Apply."""
        state = self.states.load(files)
        if state is not None and not self._resumed_signer(state):
            self.states.drop(state)
            state = None
        if state is not None and all(plan.done for plan in state.transfers.values()):
            return state, None, True
        if state is not None:
            try:
                return state, ugc.call("ApplyUploadUGC", {"vodSessionKey": state.session_key}, Applied), True
            except SessionExpired:
                self.states.drop(state)
        body: dict[str, Any] = {}
        for kind, local in files.items():
            body.update(media_fields(kind, local))
        region = ugc.prepare_region()
        if region:
            body["storageRegion"] = region
        data = ugc.call("ApplyUploadUGC", body, Applied)
        state = UploadState(files, data.vodSessionKey, self._signer_context())
        state.transfers = {kind: FileState() for kind in files}
        self.states.save(state)
        return state, data, False

    def _transfer(self, t: _Transfer) -> None:
        parts: list[tuple[str, int, int, int]] = []  # (kind, number, offset, length)
        for kind, local in t.state.files.items():
            plan = t.state.transfers[kind]
            if not plan.done and local.size == 0:
                self._put_empty(t, kind)
            elif not plan.done:
                self._start_multipart(t, kind, local.size)
            if plan.done:
                t.sent += local.size
                continue
            for number in range(1, math.ceil(local.size / plan.part_size) + 1):
                offset = (number - 1) * plan.part_size
                length = min(plan.part_size, local.size - offset)
                if number in plan.parts:
                    t.sent += length
                else:
                    parts.append((kind, number, offset, length))
        t.advance(0)
        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="vodup-part")
        try:
            futures: list[Future[None]] = [pool.submit(self._send_part, t, *part) for part in parts]
            for future in as_completed(futures):
                future.result()
        except BaseException as exc:
            self._stopping.set()
            self._running.set()  # paused workers must wake up to see the stop
            pool.shutdown(wait=True, cancel_futures=True)  # the parts in flight finish and are recorded
            if isinstance(exc, KeyboardInterrupt):
                raise UploadInterrupted(t.sent, t.total) from None
            raise
        pool.shutdown()
        for kind, plan in t.state.transfers.items():
            if not plan.done:
                self._complete(t, kind)

    def _start_multipart(self, t: _Transfer, kind: str, size: int) -> None:
        """Keeps the parts COS still has with the ETags we recorded; starts a new multipart upload when COS no
        longer knows ours, unless that is because our Complete went through (the file is then done)."""
        plan = t.state.transfers[kind]
        key = t.storage.keys[kind]
        if plan.upload_id is not None:
            stored = self._stored_parts(t, key, plan.upload_id)
            if stored is None and self._completed(t, kind):
                return
            if stored is None:
                plan.upload_id = None
            else:
                plan.parts = {n: etag for n, etag in plan.parts.items() if stored.get(n) == etag}
        if plan.upload_id is None:
            plan.part_size = max(self.part_size, math.ceil(size / MAX_PARTS))
            created = self._cos(
                t,
                f"InitiateMultipartUpload ({kind})",
                lambda c: c.create_multipart_upload(Bucket=t.storage.bucket, Key=key),
            )
            plan.upload_id, plan.parts = str(created["UploadId"]), {}
        self.states.save(t.state)

    def _stored_parts(self, t: _Transfer, key: str, upload_id: str) -> dict[int, str] | None:
        """The parts COS holds (number -> ETag), or None when it no longer knows the multipart upload."""
        stored: dict[int, str] = {}
        marker = 0
        while True:
            try:
                page = self._cos(
                    t,
                    "ListParts",
                    partial(
                        CosS3Client.list_parts,
                        Bucket=t.storage.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumberMarker=marker,
                    ),
                )
            except TransferError as exc:
                if exc.code == "NoSuchUpload":
                    return None
                raise
            listed = page.get("Part") or []
            for part in listed if isinstance(listed, list) else [listed]:
                stored[int(part["PartNumber"])] = str(part["ETag"])
            if str(page.get("IsTruncated")).lower() != "true":
                return stored
            marker = int(page["NextPartNumberMarker"])

    def _send_part(self, t: _Transfer, kind: str, number: int, offset: int, length: int) -> None:
        self._running.wait()
        if self._cancelled.is_set():
            raise UploadCancelled("upload cancelled")
        if self._stopping.is_set():
            return
        data = os.pread(t.fds[kind], length, offset)
        if len(data) != length:
            raise InputError(f"{kind} file {t.state.files[kind].path!r} changed while it was being uploaded")
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        plan = t.state.transfers[kind]
        answer = self._cos(
            t,
            f"UploadPart {number} ({kind})",
            lambda c: c.upload_part(
                Bucket=t.storage.bucket,
                Key=t.storage.keys[kind],
                Body=data,
                PartNumber=number,
                UploadId=plan.upload_id,
                ContentMD5=base64.b64encode(md5).decode(),
            ),
        )
        etag = str({k.lower(): v for k, v in answer.items()}.get("etag", ""))
        if etag.strip('"') != md5.hex():
            raise IntegrityError(f"COS stored part {number} of the {kind} with ETag {etag}, expected MD5 {md5.hex()}")
        self.states.record_part(t.state, kind, number, etag)
        t.advance(length)

    def _complete(self, t: _Transfer, kind: str) -> None:
        plan = t.state.transfers[kind]
        parts = sorted(plan.parts.items())
        try:
            answer = self._cos(
                t,
                f"CompleteMultipartUpload ({kind})",
                lambda c: c.complete_multipart_upload(
                    Bucket=t.storage.bucket,
                    Key=t.storage.keys[kind],
                    UploadId=plan.upload_id,
                    MultipartUpload={"Part": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
                ),
            )
        except TransferError as exc:
            # COS answers NoSuchUpload to a Complete of an upload already completed: an earlier Complete of ours
            # whose answer was lost (a retry here, or a killed run's that was still joining the parts).
            if exc.code == "NoSuchUpload" and self._completed(t, kind):
                return
            if exc.code == "NoSuchUpload":
                plan.upload_id, plan.parts = None, {}
                self.states.save(t.state)
                raise TransferError(
                    f"COS no longer has the {kind}'s parts; run the same command again", exc.code
                ) from exc
            raise
        # The object's ETag proves COS joined the parts we verified, in our order.
        expected = multipart_etag(plan.parts)
        if str(answer.get("ETag", "")).strip('"') != expected:
            raise IntegrityError(f"COS completed the {kind} with ETag {answer.get('ETag')}, expected {expected}")
        plan.done = True
        self.states.save(t.state)

    def _completed(self, t: _Transfer, kind: str) -> bool:
        """Whether COS holds the object our multipart upload makes: every part of the file recorded, and the
        object's ETag the one those parts make. Then the file is done."""
        plan = t.state.transfers[kind]
        if not plan.parts or len(plan.parts) != math.ceil(t.state.files[kind].size / plan.part_size):
            return False
        try:
            head = self._cos(
                t, f"HeadObject ({kind})", lambda c: c.head_object(Bucket=t.storage.bucket, Key=t.storage.keys[kind])
            )
        except TransferError as exc:
            if exc.code in ("NoSuchResource", "NoSuchKey"):  # what the SDK and COS call a HEAD's 404
                return False
            raise
        if str({k.lower(): v for k, v in head.items()}.get("etag", "")).strip('"') != multipart_etag(plan.parts):
            return False
        plan.done = True
        self.states.save(t.state)
        return True

    def _put_empty(self, t: _Transfer, kind: str) -> None:
        # The Web SDK's 0-byte path: one PutObject, no multipart (vod-js-sdk.md §1.5).
        empty_md5 = hashlib.md5(b"", usedforsecurity=False)
        self._cos(
            t,
            f"PutObject ({kind})",
            lambda c: c.put_object(
                Bucket=t.storage.bucket,
                Key=t.storage.keys[kind],
                Body=b"",
                ContentMD5=base64.b64encode(empty_md5.digest()).decode(),
            ),
        )
        t.state.transfers[kind].done = True
        self.states.save(t.state)

    def _cos(self, t: _Transfer, what: str, call: Callable[[CosS3Client], T]) -> T:
        """``call`` with the current credentials, retried with back-off on network errors, 5xx, unreadable answers
        and the 4xx that a retry (or, for credential errors, a renewal) cures."""
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff(attempt - 1, self.retry_delay))
            client, generation = t.storage.client()
            try:
                return call(client)
            except CosClientError as exc:
                failure = one_line(str(exc), 200)
            except CosServiceError as exc:
                status, code, message = service_failure(exc)
                failure = f"{status} {code}: {message}" if code else f"{status}: {message}"
                expired = code == "AccessDenied" and "expired" in message.lower()
                if code in CREDENTIAL_ERRORS or expired:
                    t.storage.renew(generation)
                elif status < 500 and code not in RETRYABLE_4XX:
                    raise TransferError(f"COS {what}: {failure}", code) from None
            except SyntaxError:  # the SDK's XML parser (ParseError) on a 2xx body that is not XML
                failure = "a success answer that is not XML"
            if self._cancelled.is_set() or self._stopping.is_set():
                break
        raise TransferError(f"COS {what} failed after {attempt + 1} attempts: {failure}")

    def _abort(self, state: UploadState, storage: Storage) -> None:
        """Cancel: abort every multipart upload of the session so COS frees its parts, and forget the state."""
        for kind, plan in state.transfers.items():
            if plan.upload_id is not None and not plan.done:
                self._abort_one(storage, storage.keys[kind], plan.upload_id)
        self.states.drop(state)

    @staticmethod
    def _abort_one(storage: Storage, key: str, upload_id: str) -> None:
        try:
            client, _ = storage.client()
            client.abort_multipart_upload(Bucket=storage.bucket, Key=key, UploadId=upload_id)
        except (CosServiceError, CosClientError):
            pass  # already gone (completed, aborted, expired by COS), or unreachable: COS expires it in the end
