"""v3 event notifications: bodies built from the official SDK models, PUSH delivery and the PULL queue."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tencentcloud.vod.v20180717 import models

from chalicelib import callback_auth
from vodlocal.config import Config
from vodlocal.eventconfig import EventConfig, EventConfigStore
from vodlocal.media import Media, iso_now
from vodlocal.store import Store

log = logging.getLogger("vodlocal.events")

MAX_PULL = 16
MAX_REPLY_BODY = 1 << 16  # of a PUSH reply: read (up to the timeout) and ignored, as VOD ignores it
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


class PushFailed(Exception):
    """A PUSH attempt got no HTTP reply. ``timed_out``: none within the timeout (VOD retries that); otherwise
    the connection failed (refused, reset, name not resolved, TLS, not HTTP), which VOD does not document."""

    def __init__(self, reason: str, timed_out: bool) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


def post_json(url: str, data: bytes, timeout: float) -> int:
    """POST ``data`` to ``url`` and return the reply's status, whatever it is: VOD ignores it.

    ``timeout`` bounds connecting, sending and receiving the status line and headers together. The body is read
    until the same deadline and ignored. Redirects are not followed, and no proxy is used."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushFailed(f"not an http(s) URL: {parts.scheme or '(no scheme)'}://…", timed_out=False)
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply within {timeout:g} s")
        return remaining

    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.connect()
        sock = conn.sock  # kept: getresponse() may hand the socket over to the response and drop conn.sock
        assert sock is not None
        sock.settimeout(left())
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=data, headers={"Content-Type": "application/json"})
        sock.settimeout(left())
        resp = conn.getresponse()
        with contextlib.suppress(OSError, http.client.HTTPException):
            sock.settimeout(left())
            resp.read(MAX_REPLY_BODY)
        return resp.status
    except TimeoutError as exc:
        raise PushFailed(f"no reply within {timeout:g} s ({exc})", timed_out=True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise PushFailed(repr(exc), timed_out=False) from None
    finally:
        conn.close()


class EventBus:
    """Records every event the event config lets through, then delivers it as the config says: PUSH mode
    POSTs it to the NotificationUrl (signed with the SignKey), PULL mode queues it for PullEvents.

    The config is read when an event is emitted (its switch, and PUSH or PULL) and again before each PUSH
    attempt (the URL and SignKey): a change made with ModifyEventConfig applies to the next send. A pending
    PUSH whose mode has meanwhile become PULL joins the PULL queue; one whose URL has been cleared is dropped.

    Fault injection (``Config.duplicate_deliveries``, ``Config.reorder_window``) applies in both modes.
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
        return self._record(event.EventType, json.loads(event.to_json_string()), current)

    def emit_raw(self, body: dict[str, Any]) -> int:
        """Fault injection for tests: deliver ``body`` exactly as given, as VOD would deliver an event of its
        own (PUSH, or queued for PullEvents with a new ``EventHandle`` per delivery), however malformed: one the
        SDK's models cannot read, one of any size. No switch is consulted."""
        return self._record(str(body.get("EventType", "")), body, self.event_config.current())

    def _record(self, event_type: str, body: dict[str, Any], current: EventConfig) -> int:
        pull = current.mode == "PULL"
        push = not pull and current.push_target() is not None
        with self.store.transaction() as db:
            # ``confirmed`` doubles as "delivered" for PUSH rows, so a restart resumes undelivered pushes.
            cur = db.execute(
                "INSERT INTO events (event_type, body, created, pull, confirmed) VALUES (?,?,?,?,?)",
                (
                    event_type,
                    json.dumps(body, ensure_ascii=False),
                    time.time(),
                    int(pull),
                    int(not pull and not push),
                ),
            )
            seq = int(cur.lastrowid or 0)
        log.info("event %s #%d", event_type[:64], seq)
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
            group = self._next_push_group()
            if group is None:
                return
            if len(group) > 1:
                log.info("reorder injection: pushing events %s in reverse order", [seq for seq, _ in group])
            for seq, body in reversed(group):
                if not self._push_event(seq, body):
                    return

    def _next_push_group(self) -> list[tuple[int, dict[str, Any]]] | None:
        """The next event, and with ``reorder_window`` > 1 up to that many that are ready together: the first
        waits up to ``reorder_hold`` seconds for the others. None when the bus closes (what was taken stays
        undelivered in the database, and is pushed after a restart)."""
        item = self._outbox.get()
        if item is None:
            return None
        group = [item]
        deadline = time.monotonic() + self.config.reorder_hold
        while len(group) < self.config.reorder_window:
            remaining = deadline - time.monotonic()
            try:
                item = self._outbox.get(timeout=remaining) if remaining > 0 else self._outbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return None
            group.append(item)
        return group

    def _push_event(self, seq: int, body: dict[str, Any]) -> bool:
        """Deliver every copy of one event and record it as done; False when the bus closed meanwhile."""
        replied = stopped = False
        for copy in range(self.config.duplicate_deliveries):
            if self._closed:
                return False
            outcome = self._deliver(seq, body, copy)
            if outcome is None:  # the event config no longer PUSHes anywhere
                stopped = True
                break
            replied = replied or outcome
        if self._closed:  # possibly cut short: left unconfirmed, so redelivered after a restart
            return False
        try:
            if stopped and not replied:
                self._reroute(seq)
            else:
                self.store.execute("UPDATE events SET confirmed = 1 WHERE seq = ?", (seq,))
        except sqlite3.ProgrammingError:  # closed while delivering: redelivered after a restart
            return False
        return True

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
        """POST one copy, retrying as VOD does. True once a reply came (any status), False if the event is lost,
        None if the event config stopped PUSHing (PULL mode, or no URL) before an attempt.

        An attempt fails when no reply comes within ``push_timeout``; it is then retried ``push_retries`` times.
        A connection that fails outright (refused, reset, …) is retried only with ``push_retry_on="network"``."""
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
            record: dict[str, Any] = {"seq": seq, "copy": copy, "attempt": attempt, "url": url, "t": time.time()}
            try:
                record["status"] = post_json(url, data, self.config.push_timeout)
            except PushFailed as failure:
                record["error"] = str(failure)
                record["timeout"] = failure.timed_out
            self.deliveries.append(record)
            if "status" in record:
                return True  # VOD ignores the status code and the body: a reply is a delivery
            retried = record["timeout"] or self.config.push_retry_on == "network"
            if not retried or attempt == self.config.push_retries:
                log.warning(
                    "event #%d lost after %d PUSH attempt(s): %s%s",
                    seq,
                    attempt + 1,
                    record["error"],
                    "" if retried else " (only a timeout is retried, as VOD documents; see --push-retry-on)",
                )
                return False
            log.warning("push of event #%d failed (attempt %d), retrying: %s", seq, attempt + 1, record["error"])
            if backoff:
                # A refused connection fails at once: wait so that a restarting callback can take the retry.
                # After a timeout the pause has already passed, and the retry goes out at once.
                pause = backoff[min(attempt, len(backoff) - 1)] - (time.monotonic() - started)
                if pause > 0 and self._closing.wait(pause):
                    return False
        return False

    # --- PULL --------------------------------------------------------------------------------------
    def pull(self, wait: float | None = None) -> list[dict[str, Any]]:
        """PullEvents: up to 16 events at once if any are due, else hold up to ``wait`` seconds for one."""
        deadline = time.monotonic() + (self.config.pull_wait if wait is None else wait)
        while not self._closed:  # checked before each lease: closing closes the store right after
            events, next_due = self._lease()
            if events:
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            pause = min(remaining, 0.5)
            if next_due is not None:  # a redelivery or the end of a reorder hold: wake up for it
                pause = min(pause, max(next_due - time.time(), 0.005))
            with self._ready:
                self._ready.wait(pause)
        return []

    def _lease(self) -> tuple[list[dict[str, Any]], float | None]:
        """Hand out the due events with fresh handles; also the (wall clock) time the next one falls due, if any.

        With ``reorder_window`` > 1, fewer due events than the window are held until the earliest has been due
        for ``reorder_hold`` seconds, and each run of ``reorder_window`` events goes out reversed. With
        ``duplicate_deliveries`` > 1, the first lease of a copy queues the next copy at the tail of the queue."""
        now = time.time()
        config = self.config
        leased: list[dict[str, Any]] = []
        with self.store.transaction() as db:
            self._expire(db, now)
            rows = db.execute(
                "SELECT seq, event_type, body, created, handle, inflight_until, copy FROM events "
                "WHERE pull = 1 AND confirmed = 0 AND (inflight_until IS NULL OR inflight_until < ?) "
                "ORDER BY seq LIMIT ?",
                (now, MAX_PULL),
            ).fetchall()
            pending = db.execute(
                "SELECT min(inflight_until) AS due FROM events "
                "WHERE pull = 1 AND confirmed = 0 AND inflight_until >= ?",
                (now,),
            ).fetchone()
            next_due: float | None = pending["due"] if pending else None
            window = config.reorder_window
            if window > 1 and 0 < len(rows) < window:
                due_since = min(max(row["created"], row["inflight_until"] or 0.0) for row in rows)
                held_until = due_since + config.reorder_hold
                if now < held_until:
                    return [], held_until if next_due is None else min(next_due, held_until)
            groups = [rows[i : i + window] for i in range(0, len(rows), window)]
            if window > 1 and any(len(group) > 1 for group in groups):
                log.info("reorder injection: pulling events %s", [row["seq"] for g in groups for row in reversed(g)])
            for row in (row for group in groups for row in reversed(group)):
                handle = secrets.token_hex(16)
                db.execute(
                    "UPDATE events SET handle = ?, inflight_until = ? WHERE seq = ?",
                    (handle, now + config.confirm_window, row["seq"]),
                )
                if row["handle"] is None and row["copy"] + 1 < config.duplicate_deliveries:
                    db.execute(
                        "INSERT INTO events (event_type, body, created, pull, confirmed, copy) VALUES (?,?,?,1,0,?)",
                        (row["event_type"], row["body"], row["created"], row["copy"] + 1),
                    )
                    log.info("duplicate injection: event #%d queued again (copy %d)", row["seq"], row["copy"] + 1)
                body = json.loads(row["body"])
                body["EventHandle"] = handle
                leased.append(body)
        return leased, next_due

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        """Drop the PULL events not confirmed within ``event_retention`` of their creation, pulled or not."""
        dropped = db.execute(
            "DELETE FROM events WHERE pull = 1 AND confirmed = 0 AND created < ?",
            (now - self.config.event_retention,),
        ).rowcount
        if dropped:
            retention = self.config.event_retention
            log.warning("%d PULL event(s) dropped: not confirmed within %g s of being created", dropped, retention)

    def confirm(self, handles: list[str]) -> dict[str, str]:
        """ConfirmEvents: all handles or none. Returns why each refused handle was refused (empty: all confirmed)."""
        now = time.time()
        refused: dict[str, str] = {}
        with self.store.transaction() as db:
            self._expire(db, now)
            for handle in handles:
                row = db.execute("SELECT confirmed, inflight_until FROM events WHERE handle = ?", (handle,)).fetchone()
                if row is None:
                    refused[handle] = "unknown (never issued, replaced when its event was pulled again, or expired)"
                elif row["confirmed"]:
                    refused[handle] = "already confirmed"
                elif row["inflight_until"] < now:
                    refused[handle] = f"past its {self.config.confirm_window:g} s confirm window"
            if not refused:
                for handle in handles:
                    db.execute("UPDATE events SET confirmed = 1 WHERE handle = ?", (handle,))
        return refused

    def pending_count(self) -> int:
        """DescribeEventsState: events not yet confirmed, in flight or not (copies not queued yet excluded)."""
        with self.store.transaction() as db:
            self._expire(db, time.time())
            row = db.execute("SELECT count(*) AS n FROM events WHERE pull = 1 AND confirmed = 0").fetchone()
        return int(row["n"]) if row else 0
