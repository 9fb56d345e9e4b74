"""The signature module against the protocol's test vectors (vod-protocol.md §1.7)."""

import base64
from urllib.parse import parse_qsl

import pytest

from chalicelib import vod_signature as vs

SECRET_ID = "AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE0001"
SECRET_KEY = "ExampleSecretKeyExampleSecretKey"

VECTOR_A = (
    "P+Kaaw9JZVPZhW9nA17n6x5s70JzZWNyZXRJZD1BS0lERVhBTVBMRUVYQU1QTEVFWEFNUExFRVhBTVBMRTAwMDEmY3VycmVudFRpbWVTdGFt"
    "cD0xNzAwMDAwMDAwJmV4cGlyZVRpbWU9MTcwMDA4NjQwMCZyYW5kb209MzczNTkyODU1OQ=="
)
VECTOR_B = (
    "ZJpBDU4j+tClx+KI625+E0OVAGRzZWNyZXRJZD1BS0lERVhBTVBMRUVYQU1QTEVFWEFNUExFRVhBTVBMRTAwMDEmY3VycmVudFRpbWVTdGFt"
    "cD0xNzAwMDAwMDAwJmV4cGlyZVRpbWU9MTcwMDAwMzYwMCZyYW5kb209NDImcHJvY2VkdXJlPUxvbmdWaWRlb1ByZXNldCZ0YXNrUHJpb3Jp"
    "dHk9MCZ0YXNrTm90aWZ5TW9kZT1GaW5pc2gmY2xhc3NJZD0wJnNvdXJjZUNvbnRleHQ9JTdCJTIydWlkJTIyJTNBJTIydS00MiUyMiUyQyUy"
    "MnVwJTIyJTNBJTIyOWYxYyUyMiU3RCZzZXNzaW9uQ29udGV4dD1yZXEtN2YzYyZvbmVUaW1lVmFsaWQ9MSZ2b2RTdWJBcHBJZD0xNTAwMDAw"
    "MDAxJnN0b3JhZ2VSZWdpb249YXAtZ3Vhbmd6aG91"
)
VECTOR_C_RFC = (
    "Hcs6DU+NmR5cozpA9Z9E8P19lZdzZWNyZXRJZD1BS0lERVhBTVBMRUVYQU1QTEVFWEFNUExFRVhBTVBMRTAwMDEmY3VycmVudFRpbWVTdGFt"
    "cD0xNzAwMDAwMDAwJmV4cGlyZVRpbWU9MTcwMDAwMDYwMCZyYW5kb209NDI5NDk2NzI5NSZzb3VyY2VDb250ZXh0PSVFNSVCQyVBMCVFNCVC"
    "OCU4OSUyMGElMkJiJTI2YyUzRGR+JTIxJTJBJTI4JTI5JTI3"
)

PARAMS_B = vs.SignatureParams(
    secretId=SECRET_ID,
    currentTimeStamp=1700000000,
    expireTime=1700003600,
    random=42,
    options=vs.SignatureOptions(
        procedure="LongVideoPreset",
        taskPriority=0,
        taskNotifyMode="Finish",
        classId=0,
        sourceContext='{"uid":"u-42","up":"9f1c"}',
        sessionContext="req-7f3c",
        oneTimeValid=1,
        vodSubAppId=1500000001,
        storageRegion="ap-guangzhou",
    ),
)


def test_vector_a_byte_for_byte() -> None:
    params = vs.SignatureParams(SECRET_ID, 1700000000, 1700086400, 3735928559)
    assert vs.mac_of(SECRET_KEY, vs.encode_original(params)).hex() == "3fe29a6b0f496553d9856f67035ee7eb1e6cef42"
    assert vs.sign(params, SECRET_KEY) == VECTOR_A


def test_vector_b_byte_for_byte() -> None:
    assert vs.mac_of(SECRET_KEY, vs.encode_original(PARAMS_B)).hex() == "649a410d4e23fad0a5c7e288eb6e7e1343950064"
    assert vs.sign(PARAMS_B, SECRET_KEY) == VECTOR_B


def test_vector_c_uses_rfc3986_encoding() -> None:
    params = vs.SignatureParams(
        SECRET_ID, 1700000000, 1700000600, 4294967295, vs.SignatureOptions(sourceContext="张三 a+b&c=d~!*()'")
    )
    assert vs.sign(params, SECRET_KEY) == VECTOR_C_RFC


def test_verify_round_trips_every_parameter() -> None:
    parsed = vs.verify(VECTOR_B, SECRET_KEY)
    assert parsed.params == PARAMS_B


def test_verify_rejects_wrong_key_and_tampering() -> None:
    with pytest.raises(vs.SignatureError, match="MAC"):
        vs.verify(VECTOR_A, "another-key")
    raw = bytearray(base64.b64decode(VECTOR_A))
    raw[-1] = ord("8")  # random=3735928558
    with pytest.raises(vs.SignatureError, match="MAC"):
        vs.verify(base64.b64encode(bytes(raw)).decode(), SECRET_KEY)


def test_unset_options_are_omitted() -> None:
    params = vs.new_params(SECRET_ID, 60, vs.SignatureOptions(classId=3), now=1700000000)
    keys = [k for k, _ in parse_qsl(vs.encode_original(params).decode())]
    assert keys == ["secretId", "currentTimeStamp", "expireTime", "random", "classId"]
    assert 0 <= params.random < 2**32


@pytest.mark.parametrize(
    ("options", "validity", "field"),
    [
        (vs.SignatureOptions(), 0, "expireTime"),
        (vs.SignatureOptions(), vs.MAX_VALIDITY_SECONDS + 1, "expireTime"),
        (vs.SignatureOptions(taskPriority=11), 60, "taskPriority"),
        (vs.SignatureOptions(taskPriority=-11), 60, "taskPriority"),
        (vs.SignatureOptions(taskNotifyMode="Sometimes"), 60, "taskNotifyMode"),  # type: ignore[arg-type]
        (vs.SignatureOptions(sourceContext="x" * 251), 60, "sourceContext"),
        (vs.SignatureOptions(sessionContext="x" * 1001), 60, "sessionContext"),
        (vs.SignatureOptions(oneTimeValid=2), 60, "oneTimeValid"),
        (vs.SignatureOptions(classId=-1), 60, "classId"),
        (vs.SignatureOptions(vodSubAppId=True), 60, "vodSubAppId"),  # type: ignore[arg-type]
        (vs.SignatureOptions(procedure=""), 60, "procedure"),
    ],
)
def test_out_of_range_values_are_rejected_not_truncated(
    options: vs.SignatureOptions, validity: int, field: str
) -> None:
    with pytest.raises(vs.SignatureError) as info:
        vs.new_params(SECRET_ID, validity, options, now=1700000000)
    assert info.value.field == field


def test_limits_are_inclusive() -> None:
    opts = vs.SignatureOptions(sourceContext="x" * 250, sessionContext="y" * 1000, taskPriority=-10)
    params = vs.new_params(SECRET_ID, vs.MAX_VALIDITY_SECONDS, opts, now=1700000000)
    assert vs.verify(vs.sign(params, SECRET_KEY), SECRET_KEY).params == params


@pytest.mark.parametrize(
    ("original", "field"),
    [
        (b"secretId=a&currentTimeStamp=1700000000.5&expireTime=1700000600&random=1", "currentTimeStamp"),
        (b"secretId=a&currentTimeStamp=1700000000&expireTime=1700000600", "random"),
        (b"secretId=a&currentTimeStamp=1700000000&expireTime=1700000600&random=1&bogus=1", "bogus"),
        (b"secretId=a&currentTimeStamp=1700000000&expireTime=1700000600&random=1&random=2", "random"),
    ],
)
def test_parse_rejects_malformed_originals(original: bytes, field: str) -> None:
    signature = base64.b64encode(vs.mac_of(SECRET_KEY, original) + original).decode()
    with pytest.raises(vs.SignatureError) as info:
        vs.verify(signature, SECRET_KEY)
    assert info.value.field == field


def test_parse_rejects_garbage() -> None:
    for garbage in ("", "not base64!!", base64.b64encode(b"short").decode()):
        with pytest.raises(vs.SignatureError):
            vs.parse(garbage)
