"""Per-user limits in the repository, against the local DynamoDB endpoint over HTTP."""

from __future__ import annotations

import threading

import pytest
from msgspec.structs import replace

from chalicelib.errors import LimitReached, SignatureRefused
from chalicelib.storage import Storage
from chalicelib.uploads import ClientFields, IntentLimits, SignatureTerms, UploadIntent

NOW = 1_800_000_000
TERMS = SignatureTerms(None, 0, None, None, True, 0, "Finish", 900)


def intent(upload_id: str, owner: str = "alice", window_ends_at: int = NOW + 3600) -> UploadIntent:
    return UploadIntent(
        upload_id=(upload_id + "_" * 22)[:22],
        owner=owner,
        tier="default",
        status="open",
        created_at=NOW,
        window_ends_at=window_ends_at,
        expires_at=window_ends_at + 900 + 86400,
        terms=TERMS,
        client=ClientFields(title="t", metadata={"k": [1, 2]}),
        signatures_minted=1,
        max_signatures=3,
    )


def test_intent_round_trips(storage: Storage) -> None:
    original = intent("roundtrip")
    storage.intents.create_intent(original, IntentLimits(5, 30), NOW)
    assert storage.intents.get_intent(original.upload_id) == original


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_creates_never_exceed_the_open_limit(storage: Storage, round_: int) -> None:
    limit, contenders = 5, 16
    storage.intents.create_intent(intent(f"seed{round_}"), IntentLimits(limit, 1000), NOW)
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(contenders)

    def contend(index: int) -> None:
        barrier.wait()
        try:
            storage.intents.create_intent(intent(f"race{round_}x{index}"), IntentLimits(limit, 1000), NOW)
            result = "created"
        except LimitReached as exc:
            result = exc.limit
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("created") == limit - 1
    assert outcomes.count("open_intents") == contenders - (limit - 1)
    assert len(storage.intents.open_slots("alice")) == limit


def test_expired_slots_are_pruned_in_the_limit_path(storage: Storage) -> None:
    limits = IntentLimits(2, 1000)
    storage.intents.create_intent(intent("old1", window_ends_at=NOW + 10), limits, NOW)
    storage.intents.create_intent(intent("old2", window_ends_at=NOW + 20), limits, NOW)
    with pytest.raises(LimitReached) as info:
        storage.intents.create_intent(intent("new1"), limits, NOW)
    assert (info.value.limit, info.value.until) == ("open_intents", NOW + 10)
    later = NOW + 15  # the first slot's window has ended
    storage.intents.create_intent(replace(intent("new2"), created_at=later), limits, later)
    slots = storage.intents.open_slots("alice")
    assert len(slots) == 2 and not any("old1" in slot for slot in slots)


def test_renew_signature_reports_the_intent_it_could_not_count_for(storage: Storage) -> None:
    """The repository reports facts (the intent as stored, or none of this owner's); the service decides
    what they mean (tests/test_api_uploads.py)."""
    created = intent("minting", window_ends_at=NOW + 100)
    storage.intents.create_intent(created, IntentLimits(5, 30), NOW)
    for upload_id, owner in [(created.upload_id, "mallory"), ("nosuchuploadnosuchuplo", "alice")]:
        with pytest.raises(SignatureRefused) as refused:
            storage.intents.renew_signature(upload_id, owner, NOW)
        assert refused.value.current is None
    assert storage.intents.renew_signature(created.upload_id, "alice", NOW).signatures_minted == 2
    assert storage.intents.renew_signature(created.upload_id, "alice", NOW).signatures_minted == 3
    with pytest.raises(SignatureRefused) as refused:
        storage.intents.renew_signature(created.upload_id, "alice", NOW)
    assert refused.value.current.signatures_minted == refused.value.current.max_signatures == 3
    other = intent("windowed", window_ends_at=NOW + 100)
    storage.intents.create_intent(other, IntentLimits(5, 30), NOW)
    with pytest.raises(SignatureRefused) as refused:
        storage.intents.renew_signature(other.upload_id, "alice", NOW + 100)
    assert refused.value.current.window_ends_at == NOW + 100 and refused.value.current.signatures_minted == 1
