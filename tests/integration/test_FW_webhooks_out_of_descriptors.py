"""A customer webhook this server had no file descriptor to send with is not the receiver's
failure, and is not an attempt.

Seen on the real server.py under `ulimit -n 256`, 300 calls at once, a receiver closing each
connection: the sends whose connection could not be opened (`[Errno 24] Too many open
files`) were recorded as the receiver's failures, `connection failed: refused or unreachable
(is the receiver up, on that port?)` in 47 of the first 169 deliveries, which the customer
reads, and in a WARNING naming the receiver; each took a step of the retry schedule (5 s,
30 s, 2 min, 10 min, ...): minutes out of descriptors push events an hour back, and the
schedule's last step gives them up for good (here, with a short schedule, at once). Such a
send is now given back unattempted, tried again 2 s later, and the log says once a minute
that this server is out of file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from common.notify import deliveries
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, wait_for
from tests.integration.test_customer_webhooks import (
    Receiver,
    place,
    settle,
    start_receiver,
    webhook_app,
)
from tests.processes import free_port
from tests.unit.test_FW_livekit_out_of_descriptors import no_descriptor_left


class ClosingReceiver(Receiver):
    """Closes each connection after its answer: every send opens a new one."""

    async def handle(self, request: web.Request) -> web.Response:
        resp = await super().handle(request)
        resp.force_close()
        return resp


async def test_a_send_with_no_descriptor_left_is_tried_again_not_counted_as_failed(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(deliveries, "NO_DESCRIPTOR_DEFER_S", 0.3, raising=False)
    receiver = ClosingReceiver(free_port())
    runner = await start_receiver(receiver)
    try:
        client = await webhook_app(start_app, receiver.url)  # retries 0, 0.05, 0.1, 0.2 s
        call_id = await place(client, SEED_EXAMPLES[0])
        await settle(client)
        listed = await (await client.get(f"/calls/{call_id}/deliveries")).json()
        first: dict[str, Any] = listed["deliveries"][0]
        assert first["state"] == "delivered", first
        sent = len(receiver.got)
        caplog.set_level(logging.INFO, logger="common.notify")
        with no_descriptor_left():
            resp = await client.post(f"/deliveries/{first['id']}/redeliver")
            assert resp.status == 202, await resp.text()
            await asyncio.sleep(1.0)  # the whole schedule, four times over

        async def sent_again() -> bool:
            return len(receiver.got) > sent

        await wait_for(sent_again, timeout=10)
        assert receiver.got[-1].webhook_id == first["webhook_id"]
        await settle(client)
        listed = await (await client.get(f"/calls/{call_id}/deliveries")).json()
        delivery = next(d for d in listed["deliveries"] if d["id"] == first["id"])
        assert delivery["state"] == "delivered", delivery
        assert delivery["attempts"] == first["attempts"] + 1, delivery  # the one that went
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [line for line in lines if "refused or unreachable" in line], lines
        said = [line for line in lines if "out of file descriptors" in line]
        assert len(said) == 1, lines
    finally:
        await runner.cleanup()
