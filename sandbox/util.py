"""Small helpers shared by the sandbox modules: LiveKit-style ids and clocks."""

from __future__ import annotations

import secrets
import string
import time

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 12  # LiveKit's guid.New: prefix + 12 base62 characters, e.g. "RM_xK3q9ZpL0aBc"


def new_id(prefix: str) -> str:
    """A random LiveKit-style id such as ``RM_…``, ``PA_…``, ``SCL_…``, ``AD_…``, ``EV_…``."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def now_ms() -> int:
    return int(time.time() * 1000)
