"""Call results in GET /calls/{id}: the live answer, the transcript, the analysis and the
answering-machine verdict, from the agent's signed reports (POST /agent/reports).

The sandbox plays our agent for each simulated call (sandbox/agent.py), posting the same
signed reports a real agent would; other tests post reports themselves, signed the way LiveKit
signs (an independent signer here, not the production code's), forged, replayed and
cross-call.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import io
import json
import sqlite3
import time
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient
from livekit.api import AccessToken, VideoGrants

from common.contracts import REPORTS_PATH
from common.settings import DEV_API_KEY, DEV_API_SECRET
from common.signing import TOKEN_TTL
from handlers.keys import CALLS, EVENTS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_webhooks import event_json, place, post, quiet_app, sign

Client = TestClient[Any, Any]
SCALE = 0.05  # the sandbox at 20x: an answered call lasts ~0.7 s
ANALYSIS = {
    "summary": True,
    "success_criteria": "The callee confirms the appointment",
    "fields": {
        "caller_name": {"type": "string", "description": "who answered"},
        "appointment_confirmed": {"type": "boolean"},
        "party_size": {"type": "integer"},
        "preferred_time": {"type": "enum", "enum": ["morning", "afternoon"]},
    },
}


def report_token(
    body: bytes,
    room: str | None,
    secret: str = DEV_API_SECRET,
    ttl: datetime.timedelta = TOKEN_TTL,
) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = AccessToken(DEV_API_KEY, secret).with_ttl(ttl).with_sha256(digest)
    if room is not None:
        token = token.with_grants(VideoGrants(room=room))
    return token.to_jwt()


async def post_report(
    client: Client, sent: dict[str, Any], room: str | None = "<same>", **kw: Any
) -> int:
    body = json.dumps(sent).encode()
    covered = sent["call_id"] if room == "<same>" else room
    headers = {"Authorization": "Bearer " + report_token(body, covered, **kw)}
    resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
    return resp.status


async def shown(client: Client, call_id: str) -> dict[str, Any]:
    resp = await client.get(f"/calls/{call_id}")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def settled_call(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 200, await resp.text()
    call_id = (await resp.json())["call_id"]
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    return await shown(client, call_id)


def seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(end).timestamp() - datetime.fromisoformat(start).timestamp()


# ------------------------------------------------------------------ through the sandbox


async def test_an_answered_call_shows_its_conversation_and_analysis(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=SCALE)
    call = await settled_call(client, dict(SEED_EXAMPLES[0], analysis=ANALYSIS))
    assert call["status"] == "completed"
    assert call["report_status"] == "complete" and call["simulated"] is True
    assert call["amd"] == "human" and call["ended_by"] == "callee"
    # The answer came from the agent's report, when sip.callStatus became active: ~3 s
    # after the dial (1 s dialing + 2 s ringing), scaled; not at the hang-up.
    answered_after = seconds_between(call["created_at"], call["answered_at"])
    assert 2.0 * SCALE <= answered_after <= 3.0 * SCALE + 0.4
    assert call["ring_s"] == pytest.approx(answered_after, abs=0.002)
    assert call["talk_s"] >= 9.0 * SCALE  # 10 s of conversation, scaled
    transcript = call["transcript"]
    assert transcript[0]["role"] == "agent" and "Alice Smith" in transcript[0]["text"]
    assert [t["role"] for t in transcript] == ["agent", "callee", "agent", "callee", "agent"]
    assert [t["at_s"] for t in transcript] == sorted(t["at_s"] for t in transcript)
    assert call["summary"].startswith("Simulated call with Alice Smith")
    assert call["success"] == {"achieved": True, "reason": "simulated: the scripted callee agreed"}
    assert call["extracted"] == {
        "caller_name": "Alice Smith",
        "appointment_confirmed": True,
        "party_size": 1,
        "preferred_time": "morning",
    }
    assert call["config"]["analysis"]["fields"]["party_size"] == {
        "type": "integer",
        "description": "",
        "required": False,
    }


async def test_the_first_message_opens_the_conversation(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=SCALE)
    first = "Hi Carlos, this is Ana from the clinic about tomorrow's appointment."
    call = await settled_call(client, dict(SEED_EXAMPLES[1], first_message=first))
    assert call["transcript"][0] == {
        "role": "agent",
        "text": first,
        "at_s": call["transcript"][0]["at_s"],
        "interrupted": False,
    }
    # No analysis was asked for: the default is a summary, nothing extracted.
    assert call["summary"].startswith("Simulated call with Carlos")
    assert call["extracted"] == {}


async def test_the_sandbox_agent_greets_by_the_name_our_agent_says(start_app: AppFactory) -> None:
    """The sandbox plays our agent: it says the callee's name as our agent does, without the
    TTS markup in it (the transcript showed 'Hello Bob<break time="30s"/>', which the real
    agent never says)."""
    client = await start_app(sandbox_time_scale=SCALE)
    name = 'Bob<break time="30s"/> <emotion value="angry"/>Lee'
    call = await settled_call(client, dict(SEED_EXAMPLES[1], name=name))
    agent_said = [t["text"] for t in call["transcript"] if t["role"] == "agent"]
    assert agent_said[0].startswith("Hello Bob Lee, ")
    assert agent_said[-1] == "Thank you Bob Lee, goodbye!"
    assert call["name"] == name  # the call keeps the name it was given


async def test_a_call_may_opt_out_of_the_summary(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=SCALE)
    call = await settled_call(client, dict(SEED_EXAMPLES[1], analysis={"summary": False}))
    assert call["transcript"] and call["summary"] is None


@pytest.mark.parametrize(
    ("number", "status"),
    [("+14155550486", "busy"), ("+14155550480", "no_answer"), ("+14155550503", "failed")],
)
async def test_unanswered_calls_report_no_conversation(
    start_app: AppFactory, number: str, status: str
) -> None:
    client = await start_app(sandbox_time_scale=SCALE)
    call = await settled_call(
        client, {"phone_number": number, "analysis": ANALYSIS, "ringing_timeout_s": 5}
    )
    assert call["status"] == status
    assert call["report_status"] == "complete" and call["ended_by"] == "system"
    assert call["transcript"] == [] and call["amd"] is None and call["answered_at"] is None
    assert call["talk_s"] == 0.0 and call["extracted"] is None


async def test_voicemail_is_detected_and_the_message_left(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=SCALE)
    message = "Hi, this is the clinic. Please call us back at your convenience."
    call = await settled_call(
        client,
        {
            "phone_number": "+14155550999",
            "name": "Dana",
            "voicemail": {"action": "leave_message", "message": message},
        },
    )
    assert call["status"] == "voicemail" and call["amd"] == "machine-vm"
    assert call["reason"] == "machine-vm" and call["ended_by"] == "agent"
    assert [t["text"] for t in call["transcript"]] == [message]


# ------------------------------------------------------------------ reports posted by hand


def report(
    call_id: str, seq: int, kind: str, at: float | None = None, **body: Any
) -> dict[str, Any]:
    """An agent report's JSON: `kind`, numbered `seq`, made at `at` (now), with its body."""
    return {"call_id": call_id, "seq": seq, "kind": kind, "at": at or time.time(), **body}


def answered(call_id: str, seq: int = 0, at: float | None = None) -> dict[str, Any]:
    return report(call_id, seq, "answered", at)


async def test_the_public_sandbox_secret_signs_reports_for_this_machine_only(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed with the embedded sandbox's secret (it is in the source), a report from another
    machine is refused (403) and changes nothing; from this one it is applied."""
    from handlers import http

    client = await quiet_app(start_app)
    call_id = await place(client, "+14155557761")
    monkeypatch.setattr(http, "_from_this_machine", lambda _request: False)
    assert await post_report(client, answered(call_id)) == 403
    assert (await shown(client, call_id))["status"] == "dialing"
    monkeypatch.undo()
    assert await post_report(client, answered(call_id)) == 200
    assert (await shown(client, call_id))["status"] == "in_progress"


async def test_the_answer_report_moves_the_call_to_in_progress_at_once(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)  # no webhooks at all: the report alone shows it
    call_id = await place(client, "+14155557760")
    at = time.time()
    assert await post_report(client, answered(call_id, at=at)) == 200
    call = await shown(client, call_id)
    assert call["status"] == "in_progress"
    from datetime import datetime

    assert datetime.fromisoformat(call["answered_at"]).timestamp() == pytest.approx(at, abs=0.001)
    turn = {"role": "callee", "text": "Hello?", "at_s": 0.4}
    assert await post_report(client, report(call_id, 1, "turn", at + 0.4, turn=turn)) == 200
    assert (await shown(client, call_id))["transcript"] == [dict(turn, interrupted=False)]
    pending = await shown(client, call_id)
    assert pending["report_status"] == "pending"
    assert pending["simulated"] is None  # not known before the final report (it said false)


async def test_an_agent_whose_clock_runs_minutes_ahead_is_heard(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its token's nbf is its own now: an agent host 3 minutes ahead had every report refused
    (401, which it never retries), and the call it talked on kept no answer, no transcript."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    real = datetime.datetime

    class AgentClock(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> AgentClock:
            return cast(AgentClock, real.now(tz) + datetime.timedelta(minutes=3))

    monkeypatch.setattr("livekit.api.access_token.datetime.datetime", AgentClock)
    assert await post_report(client, answered(call_id)) == 200
    assert (await shown(client, call_id))["status"] == "in_progress"


async def test_reports_are_idempotent(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    turn = report(call_id, 3, "turn", turn={"role": "agent", "text": "Hello", "at_s": 0.5})
    for _ in range(3):  # the agent retried: the same report, seen once
        assert await post_report(client, turn) == 200
    assert len((await shown(client, call_id))["transcript"]) == 1
    resp = await client.post(
        REPORTS_PATH,
        data=io.BytesIO(json.dumps(turn).encode()),
        headers={"Authorization": report_token(json.dumps(turn).encode(), call_id)},
    )
    assert (await resp.json())["result"] == "duplicate"


async def test_a_resumed_jobs_reports_numbered_from_0_again_are_kept(
    start_app: AppFactory,
) -> None:
    """LiveKit gives a job whose worker was lost to another worker (`resuming`), with the
    callee still on the line; the job starts again and numbers its reports from 0. Those
    whose number an earlier report holds were answered "duplicate" and dropped: its final
    report among them, and the call had no summary, analysis or call.report. Each is kept
    now, after the call's last report; sent again, it is a duplicate as any report is."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    at = time.time()

    def turn(seq: int, text: str, at_s: float) -> dict[str, Any]:
        line = {"role": "callee", "text": text, "at_s": at_s}
        return report(call_id, seq, "turn", at + at_s, turn=line)

    first_job = [answered(call_id, 0, at), turn(1, "Hello?", 0.5), turn(2, "Who is it?", 1.0)]
    for sent in first_job:
        assert await post_report(client, sent) == 200
    resumed_at = at + 30
    again = turn(1, "Still there?", 31.0)
    final = report(
        call_id,
        2,
        "final",
        resumed_at + 2,
        final={"transcript": [again["turn"]], "summary": "The callee was asked again."},
    )
    assert await post_report(client, answered(call_id, 0, resumed_at)) == 200
    for sent in (again, again, final, final):  # each sent twice: kept once
        body = json.dumps(sent).encode()
        resp = await client.post(
            REPORTS_PATH,
            data=io.BytesIO(body),
            headers={"Authorization": "Bearer " + report_token(body, call_id)},
        )
        assert resp.status == 200
    call = await shown(client, call_id)
    assert call["report_status"] == "complete"
    assert call["summary"] == "The callee was asked again."
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        kept = db.execute(
            "SELECT seq, kind FROM reports WHERE call_id = ? ORDER BY seq", (call_id,)
        ).fetchall()
    assert kept == [(0, "answered"), (1, "turn"), (2, "turn"), (3, "turn"), (4, "final")]


async def test_forged_cross_call_and_unknown_call_reports_change_nothing(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    mine, other = await place(client), await place(client)
    before = await shown(client, mine)
    forged = "another-secret-that-is-long-enough-0000000000"
    assert await post_report(client, answered(mine), secret=forged) == 401
    # Well signed, but valid for 6 h (livekit-api's default): our agents sign for 5 min
    assert await post_report(client, answered(mine), ttl=datetime.timedelta(hours=6)) == 401
    assert await post_report(client, answered(mine), room=None) == 409  # no room grant
    assert await post_report(client, answered(mine), room=other) == 409  # another call's token
    assert await post_report(client, answered("call-000000000000")) == 404
    metrics = await (await client.get("/metrics")).text()
    assert 'agent_reports_total{result="unknown_call"} 1.0' in metrics  # counted as the others
    body = json.dumps(answered(mine)).encode()
    for auth in (None, "Bearer not.a.jwt", report_token(body[:-1] + b" ", mine)):
        headers = {"Authorization": auth} if auth else {}
        resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
        assert resp.status == 401
    after = await shown(client, mine)
    assert after["status"] == before["status"] == "dialing"
    assert after["timeline"] == before["timeline"]
    assert (await shown(client, other))["status"] == "dialing"


@pytest.mark.parametrize(
    "malformed",
    [
        {
            "seq": 0,
            "kind": "answered",
            "at": 1.0,
            "turn": {"role": "agent", "text": "x", "at_s": 0},
        },
        {"seq": 0, "kind": "turn", "at": 1.0},
        {"seq": -1, "kind": "answered", "at": 1.0},
        {"seq": 0, "kind": "gossip", "at": 1.0},
        {"seq": 0, "kind": "amd", "at": 1.0, "amd": {"category": "robot"}},
    ],
)
async def test_malformed_reports_are_400(start_app: AppFactory, malformed: dict[str, Any]) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    assert await post_report(client, {"call_id": call_id, **malformed}) == 400


async def test_no_report_moves_a_final_status(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    for event in (
        event_json(
            "participant_left", call_id, attributes={"sip.callStatus": "ringing"}, reason=12
        ),
        event_json("room_finished", call_id),
    ):
        assert await post(client, event, sign(event)) == 200
    assert (await shown(client, call_id))["status"] == "busy"
    assert await post_report(client, answered(call_id)) == 200
    amd = report(call_id, 1, "amd", amd={"category": "machine-vm"})
    assert await post_report(client, amd) == 200
    call = await shown(client, call_id)
    assert call["status"] == "busy" and call["answered_at"] is None


async def test_an_agent_that_never_reports_shows_unavailable(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    event = event_json("room_finished", call_id)
    assert await post(client, event, sign(event)) == 200
    assert (await shown(client, call_id))["report_status"] == "pending"
    service = client.app[CALLS]
    real_clock = service.clock
    service.clock = lambda: real_clock() + 601
    assert (await shown(client, call_id))["report_status"] == "unavailable"


async def test_conversations_are_erased_after_the_retention(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=SCALE, call_data_retention_days=1.0)
    call = await settled_call(client, dict(SEED_EXAMPLES[2], analysis=ANALYSIS))
    assert call["transcript"] and call["extracted"]
    service = client.app[CALLS]
    await service.reap()
    assert (await shown(client, call["call_id"]))["transcript"]  # a day has not passed
    real_clock = service.clock
    service.clock = lambda: real_clock() + 86400 + 1
    await service.reap()
    erased = await shown(client, call["call_id"])
    assert erased["transcript"] == [] and erased["summary"] is None
    assert erased["extracted"] is None and erased["success"] == {"achieved": True, "reason": ""}
    assert erased["personal_data_erased_at"] is not None
    # Status, times and verdicts stay.
    for field in ("status", "answered_at", "ended_at", "ring_s", "talk_s", "amd", "ended_by"):
        assert erased[field] == call[field]
    # The call's events (kept for redelivery) no longer carry the conversation either...
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        events = [json.loads(d) for (d,) in db.execute("SELECT data FROM outbox")]
    assert events and all(e["transcript"] == [] and e["summary"] is None for e in events)
    # ...nor do the agent's reports: the turns, the final report, the verdict's reason.
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        kinds = [
            k
            for (k,) in db.execute("SELECT kind FROM reports WHERE call_id = ?", (call["call_id"],))
        ]
    assert kinds == ["answered"]
    # ...and a final report arriving after the erasure keeps none of it.
    said = {"role": "callee", "text": "my card is 4111", "at_s": 1.0}
    late = report(call["call_id"], 999, "final", final={"transcript": [said]})
    assert await post_report(client, late) == 200
    assert (await shown(client, call["call_id"]))["transcript"] == []
    turn = report(call["call_id"], 998, "turn", turn=dict(said, at_s=2.0))
    assert await post_report(client, turn) == 200
    assert (await shown(client, call["call_id"]))["transcript"] == []


async def test_a_do_not_call_report_puts_the_number_on_the_list(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=1.0)  # the call stays live while we report
    resp = await client.post("/calls/outbound", json={"phone_number": "+14155557730"})
    call_id = (await resp.json())["call_id"]
    asked = report(call_id, 1000, "do_not_call")
    assert await post_report(client, asked) == 200
    assert await post_report(client, asked) == 200  # a repeat changes nothing
    listing = await (await client.get("/dnc")).json()
    assert listing["numbers"] == [
        {
            "phone_number": "+14155557730",
            "source": "agent",
            "call_id": call_id,
            "added_at": listing["numbers"][0]["added_at"],
        }
    ]
    again = await client.post("/calls/outbound", json={"phone_number": "+14155557730"})
    assert again.status == 422
    timeline = (await shown(client, call_id))["timeline"]
    assert [e["event"] for e in timeline].count("agent_do_not_call") == 1


async def test_a_call_hung_up_through_the_api_was_ended_by_the_api(start_app: AppFactory) -> None:
    """`canceled` is a hang-up through the API: a stored `ended_by` from an agent's final
    report (a probe forged `agent`) showed `canceled`, "hung up through the API",
    `ended_by: agent`."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    assert (await client.post(f"/calls/{call_id}/hangup")).status == 200
    event = event_json("room_finished", call_id)
    assert await post(client, event, sign(event)) == 200
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        db.execute("UPDATE calls SET ended_by = 'agent' WHERE call_id = ?", (call_id,))
    call = await shown(client, call_id)
    assert (call["status"], call["ended_by"]) == ("canceled", "api")


async def test_the_final_report_stands(start_app: AppFactory) -> None:
    """A later final report (another seq) or verdict does not rewrite a call whose final
    report is in (and was sent to the customer as call.report)."""
    client = await start_app(sandbox_time_scale=SCALE)
    call = await settled_call(client, dict(SEED_EXAMPLES[0]))
    assert call["status"] == "completed" and call["amd"] == "human"
    transcript = call["transcript"]
    rewritten = {"transcript": [{"role": "callee", "text": "rewritten", "at_s": 1.0}]}
    later_final = report(call["call_id"], 900, "final", final=rewritten)
    later_amd = report(call["call_id"], 901, "amd", amd={"category": "machine-vm"})
    for late in (later_final, later_amd):
        assert await post_report(client, late) == 200
    await client.app[EVENTS].wait_idle()
    after = await shown(client, call["call_id"])
    assert after["transcript"] == transcript and after["amd"] == "human"
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        (reports,) = db.execute(
            "SELECT COUNT(*) FROM outbox WHERE call_id = ? AND type = 'call.report'",
            (call["call_id"],),
        ).fetchone()
    assert reports == 1


async def test_a_long_history_past_its_retention_is_erased_a_batch_at_a_time(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.calls import service as service_module

    client = await start_app()
    service = client.app[CALLS]
    batches: list[int] = []

    async def erase(ended_before: float, limit: int) -> int:
        batches.append(limit)
        return limit  # a history without end: every batch is full

    monkeypatch.setattr(service.store, "erase_call_data", erase)
    monkeypatch.setattr(service_module, "ERASE_BUDGET_S", 0.05)
    erased = await service.erase_past_retention(service.clock())
    assert batches and set(batches) == {service_module.ERASE_BATCH}
    assert erased == len(batches) * service_module.ERASE_BATCH  # the pass stopped by itself
