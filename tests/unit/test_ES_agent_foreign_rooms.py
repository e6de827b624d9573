"""A job in a room that is not one of our calls (another app of the same LiveKit project
dispatching to the default agent name `outbound-caller`) is refused and the room is left as
it is: the agent recorded `failed` in that room's metadata and deleted the room, ending the
other app's session. A room it can prove is our call (its dispatch names it, with the number
the server dials into it; or config.json holds its record) is still hung up on."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast

import pytest
from livekit import api
from livekit.agents import JobContext
from livekit.protocol import agent as agent_proto
from livekit.protocol import models

from agent.worker import entrypoint
from common.config_store.store import ConfigStore
from common.settings import Settings
from tests.unit.test_agent_worker import FakeJobContext, make_job, reporting_to
from tests.unit.test_agent_worker import settings as settings  # noqa: F401 - a fixture


def foreign_job(room: str, metadata: str) -> agent_proto.Job:
    now_ms = int(time.time() * 1000)
    lk_room = models.Room(name=room, creation_time=now_ms // 1000, creation_time_ms=now_ms)
    return agent_proto.Job(id=f"job-{room}", room=lk_room, metadata=metadata)


@pytest.mark.parametrize(
    ("room", "metadata"),
    [
        ("support-chat-42", ""),  # another app's room, no metadata
        ("support-chat-42", '{"user": "alice", "topic": "billing"}'),
        # a `config` object read as a call's snapshot (every field has a default): the agent
        # talked in the room with the defaults, then deleted it as a call not answered
        ("support-chat-42", '{"config": {"theme": "dark"}}'),
        ("support-chat-42", '{"call_id": "call-0123456789ab"}'),  # names a call, not this room
        ("call-42", '{"call_id": "call-42"}'),  # its own name, and no number dialled into it
    ],
)
async def test_a_room_that_is_not_one_of_our_calls_is_left_alone(
    settings: Settings,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
    room: str,
    metadata: str,
) -> None:
    ctx = FakeJobContext(foreign_job(room, metadata))
    await entrypoint(cast(JobContext, ctx))
    assert not ctx.connected
    assert ctx.deleted_rooms == [] and ctx.api.room.metadata_updates == []
    assert ctx.shutdown_reasons == ["not one of our calls"]
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    said = warning.getMessage()
    assert f"room {room!r} is not one of our calls" in said
    assert "AGENT_NAME='outbound-caller'" in said
    for callback in ctx.shutdown_callbacks:  # no report about another app's room
        await asyncio.wait_for(callback("not one of our calls"), 5)


async def test_a_foreign_room_naming_a_report_url_gets_no_report(
    settings: Settings,  # noqa: F811 - the fixture
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's reports go to the URL its dispatch names: another app's room posted a
    final report, signed with our key, about a "call" that is that app's room."""
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    ctx = FakeJobContext(foreign_job("support-chat-42", json.dumps({"report_url": url})))
    await entrypoint(cast(JobContext, ctx))
    for callback in ctx.shutdown_callbacks:
        await asyncio.wait_for(callback("not one of our calls"), 10)
    assert ctx.deleted_rooms == [] and reports.reports == []


async def test_our_call_without_a_usable_snapshot_is_still_hung_up(
    settings: Settings,  # noqa: F811 - the fixture
) -> None:
    """Ours by its dispatch (its call id is the room's, the number dialled into it named),
    its snapshot unreadable (a newer server's language, say): the callee must not hear
    silence, so its room is deleted, the reason on it."""
    ctx = FakeJobContext(make_job("call-ours", config={"tts_language": "xx-new"}))
    await entrypoint(cast(JobContext, ctx))
    assert ctx.deleted_rooms == ["call-ours"]
    assert ctx.shutdown_reasons == ["no config for this call"]


async def test_our_call_known_by_its_config_record_is_still_hung_up(
    settings: Settings,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its dispatch metadata lost (no call id), but config.json holds the record the server
    wrote for this room's call (one it cannot use, written after the room): ours."""
    store = ConfigStore(settings.config_path)
    await store.update_async("Late Record", call_id="call-known")
    created_ms = int(time.time() * 1000) - 5_000
    room = models.Room(
        name="call-known", creation_time=created_ms // 1000, creation_time_ms=created_ms
    )
    ctx = FakeJobContext(agent_proto.Job(id="job-known", room=room, metadata=""))
    await entrypoint(cast(JobContext, ctx))
    assert ctx.deleted_rooms == ["call-known"]
    assert isinstance(ctx.api.room.metadata_updates[0], api.UpdateRoomMetadataRequest)
