"""Never lose an upload: 200 uploads through vodlocal in PULL mode while DynamoDB, behind a fault proxy
(tests/fault_proxy.py), is unreachable, throttled, slow past the client's timeout, or loses answers to
writes it applied, on every third request. Every upload ends up attributed to its owner exactly once.

The consumer is also stopped while all 200 are made, and starts on a full queue; a lost confirm is
covered by tests/test_pull_consumer.py.

What was lost is counted from vodlocal's side, not from the test's own list: the uploads vodlocal committed
(its media records, each with the sourceContext that names its upload) against the videos the API lists.

The domain events are counted as a consumer gets them: make dev's stream reader and sink (devstack/events.py)
run on the test's table throughout, the sink going down for part of the run and the reader crashing after it
(class Delivery), and what the sink received is held against the committed facts (the API's videos) and the
table's outbox rows."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib import container
from devstack.events import EventSink, StreamReader, reading
from devstack.outbox_pipe import OutboxPipe
from tests.conftest import ApiFactory, TokenFactory, bearer, start_pull_vodlocal, with_policy
from tests.fault_proxy import FaultProxy, Plan
from tests.test_outbox import outbox, types
from tests.test_pull_consumer import Post, as_user, upload_through
from tests.vodlocal.conftest import wait_until_pushed
from vodlocal import Config, Handle, start

UPLOADS = 200
USERS = 10
FAULTS = ("unreachable", "throttled", "slow", "answer_lost")
DEADLINE_SECONDS = 240
CONFIRM_WINDOW_SECONDS = 10.0  # VOD's is 30 s: shorter, so that a redelivery comes sooner


def every_third_request() -> Plan:
    """Every third request meets the next fault of FAULTS, in turn."""
    kinds = itertools.cycle(FAULTS)

    def plan(number: int, _operation: str) -> str | None:
        return next(kinds) if number % 3 == 0 else None

    return plan


def committed_uploads(vod: Handle) -> dict[str, str]:
    """FileId -> upload id of every upload vodlocal committed, from its own media records (the upload id is the
    middle part of the `v1.<uploadId>.<tag>` sourceContext the signature carried)."""
    rows = vod.app.store.query("SELECT file_id, data FROM media")
    return {row["file_id"]: json.loads(row["data"])["source_context"].split(".")[1] for row in rows}


@dataclass(frozen=True)
class Tally:
    """The API's videos (every user's list) against what vodlocal committed."""

    committed: dict[str, str]  # fileId -> uploadId, vodlocal's
    listed: list[tuple[str, str, str]]  # (owner, fileId, uploadId), the API's

    @property
    def lost(self) -> set[str]:
        return set(self.committed) - {file_id for _, file_id, _ in self.listed}

    @property
    def listed_twice(self) -> list[str]:
        return [file_id for file_id, n in Counter(file_id for _, file_id, _ in self.listed).items() if n > 1]

    def misattributed(self, owners: dict[str, str]) -> list[tuple[str, str, str]]:
        """Listed under another user than the upload's, or with another upload than vodlocal committed."""
        return [
            (owner, file_id, upload_id)
            for owner, file_id, upload_id in self.listed
            if owners.get(upload_id) != owner or self.committed.get(file_id) != upload_id
        ]

    def figures(self) -> dict[str, int]:
        return {"committed": len(self.committed), "listed": len(self.listed), "lost": len(self.lost)}


def tally(vod: Handle, list_videos: Callable[[str], list[dict[str, Any]]], users: Iterable[str]) -> Tally:
    listed = [(user, video["fileId"], video["uploadId"]) for user in users for video in list_videos(user)]
    return Tally(committed_uploads(vod), listed)


# -- the domain events, as delivered ---------------------------------------------------------------------------

DELIVERY_SECONDS = 60  # after the run: the reader's backlog is a few thousand stream records, ten per read


class Delivery:
    """make dev's events reader and sink (devstack/events.py) on the test's table: what the outbox pipe delivers.
    `committed()` reads the event ids of the table's outbox rows. What every sink received is what a consumer got.

    Two delivery faults, in one outage: the sink goes down (the reader is refused and retries) and comes back on its
    port; once it has what was committed meanwhile, the reader crashes and a new one resumes from the checkpoint
    written as the sink went down, as a reader that never recorded its later batches: they are delivered again."""

    def __init__(self, dynamodb_endpoint: str, table: str, checkpoint: Path, committed: Callable[[], set[str]]) -> None:
        self._sinks = [EventSink()]
        self._endpoint, self._table, self._checkpoint, self.committed = dynamodb_endpoint, table, checkpoint, committed
        self._pipe = OutboxPipe.from_template("vod-upload", "local")
        self._reader = contextlib.ExitStack()
        self._checkpoint_when_down: str | None = None
        self.rows_when_down = self.rows_when_up = 0  # outbox rows as the sink went down, and came back
        self._start_reader()

    def _start_reader(self) -> None:
        reader = StreamReader(self._endpoint, self._table, self._sinks[0].url, self._checkpoint, self._pipe)
        self._reader.enter_context(reading(reader))

    def events(self) -> list[dict[str, Any]]:
        """Every envelope delivered, duplicates kept, in arrival order."""
        return [event for sink in self._sinks for event in sink.received.listed()]

    def outage_starts(self) -> None:
        self._sinks[-1].stop()
        self._checkpoint_when_down = self._checkpoint.read_text() if self._checkpoint.exists() else None
        self.rows_when_down = len(self.committed())

    def outage_ends(self) -> None:
        self._sinks.append(EventSink(port=self._sinks[0].port))
        committed = self.committed()
        self.rows_when_up = len(committed)
        self.wait_for(committed)
        self._reader.close()
        if self._checkpoint_when_down is None:  # nothing read yet when the sink went down: from the stream's start
            self._checkpoint.unlink(missing_ok=True)
        else:
            self._checkpoint.write_text(self._checkpoint_when_down)
        self._start_reader()

    def wait_for(self, event_ids: set[str]) -> list[dict[str, Any]]:
        """The delivered events once every one of `event_ids` is among them (bounded)."""
        deadline = time.monotonic() + DELIVERY_SECONDS
        while missing := event_ids - {event["id"] for event in self.events()}:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(missing)} of {len(event_ids)} events not delivered in {DELIVERY_SECONDS} s")
            time.sleep(0.2)
        return self.events()

    def figures(self) -> dict[str, int]:
        return {"committedWhileSinkDown": self.rows_when_up - self.rows_when_down}

    def stop(self) -> None:
        self._reader.close()
        self._sinks[-1].stop()


@contextlib.contextmanager
def delivering(dynamodb: Any, dynamodb_endpoint: str, table: str, checkpoint: Path) -> Iterator[Delivery]:
    delivery = Delivery(
        dynamodb_endpoint, table, checkpoint, lambda: {event["id"] for event in outbox(dynamodb, table)}
    )
    try:
        yield delivery
    finally:
        delivery.stop()


@dataclass(frozen=True)
class EventTally:
    """The events delivered against the facts committed (the API's videos) and the table's outbox rows."""

    delivered: list[dict[str, Any]]
    outbox_ids: set[str]
    listed: list[tuple[str, str, str]]  # (owner, fileId, uploadId), the API's

    def ids_per_fact(self) -> dict[tuple[str, str, str, str], set[str]]:
        """(type, owner, fileId, uploadId) -> the distinct event ids delivered for it."""
        ids: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        for event in self.delivered:
            ids[(event["type"], event["owner"], event["fileId"], event["uploadId"])].add(event["id"])
        return ids

    def without_fact(self) -> list[tuple[str, str, str, str]]:
        """Delivered for an attribution the API does not list (or of a type no fact of this run has)."""
        facts = {("upload.attributed", *fact) for fact in self.listed}
        return [key for key in self.ids_per_fact() if key not in facts]

    def not_once(self) -> dict[tuple[str, str, str], int]:
        """Committed facts whose distinct delivered event ids are not exactly one: fact -> how many."""
        ids = self.ids_per_fact()
        counts = {fact: len(ids.get(("upload.attributed", *fact), set())) for fact in self.listed}
        return {fact: n for fact, n in counts.items() if n != 1}

    def changed_in_redelivery(self) -> list[str]:
        first: dict[str, dict[str, Any]] = {}
        return [e["id"] for e in self.delivered if first.setdefault(e["id"], e) != e]

    def figures(self) -> dict[str, int]:
        distinct = len({event["id"] for event in self.delivered})
        return {
            "factsCommitted": len(self.listed), "eventsDelivered": len(self.delivered), "distinctIds": distinct,
            "duplicates": len(self.delivered) - distinct, "outboxRows": len(self.outbox_ids),
        }  # fmt: skip

    def check(self, context: dict[str, Any]) -> None:
        assert {event["id"] for event in self.delivered} == self.outbox_ids, context
        assert self.not_once() == {}, context  # every committed fact: one event id, however often delivered
        assert self.without_fact() == [], context  # no event for a write that did not commit
        assert self.changed_in_redelivery() == [], context  # a duplicate is the same envelope


def delivered_events(delivery: Delivery, listed: list[tuple[str, str, str]]) -> EventTally:
    """Once the run's writes are over: the outbox rows, and what the sink got once all of them arrived."""
    outbox_ids = delivery.committed()
    return EventTally(delivery.wait_for(outbox_ids), outbox_ids, listed)


def events_line(mode: str, tally: EventTally) -> str:
    """The line the closing note quotes."""
    figures = tally.figures()
    return (
        f"{mode} events under faults: {UPLOADS} uploads, facts committed {figures['factsCommitted']}, events "
        f"delivered {figures['eventsDelivered']}, distinct ids {figures['distinctIds']}, duplicates "
        f"{figures['duplicates']} (outbox rows {figures['outboxRows']})"
    )


@pytest.fixture
def pull_vod(stage_env: dict[str, str], tmp_path: Path) -> Iterator[Handle]:
    handle = start_pull_vodlocal(stage_env, tmp_path / "vodlocal", CONFIRM_WINDOW_SECONDS)
    with_policy(stage_env, maxOpenIntents=UPLOADS, maxIntentsPerHour=UPLOADS, maxSignaturesPerIntent=5)
    yield handle
    handle.stop()


def test_200_pulled_uploads_under_dynamodb_faults_are_each_attributed_once_and_none_is_lost(
    pull_vod: Handle,
    api_factory: ApiFactory,
    token_for: TokenFactory,
    stage_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
    dynamodb_endpoint: str,
    tmp_path: Path,
) -> None:
    table = stage_env["TABLE_NAME"]
    with delivering(dynamodb, dynamodb_endpoint, table, tmp_path / "events-checkpoint.json") as delivery:
        pulled_under_faults(pull_vod, api_factory, token_for, stage_env, monkeypatch, delivery)


def pulled_under_faults(
    pull_vod: Handle,
    api_factory: ApiFactory,
    token_for: TokenFactory,
    stage_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    delivery: Delivery,
) -> None:
    api = api_factory()
    tokens = {f"user{n}": token_for(f"user{n}") for n in range(USERS)}
    owners = [f"user{n % USERS}" for n in range(UPLOADS)]
    made = {upload_through(pull_vod, as_user(api, tokens[owner]), b"v%d" % n): owner for n, owner in enumerate(owners)}
    assert len(made) == UPLOADS

    # The consumer starts on a full queue, its DynamoDB behind the fault proxy.
    proxy = FaultProxy(stage_env["DYNAMODB_ENDPOINT_URL"], every_third_request(), slow_seconds=1.5)
    for name, value in {**stage_env, "DYNAMODB_ENDPOINT_URL": proxy.url}.items():
        monkeypatch.setenv(name, value)
    container.reset()
    started = time.monotonic()
    outcomes: Counter[str] = Counter()
    runs = 0
    try:
        # Until VOD holds nothing unconfirmed: an event whose write went through but whose answer was lost on
        # every retry is redelivered and then counts as a duplicate, not as attributed.
        while pull_vod.app.bus.pending_count() and time.monotonic() - started < DEADLINE_SECONDS:
            report = container.services().pull_consumer.run(8.0)
            outcomes.update(report.outcomes)
            runs += 1
            if runs == 1:  # the delivery outage lasts the consumer's second run
                delivery.outage_starts()
            elif runs == 2:
                delivery.outage_ends()
    finally:
        proxy.stop()
        monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", stage_env["DYNAMODB_ENDPOINT_URL"])
        container.reset()
    elapsed = time.monotonic() - started
    if runs == 1:  # one run did it all
        delivery.outage_ends()

    counted = tally(
        pull_vod, lambda user: api.get("/videos?limit=100", headers=bearer(tokens[user])).json_body["videos"], tokens
    )
    events = delivered_events(delivery, counted.listed)
    figures = {
        "uploads": UPLOADS, **counted.figures(), "consumerRuns": runs, "seconds": round(elapsed, 1),
        "outcomes": dict(outcomes), "faults": dict(proxy.faults), "dynamodbRequests": proxy.requests,
        **events.figures(), **delivery.figures(), "eventTypes": dict(types(events.delivered)),
    }  # fmt: skip
    print(f"PULL under faults: {json.dumps(figures)}")
    print(events_line("PULL", events))
    assert types(events.delivered).keys() == {"upload.attributed"}, figures  # the only fact type this run commits
    events.check(figures)
    assert figures["distinctIds"] == UPLOADS, figures
    # The outage had events to lose, and the crashed reader delivered them again.
    assert figures["duplicates"] >= figures["committedWhileSinkDown"] > 0, figures
    assert sorted(counted.committed.values()) == sorted(made), figures  # vodlocal committed each upload once
    assert counted.lost == set(), figures
    assert counted.listed_twice == [] and counted.misattributed(made) == [], figures
    assert outcomes["attributed"] <= UPLOADS <= outcomes["attributed"] + outcomes["duplicate"], figures
    assert set(proxy.faults) == set(FAULTS), figures
    assert (
        container.services().storage.vod_events.dead_letters() == []
        and container.services().storage.reviews.pending() == []
    )


# -- the same run in PUSH mode: what VOD's documented PUSH loses ------------------------------------------

READ_OUTAGE_EVERY = 40  # GetItems: during the uploads, only the callback reads (its intent)
READ_OUTAGE_LENGTH = 4  # the repository's attempts at one call: the callback that meets them answers 503


def with_read_outages(plan: Plan) -> Plan:
    """`plan`, and every READ_OUTAGE_EVERY-th GetItem starts READ_OUTAGE_LENGTH throttled GetItems in a row. PUSH
    is serial, so they meet one callback's read of its intent (or its last tries): it answers 503, which VOD never
    retries. Each outage therefore loses at least one upload."""
    reads = itertools.count(1)
    refusing = 0

    def planned(number: int, operation: str) -> str | None:
        nonlocal refusing
        if operation == "GetItem" and next(reads) % READ_OUTAGE_EVERY == 0:
            refusing = READ_OUTAGE_LENGTH
        if operation == "GetItem" and refusing:
            refusing -= 1
            return "throttled"
        return plan(number, operation)

    return planned


@pytest.fixture
def faulty_dynamodb(stage_env: dict[str, str]) -> Iterator[FaultProxy]:
    """The app's DynamoDB behind the fault proxy, from the start (the chalice_local fixture reads stage_env)."""
    proxy = FaultProxy(stage_env["DYNAMODB_ENDPOINT_URL"], with_read_outages(every_third_request()), slow_seconds=1.5)
    real_endpoint = stage_env["DYNAMODB_ENDPOINT_URL"]
    with_policy(stage_env, maxOpenIntents=UPLOADS, maxIntentsPerHour=UPLOADS, maxSignaturesPerIntent=5)
    stage_env["DYNAMODB_ENDPOINT_URL"] = proxy.url
    yield proxy
    proxy.stop()
    stage_env["DYNAMODB_ENDPOINT_URL"] = real_endpoint


@dataclass(frozen=True)
class PushPrediction:
    """VOD's PUSH rules (vod-protocol.md §3.1, vodlocal/README.md "Event delivery") applied to vodlocal's delivery
    log: the first reply of any status delivers an event; a 5xx or a refused connection is not retried, a timeout
    twice. An upload whose NewFileUpload got no 2xx is lost, unless its completion reached DynamoDB though the app
    never saw the answer (the app then answered 503, not knowing it had applied)."""

    not_accepted: set[str]  # FileIds whose NewFileUpload no attempt got a 2xx for
    applied_unanswered: set[str]  # of those, the ones whose completion transaction DynamoDB got, unanswered

    @property
    def lost(self) -> set[str]:
        return self.not_accepted - self.applied_unanswered


def push_prediction(vod: Handle, proxy: FaultProxy) -> PushPrediction:
    rows = vod.app.store.query("SELECT seq, body FROM events WHERE event_type = 'NewFileUpload'")
    pushed = {row["seq"]: json.loads(row["body"])["FileUploadEvent"]["FileId"] for row in rows}
    attempts: dict[int, list[dict[str, Any]]] = {}
    for delivery in vod.app.bus.deliveries:
        attempts.setdefault(delivery["seq"], []).append(delivery)
    for seq, tries in attempts.items():  # as documented: at most 3 sends, a retry only after a timeout
        assert len(tries) <= 3 and all(t.get("timeout") for t in tries[:-1]), (seq, tries)
    accepted = {seq for seq, tries in attempts.items() if 200 <= tries[-1].get("status", 0) < 300}
    not_accepted = {file_id for seq, file_id in pushed.items() if seq not in accepted}
    landed = [body for operation, body in proxy.unanswered if operation == "TransactWriteItems"]
    return PushPrediction(not_accepted, {f for f in not_accepted if any(f.encode() in body for body in landed)})


def call_until_answered(method: str, url: str, token: str, body: bytes | None = None) -> dict[str, Any]:
    """What a client does with a 503 and its Retry-After: try again (at once here, to keep the run short)."""
    for _ in range(20):
        request = urllib.request.Request(url, data=body, method=method, headers=bearer(token))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.load(response)
                return answer
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
    raise AssertionError(f"{method} {url} kept answering 503")


def test_the_same_run_in_push_mode_loses_exactly_what_vods_push_rules_predict(
    faulty_dynamodb: FaultProxy,
    chalice_local: str,
    stage_env: dict[str, str],
    token_for: TokenFactory,
    tmp_path: Path,
    dynamodb: Any,
    dynamodb_endpoint: str,
) -> None:
    table = stage_env["TABLE_NAME"]
    with delivering(dynamodb, dynamodb_endpoint, table, tmp_path / "events-checkpoint.json") as delivery:
        pushed_under_faults(faulty_dynamodb, chalice_local, stage_env, token_for, tmp_path, delivery)


def pushed_under_faults(
    faulty_dynamodb: FaultProxy,
    chalice_local: str,
    stage_env: dict[str, str],
    token_for: TokenFactory,
    tmp_path: Path,
    delivery: Delivery,
) -> None:
    vod = start(
        Config(
            port=0,
            data_dir=tmp_path / "vodlocal-push",
            secrets={stage_env["VOD_SECRET_ID"]: stage_env["VOD_SECRET_KEY"]},
            callback_url=f"{chalice_local}/vod/events/{stage_env['VOD_CALLBACK_TOKEN']}",
            sign_key=stage_env["VOD_SIGN_KEY"],
        )
    )
    tokens = {f"user{n}": token_for(f"user{n}") for n in range(USERS)}
    made: dict[str, str] = {}
    try:
        for n in range(UPLOADS):
            owner = f"user{n % USERS}"
            made[upload_through(vod, over_http(chalice_local, tokens[owner]), b"p%d" % n)] = owner
            if n == UPLOADS // 3:  # the delivery outage lasts the middle third of the uploads
                delivery.outage_starts()
            elif n == 2 * UPLOADS // 3:
                delivery.outage_ends()
        wait_until_pushed(vod, timeout=DEADLINE_SECONDS)  # every event delivered or given up, retries included
        predicted = push_prediction(vod, faulty_dynamodb)
        faulty_dynamodb.plan = lambda _number, _operation: None  # read the outcome without faults
        counted = tally(
            vod, lambda user: call_until_answered("GET", f"{chalice_local}/videos?limit=100", tokens[user])["videos"],
            tokens,
        )  # fmt: skip
        replies = Counter(
            str(d["status"]) if "status" in d else "timeout" if d["timeout"] else "refused"
            for d in vod.app.bus.deliveries
        )
    finally:
        vod.stop()
    events = delivered_events(delivery, counted.listed)
    figures = {
        "uploads": UPLOADS, **counted.figures(), "predicted": len(predicted.lost),
        "notAccepted": len(predicted.not_accepted), "appliedUnanswered": len(predicted.applied_unanswered),
        "replies": dict(replies), "faults": dict(faulty_dynamodb.faults), **events.figures(),
        **delivery.figures(), "eventTypes": dict(types(events.delivered)),
    }  # fmt: skip
    print(f"PUSH under faults: {json.dumps(figures)}")
    print(events_line("PUSH", events))
    # A lost upload committed nothing: no event names its fileId (without_fact); an applied one, its one event.
    assert types(events.delivered).keys() == {"upload.attributed"}, figures
    events.check(figures)
    assert figures["duplicates"] >= figures["committedWhileSinkDown"] > 0, figures
    assert sorted(counted.committed.values()) == sorted(made), figures
    assert counted.lost == predicted.lost, {**figures, "lostNotPredicted": sorted(counted.lost - predicted.lost),
                                            "predictedNotLost": sorted(predicted.lost - counted.lost)}  # fmt: skip
    assert len(counted.lost) >= UPLOADS // READ_OUTAGE_EVERY, figures  # each read outage loses one at least
    assert counted.listed_twice == [] and counted.misattributed(made) == [], figures  # never twice, even in PUSH


def over_http(api_url: str, token: str) -> Post:
    return lambda path, body: call_until_answered("POST", f"{api_url}{path}", token, body)
