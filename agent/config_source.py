"""Which configuration a job uses: its call's config.json record or the dispatch snapshot.

The server writes each call's config to config.json (keyed by call id) *before* it creates the
agent dispatch, and also puts a snapshot of the same config in the dispatch metadata. The agent
prefers the record, but only when it provably predates the room: a record written after the
room was created is not the one this call was placed with, nor is a record that says otherwise
than the snapshot (edited by hand, or a file swapped under the server, dated as it pleases).
Without a usable record (agent on another host, file pruned, clocks disagreeing) the snapshot
is used; it is the same config, bound to this dispatch. Never the flat "latest" document and
never another call's record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiofiles.os

from common.config_store.model import CallConfig, written_at_of
from common.config_store.store import ConfigStore, UnknownCallError
from common.contracts import DispatchMetadata

logger = logging.getLogger(__name__)

# Where a job's config came from; `calls-db` only for `describe` of a call that is over.
ConfigSource = Literal["config.json", "dispatch-metadata", "calls-db"]

# Why a job has no record, when nothing more precise is known.
NO_RECORD = "no config.json record"
# Why a job has no snapshot: its dispatch carried none.
NO_SNAPSHOT = "no config snapshot in the dispatch metadata"
# A read of config.json not done by then (a stalled disk under it, an NFS server gone) is
# given up, and the job uses its dispatch's snapshot: the job waited for it, the person it
# called hearing silence, for as long as the disk stalled.
RECORD_READ_WAIT_S = 5.0

# A creation time above this many seconds since the epoch (year 5138) can only be milliseconds.
_MAX_PLAUSIBLE_EPOCH_S = 100_000_000_000


class NoCallConfigError(LookupError):
    """Neither a usable config.json record nor a dispatch snapshot exists for the call."""

    def __init__(self, call_id: str, reasons: list[str]) -> None:
        super().__init__(call_id, reasons)
        self.call_id = call_id
        self.reasons = list(reasons)

    def __str__(self) -> str:
        return f"no usable config for call {self.call_id!r}: {'; '.join(self.reasons)}"

    @property
    def outcome_reason(self) -> str:
        """Why the call failed, as its outcome says it: that there was no config, or what was
        wrong with the one there was. A snapshot the agent could not read (a language or an
        option of a newer server's than the agent's, during an upgrade; another call's) was
        "the agent had no config for this call" on every such call, the cause in the agent's
        log alone."""
        found = [reason for reason in self.reasons if reason not in (NO_RECORD, NO_SNAPSHOT)]
        if not found:
            return "the agent had no config for this call"
        return "the agent could not use this call's config: " + "; ".join(found)


@dataclass(frozen=True)
class SelectedConfig:
    source: ConfigSource
    config: CallConfig
    reason: str
    """Why this source won (and, for the snapshot, why the record was not used)."""
    record_changed: bool = False
    """The record was refused for saying otherwise than the snapshot: worth a warning."""


@dataclass(frozen=True)
class RoomCreationTime:
    """When the room was created, as precisely as the server reported it.

    `at` is the reported instant in epoch seconds (None when unknown) and `granularity_s` is
    the unit it was truncated to, so the true instant lies in `[at, at + granularity_s)`.
    """

    at: float | None
    granularity_s: float


def resolve_call_id(metadata: DispatchMetadata, room_name: str) -> str:
    """The call id: the room's name (the server names each call's room after the call).

    Dispatch metadata naming another call is refused (NoCallConfigError): taking it would
    build this room's session from that call's config, and file this room's reports under
    that call.
    """
    if metadata.call_id and metadata.call_id != room_name:
        raise NoCallConfigError(
            room_name, [f"the dispatch metadata names call {metadata.call_id!r}, not this room's"]
        )
    return room_name


def not_our_call(metadata: DispatchMetadata, room_name: str, *, has_record: bool) -> str | None:
    """Why the job's room cannot be proved one of our calls, or None if it can: the server's
    dispatch names the room as its call and the number it dials into it, or config.json
    holds the record the server wrote for a call of that name (`has_record`). Another app
    of the same LiveKit project dispatching to the same agent name has rooms of its own,
    which are not ours to end."""
    if has_record:
        return None
    if metadata.call_id is None:
        why = "its dispatch metadata names no call"
    elif metadata.call_id != room_name:
        why = f"its dispatch metadata names call {metadata.call_id!r}, not this room"
    elif metadata.phone_number is None:
        why = "its dispatch metadata names no number dialled into it"
    else:
        return None
    return f"{why}, and config.json holds no record of it"


def room_creation_time(creation_time: int, creation_time_ms: int = 0) -> RoomCreationTime:
    """Interpret `livekit.Room.creation_time` / `creation_time_ms` from the job's room.

    LiveKit sets `creation_time = time.Now().Unix()` (whole seconds, truncated) and newer
    servers also `creation_time_ms = time.Now().UnixMilli()`. Prefer milliseconds; with whole
    seconds only, the room may have been created up to 1 s after the reported value.
    """
    if creation_time_ms > 0:
        return RoomCreationTime(creation_time_ms / 1000.0, 0.001)
    if creation_time > _MAX_PLAUSIBLE_EPOCH_S:
        # Defensive: a server filling the seconds field with milliseconds.
        return RoomCreationTime(creation_time / 1000.0, 0.001)
    if creation_time > 0:
        return RoomCreationTime(float(creation_time), 1.0)
    return RoomCreationTime(None, 0.0)


def _record_problem(
    call_id: str,
    record: Mapping[str, Any],
    room_created_at: float | None,
    granularity_s: float,
) -> str | None:
    """Why the record cannot be used for this job, or None if it can."""
    owner = record.get("call_id")
    if owner is not None and owner != call_id:
        return f"config.json record belongs to call {owner!r}"
    written_at = written_at_of(record)
    if written_at is None:
        return "config.json record has no written_at (a finite number)"
    if room_created_at is None:
        return "room creation time unknown, so the record cannot be checked"
    # The room was created no later than room_created_at + granularity_s (truncation), so a
    # record written up to then may predate it. No allowance for clock skew: if the clocks
    # disagree, the snapshot (the same config) is used instead, which is always safe.
    latest_creation = room_created_at + granularity_s
    if written_at > latest_creation:
        return (
            f"config.json record written {written_at - room_created_at:.3f} s after "
            "the room was created"
        )
    return None


def select_config(
    call_id: str,
    record: Mapping[str, Any] | None,
    metadata_snapshot: Mapping[str, Any] | None,
    room_created_at: float | None,
    *,
    granularity_s: float = 0.0,
    no_record: str = NO_RECORD,
) -> SelectedConfig:
    """Pick the job's config: the call's record if it predates the room and says what the
    dispatch snapshot says (when there is one), else the snapshot.

    `no_record`: why `record` is None, as `read_call_record` says it. Raises
    NoCallConfigError (with every reason) when neither can be used.
    """
    reasons: list[str] = []
    changed: list[str] = []  # the record's fields that say otherwise than the snapshot
    placed: CallConfig | None = None  # the dispatch snapshot's, if it reads
    snapshot_problem = ""  # why it cannot be used
    if metadata_snapshot is None:
        snapshot_problem = NO_SNAPSHOT
    elif (owner := metadata_snapshot.get("call_id")) is not None and owner != call_id:
        snapshot_problem = f"dispatch snapshot belongs to call {owner!r}"
    else:
        try:
            placed = CallConfig.from_record(metadata_snapshot)
        except ValueError as exc:
            snapshot_problem = f"dispatch snapshot is invalid: {exc}"

    if record is None:
        reasons.append(no_record)
    else:
        problem = _record_problem(call_id, record, room_created_at, granularity_s)
        if problem is None:
            try:
                config = CallConfig.from_record(record)
            except ValueError as exc:
                problem = f"config.json record is invalid: {exc}"
            else:
                changed = [] if placed is None else _changed_fields(config, placed)
                if not changed:
                    return SelectedConfig(
                        "config.json", config, "record written before the room was created"
                    )
                # The server put the record it wrote in the dispatch: a record that says
                # otherwise, dated before the room or not, was changed since (a hand edit, a
                # file swapped under the server) and is not the config this call was placed with.
                problem = (
                    "config.json record differs from the config the call was placed with"
                    f" ({', '.join(changed)}): changed after it was written"
                )
        reasons.append(problem)

    if placed is None:
        reasons.append(snapshot_problem)
        raise NoCallConfigError(call_id, reasons)
    return SelectedConfig("dispatch-metadata", placed, "; ".join(reasons), bool(changed))


def _changed_fields(config: CallConfig, placed: CallConfig) -> list[str]:
    """The fields in which `config` says otherwise than `placed` (whose call and time of
    writing are checked on their own)."""
    return [
        f.name
        for f in dataclasses.fields(CallConfig)
        if f.name not in ("call_id", "written_at")
        and getattr(config, f.name) != getattr(placed, f.name)
    ]


async def load_call_record(store: ConfigStore, call_id: str) -> dict[str, Any] | None:
    """This call's config.json record, or None if there is none (or it cannot be read)."""
    return (await read_call_record(store, call_id))[0]


async def read_call_record(store: ConfigStore, call_id: str) -> tuple[dict[str, Any] | None, str]:
    """This call's config.json record, or None and why there is none (`select_config`'s
    `no_record`): a job whose config.json could not be read said "no config.json record".

    A missing file means "no record": the agent must not create config.json (the store's
    auto-initialisation) on a host where the server does not run. A file the job cannot
    reach (a directory on its path closed to the job's user) is not a missing one: it was
    said "no config.json record", as on another host, and nothing said what to fix.
    """

    async def read() -> tuple[dict[str, Any] | None, str]:
        try:
            await aiofiles.os.stat(store.path)
        except (FileNotFoundError, NotADirectoryError):  # (a link to nowhere too)
            return None, NO_RECORD
        return await store.load_async(call_id=call_id), ""

    try:
        return await asyncio.wait_for(read(), RECORD_READ_WAIT_S)
    except TimeoutError:  # an OSError too, with no strerror: said on its own
        logger.warning(
            "call %s: %s did not answer in %.0f s (its disk stalls?); record ignored",
            call_id,
            store.path,
            RECORD_READ_WAIT_S,
        )
        why = f"config.json record cannot be read: it did not answer in {RECORD_READ_WAIT_S:g} s"
        return None, why
    except UnknownCallError as exc:
        if exc.problem is not None:
            return None, f"config.json record cannot be read: {exc.problem}"
        return None, NO_RECORD
    except OSError as exc:
        logger.warning("call %s: cannot read %s (%s); record ignored", call_id, store.path, exc)
        return None, f"config.json record cannot be read: {exc.strerror or exc}"
