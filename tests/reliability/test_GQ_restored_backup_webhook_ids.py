"""A calls database restored from a backup repeats no webhook-id (README, Customer webhooks).

A customer's receiver drops a delivery whose `webhook-id` it has seen, as README tells it to.
The id was `msg_<call id>_<n>`, `n` the event's row in the outbox: a backup restored numbers
the events from where the backup stood, so a call live across the backup and the restore
got, for its next event, the id an event of it sent after the backup had had. Seen with the
real server on SQLite: the backup taken while the call dialled, its call.answered sent as
msg_<call>_2, the server killed and the backup put back; the restarted server settled the call
and sent its call.ended as msg_<call>_2, which the receiver dropped as a repeat: the call
stayed `in_progress` for the customer for good.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook

from tests.helpers import serving, wait_for
from tests.processes import ServerProcess, settling_sooner

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"restored-backup-webhook-secret-0123").decode()


async def test_a_restored_backup_repeats_no_webhook_id(tmp_path: Path) -> None:
    got: list[tuple[str, str, str]] = []  # (webhook-id, type, status), every verified one

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        event = Webhook(WEBHOOK_SECRET).verify(body, dict(request.headers))
        got.append((request.headers["webhook-id"], event["type"], event["data"]["status"]))
        return web.Response(status=204)

    async def sent(kind: str) -> bool:
        return kind in [each for _, each, _ in got]

    db = tmp_path / "calls.db"
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(serving(receive))
        env = {
            "CALLS_WEBHOOK_URL": receiver + "/hooks",
            "CALLS_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CALLS_WEBHOOK_ALLOW_PRIVATE": "1",
            "CALLS_DB_PATH": str(db),
            "CONFIG_PATH": str(tmp_path / "config.json"),
            "SANDBOX_TIME_SCALE": "0.5",
            "REAPER_INTERVAL_S": "0.5",
        }
        session = await stack.enter_async_context(aiohttp.ClientSession())
        first = ServerProcess(tmp_path, "first", env, launcher=settling_sooner(1.0))
        stack.callback(first.stop)
        await first.wait_ready(session)
        # Answered after about 1.5 s; its callee stays on the line (a minute, scaled).
        async with session.post(
            f"{first.url}/calls/outbound", json={"phone_number": "+14155557760"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            call_id = (await resp.json())["call_id"]
        await wait_for(lambda: sent("call.dialing"), timeout=10)
        backup = sqlite3.connect(tmp_path / "backup.db")
        with contextlib.closing(sqlite3.connect(db)) as live, contextlib.closing(backup):
            live.backup(backup)  # the backup, taken online, as sqlite3's .backup takes it
        await wait_for(lambda: sent("call.answered"), timeout=10)
        first.kill()
        for path in (db, db.with_name("calls.db-wal"), db.with_name("calls.db-shm")):
            path.unlink(missing_ok=True)
        (tmp_path / "backup.db").rename(db)

        # Started again where the first listened, as a restore does: its claims (by host and
        # port) in the backup are its own. On another port (as this test had it), the events
        # the backup held unacknowledged waited out the first's 60 s lease: in suite runs
        # (the backup taken before the first acknowledged call.dialing) 64 s, or past 30 s.
        second = ServerProcess(
            tmp_path, "second", env, port=first.port, launcher=settling_sooner(1.0)
        )
        stack.callback(second.stop)
        await second.wait_ready(session)
        listed: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(30):
                while True:
                    async with session.get(f"{second.url}/calls/{call_id}/deliveries") as resp:
                        listed = (await resp.json())["deliveries"]
                    if any(d["event"] == "call.ended" and d["state"] != "pending" for d in listed):
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(
                f"no call.ended delivered in 30 s: {listed}\n{second.logs()[-4000:]}"
            ) from None
        await asyncio.sleep(0.3)  # what else comes

    kinds_by_id: dict[str, set[str]] = {}
    for webhook_id, kind, _status in got:
        kinds_by_id.setdefault(webhook_id, set()).add(kind)
    repeated = {webhook_id: kinds for webhook_id, kinds in kinds_by_id.items() if len(kinds) > 1}
    assert not repeated, json.dumps(got, indent=1)
    # What a receiver that drops repeats keeps: the call's end among it.
    kept: dict[str, Any] = {}
    for webhook_id, kind, status in got:
        kept.setdefault(webhook_id, (kind, status))
    assert "call.ended" in [kind for kind, _ in kept.values()], got
