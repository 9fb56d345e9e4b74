"""The local resume state: one JSON file per upload, written atomically after every stored part, so that a
crash, ``kill -9`` or Ctrl-C loses at most the parts in flight. The files hold VOD session keys: they are private
(0600 in a 0700 directory), never written through a link, and validated when read back."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from vodup.errors import StateError

# VOD keeps an upload session (vodSessionKey) for 1 day (vod-protocol.md §4.6).
RESUME_WINDOW = 86_400
# Two files of 10,000 parts each (COS's most) take about 1 MiB.
MAX_STATE_BYTES = 4 << 20


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

    def is_of(self, files: dict[str, LocalFile]) -> bool:
        """Whether this is the state of exactly ``files``, each with its own transfer and a usable part size."""
        return (
            self.files == files
            and self.transfers.keys() == files.keys()
            and all(t.part_size > 0 or t.upload_id is None for t in self.transfers.values())
        )


_STATE = TypeAdapter(UploadState)


class StateStore:
    def __init__(self, directory: Path | None = None, window: float = RESUME_WINDOW) -> None:
        self.directory = directory or default_state_dir()
        self.window = window
        self._lock = threading.Lock()

    def path_for(self, files: dict[str, LocalFile]) -> Path:
        identity = json.dumps({kind: asdict(f) for kind, f in sorted(files.items())}, sort_keys=True)
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"

    def open(self) -> None:
        """Creates the directory (0700), or checks that the one there is a directory of ours, and makes it
        private: the files in it hold session keys."""
        where = str(self.directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.directory.stat()
        except FileExistsError:
            raise StateError(f"the state directory {where!r} is not a directory") from None
        except OSError as exc:
            raise StateError(f"the state directory {where!r} cannot be created: {exc.strerror}") from None
        if info.st_uid != os.getuid():
            raise StateError(f"the state directory {where!r} belongs to another user")
        try:
            if info.st_mode & 0o077:
                self.directory.chmod(0o700)
        except OSError as exc:
            raise StateError(f"the state directory {where!r} cannot be made private: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise StateError(f"the state directory {where!r} is not writable")

    def load(self, files: dict[str, LocalFile]) -> UploadState | None:
        """The state of an unfinished upload of exactly these files, if it is younger than the resume window."""
        path = self.path_for(files)
        try:
            # O_NOFOLLOW: a link planted in place of the file is not read through.
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as file:
                raw = file.read(MAX_STATE_BYTES + 1)
            state = _STATE.validate_json(raw) if len(raw) <= MAX_STATE_BYTES else None
        except (OSError, ValidationError):
            state = None
        if state is None or not state.is_of(files) or time.time() - state.created > self.window:
            self._remove(path)
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
        # A fresh temporary file (mkstemp: O_EXCL, so never through a planted link; 0600), then a rename, which
        # replaces a link at the target rather than following it, and is atomic: a kill leaves the previous
        # snapshot or this one. No fsync: a killed process loses nothing the kernel already has, and a part lost
        # to a power cut is only sent again.
        path = self.path_for(state.files)
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as file:
                    file.write(json.dumps(state.to_json()))
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            raise StateError(f"the resume state cannot be written to {str(self.directory)!r}: {exc.strerror}") from None

    def drop(self, state: UploadState) -> None:
        self._remove(self.path_for(state.files))

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # not a file we can remove (a directory in its place): the next write fails with a clear error
