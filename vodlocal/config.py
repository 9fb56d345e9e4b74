"""Emulator configuration: one frozen dataclass, filled from CLI flags or environment variables.

Secret values (API key pairs, the callback SignKey) come from the environment only: a command line is
visible to every user of the machine in ``ps`` and ``/proc/<pid>/cmdline``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vodlocal.cors import DEFAULT_COS_CORS, CorsRule, parse_rules

EventMode = Literal["PUSH", "PULL"]
# What makes a PUSH attempt worth a retry. "timeout" is VOD's documented rule (vod-protocol.md §3.1): only an
# attempt with no reply within the timeout is retried. "network" also retries a refused or reset connection, an
# undocumented convenience for a dev loop whose callback restarts.
PushRetryOn = Literal["timeout", "network"]
PUSH_RETRY_ON: tuple[PushRetryOn, ...] = ("timeout", "network")
# Which requests spend a oneTimeValid=1 signature (neither is documented by Tencent; vodlocal/README.md).
# "session": the Apply that opens an upload session spends it, and it stays good for that session only (its
# Apply retries, a resume, its Commit): what Tencent's mobile SDKs need. "strict": every request spends it.
OneTimeRule = Literal["session", "strict"]
ONE_TIME_RULES: tuple[OneTimeRule, ...] = ("session", "strict")

DEFAULT_APP_ID = 1500000001
DEFAULT_REGION = "ap-guangzhou"
EVENT_RETENTION = 4 * 86_400  # PullEvents: un-pulled events are kept up to 4 days (vod-protocol.md §3.2)


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8001
    data_dir: Path = Path(".local/vodlocal")
    secrets: Mapping[str, str] = field(default_factory=dict)
    app_id: int = DEFAULT_APP_ID
    region: str = DEFAULT_REGION
    # The initial event config only (NotificationUrl, SignKey, Mode): they seed the stored config on a start over
    # a data directory that has none, and ModifyEventConfig changes it after that (see vodlocal/eventconfig.py).
    callback_url: str | None = None
    sign_key: str | None = None
    mode: EventMode = "PUSH"
    # Fault injection (not VOD behaviour): every event delivered N times. PUSH POSTs it N times in a row; PULL
    # queues a copy at the tail of the queue each time a copy is first pulled, with its own EventHandle.
    duplicate_deliveries: int = 1
    procedure_delay: float = 1.0
    public_base_url: str | None = None
    session_ttl: int = 86_400
    cert_ttl: int = 3600
    one_time_signatures: OneTimeRule = "session"
    # PULL (vod-protocol.md §3.2): confirm within 30 s or the event is pulled again; PullEvents holds up to 5 s;
    # an event not confirmed within 4 days of its creation is dropped.
    confirm_window: float = 30.0
    pull_wait: float = 5.0
    event_retention: float = EVENT_RETENTION
    # PUSH (vod-protocol.md §3.1): 5 s per attempt, a reply with any status is a delivery, a timeout is retried
    # twice (at most 3 sends).
    push_timeout: float = 5.0
    push_retries: int = 2
    push_retry_on: PushRetryOn = "timeout"
    # Pause before retry n (the last value repeats), counted from the failed attempt's start. After a 5 s timeout
    # it has already passed, so the retry goes out at once; it delays the retry of a faster failure only.
    push_backoff: tuple[float, ...] = (1.0, 2.0)
    # Fault injection (not VOD behaviour): up to N events that are ready together are delivered in reverse order,
    # in both modes. The first of a group waits up to ``reorder_hold`` seconds for the others; 1 = in order.
    reorder_window: int = 1
    reorder_hold: float = 1.0
    # HTTPS beside HTTP, for a browser sent here under the real host names (vodlocal/tls.py): the port, and where
    # the generated CA and certificate are kept. None: HTTP only.
    tls_port: int | None = None
    tls_dir: Path = Path(".local/tls")
    # The VOD buckets' CORS configuration (vodlocal/cors.py).
    cos_cors: tuple[CorsRule, ...] = DEFAULT_COS_CORS

    def application(self, sub_app_id: int | None) -> int:
        """The application a `vodSubAppId` or `SubAppId` names: none, 0 and the account's AppId all name the
        primary one."""
        return sub_app_id or self.app_id


def parse_secrets(items: Sequence[str]) -> dict[str, str]:
    """``["id:key", "id2:key2,id3:key3"]`` -> ``{"id": "key", ...}``."""
    result: dict[str, str] = {}
    for item in items:
        for pair in item.split(","):
            pair = pair.strip()
            if not pair:
                continue
            secret_id, sep, secret_key = pair.partition(":")
            if not sep or not secret_id or not secret_key:
                raise ValueError(f"secret must look like ID:KEY, got {pair!r}")
            result[secret_id] = secret_key
    return result


def parse_backoff(text: str) -> tuple[float, ...]:
    """``"1,2"`` -> ``(1.0, 2.0)``; seconds, each >= 0."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"push backoff must be comma-separated seconds, got {text!r}") from None
    if any(value < 0 for value in values):
        raise ValueError(f"push backoff must not be negative, got {text!r}")
    return values


class _RemovedSecretFlag(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.error(
            f"{self.option_strings[0]} was removed: a command line is visible in ps; "
            "set VODLOCAL_SECRETS=ID:KEY[,ID2:KEY2] and VODLOCAL_SIGN_KEY in the environment instead"
        )


def _env(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(f"VODLOCAL_{name}")
    return value if value not in (None, "") else default


def _env_name(flag: str) -> str:
    """`--push-retry-on` -> `PUSH_RETRY_ON`, the flag's VODLOCAL_ variable without the prefix."""
    return flag.removeprefix("--").replace("-", "_").upper()


def _add_choice(
    p: argparse.ArgumentParser, env: Mapping[str, str], flag: str, choices: Sequence[str], help: str
) -> None:
    """A flag with fixed values, the first the default, which VODLOCAL_<FLAG> can set too. argparse checks only
    a value given as a flag: `from_args` checks one from the environment."""
    name = _env_name(flag)
    p.add_argument(flag, choices=choices, default=_env(env, name, choices[0]), help=f"{help} [VODLOCAL_{name}]")


def _add_number(
    p: argparse.ArgumentParser, env: Mapping[str, str], flag: str, kind: type[float], default: float, help: str
) -> None:
    """A number flag (`kind` int or float) whose default VODLOCAL_<FLAG> can set; its bounds are checked in
    `from_args`."""
    name = _env_name(flag)
    value = kind(_env(env, name, str(default)) or default)
    p.add_argument(flag, type=kind, default=value, help=f"{help} [VODLOCAL_{name}]")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vodlocal", description="Local Tencent VOD + COS emulator.")
    p.add_argument("--host", default=_env(env, "HOST", "127.0.0.1"), help="bind address [VODLOCAL_HOST]")
    p.add_argument("--port", type=int, default=int(_env(env, "PORT", "8001") or 8001), help="[VODLOCAL_PORT]")
    p.add_argument("--data-dir", default=_env(env, "DATA_DIR", ".local/vodlocal"), help="[VODLOCAL_DATA_DIR]")
    # Secret values only through the environment (VODLOCAL_SECRETS, VODLOCAL_SIGN_KEY): see the module docstring.
    p.add_argument("--secret", "--sign-key", nargs="?", action=_RemovedSecretFlag, help=argparse.SUPPRESS)
    p.add_argument("--app-id", type=int, default=int(_env(env, "APP_ID", str(DEFAULT_APP_ID)) or DEFAULT_APP_ID))
    p.add_argument("--region", default=_env(env, "REGION", DEFAULT_REGION), help="default storage region")
    p.add_argument(
        "--callback-url", default=_env(env, "CALLBACK_URL"), help="initial PUSH target [VODLOCAL_CALLBACK_URL]"
    )
    p.add_argument(
        "--mode", choices=["PUSH", "PULL"], default=_env(env, "MODE", "PUSH"), help="initial event mode [VODLOCAL_MODE]"
    )
    _add_number(p, env, "--duplicate-deliveries", int, 1, "fault injection: deliver every event N times, PUSH or PULL")
    _add_number(
        p,
        env,
        "--reorder-window",
        int,
        1,
        "fault injection: deliver up to N events ready together in reverse order, PUSH or PULL; 1 = in order",
    )
    _add_number(
        p,
        env,
        "--reorder-hold",
        float,
        1,
        "with --reorder-window: seconds the first event of a group waits for the others",
    )
    _add_number(p, env, "--procedure-delay", float, 1, "seconds before a simulated task flow reports")
    p.add_argument(
        "--public-base-url",
        default=_env(env, "PUBLIC_BASE_URL"),
        help="base of MediaUrl/CoverUrl (default: the server's own URL) [VODLOCAL_PUBLIC_BASE_URL]",
    )
    _add_number(p, env, "--confirm-window", float, 30, "PULL mode: seconds to confirm before redelivery")
    _add_number(
        p,
        env,
        "--event-retention",
        float,
        EVENT_RETENTION,
        "PULL mode: seconds an unconfirmed event is kept, from its creation (4 days)",
    )
    _add_number(p, env, "--pull-wait", float, 5, "PULL mode: seconds PullEvents holds when there is nothing to pull")
    _add_number(p, env, "--cert-ttl", int, 3600, "lifetime of issued COS temporary credentials")
    _add_choice(
        p,
        env,
        "--one-time-signatures",
        ONE_TIME_RULES,
        "which requests spend a oneTimeValid=1 signature: session (the Apply opening a session; its retries, "
        "resume and Commit reuse it) or strict (every request)",
    )
    _add_number(p, env, "--push-timeout", float, 5, "PUSH: seconds to wait for the callback's reply")
    _add_number(p, env, "--push-retries", int, 2, "PUSH: retries after a failed attempt")
    _add_choice(
        p,
        env,
        "--push-retry-on",
        PUSH_RETRY_ON,
        "PUSH: what is retried: timeout (VOD's documented rule) or network (also a refused or reset connection)",
    )
    p.add_argument(
        "--push-backoff",
        default=_env(env, "PUSH_BACKOFF", "1,2"),
        help="PUSH: seconds before each retry, from the failed attempt's start, e.g. 1,2 [VODLOCAL_PUSH_BACKOFF]",
    )
    _add_number(
        p, env, "--tls-port", int, -1, "also serve HTTPS on this port (0 = any free port) with a generated certificate"
    )
    p.add_argument(
        "--tls-dir", default=_env(env, "TLS_DIR", ".local/tls"), help="the CA and certificate [VODLOCAL_TLS_DIR]"
    )
    p.add_argument(
        "--cos-cors",
        default=_env(env, "COS_CORS"),
        help="the buckets' CORS rules, PutBucketCors's CORSRule list as JSON (default: any origin, ETag exposed) "
        "[VODLOCAL_COS_CORS]",
    )
    return p


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    args = build_parser(env).parse_args(argv)
    secrets = parse_secrets([_env(env, "SECRETS", "") or ""])
    for flag, ok in (
        ("--duplicate-deliveries must be >= 1", args.duplicate_deliveries >= 1),
        ("--reorder-window must be >= 1", args.reorder_window >= 1),
        ("--reorder-hold must be >= 0", args.reorder_hold >= 0),
        ("--event-retention must be > 0", args.event_retention > 0),
        ("--pull-wait must be >= 0", args.pull_wait >= 0),
        ("--push-timeout must be > 0", args.push_timeout > 0),
        ("--push-retries must be >= 0", args.push_retries >= 0),
        ("--push-retry-on must be timeout or network", args.push_retry_on in PUSH_RETRY_ON),
        ("--one-time-signatures must be session or strict", args.one_time_signatures in ONE_TIME_RULES),
    ):
        if not ok:
            raise SystemExit(flag)
    try:
        push_backoff = parse_backoff(args.push_backoff)
    except ValueError as exc:
        raise SystemExit(f"--push-backoff: {exc}") from None
    try:
        cos_cors = DEFAULT_COS_CORS if args.cos_cors is None else parse_rules(args.cos_cors)
    except ValueError as exc:
        raise SystemExit(f"--cos-cors: {exc}") from None
    return Config(
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir),
        secrets=secrets,
        app_id=args.app_id,
        region=args.region,
        callback_url=args.callback_url,
        sign_key=_env(env, "SIGN_KEY"),
        mode=args.mode,
        duplicate_deliveries=args.duplicate_deliveries,
        procedure_delay=args.procedure_delay,
        public_base_url=args.public_base_url,
        confirm_window=args.confirm_window,
        pull_wait=args.pull_wait,
        event_retention=args.event_retention,
        cert_ttl=args.cert_ttl,
        one_time_signatures=args.one_time_signatures,
        push_timeout=args.push_timeout,
        push_retries=args.push_retries,
        push_retry_on=args.push_retry_on,
        push_backoff=push_backoff,
        reorder_window=args.reorder_window,
        reorder_hold=args.reorder_hold,
        tls_port=None if args.tls_port < 0 else args.tls_port,
        tls_dir=Path(args.tls_dir),
        cos_cors=cos_cors,
    )
