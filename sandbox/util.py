"""Small helpers shared by the sandbox modules: LiveKit-style ids, clocks, telling a web
page's request from an SDK's, and the command lines' --port."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import string
import time

from common.host_header import host_name, is_loopback_name

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


def web_page_sign(host: str | None, origin: str | None, listening_on: str) -> str | None:
    """What shows a request came from a web page rather than a LiveKit SDK, or None: any
    `Origin`, or a `Host` naming something other than an address, a loopback name or
    `listening_on` (a page reaches loopback only under a name it re-pointed there)."""
    if origin is not None:
        return f"Origin {origin[:100]!r}"
    if host is None:
        return None
    name = host_name(host)
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    if is_loopback_name(name) or name == listening_on.lower():
        return None
    return f"Host {host[:100]!r}"


def port_argument(text: str) -> int:
    """The `type` of `python -m sandbox`'s and `python -m sandbox.receiver`'s --port: 0 (any
    free port) to 65535, else a usage error (out of range, the bind failed in a traceback)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and 65535 (0: any free port), got {text!r}"
        )
    return port
