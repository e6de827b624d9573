"""Erasure on request, through the real app and the sandbox: POST /calls/{call_id}/erase (one
call) and POST /calls/erase (every call to a number), what they erase, what they refuse."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common import update_config
from common.calls import service as service_module
from common.storage import programs
from common.storage.base import CommitUnknown, DatabaseStalled
from common.storage.campaign_programs import ERASED_ERROR
from common.storage.sql import SqlCallStore
from handlers.keys import EVENTS, SETTINGS, STORE
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, SEED_EXAMPLES, ShiftedClock

Client = TestClient[Any, Any]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCALE = 0.05  # the sandbox at 20x: an answered call lasts ~0.7 s
ALICE = dict(SEED_EXAMPLES[0], first_message="Hello Alice Smith")
FIRST = {"voicemail": {"action": "leave_message", "message": "Alice Smith, call us back"}}


async def placed(client: Client, body: dict[str, Any]) -> str:
    resp = await client.post("/calls/outbound", json=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    call_id: str = (await resp.json())["call_id"]
    return call_id


async def settled(client: Client, body: dict[str, Any]) -> str:
    call_id = await placed(client, body)
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    return call_id


def kept_in_database(client: Client) -> str:
    """Every row of the tables that hold a call's data, as text."""
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        tables = ("calls", "reports", "events", "outbox")
        return repr([list(db.execute(f"SELECT * FROM {t}")) for t in tables])  # noqa: S608


LATER = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()


async def upload(client: Any, csv: str, *, later: bool = True, **params: str) -> dict[str, Any]:
    """The 201 answer to a campaign of `csv`, starting an hour after OPEN_EVERYWHERE (`later`:
    its recipients wait) or at once."""
    query = {"name": "later", "start_at": LATER} if later else {"name": "now"}
    resp = await client.post(
        "/campaigns",
        params={**query, **params},
        data=csv.encode(),
        headers={**AUTH, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_a_call_erased_on_request_keeps_nothing_of_its_callee_but_the_number(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    call_id = await settled(client, dict(ALICE, **FIRST))
    before = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert before["status"] == "completed" and before["transcript"]
    assert "Alice Smith" in kept_in_database(client)
    assert (await client.post(f"/calls/{call_id}/erase")).status == 401

    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)

    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "success"
    assert (answer["erased"], answer["call_ids"]) == (1, [call_id])
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["personal_data_erased_at"] == answer["personal_data_erased_at"] is not None
    assert call["transcript"] == [] and call["summary"] is None and call["name"] == ""
    assert call["config"]["caller_name"] == "" and call["config"]["agent_instructions"] == ""
    assert "first_message" not in call["config"]
    assert call["config"]["voicemail"] == {"action": "leave_message"}
    for field in ("status", "phone_number", "answered_at", "ended_at", "talk_s", "amd"):
        assert call[field] == before[field]
    assert "Alice Smith" not in kept_in_database(client)
    assert "cricket coach" not in kept_in_database(client)
    # Again: the same answer (nothing is left to erase), a new time.
    again = await client.post(f"/calls/{call_id}/erase", headers=AUTH)
    assert again.status == 200 and (await again.json())["call_ids"] == [call_id]


async def test_erasing_an_unknown_call_is_404_and_a_get_of_the_route_405(
    start_app: AppFactory,
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    resp = await client.post("/calls/call-00000000dead/erase", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "unknown call"
    resp = await client.get("/calls/erase", headers=AUTH)
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_a_live_call_is_not_erased_until_it_has_ended(start_app: AppFactory) -> None:
    """Its conversation is still coming: 409 naming it, nothing erased; once it ended, the
    erasure goes through."""
    client = await start_app(sandbox_time_scale=1.0, calls_api_token=TOKEN)
    call_id = await placed(client, ALICE)

    for path, body in ((f"/calls/{call_id}/erase", None), ("/calls/erase", ALICE)):
        json = {"phone_number": body["phone_number"]} if body else None
        resp = await client.post(path, json=json, headers=AUTH)
        assert resp.status == 409, await resp.text()
        error = (await resp.json())["error"]
        assert call_id in error and "still live" in error and "nothing erased" in error
    assert "Alice Smith" in kept_in_database(client)

    assert (await client.post(f"/calls/{call_id}/hangup", headers=AUTH)).status == 200
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert "Alice Smith" not in kept_in_database(client)


async def test_erasing_a_number_erases_every_call_to_it_and_no_other(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    first = await settled(client, ALICE)
    other = await settled(client, SEED_EXAMPLES[1])
    second = await settled(client, dict(ALICE, phone_number="+1 (234) 567-890"))

    resp = await client.post("/calls/erase", json={"phone_number": "+1234567890"}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert (answer["erased"], answer["call_ids"]) == (2, [first, second])
    assert "Alice Smith" not in kept_in_database(client)
    assert "Carlos" in kept_in_database(client)
    kept = await (await client.get(f"/calls/{other}", headers=AUTH)).json()
    assert kept["name"] == "Carlos García" and kept["personal_data_erased_at"] is None
    # A number no call went to: nothing to erase, and it says so.
    resp = await client.post("/calls/erase", json={"phone_number": "+14155550100"}, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {
        "status": "success",
        "erased": 0,
        "call_ids": [],
        "recipients_erased": 0,
        "personal_data_erased_at": None,
    }


async def test_an_erasure_of_a_number_says_what_is_wrong_with_its_body(
    start_app: AppFactory,
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    for body, field in (
        ({"phone_number": "14155550100x"}, "phone_number"),
        ({}, "phone_number"),
        ({"phone_number": "+14155550100", "name": "Ann"}, "name"),
        ([], "body"),  # not an object: its body is wrong
    ):
        resp = await client.post("/calls/erase", json=body, headers=AUTH)
        assert resp.status == 422, (body, await resp.text())
        assert [d["field"] for d in (await resp.json())["details"]] == [field]
    assert (await client.post("/calls/erase", headers=AUTH)).status == 400  # no body
    resp = await client.post("/calls/erase?phone_number=%2B14155550100", json={}, headers=AUTH)
    assert resp.status == 400


def kept_in_files(client: Client) -> bytes:
    """The bytes of every file the server keeps a callee's data in: calls.db (its -wal too)
    and config.json."""
    settings = client.app[SETTINGS]
    db = Path(settings.calls_db_path)
    paths = (db, db.with_name(db.name + "-wal"), Path(settings.config_path))
    return b"".join(path.read_bytes() for path in paths if path.exists())


ANN = "+14155557700"  # the sandbox answers it (completed)
BOB = "+16502007700"


async def test_erasing_a_number_erases_its_campaign_recipients_who_are_never_called(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A campaign's recipient rows kept the name and every CSV column of the person erased,
    and one still waiting was called afterwards. Its fields now go (the number stays, as on
    the calls); one waiting ends `erased` and is never dialled; other recipients are kept."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    csv = f"phone_number,name,notes\n{ANN},Ann Lee-Marsh,cricket coach\n{BOB},Bob Ray,golfer\n"
    campaign_id = (await upload(client, csv))["campaign_id"]
    assert b"Ann Lee-Marsh" in kept_in_files(client)

    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    kept = kept_in_files(client)
    assert b"Ann Lee-Marsh" not in kept and b"cricket coach" not in kept
    assert b"Bob Ray" in kept and b"golfer" in kept
    assert (answer["erased"], answer["recipients_erased"]) == (0, 1)
    assert answer["personal_data_erased_at"] is not None
    # The log says what was erased (it said "0 call(s)" alone).
    said = "erased on request the personal data of 0 call(s) and 1 campaign recipient(s)"
    assert said in caplog.text
    campaign = await (await client.get(f"/campaigns/{campaign_id}", headers=AUTH)).json()
    assert (
        campaign["campaign"]["counts"]["erased"],
        campaign["campaign"]["counts"]["pending"],
    ) == (
        1,
        1,
    )
    url = f"/campaigns/{campaign_id}/recipients"
    rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert [(r["phone_number"], r["state"]) for r in rows] == [(ANN, "erased"), (BOB, "pending")]
    # Its start comes: Bob is called, Ann never.
    clock.move_to(OPEN_EVERYWHERE + 3601)
    async with asyncio.timeout(30):
        while True:
            campaign = await (await client.get(f"/campaigns/{campaign_id}", headers=AUTH)).json()
            if campaign["campaign"]["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    assert [d.number for d in client.app[SANDBOX].dials] == [BOB]


async def test_a_paused_campaign_whose_last_waiting_recipient_is_erased_completes(
    start_app_on_each_database: AppFactory,
) -> None:
    """A paused campaign whose last waiting recipient was erased stayed `paused` with every
    recipient final, and campaign.completed never came until someone resumed it for nothing.
    The erasure completes it, and its campaign.completed is dispatched."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app_on_each_database(
        sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock
    )
    dispatched: list[tuple[str, str]] = []

    async def seen(event: Any) -> None:
        dispatched.append((event.call_id, event.type))

    client.app[EVENTS].subscribe("test", seen)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    resp = await client.post(
        "/campaigns",
        params={"name": "later", "start_at": later},
        data=f"phone_number,name\n{ANN},Ann Lee-Marsh\n".encode(),
        headers={**AUTH, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    campaign_id = (await resp.json())["campaign_id"]
    paused = await client.post(f"/campaigns/{campaign_id}/pause", headers=AUTH)
    assert paused.status == 200, await paused.text()

    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    campaign = (await (await client.get(f"/campaigns/{campaign_id}", headers=AUTH)).json())[
        "campaign"
    ]
    assert (campaign["status"], campaign["counts"]["erased"]) == ("completed", 1)
    await client.app[EVENTS].wait_idle()
    assert (campaign_id, "campaign.completed") in dispatched
    resumed = await client.post(f"/campaigns/{campaign_id}/resume", headers=AUTH)
    assert resumed.status == 409


async def test_a_refused_row_with_a_name_for_its_number_does_not_keep_the_name(
    start_app: AppFactory,
) -> None:
    """A row refused with its columns shifted (invalid_rows=skip) kept the name in its
    `phone_number` (a refused row's number is the text given, to find the row by): personal
    data that no erasure by number could find. Text with a letter is no number: not kept."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    csv = f"phone_number,name\nAnn Lee-Marsh,{ANN}\n{BOB},Bob Ray\n+1 415 555,Cy\n"
    resp = await client.post(
        "/campaigns",
        params={"name": "shifted", "start_at": later, "invalid_rows": "skip"},
        data=csv.encode(),
        headers={**AUTH, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    url = f"/campaigns/{(await resp.json())['campaign_id']}/recipients"
    rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert [(r["row"], r["phone_number"], r["state"]) for r in rows] == [
        (2, "", "invalid"),
        (3, BOB, "pending"),
        (4, "+1 415 555", "invalid"),  # a number mistyped is kept, to find its row by
    ]
    assert b"Ann Lee-Marsh" not in kept_in_files(client)


async def test_an_erased_recipients_errors_no_longer_quote_what_it_was_refused_for(
    start_app_on_each_database: AppFactory,
) -> None:
    """A row refused with invalid_rows=skip keeps its errors, and they quote the values
    refused (a timezone column holding the person's address): the erasure took its fields
    and left them, shown by GET .../recipients and kept in calls.db. The fields refused stay
    named; the messages go."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app_on_each_database(
        sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock
    )
    csv = f"phone_number,name,timezone\n{ANN},Ann Lee-Marsh,12 Elm Street\n{BOB},Bob Ray,\n"
    url = f"/campaigns/{(await upload(client, csv, invalid_rows='skip'))['campaign_id']}/recipients"
    rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert rows[0]["state"] == "invalid" and "12 Elm Street" in rows[0]["errors"][0]["error"]

    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)

    assert resp.status == 200 and (await resp.json())["recipients_erased"] == 1
    rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert rows[0]["state"] == "invalid"
    assert [e["field"] for e in rows[0]["errors"]] == ["timezone"]
    assert "Elm Street" not in repr(rows)
    assert b"Elm Street" not in kept_in_files(client)


async def test_a_campaign_call_erased_takes_its_recipients_fields_with_it(
    start_app: AppFactory,
) -> None:
    """The call's recipient row held what the call was placed with (its name, its CSV
    columns): erasing the call left it there. It goes with the call; the recipient's state
    (its call's outcome) stays."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    csv = f"phone_number,name,notes\n{ANN},Ann Lee-Marsh,cricket coach\n{BOB},Bob Ray,golfer\n"
    campaign_id = (await upload(client, csv, later=False))["campaign_id"]
    async with asyncio.timeout(30):
        while True:
            campaign = await (await client.get(f"/campaigns/{campaign_id}", headers=AUTH)).json()
            if campaign["campaign"]["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    url = f"/campaigns/{campaign_id}/recipients"
    rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    call_id = rows[0]["attempts"][-1]["call_id"]

    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)

    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    kept = kept_in_files(client)
    assert b"Ann Lee-Marsh" not in kept and b"cricket coach" not in kept
    assert b"Bob Ray" in kept
    assert (answer["call_ids"], answer["recipients_erased"]) == ([call_id], 1)
    after = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert [r["state"] for r in after] == [r["state"] for r in rows] == ["completed"] * 2


async def test_config_jsons_latest_config_of_an_erased_call_goes_and_anothers_stays(
    start_app_on_each_database: AppFactory,
) -> None:
    """config.json's top level (the seed's "latest config": get_config_value("caller_name"))
    kept the last call's name and instructions after its erasure, until another call. It
    goes back to the defaults when it is an erased call's; a later call's stays."""
    client = await start_app_on_each_database(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    await settled(client, dict(ALICE, **FIRST))
    assert update_config.get_config_value("caller_name") == ALICE["name"]

    resp = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )

    assert resp.status == 200 and (await resp.json())["erased"] == 1
    assert update_config.get_config_value("caller_name") == "Guest"
    assert ALICE["name"].encode() not in config_path.read_bytes()
    assert b"cricket coach" not in config_path.read_bytes()
    # A later call's latest config is not the erased call's: it stays.
    first = await settled(client, dict(ALICE, **FIRST))
    await settled(client, SEED_EXAMPLES[1])
    assert (await client.post(f"/calls/{first}/erase", headers=AUTH)).status == 200
    assert update_config.get_config_value("caller_name") == SEED_EXAMPLES[1]["name"]


async def test_config_jsons_latest_config_written_alike_by_a_later_call_stays(
    start_app: AppFactory,
) -> None:
    """Two people of one name placed alike (a campaign's rows with a name alone): erasing
    the first one's number put config.json's top level back to the defaults (Guest),
    though the later call, not erased, wrote it: get_config_value("caller_name") said
    "Guest" for the latest call. The top level a later call wrote stays, equal or not."""
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    await settled(client, ALICE)
    await settled(client, dict(ALICE, phone_number="+14155557701"))
    assert update_config.get_config_value("caller_name") == ALICE["name"]

    resp = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )

    assert resp.status == 200 and (await resp.json())["erased"] == 1
    assert update_config.get_config_value("caller_name") == ALICE["name"]


async def test_an_unreadable_config_json_set_aside_holding_an_erased_call_goes(
    start_app: AppFactory,
) -> None:
    """An unreadable config.json is set aside (config.json.corrupt-<stamp>, the newest 10
    kept for good) with whatever it held: an erasure left the erased callee's name and
    instructions there. A copy holding them goes; one that does not stays."""
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    await settled(client, ALICE)
    config_path.write_bytes(config_path.read_bytes()[:-5])  # cut short: unreadable
    await settled(client, SEED_EXAMPLES[1])  # its write sets the file aside
    other = config_path.with_name("config.json.corrupt-20260101T000000-abcd")
    other.write_bytes(b'{"caller_name": "Carlos Garc')
    aside = sorted(config_path.parent.glob("config.json.corrupt-*"))
    assert len(aside) == 2 and any(b"Alice Smith" in p.read_bytes() for p in aside)

    resp = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )

    assert resp.status == 200 and (await resp.json())["erased"] == 1
    assert sorted(config_path.parent.glob("config.json.corrupt-*")) == [other]


async def test_a_refused_rows_errors_in_the_campaigns_replayed_answer_are_erased_with_it(
    start_app: AppFactory,
) -> None:
    """A row refused with invalid_rows=skip has errors quoting its values (a name in the
    `language` column: "unsupported language 'Ann Lee-Marsh'"); the campaign's
    Idempotency-Key answer keeps them, replayed to a retry: an erasure of its number left
    them there, in calls.db. They go; the other rows' stay."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    csv = f"phone_number,language\n{ANN},Ann Lee-Marsh\n{BOB},en\n"
    headers = {**AUTH, "Content-Type": "text/csv", "Idempotency-Key": "upload-1"}
    params = {"name": "later", "start_at": LATER, "invalid_rows": "skip"}
    resp = await client.post("/campaigns", params=params, data=csv.encode(), headers=headers)
    assert resp.status == 201, await resp.text()
    assert "Ann Lee-Marsh" in (await resp.json())["invalid_rows"][0]["error"]
    assert b"Ann Lee-Marsh" in kept_in_files(client)

    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["recipients_erased"] == 1
    assert b"Ann Lee-Marsh" not in kept_in_files(client)
    replay = await client.post("/campaigns", params=params, data=csv.encode(), headers=headers)
    assert replay.status == 201 and replay.headers["Idempotent-Replay"] == "1"
    assert (await replay.json())["invalid_rows"] == [
        {"row": 2, "field": "language", "error": ERASED_ERROR}
    ]


async def test_an_erasure_the_database_stops_part_way_says_so_and_a_retry_finishes_it(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number's recipients are erased in one transaction, its calls in later batches: the
    database failing in between was answered a bare 503 "calls database unavailable" (read
    as nothing erased), and what the erased calls had been placed with was left in
    config.json's set-aside copies for good (a retry found their configs erased already, and
    nothing to look for). The answer says what was erased and that the same request again
    finishes it; the copies go at once; the retry erases the rest."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    config_path = Path(client.app[SETTINGS].config_path)
    await settled(client, ALICE)
    config_path.write_bytes(config_path.read_bytes()[:-5])  # cut short: unreadable
    await settled(client, dict(ALICE, name="Alicia Jones"))  # its write sets the file aside
    assert any(b"Alice Smith" in p.read_bytes() for p in config_path.parent.glob("*.corrupt-*"))
    await upload(client, f"phone_number,name\n{ALICE['phone_number']},Alice Smith\n{BOB},Bob Ray\n")
    monkeypatch.setattr(programs, "ERASE_NOW_BATCH", 1)
    store = client.app[STORE]
    assert isinstance(store, SqlCallStore)
    run, batches = store._run, []

    async def failing(program: Any, *, write: bool) -> Any:
        if getattr(program, "__name__", "") == "erase_calls_now":
            batches.append(program)
            if len(batches) == 2:
                program.close()
                raise DatabaseStalled("stalled")
        return await run(program, write=write)

    monkeypatch.setattr(store, "_run", failing)

    resp = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )

    assert resp.status == 503 and resp.headers["Retry-After"] == "2"
    error = (await resp.json())["error"]
    assert error == (
        "calls database unavailable: it did not answer in time: the erasure stopped part way"
        " (1 campaign recipient(s) and 1 of 2 call(s) erased, not the rest); send the same"
        " request again to finish it"
    )
    assert not any(b"Alice Smith" in p.read_bytes() for p in config_path.parent.glob("*.corrupt-*"))
    monkeypatch.setattr(store, "_run", run)
    again = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )
    assert again.status == 200, await again.text()
    assert ((await again.json())["erased"], (await again.json())["recipients_erased"]) == (2, 1)
    kept = kept_in_files(client)
    assert b"Alice Smith" not in kept and b"Alicia Jones" not in kept and b"Bob Ray" in kept


async def test_an_erasure_just_after_a_campaign_call_ended_waits_for_its_campaign(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a campaign call's end and its campaign recording it (its call.ended event),
    the recipient is still `calling`: an erasure then was answered 409 calling the ended
    call "still live". It waits a moment for the campaign and erases; if the campaign takes
    longer, the 409 says the call just ended and to retry in a second (Retry-After)."""
    monkeypatch.setattr(service_module, "ERASE_ENDING_WAIT_S", 0.5)
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    store = client.app[STORE]
    finish, recorded = store.finish_call_attempt, asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        await recorded.wait()
        return await finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish_call_attempt", held)
    campaign_id = (await upload(client, f"phone_number,name\n{ANN},Ann Lee-Marsh\n", later=False))[
        "campaign_id"
    ]
    url = f"/campaigns/{campaign_id}/recipients"
    async with asyncio.timeout(30):
        while True:
            rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
            call_id = rows[0]["attempts"][-1]["call_id"] if rows[0]["attempts"] else None
            if call_id is not None:
                call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
                if call["status"] == "completed":
                    break
            await asyncio.sleep(0.05)
    assert rows[0]["state"] == "calling"

    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)

    assert resp.status == 409 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"] == (
        f"nothing erased: 1 campaign call(s) just ended ({call_id}) and their campaign has not"
        " recorded it yet; send the request again in a second"
    )
    asyncio.get_running_loop().call_later(0.2, recorded.set)
    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert ((await resp.json())["call_ids"], (await resp.json())["recipients_erased"]) == (
        [call_id],
        1,
    )
    assert b"Ann Lee-Marsh" not in kept_in_files(client)


async def test_an_erasure_whose_commit_was_lost_still_erases_the_set_aside_copies(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's connection lost while a batch of an erasure committed (CommitUnknown):
    the batch was written, but what its calls had been placed with was never known, so the
    answer was a bare 503 "calls database unavailable" (read as nothing erased) and
    config.json's set-aside copy kept the erased callee's name for good: the retry, answered
    200, found the calls' configs erased already and nothing to look for. The answer says
    the erasure stopped part way, and the copy goes at once."""
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    await settled(client, ALICE)
    config_path.write_bytes(config_path.read_bytes()[:-5])  # cut short: unreadable
    other = dict(ALICE, name="Alicia Jones", dynamic_instruction="You are a chess coach.")
    await settled(client, other)  # its write sets the file aside
    assert any(b"Alice Smith" in p.read_bytes() for p in config_path.parent.glob("*.corrupt-*"))
    monkeypatch.setattr(programs, "ERASE_NOW_BATCH", 1)
    store = client.app[STORE]
    assert isinstance(store, SqlCallStore)
    run = store._run

    async def commit_lost(program: Any, *, write: bool) -> Any:
        done = await run(program, write=write)
        if getattr(program, "__name__", "") == "erase_calls_now":
            raise CommitUnknown("connection lost while committing (ConnectionResetError)")
        return done

    monkeypatch.setattr(store, "_run", commit_lost)

    resp = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )

    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"] == (
        "calls database unavailable: the erasure stopped part way (0 campaign recipient(s) and"
        " 0 of 2 call(s) erased, 1 more perhaps (the database's answer to them was lost), not"
        " the rest); send the same request again to finish it"
    )
    assert not any(b"Alice Smith" in p.read_bytes() for p in config_path.parent.glob("*.corrupt-*"))
    monkeypatch.setattr(store, "_run", run)
    again = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )
    assert again.status == 200, await again.text()
    assert b"Alice Smith" not in kept_in_files(client)
    assert not any(b"Alice Smith" in p.read_bytes() for p in config_path.parent.glob("*.corrupt-*"))


async def test_an_invalid_row_whose_number_has_spaces_is_found_by_its_erasure(
    start_app: AppFactory,
) -> None:
    """A row skipped for its language (a name from a column shifted, which its error
    quotes) kept its number as written, "+1 650 200 7700": an erasure of +16502007700 found
    no recipient (recipients_erased 0) and the error kept 'Bob Ray' for good."""
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    csv = f"phone_number,language\n{ANN},en\n+1 650 200 7700,Bob Ray\n"
    created = await upload(client, csv, invalid_rows="skip")
    assert created["invalid_row_count"] == 1
    assert b"Bob Ray" in kept_in_files(client)

    resp = await client.post("/calls/erase", json={"phone_number": BOB}, headers=AUTH)

    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["recipients_erased"] == 1
    url = f"/campaigns/{created['campaign_id']}/recipients"
    rows = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert [(r["phone_number"], r["errors"]) for r in rows][1] == (
        BOB,
        [{"field": "language", "error": ERASED_ERROR}],
    )


async def test_erasing_a_number_listed_in_thousands_of_rows_is_a_few_statements(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number in 2,000 rows of a list (its repeats kept invalid, invalid_rows=skip): each
    recipient was locked and written by statements of its own, two per row, all in the
    transaction every other write waits for (100,000 rows: 3.1 s, SQLite). Now a few dozen,
    with the same result."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    rows = "".join(f"{ANN},Ann Lee-Marsh {i}\n" for i in range(2000))
    answer = await upload(client, f"phone_number,name\n{rows}{BOB},Bob Ray\n", invalid_rows="skip")
    assert answer["invalid_row_count"] == 1999
    store = client.app[STORE]
    run, statements = store._run, list[object]()

    async def counted(program: Any, **kwargs: Any) -> Any:
        def each(program: Any = program) -> Any:
            sent = None
            while True:
                try:
                    query = program.send(sent)
                except StopIteration as stop:
                    return stop.value
                statements.append(query)
                sent = yield query

        return await run(each(), **kwargs)

    monkeypatch.setattr(store, "_run", counted)

    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["recipients_erased"] == 2000
    assert len(statements) < 50, len(statements)
    url = f"/campaigns/{answer['campaign_id']}/recipients?limit=1000"
    listed = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert [r["state"] for r in listed[:2]] == ["erased", "invalid"]
    assert listed[1]["errors"] == [{"field": "phone_number", "error": ERASED_ERROR}]
    kept = kept_in_files(client)
    assert b"Ann Lee-Marsh" not in kept and b"Bob Ray" in kept
