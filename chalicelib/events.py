"""The domain events VOD's notifications carry, whatever their wire format. Pure: no I/O, no parsing."""

from __future__ import annotations

from typing import Any

from msgspec import Struct, field

from chalicelib.media import MediaFacts


class UploadedFile(Struct, frozen=True):
    """A NewFileUpload."""

    file_id: str
    source_context: str | None
    procedure_task_id: str | None = None
    media: MediaFacts = field(default_factory=MediaFacts)


class TaskOutput(Struct, frozen=True):
    kind: str
    status: str
    err_code: int | None = None
    url: str | None = None
    definition: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class ProcessingUpdate(Struct, frozen=True):
    """A ProcedureStateChanged: a snapshot of the task flow's state for one file."""

    task_id: str
    file_id: str
    status: str  # as VOD reports it: PROCESSING, FINISH (kept verbatim, at most 32 characters)
    session_context: str | None
    outputs: tuple[TaskOutput, ...]
    review: tuple[dict[str, Any], ...] = ()
    err_code: int | None = None
    message: str | None = None
    duration: float | None = None  # the file's, from the task's MetaData (seconds): checked against the quota

    @property
    def rank(self) -> int:
        """Orders snapshots of one task flow: FINISH beats any PROCESSING, then more finished sub-tasks win."""
        done = sum(1 for output in self.outputs if output.status in ("SUCCESS", "FAIL"))
        return (10_000 if self.status == "FINISH" else 0) + done


class FilesDeleted(Struct, frozen=True):
    file_ids: tuple[str, ...]


class OtherEvent(Struct, frozen=True):
    event_type: str


Event = UploadedFile | ProcessingUpdate | FilesDeleted | OtherEvent
