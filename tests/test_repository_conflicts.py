"""DynamoDB's TransactionConflict (another transaction holds an item) is retried, then reported as 503.
The local endpoint never produces it, so botocore's own Stubber plays DynamoDB's answers here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from chalicelib.errors import ServiceUnavailable
from chalicelib.repository import Repository
from chalicelib.uploads import IntentLimits
from tests.test_repository_limits import NOW, intent


@pytest.fixture
def stubbed() -> Iterator[tuple[Repository, Stubber, list[float]]]:
    client = botocore.session.get_session().create_client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    sleeps: list[float] = []
    with Stubber(client) as stubber:
        yield Repository(client, "table", sleep=sleeps.append), stubber, sleeps
        stubber.assert_no_pending_responses()


def conflict(stubber: Stubber) -> None:
    reasons: list[dict[str, Any]] = [{"Code": "None"}, {"Code": "TransactionConflict"}, {"Code": "None"}]
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        http_status_code=400,
        response_meta={},
        modeled_fields={"CancellationReasons": reasons},
        expected_params={"TransactItems": ANY, "ClientRequestToken": ANY},
    )


def test_a_conflict_is_retried(stubbed: tuple[Repository, Stubber, list[float]]) -> None:
    repository, stubber, sleeps = stubbed
    conflict(stubber)
    stubber.add_response("transact_write_items", {}, {"TransactItems": ANY, "ClientRequestToken": ANY})
    repository.create_intent(intent("conflicted"), IntentLimits(5, 30), NOW)
    assert sleeps == [0.05]


def test_persistent_conflict_is_503(stubbed: tuple[Repository, Stubber, list[float]]) -> None:
    repository, stubber, sleeps = stubbed
    for _ in range(4):
        conflict(stubber)
    with pytest.raises(ServiceUnavailable, match="busy"):
        repository.create_intent(intent("conflicted"), IntentLimits(5, 30), NOW)
    assert sleeps == pytest.approx([0.05, 0.1, 0.15])  # no pause after the last attempt
