"""placed_between: the calls one server placed in a span of time, on each backend (how a
server finds the call whose placement wrote its config.json's top level)."""

from __future__ import annotations

from common.calls.models import NewCall
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
