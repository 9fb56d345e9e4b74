"""Server-side upload policy: what a user's signatures may contain and how many they may get.

The client never chooses `procedure`, `classId`, `storageRegion`, `vodSubAppId`, one-time use or
signature lifetime; it may only pick one of its tier's allowed procedures by name, and declare which
upload SDK it is (`ClientKind`), which selects among the lifetimes its tier grants every client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chalicelib.errors import InvalidRequest
from chalicelib.vod_limits import MAX_VALIDITY_SECONDS

# The upload SDK a client declares on POST /uploads (docs/sdk-wiring.md).
ClientKind = Literal["web", "android", "ios", "miniprogram"]
# What becomes of an upload that breaks a quota: kept and marked for review, or deleted from VOD.
OverQuotaRule = Literal["review", "delete"]
Lifetime = Annotated[int, Field(ge=1, le=MAX_VALIDITY_SECONDS)]
# Tencent's Android and iOS SDKs send one signature to Prepare, Apply and Commit, and the mini-program SDK
# commits with its Apply's: the Commit comes after the whole file is sent, so the signature must outlive the
# upload (the default upload window).
WHOLE_UPLOAD_SECONDS = 6 * 3600
MOBILE_LIFETIMES: dict[ClientKind, int] = dict.fromkeys(("android", "ios", "miniprogram"), WHOLE_UPLOAD_SECONDS)


class Tier(BaseModel):
    """Every field of a tier; a named tier overrides only the fields it sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    procedures: tuple[str, ...] = ()
    default_procedure: str | None = Field(default=None, alias="defaultProcedure")
    class_id: int = Field(default=0, ge=0, alias="classId")
    storage_region: str | None = Field(default=None, alias="storageRegion")
    vod_sub_app_id: int | None = Field(default=None, ge=0, alias="vodSubAppId")
    one_time_signatures: bool = Field(default=True, alias="oneTimeSignatures")
    task_priority: int = Field(default=0, ge=-10, le=10, alias="taskPriority")
    task_notify_mode: Literal["Finish", "Change", "None"] = Field(default="Finish", alias="taskNotifyMode")
    signature_ttl_seconds: int = Field(default=900, ge=1, le=MAX_VALIDITY_SECONDS, alias="signatureTtlSeconds")
    # Overrides signatureTtlSeconds for a client that declares this kind.
    signature_ttl_by_client: dict[ClientKind, Lifetime] = Field(
        default_factory=lambda: dict(MOBILE_LIFETIMES),
        alias="signatureTtlByClient",
    )
    upload_window_seconds: int = Field(default=6 * 3600, ge=1, le=MAX_VALIDITY_SECONDS, alias="uploadWindowSeconds")
    max_open_intents: int = Field(default=5, ge=1, alias="maxOpenIntents")
    max_intents_per_hour: int = Field(default=30, ge=1, alias="maxIntentsPerHour")
    max_signatures_per_intent: int = Field(default=20, ge=1, alias="maxSignaturesPerIntent")
    max_file_size: int = Field(default=5 * 1024**3, ge=0, alias="maxFileSize")
    # Quotas (chalicelib/quotas.py): the bytes of video a user may keep, the longest video, and what becomes of
    # an upload that breaks either once VOD reports its size and duration. null: no such limit.
    max_stored_bytes: int | None = Field(default=50 * 1024**3, ge=0, alias="maxStoredBytes")
    max_video_seconds: float | None = Field(default=4 * 3600, gt=0, alias="maxVideoSeconds")
    over_quota: OverQuotaRule = Field(default="review", alias="overQuota")

    @model_validator(mode="after")
    def _default_procedure_is_allowed(self) -> Tier:
        if self.default_procedure is not None and self.default_procedure not in self.procedures:
            raise ValueError("defaultProcedure must be one of procedures")
        return self

    def signature_ttl_for(self, client: ClientKind | None) -> int:
        if client is None:
            return self.signature_ttl_seconds
        return self.signature_ttl_by_client.get(client, self.signature_ttl_seconds)

    def choose_procedure(self, requested: str | None) -> str | None:
        if requested is None:
            return self.default_procedure
        if requested not in self.procedures:
            raise InvalidRequest("procedure", f"must be one of the allowed procedures: {list(self.procedures)}")
        return requested


class UploadPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    groups_claim: str = Field(default="cognito:groups", alias="groupsClaim")
    default: Tier = Tier()
    # Named tiers in priority order: the first whose name is one of the user's groups wins.
    tiers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tiers_are_valid(self) -> UploadPolicy:
        for name in self.tiers:
            tier = self.tier_named(name)
            # VOD's event config, the PULL consumer and the sweep serve one (sub)application, the default
            # tier's: another tier's uploads would never be attributed (docs/configuration.md, Upload policy).
            if tier.vod_sub_app_id != self.default.vod_sub_app_id:
                default = self.default.vod_sub_app_id
                which = "the main application" if default is None else f"sub-application {default}"
                raise ValueError(
                    f"tiers.{name}.vodSubAppId: every tier uploads into the default tier's VOD application "
                    f"({which}); a sub-application per tier is not supported"
                )
        return self

    def tier_named(self, name: str) -> Tier:
        merged = {**self.default.model_dump(by_alias=True), **self.tiers[name]}
        return Tier.model_validate(merged)

    def tier_by_name(self, name: str) -> Tier:
        """The tier an intent was created in, by its recorded name; the default tier if it is no longer configured."""
        return self.tier_named(name) if name in self.tiers else self.default

    def tier_for(self, claims: Mapping[str, Any]) -> tuple[str, Tier]:
        groups = _as_groups(claims.get(self.groups_claim))
        for name in self.tiers:
            if name in groups:
                return name, self.tier_named(name)
        return "default", self.default


def _as_groups(value: object) -> set[str]:
    if isinstance(value, str):
        return {part for part in value.replace(",", " ").split() if part}
    if isinstance(value, Iterable):
        return {item for item in value if isinstance(item, str)}
    return set()
