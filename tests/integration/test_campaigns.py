"""Campaigns through the real app and the embedded sandbox: creation (JSON and CSV), exact
outcomes with retries, do-not-call and invalid rows, pacing and concurrency counted from the
sandbox's own dial log, calling windows per time zone with a moved clock, and control."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from common import freed_memory
from common.calls.request import RequestRules
from common.calls.service import LISTED_WHILE_PLACING
from common.campaigns import scheduler as campaign_scheduler
from common.campaigns.model import CampaignRecord
from common.campaigns.request import QUERY_PARAMS, Row, RowChecker, json_rows, parse_options
from common.settings import Settings, configure_logging
from common.storage import campaign_programs
from common.storage.base import DatabaseError
from handlers import campaigns as campaigns_handlers
from handlers.keys import BODY_READS, CALLS, CAMPAIGNS, SETTINGS, STORE, UPLOAD_TURNS
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import (
    OPEN_EVERYWHERE,
    HeldRequests,
    ShiftedClock,
    hold_requests,
    wait_for,
)

FAST = {"calls_rate_limit_per_min": 100_000, "calls_max_active": 100_000}


async def create(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/campaigns", json=body)
    answer: dict[str, Any] = await resp.json()
    assert resp.status == 201, answer
    # Where it is, as a 201 says (it had no Location: BM)
    assert resp.headers["Location"] == f"/campaigns/{answer['campaign_id']}"
    return answer


async def campaign_of(client: TestClient[Any, Any], campaign_id: str) -> dict[str, Any]:
    resp = await client.get(f"/campaigns/{campaign_id}")
    assert resp.status == 200
    data: dict[str, Any] = (await resp.json())["campaign"]
    return data


async def wait_status(
    client: TestClient[Any, Any], campaign_id: str, status: str, timeout: float = 60.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            campaign = await campaign_of(client, campaign_id)
            if campaign["status"] == status:
                return campaign
            await asyncio.sleep(0.05)


async def all_recipients(client: TestClient[Any, Any], campaign_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        query = f"?limit=1000{'' if after is None else f'&after={after}'}"
        page = await (await client.get(f"/campaigns/{campaign_id}/recipients{query}")).json()
        rows += page["recipients"]
        after = page["next_after"]
        if after is None:
            return rows


async def due_in_an_hour(
    start_app: AppFactory, name: str, numbers: list[str]
) -> tuple[TestClient[Any, Any], ShiftedClock, str]:
    """A server whose campaigns' clock is at OPEN_EVERYWHERE, and its campaign `name` of
    `numbers` (each named Ana), open all day, due an hour on: its rows may be edited as a test
    needs before the clock is moved past OPEN_EVERYWHERE + 3600. The server, its clock, the
    campaign's id."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    created = await create(
        client,
        {
            "name": name,
            "recipients": [{"phone_number": n, "name": "Ana"} for n in numbers],
            "start_at": later,
            "window": {"start": "00:00", "end": "24:00"},
        },
    )
    return client, clock, created["campaign_id"]


def us(n: int, suffix: str) -> str:
    """A distinct, valid California number ending in a sandbox scenario's digits (an invalid
    +1 number would wait for a window open in every +1 time zone at once)."""
    area, exchange = divmod(n, 700)
    return f"+1{(415, 650)[area]}{200 + exchange}{suffix}"


VALID_ROWS = 200  # and 50 invalid ones


async def test_a_large_list_ends_with_exact_counts(start_app: AppFactory) -> None:
    """Every row of a large list ends in exactly one state, each number dialled as its
    retries allow (280 calls through the whole stack, 50 at once: 450 rows took 23 s of a
    loaded run, 1,000 a sixth of the suite, for what 200 prove as well)."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    recipients: list[dict[str, Any]] = []
    kinds = ("7700", "0486", "0480", "0999", "0503")  # completed, busy, no_answer, vm, failed
    for n in range(VALID_ROWS):
        recipients.append({"phone_number": us(n, kinds[n % 5]), "name": f"R{n}"})
    dnc = [
        r["phone_number"] for r in recipients[: VALID_ROWS : VALID_ROWS // 10]
    ]  # 10 numbers on the list
    recipients += [{"phone_number": "nope"}] * 25 + [{"phone_number": "+1415"}] * 25
    assert (await client.post("/dnc", json={"numbers": dnc})).status == 200
    created = await create(
        client,
        {
            "name": "large list",
            "defaults": {"dynamic_instruction": "Remind them of the appointment."},
            "recipients": recipients,
            "pacing": {"calls_per_second": 100, "max_concurrent": 50},
            # An hour: the retries wait for the test's step of the clock. A minute of real
            # time could be over before every first attempt had ended (11-15 s here beside two
            # CPU burners, several times that on a loaded CI machine): the first retries
            # would go, and pending never equal the retries left.
            "retry": {"on": ["busy", "no_answer"], "max_attempts": 2, "delay_s": 3600},
            "invalid_rows": "skip",
        },
    )
    assert created["invalid_row_count"] == 50
    assert {e["row"] for e in created["invalid_rows"]} == set(range(VALID_ROWS, VALID_ROWS + 50))
    on_list = set(range(0, VALID_ROWS, VALID_ROWS // 10))
    called = [kinds[n % 5] for n in range(VALID_ROWS) if n not in on_list]
    retrying = sum(1 for kind in called if kind in ("0486", "0480"))

    async def first_attempts_over() -> bool:
        answer = await (await client.get(f"/campaigns/{created['campaign_id']}")).json()
        counts = answer["campaign"]["counts"]
        ended = sum(counts[s] for s in ("completed", "voicemail", "failed"))
        return bool(counts["pending"] == retrying and ended == len(called) - retrying)

    await wait_for(first_attempts_over, timeout=120)
    clock.move_to(clock() + 3601)  # the retries' hour passes: every one is due
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=120)
    counts = campaign["counts"]
    expected = Counter(
        {
            "7700": "completed",
            "0486": "busy",
            "0480": "no_answer",
            "0999": "voicemail",
            "0503": "failed",
        }[kinds[n % 5]]
        for n in range(VALID_ROWS)
        if n not in on_list
    )
    assert counts["dnc"] == 10
    assert counts["invalid"] == 50
    for state in ("completed", "busy", "no_answer", "voicemail", "failed"):
        assert counts[state] == expected[state], (state, counts)
    assert counts["pending"] == counts["calling"] == counts["waiting_window"] == 0
    retried = expected["busy"] + expected["no_answer"]
    assert (
        campaign["attempts"] == VALID_ROWS - 10 + retried
    )  # one retry each for busy and no-answer

    dials = Counter(d.number for d in client.app[SANDBOX].dials)
    assert all(dials[number] == 0 for number in dnc)
    for n in range(VALID_ROWS):
        number = us(n, kinds[n % 5])
        if n in on_list:
            continue
        assert dials[number] == (2 if kinds[n % 5] in ("0486", "0480") else 1), number
    rows = await all_recipients(client, created["campaign_id"])
    busy = next(r for r in rows if r["state"] == "busy")
    assert [a["attempt"] for a in busy["attempts"]] == [1, 2]
    assert all(a["call_id"] and a["status"] == "busy" for a in busy["attempts"])
    call = await (await client.get(f"/calls/{busy['attempts'][0]['call_id']}")).json()
    assert call["campaign_id"] == created["campaign_id"]
    # The attempt ended when its call did (it said when the call was settled: a restart's
    # downtime later, for a call its sandbox lost).
    assert busy["attempts"][0]["ended_at"] == call["ended_at"]
    assert call["config"]["agent_instructions"] == "Remind them of the appointment."


async def test_pacing_and_max_concurrent_hold_in_the_sandbox_log(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=0.01, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    # ...7730: answered, talks 30 s (0.3 s at this time scale), so calls overlap
    recipients = [{"phone_number": us(n, "7730")} for n in range(40)]
    created = await create(
        client,
        {
            "name": "paced",
            "recipients": recipients,
            "pacing": {"calls_per_second": 20, "max_concurrent": 4},
        },
    )
    await wait_status(client, created["campaign_id"], "completed", timeout=60)
    dials = list(client.app[SANDBOX].dials)
    assert len(dials) == 40
    # Never faster than 20/s: attempts start on a 50 ms grid, never early, so no second
    # holds more than 21 of them...
    rows = await all_recipients(client, created["campaign_id"])
    placed = sorted(
        dt.datetime.fromisoformat(a["placed_at"]).timestamp() for r in rows for a in r["attempts"]
    )
    for i, start in enumerate(placed):
        assert sum(1 for s in placed[i:] if s < start + 1.0) <= 21
    # ...and the sandbox, which sees them with the jitter of placing (a config write, a
    # database write, a dispatch), never gets more than 22 in any second.
    starts = sorted(d.started for d in dials)
    for i, start in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < start + 1.0) <= 22
    # Never more than 4 at once in the sandbox (our count ends later than its, never sooner).
    events = sorted([(d.started, 1) for d in dials] + [(d.ended or 0.0, -1) for d in dials])
    live = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        live += change
        peak = max(peak, live)
    assert peak <= 4


async def test_rate_is_what_was_asked(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    recipients = [{"phone_number": us(n, "7700")} for n in range(60)]
    created = await create(
        client,
        {
            "name": "rate",
            "recipients": recipients,
            "pacing": {"calls_per_second": 30, "max_concurrent": 100},
        },
    )
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=60)
    starts = sorted(d.started for d in client.app[SANDBOX].dials)
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    assert achieved <= 30 * 1.02
    # Never faster than asked is the promise. Slower is what a starved machine does (0.77 of
    # the rate with another suite's load tests on both cores, 0.58 with four test runs on
    # two cores, 0.23 with a full suite and three others' tests at a load average of 8);
    # far slower is a pacing bug (a rate read per minute would be 0.5 calls/s).
    assert achieved >= 30 * 0.1
    assert campaign["achieved_calls_per_second"] <= 30.0


async def test_a_clock_stepped_back_does_not_hold_the_campaigns_pace(
    start_app: AppFactory,
) -> None:
    """The server's clock stepped back an hour (NTP) while a campaign ran: its next call's
    slot, set by the clock before the step, was an hour ahead, and the campaign placed no
    call for that hour though its recipients were due. A slot never lies more than one
    interval ahead: the campaign goes on at its pace."""
    clock = ShiftedClock(OPEN_EVERYWHERE)  # 10:00 in California
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "stepped back",
            "recipients": [{"phone_number": us(n, "7700")} for n in range(4)],
            "pacing": {"calls_per_second": 2},
        },
    )

    async def dialled(n: int) -> bool:
        return len(client.app[SANDBOX].dials) >= n

    # The clock stands still between the test's steps, so however slow the machine, each
    # step lets exactly one more call go before the step back: two are left to tell a
    # campaign going on at its pace from one held an hour.
    clock.freeze()
    await wait_for(lambda: dialled(1), timeout=10)
    clock.move_to(OPEN_EVERYWHERE + 7200)  # noon there: the next call goes then
    clock.freeze()
    await wait_for(lambda: dialled(2), timeout=10)
    assert len(client.app[SANDBOX].dials) == 2
    clock.move_to(OPEN_EVERYWHERE + 3600)  # and the clock steps back an hour
    await wait_for(lambda: dialled(4), timeout=15)
    await wait_status(client, created["campaign_id"], "completed", timeout=15)
    starts = [d.started for d in client.app[SANDBOX].dials]
    # The pace holds after the step back (the dials are timed by the real clock: the second
    # went at once, the campaign's clock moved two hours on by the test as the first went):
    # no burst, 2 a second over the last three. Each arrives at the sandbox after its slot by
    # however long its placing took, so one gap of a loaded run may be short of 0.5 s by that
    # (0.45 failed once with 4 workers on 2 cores; a helper saw placings vary by more than a
    # quarter of a second beside two CPU burners); a burst would be about 0. The last is at
    # least two slots after the step, which came after the second was seen.
    gaps = [b - a for a, b in zip(starts[1:], starts[2:], strict=False)]
    assert all(gap >= 0.1 for gap in gaps) and starts[3] - starts[1] >= 0.8, starts


async def test_a_retry_set_before_the_clock_stepped_back_is_not_held_by_the_step(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy recipient's retry, a minute on, was set by the clock before it stepped back an
    hour: due an hour and a minute later by the stepped clock, it waited for the step. Its
    wait now counts from the clock after the step."""
    from common.campaigns import scheduler

    monkeypatch.setattr(scheduler, "RECOVER_EVERY_S", 0.1)
    clock = ShiftedClock(OPEN_EVERYWHERE + 3600)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "retry stepped back",
            "recipients": [{"phone_number": "+14155550486"}],  # busy, every time
            "retry": {"on": ["busy"], "max_attempts": 2, "delay_s": 60},
        },
    )
    campaign_id = created["campaign_id"]

    async def retry_set() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        return bool(row["state"] == "pending" and len(row["attempts"]) == 1)

    async def pulled_back() -> bool:
        return "their wait counts from now" in caplog.text

    await wait_for(retry_set, timeout=15)
    with caplog.at_level(logging.WARNING, logger="common.campaigns.scheduler"):
        clock.move_to(OPEN_EVERYWHERE)  # the clock steps back an hour
        await wait_for(pulled_back, timeout=15)
        clock.move_to(clock() + 61)  # its minute, counted from the step, passes (not the hour)
        await wait_status(client, campaign_id, "completed", timeout=15)
    (row,) = await all_recipients(client, campaign_id)
    assert [a["status"] for a in row["attempts"]] == ["busy", "busy"]
    assert "their wait counts from now" in caplog.text


async def test_windows_per_time_zone_with_a_moved_clock(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 15:00 UTC on a Wednesday: 07:00 in California (closed), 10:00 in New York, 16:00 in
    # Madrid (open with a 09:00-20:00 window).
    # The clock moved under it, an idle driver looks again after IDLE_WAIT_S: 1 s waited.
    monkeypatch.setattr(campaign_scheduler, "IDLE_WAIT_S", 0.05)
    clock = ShiftedClock(dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC).timestamp())
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "zones",
            "recipients": [
                {"phone_number": "+14155557700"},  # California
                {"phone_number": "+12125557700"},  # New York
                {"phone_number": "+34612345678"},  # Spain
            ],
            "pacing": {"calls_per_second": 50},
            "window": {"start": "09:00", "end": "20:00", "timezone": "recipient"},
        },
    )
    campaign_id = created["campaign_id"]

    async def two_done() -> bool:
        counts = (await campaign_of(client, campaign_id))["counts"]
        return bool(counts["completed"] == 2 and counts["waiting_window"] == 1)

    await wait_for(two_done)
    rows = await all_recipients(client, campaign_id)
    waiting = next(r for r in rows if r["state"] == "waiting_window")
    assert waiting["phone_number"] == "+14155557700"
    assert waiting["next_attempt_at"] == "2026-12-02T17:00:00.000Z"  # 09:00 in California
    assert [d.number for d in client.app[SANDBOX].dials].count("+14155557700") == 0
    clock.move_to(dt.datetime(2026, 12, 2, 17, 0, 1, tzinfo=dt.UTC).timestamp())
    campaign = await wait_status(client, campaign_id, "completed")
    assert campaign["counts"]["completed"] == 3


async def test_a_list_sent_at_night_is_answered_with_its_first_call_in_the_morning(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 07:00 UTC: 23:00 in California, 02:00 in New York, 07:00 in the Canaries. The 201 said
    # every row pending, the next call now and the end a second later (so did the
    # campaign.started event), while nobody could be called before 09:00 local time.
    # The clock moved under it, an idle driver looks again after IDLE_WAIT_S: 1 s waited.
    monkeypatch.setattr(campaign_scheduler, "IDLE_WAIT_S", 0.05)
    clock = ShiftedClock(dt.datetime(2026, 12, 2, 7, 0, tzinfo=dt.UTC).timestamp())
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    assert (await client.post("/dnc", json={"numbers": ["+12125557701"]})).status == 200
    answer = await create(
        client,
        {
            "name": "night",
            "recipients": [
                {"phone_number": "+14155557700"},  # California: 09:00 is 17:00 UTC
                {"phone_number": "+12125557700"},  # New York: 14:00 UTC
                {"phone_number": "+34612345678"},  # Spain and the Canaries: 09:00 UTC
                {"phone_number": "+12125557701"},  # listed: dnc at once, whatever its window
            ],
        },
    )
    campaign = answer["campaign"]
    assert campaign["counts"]["waiting_window"] == 3
    assert campaign["counts"]["dnc"] == 1
    assert campaign["counts"]["pending"] == 0
    assert campaign["next_call_at"] == "2026-12-02T09:00:00.000Z"
    rows = await all_recipients(client, answer["campaign_id"])
    assert [r["next_attempt_at"] for r in rows] == [
        "2026-12-02T17:00:00.000Z",
        "2026-12-02T14:00:00.000Z",
        "2026-12-02T09:00:00.000Z",
        None,
    ]
    assert [r["state"] for r in rows] == ["waiting_window"] * 3 + ["dnc"]
    # A start_at later in the night: each row's window is read from it.
    later = await create(
        client,
        {
            "name": "night, started later",
            "recipients": [{"phone_number": "+14155557700"}],
            "start_at": "2026-12-02T16:00:00Z",
        },
    )
    assert later["campaign"]["next_call_at"] == "2026-12-02T17:00:00.000Z"
    # When the window opens, it is called.
    clock.move_to(dt.datetime(2026, 12, 2, 17, 0, 1, tzinfo=dt.UTC).timestamp())
    done = await wait_status(client, answer["campaign_id"], "completed")
    assert done["counts"]["completed"] == 3
    assert len(client.app[SANDBOX].dials) >= 3


# One recipient who is busy (the sandbox's 0486), retried once 600 s later.
BUSY_RETRIED_IN_600_S = {
    "recipients": [{"phone_number": "+14155550486"}],
    "retry": {"on": ["busy"], "max_attempts": 2, "delay_s": 600},
}


async def test_a_retry_due_after_the_window_closes_waits_for_it(start_app: AppFactory) -> None:
    # 19:55 in California (03:55 UTC): busy, retried 600 s later, at 20:05 there, after the
    # 09:00-20:00 window. It was shown pending at 20:05 (the campaign's next call too), and
    # called at 09:00 the next day.
    clock = ShiftedClock(dt.datetime(2026, 12, 2, 3, 55, tzinfo=dt.UTC).timestamp())
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {"name": "late retry", **BUSY_RETRIED_IN_600_S},
    )
    campaign_id = created["campaign_id"]

    async def retry_waiting() -> bool:
        counts = (await campaign_of(client, campaign_id))["counts"]
        return bool(counts["waiting_window"] == 1)

    await wait_for(retry_waiting, timeout=10)
    (row,) = await all_recipients(client, campaign_id)
    assert [a["status"] for a in row["attempts"]] == ["busy"], row
    assert row["next_attempt_at"] == "2026-12-02T17:00:00.000Z"  # 09:00 in California
    campaign = await campaign_of(client, campaign_id)
    assert campaign["next_call_at"] == "2026-12-02T17:00:00.000Z"
    clock.move_to(dt.datetime(2026, 12, 2, 17, 0, 1, tzinfo=dt.UTC).timestamp())
    done = await wait_status(client, campaign_id, "completed")
    assert done["counts"]["busy"] == 1 and done["attempts"] == 2


async def test_a_retry_within_the_window_stays_pending(
    start_app: AppFactory, tmp_path: Path
) -> None:
    # The same retry at 10:00 in California, and one at 20:05 with the window to 23:59 and
    # CAMPAIGN_ENFORCE_CALLING_HOURS=0: due as it was, nothing deferred. Each server has its
    # own database. On one (CI timed out here, stop 42), the first server, its clock 14 h
    # ahead, took the second's campaign at its next tick (the second's lease ran out 14 h
    # before, by its clock) and placed the retry at once (due, by its clock): pending, calling
    # and busy (final) came and went between two polls. Servers on one database share a clock
    # (PostgreSQL's start-up warns of one apart from it).
    for at, window, enforce in (
        (dt.datetime(2026, 12, 2, 18, 0, tzinfo=dt.UTC), None, True),
        (dt.datetime(2026, 12, 2, 3, 55, tzinfo=dt.UTC), {"start": "00:00", "end": "23:59"}, False),
    ):
        clock = ShiftedClock(at.timestamp())
        client = await start_app(
            calls_db_path=tmp_path / f"calls-{at.hour}.db",
            config_path=tmp_path / f"config-{at.hour}.json",
            sandbox_time_scale=0.0,
            campaign_clock=clock,
            campaign_enforce_calling_hours=enforce,
            **FAST,
        )
        created = await create(
            client,
            {"name": "retry", **BUSY_RETRIED_IN_600_S, **({"window": window} if window else {})},
        )

        async def retry_pending(
            client: TestClient[Any, Any] = client, campaign_id: str = created["campaign_id"]
        ) -> bool:
            rows = await all_recipients(client, campaign_id)
            return bool(rows[0]["state"] == "pending" and rows[0]["attempts"])

        await wait_for(retry_pending)
        (row,) = await all_recipients(client, created["campaign_id"])
        due = dt.datetime.fromisoformat(row["next_attempt_at"]).timestamp()
        assert abs(due - (clock() + 600)) < 5


async def test_calling_hours_floor_holds_whatever_the_window(start_app: AppFactory) -> None:
    # 06:00 in New York: the window says all day, the 08:00-21:00 floor says wait.
    clock = ShiftedClock(dt.datetime(2026, 12, 2, 11, 0, tzinfo=dt.UTC).timestamp())
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "floor",
            "recipients": [{"phone_number": "+12125557700"}],
            "window": {"start": "00:00", "end": "23:59", "timezone": "America/New_York"},
        },
    )

    async def waiting() -> bool:
        counts = (await campaign_of(client, created["campaign_id"]))["counts"]
        return bool(counts["waiting_window"] == 1)

    await wait_for(waiting)
    rows = await all_recipients(client, created["campaign_id"])
    assert rows[0]["next_attempt_at"] == "2026-12-02T13:00:00.000Z"  # 08:00 in New York
    assert client.app[SANDBOX].dials == []
    # A window that only the floor closes says so (it named the time zones alone).
    early = await client.post(
        "/campaigns",
        json={
            "name": "too early",
            "recipients": [{"phone_number": "+12125557700"}],
            "window": {"start": "06:00", "end": "07:59", "timezone": "America/New_York"},
        },
    )
    assert early.status == 422
    (detail,) = (await early.json())["details"]
    assert detail["error"].endswith(
        "calls are kept within 08:00-21:00 local time (CAMPAIGN_ENFORCE_CALLING_HOURS)"
    ), detail


async def test_pause_resume_and_cancel(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=0.01, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    recipients = [{"phone_number": us(n, "7750")} for n in range(30)]  # 0.5 s calls
    created = await create(
        client,
        {"name": "control", "recipients": recipients, "pacing": {"calls_per_second": 5}},
    )
    campaign_id = created["campaign_id"]
    sandbox = client.app[SANDBOX]
    await wait_for(lambda: _true(len(sandbox.dials) >= 3))
    paused = await client.post(f"/campaigns/{campaign_id}/pause")
    assert paused.status == 200
    assert (await paused.json())["campaign"]["status"] == "paused"
    # A placement in flight may still land (its dial marked before the pause): its end is
    # waited for, not 0.3 s, which a loaded machine's placing could outlast.
    scheduler = client.app[CAMPAIGNS].scheduler
    await wait_for(lambda: _true(not scheduler._placing), timeout=15)
    dialled = len(sandbox.dials)
    await asyncio.sleep(1.0)
    assert len(sandbox.dials) == dialled  # nothing new while paused
    assert (await client.post(f"/campaigns/{campaign_id}/pause")).status == 409
    assert (await client.post(f"/campaigns/{campaign_id}/resume")).status == 200
    await wait_for(lambda: _true(len(sandbox.dials) >= dialled + 3))
    canceled = await client.post(f"/campaigns/{campaign_id}/cancel")
    assert canceled.status == 200

    async def live_calls_over() -> bool:  # 0.5 s calls, then their ends: not a fixed 1 s
        counts = (await campaign_of(client, campaign_id))["counts"]
        return bool(counts["pending"] == counts["calling"] == 0)

    await wait_for(live_calls_over, timeout=15)
    campaign = await campaign_of(client, campaign_id)
    assert campaign["status"] == "canceled"
    counts = campaign["counts"]
    assert counts["canceled"] == 30 - counts["completed"]
    assert len(sandbox.dials) == counts["completed"]
    assert (await client.post(f"/campaigns/{campaign_id}/resume")).status == 409
    assert (await client.post("/campaigns/cmp-nope/cancel")).status == 404


async def test_a_campaign_that_completes_says_so_in_the_log(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Its start was logged ("driving it on this server"), its end by nothing: an operator
    could not tell from the log whether last night's list had finished."""
    caplog.set_level(logging.INFO, logger="common.campaigns")
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    recipients = [{"phone_number": us(0, "7700")}, {"phone_number": us(1, "0486")}]
    body = {"name": "Night list", "recipients": recipients, "retry": {"max_attempts": 1}}
    campaign_id = (await create(client, body))["campaign_id"]
    await wait_status(client, campaign_id, "completed", timeout=10)
    said = f"campaign {campaign_id} (Night list) completed: 1 completed, 1 busy"
    await wait_for(lambda: _true(said in caplog.text), timeout=5)


async def test_a_driver_step_that_keeps_failing_is_one_traceback_a_minute(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that raised the unexpected was logged with its 20-line traceback every second
    it was tried again, for as long as the campaign ran: 72,000 lines an hour per campaign.
    Once a minute now, as the reaper's and the webhook sender's defects are."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    scheduler = client.app[CAMPAIGNS].scheduler
    steps = 0

    async def broken_step(*_args: Any) -> float:
        nonlocal steps
        steps += 1
        raise RuntimeError("a defect")

    monkeypatch.setattr(scheduler, "_step", broken_step)
    monkeypatch.setattr(campaign_scheduler, "IDLE_WAIT_S", 0.02)
    with caplog.at_level(logging.ERROR, logger="common.campaigns.scheduler"):
        await create(client, {"name": "broken", "recipients": [{"phone_number": us(0, "7760")}]})
        await wait_for(lambda: _true(steps >= 5), timeout=10)
    failed = [r for r in caplog.records if "driver step failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None, [r.getMessage() for r in failed]


async def test_more_bad_rows_than_an_answer_lists_are_counted_as_every_error_is(
    client: TestClient[Any, Any],
) -> None:
    """Every error lists at most 1,000 details, then `{"field": "", "error": "and N more"}`
    (README): a campaign refused for 1,500 bad rows listed the first 1,000 and no more, the
    rest said of nowhere but the message's count."""
    for options in ({}, {"invalid_rows": "skip"}):  # "invalid row(s)" / "no valid recipient"
        rows = [{"phone_number": f"bad-{i}"} for i in range(1500)]
        resp = await client.post("/campaigns", json={"name": "bad", "recipients": rows, **options})
        assert resp.status == 422
        details = (await resp.json())["details"]
        assert len(details) == 1001 and details[999]["row"] == 999
        assert details[-1] == {"field": "", "error": "and 500 more"}


async def _true(value: bool) -> bool:
    return value


CSV = (
    "\ufeffphone_number,name,language,account_id,notes\r\n"
    '+14155557700,"Smith, Anna",en,A-1,"said ""call me"" later"\r\n'
    "+12125557700,Bob,es,A-2,\r\n"
    "not-a-number,Carl,en,A-3,\r\n"
    "+34612345678,Dana,xx,A-4,\r\n"
    ",Eve,en,A-5,\r\n"
    "+441234567890,Finn,en,A-6,extra,cells\r\n"
)


async def test_a_csv_rows_other_columns_are_held_once_while_it_is_created(
    start_app: AppFactory,
) -> None:
    """A row's other columns (its additional_params) were held twice until the campaign was
    stored: as the CSV was read, and copied for the check. Rows of 598 one-character cells
    (7.6 KB as JSON, under the 8 KiB a row may have) cost 13 KB each as a dict, so twice that
    took a 63 MiB list of 54,548 such rows to 1.58 GB (1.18 GB held once)."""
    client = await start_app(campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows, width = 300, 598
    header = ",".join(["phone_number", *(f"c{i}" for i in range(width))])
    lines = [header] + [f"+1415{5550000 + n:07d}" + ",x" * width for n in range(rows)]
    params = {f"c{i}": "x" for i in range(width)}
    held_once = rows * sys.getsizeof(params)  # 3.9 MB
    tracemalloc.start()
    try:
        resp = await client.post(
            f"/campaigns?name=wide&start_at={later}",
            data="\n".join(lines).encode(),
            headers={"Content-Type": "text/csv"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    answer = await resp.json()
    assert resp.status == 201, answer
    assert answer["campaign"]["total"] == rows and answer["invalid_row_count"] == 0
    # Held once, with the body, its text and the rest of the request: 1.8 times; twice, 2.35.
    assert peak < 2.1 * held_once, f"{peak / 1e6:.0f} MB for {held_once / 1e6:.0f} MB of rows"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not freed_memory.can_give_back() or not Path("/proc/self/statm").exists(),
    reason="glibc's malloc_trim and /proc",
)
async def test_a_large_list_refused_gives_its_memory_back(start_app: AppFactory) -> None:
    """The rows of a list, freed once it is answered, stayed resident: glibc keeps freed
    memory for the process (the parse's in a heap of the parsing thread's), and a 63 MiB
    list of rows refused (each row's other cells over the 8 KiB a row may have) left the
    server at 894 MB, from 74, for good. Here 2,000 such rows (4 MB): 33.5 MB more, now 5.8."""
    client = await start_app(campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST)
    width = 998
    header = ",".join(["phone_number", *(f"c{i}" for i in range(width))])
    lines = [header] + [f"+1415{5550000 + n:07d}" + ",x" * width for n in range(2000)]
    body = "\n".join(lines).encode()
    # From a heap with nothing free: after a test of a large list (the one above), its freed
    # memory, still resident, took this list, and the test passed without the trim.
    await campaigns_handlers._PARSING.run(freed_memory.give_back)
    before = _resident_bytes()
    resp = await client.post(
        "/campaigns?name=wide&invalid_rows=skip",
        data=io.BytesIO(body),  # over 1 MiB: aiohttp warns of a bytes body this large
        headers={"Content-Type": "text/csv"},
    )
    answer = await resp.json()
    assert resp.status == 422 and answer["error"] == "no valid recipient", answer
    await campaigns_handlers._PARSING.run(lambda: None)  # after the memory's return
    grown = _resident_bytes() - before
    assert grown < 3 * len(body), f"{grown / 1e6:.0f} MB more for a {len(body) / 1e6:.0f} MB list"


async def test_csv_upload_rejects_or_skips_bad_rows(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    headers = {"Content-Type": "text/csv"}
    resp = await client.post("/campaigns?name=list", data=CSV.encode(), headers=headers)
    assert resp.status == 422
    answer = await resp.json()
    assert [(d["row"], d["field"]) for d in answer["details"]] == [
        (4, "phone_number"),
        (5, "language"),
        (6, "phone_number"),
        (7, "column 6"),
    ]
    resp = await client.post(
        "/campaigns?name=list&invalid_rows=skip&calls_per_second=50&window_days=mon,tue,wed",
        data=CSV.encode(),
        headers=headers,
    )
    assert resp.status == 201, await resp.text()
    answer = await resp.json()
    assert answer["invalid_row_count"] == 4
    assert answer["campaign"]["window"]["days"] == ["mon", "tue", "wed"]
    campaign = await wait_status(client, answer["campaign_id"], "completed")
    # Every row skipped is kept as an invalid recipient, those refused as the CSV was read
    # (a blank number, cells past the header) too: they were in the 201's invalid_rows only,
    # and the campaign showed 4 rows, 2 invalid, of a list of 6 with 4 skipped.
    assert campaign["total"] == 6
    assert campaign["counts"]["completed"] == 2 and campaign["counts"]["invalid"] == 4
    rows = await all_recipients(client, answer["campaign_id"])
    assert [(r["row"], r["state"], r["phone_number"]) for r in rows] == [
        (2, "completed", "+14155557700"),
        (3, "completed", "+12125557700"),
        (4, "invalid", ""),  # text with letters is no number (a name, shifted): not kept
        (5, "invalid", "+34612345678"),
        (6, "invalid", ""),
        (7, "invalid", "+441234567890"),
    ]
    assert rows[4]["errors"] == [{"field": "phone_number", "error": "is empty"}]
    assert [e["field"] for e in rows[5]["errors"]] == ["column 6"]
    # A list whose every row was refused as it was read has rows: "no valid recipient" (it
    # was "the list has a header but no rows").
    resp = await client.post(
        "/campaigns?name=list&invalid_rows=skip",
        data=b"phone_number,name\n,Ann\n+14155557791,Smith, Bo\n",
        headers=headers,
    )
    refused = await resp.json()
    assert resp.status == 422, refused
    assert refused["error"] == "no valid recipient"
    assert [(d["row"], d["field"]) for d in refused["details"]] == [
        (2, "phone_number"),
        (3, "column 3"),
    ]
    anna = rows[0]
    call = await (await client.get(f"/calls/{anna['attempts'][0]['call_id']}")).json()
    assert call["name"] == "Smith, Anna"
    assert call["config"]["additional_params"] == {
        "account_id": "A-1",
        "notes": 'said "call me" later',
    }


async def test_bad_options_are_refused_field_by_field(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/campaigns",
        json={
            "name": "",
            "recipients": [{"phone_number": "+14155557700"}],
            "defaults": {"language": "xx", "phone_number": "+1"},
            "pacing": {"calls_per_second": 0, "max_concurrent": 5000},
            "window": {"start": "25:00", "timezone": "Mars/Base"},
            "retry": {"on": ["completed"], "max_attempts": 0},
            "start_at": "tomorrow",
            "invalid_rows": "maybe",
        },
    )
    assert resp.status == 422
    fields = {d["field"] for d in (await resp.json())["details"]}
    assert {
        "name",
        "defaults.phone_number",
        "defaults.language",  # was hidden by defaults.phone_number
        "pacing.calls_per_second",
        "pacing.max_concurrent",
        "window.start",
        "window.timezone",
        "retry.on",
        "retry.max_attempts",
        "start_at",
        "invalid_rows",
    } <= fields
    for body in ({}, {"name": "x"}, {"name": "x", "recipients": []}, [1], {"name": "x", "z": 1}):
        assert (await client.post("/campaigns", json=body)).status == 422, body
    # No list of rows, bad options too: one answer lists them all (probe AU: the options'
    # came only once the list was fixed).
    no_rows: tuple[object, ...] = ([], "everyone", [{}] * 100_001)
    for recipients in no_rows:
        resp = await client.post(
            "/campaigns", json={"recipients": recipients, "pacing": {"calls_per_second": 1000}}
        )
        assert resp.status == 422
        named = [d["field"] for d in (await resp.json())["details"]]
        assert named == ["recipients", "name", "pacing.calls_per_second"], named


async def test_rows_are_checked_like_single_calls(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/campaigns",
        json={
            "name": "rows",
            "recipients": [
                {"phone_number": "+14155557700"},
                {"phone_number": "+14155557700"},  # the same number again
                {"phone_number": "+19005551234"},  # premium rate
                {"phone_number": "+14155557701", "emotion": "Furious"},
                {"phone_number": "+14155557702", "bogus": 1},
                "not an object",
            ],
        },
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert [(d["row"], d["field"]) for d in details] == [
        (1, "recipients[1].phone_number"),
        (2, "recipients[2].phone_number"),
        (3, "recipients[3].emotion"),
        (4, "recipients[4].bogus"),
        (5, "recipients[5]"),
    ]
    assert "repeats row 0" in details[0]["error"]


async def test_a_rows_null_keeps_the_campaigns_default(start_app: AppFactory) -> None:
    # Rows exported with null for an empty cell (a database, pandas): a null is a field not
    # given, as in a single call's body, so the campaign's default holds, as under a CSV's
    # blank cell. It replaced the default: the call spoke English to a Spanish list, to
    # "Guest", without its additional_params.
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    defaults = {
        "name": "Customer",
        "language": "es",
        "dynamic_instruction": "Remind them of the appointment.",
        "additional_params": {"clinic": "Centro"},
    }
    created = await create(
        client,
        {
            "name": "nulls",
            "defaults": defaults,
            "recipients": [
                {
                    "phone_number": "+14155557700",
                    "name": None,
                    "language": None,
                    "dynamic_instruction": None,
                    "additional_params": None,
                },
                {"phone_number": "+14155557701", "name": "Bea", "additional_params": {"a": "1"}},
            ],
        },
    )
    await wait_status(client, created["campaign_id"], "completed")
    rows = await all_recipients(client, created["campaign_id"])
    configs = []
    for row in rows:
        call = await (await client.get(f"/calls/{row['attempts'][0]['call_id']}")).json()
        configs.append(call["config"])
    assert [c["caller_name"] for c in configs] == ["Customer", "Bea"]
    assert [c["tts_language"] for c in configs] == ["es", "es"]
    assert [c["agent_instructions"] for c in configs] == [defaults["dynamic_instruction"]] * 2
    assert [c["additional_params"] for c in configs] == [
        {"clinic": "Centro"},
        {"clinic": "Centro", "a": "1"},
    ]


async def test_start_at_waits_and_scheduled_shows(start_app: AppFactory) -> None:
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    created = await create(
        client,
        {"name": "later", "recipients": [{"phone_number": "+14155557700"}], "start_at": later},
    )
    await asyncio.sleep(0.5)
    campaign = await campaign_of(client, created["campaign_id"])
    assert campaign["status"] == "scheduled"
    assert campaign["next_call_at"] == later.replace("+00:00", ".000Z")
    assert client.app[SANDBOX].dials == []
    clock.move_to(OPEN_EVERYWHERE + 3601)
    await wait_status(client, created["campaign_id"], "completed")
    listed = await (await client.get("/campaigns?limit=1")).json()
    assert [c["campaign_id"] for c in listed["campaigns"]] == [created["campaign_id"]]
    assert listed["next_before"] is None  # a last page exactly full says it is the last
    rows = await client.get(f"/campaigns/{created['campaign_id']}/recipients?limit=1")
    assert (await rows.json())["next_after"] is None


async def test_a_page_of_campaigns_is_written_off_the_loop(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 campaigns written on the loop held every other request 40-170 ms."""
    client = await start_app(campaign_clock=ShiftedClock(OPEN_EVERYWHERE))
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    created = await create(
        client,
        {"name": "later", "recipients": [{"phone_number": "+79161234567"}], "start_at": later},
    )
    written_on: list[str] = []
    to_json = CampaignRecord.to_json

    def watched(self: CampaignRecord, *args: Any) -> dict[str, Any]:
        written_on.append(threading.current_thread().name)
        return to_json(self, *args)

    monkeypatch.setattr(CampaignRecord, "to_json", watched)
    listed = await client.get("/campaigns")
    assert listed.content_type == "application/json" and listed.charset == "utf-8"
    page = await listed.json()
    assert written_on and threading.current_thread().name not in written_on, written_on
    assert page == {
        "campaigns": [await campaign_of(client, created["campaign_id"])],
        "next_before": None,
    }


async def test_do_not_call_list(start_app: AppFactory) -> None:
    client = await start_app()
    bad = await client.post("/dnc", json={"numbers": ["+1 (415) 555-0100", "nope"]})
    assert bad.status == 422
    assert [d["field"] for d in (await bad.json())["details"]] == ["numbers[1]"]
    written_twice = ["+1 (415) 555-0100", "+14155550100"]
    added = await client.post("/dnc", json={"numbers": written_twice})
    assert (await added.json())["numbers"] == ["+14155550100"]  # once (probe AP: twice)
    again = await client.post("/dnc", json={"numbers": ["+14155550100"]})
    assert (await again.json())["added"] == 0
    config_path = client.app[SETTINGS].config_path
    assert (await client.post("/calls/outbound", json={"phone_number": "+14155557705"})).ok
    refused = await client.post(
        "/calls/outbound", json={"phone_number": "+14155550100", "name": "Listed Person"}
    )
    assert refused.status == 422
    assert (await refused.json())["details"] == [
        {"field": "phone_number", "error": "on the do-not-call list"}
    ]
    # Refused before config.json is written: the seed's "latest" config is not the refused
    # call's (only its per-call record used to be taken back).
    assert json.loads(config_path.read_bytes())["caller_name"] != "Listed Person"
    listing = await (await client.get("/dnc")).json()
    assert [n["phone_number"] for n in listing["numbers"]] == ["+14155550100"]
    assert listing["numbers"][0]["source"] == "api"
    assert (await client.delete("/dnc/%2B14155550100")).status == 200
    assert (await client.delete("/dnc/%2B14155550100")).status == 404
    # Well formed but no number (no country has +28): never listed, so not on the list.
    assert (await client.delete("/dnc/%2B2888888888")).status == 404
    assert (await client.delete("/dnc/nope")).status == 422
    placed = await client.post("/calls/outbound", json={"phone_number": "+14155550100"})
    assert placed.status == 200


async def test_other_requests_are_answered_while_do_not_call_numbers_are_parsed(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 numbers (a list synced at once) took 250-300 ms to parse on the loop, every
    other request waiting behind them (/healthz: 246 ms). The parse here waits until a
    /healthz request was answered; on the loop it would wait in vain."""
    import threading

    from handlers import dnc

    client = await start_app()
    answered = threading.Event()
    waited: list[bool] = []
    real = dnc.normalized

    def slow(value: object, where: str) -> str:
        if not waited:
            waited.append(answered.wait(5))
        return real(value, where)

    monkeypatch.setattr(dnc, "normalized", slow)

    async def probe() -> None:
        assert (await client.get("/healthz")).status == 200
        answered.set()

    added, _ = await asyncio.gather(
        client.post("/dnc", json={"numbers": ["+14155550100", "+14155550101"]}), probe()
    )
    assert added.status == 200, await added.text()
    assert waited == [True]


async def test_a_number_listed_while_its_call_is_being_placed_is_not_dialled(
    start_app: AppFactory,
) -> None:
    """POST /dnc answered while a call to the number was being placed (LiveKit a moment
    slow with the agent's dispatch, as over the internet): the number is not dialled after
    that 200 (probe AY: it was, ~0.2 s later, by a call and by a campaign). The call is
    refused as one to a listed number, nobody was called, and its key is free."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    sandbox = client.app[SANDBOX]
    # Each dispatch held until the number is listed: a 0.5 s delay could be over first on a
    # loaded machine (or the call not recorded yet 0.2 s on).
    dispatches = hold_requests(sandbox, "CreateDispatch", times=2)
    number = us(1, "7705")
    body = {"phone_number": number}
    placing = asyncio.create_task(
        client.post("/calls/outbound", json=body, headers={"Idempotency-Key": "listed-1"})
    )
    await dispatches.arrival()  # recorded, its dispatch on its way
    assert (await client.post("/dnc", json={"numbers": [number]})).status == 200
    dispatches.release()
    refused = await placing
    assert refused.status == 422, await refused.text()
    assert (await refused.json())["details"] == [
        {"field": "phone_number", "error": "on the do-not-call list"}
    ]
    calls = (await (await client.get("/calls")).json())["calls"]
    assert [(c["status"], c["reason"]) for c in calls] == [("failed", LISTED_WHILE_PLACING)]

    # A campaign's call: its recipient ends dnc, nobody dialled.
    other = us(2, "7705")
    created = await create(client, {"name": "listed", "recipients": [{"phone_number": other}]})
    await dispatches.arrival(2)  # its dispatch on its way
    assert (await client.post("/dnc", json={"numbers": [other]})).status == 200
    dispatches.release()
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=20)
    assert campaign["counts"]["dnc"] == 1
    assert sandbox.dials == []  # nobody: neither the call nor the campaign's
    # Off the list again, the key places the call anew (nobody was called under it).
    assert (await client.delete(f"/dnc/{number.replace('+', '%2B')}")).status == 200
    again = await client.post("/calls/outbound", json=body, headers={"Idempotency-Key": "listed-1"})
    assert again.status == 200 and "Idempotent-Replay" not in again.headers
    call_id = (await again.json())["call_id"]

    async def settled() -> bool:  # before the app stops: no webhook in flight at its teardown
        call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
        return bool(call["status"] == "completed")

    await wait_for(settled, timeout=20)


async def test_a_mexican_mobile_in_its_old_form_is_one_number_for_the_list_and_calls(
    start_app: AppFactory,
) -> None:
    """The list keyed +52 1 55... as +52 55... but a call to +52 1 55... was placed as
    written (the sandbox takes numbers phonenumbers cannot validate): it rang a listed
    person. An entry an older release stored in the old form (an agent's report on such a
    call) could not be deleted (404) and broke paging (its key read back in the new form)."""
    client = await start_app(sandbox_time_scale=1.0)
    assert (await client.post("/dnc", json={"numbers": ["+5215512340001"]})).status == 200
    refused = await client.post("/calls/outbound", json={"phone_number": "+5215512340001"})
    assert refused.status == 422
    assert (await refused.json())["details"][0]["error"] == "on the do-not-call list"
    placed = await client.post("/calls/outbound", json={"phone_number": "+52 1 55 1234 0003"})
    assert placed.status == 200
    shown = await (await client.get(f"/calls/{(await placed.json())['call_id']}")).json()
    assert shown["phone_number"] == "+525512340003"  # dialled as the number it is now
    with (
        contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db,
        db,
    ):  # as an older release did
        db.executemany(
            "INSERT INTO dnc (number, source, call_id, added_at) VALUES (?, 'agent', NULL, 0)",
            [("+5215512340002",), ("+5215512340004",)],
        )
    for number in ("+525512340002", "+5215512340002"):  # an old entry holds for either form
        legacy = await client.post("/calls/outbound", json={"phone_number": number})
        assert legacy.status == 422, number
    listed: list[str] = []
    query = "limit=1"
    for _ in range(5):
        page = await (await client.get(f"/dnc?{query}")).json()
        listed += [entry["phone_number"] for entry in page["numbers"]]
        if page["next_after"] is None:
            break
        query = f"limit=1&after={page['next_after']}"
    assert listed == ["+5215512340002", "+5215512340004", "+525512340001"]
    assert (await client.delete("/dnc/%2B5215512340002")).status == 200
    assert (await client.delete("/dnc/%2B525512340004")).status == 200  # either form
    assert (await client.delete("/dnc/%2B5215512340001")).status == 200
    remaining = await (await client.get("/dnc")).json()
    assert remaining["numbers"] == []


async def test_the_do_not_call_list_pages_with_next_after_pasted_as_it_is(
    start_app_on_each_database: AppFactory,
) -> None:
    """next_after is a number: pasted into a URL unencoded, its "+" arrives as a space. Read
    as given, it sorted before every number and page 1 came again (a pager looped for ever);
    now the space is read as the "+" it was. An `after` that is no number is a 400, not an
    empty page."""
    client = await start_app_on_each_database()
    numbers = ["+14155550100", "+14155550101", "+34612345678"]
    assert (await client.post("/dnc", json={"numbers": numbers})).status == 200
    seen: list[str] = []
    query = "limit=1"
    for _ in range(len(numbers) + 1):  # one page more than there are numbers, at most
        page = await (await client.get(f"/dnc?{query}")).json()
        seen += [entry["phone_number"] for entry in page["numbers"]]
        if page["next_after"] is None:
            break
        query = f"limit=1&after={page['next_after']}"  # not URL-encoded
    assert seen == numbers
    assert (await (await client.get("/dnc?limit=3")).json())["next_after"] is None  # exactly full
    encoded = await client.get("/dnc", params={"after": "+14155550100"})  # %2B
    assert [n["phone_number"] for n in (await encoded.json())["numbers"]] == numbers[1:]
    from_start = await client.get("/dnc?after=")
    assert len((await from_start.json())["numbers"]) == 3
    # Well formed but no number (no country has +28): it pages from where it sorts.
    after_28 = await client.get("/dnc", params={"after": "+2888888888"})
    assert [n["phone_number"] for n in (await after_28.json())["numbers"]] == numbers[2:]
    for after in ("zzz", "14155550100", "+1", "%2B%2B14155550100", "%2B1415555O100"):
        resp = await client.get(f"/dnc?after={after}")
        assert resp.status == 400, after
        assert (await resp.json())["error"] == (
            "after must be an E.164 number, the next_after of the previous page"
        )


async def test_csv_with_its_options_as_a_multipart_json_part(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    form = aiohttp.FormData()
    form.add_field(
        "options",
        json.dumps(
            {"name": "multipart", "pacing": {"calls_per_second": 50}, "invalid_rows": "skip"}
        ),
        content_type="application/json",
    )
    form.add_field("recipients", CSV.encode(), filename="list.csv", content_type="text/csv")
    resp = await client.post("/campaigns", data=form)
    assert resp.status == 201, await resp.text()
    answer = await resp.json()
    assert answer["campaign"]["name"] == "multipart" and answer["invalid_row_count"] == 4
    assert answer["campaign"]["pacing"]["calls_per_second"] == 50
    await wait_status(client, answer["campaign_id"], "completed")
    missing = aiohttp.FormData()
    missing.add_field("options", "{}", content_type="application/json")
    assert (await client.post("/campaigns", data=missing)).status == 422
    # A part of another name (a second list) is said, not dropped unread.
    extra = aiohttp.FormData()
    extra.add_field("recipients", CSV.encode(), filename="a.csv", content_type="text/csv")
    extra.add_field("other", CSV.encode(), filename="b.csv", content_type="text/csv")
    refused = await client.post("/campaigns", data=extra)
    assert refused.status == 422
    assert (await refused.json())["details"] == [
        {
            "field": "other",
            "error": "unknown part; an upload has recipients (or file), and its options as an"
            " options part or as fields named as the query's parameters",
        }
    ]


async def test_csv_with_its_options_as_form_fields(start_app: AppFactory) -> None:
    """What `requests.post(url, files={"file": ...}, data={"name": ...})` sends: the options
    as the form's own fields, read as the query's parameters are (it was a 422 "unknown
    part" for each, probe BB)."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    form = aiohttp.FormData()
    for name, value in (("name", "Form fields"), ("invalid_rows", "skip")):
        form.add_field(name, value)
    form.add_field("calls_per_second", "40")
    form.add_field("file", CSV.encode(), filename="list.csv", content_type="text/csv")
    resp = await client.post("/campaigns", data=form)
    assert resp.status == 201, await resp.text()
    answer = await resp.json()
    assert answer["campaign"]["name"] == "Form fields" and answer["invalid_row_count"] == 4
    assert answer["campaign"]["pacing"]["calls_per_second"] == 40
    await wait_status(client, answer["campaign_id"], "completed")

    async def refused(form: aiohttp.FormData, query: str = "") -> list[dict[str, str]]:
        resp = await client.post(f"/campaigns{query}", data=form)
        assert resp.status == 422
        details: list[dict[str, str]] = (await resp.json())["details"]
        return details

    def with_list(*fields: tuple[str, str]) -> aiohttp.FormData:
        form = aiohttp.FormData()
        for name, value in fields:
            form.add_field(name, value)
        form.add_field("file", CSV.encode(), filename="list.csv", content_type="text/csv")
        return form

    # checked as the parameters are, and given once
    assert await refused(with_list(("name", "x"), ("calls_per_second", "fast"))) == [
        {"field": "pacing.calls_per_second", "error": "must be a number from 0.01 to 100"}
    ]
    assert await refused(with_list(("name", "x")), "?name=y") == [
        {"field": "name", "error": "is given both in the query and as a form field"}
    ]
    assert await refused(with_list(("name", "x"), ("name", "y"))) == [
        {"field": "name", "error": "only one part of this name is read"}
    ]
    both = with_list(("name", "x"))
    both.add_field("options", json.dumps({"name": "z"}), content_type="application/json")
    assert await refused(both) == [
        {
            "field": "name",
            "error": "is given both as a parameter (query or form field) and in the options part",
        }
    ]


async def test_blank_options_of_a_form_or_a_query_are_not_given(start_app: AppFactory) -> None:
    """An upload form's blank optional fields (and a generated client's unset parameters)
    were read as given: "unknown time zone ''", "must be an ISO-8601 time", "must be a
    number", each a 422 for a field nobody filled in. They are not given: the defaults
    hold. A blank retry_on= still retries on nothing, as "on": [] does."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    blank = [p for p in QUERY_PARAMS if p not in ("name", "retry_on")]
    form = aiohttp.FormData()
    form.add_field("name", "Blank fields")
    for name in blank:
        form.add_field(name, "")
    form.add_field("file", b"phone_number\n+14155557700\n", filename="list.csv")
    resp = await client.post("/campaigns", data=form)
    answer = await resp.json()
    assert resp.status == 201, answer
    defaults = await create(
        client, {"name": "Blank fields", "recipients": [{"phone_number": "+14155557701"}]}
    )
    for section in ("pacing", "window", "retry"):
        assert answer["campaign"][section] == defaults["campaign"][section], section
    created = [answer["campaign_id"], defaults["campaign_id"]]
    query = "&".join(f"{name}=" for name in blank)
    resp = await client.post(
        f"/campaigns?name=Blank&{query}&retry_on=",
        data=b"phone_number\n+14155557702\n",
        headers={"Content-Type": "text/csv"},
    )
    answer = await resp.json()
    assert resp.status == 201, answer
    assert answer["campaign"]["retry"]["on"] == []
    assert answer["campaign"]["retry"]["max_attempts"] == 1
    assert answer["campaign"]["window"] == defaults["campaign"]["window"]
    # Each one called, before the app stops (its calls in flight at the teardown left a
    # connection unclosed now and then: a ResourceWarning failed the test's teardown).
    for campaign_id in (*created, answer["campaign_id"]):
        assert (await wait_status(client, campaign_id, "completed"))["counts"]["completed"] == 1


async def test_a_form_field_is_bounded_as_a_query_parameter_is(start_app: AppFactory) -> None:
    """A form field holds one option, as a query parameter (bounded by the request line's
    8 KiB): unbounded, it took the body's 64 MiB, and 5,000,000 bad window_days were checked
    one by one for 20 s, a 5 MB time zone quoted back whole in the answer."""
    client = await start_app(sandbox_time_scale=0.0, **FAST)
    limit = campaigns_handlers.MAX_FIELD_BYTES

    def with_field(name: str, value: str) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field(name, value)
        form.add_field("file", CSV.encode(), filename="list.csv", content_type="text/csv")
        return form

    for name, value in (("timezone", "y" * (limit + 1)), ("window_days", "xx," * limit)):
        resp = await client.post("/campaigns", data=with_field(name, value))
        assert resp.status == 413
        assert (await resp.json())["error"] == f"the form field {name} is larger than {limit} bytes"
    resp = await client.post("/campaigns", data=with_field("timezone", "y" * limit))
    assert resp.status == 422  # as long as a query's: read, and its value checked
    assert (await resp.json())["details"][-1]["field"] == "window.timezone"


class FailingFirst:
    """`real`, but its first `times` calls raise `error` (counted in `failures`)."""

    def __init__(self, real: Callable[..., Awaitable[Any]], times: int, error: Exception):
        self.real, self.times, self.error, self.failures = real, times, error, 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures < self.times:
            self.failures += 1
            raise self.error
        return await self.real(*args, **kwargs)


async def test_an_unexpected_error_while_placing_is_logged_with_its_attempt(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A defect in placing (here: place() raising what it never raises) is an ERROR naming the
    campaign, recipient and attempt, with its traceback; before, the task's exception was
    only "never retrieved", if ever printed."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    calls = client.app[CALLS]
    calls.place = FailingFirst(calls.place, 1, RuntimeError("a defect (test)"))
    created = await create(
        client, {"name": "defect", "recipients": [{"phone_number": us(1, "7700")}]}
    )
    async with asyncio.timeout(10):
        while "unexpected error while placing" not in caplog.text:
            await asyncio.sleep(0.02)
    record = next(r for r in caplog.records if "unexpected error while placing" in r.getMessage())
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert f"campaign {created['campaign_id']}: recipient 0 attempt 1" in record.getMessage()


async def test_an_attempt_that_keeps_failing_unexpectedly_is_ended(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placing one recipient always raises the unexpected. Left `placing`, its attempt was
    placed again on every recovery pass for good and held the campaign's only concurrent
    slot, so the next recipient was never called and the campaign never completed."""
    from common.campaigns import scheduler

    monkeypatch.setattr(scheduler, "RECOVER_EVERY_S", 0.1)
    monkeypatch.setattr(scheduler, "IDLE_WAIT_S", 0.05)  # nothing due: each try waited 1 s
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    calls = client.app[CALLS]
    real_place = calls.place
    cursed = us(1, "7700")
    tries = 0

    async def broken(call: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal tries
        if call.phone_number == cursed:
            tries += 1
            raise RuntimeError("a defect (test)")
        return await real_place(call, *args, **kwargs)

    calls.place = broken
    created = await create(
        client,
        {
            "name": "defect",
            "pacing": {"calls_per_second": 50, "max_concurrent": 1},
            "recipients": [{"phone_number": cursed}, {"phone_number": us(2, "7700")}],
        },
    )
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=20)
    assert tries == scheduler.MAX_DEFECT_TRIES
    rows = {r["phone_number"]: r for r in await all_recipients(client, created["campaign_id"])}
    assert rows[cursed]["state"] == "invalid"
    error = "could not be placed: RuntimeError on 3 tries (see the server log)"
    assert rows[cursed]["errors"] == [{"field": "row", "error": error}]
    assert rows[us(2, "7700")]["state"] == "completed"
    assert campaign["counts"]["invalid"] == 1, campaign
    assert "gave up after 3 unexpected errors" in caplog.text


async def test_the_database_failing_after_a_refusal_is_no_defect(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A limit refuses an attempt and the database fails as the refusal is recorded (probe AY:
    a connection cut at that moment): an outage, not a defect. It was logged as an unexpected
    error with a traceback, and three in a row gave the recipient up as invalid."""
    from common.calls.errors import TooManyLiveCalls
    from common.campaigns import scheduler

    monkeypatch.setattr(scheduler, "RECOVER_EVERY_S", 0.1)
    monkeypatch.setattr(scheduler, "IDLE_WAIT_S", 0.05)  # nothing due: each try waited 1 s
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    calls, store = client.app[CALLS], client.app[STORE]
    real_place = calls.place
    refusals = 0

    async def full(*args: Any, **kwargs: Any) -> Any:
        nonlocal refusals
        if refusals < scheduler.MAX_DEFECT_TRIES:
            refusals += 1
            raise TooManyLiveCalls(1, 0)
        return await real_place(*args, **kwargs)

    real_refused = store.attempt_refused
    downs = 0

    async def down(*args: Any, **kwargs: Any) -> Any:
        nonlocal downs
        if downs < scheduler.MAX_DEFECT_TRIES:  # as long as the refusals last
            downs += 1
            raise DatabaseError("database unreachable (ConnectionDoesNotExistError)")
        return await real_refused(*args, **kwargs)

    calls.place = full
    monkeypatch.setattr(store, "attempt_refused", down)
    body = {"name": "flap", "recipients": [{"phone_number": us(1, "7700")}]}
    created = await create(client, body)
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=20)
    assert campaign["counts"]["completed"] == 1, campaign  # not given up as invalid
    assert "unexpected error" not in caplog.text
    said = [r for r in caplog.records if "database unreachable" in r.getMessage()]
    assert said and all(r.levelname == "ERROR" and r.exc_info is None for r in said)


async def test_retrying_on_nothing_shows_one_attempt(client: TestClient[Any, Any]) -> None:
    """`retry.on: []` showed `max_attempts: 3` (the default), which read as three attempts."""
    body = {"name": "once", "recipients": [{"phone_number": "+14155557700"}]}
    created = await client.post("/campaigns", json={**body, "retry": {"on": []}})
    assert created.status == 201, await created.text()
    assert (await created.json())["campaign"]["retry"] == {
        "on": [],
        "max_attempts": 1,
        "delay_s": 600,
    }
    # More attempts than one with nothing to retry on could never be: said, not kept.
    given = await client.post("/campaigns", json={**body, "retry": {"on": [], "max_attempts": 2}})
    assert given.status == 422
    assert (await given.json())["details"] == [
        {"field": "retry.max_attempts", "error": "is more than 1, but retry.on names no status"}
    ]
    # A retry.on that is no list of statuses is said once, not twice.
    bogus = {**body, "retry": {"on": ["bogus"], "max_attempts": 3}}
    refused = await client.post("/campaigns", json=bogus)
    assert [d["field"] for d in (await refused.json())["details"]] == ["retry.on"]


WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def start_with_dns(
    start_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    answer: Callable[[str], str | None],
    **overrides: Any,
) -> TestClient[Any, Any]:
    """The app, campaigns open everywhere, with name lookups answered by `answer`: the
    address a host resolves to (None: the real lookup; it raises socket.gaierror for none)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (address := answer(host)) is not None:
            host = address
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return await start_app(
        sandbox_time_scale=0.0,
        campaign_clock=ShiftedClock(OPEN_EVERYWHERE),
        calls_webhook_secret=WEBHOOK_SECRET,
        **FAST,
        **overrides,
    )


async def test_a_webhook_host_that_does_not_resolve_at_dial_time_is_tried_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name server's hiccup while an attempt is placed made its recipient `invalid` for
    good (nobody called). Now the attempt waits and is placed again; a host that never
    resolves ends the recipient after MAX_UNRESOLVED_TRIES, the tries said in its error."""
    from common.campaigns import scheduler

    monkeypatch.setattr(scheduler, "UNRESOLVED_RETRY_S", 0.05)
    monkeypatch.setattr(scheduler, "MAX_UNRESOLVED_TRIES", 3)
    lookups: Counter[str] = Counter()

    def answer(host: str) -> str | None:
        if not host.endswith(".dns.test"):
            return None
        lookups[host] += 1  # the first: at creation; then flaky fails twice, never always
        if lookups[host] > 1 and (host.startswith("never.") or lookups[host] <= 3):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return "127.0.0.1"

    client = await start_with_dns(start_app, monkeypatch, answer, calls_webhook_allow_private=True)
    created = await create(
        client,
        {
            "name": "dns",
            "recipients": [
                {"phone_number": us(1, "7700"), "webhook_url": "https://flaky.dns.test/x"},
                {"phone_number": us(2, "7700"), "webhook_url": "https://never.dns.test/x"},
            ],
        },
    )
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=30)
    assert campaign["counts"]["completed"] == 1 and campaign["counts"]["invalid"] == 1
    flaky, never = await all_recipients(client, created["campaign_id"])
    assert flaky["state"] == "completed" and lookups["flaky.dns.test"] >= 4
    assert never["state"] == "invalid"
    (error,) = never["errors"]
    assert error["field"] == "webhook_url" and "3 tries" in error["error"], error
    dials = Counter(d.number for d in client.app[SANDBOX].dials)
    assert dials[us(1, "7700")] == 1 and dials[us(2, "7700")] == 0


async def test_rows_webhook_hosts_are_checked_when_the_campaign_is_made(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's own webhook_url passes the single call's checks at creation (its host
    resolves, to public addresses only), not only when its attempt is placed (the rows
    were accepted, then ended `invalid` with nobody called)."""

    def answer(host: str) -> str | None:
        if host == "gone.example.com":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        # inside: a public name pointed at this machine
        return {"inside.example.com": "127.0.0.1", "public.example.com": "93.184.215.14"}.get(host)

    client = await start_with_dns(start_app, monkeypatch, answer)
    recipients = [
        {"phone_number": us(1, "7700"), "webhook_url": "https://public.example.com/a"},
        {"phone_number": us(2, "7700"), "webhook_url": "https://inside.example.com/x"},
        {"phone_number": us(3, "7700"), "webhook_url": "https://gone.example.com/x"},
        {"phone_number": us(4, "7700"), "webhook_url": "https://inside.example.com/y"},
    ]
    resp = await client.post("/campaigns", json={"name": "hosts", "recipients": recipients})
    refused = await resp.json()
    assert resp.status == 422, refused
    assert [(d["row"], d["field"]) for d in refused["details"]] == [
        (1, "recipients[1].webhook_url"),
        (2, "recipients[2].webhook_url"),
        (3, "recipients[3].webhook_url"),
    ]
    assert "does not resolve" in refused["details"][1]["error"]
    created = await create(
        client, {"name": "hosts", "recipients": recipients, "invalid_rows": "skip"}
    )
    assert created["invalid_row_count"] == 3
    rows = await all_recipients(client, created["campaign_id"])
    assert [r["state"] for r in rows[1:]] == ["invalid"] * 3
    assert rows[1]["errors"][0]["field"] == "recipients[1].webhook_url"


async def test_a_dial_livekit_refused_before_dialling_is_tried_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CreateSIPParticipant answered 503 (LiveKit dialled nobody): the service freed the
    call's key and rate share as never dialled, but the campaign counted a `failed` dial,
    and with no retry on failures the recipient ended `failed`, never called (review AE).
    As a refused dispatch is, it is `not_dialled` and placed again."""
    monkeypatch.setattr(campaign_programs, "NOT_DIALLED_RETRY_S", 0.2)
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    client.app[SANDBOX].inject(
        "CreateSIPParticipant", error=TwirpError("unavailable", "sip restarting"), times=1
    )
    created = await create(
        client,
        {
            "name": "one",
            "recipients": [{"phone_number": "+14152007700", "name": "R"}],
            "retry": {"on": ["busy"], "max_attempts": 3, "delay_s": 60},
        },
    )
    await wait_status(client, created["campaign_id"], "completed", timeout=30)
    (row,) = await all_recipients(client, created["campaign_id"])
    assert row["state"] == "completed"
    assert [d.number for d in client.app[SANDBOX].dials] == ["+14152007700"]


async def test_a_dial_answered_with_a_sip_status_counts_as_dialled(
    start_app: AppFactory,
) -> None:
    """SIP 486 Busy from CreateSIPParticipant: the callee's line was reached and rung. It
    counted as never dialled for a while (the refusal's unmarking took every error LiveKit
    answered), and the campaign rang the busy person five times (review AG)."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    client.app[SANDBOX].inject(
        "CreateSIPParticipant",
        error=TwirpError(
            "resource_exhausted",
            "sip status 486: Busy Here",
            {"sip_status_code": "486", "sip_status": "Busy Here"},
        ),
    )
    created = await create(
        client,
        {
            "name": "one",
            "recipients": [{"phone_number": "+14152007700", "name": "R"}],
            "retry": {"on": [], "max_attempts": 1},
        },
    )
    await wait_status(client, created["campaign_id"], "completed", timeout=60)
    (row,) = await all_recipients(client, created["campaign_id"])
    dials = [r for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant"]
    assert len(dials) == 1 and row["state"] == "busy"


async def one_call_slow_to_dispatch(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, retry: dict[str, Any], held: int = 1
) -> tuple[TestClient[Any, Any], str, HeldRequests]:
    """A campaign of one number (+14152007700) whose first `held` calls' agent dispatches
    LiveKit holds until the test lets each go (the call recorded, not dialled yet,
    meanwhile: a 1 s delay could be over before the test's hang-up or pause on a loaded
    machine); a not_dialled attempt due again soon."""
    monkeypatch.setattr(campaign_programs, "NOT_DIALLED_RETRY_S", 0.2)
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    dispatches = hold_requests(client.app[SANDBOX], "CreateDispatch", times=held)
    created = await create(
        client,
        {"name": "slow dispatch", "recipients": [{"phone_number": "+14152007700"}], "retry": retry},
    )
    return client, created["campaign_id"], dispatches


async def paused_before_its_dial(
    client: TestClient[Any, Any], campaign_id: str, dispatch: HeldRequests
) -> str:
    """one_call_slow_to_dispatch's campaign paused once its call is recorded, its dispatch
    held, then the dispatch let go: its call's id, once the recipient is given back
    (pending)."""
    placing: list[str] = []

    async def has_call() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        placing[:] = [a["call_id"] for a in row["attempts"] if a["call_id"]][:1]
        return bool(placing)

    await wait_for(has_call)  # recorded, its dispatch on its way
    assert (await client.post(f"/campaigns/{campaign_id}/pause")).status == 200
    dispatch.release()

    async def given_back() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        return bool(row["state"] == "pending")

    await wait_for(given_back, timeout=10)
    return placing[0]


async def test_a_campaign_call_hung_up_before_its_dial_is_not_placed_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /calls/{id}/hangup on a campaign's call still being placed: the call ended
    canceled, never dialled, and the attempt counted as `not_dialled` (a server that died
    before dialling), so the campaign rang the person anyway (review AI). `canceled` is
    not in retry.on: the recipient ends canceled, nobody rung."""
    client, campaign_id, dispatch = await one_call_slow_to_dispatch(
        start_app, monkeypatch, {"on": ["busy"], "max_attempts": 3, "delay_s": 60}
    )
    sandbox = client.app[SANDBOX]
    placing: list[str] = []

    async def has_call() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        placing[:] = [a["call_id"] for a in row["attempts"] if a["call_id"]][:1]
        return bool(placing)

    await wait_for(has_call)
    assert (await client.post(f"/calls/{placing[0]}/hangup")).status == 200
    dispatch.release()
    await wait_status(client, campaign_id, "completed", timeout=30)
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "canceled" and sandbox.dials == []


async def test_the_database_answers_while_a_large_list_is_checked(
    client: TestClient[Any, Any],
) -> None:
    """A list's rows are checked on the loop in turns that pause in its selector: a bare
    yield gave the loop's other tasks their turn but never the GIL to the database's thread,
    and every request needing the database waited for the whole check (a GET /calls 6.7 s
    behind a 100,000-row upload)."""
    service, store = client.app[CAMPAIGNS], client.app[STORE]
    options = parse_options({"name": "big"}, RequestRules.of(client.app[SETTINGS]), time.time())
    total, pulled = 20_000, 0

    def rows() -> Iterator[Row]:
        nonlocal pulled
        for row in json_rows([{"phone_number": f"+1415{2_000_000 + i:07d}"} for i in range(total)]):
            pulled += 1
            yield row

    creating = asyncio.create_task(service.create(options, rows(), "client-a"))
    async with asyncio.timeout(60):
        while pulled < 100:  # the check has begun
            await asyncio.sleep(0.001)
        for _ in range(5):  # five reads, one after the other, on the database's thread
            await store.list_calls(limit=5)
    read_when = pulled
    created = await creating
    assert created.campaign.total == total
    assert read_when < total / 2, f"5 reads waited for {read_when} of {total} rows' check"


async def test_an_upload_that_fails_half_way_shows_nothing_and_the_reaper_clears_it(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Recipients are stored a batch a transaction (100,000 in one held the database ~2 s); a
    creation failing after some batches answers 503, lists nothing, and the reaper's next
    pass removes what it stored."""
    monkeypatch.setattr(campaign_programs, "STAGE_ROWS", 4)
    real_stage = campaign_programs.stage_recipients
    stored: list[str] = []

    def disk_full() -> Iterator[Any]:  # a program that fails as the database runs it
        yield from ()
        raise sqlite3.OperationalError("database or disk is full")

    def stage(*args: Any, **kwargs: Any) -> Any:
        stored.append(args[1].campaign_id)
        return disk_full() if args[2] == 8 else real_stage(*args, **kwargs)

    monkeypatch.setattr(campaign_programs, "stage_recipients", stage)
    recipients = [{"phone_number": f"+1415{2_000_000 + i:07d}"} for i in range(10)]
    for _ in range(2):  # two such uploads (an outage fails many): one pass clears them all
        resp = await client.post("/campaigns", json={"name": "half", "recipients": recipients})
        assert resp.status == 503, await resp.text()
    assert len(stored) == 6 and len(set(stored)) == 2  # two batches stored, the third failed
    assert (await (await client.get("/campaigns")).json())["campaigns"] == []
    store = client.app[STORE]
    for campaign_id in set(stored):
        assert len(await store.list_recipients(campaign_id, state=None, limit=99, after=None)) == 8
    with caplog.at_level("INFO"):
        await client.app[CALLS].reap()
    for campaign_id in set(stored):
        assert await store.list_recipients(campaign_id, state=None, limit=99, after=None) == []
    assert "removed 16 recipient(s) stored by campaign uploads that did not finish" in caplog.text


async def test_campaign_uploads_take_turns(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One upload at a time is read, checked and stored; the others wait their turn, their
    bodies unread (a 100,000-row CSV takes the server to ~470 MB: a handful at once could
    get it killed for memory), for UPLOAD_TURN_WAIT_S at most (429), or until a stop (503)."""
    turns = client.app[UPLOAD_TURNS]
    body = {"name": "turns", "recipients": [{"phone_number": "+14155557700"}]}
    await turns.acquire()  # another upload is being created
    waiting = asyncio.create_task(client.post("/campaigns", json=body))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    turns.release()
    assert (await waiting).status == 201  # its turn came

    monkeypatch.setattr(campaigns_handlers, "UPLOAD_TURN_WAIT_S", 0.2)
    await turns.acquire()
    try:
        resp = await client.post("/campaigns", json=body)
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "10"
        # A large body still being sent gets its 429 too (its body read and dropped), not a
        # connection closed under it; the connection stays usable.
        rows = "phone_number\n" + "".join(f"+1415{2_000_000 + i:07d}\n" for i in range(400_000))

        async def sent_slowly() -> AsyncIterator[bytes]:
            raw = rows.encode()
            for start in range(0, len(raw), 256 * 1024):
                yield raw[start : start + 256 * 1024]
                await asyncio.sleep(0.01)

        big = await client.post(
            "/campaigns?name=big", data=sent_slowly(), headers={"Content-Type": "text/csv"}
        )
        assert big.status == 429 and "Connection" not in big.headers
        assert "this one was not created; send it again" in (await resp.json())["error"]
        monkeypatch.setattr(campaigns_handlers, "UPLOAD_TURN_WAIT_S", 60.0)
        waiting = asyncio.create_task(client.post("/campaigns", json=body))
        await asyncio.sleep(0.3)
        client.app[BODY_READS].stop()  # the server stops: the waiting upload is told at once
        stopped = await waiting
        assert stopped.status == 503 and stopped.headers["Retry-After"] == "1"
    finally:
        turns.release()
    listed = (await (await client.get("/campaigns")).json())["campaigns"]
    assert len(listed) == 1  # the refused ones were never created


async def test_a_database_failing_a_calls_end_for_its_campaign_is_one_line(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The database lost as a campaign call's end is written to its attempt (probe AY: a
    PostgreSQL connection terminated under load) is an outage, not a defect: one ERROR line
    a minute, with no traceback, and the event is given again until the attempt ends. Before,
    every failed try logged a traceback of its own."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    store = client.app[STORE]
    unreachable = DatabaseError("database unreachable (ConnectionDoesNotExistError)")
    flaky = FailingFirst(store.finish_call_attempt, 4, unreachable)
    store.finish_call_attempt = flaky
    recipients = [{"phone_number": us(n, "7700")} for n in range(3)]
    created = await create(client, {"name": "flaky end", "recipients": recipients})
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=30)
    assert campaign["counts"]["completed"] == 3 and flaky.failures == 4
    said = [r for r in caplog.records if "in subscriber campaigns" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # once a minute, not per try
    assert said[0].levelname == "ERROR" and said[0].exc_info is None
    assert "database unreachable" in said[0].getMessage()


def test_a_row_open_at_its_start_is_pending_whatever_its_microsecond() -> None:
    # A start whose float rounds up to the microsecond (as 1 in 3 do) read its own instant
    # as the window's later opening: the row was stored waiting_window, due at once.
    start = 1796234400.2961836  # 18:00 UTC on a Wednesday: 10:00 in California
    assert dt.datetime.fromtimestamp(start, dt.UTC).timestamp() > start
    body = {"name": "n", "window": {"start": "09:00", "end": "20:00"}}
    rules = RequestRules()
    options = parse_options(body, rules, start)
    checker = RowChecker(options.spec, rules, start, enforce_hours=True)
    checker.check(Row(2, "", {"phone_number": "+14155557700"}), keep_invalid=False)
    assert [(r.state, r.next_at) for r in checker.recipients] == [("pending", None)]


async def test_a_call_recorded_but_not_dialled_when_its_campaign_is_paused_is_not_dialled(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /campaigns/{id}/pause answered while one of its calls was recorded, its agent's
    dispatch on its way (LiveKit a moment slow): the number was dialled after the 200 all the
    same (BS), though pause says no new call is placed. It is not dialled: nobody is called,
    the attempt shows not_dialled (it does not count), and the recipient is called on
    resume."""
    client, campaign_id, dispatch = await one_call_slow_to_dispatch(
        start_app, monkeypatch, {"on": [], "max_attempts": 1}
    )
    sandbox = client.app[SANDBOX]
    await paused_before_its_dial(client, campaign_id, dispatch)
    await asyncio.sleep(0.5)  # the driver would place it again by now, were it still running
    assert sandbox.dials == []
    (row,) = await all_recipients(client, campaign_id)
    assert [a["status"] for a in row["attempts"]] == ["not_dialled"]
    assert (await client.post(f"/campaigns/{campaign_id}/resume")).status == 200
    await wait_status(client, campaign_id, "completed", timeout=30)
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "completed"
    assert [d.number for d in sandbox.dials] == ["+14152007700"]


async def test_pausing_again_and_again_before_a_dial_never_fails_the_recipient(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign paused and resumed while its call was recorded and not dialled yet, again
    and again: each pause's not_dialled counted towards the limit meant for LiveKit refusing
    (10), and the recipient ended `failed` though nobody was ever called and the user had
    only paused (here with the limit at 3). It is due again on each resume, and called."""
    monkeypatch.setattr(campaign_programs, "MAX_NOT_DIALLED", 3)
    client, campaign_id, dispatches = await one_call_slow_to_dispatch(
        start_app, monkeypatch, {"on": [], "max_attempts": 1}, held=4
    )  # each placing held before its dial
    sandbox = client.app[SANDBOX]
    for n in range(1, 5):

        async def recorded(n: int = n) -> bool:
            (row,) = await all_recipients(client, campaign_id)
            return len([a for a in row["attempts"] if a["call_id"]]) == n

        await wait_for(recorded, timeout=30)
        assert (await client.post(f"/campaigns/{campaign_id}/pause")).status == 200
        dispatches.release()

        async def ended(n: int = n) -> bool:
            (row,) = await all_recipients(client, campaign_id)
            return len(row["attempts"]) == n and row["attempts"][-1]["status"] is not None

        await wait_for(ended, timeout=10)
        (row,) = await all_recipients(client, campaign_id)
        assert row["state"] == "pending", row
        assert (await client.post(f"/campaigns/{campaign_id}/resume")).status == 200
    await wait_status(client, campaign_id, "completed", timeout=30)
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "completed"
    assert [a["status"] for a in row["attempts"]] == ["not_dialled"] * 4 + ["completed"]
    assert [d.number for d in sandbox.dials] == ["+14152007700"]


async def test_the_estimated_finish_counts_only_the_hours_its_window_is_open(
    start_app: AppFactory,
) -> None:
    """200 Californian numbers at 0.01 calls/s (5.5 hours of calls), 09:00-17:00 in their
    time, from 14:00 there: 3 hours that day, the rest the next morning. The estimate was
    19:31:40 in California, after the window closed (BS); it is 11:31:40 the next day."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    answer = await create(
        client,
        {
            "name": "nine to five",
            "recipients": [{"phone_number": us(n, "7750")} for n in range(200)],
            "pacing": {"calls_per_second": 0.01},
            "window": {"start": "09:00", "end": "17:00", "timezone": "recipient"},
            "start_at": "2026-12-03T22:00:00Z",  # Thursday 14:00 in California
        },
    )
    campaign = answer["campaign"]
    assert campaign["status"] == "scheduled"
    assert campaign["next_call_at"] == "2026-12-03T22:00:00.000Z"
    assert campaign["estimated_finish_at"] == "2026-12-04T19:31:40.000Z"
    shown = await campaign_of(client, answer["campaign_id"])
    assert shown["estimated_finish_at"] == "2026-12-04T19:31:40.000Z"


@pytest.mark.parametrize(("enforce", "finish"), [(True, "19:31:40"), (False, "17:31:40")])
async def test_the_estimated_finish_counts_the_calling_hours_floor(
    start_app: AppFactory, enforce: bool, finish: str
) -> None:
    """200 Californian numbers at 0.01 calls/s (5.5 hours of calls), window 07:00-22:00 in
    their time, from 19:00 there. No call goes out after 21:00 nor before 08:00 there
    (CAMPAIGN_ENFORCE_CALLING_HOURS=1), but the estimate counted the window alone: 09:31:40
    the next day, two hours before the last call. It is 11:31:40 (09:31:40 with the floor
    off), in every answer that shows the campaign."""
    client = await start_app(
        sandbox_time_scale=0.0,
        campaign_clock=ShiftedClock(OPEN_EVERYWHERE),
        campaign_enforce_calling_hours=enforce,
        **FAST,
    )
    answer = await create(
        client,
        {
            "name": "seven to ten",
            "recipients": [{"phone_number": us(n, "7750")} for n in range(200)],
            "pacing": {"calls_per_second": 0.01},
            "window": {"start": "07:00", "end": "22:00", "timezone": "recipient"},
            "start_at": "2026-12-04T03:00:00Z",  # Thursday 19:00 in California
        },
    )
    expected = f"2026-12-04T{finish}.000Z"
    assert answer["campaign"]["estimated_finish_at"] == expected
    assert (await campaign_of(client, answer["campaign_id"]))["estimated_finish_at"] == expected
    listed = (await (await client.get("/campaigns")).json())["campaigns"]
    assert [c["estimated_finish_at"] for c in listed] == [expected]


async def test_a_campaign_without_start_at_is_running_from_its_creation(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It starts at once: its create answer and a GET said `scheduled` (with no started_at)
    until the scheduler's next tick. Its campaign.started event is sent once all the same."""
    from collections.abc import Generator

    from common.storage.programs import Query
    from common.storage.sql import SqlCallStore

    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    scheduler = client.app[CAMPAIGNS].scheduler
    ticks = asyncio.Event()
    claim = scheduler._claim

    async def held_claim() -> None:  # the scheduler's next tick comes when the test says
        await ticks.wait()
        await claim()

    monkeypatch.setattr(scheduler, "_claim", held_claim)
    await asyncio.sleep(0.05)  # a tick under way when the patch came ends first
    answer = await create(client, {"name": "now", "recipients": [{"phone_number": us(0, "7760")}]})
    campaign_id = answer["campaign_id"]
    assert answer["campaign"]["status"] == "running"
    assert answer["campaign"]["started_at"] is not None
    assert (await campaign_of(client, campaign_id))["status"] == "running"
    ticks.set()
    await wait_status(client, campaign_id, "completed")

    def started() -> Generator[Query, Any, Any]:
        rows = yield Query(
            "SELECT type FROM outbox WHERE call_id = ? AND type = 'campaign.started'",
            (campaign_id,),
        )
        return rows

    assert len(await cast(SqlCallStore, client.app[STORE])._run(started(), write=False)) == 1


async def test_a_window_that_can_never_open_any_more_ends_its_recipient_invalid(
    start_app: AppFactory,
) -> None:
    """A campaign calling 06:00-07:59 in New York, made while CAMPAIGN_ENFORCE_CALLING_HOURS
    was off, its recipient waiting for the next morning; then the server restarts with it on.
    The window now never opens: the recipient was deferred a day at a time for good and the
    campaign never completed. It ends `invalid`, saying why, and the campaign completes."""
    # A Wednesday 15:00 UTC: 10:00 in New York, the window closed until 06:00 tomorrow.
    clock = ShiftedClock(dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC).timestamp())
    client = await start_app(
        sandbox_time_scale=0.0,
        campaign_clock=clock,
        campaign_enforce_calling_hours=False,
        **FAST,
    )
    created = await create(
        client,
        {
            "name": "early birds",
            "recipients": [{"phone_number": "+12125557700"}],
            "window": {"start": "06:00", "end": "07:59", "timezone": "America/New_York"},
        },
    )
    campaign_id = created["campaign_id"]
    assert created["campaign"]["counts"]["waiting_window"] == 1
    await client.close()
    clock.move_to(dt.datetime(2026, 12, 3, 11, 0, 1, tzinfo=dt.UTC).timestamp())  # 06:00
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    campaign = await wait_status(client, campaign_id, "completed", timeout=10)
    assert campaign["counts"]["invalid"] == 1, campaign["counts"]
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "invalid"
    assert row["errors"] == [
        {
            "field": "phone_number",
            "error": "is never inside the calling window in its time zones (America/New_York):"
            " calls are kept within 08:00-21:00 local time (CAMPAIGN_ENFORCE_CALLING_HOURS)",
        }
    ]
    assert client.app[SANDBOX].dials == []


async def test_a_campaign_created_just_before_the_clock_steps_back_goes_on(
    start_app: AppFactory,
) -> None:
    """The server's clock stepped back an hour (NTP) just after a campaign was created: its
    start_at and its recipients' first due time, read on the clock before the step, were an
    hour ahead, and the campaign placed no further call for that hour. It goes on at its
    pace, and shows its next call now, not an hour on."""
    clock = ShiftedClock(OPEN_EVERYWHERE + 3600)  # 11:00 in California
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "created, then stepped back",
            "recipients": [{"phone_number": us(n, "7700")} for n in range(3)],
            "pacing": {"calls_per_second": 1},
        },
    )
    # The clock stands still until the step: however slow the machine, only the first
    # recipient is dialled before it (the others were due a second or two on, an hour ahead
    # once it steps back), so the two left tell a campaign going on from one stalled.
    clock.freeze()

    async def dialled(n: int) -> bool:
        return len(client.app[SANDBOX].dials) >= n

    await wait_for(lambda: dialled(1), timeout=10)
    assert len(client.app[SANDBOX].dials) == 1
    clock.move_to(OPEN_EVERYWHERE)  # an hour back

    async def next_call_before_its_start() -> bool:
        campaign = await campaign_of(client, created["campaign_id"])
        return bool(campaign["next_call_at"] < campaign["start_at"])

    await wait_for(next_call_before_its_start, timeout=10)
    await wait_for(lambda: dialled(3), timeout=15)
    await wait_status(client, created["campaign_id"], "completed", timeout=15)


async def test_json_logs_carry_the_campaign_as_a_field(
    start_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON logs carried `call_id` as a field, never the campaign: an operator filtering last
    night's list by `campaign_id` found none of its lines (its start, its calls, its end)."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(dataclasses.replace(Settings(), log_format="json"))
    try:
        body = {"name": "Night list", "recipients": [{"phone_number": us(0, "7700")}]}
        campaign_id = (await create(client, body))["campaign_id"]
        await wait_status(client, campaign_id, "completed", timeout=10)
        err: list[str] = []

        async def said_completed() -> bool:
            err.append(capsys.readouterr().err)
            return f"campaign {campaign_id} (Night list) completed" in "".join(err)

        await wait_for(said_completed, timeout=5)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    docs = [json.loads(line) for line in "".join(err).splitlines() if line]
    naming = [d for d in docs if campaign_id in d["msg"]]
    assert any("completed" in d["msg"] for d in naming), naming
    assert all(d.get("campaign_id") == campaign_id for d in naming), naming
