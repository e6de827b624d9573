"""A LiveKit request that ran out of time before it was sent is not one that may have been
carried out. Every timeout was read as "LiveKit did not answer" (a 504; for a dial, one that
may have rung: the call recorded failed, its Idempotency-Key kept, a campaign's attempt not
tried again), also when nothing had left this server: a LiveKit host accepting no connection
(down, a network dropping packets) or a burst of dials waiting behind slow requests for the
session's connections (aiohttp's 100). Those are now "unavailable, not sent" (a 503 with
Retry-After, the key freed); a dial sent and unanswered still may have rung."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web
from livekit import api

from common.livekit import client
from common.livekit.client import (
    LiveKitError,
    LiveKitTimeout,
    LiveKitUnavailable,
    create_client,
    create_session,
    dial,
)
from common.settings import Settings
from tests.helpers import serving

NOT_SENT = "the request was not sent"
POOL = 100  # aiohttp's connections per session, which create_session keeps


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "REQUEST_TIMEOUT_S", 0.5)


async def _dial(url: str) -> LiveKitError:
    async with create_session() as session:
        lkapi = create_client(Settings(), url, session)
        with pytest.raises(LiveKitError) as caught:
            await _placed(lkapi)
    return caught.value


async def _placed(lkapi: api.LiveKitAPI) -> None:
    await dial(
        lkapi,
        Settings(),
        call_id="call-not-sent",
        phone_number="+14155550100",
        ringing_timeout_s=30,
        max_duration_s=600,
    )


@contextlib.contextmanager
def accepting_nothing() -> Iterator[int]:
    """A port whose listener accepts no connection and whose queue is full: a connection to it
    is never made (the SYN dropped, as by a host down behind a firewall)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # the accept queue holds one or two; the rest wait unanswered
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_dial_to_a_host_that_accepts_no_connection_was_not_sent() -> None:
    with accepting_nothing() as port:
        error = await _dial(f"http://127.0.0.1:{port}")
    assert isinstance(error, LiveKitUnavailable), error
    assert NOT_SENT in str(error) and "SIP dial" in str(error), error
    assert not error.maybe_done


async def test_a_dial_waiting_behind_slow_requests_for_a_connection_was_not_sent() -> None:
    dials: list[str] = []
    release = asyncio.Event()

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        if request.path.endswith("/CreateSIPParticipant"):
            dials.append(request.path)
        else:
            await release.wait()  # ListRooms: LiveKit slow to answer
        body = api.SIPParticipantInfo(participant_id="PA_1").SerializeToString()
        return web.Response(body=body, content_type="application/protobuf")

    async with serving(twirp) as url, create_session() as session:
        lkapi = create_client(Settings(), url, session)
        slow = [
            asyncio.create_task(lkapi.room.list_rooms(api.ListRoomsRequest())) for _ in range(POOL)
        ]
        await asyncio.sleep(0.2)  # every connection of the session taken
        with pytest.raises(LiveKitError) as caught:
            await _placed(lkapi)
        release.set()
        await asyncio.gather(*slow, return_exceptions=True)
    error = caught.value
    assert isinstance(error, LiveKitUnavailable), error
    assert NOT_SENT in str(error) and not error.maybe_done, error
    assert dials == []  # LiveKit never saw it


async def test_a_dial_sent_and_unanswered_may_still_have_rung() -> None:
    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(2)
        return web.Response(body=b"", content_type="application/protobuf")

    async with serving(twirp) as url:
        error = await _dial(url)
    assert isinstance(error, LiveKitTimeout), error
    assert NOT_SENT not in str(error) and error.maybe_done, error
