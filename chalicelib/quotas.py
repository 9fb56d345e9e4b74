"""Quotas per tier: the bytes of video a user keeps in VOD, and the longest video (docs/configuration.md, Quotas).

Where each limit holds:
- `POST /uploads` refuses a declared `fileSize` that would pass the bytes quota (`check_declared`), counting
  what the user stores and what their open intents declared. A declaration is the client's word checked
  against a read of the counters: it turns honest clients away before they upload, it bounds nothing.
- The bound is kept where VOD's size is known, at attribution (chalicelib/storage/usage.py): an upload is
  counted only if it fits, and one that does not is marked, published and handled by the tier's rule.
- The duration is checked at attribution when VOD's metadata reports it, else when a task flow's does.

Pure: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

from msgspec import Struct

from chalicelib.domain_events import QUOTA_EXCEEDED, DomainEvent
from chalicelib.errors import QuotaExceeded
from chalicelib.identity import Principal
from chalicelib.policy import OverQuotaRule, Tier, UploadPolicy

Quota = Literal["bytes", "duration"]


class QuotaTerms(Struct, frozen=True):
    """A tier's quotas (None: no such limit) and its rule for an upload that breaks one."""

    max_stored_bytes: int | None
    max_video_seconds: float | None
    rule: OverQuotaRule

    @classmethod
    def of(cls, tier: Tier) -> QuotaTerms:
        return cls(tier.max_stored_bytes, tier.max_video_seconds, tier.over_quota)

    def room_for(self, size: int) -> int | None:
        """The most the user may store before an upload of `size` bytes for it still to fit (None: any amount).
        Negative when it fits in no usage at all. DynamoDB conditions do no arithmetic: this is the operand."""
        return None if self.max_stored_bytes is None else self.max_stored_bytes - size

    def duration_break(self, duration: float | None) -> QuotaBreak | None:
        if duration is None or self.max_video_seconds is None or duration <= self.max_video_seconds:
            return None
        return QuotaBreak("duration", self.max_video_seconds, duration, self.rule)


# Terms with no limit: what an attribution made outside any tier counts under (the deploy's rehearsal, benches).
UNLIMITED = QuotaTerms(None, None, "review")


class QuotaBreak(Struct, frozen=True):
    """An attributed upload that broke a quota: `measured` is the usage it would have taken the user to
    (bytes), or its duration in seconds."""

    quota: Quota
    limit: float
    measured: float
    rule: OverQuotaRule

    def event_data(self) -> dict[str, Any]:
        """The `quota.exceeded` event's own fields (docs/events.md)."""
        return {"quota": self.quota, "limit": self.limit, "measured": self.measured, "rule": self.rule}

    def event(self, owner: str, upload_id: str, file_id: str, now: int) -> DomainEvent:
        """Published once per video and quota: its key is the FileId and the quota."""
        return DomainEvent(QUOTA_EXCEEDED, f"{file_id}#{self.quota}", now, owner, upload_id, file_id, self.event_data())


class Usage(Struct, frozen=True):
    """What a user holds: bytes counted against the quota, attributed videos not deleted, open intents and the
    bytes those declared."""

    bytes_stored: int = 0
    videos: int = 0
    open_intents: int = 0
    bytes_reserved: int = 0


def known_duration(seconds: float | None) -> float | None:
    """VOD's Duration, or None when it reports none or 0 (not measured yet: vodlocal always says 0)."""
    return seconds if seconds is not None and seconds > 0 else None


def check_declared(terms: QuotaTerms, usage: Usage, declared: int | None) -> None:
    """Refuse an upload whose declared size would take stored plus reserved bytes past the quota. An undeclared
    size counts as one byte: with no room left at all, nothing is signed."""
    limit, size = terms.max_stored_bytes, 1 if declared is None else declared
    if limit is not None and usage.bytes_stored + usage.bytes_reserved + size > limit:
        raise QuotaExceeded(limit, usage.bytes_stored, usage.bytes_reserved, declared)


class UsageReader(Protocol):
    def usage(self, owner: str, now: int) -> Usage: ...


class Account(Struct, frozen=True):
    """What `GET /me` answers: the caller's tier, its limits and the caller's usage."""

    tier_name: str
    tier: Tier
    usage: Usage


class AccountService:
    def __init__(self, usage: UsageReader, policy: UploadPolicy, clock: Callable[[], float] = time.time) -> None:
        self._usage = usage
        self._policy = policy
        self._clock = clock

    def me(self, principal: Principal) -> Account:
        tier_name, tier = self._policy.tier_for(principal.claims)
        return Account(tier_name, tier, self._usage.usage(principal.subject, int(self._clock())))


def stored_size(reported: int | None, declared: int | None) -> int:
    """The bytes an upload counts: VOD's Size, else (a v2 event reports none) what its intent declared."""
    if reported is not None and reported >= 0:
        return reported
    return declared or 0
