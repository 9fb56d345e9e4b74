"""vodlocal reads the protocol on its own (vodlocal/signatures.py): it imports nothing of the product, and its
verifier and callback signer agree with the reference's test vectors (vod-protocol.md §1.7, §2.4) and with the
product's signer and checker (chalicelib), so a misreading on either side shows up as a disagreement."""

from __future__ import annotations

import ast
import base64
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus, urlencode

import msgspec
import pytest

from chalicelib import callback_auth, vod_signature
from chalicelib.errors import Unauthorized
from tests.test_vod_signature import SECRET_ID, SECRET_KEY, VECTOR_A, VECTOR_B, VECTOR_C_RFC
from vodlocal.signatures import BadSignature, UploadSignature, callback_sign, upload_mac, verify_upload_signature

ROOT = Path(__file__).resolve().parents[2]
# vod-protocol.md §1.7: A (required only), B (every option), C in the three encodings of `张三 a+b&c=d~!*()'`.
VECTOR_C = {
    "py": (
        "w9F6Y1j1s+FZ5Nyfm79zpaKd+dlzZWNyZXRJZD1BS0lERVhBTVBMRUVYQU1QTEVFWEFNUExFRVhBTVBMRTAwMDEmY3VycmVudFRpbWVTdGFt"
        "cD0xNzAwMDAwMDAwJmV4cGlyZVRpbWU9MTcwMDAwMDYwMCZyYW5kb209NDI5NDk2NzI5NSZzb3VyY2VDb250ZXh0PSVFNSVCQyVBMCVFNCVC"
        "OCU4OSthJTJCYiUyNmMlM0RkfiUyMSUyQSUyOCUyOSUyNw==",
        "c3d17a6358f5b3e159e4dc9f9bbf73a5a29df9d9",
    ),
    "rfc": (VECTOR_C_RFC, "1dcb3a0d4f8d991e5ca33a40f59f44f0fd7d9597"),
    "node": (
        "oe50t48jrqQr6vR6AVNtydzCvvVzZWNyZXRJZD1BS0lERVhBTVBMRUVYQU1QTEVFWEFNUExFRVhBTVBMRTAwMDEmY3VycmVudFRpbWVTdGFt"
        "cD0xNzAwMDAwMDAwJmV4cGlyZVRpbWU9MTcwMDAwMDYwMCZyYW5kb209NDI5NDk2NzI5NSZzb3VyY2VDb250ZXh0PSVFNSVCQyVBMCVFNCVC"
        "OCU4OSUyMGElMkJiJTI2YyUzRGR+ISooKSc=",
        "a1ee74b78f23aea42beaf47a01536dc9dcc2bef5",
    ),
}
SIGN_KEY_VECTOR = ("ExampleSignKey0123456789", 1700000600, "4e71ccd98eeb2ec84c656083d4b98f93")


def example_key(secret_id: str) -> str | None:
    return SECRET_KEY if secret_id == SECRET_ID else None


def vodlocal_modules() -> list[Path]:
    return sorted((ROOT / "vodlocal").glob("*.py"))


def test_no_vodlocal_module_imports_the_product() -> None:
    importers = []
    for path in vodlocal_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name == "chalicelib" or name.startswith("chalicelib.") for name in names):
                importers.append(path.name)
    assert len(vodlocal_modules()) > 10 and importers == []
    # Loaded, every module of vodlocal (and what it imports in turn) leaves the product unloaded.
    modules = ", ".join(f"vodlocal.{p.stem}" for p in vodlocal_modules() if p.stem not in ("__init__", "__main__"))
    probe = (
        f"import sys, {modules}; "
        "print('chalicelib' in sys.modules, len([m for m in sys.modules if m.startswith('vodlocal.')]))"
    )
    loaded = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded[0] == "False" and int(loaded[1]) == len(vodlocal_modules()) - 2


def test_vectors_a_and_b_verify_with_every_parameter_read_back() -> None:
    a = verify_upload_signature(VECTOR_A, example_key)
    assert (a.secret_id, a.current_time, a.expire_time, a.random) == (SECRET_ID, 1700000000, 1700086400, 3735928559)
    assert a.mac.hex() == "3fe29a6b0f496553d9856f67035ee7eb1e6cef42" and set(a.options.values()) == {None}
    b = verify_upload_signature(VECTOR_B, example_key)
    assert b.mac.hex() == "649a410d4e23fad0a5c7e288eb6e7e1343950064"
    assert dict(b.options) == {
        "procedure": "LongVideoPreset",
        "taskPriority": 0,
        "taskNotifyMode": "Finish",
        "classId": 0,
        "sourceContext": '{"uid":"u-42","up":"9f1c"}',
        "sessionContext": "req-7f3c",
        "oneTimeValid": 1,
        "vodSubAppId": 1500000001,
        "storageRegion": "ap-guangzhou",
    }
    assert b.one_time and b.sub_app_id == 1500000001 and b.storage_region == "ap-guangzhou"


@pytest.mark.parametrize("encoding", sorted(VECTOR_C))
def test_vector_c_in_every_encoding_verifies_to_the_same_value(encoding: str) -> None:
    signature, mac_hex = VECTOR_C[encoding]
    parsed = verify_upload_signature(signature, example_key)
    assert parsed.mac.hex() == mac_hex and parsed.source_context == "张三 a+b&c=d~!*()'"


def test_vodlocal_accepts_the_products_signatures() -> None:
    options = vod_signature.SignatureOptions(
        procedure="LongVideoPreset",
        taskPriority=-10,
        taskNotifyMode="Change",
        classId=7,
        sourceContext="up-" + "x" * 247,
        sessionContext="张三 a+b&c=d~!*()'",
        oneTimeValid=1,
        vodSubAppId=1500000001,
        storageRegion="ap-chongqing",
    )
    params = vod_signature.new_params(SECRET_ID, vod_signature.MAX_VALIDITY_SECONDS, options)
    parsed = verify_upload_signature(vod_signature.sign(params, SECRET_KEY), example_key)
    assert (parsed.secret_id, parsed.current_time, parsed.expire_time, parsed.random) == (
        params.secretId,
        params.currentTimeStamp,
        params.expireTime,
        params.random,
    )
    assert {k: v for k, v in parsed.options.items() if v is not None} == {
        k: v for k, v in msgspec.structs.asdict(options).items() if v is not None
    }
    # And the product reads the reference's vectors as vodlocal does.
    for signature in (VECTOR_A, VECTOR_B, *(s for s, _ in VECTOR_C.values())):
        ours, theirs = verify_upload_signature(signature, example_key), vod_signature.verify(signature, SECRET_KEY)
        assert ours.mac == theirs.mac and ours.source_context == theirs.params.options.sourceContext


def test_the_callback_sign_matches_the_vector_and_the_products_check() -> None:
    key, expires, sign = SIGN_KEY_VECTOR
    assert callback_sign(key, expires) == sign == callback_auth.sign(key, expires)
    now = int(time.time())
    callback_auth.check_sign(callback_sign(key, now + 600), now + 600, key, now, 600)
    with pytest.raises(Unauthorized):
        callback_auth.check_sign(callback_sign("AnotherKey", now + 600), now + 600, key, now, 600)


def signed(original: str, key: str = SECRET_KEY) -> str:
    return base64.b64encode(upload_mac(key, original.encode()) + original.encode()).decode()


REQUIRED = f"secretId={SECRET_ID}&currentTimeStamp=1700000000&expireTime=1700000600&random=1"


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (signed(REQUIRED, key="another-key"), "MAC"),
        (signed(REQUIRED.replace(SECRET_ID, "AKIDunknown")), "unknown secretId"),
        (signed(REQUIRED.replace("1700000000", "1700000000.5")), "currentTimeStamp"),
        (signed(REQUIRED.replace("expireTime=1700000600", "expireTime=1707776001")), "expireTime"),
        (signed(REQUIRED.replace("expireTime=1700000600", "expireTime=1700000000")), "expireTime"),
        (signed(REQUIRED.replace("random=1", "random=4294967296")), "random"),
        (signed(REQUIRED.replace("&random=1", "")), "random is missing"),
        (signed(REQUIRED + "&random=2"), "twice"),
        (signed(REQUIRED + "&sourcecontext=up-1"), "unknown parameter"),
        (signed(REQUIRED + "&taskNotifyMode=Sometimes"), "taskNotifyMode"),
        (signed(REQUIRED + "&taskPriority=11"), "taskPriority"),
        (signed(REQUIRED + "&oneTimeValid=2"), "oneTimeValid"),
        (signed(REQUIRED + "&" + urlencode({"sourceContext": "x" * 251})), "sourceContext"),
        (signed(REQUIRED + "&" + urlencode({"sessionContext": "y" * 1001}, quote_via=quote)), "sessionContext"),
        ("not base64!", "Base64"),
        (base64.b64encode(b"short").decode(), "too short"),
    ],
)
def test_refusals_say_why(signature: str, reason: str) -> None:
    with pytest.raises(BadSignature, match=reason):
        verify_upload_signature(signature, example_key)


def test_limits_are_inclusive_and_an_empty_option_is_left_out() -> None:
    original = (
        REQUIRED.replace("expireTime=1700000600", "expireTime=1707776000")
        + "&"
        + urlencode(
            {"sourceContext": "x" * 250, "sessionContext": "é" * 1000, "taskPriority": -10}, quote_via=quote_plus
        )
        + "&vodSubAppId="
    )
    parsed = verify_upload_signature(signed(original), example_key)
    assert isinstance(parsed, UploadSignature) and parsed.sub_app_id is None
    assert parsed.options["sessionContext"] == "é" * 1000 and parsed.options["taskPriority"] == -10
