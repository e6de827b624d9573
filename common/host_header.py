"""What a request's `Host` header names, for the checks that tell a web page's request from a
program's (the API's routes, and the embedded sandbox's LiveKit port): a page on this machine
reaches loopback only under a name its owner re-pointed there (DNS rebinding)."""

from __future__ import annotations

from urllib.parse import urlsplit

# Host names that only ever lead to this machine: a web page cannot point them elsewhere.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def host_name(host: str) -> str:
    """The name in a Host header, lower case, without its port, brackets or final dot ("" for
    junk such as "[::1")."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""
    return name.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """`name` (as `host_name` gives it) can only lead to this machine."""
    return name in LOOPBACK_NAMES or name.endswith(".localhost")
