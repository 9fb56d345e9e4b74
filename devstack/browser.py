"""Chromium pointed at the local stack: the unmodified Web SDK's hard-coded hosts go to vodlocal's HTTPS.

`make browse` opens the page of a running `make dev` this way (`python -m devstack.browser`); the browser tests
launch the same flags headless. Nothing is installed in the system: `--host-resolver-rules` maps the SDK's hosts
to 127.0.0.1 for this browser only, and `--ignore-certificate-errors-spki-list` accepts vodlocal's generated
certificate by its key's hash. A profile of its own (`--user-data-dir`) keeps both out of the user's everyday one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# The hosts vod-js-sdk-v6 calls: the UGC API and its backup, the reporter, COS and its fallback domain.
SDK_HOSTS = ("vod2.qcloud.com", "vod2.dnsv1.com", "vodreport.qcloud.com", "*.myqcloud.com", "*.tencentcos.cn")
# Flags for a quiet, reproducible browser: no QUIC (vodlocal speaks TCP only), no sign-in, sync or updates.
QUIET_FLAGS = (
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_executable() -> str | None:
    """`CHROMIUM` if set, else Debian's `chromium` (or Chrome) on the PATH."""
    return os.environ.get("CHROMIUM") or next(
        (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
    )


def local_stack_flags(vod_tls_port: int, spki_sha256: str) -> list[str]:
    rules = ", ".join(f"MAP {host} 127.0.0.1:{vod_tls_port}" for host in SDK_HOSTS)
    return [f"--host-resolver-rules={rules}", f"--ignore-certificate-errors-spki-list={spki_sha256}", *QUIET_FLAGS]


def main() -> None:
    from devstack.run import HOST, ROOT, TLS_DIR, VOD_TLS_PORT, WEB_PORT
    from vodlocal.cos import REGION_ABBREVIATIONS
    from vodlocal.tls import ensure_certificate

    spki = ensure_certificate(TLS_DIR, tuple(REGION_ABBREVIATIONS)).spki_sha256
    # A profile of its own, kept: the SDK's resume state (localStorage) survives closing the browser.
    flags = [*local_stack_flags(VOD_TLS_PORT, spki), f"--user-data-dir={ROOT / '.local' / 'browser-profile'}"]
    url = f"http://{HOST}:{WEB_PORT}/"
    executable = chromium_executable()
    if executable is None:
        print(
            "No Chromium found (apt-get install chromium, or set CHROMIUM). With your own Chrome, run:", file=sys.stderr
        )
        print("  <chrome> " + " ".join(f"'{flag}'" for flag in flags) + f" {url}", file=sys.stderr)
        raise SystemExit(1)
    print(f"Opening {url} in {executable} (the SDK's hosts go to vodlocal's HTTPS on {VOD_TLS_PORT})")
    subprocess.Popen([executable, *flags, url], start_new_session=True)  # noqa: S603 - the user's own browser


if __name__ == "__main__":
    main()
