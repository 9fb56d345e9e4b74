"""Attribution the moment the client is done: the intent's owner reports the FileId its upload SDK returned.

VOD is asked about that file (DescribeMediaInfos, in the intent's application). Only a file whose
`sourceContext` is this intent's, with a valid tag, is applied, through the event service, as the
NewFileUpload it stands for: the event and this report are one attribution path, and whichever comes
second is a duplicate. Anything else is refused before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, Protocol

from msgspec import Struct

from chalicelib import deadline, source_context
from chalicelib.credentials import SecretsProvider
from chalicelib.errors import Conflict, FileRefused, NotFound, ServiceUnavailable, UploadClosed, VodUnavailable
from chalicelib.event_service import CANCELLED_REASON, EventService
from chalicelib.events import UploadedFile
from chalicelib.identity import Principal
from chalicelib.uploads import UploadIntent, UploadService

logger = logging.getLogger("vodupload")

# One DescribeMediaInfos attempt (the VOD client's timeout): a read of one file's record. A retry is made
# only while another attempt, plus what the attribution's own storage calls need, fits the request's
# deadline (3.5 s by default).
DESCRIBE_MEDIA_SECONDS = 1.2
STORAGE_RESERVE_SECONDS = 1.0
_DESCRIBE_ATTEMPTS = 2
RETRY_AFTER_SECONDS = 2

Completed = Literal["attributed", "duplicate"]


class MediaCatalog(Protocol):
    def describe(self, file_id: str) -> UploadedFile | None:
        """The file as VOD describes it, or None when the application has no such file. Raises VodUnavailable."""
        ...


class Completion(Struct, frozen=True):
    intent: UploadIntent  # as stored after the attribution
    outcome: Completed


class CompletionService:
    def __init__(
        self,
        uploads: UploadService,
        events: EventService,
        secrets: SecretsProvider,
        catalog_for: Callable[[int | None], MediaCatalog],
    ) -> None:
        """`catalog_for(sub_app_id)`: VOD's media library of that (sub-)application."""
        self._uploads = uploads
        self._events = events
        self._secrets = secrets
        self._catalog_for = catalog_for

    def complete(self, principal: Principal, upload_id: str, file_id: str) -> Completion:
        intent = self._uploads.get(principal, upload_id)
        if intent.file_id == file_id:  # the event (or an earlier report) attributed it: VOD need not be asked
            return Completion(intent, "duplicate")
        uploaded = self._describe(intent, file_id)
        self._check_uploaded_for(intent, uploaded)
        outcome = self._events.apply_reported(uploaded)
        if outcome.outcome == "rejected" and outcome.reason == CANCELLED_REASON:
            raise UploadClosed("cancelled", "upload was cancelled: the file is not attributed, it is kept for review")
        if outcome.outcome == "rejected":
            raise Conflict(f"upload already completed with another file: {outcome.reason}")
        if outcome.outcome not in ("attributed", "duplicate"):  # the intent vanished meanwhile (its TTL)
            raise NotFound("no such upload")
        completed: Completed = "attributed" if outcome.outcome == "attributed" else "duplicate"
        return Completion(self._uploads.get(principal, upload_id), completed)

    def _describe(self, intent: UploadIntent, file_id: str) -> UploadedFile:
        catalog = self._catalog_for(intent.terms.vod_sub_app_id)
        for attempt in range(1, _DESCRIBE_ATTEMPTS + 1):
            if deadline.remaining() < DESCRIBE_MEDIA_SECONDS + STORAGE_RESERVE_SECONDS:
                break
            try:
                uploaded = catalog.describe(file_id)
            except VodUnavailable as error:
                logger.warning(
                    "VOD did not describe a reported file",
                    extra={"uploadId": intent.upload_id, "fileId": file_id, "attempt": attempt, "reason": str(error)},
                )
                continue
            if uploaded is None:
                raise _refused(intent, file_id, "unknown_file", "VOD has no such file in this upload's application")
            return uploaded
        raise ServiceUnavailable("VOD did not answer in time, retry", retry_after_seconds=RETRY_AFTER_SECONDS)

    def _check_uploaded_for(self, intent: UploadIntent, uploaded: UploadedFile) -> None:
        """The file's sourceContext, checked as the event path checks it (tag first), must name this intent."""
        file_id = uploaded.file_id
        if not uploaded.source_context:
            raise _refused(
                intent, file_id, "no_source_context", "the file was not uploaded with this service's signature"
            )
        try:
            upload_id = source_context.decode(uploaded.source_context, self._secrets.get().context_tag_key)
        except source_context.InvalidContext:
            message = "the file's sourceContext was not issued by this service"
            raise _refused(intent, file_id, "foreign_source_context", message) from None
        if upload_id != intent.upload_id:
            raise _refused(intent, file_id, "another_upload", "the file was uploaded for another upload")


def _refused(intent: UploadIntent, file_id: str, reason: str, message: str) -> FileRefused:
    """A refusal, logged: a client reporting files that are not its upload's is a bug or a probe."""
    logger.warning(
        "reported file refused",
        extra={"uploadId": intent.upload_id, "owner": intent.owner, "fileId": file_id, "reason": reason},
    )
    return FileRefused(reason, message)
