"""Domain events delivered locally (devstack/events.py): outbox rows written by TransactWriteItems (the storage
layer's builder, chalicelib/storage/outbox.py) on the real local DynamoDB (the patched moto server) reach the
sink's `GET /events` over real HTTP, once each, as the envelope of the outbox contract, made by the pipe's own
filter and template (infra/events.json); other writes do not; a sink that is down and a reader that restarts
lose nothing."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain_events import DomainEvent
from chalicelib.items import item_to_envelope
from chalicelib.storage import outbox
from chalicelib.storage.table import Table
from devstack.events import Checkpoint, EventSink, StreamReader, reading
from devstack.outbox_pipe import OutboxPipe, Unrenderable

PIPE = OutboxPipe.from_template("vod-upload", "local")
TIMEOUT = 20.0
OCCURRED_AT = 1_796_279_400  # 2026-12-02T06:30:00Z


def outbox_put(table: str, event_type: str, owner: str, upload_id: str, file_id: str, **data: Any) -> dict[str, Any]:
    """The outbox row of that event, as the storage layer writes it into its fact's transaction."""
    event = domain_event(event_type, owner, upload_id, file_id, **data)
    put: dict[str, Any] = outbox.outbox_put(Table(None, table), event)
    return put


def domain_event(event_type: str, owner: str, upload_id: str, file_id: str, **data: Any) -> DomainEvent:
    return DomainEvent(event_type, file_id or upload_id, OCCURRED_AT, owner, upload_id, file_id, data)


def envelope(put: dict[str, Any]) -> dict[str, Any]:
    """What the contract says a consumer gets for that row."""
    return item_to_envelope(put["Put"]["Item"])


def fact_put(table: str, key: str) -> dict[str, Any]:
    return {"Put": {"TableName": table, "Item": {"pk": {"S": f"VIDEO#{key}"}, "sk": {"S": "VIDEO"}}}}


def listed(sink_url: str, query: str = "") -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sink_url}/events{query}", timeout=5) as response:
        events: list[dict[str, Any]] = json.load(response)["events"]
        return events


def wait_for(sink_url: str, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(events := listed(sink_url)) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(events)} of {count} events reached the sink in {timeout:g} s: {events}")
        time.sleep(0.1)
    return events


def wait_for_envelope(sink_url: str, expected: dict[str, Any], timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The sink's events once `expected` is among them (a stack's own writes may deliver others too)."""
    deadline = time.monotonic() + timeout
    while expected not in (events := listed(sink_url)):
        if time.monotonic() > deadline:
            pytest.fail(f"{expected} did not reach the sink in {timeout:g} s: {events}")
        time.sleep(0.1)
    return events


@pytest.fixture
def sink() -> Iterator[EventSink]:
    with EventSink() as running:
        yield running


@pytest.fixture
def reader_for(dynamodb_endpoint: str, table_name: str, tmp_path: Path) -> Callable[[str], StreamReader]:
    def make(sink_url: str) -> StreamReader:
        return StreamReader(dynamodb_endpoint, table_name, sink_url, tmp_path / "checkpoint.json", PIPE)

    return make


def test_outbox_rows_reach_the_sink_once_each_as_the_contracts_envelope(
    dynamodb: Any, table_name: str, sink: EventSink, reader_for: Callable[[str], StreamReader]
) -> None:
    puts = [
        outbox_put(table_name, "upload.attributed", "alice", "up-1", "5285890800000001", title="My clip"),
        outbox_put(table_name, "video.processed", "alice", "up-1", "5285890800000001", outputs=[{"w": 1280}]),
        outbox_put(table_name, "upload.expired", 'bob "the" builder', "up-2", ""),  # no fileId; quotes in a value
    ]
    with reading(reader_for(sink.url)):
        for number, put in enumerate(puts):
            dynamodb.transact_write_items(TransactItems=[fact_put(table_name, str(number)), put])
        events = wait_for(sink.url, len(puts))
    assert events == [envelope(put) for put in puts]
    assert events[1]["data"] == {"outputs": [{"w": 1280}]}  # an object, not the row's JSON text
    assert listed(sink.url, "?type=video.processed") == [envelope(puts[1])]


def test_the_bus_entry_has_the_stage_source_and_the_type_as_detail_type(dynamodb: Any, table_name: str) -> None:
    put = outbox_put(table_name, "video.deleted", "alice", "up-3", "5285890800000003")
    dynamodb.transact_write_items(TransactItems=[put])
    [record] = stream_records(dynamodb, table_name)
    assert PIPE.passes(record)
    assert PIPE.entry(record) == {"Source": "vod-upload.local", "DetailType": "video.deleted", "Detail": envelope(put)}
    assert OutboxPipe.from_template("vod-upload", "prod").entry(record)["Source"] == "vod-upload.prod"


def test_other_writes_and_modify_and_remove_records_are_not_delivered(
    dynamodb: Any, table_name: str, sink: EventSink, reader_for: Callable[[str], StreamReader]
) -> None:
    first = outbox_put(table_name, "upload.attributed", "alice", "up-1", "5285890800000001")
    last = outbox_put(table_name, "upload.cancelled", "alice", "up-9", "")
    key = {name: first["Put"]["Item"][name] for name in ("pk", "sk")}
    with reading(reader_for(sink.url)):
        dynamodb.transact_write_items(TransactItems=[fact_put(table_name, "1"), first])
        dynamodb.put_item(TableName=table_name, Item={"pk": {"S": "OUTBOXED#x"}, "sk": {"S": "EVENT"}})  # no prefix
        dynamodb.update_item(  # MODIFY of an outbox row
            TableName=table_name,
            Key=key,
            UpdateExpression="SET #o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": {"S": "mallory"}},
        )
        dynamodb.delete_item(TableName=table_name, Key=key)  # REMOVE
        dynamodb.delete_item(TableName=table_name, Key={"pk": {"S": "VIDEO#1"}, "sk": {"S": "VIDEO"}})
        dynamodb.transact_write_items(TransactItems=[last])
        # The stream has one shard, read in order: once the last row is delivered, every record before it was seen.
        events = wait_for(sink.url, 2)
        assert envelope(last) in events
    assert events == [envelope(first), envelope(last)]
    assert [record["eventName"] for record in stream_records(dynamodb, table_name)] == [
        "INSERT", "INSERT", "INSERT", "MODIFY", "REMOVE", "REMOVE", "INSERT",
    ]  # fmt: skip


def test_a_ttl_removal_and_a_row_without_its_fields_are_not_events() -> None:
    ttl_removal = {
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {"Keys": {"pk": {"S": "OUTBOX#1"}, "sk": {"S": "EVENT"}}, "SequenceNumber": "1"},
    }
    assert not PIPE.passes(ttl_removal)
    bare = {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "OUTBOX#2"}}, "NewImage": {"pk": {"S": "x"}}}}
    assert PIPE.passes(bare)
    with pytest.raises(Unrenderable, match=r"nothing at \$\.dynamodb\.NewImage\.eventId\.S"):
        PIPE.entry(bare)


def test_a_sink_that_is_down_then_up_loses_nothing(
    dynamodb: Any, table_name: str, reader_for: Callable[[str], StreamReader], capsys: pytest.CaptureFixture[str]
) -> None:
    puts = [outbox_put(table_name, "upload.rejected", "alice", f"up-{n}", "") for n in range(3)]
    with EventSink() as first_sink:
        port, url = first_sink.port, first_sink.url
        reader = reader_for(url)
        with reading(reader):
            dynamodb.transact_write_items(TransactItems=[puts[0]])
            assert wait_for(url, 1) == [envelope(puts[0])]
            first_sink.stop()
            for put in puts[1:]:
                dynamodb.transact_write_items(TransactItems=[put])
            wait_until(lambda: "did not take" in capsys.readouterr().out)  # the reader tried, and was refused
            with EventSink(port=port) as second_sink:
                events = wait_for(second_sink.url, 2)
    assert events == [envelope(put) for put in puts[1:]]


def test_a_restarted_reader_resumes_after_its_checkpoint_without_loss(
    dynamodb: Any, table_name: str, sink: EventSink, reader_for: Callable[[str], StreamReader], tmp_path: Path
) -> None:
    puts = [outbox_put(table_name, "quota.exceeded", "alice", f"up-{n}", "") for n in range(4)]
    with reading(reader_for(sink.url)):
        dynamodb.transact_write_items(TransactItems=[puts[0]])
        dynamodb.transact_write_items(TransactItems=[puts[1]])
        wait_for(sink.url, 2)
    checkpoint = json.loads((tmp_path / "checkpoint.json").read_text())
    for put in puts[2:]:  # while no reader runs
        dynamodb.transact_write_items(TransactItems=[put])
    with reading(reader_for(sink.url)):
        events = wait_for(sink.url, 4)
    assert events == [envelope(put) for put in puts]  # each once: the second reader began after the checkpoint
    stream = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    assert checkpoint["stream"] == stream
    # A checkpoint of another stream (make dev's table is new each time) is no checkpoint.
    assert Checkpoint(tmp_path / "checkpoint.json", stream + "-older").shards == {}


def test_the_sink_refuses_a_batch_that_is_not_one_naming_the_field(sink: EventSink) -> None:
    for body, field in (
        (b"[1]", "entries"),
        (b'{"entries": [{"Source": "s", "DetailType": "t", "Detail": "not an object"}]}', "entries[0]"),
        (b"{", "body"),
    ):
        request = urllib.request.Request(f"{sink.url}/events", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 400
        assert json.load(refused.value)["message"].startswith(field)
    assert listed(sink.url) == []


def stream_records(dynamodb: Any, table_name: str) -> list[dict[str, Any]]:
    import boto3

    streams = boto3.client(
        "dynamodbstreams",
        endpoint_url=dynamodb.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
    records: list[dict[str, Any]] = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    return records


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s")
        time.sleep(0.1)


def test_a_table_without_its_stream_stops_the_reader_with_the_reason(dynamodb: Any, dynamodb_endpoint: str) -> None:
    from devstack.events import NoStream

    name = f"test-nostream-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    reader = StreamReader(dynamodb_endpoint, name, "http://127.0.0.1:9", Path("/nonexistent/checkpoint"), PIPE)
    with pytest.raises(NoStream, match=f"table {name} has no stream"):
        reader.run(threading.Event())
