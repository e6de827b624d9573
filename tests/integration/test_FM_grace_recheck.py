"""An unanswered call whose room finished with no sign of its agent settles at the end of the
settle grace, as before 8bc48af. That change asks again, REPORTS_RETRY_S after the room
finished, about answered calls with no agent; it asked about this one too: the call, settled
`no_answer` meanwhile, got a second `room_finished_grace_over` line in its timeline 30 s
after its end (and a transaction for nothing)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_FG_no_agent_short_call import (
    NO_AGENT_NUMBER,
    hangs_up_answered,
    quiet_app,
    shown,
)
from tests.integration.test_webhooks import event_json, line_joins, place, post, sign


async def test_an_unanswered_call_settled_at_the_grace_is_not_asked_about_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("common.calls.service.REPORTS_RETRY_S", 0.6)  # 40 s, shortened
    client = await quiet_app(start_app, calls_settle_grace_s=0.2)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    finished = event_json("room_finished", call_id)
    assert await post(client, finished, sign(finished)) == 200
    settled: dict[str, Any] = {}

    async def no_answer() -> bool:  # at the grace's end (0.2 s; later on a loaded machine)
        settled.update(await shown(client, call_id))
        return bool(settled["status"] == "no_answer")

    await wait_for(no_answer, timeout=5)
    await asyncio.sleep(0.8)  # past REPORTS_RETRY_S after the room finished
    later = await shown(client, call_id)
    assert later["timeline"] == settled["timeline"]
    graces = [e for e in later["timeline"] if e["event"] == "room_finished_grace_over"]
    assert len(graces) == 1


async def test_an_answered_call_no_agent_came_to_is_still_failed_by_the_timer(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answered one is asked about again, and failed then, with no reaper pass."""
    monkeypatch.setattr("common.calls.service.REPORTS_RETRY_S", 0.6)
    client = await quiet_app(start_app, calls_settle_grace_s=0.2)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await hangs_up_answered(client, call_id)

    async def failed() -> bool:
        return bool((await shown(client, call_id))["status"] == "failed")

    await wait_for(failed, timeout=5)
    # Failed by the timer, REPORTS_RETRY_S after the room finished, not by the 0.2 s grace
    # (read from its timeline: a look for in_progress 0.4 s on could come after the 0.6 s timer
    # on a loaded machine).
    timeline = (await shown(client, call_id))["timeline"]
    finished = next(at(e) for e in timeline if e["event"] == "room_finished")
    ended = next(at(e) for e in timeline if e["to"] == "failed")
    assert ended - finished >= 0.55, timeline


def at(entry: dict[str, Any]) -> float:
    """When a timeline entry was written (its `at`, to the millisecond)."""
    return dt.datetime.fromisoformat(entry["at"]).timestamp()
