"""Reports a job could not deliver before it ended, kept on disk and sent again by the worker.

A job retries its reports for as long as it runs (`agent.reporting`), but its process ends
a few minutes after the call: over a longer outage of the calls server, the final report
(transcript, analysis, outcome) was dropped. With a spool, what is still pending when the
job's sender closes is written to `AGENT_REPORT_SPOOL_DIR`, one file per job (written whole,
then renamed into place: a file there is never half written), and the worker's own process
sends the files again (`resend_loop`), oldest first, at its start and every
`RESEND_INTERVAL_S`, until the server takes or refuses them; then the file goes. The server
keeps each report once by (call, seq), so a report sent twice is harmless.

The spool is bounded (`MAX_FILES`): past it, a job's reports are dropped with an ERROR as
they were without a spool. Its files hold transcripts: the directory is made private (0700)
and each file 0600. A file another user wrote there (a directory made before, writable by
others) is never sent: the worker would sign what it holds with the LiveKit secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import stat
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from pydantic import ValidationError

from agent.reporting import ReportSender, RetryPolicy, _clip, say_dnc_lost
from common.config_store.store import make_directories
from common.contracts import AgentReport
from common.repeats import Repeats
from common.text import shown_text

logger = logging.getLogger(__name__)

# How many jobs' undelivered reports the spool keeps at most.
MAX_FILES: Final = 10_000
# How often the worker looks for spooled reports to send again, and how long a pass retries
# a file before it leaves the rest of that server's to the next pass (it is still away): the
# reports reach a server that is back within about 15 s, inside the 40 s its late
# room_finished waits for an answer (common/calls/service.py REPORTS_RETRY_S), and a call
# whose answer is in the spool is not settled no_answer beside its transcript.
RESEND_INTERVAL_S: Final = 10.0
RESEND_RETRY: Final = RetryPolicy(first_delay_s=0.5, max_delay_s=2.0, deadline_s=5.0)
# How long one file may take to be delivered once the server answers.
RESEND_TIMEOUT_S: Final = 120.0
_SUFFIX: Final = ".json"
# The names the spool gives its files (`<time_ns>-<pid>-<hex digest>`): the only ones it reads,
# counts or removes. AGENT_REPORT_SPOOL_DIR set to a directory that holds other files (the
# server's, beside its config.json; `.`) had every `*.json` there read as a spooled file,
# found unreadable and removed: config.json, with the records of the calls live then.
_NAME: Final = r"[0-9]+-[0-9]+-[0-9a-z]+"
# What opening or reading a file fails with while the worker is short of a resource, not for
# the file: it is read again next pass (`ReportSpool._not_opened`).
_SHORT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR})
_SPOOLED: Final = re.compile(rf"{_NAME}\.json")
_LEFT_HALF_WRITTEN: Final = re.compile(rf"\.(?:{_NAME}|probe-[0-9]+)\.tmp")
_SET_ASIDE: Final = re.compile(rf"{_NAME}\.json\.bad")
# The largest file a job writes (then some): each report it sends, a turn report for each of
# the transcript's MAX_TURNS turns (MAX_TURN_CHARS characters each, 48 KB as JSON at worst,
# every one a control character written `\u0001`: 96 MB for 2,000), and a few others of
# MAX_REPORT_BYTES at most. A larger file is none a job wrote (a disk fault, a file of GBs):
# read whole, a 1 GB one took the worker to 4.1 GB of memory and held its loop for 20 s,
# its calls' with it, before it was found unreadable (and read whole again).
MAX_FILE_BYTES: Final = 128 * 1024 * 1024
# A file being written (`.<name>.tmp`) older than this was left by a process killed while it
# wrote it (a job the worker stopped, out of memory): a write takes well under a second.
STALE_TEMP_S: Final = 600.0


class _TooLarge(OSError):
    """A spooled file larger than any job writes (MAX_FILE_BYTES): not read."""

    def __init__(self, size: int) -> None:
        super().__init__(errno.EFBIG, f"{size} bytes, more than the {MAX_FILE_BYTES} a job writes")


@dataclass(frozen=True)
class Spooled:
    """One spooled file: where its reports go, whose they are, and the reports."""

    path: Path
    url: str
    call_id: str
    reports: list[AgentReport]


class ReportSpool:
    """A directory of undelivered reports, one file per job that left some."""

    def __init__(
        self, directory: Path, *, max_files: int = MAX_FILES, max_age_s: float = math.inf
    ) -> None:
        self.directory = directory
        self._max_files = max_files
        self._urls: dict[str, str] = {}  # file name -> its report URL, as read before
        # A file older than this is removed unsent (the worker's CALL_DATA_RETENTION_DAYS,
        # an hour at least): by then the server keeps none of the conversation it holds.
        self._max_age_s = max_age_s
        # File name -> (the monotonic clock when a pass first saw it, its age by the wall
        # clock then): from then on it ages by the monotonic clock (`_age`).
        self._seen: dict[str, tuple[float, float]] = {}
        self._foreign: set[str] = set()  # files of another user's, said once each
        self._unopened: set[str] = set()  # files that could not be opened, said once each
        # Files with a report that no longer reads, said once each: a file is read again
        # every pass while its server is away, and each pass said the same ERROR again.
        self._left_out: set[str] = set()
        self._writer: int | None = None  # the owner this user's files get here (`_writer_uid`)
        # The directory could not be listed (a file, another user's): said once a minute.
        self._repeats = Repeats()
        self._unlistable = False

    def _make_directory(self) -> None:
        """The spool, 0700, if missing, and its missing parents as config.json's are made:
        never writable by other users (Path.mkdir made the parents 0777 less the umask)."""
        make_directories(self.directory.parent)
        self.directory.mkdir(mode=0o700, exist_ok=True)

    def save(self, url: str, call_id: str, bodies: Sequence[bytes]) -> Path | None:
        """Keep `bodies` (reports of `call_id`, in order) to be sent to `url` later: the
        file's path, or None (and an ERROR) if they could not be kept."""
        try:
            self._make_directory()
            if len(self._files()) >= self._max_files:
                logger.error(
                    "call %s: %d reports not kept for later: the report spool is full"
                    " (%d files in AGENT_REPORT_SPOOL_DIR)",
                    call_id,
                    len(bodies),
                    self._max_files,
                )
                return None
            head = json.dumps({"url": url, "call_id": call_id})[:-1].encode()
            data = head + b', "reports": [' + b",".join(bodies) + b"]}"
            if len(data) > MAX_FILE_BYTES:  # not expected: no pass would read it back
                raise _TooLarge(len(data))
            # Unique, and sorting by name sorts by age: the worker sends the oldest first.
            digest = hashlib.sha256(call_id.encode()).hexdigest()[:16]
            name = f"{time.time_ns():020d}-{os.getpid()}-{digest}"
            temporary = self.directory / f".{name}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                path = self.directory / f"{name}{_SUFFIX}"
                temporary.rename(path)
            except OSError:
                # Left there (a full disk), the half-written file held the last free bytes,
                # and part of a transcript, for STALE_TEMP_S: every report spooled meanwhile,
                # however small, was refused "No space left on device" too.
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
        except OSError as exc:
            logger.error(
                "call %s: %d reports not kept for later: the report spool cannot be written"
                " (AGENT_REPORT_SPOOL_DIR %s: %s)",
                call_id,
                len(bodies),
                self.directory,
                why_unwritable(exc, self.directory),
            )
            return None
        return path

    def problem(self) -> str | None:
        """Why reports could not be kept here (`agent start` warns of it), else None; the
        directory is made if missing."""
        try:
            self._make_directory()
            writer = self._writer_uid(strict=True)
            info = self.directory.stat()
        except OSError as exc:
            why = why_unwritable(exc, self.directory)
            return (
                f"AGENT_REPORT_SPOOL_DIR ({self.directory}) cannot be written ({why}): the"
                " reports a job cannot deliver before it ends (the calls server away) would be"
                " lost"
            )
        if info.st_uid not in (os.geteuid(), writer) or info.st_mode & (
            stat.S_IWGRP | stat.S_IWOTH
        ):
            # Made before (by hand, by another user in /tmp): mkdir leaves its mode as it is.
            return (
                f"AGENT_REPORT_SPOOL_DIR is not private to this user (mode"
                f" {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}): other users may"
                " remove its files (the reports of calls not delivered yet) or add files of"
                " their own, which the worker does not send; chown it to this user and chmod"
                " 700 it"
            )
        return None

    def _writer_uid(self, *, strict: bool = False) -> int:
        """The owner a file this user writes here gets: its uid, or the one the file system
        maps it to (root writing to an NFS export with root_squash writes as nobody). Found
        by writing an empty file once; this process's uid if that fails (`strict`: raises)."""
        if self._writer is None:
            probe = self.directory / f".probe-{os.getpid()}.tmp"
            try:
                probe.write_bytes(b"")
                try:
                    self._writer = probe.stat().st_uid
                finally:
                    probe.unlink()
            except OSError:
                if strict:
                    raise
                return os.geteuid()
        return self._writer

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if _SPOOLED.fullmatch(p.name))
        except FileNotFoundError:
            return []

    def _listed(self) -> list[Path] | None:
        """`_files()`, or None if the directory cannot be listed: said in one line, once a
        minute. Raised, it failed each pass (every 10 s) with a 20-line traceback that named
        neither the setting nor the directory."""
        try:
            files = self._files()
        except OSError as exc:
            self._unlistable = True
            if (more := self._repeats.due("unlistable")) is not None:
                logger.error(
                    "report spool: AGENT_REPORT_SPOOL_DIR (%s) cannot be read (%s): spooled"
                    " reports are not sent, nor new ones kept, until it can (make it a"
                    " directory of the worker's user)%s",
                    self.directory,
                    exc.strerror or type(exc).__name__,
                    more,
                )
            return None
        if self._unlistable:
            self._unlistable = False
            self._repeats.forget("unlistable")
            logger.info(
                "report spool: AGENT_REPORT_SPOOL_DIR (%s) can be read again", self.directory
            )
        return files

    def _remove_stale_temps(self) -> None:
        """Remove what a process killed mid-save left (its transcript in it, never renamed
        into place nor sent: it stayed on the host for good), and what an earlier release
        set aside."""
        before = time.time() - STALE_TEMP_S
        try:
            found = list(self.directory.iterdir())
        except OSError:
            return
        leftovers = [p for p in found if _LEFT_HALF_WRITTEN.fullmatch(p.name)]
        set_aside = [p for p in found if _SET_ASIDE.fullmatch(p.name)]
        for path in leftovers:
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < before:
                    path.unlink()
                    logger.info("report spool: removed %s, left half written", path.name)
        # Files the release of 2026-12-05 (4b617bc to cba83e5) set aside as unreadable,
        # `<name>.json.bad`: kept with a call's transcript for good, never sent nor counted,
        # past any retention. Found after an upgrade, they go as an unreadable file goes now.
        for path in set_aside:
            with contextlib.suppress(OSError):
                path.unlink()
                logger.error(
                    "report spool: %s removed: an earlier release set it aside as unreadable;"
                    " its reports are lost",
                    path.name,
                )

    def _age(self, path: Path, mtime: float) -> float:
        """How long `path` has been in the spool: by the wall clock when a pass first sees it
        (a pass every 10 s: about when it was written), by the monotonic clock from then on.
        By the wall clock alone, a host whose clock was far behind (every report then refused
        as signed with an expired token, and spooled) had every file removed unsent as older
        than the retention once its clock was set right, though the reports would have been
        taken by then; a clock that was ahead kept them past it."""
        now = time.monotonic()
        seen = self._seen.get(path.name)
        if seen is None:
            seen = (now, max(0.0, time.time() - mtime))
            self._seen[path.name] = seen
        first_seen, age_then = seen
        return age_then + (now - first_seen)

    def _foreign_file(self, info: os.stat_result) -> str | None:
        """Why a file (its `lstat`) is none of this worker's jobs', or None if it is one."""
        if not stat.S_ISREG(info.st_mode):  # a link (to /dev/zero, to a file of root's), a FIFO
            return "it is not a regular file"
        if info.st_uid != os.geteuid() and info.st_uid != self._writer_uid():
            return f"it was written by another user (uid {info.st_uid})"
        return None

    def _not_ours(self, path: Path, why: str) -> None:
        if path.name in self._foreign:
            return
        self._foreign.add(path.name)
        logger.error(
            "report spool: %s is not sent: %s, not by this worker's jobs; AGENT_REPORT_SPOOL_DIR"
            " must be private to the worker's user (chmod 700 it)",
            path.name,
            why,
        )

    def _read(self, path: Path) -> bytes | None:
        """The file's bytes, or None if it turned out another's as it was opened (replaced
        since its `lstat`): never through a link, never blocking on a FIFO, never more than
        MAX_FILE_BYTES (`_TooLarge`, an OSError, past them)."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if (why := self._foreign_file(info)) is not None:
                self._not_ours(path, why)
                return None
            if info.st_size > MAX_FILE_BYTES:
                raise _TooLarge(info.st_size)
            data = file.read(MAX_FILE_BYTES + 1)  # (grown since its fstat)
            if len(data) > MAX_FILE_BYTES:
                raise _TooLarge(len(data))
            return data

    def _not_opened(self, path: Path, exc: OSError) -> bool:
        """Whether a file that could not be opened or read this pass is kept for the next
        (said once): when the worker was short of a resource (out of file descriptors, EMFILE,
        while its calls hold theirs). It was removed as unreadable, its reports lost, a
        do_not_call among them with no ERROR naming its call (which could not be read either):
        the callee who had asked not to be called was called again. Another error (the file
        itself unreadable) is no reason to keep it."""
        if exc.errno not in _SHORT_OF_RESOURCES:
            return False
        if path.name not in self._unopened:
            self._unopened.add(path.name)
            logger.warning(
                "report spool: %s could not be opened (%s); kept, it is tried again next pass",
                path.name,
                exc.strerror or type(exc).__name__,
            )
        return True

    def _asked_not_to_be_called(self, path: Path) -> str | None:
        """The call id of the file at `path` if it holds a do_not_call report: removed
        unsent, the callee who asked not to be called again is called again unless someone
        lists the number by hand (only the generic line above said it was removed). OSError
        if it could not be opened or read: the caller keeps it if that was for want of a
        resource (`_not_opened`), not knowing whether it holds one (the worker out of file
        descriptors removed it with no ERROR naming its call)."""
        if (data := self._read(path)) is None:
            return None
        try:
            doc = json.loads(data)
            call_id = doc["call_id"]
            # As written, not validated: one report that no longer reads hides no other's kind.
            kinds = {r.get("kind") for r in doc["reports"] if isinstance(r, dict)}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None
        return call_id if isinstance(call_id, str) and "do_not_call" in kinds else None

    def _before_removal(self, path: Path) -> tuple[bool, str | None]:
        """Before the file at `path` is removed unsent: whether it is to be left (gone
        already, sent and removed by another worker; or not to be opened for now, for want of
        a resource: `_not_opened`), and the call id if it holds a do_not_call report (None
        too when it cannot be read: it is removed all the same)."""
        try:
            return False, self._asked_not_to_be_called(path)
        except FileNotFoundError:
            return True, None
        except OSError as exc:
            return self._not_opened(path, exc), None

    def load(self, skip_urls: Collection[str] = ()) -> Iterator[Spooled]:
        """The spooled files, oldest first, each read as it is reached; one known to go to
        one of `skip_urls` (a server still away this pass) is passed over unread. One that
        cannot be read is logged and removed, never sent. Files left half written are
        removed first."""
        self._remove_stale_temps()
        if (files := self._listed()) is None:
            return
        names = {p.name for p in files}
        self._urls = {name: url for name, url in self._urls.items() if name in names}
        self._seen = {name: seen for name, seen in self._seen.items() if name in names}
        self._foreign &= names
        self._unopened &= names
        self._left_out &= names
        for path in files:
            try:
                info = path.lstat()
                if (why := self._foreign_file(info)) is not None:
                    # Another user's: the worker would sign whatever it holds with the LiveKit
                    # secret, a report of any call it names, and post it to any URL it names.
                    self._not_ours(path, why)
                    continue
                if self._age(path, info.st_mtime) > self._max_age_s:
                    # Undelivered past the retention (the server away for good, its address
                    # changed): the transcript stayed on the host as long as the worker did.
                    left, asked = self._before_removal(path)
                    if left:
                        continue
                    path.unlink()
                    logger.warning(
                        "report spool: %s removed unsent: its reports were kept longer than"
                        " CALL_DATA_RETENTION_DAYS",
                        path.name,
                    )
                    if asked is not None:
                        say_dnc_lost(asked, "its report was kept undelivered past the retention")
                    continue
                if self._urls.get(path.name) in skip_urls:
                    continue
                try:
                    data = self._read(path)
                except OSError as exc:  # gone meanwhile: the FileNotFoundError below
                    if self._not_opened(path, exc):
                        continue
                    raise
                if data is None:
                    continue
                self._unopened.discard(path.name)
                doc = json.loads(data)
                url, call_id, written = doc["url"], doc["call_id"], doc["reports"]
                if not isinstance(url, str) or not isinstance(call_id, str):
                    raise TypeError("url and call_id must be strings")
                if not isinstance(written, list):
                    raise TypeError("reports must be a list")
                reports = _readable(path, call_id, written, say=path.name not in self._left_out)
                if len(reports) < len(written):
                    self._left_out.add(path.name)
            except FileNotFoundError:  # sent and removed by another worker meanwhile
                continue
            except (
                OSError,
                ValueError,
                KeyError,
                TypeError,
                RecursionError,
                ValidationError,
            ) as exc:
                # Removed, not set aside: it holds a call's transcript, which can never be
                # sent from it, and a `.bad` copy stayed on the host for good (README: spooled
                # reports stay only until the server takes or refuses them).
                left, asked = self._before_removal(path)
                if left:
                    continue
                logger.error(
                    "report spool: %s cannot be read (%s); removed, its reports are lost",
                    path.name,
                    exc.strerror if isinstance(exc, _TooLarge) else type(exc).__name__,
                )
                with contextlib.suppress(OSError):
                    path.unlink()
                if asked is not None:
                    say_dnc_lost(asked, "its spooled report could not be read, and was removed")
                continue
            if not reports:  # each one said as it was left out
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            self._urls[path.name] = url
            yield Spooled(path, url, call_id, reports)


def why_unwritable(exc: OSError, directory: Path) -> str:
    """Why the spool at `directory` cannot be made or written, from `exc`. A file in its
    place (or in a parent's) was said "File exists" (or "Not a directory"), naming no path,
    which read as if a file of the spool's were in the way."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        for path in (directory, *directory.parents):
            if os.path.lexists(path):  # the nearest that is there: a file, or a directory
                if not path.is_dir():
                    return f"{path} is a file, not a directory"
                break
    return exc.strerror or type(exc).__name__


def _readable(
    path: Path, call_id: str, written: list[object], *, say: bool = True
) -> list[AgentReport]:
    """The reports of a spooled file that still read as reports; each other one is left out
    with an ERROR naming the call, the report and why (`say`: the file's first read only).
    One that no longer read (an upgrade that validates more, a report an earlier release let
    through) lost the whole file: the call's answer, turns and final report with it, said
    only as the file's name."""
    reports: list[AgentReport] = []
    for index, raw in enumerate(written):
        try:
            reports.append(AgentReport.model_validate(raw))
        except ValidationError as exc:
            if not say:
                continue
            fields = raw if isinstance(raw, dict) else {}
            kind, seq = fields.get("kind"), fields.get("seq")
            what = (
                f"{kind if isinstance(kind, str) else 'a'} report"
                f" #{seq if isinstance(seq, int) else '?'}"
            )
            logger.error(
                "report spool: call %s: %s (%d of %d in %s) is not sent, the others are:"
                " it does not read as a report (%s)",
                call_id,
                _clip(what, 80),
                index + 1,
                len(written),
                path.name,
                _why_invalid(exc),
            )
            if kind == "do_not_call":
                say_dnc_lost(call_id, "its spooled report no longer reads as a report")
            elif kind == "final":
                # What GET /calls/{id} will show for it: what to look for, at 3 a.m.
                logger.error(
                    "report spool: call %s: its final report lost, the call's report_status"
                    " stays pending, then reads unavailable 10 minutes after its end (its"
                    " summary, verdicts and usage not kept)",
                    call_id,
                )
    return reports


def _why_invalid(exc: ValidationError) -> str:
    """Which fields of a report failed and how, without their values (a transcript's text).
    Not masked as a phone number: the bound a field broke is no value, and `_clip` showed
    `at`'s, the most likely to fail (a release that validates more), as `••••••4800`."""
    said = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'report'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )
    return shown_text(" ".join(said.split()), 200)


async def resend(
    spool: ReportSpool,
    api_key: str,
    api_secret: str,
    *,
    retry: RetryPolicy | None = None,
    timeout_s: float = RESEND_TIMEOUT_S,
) -> int:
    """One pass over the spool: each file's reports sent again, oldest file first; a file
    the server took (or refused for good) is removed. A file that could not be delivered
    (its server is still away) leaves the later files for the same report URL to the next
    pass; those for another server are still sent. Returns how many files went."""
    async with aiohttp.ClientSession() as http:  # closed however the pass ends
        return await _resend(spool, api_key, api_secret, http, retry or RESEND_RETRY, timeout_s)


async def _resend(
    spool: ReportSpool,
    api_key: str,
    api_secret: str,
    http: aiohttp.ClientSession,
    policy: RetryPolicy,
    timeout_s: float,
) -> int:
    sent = 0
    away: set[str] = set()  # report URLs that did not take a file this pass
    # The directory is listed, each file read and removed, on a thread: a spool whose disk
    # stalls (a network volume, an NFS server gone) held the worker's event loop with it,
    # and livekit-agents kills each job process whose pings went unanswered for 60 s, its
    # call with it: every call of the worker cut off mid-sentence once the disk came back.
    files = spool.load(away)
    while (item := await asyncio.to_thread(next, files, None)) is not None:
        if item.url in away:  # read for its URL only: that server is still away
            continue
        sender = ReportSender(
            item.url,
            item.call_id,
            api_key,
            api_secret,
            session=http,
            retry=policy,
            linger_s=0,
            give_up_level=logging.INFO,
            hold_back=True,
        )
        for report in item.reports:
            sender.resend(report)
        try:
            await sender.aclose(timeout_s)
        except asyncio.CancelledError:  # the worker stopping: its task stops too
            sender.abandon()
            raise
        if sender.dropped:
            logger.info(
                "report spool: call %s's reports not delivered yet; trying again in %.0f s",
                item.call_id,
                RESEND_INTERVAL_S,
            )
            away.add(item.url)
            continue
        await asyncio.to_thread(item.path.unlink, missing_ok=True)
        sent += 1
        if sender.refused:  # each refusal was logged as it came (a WARNING)
            logger.warning(
                "report spool: call %s's reports sent again: %d delivered, %d refused by the"
                " server for good; its file is removed",
                item.call_id,
                len(sender.delivered),
                len(sender.refused),
            )
        else:
            logger.info(
                "report spool: call %s's %d reports delivered", item.call_id, len(item.reports)
            )
    return sent


async def resend_loop(
    spool: ReportSpool, api_key: str, api_secret: str, interval_s: float = RESEND_INTERVAL_S
) -> None:
    """`resend` at once, then every `interval_s`, until cancelled."""
    while True:
        try:
            await resend(spool, api_key, api_secret)
        except Exception:  # a bug here must not stop the next pass
            logger.exception("report spool: a pass failed")
        await asyncio.sleep(interval_s)
