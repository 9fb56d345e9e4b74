"""Domain events and their outbox row (docs/events.md): stable ids, bounded data, the envelope, and the row
as one item of a real transaction against the local DynamoDB endpoint."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from chalicelib.domain_events import (
    EVENT_TYPES,
    MAX_DATA_BYTES,
    OUTBOX_RETENTION_SECONDS,
    UPLOAD_ATTRIBUTED,
    UPLOAD_EXPIRED,
    VIDEO_PROCESSED,
    DomainEvent,
    EventTooLarge,
    within_bound,
)
from chalicelib.items import item_to_envelope, outbox_item, outbox_key
from chalicelib.storage import Storage
from chalicelib.storage.outbox import outbox_put

OCCURRED = 1_796_192_200  # 2026-12-02T06:16:40Z


def attributed(**changes: Any) -> DomainEvent:
    fields: dict[str, Any] = {
        "type": UPLOAD_ATTRIBUTED,
        "key": "5285890000000001",
        "occurred_at": OCCURRED,
        "owner": "alice",
        "upload_id": "u1",
        "file_id": "5285890000000001",
        "data": {"title": "cat", "size": 1024},
    }
    return DomainEvent(**(fields | changes))


def test_the_same_fact_has_the_same_id_however_often_and_whenever_it_is_written() -> None:
    first = attributed()
    retried = attributed(occurred_at=OCCURRED + 30, data={"title": "cat", "size": 1024, "late": True})
    assert first.event_id == retried.event_id
    assert str(uuid.UUID(first.event_id)) == first.event_id  # a UUID string


def test_different_facts_have_different_ids() -> None:
    events = [
        attributed(),
        attributed(key="5285890000000002", file_id="5285890000000002"),
        attributed(type=VIDEO_PROCESSED),  # another type of fact about the same file
        attributed(type=VIDEO_PROCESSED, key="5285890000000001/task-2"),
        *(DomainEvent(type=kind, key="5285890000000001", occurred_at=OCCURRED) for kind in EVENT_TYPES),
    ]
    distinct = {(event.type, event.key) for event in events}
    assert len({event.event_id for event in events}) == len(distinct)


def test_data_is_canonical_json() -> None:
    event = attributed(data={"b": [1, {"y": 2, "x": "é"}], "a": None})
    assert event.data_json == '{"a":null,"b":[1,{"x":"\\u00e9","y":2}]}'
    assert attributed(data={"size": 1024, "title": "cat"}).data_json == attributed().data_json


def test_data_is_bounded_with_an_error_naming_the_event_and_the_size() -> None:
    overhead = len(json.dumps({"text": ""}, separators=(",", ":")))
    attributed(data={"text": "x" * (MAX_DATA_BYTES - overhead)})  # exactly at the bound
    with pytest.raises(EventTooLarge, match=rf"upload.attributed 5285890000000001: data is {MAX_DATA_BYTES + 1} bytes"):
        attributed(data={"text": "x" * (MAX_DATA_BYTES - overhead + 1)})
    with pytest.raises(EventTooLarge):  # bytes, not characters: each escapes to six
        attributed(data={"text": "é" * (MAX_DATA_BYTES // 6 + 1)})


def test_an_events_builder_keeps_its_data_within_the_bound() -> None:
    fields = {"metadata": {"note": "m" * 9000}, "title": "t" * 9000, "kind": "orphan", "hostile": "h" * 20_000}
    fitted = within_bound(fields, ("metadata",))
    assert fitted == {"metadata": None, "title": "t" * 9000, "kind": "orphan", "hostile": None}
    assert within_bound({"kind": "orphan"}, ("kind",)) == {"kind": "orphan"}  # nothing dropped that fits
    attributed(data=fitted)


def test_an_event_names_a_known_type_and_a_natural_key() -> None:
    with pytest.raises(ValueError, match=r"unknown event type 'upload\.done'"):
        attributed(type="upload.done")
    with pytest.raises(ValueError, match="natural key"):
        attributed(key="")
    with pytest.raises(ValueError):
        attributed(data={"duration": float("nan")})  # not JSON


def test_the_envelope_has_the_contracts_fields() -> None:
    expired = DomainEvent(type=UPLOAD_EXPIRED, key="u9", occurred_at=OCCURRED, owner="bob", upload_id="u9")
    assert expired.envelope() == {
        "id": expired.event_id,
        "type": "upload.expired",
        "schemaVersion": "1",
        "occurredAt": "2026-12-02T06:16:40Z",
        "owner": "bob",
        "uploadId": "u9",
        "fileId": "",
        "data": {},
    }


def test_the_outbox_row_maps_to_the_envelope_and_expires_after_a_week() -> None:
    event = attributed()
    row = outbox_item(event)
    assert {name: row[name] for name in ("pk", "sk")} == outbox_key(event.event_id)
    assert row["pk"] == {"S": f"OUTBOX#{event.event_id}"} and row["sk"] == {"S": "EVENT"}
    assert row["ttl"] == {"N": str(OCCURRED + OUTBOX_RETENTION_SECONDS)}
    assert row["data"] == {"S": event.data_json}
    assert all("S" in value for name, value in row.items() if name != "ttl")
    assert item_to_envelope(row) == event.envelope()


def test_the_outbox_row_is_a_transaction_item_written_once(storage: Storage, dynamodb: Any, table_name: str) -> None:
    """Appended to a transaction it commits with it; the same event again fails its condition, and takes
    the whole transaction with it."""
    event = attributed()
    marker = {"Put": {"TableName": table_name, "Item": {"pk": {"S": "MARK"}, "sk": {"S": "1"}}}}
    dynamodb.transact_write_items(TransactItems=[marker, outbox_put(storage.table, event)])
    stored = dynamodb.get_item(TableName=table_name, Key=outbox_key(event.event_id), ConsistentRead=True)["Item"]
    assert item_to_envelope(stored) == event.envelope()
    again = {"Put": {"TableName": table_name, "Item": {"pk": {"S": "MARK"}, "sk": {"S": "2"}}}}
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[again, outbox_put(storage.table, attributed(occurred_at=OCCURRED + 1))]
        )
    reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    assert "Item" not in dynamodb.get_item(TableName=table_name, Key={"pk": {"S": "MARK"}, "sk": {"S": "2"}})
