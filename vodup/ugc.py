"""VOD's client-upload (UGC) API as the Web SDK speaks it (vod-protocol.md §4): PrepareUploadUGC,
ApplyUploadUGC and CommitUploadUGC, each attempt with a signature of its own."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import requests

from vodup.errors import DuplicateSignature, SignatureExpired, VodError, vod_error

GetSignature = Callable[[], str]
# The Web SDK flips to the backup host after a network error or a non-2xx answer (vod-js-sdk.md §1.9).
VOD_HOSTS = ("vod2.qcloud.com", "vod2.dnsv1.com")
# A fresh signature cures these, so they are worth another attempt; any other code is final.
RETRY_WITH_NEW_SIGNATURE = (SignatureExpired, DuplicateSignature)


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

    def call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """The ``data`` of a successful answer. Retries network errors, HTTP errors and the codes a new signature
        cures, with back-off, as the Web SDK does (4 attempts); raises the last failure as a ``VodError``."""
        failure: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(backoff(attempt - 1, self.retry_delay))
            # One-time signatures are spent by the request that carries them, answered or not.
            signed = {**body, "signature": self.get_signature()}
            url = f"{self.network.scheme}://{VOD_HOSTS[self._host]}/v3/index.php"
            try:
                response = self.session.post(
                    url, params={"Action": action}, json=signed, proxies=self.network.proxies, timeout=10
                )
                response.raise_for_status()
                payload = response.json()
            except (requests.RequestException, ValueError) as exc:
                self._host = 1 - self._host
                failure = exc
                continue
            code = int(payload.get("code", -1))
            if code == 0:
                data: dict[str, Any] = payload.get("data") or {}
                return data
            failure = vod_error(action, code, str(payload.get("message", "")))
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
            regions = self.call("PrepareUploadUGC", {}).get("cosRegionList") or []
        except VodError:
            return None
        if len(regions) < 2:
            return None
        pool = ThreadPoolExecutor(len(regions))
        probes = {pool.submit(self._probe, str(r["domain"])): str(r["region"]) for r in regions}
        done, _ = wait(probes, return_when=FIRST_COMPLETED)
        pool.shutdown(wait=False)  # the slower probes settle on their own; the upload need not wait for them
        return probes[next(iter(done))]

    def _probe(self, domain: str) -> None:
        try:
            self.session.head(f"{self.network.scheme}://{domain}/", proxies=self.network.proxies, timeout=5)
        except requests.RequestException:
            pass  # settled: the Web SDK takes the first probe to settle, whatever its outcome
