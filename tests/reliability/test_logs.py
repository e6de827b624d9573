"""The logs under everything at once, at DEBUG: calls of every outcome, refused and
unauthenticated requests, forged webhooks, LiveKit errors that quote the number, a hang-up and a
database fault. No API token, LiveKit secret, JWT or full phone number may appear in them.

(Every reliability test runs under the same guard at INFO; this one widens it to DEBUG and
makes sure the logs it checks really talk about the calls.)"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from common.masking import mask_phone
from handlers.keys import STORE
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.integration.test_webhooks import FORGERIES, event_json
from tests.reliability.conftest import Figures, LogGuard

TOKEN = "log-test-api-token-5f0c2a9e7b"
KEY = "APIlogtestkey"
SECRET = "log-test-livekit-secret-9d8c7b6a5f4e3d2c1b0a"
NUMBERS = {
    "+14155550123": "completed",
    "+14155550486": "busy",
    "+14155550480": "no_answer",
    "+14155550503": "failed",
    "+14155550999": "voicemail",
}
QUOTED_NUMBER = "+14155550166"  # LiveKit's error message quotes it
REFUSED_NUMBER = "+14155550177"  # only ever in refused requests


async def test_no_secret_jwt_or_number_in_debug_logs(
    start_app: AppFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    log_guard: LogGuard,
    figures: Figures,
) -> None:
    log_guard.hide(TOKEN, SECRET, "wrong-token-0123456789")
    log_guard.hide_numbers(*NUMBERS, QUOTED_NUMBER, REFUSED_NUMBER)
    caplog.set_level(logging.DEBUG)
    client = await start_app(
        calls_api_token=TOKEN,
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
        sandbox_time_scale=0.01,
        call_ringing_timeout_s=5,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def place(number: str, **extra: Any) -> Any:
        body = {"phone_number": number, "name": "Log Test", "dynamic_instruction": "Be brief."}
        return await client.post("/calls/outbound", json=body | extra, headers=auth)

    placed = {}
    for number in NUMBERS:
        resp = await place(number)
        assert resp.status == 200
        placed[(await resp.json())["call_id"]] = number
    hung_up = (await (await place("+14155557730")).json())["call_id"]
    assert (await client.post(f"/calls/{hung_up}/hangup", headers=auth)).status == 200

    # Refused: bad fields, no token, a wrong token.
    assert (await place(REFUSED_NUMBER, language="xx")).status == 422
    body = {"phone_number": REFUSED_NUMBER}
    assert (await client.post("/calls/outbound", json=body)).status == 401
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert (await client.post("/calls/outbound", json=body, headers=wrong)).status == 401

    # LiveKit refuses, quoting the number.
    client.app[SANDBOX].inject(
        "CreateSIPParticipant",
        error=TwirpError("invalid_argument", f"number {QUOTED_NUMBER} is not allowed"),
        times=1,
    )
    refused = await place(QUOTED_NUMBER)
    assert refused.status == 502
    assert QUOTED_NUMBER not in (await refused.json())["error"]

    # Every forgery of a webhook about a live call, signed with the dev secret or worse.
    for forge in FORGERIES.values():
        event = event_json("room_finished", next(iter(placed)))
        headers = {"Content-Type": "application/webhook+json"}
        token = forge(event)
        if token is not None:
            headers["Authorization"] = token
        assert (await client.post("/webhooks/livekit", data=event, headers=headers)).status == 401

    # The database locked under a call.
    db = client.app[STORE]
    await db._submit(db.conn.execute, "PRAGMA busy_timeout=100")
    other = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    assert (await place("+14155550144")).status == 503
    other.execute("ROLLBACK")
    other.close()

    await client.app[SANDBOX].wait_idle(15)
    for call_id, number in placed.items():
        call = await (await client.get(f"/calls/{call_id}", headers=auth)).json()
        assert call["status"] == NUMBERS[number]
    await asyncio.sleep(0.05)

    # The logs do talk about these calls (masked), including at DEBUG.
    lines = [line for _, _, line in log_guard.capture.lines]
    text = "\n".join(lines)
    assert all(mask_phone(n) in text for n in NUMBERS)
    assert any(level == logging.DEBUG for level, _, _ in log_guard.capture.lines)
    assert "webhook refused" in text and "is locked by" in text
    assert log_guard.problems() == []
    figures.add(
        f"{len(lines)} log lines at DEBUG over {len(placed) + 3} calls, 3 refused requests, "
        f"{len(FORGERIES)} forged webhooks, a LiveKit error quoting the number, a locked "
        "database: 0 tokens, secrets, JWTs or full numbers"
    )
