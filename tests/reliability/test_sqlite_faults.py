"""Calls-database faults: a locked database, a full disk, a statement failing half-way through a
transaction, and the database failing around a LiveKit call. Each request answers 503 (or, once
LiveKit has the call, the truth), nothing is half-written, and the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from common.calls.outcomes import GRACE_OVER
from common.storage import sqlite as sqlite_store
from common.storage.base import DatabaseError, DatabaseStalled
from common.storage.sqlite import SqliteCallStore
from handlers.keys import STORE
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import config_forgets
from tests.integration.test_webhooks import event_json, line_joins, sign
from tests.processes import SERVER_LAUNCHER, ServerProcess
from tests.reliability.conftest import Figures
from tests.reliability.test_disk_faults import _fill, _tmpfs

Client = TestClient[Any, Any]
CALL = {"phone_number": "+14155550142", "name": "Db Fault", "language": "en", "emotion": "Calm"}
DISK_FULL = "database or disk is full"
LOCKED = "calls database unavailable: locked by another process"
STALLED = "calls database unavailable: it did not answer in time"


class FailingConnection:
    """Wraps the app's sqlite3 connection; statements `fails(sql, params)` picks raise `error`.

    Transactions (BEGIN/COMMIT/ROLLBACK) pass through, so a failure in the middle of one shows
    whether the store rolls everything back.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        fails: Callable[[str, tuple[Any, ...]], bool],
        error: str = DISK_FULL,
        times: int | None = None,
    ) -> None:
        self._conn = conn
        self._fails = fails
        self._error = error
        self._times = times
        self.failures = 0

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        more = self._times is None or self.failures < self._times
        if more and self._fails(sql, tuple(params)):
            self.failures += 1
            raise sqlite3.OperationalError(self._error)
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _fail_on(
    db: SqliteCallStore, fails: Callable[[str, tuple[Any, ...]], bool], times: int | None = None
) -> FailingConnection:
    real = db.conn
    failing = FailingConnection(real, fails, times=times)
    db._conn = failing  # type: ignore[assignment]
    return failing


def _heal(db: SqliteCallStore, failing: FailingConnection) -> None:
    db._conn = failing._conn


def event_kind(kind: str) -> Callable[[str, tuple[Any, ...]], bool]:
    """The INSERT of a timeline event of this kind: the last statement of its transaction."""
    return lambda sql, params: sql.startswith("INSERT INTO events") and params[2] == kind


def _config_calls(path: Path) -> dict[str, Any]:
    calls: dict[str, Any] = json.loads(path.read_text())["calls"]
    return calls


def _dials(client: Client) -> int:
    return sum(r.method == "CreateSIPParticipant" for r in client.app[SANDBOX].requests)


async def _place(client: Client, **changes: str) -> Any:
    return await client.post("/calls/outbound", json=dict(CALL, **changes))


async def _call(client: Client, call_id: str) -> dict[str, Any]:
    call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
    return call


async def _webhook(client: Client, body: bytes) -> int:
    resp = await client.post(
        "/webhooks/livekit",
        data=body,
        headers={"Authorization": sign(body), "Content-Type": "application/webhook+json"},
    )
    return resp.status


async def _still_serving(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    resp = await _place(client, name="After")
    assert resp.status == 200, await resp.text()


async def _quiet_app(start_app: AppFactory, **overrides: Any) -> Client:
    """The app with a sandbox that posts no webhooks: the test posts the ones it needs."""
    client = await start_app(sandbox_time_scale=100.0, **overrides)
    client.app[SANDBOX].webhook_url = None
    return client


async def test_database_locked_by_another_writer(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    # The app waits 5 s for a lock; a test need not wait that long to see it give up.
    await db._submit(db.conn.execute, "PRAGMA busy_timeout=200")
    first = (await (await _place(client)).json())["call_id"]
    await line_joins(client, first)
    before = await _call(client, first)
    dials = _dials(client)

    other = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        resp = await _place(client, name="Locked Out")
        assert resp.status == 503
        assert (await resp.json())["error"] == LOCKED
        assert resp.headers["Retry-After"] == "2"  # when to try again, as a 429 says
        finished = event_json("room_finished", first)
        assert await _webhook(client, finished) == 503  # LiveKit retries it later
        # Reads still work while a writer holds the lock (WAL): the server keeps serving.
        assert await _call(client, first) == before
        listed = (await (await client.get("/calls")).json())["calls"]
        assert [c["call_id"] for c in listed] == [first]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _dials(client) == dials
    assert list(_config_calls(tmp_path / "config.json")) == [first]  # no record for the refused
    assert await _webhook(client, finished) == 200  # LiveKit's retry, once the lock is gone
    assert (await _call(client, first))["status"] == "no_answer"
    await _still_serving(client)
    figures.add("locked: POST 503, webhook 503 then applied on retry, reads served meanwhile")


@pytest.mark.parametrize("error", [DISK_FULL, "database is locked"])
async def test_insert_failing_half_way_writes_nothing(
    start_app: AppFactory, tmp_path: Path, error: str
) -> None:
    """The call row is inserted, then its first timeline event fails: both must roll back."""
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    failing = _fail_on(db, event_kind("created"))
    failing._error = error
    resp = await _place(client)
    assert resp.status == 503
    assert failing.failures == 1
    _heal(db, failing)
    assert (await (await client.get("/calls")).json())["calls"] == []
    assert _dials(client) == 0
    assert _config_calls(tmp_path / "config.json") == {}
    await _still_serving(client)


async def test_webhook_failing_half_way_changes_nothing(start_app: AppFactory) -> None:
    """The status UPDATE runs, then the event INSERT fails: the status must not move."""
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    call_id = (await (await _place(client)).json())["call_id"]
    await line_joins(client, call_id)
    before = await _call(client, call_id)
    failing = _fail_on(db, event_kind("room_finished"))
    body = event_json("room_finished", call_id)
    assert await _webhook(client, body) == 503
    assert failing.failures == 1
    assert await _call(client, call_id) == before
    _heal(db, failing)
    assert await _webhook(client, body) == 200  # the retry applies it exactly once
    after = await _call(client, call_id)
    assert after["status"] == "no_answer"
    assert [e["event"] for e in after["timeline"]].count("room_finished") == 1
    await _still_serving(client)


async def test_failed_commit_does_not_wedge_the_database(start_app: AppFactory) -> None:
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    failing = _fail_on(db, lambda sql, _params: sql == "COMMIT", times=1)
    resp = await _place(client, name="Commit Fails")
    assert resp.status == 503
    assert failing.failures == 1
    _heal(db, failing)
    assert (await client.get("/calls")).status == 200
    await _still_serving(client)  # the next write must work again


async def test_database_failing_after_livekit_dialed_answers_the_call(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    """Once LiveKit is dialing, a 503 would make the client retry and ring the callee twice:
    the answer is the placed call, and its row settles from the webhooks as usual."""
    client = await start_app(sandbox_time_scale=0.01)
    db = client.app[STORE]
    failing = _fail_on(db, event_kind("dialed"))
    resp = await _place(client)
    _heal(db, failing)
    assert failing.failures == 1
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "success" and answer["call_status"] == "dialing"
    assert _dials(client) == 1
    await client.app[SANDBOX].wait_idle(10)
    call = await _call(client, answer["call_id"])
    assert call["status"] == "completed"
    assert await config_forgets(tmp_path / "config.json") == {}
    figures.add("db fails after the dial: 200 with the call id, 1 dial, settles completed")


async def test_a_room_finished_sent_again_settles_the_call_its_first_left_live(
    start_app: AppFactory,
) -> None:
    """An unanswered call's room_finished is two writes: the event (its line, the room's end),
    then the settle (no_answer). With the settle refused (a full disk, a lock) after the event
    was stored, the answer is 503 and LiveKit sends it again; that second one was a duplicate
    and changed nothing, so the call stayed `dialing` (counted live, against
    CALLS_MAX_ACTIVE) until the reaper's next pass (found as a flaky full-disk test). Sent
    again several times at once, it is settled once: one line of its end."""
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    first = (await (await _place(client)).json())["call_id"]
    joined = event_json("participant_joined", first, attributes={"sip.callStatus": "dialing"})
    assert await _webhook(client, joined) == 200
    finished = event_json("room_finished", first)
    failing = _fail_on(db, event_kind(GRACE_OVER), times=1)
    try:
        assert await _webhook(client, finished) == 503
    finally:
        _heal(db, failing)
    assert failing.failures == 1
    assert (await _call(client, first))["status"] == "dialing"  # the event stored, not settled
    # Sent again, several times at once (LiveKit's retry, a proxy's): settled once.
    answers = await asyncio.gather(*(_webhook(client, finished) for _ in range(4)))
    assert answers == [200] * 4
    call = await _call(client, first)
    assert call["status"] == "no_answer"
    lines = [entry["event"] for entry in call["timeline"]]
    assert lines.count("room_finished") == 1 and lines.count(GRACE_OVER) == 1, lines


async def test_database_failing_when_livekit_refuses(start_app: AppFactory, tmp_path: Path) -> None:
    """LiveKit refuses and the failure cannot be recorded: the client still learns it was
    LiveKit, and the call's config record is removed all the same."""
    client = await _quiet_app(start_app)
    client.app[SANDBOX].inject(
        "CreateSIPParticipant", error=TwirpError("unavailable", "sip service down")
    )
    db = client.app[STORE]
    failing = _fail_on(db, event_kind("placement_failed"))
    resp = await _place(client)
    _heal(db, failing)
    assert failing.failures == 1
    assert resp.status == 503
    assert "LiveKit did not place the call" in (await resp.json())["error"]
    assert _config_calls(tmp_path / "config.json") == {}
    assert _dials(client) == 1
    client.app[SANDBOX].faults.clear()
    await _still_serving(client)


async def test_real_full_disk_under_the_database(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    with _tmpfs(tmp_path / "mnt", "1m") as mount:
        client = await _quiet_app(start_app, calls_db_path=mount / "calls.db")
        first = (await (await _place(client)).json())["call_id"]
        joined = event_json("participant_joined", first, attributes={"sip.callStatus": "dialing"})
        assert await _webhook(client, joined) == 200
        before = await _call(client, first)
        filler = _fill(mount)
        refused = 0
        for _ in range(5):  # SQLite may still find room in pages it already has
            resp = await _place(client, name="No Room")
            if resp.status == 503:
                refused += 1
                assert (await resp.json())["error"] == "calls database unavailable"
        assert refused > 0
        # A webhook sent again (its first answer lost) is answered as applied: it writes
        # nothing, in whatever room the refused writes' emptied log left (filled too).
        (mount / "more").mkdir()
        more = _fill(mount / "more")
        assert await _webhook(client, joined) == 200
        more.unlink()
        finished = event_json("room_finished", first)
        assert await _webhook(client, finished) in (200, 503)
        filler.unlink()
        assert await _webhook(client, finished) == 200
        assert (await _call(client, first))["status"] == "no_answer"
        assert before["status"] == "dialing"
        rows = (await (await client.get("/calls?limit=500")).json())["calls"]
        placed = [r for r in rows if r["name"] == "No Room"]
        assert len(placed) == 5 - refused
        records = await config_forgets(tmp_path / "config.json", first)
        assert sorted(records) == sorted(r["call_id"] for r in placed)  # none for the refused
        await _still_serving(client)
        await client.close()
    figures.add(f"real full disk under calls.db: {refused}/5 calls refused with 503, rest placed")


async def test_a_database_removed_under_the_server_says_to_restart_it(
    start_app: AppFactory, tmp_path: Path
) -> None:
    """No retry of a request can succeed until the server is restarted: its 503 says so and
    gives no Retry-After (probe AU: `Retry-After: 2`, while /readyz said to restart)."""
    client = await _quiet_app(start_app)
    (tmp_path / "calls.db").unlink()
    resp = await _place(client, name="Gone Database")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error.startswith("calls database unavailable: ") and "restart the server" in error
    assert str(tmp_path) not in error  # the log names the file, not the answer
    assert "Retry-After" not in resp.headers


async def test_a_database_moved_and_linked_to_under_the_server_is_refused(
    start_app: AppFactory, tmp_path: Path
) -> None:
    """calls.db moved away and a symbolic link to it put in its place: the link stats as the
    same file, and writes went on (200) into a log named calls.db-wal, which a restart,
    opening the link's target, never reads (measured: 'no such table', every call gone
    after a crash). Now the next write is refused, saying to restart."""
    client = await _quiet_app(start_app)
    assert (await _place(client, name="Before The Move")).status == 200
    (tmp_path / "calls.db").rename(tmp_path / "moved.db")
    (tmp_path / "calls.db").symlink_to("moved.db")
    resp = await _place(client, name="After The Move")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error.startswith("calls database unavailable: ") and "restart the server" in error
    assert (await client.get("/readyz")).status == 503


def _store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "common.storage.sqlite"]


HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextlib.asynccontextmanager
async def _another_process(
    script: str, db: Path, ready: str
) -> AsyncIterator[subprocess.Popen[str]]:
    """`script` run on `db` by another process of this interpreter, once it printed `ready`
    (it holds what it holds until its stdin closes: `_let_go`); killed if it still runs as
    the body ends."""
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.to_thread(proc.stdout.readline) == f"{ready}\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


async def _let_go(proc: subprocess.Popen[str]) -> None:
    """The other process lets go of what it holds, and ends well."""
    assert proc.stdin is not None
    proc.stdin.close()
    assert await asyncio.to_thread(proc.wait, 10) == 0


async def test_a_database_locked_by_another_process_answers_at_once_and_recovers(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """calls.db locked by another process (`sqlite3 calls.db` with `BEGIN EXCLUSIVE;` open, a
    backup tool): once a write has waited the busy timeout, the requests after it are
    answered 503 at once, not each after the busy timeout of every one before it (6 calls:
    503 after 5, 15, 15, 20, 25, 25 s); the log says who holds it, and that it is back."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    busy_s = 2.0  # the app's 5 s, shorter: the test sees the difference all the same
    await db._submit(db.conn.execute, f"PRAGMA busy_timeout={int(busy_s * 1000)}")
    async with _another_process(HOLD_LOCK, tmp_path / "calls.db", "held") as holder:
        first = await _place(client, name="First")  # waits the busy timeout once
        assert first.status == 503
        started = time.monotonic()
        answers = await asyncio.gather(*(_place(client, name=f"Next {n}") for n in range(6)))
        elapsed = time.monotonic() - started
        assert [a.status for a in answers] == [503] * 6
        for answer in answers:
            assert (await answer.json())["error"] == LOCKED
            assert answer.headers["Retry-After"] == "2"
        assert elapsed < busy_s * 0.75, elapsed  # none waited its turn's busy timeout
        said = [m for m in _store_lines(caplog) if "is locked by" in m]
        assert len(said) == 1, said
        assert f"pid {holder.pid} (python" in said[0]
        await _let_go(holder)
    await _still_serving(client)  # it recovered by itself
    back = [m for m in _store_lines(caplog) if "takes writes again" in m]
    assert len(back) == 1, back


class StallingConnection:
    """Wraps the app's sqlite3 connection: its next INSERT of a call blocks until `go` is
    set, as a write to a stalled disk (an NFS server gone, a dying device) never returns."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.stalled = threading.Event()
        self.go = threading.Event()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO calls ") and not self.stalled.is_set():
            self.stalled.set()
            self.go.wait(30)
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("read_first", [False, True])
async def test_a_request_of_a_stalled_writes_batch_is_answered_by_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_first: bool
) -> None:
    """The database's thread takes every request queued meanwhile at once. Queued after a
    write that then never returns (a stalled disk), a request was no longer in the queue to
    be answered at QUEUE_WAIT_S; done before it, its answer went back with the batch's: both
    waited as long as the disk did (no answer at all). Now the one after it is answered 503
    by its deadline, and the one done before it gets its answer then."""
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 1.0)
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    busy, free, disk = threading.Event(), threading.Event(), threading.Event()
    try:

        def hold() -> bool:
            busy.set()
            return free.wait(10)

        holding = asyncio.ensure_future(db._submit(hold))
        assert await asyncio.to_thread(busy.wait, 10)
        queued = []
        for read in (read_first, not read_first):  # the read, and the write, in that order
            queued.append(
                asyncio.ensure_future(db.get_call("call-000000000000"))
                if read
                else asyncio.ensure_future(
                    db._submit_to(db._worker, disk.wait, 30, wait_s=sqlite_store.QUEUE_WAIT_S)
                )
            )
            await asyncio.sleep(0.05)
        read_task, stalled = queued if read_first else queued[::-1]
        await asyncio.sleep(0.05)  # both queued while the thread is busy
        free.set()
        await holding
        started = time.monotonic()
        if read_first:
            assert await asyncio.wait_for(read_task, 5) is None  # no such call: its answer
        else:
            with pytest.raises(DatabaseStalled):
                await asyncio.wait_for(read_task, 5)
        assert time.monotonic() - started < 4
        with pytest.raises(DatabaseStalled):  # its own write never returns: by its deadline
            await asyncio.wait_for(stalled, 5)
        assert time.monotonic() - started < 4
    finally:
        free.set()
        disk.set()
    await db.close()


async def test_a_shorter_deadline_is_kept_though_the_watch_waits_for_a_longer_one(
    tmp_path: Path,
) -> None:
    """One timer watches a database thread's deadlines, armed for the earliest pending: a
    request with a shorter wait than one queued before it is answered by its own deadline,
    not the other's."""
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    free = threading.Event()
    try:
        held = asyncio.ensure_future(db._submit_to(db._worker, free.wait, 30, wait_s=30.0))
        await asyncio.sleep(0.05)  # the thread runs it: the disk stalls
        patient = asyncio.ensure_future(db._submit_to(db._worker, time.time, wait_s=20.0))
        started = time.monotonic()
        with pytest.raises(DatabaseStalled):
            await asyncio.wait_for(db._submit_to(db._worker, time.time, wait_s=0.3), 5)
        assert time.monotonic() - started < 4
        assert not patient.done()
    finally:
        free.set()
    assert await held and await patient
    await db.close()


async def test_a_write_begun_just_before_its_deadline_is_given_its_whole_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that waited its turn almost QUEUE_WAIT_S (a busy moment, not a stalled disk)
    and then took a little while was answered 503 'did not answer in time' as its write
    committed a moment later: its client, told to retry, placed it twice. Once begun, a
    request is answered so only if it has not returned QUEUE_WAIT_S after it began."""
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 1.0)
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    busy, free = threading.Event(), threading.Event()
    try:

        def hold() -> bool:
            busy.set()
            return free.wait(10)

        def slow_write() -> str:
            time.sleep(0.6)  # begun at 0.8 s of its 1 s wait: ends at 1.4 s
            return "written"

        holding = asyncio.ensure_future(db._submit(hold))
        assert await asyncio.to_thread(busy.wait, 10)
        write = asyncio.ensure_future(
            db._submit_to(db._worker, slow_write, wait_s=sqlite_store.QUEUE_WAIT_S)
        )
        await asyncio.sleep(0.8)
        free.set()
        await holding
        assert await asyncio.wait_for(write, 5) == "written"
    finally:
        free.set()
    await db.close()


async def test_a_stalled_disk_under_the_database_holds_requests_no_longer_than_its_deadline(
    start_app: AppFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that never returns held every request queued behind it on the database's one
    thread for as long (a client's GET /calls/{id}, a LiveKit webhook, a new call: no answer
    at all). Those that have not begun are answered 503 once they waited QUEUE_WAIT_S."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 1.0)
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    first = (await (await _place(client, name="Placed")).json())["call_id"]
    stalling = StallingConnection(db.conn)
    db._conn = stalling
    try:
        stalled = asyncio.ensure_future(_place(client, name="Stalled"))
        assert await asyncio.to_thread(stalling.stalled.wait, 10)
        started = time.monotonic()
        behind = await asyncio.gather(*(_place(client, name=f"Behind {n}") for n in range(3)))
        read = await client.get(f"/calls/{first}")
        elapsed = time.monotonic() - started
        assert [r.status for r in behind] == [503] * 3
        assert read.status == 503
        for answer in [*behind, read]:
            assert (await answer.json())["error"] == STALLED
            assert answer.headers["Retry-After"] == "2"
        assert elapsed < 5, elapsed
        said = [m for m in _store_lines(caplog) if "has not answered" in m]
        assert len(said) == 1, said
    finally:
        stalling.go.set()
    assert (await stalled).status == 503  # answered at its deadline (its own write stalled)
    db._conn = stalling._conn
    for _ in range(100):  # its write lands once the disk lets it
        listed = (await (await client.get("/calls")).json())["calls"]
        if len(listed) > 1:
            break
        await asyncio.sleep(0.05)
    assert sorted(c["name"] for c in listed) == ["Placed", "Stalled"]  # none of those refused
    assert list(_config_calls(tmp_path / "config.json")) == [first]  # never dialled: none
    await _still_serving(client)
    back = [m for m in _store_lines(caplog) if "answers again" in m]
    assert len(back) == 1, back


async def test_a_request_whose_own_write_stalls_is_answered_at_its_deadline(
    start_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request whose own write never returns (a stalled disk) had no answer at all, for
    as long as the disk stalled (its client's timeout, or a hang). Now it is answered 503 at
    its deadline like the requests queued behind it; nothing is dialled and its config record
    is taken back. Its row may still land once the disk lets it: a retry under its
    Idempotency-Key then finds the key bound (409, still being placed, nothing dialled), and
    never places a second call."""
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 1.0)
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    stalling = StallingConnection(db.conn)
    db._conn = stalling
    key = {"Idempotency-Key": "stalled-write-1"}
    try:
        stalled = asyncio.ensure_future(client.post("/calls/outbound", json=CALL, headers=key))
        assert await asyncio.to_thread(stalling.stalled.wait, 10)
        started = time.monotonic()
        answer = await asyncio.wait_for(asyncio.shield(stalled), 5)
        assert time.monotonic() - started < 4
        assert answer.status == 503
        assert (await answer.json())["error"] == STALLED
        assert answer.headers["Retry-After"] == "2"
        assert _config_calls(tmp_path / "config.json") == {}  # taken back: not dialled
    finally:
        stalling.go.set()
    db._conn = stalling._conn
    for _ in range(100):  # the write lands once the disk lets it
        listed = (await (await client.get("/calls")).json())["calls"]
        if listed:
            break
        await asyncio.sleep(0.05)
    assert [c["status"] for c in listed] == ["dialing"]
    again = await client.post("/calls/outbound", json=CALL, headers=key)
    assert again.status == 409, await again.text()
    assert len((await (await client.get("/calls")).json())["calls"]) == 1
    dials = [r for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant"]
    assert dials == []
    await _still_serving(client)


async def test_the_server_stops_within_a_bound_while_a_write_stalls(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM while a write never returned (a stalled disk) never finished the stop: the
    database's close waited its turn behind that write, then for its thread, for good (only
    SIGKILL ended the server). Now every step of the stop that needs the database gives up
    at its deadline, and the close leaves the thread to the disk, saying what it abandoned."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 1.0)
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    stalling = StallingConnection(db.conn)
    db._conn = stalling
    try:
        stalled = asyncio.ensure_future(_place(client, name="Stalled"))
        assert await asyncio.to_thread(stalling.stalled.wait, 10)
        assert (await stalled).status == 503
        started = time.monotonic()
        await asyncio.wait_for(client.close(), 15)  # the app's stop, as SIGTERM runs it
        assert time.monotonic() - started < 10
        said = [m for m in _store_lines(caplog) if "as the server stops" in m]
        assert len(said) == 1 and "1 request(s) on it abandoned unfinished" in said[0], said
    finally:
        stalling.go.set()


class StallingCampaign(StallingConnection):
    """As StallingConnection, for the INSERT of a campaign's row (its creation's last write,
    the one that makes it run)."""

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO campaigns ") and not self.stalled.is_set():
            self.stalled.set()
            self.go.wait(30)
        return self._conn.execute(sql, params)


async def test_a_campaign_whose_own_write_stalls_is_not_told_to_send_it_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign's last write (its row: it runs once that lands) stalled past QUEUE_WAIT_S
    was answered 503 'did not answer in time' with Retry-After, and landed once the disk let
    it: the campaign ran, and the retry its client was told to send, without an
    Idempotency-Key, made a second one, every recipient called twice (as a lost COMMIT's
    answer did on PostgreSQL). Its request now waits for that write, and is answered 201."""
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 1.0)
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    stalling = StallingCampaign(db.conn)
    db._conn = stalling
    body = {"name": "stalled", "recipients": [{"phone_number": "+14155557702"}]}
    try:
        creating = asyncio.ensure_future(client.post("/campaigns", json=body))
        assert await asyncio.to_thread(stalling.stalled.wait, 10)
        await asyncio.sleep(2.5)  # past its deadline, its write still held by the disk
        assert not creating.done(), (await creating).status
    finally:
        stalling.go.set()
    answer = await asyncio.wait_for(creating, 10)
    assert answer.status == 201, await answer.text()
    db._conn = stalling._conn
    listed = (await (await client.get("/campaigns")).json())["campaigns"]
    assert [c["campaign_id"] for c in listed] == [(await answer.json())["campaign_id"]]


@pytest.mark.parametrize("side", ["-wal", "-shm"])
async def test_a_log_or_its_index_removed_under_the_server_loses_nothing(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, side: str
) -> None:
    """calls.db-wal deleted under a running server (a 'cleanup' of a large file): SQLite went
    on writing to the unlinked log and answering 200, /readyz ok, while nothing since the last
    checkpoint (every call, on a new server) was in calls.db any more: a crash lost it all,
    and another process opening calls.db got 'disk I/O error'. calls.db-shm deleted (a
    'cleanup' of a stray file): the server went on with the log's index it had mapped,
    answering 200, while another process opening calls.db made a new index and a write lock
    of its own: the call it then wrote (a `sqlite3` shell's insert, committed) was
    overwritten in the log by the server's next write, and nothing said so. Now, for the log,
    the next write copies it into calls.db and refuses itself and every write after it,
    saying to restart (for the index, the log is left whole for the restart to read: see
    test_a_removed_index_loses_no_other_process_write)."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    client = await _quiet_app(start_app)
    first = (await (await _place(client, name="Kept")).json())["call_id"]
    (tmp_path / f"calls.db{side}").unlink()
    resp = await _place(client, name="After It Went")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error.startswith("calls database unavailable: ") and "restart the server" in error
    assert (await client.get("/readyz")).status == 503
    said = [m for m in _store_lines(caplog) if f"{side}" in m and "was removed" in m]
    assert len(said) == 1 and "restart the server" in said[0], said
    # What a crash now would leave: calls.db alone, as another process reads it.
    other = sqlite3.connect(f"{(tmp_path / 'calls.db').as_uri()}?mode=ro", uri=True)
    try:
        kept = [r[0] for r in other.execute("SELECT call_id FROM calls")]
    finally:
        other.close()
    assert kept == [first]


async def _checkpoint(client: Client) -> None:
    """The server's own checkpoint: its log copied into calls.db, as SQLite's every ~4 MB."""
    store = client.app[STORE]
    assert await store._submit(store._empty_wal_sync)


INSERT_AND_LEAVE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("INSERT INTO readiness (instance, at) VALUES ('shell', 1.0)")
conn.close()
print("done", flush=True)
sys.stdin.read()
"""

READ_ALL = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
print(sorted(r[0] for r in conn.execute("SELECT instance FROM readiness")))
print(sorted(r[0] for r in conn.execute("SELECT caller_name FROM calls")), flush=True)
sys.stdin.read()
"""


async def test_a_removed_index_loses_no_other_process_write(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """calls.db-shm deleted, then another process (a `sqlite3` shell) wrote and committed a
    row (into the log, through an index of its own): the server's next write was refused,
    but it first checkpointed and started the log anew through the index it held, which
    did not know that row: the row was gone at the restart, and the CRITICAL line said the
    log "was copied into calls.db". Now the log is left for the restart to read (the row and
    every call kept), and the line says the shared-memory index was removed."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    client = await _quiet_app(start_app)
    db = tmp_path / "calls.db"
    assert (await _place(client, name="Kept")).status == 200
    (tmp_path / "calls.db-shm").unlink()
    async with _another_process(INSERT_AND_LEAVE, db, "done") as shell:
        await _let_go(shell)
    assert (await _place(client, name="After It Went")).status == 503
    said = [m for m in _store_lines(caplog) if "restart the server" in m]
    # removed, or replaced by the shell's own where the server wrote as the shell ended
    assert len(said) == 1 and "-shm (the log's shared-memory index) was re" in said[0], said
    assert "copied" not in said[0], said
    proc = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", READ_ALL.replace("sys.stdin.read()", ""), str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    instances, names = proc.stdout.splitlines()
    assert "'shell'" in instances, instances
    assert names == "['Kept']", names


@pytest.mark.parametrize("same_size", [False, True])
async def test_a_backup_copied_over_the_live_database_is_noticed(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, same_size: bool
) -> None:
    """`cp backup.db calls.db` under a running server: cp writes into the same file (its
    inode kept), so the check of its identity passed; the server went on answering 200 from
    its cache and its log, then copied the log's pages into the other file's, and the next
    start read 'database disk image is malformed'. Now the next write sees calls.db written
    with no checkpoint, refuses itself and every write after it, saying to restart. Of the
    same size as calls.db too (another version of it: its header's change counter differs)."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    client = await _quiet_app(start_app)
    assert (await _place(client, name="Before The Backup")).status == 200
    db, backup = tmp_path / "calls.db", tmp_path / "backup.db"
    shutil.copyfile(db, backup)
    assert (await _place(client, name="After The Backup")).status == 200
    await _checkpoint(client)  # calls.db holds the call placed after the backup
    if same_size:
        older = bytearray(db.read_bytes())
        older[24:28] = (int.from_bytes(older[24:28], "big") - 1).to_bytes(4, "big")
        backup.write_bytes(older)
    assert backup.read_bytes() != db.read_bytes()
    assert (backup.stat().st_size == db.stat().st_size) == same_size
    shutil.copyfile(backup, db)  # over it: the same file, other contents
    resp = await _place(client, name="After The Copy")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error.startswith("calls database unavailable: ") and "restart the server" in error
    assert (await client.get("/readyz")).status == 503
    said = [m for m in _store_lines(caplog) if "written over" in m]
    assert len(said) == 1 and "restart the server" in said[0], said


class CopyAtCommit:
    """Wraps the app's sqlite3 connection: the next COMMIT copies `backup` onto calls.db just
    before it runs, as a `cp` that lands while a write is in flight."""

    def __init__(self, conn: sqlite3.Connection, backup: Path, db: Path) -> None:
        self._conn = conn
        self._copy: tuple[Path, Path] | None = (backup, db)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if sql == "COMMIT" and self._copy is not None:
            shutil.copyfile(*self._copy)
            self._copy = None
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_backup_copied_over_while_a_write_runs_is_noticed(
    start_app: AppFactory, tmp_path: Path
) -> None:
    """A copy onto calls.db that landed while a write ran was taken, after that write, for
    what the write itself left (the marks were noted again): every write after it answered
    200, the log then checkpointed into the backup's pages. Now the next write is refused."""
    client = await _quiet_app(start_app)
    assert (await _place(client, name="Before The Backup")).status == 200
    db, backup = tmp_path / "calls.db", tmp_path / "backup.db"
    shutil.copyfile(db, backup)
    assert (await _place(client, name="After The Backup")).status == 200
    await _checkpoint(client)
    store = client.app[STORE]
    real = store.conn
    store._conn = CopyAtCommit(real, backup, db)
    try:
        await _place(client, name="While It Copies")  # begun before the copy: not refused
        resp = await _place(client, name="After The Copy")
    finally:
        store._conn = real
    assert resp.status == 503, await resp.text()
    assert (await client.get("/readyz")).status == 503


@pytest.mark.parametrize("change", ["touch", "chmod"])
async def test_a_database_touched_or_chmodded_is_not_taken_for_a_copy(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    """`touch calls.db` (a backup or monitoring tool resetting its time), or its mode changed,
    writes none of its contents: every write after it was refused 503 'written over ...
    restart the server', /readyz 503, CRITICAL. Now writes go on; a copy onto it after that
    is still refused."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    client = await _quiet_app(start_app)
    db = tmp_path / "calls.db"
    assert (await _place(client, name="Before The Touch")).status == 200
    backup = tmp_path / "backup.db"
    shutil.copyfile(db, backup)
    assert (await _place(client, name="After The Backup")).status == 200
    await _checkpoint(client)
    before = os.stat(db)
    if change == "touch":
        os.utime(db, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
        assert os.stat(db).st_mtime_ns != before.st_mtime_ns
    else:
        os.chmod(db, 0o400)
    for name in ("After The Touch", "And Again"):
        resp = await _place(client, name=name)
        assert resp.status == 200, await resp.text()
    assert (await client.get("/readyz")).status == 200
    assert not [m for m in _store_lines(caplog) if "restart the server" in m]
    os.chmod(db, 0o600)
    shutil.copyfile(backup, db)  # the copy onto it is still noticed
    assert (await _place(client, name="After The Copy")).status == 503
    assert (await client.get("/readyz")).status == 503


async def test_a_checkpoint_by_another_process_is_not_taken_for_a_copy(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """calls.db written by another connection's checkpoint (a backup tool's, a shell's) is
    the log copied in, not a file written over: writes go on."""
    client = await _quiet_app(start_app)
    assert (await _place(client, name="Before The Checkpoint")).status == 200
    before = os.stat(tmp_path / "calls.db")
    other = sqlite3.connect(tmp_path / "calls.db")
    try:
        busy, _, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        other.close()
    assert busy == 0 and copied > 0
    assert os.stat(tmp_path / "calls.db").st_mtime_ns != before.st_mtime_ns
    assert (await _place(client, name="After The Checkpoint")).status == 200
    assert (await client.get("/readyz")).status == 200


class BadDiskConnection:
    """Wraps the app's sqlite3 connection: while `bad`, a transaction that writes a call (or
    as much as one) fails at its COMMIT with a real SQLITE_IOERR, as a write-ahead log that
    cannot grow (a file size limit, a quota) fails; the readiness probe's one row still fits."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.bad = True
        self._large = False

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            self._large = False
        if sql.startswith("INSERT INTO calls ") or "zeroblob" in sql:
            self._large = True
        if sql == "COMMIT" and self.bad and self._large:
            self._conn.execute("ROLLBACK")
            error = sqlite3.OperationalError("disk I/O error")
            error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE
            raise error
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_readiness_says_not_ready_while_calls_cannot_be_written(
    start_app: AppFactory,
) -> None:
    """A call's write failing on the disk (a write-ahead log stopped by a file size limit
    (`ulimit -f`) or a quota, where statvfs shows space) while the probe's one-row write still
    fit: /readyz answered 200 while every call got 503, and the load balancer kept sending
    them. Now it is 503 naming the database until a write as large as a call's goes through,
    which the probe itself makes: it is ready again with no call needed."""
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    assert (await _place(client, name="Before")).status == 200
    bad = BadDiskConnection(db.conn)
    db._conn = bad
    try:
        assert (await _place(client, name="Refused")).status == 503
        resp = await client.get("/readyz")
        assert resp.status == 503
        details = (await resp.json())["details"]
        assert details == [{"component": "database", "error": "disk I/O error"}]
        bad.bad = False
        for _ in range(50):  # each verdict is given again for READYZ_REUSE_S
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/readyz")).status == 200
    finally:
        db._conn = bad._conn
    await _still_serving(client)


FILE_SIZE_LIMIT = 2_000_000
LIMITED_SERVER = (
    "import resource; resource.setrlimit(resource.RLIMIT_FSIZE,"
    f" ({FILE_SIZE_LIMIT}, {FILE_SIZE_LIMIT})); {SERVER_LAUNCHER}"
)


async def test_a_log_that_cannot_grow_is_emptied_and_calls_go_on(
    tmp_path: Path, processes: list[Any]
) -> None:
    """A server under a file size limit (`ulimit -f`, as a quota stops a file): once
    calls.db-wal reached it, every write failed ('disk I/O error') for good, though emptying
    the log into calls.db (far under the limit) made room: SQLite empties it only once it is
    4 MB. Now a write failing on the disk empties it, and the calls after it are placed."""
    env = {"SANDBOX_TIME_SCALE": "0.01", "CALLS_RATE_LIMIT_PER_MIN": "100000"}
    server = ServerProcess(tmp_path, "limited", env, launcher=LIMITED_SERVER)
    processes.append(server)
    body = dict(CALL, phone_number="+14155557701")
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)

        async def place() -> int:
            async with session.post(f"{server.url}/calls/outbound", json=body) as resp:
                return resp.status

        for _ in range(300):
            if await place() == 503:
                break
            await asyncio.sleep(0.02)  # each call's reports and webhooks fill the log too
        else:
            pytest.fail("calls.db-wal never reached the file size limit")
        after = [await place() for _ in range(10)]
    assert after.count(200) >= 5, after
    assert (tmp_path / "calls.db").stat().st_size < FILE_SIZE_LIMIT


HOLD_SNAPSHOT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM calls").fetchone()
print("reading", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


async def test_a_log_held_by_a_reader_is_said_and_shrinks_once_it_lets_go(
    start_app: AppFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process holding a read snapshot (a backup tool, `sqlite3 calls.db` inside
    BEGIN): calls.db-wal grew by ~260 KB a call (16 MB after 62 calls) with nothing in the log
    or /metrics, and once the reader let go the file kept that size for good (until a
    restart): a weekend of it fills the disk. Now the log says it once the log passes
    WAL_WARN_BYTES, naming the reader, and the file is cut back once the reader lets go."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    monkeypatch.setattr(sqlite_store, "WAL_WARN_BYTES", 2 * 1024 * 1024)
    monkeypatch.setattr(sqlite_store, "WAL_KEEP_BYTES", 1024 * 1024)
    client = await start_app(sandbox_time_scale=0.01, calls_rate_limit_per_min=100_000)
    wal = tmp_path / "calls.db-wal"
    assert (await _place(client, name="First")).status == 200
    async with _another_process(HOLD_SNAPSHOT, tmp_path / "calls.db", "reading") as reader:
        for _ in range(200):
            if any("is held" in m for m in _store_lines(caplog)):
                break
            assert (await _place(client, name="While Read")).status == 200
            await asyncio.sleep(0.05)
        said = [m for m in _store_lines(caplog) if "is held" in m]
        assert len(said) == 1, said
        assert f"pid {reader.pid} (python" in said[0]
        grown = wal.stat().st_size
        assert grown > 2 * 1024 * 1024
        await _let_go(reader)
    for _ in range(200):  # the next checkpoint empties it, the next write cuts it back
        if any("is back" in m for m in _store_lines(caplog)):
            break
        assert (await _place(client, name="After")).status == 200
        await asyncio.sleep(0.05)
    back = [m for m in _store_lines(caplog) if "is back" in m]
    assert len(back) == 1, back
    assert wal.stat().st_size <= sqlite_store.WAL_KEEP_BYTES < grown


async def test_writes_queued_behind_the_close_are_answered(tmp_path: Path) -> None:
    """Writes queued behind the close of the database (the reaper, a campaign, a webhook as
    the server stops) are taken together; the first of them raised 'calls database is
    closed' out of the database's thread, which died with a traceback, and they and every
    request queued after them waited for ever. Each is now answered that error."""
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    release = threading.Event()
    try:
        await db._submit(db._close_sync)  # close() mid-way: the connection gone, its thread on
        held = asyncio.ensure_future(db._submit(release.wait))
        await asyncio.sleep(0.05)  # the thread holds it: the writes queue up behind it
        writes = [asyncio.ensure_future(db.start_dial(f"call-{n}")) for n in range(3)]
        await asyncio.sleep(0.05)
        release.set()
        await held
        answers = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 5)
        assert [str(a) for a in answers] == ["calls database is closed"] * 3, answers
        assert isinstance(answers[0], DatabaseError)
        later = await asyncio.wait_for(
            asyncio.gather(db.start_dial("call-x"), return_exceptions=True), 5
        )
        assert [str(a) for a in later] == ["calls database is closed"]
    finally:
        release.set()
        await db.close()
