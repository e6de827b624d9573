"""A calls.db of the release of 2026-11-26 (schema 2, before the migration files), with a call
its server left live, upgraded in place.

ed_release_2026_11_26.sql is that release's own database (`sqlite3 calls.db .dump`, and its
user_version), made by running it (commit 986f3c2) on the sandbox: one call placed under
`Idempotency-Key: order-1001`, dialled (its timeline's `dialed` line), then the server killed
(SIGKILL) while the call rang.
That release kept no dial mark (dial_started_at came with 0003): the upgrade read the call as
never dialled, settled it 'failed: it was never dialled; nobody was called' and freed its key,
and the client's retry under the key placed a second call to the same person.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

FIXTURE = Path(__file__).with_name("ed_release_2026_11_26.sql")
CALL_ID = "call-ab30edb86269"
# The request as that client sent it, and sends it again.
REQUEST = {"phone_number": "+14155557760", "name": "Alice Smith", "language": "en"}
KEY = {"Idempotency-Key": "order-1001"}


def release_2026_11_26_database(path: Path, age_s: float, *, dial_written: bool) -> None:
    """The fixture's database at `path`, its times moved so its call was placed `age_s` ago;
    without `dial_written`, as if its server stopped before writing its dial's line."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(FIXTURE.read_text(encoding="utf-8"))
        if not dial_written:
            db.execute("DELETE FROM events WHERE kind = 'dialed'")
        (placed,) = db.execute("SELECT created_at FROM calls").fetchone()
        shift = time.time() - age_s - placed
        db.execute(
            "UPDATE calls SET created_at = created_at + ?, updated_at = updated_at + ?",
            (shift, shift),
        )
        db.execute("UPDATE events SET at = at + ?", (shift,))
        db.execute("UPDATE idempotency SET created_at = created_at + ?", (shift,))
    db.close()


@pytest.mark.parametrize("dial_written", [True, False], ids=["dialled", "dial-unwritten"])
async def test_a_call_the_first_release_dialled_is_not_placed_again_after_the_upgrade(
    start_app: Any, tmp_path: Path, dial_written: bool
) -> None:
    path = tmp_path / "calls.db"
    release_2026_11_26_database(path, age_s=5.0, dial_written=dial_written)
    client = await start_app(calls_db_path=path)

    async def settled() -> dict[str, Any] | None:
        resp = await client.get(f"/calls/{CALL_ID}")
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body if body["status"] not in ("dialing", "ringing", "in_progress") else None

    await wait_for(settled, timeout=30)
    call = await settled()
    assert call is not None
    # Its room went with the old server's sandbox; it was dialled, and says so.
    assert "never dialled" not in (call["reason"] or ""), call["reason"]
    assert "nobody was called" not in (call["reason"] or ""), call["reason"]
    # The client's retry under its key gets the call it placed, not a second one.
    resp = await client.post("/calls/outbound", json=REQUEST, headers=KEY)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["call_id"] == CALL_ID
    resp = await client.get("/calls")
    assert [c["call_id"] for c in (await resp.json())["calls"]] == [CALL_ID]
