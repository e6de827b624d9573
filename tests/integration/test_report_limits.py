"""What POST /agent/reports refuses, and what GET /calls/{id} still shows when the database holds
reports that today's rules would refuse: numbers that are not finite or not a moment, free-form
objects that no store can hold, more turns than a call keeps. Real signed reports, the real app.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sqlite3
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic_core import PydanticSerializationError

from common.contracts import MAX_REPORT_AT, MAX_TURNS, REPORTS_PATH, AgentReport
from common.repeats import Repeats
from common.storage import programs
from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.integration.test_call_results import report, report_token, shown
from tests.integration.test_webhooks import place, quiet_app

Client = TestClient[Any, Any]
HELLO = {"role": "agent", "text": "Hello", "at_s": 0.5}


async def post_text(client: Client, call_id: str, text: str) -> tuple[int, dict[str, Any]]:
    """POST a report's exact JSON text, signed for `call_id`: its status and JSON answer."""
    body = text.encode()
    headers = {"Authorization": "Bearer " + report_token(body, call_id)}
    resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


def with_at(sent: dict[str, Any], literal: str) -> str:
    """The report's JSON with `"at"` written as `literal` (JSON parsers read 1e999 as inf)."""
    return json.dumps(dict(sent, at=0.125)).replace('"at": 0.125', f'"at": {literal}')


def fields(answer: dict[str, Any]) -> list[str]:
    return [d["field"] for d in answer["details"]]


def stored_reports(client: Client, call_id: str) -> list[tuple[int, str, str]]:
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        rows = db.execute(
            "SELECT seq, kind, body FROM reports WHERE call_id = ? ORDER BY seq", (call_id,)
        ).fetchall()
    return [(int(seq), str(kind), str(body)) for seq, kind, body in rows]


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("literal", ["Infinity", "1e999", "1e300", str(MAX_REPORT_AT + 1)])
async def test_a_report_whose_moment_is_no_moment_is_400(
    start_app: AppFactory, literal: str
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    sent = report(call_id, 1, "turn", turn=HELLO)
    status, answer = await post_text(client, call_id, with_at(sent, literal))
    assert status == 400 and answer["error"] == "not an agent report"
    assert fields(answer) == ["at"]
    assert stored_reports(client, call_id) == []
    call = await shown(client, call_id)  # the call still reads, with nothing of it
    assert call["transcript"] == []
    # The same turn at a real moment is taken.
    status, answer = await post_text(client, call_id, json.dumps(sent))
    assert (status, answer["result"]) == (200, "applied")
    assert (await shown(client, call_id))["transcript"] == [dict(HELLO, interrupted=False)]


@pytest.mark.parametrize(
    ("kind", "body", "where"),
    [
        ("turn", {"at": "NaN", "turn": HELLO}, "at"),
        ("turn", {"at": "-Infinity", "turn": HELLO}, "at"),
        ("turn", {"turn": dict(HELLO, at_s="NaN")}, "turn.at_s"),
        ("turn", {"turn": dict(HELLO, at_s="Infinity")}, "turn.at_s"),
        ("final", {"final": {"transcript": [dict(HELLO, at_s="NaN")]}}, "final.transcript.0.at_s"),
    ],
)
async def test_every_float_of_a_report_is_finite(
    start_app: AppFactory, kind: str, body: dict[str, Any], where: str
) -> None:
    """These were refused before too (by the bounds of `at` and `at_s`); held here so that
    no change of a bound lets a number that is not finite into the database."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    text = json.dumps(dict(report(call_id, 1, kind), **body)).replace('"NaN"', "NaN")
    text = text.replace('"Infinity"', "Infinity").replace('"-Infinity"', "-Infinity")
    status, answer = await post_text(client, call_id, text)
    assert status == 400 and fields(answer) == [where]
    assert stored_reports(client, call_id) == []
    assert (await shown(client, call_id))["report_status"] == "pending"


async def test_a_stored_turn_that_no_longer_reads_leaves_the_call_readable(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows a database may hold from before: a turn whose `at` was Infinity (stored as null),
    and one whose turn itself no longer reads. The call still reads; the first turn is shown,
    the second left out with a warning naming the call."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    at_null = dict(report(call_id, 1, "turn", turn=HELLO), at=None)
    broken = report(call_id, 2, "turn", turn=dict(HELLO, at_s=None))
    truncated = json.dumps(report(call_id, 3, "turn", turn=HELLO))[:-9]
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        db.executemany(
            "INSERT INTO reports (call_id, seq, kind, body, at, received_at)"
            " VALUES (?, ?, 'turn', ?, ?, ?)",
            [
                (call_id, seq, body, time.time(), time.time())
                for seq, body in ((1, json.dumps(at_null)), (2, json.dumps(broken)), (3, truncated))
            ],
        )
    monkeypatch.setattr(programs, "_UNREADABLE", Repeats())  # none said yet in this test
    with caplog.at_level(logging.WARNING, logger="common.storage.programs"):
        resp = await client.get(f"/calls/{call_id}")
    assert resp.status == 200
    assert (await resp.json())["transcript"] == [dict(HELLO, interrupted=False)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(call_id in line and "#2" in line for line in warnings), warnings
    # The reports after them still arrive and show.
    later = report(call_id, 4, "turn", turn=dict(HELLO, text="Still there?", at_s=3.0))
    assert (await post_text(client, call_id, json.dumps(later)))[0] == 200
    texts = [t["text"] for t in (await shown(client, call_id))["transcript"]]
    assert texts == ["Hello", "Still there?"]
    assert (await client.get("/calls")).status == 200


# ------------------------------------------------------------------ free-form objects


def nested(levels: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("final", "where", "why"),
    [
        ({"usage": nested(200)}, "final.usage", "nests deeper than 32 levels"),
        ({"usage": nested(300)}, "final.usage", "nests deeper than 32 levels"),
        ({"usage": {"llm": [nested(40)]}}, "final.usage", "nests deeper than 32 levels"),
        ({"extracted": nested(200)}, "final.extracted", "nests deeper than 32 levels"),
        ({"usage": {"a": "\ud800"}}, "final.usage", "must be valid Unicode text"),
        ({"usage": {"\ud800": 1}}, "final.usage", "must be valid Unicode text"),
        ({"extracted": {"name": ["x", "\udfff"]}}, "final.extracted", "must be valid Unicode"),
        ({"usage": {"audio_s": float("nan")}}, "final.usage", "must be JSON-serialisable"),
        ({"extracted": {"n": float("inf")}}, "final.extracted", "must be JSON-serialisable"),
        ({"usage": {"a": "x" * (64 * 1024)}}, "final.usage", "is larger than 65536 bytes"),
    ],
    ids=[
        "usage-200-deep",
        "usage-300-deep",
        "usage-list-deep",
        "extracted-200-deep",
        "usage-surrogate-value",
        "usage-surrogate-key",
        "extracted-surrogate-in-list",
        "usage-nan",
        "extracted-inf",
        "usage-too-large",
    ],
)
async def test_a_final_report_whose_free_form_objects_cannot_be_stored_is_400(
    start_app: AppFactory, final: dict[str, Any], where: str, why: str
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    text = json.dumps(report(call_id, 1, "final", final=dict(final, summary="Said hello.")))
    status, answer = await post_text(client, call_id, text)
    assert status == 400, answer
    assert answer["error"] == "not an agent report" and fields(answer) == [where]
    assert answer["details"][0]["error"].startswith(why)
    assert stored_reports(client, call_id) == []
    call = await shown(client, call_id)
    assert call["report_status"] == "pending" and call["summary"] is None
    # The same report within the bounds is taken.
    fine = report(call_id, 2, "final", final={"usage": nested(31), "extracted": {"a": "é"}})
    status, answer = await post_text(client, call_id, json.dumps(fine))
    assert (status, answer["result"]) == (200, "applied")
    call = await shown(client, call_id)
    assert call["usage"] == nested(31) and call["extracted"] == {"a": "é"}


async def test_a_report_that_cannot_be_stored_is_400_and_leaves_nothing(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the contract may still let through, a report that fails to be written is the
    report's fault (400, the agent does not retry it), never a 500; nothing of it stays."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    sent = report(call_id, 1, "turn", turn=HELLO)

    def unwritable(_report: AgentReport) -> bytes:
        raise PydanticSerializationError("Error serializing to JSON: surrogates not allowed")

    with monkeypatch.context() as patch:
        patch.setattr(AgentReport, "to_json", unwritable)
        status, answer = await post_text(client, call_id, json.dumps(sent))
    assert status == 400 and fields(answer) == ["body"]
    assert stored_reports(client, call_id) == []
    status, answer = await post_text(client, call_id, json.dumps(sent))
    assert (status, answer["result"]) == (200, "applied")  # not a duplicate: nothing was kept


# ------------------------------------------------------------------ turns per call


def fill_turns(client: Client, call_id: str, first_seq: int = 10_000) -> None:
    """MAX_TURNS turns of `call_id` stored, numbered from `first_seq` (as if reported)."""
    rows = []
    for i in range(MAX_TURNS):
        seq = first_seq + i
        turn = dict(HELLO, text=f"turn {i}", at_s=float(i))
        rows.append((call_id, seq, json.dumps(report(call_id, seq, "turn", turn=turn))))
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        db.executemany(
            "INSERT INTO reports (call_id, seq, kind, body, at, received_at)"
            " VALUES (?, ?, 'turn', ?, 0, 0)",
            rows,
        )


async def test_a_call_keeps_at_most_max_turns(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    fill_turns(client, call_id)
    before = await shown(client, call_id)
    assert len(before["transcript"]) == MAX_TURNS
    one_more = report(call_id, 20_000, "turn", turn=dict(HELLO, at_s=3000.0))
    status, answer = await post_text(client, call_id, json.dumps(one_more))
    assert status == 409
    assert (
        answer["error"] == f"call {call_id} already holds 2,000 transcript turns; no more are kept"
    )
    after = await shown(client, call_id)
    assert after["transcript"] == before["transcript"] and after["timeline"] == before["timeline"]
    assert len(stored_reports(client, call_id)) == MAX_TURNS
    # One of the turns kept, sent again, is still a duplicate; other kinds still count.
    again = report(call_id, 10_000, "turn", turn=dict(HELLO, text="turn 0", at_s=0.0))
    assert await post_text(client, call_id, json.dumps(again)) == (
        200,
        {"status": "success", "result": "duplicate"},
    )
    final = report(call_id, 20_001, "final", final={"summary": "A long call."})
    assert (await post_text(client, call_id, json.dumps(final)))[0] == 200
    assert (await shown(client, call_id))["summary"] == "A long call."
    metrics = await (await client.get("/metrics")).text()
    assert 'agent_reports_total{result="too_many_turns"} 1.0' in metrics


async def test_reports_from_a_clock_far_ahead_are_said_once_a_minute(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent host whose clock runs 10 minutes ahead has every report refused (401) with a
    WARNING whose reason holds how far ahead (in seconds): each refusal's reason differed,
    so the once-a-minute limit never held and every retried report wrote its own line."""
    import base64
    import hashlib

    import jwt

    from common.settings import DEV_API_KEY, DEV_API_SECRET

    client = await quiet_app(start_app)
    call_id = await place(client)
    for ahead in (600, 700, 800):
        body = json.dumps(report(call_id, 0, "answered")).encode()
        now = int(time.time()) + ahead
        claims = {
            "iss": DEV_API_KEY,
            "nbf": now,
            "exp": now + 300,
            "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
            "video": {"room": call_id},
        }
        token = jwt.encode(claims, DEV_API_SECRET, algorithm="HS256")
        resp = await client.post(REPORTS_PATH, data=body, headers={"Authorization": token})
        assert resp.status == 401
    said = [r.getMessage() for r in caplog.records if "report refused from" in r.getMessage()]
    assert len(said) == 1, said
    assert "token not valid yet: its nbf is " in said[0]
