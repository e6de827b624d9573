"""A campaign survives a SIGKILL of its only server (SQLite): after the restart it resumes
where it stopped, and no recipient is dialled twice for one attempt (dials counted from the
LiveKit stand-in's own log, in its own process)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import wait_for
from tests.processes import (
    SandboxProcess,
    ServerProcess,
    free_port,
    retrying_sooner,
    settling_sooner,
)
from tests.reliability.conftest import Figures, LogGuard, scaled

KEY = "APIcampaignrestart"
SECRET = "campaign-restart-livekit-secret-0123456789abcdef"
# The restarted server settles what the kill left unfinished (a call never dialled, one whose
# webhooks were lost, one whose room_finished came late) after 10 s, not the bounds set for a
# real LiveKit and agents (a minute, 40 s): the sandbox here runs its clock 10 times faster
# (its webhook retries span about 1.5 s). The test waited out those bounds whenever the kill
# left such a call (65-80 s instead of about 25).
RESTARTED_SERVER = settling_sooner(10.0)


async def test_sigkill_mid_campaign_then_restart(
    tmp_path: Path, processes: list[Any], log_guard: LogGuard, figures: Figures
) -> None:
    log_guard.hide(SECRET)
    port = free_port()
    env = {
        "LIVEKIT_URL": "",
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "SIP_OUTBOUND_TRUNK_ID": "ST_restart",
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "CALLS_RATE_LIMIT_PER_MIN": "100000",
        "CALLS_MAX_ACTIVE": "100000",
        "CAMPAIGN_ENFORCE_CALLING_HOURS": "0",
        "CLAIM_LEASE_S": "2",
        "REAPER_INTERVAL_S": "0.5",
        "CALLS_SETTLE_GRACE_S": "0.2",
    }
    size = scaled(200, minimum=40)
    suffixes = ("7701", "0486")  # answered (1 s, scaled), busy (retried once)
    body = {
        "name": "restart",
        "recipients": [
            {"phone_number": f"+1{(415, 650)[i // 700]}{200 + i % 700}{suffixes[i % 2]}"}
            for i in range(size)
        ],
        # A call whose end webhooks were lost in the restart stays live until the reaper's
        # bound (ringing + max duration + 60 s): keep that bound short.
        "defaults": {"ringing_timeout_s": 5, "max_duration_s": 30},
        "pacing": {"calls_per_second": 40, "max_concurrent": 20},
        "window": {"start": "00:00", "end": "24:00", "timezone": "UTC"},
        "retry": {"on": ["busy"], "max_attempts": 2, "delay_s": 0},
    }
    async with aiohttp.ClientSession() as session:
        sandbox = SandboxProcess(
            tmp_path,
            f"http://127.0.0.1:{port}/webhooks/livekit",
            api_key=KEY,
            api_secret=SECRET,
            time_scale=0.1,  # its webhook retries then span about 1.5 s: most outlive the restart
        )
        processes.append(sandbox)
        await sandbox.wait_ready(session)
        env["LIVEKIT_URL"] = sandbox.url
        # Its busy numbers retried at once, not a minute on: a server process's clock
        # cannot be moved through that minute.
        first = ServerProcess(tmp_path, "first", env, port=port, launcher=retrying_sooner())
        processes.append(first)
        await first.wait_ready(session)
        async with session.post(f"{first.url}/campaigns", json=body) as resp:
            assert resp.status == 201, await resp.text()
            campaign_id = (await resp.json())["campaign_id"]

        def dialled_rooms() -> list[str]:
            return re.findall(r"in room (call-[0-9a-f]+): playing", sandbox.logs())

        async def a_third_dialled() -> bool:
            return len(dialled_rooms()) >= size // 3

        await wait_for(a_third_dialled)
        first.kill()  # mid-campaign: attempts being placed, calls in the air, events unsent
        before = len(dialled_rooms())
        second = ServerProcess(tmp_path, "second", env, port=port, launcher=RESTARTED_SERVER)
        processes.append(second)
        await second.wait_ready(session)

        async def completed() -> bool:
            async with session.get(f"{second.url}/campaigns/{campaign_id}") as r:
                return bool((await r.json())["campaign"]["status"] == "completed")

        await wait_for(completed, timeout=180)
    with contextlib.closing(sqlite3.connect(tmp_path / "calls.db")) as db, db:
        attempts = db.execute(
            "SELECT idx, attempt, call_id, status FROM campaign_attempts WHERE campaign_id = ?",
            (campaign_id,),
        ).fetchall()
        final = dict(
            db.execute(
                "SELECT idx, state FROM campaign_recipients WHERE campaign_id = ?", (campaign_id,)
            ).fetchall()
        )
    rooms = Counter(dialled_rooms())
    assert max(rooms.values()) == 1  # no call dialled twice
    made = [a for a in attempts if a[3] != "not_dialled"]
    made_calls = {a[2] for a in made}
    assert set(rooms) <= made_calls  # every dial is one attempt's
    # A dial marked as started whose request had not reached LiveKit at the kill: nobody was
    # rung, but the server cannot tell that from a call that rang unanswered, so the attempt
    # is never placed again; its agent ends the room when no callee comes (the sandbox plays
    # ours), and it settles no_answer.
    never_rung = {a[0] for a in made if a[2] not in rooms}
    per_recipient = Counter(a[0] for a in made)
    # Every row is final, with one dial per attempt its outcome called for: a busy number
    # twice (retry on busy, max_attempts 2), an answered one once. A call in the air at the
    # kill may have lost its webhooks (the stand-in's retries, scaled with its clock, give up
    # within 0.2 s; LiveKit's last about 15 s) and settled no_answer: it was dialled once.
    assert set(final.values()) <= {"completed", "busy", "no_answer", "failed"}
    assert all(final[i] == "no_answer" for i in never_rung), {i: final[i] for i in never_rung}
    wrong = {
        i: (state, per_recipient[i])
        for i, state in final.items()
        if i not in never_rung
        and (
            per_recipient[i] != (2 if state == "busy" else 1)
            or state != ("busy" if i % 2 else "completed")
            and state != "no_answer"
        )
    }
    assert not wrong, wrong
    lost = sum(1 for i, state in final.items() if state == "no_answer" and i not in never_rung)
    assert lost + len(never_rung) <= 20  # at most the calls live at the kill (max_concurrent)
    figures.add(
        f"campaign of {size}, its server SIGKILLed after {before} dials and restarted: "
        f"{len(rooms)} dials for {len(made)} attempts made, none twice, all rows final "
        f"({lost} call(s) in the air lost their webhooks and settled no_answer, "
        f"{len(never_rung)} killed between marking the dial and sending it settled no_answer)"
    )
