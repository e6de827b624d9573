"""Every database operation, written once, as a transaction program both backends run.

A program is a generator: it yields `Query`s, receives each one's rows, and returns the
operation's result (or raises, which rolls the transaction back). The SQLite backend runs a
whole program on its database thread in one hop (a thread hop costs more than most of our
statements); the PostgreSQL backend awaits each query on a pooled connection. The SQL text is
the same for both: `?` placeholders (rewritten to `$n` once per text for PostgreSQL), and
`RETURNING` wherever a count or a new row is needed. The few differences are a `Dialect`.

Rows are read by column name, which `sqlite3.Row` and `asyncpg.Record` both support.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, get_args

from pydantic import ValidationError

from common.calls.errors import TooManyTurns
from common.calls.events import (
    CALL_ENDED,
    CALL_REPORT,
    MAX_TAKEOVERS,
    events_for_change,
    events_for_new_call,
)
from common.calls.models import (
    ERASED_REQUEST_HASH,
    RECEIVER_SAID,
    Applied,
    AttemptRef,
    CallEvent,
    CallRecord,
    Decide,
    DeliveryOutcome,
    IdempotencyClaim,
    LostCall,
    NewCall,
    RecordedDelivery,
    StoredAnswer,
    TimelineEntry,
    WebhookDelivery,
)
from common.calls.outcomes import (
    FINAL_STATUSES,
    HANGUP_FOR_DNC,
    LIVE_STATUSES,
    CallState,
    Change,
    Status,
    answer_reported,
    limit_reason,
)
from common.calls.phone import listed_forms
from common.campaigns.model import OVER_STATUSES
from common.contracts import MAX_TURNS, AgentReport, CallReport, ReportKind, TranscriptTurn
from common.repeats import Repeats
from common.storage.base import (
    AdmissionLimits,
    AttemptWithdrawn,
    CallIdTaken,
    DatabaseError,
    KeyTaken,
    Placer,
    Refusal,
    Refused,
    WindowClosed,
)
from common.storage.paging import Before, before_clause
from common.times import iso_time

logger = logging.getLogger(__name__)

T = TypeVar("T")
V = TypeVar("V")
Row = Mapping[str, Any]


@dataclass(frozen=True)
class Query:
    sql: str
    args: tuple[Any, ...] = ()


Program = Generator[Query, list[Row], T]


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL."""

    name: str
    for_update: str = ""  # lock the rows read, where the backend has concurrent writers
    for_share: str = ""  # ... against their writers only (readers that lock so go on)
    skip_locked: str = ""  # ... and skip rows another transaction holds
    # Serialises admission (count, then insert) across servers; SQLite's writer lock does it.
    admission_lock: Query | None = None
    # Orders a dial's do-not-call check after a listing committing meanwhile (the listing's
    # lock exclusive, the dial's shared: dials never wait for each other); SQLite's writer
    # lock does it.
    listing_lock: Query | None = None
    dial_listing_lock: Query | None = None
    # What the readiness probe asks beyond its own write: that a call's row could be written
    # now (SQLite's probe takes the one writer lock there is, as a call's insert does).
    write_check: Query | None = None


SQLITE = Dialect("sqlite")
POSTGRES = Dialect(
    "postgres",
    for_update=" FOR UPDATE",
    for_share=" FOR SHARE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    admission_lock=Query("SELECT pg_advisory_xact_lock(7246001)"),
    listing_lock=Query("SELECT pg_advisory_xact_lock(7246002)"),
    dial_listing_lock=Query("SELECT pg_advisory_xact_lock_shared(7246002)"),
    # The lock a call's placement takes on each table it writes, not waited for: a table
    # locked by hand, or by an index built on it, held every call 15 s (then 503) while
    # /readyz said ready (probe AJ: calls; the same for its timeline, its events' outbox,
    # which migration 0011 indexes, the rate limit's buckets and Idempotency-Keys).
    write_check=Query(
        "LOCK TABLE calls, events, outbox, rate_buckets, idempotency IN ROW EXCLUSIVE MODE NOWAIT"
    ),
)

LIVE = tuple(s.value for s in LIVE_STATUSES)
_LIVE_MARKS = ",".join("?" * len(LIVE))
RATE_WINDOW_S = 60.0

CHUNK = 500  # ids per IN (...) list: well under either backend's parameter limit


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ----------------------------------------------------------------------------- rows


def row_to_call(
    row: Row, timeline: tuple[TimelineEntry, ...] = (), turns: tuple[TranscriptTurn, ...] = ()
) -> CallRecord:
    config, report = row["config"], row["report"]
    return CallRecord(
        call_id=row["call_id"],
        phone_number=row["phone_number"],
        caller_name=row["caller_name"],
        language=row["language"],
        emotion=row["emotion"],
        status=Status(row["status"]),
        outcome=row["outcome"],
        reason=row["reason"],
        answered=bool(row["answered"]),
        hangup_requested=bool(row["hangup_requested"]),
        hangup_for_dnc=row["hangup_requested"] == HANGUP_FOR_DNC,
        created_at=row["created_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
        timeline=timeline,
        ringing_timeout_s=row["ringing_timeout_s"],
        max_duration_s=row["max_duration_s"],
        config=stored_config(row["call_id"], config) if config else None,
        room_finished_at=row["room_finished_at"],
        callee_left_at=row["callee_left_at"],
        dial_started_at=row["dial_started_at"],
        sandbox_instance=row["sandbox_instance"],
        amd=row["amd"],
        ended_by=row["ended_by"],
        report=stored_report(row["call_id"], report) if report else None,
        turns=turns,
        data_erased_at=row["data_erased_at"],
        webhook_url=row["webhook_url"],
        campaign_id=row["campaign_id"],
        deliveries_held=bool(row["deliveries_held"]),
        no_report=bool(row["no_report"]),
    )


# Rows written before today's rules (a report's `at` stored as null from Infinity, a usage
# nested 200 levels) must not break the reading of their call: what still reads is shown,
# the rest is left out with a warning, said at most once a minute per kind.
_UNREADABLE = Repeats()


def stored_turn(call_id: str, seq: int, body: str) -> TranscriptTurn | None:
    """The turn of a stored `turn` report; None (with a warning) if it no longer reads. A body
    whose envelope no longer validates (its `at`) still gives its turn, if that does."""
    try:
        return AgentReport.model_validate_json(body).turn
    except (ValidationError, RecursionError):
        pass
    try:
        return TranscriptTurn.model_validate(json.loads(body)["turn"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # ValidationError too
        if (more := _UNREADABLE.due("turn")) is not None:
            logger.warning(
                "call %s: stored turn report #%s no longer reads; it is left out of the"
                " transcript (%s)%s",
                call_id,
                seq,
                why_unreadable(exc),
                more,
            )
        return None


class ReadTexts(Generic[V]):
    """What stored texts (a call's config, its final report) last parsed to, by their text: at
    most `max_entries` of them and `max_chars` of text, none over a quarter of it, each for
    KEEP_S at most; the oldest go first. A call's row is read by every program that changes
    the call (14 times for a bench call: its placing, its dial, each webhook and agent
    report), and each read parsed its config and, once it came, its final report again (6 of
    the 14; ~20 µs each for 5 turns, more for a longer conversation, and a config as long as
    its instructions). What is kept is never changed in place (a CallRecord is frozen, a
    report is copied with model_copy, a config copied before it is erased), so one value
    stands for every read. An erasure forgets the texts it erased (`forget`): the names and
    conversations it took out of the database are not held here either (another server's
    copies go within KEEP_S). Nor kept again by a read that fetched the row before the
    erasure committed and parsed it after the forget (another connection's read on
    PostgreSQL, beside the erasure's transaction): a text forgotten within KEEP_S is not
    kept (by its hash; a collision only costs a parse)."""

    KEEP_S = 300.0  # a call's reads after its final report come within its last minutes
    FORGOTTEN_MAX = 16384  # texts remembered forgotten at most (the oldest go first)

    def __init__(
        self, max_entries: int, max_chars: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._clock = clock
        self._lock = threading.Lock()  # SQLite's thread, its read-aside thread, the loop
        self._by_text: dict[str, tuple[V, float]] = {}  # oldest first
        self._chars = 0
        self._forgotten: dict[int, float] = {}  # hash(text) -> when forgotten, oldest first

    def get(self, text: str) -> V | None:
        found = self._by_text.get(text)
        if found is None:
            return None
        if self._clock() - found[1] > self.KEEP_S:
            self._make_room()
            return None
        return found[0]

    def read(self, text: str, parse: Callable[[str], V]) -> V:
        """What `text` parsed to, kept; else `parse(text)`, kept from now on."""
        value = self.get(text)
        if value is None:
            value = parse(text)
            self.keep(text, value)
        return value

    def keep(self, text: str, value: V) -> None:
        if len(text) > self.max_chars // 4:  # a few very large ones would take it all
            return
        with self._lock:
            if text in self._by_text or self._was_forgotten(text):
                return
            self._by_text[text] = (value, self._clock())
            self._chars += len(text)
        self._make_room()

    def forget(self, *texts: str | None) -> None:
        with self._lock:
            now = self._clock()
            for text in texts:
                if text is None:
                    continue
                if self._by_text.pop(text, None) is not None:
                    self._chars -= len(text)
                self._forgotten.pop(hash(text), None)  # re-entered last: oldest first
                self._forgotten[hash(text)] = now
            while len(self._forgotten) > self.FORGOTTEN_MAX:
                del self._forgotten[next(iter(self._forgotten))]

    def _was_forgotten(self, text: str) -> bool:
        """`text` was forgotten within KEEP_S (under the lock); older marks are dropped."""
        stale = self._clock() - self.KEEP_S
        while self._forgotten:
            oldest, at = next(iter(self._forgotten.items()))
            if at >= stale:
                break
            del self._forgotten[oldest]
        return hash(text) in self._forgotten

    def _make_room(self) -> None:
        """Drop the oldest while they are too many, too large, or kept past KEEP_S."""
        with self._lock:
            stale = self._clock() - self.KEEP_S
            while self._by_text:
                oldest, (_value, kept_at) = next(iter(self._by_text.items()))
                if (
                    self._chars <= self.max_chars
                    and len(self._by_text) <= self.max_entries
                    and kept_at >= stale
                ):
                    return
                del self._by_text[oldest]
                self._chars -= len(oldest)


_READ_REPORTS: ReadTexts[CallReport] = ReadTexts(256, 4 * 1024 * 1024)
_READ_CONFIGS: ReadTexts[object] = ReadTexts(256, 1024 * 1024)  # (stored_config checks it)


def stored_config(call_id: str, text: str) -> dict[str, Any] | None:
    """A call's stored config (as it was placed with); None (with a warning) if it no longer
    reads (cut short by a hand edit: a JSON that does not parse, or is no object). Raised, it
    failed every read of its call: the reaper's passes stopped at it, each pass (the call
    live for good, holding CALLS_MAX_ACTIVE), and a page of calls that held it."""
    config, why = json_object(lambda: _READ_CONFIGS.read(text, json.loads))
    if config is not None:
        return config
    if (more := _UNREADABLE.due("config")) is not None:
        logger.warning(
            "call %s: its stored config no longer reads (%s); it is read as none%s",
            call_id,
            why,
            more,
        )
    return None


def stored_report(call_id: str, text: str) -> CallReport:
    """A call's stored final report: each field that no longer reads is left out (with a
    warning), the others are kept (CallReport has no rule across fields)."""
    read = _READ_REPORTS.get(text)
    if read is not None:
        return read
    try:
        read = CallReport.model_validate_json(text)
    except (ValidationError, RecursionError):
        pass
    else:
        _READ_REPORTS.keep(text, read)
        return read
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in doc.items() if isinstance(doc, dict) else ():
        try:
            CallReport.model_validate({name: value})
        except (ValidationError, RecursionError):
            dropped.append(str(name))
        else:
            kept[name] = value
    unread = dropped if isinstance(doc, dict) else ["all of it"]
    if unread and (more := _UNREADABLE.due("report")) is not None:
        logger.warning(
            "call %s: its stored final report no longer reads in full; left out: %s%s",
            call_id,
            ", ".join(unread),
            more,
        )
    return CallReport.model_validate(kept)


def json_object(read: Callable[[], object]) -> tuple[dict[str, Any] | None, str]:
    """What `read` gives (a stored JSON text's parse) if it is an object; else None and why
    not, in one short line (a text cut short by a hand edit, a JSON that is no object)."""
    try:
        value = read()
    except (ValueError, TypeError, RecursionError) as exc:
        return None, why_unreadable(exc)
    if isinstance(value, dict):
        return value, ""
    return None, f"a JSON {type(value).__name__}, not an object"


def why_unreadable(exc: BaseException) -> str:
    """One short line: the first problem pydantic found, or the exception's type and text."""
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "turn"
        return f"{where}: {first['msg']}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def _row_to_entry(row: Row) -> TimelineEntry:
    return TimelineEntry(
        kind=row["kind"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        detail=json.loads(row["detail"]),
        at=row["at"],
        event_id=row["event_id"],
    )


def _row_to_event(row: Row) -> CallEvent:
    return CallEvent(
        id=int(row["id"]),
        call_id=row["call_id"],
        type=row["type"],
        data=json.loads(row["data"]),
        created_at=row["created_at"],
        from_status=row["from_status"],
    )


def _ids(rows: list[Row], column: str = "call_id") -> list[str]:
    return [str(r[column]) for r in rows]


# ----------------------------------------------------------------------------- calls


def create_call(
    d: Dialect,
    call: NewCall,
    detail: dict[str, Any],
    claim: IdempotencyClaim | None,
    limits: AdmissionLimits | None,
    now: float,
    lease_s: float,
    holder: str = "",
) -> Program[Applied]:
    if claim is not None:  # first: a retry of a placed call is never refused by the limits
        yield from bind_key(claim, call.call_id, now)
    if (yield from on_dnc_list(call.phone_number)):
        raise Refused(Refusal("dnc", 0))
    rows = yield Query(
        "INSERT INTO calls (call_id, phone_number, caller_name, language, emotion,"
        " status, created_at, updated_at, ringing_timeout_s, max_duration_s, config, client,"
        " webhook_url, campaign_id, sandbox_instance, deliveries_held, placed_by, placed_run)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (call_id) DO NOTHING RETURNING *",
        (
            call.call_id,
            call.phone_number,
            call.caller_name,
            call.language,
            call.emotion,
            Status.DIALING.value,
            now,
            now,
            call.ringing_timeout_s,
            call.max_duration_s,
            dumps(call.config),
            call.client,
            call.webhook_url,
            call.campaign.campaign_id if call.campaign else None,
            call.sandbox_instance,
            int(call.hold_deliveries and call.webhook_url is not None),
            *(call.placed_by or (None, None)),
        ),
    )
    if not rows:  # an earlier call's id (its key, limits and attempt roll back with this)
        raise CallIdTaken(call.call_id)
    if call.campaign is not None:  # the attempt learns its call with the call's own row
        yield from link_attempt(call.campaign, call.call_id)
    after = row_to_call(rows[0])
    yield from add_entry(call.call_id, None, "created", None, Status.DIALING, detail, now)
    events = yield from _add_events(
        d, events_for_new_call(after), None, after, now, lease_s, holder
    )
    if limits is not None:
        # Last, just before the commit: the admission lock serialises every placement of
        # every server, and each statement under it waits a round trip on its server's busy
        # event loop. Taken before the call's writes (8 statements under it, not 3), a burst
        # of 250 calls a server on PostgreSQL was admitted a few a second, and most of it
        # answered 503 "calls database unavailable" after 10 s in the pool's queue. This
        # call's own row, written above, is not counted against the cap.
        if d.admission_lock is not None:
            yield d.admission_lock
        refusal = yield from admission_refusal(call.client, limits, now, placing=call.call_id)
        if refusal is not None:
            raise Refused(refusal)
    yield Query(
        "INSERT INTO rate_buckets (client, second, n) VALUES (?, ?, 1)"
        " ON CONFLICT (client, second) DO UPDATE SET n = rate_buckets.n + 1",
        (call.client, rate_second(now)),
    )
    return Applied(after=after, events=events)


def bind_key(claim: IdempotencyClaim, call_id: str, now: float) -> Program[None]:
    """Bind the key to the new call (or campaign), or raise KeyTaken with what it is bound
    to."""
    for _ in range(2):  # a key freed between our insert and our read is bound on the retry
        taken = yield Query(
            "INSERT INTO idempotency (client, key, request_hash, call_id, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING call_id",
            (claim.client, claim.key, claim.request_hash, call_id, now),
        )
        if taken:
            return
        stored = yield from get_idempotent(claim.client, claim.key)
        if stored is not None:
            raise KeyTaken(stored)
    raise DatabaseError("the Idempotency-Key changed hands twice while binding it; retry")


def link_attempt(ref: AttemptRef, call_id: str) -> Program[None]:
    """The campaign attempt `ref` is placed as `call_id` (its row was written before)."""
    rows = yield Query(
        "UPDATE campaign_attempts SET state = 'placed', call_id = ?"
        " WHERE campaign_id = ? AND idx = ? AND attempt = ? AND state = 'placing'"
        " RETURNING attempt",
        (call_id, ref.campaign_id, ref.idx, ref.attempt),
    )
    if not rows:  # paused or canceled meanwhile: no call for it, nothing recorded
        raise AttemptWithdrawn(f"campaign attempt {ref} is no longer being placed")


def get_call(d: Dialect, call_id: str, with_timeline: bool) -> Program[CallRecord | None]:
    rows = yield Query("SELECT * FROM calls WHERE call_id = ?", (call_id,))
    if not rows:
        return None
    timeline: tuple[TimelineEntry, ...] = ()
    turns: tuple[TranscriptTurn, ...] = ()
    if with_timeline:
        entries = yield Query("SELECT * FROM events WHERE call_id = ? ORDER BY id", (call_id,))
        timeline = tuple(_row_to_entry(e) for e in entries)
        if rows[0]["report"] is None:  # before the final report: the turns reported so far
            turns = yield from reported_turns(call_id)
    return row_to_call(rows[0], timeline, turns)


def reported_turns(call_id: str) -> Program[tuple[TranscriptTurn, ...]]:
    """The transcript turns a call's agent reported so far, in order (before its final
    report, whose transcript is the call's from then on)."""
    reported = yield Query(
        "SELECT seq, body FROM reports WHERE call_id = ? AND kind = 'turn' ORDER BY seq",
        (call_id,),
    )
    parsed = (stored_turn(call_id, r["seq"], r["body"]) for r in reported)
    return tuple(turn for turn in parsed if turn is not None)


# What a list reads of a call: the columns `row_to_call` reads but the config and the final
# report, which a list never shows (CallSummary) and which can be large: a report's transcript
# runs to megabytes, and parsing 500 of them held the database thread (every write) ~1 s.
_SMALL_COLUMNS = (
    "call_id, phone_number, caller_name, language, emotion, status, outcome, reason, answered,"
    " hangup_requested, created_at, answered_at, ended_at, updated_at, ringing_timeout_s,"
    " max_duration_s, room_finished_at, callee_left_at, dial_started_at, sandbox_instance, amd,"
    " ended_by, data_erased_at, webhook_url, campaign_id, deliveries_held, no_report"
)
_LISTED_COLUMNS = f"{_SMALL_COLUMNS}, NULL AS config, NULL AS report"


def list_calls(
    d: Dialect, status: Status | None, limit: int, before: Before | None
) -> Program[list[CallRecord]]:
    """The calls of a page, newest first, without their config and final report."""
    clauses, args = [], []  # type: list[str], list[Any]
    if status is not None:
        clauses.append("status = ?")
        args.append(status.value)
    if before is not None:
        clause, values = before_clause(before, "call_id")
        clauses.append(clause)
        args.extend(values)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = yield Query(
        f"SELECT {_LISTED_COLUMNS} FROM calls {where}"  # noqa: S608 - constant text
        " ORDER BY created_at DESC, call_id DESC LIMIT ?",
        (*args, limit),
    )
    return [row_to_call(r) for r in rows]


def placed_between(
    d: Dialect, instance: str, start: float, end: float, limit: int
) -> Program[list[CallRecord]]:
    """The calls `instance` placed (any run of it) created from `start` to `end`, oldest
    first, at most `limit`, with their configs (as erased, if they were) and without their
    final reports (megabytes of transcript each, not needed)."""
    rows = yield Query(
        f"SELECT {_SMALL_COLUMNS}, config, NULL AS report FROM calls"  # noqa: S608 - constant
        " WHERE created_at >= ? AND created_at <= ? AND placed_by = ?"
        " ORDER BY created_at, call_id LIMIT ?",
        (start, end, instance, limit),
    )
    return [row_to_call(r) for r in rows]


def count_live(d: Dialect) -> Program[int]:
    rows = yield Query(
        f"SELECT COUNT(*) AS n FROM calls WHERE status IN ({_LIVE_MARKS})",  # noqa: S608
        LIVE,
    )
    return int(rows[0]["n"])


def count_pending_deliveries(d: Dialect) -> Program[int]:
    rows = yield Query("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'pending'")
    return int(rows[0]["n"])


def count_given_up_events(d: Dialect) -> Program[int]:
    """Outbox events given up (`_give_up_events`), among the undispatched (an index of its
    own: not a read of the whole outbox)."""
    rows = yield Query(
        "SELECT COUNT(*) AS n FROM outbox WHERE dispatched_at IS NULL AND given_up_at IS NOT NULL"
    )
    return int(rows[0]["n"])


def count_by_status(d: Dialect) -> Program[dict[str, int]]:
    rows = yield Query("SELECT status, COUNT(*) AS n FROM calls GROUP BY status")
    return {str(r["status"]): int(r["n"]) for r in rows}


def _locked_row(d: Dialect, call_id: str) -> Program[Row | None]:
    """The call's whole row, locked for this transaction's writes (FOR UPDATE on PostgreSQL;
    SQLite has one writer); None if there is no such call."""
    rows = yield Query(
        f"SELECT * FROM calls WHERE call_id = ?{d.for_update}",  # noqa: S608 - dialect text
        (call_id,),
    )
    return rows[0] if rows else None


def apply(
    d: Dialect,
    call_id: str,
    kind: str,
    decide: Decide,
    event_id: str | None,
    detail: dict[str, Any],
    room_finished: bool,
    now: float,
    lease_s: float,
    answered_at: float | None = None,
    holder: str = "",
    callee_left: bool = False,
    only_if_changed: bool = False,
    ended_at: float | None = None,
    event_at: float | None = None,
    sandbox_time_scale: float = 1.0,
    dial_taken: bool = False,
    release_refused: bool = False,
    row: Row | None = None,
) -> Program[Applied]:
    """One decision about one call. `answered_at`: when the callee answered, if the decision
    is the answer and its moment is known (an agent's report); else the time of the change.
    `ended_at`, likewise, when a final decision's moment is known to be earlier than now;
    without it a final decision's call ended when its callee left or its room finished, if
    that was said before now. `event_at`: when the event happened, by its sender's clock in
    whole seconds (LiveKit's createdAt), for an event that arrives late. `dial_taken`: LiveKit
    took the call's dial, so the deliveries it held until then are made (release_deliveries)
    even if nothing changes. `release_refused`: a decision that fails a call never dialled
    (its placement refused) frees its Idempotency-Key and rate share in the same transaction
    (release_placement), as the reaper's settle_never_dialled does. `row`: the call's whole
    row as this transaction just wrote it (an UPDATE's RETURNING *, the row locked), not read
    again."""
    happened = happened_at(now, event_at)
    line = None  # the event's timeline line (event_id), written before anything else
    if event_id is not None:
        if row is None:
            row = yield from _locked_row(d, call_id)
            if row is None:
                return Applied(unknown_call=True)
        # An event applied before (sent again; or by another server at the same moment, whose
        # insert the unique index makes this one wait for) inserts nothing here, and nothing
        # else is written. Its statuses are filled in below if it changes the call. (Not
        # found first, a conflict alone took one of SQLite's AUTOINCREMENT numbers: a write,
        # and a duplicate on a full disk was answered 503.)
        inserted = yield Query(
            "INSERT INTO events (call_id, event_id, kind, from_status, to_status, detail, at)"
            " SELECT ?, ?, ?, NULL, NULL, ?, ?"
            " WHERE NOT EXISTS (SELECT 1 FROM events WHERE event_id = ?)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (
                call_id,
                event_id,
                kind,
                dumps(detail),
                _line_at(kind, detail, now, happened),
                event_id,
            ),
        )
        if not inserted:
            return Applied(duplicate=True)
        line = inserted[0]["id"]
    if room_finished:
        rows = yield Query(
            "UPDATE calls SET room_finished_at = COALESCE(room_finished_at, ?) WHERE call_id = ?"
            " RETURNING *",
            (happened, call_id),
        )
        row = rows[0] if rows else None
    if callee_left:
        rows = yield Query(
            "UPDATE calls SET callee_left_at = COALESCE(callee_left_at, ?) WHERE call_id = ?"
            " RETURNING *",
            (happened, call_id),
        )
        row = rows[0] if rows else None
    if row is None:
        row = yield from _locked_row(d, call_id)
        if row is None:
            return Applied(unknown_call=True)
    before = row_to_call(row)
    released = False
    if dial_taken:
        before, released = yield from release_deliveries(d, before, now)
    change = decide(before.state)
    after = before
    events: tuple[CallEvent, ...] = ()
    if change is not None:
        final = change.status in FINAL_STATUSES
        answer = before.answered_at
        if answer is None and change.answered:
            # An answer a late webhook shows (retried after an outage) came no later than that
            # event: dated at its arrival, it fell after the callee's hang-up it was shown by,
            # and the outage was counted as ringing (ring_s 41 for a line that rang 3 s).
            answer = max(happened, before.created_at) if answered_at is None else answered_at
        end = end_of(before, now, ended_at, answer)
        limit = (before.config or {}).get("max_duration_s")
        dialled = before.dial_started_at
        if before.sandbox_instance is not None and sandbox_time_scale != 1.0:
            dialled = None  # a scaled sandbox's wall-clock times say nothing of its limit
        change = limit_reason(change, None if dialled is None else end - dialled, limit)
        updated = yield Query(
            "UPDATE calls SET status = ?, updated_at = ?,"
            " reason = COALESCE(?, reason), ended_by = COALESCE(ended_by, ?),"
            " outcome = CASE WHEN ? = 1 THEN ? ELSE outcome END,"
            " ended_at = CASE WHEN ? = 1 THEN ? ELSE ended_at END,"
            " answered = CASE WHEN ? = 1 THEN 1 ELSE answered END,"
            " answered_at = CASE WHEN ? = 1 AND answered_at IS NULL THEN ? ELSE answered_at END,"
            " no_report = CASE WHEN ? = 1 THEN 1 ELSE no_report END"
            " WHERE call_id = ? RETURNING *",
            (
                change.status.value,
                now,
                change.reason,
                change.ended_by,
                int(final),
                change.status.value,
                int(final),
                end,
                int(change.answered),
                int(change.answered),
                answer,  # the CASE takes it only for a first answer
                int(final and change.no_report),
                call_id,
            ),
        )
        after = row_to_call(updated[0])
        events = yield from _add_events(
            d, events_for_change(before, after), before.status, after, now, lease_s, holder
        )
    if line is not None:
        if change is not None:
            yield Query(
                "UPDATE events SET from_status = ?, to_status = ? WHERE id = ?",
                (before.status.value, change.status.value, line),
            )
    elif change is not None or not only_if_changed:
        yield from add_entry(
            call_id,
            None,
            kind,
            before.status if change else None,
            change.status if change else None,
            detail,
            now,
        )
    if (
        release_refused
        and change is not None
        and change.status is Status.FAILED
        and after.dial_started_at is None
    ):
        yield from release_placement(d, call_id)
    return Applied(change=change, before=before, after=after, events=events, released=released)


# How late an event's own time may be and still stand for when it happened: LiveKit retries
# a webhook for minutes; a time further back is a clock to distrust, not a late delivery.
MAX_EVENT_DELAY_S = 3600.0
# A room_finished that came this long after it happened (by LiveKit's whole seconds, or a room
# found gone: by the last the server heard of its call) came after an outage (this server
# down or its database): the agent's reports refused meanwhile are still being retried, up to
# REPORTS_RETRY_S apart, and an answer among them must land before the call settles unanswered.
LATE_FINISH_S = 5.0
# agent/reporting.py's RetryPolicy: up to 30 s between a report's attempts, each up to 10 s.
REPORTS_RETRY_S = 40.0


def _line_at(kind: str, detail: Mapping[str, Any], now: float, happened: float) -> float:
    """When a webhook's timeline line is dated: at its arrival, or, for one that came after
    an outage (LATE_FINISH_S late: LiveKit retried it while this server was down), when it
    happened. Dated at its arrival, such a line was the reaper's last sign of a call whose
    room_finished was lost, and the outage counted as talk (talk_s 37 for an 8 s call), as
    an agent's retried report did. Two keep their arrival, as waits run from it: a
    room_finished's (the grace for the reports still being retried, _ROOM_FINISHED_CAME),
    and an agent's leaving (AGENT_GONE_GRACE_S for its room_finished, retried too, before
    any server's reaper ends the call as its agent's gone: agent_gone_unsettled)."""
    if kind == "room_finished" or detail.get(AGENT_LEFT_DETAIL) or now - happened <= LATE_FINISH_S:
        return now
    return happened


def happened_at(now: float, event_at: float | None) -> float:
    """When an event that arrives `now` happened: its own time in whole seconds (LiveKit's)
    is a second wide, so `event_at + 1` bounds it from above, and an event on time is `now`
    (finer); a time with a fraction (the server's own, for a room found gone) is exact."""
    if event_at is None or not 0 < event_at <= now:
        return now
    if not event_at.is_integer():  # the server's own clock: exact, however far back
        return event_at
    return min(now, event_at + 1.0) if now - event_at <= MAX_EVENT_DELAY_S else now


def end_of(before: CallRecord, now: float, ended_at: float | None, answer: float | None) -> float:
    """When a call that ends now ended: `ended_at` if known, else the first sign of its end
    (its callee left, its room finished: a late webhook, a room_finished waiting out the
    grace period), never before it was placed or answered."""
    if ended_at is not None:
        return min(ended_at, now)
    signs = [t for t in (before.callee_left_at, before.room_finished_at) if t is not None]
    if not signs:
        return now
    floor = answer if answer is not None else before.created_at
    return min(now, max(min(signs), floor))


def add_entry(
    call_id: str,
    event_id: str | None,
    kind: str,
    from_status: Status | None,
    to_status: Status | None,
    detail: dict[str, Any],
    at: float,
) -> Program[None]:
    yield Query(
        "INSERT INTO events (call_id, event_id, kind, from_status, to_status, detail, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            call_id,
            event_id,
            kind,
            from_status.value if from_status else None,
            to_status.value if to_status else None,
            dumps(detail),
            at,
        ),
    )


def _add_events(
    d: Dialect,
    types: Sequence[str],
    from_status: Status | None,
    after: CallRecord,
    now: float,
    lease_s: float,
    holder: str,
) -> Program[tuple[CallEvent, ...]]:
    """The outbox rows for `types`, held by this transaction's server (`holder`) for `lease_s`."""
    if not types:
        return ()
    # A new event of a dialled call: what its placing held back goes first (in case the
    # transaction that says it was dialled failed).
    after, _ = yield from release_deliveries(d, after, now)
    if CALL_ENDED in types and after.report is None:
        # The call as GET /calls/{id} shows it: before its final report, the turns reported
        # so far. Left out, a call that ended before its report said "transcript": [], and
        # one whose agent died mid-call (no report, no call.report) never told its receiver
        # a word of the conversation.
        after = replace(after, turns=(yield from reported_turns(after.call_id)))
    data = event_data(after)
    encoded = dumps(data)
    previous = from_status.value if from_status else None
    events = []
    for event_type in types:
        rows = yield Query(
            "INSERT INTO outbox (call_id, type, from_status, data, created_at, claimed_until,"
            " claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (after.call_id, event_type, previous, encoded, now, now + lease_s, holder),
        )
        event_id = int(rows[0]["id"])
        events.append(CallEvent(event_id, after.call_id, event_type, data, now, previous))
        if after.webhook_url and not after.deliveries_held:  # in the event's transaction
            yield from add_delivery(d, event_id, after.call_id, after.webhook_url, now)
    return tuple(events)


def release_deliveries(
    d: Dialect, call: CallRecord, now: float
) -> Program[tuple[CallRecord, bool]]:
    """Make the customer deliveries of a call's events so far, held while its placing was
    undecided (NewCall.hold_deliveries), once LiveKit took its dial (`apply(dial_taken=True)`),
    or with its first event after its dial started (a dial that may have rung, a hang-up
    before it), or with its first event after a hang-up through the API (POST
    /calls/{id}/hangup named it: hang-up wins, and its placer is answered 200 with its id and
    "canceled"): in a transaction that holds its row, so they are made once and precede those
    of its later events. A call never dialled nor hung up keeps them unmade for good: its
    client was answered an error without its id (LiveKit unreachable, its number listed
    meanwhile, its server stopped before the dial), and a receiver would be told of a call
    it never placed. The call as it is now, and whether any delivery was made."""
    if not call.deliveries_held or (call.dial_started_at is None and not call.hangup_requested):
        return call, False
    rows = yield Query(
        "UPDATE calls SET deliveries_held = 0 WHERE call_id = ? AND deliveries_held = 1"
        " RETURNING webhook_url",
        (call.call_id,),
    )
    call = replace(call, deliveries_held=False)
    url = rows[0]["webhook_url"] if rows else None
    if not url:
        return call, False
    events = yield Query("SELECT id FROM outbox WHERE call_id = ? ORDER BY id", (call.call_id,))
    for event in events:
        yield from add_delivery(d, int(event["id"]), call.call_id, url, now)
    return call, bool(events)


GONE_EARLIER = "the receiver answered 410 Gone to an earlier event"


def add_delivery(d: Dialect, event_id: int, owner: str, url: str, now: float) -> Program[None]:
    """An event's delivery to `url`, pending; stopped (saying why) if that URL answered 410
    Gone to an earlier event of the same call or campaign (`owner`): it wants no more. Behind
    (`behind` 1) if an earlier one to that URL is pending: that one's record, when it is
    over, makes the next one the head (`_next_head`). On PostgreSQL that one's row is locked
    first: a record committing meanwhile would not see this row to make it the head, and it
    waited behind nothing for good; locked, the record waits for this commit, or this reads
    the pending ones after it (none then, at worst: `behind` 0 is never wrong)."""
    earlier = yield Query(
        "SELECT id FROM deliveries WHERE call_id = ? AND url = ? AND state = 'pending'"  # noqa: S608
        f" ORDER BY id LIMIT 1{d.for_update}",
        (owner, url),
    )
    yield Query(
        "INSERT INTO deliveries (event_id, call_id, url, webhook_id, state, last_error,"
        " next_attempt_at, created_at, behind) SELECT ?, ?, ?, ?, CASE WHEN gone THEN 'stopped'"
        " ELSE 'pending' END, CASE WHEN gone THEN ? END, ?, ?, ? FROM (SELECT EXISTS (SELECT 1"
        " FROM deliveries WHERE call_id = ? AND url = ? AND state = 'stopped') AS gone) AS earlier",
        (
            *(event_id, owner, url, webhook_id(owner, event_id), GONE_EARLIER, now, now),
            int(bool(earlier)),
            *(owner, url),
        ),
    )


def _next_head(call_id: str, url: str) -> Program[None]:
    """The earliest pending delivery of `call_id` to `url` is no longer behind another (the
    one before it is over): claimable when it is due."""
    yield Query(
        "UPDATE deliveries SET behind = 0 WHERE behind = 1 AND id = (SELECT MIN(id) FROM"
        " deliveries WHERE call_id = ? AND url = ? AND state = 'pending')",
        (call_id, url),
    )


def event_data(call: CallRecord) -> dict[str, Any]:
    """What an event says about its call: the call as GET /calls/{id} shows it, without the
    timeline (the event is one of its entries)."""
    data = call.to_json()
    del data["timeline"]
    return data


def webhook_id(owner: str, event_id: int) -> str:
    """The Standard Webhooks `webhook-id` of an event (stored with its delivery: the same on
    every retry). The event's call or campaign id (random) keeps it unique beyond this
    database: a bare sequence number would repeat once the server moves to another database
    (SQLite to PostgreSQL) or a second deployment posts to the same receiver, and a receiver
    that drops repeats, as it should, would drop new events. The random tail keeps it unique
    across a restored backup, which numbers the events again from where the backup stood: a
    call live across it sent its next event under the id of one sent after the backup (its
    call.ended as its call.answered had been, dropped by the receiver as a repeat)."""
    return f"msg_{owner}_{event_id}_{secrets.token_hex(4)}"


def start_dial(
    d: Dialect, call_id: str, now: float, window_open: Callable[[], bool] | None = None
) -> Program[CallRecord | None]:
    """Mark the dial as started, unless the call is over (settled by the reaper while its
    server stalled: marked, it read as dialled though nobody was), its room ended (its agent
    gone: a dial would ring the callee into a room with nobody in it) or its number was put on
    the do-not-call list since it was recorded (its dispatch takes a LiveKit request: a POST
    /dnc answered meanwhile would be followed by the dial); the call as it is, unmarked in
    both cases. AttemptWithdrawn, unmarked, if its campaign was paused since it was recorded
    (a pause answered meanwhile would be followed by the dial); WindowClosed, unmarked, if
    it is a campaign's call and `window_open()` says its recipient's calling window has
    closed since its attempt was begun (the window is asked as the attempt begins, and the
    placing takes up to ~35 s: one begun at 19:59:50 rang after 20:00)."""
    # The campaign's status is read under a share lock, which waits for a pause (it holds
    # the row FOR UPDATE) to commit and then reads it paused: read plainly, a dial marked a
    # moment before the pause committed went out after its 200 (PostgreSQL; SQLite's one
    # writer orders the two already). Its row first, then the call's, as a cancel takes them.
    campaign = yield Query(
        "SELECT status FROM campaigns WHERE campaign_id ="  # noqa: S608 - dialect text
        f" (SELECT campaign_id FROM calls WHERE call_id = ?){d.for_share}",
        (call_id,),
    )
    if campaign and campaign[0]["status"] == "paused":
        raise AttemptWithdrawn(f"call {call_id}: its campaign was paused before its dial")
    rows = yield Query(
        f"SELECT phone_number, room_finished_at FROM calls WHERE call_id = ?{d.for_update}",  # noqa: S608
        (call_id,),
    )
    if rows and rows[0]["room_finished_at"] is not None:
        # Its room, made by its agent's dispatch, ended first (the agent stopped waiting for
        # a callee: its server stalled past the ringing timeout and 15 s here): a dial would
        # make a new room with no agent in it, and the callee answer to silence.
        rows = yield Query("SELECT * FROM calls WHERE call_id = ?", (call_id,))
        return row_to_call(rows[0])
    if rows and d.dial_listing_lock is not None:
        # A POST /dnc committing now is waited for: read before it commits, the number was
        # dialled after its 200 (PostgreSQL).
        yield d.dial_listing_lock
    if rows and (yield from on_dnc_list(rows[0]["phone_number"])):
        rows = yield Query("SELECT * FROM calls WHERE call_id = ?", (call_id,))
        return row_to_call(rows[0])
    if campaign and window_open is not None and not window_open():
        raise WindowClosed(f"call {call_id}: its calling window closed before its dial")
    rows = yield Query(
        "UPDATE calls SET dial_started_at = CASE WHEN status = ? THEN ? ELSE dial_started_at END"
        " WHERE call_id = ? RETURNING *",
        (Status.DIALING.value, now, call_id),
    )
    return row_to_call(rows[0]) if rows else None


def request_hangup(
    d: Dialect, call_id: str, now: float, unanswered: bool = False
) -> Program[CallRecord | None]:
    """Mark the call to be hung up, with its timeline line, in one transaction (so the
    timeline's order is the order things happened in). None if the call is unknown; the call
    unmarked if it is over or ending already (its callee left, or its room finished: an
    unanswered call waiting out the settle grace, whose late answer must still count), or,
    `unanswered` (POST /dnc's hang-up of calls it read ringing), if it was answered since;
    asked again, the call as it is (no new line)."""
    row = yield from _locked_row(d, call_id)
    if row is None:
        return None
    call = row_to_call(row)
    if call.hangup_requested:
        return call
    # Over (settled since the caller looked: marked, a refused call's held deliveries would
    # go out with its next event), or ending already: left as it is.
    if call.is_final or call.callee_left_at is not None or call.room_finished_at is not None:
        return call
    if unanswered and (call.answered or call.status not in (Status.DIALING, Status.RINGING)):
        return call
    # 2: hung up for the do-not-call list (`unanswered`: POST /dnc, an agent's do_not_call
    # report), which the call's reason says; it read "hung up through the API", `by: api`,
    # though nobody had asked to hang that call up (the agent of another call, say).
    mark, by = (HANGUP_FOR_DNC, "do_not_call") if unanswered else (1, "api")
    updated = yield Query(
        "UPDATE calls SET hangup_requested = ?, updated_at = ? WHERE call_id = ? RETURNING *",
        (mark, now, call_id),
    )
    yield from add_entry(call_id, None, "hangup_requested", None, None, {"by": by}, now)
    return row_to_call(updated[0])


def unmark_dial(d: Dialect, call_id: str) -> Program[None]:
    yield Query("UPDATE calls SET dial_started_at = NULL WHERE call_id = ?", (call_id,))


def release_placement(d: Dialect, call_id: str) -> Program[None]:
    released = yield Query(
        "UPDATE calls SET counts_for_rate = 0 WHERE call_id = ? AND counts_for_rate = 1"
        " RETURNING client, created_at",
        (call_id,),
    )
    if released:  # once only: its share of its second's bucket goes back
        yield Query(
            "UPDATE rate_buckets SET n = n - 1 WHERE client = ? AND second = ? AND n > 0",
            (released[0]["client"], rate_second(released[0]["created_at"])),
        )
    yield Query("DELETE FROM idempotency WHERE call_id = ?", (call_id,))


def settle_never_dialled(
    d: Dialect, call_id: str, decide: Decide, now: float, lease_s: float, holder: str
) -> Program[Applied]:
    """See CallStore.settle_never_dialled: `apply`, then the release if it settled the call
    (the row is locked by `apply` until the commit, so a dial marked meanwhile is seen)."""
    applied = yield from apply(
        d,
        call_id,
        "reaped",
        decide,
        None,
        {},
        False,
        now,
        lease_s,
        holder=holder,
        only_if_changed=True,
    )
    if applied.change is not None:
        yield from release_placement(d, call_id)
    return applied


# ----------------------------------------------------------------------------- the reaper


# When room_finished came: its first event's entry (by this server's clock), not the
# room's own end, which a late webhook or the reaper's stand-in for a room found gone dates
# back (to the last the server heard of the call).
_ROOM_FINISHED_CAME = (
    "COALESCE((SELECT MIN(e.at) FROM events e WHERE e.call_id = calls.call_id"
    " AND e.kind = 'room_finished'), room_finished_at)"
)


def stale_live_calls(
    d: Dialect,
    now: float,
    margin_s: float,
    stretch: float = 1.0,
    finished_before: float = 0.0,
    steps: Sequence[tuple[float, float]] = (),
) -> Program[list[LostCall]]:
    """Live calls past any possible end whose room never said it finished, or said so before
    `finished_before` (one that finished since waits out the settle grace: `graceless_finished`
    settles it by what is known; this rule is the backstop for one that rule leaves live).
    `steps`: (when, seconds) the server's clock stepped forward, oldest first, the seconds
    those since gained: a call created before one is that much younger than `now` says."""
    past_end = "created_at + (COALESCE(ringing_timeout_s, 0) + COALESCE(max_duration_s, 0)) * ? + ?"
    # Created before the first step: younger by all of them; since a step, by the later ones
    ends = [f"{past_end} < ?"]
    args: list[Any] = [stretch, margin_s, now - (steps[0][1] if steps else 0.0)]
    for index, (step_at, _) in enumerate(steps):
        later = steps[index + 1][1] if index + 1 < len(steps) else 0.0
        ends.append(f"(created_at >= ? AND {past_end} < ?)")
        args += [step_at, stretch, margin_s, now - later]
    # By when room_finished came, as `graceless_finished` reads it: by the room's own end,
    # dated to the last the server heard of the call by the reaper's stand-in for a room
    # found gone, an unanswered call went straight to "no final event", its grace skipped.
    rows = yield Query(
        f"SELECT {_LAST_SEEN} FROM calls WHERE status IN ({_LIVE_MARKS})"  # noqa: S608
        f" AND (room_finished_at IS NULL OR {_ROOM_FINISHED_CAME} < ?)"
        f" AND ({' OR '.join(ends)})",
        (*LIVE, finished_before, *args),
    )
    return [_lost(r) for r in rows]


def graceless_finished(
    d: Dialect, finished_before: float, late_finished_before: float | None = None
) -> Program[list[str]]:
    """Live calls whose room_finished came before `finished_before` (`_ROOM_FINISHED_CAME`),
    and before `late_finished_before` if it came LATE_FINISH_S or more after the room
    finished. The grace is for the other late events (the answer) to come too, and they come
    with it; after an outage, the agent's retried reports come later."""
    late_before = finished_before if late_finished_before is None else late_finished_before
    rows = yield Query(
        "SELECT call_id FROM calls WHERE room_finished_at IS NOT NULL"  # noqa: S608
        f" AND status IN ({_LIVE_MARKS}) AND {_ROOM_FINISHED_CAME} < ?"
        f" AND ({_ROOM_FINISHED_CAME} - room_finished_at < ? OR {_ROOM_FINISHED_CAME} < ?)",
        (*LIVE, finished_before, LATE_FINISH_S, late_before),
    )
    return _ids(rows)


def never_dialled(
    d: Dialect,
    created_before: float,
    steps: Sequence[tuple[float, float]] = (),
    placer: Placer | None = None,
) -> Program[list[str]]:
    """Live calls whose dial was never marked, recorded before `created_before`; `steps` as
    stale_live_calls reads them: a call recorded before a step of the clock is that much
    younger (a call being placed as the clock stepped forward an hour was settled never
    dialled). With `placer`, also any placed by that server in another run before this run
    began: it is this server, restarted, and its earlier run is gone. One placed by another
    run since is another server by the same name, placing it now (settled, it was not
    dialled, on every pass)."""
    # Created before the first step: younger by all of them; since a step, by the later ones
    ends = ["created_at < ?"]
    args: list[Any] = [created_before - (steps[0][1] if steps else 0.0)]
    for index, (step_at, _) in enumerate(steps):
        later = steps[index + 1][1] if index + 1 < len(steps) else 0.0
        ends.append("(created_at >= ? AND created_at < ?)")
        args += [step_at, created_before - later]
    if placer is not None:
        ends.append("(placed_by = ? AND placed_run <> ? AND created_at < ?)")
        args += [placer.server, placer.run, placer.started_at]
    rows = yield Query(
        "SELECT call_id FROM calls WHERE status = ? AND dial_started_at IS NULL"  # noqa: S608
        f" AND ({' OR '.join(ends)})",
        (Status.DIALING.value, *args),
    )
    return _ids(rows)


# When the server last heard of a call: its last change, timeline entry or agent report.
# The agent's final report is not one: it comes after the call, once its analysis is done
# (seconds to a minute later), and taken as the call's end it was counted as talk time. Its
# transcript's last turn (`at_s` from the answer) stands for it. A report is heard when it
# happened (its own `at`, as the answer's time is taken), bounded by its arrival: the reports
# refused while the server restarted mid-call arrive with its return, and taken then, the
# restart was counted as talk (talk_s 12.5 for a 5 s call). So the timeline lines they
# made (`agent_<kind>`, dated at their arrival) are left to their reports, and so is the
# call's `updated_at` (a late answer's status change dates it at the arrival): every other
# change of a call writes a timeline line of its own, dated as `updated_at` is (a webhook's
# that came after an outage, when it happened: `_line_at`).
_REPORT_EVENTS = ", ".join(f"'agent_{kind}'" for kind in get_args(ReportKind))
_LAST_SEEN = (
    "call_id, dial_started_at, created_at, answered_at, report,"  # noqa: S608 - constants
    " (SELECT MAX(e.at) FROM events e WHERE e.call_id = calls.call_id"
    f" AND e.kind NOT IN ({_REPORT_EVENTS})) AS last_event,"
    " (SELECT MAX(CASE WHEN r.at < r.received_at THEN r.at ELSE r.received_at END)"
    " FROM reports r WHERE r.call_id = calls.call_id AND r.kind <> 'final') AS last_report"
)


def _lost(row: Row) -> LostCall:
    times = [row["created_at"], row["last_event"], row["last_report"]]
    if row["answered_at"] is not None and row["report"]:
        turns = stored_report(str(row["call_id"]), row["report"]).transcript
        if turns:
            times.append(float(row["answered_at"]) + max(t.at_s for t in turns))
    return LostCall(
        str(row["call_id"]),
        row["dial_started_at"] is not None,
        max(float(t) for t in times if t is not None),
    )


def _sandbox_owner(instance: str | None) -> tuple[str, tuple[str, ...]]:
    """The condition (and its argument) for calls in `instance`'s embedded sandbox, or with
    None, calls on a real LiveKit (that name no sandbox)."""
    if instance is None:
        return "sandbox_instance IS NULL", ()
    return "sandbox_instance = ?", (instance,)


def unfinished_rooms(
    d: Dialect, dialled_before: float, sandbox_instance: str | None
) -> Program[list[LostCall]]:
    """Live calls dialled before `dialled_before` whose room never said it finished (the
    rooms to ask LiveKit about): those in `sandbox_instance`'s embedded sandbox, or with None,
    those on a real LiveKit (a sandbox's rooms are known to that sandbox only)."""
    owner, mine = _sandbox_owner(sandbox_instance)
    rows = yield Query(
        f"SELECT {_LAST_SEEN} FROM calls WHERE status IN ({_LIVE_MARKS})"  # noqa: S608
        f" AND dial_started_at < ? AND room_finished_at IS NULL AND {owner} ORDER BY call_id",
        (*LIVE, dialled_before, *mine),
    )
    return [_lost(r) for r in rows]


def unreported_dialled(
    d: Dialect, dialled_before: float, sandbox_instance: str | None
) -> Program[list[str]]:
    """Live calls dialled before `dialled_before` that no agent has reported on, whose line
    and room are not known to have ended (the calls whose agent may never have joined): in
    `sandbox_instance`'s embedded sandbox, or with None, on a real LiveKit."""
    owner, mine = _sandbox_owner(sandbox_instance)
    rows = yield Query(
        f"SELECT call_id FROM calls WHERE status IN ({_LIVE_MARKS})"  # noqa: S608
        " AND dial_started_at < ? AND room_finished_at IS NULL AND callee_left_at IS NULL"
        f" AND {owner} AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.call_id ="
        " calls.call_id) ORDER BY call_id",
        (*LIVE, dialled_before, *mine),
    )
    return _ids(rows)


# The timeline detail of a participant_left that was the call's agent leaving its room (not
# at the room's deletion): the server waits AGENT_GONE_GRACE_S, then ends the call if no
# agent is back. Kept in the database, a wait lost with its server is taken up again.
AGENT_LEFT_DETAIL = "agent_left"
# The detail of a participant_joined that was the call's agent joining its room.
AGENT_JOINED_DETAIL = "agent_joined"
# The detail of a participant_left that was the call's agent leaving as its room was deleted
# (the call's end: not AGENT_LEFT_DETAIL, which starts a wait for the agent to come back).
AGENT_IN_CALL_DETAIL = "agent_in_call"


def agent_seen(call_id: str) -> Program[bool]:
    """Whether an agent showed itself in the call: it reported on it, or its participant
    joined or left the room (the timeline's AGENT_JOINED_DETAIL, AGENT_LEFT_DETAIL,
    AGENT_IN_CALL_DETAIL)."""
    rows = yield Query(
        "SELECT 1 AS seen WHERE EXISTS (SELECT 1 FROM reports WHERE call_id = ?)"
        " OR EXISTS (SELECT 1 FROM events WHERE call_id = ?"
        " AND kind IN ('participant_joined', 'participant_left')"
        " AND (detail LIKE ? OR detail LIKE ? OR detail LIKE ?))",
        (
            call_id,
            call_id,
            f"%{dumps(AGENT_JOINED_DETAIL)}:true%",
            f"%{dumps(AGENT_LEFT_DETAIL)}:true%",
            f"%{dumps(AGENT_IN_CALL_DETAIL)}:true%",
        ),
    )
    return bool(rows)


def agent_gone_unsettled(
    d: Dialect, left_before: float, sandbox_instance: str | None
) -> Program[list[str]]:
    """Live calls whose agent left before `left_before` (a `participant_left` entry whose
    detail says AGENT_LEFT_DETAIL), whose line and room are not known to have ended: in
    `sandbox_instance`'s embedded sandbox, or with None, on a real LiveKit."""
    owner, mine = _sandbox_owner(sandbox_instance)
    rows = yield Query(
        f"SELECT call_id FROM calls WHERE status IN ({_LIVE_MARKS})"  # noqa: S608
        " AND room_finished_at IS NULL AND callee_left_at IS NULL"
        f" AND {owner} AND EXISTS (SELECT 1 FROM events e WHERE e.call_id = calls.call_id"
        " AND e.kind = 'participant_left' AND e.detail LIKE ? AND e.at < ?) ORDER BY call_id",
        (
            *LIVE,
            *mine,
            f"%{dumps(AGENT_LEFT_DETAIL)}:true%",
            left_before,
        ),
    )
    return _ids(rows)


def sandbox_owners(d: Dialect, created_before: float) -> Program[list[str]]:
    rows = yield Query(
        "SELECT DISTINCT sandbox_instance AS owner FROM calls"  # noqa: S608
        f" WHERE sandbox_instance IS NOT NULL AND status IN ({_LIVE_MARKS}) AND created_at < ?"
        " AND room_finished_at IS NULL ORDER BY sandbox_instance",
        (*LIVE, created_before),
    )
    return [str(r["owner"]) for r in rows]


def lost_sandbox_calls(
    d: Dialect, instance: str | None, created_before: float
) -> Program[list[LostCall]]:
    """Live calls whose room was in `instance`'s embedded sandbox (None: calls that name no
    sandbox), created before `created_before`, and whose room never said it finished (those
    settle by the grace rule): each with whether its dial had started and when the server
    last heard of it."""
    owner, mine = _sandbox_owner(instance)
    rows = yield Query(
        f"SELECT {_LAST_SEEN} FROM calls WHERE {owner}"  # noqa: S608
        f" AND status IN ({_LIVE_MARKS}) AND created_at < ? AND room_finished_at IS NULL"
        " ORDER BY created_at, call_id",
        (*mine, *LIVE, created_before),
    )
    return [_lost(r) for r in rows]


def among(d: Dialect, call_ids: list[str], statuses: tuple[str, ...]) -> Program[set[str]]:
    """Which of `call_ids` have a row (in one of `statuses`, if any are given)."""
    where = f" AND status IN ({','.join('?' * len(statuses))})" if statuses else ""
    return (yield from _among(call_ids, where, statuses))


def erased_among(d: Dialect, call_ids: list[str]) -> Program[set[str]]:
    """Which of `call_ids` had their personal data erased on request (their name is gone;
    the retention's erasure keeps names)."""
    where = " AND data_erased_at IS NOT NULL AND caller_name = ''"
    return (yield from _among(call_ids, where, ()))


def _among(call_ids: list[str], where: str, args: tuple[str, ...]) -> Program[set[str]]:
    """Which of `call_ids` have a row meeting `where` (its parameters `args`), CHUNK at a time."""
    found: set[str] = set()
    for start in range(0, len(call_ids), CHUNK):
        chunk = call_ids[start : start + CHUNK]
        rows = yield Query(
            f"SELECT call_id FROM calls WHERE call_id IN ({','.join('?' * len(chunk))}){where}",  # noqa: S608
            (*chunk, *args),
        )
        found.update(_ids(rows))
    return found


def probe_write(d: Dialect, instance: str, now: float) -> Program[None]:
    if d.write_check is not None:
        yield d.write_check
    yield Query(
        "INSERT INTO readiness (instance, at) VALUES (?, ?)"
        " ON CONFLICT (instance) DO UPDATE SET at = excluded.at",
        (instance, now),
    )


# ----------------------------------------------------------------------------- idempotency


def get_idempotent(client: str, key: str) -> Program[StoredAnswer | None]:
    rows = yield Query(
        "SELECT call_id, request_hash, status, body FROM idempotency WHERE client = ? AND key = ?",
        (client, key),
    )
    if not rows:
        return None
    row = rows[0]
    body = json.loads(row["body"]) if row["body"] is not None else None
    return StoredAnswer(str(row["call_id"]), str(row["request_hash"]), row["status"], body)


def answer_idempotent(
    d: Dialect, client: str, key: str, bound_to: str, status: int, body: dict[str, Any]
) -> Program[None]:
    """The answer given under the key, if it is still bound to `bound_to` (its call or
    campaign): a server stalled past the placement bound answered its call after the reaper
    had freed the key and a retry had bound it to a new call, and wrote that call's answer
    over the new one's."""
    yield Query(
        "UPDATE idempotency SET status = ?, body = ? WHERE client = ? AND key = ? AND call_id = ?",
        (status, dumps(body), client, key, bound_to),
    )


# ----------------------------------------------------------------------------- admission


def rate_second(at: float) -> int:
    """The rate bucket of a call created at `at`: its whole second."""
    return math.floor(at)


def last_uncounted_second(now: float) -> int:
    """The latest second the rate no longer counts at `now`. A second counts until it ended
    RATE_WINDOW_S ago, so no minute holds more calls than the limit: counted until it began
    that long ago, calls made at 0.9 s counted for 59.1 s, and as many again were admitted
    within the minute (probe AY)."""
    return rate_second(now - RATE_WINDOW_S - 1)


def last_counted_second(now: float) -> int:
    """The latest second the rate counts at `now`: another server's clock may run a little
    ahead (up to RATE_WINDOW_S). A call dated further ahead was dated by a clock stepped back
    since (NTP): counted, a client's whole last hour of calls counted in every minute's rate
    after a step back of an hour, and it was refused for that hour."""
    return rate_second(now + RATE_WINDOW_S)


def admission_refusal(
    client: str,
    limits: AdmissionLimits,
    now: float,
    number: str | None = None,
    *,
    placing: str = "",
) -> Program[Refusal | None]:
    """Which limit a new call of `client` (to `number`, if given: the do-not-call list is
    then checked first) would exceed now, or None.

    The live cap counts every call not yet over; the rate counts `client`'s calls of the last
    minute that were placed (a call LiveKit refused before dialling gives its share back), by
    whole seconds: `rate_buckets` holds the count of each second, and a second counts while
    it ended less than RATE_WINDOW_S ago (a call made at 0.9 s counts until 61 s).
    """
    if number is not None and (yield from on_dnc_list(number)):
        return Refusal("dnc", 0)
    # One statement for both counts: under the admission lock, each is a round trip more.
    rows = yield Query(
        "SELECT live.n AS live, rate.n AS n, rate.oldest AS oldest FROM"  # noqa: S608 - marks
        f" (SELECT COUNT(*) AS n FROM calls WHERE status IN ({_LIVE_MARKS})"
        " AND call_id <> ?) AS live,"
        " (SELECT SUM(n) AS n, MIN(second) AS oldest FROM rate_buckets"
        " WHERE client = ? AND second > ? AND second <= ? AND n > 0) AS rate",
        (*LIVE, placing, client, last_uncounted_second(now), last_counted_second(now)),
    )
    if int(rows[0]["live"]) >= limits.max_live:
        return Refusal("live", 5)
    if int(rows[0]["n"] or 0) >= limits.per_minute:
        oldest = int(rows[0]["oldest"])  # the oldest counted second leaves the window then
        return Refusal("rate", max(1, math.ceil(oldest + 1 + RATE_WINDOW_S - now)))
    return None


def on_dnc_list(number: str) -> Program[bool]:
    forms = listed_forms(number)
    marks = ", ".join("?" * len(forms))
    rows = yield Query(f"SELECT 1 AS x FROM dnc WHERE number IN ({marks})", forms)  # noqa: S608 - marks only
    return bool(rows)


def add_dnc(
    d: Dialect, numbers: list[str], source: str, call_id: str | None, now: float
) -> Program[int]:
    """Put `numbers` on the do-not-call list (POST /dnc, an agent's do_not_call report); how
    many were not on it. A dial checking the list meanwhile waits for this (listing_lock).
    A number an older release keyed in its old form (listed_forms) is on it already: it was
    counted added and listed a second time, in its current form."""
    if d.listing_lock is not None:
        yield d.listing_lock
    added = 0
    for number in dict.fromkeys(numbers):
        if older := listed_forms(number)[1:]:
            if (yield Query("SELECT 1 AS x FROM dnc WHERE number = ?", older)):
                continue
        rows = yield Query(
            "INSERT INTO dnc (number, source, call_id, added_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING number",
            (number, source, call_id, now),
        )
        added += len(rows)
    return added


def unanswered_calls_to(numbers: list[str]) -> Program[list[str]]:
    """The calls to `numbers` dialled and still dialling or ringing (nobody answered yet),
    oldest first, whose number is on the do-not-call list now. A call whose dial has not
    started is left to start_dial's look at the list: refused as listed, nobody called, its
    Idempotency-Key free, its campaign recipient dnc. A number taken off the list (DELETE
    /dnc) and called again was hung up by an agent's do_not_call report sent again after
    that (a retry whose first answer was lost, a captured report replayed)."""
    found: list[str] = []
    for start in range(0, len(numbers), CHUNK):
        chunk = numbers[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = yield Query(
            f"SELECT call_id, phone_number FROM calls WHERE status IN (?, ?)"  # noqa: S608
            f" AND phone_number IN ({marks}) AND dial_started_at IS NOT NULL ORDER BY created_at",
            (Status.DIALING.value, Status.RINGING.value, *chunk),
        )
        for row in rows:  # few: the calls ringing now
            if (yield from on_dnc_list(row["phone_number"])):
                found.append(str(row["call_id"]))
    return found


def purge_rate_buckets(d: Dialect, now: float) -> Program[int]:
    """Drop the buckets the rate no longer counts at `now` (nor would later: dated ahead)."""
    rows = yield Query(
        "DELETE FROM rate_buckets WHERE second <= ? OR second > ? RETURNING second",
        (last_uncounted_second(now), last_counted_second(now)),
    )
    return len(rows)


# ----------------------------------------------------------------------------- the outbox


def ack_events(d: Dialect, event_ids: list[int], now: float) -> Program[None]:
    for start in range(0, len(event_ids), CHUNK):
        chunk = event_ids[start : start + CHUNK]
        yield Query(
            f"UPDATE outbox SET dispatched_at = ? WHERE id IN ({','.join('?' * len(chunk))})",  # noqa: S608
            (now, *chunk),
        )


GIVEN_UP_NAMED = 20  # given-up events named in one line (the others counted)
# A given-up event's claim: past any clock's now, so it leaves the range of claims run out that
# every take-over reads (outbox_pending, by claimed_until, of the undispatched): kept there, each
# pass read past every one of them, more each day a subscriber failed.
GIVEN_UP_UNTIL = 1e15


def claim_stale_events(
    d: Dialect,
    now: float,
    lease_s: float,
    limit: int,
    holder: str = "",
    take_own: bool = False,
    held: Sequence[int] = (),
) -> Program[list[CallEvent]]:
    """Undispatched events whose holder's lease ran out (it died) and, with `take_own` (as a
    server starts), those `holder` itself held before a restart: take them, oldest first.
    One taken over more than MAX_TAKEOVERS times is given up (`_give_up_events`). The claims
    of `held` (events `holder`'s dispatcher still has, queued behind a slow subscriber, say)
    are renewed first: run out, they were taken over by their own server, each lease, given
    again (a copy queued each time) and counted, and given up after MAX_TAKEOVERS leases of a
    backlog that had never failed."""
    for start in range(0, len(held), CHUNK):
        chunk = held[start : start + CHUNK]
        yield Query(
            "UPDATE outbox SET claimed_until = ? WHERE claimed_by = ?"  # noqa: S608
            " AND dispatched_at IS NULL AND given_up_at IS NULL"
            f" AND id IN ({','.join('?' * len(chunk))})",
            (now + lease_s, holder, *chunk),
        )
    rows = yield Query(
        "UPDATE outbox SET claimed_until = ?, claimed_by = ?, takeovers = takeovers + 1"  # noqa: S608
        " WHERE id IN (SELECT id FROM outbox WHERE dispatched_at IS NULL AND given_up_at IS NULL"
        " AND (claimed_until < ? OR (claimed_by = ? AND ? = 1))"
        f" ORDER BY id LIMIT ?{d.skip_locked})"
        " RETURNING *",
        (now + lease_s, holder, now, holder, int(take_own and bool(holder)), limit),
    )
    over = [row for row in rows if int(row["takeovers"]) > MAX_TAKEOVERS]
    if over:
        yield from _give_up_events(over, now)
    taken = [row for row in rows if int(row["takeovers"]) <= MAX_TAKEOVERS]
    return sorted(_readable_events(taken, lease_s), key=lambda e: e.id)


def _give_up_events(rows: list[Row], now: float) -> Program[None]:
    """Events taken over MAX_TAKEOVERS times already are given up: kept in the outbox (for an
    operator: their data, their call), undispatched, never claimed again; said at ERROR once,
    each named (up to GIVEN_UP_NAMED a line), with how to dispatch one again."""
    rows = sorted(rows, key=lambda row: int(row["id"]))
    ids = [int(row["id"]) for row in rows]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        yield Query(
            f"UPDATE outbox SET given_up_at = ?, claimed_until = ? WHERE id IN"  # noqa: S608
            f" ({','.join('?' * len(chunk))})",
            (now, GIVEN_UP_UNTIL, *chunk),
        )
    named = rows[:GIVEN_UP_NAMED]
    logger.error(
        "%s%s given up after %d take-overs undispatched (each gave it to every subscriber"
        " again; a subscriber kept failing it: see its errors): kept in the outbox, not"
        " dispatched again. Once that is mended, UPDATE outbox SET given_up_at = NULL,"
        " takeovers = 0, claimed_until = 0 WHERE id = <its id> dispatches it again",
        ", ".join(f"event {row['id']} ({row['type']}, {row['call_id']})" for row in named),
        f" and {len(rows) - len(named)} more" if len(rows) > len(named) else "",
        MAX_TAKEOVERS,
    )


def _readable_events(rows: list[Row], lease_s: float) -> list[CallEvent]:
    """The events of claimed outbox rows that read. One that does not (its data cut short by
    a hand edit, or written by another release) raised out of the claim, whose transaction
    rolled back: every pass, no event was taken over, those after it in the batch neither (a
    dead server's call.ended, its campaign's attempt never ended). It stays claimed, to be
    read again once its claim runs out, and is said once a minute (for all such rows)."""
    events = []
    for row in rows:
        try:
            events.append(_row_to_event(row))
        except (ValueError, TypeError, RecursionError) as exc:
            if (more := _UNREADABLE.due("event")) is not None:
                logger.error(
                    "event %s (%s) of call %s no longer reads (outbox.data: %s): it is not"
                    " dispatched; taken up again in %.0f s%s",
                    row["id"],
                    row["type"],
                    row["call_id"],
                    why_unreadable(exc),
                    lease_s,
                    more,
                )
    return events


_OVER_CAMPAIGNS = ", ".join(f"'{status}'" for status in sorted(OVER_STATUSES))


def purge_dispatched_events(d: Dialect, before: float, limit: int | None = None) -> Program[int]:
    """Drop events dispatched before `before` whose customer deliveries are all over (and
    those deliveries): what the retry ladder may still need is kept. At most `limit` of each
    (probe AQ: 406,000 old events in one transaction held the database 11 s, at start-up);
    the rows deleted, events and deliveries.

    Deliveries first, each only if not pending as it is deleted (a row lock's recheck), then
    the events left with none: a redeliver committed between the two statements kept its
    delivery, and its event with it. (Events first, their deliveries deleted by event, took
    such a delivery, pending again and answered 202, with them.)"""
    # A 410 Gone is remembered by its stopped delivery: kept while its campaign (or call)
    # can still have events, or the next one (a campaign resumed after a week's pause) went
    # to the URL that wants no more.
    # The deliveries picked by the same rules as they are deleted by (a limit on the events
    # whose deliveries may go would pick, pass after pass, the same events whose stopped
    # deliveries are kept); the state checked again on the row being deleted.
    bound, bound_args = (" LIMIT ?", (limit,)) if limit is not None else ("", ())
    gone = yield Query(
        "DELETE FROM deliveries WHERE state <> 'pending' AND id IN ("  # noqa: S608
        " SELECT k.id FROM deliveries k JOIN outbox o ON o.id = k.event_id"
        " WHERE o.dispatched_at < ? AND k.state <> 'pending' AND NOT EXISTS ("
        " SELECT 1 FROM deliveries p WHERE p.event_id = o.id AND p.state = 'pending')"
        " AND NOT (k.state = 'stopped' AND (k.call_id IN (SELECT campaign_id FROM campaigns"
        f" WHERE status NOT IN ({_OVER_CAMPAIGNS})) OR k.call_id IN (SELECT call_id FROM calls"
        f" WHERE status IN ({_LIVE_MARKS}))))"
        f"{bound}) RETURNING id",
        (before, *LIVE, *bound_args),
    )
    rows = yield Query(
        "DELETE FROM outbox WHERE id IN ("  # noqa: S608
        " SELECT e.id FROM outbox e WHERE e.dispatched_at < ? AND NOT EXISTS ("
        f" SELECT 1 FROM deliveries d WHERE d.event_id = e.id){bound})"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id) RETURNING id",
        (before, *bound_args),
    )
    return len(gone) + len(rows)


# ----------------------------------------------------------------------------- agent reports


# Reports a call has one of: the answer, the answering-machine verdict, the callee's request
# not to be called again (the final report stands once in: see record_report).
ONCE_A_CALL = frozenset({"answered", "amd", "do_not_call"})


def record_reports(
    d: Dialect,
    reports: Sequence[AgentReport],
    now: float,
    lease_s: float,
    holder: str = "",
    behind: float = 0.0,
) -> Program[list[Applied]]:
    """An agent's reports about one call, stored and applied in order (`record_report`), in
    one transaction. A turn beyond the MAX_TURNS a call keeps is refused alone
    (`too_many_turns`; it wrote nothing): the reports around it still count. An answer is
    decided knowing the answering-machine verdict that follows it in the batch (before a
    final report): reports held up by an outage come together after room_finished, and the
    answer of a call whose room has finished settles it at once (`voicemail` for a machine).
    `behind`: how far the agent's clock is behind this server's (see record_report)."""
    results: list[Applied] = []
    known = _Known("")
    for n, report in enumerate(reports):
        verdict = _verdict_after(reports[n + 1 :]) if report.kind == "answered" else None
        if known.call_id != report.call_id:
            known = _Known(report.call_id)
        try:
            applied = yield from record_report(
                d, report, now, lease_s, holder, verdict, behind, known
            )
        except TooManyTurns:
            applied = Applied(too_many_turns=True)
        results.append(applied)
    return results


@dataclass
class _Known:
    """What a batch of reports' transaction knows of their call (record_reports), so that
    each report does not read it again: its row as the reports before left it (None: not
    read yet, or changed since), and how many turns it keeps (None: not counted yet). From
    its first read to the commit nothing else writes them (the row is locked FOR UPDATE on
    PostgreSQL; SQLite has one writer)."""

    call_id: str
    row: Row | None = None
    turns: int | None = None


def _verdict_after(reports: Sequence[AgentReport]) -> str | None:
    """The category of the first answering-machine verdict in `reports` before a final
    report (a verdict after the final report counts for nothing)."""
    for report in reports:
        if report.kind == "final":
            return None
        if report.kind == "amd" and report.amd is not None:
            return report.amd.category
    return None


def record_report(
    d: Dialect,
    report: AgentReport,
    now: float,
    lease_s: float,
    holder: str = "",
    verdict: str | None = None,
    behind: float = 0.0,
    known: _Known | None = None,
) -> Program[Applied]:
    """Store an agent's report once (by its sequence number) and apply what it says.

    `answered` moves the call to in_progress with `answered_at` the moment it reports
    (bounded by the call's own times); `amd` records the verdict (a machine one settles the
    call as voicemail when it ends); `final` keeps the final report. Once the final report is
    in, a later `amd` or `final` changes nothing (a duplicate). A `turn` beyond the MAX_TURNS
    a call keeps raises TooManyTurns. A report about a call the database does not know stores
    nothing. Nothing moves a final status. `behind`: how far the agent's clock is behind this
    server's (by its token): its `at` is read that much later.
    """
    # Stored with the `at` its agent gave it (the `at` column is this server's): the reading
    # of the agent's clock differs from one send to the next (for an agent ahead, by each
    # token's time on the way), and a report sent again (its answer lost) was no longer the
    # same body: kept a second time, under a new number (_keep_renumbered), its turn shown
    # twice.
    agents_at = report.at
    if behind:
        report = report.model_copy(update={"at": max(0.0, report.at + behind)})
    known = _Known(report.call_id) if known is None else known
    if known.row is None:  # the whole row: what `apply` decides on, if the report changes it
        known.row = yield from _locked_row(d, report.call_id)
        if known.row is None:
            return Applied(unknown_call=True)
    call = known.row
    if (call["report_at"] is not None or call["no_report"]) and report.kind in ("amd", "final"):
        # The call's final report is in: it stands, with the verdict it was made with. A
        # later one (another seq) would rewrite what the customer was already sent. So does
        # a call's end with no agent to report (its call.report said "unavailable").
        return Applied(duplicate=True)
    if call["report_at"] is not None and report.kind == "turn":
        # The final report's transcript is the call's from then on: a turn after it was
        # answered "applied", kept, and never shown.
        return Applied(duplicate=True)
    if call["data_erased_at"] is not None and report.kind in ("turn", "amd", "final"):
        # The retention already erased this call's conversation: keep none of it now (the
        # verdicts stay, as the erasure leaves them).
        if report.kind == "turn":
            return Applied(duplicate=True)
        if report.amd is not None:
            report = report.model_copy(update={"amd": report.amd.model_copy(update={"reason": ""})})
        if report.final is not None:
            report = report.model_copy(update={"final": _without_personal_data(report.final)})
    if report.kind == "turn":
        # A call keeps as many turns as its final report may carry, and shows them all.
        if known.turns is None:
            counted = yield Query(
                "SELECT COUNT(*) AS n FROM reports WHERE call_id = ? AND kind = 'turn'",
                (report.call_id,),
            )
            known.turns = int(counted[0]["n"])
        if known.turns >= MAX_TURNS:
            seen = yield Query(
                "SELECT 1 AS seen FROM reports WHERE call_id = ? AND seq = ?",
                (report.call_id, report.seq),
            )
            if seen:  # one of the turns kept, sent again
                return Applied(duplicate=True)
            raise TooManyTurns(report.call_id, MAX_TURNS)
    body = (report.model_copy(update={"at": agents_at}) if behind else report).to_json().decode()
    values = (report.call_id, report.seq, report.kind, body, report.at, now)
    once = report.kind in ONCE_A_CALL
    if once:
        # Reported once: under another seq, or under its own again (sent again, or a resumed
        # job's, numbered from 0 anew), it is the same fact again (each would add a line to
        # the call's timeline: 51,000 of them made its GET 7 MB). Kept only if none of its
        # kind is (the call's row is locked: no other report of it is being kept meanwhile).
        stored = yield Query(
            "INSERT INTO reports (call_id, seq, kind, body, at, received_at)"
            " SELECT ?, ?, ?, ?, ?, ?"
            " WHERE NOT EXISTS (SELECT 1 FROM reports WHERE call_id = ? AND kind = ?)"
            " ON CONFLICT DO NOTHING RETURNING seq",
            (*values, report.call_id, report.kind),
        )
    else:
        stored = yield Query(
            "INSERT INTO reports (call_id, seq, kind, body, at, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING seq",
            values,
        )
    seq = report.seq
    if not stored:
        if once and (
            yield Query(
                "SELECT 1 AS seen FROM reports WHERE call_id = ? AND kind = ? LIMIT 1",
                (report.call_id, report.kind),
            )
        ):
            return Applied(duplicate=True)
        kept = yield from _keep_renumbered(report, body, now)
        if kept is None:
            return Applied(duplicate=True)
        seq = kept
    call_id = report.call_id
    kind = f"agent_{report.kind}"
    detail: dict[str, Any] = {"seq": seq}
    if report.kind == "turn":
        known.turns = (known.turns or 0) + 1  # (counted above)
        return Applied()  # a turn: stored, read back with the call
    known.row = None  # the reports below change it (an amd verdict returns it as changed)
    if report.kind == "answered":
        answered_at = min(max(report.at, call["created_at"]), now)
        # A LiveKit webhook that showed the answer first (a participant_left with its last
        # sip.callStatus "hangup", ahead of this report held up by an outage) dated it no
        # later than itself: at the hang-up, and the whole talk counted as ringing (talk_s 0
        # for a call talked through). The agent's moment of the answer is the truer one.
        # (Asked of the row read above: the report normally comes first, and a statement
        # that changes nothing cost every call's answer a write of its own.)
        shown = call["answered_at"]
        redated = call["answered"] and shown is not None and shown > answered_at
        if redated:
            yield Query(
                "UPDATE calls SET answered_at = ? WHERE call_id = ?", (answered_at, call_id)
            )
        return (
            yield from apply(
                d,
                call_id,
                kind,
                # (a verdict after the final report, stored earlier, counts for nothing)
                answer_reported
                if verdict is None or call["report_at"] is not None
                else _answer_with(verdict),
                None,
                detail,
                False,
                now,
                lease_s,
                answered_at=answered_at,
                holder=holder,
                row=None if redated else call,
            )
        )

    def noted(row: Row) -> Program[Applied]:
        """The report's line in its call's timeline, changing no status: `row` is the call
        as this transaction left it."""
        return apply(
            d, call_id, kind, _no_change, None, detail, False, now, lease_s, holder=holder, row=row
        )

    if report.kind == "do_not_call":  # (the list only: its call's row is as read)
        yield from add_dnc(d, [call["phone_number"]], "agent", call_id, now)
        return (yield from noted(call))
    if report.kind == "amd" and report.amd is not None:
        rows = yield Query(
            "UPDATE calls SET amd = ? WHERE call_id = ? RETURNING *",
            (report.amd.category, call_id),
        )
        known.row = rows[0]  # as the reports after it find it (its line changes no call)
        detail["amd"] = report.amd.category
        return (yield from noted(rows[0]))
    if report.kind == "final" and report.final is not None:
        final = report.final
        rows = yield Query(
            "UPDATE calls SET report = ?, report_at = ?, ended_by = COALESCE(?, ended_by)"
            " WHERE call_id = ? RETURNING *",
            (final.model_dump_json(), now, final.ended_by, call_id),
        )
        detail["turns"] = len(final.transcript)
        applied = yield from noted(rows[0])
        if applied.after is None:  # the row is locked since the first read: never
            return applied
        events = yield from _add_events(
            d, (CALL_REPORT,), Status(call["status"]), applied.after, now, lease_s, holder
        )
        return Applied(
            before=applied.before, after=applied.after, events=events, released=applied.released
        )
    return Applied()


def _keep_renumbered(report: AgentReport, body: str, now: float) -> Program[int | None]:
    """A report whose `seq` another report of its call holds: None when it is a report kept
    before (the same body, under this seq or the one it was kept under: sent again after an
    answer was lost); else the number it is kept under now, after the call's last. LiveKit
    gives a job whose worker was lost to another worker with the callee still on the line
    (`resuming`), and the job, started again, numbers its reports from 0: they were dropped
    as duplicates, its final report among them. (A report a call has one of never gets
    here a second time: record_report's look for its kind.)"""
    same = yield Query(
        "SELECT 1 AS seen FROM reports WHERE call_id = ? AND body = ? LIMIT 1",
        (report.call_id, body),
    )
    if same:
        return None
    last = yield Query("SELECT MAX(seq) AS last FROM reports WHERE call_id = ?", (report.call_id,))
    seq = int(last[0]["last"]) + 1
    yield Query(
        "INSERT INTO reports (call_id, seq, kind, body, at, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (report.call_id, seq, report.kind, body, report.at, now),
    )
    logger.info(
        "call %s: the agent's %s report #%d has the number of another report of the call (a"
        " job resumed on another worker numbers its reports from 0 again): kept as #%d",
        report.call_id,
        report.kind,
        report.seq,
        seq,
    )
    return seq


def _no_change(_state: Any) -> None:
    return None


def _answer_with(verdict: str) -> Decide:
    """`answer_reported`, knowing the verdict reported with the answer (if none is in yet)."""

    def decide(state: CallState) -> Change | None:
        return answer_reported(replace(state, amd=state.amd or verdict))

    return decide


def erase_call_data(d: Dialect, ended_before: float, now: float, limit: int) -> Program[int]:
    """Erase what the conversation said (transcript, summary, extracted fields, the reasons
    of the success and answering-machine verdicts) of at most `limit` calls that ended before
    `ended_before`, the oldest first; status, timings, verdicts and usage stay."""
    # Locked as read: a final report landing before this transaction's UPDATE was
    # overwritten with the report read here (none), and lost (PostgreSQL's other writers).
    rows = yield Query(
        "SELECT call_id, report FROM calls WHERE ended_at < ? AND data_erased_at IS NULL"  # noqa: S608
        f" ORDER BY ended_at, call_id LIMIT ?{d.for_update}",
        (ended_before, limit),
    )
    for row in rows:
        yield from _erase_call(row["call_id"], row["report"], now, placement=False)
    return len(rows)


# Calls an erasure on request erases in one transaction: a number's calls all in one held
# the write lock every other write waits for (SQLite; 20,000 calls to one number: 2 s).
ERASE_NOW_BATCH = 200


def calls_to_erase(
    d: Dialect, *, call_id: str | None = None, numbers: Sequence[str] = ()
) -> Program[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The calls an erasure on request (POST /calls/{call_id}/erase, POST /calls/erase)
    covers: one call, or every call to one of `numbers` (a number's forms, see
    listed_forms), in the order they ended; and those of them live (their conversation still
    coming: then nothing is erased, all or nothing)."""
    args: tuple[str, ...]
    if call_id is not None:
        where, args = "call_id = ?", (call_id,)
    else:
        where, args = f"phone_number IN ({','.join('?' * len(numbers))})", tuple(numbers)
    rows = yield Query(
        f"SELECT call_id, status FROM calls WHERE {where}"  # noqa: S608 - marks only
        " ORDER BY ended_at, call_id",
        args,
    )
    live = tuple(row["call_id"] for row in rows if row["status"] in LIVE)
    return tuple(row["call_id"] for row in rows), live


def configs_of(call_ids: Sequence[str]) -> Program[tuple[dict[str, Any], ...]]:
    """What `call_ids` were placed with (their configs, as erase_calls_now returns them)."""
    marks = ",".join("?" * len(call_ids))
    rows = yield Query(
        f"SELECT call_id, config FROM calls WHERE call_id IN ({marks})",  # noqa: S608 - marks
        tuple(call_ids),
    )
    read = (stored_config(row["call_id"], row["config"]) for row in rows if row["config"])
    return tuple(config for config in read if config is not None)  # (see _erase_call)


def erase_calls_now(
    d: Dialect, now: float, call_ids: Sequence[str]
) -> Program[tuple[tuple[str, ...], tuple[dict[str, Any], ...]]]:
    """Erase on request the personal data of `call_ids` (ERASE_NOW_BATCH at most, ended, see
    calls_to_erase): what the retention erases, and also what the call was placed with that
    names or describes its callee (see _config_without_personal_data), in the call and in
    its events. The number stays. The calls erased, in the order they ended, and what they
    had been placed with (their configs before, to find where else it is: config.json)."""
    # Locked in the order the retention locks them (the order they ended): in another, the
    # two erasing the same calls at once deadlocked (PostgreSQL).
    marks = ",".join("?" * len(call_ids))
    rows = yield Query(
        f"SELECT call_id, report FROM calls WHERE call_id IN ({marks})"  # noqa: S608 - marks
        f" ORDER BY ended_at, call_id{d.for_update}",
        tuple(call_ids),
    )
    placed_with = []
    for row in rows:
        config = yield from _erase_call(row["call_id"], row["report"], now, placement=True)
        if config is not None:
            placed_with.append(config)
    return tuple(row["call_id"] for row in rows), tuple(placed_with)


def _erase_call(
    call_id: str, report: str | None, now: float, *, placement: bool
) -> Program[dict[str, Any] | None]:
    """One call's erasure, the retention's and on request (`placement`: what it was placed
    with too), in the call, its reports and its events. With `placement`, the call's config
    as it was before (None if it has none)."""
    kept = _without_personal_data(stored_report(call_id, report)) if report else None
    _READ_REPORTS.forget(report)
    yield Query(
        "UPDATE calls SET report = ?, data_erased_at = ? WHERE call_id = ?",
        (kept.model_dump_json() if kept else None, now, call_id),
    )
    placed_with: dict[str, Any] | None = None
    if placement:
        rows = yield Query("SELECT config FROM calls WHERE call_id = ?", (call_id,))
        config = rows[0]["config"] if rows else None
        # (one that no longer reads is read as none, and erased whole: it raised, and the
        # erasure of every call in the batch, a number's, failed)
        placed_with = stored_config(call_id, config) if config else None
        _READ_CONFIGS.forget(config)
        yield Query(
            "UPDATE calls SET caller_name = '', config = ? WHERE call_id = ?",
            (dumps(_config_without_personal_data(placed_with)) if placed_with else None, call_id),
        )
        # Its Idempotency-Key's hash of the request it came with (name, instructions)
        yield Query(
            "UPDATE idempotency SET request_hash = ? WHERE call_id = ?",
            (ERASED_REQUEST_HASH, call_id),
        )
    # The reports' bodies said it too: the turns, the final report, and the reason of the
    # answering-machine verdict (what the callee's line said). The verdict itself stays
    # in the call's `amd`.
    yield Query(
        "DELETE FROM reports WHERE call_id = ? AND kind IN ('turn', 'amd', 'final')",
        (call_id,),
    )
    # The call's events carried the conversation too (kept for redelivery): erase it there.
    events = yield Query("SELECT id, data FROM outbox WHERE call_id = ?", (call_id,))
    for event in events:
        data = _event_without_personal_data(_erasable_data(call_id, event), now)
        if placement:
            data["name"] = ""
            if isinstance(data.get("config"), dict):
                data["config"] = _config_without_personal_data(data["config"])
        yield Query("UPDATE outbox SET data = ? WHERE id = ?", (dumps(data), event["id"]))
    # What a refusing receiver answered, quoted in its delivery's last_error, may echo the
    # event it refused (a framework's validation error quoting its input): the name, a turn.
    said = yield Query(
        "SELECT id, last_error FROM deliveries WHERE call_id = ? AND last_error LIKE ?",
        (call_id, f"%{RECEIVER_SAID}%"),
    )
    for delivery in said:
        yield Query(
            "UPDATE deliveries SET last_error = ? WHERE id = ?",
            (erased_answer(delivery["last_error"]), delivery["id"]),
        )
    return placed_with


def erased_answer(error: str) -> str:
    """A delivery's `last_error` with the receiver's answer it quotes cut off (an erasure)."""
    return f"{error.split(RECEIVER_SAID, 1)[0]} (the receiver's answer: erased)"


def _config_without_personal_data(config: dict[str, Any]) -> dict[str, Any]:
    """A call's config (as GET /calls/{id} shows it) without what names or describes its
    callee: name, instructions, additional_params, first message, voicemail message, success
    criteria. Its language, voice, limits, voicemail action and analysis fields stay."""
    kept = {**config, "caller_name": "", "agent_instructions": "", "additional_params": {}}
    kept.pop("first_message", None)
    if isinstance(kept.get("voicemail"), dict):
        kept["voicemail"] = {k: v for k, v in kept["voicemail"].items() if k != "message"}
    if isinstance(kept.get("analysis"), dict):
        kept["analysis"] = {k: v for k, v in kept["analysis"].items() if k != "success_criteria"}
    return kept


def _erasable_data(call_id: str, event: Row) -> dict[str, Any]:
    """An event's data to erase from; for data that does not read (cut short by a hand edit,
    written by another release) its call id alone: whatever it said goes. It raised out of
    the erasure, whose transaction rolled back: every reaper pass, the retention's erasure
    stopped at its call, and no call's conversation was erased past its retention (nor on
    request, that call's)."""
    data, why = json_object(lambda: json.loads(event["data"]))
    if data is not None:
        return data
    if (more := _UNREADABLE.due("erased event")) is not None:
        logger.warning(
            "call %s: its event %s no longer reads (outbox.data: %s); erasing its"
            " conversation erased all of it but the call id%s",
            call_id,
            event["id"],
            why,
            more,
        )
    return {"call_id": call_id}


def _event_without_personal_data(data: dict[str, Any], erased_at: float) -> dict[str, Any]:
    """An event's call data with the conversation erased (as GET /calls/{id} shows it then),
    saying when: an empty transcript reads otherwise as a call in which nothing was said."""
    erased = {**data, "transcript": [], "summary": None, "extracted": None}
    erased["personal_data_erased_at"] = iso_time(erased_at)
    erased["analysis_errors"] = []
    if isinstance(data.get("success"), dict):
        erased["success"] = {**data["success"], "reason": ""}
    return erased


def _without_personal_data(report: CallReport) -> CallReport:
    success = report.success.model_copy(update={"reason": ""}) if report.success else None
    return report.model_copy(
        update={
            "transcript": [],
            "summary": None,
            "extracted": None,
            "analysis_errors": [],
            "success": success,
        }
    )


# ----------------------------------------------------------------------------- customer webhooks

_DELIVERY_COLUMNS = (
    "d.id, d.event_id, d.call_id, d.url, d.webhook_id, d.state, d.attempts, d.round_start,"
    " d.next_attempt_at,"
    " d.last_status, d.last_error, d.created_at, d.delivered_at,"
    " o.type AS event_type, o.data AS event_data, o.created_at AS event_created_at"
)


def _row_to_delivery(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=int(row["id"]),
        event_id=int(row["event_id"]),
        call_id=row["call_id"],
        url=row["url"],
        webhook_id=row["webhook_id"],
        state=row["state"],
        attempts=int(row["attempts"]),
        round_start=int(row["round_start"]),
        next_attempt_at=row["next_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        event_type=row["event_type"] or "",
        event_data=json.loads(row["event_data"]) if row["event_data"] else {},
        event_created_at=row["event_created_at"] or 0.0,
    )


def _deliveries_by_id(
    ids: list[int], claimed_for: float | None = None
) -> Program[list[WebhookDelivery]]:
    """`claimed_for`: they were just claimed for that long; those that do not read are left
    out (`_readable_deliveries`)."""
    if not ids:
        return []
    rows = yield Query(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN outbox o ON o.id = d.event_id"  # noqa: S608
        f" WHERE d.id IN ({','.join('?' * len(ids))}) ORDER BY d.id",
        tuple(ids),
    )
    if claimed_for is not None:
        return _readable_deliveries(rows, claimed_for)
    return [_row_to_delivery(r) for r in rows]


def _readable_deliveries(rows: list[Row], lease_s: float) -> list[WebhookDelivery]:
    """The claimed deliveries that read. One whose event does not (its data cut short by a
    hand edit, or written by another release) raised out of the claim, whose transaction
    rolled back: every pass, no customer webhook was sent, to any receiver. It stays
    claimed, to be read again once its claim runs out (its call's later events to that URL
    wait behind it, as behind any delivery not yet made), and is said once a minute (for
    all such rows)."""
    deliveries = []
    for row in rows:
        try:
            deliveries.append(_row_to_delivery(row))
        except (ValueError, TypeError, RecursionError) as exc:
            if (more := _UNREADABLE.due("delivery")) is not None:
                logger.error(
                    "customer webhook delivery %s (event %s, %s of %s) no longer reads"
                    " (outbox.data: %s): it is not sent, nor its call's later events to that"
                    " URL; taken up again in %.0f s%s",
                    row["id"],
                    row["event_id"],
                    row["event_type"],
                    row["call_id"],
                    why_unreadable(exc),
                    lease_s,
                    more,
                )
    return deliveries


# Of one call and one URL only the earliest pending delivery may be sent (events arrive in
# order; a later one waits while an earlier one is retrying).
_HEAD = (
    " NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.call_id = d.call_id AND e.url = d.url"
    " AND e.state = 'pending' AND e.id < d.id)"
)


def _claim(
    d: Dialect, now: float, lease_s: float, limit: int, holder: str, of_call: tuple[str, str] | None
) -> Program[list[WebhookDelivery]]:
    """Claim up to `limit` deliveries due now that nobody holds, each its call's and URL's
    earliest pending one (of `of_call`'s call and URL only, if given)."""
    only, args = ("", ()) if of_call is None else (" AND d.call_id = ? AND d.url = ?", of_call)
    # `+claimed_until`: not by the index of claims (every pending delivery is unclaimed), but
    # by the due heads' (SQLite chose the first, and read every pending delivery again).
    rows = yield Query(
        "UPDATE deliveries SET claimed_until = ?, claimed_by = ? WHERE id IN ("  # noqa: S608
        " SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.behind = 0"
        f" AND d.next_attempt_at <= ? AND +d.claimed_until < ?{only} AND{_HEAD}"
        f" ORDER BY d.next_attempt_at, d.id LIMIT ?{d.skip_locked}) RETURNING id",
        (now + lease_s, holder, now, now, *args, limit),
    )
    return (yield from _deliveries_by_id(sorted(int(r["id"]) for r in rows), lease_s))


def claim_due_deliveries(
    d: Dialect, now: float, lease_s: float, limit: int, holder: str = ""
) -> Program[list[WebhookDelivery]]:
    """Deliveries due now, held by `holder` for `lease_s`: of one call and one URL, only the
    earliest pending one (a later event waits while an earlier one is retrying). Claims whose
    lease ran out (a dead server's) are taken over."""
    return (yield from _claim(d, now, lease_s, limit, holder, None))


def record_delivery(
    d: Dialect,
    delivery_id: int,
    outcome: DeliveryOutcome,
    now: float,
    take_next: tuple[float, str] | None = None,
) -> Program[RecordedDelivery]:
    """Record an attempt. With `take_next` (lease_s, holder), its call's next delivery to that
    URL, now the earliest pending one, is claimed for `holder` if it is due and nobody holds
    it, in the same transaction: the sender starts it without a claim of its own."""
    # A retry or a failure decided in a round a redeliver has since replaced (it came while
    # this attempt was out: this attempt is the new round's first) goes by the new round: its
    # first retry. The old round's last rung failed it, or its 6 h pause was kept.
    renewable = (
        outcome.state in ("pending", "failed")
        and outcome.round_start is not None
        and outcome.first_retry_at is not None
    )
    again = "? = 1 AND round_start <> ?"
    decided_in = (int(renewable), outcome.round_start or 0)
    if outcome.error is not None and RECEIVER_SAID in outcome.error:
        # A refusal quoting the receiver's answer (it may echo the event: the name, a turn)
        # that came back after its call was erased: the erasure cut the quotes it found, not
        # this one. The call's row is read FOR SHARE: an erasure under way is waited for.
        erased = yield Query(
            "SELECT data_erased_at FROM calls WHERE call_id ="  # noqa: S608 - dialect text
            f" (SELECT call_id FROM deliveries WHERE id = ?){d.for_share}",
            (delivery_id,),
        )
        if erased and erased[0]["data_erased_at"] is not None:
            outcome = replace(outcome, error=erased_answer(outcome.error))
    rows = yield Query(
        f"UPDATE deliveries SET state = CASE WHEN {again} THEN 'pending' ELSE ? END,"  # noqa: S608 - constant text
        " attempts = attempts + 1, last_status = ?, last_error = ?,"
        f" next_attempt_at = CASE WHEN {again} THEN ? ELSE COALESCE(?, next_attempt_at) END,"
        " claimed_until = 0,"
        " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
        " WHERE id = ? AND state = 'pending' RETURNING call_id, url",
        (
            *decided_in,
            outcome.state,
            outcome.status,
            outcome.error,
            *decided_in,
            outcome.first_retry_at,
            outcome.next_attempt_at,
            outcome.state,
            now,
            delivery_id,
        ),
    )
    if not rows:  # no longer pending (redelivered meanwhile and recorded by that send)
        return RecordedDelivery()
    of_call = (rows[0]["call_id"], rows[0]["url"])
    yield from _next_head(*of_call)  # (a no-op while this one is still pending)
    if outcome.state == "stopped":  # 410 Gone: this URL wants no more of this call
        yield Query(
            "UPDATE deliveries SET state = 'stopped', last_error = ?"
            " WHERE call_id = ? AND url = ? AND state = 'pending'",
            (GONE_EARLIER, *of_call),
        )
        return RecordedDelivery()
    if take_next is not None:
        lease_s, holder = take_next
        taken = yield from _claim(d, now, lease_s, 1, holder, of_call)
        if taken:
            return RecordedDelivery(taken=taken[0])
    head = yield Query(
        "SELECT next_attempt_at, claimed_until FROM deliveries"
        " WHERE call_id = ? AND url = ? AND state = 'pending' ORDER BY id LIMIT 1",
        of_call,
    )
    if not head or head[0]["claimed_until"] >= now:  # nothing waits, or a server holds it
        return RecordedDelivery()
    return RecordedDelivery(next_at=float(head[0]["next_attempt_at"]))


def release_claims(d: Dialect, holder: str) -> Program[int]:
    """A restarted server gives back what it held before it stopped (it is not sending it)."""
    if not holder:
        return 0
    rows = yield Query(
        "UPDATE deliveries SET claimed_until = 0 WHERE claimed_by = ? AND state = 'pending'"
        " AND claimed_until > 0 RETURNING id",
        (holder,),
    )
    return len(rows)


def free_behind(d: Dialect) -> Program[int]:
    """Pending deliveries marked behind an earlier one that is over (`behind` 1 with none
    before it): claimable again. None should be, but a server of an earlier release,
    beside this one's on one database, records a delivery without making the next one
    the head (`_next_head`); how many there were."""
    rows = yield Query(
        "UPDATE deliveries SET behind = 0 WHERE id IN (SELECT d.id FROM deliveries d"  # noqa: S608
        f" WHERE d.state = 'pending' AND d.behind = 1 AND{_HEAD}) RETURNING id",
    )
    return len(rows)


def renew_delivery_claim(d: Dialect, delivery_id: int, holder: str, until: float) -> Program[bool]:
    """See CallStore.renew_delivery_claim: `holder`'s claim, if nobody claimed it since."""
    rows = yield Query(
        "UPDATE deliveries SET claimed_until = ? WHERE id = ? AND claimed_by = ?"
        " AND state = 'pending' RETURNING id",
        (until, delivery_id, holder),
    )
    return bool(rows)


def pull_back_deliveries(d: Dialect, now: float, step_s: float, holder: str) -> Program[int]:
    """The server's clock stepped back `step_s`: the pending deliveries due after `now` were
    dated by the clock before the step, and wait `step_s` less (never past now); so do the
    claims `holder` holds. How many deliveries were pulled back."""
    rows = yield Query(
        "UPDATE deliveries SET next_attempt_at = CASE WHEN next_attempt_at - ? < ? THEN ?"
        " ELSE next_attempt_at - ? END WHERE state = 'pending' AND next_attempt_at > ?"
        " RETURNING id",
        (step_s, now, now, step_s, now),
    )
    yield Query(
        "UPDATE deliveries SET claimed_until = CASE WHEN claimed_until - ? < ? THEN ?"
        " ELSE claimed_until - ? END WHERE claimed_by = ? AND state = 'pending'"
        " AND claimed_until > ?",
        (step_s, now, now, step_s, holder, now),
    )
    return len(rows)


def defer_deliveries(d: Dialect, ids: list[int], until: float) -> Program[None]:
    """Give claimed deliveries back unattempted, due again at `until`."""
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        yield Query(
            "UPDATE deliveries SET claimed_until = 0, next_attempt_at = ?"  # noqa: S608
            f" WHERE id IN ({','.join('?' * len(chunk))}) AND state = 'pending'",
            (until, *chunk),
        )


def next_delivery_at(d: Dialect, unclaimed_at: float | None) -> Program[float | None]:
    """When the next pending delivery is due; with `unclaimed_at`, only among those a sender
    could claim then: no server holds it, and it is its call's and URL's earliest pending one
    (a later one is taken by whoever records the one before it: `record_delivery`), or when
    the first claim held then runs out (a dead server's deliveries are taken over then: a
    survivor with nothing else due looked again only after IDLE_WAKE_S, 30 s)."""
    if unclaimed_at is None:
        rows = yield Query(
            "SELECT MIN(next_attempt_at) AS at FROM deliveries WHERE state = 'pending'"
        )
        at = rows[0]["at"]
        return None if at is None else float(at)
    rows = yield Query(  # (`+claimed_until`: by the due heads' index, as `_claim` reads)
        "SELECT d.next_attempt_at AS at FROM deliveries d WHERE d.state = 'pending'"  # noqa: S608
        f" AND d.behind = 0 AND +d.claimed_until < ? AND{_HEAD} ORDER BY d.next_attempt_at LIMIT 1",
        (unclaimed_at,),
    )
    held = yield Query(
        "SELECT MIN(claimed_until) AS at FROM deliveries"
        " WHERE state = 'pending' AND claimed_until >= ?",
        (unclaimed_at,),
    )
    times = [float(r["at"]) for r in (*rows, *held) if r["at"] is not None]
    return min(times) if times else None


def list_deliveries(
    d: Dialect, call_id: str, limit: int | None = None, after: int = 0
) -> Program[list[WebhookDelivery]]:
    """Every delivery of `call_id` (a call, or a campaign's own events); with `limit`, the
    first `limit` after the id `after`, preceded by the earliest pending delivery to each
    URL at or before `after` (what a later one waits for: `waiting_for`)."""
    if limit is None:
        rows = yield Query(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN outbox o ON o.id = d.event_id"  # noqa: S608
            " WHERE d.call_id = ? ORDER BY d.id",
            (call_id,),
        )
        return [_row_to_delivery(r) for r in rows]
    heads = yield Query(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN outbox o ON o.id = d.event_id"  # noqa: S608
        " WHERE d.call_id = ? AND d.id <= ? AND d.id IN (SELECT MIN(id) FROM deliveries"
        " WHERE call_id = ? AND state = 'pending' GROUP BY url) ORDER BY d.id",
        (call_id, after, call_id),
    )
    rows = yield Query(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN outbox o ON o.id = d.event_id"  # noqa: S608
        " WHERE d.call_id = ? AND d.id > ? ORDER BY d.id LIMIT ?",
        (call_id, after, limit),
    )
    return [_row_to_delivery(r) for r in (*heads, *rows)]


def get_delivery(delivery_id: int) -> Program[WebhookDelivery | None]:
    """The delivery of this id, or None (read only)."""
    found = yield from _deliveries_by_id([delivery_id])
    return found[0] if found else None


def redeliver(d: Dialect, delivery_id: int, now: float) -> Program[WebhookDelivery | None]:
    """Send a delivery again (same webhook-id), whatever became of it. A send in flight (its
    claim still held) is that send: the claim stays, so no second copy goes out beside it.
    Pending again, it is not delivered: its delivered_at goes until it is delivered again
    (a redelivered one showed "pending" beside its earlier delivery's time)."""
    rows = yield Query(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, round_start = attempts,"
        " delivered_at = NULL, behind = 0,"
        " claimed_until = CASE WHEN state = 'pending' AND claimed_until > ?"
        " THEN claimed_until ELSE 0 END"
        " WHERE id = ? RETURNING id",
        (now, now, delivery_id),
    )
    if not rows:
        return None
    found = yield from _deliveries_by_id([delivery_id])
    return found[0] if found else None
