"""On the real app: a message the agent's TTS would say nothing of (emoji, struck-through
text) is a 422 naming its field before any phone rings, on POST /calls/outbound, in a
campaign's defaults and in its rows (JSON and CSV) alike. Each was accepted (200 / 201) and
the callee heard silence once they picked up."""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.text import NOTHING_TO_SAY
from tests.conftest import AppFactory

START_AT = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()


async def test_a_call_with_nothing_to_say_is_refused_before_dialling(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    for body in (
        {"phone_number": "+14155550100", "first_message": "👋😊"},
        {"phone_number": "+14155550100", "voicemail": {"action": "leave_message", "message": "📞"}},
    ):
        resp = await client.post("/calls/outbound", json=body)
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 422, answer
        assert [d["field"] for d in answer["details"]] == [
            next(iter(body.keys() - {"phone_number"}))
        ]
        assert NOTHING_TO_SAY in answer["details"][0]["error"]
    listed = await (await client.get("/calls")).json()
    assert listed["calls"] == []


async def test_a_campaign_with_nothing_to_say_is_refused(start_app: AppFactory) -> None:
    client = await start_app()
    rows = [{"phone_number": "+14155557705"}]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "c",
            "start_at": START_AT,
            "defaults": {"first_message": "🎉"},
            "recipients": rows,
        },
    )
    answer: dict[str, Any] = await resp.json()
    assert resp.status == 422, answer
    assert answer["details"] == [{"field": "defaults.first_message", "error": NOTHING_TO_SAY}]

    bad_rows: list[dict[str, Any]] = [
        {"phone_number": "+14155557705", "first_message": "~~Hello~~"},
        {"phone_number": "+14155557706", "voicemail": {"action": "leave_message", "message": "❤️"}},
    ]
    resp = await client.post(
        "/campaigns", json={"name": "c", "start_at": START_AT, "recipients": bad_rows}
    )
    answer = await resp.json()
    assert resp.status == 422, answer
    assert [(d["field"], d["error"]) for d in answer["details"]] == [
        ("recipients[0].first_message", NOTHING_TO_SAY),
        ("recipients[1].voicemail", f"message {NOTHING_TO_SAY}"),
    ]

    csv = "phone_number,first_message\n+14155557705,🎉🎉\n".encode()
    resp = await client.post(
        "/campaigns",
        params={"name": "c", "start_at": START_AT},
        data=csv,
        headers={"Content-Type": "text/csv"},
    )
    answer = await resp.json()
    assert resp.status == 422, answer
    assert [(d["field"], d["error"]) for d in answer["details"]] == [
        ("first_message", NOTHING_TO_SAY)
    ]
    listed = await (await client.get("/campaigns")).json()
    assert listed["campaigns"] == []
