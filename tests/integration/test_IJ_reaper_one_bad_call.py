"""One call whose settling raised (its row not as this release reads it: written by another
release, or hand-edited) stopped every reaper pass at that call: the calls after it, and
every rule after its rule, were never settled (never-dialled calls kept their
Idempotency-Keys and rate shares, calls whose room is gone stayed live, holding
CALLS_MAX_ACTIVE and their campaigns' slots)."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import pytest

from common.calls.models import NewCall
from common.calls.outcomes import Status
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import wait_for


async def old_calls(start_app: AppFactory, dialled: float | None) -> Any:
    """The calls service, with call-bad and call-good placed long ago into this server's
    sandbox (whose rooms it asks about), dialled at `dialled` (None: never)."""
    client = await start_app()
    calls = client.app[CALLS]
    for call_id in ("call-bad", "call-good"):
        await calls.store.create_call(NewCall(call_id, "+14155550100", "A", "en", "Calm"))
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        db.execute(
            "UPDATE calls SET created_at = 1, dial_started_at = ?, sandbox_instance = ?",
            (dialled, calls.instance),
        )
    return calls


@pytest.mark.parametrize("dialled", [None, 1.0], ids=["never-dialled", "room-gone"])
async def test_a_call_whose_settling_raises_leaves_the_others_to_be_settled(
    start_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    dialled: float | None,
) -> None:
    calls = await old_calls(start_app, dialled)
    store = calls.store

    def raising_for_call_bad(real: Any) -> Any:
        async def settle(call_id: str, *args: Any, **kwargs: Any) -> Any:
            if call_id == "call-bad":  # (no real row raises here since its config reads)
                raise ValueError("a row another release wrote (test)")
            return await real(call_id, *args, **kwargs)

        return settle

    monkeypatch.setattr(store, "apply", raising_for_call_bad(store.apply))
    monkeypatch.setattr(
        store, "settle_never_dialled", raising_for_call_bad(store.settle_never_dialled)
    )
    await calls.reap_logged()
    await calls.reap_logged()  # the bad call is tried again, not said again within the minute

    good = await store.get_call("call-good")
    assert good is not None
    assert good.status in {Status.FAILED, Status.NO_ANSWER}, good.status
    bad = await store.get_call("call-bad")
    assert bad is not None and bad.status is Status.DIALING  # as it was, for an operator
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith("reaper: call call-bad could not be settled"), said
    assert "ValueError: a row another release wrote (test)" in said[0], said
    gone = [r.getMessage() for r in caplog.records if "its room is gone" in r.getMessage()]
    assert len(gone) == (dialled is not None), gone  # the good call's; not the bad's each pass


async def test_a_call_whose_config_no_longer_reads_is_settled_and_read(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Its config cut short by a hand edit failed every read of the call: each reaper pass
    stopped at it (it stayed live for good, holding CALLS_MAX_ACTIVE, and the calls after it
    were never settled), and GET /calls/{id} answered 500."""
    calls = await old_calls(start_app, None)
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        db.execute("UPDATE calls SET config = '{\"max_duration_s\": ' WHERE call_id = 'call-bad'")
    await calls.reap_logged()
    await calls.reap_logged()
    for call_id in ("call-bad", "call-good"):
        call = await calls.store.get_call(call_id)
        assert call is not None and call.status is Status.FAILED, call
    assert call is not None and call.config == {}  # (the good one's, as placed)
    bad = await calls.store.get_call("call-bad")
    assert bad is not None and bad.config is None
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    said = [m for m in said if "config" in m or "reaper" in m]
    assert said == [
        "call call-bad: its stored config no longer reads (JSONDecodeError: Expecting value:"
        " line 1 column 20 (char 19)); it is read as none"
    ], said


async def test_an_event_that_no_longer_reads_is_erased_with_the_rest_past_retention(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Its data raised out of the retention's erasure, whose transaction rolled back: every
    pass, no call's conversation was erased past its retention."""
    client = await start_app()
    calls = client.app[CALLS]
    for call_id in ("call-bad", "call-good"):
        await calls.store.create_call(NewCall(call_id, "+14155550100", "A", "en", "Calm"))
    with sqlite3.connect(calls.settings.calls_db_path) as db:  # ended long ago
        db.execute("UPDATE calls SET status = 'completed', ended_at = 1, outcome = 'completed'")
        db.execute("UPDATE outbox SET data = '{\"summary\": \"Ana said' WHERE call_id = 'call-bad'")
    await calls.reap_logged()

    with sqlite3.connect(calls.settings.calls_db_path) as db:
        erased = db.execute("SELECT call_id FROM calls WHERE data_erased_at IS NOT NULL")
        assert sorted(c for (c,) in erased) == ["call-bad", "call-good"]
        (data,) = db.execute("SELECT data FROM outbox WHERE call_id = 'call-bad'").fetchone()
    assert "Ana" not in data and json.loads(data)["call_id"] == "call-bad"
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    said = [m for m in said if "no longer reads" in m or "reaper" in m]
    assert len(said) == 1 and said[0].startswith("call call-bad: its event"), said


@pytest.mark.parametrize("fails", ["livekit", "database"])
async def test_a_lost_agent_wait_that_cannot_be_told_is_said_once_a_minute(
    start_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    fails: str,
) -> None:
    """The reaper takes up a call whose agent left (check_agent_gone); with LiveKit unable to
    say who is in the room, or the database failing, it was said every pass (30 s) for as
    long as that lasted."""
    from livekit.protocol.models import ParticipantInfo

    from common.calls import service as service_module
    from common.livekit.client import LiveKitError
    from common.storage.base import DatabaseError
    from tests.integration.test_webhooks import event_json, place, post, sign

    client = await start_app(sandbox_time_scale=0.1)
    service = client.app[CALLS]
    call_id = await place(client, "+14155550480")  # rings 30 s (3 s here), its agent there
    left = event_json(
        "participant_left",
        call_id,
        participant_kind=ParticipantInfo.Kind.AGENT,
        identity="agent-second-job",
        attributes={"lk.agent.name": service.settings.agent_name},
    )
    assert await post(client, left, sign(left)) == 200

    async def wait_over() -> bool:
        return not service._agent_gone_waits

    await wait_for(wait_over, timeout=5)

    async def livekit_down(*_args: Any) -> Any:
        raise LiveKitError("unavailable (test)")

    async def database_down(*_args: Any, **_kwargs: Any) -> Any:
        raise DatabaseError("the database is starting up (test)")

    if fails == "livekit":
        monkeypatch.setattr(service_module, "room_presence", livekit_down)
    else:
        monkeypatch.setattr(service.store, "get_call", database_down)
    caplog.clear()
    for _ in range(3):  # three passes, within a minute
        service._agent_gone_asked.clear()
        assert await service.check_agent_gone(service.clock()) == 1
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].startswith(f"call {call_id}: "), said


async def test_a_call_whose_config_no_longer_reads_is_erased_on_request(
    start_app: AppFactory,
) -> None:
    """Its config raised out of the erasure, which failed (a number's: every call of the
    batch), each time it was asked."""
    calls = await old_calls(start_app, None)
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        db.execute("UPDATE calls SET status = 'completed', ended_at = 2, outcome = 'completed'")
        cut = '{"caller_name": "Ana'
        db.execute("UPDATE calls SET config = ? WHERE call_id = 'call-bad'", (cut,))
    erasure = await calls.erase_number("+14155550100")  # as POST /calls/erase does
    assert sorted(erasure.erased) == ["call-bad", "call-good"], erasure
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        configs = dict(db.execute("SELECT call_id, config FROM calls").fetchall())
    assert configs["call-bad"] is None and "Ana" not in str(configs), configs
