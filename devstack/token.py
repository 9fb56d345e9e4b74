"""Print a token for the local stage: `python -m devstack.token alice [--group premium]`.

The last line of output is the token itself, so `TOKEN=$(make token USER=alice | tail -1)` works.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chalicelib.auth import load_or_create_local_key, mint_local_token
from chalicelib.identity import LOCAL_ISSUER

CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"


def local_stage_env() -> dict[str, str]:
    env: dict[str, str] = json.loads(CONFIG.read_text())["stages"]["local"]["environment_variables"]
    return env


def local_signing_key() -> tuple[Path, str]:
    """Where the local stage's token signing key is kept (generated on first use), and the issuer it signs as."""
    env = local_stage_env()
    return CONFIG.parent.parent / env["LOCAL_JWT_KEY_FILE"], env.get("LOCAL_JWT_ISSUER", LOCAL_ISSUER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("user")
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("--ttl", type=int, default=12 * 3600)
    args = parser.parse_args()
    key_file, issuer = local_signing_key()
    key = load_or_create_local_key(str(key_file))
    print(f"# local token for user {args.user!r}, valid {args.ttl} s")
    print(mint_local_token(key, issuer, args.user, args.group, args.ttl))


if __name__ == "__main__":
    main()
