"""SSRF guard for customer webhook URLs.

A customer picks the URL the service POSTs call events to, so without a guard the service
could be made to reach its own loopback, the private network or a cloud metadata endpoint.
Three layers, each closing a gap the others leave:

* `check_url` (pure, no DNS) refuses malformed URLs, credentials, plain http and hosts that
  are IP literals of non-public addresses, when the customer registers the URL.
* `GuardedResolver` checks every address a host name resolves to, at connect time. aiohttp
  connects only to what its resolver returns (and caches exactly that), so the address
  checked is the address connected to: a DNS answer that changes between registration and
  delivery (DNS rebinding) is checked again and refused.
* aiohttp never asks the resolver about IP-literal hosts, so `make_connector` also installs a
  socket factory that refuses any non-public peer address right before the socket is made.

Callers must also pass `allow_redirects=False` (a redirect is a second, unchecked URL chosen by
the receiver) and must not use a proxy or `trust_env=True` (the guard would check the proxy's
address, not the receiver's). Refusals raise `UnsafeWebhookUrl`; inside aiohttp they arrive as
a `ClientConnectorError` wrapping `AddressRefused`, which `guard_refusal` digs out.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from common.http_body import DEFAULT_BODY_LIMIT, read_capped
from common.notify.lookups import SLOW_LANES, LookupsBusy, NameLookups
from common.text import is_unicode, quoted, shown_text

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "MAX_URL_LENGTH",
    "AddressRefused",
    "GuardedResolver",
    "LookupsBusy",
    "PooledResolver",
    "UnsafeWebhookUrl",
    "check_url",
    "guard_refusal",
    "guarded_socket_factory",
    "is_public_address",
    "make_connector",
    "read_capped",
    "resolve_public",
]


# Said where a receiver a developer tries on their own machine is refused (http, localhost, a
# private address): the switch that allows them, which production leaves off.
PRIVATE_HINT = " (http and private hosts are for local testing: CALLS_WEBHOOK_ALLOW_PRIVATE=1)"


class UnsafeWebhookUrl(ValueError):
    """The webhook URL, or an address its host resolves to, may not be used."""


class AddressRefused(OSError, UnsafeWebhookUrl):
    """A resolved or literal peer address is not public, refused at connect time.

    It is an `OSError` so that aiohttp treats it like any failed connection (wrapping it in
    `ClientConnectorError`, releasing the pool slot, never retrying), and an
    `UnsafeWebhookUrl` so that callers can tell a policy refusal apart from a network fault.
    """

    def __init__(self, message: str, address: str = "") -> None:
        # errno None + strerror: aiohttp's ClientConnectorError shows strerror in its message.
        super().__init__(None, message)
        self.address = address  # for the operator; the message does not name it

    def __str__(self) -> str:
        return str(self.strerror)


def guard_refusal(exc: BaseException) -> AddressRefused | None:
    """The guard's refusal behind `exc` (as raised by a ClientSession request), else None.

    aiohttp wraps the refusal in `ClientConnectorError.os_error` and chains it as the cause;
    a refusal means "do not retry, the URL is not allowed", unlike other connection errors.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return current
        if isinstance(current, aiohttp.ClientConnectorError):
            if isinstance(current.os_error, AddressRefused):
                return current.os_error
        current = current.__cause__ or current.__context__
    return None


# ---------------------------------------------------------------------------------------------
# Which addresses count as public.

# Ranges `ipaddress.is_global` gets wrong or that no webhook receiver lives in. Python 3.11
# reports e.g. 224.0.0.1, ff02::1, fec0::1, 192.0.0.8, ::127.0.0.1 and 2002:a00:1:: as global.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT (includes Alibaba metadata 100.100.100.200)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (includes cloud metadata 169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation TEST-NET-2
        "203.0.113.0/24",  # documentation TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible ::a.b.c.d
        "::ffff:0:0:0/96",  # SIIT IPv4-translated
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local (includes AWS metadata fd00:ec2::254)
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# Named for tests and readers; every one is also inside a blocked range above.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.IPv4Address("169.254.169.254"),
        ipaddress.IPv4Address("100.100.100.200"),
        ipaddress.IPv6Address("fd00:ec2::254"),
    }
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a translation/tunnel IPv6 form delivers to, if it is one.

    IPv4-mapped (::ffff:a.b.c.d) reaches the IPv4 address through a dual-stack socket, NAT64
    (64:ff9b::a.b.c.d) through the network's translator and 6to4 (2002:aabb:ccdd::) through a
    relay, so such an address is exactly as public as the IPv4 address inside it.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address a webhook may be delivered to.

    IPv6 forms that embed an IPv4 address are judged by the embedded address; Teredo and the
    deprecated IPv4-compatible form are refused outright (no receiver lives there).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False  # a zone index only makes sense for link-local destinations
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.teredo is not None:
            return False
        blocked: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = _BLOCKED_V6
        site_local = ip.is_site_local
    else:
        blocked = _BLOCKED_V4
        site_local = False
    if any(ip in net for net in blocked) or ip in METADATA_ADDRESSES:
        return False
    special = (
        ip.is_loopback,
        ip.is_private,
        ip.is_link_local,
        ip.is_multicast,
        ip.is_reserved,
        ip.is_unspecified,
        site_local,
    )
    return ip.is_global and not any(special)


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The URL itself.

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")
_AUTHORITY_END = re.compile(r"[/?#]")


def _ends_in_number(host: str) -> bool:
    """WHATWG's "ends in a number": resolvers treat such a host as an IPv4 address.

    glibc's getaddrinfo accepts 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 as 127.0.0.1,
    while yarl keeps them as names, so checking them as names would be a parser differential.
    """
    last = host.removesuffix(".").rsplit(".", 1)[-1]
    return (last.isascii() and last.isdigit()) or _HEX_NUMBER.fullmatch(last) is not None


def _shown(host: str) -> str:
    """A refused host as its error quotes it: 100 characters are more than a real name needs
    (a 2 KB one came back whole, as a 7 KB answer once its bidi controls were escaped)."""
    return quoted(host, 101)


def _check_host(host: str, *, allow_private: bool) -> None:
    """Refuse a host that is not a plain DNS name or a canonical, permitted IP literal."""
    if ":" in host:  # yarl unbrackets IPv6 literals
        if "%" in host:
            raise UnsafeWebhookUrl(f"IPv6 zone identifiers are not allowed: {_shown(host)}")
        ip = _parse_address(host)
        if ip is None:
            raise UnsafeWebhookUrl(f"invalid IPv6 address: {_shown(host)}")
    elif _ends_in_number(host):
        ip = _parse_address(host)
        if ip is None or str(ip) != host:
            raise UnsafeWebhookUrl(
                f"numeric host {_shown(host)} is not a canonical dotted-quad IPv4 address"
            )
    else:
        name = host.removesuffix(".")
        if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
            raise UnsafeWebhookUrl(f"invalid host name: {_shown(host)}")
        if not allow_private and (name == "localhost" or name.endswith(".localhost")):
            raise UnsafeWebhookUrl(f"host {_shown(host)} is local{PRIVATE_HINT}")
        return
    if not allow_private and not is_public_address(ip):
        raise UnsafeWebhookUrl(f"host {_shown(host)} is not a public address{PRIVATE_HINT}")


def _has_forbidden_chars(url: str) -> bool:
    """Whitespace, controls and backslashes: parsers disagree on them (WHATWG strips tabs and
    reads '\\' as '/', yarl does neither), so the URL checked might not be the URL fetched."""
    return "\\" in url or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url)


def check_url(url: str, *, allow_private: bool) -> str:
    """The normalised form of a customer webhook URL, or `UnsafeWebhookUrl` saying why not.

    Pure: no DNS. A host name that passes may still resolve to a private address; that is
    caught at connect time by `GuardedResolver`. Store and use the returned string, not `url`.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"URL is longer than {MAX_URL_LENGTH} characters")
    if _has_forbidden_chars(url):
        raise UnsafeWebhookUrl("URL contains whitespace, control characters or backslashes")
    if not is_unicode(url):  # yarl dropped a lone surrogate: the URL stored was another one
        raise UnsafeWebhookUrl("URL must be valid Unicode text")
    if "#" in url:
        raise UnsafeWebhookUrl("URL must not have a fragment")
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError as exc:
        # yarl's message quotes the host whole, 2 KB of it
        raise UnsafeWebhookUrl(f"not a valid URL: {shown_text(str(exc), 201)}") from exc
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in allowed_schemes:
        hint = PRIVATE_HINT if parsed.scheme == "http" else ""
        raise UnsafeWebhookUrl(f"URL scheme must be {' or '.join(allowed_schemes)}{hint}")
    # The raw text too: yarl silently drops an empty userinfo ("https://@host").
    if "@" in parsed.raw_authority or "@" in _AUTHORITY_END.split(url.partition("//")[2])[0]:
        raise UnsafeWebhookUrl("URL must not contain credentials (user:password@)")
    host = parsed.raw_host
    if not host:
        raise UnsafeWebhookUrl("URL has no host")
    if port is None or not 1 <= port <= 65535:
        raise UnsafeWebhookUrl("URL port must be between 1 and 65535")
    _check_host(host, allow_private=allow_private)
    try:
        parsed.host  # noqa: B018 - decodes an IDNA label ("xn--..."), as the DNS checks read it
    except UnicodeError:  # "xn--a": no punycode; every later read of the host was a 500
        raise UnsafeWebhookUrl(f"invalid host name: {_shown(host)}") from None
    normalised = str(parsed)
    if len(normalised) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"URL is longer than {MAX_URL_LENGTH} characters once encoded")
    return normalised


# ---------------------------------------------------------------------------------------------
# Connect time.


def _check_peer(text: str, context: str) -> None:
    """Refuse one peer address; an unparsable one cannot be vouched for, so it is refused.
    The message does not say which address: it is kept as a delivery's `last_error`, and a
    customer re-pointing a name at will would read the server's internal DNS answers there."""
    ip = _parse_address(text)
    if ip is None or not is_public_address(ip):
        raise AddressRefused(f"{context} a non-public address", text)


async def resolve_public(
    host: str,
    port: int,
    *,
    allow_private: bool,
    resolver: AbstractResolver,
    family: socket.AddressFamily = socket.AF_UNSPEC,
) -> list[ResolveResult]:
    """Resolve `host` with `resolver`; refuse if ANY answer is not public.

    All answers, not just the first: aiohttp may fall back to any of them. Raises
    `AddressRefused` (an `UnsafeWebhookUrl` and an `OSError`) on a refused address, and a
    plain `OSError` when the name resolves to nothing.
    """
    results = await resolver.resolve(host, port, family=family)
    if not results:
        raise OSError(f"{host} resolved to no addresses")
    if not allow_private:
        for result in results:
            _check_peer(result["host"], f"{host} resolves to")
    return results


# Webhook host names are looked up on threads of their own (a name server that never answers
# holds a thread for the resolver's whole timeout, and an await's timeout cannot stop
# getaddrinfo: on the loop's default executor, a few such names held every thread
# config.json's writes and the readiness probe need, and every call waited, 19 s against 0.02
# in a probe), so that they can only hold up each other; `NameLookups` (lookups.py) keeps
# them from holding up the lookups of other names too.
# The checks of a call's or a campaign row's webhook_url, when it is given, have threads of
# their own too: a client can send names that never resolve at no cost (the call is refused),
# and on the senders' threads that made every delivery's lookup wait (9.9 s in a probe).
DNS_THREADS = SLOW_LANES  # the threads names slow lately may hold together
_DNS = NameLookups("webhook-dns")
CHECK_DNS = NameLookups("webhook-check-dns")
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NAME_FLAGS = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


class PooledResolver(AbstractResolver):
    """aiohttp's ThreadedResolver (the OS getaddrinfo, whose numeric-host quirks `check_url`
    is written against), on the threads of webhook lookups (or `lookups`), not the loop's
    default executor: each name looked up once at a time, and names slow lately held to a
    share of the threads (`NameLookups`)."""

    def __init__(self, lookups: NameLookups | None = None) -> None:
        self._lookups = lookups if lookups is not None else _DNS

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found_all = await self._lookups.getaddrinfo(host, family)
        results: list[ResolveResult] = []
        for found, _, proto, _, address in found_all:
            if found == socket.AF_INET6 and len(address) < 3:  # no IPv6 in this Python or host
                continue
            answer_host = str(address[0])
            if len(address) == 4 and address[3]:  # IPv6 with a scope id (link-local): the
                answer_host = socket.getnameinfo(address, _NAME_FLAGS)[0]  # host with it
            results.append(
                ResolveResult(
                    hostname=host,
                    host=answer_host,
                    port=port,
                    family=found,
                    proto=proto,
                    flags=_NUMERIC,
                )
            )
        return results

    async def close(self) -> None:
        pass


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver returning only checked addresses (or refusing the host).

    The inner resolver defaults to `PooledResolver`: the OS getaddrinfo on threads of its
    own, and nothing to close.
    """

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner if inner is not None else PooledResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return await resolve_public(
            host, port, allow_private=self._allow_private, resolver=self._inner, family=family
        )

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohappyeyeballs socket factory refusing non-public peers before a socket exists.

    The last line of defence: aiohttp skips the resolver for IP-literal hosts, so
    `http://127.0.0.1/` and `http://[::1]/` only meet the guard here.
    """
    family, type_, proto, _canonname, sockaddr = addr_info
    _check_peer(str(sockaddr[0]), "refusing to connect to")
    return socket.socket(family=family, type=type_, proto=proto)


def make_connector(
    *,
    allow_private: bool,
    limit: int,
    limit_per_host: int,
    resolver: AbstractResolver | None = None,
) -> aiohttp.TCPConnector:
    """A TCPConnector that connects only to checked addresses.

    `resolver` is the inner resolver to wrap (tests inject a fake one). Use the connector's
    session with `allow_redirects=False`, no `proxy` and `trust_env=False` (the default).
    """
    return aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        resolver=GuardedResolver(allow_private=allow_private, inner=resolver),
        socket_factory=None if allow_private else guarded_socket_factory,
    )
