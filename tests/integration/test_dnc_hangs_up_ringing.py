"""A number put on the do-not-call list while a call to it rings: the call is hung up.

A dial past its last look at the list when the number was listed went on: POST /dnc answered
200, and 18-87 ms later the line rang (found with two servers and a campaign). Now the listing
hangs up the calls to its numbers that nobody has answered yet, and says which; an answered
call goes on (its callee may be asking on it, and the agent ends it)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import EVENTS, STORE
from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_call_results import answered, post_report, report

Client = TestClient[Any, Any]
RINGS = "+14155550480"  # the sandbox rings it until the ringing timeout, unanswered
TALKS = "+14155557799"  # answered after 3 s (0.3 s at the test's scale), then talks


async def place(client: Client, number: str) -> str:
    # Rings for up to 120 s (12 s at the test's scale) before it is no_answer.
    body = {"phone_number": number, "name": "Dee", "ringing_timeout_s": 120}
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 200, await resp.text()
    call_id: str = (await resp.json())["call_id"]
    return call_id


async def status_of(client: Client, call_id: str) -> str:
    status: str = (await (await client.get(f"/calls/{call_id}")).json())["status"]
    return status


LISTED = "hung up: its number was put on the do-not-call list while it rang"


async def hung_up_as(client: Client, call_id: str) -> tuple[str, str, dict[str, Any]]:
    """The call's reason, ended_by and its hang-up's timeline detail."""
    call = await (await client.get(f"/calls/{call_id}")).json()
    [line] = [t for t in call["timeline"] if t["event"] == "hangup_requested"]
    return call["reason"], call["ended_by"], line["detail"]


async def test_listing_a_ringing_number_hangs_its_call_up_and_leaves_answered_ones(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=0.1)
    ringing, talking = await place(client, RINGS), await place(client, TALKS)

    async def both_live() -> bool:
        rings = await status_of(client, ringing) in ("dialing", "ringing")
        return rings and await status_of(client, talking) == "in_progress"

    await wait_for(both_live, timeout=10)
    resp = await client.post("/dnc", json={"numbers": [RINGS, TALKS]})
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer == {
        "status": "success",
        "added": 2,
        "numbers": [RINGS, TALKS],
        "hung_up": [ringing],
    }

    async def canceled() -> bool:
        return await status_of(client, ringing) == "canceled"

    await wait_for(canceled, timeout=10)
    assert await status_of(client, talking) == "in_progress"
    assert await hung_up_as(client, ringing) == (LISTED, "api", {"by": "do_not_call"})
    await client.app[EVENTS].wait_idle()
    # Listed again: nothing left ringing, nothing hung up.
    again = await (await client.post("/dnc", json={"numbers": [RINGS]})).json()
    assert (again["added"], again["hung_up"]) == (0, [])


@pytest.mark.parametrize("marked_before", [False, True])
async def test_a_call_answered_after_the_listing_read_it_ringing_goes_on(
    start_app: AppFactory, monkeypatch: Any, marked_before: bool
) -> None:
    """Answered between the listing's read of the calls ringing and its hang-up (each
    hang-up before it waits on LiveKit): the callee is on the line, and the call goes on.
    `marked_before`: an earlier hang-up of it LiveKit failed left its mark (its WARNING
    says to hang it up again): the answer still stands."""
    client = await start_app(sandbox_time_scale=0.1)
    ringing = await place(client, RINGS)
    store = client.app[STORE]
    if marked_before:
        await store.request_hangup(ringing)
    read = store.unanswered_calls_to
    seen: list[str] = []

    async def answered_after_the_read(numbers: list[str]) -> list[str]:
        found: list[str] = await read(numbers)
        seen.extend(found)
        assert await post_report(client, answered(ringing)) == 200  # its agent says so
        return found

    async def dialled() -> bool:
        call = await store.get_call(ringing, with_timeline=False)
        return call is not None and call.dial_started_at is not None

    await wait_for(dialled, timeout=10)
    monkeypatch.setattr(store, "unanswered_calls_to", answered_after_the_read)
    resp = await client.post("/dnc", json={"numbers": [RINGS]})
    assert resp.status == 200, await resp.text()
    assert seen == [ringing]  # read ringing
    assert (await resp.json())["hung_up"] == []
    assert await status_of(client, ringing) == "in_progress"


async def test_an_agents_do_not_call_report_hangs_up_the_other_calls_ringing_to_its_number(
    start_app: AppFactory,
) -> None:
    """A callee asks the agent not to be called again while another call to the number (a
    second campaign's, say) rings: the listing hangs that one up too, as POST /dnc does;
    the call asking goes on (its agent apologises and ends it)."""
    client = await start_app(sandbox_time_scale=0.1)
    ringing, asking = await place(client, RINGS), await place(client, RINGS)
    store = client.app[STORE]

    async def both_dialled() -> bool:
        calls = [await store.get_call(c, with_timeline=False) for c in (ringing, asking)]
        return all(c is not None and c.dial_started_at is not None for c in calls)

    await wait_for(both_dialled, timeout=10)
    assert await post_report(client, answered(asking)) == 200
    assert await post_report(client, report(asking, 1, "do_not_call")) == 200

    async def canceled() -> bool:
        return await status_of(client, ringing) == "canceled"

    await wait_for(canceled, timeout=10)
    assert await status_of(client, asking) == "in_progress"
    # Nobody asked to hang this call up: its number was listed (it read "hung up through
    # the API", `by: api`).
    assert await hung_up_as(client, ringing) == (LISTED, "api", {"by": "do_not_call"})
    listed = (await (await client.get("/dnc")).json())["numbers"]
    assert [(n["phone_number"], n["call_id"]) for n in listed] == [(RINGS, asking)]


async def test_a_hang_up_that_fails_unexpectedly_leaves_the_others_hung_up(
    start_app: AppFactory, monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One of the listed number's ringing calls whose hang-up raised the unexpected (a
    defect) left the calls after it ringing, and POST /dnc answered 500 for numbers it had
    listed: now the others are hung up, and that one is said (an ERROR, with what to do)."""
    from handlers.keys import CALLS

    client = await start_app(sandbox_time_scale=0.1)
    first, second = await place(client, RINGS), await place(client, RINGS)
    store, calls = client.app[STORE], client.app[CALLS]

    async def both_dialled() -> bool:
        found = [await store.get_call(c, with_timeline=False) for c in (first, second)]
        return all(c is not None and c.dial_started_at is not None for c in found)

    await wait_for(both_dialled, timeout=10)
    hangup = calls.hangup
    broken = first  # hung up first (the store reads them in the order they were placed)

    async def failing_once(call_id: str, **kw: Any) -> Any:
        if call_id == broken:
            raise RuntimeError("a defect (test)")
        return await hangup(call_id, **kw)

    monkeypatch.setattr(calls, "hangup", failing_once)
    resp = await client.post("/dnc", json={"numbers": [RINGS]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["hung_up"] == [second]
    said = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in said] == [
        f"call {broken}: its number was put on the do-not-call list while it rang, and hanging"
        f" it up failed; hang it up with POST /calls/{broken}/hangup"
    ]


async def test_an_agents_do_not_call_report_sent_again_makes_the_hang_ups_a_cut_short_one_missed(
    start_app: AppFactory, monkeypatch: Any
) -> None:
    """The server listed the number and stopped before its hang-ups (killed after the
    listing's commit: the agent's answer lost): the agent sends the report again, a
    duplicate, and the call to the number still ringing is hung up then, as a client's
    POST /dnc sent again hangs up what its first left ringing."""
    from handlers.keys import CALLS

    client = await start_app(sandbox_time_scale=0.1)
    ringing, asking = await place(client, RINGS), await place(client, RINGS)
    store, calls = client.app[STORE], client.app[CALLS]

    async def both_dialled() -> bool:
        found = [await store.get_call(c, with_timeline=False) for c in (ringing, asking)]
        return all(c is not None and c.dial_started_at is not None for c in found)

    await wait_for(both_dialled, timeout=10)
    assert await post_report(client, answered(asking)) == 200
    hang_up = calls.hang_up_unanswered_to

    async def cut_short(numbers: list[str], **kw: Any) -> list[str]:
        return []  # the server stopped before its hang-ups

    monkeypatch.setattr(calls, "hang_up_unanswered_to", cut_short)
    asked = report(asking, 1, "do_not_call")
    assert await post_report(client, asked) == 200
    assert await status_of(client, ringing) in ("dialing", "ringing")
    monkeypatch.setattr(calls, "hang_up_unanswered_to", hang_up)
    assert await post_report(client, asked) == 200  # sent again: a duplicate

    async def canceled() -> bool:
        return await status_of(client, ringing) == "canceled"

    await wait_for(canceled, timeout=10)
    assert await status_of(client, asking) == "in_progress"


async def test_a_do_not_call_report_sent_again_after_the_number_left_the_list_hangs_up_nothing(
    start_app: AppFactory,
) -> None:
    """The operator took the number off the list (DELETE /dnc) and it was called again: the
    agent's do_not_call report sent again then (a retry whose first answer was lost, or a
    captured report replayed within its token's life) hung that new call up, the list no
    longer holding the number. Only calls to numbers on the list are hung up."""
    client = await start_app(sandbox_time_scale=0.1)
    store = client.app[STORE]
    asking = await place(client, RINGS)

    async def dialled(call_id: str) -> bool:
        call = await store.get_call(call_id, with_timeline=False)
        return call is not None and call.dial_started_at is not None

    await wait_for(lambda: dialled(asking), timeout=10)
    assert await post_report(client, answered(asking)) == 200
    asked = report(asking, 1, "do_not_call")
    assert await post_report(client, asked) == 200
    assert (await client.delete(f"/dnc/{RINGS}")).status == 200
    again = await place(client, RINGS)  # off the list: called again
    await wait_for(lambda: dialled(again), timeout=10)
    assert await post_report(client, asked) == 200  # sent again: a duplicate
    left = await store.get_call(again, with_timeline=False)  # its hang-up is made by then
    assert left is not None and not left.hangup_requested and not left.is_final, left
    assert await status_of(client, asking) == "in_progress"
