"""Smoke test of a running API: `python -m deploy.smoke --url URL --stage STAGE [--token JWT]`.

`make smoke URL=… STAGE=…` runs it after a deploy, and `make test` runs it against the local stack. It
checks, over real HTTP:
  - `GET /health` answers 200;
  - a call without a token gets 401, in the API's error shape;
  - the VOD callback with a wrong path token gets 403;
  - with a user's token, `POST /uploads` returns a signature that decodes to the stage's upload policy
    (procedure, classId, one-time use, lifetime), and `GET /uploads/{id}` shows the open intent.

The token is `--token` (or SMOKE_TOKEN); for the local stage one is minted from the local key. Prints
one line per check and, with `--report FILE`, writes the results as JSON (CI keeps it as an artifact).
Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".chalice" / "config.json"
TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


class SmokeFailure(Exception):
    pass


def call(method: str, url: str, token: str | None = None, body: bytes | None = None) -> tuple[int, Any]:
    # The scheme is checked in `run`: only http(s) URLs reach here.
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - URL given by the operator
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"null")
        except ValueError:
            return error.code, raw[:200].decode("utf-8", "replace")


def expect(condition: bool, detail: str) -> None:
    if not condition:
        raise SmokeFailure(detail)


def stage_environment(stage: str) -> dict[str, str]:
    stages = json.loads(CONFIG.read_text())["stages"]
    if stage not in stages:
        raise SystemExit(f"smoke: no stage {stage!r} in {CONFIG.relative_to(ROOT)}")
    env: dict[str, str] = stages[stage]["environment_variables"]
    return env


def local_token(env: dict[str, str], user: str) -> str:
    from chalicelib.auth import load_or_create_local_key, mint_local_token
    from chalicelib.identity import LOCAL_ISSUER

    key_file = os.environ.get("LOCAL_JWT_KEY_FILE") or str(ROOT / env["LOCAL_JWT_KEY_FILE"])
    return mint_local_token(load_or_create_local_key(key_file), env.get("LOCAL_JWT_ISSUER", LOCAL_ISSUER), user)


def checks(base: str, token: str, env: dict[str, str]) -> list[tuple[str, Callable[[], str]]]:
    from chalicelib.policy import UploadPolicy
    from chalicelib.vod_signature import parse

    tier = UploadPolicy.model_validate(json.loads(env.get("UPLOAD_POLICY", "{}"))).default
    created: dict[str, Any] = {}

    def health() -> str:
        status, body = call("GET", f"{base}/health")
        expect((status, body) == (200, {"status": "ok"}), f"GET /health answered {status} {body!r}")
        return "200 ok"

    def anonymous() -> str:
        status, body = call("GET", f"{base}/videos")
        expect(status == 401, f"GET /videos without a token answered {status}")
        expect(isinstance(body, dict) and body.get("error") == "unauthorized", f"error body {body!r}")
        return "401 unauthorized"

    def forged_callback() -> str:
        status, _ = call("POST", f"{base}/vod/events/{secrets.token_urlsafe(24)}", body=b'{"EventType": "x"}')
        expect(status == 403, f"the callback with a wrong path token answered {status}")
        return "403"

    def signature() -> str:
        status, body = call("POST", f"{base}/uploads", token, b'{"title": "smoke test"}')
        expect(status == 201, f"POST /uploads answered {status} {body!r}")
        options = parse(body["signature"]).params
        lifetime = options.expireTime - options.currentTimeStamp
        expect(
            lifetime == tier.signature_ttl_seconds,
            f"signature lifetime {lifetime} s, policy says {tier.signature_ttl_seconds}",
        )
        expect(
            options.options.classId == tier.class_id, f"classId {options.options.classId}, policy says {tier.class_id}"
        )
        expect(options.options.procedure == tier.default_procedure, f"procedure {options.options.procedure!r}")
        expect((options.options.oneTimeValid == 1) == tier.one_time_signatures, "oneTimeValid differs from the policy")
        expect(bool(options.options.sourceContext), "the signature carries no sourceContext")
        created["uploadId"] = body["uploadId"]
        return f"201, upload {body['uploadId']}, signature valid {lifetime} s, classId {options.options.classId}"

    def intent() -> str:
        expect("uploadId" in created, "no upload was created")
        status, body = call("GET", f"{base}/uploads/{created['uploadId']}", token)
        expect(status == 200 and body.get("status") == "open", f"GET /uploads/{{id}} answered {status} {body!r}")
        return "200, status open"

    return [
        ("health", health),
        ("no token is 401", anonymous),
        ("wrong callback token is 403", forged_callback),
        ("POST /uploads signs by the stage's policy", signature),
        ("GET /uploads/{id} shows the intent", intent),
    ]


def run(base: str, stage: str, token: str | None) -> list[Check]:
    if not base.startswith(("http://", "https://")):
        raise SystemExit(f"smoke: --url must be an http(s) URL, got {base!r}")
    env = stage_environment(stage)
    if token is None:
        if env.get("AUTH_MODE") != "local":
            raise SystemExit("smoke: pass --token (or SMOKE_TOKEN): a user's token for this stage")
        token = local_token(env, "smoke-test")
    results = []
    for name, check in checks(base.rstrip("/"), token, env):
        try:
            results.append(Check(name, True, check()))
        except SmokeFailure as failure:
            results.append(Check(name, False, str(failure)))
        except (OSError, KeyError, ValueError, TypeError) as exc:
            results.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the API's base URL, e.g. https://…/api")
    parser.add_argument("--stage", required=True, help="the stage in .chalice/config.json whose policy applies")
    parser.add_argument("--token", default=os.environ.get("SMOKE_TOKEN"), help="a user's bearer token [SMOKE_TOKEN]")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args.url, args.stage, args.token)
    return 0 if show(results, args.url, args.stage, args.report) else 1


def show(results: list[Check], url: str, stage: str, report: Path | None, **context: Any) -> bool:
    """Print one line per check and a total, write the JSON report (with `context`) if asked; True when all
    passed."""
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name}: {result.detail}", flush=True)
    passed = sum(result.passed for result in results)
    print(f"smoke: {passed} passed, {len(results) - passed} failed against {url}", flush=True)
    if report:
        document = {"url": url, "stage": stage, **context, "checks": [asdict(result) for result in results]}
        report.write_text(json.dumps(document, indent=2) + "\n")
    return passed == len(results)


if __name__ == "__main__":
    sys.exit(main())
