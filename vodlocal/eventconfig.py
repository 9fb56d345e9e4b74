"""VOD's event notification config (``ModifyEventConfig`` / ``DescribeEventConfig``), persisted in SQLite.

The stored config governs delivery: the mode (PUSH or PULL), the PUSH URL, the callback ``SignKey`` and the
event switches. The command-line flags and environment (``--callback-url``, ``--mode``, ``VODLOCAL_SIGN_KEY``)
only seed it, on the first start over a data directory that has none stored; after that the stored config
wins, and only ``ModifyEventConfig`` changes it.

Field names, types and the ``ON``/``OFF`` and ``PUSH``/``PULL`` values are those of the official SDK models
(``ModifyEventConfigRequest``, ``DescribeEventConfigResponse``). The validation rules and error codes below are
the emulator's reading of the docs, not something Tencent documents (see ``vodlocal/README.md``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from vodlocal.config import Config, EventMode
from vodlocal.store import Store

log = logging.getLogger("vodlocal.eventconfig")

Switch = Literal["ON", "OFF"]
MODES: tuple[EventMode, ...] = ("PUSH", "PULL")
SWITCHES: tuple[Switch, ...] = ("ON", "OFF")
SIGN_KEY = re.compile(r"[A-Za-z0-9]{0,32}\Z")  # "letters and digits, at most 32"; "" clears it (inferred)
MAX_URL = 2048  # the emulator's own bound: Tencent documents none

# API field -> dataclass attribute, in the order DescribeEventConfig returns them (SignKey is never returned).
SWITCH_FIELDS = {
    "UploadMediaCompleteEventSwitch": "upload_media_complete",
    "DeleteMediaCompleteEventSwitch": "delete_media_complete",
    "PersistenceCompleteEventSwitch": "persistence_complete",
}
MODIFY_FIELDS = frozenset({"SubAppId", "Mode", "NotificationUrl", "SignKey", *SWITCH_FIELDS})
DESCRIBE_FIELDS = frozenset({"SubAppId"})

# Which switch gates which event type; every other type (e.g. ProcedureStateChanged) is always notified.
EVENT_SWITCHES = {
    "NewFileUpload": "UploadMediaCompleteEventSwitch",
    "FileDeleted": "DeleteMediaCompleteEventSwitch",
    "PersistenceComplete": "PersistenceCompleteEventSwitch",
}


class InvalidEventConfig(ValueError):
    """A ModifyEventConfig/DescribeEventConfig parameter was rejected; ``code`` is the API 3.0 error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EventConfig:
    """The defaults are those of a VOD application nobody has configured: PUSH, no URL, no key, switches OFF."""

    mode: EventMode = "PUSH"
    notification_url: str = ""
    upload_media_complete: Switch = "OFF"
    delete_media_complete: Switch = "OFF"
    persistence_complete: Switch = "OFF"
    sign_key: str = ""

    @classmethod
    def seed(cls, config: Config) -> EventConfig:
        """The initial config from the CLI flags / environment, used when none is stored yet.

        When the flags name a delivery target (a callback URL, or ``--mode PULL``), the upload and delete
        switches start ON: vodlocal always sent NewFileUpload and FileDeleted before the switches existed, and
        ``make dev`` relies on it. Otherwise they start OFF, as in a VOD application nobody has configured.
        """
        delivers = bool(config.callback_url) or config.mode == "PULL"
        switch: Switch = "ON" if delivers else "OFF"
        return cls(
            mode=config.mode,
            notification_url=config.callback_url or "",
            upload_media_complete=switch,
            delete_media_complete=switch,
            sign_key=config.sign_key or "",
        )

    def switch(self, field: str) -> Switch:
        return cast(Switch, getattr(self, SWITCH_FIELDS[field]))

    def notifies(self, event_type: str | None) -> bool:
        """False when the event type's switch is OFF."""
        field = EVENT_SWITCHES.get(event_type or "")
        return field is None or self.switch(field) == "ON"

    def push_target(self) -> tuple[str, str] | None:
        """``(url, sign_key)`` when events are PUSHed somewhere, else None."""
        if self.mode != "PUSH" or not self.notification_url:
            return None
        return self.notification_url, self.sign_key

    def describe(self) -> dict[str, Any]:
        """The DescribeEventConfig response fields (without RequestId). The SignKey is not among them."""
        return {
            "Mode": self.mode,
            "NotificationUrl": self.notification_url,
            **{name: self.switch(name) for name in SWITCH_FIELDS},
        }

    def to_json(self) -> str:
        return json.dumps({**self.describe(), "SignKey": self.sign_key})

    @classmethod
    def from_json(cls, text: str) -> EventConfig:
        """Read back a stored config. Not re-validated: a seed from the environment may break the API's rules."""
        data = json.loads(text)
        return cls(
            mode=data["Mode"],
            notification_url=data["NotificationUrl"],
            sign_key=data["SignKey"],
            **{attr: data[name] for name, attr in SWITCH_FIELDS.items()},
        )

    def modified(self, params: Mapping[str, Any]) -> EventConfig:
        """A copy with the fields present in ``params`` changed; raises InvalidEventConfig on a bad value."""
        check_known(params, MODIFY_FIELDS)
        check_sub_app_id(params)
        changes: dict[str, Any] = {}
        if (mode := _string(params, "Mode")) is not None:
            if mode not in MODES:
                raise InvalidEventConfig("InvalidParameterValue", f"Mode must be PUSH or PULL, got {mode!r}")
            changes["mode"] = mode
        if (url := _string(params, "NotificationUrl")) is not None:
            changes["notification_url"] = _check_url(url)
        for name, attr in SWITCH_FIELDS.items():
            if (value := _string(params, name)) is not None:
                if value not in SWITCHES:
                    raise InvalidEventConfig("InvalidParameterValue", f"{name} must be ON or OFF, got {value!r}")
                changes[attr] = value
        if (key := _string(params, "SignKey")) is not None:
            if not SIGN_KEY.match(key):
                raise InvalidEventConfig(
                    "InvalidParameterValue", "SignKey must be at most 32 characters, letters and digits only"
                )
            changes["sign_key"] = key
        return replace(self, **changes)


def check_known(params: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidEventConfig("UnknownParameter", f"unknown parameter(s): {', '.join(unknown)}")


def check_sub_app_id(params: Mapping[str, Any]) -> None:
    """SubAppId, when given, is a non-negative integer. The event config is one for all applications: there it
    selects nothing (DescribeMediaInfos looks in the application it names)."""
    value = params.get("SubAppId")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEventConfig("InvalidParameter", "SubAppId must be an integer")
    if value < 0:
        raise InvalidEventConfig("InvalidParameterValue.SubAppId", f"invalid SubAppId {value}")


def _string(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventConfig("InvalidParameter", f"{name} must be a string")
    return value


def _check_url(url: str) -> str:
    """ "" clears the URL (documented); anything else must be an absolute http(s) URL (inferred)."""
    if url == "":
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(url) > MAX_URL
        or any(ch.isspace() or ord(ch) < 0x20 for ch in url)
    ):
        raise InvalidEventConfig("InvalidParameterValue", "NotificationUrl must be an http:// or https:// URL")
    return url


class EventConfigStore:
    """The current event config: one row of ``event_config``, cached in memory, safe across threads."""

    def __init__(self, store: Store, seed: EventConfig) -> None:
        self.store = store
        self._lock = threading.Lock()
        with store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO event_config (id, data, source, updated) VALUES (1, ?, 'seed', ?)",
                (seed.to_json(), time.time()),
            )
            row = db.execute("SELECT data, source FROM event_config WHERE id = 1").fetchone()
        if not SIGN_KEY.match(seed.sign_key):
            log.warning("VODLOCAL_SIGN_KEY is not letters and digits, at most 32: ModifyEventConfig would refuse it")
        self._current = EventConfig.from_json(row["data"])
        self.source: str = row["source"]  # "seed" (from the flags) or "api" (ModifyEventConfig)
        if self._current != seed:
            differing = [
                label
                for label, stored, flagged in (
                    ("Mode (--mode)", self._current.mode, seed.mode),
                    ("NotificationUrl (--callback-url)", self._current.notification_url, seed.notification_url),
                    ("SignKey (VODLOCAL_SIGN_KEY)", self._current.sign_key, seed.sign_key),
                )
                if stored != flagged
            ]
            if differing:  # values are not logged: the URL's token and the key are secrets
                log.warning(
                    "the event config stored in %s (from %s) differs from the flags/environment in %s; "
                    "the stored one applies (change it with ModifyEventConfig, or start on an empty data dir)",
                    store.root,
                    "ModifyEventConfig" if self.source == "api" else "an earlier start",
                    ", ".join(differing),
                )

    def current(self) -> EventConfig:
        with self._lock:
            return self._current

    def modify(self, params: Mapping[str, Any]) -> EventConfig:
        with self._lock:
            updated = self._current.modified(params)
            self.store.execute(
                "UPDATE event_config SET data = ?, source = 'api', updated = ? WHERE id = 1",
                (updated.to_json(), time.time()),
            )
            self._current = updated
            self.source = "api"
        shown = updated.describe() | {"NotificationUrl": "(set)" if updated.notification_url else ""}
        log.info("event config changed by ModifyEventConfig: %s", shown)  # the URL's token is a secret
        return updated
