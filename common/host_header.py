"""What a request's `Host` header names, for the checks that tell a web page's request from a
program's (the API's routes, and the embedded sandbox's LiveKit port): a page on this machine
reaches loopback only under a name its owner re-pointed there (DNS rebinding)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Host names that only ever lead to this machine, whatever the network's DNS says: a web
# page cannot point them elsewhere. `localhost` and `*.localhost` (RFC 6761; browsers resolve
# them to loopback themselves), and no name of a hosts file's convention: macOS's holds
# `localhost` alone, Fedora's no `ip6-*`, Windows' none, and there the network's name server
# answers `localhost.localdomain` or `ip6-localhost` (a cafe's Wi-Fi, as it likes). Taken as
# this machine's, a page on one, rebound to 127.0.0.1, placed calls and read them back.
LOOPBACK_NAMES = frozenset({"localhost"})


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


def address_of(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an IP address (without an IPv6 zone id; an IPv4-mapped IPv6 address as the
    IPv4 address it maps), or None if it is none."""
    try:
        address = ipaddress.ip_address((text or "").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(name: str) -> bool:
    """`name` (as `host_name` gives it) is a loopback address or a loopback name."""
    address = address_of(name)
    return address.is_loopback if address is not None else is_loopback_name(name)
