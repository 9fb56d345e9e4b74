"""POST /uploads, /uploads/{id}/signature and /signature through the Chalice test client,
against the local DynamoDB endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib import source_context, vod_signature
from tests.conftest import ApiFactory, TokenFactory, bearer, with_policy


def post(api: Any, path: str, token: str | None, body: Any = None, **headers: str) -> Any:
    all_headers = bearer(token) if token else {"Content-Type": "application/json"}
    all_headers.update(headers)
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return api.post(path, headers=all_headers, body=raw)


def test_health_needs_no_token(api: Any) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json_body == {"status": "ok"}


def test_signature_from_post_uploads_verifies_and_respects_limits(
    api: Any, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    response = post(api, "/uploads", token_for("alice"), {"title": "Holiday", "fileName": "clip.mp4"})
    assert response.status_code == 201, response.body
    body = response.json_body
    parsed = vod_signature.verify(body["signature"], stage_env["VOD_SECRET_KEY"])
    params = parsed.params
    assert params.secretId == stage_env["VOD_SECRET_ID"]
    assert isinstance(params.currentTimeStamp, int) and isinstance(params.expireTime, int)
    assert params.validity_seconds == 900
    assert params.expireTime == body["expireTime"]
    assert 0 <= params.random <= vod_signature.MAX_RANDOM
    assert params.options.oneTimeValid == 1
    assert params.options.classId == 0
    assert params.options.procedure is None and params.options.sessionContext is None
    context = params.options.sourceContext
    assert context is not None and len(context) <= 250 and context.isascii()
    assert source_context.decode(context, stage_env["CONTEXT_TAG_KEY"].encode()) == body["uploadId"]
    assert body["upload"]["status"] == "open"
    assert body["upload"]["title"] == "Holiday"
    assert response.headers["Location"] == f"/uploads/{body['uploadId']}"


def test_allowed_procedure_is_signed_with_session_context(
    api: Any, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    response = post(api, "/uploads", token_for("alice"), {"procedure": "LongVideoPreset"})
    assert response.status_code == 201, response.body
    options = vod_signature.verify(response.json_body["signature"], stage_env["VOD_SECRET_KEY"]).params.options
    assert options.procedure == "LongVideoPreset"
    assert options.taskNotifyMode == "Finish" and options.taskPriority == 0
    assert options.sessionContext == options.sourceContext


def test_a_declared_client_kind_selects_its_tiers_signature_lifetime(
    api_factory: ApiFactory, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    with_policy(stage_env, signatureTtlSeconds=600, signatureTtlByClient={"android": 7200})
    api, alice = api_factory(), token_for("alice")
    lifetimes = {}
    for client in ("android", "ios", "web", None):
        created = post(api, "/uploads", alice, {} if client is None else {"client": client}).json_body
        renewed = post(api, f"/uploads/{created['uploadId']}/signature", alice).json_body
        signatures = (created["signature"], renewed["signature"])
        lifetimes[client] = {
            vod_signature.verify(sig, stage_env["VOD_SECRET_KEY"]).params.validity_seconds for sig in signatures
        }
        assert created["upload"]["client"] == client
    # A tier that names the map replaces it whole: iOS falls back to signatureTtlSeconds here.
    assert lifetimes == {"android": {7200}, "ios": {600}, "web": {600}, None: {600}}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"procedure": "SomethingElse"}, 400, "procedure"),
        ({"classId": 7}, 400, "classId"),
        ({"storageRegion": "ap-tokyo"}, 400, "storageRegion"),
        ({"title": 5}, 400, "title"),
        ({"title": ""}, 400, "title"),
        ({"fileSize": -1}, 400, "fileSize"),
        ({"fileSize": 10**13}, 400, "fileSize"),
        ({"fileName": "../etc/passwd"}, 400, "fileName"),
        ({"contentType": "not a type"}, 400, "contentType"),
        ({"withCover": "yes"}, 400, "withCover"),
        ({"client": "symbian"}, 400, "client"),
        ({"metadata": {"blob": "x" * 5000}}, 400, "metadata"),
        ({"metadata": [1, 2]}, 400, "metadata"),
        (b"{not json", 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b"[" * 3000, 400, "body"),
        (b'{"metadata": {"x": NaN}}', 400, "body"),
        (b'{"fileSize": ' + b"9" * 5000 + b"}", 400, "body"),
        (b'{"title": "' + b"x" * 20000 + b'"}', 413, None),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    api: Any, token_for: TokenFactory, body: Any, status: int, field: str | None
) -> None:
    response = post(api, "/uploads", token_for("alice"), body)
    assert response.status_code == status, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    if field is not None:
        assert response.json_body["field"] == field
        assert field in response.json_body["message"]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic abc", "Bearer", "Bearer not.a.jwt", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
)
def test_missing_or_invalid_token_is_401(api: Any, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = api.post("/uploads", headers=headers, body=b"")
    assert response.status_code == 401
    assert response.json_body["error"] == "unauthorized"


def test_expired_and_foreign_tokens_are_401(api: Any, token_for: TokenFactory, tmp_path: Any) -> None:
    from chalicelib.auth import load_or_create_local_key, mint_local_token
    from chalicelib.identity import LOCAL_ISSUER

    expired = token_for("alice", ttl=-120)  # beyond the 30 s leeway
    foreign = mint_local_token(load_or_create_local_key(str(tmp_path / "other.pem")), LOCAL_ISSUER, "alice")
    wrong_issuer = mint_local_token(load_or_create_local_key(str(tmp_path / "jwt-key.pem")), "https://evil", "alice")
    for token, reason in ((expired, "expired"), (foreign, "invalid"), (wrong_issuer, "invalid")):
        response = post(api, "/uploads", token)
        assert response.status_code == 401
        assert reason in response.json_body["message"]


def test_fresh_signature_for_owner_only(api: Any, token_for: TokenFactory, stage_env: dict[str, str]) -> None:
    alice = token_for("alice")
    created = post(api, "/uploads", alice).json_body
    renewed = post(api, f"/uploads/{created['uploadId']}/signature", alice)
    assert renewed.status_code == 200, renewed.body
    assert renewed.json_body["signature"] != created["signature"]
    assert renewed.json_body["signaturesRemaining"] == created["signaturesRemaining"] - 1
    first = vod_signature.verify(created["signature"], stage_env["VOD_SECRET_KEY"]).params
    second = vod_signature.verify(renewed.json_body["signature"], stage_env["VOD_SECRET_KEY"]).params
    assert second.options.sourceContext == first.options.sourceContext
    assert second.random != first.random or second.currentTimeStamp != first.currentTimeStamp

    for path in (
        f"/uploads/{created['uploadId']}/signature",
        "/uploads/AAAAAAAAAAAAAAAAAAAAAA/signature",
        "/uploads/not-an-id/signature",
    ):
        response = post(api, path, token_for("mallory"))
        assert response.status_code == 404
        assert response.json_body["error"] == "not_found"


def test_signatures_per_intent_are_capped(
    api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    with_policy(stage_env, maxSignaturesPerIntent=3)
    api = api_factory()
    alice = token_for("alice")
    upload_id = post(api, "/uploads", alice).json_body["uploadId"]
    assert [post(api, f"/uploads/{upload_id}/signature", alice).status_code for _ in range(3)] == [200, 200, 429]
    response = post(api, f"/uploads/{upload_id}/signature", alice)
    assert response.json_body["limit"] == "signatures_per_intent"
    assert int(response.headers["Retry-After"]) >= 1


def test_open_intent_limit_is_429_with_retry_after(
    api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory
) -> None:
    with_policy(stage_env, maxOpenIntents=2)
    api = api_factory()
    alice = token_for("alice")
    assert [post(api, "/uploads", alice).status_code for _ in range(3)] == [201, 201, 429]
    response = post(api, "/uploads", alice)
    assert response.json_body["limit"] == "open_intents"
    assert 1 <= int(response.headers["Retry-After"]) <= 6 * 3600
    assert post(api, "/uploads", token_for("bob")).status_code == 201  # limits are per user


def test_hourly_limit_is_429(api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory) -> None:
    with_policy(stage_env, maxIntentsPerHour=2, maxOpenIntents=10)
    api = api_factory()
    alice = token_for("alice")
    assert [post(api, "/uploads", alice).status_code for _ in range(3)] == [201, 201, 429]
    response = post(api, "/uploads", alice)
    assert response.json_body["limit"] == "intents_per_hour"
    assert 1 <= int(response.headers["Retry-After"]) <= 3600


def test_group_selects_a_tier(api_factory: ApiFactory, stage_env: dict[str, str], token_for: TokenFactory) -> None:
    with_policy(stage_env, maxOpenIntents=1)
    api = api_factory()
    premium = token_for("pat", groups=["premium"])
    assert [post(api, "/uploads", premium).status_code for _ in range(3)] == [201, 201, 201]
    assert post(api, "/uploads", premium).json_body["upload"]["procedure"] is None


def test_compat_route_returns_bare_signature_for_text_plain(
    api: Any, token_for: TokenFactory, stage_env: dict[str, str]
) -> None:
    response = post(api, "/signature", token_for("alice"), Accept="text/plain")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    vod_signature.verify(response.body.decode(), stage_env["VOD_SECRET_KEY"])
    as_json = post(api, "/signature", token_for("alice"))
    assert as_json.status_code == 200
    vod_signature.verify(as_json.json_body["signature"], stage_env["VOD_SECRET_KEY"])


def test_get_upload_is_owner_only(api: Any, token_for: TokenFactory) -> None:
    created = post(api, "/uploads", token_for("alice"), {"metadata": {"album": "x"}}).json_body
    mine = api.get(f"/uploads/{created['uploadId']}", headers=bearer(token_for("alice")))
    assert mine.status_code == 200
    assert mine.json_body["status"] == "open" and mine.json_body["metadata"] == {"album": "x"}
    theirs = api.get(f"/uploads/{created['uploadId']}", headers=bearer(token_for("mallory")))
    assert theirs.status_code == 404


def test_secrets_never_appear_in_responses_or_logs(
    api: Any, token_for: TokenFactory, stage_env: dict[str, str], capfd: Any, caplog: Any
) -> None:
    alice = token_for("alice")
    bodies = [
        post(api, "/uploads", alice).body,
        post(api, "/uploads", alice, {"procedure": "nope"}).body,
        post(api, "/uploads", "bad-token").body,
        post(api, "/signature", alice, Accept="text/plain").body,
        post(api, "/uploads/AAAAAAAAAAAAAAAAAAAAAA/signature", alice).body,
    ]
    captured = capfd.readouterr()
    text = b"".join(bodies).decode() + captured.out + captured.err + caplog.text
    assert "request" in captured.out  # the request log really was captured
    for name in ("VOD_SECRET_KEY", "CONTEXT_TAG_KEY", "VOD_CALLBACK_TOKEN", "VOD_SIGN_KEY"):
        assert stage_env[name] not in text, name
