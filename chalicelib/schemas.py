"""Response bodies, as pydantic models: the source of the OpenAPI document's response schemas.

Documentation only: the routes build their bodies as plain dicts (no model on the hot path), and
`tests/test_openapi.py` checks every response the suite sees against these schemas, so a body that
drifts from them fails the tests. Field names are the wire names (camelCase); a field that is always
sent but may be null is `X | None` without a default; a field that is sometimes left out has a default
(`_omittable`) and is not required. `Video` takes the media facts from their one definition
(`chalicelib.media.FACTS`), as `app._video_body` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.policy import ClientKind


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _omittable(description: str) -> Any:
    """A key that is absent rather than null when it does not apply."""
    return Field(default=None, description=description, json_schema_extra=_drop_default)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- uploads -------------------------------------------------------------------------------------


class Signature(_Body):
    """A VOD client-upload signature for an upload intent (pass `signature` to the upload SDK)."""

    uploadId: str = Field(description="The upload intent; it travels through VOD in `sourceContext`")  # noqa: N815
    signature: str = Field(description="Base64 of the signed query string plus its HMAC-SHA1")
    expireTime: int = Field(description="When the signature expires (epoch seconds)")  # noqa: N815
    signaturesRemaining: int = Field(ge=0, description="How many more signatures this intent may get")  # noqa: N815
    oneTimeValid: bool = Field(description="VOD accepts the signature once only")  # noqa: N815


class UploadIntent(_Body):
    """One expected upload: what the client declared and the terms its signatures are minted with."""

    uploadId: str  # noqa: N815
    status: Literal["open", "completed", "expired", "cancelled"] = Field(
        description="`expired`: no upload arrived before its last signature expired; a late one still completes it. "
        "`cancelled`: its owner cancelled it; an upload that arrives later is not attributed"
    )
    createdAt: int = Field(description="Epoch seconds")  # noqa: N815
    uploadWindowEndsAt: int = Field(description="Signatures can be minted until then (epoch seconds)")  # noqa: N815
    procedure: str | None = Field(description="The VOD task flow run on the upload, chosen by the server")
    storageRegion: str | None  # noqa: N815
    classId: int  # noqa: N815
    title: str | None
    fileName: str | None  # noqa: N815
    fileSize: int | None  # noqa: N815
    contentType: str | None  # noqa: N815
    withCover: bool  # noqa: N815
    metadata: dict[str, Any] | None = Field(description="As the client sent it; copied to the video")
    client: ClientKind | None = Field(
        description="The upload SDK the client declared (not verified): it selects the signature lifetime"
    )
    signaturesMinted: int = Field(ge=1)  # noqa: N815
    fileId: str | None = Field(description="The uploaded VOD file once `status` is `completed`, else null")  # noqa: N815
    cancelledAt: int | None = Field(description="When its owner cancelled it (epoch seconds), else null")  # noqa: N815


class CreatedUpload(Signature):
    """A new upload intent and its first signature."""

    upload: UploadIntent


# -- videos --------------------------------------------------------------------------------------


class ProcessingTask(_Body):
    """One sub-task of a VOD task flow (transcode, snapshot, cover, ...)."""

    type: str = Field(description="VOD's task type, e.g. `Transcode`")
    status: str = Field(description="`PROCESSING`, `SUCCESS`, `FAIL` (VOD's words), or `UNKNOWN`")
    errCode: int | None  # noqa: N815
    url: str | None = Field(description="The output's URL (`Url` or `CoverUrl`) when VOD reports one")
    definition: int | None = Field(description="The template (definition) the output was made with")
    detail: dict[str, Any] = _omittable("VOD's `Size`, `Duration`, `Width`, `Height`, `PicInfoSet` when reported")


class ReviewResult(_Body):
    """One content-review result of a task flow."""

    type: str | None = Field(description="VOD's review type, e.g. `Porn`")
    status: str | None = _omittable("The review task's status (present when VOD reported the task)")
    suggestion: str | None = _omittable("`pass`, `review` or `block` (present when VOD reported the task)")


class ProcessingSnapshot(_Body):
    """The latest reported state of one VOD task flow (ProcedureStateChanged) for a file."""

    taskId: str  # noqa: N815
    status: str = _omittable("`PROCESSING` or `FINISH`")
    errCode: int | None = _omittable("The task flow's error code")  # noqa: N815
    message: str | None = _omittable("The task flow's error message")
    tasks: list[ProcessingTask] = _omittable("The sub-tasks as reported: the last 10 of each type, within 24 KB")
    review: list[ReviewResult] = _omittable("Content-review results, as reported")


class _VideoRecord(_Body):
    """The video's own fields; the media facts (`chalicelib.media.FACTS`) are added to make `Video`."""

    fileId: str = Field(description="VOD's FileId")  # noqa: N815
    uploadId: str  # noqa: N815
    title: str | None = Field(description="From the upload intent")
    fileName: str | None = Field(description="From the upload intent")  # noqa: N815
    procedure: str | None
    procedureTaskId: str | None  # noqa: N815
    metadata: dict[str, Any] | None = Field(description="The upload intent's metadata")
    receivedAt: int = Field(description="When the upload event was recorded (epoch seconds)")  # noqa: N815
    deletionRequestedAt: int | None = Field(  # noqa: N815
        description="When its owner asked to delete it, or its tier's `overQuota: delete` did when it broke a "
        "quota (epoch seconds): the deletion is pending while VOD has not deleted the file; null unless asked"
    )
    processing: ProcessingSnapshot | None = Field(
        description="The upload's own task flow (its `procedureTaskId`) if reported, else the most advanced one"
    )
    processingTasks: list[ProcessingSnapshot] = Field(  # noqa: N815
        description="The task flows kept for the file (at most 8: the upload's own and the latest), by task id"
    )
    quotaExceeded: list[Literal["bytes", "duration"]] = Field(  # noqa: N815
        description="The quotas of its tier it broke once VOD reported its size and duration (empty if none): "
        "it is kept for review or deleted, as the tier's `overQuota` says"
    )


# Optional notes on media facts; a fact without one is still documented, with its type.
_FACT_NOTES = {
    "name": "The media name VOD reports",
    "type": "The container/format VOD reports, e.g. `mp4`",
    "size": "Bytes",
    "duration": "Seconds",
    "vodCreateTime": "VOD's CreateTime (ISO 8601)",
}
_FACT_TYPES: dict[str, Any] = {"str": str | None, "int": int | None, "float": float | None}


def _video_model() -> type[_VideoRecord]:
    """`Video` reads the media facts from their one definition: a fact added there is in the schema too."""
    from pydantic import create_model

    from chalicelib.media import FACTS

    facts: dict[str, Any] = {
        fact.api: (_FACT_TYPES[fact.kind], Field(description=_FACT_NOTES.get(fact.api))) for fact in FACTS
    }
    return create_model(
        "Video",
        __base__=_VideoRecord,
        __doc__="An uploaded file attributed to its owner: what VOD reported about it plus the intent's fields.",
        __module__=__name__,
        **facts,
    )


if TYPE_CHECKING:
    Video = _VideoRecord
else:
    Video = _video_model()


class UploadStatus(UploadIntent):
    """An upload intent and, once completed, its video (null while open or if the video was deleted)."""

    video: Video | None


class CompletedUpload(UploadStatus):
    """The upload once its client reported it done: completed, with its video."""

    outcome: Literal["attributed", "duplicate"] = Field(
        description="`attributed`: this report attributed the file; `duplicate`: VOD's event (or an earlier "
        "report) already had"
    )


class VideoPage(_Body):
    """One page of the caller's videos, newest first."""

    videos: list[Video]
    nextCursor: str | None = Field(description="Pass back as `cursor` for the next page; null on the last")  # noqa: N815


# -- the caller ---------------------------------------------------------------------------------


class TierLimits(_Body):
    """The caller's tier's limits (docs/configuration.md, Upload policy); null: no such limit."""

    maxStoredBytes: int | None = Field(description="Bytes of video the caller may keep in VOD")  # noqa: N815
    maxVideoSeconds: float | None = Field(description="The longest video, in seconds")  # noqa: N815
    overQuota: Literal["review", "delete"] = Field(  # noqa: N815
        description="What becomes of an upload that breaks a quota: kept and marked for review, or deleted from VOD"
    )
    maxFileSize: int = Field(description="The largest `fileSize` an upload may declare")  # noqa: N815
    maxOpenIntents: int  # noqa: N815
    maxIntentsPerHour: int  # noqa: N815


class AccountUsage(_Body):
    """What the caller holds now."""

    bytesStored: int = Field(ge=0, description="Bytes of the caller's videos counted against `maxStoredBytes`")  # noqa: N815
    videos: int = Field(ge=0, description="Attributed videos not deleted, over quota ones included")
    openIntents: int = Field(ge=0, description="Upload intents whose upload window has not ended")  # noqa: N815
    bytesReserved: int = Field(  # noqa: N815
        ge=0, description="What the open intents declared (`fileSize`): counted by `POST /uploads`' quota check"
    )


class Me(_Body):
    """The caller: their tier, its limits and their usage."""

    subject: str = Field(description="The token's `sub`: the owner of the caller's uploads and videos")
    tier: str = Field(description="`default`, or the first tier of the policy named in the caller's groups")
    limits: TierLimits
    usage: AccountUsage


# -- the rest -------------------------------------------------------------------------------------


class Health(_Body):
    status: Literal["ok"]


Outcome = Literal["attributed", "duplicate", "rejected", "orphan", "updated", "stale", "deleted", "ignored"]


class EventAck(_Body):
    """What the callback answers for an event it accepted (VOD only needs the 200)."""

    code: Literal[0]
    outcome: Outcome = Field(description="What the event did; docs/events.md, `POST /vod/events/{token}`, says each")


# -- errors: one shape, one model per status ------------------------------------------------------


class _ErrorBody(_Body):
    message: str = Field(description="For humans; never contains a secret or a stack trace")


class InvalidRequestError(_ErrorBody):
    error: Literal["invalid_request"]
    field: str = Field(description="The offending field, e.g. `fileName`, `metadata.big`, `body`, `limit`")


class UnauthorizedError(_ErrorBody):
    error: Literal["unauthorized"]


class ForbiddenError(_ErrorBody):
    error: Literal["forbidden"]


class NotFoundError(_ErrorBody):
    error: Literal["not_found"]


class MethodNotAllowedError(_ErrorBody):
    error: Literal["method_not_allowed"]


class ConflictError(_ErrorBody):
    error: Literal["conflict"]
    reason: Literal["already_completed", "cancelled"] = _omittable(
        "Why the upload cannot take the request, when it is settled: `already_completed` (an upload was attributed "
        "to it: delete the video instead), `cancelled` (its owner cancelled it)"
    )


class PayloadTooLargeError(_ErrorBody):
    error: Literal["payload_too_large"]


class UnsupportedMediaTypeError(_ErrorBody):
    error: Literal["unsupported_media_type"]


class LimitExceededError(_ErrorBody):
    error: Literal["limit_exceeded"]
    limit: Literal["intents_per_hour", "open_intents", "signatures_per_intent"]
    retryAfter: int = Field(ge=1, description="Seconds until the same request may succeed (= `Retry-After`)")  # noqa: N815


class QuotaExceededError(_ErrorBody):
    error: Literal["quota_exceeded"]
    limit: Literal["stored_bytes"]
    maxStoredBytes: int = Field(description="The tier's quota")  # noqa: N815
    bytesStored: int = Field(description="The caller's videos, counted")  # noqa: N815
    bytesReserved: int = Field(description="What the caller's open uploads declared")  # noqa: N815
    fileSize: int | None = Field(description="What this request declared (null: nothing, and no room is left)")  # noqa: N815


class FileRefusedError(_ErrorBody):
    error: Literal["file_refused"]
    reason: Literal["unknown_file", "no_source_context", "foreign_source_context", "another_upload"] = Field(
        description="`unknown_file`: VOD has no such file in the upload's application; `no_source_context`, "
        "`foreign_source_context`: the file was not uploaded with this service's signature; `another_upload`: "
        "it was uploaded for another upload (any user's)"
    )


class ServiceUnavailableError(_ErrorBody):
    error: Literal["service_unavailable"]
    retryAfter: int = Field(ge=1, description="Seconds after which to retry (= `Retry-After`)")  # noqa: N815


class InternalError(_ErrorBody):
    error: Literal["internal_error"]
    requestId: str = _omittable("The request's id in the logs (absent when the framework itself failed)")  # noqa: N815


# -- VOD's callback body (described loosely: it is VOD's format, not ours) -------------------------


class _VodBody(BaseModel):
    model_config = ConfigDict(extra="allow")


class VodEventV3(_VodBody):
    """A v3 event notification (vod-protocol §2). Unknown keys are ignored; the ones used are listed."""

    EventType: str = Field(description="`NewFileUpload`, `ProcedureStateChanged`, `FileDeleted`; others are counted")
    T: int | str | None = _omittable("The notification's expiry (epoch seconds); required with a SignKey")
    Sign: str | None = _omittable("`md5(SignKey + T)`, hex; required with a SignKey")
    FileUploadEvent: dict[str, Any] | None = _omittable(
        "NewFileUpload: `FileId`, `MediaBasicInfo` (with `SourceInfo.SourceContext`), `MetaData`, `ProcedureTaskId`"
    )
    ProcedureStateChangeEvent: dict[str, Any] | None = _omittable(
        "ProcedureStateChanged: `TaskId`, `Status`, `FileId`, `MediaProcessResultSet`, `AiContentReviewResultSet`"
    )
    FileDeleteEvent: dict[str, Any] | None = _omittable("FileDeleted: `FileIdSet` (at most 100)")


class VodEventV2(_VodBody):
    """A legacy v2 event notification."""

    eventType: str  # noqa: N815
    data: dict[str, Any] = Field(description="`fileId`, `sourceContext`, ... (legacy field names)")
    T: int | str | None = _omittable("As in v3")
    Sign: str | None = _omittable("As in v3")


REQUEST_MODELS: tuple[type[BaseModel], ...] = (VodEventV3, VodEventV2)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Signature,
    CreatedUpload,
    UploadStatus,
    CompletedUpload,
    Video,
    VideoPage,
    Me,
    Health,
    EventAck,
    InvalidRequestError,
    UnauthorizedError,
    ForbiddenError,
    NotFoundError,
    MethodNotAllowedError,
    ConflictError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    LimitExceededError,
    QuotaExceededError,
    FileRefusedError,
    ServiceUnavailableError,
    InternalError,
)
