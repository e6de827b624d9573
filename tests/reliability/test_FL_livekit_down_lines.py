"""LiveKit down or not answering: the line saying a call's config write was taken back said
'not placed (LiveKit refused it: agent dispatch: LiveKit unreachable (...))' and, for a
dispatch that timed out (which LiveKit may still carry out: seen on the real server.py with
the sandbox SIGSTOPped and resumed, its room then created), 'LiveKit refused it: ... did not
answer within 10 s'. Nothing refused the call: the operator was sent to look for a refusal.
The line says LiveKit did not place it, as the API's answer does."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from common.calls.service import CLOSE_ROOM
from handlers.keys import CALLS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import app_on_livekit


async def test_the_taken_back_line_does_not_say_livekit_refused_a_call_it_never_saw(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    await client.app[SANDBOX].stop()  # LiveKit down: nothing answers on its port
    body: dict[str, Any] = {"phone_number": "+14155550177", "name": "Lk Down"}
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 503
    answer = await resp.json()
    assert answer["error"].startswith("LiveKit did not place the call: agent dispatch:")
    lines = [
        r.getMessage() for r in caplog.records if "its config write taken back" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    assert "LiveKit refused it" not in lines[0], lines[0]
    assert "not placed (LiveKit did not place it: agent dispatch: LiveKit unreachable" in lines[0]


async def test_no_room_is_said_undeleted_when_the_dispatch_never_reached_livekit(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """LiveKit refusing connections: the dispatch made no room, yet its deletion was tried
    and failed the same way, logged "call ...: could not delete its room: ... LiveKit
    unreachable", a room that never was and nothing to do about it."""
    client = await start_app()
    await client.app[SANDBOX].stop()
    body: dict[str, Any] = {"phone_number": "+14155550178", "name": "Lk Down"}
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        resp = await client.post("/calls/outbound", json=body)
        assert resp.status == 503
        closing = [t for t in client.app[CALLS]._background if t.get_name().startswith(CLOSE_ROOM)]
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 30.0)
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name == "common.calls.service" and "room" in r.getMessage()
    ]
    assert said == [], said


async def test_a_livekit_refusing_connections_is_said_in_words_and_the_line_names_it(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """LIVEKIT_URL at a port nothing listens on: the call's reason, its API answer and the
    ERROR line said "LiveKit unreachable (ClientConnectorError)", a class's name, alike for a
    host name that does not resolve; and the line named no LiveKit (the start-up line that
    did may be days old). The reason says what connecting ran into, never the address (it
    reaches API callers); the ERROR line adds which LiveKit."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # nothing listens there
    client = await app_on_livekit(start_app, url)
    body: dict[str, Any] = {"phone_number": "+14155550179", "name": "Lk Down"}
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 503
    said = (await resp.json())["error"]
    assert said.endswith(
        "agent dispatch: LiveKit unreachable (connection refused: nothing listens on its port)"
    ), said
    assert "127.0.0.1" not in said, said
    (line,) = [r for r in caplog.records if "could not be placed" in r.getMessage()]
    assert line.levelname == "ERROR"
    assert line.getMessage().endswith(
        f"nothing listens on its port) (LiveKit at {url}, LIVEKIT_URL)"
    ), line.getMessage()
