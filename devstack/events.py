"""`make dev`'s domain events (docs/events.md, Delivery): what the outbox pipe does in the cloud, on this machine.

A stream reader reads the local table's stream (the patched moto server of devstack/dynamodb.py serves
DynamoDB Streams on its DynamoDB endpoint), keeps the records the pipe of infra/events.json keeps and makes of
each the event the pipe puts on the bus (devstack/outbox_pipe.py: the same filter and template, read from
the template), and delivers them to a local sink, http://127.0.0.1:8005 (DEVSTACK_EVENTS_PORT moves it):

    GET  /events              {"events": [every envelope delivered, in arrival order, duplicates kept]}
    GET  /events?type=<type>  the same, of one event type
    POST /events              {"entries": [{"Source", "DetailType", "Detail"}, …]}: the reader's batches
    GET  /health

The sink prints one line per event. Delivery is at least once: the reader records where it is in the stream
(its checkpoint file) only after the sink accepted the batch; a sink that is down is retried until it is up,
and a restarted reader resumes after its checkpoint, so a batch delivered just before a crash comes again
(consumers deduplicate on `id`). It polls twice a second at most: the patched server serves one request at a
time.

    python -m devstack.events --port 8005 --dynamodb-endpoint http://127.0.0.1:8002 --table vod-upload-local
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from devstack.framing import BAD_LENGTH, READ_TIMEOUT_SECONDS, BackgroundServer, declared_length
from devstack.outbox_pipe import OutboxPipe, Unrenderable

HOST = "127.0.0.1"
MAX_BATCH_BYTES = 1024 * 1024
POLL_INTERVAL = 0.5  # seconds between reads of a stream with nothing new
RETRY_FIRST, RETRY_MOST = 0.5, 5.0  # seconds between deliveries the sink refused: doubling up to RETRY_MOST
SINK_TIMEOUT = 5.0
# Every call to the local endpoint: a few seconds, a few attempts (the reader's loop retries beyond that).
DYNAMODB_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})


def _say(message: str) -> None:
    with contextlib.suppress(OSError):  # make dev's terminal may be gone while it stops
        print(message, flush=True)


# -- the sink ------------------------------------------------------------------------------------------------


class Received:
    """Every event the sink accepted, in order."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            for entry in entries:
                self._events.append(entry["Detail"])
                _say(f"event  {_line(entry)}")

    def listed(self, event_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [event for event in self._events if event_type is None or event.get("type") == event_type]


def _line(entry: dict[str, Any]) -> str:
    detail = entry["Detail"]
    fields = " ".join(f"{name}={detail.get(name, '')}" for name in ("owner", "uploadId", "fileId"))
    return f"{entry['DetailType']} {detail.get('id', '?')} {fields} data={json.dumps(detail.get('data'))[:200]}"


def _entries_problem(document: Any) -> str | None:
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        return "entries: a list of {Source, DetailType, Detail} is required"
    for index, entry in enumerate(document["entries"]):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("Source"), str)
            and isinstance(entry.get("DetailType"), str)
            and isinstance(entry.get("Detail"), dict)
        ):
            return f"entries[{index}]: Source and DetailType (strings) and Detail (an object) are required"
    return None


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_SECONDS

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/health":
                return self._json(200, {"status": "ok"})
            if url.path != "/events":
                return self._json(404, {"error": "not_found", "message": "GET /events or /health"})
            event_type = parse_qs(url.query).get("type", [None])[0]
            self._json(200, {"events": received.listed(event_type)})

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/events":
                return self._json(404, {"error": "not_found", "message": "POST /events"})
            length = declared_length(self.headers)
            if length is None:
                return self._json(400, BAD_LENGTH)
            if length > MAX_BATCH_BYTES:
                return self._json(413, {"error": "payload_too_large", "message": f"at most {MAX_BATCH_BYTES} bytes"})
            try:
                document = json.loads(self.rfile.read(length))
            except ValueError:
                return self._json(400, {"error": "invalid_request", "message": "body: not JSON"})
            problem = _entries_problem(document)
            if problem:
                return self._json(400, {"error": "invalid_request", "message": problem})
            received.add(document["entries"])
            self._json(200, {"accepted": len(document["entries"])})

    return Handler


class EventSink(BackgroundServer):
    """The sink's server in a daemon thread (port 0: any free port)."""

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self.received = Received()
        super().__init__(_handler(self.received), host, port, "event sink")
        self.url = f"http://{host}:{self.port}"


# -- the reader ----------------------------------------------------------------------------------------------


class Checkpoint:
    """Where the reader is in the table's stream: the last sequence number the sink accepted, per shard. A
    checkpoint of another stream (the table was made again: make dev's DynamoDB lives in memory) is none."""

    def __init__(self, path: Path, stream_arn: str) -> None:
        self.path, self.stream_arn = path, stream_arn
        self.shards: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = json.loads(path.read_text())
            if saved.get("stream") == stream_arn:
                self.shards = dict(saved["shards"])

    def advance(self, shard_id: str, sequence_number: str) -> None:
        self.shards[shard_id] = sequence_number
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps({"stream": self.stream_arn, "shards": self.shards}))
        os.replace(partial, self.path)  # a reader stopped mid-write leaves the previous checkpoint whole


class NoStream(RuntimeError):
    """The table was made without the stream infra/data.json gives it: nothing can ever be delivered."""


class StreamReader:
    """Reads the table's stream, filters and transforms as the pipe does, delivers to the sink."""

    def __init__(self, endpoint_url: str, table: str, sink_url: str, checkpoint: Path, pipe: OutboxPipe) -> None:
        session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local")

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url, region_name="us-east-1", config=DYNAMODB_CONFIG)

        self.dynamodb, self.streams = client("dynamodb"), client("dynamodbstreams")
        self.table, self.sink_url, self.checkpoint_path, self.pipe = table, sink_url, checkpoint, pipe

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; an unreachable DynamoDB is waited for, an unreachable sink retried."""
        while not stop.is_set():
            try:
                self._follow(stop)
                stop.wait(POLL_INTERVAL)  # every shard read to its end: describe the stream again
            except (ClientError, BotoCoreError) as error:
                _say(f"events: reading the stream of table {self.table} failed ({error}); retrying")
                stop.wait(RETRY_MOST)

    def _follow(self, stop: threading.Event) -> None:
        stream_arn = self.dynamodb.describe_table(TableName=self.table)["Table"].get("LatestStreamArn")
        if stream_arn is None:
            raise NoStream(f"table {self.table} has no stream: make it from infra/data.json (devstack/table.py)")
        checkpoint = Checkpoint(self.checkpoint_path, stream_arn)
        shards = self.streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        iterators = {shard["ShardId"]: self._iterator(stream_arn, shard["ShardId"], checkpoint) for shard in shards}
        while iterators and not stop.is_set():
            read_any = False
            for shard_id, iterator in list(iterators.items()):
                batch = self.streams.get_records(ShardIterator=iterator, Limit=self.pipe.batch_size)
                if batch.get("NextShardIterator"):
                    iterators[shard_id] = batch["NextShardIterator"]
                else:  # a closed shard (AWS splits them; moto never does): its children come with a new describe
                    del iterators[shard_id]
                if batch["Records"]:
                    read_any = True
                    if not self._deliver(self._entries(batch["Records"]), stop):
                        return  # stopped while the sink was down: the checkpoint stays before this batch
                    checkpoint.advance(shard_id, batch["Records"][-1]["dynamodb"]["SequenceNumber"])
            if not read_any:
                stop.wait(POLL_INTERVAL)

    def _iterator(self, stream_arn: str, shard_id: str, checkpoint: Checkpoint) -> str:
        after = checkpoint.shards.get(shard_id)
        # TRIM_HORIZON, not the pipe's LATEST: make dev's table is new, and what was written before the reader
        # started (the stack's first requests) is delivered too.
        position = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        iterator: str = self.streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard_id, **position)[
            "ShardIterator"
        ]
        return iterator

    def _entries(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entries = []
        for record in records:
            if not self.pipe.passes(record):
                continue
            try:
                entries.append(self.pipe.entry(record))
            except Unrenderable as error:  # the pipe would retry it, then send it to its dead-letter queue
                keys = json.dumps(record["dynamodb"].get("Keys"))
                _say(f"events: record {record['dynamodb']['SequenceNumber']} {keys} dead-lettered: {error}")
        return entries

    def _deliver(self, entries: list[dict[str, Any]], stop: threading.Event) -> bool:
        """POSTs the batch until the sink accepts it; False if stopped first."""
        if not entries:
            return True
        body = json.dumps({"entries": entries}).encode()
        delay, failing = RETRY_FIRST, False
        while not stop.is_set():
            request = urllib.request.Request(  # noqa: S310 - the local sink's URL
                f"{self.sink_url}/events", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                urllib.request.urlopen(request, timeout=SINK_TIMEOUT).close()  # noqa: S310
            except (OSError, urllib.error.HTTPError) as error:
                if not failing:
                    _say(
                        f"events: the sink at {self.sink_url} did not take {len(entries)} event(s) ({error}); retrying"
                    )
                failing = True
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MOST)
                continue
            if failing:
                _say(f"events: the sink at {self.sink_url} took the {len(entries)} event(s) it refused before")
            return True
        return False


@contextlib.contextmanager
def reading(reader: StreamReader) -> Iterator[threading.Event]:
    """The reader in a thread while the block runs; set the yielded event (or leave the block) to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8005)
    parser.add_argument("--dynamodb-endpoint", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--app-name", default="vod-upload")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    pipe = OutboxPipe.from_template(args.app_name, args.stage)
    with EventSink(HOST, args.port) as sink:
        reader = StreamReader(args.dynamodb_endpoint, args.table, sink.url, args.checkpoint, pipe)
        try:
            reader.run(stop)
        except NoStream as error:
            raise SystemExit(f"events: {error}") from None


if __name__ == "__main__":
    main()
