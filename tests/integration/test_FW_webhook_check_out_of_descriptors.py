"""A call's webhook_url looked up while this server had no file descriptor left is not the
client's error.

The host of a call's `webhook_url` is resolved as the call is placed; the lookup's failure
was answered 422 `webhook_url: <host> does not resolve to an address`. With every descriptor
in use getaddrinfo fails (it opens /etc/hosts and a socket; glibc then says EMFILE, or at
times "Name or service not known"): seen on the real server.py under `ulimit -n 256`, 600
calls 300 at once with `webhook_url` http://localhost:<port>/hook, 471 were answered that
422, a final answer a client does not retry, for a URL that was fine. It is now a 503 with
Retry-After saying this server is out of file descriptors (two runs after: 51 and 0 such
422s, where a descriptor freed between the lookup and the check of why it failed).
"""

from __future__ import annotations

from tests.conftest import AppFactory
from tests.integration.test_customer_webhooks import SECRET
from tests.unit.test_FW_livekit_out_of_descriptors import refused_for_want_of_descriptors


async def test_a_webhook_host_looked_up_with_no_descriptor_left_is_a_503(
    start_app: AppFactory,
) -> None:
    client = await start_app(calls_webhook_secret=SECRET, calls_webhook_allow_private=True)
    body = {"phone_number": "+14155557701", "webhook_url": "http://localhost:9/hooks"}
    resp = await client.get("/healthz")  # a connection kept open
    assert resp.status == 200
    await refused_for_want_of_descriptors(client, "/calls/outbound", body)
