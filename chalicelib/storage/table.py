"""The one way to the table: every DynamoDB call within its retry budget, and transactions settled by name.

Each aggregate's storage class (intents, videos, reviews, pulled events) builds its items and conditions
and sends them through one `Table`; what is retried, how long, and under which token is decided here only.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from chalicelib import deadline
from chalicelib.domain_events import DomainEvent
from chalicelib.errors import ServiceUnavailable
from chalicelib.items import Item, as_s, sort_key_before
from chalicelib.storage.outbox import outbox_put

T = TypeVar("T")
# The per-item reasons DynamoDB gives for cancelling a transaction, by the name the caller gave each item.
Reasons = Mapping[str, Mapping[str, Any]]

# Attempts of one logical write against a race (TransactionConflict, a concurrent first write), and of one
# call against timeouts and throttling; both also stop at the request's deadline.
_RACE_ATTEMPTS = 4
_CALL_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.05
_COMPENSATION_WAIT_SECONDS = 0.2
_RETRYABLE_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",  # a retry of a transaction still being applied: ask again
    }
)

logger = logging.getLogger("vodupload")


class Again:
    """What a write attempt returns when it lost a race and should be tried again after a pause."""


AGAIN = Again()


class AlreadyPublished(Exception):
    """A write's event is in the outbox already: its fact was committed before (by this write's earlier
    attempt, or a copy of it), so nothing was written now."""


class _ConditionFailed(Exception):
    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item


def failed(reason: Mapping[str, Any]) -> bool:
    """Whether a transaction item's own condition failed (rather than the item being fine or in conflict)."""
    return reason.get("Code") == "ConditionalCheckFailed"


def new_token() -> str:
    return secrets.token_hex(16)  # 32 characters: DynamoDB takes client tokens of up to 36


class Table:
    def __init__(
        self,
        client: Any,
        name: str,
        sleep: Callable[[float], None] = time.sleep,
        attempt_seconds: float = 2.0,
    ) -> None:
        """`attempt_seconds` is the longest one call can take (the client's connect plus read timeout):
        a retry is made only if that much is left before the request's deadline."""
        self.client = client
        self.name = name
        self._sleep = sleep
        self._attempt_seconds = attempt_seconds

    def call(self, operation: str, **request: Any) -> Any:
        """One DynamoDB call within the retry budget. A timeout or a dropped connection leaves it unknown
        whether a write applied, so every write retried here is idempotent: transactions carry a
        ClientRequestToken, signature counts their own token, and the other writes converge."""
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        call = getattr(self.client, operation)
        for attempt in range(1, _CALL_ATTEMPTS + 1):
            try:
                return call(**request)
            except (HTTPClientError, ConnectionError) as exc:  # timeouts and resets: botocore retries none
                failure = type(exc).__name__
            except ClientError as exc:
                failure = exc.response["Error"]["Code"]
                if failure not in _RETRYABLE_ERRORS:
                    raise
            self._pause_before_retry(attempt, operation, failure)
        raise AssertionError("unreachable: the last attempt raises")

    def commit(
        self, items: Mapping[str, Item], settle: Callable[[Reasons], bool], unanswered: Callable[[], None] | None = None
    ) -> None:
        """Commit a transaction of named items. When DynamoDB cancels it, `settle` gets the reasons by item
        name: it raises the answer to a failed condition, or returns True to try again at once (it fixed what
        failed); a cancellation that is only a conflict with another transaction is tried again after a
        pause, within the budget. `unanswered` runs if the transaction itself goes unanswered (503)."""

        def attempt() -> Again | None:
            while True:
                try:
                    reasons = self._transact(list(items.values()))
                except ServiceUnavailable:
                    if unanswered is not None:
                        unanswered()
                    raise
                if reasons is None:
                    return None
                if not settle(dict(zip(items, reasons, strict=True))):
                    return AGAIN

        self.until_settled("TransactWriteItems", "TransactionConflict", attempt)

    def until_settled(self, operation: str, race: str, attempt: Callable[[], T | Again]) -> T:
        """Run `attempt` until it settles, pausing between tries while it returns AGAIN (it lost a `race`),
        within the attempt budget and the request's deadline."""
        for number in range(1, _RACE_ATTEMPTS + 1):
            result = attempt()
            if not isinstance(result, Again):
                return result
            self._pause_before_retry(number, operation, race)
        raise AssertionError("unreachable: the last attempt raises")

    def conditional_update(self, event: DomainEvent | None = None, **request: Any) -> dict[str, Any] | None:
        """UpdateItem; None when it applied, else the old item (empty if none) whose condition failed. With
        an `event`, the update and the event's outbox row are one transaction; AlreadyPublished if the
        row is there already (and the update's own condition held)."""
        from botocore.exceptions import ClientError

        if event is not None:
            return self._update_publishing(event, request)
        try:
            self.call("update_item", TableName=self.name, **request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return dict(exc.response.get("Item") or {})
        return None

    def index_partition(
        self, partition: str, limit: int, before: int | None = None, newest_first: bool = False
    ) -> list[Item]:
        """Up to `limit` items of one gsi1 partition (sorted by `<time>#<id>`), only those of a time before
        `before` when it is given."""
        condition, values = "gsi1pk = :partition", {":partition": as_s(partition)}
        if before is not None:
            condition, values[":before"] = f"{condition} AND gsi1sk < :before", as_s(sort_key_before(before))
        response = self.call(
            "query",
            TableName=self.name,
            IndexName="gsi1",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=not newest_first,
            Limit=limit,
        )
        items: list[Item] = response.get("Items", [])
        return items

    def _update_publishing(self, event: DomainEvent, request: dict[str, Any]) -> dict[str, Any] | None:
        update = {"TableName": self.name, **request, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        items = {"update": {"Update": update}, "event": outbox_put(self, event)}

        def settle(reasons: Reasons) -> bool:
            if failed(reasons["update"]):
                raise _ConditionFailed(dict(reasons["update"].get("Item") or {}))
            if failed(reasons["event"]):
                raise AlreadyPublished(event.event_id)
            return False

        try:
            self.commit(items, settle)
        except _ConditionFailed as condition:
            return condition.item
        return None

    @staticmethod
    def send_unawaited(what: str, write: Callable[[], Any], **fields: str) -> None:
        """A compensating write after a give-up: storage is stalled and the caller's answer is due, so the
        write is sent and waited for only a moment. The request is on the wire; the stalled endpoint
        applies it in turn. Its result is only logged."""

        def send() -> None:
            try:
                write()
            except Exception as exc:  # logged: nothing else can be done from here
                logger.warning(f"{what}: failed", extra={**fields, "failure": type(exc).__name__})
            else:
                logger.info(f"{what}: done", extra=fields)

        sender = threading.Thread(target=send, name="compensating-write", daemon=True)
        sender.start()
        sender.join(_COMPENSATION_WAIT_SECONDS)

    def _pause_before_retry(self, attempt: int, operation: str, failure: str) -> None:
        """Sleep before attempt `attempt + 1`, or answer 503 when it could not finish before the deadline."""
        pause = _BACKOFF_SECONDS * attempt
        if attempt >= _CALL_ATTEMPTS or deadline.remaining() < pause + self._attempt_seconds:
            logger.warning(
                "storage gave up",
                extra={"operation": operation, "failure": failure, "attempts": attempt},
            )
            raise ServiceUnavailable("storage is busy or slow to answer, retry", retry_after_seconds=2)
        self._sleep(pause)

    def _transact(self, items: list[Item]) -> list[dict[str, Any]] | None:
        """Run a transaction; None on success, else the per-item cancellation reasons."""
        try:
            self.call("transact_write_items", TransactItems=items, ClientRequestToken=new_token())
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
            return reasons + [{}] * (len(items) - len(reasons))
        return None
