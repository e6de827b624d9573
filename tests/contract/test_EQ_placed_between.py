"""placed_between: the calls one server placed in a span of time, on each backend (how a
server finds the call whose placement wrote its config.json's top level)."""

from __future__ import annotations

from common.calls.models import NewCall
from common.calls.outcomes import Change, Status
from common.storage.base import CallStore
from tests.helpers import FakeClock


async def test_the_calls_one_server_placed_in_a_span_oldest_first(
    store: CallStore, clock: FakeClock
) -> None:
    start = clock.now
    for n, placer in enumerate(["b", "a", "b", None, "b"]):
        by = None if placer is None else (f"host:{placer}", f"run-{n}")
        await store.create_call(
            NewCall(f"call-00000000000{n}", "+14155550100", "Alice", "en", "Calm", placed_by=by)
        )
        clock.advance(10)

    found = await store.placed_between("host:b", start, start + 25, 10)

    assert [c.call_id for c in found] == ["call-000000000000", "call-000000000002"]
    assert found[0].config is None or isinstance(found[0].config, dict)
    assert [c.call_id for c in await store.placed_between("host:b", start, start + 99, 2)] == [
        "call-000000000000",
        "call-000000000002",
    ]
    assert await store.placed_between("host:c", start, start + 99, 10) == []


async def test_the_calls_erased_on_request_among_some_not_those_the_retention_erased(
    store: CallStore, clock: FakeClock
) -> None:
    for call_id, number in (("call-a", "+14155550101"), ("call-b", "+14155550102")):
        await store.create_call(NewCall(call_id, number, "Alice", "en", "Calm"))
        await store.apply(call_id, "room_finished", lambda _s: Change(Status.COMPLETED, "done"))
    clock.advance(10)
    assert await store.erase_call_data(clock.now, 10) == 2  # the retention: names stay
    assert await store.erased_among(["call-a", "call-b", "call-none"]) == set()

    await store.erase_calls_now(call_id="call-b")

    assert await store.erased_among(["call-a", "call-b", "call-none"]) == {"call-b"}
