"""Space freed on a full disk under calls.db is what the server writes into next, and its
taking writes again is said.

Found on a 2 MB tmpfs holding calls.db and config.json under 30 calls a go: every write of
the server since start-up was in calls.db-wal (SQLite empties it into calls.db only at 4 MB),
calls.db 4 KiB; the log filled the disk, each write then failed 'database or disk is full',
and emptying it (a failed write's checkpoint) needed calls.db to grow by what the log held:
no room. The disk made 2 MB larger, the retried webhooks' and the reaper's writes went into
the log again, which took the whole 2 MB within 35 s, none of it ever in calls.db: still
full, every call 503, 21 calls left dialing (the sandbox gave up their webhooks). Only a
/readyz probe coming first, whose write empties the log beforehand, got it out. And once
writes were taken again, nothing said so ('calls database error: database or disk is full'
once a minute, then silence; only /readyz's 'ready again', when probed), nor how many writes
had failed after that line (1302 in its minute, never counted had it ended within it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import pytest

from tests.conftest import AppFactory
from tests.helpers import held_back_at_stop, warnings_saying
from tests.reliability.test_disk_faults import _fill, _tmpfs
from tests.reliability.test_sqlite_faults import Client, _place, _quiet_app

SAID = "takes writes again"


async def test_space_freed_on_a_full_disk_takes_calls_again(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    with _tmpfs(tmp_path / "mnt", "1m") as mount:
        client = await _quiet_app(
            start_app, calls_db_path=mount / "calls.db", calls_rate_limit_per_min=100_000
        )
        try:
            await _fill_and_free(client, mount)
        finally:
            await client.close()  # before the tmpfs goes
    said = warnings_saying(caplog, SAID)
    assert len(said) == 1, said
    held = r"\(writes failed on its disk for \d+ s; [1-9]\d* more failure\(s\) held back"
    assert re.search(rf"calls database \S+calls\.db {SAID} {held}", said[0]), said[0]


async def _filled_until_refused(client: Client, mount: Path) -> Path:
    """The disk filled (the file that fills it) until a call is refused."""
    filler = _fill(mount)
    for _ in range(20):  # SQLite may still find room in pages it already has
        if (await _place(client, name="No Room")).status == 503:
            return filler
    raise AssertionError("the full disk refused no call")


async def _fill_and_free(client: Client, mount: Path) -> None:
    """A call placed, the disk filled until calls are refused, then 512 KiB freed: 20 calls."""
    assert (await _place(client, name="Before")).status == 200
    filler = await _filled_until_refused(client, mount)
    for _ in range(2):  # failures after the first line: held back, counted at the end
        assert (await _place(client, name="No Room")).status == 503
    # A write that changes nothing fits on the full disk (as the campaign scheduler's poll
    # does each second): no sign of room. Taken for one, the log said 'takes writes again'
    # and the failure after it at once, a pair of lines a second on a full 2 MB tmpfs.
    # (Sharing its transaction with a write that needs room, the dispatcher's retried mark
    # of the first call's event, it fails with it: 503, as a loaded machine saw. Asked
    # again until it goes through alone.)
    unlisted = [(await client.delete("/dnc/+14155550100")).status]
    while unlisted[-1] == 503 and len(unlisted) < 20:
        await asyncio.sleep(0.05)
        unlisted.append((await client.delete("/dnc/+14155550100")).status)
    assert unlisted[-1] == 404, unlisted
    assert (await _place(client, name="No Room")).status == 503
    # Freed: less than the log takes before SQLite's own checkpoint (4 MB), more than
    # the calls below and what calls.db needs of the log.
    os.truncate(filler, filler.stat().st_size - 512 * 1024)
    placed = [(await _place(client, name="Room Again")).status for _ in range(20)]
    assert placed == [200] * 20, " ".join(map(str, placed))


async def test_a_small_disk_filled_by_others_takes_calls_in_the_little_freed(
    start_app: AppFactory, tmp_path: Path
) -> None:
    """The disk filled by other files: every write since start-up was still in the log (no
    checkpoint under 4 MB of it), which the failed write's checkpoint could not empty into
    a calls.db with no room to grow, nor could the next writes once 128 KiB were freed: as
    long as the log held more than the room freed, every call was refused. Now, with less
    than 16 MB free on its device (looked at once a second), each write empties the log
    first: what fills the disk is in calls.db, and the room freed takes calls."""
    with _tmpfs(tmp_path / "mnt", "1m") as mount:
        client = await _quiet_app(
            start_app, calls_db_path=mount / "calls.db", calls_rate_limit_per_min=100_000
        )
        try:
            assert (await _place(client, name="Before")).status == 200
            filler = await _filled_until_refused(client, mount)
            os.truncate(filler, filler.stat().st_size - 128 * 1024)
            placed = [(await _place(client, name="Room Again")).status for _ in range(3)]
            assert placed == [200] * 3, " ".join(map(str, placed))
        finally:
            await client.close()


async def test_failed_writes_held_back_when_the_server_stops_are_said(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk under calls.db still full as the server stops: the first refused write
    said, the others held back within its minute and never counted (README has those of
    the database still failing at the stop said then, as PostgreSQL's, LiveKit's and
    config.json's are: SQLite's were not)."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    with _tmpfs(tmp_path / "mnt", "1m") as mount:
        client = await _quiet_app(
            start_app, calls_db_path=mount / "calls.db", calls_rate_limit_per_min=100_000
        )
        try:
            assert (await _place(client, name="Before")).status == 200
            await _filled_until_refused(client, mount)
            for _ in range(2):  # held back within the first line's minute
                assert (await _place(client, name="No Room")).status == 503
        finally:
            await client.close()  # the server stops, the disk still full
    line = held_back_at_stop(caplog)
    said = r"^calls database \S+calls\.db \(writes failing on its disk\): [2-9]\d* more failure"
    assert re.search(said, line), line
