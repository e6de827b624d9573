"""CallStore.agent_seen: any server's sign of a call's agent (its report, its participant
joining or leaving the room), read by the server deciding the call's end."""

from __future__ import annotations

from common.calls.models import NewCall
from common.contracts import AgentReport
from common.storage.base import CallStore
from common.storage.programs import AGENT_JOINED_DETAIL, AGENT_LEFT_DETAIL

CALL = "call-0000000fg003"


async def _call(store: CallStore) -> None:
    await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
    await store.start_dial(CALL)


async def test_no_sign_of_an_agent(store: CallStore) -> None:
    await _call(store)
    await store.apply(CALL, "participant_joined", lambda _s: None, event_id="EV_fg_sip")
    assert await store.agent_seen(CALL) is False
    assert await store.agent_seen("call-000000unknown") is False


async def test_its_participant_joining_or_leaving(store: CallStore) -> None:
    await _call(store)
    await store.apply(
        CALL,
        "participant_joined",
        lambda _s: None,
        event_id="EV_fg_agent",
        detail={AGENT_JOINED_DETAIL: True},
    )
    assert await store.agent_seen(CALL) is True
    other = "call-0000000fg004"
    await store.create_call(NewCall(other, "+14155557702", "Bob", "en", "Calm"))
    await store.apply(other, "participant_left", lambda _s: None, detail={AGENT_LEFT_DETAIL: True})
    assert await store.agent_seen(other) is True


async def test_a_report_of_it(store: CallStore) -> None:
    await _call(store)
    await store.record_reports([AgentReport(call_id=CALL, seq=0, kind="answered", at=1.0)])
    assert await store.agent_seen(CALL) is True
