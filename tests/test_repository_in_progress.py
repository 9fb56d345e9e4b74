"""DynamoDB's TransactionInProgressException, over HTTP to the local endpoint through the fault proxy
(tests/fault_proxy.py): the repository retries the transaction with the same ClientRequestToken, within
its attempt budget."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib import aws
from chalicelib.errors import ServiceUnavailable
from chalicelib.items import rate_key
from chalicelib.storage import Storage
from chalicelib.uploads import IntentLimits
from tests.fault_proxy import FaultProxy
from tests.test_repository_conflicts import attributed
from tests.test_repository_limits import NOW, intent


def through(proxy: FaultProxy, table_name: str, sleeps: list[float]) -> Storage:
    """The storage as the app builds it (its quick-to-give-up client), talking to the proxy."""
    return Storage.over(aws.client("dynamodb", "us-east-1", proxy.url), table_name, sleep=sleeps.append)


def test_a_transaction_in_progress_is_asked_again_with_its_token_and_applies_once(
    proxy: FaultProxy, table_name: str, dynamodb: Any
) -> None:
    # DynamoDB's sequence for a transaction whose answer was lost: the retry finds it still being applied,
    # the next one finds it done (the same token: success, nothing applied again).
    faults = {1: "answer_lost", 2: "in_progress"}
    proxy.plan = lambda number, _operation: faults.get(number)
    sleeps: list[float] = []
    created = intent("in-progress")
    through(proxy, table_name, sleeps).intents.create_intent(created, IntentLimits(5, 30), NOW)
    assert (proxy.requests, dict(proxy.faults)) == (3, {"answer_lost": 1, "in_progress": 1})
    assert sleeps == pytest.approx([0.05, 0.1])
    # Applied once: a retry with a new token would have found its own intent there (IdCollision).
    hourly = dynamodb.get_item(TableName=table_name, Key=rate_key(created.owner, NOW // 3600))
    assert hourly["Item"]["intents"] == {"N": "1"}
    assert Storage.over(dynamodb, table_name).intents.get_intent(created.upload_id) == created


def test_a_transaction_that_stays_in_progress_is_503_after_the_attempt_budget(
    proxy: FaultProxy, table_name: str, dynamodb: Any
) -> None:
    created, video = attributed("stays-in-progress")
    Storage.over(dynamodb, table_name).intents.create_intent(created, IntentLimits(5, 30), NOW)
    proxy.plan = lambda _number, operation: "in_progress" if operation == "TransactWriteItems" else None
    sleeps: list[float] = []
    with pytest.raises(ServiceUnavailable):
        through(proxy, table_name, sleeps).videos.complete_upload(created, video, NOW)
    assert (proxy.requests, dict(proxy.faults)) == (4, {"in_progress": 4})
    assert sleeps == pytest.approx([0.05, 0.1, 0.15])  # no pause after the last attempt
