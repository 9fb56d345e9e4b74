"""Upload intents: one intent is one expected upload, and its id is what travels through VOD.

Pure domain objects plus the service that turns an authenticated request into an intent and
signatures. Storage is behind `IntentStore`; HTTP is not known here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from msgspec import Struct

from chalicelib import source_context
from chalicelib.credentials import SecretsProvider
from chalicelib.domain_events import DomainEvent, upload_cancelled
from chalicelib.errors import (
    CompletionLost,
    Conflict,
    DomainError,
    IdCollision,
    InvalidRequest,
    LimitExceeded,
    LimitReached,
    NotFound,
    SignatureRefused,
    UploadClosed,
)
from chalicelib.identity import Principal
from chalicelib.policy import ClientKind, Tier, UploadPolicy
from chalicelib.quotas import QuotaTerms, UsageReader, check_declared
from chalicelib.strict_json import dump_json

if TYPE_CHECKING:
    from chalicelib import vod_signature

RESUME_WINDOW_SECONDS = 86_400
# Reads of one cancel: the intent as it is, then as the cancel left it. A change in between (an attribution,
# another cancel, the sweep's expiry) takes one more: open can only become expired, and expired only settled.
_CANCEL_ATTEMPTS = 3

# "expired": no upload was seen by the time its last signature expired (the sweep closes it); an event
# that was still on its way completes it all the same. "cancelled": its owner took it back before an upload
# was attributed to it; an upload that still arrives for it is never attributed (docs/api.md, DELETE).
IntentStatus = Literal["open", "completed", "expired", "cancelled"]


class SignatureTerms(Struct, frozen=True):
    """The policy snapshot every signature of an intent is minted from."""

    procedure: str | None
    class_id: int
    storage_region: str | None
    vod_sub_app_id: int | None
    one_time: bool
    task_priority: int
    task_notify_mode: str
    ttl_seconds: int

    def options(self, context: str) -> vod_signature.SignatureOptions:
        from chalicelib import vod_signature

        with_procedure = self.procedure is not None
        return vod_signature.SignatureOptions(
            procedure=self.procedure,
            taskPriority=self.task_priority if with_procedure else None,
            taskNotifyMode=self.task_notify_mode if with_procedure else None,  # type: ignore[arg-type]
            classId=self.class_id,
            sourceContext=context,
            sessionContext=context if with_procedure else None,
            oneTimeValid=1 if self.one_time else None,
            vodSubAppId=self.vod_sub_app_id,
            storageRegion=self.storage_region,
        )


class ClientFields(Struct, frozen=True):
    title: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    content_type: str | None = None
    with_cover: bool = False
    metadata: dict[str, Any] | None = None
    client: ClientKind | None = None  # the upload SDK the client declared: not verified, chooses a lifetime


class IntentLimits(Struct, frozen=True):
    max_open_intents: int
    max_intents_per_hour: int


class UploadIntent(Struct, frozen=True):
    upload_id: str
    owner: str
    tier: str
    status: IntentStatus
    created_at: int
    window_ends_at: int
    expires_at: int  # DynamoDB TTL: the last possible signature's expiry plus the resume window
    terms: SignatureTerms
    client: ClientFields
    signatures_minted: int
    max_signatures: int
    file_id: str | None = None
    completed_at: int | None = None
    cancelled_at: int | None = None

    @property
    def open_slot(self) -> str:
        """The entry this intent holds in its owner's open-intent set until completed or the window ends."""
        return f"{self.window_ends_at}#{self.upload_id}"

    @property
    def closes_at(self) -> int:
        """When the last signature this intent can get expires: no upload can start with one after this."""
        return self.window_ends_at + self.terms.ttl_seconds


class IssuedSignature(Struct, frozen=True):
    intent: UploadIntent
    signature: str
    expire_time: int

    @property
    def signatures_remaining(self) -> int:
        return max(0, self.intent.max_signatures - self.intent.signatures_minted)


class IntentStore(Protocol):
    def create_intent(self, intent: UploadIntent, limits: IntentLimits, now: int) -> None: ...

    def renew_signature(self, upload_id: str, owner: str, now: int) -> UploadIntent: ...

    def get_intent(self, upload_id: str) -> UploadIntent | None: ...

    def cancel_intent(self, intent: UploadIntent, event: DomainEvent) -> None:
        """Mark the intent, as read, cancelled at the event's time and release its slot, with `event` in the
        outbox: one transaction. Raises CompletionLost if the intent is no longer as read."""
        ...


class UploadService:
    def __init__(
        self,
        store: IntentStore,
        secrets: SecretsProvider,
        policy: UploadPolicy,
        max_metadata_bytes: int,
        usage: UsageReader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._policy = policy
        self._max_metadata_bytes = max_metadata_bytes
        self._usage = usage
        self._clock = clock

    def create(self, principal: Principal, client: ClientFields, procedure: str | None) -> IssuedSignature:
        tier_name, tier = self._policy.tier_for(principal.claims)
        self._check_client_fields(client, tier)
        now = int(self._clock())
        quota = QuotaTerms.of(tier)
        if quota.max_stored_bytes is not None:
            check_declared(quota, self._usage.usage(principal.subject, now), client.file_size)
        window_ends_at = now + tier.upload_window_seconds
        ttl_seconds = tier.signature_ttl_for(client.client)
        intent = UploadIntent(
            upload_id=source_context.new_upload_id(),
            owner=principal.subject,
            tier=tier_name,
            status="open",
            created_at=now,
            window_ends_at=window_ends_at,
            expires_at=window_ends_at + ttl_seconds + RESUME_WINDOW_SECONDS,
            terms=SignatureTerms(
                procedure=tier.choose_procedure(procedure),
                class_id=tier.class_id,
                storage_region=tier.storage_region,
                vod_sub_app_id=tier.vod_sub_app_id,
                one_time=tier.one_time_signatures,
                task_priority=tier.task_priority,
                task_notify_mode=tier.task_notify_mode,
                ttl_seconds=ttl_seconds,
            ),
            client=client,
            signatures_minted=1,
            max_signatures=tier.max_signatures_per_intent,
        )
        signature, expire_time = self._sign(intent, now)
        limits = IntentLimits(tier.max_open_intents, tier.max_intents_per_hour)
        try:
            self._store.create_intent(intent, limits, now)
        except LimitReached as full:
            allowed = {
                "open_intents": f"at most {limits.max_open_intents} open uploads",
                "intents_per_hour": f"at most {limits.max_intents_per_hour} uploads per hour",
            }[full.limit]
            raise LimitExceeded(allowed, full.limit, full.until - now) from None
        except IdCollision:
            raise Conflict("upload id collision, retry") from None
        return IssuedSignature(intent, signature, expire_time)

    def renew_signature(self, principal: Principal, upload_id: str) -> IssuedSignature:
        if not source_context.is_upload_id(upload_id):
            raise NotFound("no such upload")
        now = int(self._clock())
        try:
            intent = self._store.renew_signature(upload_id, principal.subject, now)
        except SignatureRefused as refused:
            raise _why_not(refused.current, now) from None
        signature, expire_time = self._sign(intent, now)
        return IssuedSignature(intent, signature, expire_time)

    def get(self, principal: Principal, upload_id: str) -> UploadIntent:
        intent = self._store.get_intent(upload_id) if source_context.is_upload_id(upload_id) else None
        if intent is None or intent.owner != principal.subject:
            raise NotFound("no such upload")
        return intent

    def cancel(self, principal: Principal, upload_id: str) -> UploadIntent:
        """The owner takes the upload back: the first of the cancel and the upload's attribution to be stored
        wins. Idempotent: cancelling a cancelled intent answers it as it is. Raises UploadClosed once an upload
        is attributed to it."""
        for _ in range(_CANCEL_ATTEMPTS):
            intent = self.get(principal, upload_id)
            if intent.status == "cancelled":
                return intent
            if intent.status == "completed":
                raise UploadClosed(
                    "already_completed",
                    f"upload already completed with file {intent.file_id}: delete the video instead",
                )
            try:
                self._store.cancel_intent(intent, upload_cancelled(intent, int(self._clock())))
            except CompletionLost:
                pass  # attributed, cancelled or expired meanwhile: decide again on what is stored now
            # Cancelled now: answered as stored, so that a second cancel answers the same.
        raise CompletionLost(f"upload {upload_id} kept changing under us")

    def _sign(self, intent: UploadIntent, now: int) -> tuple[str, int]:
        from chalicelib import vod_signature  # where a signature is minted: the callback reads intents, mints none

        secrets = self._secrets.get()
        context = source_context.encode(intent.upload_id, secrets.context_tag_key)
        params = vod_signature.new_params(
            secrets.vod_secret_id, intent.terms.ttl_seconds, intent.terms.options(context), now=now
        )
        return vod_signature.sign(params, secrets.vod_secret_key), params.expireTime

    def _check_client_fields(self, client: ClientFields, tier: Tier) -> None:
        if client.file_size is not None and client.file_size > tier.max_file_size:
            raise InvalidRequest("fileSize", f"must be at most {tier.max_file_size} bytes")
        if client.metadata is not None:
            size = len(dump_json(client.metadata).encode("utf-8"))
            if size > self._max_metadata_bytes:
                raise InvalidRequest("metadata", f"must serialise to at most {self._max_metadata_bytes} bytes")


def _why_not(current: UploadIntent | None, now: int) -> DomainError:
    """Why no signature could be counted for this intent (None: the caller has no such intent)."""
    if current is None:
        return NotFound("no such upload")
    if current.status == "completed":
        return Conflict("upload already completed")
    if current.status == "cancelled":
        return UploadClosed("cancelled", "upload was cancelled; start a new upload")
    if current.signatures_minted >= current.max_signatures:
        return LimitExceeded(
            f"at most {current.max_signatures} signatures per upload",
            "signatures_per_intent",
            current.window_ends_at - now,
        )
    return Conflict("upload window has closed; start a new upload")
