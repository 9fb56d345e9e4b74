"""DynamoDB's TransactionConflict (another transaction holds an item) is retried, then reported as 503.
The local endpoint never produces it, so botocore's own Stubber plays DynamoDB's answers here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from chalicelib.errors import (
    CompletionLost,
    FileOwnedElsewhere,
    IdCollision,
    LimitReached,
    ServiceUnavailable,
)
from chalicelib.events import ProcessingUpdate
from chalicelib.media import MediaFacts
from chalicelib.storage import Storage
from chalicelib.uploads import IntentLimits, UploadIntent
from chalicelib.videos import Video
from tests.test_repository_limits import NOW, intent


@pytest.fixture
def stubbed() -> Iterator[tuple[Storage, Stubber, list[float]]]:
    client = botocore.session.get_session().create_client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    sleeps: list[float] = []
    with Stubber(client) as stubber:
        yield Storage.over(client, "table", sleep=sleeps.append), stubber, sleeps
        stubber.assert_no_pending_responses()


def conflict(stubber: Stubber) -> None:
    cancelled(stubber, "None", "TransactionConflict", "None")


def test_a_conflict_is_retried(stubbed: tuple[Storage, Stubber, list[float]]) -> None:
    storage, stubber, sleeps = stubbed
    conflict(stubber)
    stubber.add_response("transact_write_items", {}, {"TransactItems": ANY, "ClientRequestToken": ANY})
    storage.intents.create_intent(intent("conflicted"), IntentLimits(5, 30), NOW)
    assert sleeps == [0.05]


def test_persistent_conflict_is_503(stubbed: tuple[Storage, Stubber, list[float]]) -> None:
    storage, stubber, sleeps = stubbed
    for _ in range(4):
        conflict(stubber)
    with pytest.raises(ServiceUnavailable, match="busy"):
        storage.intents.create_intent(intent("conflicted"), IntentLimits(5, 30), NOW)
    assert sleeps == pytest.approx([0.05, 0.1, 0.15])  # no pause after the last attempt


# -- one race helper serves every write that can lose a race: each path is retried and settled by name ------


def cancelled(stubber: Stubber, *codes: str, item: dict[str, Any] | None = None) -> None:
    reasons: list[dict[str, Any]] = [{"Code": code} for code in codes]
    if item is not None:
        reasons[1]["Item"] = item
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        http_status_code=400,
        response_meta={},
        modeled_fields={"CancellationReasons": reasons},
        expected_params={"TransactItems": ANY, "ClientRequestToken": ANY},
    )


def committed(stubber: Stubber) -> None:
    stubber.add_response("transact_write_items", {}, {"TransactItems": ANY, "ClientRequestToken": ANY})


def attributed(upload_id: str) -> tuple[UploadIntent, Video]:
    created = intent(upload_id)
    return created, Video("5285890000000001", created.owner, created.upload_id, NOW, media=MediaFacts(size=1))


def test_a_completion_in_conflict_is_retried_and_a_lasting_one_is_503(
    stubbed: tuple[Storage, Stubber, list[float]],
) -> None:
    storage, stubber, sleeps = stubbed
    created, video = attributed("completing")
    cancelled(stubber, "None", "TransactionConflict", "None")
    committed(stubber)
    storage.videos.complete_upload(created, video, NOW)
    assert sleeps == [0.05]
    for _ in range(4):
        cancelled(stubber, "TransactionConflict", "None", "None")
    with pytest.raises(ServiceUnavailable):
        storage.videos.complete_upload(created, video, NOW)


@pytest.mark.parametrize(
    ("codes", "outcome"),
    [
        (("ConditionalCheckFailed", "None", "None"), CompletionLost),
        (("None", "ConditionalCheckFailed", "None"), FileOwnedElsewhere),
    ],
)
def test_a_completion_reports_which_condition_failed(
    stubbed: tuple[Storage, Stubber, list[float]], codes: tuple[str, ...], outcome: type[Exception]
) -> None:
    storage, stubber, sleeps = stubbed
    cancelled(stubber, *codes)
    with pytest.raises(outcome):
        storage.videos.complete_upload(*attributed("completing"), NOW)
    assert sleeps == []


def test_a_create_reports_each_full_limit_and_a_collision_by_name(
    stubbed: tuple[Storage, Stubber, list[float]],
) -> None:
    storage, stubber, sleeps = stubbed
    cancelled(stubber, "None", "None", "ConditionalCheckFailed")
    with pytest.raises(LimitReached) as hourly:
        storage.intents.create_intent(intent("hourly"), IntentLimits(5, 30), NOW)
    assert (hourly.value.limit, hourly.value.until) == ("intents_per_hour", (NOW // 3600 + 1) * 3600)
    open_slots = {"openSlots": {"SS": [f"{NOW + 40}#a", f"{NOW + 20}#b"]}}
    cancelled(stubber, "None", "ConditionalCheckFailed", "None", item=open_slots)
    with pytest.raises(LimitReached) as full:
        storage.intents.create_intent(intent("open"), IntentLimits(2, 30), NOW)
    assert (full.value.limit, full.value.until) == ("open_intents", NOW + 20)
    cancelled(stubber, "ConditionalCheckFailed", "None", "None")
    with pytest.raises(IdCollision):
        storage.intents.create_intent(intent("collides"), IntentLimits(5, 30), NOW)
    assert sleeps == []


def test_a_first_processing_snapshot_that_loses_the_race_to_create_the_map_is_retried(
    stubbed: tuple[Storage, Stubber, list[float]],
) -> None:
    storage, stubber, sleeps = stubbed
    update = ProcessingUpdate("task-1", "5285890000000001", "PROCESSING", None, ())
    condition_failed = {
        "service_error_code": "ConditionalCheckFailedException",
        "http_status_code": 400,
        "expected_params": None,
    }
    stubber.add_client_error("update_item", **condition_failed, modeled_fields={"Item": {}})  # no map yet
    stubber.add_client_error("update_item", **condition_failed)  # another snapshot created it first
    stubber.add_response("update_item", {})  # so this one goes into the map
    assert storage.videos.apply_processing(update, NOW) is True
    assert sleeps == [0.05]
