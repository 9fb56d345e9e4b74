"""``python -m vodlocal``: run the emulator in the foreground until interrupted."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from vodlocal.config import from_args
from vodlocal.server import start


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vodlocal %(levelname)s %(message)s")
    config = from_args(argv)
    if not config.secrets:
        print(
            "vodlocal: VODLOCAL_SECRETS (ID:KEY[,ID2:KEY2]) is not set; every VOD signature will be rejected",
            file=sys.stderr,
        )
    handle = start(config)
    stop = threading.Event()
    # Explicit handlers: a parent that started us in the background may have left SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    mode = handle.app.event_config.current().mode  # the stored event config's, which may differ from --mode
    print(f"vodlocal: serving on {handle.url} (data dir {config.data_dir}, events {mode})", flush=True)
    if handle.tls is not None:
        print(
            f"vodlocal: HTTPS on port {handle.tls_port}, certificate SPKI sha256 {handle.tls.spki_sha256}, "
            f"CA {handle.tls.ca_cert}",
            flush=True,
        )
    while not stop.wait(0.5):
        pass
    handle.stop()
    print("vodlocal: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
