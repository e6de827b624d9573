"""What an erasure on request gives the caller before each batch is written (`before_erasing`):
the batch's call ids with what they were placed with, so that config.json's top level (reset
only if one of those calls wrote it) goes before the database's erasure, as its copies do. A
refusal there (ErasureHeldUp) leaves that batch and the rest not erased: on the first batch,
nothing is; on a later one, ErasureUnfinished says what was. The same on each backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from common.calls.models import NewCall
from common.calls.outcomes import Change, Status
from common.storage import programs
from common.storage.base import CallStore, ErasureHeldUp, ErasureUnfinished

NUMBER = "+14155550142"


async def ended_call(store: CallStore, call_id: str, name: str) -> dict[str, Any]:
    config = {"caller_name": name, "agent_instructions": f"Remind {name} ({call_id})."}
    await store.create_call(NewCall(call_id, NUMBER, name, "en", "Calm", config=config))
    await store.apply(call_id, "room_finished", lambda _s: Change(Status.COMPLETED, "completed"))
    return config


async def test_each_batch_is_given_its_call_ids_and_configs_before_its_erasure(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "ERASE_NOW_BATCH", 1)
    configs = {c: await ended_call(store, c, n) for c, n in (("call-a", "Ann"), ("call-b", "Bo"))}
    given: list[tuple[list[str], list[dict[str, Any]]]] = []

    async def before(call_ids: Sequence[str], placed_with: Sequence[dict[str, Any]]) -> None:
        for call_id in call_ids:  # not erased yet
            call = await store.get_call(call_id)
            assert call is not None and call.caller_name == configs[call_id]["caller_name"]
        given.append((list(call_ids), list(placed_with)))

    erasure = await store.erase_calls_now(numbers=[NUMBER], before_erasing=before)

    assert sorted(erasure.erased) == ["call-a", "call-b"]
    assert sorted(given, key=lambda g: g[0]) == [
        (["call-a"], [configs["call-a"]]),
        (["call-b"], [configs["call-b"]]),
    ]


async def test_a_batch_held_up_before_its_erasure_is_not_erased(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "ERASE_NOW_BATCH", 1)
    await ended_call(store, "call-a", "Ann")
    await ended_call(store, "call-b", "Bo")
    batches: list[Sequence[str]] = []

    async def held_up(call_ids: Sequence[str], _placed_with: Sequence[dict[str, Any]]) -> None:
        batches.append(call_ids)
        if len(batches) == refused_at:
            raise ErasureHeldUp("config.json could not be written")

    refused_at = 1  # the first batch: nothing erased
    with pytest.raises(ErasureHeldUp):
        await store.erase_calls_now(numbers=[NUMBER], before_erasing=held_up)
    for call_id in ("call-a", "call-b"):
        call = await store.get_call(call_id)
        assert call is not None and call.caller_name and call.data_erased_at is None

    batches.clear()
    refused_at = 2  # the second: the first batch's call erased, said so
    with pytest.raises(ErasureUnfinished) as unfinished:
        await store.erase_calls_now(numbers=[NUMBER], before_erasing=held_up)
    [done] = unfinished.value.done.erased
    [left] = {"call-a", "call-b"} - {done}
    assert isinstance(unfinished.value.cause, ErasureHeldUp) and unfinished.value.calls == 2
    erased, kept = await store.get_call(done), await store.get_call(left)
    assert erased is not None and erased.caller_name == ""
    assert kept is not None and kept.caller_name and kept.data_erased_at is None
