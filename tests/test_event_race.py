"""Concurrent deliveries for one intent, through the real services, against the local DynamoDB
endpoint over HTTP (it serialises requests, so conditions and transactions are atomic as in DynamoDB)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from chalicelib import vod_signature
from chalicelib.identity import Principal
from chalicelib.uploads import ClientFields
from tests import vod_payloads as vod

CONTENDERS = 32


@pytest.mark.parametrize("repetition", range(20))
def test_exactly_one_of_32_concurrent_files_is_attributed(services: Any, repetition: int) -> None:
    alice = Principal("alice", {})
    issued = services.uploads.create(alice, ClientFields(title=f"race {repetition}"), None)
    secrets = services.secrets.get()
    context = vod_signature.verify(issued.signature, secrets.vod_secret_key).params.options.sourceContext
    bodies = [
        json.dumps(vod.signed(vod.new_file_upload(f"race-{repetition}-{i}", context), secrets.sign_key)).encode()
        for i in range(CONTENDERS)
    ]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(CONTENDERS)

    def deliver(body: bytes) -> None:
        barrier.wait()
        outcome = services.events.receive(secrets.callback_token, body).outcome
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == Counter(attributed=1, rejected=CONTENDERS - 1)
    videos, _ = services.storage.videos.list_videos("alice", 100, None)
    assert len(videos) == 1
    intent = services.storage.intents.get_intent(issued.intent.upload_id)
    assert intent.status == "completed" and intent.file_id == videos[0].file_id
    assert len(services.storage.reviews.pending()) == CONTENDERS - 1
