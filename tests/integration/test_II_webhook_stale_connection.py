"""A customer webhook sent on a kept-alive connection that its receiver closed as it was sent
(a receiver closing idle connections after its own few seconds, without saying so) is sent
again at once on a new connection, not left for the retry ladder's next step (5 s)."""

from __future__ import annotations

import asyncio

from handlers.keys import EVENTS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_customer_webhooks import place, webhook_app
from tests.integration.test_dz_webhook_failures import raw_server

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


async def test_a_webhook_on_a_connection_its_receiver_closed_is_sent_again_at_once(
    start_app: AppFactory,
) -> None:
    """The receiver answers the first request of each connection, then reads the next one
    whole and closes without an answer: each event after the first went out on the closed
    connection and was recorded as failed ("closed the connection without one"), sent again
    on the ladder."""
    requests: list[bytes] = []

    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await _read_request(reader))
        writer.write(NO_CONTENT)
        await writer.drain()
        try:
            await _read_request(reader)  # the next one on this connection: not answered
        except asyncio.IncompleteReadError:  # the client closed it first
            pass
        writer.close()

    async with raw_server(answers_once) as port:
        # A ladder whose next step is an hour away: a delivery left to it is not sent again.
        client = await webhook_app(
            start_app, f"http://127.0.0.1:{port}/hooks", calls_webhook_retry_schedule=(0, 3600)
        )
        call_id = await place(client, SEED_EXAMPLES[0])
        await client.app[SANDBOX].wait_idle(10)
        await client.app[EVENTS].wait_idle(10)
        async with asyncio.timeout(10):  # until every one is sent, or one failed
            while True:
                got = await client.get(f"/calls/{call_id}/deliveries")
                listed = (await got.json())["deliveries"]
                if any(d["last_error"] for d in listed):
                    break
                if listed and all(d["state"] != "pending" for d in listed):
                    break
                await asyncio.sleep(0.02)
    assert len(listed) >= 3, listed
    assert [(d["state"], d["attempts"]) for d in listed] == [("delivered", 1)] * len(listed)
    assert len(requests) == len(listed)  # each answered once, on a connection of its own
