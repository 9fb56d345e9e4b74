"""All DynamoDB access: one storage class per aggregate, over one `Table` (chalicelib/storage/table.py)
that makes every call within its retry budget.

  intents     IntentStorage    upload intents: create (with the owner's limits), signatures, abandon, expiry
  videos      VideoStorage     attribution (which completes the intent), processing, deletion, listing
  reviews     ReviewStorage    uploads kept for review, until the sweep closes them
  vod_events  VodEventStorage  ignored VOD event types, pulled events that failed, dead letters
  usage       UsageStorage     each user's counters against the quotas, changed only by the videos' attribution
                               and deletion transactions (the items they carry), and the sweep's over-quota list
  outbox                       the event row each fact's transaction carries (chalicelib/domain_events.py)

Keys and item mapping live in chalicelib/items.py. The storage classes report facts (a full limit and
when it frees, an intent that changed, a FileId owned elsewhere) as the exceptions of chalicelib/errors.py's
"storage outcomes"; the services decide what they mean to a user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from chalicelib.storage.intents import IntentStorage
from chalicelib.storage.table import Table
from chalicelib.storage.usage import UsageStorage

if TYPE_CHECKING:
    from chalicelib.storage.reviews import ReviewStorage
    from chalicelib.storage.videos import VideoStorage
    from chalicelib.storage.vod_events import VodEventStorage


class Storage:
    """The aggregates a route does not use are not imported: the signing route stores intents and usage only,
    and the video and event types the others import cost its cold start (bench/cold_start.py)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.intents = IntentStorage(table)
        self.usage = UsageStorage(table)

    @cached_property
    def videos(self) -> VideoStorage:
        from chalicelib.storage.videos import VideoStorage

        return VideoStorage(self.table, self.usage)

    @cached_property
    def reviews(self) -> ReviewStorage:
        from chalicelib.storage.reviews import ReviewStorage

        return ReviewStorage(self.table)

    @cached_property
    def vod_events(self) -> VodEventStorage:
        from chalicelib.storage.vod_events import VodEventStorage

        return VodEventStorage(self.table)

    @classmethod
    def over(
        cls, client: Any, table_name: str, sleep: Callable[[float], None] = time.sleep, attempt_seconds: float = 2.0
    ) -> Storage:
        """Every aggregate's storage on one table, through `client` (see `Table` for the other arguments)."""
        return cls(Table(client, table_name, sleep, attempt_seconds))
