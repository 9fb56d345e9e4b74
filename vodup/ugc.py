"""VOD's client-upload (UGC) API as the Web SDK speaks it (vod-protocol.md §4): PrepareUploadUGC,
ApplyUploadUGC and CommitUploadUGC, each attempt with a signature of its own."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import requests
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from vodup.api import FileId, unexpected
from vodup.errors import DuplicateSignature, SignatureExpired, VodError, one_line, vod_error
from vodup.transport import ExchangeFailed, exchange

GetSignature = Callable[[], str]
# The Web SDK flips to the backup host after a network error or a non-2xx answer (vod-js-sdk.md §1.9).
VOD_HOSTS = ("vod2.qcloud.com", "vod2.dnsv1.com")
# A fresh signature cures these, so they are worth another attempt; any other code is final.
RETRY_WITH_NEW_SIGNATURE = (SignatureExpired, DuplicateSignature)
# Each attempt, all of it (connect, headers, body); an answer is a few hundred bytes.
VOD_ATTEMPT_DEADLINE = 10.0
MAX_VOD_ANSWER_BYTES = 1 << 20

# What VOD answers (vod-protocol.md §4), checked before use: the bucket and region make COS's hostname and a
# probed domain is a hostname, so they may hold nothing that would send the bytes or a request elsewhere.
CosName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
Hostname = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,253}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class _VodAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Envelope(_VodAnswer):
    code: int
    message: str = ""
    data: dict[str, Any] | None = None


class Region(_VodAnswer):
    region: CosName
    domain: Hostname


class Prepared(_VodAnswer):
    cosRegionList: list[Region] = []  # noqa: N815 - pydantic copies defaults


class Certificate(_VodAnswer):
    secretId: Text  # noqa: N815
    secretKey: Text  # noqa: N815
    token: Text
    expiredTime: int  # noqa: N815


class StoredAt(_VodAnswer):
    storagePath: Text  # noqa: N815


class Applied(_VodAnswer):
    vodSessionKey: Text  # noqa: N815
    storageBucket: CosName  # noqa: N815
    storageAppId: int  # noqa: N815
    storageRegionV5: CosName  # noqa: N815
    timestamp: int
    tempCertificate: Certificate  # noqa: N815
    video: StoredAt | None = None
    cover: StoredAt | None = None


class MediaUrl(_VodAnswer):
    url: Text


class Committed(_VodAnswer):
    fileId: FileId  # noqa: N815
    video: MediaUrl
    cover: MediaUrl | None = None


AnswerT = TypeVar("AnswerT", bound=BaseModel)


@dataclass(frozen=True)
class Network:
    """Where VOD and COS are. ``emulator`` sends both over plain HTTP through a local emulator (vodlocal) used as
    an HTTP proxy, so requests keep their real hostnames."""

    emulator: str | None = None
    timeout: float = 30.0

    @property
    def scheme(self) -> str:
        return "http" if self.emulator else "https"

    @property
    def proxies(self) -> dict[str, str] | None:
        return {"http": self.emulator} if self.emulator else None


def backoff(attempt: int, base: float) -> float:
    """Exponential with full jitter, so parallel retries do not hit the server in step."""
    return float(random.uniform(0, base * (2**attempt)))


class UgcClient:
    def __init__(
        self,
        get_signature: GetSignature,
        network: Network,
        session: requests.Session,
        attempts: int = 4,
        retry_delay: float = 1.0,
    ) -> None:
        self.get_signature = get_signature
        self.network = network
        self.session = session
        self.attempts = attempts
        self.retry_delay = retry_delay
        self._host = 0

    def call(self, action: str, body: dict[str, Any], answer: type[AnswerT]) -> AnswerT:
        """The ``data`` of a successful answer, validated as ``answer``. Retries network errors, HTTP errors,
        unreadable answers and the codes a new signature cures, with back-off, as the Web SDK does (4 attempts);
        raises the last failure as a ``VodError``."""
        failure: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(backoff(attempt - 1, self.retry_delay))
            # One-time signatures are spent by the request that carries them, answered or not.
            signed = json.dumps({**body, "signature": self.get_signature()}).encode()
            url = f"{self.network.scheme}://{VOD_HOSTS[self._host]}/v3/index.php?Action={action}"
            try:
                reply = exchange(
                    "POST",
                    url,
                    ends=time.monotonic() + VOD_ATTEMPT_DEADLINE,
                    max_bytes=MAX_VOD_ANSWER_BYTES,
                    headers={"Content-Type": "application/json"},
                    body=signed,
                    proxy=self.network.emulator,
                )
                if not 200 <= reply.status < 300:
                    raise ExchangeFailed("status", f"HTTP {reply.status}")
                envelope = Envelope.model_validate(reply.json())
            except (ExchangeFailed, ValueError) as exc:  # ValidationError is a ValueError
                self._host = 1 - self._host
                failure = exc if isinstance(exc, ExchangeFailed) else ValueError("an answer that is not VOD's JSON")
                continue
            if envelope.code == 0:
                try:
                    return answer.model_validate(envelope.data or {})
                except ValidationError as exc:
                    raise VodError(action, -1, unexpected(exc, "data")) from None
            failure = vod_error(action, envelope.code, one_line(envelope.message, 200))
            if not isinstance(failure, RETRY_WITH_NEW_SIGNATURE):
                raise failure
        assert failure is not None
        if isinstance(failure, VodError):
            raise failure
        raise VodError(action, -1, f"no answer after {self.attempts} attempts: {failure}") from failure

    def prepare_region(self) -> str | None:
        """PrepareUploadUGC's region race, as the Web SDK runs it: with two or more regions, the first whose
        HEAD probe settles wins; otherwise (or when prepare fails) VOD picks."""
        try:
            regions = self.call("PrepareUploadUGC", {}, Prepared).cosRegionList
        except VodError:
            return None
        if len(regions) < 2:
            return None
        pool = ThreadPoolExecutor(len(regions))
        probes = {pool.submit(self._probe, r.domain): r.region for r in regions}
        done, _ = wait(probes, return_when=FIRST_COMPLETED)
        pool.shutdown(wait=False)  # the slower probes settle on their own; the upload need not wait for them
        return probes[next(iter(done))]

    def _probe(self, domain: str) -> None:
        try:
            self.session.head(f"{self.network.scheme}://{domain}/", proxies=self.network.proxies, timeout=5)
        except requests.RequestException:
            pass  # settled: the Web SDK takes the first probe to settle, whatever its outcome
