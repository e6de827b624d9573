"""A job refused for a config it could not use says why in the call's outcome.

An agent older than its server (an upgrade of the server first) cannot read a config that
names a language or an option it does not know: it refuses the job and hangs up, as it
must. Each such call was recorded "the agent had no config for this call", though the
dispatch carried the call's config, and why it was refused was in the agent's log alone.
"""

from __future__ import annotations

from typing import cast

from livekit.agents import JobContext

from agent.config_source import NoCallConfigError, select_config
from agent.plan import SessionPlan
from agent.worker import entrypoint
from common.contracts import RoomMetadata
from common.settings import Settings
from tests.unit.test_agent_worker import (  # noqa: F401 - the fixtures, by name
    FakeJobContext,
    built_plans,
    make_job,
    settings,
)

REASON_CHARS = 200  # what the room's outcome keeps of a reason (MAX_OUTCOME_REASON_CHARS)


def outcome_of(ctx: FakeJobContext) -> RoomMetadata:
    (update,) = ctx.api.room.metadata_updates
    return RoomMetadata.parse(update.metadata)


async def test_a_snapshot_in_a_language_the_agent_does_not_know_is_the_reason(
    settings: Settings,  # noqa: F811
    built_plans: list[SessionPlan],  # noqa: F811
) -> None:
    snapshot = {"call_id": "call-newer", "caller_name": "Dana", "tts_language": "xx"}
    ctx = FakeJobContext(make_job("call-newer", config=snapshot))

    await entrypoint(cast(JobContext, ctx))

    assert built_plans == [] and ctx.deleted_rooms == ["call-newer"]
    outcome = outcome_of(ctx)
    assert outcome.outcome == "failed"
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        "the agent could not use this call's config: dispatch snapshot is invalid:"
        " unsupported tts_language 'xx'"
    )
    assert len(outcome.reason) <= REASON_CHARS
    assert "Dana" not in outcome.reason


async def test_a_snapshot_of_another_call_is_the_reason(
    settings: Settings,  # noqa: F811
    built_plans: list[SessionPlan],  # noqa: F811
) -> None:
    snapshot = {"call_id": "call-other", "caller_name": "Someone Else"}
    ctx = FakeJobContext(make_job("call-mine", config=snapshot))

    await entrypoint(cast(JobContext, ctx))

    assert built_plans == []
    assert outcome_of(ctx) == RoomMetadata(
        outcome="failed",
        reason="the agent could not use this call's config: dispatch snapshot belongs to"
        " call 'call-other'",
        spoke=False,  # it refused before a word: an answered call settles failed
    )


async def test_no_config_at_all_is_still_said_so(
    settings: Settings,  # noqa: F811
    built_plans: list[SessionPlan],  # noqa: F811
) -> None:
    ctx = FakeJobContext(make_job("call-bare"))

    await entrypoint(cast(JobContext, ctx))

    assert outcome_of(ctx) == RoomMetadata(
        outcome="failed", reason="the agent had no config for this call", spoke=False
    )


def test_the_reason_names_each_problem_but_the_absent_ones() -> None:
    record = {"call_id": "call-a", "caller_name": "Ann", "written_at": 10.0}
    try:
        select_config("call-a", record, None, room_created_at=5.0)
    except NoCallConfigError as exc:
        reason = exc.outcome_reason
    else:
        raise AssertionError("a record written after the room, and no snapshot, is refused")
    assert reason == (
        "the agent could not use this call's config: config.json record written 5.000 s"
        " after the room was created"
    )
