"""The domain events VOD's notifications carry, whatever their wire format. Pure: no I/O, no parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.media import MediaFacts


@dataclass(frozen=True)
class UploadedFile:
    """A NewFileUpload."""

    file_id: str
    source_context: str | None
    procedure_task_id: str | None = None
    media: MediaFacts = field(default_factory=MediaFacts)


@dataclass(frozen=True)
class TaskOutput:
    kind: str
    status: str
    err_code: int | None = None
    url: str | None = None
    definition: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessingUpdate:
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


@dataclass(frozen=True)
class FilesDeleted:
    file_ids: tuple[str, ...]


@dataclass(frozen=True)
class OtherEvent:
    event_type: str


Event = UploadedFile | ProcessingUpdate | FilesDeleted | OtherEvent
