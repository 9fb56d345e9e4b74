"""v3 event notifications: bodies built from the official SDK models, PUSH delivery and the PULL queue."""

from __future__ import annotations

import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tencentcloud.vod.v20180717 import models

from chalicelib import callback_auth
from vodlocal.config import Config
from vodlocal.eventconfig import EventConfig, EventConfigStore
from vodlocal.media import Media, iso_now
from vodlocal.store import Store

log = logging.getLogger("vodlocal.events")

MAX_PULL = 16
TRANSCODE_DEFINITION = 100010


def new_file_upload(media: Media) -> models.EventContent:
    task = models.FileUploadTask()
    task.FileId = media.file_id
    task.MediaBasicInfo = media.basic_info()
    task.ProcedureTaskId = media.procedure_task_id
    task.ReviewAudioVideoTaskId = ""
    task.MetaData = media.meta_data()
    event = models.EventContent()
    event.EventType = "NewFileUpload"
    event.FileUploadEvent = task
    return event


def _transcode_result(media: Media, status: str, begin: str, finish: str) -> models.MediaProcessTaskResult:
    transcode = models.MediaProcessTaskTranscodeResult()
    transcode.Status = status
    transcode.ErrCodeExt = ""
    transcode.ErrCode = 0
    transcode.Message = "SUCCESS" if status == "SUCCESS" else ""
    task_input = models.TranscodeTaskInput()
    task_input.Definition = TRANSCODE_DEFINITION
    transcode.Input = task_input
    transcode.Progress = 100 if status == "SUCCESS" else 0
    transcode.BeginProcessTime = begin
    transcode.FinishTime = finish
    if status == "SUCCESS":  # the emulator does not transcode: the output is the source, relabelled
        output = models.MediaTranscodeItem()
        output.Url = media.media_url
        output.Definition = TRANSCODE_DEFINITION
        output.Bitrate = 0
        output.Height = 0
        output.Width = 0
        output.Size = media.size
        output.Duration = 0.0
        output.Md5 = media.md5
        output.Container = media.type
        output.VideoStreamSet = []
        output.AudioStreamSet = []
        output.DigitalWatermarkType = "None"
        transcode.Output = output
    result = models.MediaProcessTaskResult()
    result.Type = "Transcode"
    result.TranscodeTask = transcode
    return result


def procedure_state_changed(media: Media, status: str, begin: str) -> models.EventContent:
    """``status`` is the ProcedureTask status: PROCESSING or FINISH."""
    task = models.ProcedureTask()
    task.TaskId = media.procedure_task_id
    task.Status = status
    # ErrCode/Message are deprecated (their setters warn) but VOD still fills them: set the backing fields.
    task._ErrCode = 0
    task._Message = ""
    task.FileId = media.file_id
    task.FileName = media.name
    task.FileUrl = media.media_url
    task.MetaData = media.meta_data()
    finished = status == "FINISH"
    task.MediaProcessResultSet = [
        _transcode_result(media, "SUCCESS" if finished else "PROCESSING", begin, iso_now() if finished else "")
    ]
    task.AiContentReviewResultSet = []
    task.AiAnalysisResultSet = []
    task.AiRecognitionResultSet = []
    task.TasksPriority = media.task_priority
    task.TasksNotifyMode = media.task_notify_mode
    task.SessionContext = media.session_context
    task.SessionId = ""
    task.Operator = ""
    task.OperationType = ""
    event = models.EventContent()
    event.EventType = "ProcedureStateChanged"
    event.ProcedureStateChangeEvent = task
    return event


def file_deleted(file_id: str) -> models.EventContent:
    item = models.FileDeleteResultItem()
    item.FileId = file_id
    item.DeleteParts = []
    task = models.FileDeleteTask()
    task.FileIdSet = [file_id]
    task.FileDeleteResultInfo = [item]
    event = models.EventContent()
    event.EventType = "FileDeleted"
    event.FileDeleteEvent = task
    return event


class EventBus:
    """Records every event the event config lets through, then delivers it as the config says: PUSH mode
    POSTs it to the NotificationUrl (signed with the SignKey), PULL mode queues it for PullEvents.

    The config is read when an event is emitted (its switch, and PUSH or PULL) and again before each PUSH
    attempt (the URL and SignKey): a change made with ModifyEventConfig applies to the next send. A pending
    PUSH whose mode has meanwhile become PULL joins the PULL queue; one whose URL has been cleared is dropped.
    """

    def __init__(self, store: Store, config: Config, event_config: EventConfigStore | None = None) -> None:
        self.store = store
        self.config = config
        self.event_config = event_config or EventConfigStore(store, EventConfig.seed(config))
        self._ready = threading.Condition()
        self._outbox: queue.Queue[tuple[int, dict[str, Any]] | None] = queue.Queue()
        self._timers: list[threading.Timer] = []
        self._closed = False
        self._closing = threading.Event()  # wakes a PUSH retry pause when the bus closes
        self.deliveries: list[dict[str, Any]] = []  # PUSH attempts, for tests and debugging
        self._worker = threading.Thread(target=self._push_loop, name="vodlocal-push", daemon=True)
        self._worker.start()
        # Undelivered PUSH rows from before a restart: the worker routes them by the config it now finds.
        for row in store.query("SELECT seq, body FROM events WHERE pull = 0 AND confirmed = 0 ORDER BY seq"):
            self._outbox.put((row["seq"], json.loads(row["body"])))

    # --- emitting ----------------------------------------------------------------------------------
    def emit(self, event: models.EventContent) -> int | None:
        """Record and deliver ``event``; None (and nothing recorded) when its switch is OFF."""
        current = self.event_config.current()
        if not current.notifies(event.EventType):
            log.info("event %s not notified: its switch is OFF", event.EventType)
            return None
        body: dict[str, Any] = json.loads(event.to_json_string())
        pull = current.mode == "PULL"
        push = not pull and current.push_target() is not None
        with self.store.transaction() as db:
            # ``confirmed`` doubles as "delivered" for PUSH rows, so a restart resumes undelivered pushes.
            cur = db.execute(
                "INSERT INTO events (event_type, body, created, pull, confirmed) VALUES (?,?,?,?,?)",
                (
                    event.EventType,
                    json.dumps(body, ensure_ascii=False),
                    time.time(),
                    int(pull),
                    int(not pull and not push),
                ),
            )
            seq = int(cur.lastrowid or 0)
        log.info("event %s #%d", event.EventType, seq)
        if pull:
            self._notify_pullers()
        elif push:
            self._outbox.put((seq, body))
        return seq

    def _notify_pullers(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def later(self, delay: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def start_procedure(self, media: Media) -> None:
        """Simulate the task flow named in the signature, notifying per TasksNotifyMode."""
        mode = media.task_notify_mode
        begin = iso_now()
        delay = self.config.procedure_delay
        if mode == "None":
            return
        if mode == "Change":
            self.later(delay, lambda: self._emit_quietly(procedure_state_changed(media, "PROCESSING", begin)))
            delay *= 2
        self.later(delay, lambda: self._emit_quietly(procedure_state_changed(media, "FINISH", begin)))

    def _emit_quietly(self, event: models.EventContent) -> None:
        if not self._closed:
            self.emit(event)

    def close(self) -> None:
        self._closed = True
        self._closing.set()
        for timer in self._timers:
            timer.cancel()
        self._outbox.put(None)
        with self._ready:
            self._ready.notify_all()

    # --- PUSH --------------------------------------------------------------------------------------
    def _push_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            seq, body = item
            replied = stopped = False
            for copy in range(self.config.duplicate_deliveries):
                if self._closed:
                    return
                outcome = self._deliver(seq, body, copy)
                if outcome is None:  # the event config no longer PUSHes anywhere
                    stopped = True
                    break
                replied = replied or outcome
            if self._closed:  # possibly cut short: left unconfirmed, so redelivered after a restart
                return
            try:
                if stopped and not replied:
                    self._reroute(seq)
                else:
                    self.store.execute("UPDATE events SET confirmed = 1 WHERE seq = ?", (seq,))
            except sqlite3.ProgrammingError:  # closed while delivering: redelivered after a restart
                return

    def _reroute(self, seq: int) -> None:
        """A PUSH event that can no longer be PUSHed: to the PULL queue in PULL mode, else dropped."""
        if self.event_config.current().mode == "PULL":
            self.store.execute("UPDATE events SET pull = 1 WHERE seq = ?", (seq,))
            log.info("event #%d: the mode is now PULL, queued for PullEvents", seq)
            self._notify_pullers()
        else:
            self.store.execute("UPDATE events SET confirmed = 1 WHERE seq = ?", (seq,))
            log.warning("event #%d dropped: no NotificationUrl is configured", seq)

    def _deliver(self, seq: int, body: dict[str, Any], copy: int) -> bool | None:
        """POST one copy, with retries. True once a reply came, False if every attempt failed, None if the
        event config stopped PUSHing (PULL mode, or no URL) before an attempt."""
        backoff = self.config.push_backoff
        for attempt in range(1 + self.config.push_retries):
            target = self.event_config.current().push_target()  # re-read: ModifyEventConfig applies at once
            if target is None:
                return None
            url, sign_key = target
            started = time.monotonic()
            payload = dict(body)
            if sign_key:
                expires = int(time.time()) + 600
                payload["T"] = expires
                payload["Sign"] = callback_auth.sign(sign_key, expires)
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            request = urllib.request.Request(  # noqa: S310 - the configured callback URL
                url,
                data=data,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            record: dict[str, Any] = {"seq": seq, "copy": copy, "attempt": attempt, "url": url, "t": time.time()}
            try:
                with urllib.request.urlopen(request, timeout=self.config.push_timeout) as resp:  # noqa: S310
                    resp.read()
                    record["status"] = resp.status
            except urllib.error.HTTPError as exc:
                record["status"] = exc.code  # VOD ignores the status code: a reply is a delivery
            except (OSError, TimeoutError) as exc:
                record["error"] = repr(exc)
            self.deliveries.append(record)
            if "status" in record:
                return True
            log.warning("push of event #%d failed (attempt %d): %s", seq, attempt + 1, record.get("error"))
            if attempt < self.config.push_retries and backoff:
                # A refused connection fails at once: wait so that a restarting callback can take the retry.
                # After a timeout the pause has already passed, and the retry goes out at once, as VOD's does.
                pause = backoff[min(attempt, len(backoff) - 1)] - (time.monotonic() - started)
                if pause > 0 and self._closing.wait(pause):
                    return False
        return False

    # --- PULL --------------------------------------------------------------------------------------
    def pull(self, wait: float | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + (self.config.pull_wait if wait is None else wait)
        while True:
            events = self._lease()
            if events or self._closed:
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self._ready:
                self._ready.wait(min(remaining, 0.5))

    def _lease(self) -> list[dict[str, Any]]:
        now = time.time()
        leased: list[dict[str, Any]] = []
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT seq, body FROM events WHERE pull = 1 AND confirmed = 0 "
                "AND (inflight_until IS NULL OR inflight_until < ?) ORDER BY seq LIMIT ?",
                (now, MAX_PULL),
            ).fetchall()
            for row in rows:
                handle = secrets.token_hex(16)
                db.execute(
                    "UPDATE events SET handle = ?, inflight_until = ? WHERE seq = ?",
                    (handle, now + self.config.confirm_window, row["seq"]),
                )
                body = json.loads(row["body"])
                body["EventHandle"] = handle
                leased.append(body)
        return leased

    def confirm(self, handles: list[str]) -> list[str]:
        """Confirm all handles or none; returns the handles that are unknown or past the window."""
        now = time.time()
        with self.store.transaction() as db:
            bad = [
                h
                for h in handles
                if db.execute(
                    "SELECT 1 FROM events WHERE handle = ? AND confirmed = 0 AND inflight_until >= ?",
                    (h, now),
                ).fetchone()
                is None
            ]
            if not bad:
                for handle in handles:
                    db.execute("UPDATE events SET confirmed = 1 WHERE handle = ?", (handle,))
        return bad

    def pending_count(self) -> int:
        row = self.store.one("SELECT count(*) AS n FROM events WHERE pull = 1 AND confirmed = 0")
        return int(row["n"]) if row else 0
