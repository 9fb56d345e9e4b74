"""vodlocal: a local emulator of Tencent Cloud VOD client upload (UGC), COS and VOD event notifications.

Development and test tool only; never packaged into the Lambda. See ``vodlocal/README.md``.
"""

from vodlocal.config import Config
from vodlocal.server import Handle, start

__all__ = ["Config", "Handle", "start"]
