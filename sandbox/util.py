"""Small helpers shared by the sandbox modules: LiveKit-style ids and clocks."""

from __future__ import annotations

import secrets
import string
import time

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 12  # LiveKit's guid.New: prefix + 12 base62 characters, e.g. "RM_xK3q9ZpL0aBc"


def new_id(prefix: str) -> str:
    """A random LiveKit-style id such as ``RM_…``, ``PA_…``, ``SCL_…``, ``AD_…``, ``EV_…``."""
    number = int.from_bytes(secrets.token_bytes(9))  # 72 random bits >= 12 base-62 digits
    digits = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    return prefix + "".join(digits)


def now_ms() -> int:
    return int(time.time() * 1000)
