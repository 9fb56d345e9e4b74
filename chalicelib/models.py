"""Request bodies, validated with pydantic; unknown fields are rejected.

Each model's validator is built when a request first needs it (`defer_build`), not at import: a cold start
builds only the one its route validates.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.policy import ClientKind
from chalicelib.uploads import ClientFields

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE)]
FileName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f/\\]*$")]
ContentType = Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$")]
ProcedureName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_PRINTABLE)]
# VOD's FileIds are decimal strings (e.g. 5285890784246869930); letters are allowed in case that changes.
FileId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z]+$")]


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    title: Title | None = None
    fileName: FileName | None = None  # noqa: N815 - wire names
    fileSize: int | None = Field(default=None, ge=0)  # noqa: N815
    contentType: ContentType | None = None  # noqa: N815
    withCover: bool = False  # noqa: N815
    procedure: ProcedureName | None = None
    metadata: dict[str, Any] | None = None
    client: ClientKind | None = None

    def client_fields(self) -> ClientFields:
        return ClientFields(
            title=self.title,
            file_name=self.fileName,
            file_size=self.fileSize,
            content_type=self.contentType,
            with_cover=self.withCover,
            metadata=self.metadata,
            client=self.client,
        )


class CompleteUploadRequest(BaseModel):
    """The FileId the upload SDK reported for this upload."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    fileId: FileId  # noqa: N815 - wire name
