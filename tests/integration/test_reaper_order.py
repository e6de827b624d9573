"""What the reaper and a hang-up decide when a call's signs come late or never (review AE):
each rule that can tell how a call ended settles it before the "no final event" bound does,
and a hang-up after the room finished does not turn an unanswered call into a canceled one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from common.calls import service as service_module
from common.calls.models import IdempotencyClaim, NewCall
from common.storage.programs import REPORTS_RETRY_S
from handlers.keys import CALLS, STORE
from server import SANDBOX
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered, post_report, shown
from tests.integration.test_webhooks import event_json, place, post, quiet_app, sign


async def test_a_hangup_after_the_room_finished_leaves_the_late_answer_its_due(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """room_finished came unanswered and the call waited out the grace for a late answer: a
    hang-up then found no room and settled it canceled at once, and the agent's answered
    report (delayed, retried) no longer completed it."""
    client = await start_app(sandbox_time_scale=100.0, calls_settle_grace_s=30.0)
    client.app[SANDBOX].webhook_url = None
    call_id = await place(client)
    body = event_json("room_finished", call_id)
    assert await post(client, body, sign(body)) == 200
    assert (await shown(client, call_id))["status"] == "dialing"  # waiting out the grace

    async def gone(_lkapi: Any, _room: str) -> bool:
        return False  # the room finished: DeleteRoom finds none

    monkeypatch.setattr(service_module, "end_room", gone)
    resp = await client.post(f"/calls/{call_id}/hangup")
    assert resp.status == 409
    assert (await resp.json())["error"] == "call already ending: its room finished"
    assert await post_report(client, answered(call_id)) == 200
    assert (await shown(client, call_id))["status"] == "completed"


async def test_an_answered_call_whose_room_finished_was_lost_completes_past_the_bound(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its room_finished lost (LiveKit gave up during a database outage) and the first pass
    after the outage past the stale bound: it settled `failed` "no final event" before
    LiveKit was asked about its room, which says how it ended."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    assert await post_report(client, answered(call_id)) == 200
    service = client.app[CALLS]

    async def none_alive(_lkapi: Any, _names: list[str]) -> set[str]:
        return set()  # LiveKit no longer has the room

    monkeypatch.setattr(service_module, "rooms_alive", none_alive)
    real_clock = service.clock
    service.clock = lambda: real_clock() + service.stale_after_s + 1
    await service.reap()
    call = await shown(client, call_id)
    assert (call["status"], call["reason"]) != ("failed", "no final event")
    assert call["status"] == "completed"


async def test_a_never_dialled_call_found_past_the_bound_frees_its_key(
    start_app: AppFactory,
) -> None:
    """Recorded, never dialled (its server died between the row and the dial), and first
    seen by a pass past the stale bound (the only server was down): the stale rule settled
    it first, without the never-dialled release, and its Idempotency-Key stayed bound to a
    call nobody dialled: the client's retry never placed it."""
    client = await quiet_app(start_app)
    store, service = client.app[STORE], client.app[CALLS]
    claim = IdempotencyClaim("someone", "key-1", "hash-1")
    new = NewCall("call-0000000000aa", "+1234567890", "A", "en", "Calm")
    await store.create_call(new, {}, claim=claim)
    real_clock = service.clock
    service.clock = lambda: real_clock() + service.stale_after_s + 1
    await service.reap()
    call = await shown(client, "call-0000000000aa")
    assert call["status"] == "failed" and call["reason"] != "no final event"
    assert await store.get_idempotent("someone", "key-1") is None


async def test_stopping_names_the_rooms_whose_deletion_it_gave_up(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A call that failed to place (a dial that timed out, which LiveKit may have made after
    all) has its room deleted in the background; stopping gave up on it after 5 s, said
    nothing, and nothing deletes it later."""
    client = await quiet_app(start_app)
    service = client.app[CALLS]
    hanging = asyncio.Event()

    async def never(_lkapi: Any, _room: str) -> bool:
        await hanging.wait()
        return True

    monkeypatch.setattr(service_module, "end_room", never)
    monkeypatch.setattr(service_module, "ROOM_CLOSE_WAIT_S", 0.05)
    service._close_room_soon("call-00000000dead")
    with caplog.at_level(logging.WARNING, logger="common.calls.service"):
        await service.aclose()
    assert "1 room deletion(s) unfinished" in caplog.text
    assert "call-00000000dead" in caplog.text


async def test_an_unanswered_call_whose_room_is_found_gone_late_waits_out_the_grace(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its room_finished lost, first seen by a pass past the bound: the room found gone is
    finished as room_finished would have, dated to when the call was last heard of, and the
    backstop read that date as "finished long ago": failed "no final event" at once, the
    grace and a late answer skipped (review AH). It waits out the grace: no_answer."""
    client, call_id, reap_at = await _placed_with_its_room_gone(start_app, monkeypatch)
    later = client.app[CALLS].stale_after_s + 1
    await reap_at(later)
    assert (await shown(client, call_id))["status"] == "dialing"  # waiting out the grace
    later += 11
    await reap_at(later)  # found gone: late, it waits for the reports an outage held back
    assert (await shown(client, call_id))["status"] == "dialing"
    later += REPORTS_RETRY_S
    await reap_at(later)
    assert (await shown(client, call_id))["status"] == "no_answer"


async def test_a_late_room_finished_waits_for_the_answer_an_outage_held_back(
    start_app: AppFactory,
) -> None:
    """The server down 40 s under live calls on a real LiveKit: LiveKit's retried
    room_finished of an answered call landed 31 s after the room finished, the call settled
    no_answer after the 10 s grace, and its agent's answered report, retried up to 30 s
    apart, landed 8 s after that: no_answer beside its transcript, its receiver told so (2 of
    2 answered calls in a probe). A room_finished that comes late waits for it."""
    client = await start_app(sandbox_time_scale=100.0, calls_settle_grace_s=10.0)
    client.app[SANDBOX].webhook_url = None
    call_id = await place(client)
    service, store = client.app[CALLS], client.app[STORE]
    real_clock, later = service.clock, 0.0
    service.clock = store._clock = lambda: real_clock() + later  # one clock, as in production
    body = event_json("room_finished", call_id)
    body = body.replace(b'"1700000000"', f'"{int(time.time()) - 31}"'.encode())
    assert await post(client, body, sign(body)) == 200
    later += 11  # past the grace
    await service.reap()
    assert (await shown(client, call_id))["status"] == "dialing"
    assert await post_report(client, answered(call_id)) == 200  # the retried report lands
    later += REPORTS_RETRY_S
    await service.reap()
    call = await shown(client, call_id)
    assert call["status"] == "completed" and call["answered_at"] is not None


async def test_a_room_found_gone_waits_for_the_answer_an_outage_held_back(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database outage lost an answered call's webhooks (LiveKit gives up after ~15 s)
    while its agent's answered report was still being retried. The first pass after the
    outage found its room gone and finished it: no_answer after the 10 s grace, and the
    answer landed on a call that was over (5 of 5 calls under a 70 s PostgreSQL stop)."""
    client, call_id, reap_at = await _placed_with_its_room_gone(start_app, monkeypatch)
    later = 61.0  # dialled a minute ago
    await reap_at(later)  # its room found gone
    later += 11  # past the grace
    await reap_at(later)
    assert (await shown(client, call_id))["status"] == "dialing"
    assert await post_report(client, answered(call_id)) == 200
    later += REPORTS_RETRY_S
    await reap_at(later)
    call = await shown(client, call_id)
    assert call["status"] == "completed" and call["answered_at"] is not None


async def _placed_with_its_room_gone(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, str, Callable[[float], Awaitable[None]]]:
    """A call placed without webhooks (its room_finished lost), LiveKit listing none of the
    rooms, and a reaper pass run as if `later` seconds had passed (the service's and the
    store's clock and the time run moved together, as in production)."""
    client = await start_app(sandbox_time_scale=100.0, calls_settle_grace_s=10.0)
    client.app[SANDBOX].webhook_url = None
    call_id = await place(client)
    service, store = client.app[CALLS], client.app[STORE]

    async def none_alive(_lkapi: Any, _names: list[str]) -> set[str]:
        return set()

    monkeypatch.setattr(service_module, "rooms_alive", none_alive)
    real_clock = service.clock

    async def reap_at(later: float) -> None:
        service.clock = store._clock = lambda: real_clock() + later
        service.monotonic = lambda: time.monotonic() + later  # the time run, too
        await service.reap()

    return client, call_id, reap_at
