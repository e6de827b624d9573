"""Without CALLS_API_TOKEN, reaching the server is the only credential, and a web page open in
a browser on the same machine can reach 127.0.0.1: a form posted there (no CORS preflight for
text/plain or multipart) placed calls and created campaigns, and a page on a name re-pointed
at 127.0.0.1 (DNS rebinding) read the calls back. Browsers mark such requests (Origin, Host,
Sec-Fetch-Site) and a page cannot change those headers: they are refused (403), while curl,
requests and SDKs, which send none of them, are served as before.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.settings import LIVEKIT_DEV_KEYS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES

Client = TestClient[Any, Any]

BODY = json.dumps(SEED_EXAMPLES[0])


def dials(client: Client) -> int:
    return sum(1 for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant")


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example", "Content-Type": "text/plain"},
        {"Origin": "null", "Content-Type": "text/plain"},  # a sandboxed frame, a file:// page
        {"Origin": "http://127.0.0.1:1", "Content-Type": "text/plain"},  # another local port
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
        {"Host": "rebound.evil.example:8000"},
        {"Host": "rebound.evil.example:8000", "Origin": "http://rebound.evil.example:8000"},
        # Names only some hosts files hold (macOS's has `localhost` alone, Fedora's no ip6-*,
        # Windows' none): elsewhere the network's DNS answers them, and can rebind them.
        {"Host": "localhost.localdomain:8000", "Origin": "http://localhost.localdomain:8000"},
        {"Host": "ip6-localhost:8000", "Origin": "http://ip6-localhost:8000"},
    ],
    ids=[
        "other-site",
        "null",
        "other-port",
        "sec-fetch-site",
        "rebinding",
        "rebinding-origin",
        "rebinding-localdomain",
        "rebinding-ip6-localhost",
    ],
)
async def test_a_web_pages_request_places_no_call(
    start_app: AppFactory, headers: dict[str, str]
) -> None:
    client = await start_app()
    resp = await client.post("/calls/outbound", data=BODY, headers=headers)
    assert resp.status == 403
    assert "CALLS_API_TOKEN" in (await resp.json())["error"]
    assert dials(client) == 0
    form = await client.post(
        "/campaigns",
        data={"options": json.dumps({"name": "x"}), "recipients": "phone_number\n+14155557705"},
        headers=headers,
    )
    assert form.status == 403
    assert (await (await client.get("/campaigns")).json())["campaigns"] == []


async def test_a_rebound_page_cannot_read_the_calls(start_app: AppFactory) -> None:
    client = await start_app()
    assert (await client.post("/calls/outbound", data=BODY)).status == 200
    stolen = await client.get("/calls", headers={"Host": "rebound.evil.example:8000"})
    assert stolen.status == 403
    assert "+1234567890" not in await stolen.text()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Host": "localhost:8000"},
        {"Host": "LOCALHOST.:8000"},
        {"Host": "127.0.0.1"},
        {"Host": "[::1]:8000"},
        {"Host": "api.localhost:8000"},
        {"Host": "localhost:8000", "Origin": "http://localhost:8000"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
async def test_clients_on_this_machine_are_served(
    start_app: AppFactory, headers: dict[str, str]
) -> None:
    client = await start_app()
    resp = await client.post(
        "/calls/outbound", data=BODY, headers={"Content-Type": "application/json", **headers}
    )
    assert resp.status == 200, await resp.text()
    assert (await client.get("/calls", headers=headers)).status == 200


async def test_with_a_token_the_token_decides(start_app: AppFactory) -> None:
    """A browser cannot send an Authorization header cross-site without a preflight (which
    this server never grants), and a page does not know the token: the token is enough, and
    servers behind a load balancer see any Host."""
    client = await start_app(calls_api_token="s3cret-token-for-tests")
    headers = {"Authorization": "Bearer s3cret-token-for-tests", "Host": "calls.example.com"}
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await client.get("/calls", headers={"Host": "calls.example.com"})).status == 401


async def test_health_and_machine_routes_are_not_concerned(start_app: AppFactory) -> None:
    client = await start_app()
    evil = {"Host": "rebound.evil.example", "Origin": "http://evil.example"}
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert (await client.get(path, headers=evil)).status == 200


async def test_a_rebound_page_cannot_post_signed_events_with_the_public_secret(
    start_app: AppFactory,
) -> None:
    """The embedded sandbox's signing secret is in the source: after DNS rebinding, a page is
    on this machine and may set Authorization, so the signed routes refuse web pages too."""
    from tests.integration.test_webhooks import PATH, event_json, sign

    client = await start_app(sandbox_time_scale=100.0)  # the call rings on
    client.app[SANDBOX].webhook_url = None
    call_id = (await (await client.post("/calls/outbound", data=BODY)).json())["call_id"]
    body = event_json("room_finished", call_id)
    for headers in (
        {"Host": "rebound.evil.example:8000"},
        {"Origin": "http://evil.example"},
    ):
        resp = await client.post(
            PATH,
            data=body,
            headers={"Authorization": sign(body), "Content-Type": "application/json", **headers},
        )
        assert resp.status == 403
        assert "a web page sent this" in (await resp.json())["error"]
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["status"] not in ("no_answer", "completed", "failed")
    resp = await client.post(PATH, data=body, headers={"Authorization": sign(body)})
    assert resp.status == 200  # LiveKit's own post (the sandbox's) is taken


async def test_the_public_base_url_names_this_server(start_app: AppFactory) -> None:
    client = await start_app(public_base_url="http://calls.internal:8000")
    assert (await client.get("/calls", headers={"Host": "calls.internal:8000"})).status == 200
    assert (await client.get("/calls", headers={"Host": "other.internal:8000"})).status == 403


PROXY_HEADERS = [
    {"X-Forwarded-For": "203.0.113.9"},  # Caddy, Traefik, Apache, HAProxy, most nginx configs
    {"X-Real-IP": "203.0.113.9"},
    {"Forwarded": "for=203.0.113.9;proto=https"},
    {"X-Forwarded-Host": "calls.example.com"},
    {"X-Forwarded-Proto": "https"},
    {"Via": "1.1 proxy.example"},
    {"CF-Connecting-IP": "203.0.113.9"},
]


@pytest.mark.parametrize("headers", PROXY_HEADERS, ids=lambda h: next(iter(h)))
async def test_without_a_token_a_proxied_request_is_refused(
    start_app: AppFactory, headers: dict[str, str]
) -> None:
    """A reverse proxy on this machine passing requests to 127.0.0.1 with the upstream's Host
    (nginx's default) opened the whole API to its clients: the web page check never fired."""
    client = await start_app()
    resp = await client.post(
        "/calls/outbound", data=BODY, headers={"Content-Type": "application/json", **headers}
    )
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert "proxy" in error and "set CALLS_API_TOKEN" in error
    assert dials(client) == 0
    stolen = await client.get("/calls", headers=headers)
    assert stolen.status == 403


async def test_without_a_token_nginxs_default_proxy_pass_is_refused(start_app: AppFactory) -> None:
    """nginx's bare `proxy_pass http://127.0.0.1:8000;` adds no header: it speaks HTTP/1.0,
    with `Host: 127.0.0.1:8000` and `Connection: close`."""
    client = await start_app()
    assert (await client.post("/calls/outbound", data=BODY)).status == 200
    port = client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET /calls HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"403", head
    assert b"+1234567890" not in body and b"CALLS_API_TOKEN" in body


@pytest.mark.parametrize("headers", PROXY_HEADERS[:2], ids=lambda h: next(iter(h)))
async def test_with_a_token_a_proxied_request_is_served(
    start_app: AppFactory, headers: dict[str, str]
) -> None:
    client = await start_app(calls_api_token="s3cret-token-for-tests")
    auth = {"Authorization": "Bearer s3cret-token-for-tests", **headers}
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=auth)
    assert resp.status == 200, await resp.text()
    assert (await client.get("/calls", headers=auth)).status == 200


async def test_signed_routes_are_taken_through_a_proxy(start_app: AppFactory) -> None:
    """LiveKit's webhooks prove who sent them by their signature (a secret of our own, not
    the sandbox's public one): a proxy in front changes nothing, with or without a token."""
    from tests.integration.test_webhooks import PATH, event_json, sign

    key, secret = "APIproxytest", "a-private-secret-0123456789abcdef"
    client = await start_app(livekit_api_key=key, livekit_api_secret=secret)
    client.app[SANDBOX].webhook_url = None
    call_id = (await (await client.post("/calls/outbound", data=BODY)).json())["call_id"]
    body = event_json("room_finished", call_id)
    resp = await client.post(
        PATH,
        data=body,
        headers={
            "Authorization": sign(body, key, secret),
            "Content-Type": "application/json",
            "X-Forwarded-For": "203.0.113.9",
            "X-Real-IP": "203.0.113.9",
        },
    )
    assert resp.status == 200, await resp.text()


async def test_the_public_secret_is_not_taken_through_a_proxy(start_app: AppFactory) -> None:
    """On the embedded sandbox the signing secret is public, and coming from this machine is
    what proves a webhook LiveKit's: a proxy on this machine posts from loopback for any of
    its clients, who could settle calls with that secret."""
    from tests.integration.test_webhooks import PATH, event_json, sign

    client = await start_app(sandbox_time_scale=100.0)  # the call rings on
    client.app[SANDBOX].webhook_url = None
    call_id = (await (await client.post("/calls/outbound", data=BODY)).json())["call_id"]
    body = event_json("room_finished", call_id)
    for headers in PROXY_HEADERS:
        resp = await client.post(
            PATH,
            data=body,
            headers={"Authorization": sign(body), "Content-Type": "application/json", **headers},
        )
        assert resp.status == 403
        assert "a proxy passed this on" in (await resp.json())["error"]
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["status"] not in ("no_answer", "completed", "failed")
    resp = await client.post(PATH, data=body, headers={"Authorization": sign(body)})
    assert resp.status == 200


# PyJWT warns of the 6-byte secret (the suite makes warnings errors).
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_a_rebound_page_cannot_post_signed_events_with_livekit_devs_secret(
    start_app: AppFactory,
) -> None:
    """livekit-server --dev's key pair (`devkey`, `secret`) is public too: a page on a name
    re-pointed at 127.0.0.1 posted a room_finished signed with it, as same-origin (its own
    Origin and Host), and a live call was settled `no_answer` (200 applied). What a browser
    sends is refused; LiveKit's posts, which carry none of it, are taken, under any Host."""
    from common.contracts import REPORTS_PATH
    from common.signing import sign_body
    from tests.integration.test_webhooks import PATH, event_json

    key, secret = LIVEKIT_DEV_KEYS
    client = await start_app(livekit_api_key=key, livekit_api_secret=secret)
    body = event_json("room_finished", "call-0123456789ab")
    page = "http://rebound.evil.example:8000"
    for headers in (
        {"Host": "rebound.evil.example:8000", "Origin": page},
        {"Host": "rebound.evil.example:8000", "Sec-Fetch-Site": "same-origin"},
    ):
        resp = await client.post(
            PATH,
            data=body,
            headers={"Authorization": sign_body(body, key, secret), **headers},
        )
        assert resp.status == 403, await resp.text()
        assert "livekit-server --dev" in (await resp.json())["error"]
    report = b'{"call_id": "call-0123456789ab", "seq": 0, "kind": "do_not_call", "at": 1}'
    resp = await client.post(
        REPORTS_PATH,
        data=report,
        headers={
            "Authorization": sign_body(report, key, secret, room="call-0123456789ab"),
            "Host": "rebound.evil.example:8000",
            "Origin": page,
        },
    )
    assert resp.status == 403, await resp.text()
    resp = await client.post(
        PATH,
        data=body,
        headers={
            "Authorization": sign_body(body, key, secret),
            "Host": "host.docker.internal:8000",
        },
    )
    assert resp.status == 200, await resp.text()
