"""The local DynamoDB endpoint itself (devstack/dynamodb.py): all-or-nothing transactions whose cost
does not grow with the table, ClientRequestToken idempotency, DynamoDB's 400 KB item limit, and freezing
the endpoint."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from moto.dynamodb.models.dynamo_type import Item

from devstack import dynamodb as local_dynamodb
from devstack.dynamodb import ClientRequestTokens, DynamoDBServer
from devstack.table import create_table_args, local_client
from tests.waiting import wait_until


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _key(pk: str, sk: str = "A") -> dict[str, Any]:
    return {"pk": _s(pk), "sk": _s(sk)}


def _get(client: Any, table: str, pk: str, sk: str = "A") -> dict[str, Any] | None:
    item: dict[str, Any] | None = client.get_item(TableName=table, Key=_key(pk, sk), ConsistentRead=True).get("Item")
    return item


def _scan(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def _put(client: Any, table: str, pk: str, **attrs: Any) -> None:
    client.put_item(TableName=table, Item={**_key(pk), **attrs})


def _cancellation_codes(error: ClientError) -> list[str]:
    return [reason.get("Code", "") for reason in error.response.get("CancellationReasons", [])]


# -- atomicity -----------------------------------------------------------------------------------

FAILING_CHECK = {"ConditionExpression": "#state = :open", "ExpressionAttributeNames": {"#state": "state"}}


def _first_ops(table: str) -> dict[str, dict[str, Any]]:
    return {
        "put a new item": {
            "Put": {
                "TableName": table,
                "Item": {**_key("new"), "gsi1pk": _s("OWNER#x"), "gsi1sk": _s("1")},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        "update an existing item": {
            "Update": {
                "TableName": table,
                "Key": _key("existing"),
                "UpdateExpression": "SET tag = :new, gsi1pk = :owner ADD n :one REMOVE gone",
                "ExpressionAttributeValues": {":new": _s("new"), ":one": {"N": "1"}, ":owner": _s("OWNER#y")},
            }
        },
        "update a new item": {
            "Update": {
                "TableName": table,
                "Key": _key("new"),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        "overwrite an existing item": {"Put": {"TableName": table, "Item": {**_key("existing"), "tag": _s("put")}}},
        "delete an existing item": {"Delete": {"TableName": table, "Key": _key("existing")}},
    }


def _seed(client: Any, table: str) -> None:
    _put(client, table, "existing", tag=_s("old"), n={"N": "1"}, gone=_s("x"), gsi1pk=_s("OWNER#x"), gsi1sk=_s("0"))
    _put(client, table, "guard", state=_s("closed"))


@pytest.mark.parametrize("first", list(_first_ops("t")))
@pytest.mark.parametrize("second_kind", ["ConditionCheck", "Update"])
def test_a_cancelled_transaction_applies_none_of_its_items(
    dynamodb: Any, table_name: str, first: str, second_kind: str
) -> None:
    _seed(dynamodb, table_name)
    before = _scan(dynamodb, table_name)
    second: dict[str, Any] = {"TableName": table_name, "Key": _key("guard"), **FAILING_CHECK}
    second["ExpressionAttributeValues"] = {":open": _s("open")}
    if second_kind == "Update":
        second["UpdateExpression"] = "SET touched = :open"

    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(TransactItems=[_first_ops(table_name)[first], {second_kind: second}])

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _cancellation_codes(cancelled.value) == ["None", "ConditionalCheckFailed"]
    assert _scan(dynamodb, table_name) == before
    by_owner = dynamodb.query(
        TableName=table_name,
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :owner",
        ExpressionAttributeValues={":owner": _s("OWNER#x")},
    )["Items"]
    assert [item["pk"]["S"] for item in by_owner] == ["existing"]


def test_a_transaction_rejected_midway_as_invalid_applies_nothing(dynamodb: Any, table_name: str) -> None:
    _seed(dynamodb, table_name)
    before = _scan(dynamodb, table_name)
    put_new = _first_ops(table_name)["put a new item"]
    update_key_attribute = {
        "Update": {
            "TableName": table_name,
            "Key": _key("existing"),
            "UpdateExpression": "SET sk = :other",
            "ExpressionAttributeValues": {":other": _s("B")},
        }
    }

    with pytest.raises(ClientError) as rejected:
        dynamodb.transact_write_items(TransactItems=[put_new, update_key_attribute])

    assert rejected.value.response["Error"]["Code"] == "ValidationException"
    assert _scan(dynamodb, table_name) == before


def test_a_successful_transaction_applies_all_of_its_items(dynamodb: Any, table_name: str) -> None:
    _seed(dynamodb, table_name)
    _put(dynamodb, table_name, "doomed")
    ops = _first_ops(table_name)
    passing_check = {
        "ConditionCheck": {
            "TableName": table_name,
            "Key": _key("guard"),
            **FAILING_CHECK,
            "ExpressionAttributeValues": {":open": _s("closed")},
        }
    }
    delete_doomed = {"Delete": {"TableName": table_name, "Key": _key("doomed")}}

    dynamodb.transact_write_items(
        TransactItems=[ops["put a new item"], ops["update an existing item"], delete_doomed, passing_check]
    )

    assert _get(dynamodb, table_name, "new") == {**_key("new"), "gsi1pk": _s("OWNER#x"), "gsi1sk": _s("1")}
    existing = _get(dynamodb, table_name, "existing")
    assert existing is not None
    assert (existing["tag"], existing["n"], existing["gsi1pk"]) == (_s("new"), {"N": "2"}, _s("OWNER#y"))
    assert "gone" not in existing
    assert _get(dynamodb, table_name, "doomed") is None
    assert _get(dynamodb, table_name, "guard") == {**_key("guard"), "state": _s("closed")}


# -- cost per transaction --------------------------------------------------------------------------

SEEDED_ITEMS = 300
PADDING = "x" * 2000


def _seed_many(client: Any, table: str, count: int) -> None:
    for start in range(0, count, 25):
        requests = [
            {"PutRequest": {"Item": {**_key(f"seed-{i}"), "body": _s(PADDING), "n": {"N": str(i)}}}}
            for i in range(start, min(start + 25, count))
        ]
        client.batch_write_item(RequestItems={table: requests})


def _create_intent_shaped(table: str, index: int) -> list[dict[str, Any]]:
    """The shape of Repository.create_intent: put a new item, add to a set, bump a counter."""
    return [
        {
            "Put": {
                "TableName": table,
                "Item": {**_key(f"UPLOAD#{index}", "UPLOAD"), "owner": _s("alice"), "status": _s("open")},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": _key("USER#alice", "LIMITS"),
                "UpdateExpression": "ADD openSlots :slot",
                "ExpressionAttributeValues": {":slot": {"SS": [f"slot-{index}"]}},
            }
        },
        {
            "Update": {
                "TableName": table,
                "Key": _key("USER#alice", "RATE#1"),
                "UpdateExpression": "ADD intents :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
    ]


@pytest.fixture
def streamless_table(dynamodb: Any) -> str:
    """The stage's table without its stream: a stream keeps a record of each write (for 24 h on AWS, for good
    here), which is what a stream is for, not the copies the memory tests below look for."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create, _ = create_table_args(name)
    del create["StreamSpecification"]
    dynamodb.create_table(**create)
    return name


@pytest.fixture
def traced() -> Iterator[None]:
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


# After each response werkzeug drains the connection with a transient 10 MB read buffer, in the
# server thread, possibly while the client goes on: leave it out.
_NOT_WERKZEUG_DRAIN = [tracemalloc.Filter(False, "*/werkzeug/serving.py")]


def _traced_bytes() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_WERKZEUG_DRAIN)
    return sum(stat.size for stat in snapshot.statistics("filename"))


def _retained_after(action: Callable[[], None]) -> int:
    """Bytes still allocated after `action` (traced since the `traced` fixture started)."""
    before = _traced_bytes()
    action()
    return _traced_bytes() - before


def test_a_transaction_copies_its_items_not_the_table(
    dynamodb: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto deep-copies every table a transaction names (to roll back): its cost grew with the table."""
    copies = [0]
    deepcopy_item = Item.__deepcopy__

    def counted(item: Item, memo: dict[int, Any]) -> Item:
        copies[0] += 1
        return deepcopy_item(item, memo)

    monkeypatch.setattr(Item, "__deepcopy__", counted)
    index = iter(range(10**6))

    def copies_per_transaction() -> int:
        copies[0] = 0
        dynamodb.transact_write_items(TransactItems=_create_intent_shaped(table_name, next(index)))
        return copies[0]

    copies_per_transaction()
    on_small_table = copies_per_transaction()
    _seed_many(dynamodb, table_name, SEEDED_ITEMS)
    on_big_table = copies_per_transaction()

    assert on_big_table == on_small_table
    assert on_big_table <= 2 * len(_create_intent_shaped(table_name, 0))  # ours and UpdateItem's own copy


def test_memory_does_not_grow_with_past_transactions(dynamodb: Any, streamless_table: str, traced: None) -> None:
    table_name = streamless_table
    """App-shaped transactions on a table of a few hundred items keep only what they wrote (moto kept
    a copy of the table per transaction: every Item it creates is registered for its dashboard)."""
    dynamodb.transact_write_items(TransactItems=_create_intent_shaped(table_name, -1))  # client caches
    table_data = _retained_after(lambda: _seed_many(dynamodb, table_name, SEEDED_ITEMS))
    transactions = 100

    def run() -> None:
        for index in range(transactions):
            dynamodb.transact_write_items(TransactItems=_create_intent_shaped(table_name, index))

    retained = _retained_after(run)

    assert retained / transactions < 8_000  # a small new item, a set member, a remembered token
    assert retained < table_data / 2  # all of them together: less than one copy of the table


def test_plain_writes_keep_no_copies_of_old_items(dynamodb: Any, streamless_table: str, traced: None) -> None:
    table_name = streamless_table
    """UpdateItem copies the old item, and PutItem replaces it; moto registered each forever."""
    big = "y" * 20_000
    _put(dynamodb, table_name, "big", body=_s(big), n={"N": "0"})

    def update_and_overwrite() -> None:
        dynamodb.update_item(
            TableName=table_name,
            Key=_key("big"),
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
        _put(dynamodb, table_name, "big", body=_s(big), n={"N": "0"})

    def run() -> None:
        for _ in range(100):
            update_and_overwrite()

    update_and_overwrite()  # client caches
    retained = _retained_after(run)

    assert retained < 10 * len(big)  # moto kept two old copies per round: 200 of them


# -- ClientRequestToken --------------------------------------------------------------------------


def _add(table: str, amount: int, pk: str = "counter") -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": table,
                "Key": _key(pk),
                "UpdateExpression": "ADD n :amount",
                "ExpressionAttributeValues": {":amount": {"N": str(amount)}},
            }
        }
    ]


def _counter(client: Any, table: str, pk: str = "counter") -> int:
    item = _get(client, table, pk)
    return 0 if item is None else int(item["n"]["N"])


def test_a_repeated_token_with_the_same_items_succeeds_without_applying_again(dynamodb: Any, table_name: str) -> None:
    token = str(uuid.uuid4())

    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)

    assert _counter(dynamodb, table_name) == 1


def test_a_repeated_token_with_other_items_is_a_parameter_mismatch(dynamodb: Any, table_name: str) -> None:
    token = str(uuid.uuid4())
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)

    with pytest.raises(ClientError) as mismatch:
        dynamodb.transact_write_items(TransactItems=_add(table_name, 2), ClientRequestToken=token)

    assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    assert _counter(dynamodb, table_name) == 1


def test_different_tokens_each_apply(dynamodb: Any, table_name: str) -> None:
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=str(uuid.uuid4()))
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=str(uuid.uuid4()))
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1))  # botocore generates one per call

    assert _counter(dynamodb, table_name) == 3


def test_the_token_of_a_cancelled_transaction_is_not_remembered(dynamodb: Any, table_name: str) -> None:
    token = str(uuid.uuid4())
    guarded = [
        *_add(table_name, 1),
        {
            "ConditionCheck": {
                "TableName": table_name,
                "Key": _key("guard"),
                "ConditionExpression": "attribute_exists(pk)",
            }
        },
    ]
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=guarded, ClientRequestToken=token)
    _put(dynamodb, table_name, "guard")

    dynamodb.transact_write_items(TransactItems=guarded, ClientRequestToken=token)

    assert _counter(dynamodb, table_name) == 1


def test_a_token_is_forgotten_after_ten_minutes(
    dynamodb: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.monotonic()]
    monkeypatch.setattr(local_dynamodb.client_request_tokens, "clock", lambda: now[0])
    token = str(uuid.uuid4())
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)
    now[0] += 599
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)
    assert _counter(dynamodb, table_name) == 1

    now[0] += 2
    dynamodb.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)

    assert _counter(dynamodb, table_name) == 2


def test_stream_iterators_expire_15_minutes_after_they_are_issued(
    dynamodb: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto kept every shard iterator (each GetRecords issues one): a reader polling for hours grew the server."""
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    now = [time.monotonic()]
    monkeypatch.setattr(local_dynamodb.ISSUED_ITERATORS, "_clock", lambda: now[0])
    streams = boto3_streams(dynamodb)
    arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST")
    iterator = iterator["ShardIterator"]
    _put(dynamodb, table_name, "a")
    for _ in range(50):
        answer = streams.get_records(ShardIterator=iterator)
        iterator = answer["NextShardIterator"]
    assert [record["dynamodb"]["Keys"] for record in answer["Records"]] == []  # read once, by the first call
    held = dynamodbstreams_backends["123456789012"]["us-east-1"].shard_iterators
    assert iterator in held
    now[0] += 15 * 60 + 1
    _put(dynamodb, table_name, "b")
    fresh = streams.get_records(ShardIterator=iterator)  # forgotten lazily: when the next one is issued
    assert [record["dynamodb"]["Keys"] for record in fresh["Records"]] == [_key("b")]
    assert not [arn for arn in held if arn != fresh["NextShardIterator"]]  # the 50 issued before: forgotten


def boto3_streams(dynamodb: Any) -> Any:
    import boto3

    return boto3.client(
        "dynamodbstreams",
        endpoint_url=dynamodb.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_remembered_tokens_are_bounded() -> None:
    now = [0.0]
    tokens = ClientRequestTokens(ttl=600, capacity=3, clock=lambda: now[0])
    for index in range(5):
        tokens.remember(("account", "region", f"t{index}"), b"digest")
        now[0] += 1

    assert len(tokens) == 3
    assert tokens.lookup(("account", "region", "t0")) is None
    assert tokens.lookup(("account", "region", "t4")) == b"digest"
    now[0] += 600
    assert tokens.lookup(("account", "region", "t4")) is None
    assert len(tokens) == 0


# -- the 400 KB item limit ---------------------------------------------------------------------

LIMIT = local_dynamodb.MAX_ITEM_BYTES
KEY_BYTES = len("pk") + len("big") + len("sk") + len("A")  # _key("big") as DynamoDB counts it
TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"


def _validation_message(error: ClientError) -> str:
    assert error.response["Error"]["Code"] == "ValidationException"
    return str(error.response["Error"]["Message"])


def test_item_size_follows_dynamodbs_documented_rules() -> None:
    size = local_dynamodb.attribute_value_size
    assert local_dynamodb.item_size({"name": _s("héllo")}) == 4 + 6  # names and strings: their UTF-8 bytes
    assert size({"B": "AAECAw=="}) == 4  # a binary's raw bytes, not its base64
    assert size({"NULL": True}) == size({"BOOL": False}) == 1
    assert size({"L": []}) == size({"M": {}}) == 3
    assert size({"L": [_s("ab"), _s("c")]}) == 3 + (1 + 2) + (1 + 1)  # 1 byte per element
    assert size({"M": {"key": _s("ab")}}) == 3 + 3 + 1 + 2  # and a map's keys
    assert size({"SS": ["ab", "c"]}) == 3
    # Numbers: "approximately 1 byte per two significant digits, plus 1 byte"; leading and trailing zeros
    # are not significant. The count errs high (a byte for pair alignment, one for a sign).
    assert size({"N": "1"}) == size({"N": "100"}) == size({"N": "0.001"}) == 2
    assert size({"N": "123456"}) == 5 and size({"N": "-12.5e3"}) == 4


def test_put_item_is_refused_above_400_kb_and_stored_up_to_it(dynamodb: Any, table_name: str) -> None:
    name_bytes = len("body")
    _put(dynamodb, table_name, "big", body=_s("x" * (LIMIT - KEY_BYTES - name_bytes)))  # exactly 400 KB

    with pytest.raises(ClientError) as refused:
        _put(dynamodb, table_name, "big", body=_s("y" * (LIMIT - KEY_BYTES - name_bytes + 1)))

    assert _validation_message(refused.value) == TOO_LARGE
    stored = _get(dynamodb, table_name, "big")
    assert stored is not None and stored["body"]["S"][0] == "x"


def _grow_nested(table: str, entry: str, value: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": _key("big"),
        "UpdateExpression": "SET m.#entry = :value",
        "ExpressionAttributeNames": {"#entry": entry},
        "ExpressionAttributeValues": {":value": _s(value)},
    }


def test_update_item_is_refused_when_its_result_would_pass_400_kb(dynamodb: Any, table_name: str) -> None:
    """moto let nested updates grow an item without limit (one map of four 110 KB entries: 440 KB)."""
    _put(dynamodb, table_name, "big", m={"M": {}})
    for index in range(3):
        dynamodb.update_item(**_grow_nested(table_name, f"e{index}", "x" * 110_000))
    before = _get(dynamodb, table_name, "big")
    assert before is not None

    with pytest.raises(ClientError) as refused:
        dynamodb.update_item(**_grow_nested(table_name, "e3", "x" * 110_000))
    assert _validation_message(refused.value) == UPDATE_TOO_LARGE
    assert _get(dynamodb, table_name, "big") == before  # nothing of the refused update is kept

    # The map's attribute name and overhead, each entry's key and element overhead: e0 can take the rest.
    room = LIMIT - KEY_BYTES - (len("m") + 3) - 3 * (len("e0") + 1) - 2 * 110_000
    dynamodb.update_item(**_grow_nested(table_name, "e0", "x" * room))  # exactly 400 KB
    with pytest.raises(ClientError):
        dynamodb.update_item(**_grow_nested(table_name, "e0", "x" * (room + 1)))


def test_update_item_creating_an_oversize_item_leaves_none(dynamodb: Any, table_name: str) -> None:
    with pytest.raises(ClientError) as refused:
        dynamodb.update_item(
            TableName=table_name,
            Key=_key("big"),
            UpdateExpression="SET body = :value",
            ExpressionAttributeValues={":value": _s("x" * LIMIT)},
        )
    assert _validation_message(refused.value) == UPDATE_TOO_LARGE
    assert _get(dynamodb, table_name, "big") is None


@pytest.mark.parametrize("oversize", ["Put", "Update"])
def test_an_oversize_item_cancels_its_transaction(dynamodb: Any, table_name: str, oversize: str) -> None:
    _seed(dynamodb, table_name)
    before = _scan(dynamodb, table_name)
    operation: dict[str, Any] = {"TableName": table_name}
    if oversize == "Put":
        operation["Item"] = {**_key("big"), "body": _s("x" * LIMIT)}
    else:
        operation.update(
            Key=_key("existing"),
            UpdateExpression="SET body = :value",
            ExpressionAttributeValues={":value": _s("x" * LIMIT)},
        )

    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(TransactItems=[_first_ops(table_name)["put a new item"], {oversize: operation}])

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = cancelled.value.response["CancellationReasons"]
    assert [reason["Code"] for reason in reasons] == ["None", "ValidationError"]
    assert reasons[1]["Message"] == (TOO_LARGE if oversize == "Put" else UPDATE_TOO_LARGE)
    assert _scan(dynamodb, table_name) == before


# -- freezing ------------------------------------------------------------------------------------


@pytest.fixture
def second_server() -> Iterator[DynamoDBServer]:
    """A second endpoint onto the same (process-wide) moto state, which tests may freeze."""
    with DynamoDBServer() as server:
        yield server


def _impatient_client(endpoint_url: str, read_timeout: float) -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(read_timeout=read_timeout, connect_timeout=5, retries={"total_max_attempts": 1}),
    )


def _bump(table: str, value: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": _key("frozen"),
        "UpdateExpression": "SET v = :v ADD n :one",
        "ExpressionAttributeValues": {":v": _s(value), ":one": {"N": "1"}},
    }


def test_a_request_sent_while_frozen_is_served_after_thaw(
    dynamodb: Any, table_name: str, second_server: DynamoDBServer
) -> None:
    impatient = _impatient_client(second_server.endpoint_url, read_timeout=0.5)
    with second_server.frozen():
        with pytest.raises(ReadTimeoutError):
            impatient.update_item(**_bump(table_name, "late"))
        wait_until(lambda: second_server.held_requests == 1, "the request was never held", timeout=10)
        assert _get(dynamodb, table_name, "frozen") is None  # (the other endpoint still answers)

    # Served one at a time in arrival order: the held write comes before this read.
    after = _get(local_client(second_server.endpoint_url), table_name, "frozen")
    assert after is not None
    assert after["v"] == _s("late")


def test_a_timed_out_transaction_retried_with_its_token_applies_once(
    dynamodb: Any, table_name: str, second_server: DynamoDBServer
) -> None:
    """What the app does when DynamoDB commits after the client gave up: retry with the same token."""
    token = str(uuid.uuid4())
    impatient = _impatient_client(second_server.endpoint_url, read_timeout=0.5)
    with second_server.frozen():
        with pytest.raises(ReadTimeoutError):
            impatient.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)

    impatient.transact_write_items(TransactItems=_add(table_name, 1), ClientRequestToken=token)

    assert _counter(dynamodb, table_name) == 1


def test_requests_held_while_frozen_run_in_arrival_order(
    dynamodb: Any, table_name: str, second_server: DynamoDBServer
) -> None:
    failures: list[BaseException] = []

    def send(value: str) -> None:
        try:
            _impatient_client(second_server.endpoint_url, read_timeout=0.5).update_item(**_bump(table_name, value))
        except ReadTimeoutError:
            pass
        except BaseException as error:
            failures.append(error)

    with second_server.frozen():
        first = threading.Thread(target=send, args=("first",))
        first.start()
        wait_until(lambda: second_server.held_requests == 1, "the first request was never held", timeout=10)
        second = threading.Thread(target=send, args=("second",))
        second.start()
        first.join()
        second.join()  # timed out: it was sent and waits in the listen queue

    final = _get(local_client(second_server.endpoint_url), table_name, "frozen")
    assert failures == []
    assert final is not None
    assert (final["v"], final["n"]) == (_s("second"), {"N": "2"})


def test_stopping_a_frozen_server_does_not_hang_nor_serve_the_held_request(dynamodb: Any, table_name: str) -> None:
    server = DynamoDBServer().start()
    server.freeze()
    outcome: list[str] = []

    def send() -> None:
        try:
            _impatient_client(server.endpoint_url, read_timeout=30).update_item(**_bump(table_name, "never"))
            outcome.append("served")
        except ClientError as error:
            outcome.append(error.response["Error"]["Code"])
        except Exception as error:
            outcome.append(type(error).__name__)

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: server.held_requests == 1, "the request was never held", timeout=10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=10)
    sender.join(timeout=10)

    assert not stopper.is_alive()
    assert outcome == ["ServiceUnavailableException"]
    assert _get(dynamodb, table_name, "frozen") is None


# -- update expressions ----------------------------------------------------------------------------


def test_a_long_update_expression_applies_every_action(dynamodb: Any, table_name: str) -> None:
    """moto checked the clause count and the path overlaps at each node of the expression, over its subtree;
    checked once on the whole expression, every action still applies."""
    names = [f"a{index}" for index in range(40)]
    dynamodb.update_item(
        TableName=table_name,
        Key=_key("long"),
        UpdateExpression="SET " + ", ".join(f"{name} = :{name}" for name in names) + " ADD n :one REMOVE gone",
        ExpressionAttributeValues={**{f":{name}": _s(name) for name in names}, ":one": {"N": "1"}},
    )
    item = _get(dynamodb, table_name, "long")
    assert item is not None and {name: item[name] for name in names} == {name: _s(name) for name in names}
    assert item["n"] == {"N": "1"}


@pytest.mark.parametrize(
    ("expression", "refusal"),
    [
        ("SET a0 = :v, a1 = :v SET a2 = :v", 'The "SET" section can only be used once in an update expression'),
        ("SET a0 = :v ADD n :one ADD m :one", 'The "ADD" section can only be used once in an update expression'),
        ("SET a0 = :v, b = :v, c = :v, a0 = :v", "Two document paths overlap with each other"),
        ("SET m.k = :v, b = :v, m = :v", "Two document paths overlap with each other"),
    ],
)
def test_an_update_expression_with_a_repeated_section_or_overlapping_paths_is_refused(
    dynamodb: Any, table_name: str, expression: str, refusal: str
) -> None:
    """Whatever the position of the offending part, as with every node's own check."""
    with pytest.raises(ClientError) as refused:
        dynamodb.update_item(
            TableName=table_name,
            Key=_key("refused"),
            UpdateExpression=expression,
            ExpressionAttributeValues={":v": _s("v"), ":one": {"N": "1"}} if ":one" in expression else {":v": _s("v")},
        )
    assert refusal in _validation_message(refused.value)
    assert _get(dynamodb, table_name, "refused") is None
