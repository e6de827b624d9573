"""The README's local receiver (`python -m sandbox.receiver`): one line per event, for a
call's events and a campaign's alike (a campaign's line said `None` for what it was about)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.notify.signing import sign
from sandbox import receiver as receiver_module
from sandbox.receiver import MAX_BODY_BYTES, Receiver, describe

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_a_call_event_names_its_call() -> None:
    event: dict[str, object] = {
        "type": "call.ended",
        "data": {"call_id": "call-3c73ee58142c", "status": "completed"},
    }
    assert describe(event) == "call.ended call-3c73ee58142c status=completed"


def test_a_campaign_event_names_its_campaign() -> None:
    event: dict[str, object] = {
        "type": "campaign.started",
        "data": {"campaign_id": "cmp-1", "status": "running"},
    }
    assert describe(event) == "campaign.started cmp-1 status=running"


async def test_a_large_event_arriving_in_pieces_is_verified_whole() -> None:
    """It read what had come so far: a 900 KB call.report (a long transcript) failed its
    signature check (401), and the call's later events waited behind its retries."""
    event = {"type": "call.report", "data": {"call_id": "call-1", "summary": "x" * 900_000}}
    body = json.dumps(event).encode()
    headers = sign(SECRET, "msg_call-1_1", datetime.now(UTC), body)
    out = io.StringIO()

    async def in_pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]
            await asyncio.sleep(0.001)

    async with TestClient(TestServer(Receiver(SECRET, out).app())) as client:
        resp = await client.post("/hooks", data=in_pieces(), headers=headers)
        assert resp.status == 204, out.getvalue()
        too_big = b"x" * (MAX_BODY_BYTES + 1)
        resp = await client.post("/hooks", data=io.BytesIO(too_big), headers=headers)
        assert resp.status == 413
    assert out.getvalue().startswith("msg_call-1_1 call.report call-1")


async def test_it_remembers_the_latest_ids_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """It kept every webhook-id and every event's body for as long as it ran (a campaign's
    thousands of reports, each up to 2 MiB): now the latest SEEN_IDS ids, and no body."""
    monkeypatch.setattr(receiver_module, "SEEN_IDS", 3)
    out = io.StringIO()
    box = Receiver(SECRET, out)
    async with TestClient(TestServer(box.app())) as client:
        for n in [1, 2, 3, 4, 5, 5, 1]:
            body = json.dumps({"type": "call.ended", "data": {"call_id": f"call-{n}"}}).encode()
            headers = sign(SECRET, f"msg_call-{n}_1", datetime.now(UTC), body)
            assert (await client.post("/hooks", data=body, headers=headers)).status == 204
    assert list(box.seen) == ["msg_call-4_1", "msg_call-5_1", "msg_call-1_1"]
    assert not hasattr(box, "events")
    lines = out.getvalue().splitlines()
    assert lines[5].startswith("msg_call-5_1 (again) ")  # a recent repeat is still marked
    assert lines[6].startswith("msg_call-1_1 call.ended")  # one too old to be remembered
