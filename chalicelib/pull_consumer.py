"""The PULL consumer: VOD keeps events until they are confirmed, so none is lost to a failure here.

Each run pulls batches (PullEvents, at most 16, long-polled) until the queue is empty (or its deadline), applies
each event through the event service, and confirms (ConfirmEvents) only the events whose effects are
durably written, or that can never apply. An event that is not confirmed comes back after 30 s, with a new
EventHandle. One that keeps failing is counted per event (its content, which every delivery repeats, not
its handle) and, at the stage's limit, parked as a dead letter with its body (bounded), confirmed, and
logged at ERROR: nothing is dropped silently. A failure, even to record a failure, is its event's alone:
the rest of the batch applies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from msgspec import Struct, field

from chalicelib import deadline
from chalicelib.errors import ServiceUnavailable
from chalicelib.event_service import EventService, Outcome

logger = logging.getLogger("vodupload")

# A PullEvents call holds up to 5 s when the queue is empty (vod-protocol.md §3.2); leave that, plus the
# confirm, before the deadline.
PULL_HOLD_SECONDS = 5.0
CONFIRM_SECONDS = 2.0
# Of a failure's reason, in the log and in the record.
REASON_CHARS = 500


# Why a run ended: its time was up, a pull found nothing while nothing awaited redelivery, or a pull failed.
RunEnd = Literal["deadline", "empty", "queue unavailable"]


class QueueUnavailable(Exception):
    """PullEvents or ConfirmEvents failed."""


class PulledEvent(Struct, frozen=True):
    """One delivery of an event: the handle to confirm it with, and the event itself (`event_body`), which
    is the same in every delivery of the event, so its digest identifies the event across deliveries."""

    handle: str
    body: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def event_body(event: Mapping[str, Any]) -> bytes:
    """An event of a PullEvents answer less its EventHandle (what a pushed notification's body holds), as
    canonical JSON: keys sorted, no spaces, UTF-8. VOD issues a new handle with every delivery
    (vod-protocol.md §3.2) and promises nothing about the order of keys, so only this is the event's own."""
    content = {key: value for key, value in event.items() if key != "EventHandle"}
    try:
        return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (`"\ud800"`), which only JSON's escapes can carry
        return json.dumps(content, sort_keys=True, separators=(",", ":")).encode("ascii")


class EventQueue(Protocol):
    def pull(self) -> list[PulledEvent]: ...

    def confirm(self, handles: list[str]) -> None: ...


class FailureStore(Protocol):
    def count_failure(self, digest: str, event_type: str, body: bytes, error: str, now: int) -> int: ...

    def park(self, digest: str, now: int) -> bool: ...  # True when this call parked it


class RunReport(Struct):
    pulls: int = 0  # PullEvents calls answered
    ended: RunEnd = "deadline"
    pulled: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failed: int = 0  # left unconfirmed: VOD delivers them again
    parked: int = 0
    deferred: int = 0  # pulled too late in their batch to be confirmed in time: left for redelivery
    unconfirmed: int = 0  # applied, but the confirm failed: their redelivery is a duplicate
    queue_errors: int = 0  # PullEvents calls that failed (the run ends at the first)
    upload_lags: list[float] = field(default_factory=list)  # seconds from an upload's creation to its attribution

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class PullConsumer:
    def __init__(
        self,
        queue: EventQueue,
        events: EventService,
        failures: FailureStore,
        max_failures: int,
        event_seconds: float = 3.5,
        confirm_window_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`event_seconds` bounds one event's storage calls and their retries, as a request's deadline does;
        `confirm_window_seconds` is how long VOD accepts a confirm after the pull."""
        self._queue = queue
        self._events = events
        self._failures = failures
        self._max_failures = max_failures
        self._event_seconds = event_seconds
        self._confirm_window = confirm_window_seconds
        self._clock = clock

    def run(self, seconds: float) -> RunReport:
        """Pull and apply until the queue is empty, or until less than a pull and a confirm fit in `seconds`.

        The run ends at its first empty pull: the schedule starts the next one, and an idle stage then pays
        for one long-poll a run rather than for a loop that waits out the whole timeout. Only while events
        it pulled are left for redelivery (failed, unconfirmed or deferred) does it keep pulling, so that
        their redelivery is settled in this run rather than a schedule later.

        Each event is confirmed as soon as it is applied: VOD refuses a confirm after its window (30 s), and
        a batch of 16 slow events confirmed together could miss it and come back forever, ahead of every
        newer event. Events of a batch that could no longer be confirmed in time are left for redelivery."""
        stop_at = time.monotonic() + seconds
        report = RunReport()
        awaiting_redelivery: set[bytes] = set()  # bodies of the events this run left unconfirmed
        while time.monotonic() + PULL_HOLD_SECONDS + CONFIRM_SECONDS < stop_at:
            try:
                batch = self._queue.pull()
            except QueueUnavailable as error:
                # Unconfirmed events come back after the window; the next run starts over.
                logger.error("VOD event queue unavailable, run ended", extra={"reason": str(error)})
                report.queue_errors += 1
                report.ended = "queue unavailable"
                break
            report.pulls += 1
            if not batch and not awaiting_redelivery:
                report.ended = "empty"
                break
            pulled_at = time.monotonic()
            report.pulled += len(batch)
            for event in batch:
                if time.monotonic() - pulled_at > self._confirm_window - min(CONFIRM_SECONDS, self._confirm_window / 2):
                    report.deferred += 1
                    awaiting_redelivery.add(event.body)
                elif self._settle(event, report) and self._confirm(event, report):
                    awaiting_redelivery.discard(event.body)
                else:
                    awaiting_redelivery.add(event.body)
        return report

    def _confirm(self, event: PulledEvent, report: RunReport) -> bool:
        """Confirm one settled event; False when VOD will deliver it again."""
        try:
            self._queue.confirm([event.handle])
        except QueueUnavailable as error:  # applied all the same: its redelivery will be a duplicate
            report.unconfirmed += 1
            logger.warning("pulled event applied but not confirmed", extra={"reason": str(error)})
            return False
        return True

    def _settle(self, event: PulledEvent, report: RunReport) -> bool:
        """Apply one event; True when it may be confirmed (applied, or parked)."""
        try:
            with deadline.within(self._event_seconds):
                outcome: Outcome = self._events.apply_pulled(event.body)
        except ServiceUnavailable as error:
            # Storage is down: counting the failure would fail too. VOD delivers the event again.
            report.failed += 1
            logger.warning("pulled event not applied, left for redelivery", extra={"reason": str(error)})
            return False
        except Exception as error:
            return self._failed(event, error, report)
        report.count(outcome.outcome)
        if outcome.uploaded_at is not None:
            report.upload_lags.append(max(0.0, self._clock() - outcome.uploaded_at))
        return True

    def _failed(self, event: PulledEvent, error: Exception, report: RunReport) -> bool:
        reason = f"{type(error).__name__}: {error}"[:REASON_CHARS]
        event_type = _event_type(event.body)
        fields = {"event": event.digest, "eventType": event_type, "size": len(event.body), "reason": reason}
        now = int(self._clock())
        newly_parked = False
        try:
            failures = self._failures.count_failure(event.digest, event_type, event.body, reason, now)
            if failures >= self._max_failures:
                newly_parked = self._failures.park(event.digest, now)
        except Exception as storage_error:  # whatever storage answers, it holds up this event only
            report.failed += 1
            logger.error(
                "pulled event failed, and recording the failure failed too: left for redelivery",
                extra={**fields, "storageError": f"{type(storage_error).__name__}: {storage_error}"[:REASON_CHARS]},
            )
            return False
        if failures < self._max_failures:
            report.failed += 1
            logger.warning("pulled event failed", extra={**fields, "failures": failures})
            return False
        if not newly_parked:  # parked before, but its confirm was lost: confirmed again, not counted again
            logger.warning("pulled event already parked, delivered again", extra={**fields, "failures": failures})
            return True
        report.parked += 1
        logger.error("pulled event parked as a dead letter", extra={**fields, "failures": failures})
        return True


def _event_type(body: bytes) -> str:
    """For the log and the dead letter only: the event may not even be JSON."""
    try:
        value = json.loads(body).get("EventType")
    except (ValueError, AttributeError):
        return "unreadable"
    return value[:64] if isinstance(value, str) else "unknown"
