"""Durable state: one SQLite database (WAL) plus object/part files under the data directory.

Every file is written to a temporary name and renamed into place, so a killed emulator never leaves a
half-written part or object behind; rows are only inserted after the file is in place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_key TEXT PRIMARY KEY, data TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS used_signatures (
    mac TEXT PRIMARY KEY, expires INTEGER NOT NULL, session_key TEXT, fingerprint TEXT);
CREATE TABLE IF NOT EXISTS credentials (
    secret_id TEXT PRIMARY KEY, secret_key TEXT NOT NULL, token TEXT NOT NULL, expires INTEGER NOT NULL,
    bucket TEXT NOT NULL, prefix TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, content_type TEXT NOT NULL,
    initiated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, etag TEXT NOT NULL, size INTEGER NOT NULL,
    modified REAL NOT NULL, PRIMARY KEY (upload_id, part_number));
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, md5 TEXT NOT NULL,
    content_type TEXT NOT NULL, modified REAL NOT NULL, blob TEXT NOT NULL, PRIMARY KEY (bucket, key));
CREATE TABLE IF NOT EXISTS media (
    file_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT NOT NULL, body TEXT NOT NULL, created REAL NOT NULL,
    pull INTEGER NOT NULL, handle TEXT, inflight_until REAL, confirmed INTEGER NOT NULL DEFAULT 0,
    copy INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS event_config (
    id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL, source TEXT NOT NULL, updated REAL NOT NULL);
"""
# Columns added after a table's first release: a data directory from an older vodlocal gets them on start.
MIGRATIONS = {
    "events": {"copy": "INTEGER NOT NULL DEFAULT 0"},
    # The session a one-time signature serves, and the file fields of the Apply that opened it (NULL: spent
    # by any request, the strict rule).
    "used_signatures": {"session_key": "TEXT", "fingerprint": "TEXT"},
}

CHUNK = 1 << 20


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.blobs = data_dir / "objects"
        self.parts = data_dir / "parts"
        self.tmp = data_dir / "tmp"
        for path in (self.blobs, self.parts, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(data_dir / "state.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        for table, columns in MIGRATIONS.items():
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, spec in columns.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {spec}")

    # --- SQL -----------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- files ---------------------------------------------------------------------------------
    def write_file(self, chunks: Iterable[bytes], dest: Path) -> tuple[int, str]:
        """Stream ``chunks`` into ``dest`` atomically; returns (size, hex MD5)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp, size, md5 = self.write_temp(chunks)
        try:
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return size, md5

    def write_temp(self, chunks: Iterable[bytes]) -> tuple[Path, int, str]:
        """Stream ``chunks`` into a fresh file under ``tmp/``; returns (path, size, hex MD5).

        The caller moves the file into place (``os.replace``) once it is validated, or deletes it.
        """
        tmp = self.tmp / uuid.uuid4().hex
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, size, digest.hexdigest()

    def part_path(self, upload_id: str, part_number: int) -> Path:
        return self.parts / upload_id / f"{part_number:05d}"

    def new_blob_path(self) -> Path:
        name = uuid.uuid4().hex
        return self.blobs / name[:2] / name

    def blob_path(self, name: str) -> Path:
        return self.blobs / name[:2] / name

    def drop_parts(self, upload_id: str) -> None:
        shutil.rmtree(self.parts / upload_id, ignore_errors=True)


def read_file(path: Path, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from read_open(fh, start, length)


def read_open(fh: BinaryIO, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    """Stream from an already open file (it stays readable if its name is unlinked meanwhile)."""
    fh.seek(start)
    remaining = length if length is not None else -1
    while remaining != 0:
        data = fh.read(CHUNK if remaining < 0 else min(CHUNK, remaining))
        if not data:
            return
        if remaining > 0:
            remaining -= len(data)
        yield data
