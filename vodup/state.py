"""The local resume state: one JSON file per upload, written atomically after every stored part, so that a
crash, ``kill -9`` or Ctrl-C loses at most the parts in flight."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# VOD keeps an upload session (vodSessionKey) for 1 day (vod-protocol.md §4.6).
RESUME_WINDOW = 86_400


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vodup"


@dataclass(frozen=True)
class LocalFile:
    """A file as it was when the upload started; a resume requires the same path, size and mtime."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> LocalFile:
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@dataclass
class FileState:
    """One file's multipart upload: its COS upload id, part size and the parts known stored (number -> ETag)."""

    upload_id: str | None = None
    part_size: int = 0
    parts: dict[int, str] = field(default_factory=dict)
    done: bool = False  # stored whole (multipart completed, or a 0-byte PutObject)


@dataclass
class UploadState:
    files: dict[str, LocalFile]  # "video" and, with a cover, "cover"
    session_key: str
    signer_context: str | None
    created: float = field(default_factory=time.time)
    transfers: dict[str, FileState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> UploadState:
        transfers = {
            kind: FileState(t["upload_id"], t["part_size"], {int(n): str(e) for n, e in t["parts"].items()}, t["done"])
            for kind, t in raw["transfers"].items()
        }
        files = {kind: LocalFile(**f) for kind, f in raw["files"].items()}
        return cls(files, raw["session_key"], raw["signer_context"], raw["created"], transfers)


class StateStore:
    def __init__(self, directory: Path | None = None, window: float = RESUME_WINDOW) -> None:
        self.directory = directory or default_state_dir()
        self.window = window
        self._lock = threading.Lock()

    def path_for(self, files: dict[str, LocalFile]) -> Path:
        identity = json.dumps({kind: asdict(f) for kind, f in sorted(files.items())}, sort_keys=True)
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"

    def load(self, files: dict[str, LocalFile]) -> UploadState | None:
        """The state of an unfinished upload of exactly these files, if it is younger than the resume window."""
        path = self.path_for(files)
        try:
            state = UploadState.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if state.files != files or time.time() - state.created > self.window:
            path.unlink(missing_ok=True)
            return None
        return state

    def save(self, state: UploadState) -> None:
        with self._lock:
            self._write(state)

    def record_part(self, state: UploadState, kind: str, number: int, etag: str) -> None:
        # Parts finish on several threads: changing and writing under one lock keeps each snapshot whole.
        with self._lock:
            state.transfers[kind].parts[number] = etag
            self._write(state)

    def _write(self, state: UploadState) -> None:
        # A rename is atomic, so a kill leaves the previous snapshot or this one. No fsync: a killed process
        # loses nothing the kernel already has, and a part lost to a power cut is only sent again.
        path = self.path_for(state.files)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json()))
        os.replace(tmp, path)

    def drop(self, state: UploadState) -> None:
        self.path_for(state.files).unlink(missing_ok=True)
