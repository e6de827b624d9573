"""The README's local receiver (`python -m sandbox.receiver`): one line per event, for a
call's events and a campaign's alike (a campaign's line said `None` for what it was about)."""

from __future__ import annotations

from sandbox.receiver import describe


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
