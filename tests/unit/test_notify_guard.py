"""The webhook SSRF guard: URL rules, address ranges, the resolver and a real connection."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from common.notify.guard import (
    METADATA_ADDRESSES,
    AddressRefused,
    GuardedResolver,
    PooledResolver,
    UnsafeWebhookUrl,
    check_url,
    guard_refusal,
    guarded_socket_factory,
    is_public_address,
    make_connector,
    read_capped,
    resolve_public,
)

# ---------------------------------------------------------------------------------------------
# check_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("HTTPS://Hooks.Example.COM:443/a?b=1", "https://hooks.example.com/a?b=1"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("https://example.com./x", "https://example.com./x"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
        ("https://8.8.8.8/x", "https://8.8.8.8/x"),
        ("https://[2606:4700::1111]:8443/x", "https://[2606:4700::1111]:8443/x"),
        ("https://example.com/path@with-at?q=a@b", "https://example.com/path@with-at?q=a@b"),
        ("https://123.example.com/", "https://123.example.com/"),
    ],
)
def test_check_url_accepts_and_normalises(no_network: None, url: str, expected: str) -> None:
    assert check_url(url, allow_private=False) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # scheme
        ("http://example.com/hook", "scheme must be https"),
        ("ftp://example.com/hook", "scheme must be https"),
        ("example.com/hook", "scheme must be https"),
        # host
        ("https:///hook", "no host"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com\t/", "whitespace"),
        ("https://example.com\\@evil.example/", "backslashes"),
        # a lone surrogate: yarl dropped it, and the URL stored was not the one given
        ("https://1.1.1.1/?a=\ud800", "valid Unicode"),
        ("https://example.com/\udcff/hook", "valid Unicode"),
        ("https://ex%41mple.com/", "invalid host name"),
        ("https://-bad.example/", "invalid host name"),
        ("https://a..b/", "invalid host name"),
        # an IDNA label that is no punycode: reading its host (the DNS checks) was a 500
        ("https://xn--a.com/", "invalid host name"),
        ("https://hooks.xn--1ug6928ac.example/", "invalid host name"),
        ("https://localhost/", "is local"),
        ("https://api.localhost/", "is local"),
        # userinfo
        ("https://user:pass@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://@example.com/", "credentials"),
        # port
        ("https://example.com:0/", "port"),
        ("https://example.com:65536/", "not a valid URL"),
        # fragment, length
        ("https://example.com/#frag", "fragment"),
        ("https://example.com/#", "fragment"),
        ("https://example.com/" + "a" * 2048, "longer than 2048"),
        # private IP literals
        ("https://127.0.0.1/", "not a public address"),
        ("https://10.1.2.3/", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://0.0.0.0/", "not a public address"),
        ("https://[::1]/", "not a public address"),
        ("https://[::1]:8080/", "not a public address"),
        ("https://[::ffff:127.0.0.1]/", "not a public address"),
        ("https://[fd00:ec2::254]/", "not a public address"),
        ("https://[fe80::1%25eth0]/", "zone identifiers"),
        ("https://127。0。0。1/", "not a public address"),  # fullwidth dots, folded by IDNA
        # numeric hosts the OS reads as IPv4 but a URL parser may keep as names
        ("https://0x7f000001/", "canonical dotted-quad"),
        ("https://0X7F000001/", "canonical dotted-quad"),
        ("https://2130706433/", "canonical dotted-quad"),
        ("https://0177.0.0.1/", "canonical dotted-quad"),
        ("https://127.1/", "canonical dotted-quad"),
        ("https://0x7f.1/", "canonical dotted-quad"),
        ("https://127.000.0.1/", "canonical dotted-quad"),
        ("https://127.0.0.1./", "canonical dotted-quad"),
        ("https://08.8.8.8/", "canonical dotted-quad"),
        ("https://8.8.8.8./", "canonical dotted-quad"),
        ("https://1.2.3.4.5/", "canonical dotted-quad"),
        ("https://example.0x1/", "canonical dotted-quad"),
    ],
)
def test_check_url_refuses(no_network: None, url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=reason):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://" + "a" * 2000 + "/",
        "https://" + "a." * 900 + "com/",
        "https://1." + "2" * 1990 + "/",
        "https://" + "\u202e" * 1000 + ".com/",
    ],
)
def test_a_refused_host_of_2_kb_is_not_repeated_whole(no_network: None, url: str) -> None:
    """A webhook_url's host came back whole in its 422, up to 2 KB of it (7 KB of JSON once
    its bidi controls were escaped), for a call and each campaign row alike."""
    with pytest.raises(UnsafeWebhookUrl) as refused:
        check_url(url, allow_private=False)
    assert len(str(refused.value)) < 260, str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "https://10.0.0.5/hook",
        "http://[::1]:8080/hook",
    ],
)
def test_check_url_allow_private_permits_http_and_private_hosts(url: str) -> None:
    assert check_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    ("url", "names_the_switch"),
    [
        ("http://127.0.0.1:9000/", True),  # README's local receiver, without the switch
        ("http://hooks.example.com/", True),
        ("https://localhost:9000/", True),
        ("https://10.0.0.5/hook", True),
        ("ftp://example.com/hook", False),  # no switch allows it
        ("https://example.com:0/", False),
    ],
)
def test_a_refusal_the_testing_switch_lifts_names_it(url: str, names_the_switch: bool) -> None:
    """A developer trying a receiver on their own machine is told how (it said only "URL
    scheme must be https"); a refusal no setting lifts does not send them to it."""
    with pytest.raises(UnsafeWebhookUrl) as refused:
        check_url(url, allow_private=False)
    assert ("CALLS_WEBHOOK_ALLOW_PRIVATE=1" in str(refused.value)) is names_the_switch


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://0x7f000001/", "canonical dotted-quad"),
        ("http://127.1/", "canonical dotted-quad"),
        ("http://user:pass@127.0.0.1/", "credentials"),
        ("ftp://127.0.0.1/", "scheme must be https or http"),
        ("http://[fe80::1%25eth0]/", "zone identifiers"),
        ("http://xn--a.localhost:8080/", "invalid host name"),
    ],
)
def test_allow_private_still_refuses_malformed_urls(url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=reason):
        check_url(url, allow_private=True)


def test_unsafe_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="scheme"):
        check_url("http://example.com/", allow_private=False)


# ---------------------------------------------------------------------------------------------
# is_public_address


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",  # IPv4-mapped public
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        # IPv4
        "0.0.0.0",  # noqa: S104  (an address under test, not a bind)
        "0.1.2.3",  # 0.0.0.0/8
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.0.1",
        "169.254.169.254",  # AWS / GCP / Azure metadata
        "100.100.100.200",  # Alibaba metadata
        "100.64.0.1",  # CGNAT
        "100.127.255.254",
        "192.0.0.8",  # IETF protocol assignments (Python calls it global)
        "192.0.2.1",  # TEST-NET-1
        "198.51.100.1",  # TEST-NET-2
        "203.0.113.1",  # TEST-NET-3
        "198.18.0.1",  # benchmarking
        "192.88.99.1",  # 6to4 relay anycast
        "224.0.0.1",  # multicast (Python calls it global)
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",  # broadcast
        # IPv6
        "::",
        "::1",
        "fc00::1",
        "fd00::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fe80::1",
        "fec0::1",  # deprecated site-local (Python calls it global)
        "ff02::1",  # multicast (Python calls it global)
        "ff0e::1",
        "2001:db8::1",  # documentation
        "3fff::1",  # documentation (RFC 9637)
        "2001:2::1",  # benchmarking
        "100::1",  # discard-only
        "5f00::1",  # SRv6
        "64:ff9b:1::1",  # local-use NAT64
        # IPv6 forms embedding a non-public IPv4
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible (Python calls it global)
        "::808:808",  # IPv4-compatible is deprecated, refused whatever it embeds
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1 (Python calls it global)
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001:0:7f00:1:0:0:0:1",  # Teredo with a loopback server
        "::ffff:0:7f00:1",  # SIIT IPv4-translated
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


def test_scoped_ipv6_is_not_public() -> None:
    assert not is_public_address(ipaddress.IPv6Address("2606:4700::1111%eth0"))


def test_metadata_addresses_are_refused() -> None:
    assert METADATA_ADDRESSES
    assert not any(is_public_address(ip) for ip in METADATA_ADDRESSES)


# ---------------------------------------------------------------------------------------------
# Resolution


class FakeResolver(AbstractResolver):
    """Answers from a table; never touches DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        self.closed = True


FAKE_DNS = {
    "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
    "private.example": ["10.0.0.7"],
    "metadata.example": ["169.254.169.254"],
    "loopback6.example": ["::1"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],  # one bad answer is enough to refuse
    "mapped.example": ["::ffff:127.0.0.1"],
    "garbage.example": ["not-an-address"],
    "empty.example": [],
}


async def test_guarded_resolver_returns_public_answers(no_network: None) -> None:
    resolver = GuardedResolver(allow_private=False, inner=FakeResolver(FAKE_DNS))
    results = await resolver.resolve("public.example", 443, family=socket.AF_UNSPEC)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:2800:220:1::1"]
    assert all(r["port"] == 443 for r in results)


@pytest.mark.parametrize(
    "host",
    [
        "private.example",
        "metadata.example",
        "loopback6.example",
        "mixed.example",
        "mapped.example",
        "garbage.example",
    ],
)
async def test_guarded_resolver_refuses_non_public_answers(no_network: None, host: str) -> None:
    resolver = GuardedResolver(allow_private=False, inner=FakeResolver(FAKE_DNS))
    with pytest.raises(AddressRefused) as caught:
        await resolver.resolve(host, 443)
    assert str(caught.value) == f"{host} resolves to a non-public address"  # not which
    assert isinstance(caught.value, UnsafeWebhookUrl)
    assert isinstance(caught.value, OSError)


async def test_guarded_resolver_allow_private_passes_everything(no_network: None) -> None:
    resolver = GuardedResolver(allow_private=True, inner=FakeResolver(FAKE_DNS))
    results = await resolver.resolve("mixed.example", 80)
    assert [r["host"] for r in results] == ["93.184.216.34", "127.0.0.1"]


async def test_guarded_resolver_passes_dns_failures_through(no_network: None) -> None:
    resolver = GuardedResolver(allow_private=False, inner=FakeResolver(FAKE_DNS))
    with pytest.raises(socket.gaierror):
        await resolver.resolve("unknown.example", 443)
    with pytest.raises(OSError, match="no addresses") as caught:
        await resolver.resolve("empty.example", 443)
    assert not isinstance(caught.value, UnsafeWebhookUrl)


async def test_guarded_resolver_closes_inner() -> None:
    inner = FakeResolver(FAKE_DNS)
    await GuardedResolver(allow_private=False, inner=inner).close()
    assert inner.closed


async def test_resolve_public(no_network: None) -> None:
    inner = FakeResolver(FAKE_DNS)
    results = await resolve_public("public.example", 443, allow_private=False, resolver=inner)
    assert len(results) == 2
    with pytest.raises(UnsafeWebhookUrl):
        await resolve_public("private.example", 443, allow_private=False, resolver=inner)
    results = await resolve_public("private.example", 443, allow_private=True, resolver=inner)
    assert results[0]["host"] == "10.0.0.7"


def test_socket_factory_refuses_private_peer() -> None:
    with pytest.raises(AddressRefused):
        guarded_socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(AddressRefused):
        guarded_socket_factory((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 80, 0, 0)))


def test_socket_factory_makes_a_socket_for_a_public_peer() -> None:
    sock = guarded_socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 443)))
    with sock:
        assert sock.family == socket.AF_INET


def test_guard_refusal_finds_the_wrapped_refusal() -> None:
    refused = AddressRefused("x resolves to non-public address 10.0.0.1")
    assert guard_refusal(refused) is refused
    assert guard_refusal(ConnectionRefusedError(111, "Connection refused")) is None
    assert guard_refusal(ValueError("other")) is None


# ---------------------------------------------------------------------------------------------
# End to end: a real server on 127.0.0.1, the guarded connector in front of it.

BIG_BODY = b"x" * 1_000_000


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG_BODY)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/big", big)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


async def post(url: str, *, allow_private: bool, resolver: AbstractResolver | None = None) -> int:
    connector = make_connector(
        allow_private=allow_private, limit=4, limit_per_host=2, resolver=resolver
    )
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, data=b"{}", allow_redirects=False) as response,
    ):
        return response.status


def assert_refused_by_guard(exc: BaseException) -> None:
    assert isinstance(exc, aiohttp.ClientConnectorError)
    refusal = guard_refusal(exc)
    assert refusal is not None, f"not the guard: {exc!r}"
    assert "non-public address" in str(refusal)


async def test_ip_literal_loopback_refused(server: TestServer) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post(f"http://127.0.0.1:{server.port}/hook", allow_private=False)
    assert_refused_by_guard(caught.value)


async def test_localhost_name_refused(server: TestServer) -> None:
    # The real system resolver: "localhost" comes from /etc/hosts, not the network.
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post(f"http://localhost:{server.port}/hook", allow_private=False)
    assert_refused_by_guard(caught.value)
    assert isinstance(caught.value, aiohttp.ClientConnectorDNSError)


async def test_ipv6_loopback_refused(server: TestServer) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post(f"http://[::1]:{server.port}/hook", allow_private=False)
    assert_refused_by_guard(caught.value)


async def test_hex_host_refused_after_resolution(server: TestServer) -> None:
    # aiohttp hands 0x7f000001 to the resolver; getaddrinfo reads it as 127.0.0.1.
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post(f"http://0x7f000001:{server.port}/hook", allow_private=False)
    assert_refused_by_guard(caught.value)


async def test_name_rebound_to_loopback_refused(server: TestServer) -> None:
    dns = FakeResolver({"hooks.example": ["127.0.0.1"]})
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post(f"http://hooks.example:{server.port}/hook", allow_private=False, resolver=dns)
    assert_refused_by_guard(caught.value)
    assert dns.asked == ["hooks.example"]


async def test_connection_refused_is_not_a_guard_refusal(server: TestServer) -> None:
    # allow_private lets the address through; nothing listens on port 1, so a plain failure.
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post("http://127.0.0.1:1/hook", allow_private=True)
    assert guard_refusal(caught.value) is None


async def test_allow_private_connects(server: TestServer) -> None:
    assert await post(f"http://127.0.0.1:{server.port}/hook", allow_private=True) == 200


async def test_connects_to_the_address_the_resolver_returned(server: TestServer) -> None:
    dns = FakeResolver({"hooks.example": ["127.0.0.1"]})
    url = f"http://hooks.example:{server.port}/hook"
    assert await post(url, allow_private=True, resolver=dns) == 200
    assert dns.asked == ["hooks.example"]


async def test_read_capped(server: TestServer) -> None:
    connector = make_connector(allow_private=True, limit=4, limit_per_host=2)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://127.0.0.1:{server.port}/big") as response:
            assert await read_capped(response) == BIG_BODY[:4096]
        async with session.get(f"http://127.0.0.1:{server.port}/big") as response:
            assert await read_capped(response, limit=10) == b"x" * 10
        async with session.post(f"http://127.0.0.1:{server.port}/hook") as response:
            assert await read_capped(response) == b"ok"
        async with session.post(f"http://127.0.0.1:{server.port}/hook") as response:
            assert await read_capped(response, limit=0) == b""
            with pytest.raises(ValueError, match="negative"):
                await read_capped(response, limit=-1)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "0x7f.1"])
async def test_the_pooled_resolver_answers_as_aiohttps_threaded_one(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same getaddrinfo, the same answers (numeric-host quirks included), only on the
    webhook lookups' own threads (names only this machine resolves: no network)."""
    import threading

    threads: list[str] = []
    real = socket.getaddrinfo

    def recorded(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", recorded)
    for family in (socket.AF_INET, socket.AF_UNSPEC):
        try:
            expected = await aiohttp.ThreadedResolver().resolve(host, 443, family)
        except OSError:
            with pytest.raises(OSError):
                await PooledResolver().resolve(host, 443, family)
            continue
        assert await PooledResolver().resolve(host, 443, family) == expected
    assert any(name.startswith("webhook-dns") for name in threads)
