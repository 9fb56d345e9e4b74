"""A local DynamoDB endpoint: moto's server, answering one request at a time.

Serving requests one by one makes condition checks and transactions atomic, as they are in
DynamoDB; moto's default threaded server (and moto in-process under threads) does not give that.
All `DynamoDBServer`s of a process share moto's state, so they also take turns with each other.

`patch_moto()` (applied by `DynamoDBServer`, process-wide) changes six things in moto 5.2.5:

- TransactWriteItems: moto deep-copies every table a transaction names, to roll back a cancelled
  one, so each transaction costs time and memory in proportion to the table. The replacement keeps
  a copy of just the items the transaction writes (None for an absent one) and puts exactly those
  back when it is cancelled. moto keeps no secondary-index structures (indexes are read by
  scanning the items); a table's stream records of a cancelled transaction are dropped too.
- moto registers every model instance it ever creates (`BaseModel.__new__` appends it to
  `instances_tracked`, for its dashboard), so every Item written, overwritten, updated (UpdateItem
  copies the old item) or copied stayed alive forever. DynamoDB's models are no longer registered.
- TransactWriteItems' ClientRequestToken, which moto ignores: see `ClientRequestTokens`.
- The 400 KB item limit, as DynamoDB applies it (see `item_size`): moto checked only a put's item and a
  top-level SET, by its own count, so nested updates (`SET m.k = :v`) grew an item without limit. Now a
  PutItem or UpdateItem whose resulting item is larger is refused with DynamoDB's ValidationException
  (the UpdateItem leaves the item as it was), and in TransactWriteItems such an item cancels the
  transaction with a `ValidationError` reason.
- An UpdateExpression's clause count and path overlaps are checked once, on the whole expression: moto checked
  them at every node of its syntax tree, each time over that node's whole subtree, so the time grew with the
  square of the expression's actions (an attribution's transaction spent about 14 ms of its 28 there). The
  whole expression's check finds whatever a node's would, since every node's clauses and paths are among it.
- DynamoDB Streams' shard iterators, which moto keeps forever (every GetRecords issues the next one, about
  1 KB): `make dev`'s events reader, polling twice a second, grew the server by megabytes an hour. They
  expire 15 minutes after they are issued, as AWS's do (see `IssuedIterators`).

It checks the moto internals it relies on and refuses to start without them; it warns on a moto
version other than the one it was written against.

`DynamoDBServer.frozen()` holds incoming requests, as a SIGSTOPped server would, for tests.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import inspect
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import moto
from moto.core.model_instances import model_data
from moto.core.responses import ActionResult
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ERROR_TYPE_PREFIX,
    ConditionalCheckFailed,
    DynamodbException,
    ItemSizeTooLarge,
    ItemSizeToUpdateTooLarge,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import StreamShard, Table
from moto.dynamodb.parsing.ast_nodes import Node, UpdateExpression  # type: ignore[attr-defined]
from moto.dynamodb.parsing.validators import ActionCountValidator, OverlappingPathsValidator
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.server import DomainDispatcherApplication, create_backend_app  # type: ignore[attr-defined]
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import get_input_stream

MOTO_VERSION = "5.2.5"  # the version whose internals the patches below were written against

logger = logging.getLogger(__name__)

# Every request of every DynamoDBServer in this process runs under this lock: they share moto's state.
_ONE_AT_A_TIME = threading.Lock()


# -- ClientRequestToken ----------------------------------------------------------------------------


class ClientRequestTokens:
    """ClientRequestToken -> digest of the TransactItems of a successful TransactWriteItems.

    As in DynamoDB, a token is remembered for 10 minutes after the request completed: the same
    token with the same items succeeds without applying anything again; with other items it fails
    with IdempotentParameterMismatchException. A cancelled or failed transaction is not remembered
    (a retry runs again). Memory is bounded: past `capacity` tokens the oldest are forgotten early.
    """

    def __init__(self, ttl: float = 600.0, capacity: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, ...], tuple[float, bytes]] = OrderedDict()  # expiry order

    def lookup(self, key: tuple[str, ...]) -> bytes | None:
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            return None if entry is None else entry[1]

    def remember(self, key: tuple[str, ...], digest: bytes) -> None:
        with self._lock:
            self._expire()
            self._entries[key] = (self.clock() + self.ttl, digest)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        now = self.clock()
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]


client_request_tokens = ClientRequestTokens()

_TRANSACT_SUCCESS: dict[str, Any] = {"ConsumedCapacity": [], "ItemCollectionMetrics": {}}  # moto's reply


class IdempotentParameterMismatchException(DynamodbException):
    def __init__(self) -> None:
        super().__init__(
            ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
            "ClientRequestToken was already used by a TransactWriteItems request with different parameters",
        )


def _items_digest(transact_items: Any) -> bytes:
    canonical = json.dumps(transact_items, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).digest()


# -- item size -----------------------------------------------------------------------------------

# DynamoDB's largest item: 400 KB, in the binary units its size limits use (1 KB = 1024 bytes).
MAX_ITEM_BYTES = 400 * 1024


def item_size(attributes: Mapping[str, Any]) -> int:
    """An item's size (wire form: `{"name": {"S": "..."}, ...}`) by DynamoDB's documented rules ("DynamoDB
    item sizes and formats"): each attribute name's UTF-8 bytes plus its value's size."""
    return sum(len(name.encode("utf-8")) + attribute_value_size(value) for name, value in attributes.items())


def attribute_value_size(value: Mapping[str, Any]) -> int:
    """A string counts its UTF-8 bytes, a binary its raw bytes, a null or a Boolean 1 byte, a set the sizes
    of its members; a list or map 3 bytes plus 1 byte per element plus the elements (and a map's keys)."""
    ((kind, content),) = value.items()
    if kind == "S":
        return len(content.encode("utf-8"))
    if kind == "N":
        return number_size(content)
    if kind == "B":
        return _binary_size(content)
    if kind in ("NULL", "BOOL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        member = kind[0]
        return sum(attribute_value_size({member: element}) for element in content)
    if kind == "L":
        return 3 + sum(1 + attribute_value_size(element) for element in content)
    if kind == "M":
        return 3 + sum(len(key.encode("utf-8")) + 1 + attribute_value_size(element) for key, element in content.items())
    raise ValueError(f"not an attribute value type: {kind}")


def number_size(text: str) -> int:
    """DynamoDB gives a number's size only "approximately": 1 byte per two significant digits, plus 1. This
    errs high: one more digit for aligning the pairs on the decimal point, one more byte for a sign."""
    mantissa = text.strip().lower().split("e")[0]
    digits = mantissa.lstrip("+-").replace(".", "").strip("0")
    return 1 + (len(digits) + 2) // 2 + (1 if mantissa.startswith("-") else 0)


def _binary_size(content: str | bytes) -> int:
    return len(content) if isinstance(content, bytes) else len(base64.b64decode(content))


# -- the patches ---------------------------------------------------------------------------------

_moto_transact_write_items_response = DynamoHandler.transact_write_items


def _transact_write_items_response(self: DynamoHandler) -> ActionResult:
    """DynamoHandler.transact_write_items, honouring ClientRequestToken."""
    token = self.body.get("ClientRequestToken")
    if token is None:
        return _moto_transact_write_items_response(self)
    if not 1 <= len(token) <= 36:
        raise MockValidationException(
            f"1 validation error detected: Value '{token}' at 'clientRequestToken' failed to satisfy constraint: "
            "Member must have length less than or equal to 36"
        )
    key = (self.current_account, self.region, token)
    digest = _items_digest(self.body.get("TransactItems"))
    known = client_request_tokens.lookup(key)
    if known is not None:
        if known != digest:
            raise IdempotentParameterMismatchException()
        return ActionResult(copy.deepcopy(_TRANSACT_SUCCESS))  # applied before: nothing to do
    result = _moto_transact_write_items_response(self)
    client_request_tokens.remember(key, digest)
    return result


_moto_put_item = DynamoDBBackend.put_item
_moto_update_item = DynamoDBBackend.update_item


def _put_item(self: DynamoDBBackend, table_name: str, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Item:
    """DynamoDBBackend.put_item, refusing an item over DynamoDB's size limit (PutItem, BatchWriteItem, and a
    transaction's Put)."""
    if item_size(item_attrs) > MAX_ITEM_BYTES:
        raise ItemSizeTooLarge()
    return _moto_put_item(self, table_name, item_attrs, *args, **kwargs)


def _update_item(self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Item:
    """DynamoDBBackend.update_item, refusing an update whose resulting item is over DynamoDB's size limit:
    moto updates the stored item in place, so the item as it was is put back."""
    table = self.get_table(table_name)
    try:
        hash_key, range_key = self.get_keys_value(table, key)
    except MockValidationException:
        return _moto_update_item(self, table_name, key, *args, **kwargs)  # moto answers a bad key its own way
    before = copy.deepcopy(table.get_item(hash_key, range_key))
    stream = _StreamMark.of(table)
    item = _moto_update_item(self, table_name, key, *args, **kwargs)
    if item_size(item.to_json()["Attributes"]) > MAX_ITEM_BYTES:
        _put_back(table, hash_key, range_key, before)
        stream.drop_new_records()
        raise ItemSizeToUpdateTooLarge()
    return item


class _StreamMark:
    """Where a table's stream records ended, so that records of a write that is undone can be dropped."""

    def __init__(self, shard: StreamShard | None) -> None:
        self._shard = shard
        self._records = shard.items if shard is not None else []
        self._length = len(self._records)

    @classmethod
    def of(cls, table: Table) -> _StreamMark:
        return cls(table.stream_shard)

    def drop_new_records(self) -> None:
        if self._shard is not None and self._shard.items is self._records:  # (moto replaces the list when it
            del self._records[self._length :]  # hands records to Lambda)


_Undo = tuple[Table, DynamoType, DynamoType | None, Item | None]


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """moto 5.2.5's DynamoDBBackend.transact_write_items, line for line, except the rollback (instead
    of deep copies of whole tables, `undo` holds a copy of each item before the transaction writes it)
    and an item over the size limit, which cancels the transaction as in DynamoDB."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    undo: list[_Undo] = []
    streams: dict[int, _StreamMark] = {}  # id(table) -> where its stream ended before the transaction

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str, str, dict[str, Any] | None] | tuple[None, None, None]] = []  # [(Code, Message, Item)]
    try:
        for item in transact_items:
            original_item: dict[str, Any] | None = None
            if len(list(item.keys())) > 1:
                raise TransactWriteSingleOpException
            try:
                op_type, op = next(iter(item.items()))
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")

                table_name = op["TableName"]
                condition_expression = op.get("ConditionExpression")
                expression_attribute_names = op.get("ExpressionAttributeNames")
                expression_attribute_values = op.get("ExpressionAttributeValues")
                return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")

                if op_type == "Put":
                    attrs = op["Item"]
                    table = self.get_table(table_name)
                    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = attrs[table.range_key_attr]
                else:
                    key = op["Key"]

                check_unicity(table_name, key)

                current = self.get_item(table_name, key)
                if op_type != "ConditionCheck":  # (changed) remember the item before writing it
                    table = self.get_table(table_name)
                    hash_key, range_key = self.get_keys_value(table, key)
                    undo.append((table, hash_key, range_key, copy.deepcopy(current)))
                    streams.setdefault(id(table), _StreamMark.of(table))

                if condition_expression is not None:
                    condition_op = get_filter_expression(
                        condition_expression, expression_attribute_names, expression_attribute_values
                    )
                    if not condition_op.expr(current):
                        if return_values_on_condition_check_failure == "ALL_OLD" and current:
                            original_item = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=original_item)

                if op_type == "Put":
                    self.put_item(
                        table_name,
                        op["Item"],
                        condition_expression=condition_expression,
                        expression_attribute_names=expression_attribute_names,
                        expression_attribute_values=expression_attribute_values,
                    )
                elif op_type == "Delete":
                    self.delete_item(
                        table_name,
                        key,
                        condition_expression=condition_expression,
                        expression_attribute_names=expression_attribute_names,
                        expression_attribute_values=expression_attribute_values,
                    )
                elif op_type == "Update":
                    self.update_item(
                        table_name,
                        key,
                        update_expression=op["UpdateExpression"],
                        condition_expression=condition_expression,
                        expression_attribute_names=expression_attribute_names,
                        expression_attribute_values=expression_attribute_values,
                    )
                errors.append((None, None, None))
            except (ItemSizeTooLarge, ItemSizeToUpdateTooLarge) as e:  # (added) as DynamoDB: the item's reason
                errors.append(("ValidationError", e.exception_msg, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), original_item))
            except Exception as e:  # as moto: other failures are reported per item
                errors.append((type(e).__name__, str(e), original_item))

        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
    except BaseException:
        for table, hash_key, range_key, before in reversed(undo):
            _put_back(table, hash_key, range_key, before)
        for stream in streams.values():
            stream.drop_new_records()
        raise


def _put_back(table: Table, hash_key: DynamoType, range_key: DynamoType | None, before: Item | None) -> None:
    """Make `before` (None: no item) the table's item at this key, as moto stores items."""
    if range_key is None:  # hash-only table: items[hash] is the item
        if before is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = before  # type: ignore[assignment]  # (as moto does)
        return
    partition = table.items.get(hash_key)
    if before is not None:
        table.items[hash_key][range_key] = before
    elif partition is not None:
        partition.pop(range_key, None)
        if not partition:
            del table.items[hash_key]


def _on_the_whole_expression(check: Callable[[Any, UpdateExpression], UpdateExpression]) -> Callable[[Any, Node], Node]:
    """A traversal that applies `check` to the expression's root alone (it changes no node)."""

    def traverse(validator: Any, node: Node) -> Node:
        return check(validator, node) if isinstance(node, UpdateExpression) else node

    return traverse


def _untracked_new(cls: type, *_args: Any, **_kwargs: Any) -> Any:
    return object.__new__(cls)  # BaseModel.__new__ without `cls.instances_tracked.append(instance)`


def _check_moto() -> list[type]:
    """The moto internals the patches rely on; raises if any is missing. Returns DynamoDB's models."""
    missing: list[str] = []
    methods = {
        DynamoDBBackend: [
            "transact_write_items",
            "get_table",
            "get_item",
            "get_keys_value",
            "put_item",
            "update_item",
            "delete_item",
        ],
        DynamoHandler: ["transact_write_items", "call_action"],
        ActionCountValidator: ["traverse", "verify_action_counts"],
        OverlappingPathsValidator: ["traverse", "check_for_overlapping_paths"],
    }
    for cls, names in methods.items():
        missing += [f"{cls.__name__}.{name}" for name in names if not callable(getattr(cls, name, None))]
    if list(inspect.signature(DynamoDBBackend.transact_write_items).parameters) != ["self", "transact_items"]:
        missing.append("DynamoDBBackend.transact_write_items(self, transact_items)")
    if list(inspect.signature(DynamoHandler.transact_write_items).parameters) != ["self"]:
        missing.append("DynamoHandler.transact_write_items(self)")
    try:
        probe = Table(  # type: ignore[abstract]
            "probe",
            account_id="000000000000",
            region="us-east-1",
            schema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            attr=[{"AttributeName": "pk", "AttributeType": "S"}],
        )
    except Exception as error:  # reported below, with the rest
        missing.append(f"Table(name, account_id, region, schema, attr): {error!r}")
    else:
        missing += [f"Table.{name}" for name in ["items", "stream_shard", "hash_key_attr"] if not hasattr(probe, name)]
        if not isinstance(getattr(probe, "items", None), dict) or not hasattr(probe, "range_key_attr"):
            missing.append("Table.items (a dict), Table.range_key_attr")
    if "__setitem__" not in vars(LimitedSizeDict) or not issubclass(LimitedSizeDict, dict):
        missing.append("dynamo_type.LimitedSizeDict (a dict checking sizes in __setitem__)")
    models = [cls for cls in model_data.get("dynamodb", {}).values() if isinstance(cls, type)]
    if Item not in models or Table not in models or not hasattr(Item, "instances_tracked"):
        missing.append("moto.core.model_instances.model_data['dynamodb'] with Item, Table (instances_tracked)")
    if missing:
        raise RuntimeError(
            f"devstack.dynamodb patches moto {MOTO_VERSION}; moto {moto.__version__} lacks: {', '.join(missing)}"
        )
    return models


class IssuedIterators:
    """When each shard iterator was issued; those older than `ttl` are forgotten by the backend that holds them."""

    def __init__(self, ttl: float = 15 * 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self._clock = ttl, clock
        self._issued: OrderedDict[str, float] = OrderedDict()

    def note(self, backend: DynamoDBStreamsBackend, iterator_arn: str) -> None:
        now = self._clock()
        self._issued[iterator_arn] = now
        while self._issued:
            arn, issued = next(iter(self._issued.items()))
            if issued > now - self.ttl:
                break
            del self._issued[arn]
            backend.shard_iterators.pop(arn, None)


ISSUED_ITERATORS = IssuedIterators()
_moto_get_shard_iterator = DynamoDBStreamsBackend.get_shard_iterator
_moto_get_records = DynamoDBStreamsBackend.get_records


def _get_shard_iterator(self: DynamoDBStreamsBackend, *args: Any, **kwargs: Any) -> Any:
    iterator = _moto_get_shard_iterator(self, *args, **kwargs)
    ISSUED_ITERATORS.note(self, iterator.arn)
    return iterator


def _get_records(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int) -> dict[str, Any]:
    records = _moto_get_records(self, iterator_arn, limit)
    ISSUED_ITERATORS.note(self, records["NextShardIterator"])
    return records


def patch_moto() -> None:
    """Apply the patches of the module docstring, once per process."""
    if DynamoDBBackend.transact_write_items is _transact_write_items:
        return
    models = _check_moto()
    if moto.__version__ != MOTO_VERSION:
        logger.warning("devstack.dynamodb: written against moto %s, running %s", MOTO_VERSION, moto.__version__)
    for model in models:
        model.__new__ = staticmethod(_untracked_new)  # type: ignore[assignment]
        model.instances_tracked = []  # type: ignore[attr-defined]
    DynamoHandler.transact_write_items = _transact_write_items_response  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    # One size rule, DynamoDB's, where moto had its own (405,000 of its bytes, top-level writes only).
    del LimitedSizeDict.__setitem__
    DynamoDBBackend.put_item = _put_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign]
    ActionCountValidator.traverse = _on_the_whole_expression(ActionCountValidator.verify_action_counts)
    OverlappingPathsValidator.traverse = _on_the_whole_expression(OverlappingPathsValidator.check_for_overlapping_paths)
    DynamoDBStreamsBackend.get_shard_iterator = _get_shard_iterator  # type: ignore[method-assign]
    DynamoDBStreamsBackend.get_records = _get_records  # type: ignore[method-assign]


# -- the server ----------------------------------------------------------------------------------

_SHUTTING_DOWN = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailableException",'
    b'"message":"the local endpoint is shutting down"}'
)


class _Gate:
    """WSGI middleware: while frozen, the request being served waits here (the next ones wait in
    the listen queue, the server being single-threaded); closing releases it without serving it."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self.waiting = 0

    def freeze(self) -> None:
        self._open.clear()

    def thaw(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.waiting += 1
        try:
            self._open.wait()
        finally:
            self.waiting -= 1
        if self._closed:
            get_input_stream(environ).read()  # else werkzeug waits for the connection's end to drain it
            headers = [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(_SHUTTING_DOWN)))]
            start_response("503 Service Unavailable", headers)
            return [_SHUTTING_DOWN]
        with _ONE_AT_A_TIME:
            response: Iterable[bytes] = self._app(environ, start_response)
            return response


class DynamoDBServer:
    """moto's server on one thread; `freeze`/`thaw`/`frozen` hold requests, for fault injection.

    `patch=False` leaves moto as it is (for before/after benchmarks; the patches are process-wide,
    so this only holds in a process where no patched server was ever made)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, patch: bool = True) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
        if patch:
            patch_moto()
        self._gate = _Gate(DomainDispatcherApplication(create_backend_app))
        self._server: BaseWSGIServer = make_server(host, port, self._gate, threaded=False)
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    @property
    def held_requests(self) -> int:
        """Requests taken from the socket and held by `freeze` (0 or 1: the others wait in the listen queue)."""
        return self._gate.waiting

    def freeze(self) -> None:
        """Hold every request from now on, unserved, until `thaw` (then they run in arrival order)."""
        self._gate.freeze()

    def thaw(self) -> None:
        self._gate.thaw()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[DynamoDBServer]:
        self.freeze()
        try:
            yield self
        finally:
            self.thaw()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> DynamoDBServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dynamodb", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a request held by `freeze` is answered 503 without being served."""
        self._gate.close()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> DynamoDBServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--unpatched", action="store_true", help="moto as it is (for before/after benchmarks)")
    args = parser.parse_args()
    server = DynamoDBServer(args.host, args.port, patch=not args.unpatched)
    print(f"DynamoDB (moto, serialised{', unpatched' if args.unpatched else ''}) on {server.endpoint_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
