"""Regression tests for defects found by trying to break the service (issue: hardening).

Each test drives the real app (create_app) on the embedded sandbox, over HTTP, and fails on the
code before the fix: a hang-up while the call is being placed, an unanswered room_finished
frozen on a guess, false readiness, config records that outlive their calls, hostile input
that answered 500, false rate-limit refusals, and the newcomer's first-hour gaps.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from livekit.protocol import models

from common.calls.models import IdempotencyClaim, NewCall
from common.calls.outcomes import NO_WORD
from common.calls.service import NEVER_DIALLED
from common.settings import DEV_API_KEY, DEV_API_SECRET, Settings, configure_logging
from common.storage.sqlite import SqliteCallStore
from common.update_config import ConfigStore
from handlers.health import without_paths
from handlers.keys import CALLS, CONFIG, STORE
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, config_forgets, first_call_recorded, hold_requests
from tests.integration.test_FG_no_agent_short_call import agent_joins
from tests.integration.test_webhooks import event_json, line_joins, place, post, quiet_app, sign

Client = TestClient[Any, Any]
LONG_CALL = "+14155557760"  # answered after 2 s, talks 60 s (x time scale)


async def call_json(client: Client, call_id: str) -> dict[str, Any]:
    resp = await client.get(f"/calls/{call_id}")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def wait_for(predicate: Any, timeout: float = 5.0, poll_s: float = 0.02) -> None:
    """Poll an async predicate until it holds (bounded)."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(poll_s)


def dials(client: Client) -> int:
    return sum(1 for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant")


# ------------------------------------------------------------------ 1. hang-up wins


async def test_hangup_during_dispatch_means_the_number_is_never_dialled(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=100.0)
    sandbox = client.app[SANDBOX]
    # LiveKit holds the dispatch until the hang-up is answered (a 0.3 s delay was over
    # first now and then on a loaded machine: the number dialled, the test failed).
    dispatch = hold_requests(sandbox, "CreateDispatch")
    placing = asyncio.create_task(
        client.post("/calls/outbound", json={"phone_number": LONG_CALL, "name": "Ann"})
    )
    call_id = await first_call_recorded(client)
    await dispatch.arrival()
    hung_up = await client.post(f"/calls/{call_id}/hangup")
    assert hung_up.status == 200
    assert (await hung_up.json())["call_status"] == "canceled"
    dispatch.release()
    placed = await placing
    assert placed.status == 200
    assert (await placed.json())["call_status"] == "canceled"
    await sandbox.wait_idle(5)
    assert dials(client) == 0  # hang-up won: nobody was rung
    assert call_id not in sandbox.rooms  # and the room the dispatch made is gone
    assert (await call_json(client, call_id))["status"] == "canceled"


async def test_hangup_during_the_dial_ends_the_ringing_phone(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=100.0)
    sandbox = client.app[SANDBOX]
    # LiveKit is slow to answer the dial (held until the hang-up is answered: a 0.3 s delay
    # could be over first on a loaded machine), and dials all the same (creating the room
    # again).
    dial = hold_requests(sandbox, "CreateSIPParticipant")
    placing = asyncio.create_task(client.post("/calls/outbound", json={"phone_number": LONG_CALL}))
    await dial.arrival()
    call_id = next(iter(sandbox.rooms))
    assert (await client.post(f"/calls/{call_id}/hangup")).status == 200  # while dialling
    dial.release()
    assert (await placing).status == 200
    assert dials(client) == 1

    async def over() -> bool:
        shown = await call_json(client, call_id)
        return call_id not in sandbox.rooms and shown["status"] == "canceled"

    await wait_for(over)  # without the fix the phone rang on, for the whole scenario
    await asyncio.sleep(0.2)
    assert call_id not in sandbox.rooms  # and it stays down


async def test_a_second_hangup_ends_a_live_call_when_the_first_failed(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=100.0)
    sandbox = client.app[SANDBOX]
    call_id = await place(client, LONG_CALL)
    sandbox.inject("DeleteRoom", error=TwirpError("unavailable", "restarting"), times=1)
    assert (await client.post(f"/calls/{call_id}/hangup")).status == 503
    assert (await client.post(f"/calls/{call_id}/hangup")).status == 200

    async def canceled() -> bool:
        return bool((await call_json(client, call_id))["status"] == "canceled")

    await wait_for(canceled)
    assert call_id not in sandbox.rooms


async def test_calls_whose_dial_never_went_out_are_settled_failed(
    start_app: AppFactory,
) -> None:
    """A server that died between recording a call and dialling it left it `dialing`."""
    client = await quiet_app(start_app)
    service = client.app[CALLS]
    claim = IdempotencyClaim("127.0.0.1", "k", "h")
    await service.store.create_call(
        NewCall("call-0000000dead1", LONG_CALL, "A", "en", "Calm"), claim=claim
    )
    dialled = await place(client, LONG_CALL)
    await service.reap()
    assert (await call_json(client, "call-0000000dead1"))["status"] == "dialing"
    real_clock = service.clock
    service.clock = lambda: real_clock() + 61
    await service.reap()
    shown = await call_json(client, "call-0000000dead1")
    assert shown["status"] == "failed" and shown["reason"] == NEVER_DIALLED
    assert (await call_json(client, dialled))["status"] != "failed"  # its dial went out


# ------------------------------------------------------------------ 3. no outcome frozen on a guess


async def test_an_answer_arriving_after_room_finished_wins_within_the_grace(
    start_app: AppFactory,
) -> None:
    client = await quiet_app_with(start_app, calls_settle_grace_s=5.0)
    call_id = await place(client)
    await agent_joins(client, call_id)  # somebody talked to the callee
    finished = event_json("room_finished", call_id)
    assert await post(client, finished, sign(finished)) == 200
    assert (await call_json(client, call_id))["status"] == "dialing"  # not frozen as no_answer
    hung_up = int(models.DisconnectReason.CLIENT_INITIATED)
    left = event_json(
        "participant_left", call_id, attributes={"sip.callStatus": "hangup"}, reason=hung_up
    )
    assert await post(client, left, sign(left)) == 200
    shown = await call_json(client, call_id)
    assert shown["status"] == "completed" and shown["answered_at"] is not None


async def test_an_unanswered_room_finished_settles_after_the_grace(
    start_app: AppFactory,
) -> None:
    client = await quiet_app_with(start_app, calls_settle_grace_s=0.3)
    call_id = await place(client)
    await line_joins(client, call_id)
    finished = event_json("room_finished", call_id)
    assert await post(client, finished, sign(finished)) == 200
    assert (await call_json(client, call_id))["status"] == "dialing"

    async def settled() -> bool:
        return bool((await call_json(client, call_id))["status"] == "no_answer")

    await wait_for(settled, timeout=5)


async def test_the_reaper_settles_the_grace_when_its_timer_is_lost(
    start_app: AppFactory,
) -> None:
    """After a restart no timer is left: the reaper settles from the database."""
    client = await quiet_app_with(start_app, calls_settle_grace_s=60.0)
    call_id = await place(client)
    await line_joins(client, call_id)
    finished = event_json("room_finished", call_id)
    assert await post(client, finished, sign(finished)) == 200
    service = client.app[CALLS]
    await service.reap()
    assert (await call_json(client, call_id))["status"] == "dialing"  # grace not over yet
    real_clock = service.clock
    service.clock = lambda: real_clock() + 61
    await service.reap()
    shown = await call_json(client, call_id)
    assert (shown["status"], shown["reason"]) == ("no_answer", NO_WORD)


async def quiet_app_with(start_app: AppFactory, **overrides: Any) -> Client:
    client = await start_app(sandbox_time_scale=100.0, **overrides)
    client.app[SANDBOX].webhook_url = None
    return client


# ------------------------------------------------------------------ 5. honest readiness


async def test_readyz_fails_when_config_json_cannot_be_written(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/readyz needs no token, and any web page can read it (a name re-pointed at
    127.0.0.1): it says what is wrong without the server's absolute paths (it named
    config.json's); the log line names them in full, for the operator."""
    blocker = tmp_path / "not-a-directory"
    client = await start_app(config_path=blocker / "config.json")
    assert (await client.get("/readyz")).status == 200
    # Under the running server, config.json's directory becomes a file (start-up would
    # refuse such a CONFIG_PATH: tests/integration/test_startup.py).
    import shutil

    shutil.rmtree(blocker)
    blocker.write_text("a file where config.json's directory should be")
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.text()
    assert str(tmp_path) not in body and "not-a-directory" not in body
    details = (await resp.json())["details"]
    assert details == [{"component": "config", "error": "config.json: Not a directory"}]
    (said,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not ready")]
    assert said.startswith(f"not ready: config: {blocker}") and said.endswith("Not a directory")
    # ... and indeed a call cannot be placed:
    assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 503


async def test_readyz_says_when_a_component_is_ready_again(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log said "not ready: config: ..." and nothing when it passed again; and a second
    outage within the minute (the same component, another cause) was held back as a repeat
    of the first: the operator's log showed the first failure and nothing after it."""
    import shutil

    caplog.set_level(logging.INFO, logger="handlers.health")
    directory = tmp_path / "state"
    client = await start_app(config_path=directory / "config.json", readyz_reuse_s=0)

    def said() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(("not ready", "ready again"))
        ]

    def block() -> None:
        shutil.rmtree(directory)
        directory.write_text("a file where config.json's directory should be")

    assert (await client.get("/readyz")).status == 200
    block()
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/readyz")).status == 503  # a repeat: held back
    directory.unlink()
    directory.mkdir()
    assert (await client.get("/readyz")).status == 200
    block()
    assert (await client.get("/readyz")).status == 503
    lines = said()
    assert [line.split(":")[0] for line in lines] == ["not ready", "ready again", "not ready"]
    assert lines[1].startswith("ready again: config (first failed ")
    for _ in range(3):  # flapping at every probe: no more lines within the minute
        directory.unlink()
        directory.mkdir()
        assert (await client.get("/readyz")).status == 200
        block()
        assert (await client.get("/readyz")).status == 503
    assert said() == lines
    # ... and once it passes, a minute after the last "ready again", the log says so
    from handlers import health

    directory.unlink()
    directory.mkdir()
    client.app[health.READY_AGAIN_SAID].clock = lambda: time.monotonic() + 61
    assert (await client.get("/readyz")).status == 200
    assert said()[len(lines) :][0].startswith("ready again: config (first failed ")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/app/config.json: Not a directory", "config.json: Not a directory"),
        ("/app: Read-only file system", "config.json's directory: Read-only file system"),
        # another path beside the known directory is not taken for it
        ("/application/x.db: disk full", "…/x.db: disk full"),
        ("/app2: gone", "…/app2: gone"),
        # a file beside a known one, in the same directory, by its own name
        (
            "/app/config.json.lock is held by another process",
            "…/config.json.lock is held by another process",
        ),
    ],
)
def test_readyz_names_a_known_path_only_where_it_is_whole(text: str, shown: str) -> None:
    """A known directory /app was replaced inside /application/x ("config.json's
    directorylication/x"): a path is named only where it ends (review BD)."""
    assert without_paths(text, [Path("/app/config.json")]) == shown


async def test_readyz_fails_when_the_database_takes_no_writes(
    start_app: AppFactory, tmp_path: Path
) -> None:
    client = await start_app()
    assert (await client.get("/readyz")).status == 200
    # Another process holds the write lock (reads still work, every call would get 503).
    import sqlite3

    locker = sqlite3.connect(tmp_path / "calls.db", timeout=0.1, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert [d["component"] for d in (await resp.json())["details"]] == ["database"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert (await client.get("/readyz")).status == 200


async def test_readyz_fails_when_the_database_device_is_all_but_full(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the probe's one-row upsert still fitted where a call's inserts did not
    (a probe saw /readyz 200 while every call got 503): the free space is looked at too."""
    import os

    client = await start_app()
    assert (await client.get("/readyz")).status == 200
    real = os.statvfs

    def nearly_full(path: object) -> os.statvfs_result:
        status = real(path)  # type: ignore[arg-type]
        fields = list(status)
        fields[4] = 10  # f_bavail: 10 blocks
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", nearly_full)
    resp = await client.get("/readyz")
    assert resp.status == 503
    (detail,) = (await resp.json())["details"]
    assert detail["component"] == "database" and "KiB free on its device" in detail["error"]
    assert detail["error"].startswith("calls.db: ") and "/" not in detail["error"]
    monkeypatch.undo()
    assert (await client.get("/readyz")).status == 200


# ------------------------------------------------------------------ 6. config.json holds live calls


async def test_config_records_of_finished_and_unknown_calls_are_pruned_at_start(
    start_app: AppFactory, make_settings: Any, tmp_path: Path
) -> None:
    """After a crash config.json keeps records whose calls are over; start-up drops them."""
    settings: Settings = make_settings()
    now = time.time()
    old = ConfigStore(settings.config_path, clock=lambda: now - 3600)
    fresh = ConfigStore(settings.config_path)
    ancient = ConfigStore(settings.config_path, clock=lambda: now - 2 * 86400)
    ahead = ConfigStore(settings.config_path, clock=lambda: now + 86400)  # a hand edit, say
    db = await SqliteCallStore.open(settings.calls_db_path)
    try:
        for call_id in (
            "call-00000000f1a1",
            "call-00000000117e",
            "call-00000000a9ed",
            "call-000000a7ead0",
        ):
            # Live in the sandbox of a server on another machine: the start leaves them be (a
            # call naming no sandbox, from a release before schema 11, it settles as lost).
            elsewhere = "other-host:8000@127.0.0.1"
            call = NewCall(call_id, "+1234567890", "A", "en", "Calm", sandbox_instance=elsewhere)
            await db.create_call(call)
        await db.apply("call-00000000f1a1", "x", lambda _s: _final())
    finally:
        await db.close()
    # Dated a day ahead: unknown to the database, it was never young enough to go; a live
    # call's record (a clock stepped back) stays. (First: a write by that clock prunes
    # every record it finds older than its TTL.)
    ahead.update("Future", call_id="call-00000000f0a1")
    ahead.update("Live, ahead", call_id="call-000000a7ead0")
    old.update("Finished", call_id="call-00000000f1a1")  # final in the database
    old.update("Orphan", call_id="call-00000000dead")  # unknown to the database, old
    fresh.update("Being placed", call_id="call-000000000e1d")  # unknown, but just written
    old.update("Live", call_id="call-00000000117e")  # live
    ancient.update("Stuck", call_id="call-00000000a9ed")  # live, but past the TTL

    await start_app(reaper_interval_s=3600.0)

    async def pruned() -> bool:
        calls = json.loads(settings.config_path.read_text())["calls"]
        return set(calls) == {"call-000000000e1d", "call-00000000117e", "call-000000a7ead0"}

    await wait_for(pruned)


async def test_config_records_are_pruned_on_every_reaper_pass(
    start_app: AppFactory, make_settings: Any
) -> None:
    client = await start_app(reaper_interval_s=0.05)
    settings: Settings = make_settings()
    orphan = ConfigStore(settings.config_path, clock=lambda: time.time() - 3600)
    orphan.update("Orphan", call_id="call-00000000dead")

    async def pruned() -> bool:
        calls = json.loads(settings.config_path.read_text())["calls"]
        return "call-00000000dead" not in calls

    await wait_for(pruned)
    assert (await client.get("/readyz")).status == 200


async def test_a_call_recorded_while_the_reaper_prunes_keeps_its_record(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The prune asks the database which records' calls exist and which are live; a call whose
    row is written between those two reads (it was being placed) keeps its record."""
    client = await start_app(reaper_interval_s=3600.0)
    store, service = client.app[STORE], client.app[CALLS]
    call_id = "call-0000000be1d0"
    await client.app[CONFIG].update_async("Being placed", call_id=call_id)
    reads: list[str] = []

    def after_first_read(name: str, read: Any) -> Any:
        async def wrapped(call_ids: list[str]) -> set[str]:
            found: set[str] = await read(call_ids)
            reads.append(name)
            if len(reads) == 1:  # the placement records its row now
                await store.create_call(NewCall(call_id, "+1234567890", "A", "en", "Calm"))
            return found

        return wrapped

    monkeypatch.setattr(store, "live_among", after_first_read("live", store.live_among))
    monkeypatch.setattr(store, "known_among", after_first_read("known", store.known_among))
    assert await service.prune_config() == 0
    assert len(reads) == 2
    assert call_id in json.loads((tmp_path / "config.json").read_text())["calls"]


def _final() -> Any:
    from common.calls.outcomes import Change, Status

    return Change(Status.COMPLETED)


# ------------------------------------------------------------------ 7. hostile input, no 500


def _token(claims: dict[str, Any]) -> str:
    base = {"iss": DEV_API_KEY, "exp": int(time.time()) + 300, "nbf": 0, "video": {}}
    return jwt.encode(base | claims, DEV_API_SECRET, algorithm="HS256")


@pytest.mark.parametrize("claim", [123, ["x"], {"a": 1}, True])
async def test_a_signed_token_with_a_non_string_sha256_claim_is_401(
    client: Client, claim: object
) -> None:
    body = event_json("room_finished", "call-000000000000")
    assert await post(client, body, _token({"sha256": claim})) == 401


async def test_signed_room_metadata_nested_100000_deep_is_not_a_500(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    body = event_json("room_finished", call_id, metadata="[" * 100_000 + "]" * 100_000)
    assert await post(client, body, sign(body)) == 200
    assert (await call_json(client, call_id))["status"] == "no_answer"


@pytest.mark.parametrize("calls", [[], None, "calls", 7])
async def test_a_config_json_whose_calls_is_not_an_object_is_kept_aside(
    client: Client, tmp_path: Path, calls: object
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"caller_name": "x", "calls": calls}))
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
    assert resp.status == 200
    call_id = (await resp.json())["call_id"]
    assert call_id in json.loads(config.read_text())["calls"]
    aside = list(tmp_path.glob("config.json.corrupt-*"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["calls"] == calls


# ------------------------------------------------------------------ 8. only accepted calls count


async def test_the_live_cap_refuses_before_the_rate_limit_counts(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=100.0, calls_max_active=10, calls_rate_limit_per_min=60
    )

    async def one(n: int) -> tuple[int, str]:
        resp = await client.post(
            "/calls/outbound", json={"phone_number": LONG_CALL, "name": f"Caller {n}"}
        )
        return resp.status, (await resp.json()).get("error", "")

    answers = await asyncio.gather(*(one(n) for n in range(100)))
    accepted = [a for a in answers if a[0] == 200]
    rate_refusals = [a for a in answers if "rate limit" in a[1]]
    assert len(accepted) == 10
    assert rate_refusals == []  # 90 refusals, all by the live-call cap
    assert all(status == 429 and "too many live calls" in error for status, error in answers[10:])


async def test_refused_calls_give_their_rate_share_back(start_app: AppFactory) -> None:
    client = await start_app(calls_rate_limit_per_min=2)
    client.app[SANDBOX].inject("CreateDispatch", error=TwirpError("unavailable", "x"), times=5)
    for _ in range(5):  # LiveKit refuses: these calls were never placed
        assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 503
    for _ in range(2):
        assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 200
    third = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
    assert third.status == 429 and "rate limit" in (await third.json())["error"]


# ------------------------------------------------------------------ 9. smaller ones


async def test_webhooks_accept_any_case_of_bearer(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    for prefix in ("bearer ", "BEARER ", "Bearer "):
        body = event_json("participant_joined", call_id, attributes={"sip.callStatus": "ringing"})
        assert await post(client, body, prefix + sign(body)) == 200
    assert (await call_json(client, call_id))["status"] == "ringing"


@pytest.mark.parametrize("before", ["nan", "NaN", "inf", "-inf", "1e999"])
async def test_list_refuses_non_finite_before(client: Client, before: str) -> None:
    resp = await client.get("/calls", params={"before": before})
    assert resp.status == 400
    assert "before" in (await resp.json())["error"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "latin-1"])
async def test_non_utf8_bodies_are_refused(client: Client, encoding: str) -> None:
    body = json.dumps(dict(SEED_EXAMPLES[1]), ensure_ascii=False).encode(encoding)
    resp = await client.post(
        "/calls/outbound", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    # UTF-16-LE without a BOM is valid UTF-8 (NULs and ASCII): then it is simply not JSON.
    error = (await resp.json())["error"]
    assert "not UTF-8" in error or "not valid JSON" in error
    assert (await (await client.get("/calls")).json())["calls"] == []


async def test_access_log_keeps_call_ids_and_masks_user_agents(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the first connection
    call_id = (await (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).json())[
        "call_id"
    ]
    await client.get(f"/calls/{call_id}", headers={"User-Agent": "crm/+14155550123"})
    await client.get("/calls/+14155550188")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any(f"/calls/{call_id} " in line for line in lines)  # greppable
    assert not any("14155550123" in line or "14155550188" in line for line in lines)
    assert any("crm/+•••••••0123" in line for line in lines)


async def test_access_log_never_holds_a_token_a_client_put_in_it(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in the URL, the Referer or the User-Agent (the README's way to make one gives
    no digit run to mask): cut out, as is any `?access_token=`-like value."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the first connection
    token = "Zx_-kQpwLmVbNnTrEyUiOaSdFgHjKlQwErTyUiOpAs"  # secrets.token_urlsafe(32)'s shape
    client = await start_app(calls_api_token=token)
    auth = {"Authorization": f"Bearer {token}"}
    other = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-another-deployments"
    for path in (f"/calls?access_token={token}", f"/calls?limit=5&api_key={other}"):
        assert (await client.get(path, headers=auth)).status in (200, 400)
    headers = {**auth, "Referer": f"https://crm.example/x?t={token}", "User-Agent": token}
    assert (await client.get("/calls", headers=headers)).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 3
    assert not any(token in line or "another-deployments" in line for line in lines), lines
    assert sum(line.count("[redacted]") for line in lines) == 4


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        # A client that puts a call's fields in the URL (refused 400) had the callee's name
        # and 300 characters of the instructions written at INFO, where the log names a
        # callee only in the seed's line (and the instructions' first 80 characters at DEBUG).
        (
            "?name=Zebulon%20Quagmire&dynamic_instruction=Discuss+his+pachyderm+invoice"
            "&first_message=Hi%20Zebulon&additional_params=%7B%22acct%22%3A%22XQ-77%22%7D",
            "/calls/outbound?name=[redacted]&",
        ),
        # Its object fields as a form serializer writes them (qs, jQuery.param, Rails):
        # `additional_params[acct]=`, percent-encoded or not, or `voicemail.message=`. Only
        # the bare names were left out: the account and the voicemail message were logged.
        (
            "?additional_params%5Bacct%5D=XQ-77&additional_params[plan]=Gold-Pachyderm"
            "&voicemail.message=Hi%20Zebulon&analysis%5bsuccess_criteria%5d=Quagmire+paid",
            "/calls/outbound?additional_params%5Bacct%5D=[redacted]&",
        ),
    ],
    ids=["fields", "nested fields"],
)
async def test_access_log_never_holds_a_callees_fields_sent_in_a_query(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, query: str, shown: str
) -> None:
    """Those parameters' values are left out, as a credential's."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the first connection
    client = await start_app()
    assert (await client.post(f"/calls/outbound{query}", json={})).status == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 1 and shown in lines[0], lines
    words = ("Zebulon", "Quagmire", "pachyderm", "Pachyderm", "XQ-77")
    assert not any(w in lines[0] for w in words), lines
    assert lines[0].count("[redacted]") == 4, lines


async def test_access_log_never_holds_a_token_percent_encoded_or_across_its_cut(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Review AR: the request line is logged percent-encoded (a token with + / = went whole),
    and each field was cut at 300 characters before the redaction (a token across the cut was
    logged up to it); `refresh_token=` and the like were not credential names."""
    from urllib.parse import quote

    caplog.set_level(logging.INFO, logger="aiohttp.access")
    token = "Tok+en/abc=DEF0123xyz-0123456789"
    client = await start_app(calls_api_token=token)
    auth = {"Authorization": f"Bearer {token}"}
    pad = "x" * (300 - len("GET /calls?pad=&t=") - 10)  # the token starts 10 before the cut
    for path in (
        f"/calls?t={quote(token, safe='')}",
        f"/calls?pad={pad}&t={quote(token, safe='')}",
        "/calls?refresh_token=r3fr3sh-0123456789&client_secret=cl13nt-0123456789",
    ):
        await client.get(path, headers=auth)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 3
    for piece in ("Tok%2Ben", "Tok+en", "r3fr3sh", "cl13nt"):
        assert not any(piece in line for line in lines), (piece, lines)


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
async def test_access_log_drops_the_sandboxs_successful_webhooks(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    """The sandbox's successful posts are never logged; real LiveKit webhooks and agent
    reports that succeed only at DEBUG (the call's own lines tell their effect); failures and
    the client's requests always."""
    caplog.set_level(level, logger="aiohttp.access")  # before the first connection
    client = await start_app()
    resp = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Lo"))
    await client.app[SANDBOX].wait_idle(10)
    body = event_json("room_finished", "call-000000000000")
    assert await post(client, body, "Bearer " + sign(body)) == 200  # real traffic
    assert (
        await post(
            client, body, "Bearer " + sign(body, secret="a-wrong-secret-that-is-long-enough-0123")
        )
        == 401
    )
    report = await client.post("/agent/reports", data=b"{}", headers={"Authorization": "x"})
    assert resp.status == 200 and report.status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert client.app[SANDBOX].webhooks_delivered >= 5
    webhook_lines = [line for line in lines if "/webhooks/livekit" in line]
    ok = [line for line in webhook_lines if '" 200 ' in line]
    assert len(ok) == (1 if level == logging.DEBUG else 0)  # ours; never the sandbox's
    assert len([line for line in webhook_lines if '" 401 ' in line]) == 1
    assert len([line for line in lines if "/agent/reports" in line]) == 1  # the 401
    assert any("/calls/outbound" in line for line in lines)


async def test_json_logs_carry_call_id_and_status_as_fields(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(dataclasses.replace(Settings(), log_format="json"))
    try:
        resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
        call_id = (await resp.json())["call_id"]
        await client.app[SANDBOX].wait_idle(10)
        err: list[str] = []

        async def settled() -> bool:  # (the sandbox idle is not the call's settlement logged:
            # a loaded machine read the log before that line, once in a run beside others)
            err.append(capsys.readouterr().err)
            return '"status": "completed"' in "".join(err)

        await wait_for(settled, timeout=10)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    docs = [json.loads(line) for line in "".join(err).splitlines() if line]
    changes = [d for d in docs if d.get("call_id") == call_id and "status" in d]
    assert [d["status"] for d in changes][-1] == "completed"
    assert any(d["msg"].startswith("✓ Configuration updated") for d in docs if "call_id" in d)
    # Every line that names the call carries it as a field (the dial line did not).
    naming = [d for d in docs if call_id in d["msg"]]
    assert naming and all(d.get("call_id") == call_id for d in naming), naming
    assert any(" dialing " in d["msg"] for d in naming)


def test_a_json_log_field_of_another_type_is_written_as_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A `status` extra of bytes made the formatter raise: a "Logging error" traceback on
    stderr in place of the line."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(dataclasses.replace(Settings(), log_format="json"))
    try:
        logging.getLogger("test.json").warning("odd", extra={"status": b"x", "call_id": {1}})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "Logging error" not in err
    (doc,) = [json.loads(line) for line in err.splitlines() if '"odd"' in line]
    assert (doc["status"], doc["call_id"]) == ("b'x'", "{1}")


# ------------------------------------------------------------------ a newcomer's first hour


async def test_per_call_ringing_timeout_and_max_duration(client: Client) -> None:
    body = dict(SEED_EXAMPLES[0], ringing_timeout_s=45, max_duration_s=90)
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 200
    call_id = (await resp.json())["call_id"]
    (dial,) = [r.body for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant"]
    assert (dial["ringing_timeout"], dial["max_call_duration"]) == ("45s", "90s")
    (dispatch,) = [r.body for r in client.app[SANDBOX].requests if r.method == "CreateDispatch"]
    assert json.loads(dispatch["metadata"])["ringing_timeout_s"] == 45  # the agent waits as long
    shown = await call_json(client, call_id)
    assert (shown["ringing_timeout_s"], shown["max_duration_s"]) == (45, 90)
    assert shown["config"]["ringing_timeout_s"] == 45
    refused = await client.post("/calls/outbound", json=dict(body, ringing_timeout_s=121))
    assert refused.status == 422


async def test_a_finished_call_shows_its_config_times_and_ring_talk_split(
    client: Client, tmp_path: Path
) -> None:
    body = dict(SEED_EXAMPLES[1], additional_params={"tier": "gold"})
    call_id = (await (await client.post("/calls/outbound", json=body)).json())["call_id"]
    await client.app[SANDBOX].wait_idle(10)
    shown = await call_json(client, call_id)
    assert shown["status"] == "completed"
    await config_forgets(tmp_path / "config.json", call_id)
    assert shown["config"] == {
        "caller_name": body["name"],
        "agent_instructions": body["dynamic_instruction"],
        "tts_language": "es",
        "tts_emotion": "Calm",
        "additional_params": {"tier": "gold"},
        "ringing_timeout_s": 30,
        "max_duration_s": 600,
        "voicemail": {"action": "hang_up"},
        "analysis": {"summary": True, "fields": {}},  # a summary unless asked otherwise
    }
    for field in ("created_at", "answered_at", "ended_at", "updated_at"):
        assert shown[field].endswith("Z") and "T" in shown[field]
    assert all(e["at"].endswith("Z") for e in shown["timeline"])
    assert shown["ring_s"] >= 0 and shown["talk_s"] >= 0
    assert "duration_s" not in shown
    listed = (await (await client.get("/calls")).json())["calls"][0]
    assert listed["created_at"] == shown["created_at"]


def test_sha256_claim_helper_matches_livekit() -> None:
    """The test token helper signs the way LiveKit does (a sanity check of the helper)."""
    body = b"{}"
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = jwt.decode(
        _token({"sha256": digest}), DEV_API_SECRET, algorithms=["HS256"], issuer=DEV_API_KEY
    )
    assert claims["sha256"] == digest


async def test_records_of_live_calls_past_the_ttl_are_pruned_and_said_so(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A live call's record past CONFIG_RECORD_TTL_S goes, as the setting says; the line said
    "of calls that are over" for it, which it is not."""
    client = await start_app(reaper_interval_s=3600.0, config_record_ttl_s=1.0)
    store, service = client.app[STORE], client.app[CALLS]
    live, over = "call-00000000a11e", "call-000000000ded"
    for call_id in (live, over):
        await client.app[CONFIG].update_async("A", call_id=call_id)
        await store.create_call(NewCall(call_id, "+1234567890", "A", "en", "Calm"))
    await store.apply(over, "room_finished", lambda _state: _final(), room_finished=True)
    await asyncio.sleep(1.1)
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        assert await service.prune_config() == 2
    lines = [r for r in caplog.records if "pruned" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "1 of calls still live, past CONFIG_RECORD_TTL_S (1 s" in lines[0].getMessage()
    assert json.loads((tmp_path / "config.json").read_text())["calls"] == {}


async def test_records_of_call_ids_the_database_never_had_are_pruned_and_said_so(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record a script wrote with the seed's update_config(call_id=...) while a server ran
    is pruned a minute after it was written (no call of the database has its id), but the
    line said "pruned 1 config record(s) of calls that are over": its author looked for a
    call. The line now says how many were of ids the database does not know."""
    now = [time.time()]
    client = await start_app(reaper_interval_s=3600.0)
    store, service = client.app[STORE], client.app[CALLS]
    over = "call-000000000ded"
    await client.app[CONFIG].update_async("A", call_id=over)
    await store.create_call(NewCall(over, "+1234567890", "A", "en", "Calm"))
    await store.apply(over, "room_finished", lambda _state: _final(), room_finished=True)
    await client.app[CONFIG].update_async("B", call_id="from-a-script")
    service.clock = lambda: now[0] + 61.0  # the script's record is a minute old
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        assert await service.prune_config() == 2
    (line,) = [r.getMessage() for r in caplog.records if "pruned" in r.getMessage()]
    assert line == (
        "pruned 2 config record(s) of calls that are over (1 of call ids the calls database"
        " does not know, written 60 s ago or more)"
    )
    assert json.loads((tmp_path / "config.json").read_text())["calls"] == {}


async def test_an_internal_error_logs_the_path_with_its_phone_number_masked(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # README: numbers are masked to their last four digits in every log line; the 500's
    # ERROR wrote the path whole (DELETE /dnc/+14155550123).
    client = await quiet_app_with(start_app)

    async def broken(_number: str) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app[STORE], "remove_dnc", broken)
    response = await client.delete("/dnc/%2B14155550123")
    assert response.status == 500
    assert "unhandled error on DELETE /dnc/+•••••••0123" in caplog.text
    assert "4155550123" not in caplog.text
