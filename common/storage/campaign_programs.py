"""Campaign and do-not-call transaction programs (see programs.py for how programs run).

The scheduler's state is here, in rows, so that any server may carry a campaign on: the
campaign row holds its pacing slot (`next_dial_at`) and which server drives it (a lease);
each recipient row its state and when it is due; each attempt is a row with the unique key
(campaign, recipient, attempt), written before the call is placed and linked to the call in
the call's own transaction (programs.link_attempt).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from common.calls.models import (
    ERASED_REQUEST_HASH,
    AttemptRef,
    CallEvent,
    DncEntry,
    IdempotencyClaim,
)
from common.calls.outcomes import Status
from common.calls.phone import listed_forms
from common.campaigns.model import (
    CALLING,
    CAMPAIGN_CANCELED,
    CAMPAIGN_COMPLETED,
    CAMPAIGN_PAUSED,
    CAMPAIGN_RESUMED,
    CAMPAIGN_STARTED,
    CANCELED,
    DNC,
    DUE_STATES,
    ERASED,
    INVALID,
    OPEN_STATES,
    OVER_STATUSES,
    PENDING,
    WAITING_WINDOW,
    Attempt,
    AttemptPlan,
    CampaignRecord,
    CampaignSpec,
    CampaignStatus,
    NewCampaign,
    NewRecipient,
    RecipientRecord,
    RetryPolicy,
    after_attempt,
)
from common.campaigns.windows import call_zones, next_allowed
from common.repeats import Repeats
from common.storage.base import UploadGivenUp
from common.storage.paging import Before, before_clause
from common.storage.programs import (
    CHUNK,
    LIVE,
    Dialect,
    Program,
    Query,
    ReadTexts,
    Row,
    add_delivery,
    add_entry,
    answer_idempotent,
    bind_key,
    dumps,
    json_object,
    on_dnc_list,
    why_unreadable,
)

logger = logging.getLogger(__name__)

NOT_DIALLED = "not_dialled"  # an attempt whose call was recorded but never dialled
# Placed again 5 s later, then twice as long each time up to 10 min: about 30 min over the
# tries, so that LiveKit down for a minute or a restart does not end the campaign. 5 tries
# 5 s apart (25 s) ended every recipient `failed`, nobody called, the campaign `completed`.
NOT_DIALLED_RETRY_S = 5.0
NOT_DIALLED_MAX_DELAY_S = 600.0
MAX_NOT_DIALLED = 10
# The timeline line of a call its campaign's pause withdrew before its dial (CallService):
# its attempt is not_dialled but no sign of an outage, so it counts towards nothing.
PAUSED_BEFORE_DIAL = "campaign_paused"
# ... and of one whose number was put on the do-not-call list meanwhile: its recipient is dnc.
LISTED_BEFORE_DIAL = "dnc_listed"
# ... and of one whose recipient's calling window closed meanwhile: not_dialled, counted
# towards nothing, its recipient waiting for the window's next opening.
WINDOW_CLOSED_BEFORE_DIAL = "window_closed"
# The kinds of a call withdrawn before its dial with no sign of an outage.
_WITHDRAWN_KINDS = (PAUSED_BEFORE_DIAL, WINDOW_CLOSED_BEFORE_DIAL)
INSERT_ROWS = 300  # recipients per INSERT: 9 parameters each, far under either backend's limit
# Recipients stored in one transaction while a campaign is created: ~10 ms of the database's
# one thread (SQLite) each; all 100,000 in one held every other request ~2 s (probe AP).
STAGE_ROWS = 1000
# An upload not touched for this long is given up (its server stopped mid-way): the reaper
# removes what it stored. A batch takes milliseconds; a database this slow answers 503 anyway.
UPLOAD_GIVEN_UP_S = 600.0
_DUE = ",".join(f"'{s}'" for s in DUE_STATES)
# A recipient due now (one parameter: now), by its state and its time: the list a driver
# reads, and the checks of a recipient from that list, which may be older than a retry
# scheduled since, as it is deferred or its attempt begins.
_DUE_NOW = f"next_at <= ? AND state IN ({_DUE})"
_OPEN = ",".join(f"'{s}'" for s in OPEN_STATES)
_OVER_CAMPAIGNS = ",".join(f"'{s.value}'" for s in sorted(OVER_STATUSES))
# A recipient's row written this far ahead of the clock was written before the clock stepped
# back (or by a server whose clock is ahead): its wait is counted again from now.
STEP_BACK_TOLERANCE_S = 1.0


class CampaignConflict(Exception):
    """The campaign cannot do what was asked in its status (pause a completed one...)."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"campaign is {status}; cannot {action} it")
        self.status = status


# Resumes of one campaign in any hour: each pause and resume is an event kept a week and sent
# to its webhook (up to 28 KB a pair with the largest defaults): a client toggling a campaign
# in a loop wrote 100 pairs a second, 3 MB/s, with nothing to stop it.
MAX_RESUMES = 20
RESUMES_WINDOW_S = 3600.0


class TooManyResumes(Exception):
    """A campaign resumed MAX_RESUMES times within the last RESUMES_WINDOW_S: not again yet."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"campaign was resumed {MAX_RESUMES} times in the last hour, the most it may be;"
            f" it may be resumed again in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class OnList:
    """begin_attempt found the recipient's number on the do-not-call list: it is skipped."""

    idx: int


# ----------------------------------------------------------------------------- rows


# What a row that no longer reads raises (its spec hand-edited, or written by another
# release: a window key this one does not know, a time zone its tzdata lacks).
_UNREADABLE_ROW = (ValueError, KeyError, TypeError, AttributeError, RecursionError)
_UNREADABLE = Repeats()


# A campaign's spec is written once, at its creation, and the claim loop reads every campaign
# it drives each second: parsing 2,009 specs (their windows too) was 70 ms of a 162 ms tick
# (HU). Kept by their text, as a call's config is, within the same bounds of count and size.
_READ_SPECS: ReadTexts[CampaignSpec] = ReadTexts(4096, 8 * 1024 * 1024)


def spec_of(text: str) -> CampaignSpec:
    """A campaign's spec from its row's JSON, parsed once for each text while kept. Shared by
    every record of that campaign (a frozen CampaignSpec): read it, never change it."""
    return _READ_SPECS.read(text, lambda text: CampaignSpec.from_json(json.loads(text)))


def _row_to_campaign(
    row: Row, counts: dict[str, int], next_due: float | None, next_due_number: str | None = None
) -> CampaignRecord:
    """The campaign; one whose spec no longer reads with its `unreadable` (why), read alike
    by its page, the list, its controls and its events: what a driver does with it is the
    claim's (_readable_campaign)."""
    try:
        spec, unreadable = spec_of(row["spec"]), None
    except _UNREADABLE_ROW as exc:
        spec, unreadable = None, f"campaigns.spec: {why_unreadable(exc)}"
    return CampaignRecord(
        campaign_id=row["campaign_id"],
        name=row["name"],
        client=row["client"],
        status=CampaignStatus(row["status"]),
        stored_spec=spec,
        webhook_url=row["webhook_url"],
        total=int(row["total"]),
        start_at=row["start_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        next_dial_at=row["next_dial_at"],
        placed=int(row["placed"]),
        first_dial_at=row["first_dial_at"],
        last_dial_at=row["last_dial_at"],
        counts=counts,
        next_due_at=next_due,
        next_due_number=next_due_number,
        unreadable=unreadable,
    )


def _row_to_recipient(row: Row, history: tuple[Attempt, ...] = ()) -> RecipientRecord:
    fields = json.loads(row["fields"])
    if not isinstance(fields, dict):  # (its zones, its call's body read it as one)
        raise TypeError(f"fields: a JSON {type(fields).__name__}, not an object")
    return RecipientRecord(
        idx=int(row["idx"]),
        row_number=int(row["row_number"]),
        phone_number=row["phone_number"],
        fields=fields,
        state=row["state"],
        attempts=int(row["attempts"]),
        next_at=row["next_at"],
        last_call_id=row["last_call_id"],
        errors=json.loads(row["errors"]) if row["errors"] else None,
        history=history,
    )


def _row_to_attempt(row: Row) -> Attempt:
    return Attempt(
        attempt=int(row["attempt"]),
        state=row["state"],
        call_id=row["call_id"],
        status=row["status"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
    )


# ----------------------------------------------------------------------------- campaigns


def stage_recipients(
    d: Dialect,
    new: NewCampaign,
    first: int,
    created: float,
    touched: float,
    *,
    live_after: float,
) -> Program[None]:
    """One batch of a campaign's recipients (STAGE_ROWS from `first`), stored before its
    row, which create_campaign writes when they all are: until then nothing shows them
    (every reader starts from the campaign's row), and its `campaign_uploads` row says the
    upload is alive (`touched`; UploadGivenUp if it was taken for given up meanwhile, not
    touched since `live_after`). A number on the do-not-call list now is `dnc` from the start,
    wherever its window is (one listed later is caught when its turn comes)."""
    if first == 0:
        yield Query(
            "INSERT INTO campaign_uploads (campaign_id, touched_at) VALUES (?, ?)",
            (new.campaign_id, touched),
        )
    else:
        alive = yield Query(
            "UPDATE campaign_uploads SET touched_at = ? WHERE campaign_id = ? AND touched_at >= ?"
            " RETURNING campaign_id",
            (touched, new.campaign_id, live_after),
        )
        if not alive:
            raise UploadGivenUp(new.campaign_id)
    start_at = max(new.start_at, created)
    batch = new.recipients[first : first + STAGE_ROWS]
    for start in range(0, len(batch), INSERT_ROWS):
        chunk = batch[start : start + INSERT_ROWS]
        args: list[Any] = []
        for r in chunk:
            errors = dumps(r.errors) if r.errors else None
            fields = dumps(r.fields)
            args += (new.campaign_id, r.idx, r.row_number, r.phone_number, fields, r.state)
            args += (max(r.next_at or start_at, start_at), errors, created)
        yield Query(
            "INSERT INTO campaign_recipients (campaign_id, idx, row_number, phone_number,"  # noqa: S608 - constant text
            " fields, state, next_at, errors, updated_at) VALUES "
            + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
            tuple(args),
        )
    if batch:
        yield Query(
            "UPDATE campaign_recipients SET state = ?, updated_at = ? WHERE campaign_id = ?"
            " AND idx BETWEEN ? AND ? AND state IN (?, ?)"
            " AND phone_number IN (SELECT number FROM dnc)",
            (DNC, created, new.campaign_id, batch[0].idx, batch[-1].idx, PENDING, WAITING_WINDOW),
        )
        yield from _listed_in_old_form(new.campaign_id, batch, created)


def _listed_in_old_form(
    campaign_id: str, batch: Sequence[NewRecipient], now: float
) -> Program[None]:
    """A batch's recipients whose number an older release listed in its old form (a Mexican
    mobile's +52 1 ..., see listed_forms) are `dnc` from the start too, as a call to them is
    refused: they waited for their window (shown pending, the campaign's finish reckoned
    with them) to be found listed at their turn."""
    old_forms = {
        forms[-1]: r.idx
        for r in batch
        if r.state in (PENDING, WAITING_WINDOW) and len(forms := listed_forms(r.phone_number)) > 1
    }
    if not old_forms:
        return
    marks = ",".join("?" * len(old_forms))
    listed = yield Query(
        f"SELECT number FROM dnc WHERE number IN ({marks})",  # noqa: S608 - marks only
        tuple(old_forms),
    )
    idxs = [old_forms[row["number"]] for row in listed]
    if idxs:
        yield Query(
            "UPDATE campaign_recipients SET state = ?, updated_at = ? WHERE campaign_id = ?"  # noqa: S608
            f" AND idx IN ({','.join('?' * len(idxs))})",
            (DNC, now, campaign_id, *idxs),
        )


def create_campaign(
    d: Dialect,
    new: NewCampaign,
    now: float,
    claim: IdempotencyClaim | None = None,
    answer: dict[str, Any] | None = None,
    *,
    live_after: float,
    start_now: bool = False,
    lease_s: float = 0.0,
    holder: str = "",
    enforce_hours: bool = True,
) -> Program[list[CallEvent]]:
    """The campaign's row, over the recipients stage_recipients stored (UploadGivenUp if
    their upload was given up, not touched since `live_after`); with `claim`, its
    Idempotency-Key bound to it in the same transaction, with the `answer` its retries get
    (KeyTaken, and nothing written, if the key is bound already). `start_now` (no start_at,
    or one past): the campaign is `running` from its creation, with its campaign.started
    event (returned), as the scheduler's claim would start it a tick later: it was created
    `scheduled`, and its create answer (and a GET until that tick) said so, though it had
    started."""
    if claim is not None:
        yield from bind_key(claim, new.campaign_id, now)
        kept = yield from _without_rows_erased(d, new, answer or {})
        yield from answer_idempotent(d, claim.client, claim.key, new.campaign_id, 201, kept)
    taken = yield Query(
        "DELETE FROM campaign_uploads WHERE campaign_id = ? AND touched_at >= ?"
        " RETURNING campaign_id",
        (new.campaign_id, live_after),
    )
    if not taken:
        raise UploadGivenUp(new.campaign_id)
    status = CampaignStatus.RUNNING if start_now else CampaignStatus.SCHEDULED
    yield Query(
        "INSERT INTO campaigns (campaign_id, name, client, status, spec, webhook_url, total,"
        " start_at, started_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.campaign_id,
            new.name,
            new.client,
            status.value,
            dumps(new.spec.to_json()),
            new.webhook_url,
            len(new.recipients),
            max(new.start_at, now),
            now if start_now else None,
            now,
            now,
        ),
    )
    if not start_now:
        return []
    started = yield from _event(
        d, new.campaign_id, CAMPAIGN_STARTED, now, lease_s, holder, enforce_hours
    )
    return [started]


def _without_rows_erased(
    d: Dialect, new: NewCampaign, answer: dict[str, Any]
) -> Program[dict[str, Any]]:
    """The campaign's answer (its refused rows, `invalid_rows`) as its Idempotency-Key keeps
    it, without the messages of rows erased on request while the campaign was stored: the
    erasure (POST /calls/erase of their number) found the rows stored before this campaign's
    row and erased them, but no answer yet, and the one written here quoted what they were
    refused for (a name in a language column) to every retry, for good. Locked as the
    erasure locks them (PostgreSQL): one under way is waited for, and one after finds this
    answer to erase."""
    listed = answer.get("invalid_rows")
    if not isinstance(listed, list) or not listed:
        return answer
    rows = {e.get("row") for e in listed if isinstance(e, dict)}
    indexes = []
    for recipient in new.recipients:  # the listed rows are the first refused ones
        if recipient.state == INVALID and recipient.row_number in rows:
            indexes.append(recipient.idx)
            if len(indexes) == len(rows):
                break
    erased: set[int] = set()
    for start in range(0, len(indexes), CHUNK):
        chunk = indexes[start : start + CHUNK]
        found = yield Query(
            "SELECT row_number, errors FROM campaign_recipients WHERE campaign_id = ?"  # noqa: S608
            f" AND idx IN ({','.join('?' * len(chunk))}) ORDER BY idx{d.for_update}",
            (new.campaign_id, *chunk),
        )
        erased.update(
            int(row["row_number"])
            for row in found
            if row["errors"]
            and any(e.get("error") == ERASED_ERROR for e in json.loads(row["errors"]))
        )
    if not erased:
        return answer
    shown = [
        {**e, "error": ERASED_ERROR} if isinstance(e, dict) and e.get("row") in erased else e
        for e in listed
    ]
    return {**answer, "invalid_rows": shown}


def give_up_upload(d: Dialect, campaign_id: str) -> Program[None]:
    """A campaign whose creation failed after some of its recipients were stored: they are
    the reaper's to remove (discard_given_up_upload)."""
    yield Query("UPDATE campaign_uploads SET touched_at = 0 WHERE campaign_id = ?", (campaign_id,))


def discard_given_up_upload(d: Dialect, before: float, limit: int) -> Program[int]:
    """Up to `limit` recipients of an upload given up (failed, or not touched since
    `before`), and its row once none is left: the rows removed."""
    # The upload's row is locked (skipped if another server's reaper, or its uploader in a
    # batch, holds it): two reapers on one upload saw their DELETEs' rows vanish under each
    # other (0 < limit) and dropped the mark with rows left, owned by nobody. It is marked
    # given up (0) as taken: an uploader whose clock disagrees (skew) then fails its next
    # batch (UploadGivenUp) instead of creating a campaign with rows removed.
    given_up = yield Query(
        "SELECT campaign_id, touched_at FROM campaign_uploads WHERE touched_at < ?"  # noqa: S608
        f" ORDER BY touched_at LIMIT 1{d.skip_locked}",
        (before,),
    )
    if not given_up:
        return 0
    campaign_id = given_up[0]["campaign_id"]
    if given_up[0]["touched_at"] != 0:
        yield Query(
            "UPDATE campaign_uploads SET touched_at = 0 WHERE campaign_id = ?", (campaign_id,)
        )
    gone = yield Query(
        "DELETE FROM campaign_recipients WHERE campaign_id = ? AND idx IN ("
        " SELECT idx FROM campaign_recipients WHERE campaign_id = ? ORDER BY idx LIMIT ?)"
        " RETURNING idx",
        (campaign_id, campaign_id, limit),
    )
    if len(gone) < limit:
        yield Query("DELETE FROM campaign_uploads WHERE campaign_id = ?", (campaign_id,))
    return len(gone)


def campaign_exists(d: Dialect, campaign_id: str) -> Program[bool]:
    """Its row is there (an upload's staged recipients have none yet)."""
    rows = yield Query("SELECT 1 AS known FROM campaigns WHERE campaign_id = ?", (campaign_id,))
    return bool(rows)


def get_campaign(
    d: Dialect, campaign_id: str, lock: bool = False
) -> Program[CampaignRecord | None]:
    rows = yield Query(
        f"SELECT * FROM campaigns WHERE campaign_id = ?{d.for_update if lock else ''}",  # noqa: S608
        (campaign_id,),
    )
    if not rows:
        return None
    counted = yield Query(
        "SELECT state, COUNT(*) AS n FROM campaign_recipients WHERE campaign_id = ? GROUP BY state",
        (campaign_id,),
    )
    due = yield Query(  # the next recipient due: its time, its number and fields (its zones)
        "SELECT next_at, phone_number, fields FROM campaign_recipients WHERE campaign_id = ?"  # noqa: S608 - constant text
        f" AND state IN ({_DUE}) ORDER BY next_at, idx LIMIT 1",  # noqa: S608 - constant text
        (campaign_id,),
    )
    counts = {r["state"]: int(r["n"]) for r in counted}
    if not due:
        return _row_to_campaign(rows[0], counts, None)
    record = _row_to_campaign(rows[0], counts, due[0]["next_at"], due[0]["phone_number"])
    params = _params_of(due[0]["fields"])
    return replace(record, next_due_params=params) if params is not None else record


def _params_of(fields: str) -> Any:
    """A recipient's additional_params (where its zones may come from: shown with the
    campaign for its next due recipient, read for a retry's window); None if its fields do
    not read (the driver's read of the due list says so). Raised, it failed every read of
    the campaign: its events (a start among them, in the scheduler's claim, which no
    campaign then passed), its page, the list of campaigns; and an attempt's end."""
    read, _ = json_object(lambda: json.loads(fields))
    return read.get("additional_params") if read is not None else None


def list_campaigns(d: Dialect, limit: int, before: Before | None) -> Program[list[CampaignRecord]]:
    clause, args = before_clause(before or Before(float("inf")), "campaign_id")
    rows = yield Query(
        f"SELECT campaign_id FROM campaigns WHERE {clause}"  # noqa: S608 - our own text
        " ORDER BY created_at DESC, campaign_id DESC LIMIT ?",
        (*args, limit),
    )
    found = []
    for row in rows:
        campaign = yield from get_campaign(d, row["campaign_id"])
        if campaign is not None:
            found.append(campaign)
    return found


def claim_campaigns(
    d: Dialect, now: float, lease_s: float, holder: str, limit: int, enforce_hours: bool = True
) -> Program[tuple[list[CampaignRecord], list[CallEvent]]]:
    """The due campaigns this server drives for `lease_s` (its own, and those whose driver's
    lease ran out); a scheduled one starts now, with its campaign.started event."""
    # Our own first, waiting for the row if one of our own transactions holds it (a driver's
    # attempt): skipped, a campaign we drive read as lost, and its driver was stopped and
    # started again mid-attempt. Then others' whose lease ran out, skipping rows another
    # server holds.
    own = yield Query(
        "UPDATE campaigns SET claimed_until = ? WHERE claimed_by = ?"
        " AND status IN ('scheduled', 'running') AND start_at <= ?"
        " RETURNING campaign_id, status, created_at, start_at",
        (now + lease_s, holder, now),
    )
    others = yield Query(
        "UPDATE campaigns SET claimed_by = ?, claimed_until = ? WHERE campaign_id IN ("  # noqa: S608
        " SELECT campaign_id FROM campaigns WHERE status IN ('scheduled', 'running')"
        " AND start_at <= ? AND claimed_until < ? AND claimed_by != ?"
        f" ORDER BY created_at LIMIT ?{d.skip_locked})"
        " RETURNING campaign_id, status, created_at, start_at",
        (holder, now + lease_s, now, now, holder, limit),
    )
    # A running campaign is due whatever its start_at: one created (or started) just before
    # the server's clock stepped back has its start_at, and its first recipients' due time,
    # ahead of the clock, and it placed no call until the clock caught up. (A range of the
    # same index, empty but after such a step.)
    # The claim's condition stands in the UPDATE itself too: PostgreSQL checks it again on
    # a row another server claimed (or paused) meanwhile (it waited for that server's lock),
    # where the subquery's answer was read before; both servers drove the campaign a tick.
    free = "(claimed_by = ? OR claimed_until < ?)"
    stepped = yield Query(
        "UPDATE campaigns SET claimed_by = ?, claimed_until = ? WHERE campaign_id IN ("  # noqa: S608
        " SELECT campaign_id FROM campaigns WHERE status IN ('scheduled', 'running')"
        f" AND start_at > ? AND status = 'running' AND {free}"
        f" ORDER BY created_at LIMIT ?) AND status = 'running' AND {free}"
        " RETURNING campaign_id, status, created_at, start_at",
        (holder, now + lease_s, now, holder, now, limit, holder, now),
    )
    rows = sorted([*own, *others, *stepped], key=lambda r: (r["created_at"], r["campaign_id"]))
    claimed: list[CampaignRecord] = []
    events: list[CallEvent] = []
    for row in rows:
        read = yield from _readable_campaign(d, row["campaign_id"], lease_s)
        if read is None:
            continue
        campaign = read
        if row["status"] == CampaignStatus.RUNNING.value and row["start_at"] > now:
            # The clock stepped back since it started: its recipients still due at its start
            # (their first time, not a retry's nor a refusal's own) are due now.
            yield Query(
                "UPDATE campaign_recipients SET next_at = ? WHERE campaign_id = ?"
                " AND next_at = ? AND state = ?",
                (now, row["campaign_id"], row["start_at"], PENDING),
            )
        if row["status"] == CampaignStatus.SCHEDULED.value:
            yield Query(
                "UPDATE campaigns SET status = 'running', started_at = ?, updated_at = ?"
                " WHERE campaign_id = ?",
                (now, now, row["campaign_id"]),
            )
            events.append(
                (
                    yield from _event(
                        d, row["campaign_id"], CAMPAIGN_STARTED, now, lease_s, holder, enforce_hours
                    )
                )
            )
            started = yield from driving_state(d, row["campaign_id"])
            if started is None:
                continue
            campaign = started
        claimed.append(campaign)
    return claimed, events


def _readable_campaign(
    d: Dialect, campaign_id: str, lease_s: float
) -> Program[CampaignRecord | None]:
    """A claimed campaign as its driver needs it; None if it is gone, or does not read. One
    that does not read raised out of the claim, whose transaction rolled back: every tick,
    no campaign was claimed (none started, none of a stopped server's taken over). It is
    said once a minute (for all such rows), and not held by this server: once this claim
    runs out, any server may take it (one of a newer release may read it), this one too,
    which tries it again then."""
    campaign = yield from driving_state(d, campaign_id)
    if campaign is None or campaign.unreadable is None:
        return campaign
    if (more := _UNREADABLE.due("campaign")) is not None:
        logger.error(
            "campaign %s no longer reads (%s): it is not driven; tried again in %.0f s"
            " (its page shows the rest; POST /campaigns/%s/cancel ends it)%s",
            campaign_id,
            campaign.unreadable,
            lease_s,
            campaign_id,
            more,
        )
    yield Query(
        "UPDATE campaigns SET claimed_by = '' WHERE campaign_id = ?",  # its claim runs out
        (campaign_id,),
    )
    return None


def driving_state(d: Dialect, campaign_id: str) -> Program[CampaignRecord | None]:
    """The campaign row alone (no counts): what a driver needs, cheap at any size."""
    rows = yield Query("SELECT * FROM campaigns WHERE campaign_id = ?", (campaign_id,))
    return _row_to_campaign(rows[0], {}, None) if rows else None


def _own_webhook_url(campaign_id: str, spec: str) -> object:
    """The webhook_url a campaign's defaults name; one whose spec does not read is taken to
    name one (left as it is, said). Raised, it stopped the server's start (with
    CALLS_WEBHOOK_URL set), every start, whatever the other campaigns."""
    try:
        return json.loads(spec)["defaults"].get("webhook_url")
    except _UNREADABLE_ROW as exc:
        if (more := _UNREADABLE.due("campaign webhook")) is not None:
            logger.error(
                "campaign %s no longer reads (campaigns.spec: %s): its events are left to go"
                " where they went, not pointed at CALLS_WEBHOOK_URL%s",
                campaign_id,
                why_unreadable(exc),
                more,
            )
        return True


def follow_default_webhook_url(d: Dialect, url: str, now: float) -> Program[int]:
    """Campaigns not over whose defaults name no webhook_url of their own send their events to
    `url` (CALLS_WEBHOOK_URL as this server starts), as their calls do: it was fixed at the
    campaign's creation, so once CALLS_WEBHOOK_URL was changed (a receiver moved) its calls'
    events went to the new receiver and its campaign.paused, .resumed and .completed to the
    old one (none, for one created with webhooks off). The number of campaigns moved."""
    rows = yield Query(
        "SELECT campaign_id, spec, webhook_url FROM campaigns"  # noqa: S608 - constant text
        f" WHERE status NOT IN ({_OVER_CAMPAIGNS})",  # noqa: S608 - constant text
    )
    moved = 0
    for row in rows:
        if row["webhook_url"] == url or _own_webhook_url(row["campaign_id"], row["spec"]):
            continue
        yield Query(
            "UPDATE campaigns SET webhook_url = ?, updated_at = ? WHERE campaign_id = ?",
            (url, now, row["campaign_id"]),
        )
        moved += 1
    return moved


def release_campaigns(d: Dialect, holder: str) -> Program[None]:
    """A stopping server lets others drive its campaigns at once."""
    yield Query("UPDATE campaigns SET claimed_until = 0 WHERE claimed_by = ?", (holder,))


def control_campaign(
    d: Dialect,
    campaign_id: str,
    action: str,
    now: float,
    lease_s: float,
    holder: str,
    enforce_hours: bool = True,
) -> Program[tuple[CampaignRecord | None, list[CallEvent]]]:
    """pause, resume or cancel; CampaignConflict when its status does not allow it."""
    current = yield from get_campaign(d, campaign_id, lock=True)
    if current is None:
        return None, []
    status = current.status
    allowed = {
        "pause": {CampaignStatus.SCHEDULED, CampaignStatus.RUNNING},
        "resume": {CampaignStatus.PAUSED},
        "cancel": {CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED},
    }[action]
    if status not in allowed:
        raise CampaignConflict(status.value, action)
    if action == "resume":  # (pause and cancel, which stop calls, are never held back)
        yield from _check_resumes(campaign_id, now)
    starts_now = False
    if action == "pause":
        new, event_type, ended = CampaignStatus.PAUSED, CAMPAIGN_PAUSED, None
        yield from _withdraw_placing(campaign_id, PENDING, now)
    elif action == "resume":
        # Paused before its start_at and resumed after it: running from now, with its
        # campaign.started, as one created with a start_at past is (it was answered
        # `scheduled`, and shown so until the scheduler's next tick, though it had started).
        starts_now = current.started_at is None and current.start_at <= now
        running = current.started_at is not None or starts_now
        new = CampaignStatus.RUNNING if running else CampaignStatus.SCHEDULED
        event_type, ended = CAMPAIGN_RESUMED, None
    else:
        new, event_type, ended = CampaignStatus.CANCELED, CAMPAIGN_CANCELED, now
        yield from _withdraw_placing(campaign_id, CANCELED, now)
        yield from _hang_up_undialled(campaign_id, now)
        yield Query(
            "UPDATE campaign_recipients SET state = ?, updated_at = ? WHERE campaign_id = ?"  # noqa: S608 - constant text
            f" AND state IN ({_DUE})",  # noqa: S608 - constant text
            (CANCELED, now, campaign_id),
        )
    yield Query(
        "UPDATE campaigns SET status = ?, ended_at = ?, updated_at = ?,"
        " started_at = COALESCE(started_at, ?) WHERE campaign_id = ?",
        (new.value, ended, now, now if starts_now else None, campaign_id),
    )
    events = []
    if starts_now:  # first: a receiver told it resumed had never been told it started
        started = yield from _event(
            d, campaign_id, CAMPAIGN_STARTED, now, lease_s, holder, enforce_hours
        )
        events.append(started)
    events.append(
        (yield from _event(d, campaign_id, event_type, now, lease_s, holder, enforce_hours))
    )
    after = yield from get_campaign(d, campaign_id)
    return after, events


def _check_resumes(campaign_id: str, now: float) -> Program[None]:
    """TooManyResumes when the campaign's last MAX_RESUMES resumes (its events, kept a week)
    all fall within the last RESUMES_WINDOW_S."""
    rows = yield Query(
        "SELECT created_at FROM outbox WHERE call_id = ? AND type = ? AND created_at > ?"
        " ORDER BY created_at DESC LIMIT ?",
        (campaign_id, CAMPAIGN_RESUMED, now - RESUMES_WINDOW_S, MAX_RESUMES),
    )
    if len(rows) < MAX_RESUMES:
        return
    oldest = float(rows[-1]["created_at"])
    wait = oldest + RESUMES_WINDOW_S - now  # (at most the window: a clock stepped back)
    raise TooManyResumes(max(1, min(int(RESUMES_WINDOW_S), int(wait) + 1)))


def _withdraw_placing(campaign_id: str, state: str, now: float) -> Program[None]:
    """Paused or canceled: the attempts being placed whose call is not recorded yet are
    taken back (their placing, here or on another server, then records no call: link_attempt
    finds no attempt), their recipients `state` (pending: due again on resume). Left, a
    canceled campaign's were dialled after the cancel, or stayed `calling` for good."""
    rows = yield Query(
        "DELETE FROM campaign_attempts WHERE campaign_id = ? AND state = 'placing' RETURNING idx",
        (campaign_id,),
    )
    for row in rows:
        yield Query(
            "UPDATE campaign_recipients SET state = ?, attempts = attempts - 1, next_at = ?,"
            " updated_at = ? WHERE campaign_id = ? AND idx = ? AND state = ?",
            (state, now, now, campaign_id, row["idx"], CALLING),
        )
    if rows:
        yield Query(
            "UPDATE campaigns SET placed = placed - ? WHERE campaign_id = ?",
            (len(rows), campaign_id),
        )


def _hang_up_undialled(campaign_id: str, now: float) -> Program[None]:
    """Canceled: its calls recorded but not dialled yet (the agent's dispatch still on its
    way) are marked to be hung up, as POST /calls/{id}/hangup marks them; their placing then
    does not dial (the dial mark and this are one order in the database)."""
    rows = yield Query(
        "UPDATE calls SET hangup_requested = 1, updated_at = ? WHERE campaign_id = ?"
        " AND dial_started_at IS NULL AND hangup_requested = 0 AND status = ?"
        " RETURNING call_id",
        (now, campaign_id, Status.DIALING.value),
    )
    for row in rows:
        detail = {"by": "campaign", "campaign_id": campaign_id}
        yield from add_entry(row["call_id"], None, "hangup_requested", None, None, detail, now)


def _event(
    d: Dialect,
    campaign_id: str,
    event_type: str,
    now: float,
    lease_s: float,
    holder: str,
    enforce_hours: bool,
) -> Program[CallEvent]:
    """A campaign event in the outbox (keyed by the campaign id), and its customer delivery
    (the campaign as the API shows it, `enforce_hours` as CAMPAIGN_ENFORCE_CALLING_HOURS)."""
    campaign = yield from get_campaign(d, campaign_id)
    assert campaign is not None  # noqa: S101 - read in this transaction
    data = campaign.to_json(now, enforce_hours)
    rows = yield Query(
        "INSERT INTO outbox (call_id, type, from_status, data, created_at, claimed_until,"
        " claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (campaign_id, event_type, None, dumps(data), now, now + lease_s, holder),
    )
    event_id = int(rows[0]["id"])
    if campaign.webhook_url:  # after a 410 Gone to an earlier one, stopped
        yield from add_delivery(d, event_id, campaign_id, campaign.webhook_url, now)
    return CallEvent(event_id, campaign_id, event_type, data, now, None)


def complete_if_done(
    d: Dialect,
    campaign_id: str,
    now: float,
    lease_s: float,
    holder: str,
    enforce_hours: bool = True,
) -> Program[list[CallEvent]]:
    rows = yield Query(
        "SELECT 1 AS x FROM campaign_recipients WHERE campaign_id = ?"  # noqa: S608 - constant text
        f" AND state IN ({_OPEN}) LIMIT 1",  # noqa: S608 - constant text
        (campaign_id,),
    )
    if rows:
        return []
    # A paused one too: its last calls, dialled before the pause, ended with nobody left to
    # call; paused, it waited for a resume that had nothing to do.
    done = yield Query(
        "UPDATE campaigns SET status = 'completed', ended_at = ?, updated_at = ?"
        " WHERE campaign_id = ? AND status IN ('running', 'paused') RETURNING campaign_id",
        (now, now, campaign_id),
    )
    if not done:
        return []
    return [
        (yield from _event(d, campaign_id, CAMPAIGN_COMPLETED, now, lease_s, holder, enforce_hours))
    ]


# ----------------------------------------------------------------------------- recipients


# A due recipient whose row no longer reads is set aside for this long (still pending, read
# again then: called once its row is mended).
UNREADABLE_RETRY_S = 300.0


class DueRecipients(NamedTuple):
    readable: list[RecipientRecord]
    unreadable: list[int]  # those that do not read, by idx: for set_aside_recipients


def due_recipients(d: Dialect, campaign_id: str, now: float, limit: int) -> Program[DueRecipients]:
    rows = yield Query(
        f"SELECT * FROM campaign_recipients WHERE campaign_id = ? AND {_DUE_NOW}"  # noqa: S608 - constant text
        " ORDER BY next_at, idx LIMIT ?",
        (campaign_id, now, limit),
    )
    return _readable_recipients(campaign_id, rows)


def _readable_recipients(campaign_id: str, rows: list[Row]) -> DueRecipients:
    """The due recipients that read, and those that do not (their fields hand-edited, or
    written by another release), said once a minute (for all such rows). Raised, one failed
    the driver's read each step: none of the campaign's recipients was called again, and it
    never ended."""
    due = DueRecipients([], [])
    for row in rows:
        try:
            due.readable.append(_row_to_recipient(row))
        except _UNREADABLE_ROW as exc:
            due.unreadable.append(int(row["idx"]))
            if (more := _UNREADABLE.due("recipient")) is not None:
                logger.error(
                    "campaign %s: recipient %s (row %s) no longer reads (%s): it is not"
                    " called, the others are; read again in %.0f s (GET"
                    " /campaigns/%s/recipients shows it)%s",
                    campaign_id,
                    row["idx"],
                    row["row_number"],
                    why_unreadable(exc),
                    UNREADABLE_RETRY_S,
                    campaign_id,
                    more,
                )
    return due


def set_aside_recipients(
    d: Dialect, campaign_id: str, idxs: Sequence[int], now: float
) -> Program[int]:
    """Due recipients whose rows no longer read wait UNREADABLE_RETRY_S (pending still, read
    again then). Left due, a due list of DUE_BATCH of them, all due before the rest, read
    none that could be called, every step, and the rest were never called. How many."""
    if not idxs:
        return 0
    rows = yield Query(
        "UPDATE campaign_recipients SET next_at = ?, updated_at = ?"  # noqa: S608 - our own text
        f" WHERE campaign_id = ? AND idx IN ({','.join('?' * len(idxs))}) AND {_DUE_NOW}"
        " RETURNING idx",
        (now + UNREADABLE_RETRY_S, now, campaign_id, *idxs, now),
    )
    return len(rows)


def next_due_at(d: Dialect, campaign_id: str) -> Program[float | None]:
    """When the campaign's next recipient falls due (a retry's time, its calling window's
    opening), or None when none waits to be called."""
    rows = yield Query(
        "SELECT MIN(next_at) AS at FROM campaign_recipients WHERE campaign_id = ?"  # noqa: S608 - constant text
        f" AND state IN ({_DUE})",  # noqa: S608 - constant text
        (campaign_id,),
    )
    at = rows[0]["at"] if rows else None
    return None if at is None else float(at)


def defer_recipient(
    d: Dialect,
    campaign_id: str,
    idx: int,
    state: str,
    until: float,
    now: float,
    errors: list[dict[str, Any]] | None = None,
) -> Program[None]:
    """A recipient due now waits until `until` (its calling window), or ends in `state` with
    `errors` (a window that never opens); one not due (a retry scheduled since the driver's
    list was read) keeps its own time."""
    yield Query(
        "UPDATE campaign_recipients SET state = ?, next_at = ?, errors = COALESCE(?, errors),"  # noqa: S608 - constant text
        f" updated_at = ? WHERE campaign_id = ? AND idx = ? AND {_DUE_NOW}",  # noqa: S608
        (state, until, dumps(errors) if errors else None, now, campaign_id, idx, now),
    )


def list_recipients(
    d: Dialect, campaign_id: str, state: str | None, limit: int, after: int | None
) -> Program[list[RecipientRecord]]:
    where, args = "campaign_id = ? AND idx > ?", [campaign_id, -1 if after is None else after]
    if state is not None:
        where += " AND state = ?"
        args.append(state)
    rows = yield Query(
        f"SELECT * FROM campaign_recipients WHERE {where} ORDER BY idx LIMIT ?",  # noqa: S608
        (*args, limit),
    )
    if not rows:
        return []
    idxs = [int(r["idx"]) for r in rows]
    # The page's own attempts: by its first and last idx, a page of a state (?status=invalid,
    # ten rows across 100,000) read every attempt between them, 300,000 in 3.3 s of the
    # database's one thread (SQLite) while every other request waited.
    attempts = yield Query(
        "SELECT * FROM campaign_attempts WHERE campaign_id = ?"  # noqa: S608 - our own text
        f" AND idx IN ({','.join('?' * len(idxs))}) ORDER BY idx, attempt",
        (campaign_id, *idxs),
    )
    history: dict[int, list[Attempt]] = {}
    for a in attempts:
        history.setdefault(int(a["idx"]), []).append(_row_to_attempt(a))
    return [_shown_recipient(r, tuple(history.get(int(r["idx"]), ()))) for r in rows]


def _shown_recipient(row: Row, history: tuple[Attempt, ...]) -> RecipientRecord:
    """A recipient as its page shows it (its fields are not shown); one whose stored fields
    or errors no longer read (a hand edit, another release's row) with an error saying so.
    Raised, it answered its page 500, and no page after it could be reached."""
    try:
        return _row_to_recipient(row, history)
    except _UNREADABLE_ROW as exc:
        why = why_unreadable(exc)
    try:
        kept = json.loads(row["errors"]) if row["errors"] else []
    except _UNREADABLE_ROW:
        kept = []
    errors = [e for e in kept if isinstance(e, dict)] if isinstance(kept, list) else []
    errors.append(
        {
            "field": "row",
            "error": f"its stored row no longer reads ({why}): it is not called until it is mended",
        }
    )
    shown = _row_to_recipient({**row, "fields": "{}", "errors": None}, history)
    return replace(shown, errors=errors)


# ----------------------------------------------------------------------------- attempts


def begin_attempt(
    d: Dialect, campaign_id: str, idx: int, holder: str, next_dial_at: float, now: float
) -> Program[AttemptPlan | OnList | None]:
    """The recipient's next attempt, written before its call is placed (None: the recipient is
    no longer due, the campaign is no longer running on this server, or the recipient's
    fields no longer read: the driver reads its due list again, which sets it aside). A
    number on the do-not-call list ends the recipient as dnc instead (`_DUE_NOW`)."""
    # The campaign's row first, then its recipient's: in the other order, a cancel and a
    # dial at once deadlocked (the cancel answered 503, or the dial's tick failed).
    yield from _lock_campaign_first(d, campaign_id)
    rows = yield Query(
        "SELECT phone_number, attempts, fields FROM campaign_recipients"  # noqa: S608 - constant text
        f" WHERE campaign_id = ? AND idx = ? AND {_DUE_NOW}{d.for_update}",  # noqa: S608
        (campaign_id, idx, now),
    )
    if not rows:
        return None
    # Edited since the due list read them (raised, the step failed with a traceback; a JSON
    # list was placed and failed as a defect three times before its recipient was invalid)
    fields, _ = json_object(lambda: json.loads(rows[0]["fields"]))
    if fields is None:
        return None
    number = rows[0]["phone_number"]
    if (yield from on_dnc_list(number)):
        yield Query(
            "UPDATE campaign_recipients SET state = ?, updated_at = ?"
            " WHERE campaign_id = ? AND idx = ?",
            (DNC, now, campaign_id, idx),
        )
        return OnList(idx)
    running = yield Query(
        "UPDATE campaigns SET next_dial_at = ?, placed = placed + 1, first_dial_at ="
        " COALESCE(first_dial_at, ?), last_dial_at = ?, updated_at = ?"
        " WHERE campaign_id = ? AND status = 'running' AND claimed_by = ? RETURNING campaign_id",
        (next_dial_at, now, now, now, campaign_id, holder),
    )
    if not running:
        return None
    attempt = int(rows[0]["attempts"]) + 1
    yield Query(
        "UPDATE campaign_recipients SET state = ?, attempts = ?, updated_at = ?"
        " WHERE campaign_id = ? AND idx = ?",
        (CALLING, attempt, now, campaign_id, idx),
    )
    yield Query(
        "INSERT INTO campaign_attempts (campaign_id, idx, attempt, state, created_at)"
        " VALUES (?, ?, ?, 'placing', ?)",
        (campaign_id, idx, attempt, now),
    )
    return AttemptPlan(campaign_id, idx, attempt, number, fields)


def _lock_campaign_first(d: Dialect, campaign_id: str) -> Program[None]:
    """The campaign's row locked before its attempts and recipients (PostgreSQL), in the
    order a cancel or a pause locks them: in the other, a cancel and a dial or a refused
    attempt at once deadlocked (PostgreSQL broke it with an error: the cancel answered 503).
    SQLite's one writer orders them already."""
    if d.for_update:
        yield Query(
            f"SELECT 1 FROM campaigns WHERE campaign_id = ?{d.for_update}",  # noqa: S608
            (campaign_id,),
        )


def open_attempts(d: Dialect, campaign_id: str) -> Program[tuple[int, list[AttemptRef]]]:
    """How many attempts are live (being placed, or placed and not ended), and those still
    being placed (after a crash: given back, to be placed again under the same key). Their
    recipients' fields are not read: parsed here, the fields of one that no longer read
    (hand-edited while its attempt was being placed) raised out of every driver's step and
    recovery pass, and none of the campaign's other recipients was called again."""
    rows = yield Query(
        "SELECT idx, attempt, state FROM campaign_attempts"
        " WHERE campaign_id = ? AND state != 'ended'",
        (campaign_id,),
    )
    placing = [
        AttemptRef(campaign_id, int(r["idx"]), int(r["attempt"]))
        for r in rows
        if r["state"] == "placing"
    ]
    return len(rows), placing


def pull_back_after_step(d: Dialect, campaign_id: str, now: float) -> Program[int]:
    """Recipients pending again after a time (a retry's delay, a refusal's Retry-After, a
    not-dialled attempt's backoff) counted from a clock since stepped back (NTP; or another
    server's clock ahead of this one's): written at `updated_at`, later than `now`, they were
    due that delay after it and waited for the step on top. Each is now due that delay
    after `now` (never later than it was). The number pulled back."""
    rows = yield Query(
        "UPDATE campaign_recipients SET next_at = CASE WHEN next_at - updated_at < 0 THEN ?"
        " ELSE ? + (next_at - updated_at) END, updated_at = ?"
        " WHERE campaign_id = ? AND state = ? AND updated_at > ? AND next_at > ?"
        " RETURNING idx",
        (now, now, now, campaign_id, PENDING, now + STEP_BACK_TOLERANCE_S, now),
    )
    return len(rows)


def attempt_refused(
    d: Dialect, ref: AttemptRef, retry_at: float | None, now: float
) -> Program[None]:
    """The limits refused the attempt: nothing was placed; the recipient is due again at
    `retry_at` (None: when it was due, for an attempt left being placed that the driver
    begins again), with the attempt given back."""
    yield from _lock_campaign_first(d, ref.campaign_id)
    gone = yield Query(
        "DELETE FROM campaign_attempts WHERE campaign_id = ? AND idx = ? AND attempt = ?"
        " AND state = 'placing' RETURNING attempt",
        (ref.campaign_id, ref.idx, ref.attempt),
    )
    if gone:
        yield Query(
            "UPDATE campaign_recipients SET state = ?, attempts = attempts - 1,"
            " next_at = COALESCE(?, next_at),"
            " updated_at = ? WHERE campaign_id = ? AND idx = ? AND state = ?",
            (PENDING, retry_at, now, ref.campaign_id, ref.idx, CALLING),
        )
        yield Query(
            "UPDATE campaigns SET placed = placed - 1 WHERE campaign_id = ?", (ref.campaign_id,)
        )


def end_attempt(
    d: Dialect,
    ref: AttemptRef,
    status: str,
    now: float,
    lease_s: float,
    holder: str,
    *,
    call_id: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    enforce_hours: bool = True,
    withdrawn: bool = False,
) -> Program[list[CallEvent]]:
    """The attempt is over with `status` (a call status, or dnc / invalid when it could not
    be placed): the recipient is due again (a retry: waiting_window if its window is closed
    then, `enforce_hours` as CAMPAIGN_ENFORCE_CALLING_HOURS) or final; the campaign
    completes when no recipient is left open. `withdrawn`: a not_dialled attempt its
    campaign's pause, or its window's close, withdrew before its dial: due again at once (on
    resume; when its window next opens) and counted towards no limit."""
    # The campaign's row first, as a cancel (or a pause) locks it before the attempts.
    campaign = yield Query(
        f"SELECT status, spec FROM campaigns WHERE campaign_id = ?{d.for_update}",  # noqa: S608
        (ref.campaign_id,),
    )
    # The attempt ended when its call did (a call settled late, after a restart say, ended
    # earlier than now), else now (it could not be placed).
    ended = yield Query(
        "UPDATE campaign_attempts SET state = 'ended', status = ?, call_id = COALESCE(call_id, ?),"
        " ended_at = COALESCE((SELECT c.ended_at FROM calls c"
        " WHERE c.call_id = COALESCE(campaign_attempts.call_id, ?)), ?)"
        " WHERE campaign_id = ? AND idx = ? AND attempt = ? AND state != 'ended' RETURNING call_id",
        (status, call_id, call_id, now, ref.campaign_id, ref.idx, ref.attempt),
    )
    if not ended:
        return []  # a repeated event
    if not campaign:
        return []
    spec = _spec_at_an_end(ref, campaign[0]["spec"], status)
    retry = spec.retry if spec is not None else NO_RETRY
    over = CampaignStatus(campaign[0]["status"]) in OVER_STATUSES
    if status == NOT_DIALLED:  # nobody was called: it does not count, the recipient waits
        # Those a pause (or a window's close) withdrew are no sign of LiveKit refusing: ten
        # pauses while a call was being placed ended its recipient failed, nobody called.
        undialled = yield Query(
            "SELECT COUNT(*) AS n FROM campaign_attempts a WHERE a.campaign_id = ?"
            " AND a.idx = ? AND a.status = ? AND NOT EXISTS (SELECT 1 FROM events e"
            " WHERE e.call_id = a.call_id AND e.kind IN (?, ?))",
            (ref.campaign_id, ref.idx, NOT_DIALLED, *_WITHDRAWN_KINDS),
        )
        if over:
            state, next_at = CANCELED, None
        elif withdrawn:  # a closed window: waiting_window until it opens (_retry_in_window)
            state, next_at = PENDING, now
        elif (tries := int(undialled[0]["n"])) >= MAX_NOT_DIALLED:  # LiveKit keeps refusing
            state, next_at = "failed", None
        else:
            delay = NOT_DIALLED_RETRY_S * 2.0 ** min(tries - 1, 20)
            state, next_at = PENDING, now + min(delay, NOT_DIALLED_MAX_DELAY_S)
    else:
        made = yield Query(
            "SELECT COUNT(*) AS n FROM campaign_attempts WHERE campaign_id = ? AND idx = ?"
            " AND status != ?",
            (ref.campaign_id, ref.idx, NOT_DIALLED),
        )
        state, next_at = after_attempt(status, int(made[0]["n"]), retry, now, campaign_over=over)
    if state == PENDING and next_at is not None and spec is not None:
        # A retry due after its window closes waits for it from now on: shown pending at
        # 20:05 (next_call_at too), it was called at 09:00 the next day.
        state, next_at = yield from _retry_in_window(ref, spec, next_at, enforce_hours)
    yield Query(
        "UPDATE campaign_recipients SET state = ?, next_at = COALESCE(?, next_at),"
        " last_call_id = COALESCE(?, last_call_id), errors = COALESCE(?, errors),"
        " updated_at = ? WHERE campaign_id = ? AND idx = ? AND state = ?",
        (
            state,
            next_at,
            ended[0]["call_id"],
            dumps(errors) if errors else None,
            now,
            ref.campaign_id,
            ref.idx,
            CALLING,
        ),
    )
    return (yield from complete_if_done(d, ref.campaign_id, now, lease_s, holder, enforce_hours))


# The retry policy of a campaign whose spec no longer reads: none (its recipients are never
# called more often than a policy that may have allowed fewer would have).
NO_RETRY = RetryPolicy(on=(), max_attempts=1, delay_s=0.0)


def _spec_at_an_end(ref: AttemptRef, text: str, status: str) -> CampaignSpec | None:
    """The spec of an attempt's campaign as the attempt ends; None, said, if it no longer
    reads (edited while the call was live). Raised, the end of the attempt failed each time
    its call.ended was given: its recipient stayed `calling` for good, holding one of the
    campaign's concurrent calls, and the campaign never completed."""
    try:
        return spec_of(text)
    except _UNREADABLE_ROW as exc:
        if (more := _UNREADABLE.due("campaign attempt")) is not None:
            logger.error(
                "campaign %s no longer reads (campaigns.spec: %s): recipient %d's attempt %d"
                " ended %s, not tried again (its retry policy does not read)%s",
                ref.campaign_id,
                why_unreadable(exc),
                ref.idx,
                ref.attempt,
                status,
                more,
            )
        return None


def _retry_in_window(
    ref: AttemptRef, spec: CampaignSpec, due: float, enforce_hours: bool
) -> Program[tuple[str, float]]:
    """A retry due at `due`: pending then, or waiting_window until its window next opens."""
    rows = yield Query(
        "SELECT phone_number, fields FROM campaign_recipients WHERE campaign_id = ? AND idx = ?",
        (ref.campaign_id, ref.idx),
    )
    if not rows:
        return PENDING, due
    at = datetime.fromtimestamp(due, UTC)
    zones = call_zones(
        rows[0]["phone_number"],
        _params_of(rows[0]["fields"]),
        spec.defaults.get("additional_params"),
    )
    opens = next_allowed(at, spec.window, zones, enforce_calling_hours=enforce_hours)
    if opens is None or opens <= at:  # open then (or never: the driver ends it invalid)
        return PENDING, due
    return WAITING_WINDOW, opens.timestamp()


def attempt_of_call(d: Dialect, call_id: str) -> Program[AttemptRef | None]:
    rows = yield Query(
        "SELECT campaign_id, idx, attempt FROM campaign_attempts WHERE call_id = ?", (call_id,)
    )
    if not rows:
        return None
    r = rows[0]
    return AttemptRef(r["campaign_id"], int(r["idx"]), int(r["attempt"]))


def finish_call_attempt(
    d: Dialect,
    call_id: str,
    status: str,
    now: float,
    lease_s: float,
    holder: str,
    enforce_hours: bool = True,
) -> Program[list[CallEvent]]:
    """A campaign call ended (its call.ended event): end its attempt. A call that was never
    dialled (its server died between recording and dialling it, or LiveKit refused the dial)
    ends it as not_dialled, to be placed again; one hung up before its dial ends it with its
    own status (canceled: the person was called again, though nobody asked for that)."""
    ref = yield from attempt_of_call(d, call_id)
    if ref is None:
        return []
    dial = yield Query(
        "SELECT dial_started_at, hangup_requested FROM calls WHERE call_id = ?", (call_id,)
    )
    withdrawn = False
    if dial and dial[0]["dial_started_at"] is None and not dial[0]["hangup_requested"]:
        status = NOT_DIALLED
        lines = yield Query(
            "SELECT kind FROM events WHERE call_id = ? AND kind IN (?, ?, ?)",
            (call_id, LISTED_BEFORE_DIAL, *_WITHDRAWN_KINDS),
        )
        kinds = {row["kind"] for row in lines}
        if LISTED_BEFORE_DIAL in kinds:  # not placed again to be found listed: dnc now
            status = DNC
        withdrawn = not kinds.isdisjoint(_WITHDRAWN_KINDS)
    return (
        yield from end_attempt(
            d,
            ref,
            status,
            now,
            lease_s,
            holder,
            call_id=call_id,
            enforce_hours=enforce_hours,
            withdrawn=withdrawn,
        )
    )


def recipients_to_erase(
    d: Dialect, *, call_id: str | None = None, numbers: Sequence[str] = ()
) -> Program[list[tuple[str, int]]]:
    """The campaign recipients an erasure on request covers: the one a call's attempt
    called (`call_id`), or every one with a number (`numbers`, its forms), in (campaign,
    recipient) order. Found by their number (campaign_recipients_phone; without it, a read
    of every recipient: 300,000 recipients, 29 ms, 0.1 ms with it), run aside from the
    writes all the same."""
    if call_id is not None:
        rows = yield Query(
            "SELECT campaign_id, idx FROM campaign_attempts WHERE call_id = ?", (call_id,)
        )
    else:
        marks = ",".join("?" * len(numbers))
        rows = yield Query(
            "SELECT campaign_id, idx FROM campaign_recipients"  # noqa: S608 - marks only
            f" WHERE phone_number IN ({marks})",
            tuple(numbers),
        )
    return sorted({(row["campaign_id"], int(row["idx"])) for row in rows})


# A recipient's error once its personal data is erased (the message may have quoted it).
ERASED_ERROR = "(its message was erased on request with the recipient's personal data)"


def erase_recipients_now(
    d: Dialect, now: float, keys: Sequence[tuple[str, int]]
) -> Program[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """Erase on request the campaign recipients `keys` (recipients_to_erase): their row's own
    fields (the name and every CSV column) go, and so do its errors' messages, which quote
    the values refused (a timezone column holding an address), there and in its campaign's
    Idempotency-Key answer; the number stays, as on the calls. One still
    due ends `erased` and is never called; one being called (`calling`) is live: nothing is
    erased, and the answer names its call (the erasure is all or nothing, as for calls). How
    many were erased, the live ones, and those whose call has ended though its campaign has
    not recorded it yet (its call.ended event, a moment later: the recipient is `calling`
    until then, and may be due again after it): nothing is erased either.

    Locked in the order (campaign, recipient), as a cancel locks its campaign's, and no
    campaign row or call with them: an erasure and a cancel or a dial at once wait for each
    other, never deadlock (PostgreSQL; tests/integration/test_erasure_pg_race.py)."""
    # A campaign's recipients CHUNK at a time, not one statement each: a number listed in
    # 100,000 rows (a list's duplicates kept invalid) held the write lock every call's intake
    # waits for 3.1 s (SQLite), and as long again at each erasure of it.
    by_campaign: dict[str, list[int]] = {}
    for campaign_id, idx in sorted(keys):
        by_campaign.setdefault(campaign_id, []).append(idx)
    rows: list[Row] = []
    for campaign_id, indexes in by_campaign.items():
        for start in range(0, len(indexes), CHUNK):
            chunk = indexes[start : start + CHUNK]
            rows += yield Query(
                "SELECT campaign_id, idx, row_number, state, errors"  # noqa: S608 - marks only
                f" FROM campaign_recipients WHERE campaign_id = ? AND idx IN"
                f" ({','.join('?' * len(chunk))}) ORDER BY idx{d.for_update}",
                (campaign_id, *chunk),
            )
    live: list[str] = []
    ending: list[str] = []
    for row in rows:
        if row["state"] == CALLING:
            calls = yield Query(
                "SELECT a.call_id, c.status FROM campaign_attempts a"
                " LEFT JOIN calls c ON c.call_id = a.call_id"
                " WHERE a.campaign_id = ? AND a.idx = ? AND a.state != 'ended'"
                " ORDER BY a.attempt DESC LIMIT 1",
                (row["campaign_id"], row["idx"]),
            )
            named = calls[0]["call_id"] if calls and calls[0]["call_id"] else None
            if named is not None and calls[0]["status"] not in (None, *LIVE):
                ending.append(named)
            else:
                live.append(named or f"campaign {row['campaign_id']}'s call being placed")
    if live or ending:
        return 0, tuple(live), tuple(ending)
    refused: dict[str, set[int]] = {}  # each campaign's erased rows that were refused
    # Rows alike once erased (their state, their errors' fields) are written together.
    alike: dict[tuple[str, str, str | None], list[int]] = {}
    erased_errors: dict[str, str | None] = {}  # errors as stored -> as erased (rows repeat)
    for row in rows:
        state = ERASED if row["state"] in DUE_STATES else row["state"]
        stored = row["errors"] or ""
        if stored not in erased_errors:
            # Which fields were refused stays; what the messages quoted of them goes.
            errors = [
                {"field": error.get("field"), "error": ERASED_ERROR}
                for error in (json.loads(stored) if stored else [])
            ]
            erased_errors[stored] = dumps(errors) if errors else None
        if erased_errors[stored] is not None:
            refused.setdefault(row["campaign_id"], set()).add(int(row["row_number"]))
        written = (row["campaign_id"], state, erased_errors[stored])
        alike.setdefault(written, []).append(int(row["idx"]))
    for (campaign_id, state, errors_json), indexes in alike.items():
        for start in range(0, len(indexes), CHUNK):
            chunk = indexes[start : start + CHUNK]
            yield Query(
                "UPDATE campaign_recipients SET fields = '{}', state = ?, errors = ?,"  # noqa: S608
                f" updated_at = ? WHERE campaign_id = ? AND idx IN ({','.join('?' * len(chunk))})",
                (state, errors_json, now, campaign_id, *chunk),
            )
    # The campaign's Idempotency-Key kept the hash of the upload, every row in it: with the
    # other rows, the options and the number still here, a guess of the erased row's fields
    # was confirmed against it. Replaced as an erased call's is (any retry under the key
    # then gets the campaign, never a second one).
    for campaign_id in sorted(by_campaign):
        yield Query(
            "UPDATE idempotency SET request_hash = ? WHERE call_id = ?",
            (ERASED_REQUEST_HASH, campaign_id),
        )
    # The campaign's Idempotency-Key answer (replayed to its retries: the 201's invalid_rows)
    # lists its refused rows with the same messages: they go there too.
    for campaign_id, row_numbers in sorted(refused.items()):
        answers = yield Query(
            "SELECT client, key, body FROM idempotency WHERE call_id = ? AND body IS NOT NULL",
            (campaign_id,),
        )
        for answer in answers:
            body = json.loads(answer["body"])
            listed = body.get("invalid_rows") if isinstance(body, dict) else None
            if not isinstance(listed, list):
                continue
            body["invalid_rows"] = [
                {**e, "error": ERASED_ERROR}
                if isinstance(e, dict) and e.get("row") in row_numbers
                else e
                for e in listed
            ]
            yield Query(
                "UPDATE idempotency SET body = ? WHERE client = ? AND key = ?",
                (dumps(body), answer["client"], answer["key"]),
            )
    return len(rows), (), ()


# ----------------------------------------------------------------------------- do not call


def _row_to_dnc(row: Row) -> DncEntry:
    return DncEntry(row["number"], row["source"], row["call_id"], row["added_at"])


def remove_dnc(d: Dialect, number: str) -> Program[bool]:
    rows = yield Query("DELETE FROM dnc WHERE number = ? RETURNING number", (number,))
    return bool(rows)


def get_dnc(d: Dialect, number: str) -> Program[DncEntry | None]:
    rows = yield Query("SELECT * FROM dnc WHERE number = ?", (number,))
    return _row_to_dnc(rows[0]) if rows else None


def list_dnc(d: Dialect, limit: int, after: str | None) -> Program[list[DncEntry]]:
    rows = yield Query(
        "SELECT * FROM dnc WHERE number > ? ORDER BY number LIMIT ?", (after or "", limit)
    )
    return [_row_to_dnc(r) for r in rows]
