"""create_call with the id of a call already recorded, on each backend: CallIdTaken, nothing
recorded (the Idempotency-Key it came with stays free, the earlier call as it was). Ids are
random, so an earlier call's is drawn again at times: it was a primary-key refusal, which the
server answered 503 "calls database unavailable"."""

from __future__ import annotations

import pytest

from common.calls.models import IdempotencyClaim, NewCall
from common.storage.base import CallIdTaken, CallStore

CALL = "call-0000000000c1"


async def test_an_id_taken_by_an_earlier_call_records_nothing(store: CallStore) -> None:
    await store.create_call(NewCall(CALL, "+14155550100", "Alice Smith", "en", "Calm"))
    claim = IdempotencyClaim("bob", "key-1", "h1")

    with pytest.raises(CallIdTaken):
        await store.create_call(
            NewCall(CALL, "+34612345678", "Carlos García", "es", "Calm"), claim=claim
        )

    earlier = await store.get_call(CALL)
    assert earlier is not None
    assert (earlier.caller_name, earlier.phone_number) == ("Alice Smith", "+14155550100")
    assert [e.kind for e in earlier.timeline] == ["created"]
    assert await store.get_idempotent("bob", "key-1") is None
    assert [c.call_id for c in await store.list_calls()] == [CALL]
