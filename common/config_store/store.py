"""The per-call config store behind the seed's API (`common.update_config`): config.json.

`config.json` is one JSON object. Its top level is the seed's flat document for the most
recent call (`caller_name`, `agent_instructions`, `tts_language`, `tts_emotion`,
`last_updated`, extra parameters flattened in), so `load_dynamic_config().get("caller_name")`
behaves as the seed says. Under the reserved key `calls` it keeps one complete record per live
call, keyed by call id, with `written_at`: the agent reads its own call's record, never the
"latest" document, so concurrent calls cannot see each other's settings.

Writes are atomic and durable (temp file in the same directory, fsync, `os.replace`, fsync of
the directory) and serialised across threads (`threading.Lock`) and processes (`fcntl.flock` on
a sibling `<name>.lock`). The async functions run their file I/O through aiofiles on the
loop's executor and never block the event loop; concurrent async writers in one process share
one durable write (group commit).

Costs (see bench/RESULTS.md): a group write is one executor call, not one per file operation
(each thread hop costs ~0.1 ms of CPU on a small VM, and a write made a dozen); the document is
re-parsed only when another writer changed the file since our last write; and the file is
encoded by the C JSON encoder, one line per call record, reusing the lines of records it did
not change, instead of `indent=2` (the pure-Python encoder: ~17 µs per live call per write).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import fcntl
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import aiofiles.base
import aiofiles.os

from common.config_store.model import (
    DEFAULT_CALLER_NAME,
    DEFAULT_EMOTION,
    DEFAULT_INSTRUCTIONS,
    DEFAULT_LANGUAGE,
    CallConfig,
    CallOptions,
    checked_call_id,
    required_call_id,
    written_at_of,
)
from common.locks import LOCKED_TRY_S, FifoLock, lock_holder
from common.masking import clip_for_log, redact
from common.repeats import Outage, Repeats, say_held_back_at_stop

logger = logging.getLogger(__name__)

CALLS_KEY = "calls"
# A finished call's record leaves config.json with the next write, or this long after its end.
FORGET_WITHIN_S = 1.0
# A retraction whose write failed (the lock held elsewhere, a full disk) is tried again with
# the next write, or on its own this long after: the flat document went on naming a refused
# call for good (a probe held the lock 6 s through a burst of refusals).
RETRACT_AGAIN_S = 5.0
NOT_A_FILE = "not a regular file (a directory, a device, a FIFO or a socket)"
# The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
# config.json holds names, instructions and numbers: a new one is its owner's alone. A file
# that exists keeps its permissions through every rewrite (an operator's `chmod 640` for an
# agent of another user in the group stays).
NEW_FILE_MODE = 0o600
# A directory made for it (or for calls.db, or above them): other users may read it, never
# write it, whatever the umask. Path.mkdir made it, and each missing parent, 0777 less the
# umask: under umask 000 any user of the machine could rename config.json away and put a file
# of their own (0666) in its place, and the next call's write kept that file's mode and owner
# (as a file that exists keeps them) and wrote every live call's name, number and
# instructions into it, with no line saying so.
NEW_DIRECTORY_MODE = 0o755
# How long a write waits for the writers' lock (config.json.lock): a script holding it (the
# seed's update_config stopped in a debugger, `flock config.json.lock sleep`) held every
# call's placement for as long, with no line saying why; past this, the write fails (503).
LOCK_WAIT_S = 5.0
# Between tries for the lock at most this long: a waiter that slept 50 ms between tries lost
# to writers that had just come (the lock is held ~1 ms a write), and with 24 writers in 6
# processes some waited 5 s and failed; at 5 ms none failed, the longest wait was ~1 s, and
# as many writes went through (probe-AA's contention.py, side by side).
LOCK_POLL_MAX_S = 0.005
# How long an async write (a call's) waits to be durable before it fails (503): one whose
# file operation never returns (a stalled disk under config.json, an NFS server gone) held its
# call's request, and every call's after it, without an answer for as long as it stalled.
# Past LOCK_WAIT_S, as a write waiting for the lock takes that long.
WRITE_WAIT_S = 10.0
# How many unusable config.json files set aside (`config.json.corrupt-<stamp>`) are kept, the
# newest: each one set aside was kept for good, and a writer that keeps breaking the file
# (a script's bug, an editor's) filled the disk with copies of callers' data.
KEEP_SET_ASIDE = 10
# A set-aside file's name after `<config.json's name>.corrupt-`: what `_start_document` makes.
_SET_ASIDE_STAMP = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{4}")
# Whose data a copy set aside holds, read from its text (it does not parse): the call ids of
# its records, and when its top level was written (the first `last_updated`: the top level
# comes before the records, as this store writes them).
_CALL_ID_BYTES = re.compile(rb"call-[0-9a-f]{12}(?![0-9a-zA-Z])")
_TOP_WRITTEN_BYTES = re.compile(rb'"last_updated"\s*:\s*([0-9]{1,12}(?:\.[0-9]+)?)')


@dataclass(frozen=True)
class SetAside:
    """An unreadable config.json copy set aside: its file name, the call ids its records name
    and when its top level was written (None if that does not read)."""

    name: str
    call_ids: frozenset[str]
    top_written_at: float | None
    # Its top level (the seed's flat document, `last_updated` too), None if a line of it
    # does not read: which call wrote it (latest_written_by), not only when.
    top: Mapping[str, Any] | None = None


def _set_aside_of(name: str, data: bytes) -> SetAside:
    ids = frozenset(m.group().decode() for m in _CALL_ID_BYTES.finditer(data))
    written = _TOP_WRITTEN_BYTES.search(data)
    return SetAside(name, ids, float(written.group(1)) if written else None, _set_aside_top(data))


def _set_aside_top(data: bytes) -> dict[str, Any] | None:
    """The top level of a copy set aside, read from its own lines as `_encode` writes them
    (`  "key": value`, one a line; the records' block left out): the copy does not parse
    as a whole. None if one of those lines does not read (cut short in it, or a file not
    written by this store)."""
    top: dict[str, Any] = {}
    opening = b'  "%s": {' % CALLS_KEY.encode()
    for line in data.split(b"\n")[1:]:
        if line.startswith((b"    ", b"  }")) or line == opening:
            continue  # the records' block
        if line in (b"}", b""):
            break
        try:
            entry = json.loads(b"{" + line.removesuffix(b",") + b"}")
        except ValueError:
            return None
        top.update(entry)
    top.pop(CALLS_KEY, None)
    return top


# A readiness probe's file older than this was left by a crash (a probe takes seconds at most).
PROBE_FILE_STALE_S = 60.0

Document = dict[str, Any]
Mutation = Callable[[Document, float], Any]
T = TypeVar("T")


def make_directories(directory: Path) -> None:
    """`directory.mkdir(parents=True, exist_ok=True)`, each directory it makes
    NEW_DIRECTORY_MODE (less what the umask takes) rather than 0777 less the umask."""
    try:
        _make_directory(directory)
    except FileNotFoundError:
        if directory.parent == directory:
            raise
        make_directories(directory.parent)
        _make_directory(directory)  # once, as Path.mkdir: no loop if its parent goes again


def _make_directory(directory: Path) -> None:
    try:
        os.mkdir(directory, NEW_DIRECTORY_MODE)
    except FileNotFoundError:
        raise
    except OSError:
        if not directory.is_dir():  # as Path.mkdir(exist_ok=True): a file there is an error
            raise


async def _in_executor(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) as one aiofiles call on the loop's executor, never on the loop itself.

    A whole durable write (read, encode, temp file, fsync, rename, directory fsync) is one
    aiofiles-wrapped call rather than one aiofiles call per file operation: each thread hop
    costs ~0.1 ms of CPU here and a write made a dozen (bench/RESULTS.md).
    """
    return await aiofiles.base.wrap(fn)(*args)


def _may_write(target: Path) -> bool:
    """Whether this user may write `target`: the file, or while there is none, its
    directory, where a write creates it. Root's start-up, no call placed, leaves the lock
    file (root's, 0600) and no config.json: the service given the directory was refused its
    lock, "config.json is not readable by this user", of a file that was not there."""
    if os.path.lexists(target):
        return os.access(target, os.W_OK, effective_ids=True)
    return os.access(target.parent, os.W_OK | os.X_OK, effective_ids=True)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Its outcome taken, for a probe whose every waiter gave up on it (no "Future exception
    was never retrieved" at ERROR for a probe the next check runs again)."""
    if not future.cancelled():
        future.exception()


class ConfigWriteError(OSError):
    """config.json could not be written; the previous file is left as it was, unless
    `under_way`: the write did not answer in time (WRITE_WAIT_S) but is under way, and may
    still land."""

    under_way: bool = False


class UnknownCallError(KeyError):
    """There is no config record for this call id (never answered with another call's).

    `problem`: why none could be read, when config.json (or the record) is there but cannot be
    read (not JSON, nested too deeply), as opposed to a record that is not in it."""

    def __init__(self, call_id: str, problem: str | None = None) -> None:
        super().__init__(call_id)
        self.call_id = call_id
        self.problem = problem

    def __str__(self) -> str:
        if self.problem is not None:
            return f"no config record for call {self.call_id!r} can be read: {self.problem}"
        return f"no config record for call {self.call_id!r}"


def _document_and_problem(data: bytes) -> tuple[Document | None, str | None]:
    """The document `data` (a non-empty config.json) holds, or None and why it holds none a
    write can add a record to: unparseable, no object, or a "calls" that is not one."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"is not valid JSON ({exc})"
    except RecursionError:
        return None, "nests too deeply to read"
    if not isinstance(parsed, dict):
        return None, "is not a JSON object"
    if not isinstance(parsed.get(CALLS_KEY, {}), dict):  # as the next write sees it
        return None, f"has a {CALLS_KEY!r} that is not an object"
    return parsed, None


class _Unreadable(dict[str, Any]):
    """A config.json that does not read as a document: read as an empty one (the seed's
    defaults, no record), with why (`problem`, naming the file but not its directory)."""

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


def _log_updated(record: Mapping[str, Any]) -> None:
    """The seed's success line and fields, as one line (one event, one log record). A phone
    number in the name or the instructions is masked, as everywhere in the logs: a callee
    without a name is often placed with their number as one (`"name": "+14155552671"`),
    which this line wrote whole on every call."""
    call = record.get("call_id")
    # Both lines name the call: another call's lines may come between the two (the seed's
    # update_config from threads), and a JSON line without call_id is no call's.
    named = f" (call {call})" if call else ""
    extra = {"call_id": call} if call else None
    logger.info(
        "✓ Configuration updated successfully%s - Caller Name: %s - TTS Language: %s"
        " - TTS Emotion: %s",
        named,
        redact(str(record.get("caller_name"))),
        record.get("tts_language"),
        record.get("tts_emotion"),
        extra=extra,
    )
    if logger.isEnabledFor(logging.DEBUG):  # (instructions run to 4000 characters)
        instructions = str(record.get("agent_instructions", ""))
        logger.debug(
            "  - Instructions%s: %s", named, clip_for_log(redact(instructions)), extra=extra
        )


_dumps = json.JSONEncoder(ensure_ascii=False).encode  # no indent: the C encoder
_encode_string = json.encoder.encode_basestring  # what _dumps does for a str
_ascii_dumps = json.JSONEncoder().encode  # \u-escapes what is not ASCII


def _scalar(value: object) -> str:
    """`_dumps(value)`, skipping the encoder's set-up for the common scalars."""
    if type(value) is str:
        return _encode_string(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)  # what the encoder writes for a finite float
    return _dumps(value)


RecordLines = dict[str, tuple[object, bytes]]
"""Each call record's encoded line, by call id, with the record object it was encoded from."""


def _encode(doc: Document, known: RecordLines | None = None) -> tuple[bytes, RecordLines]:
    """The file's bytes: one top-level key per line, and one line per call record.

    The top level reads as the seed's indented document; each value (and each call record) is
    one compact line from the C encoder. JSON strings never hold a raw newline, so every line
    break in the file is structural. Records are replaced, never changed in place, so a record
    that is the very object of `known` reuses its line: a write encodes only what it changed.
    """
    lines = []
    encoded: RecordLines = {}
    for key, value in doc.items():
        if key == CALLS_KEY and isinstance(value, dict) and value:
            for call_id, record in value.items():
                hit = known.get(call_id) if known else None
                if hit is not None and hit[0] is record:
                    encoded[call_id] = hit
                else:
                    text = f"    {_dumps(call_id)}: {_dumps(record)}"
                    line = _utf8(text, "    ", call_id, record)
                    encoded[call_id] = (record, line)
            records = b",\n".join(line for _, line in encoded.values())
            lines.append(b'  "%s": {\n%s\n  }' % (CALLS_KEY.encode(), records))
        else:
            lines.append(_utf8(f"  {_dumps(key)}: {_scalar(value)}", "  ", key, value))
    return b"{\n" + b",\n".join(lines) + b"\n}\n", encoded


def _utf8(line: str, indent: str, key: str, value: object) -> bytes:
    """`line` (`indent`, `key`: `value`) in UTF-8; with a lone surrogate, which json.loads
    takes from a hand edit's "\\ud83d" and UTF-8 cannot encode, \\u-escaped as it was read:
    a config.json holding one stopped start-up with a UnicodeEncodeError traceback."""
    try:
        return line.encode()
    except UnicodeEncodeError:
        return f"{indent}{_ascii_dumps(key)}: {_ascii_dumps(value)}".encode()


def _detached(value: dict[str, Any]) -> dict[str, Any]:
    """A copy sharing nothing with the caller, equal to what parsing the written file gives.

    The writer keeps its document between writes, so nothing in it may be an object a caller
    still holds (and could change) and it must be exactly what `json.loads` would rebuild:
    scalars are immutable and kept, containers are rebuilt through JSON (tuples become lists).
    """
    return {
        k: json.loads(_dumps(v)) if isinstance(v, dict | list | tuple) else v
        for k, v in value.items()
    }


def _refuse_unless_replaceable(target: Path, status: os.stat_result) -> None:
    """PermissionError when config.json sits in a sticky directory (/tmp's mode 1777) and
    belongs to another user: only its owner (or the directory's) may replace it there, so
    every write would fail while the directory itself takes new files."""
    uid = os.geteuid()
    if uid == 0 or status.st_uid == uid:
        return
    directory = os.stat(target.parent)
    if directory.st_mode & stat.S_ISVTX and directory.st_uid != uid:
        raise PermissionError(
            errno.EPERM,
            "belongs to another user in a sticky directory: this user cannot replace it",
            str(target),
        )


def _top_of(doc: Document) -> dict[str, Any]:
    """The seed's flat document of `doc`, without the per-call records."""
    return {key: value for key, value in doc.items() if key != CALLS_KEY}


def _replace_top(doc: Document, top: dict[str, Any]) -> None:
    """The seed's flat document replaced by `top`; the per-call records kept."""
    calls = doc.get(CALLS_KEY, {})
    doc.clear()
    doc.update(top)
    doc[CALLS_KEY] = calls


# The defaults a call without a name or instructions is placed with: no one's data.
_DEFAULT_TEXTS = frozenset({DEFAULT_CALLER_NAME, DEFAULT_INSTRUCTIONS})


def _latest_of(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The flat document (without `last_updated`) a call placed with `config` (as GET
    /calls/{id} shows it) wrote at the top level; None if it cannot be told (a config already
    erased: no name to find)."""
    try:
        flat = CallConfig.create(
            config.get("caller_name"),
            config.get("agent_instructions"),
            config.get("tts_language"),
            config.get("tts_emotion"),
            config.get("additional_params") or None,
        ).to_flat(0.0)
    except (ValueError, TypeError):
        return None
    flat.pop("last_updated", None)
    return flat


_FLAT_CORE = frozenset(CallConfig().to_flat(0.0))


def names_someone(top: Mapping[str, Any]) -> bool:
    """Whether the flat document `top` holds more than the defaults a call without a name
    and instructions is placed with: a name, instructions or additional_params."""
    return (
        top.get("caller_name", DEFAULT_CALLER_NAME) != DEFAULT_CALLER_NAME
        or top.get("agent_instructions", DEFAULT_INSTRUCTIONS) != DEFAULT_INSTRUCTIONS
        or not set(top) <= _FLAT_CORE
    )


def latest_written_by(top: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether the flat document `top` is the one a call placed with `config` (as GET
    /calls/{id} shows it) wrote, whenever written."""
    latest = _latest_of(config)
    return latest is not None and _written_by(top, [latest])


def _written_by(top: Mapping[str, Any], latest: list[dict[str, Any]]) -> bool:
    """Whether the flat document `top` is one of `latest` (as _latest_of), whenever written."""
    return {key: value for key, value in top.items() if key != "last_updated"} in latest


def _record_from_line(data: bytes, call_id: str) -> dict[str, Any] | None:
    """`call_id`'s record parsed from its own line of a file `_encode` wrote, else None.

    Only the writer's framing is trusted (whole file: `{` line first, `}` line last; records
    are the only lines indented by four spaces, one per line), and the line must parse to a
    record of that very call; anything else (None) means: parse the whole document.
    """
    if not (data.startswith(b"{\n") and data.endswith(b"\n}\n")):
        return None
    needle = b"\n    " + _dumps(call_id).encode() + b": "
    start = data.find(needle)
    if start < 0:
        return None
    start += len(needle)
    end = data.find(b"\n", start)
    try:
        record = json.loads(data[start:end].removesuffix(b","))
    except (ValueError, RecursionError):
        return None
    if isinstance(record, dict) and record.get("call_id") == call_id:
        return record
    return None


def _read_bytes(path: Path) -> bytes | None:
    """The bytes of the file writes replace, or None if it does not exist. Only a regular
    file is read (a FIFO would block the writer for good, a device is no config), and a
    symbolic link at `path` is refused (ELOOP), not read through."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path} is a symbolic link, not the file") from None
        raise
    try:
        status = os.fstat(fd)
        _refuse_unless_regular(status.st_mode)
        size = status.st_size
        chunks = []
        while chunk := os.read(fd, max(size + 1, 65536)):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _open_lock_file(path: Path, flags: int, mode: int = NEW_FILE_MODE) -> int:
    """config.json.lock opened with `flags`, never through a symbolic link and only if it is a
    regular file, else OSError saying so. Root writes in the service's directory (the seed's
    update_config run as root), whose user may put a link there: followed, root narrowed the
    mode of the file it led to (`/etc/passwd` made 0600, no user could log in) or made one
    where it led to nowhere (`/etc/nologin`). A FIFO there blocked the read-only opening for
    good, every write of this process waiting on the thread lock behind it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP,
                f"{path} is a symbolic link: the writers' lock is never taken through one"
                " (remove it; writes make a lock file of their own)",
            ) from None
        raise
    try:
        _refuse_unless_regular(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise OSError(exc.errno, f"{path} is {NOT_A_FILE}: remove it") from None
    return fd


def _link_target(path: Path) -> Path | None:
    """Where `path` leads if it is a symbolic link (None if it is not one, or cannot be
    looked at: its name too long, a directory not searchable; the write says why)."""
    try:
        return Path(os.path.realpath(path)) if path.is_symlink() else None
    except OSError:
        return None


def _refuse_unless_regular(mode: int) -> None:
    """OSError unless `mode` is a regular file's: a directory, a device, a FIFO or a socket
    is never read as config, nor moved aside and replaced."""
    if stat.S_ISLNK(mode):
        raise OSError(errno.ELOOP, "a symbolic link where the file should be")
    if not stat.S_ISREG(mode):
        raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL, NOT_A_FILE)


def _write_durably(path: Path, data: bytes, mode: int = NEW_FILE_MODE) -> None:
    """Create `path` with `data` and permissions `mode`, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        if mode != NEW_FILE_MODE:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


# chown's refusals of an owner this process may not give (the file stays this user's).
_OWNER_REFUSED = frozenset(
    (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
)


def _give_owner(path: Path, owner: tuple[int, int], mode: int) -> bool:
    """Give the file at `path` (just written, ours, no link) the owner (uid, gid) `owner`,
    keeping `mode`: the user only as root (no other user may give a file away), the group
    if this process may. False if it may not (a group its user is not in, root without
    CAP_CHOWN, an owner its user namespace does not map, a file system that keeps none).
    Durable with the rename's directory fsync (the same journal commit on ext4 and XFS).

    Root writes in the service's directory (the seed's update_config run as root), whose
    user sees the temp file come (inotify) and may put a link in its place before this: by
    path, root's chmod followed it, and the file it led to got config.json's mode (0666, the
    user's own choice: `/etc/shadow` open to all). Root gives them through a descriptor of
    the file opened without following a link, and only to a regular file with one name (not
    a hard link to a file of root's; else OSError, the write not made; not "root's": root's
    files are nobody's on an NFS export that squashes root). Another user, who may change
    no one else's file, does it by path: a descriptor opened for reading needs the owner's
    read permission, which a mode an operator chose may lack."""
    if os.geteuid() == 0:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _replaced_since_written(path) from None
            raise
        try:
            made = os.fstat(fd)
            if not stat.S_ISREG(made.st_mode) or made.st_nlink != 1:
                raise _replaced_since_written(path)
            return _give_owner_fd(fd, owner, mode)
        finally:
            os.close(fd)
    return _owner_given(
        os.lstat(path),
        owner,
        mode,
        lambda uid, gid: os.chown(path, uid, gid, follow_symlinks=False),
        lambda chosen: os.chmod(path, chosen),
    )


def _replaced_since_written(path: Path) -> OSError:
    return OSError(
        errno.EPERM,
        f"{path} was replaced since this process wrote it (by another user of its directory?):"
        " not given config.json's owner, not made config.json",
    )


def _give_owner_fd(fd: int, owner: tuple[int, int], mode: int) -> bool:
    """Give the file just made on `fd` (the lock file, or config.json's temp file as root)
    config.json's owner (uid, gid), as far as this process may (the user only as root, the
    group if it is one of ours; else it stays ours, False), keeping `mode`. Through `fd`,
    never by its path: root writes in the service's directory (the seed's update_config run
    as root), whose user may put a link in the lock file's place between its making and
    this, and a chmod by path, which follows links, gave the file the link leads to
    (`/etc/shadow`) the lock file's mode, read and write for each class that may write
    config.json: 0666 if that user made config.json 0666."""
    return _owner_given(
        os.fstat(fd),
        owner,
        mode,
        lambda uid, gid: os.fchown(fd, uid, gid),
        lambda chosen: os.fchmod(fd, chosen),
    )


def _owner_given(
    have: os.stat_result,
    owner: tuple[int, int],
    mode: int,
    chown: Callable[[int, int], None],
    chmod: Callable[[int], None],
) -> bool:
    """Give the file `have` describes the owner (uid, gid) `owner` with `chown`, keeping
    `mode` with `chmod` (by descriptor or by path, as the caller must): the user only as
    root, the group if this process may; False if it may not (the file stays this user's)."""
    uid, gid = owner
    if os.geteuid() != 0 or have.st_uid == uid:
        uid = -1  # left as it is
    if uid == -1 and have.st_gid == gid:
        return True
    try:
        chown(uid, gid)
    except OSError as exc:
        # EINVAL: root in a user namespace (a rootless container) over a file whose owner it
        # does not map (shown as 65534): failed every write, where the file is only kept as
        # this user's.
        if exc.errno in _OWNER_REFUSED:
            return False
        raise
    chmod(mode)  # a change of owner may clear set-id bits
    return True


def lock_file_mode(config_mode: int) -> int:
    """config.json.lock's permissions, from config.json's (`config_mode`): read and write
    for each class of users that may write config.json, nothing for the others. Whoever may
    open the lock file may hold it (flock needs no write access), and every call's write
    waits on the holder (LOCK_WAIT_S, then 503): made 0644, any local user could stall every
    call with `flock -s config.json.lock sleep 1d`, config.json itself 0600."""
    mode = 0
    for write, read_write in ((stat.S_IWUSR, 0o600), (stat.S_IWGRP, 0o060), (stat.S_IWOTH, 0o006)):
        if config_mode & write:
            mode |= read_write
    return mode or 0o600


def _head(path: Path) -> bytes:
    """The first bytes of the regular file at `path` (enough to know a database by)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return os.read(fd, len(SQLITE_HEADER))
    finally:
        os.close(fd)


def _mode_of(path: Path) -> tuple[int, tuple[int, int] | None]:
    """The permissions and the owner (uid, gid) of the file at `path` (not followed), or
    (NEW_FILE_MODE, None) if there is none; for root, (NEW_FILE_MODE, its directory's owner)
    in a directory of another user's."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        # Root making it first (the seed's update_config run as root where the service keeps
        # config.json, before the service ever wrote): root's 0600, the service could neither
        # read nor write it, every call 503. It is the directory owner's, as theirs would be.
        if os.geteuid() == 0 and (directory := os.stat(path.parent)).st_uid != 0:
            return NEW_FILE_MODE, (directory.st_uid, directory.st_gid)
        return NEW_FILE_MODE, None
    return stat.S_IMODE(status.st_mode), (status.st_uid, status.st_gid)


# The extended attribute holding a file's POSIX ACL (`setfacl`, `getfacl`).
ACL_XATTR = "system.posix_acl_access"
# A file's extended attributes that cannot be read or given (none on this file system, or not
# this process's to set: `security.*` without the privilege): the file keeps what it can.
_XATTR_REFUSED = frozenset((errno.ENOTSUP, errno.ENODATA, errno.EPERM, errno.EACCES, errno.EINVAL))


def _xattrs_of(path: Path) -> list[tuple[str, bytes]]:
    """The extended attributes of the file at `path` (not followed), its POSIX ACL among
    them; none if there is no file, or no such attributes on this system (os.listxattr is
    Linux's alone: on macOS a write would fail with an AttributeError)."""
    if not hasattr(os, "listxattr"):
        return []
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno in _XATTR_REFUSED:
            return []
        raise
    attrs = []
    for name in names:
        try:
            attrs.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno not in _XATTR_REFUSED:
                raise
    return attrs


def _give_xattrs(path: Path, attrs: list[tuple[str, bytes]]) -> list[str]:
    """Give the file at `path` (just written, ours, no link) the extended attributes `attrs`
    (config.json's, as `cp --preserve=all` would); the names of those it may not be given."""
    refused = []
    for name, value in attrs:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _XATTR_REFUSED:
                raise
            refused.append(name)
    return refused


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Batch:
    """Pending async mutations of one event loop, written together by one drain task.

    `later` holds removals nobody waits for (`forget_call_soon`), and `owed` the retractions
    whose own write failed (`retract_call_async`): they join the next write, or get one of
    their own once their timer (`timer`, `owed_timer`) fires.
    """

    pending: list[tuple[Mutation, asyncio.Future[Any] | None]] = field(default_factory=list)
    since: float | None = None  # when the oldest of `pending` came (time.monotonic)
    task: asyncio.Task[None] | None = None
    later: list[str] = field(default_factory=list)
    owed: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None  # for `later`
    owed_timer: asyncio.TimerHandle | None = None  # for `owed`


@dataclass(frozen=True)
class _Written:
    data: bytes
    doc: Document
    lines: RecordLines


@dataclass(frozen=True)
class _Replaced:
    """What a placing call's write replaced: the flat document and whose write it was (a
    call being placed, or None); and the flat document it wrote."""

    doc: dict[str, Any]
    owner: str | None
    written: dict[str, Any]


@dataclass(frozen=True)
class _ReadCacheEntry:
    """The last document a store parsed, with the very bytes it was parsed from."""

    data: bytes
    doc: Document | None  # None: empty; _Unreadable: unparseable


# Every store of this process, for `_reset_after_fork`.
_live_stores: weakref.WeakSet[ConfigStore] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """In a forked child, every store's in-process locks anew.

    A fork copies a lock held by another thread (a write under way there: the server's
    executor, an application's thread) as held, with no thread left to let go of it: every
    write of the child waited its 5 s and failed, "held by a write of this process", for
    good. The child's writes wait for the parent's through config.json.lock, as any other
    process's do."""
    for store in list(_live_stores):
        store._thread_lock = FifoLock()
        store._tops_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


class ConfigStore:
    """A config.json at `path`, with the seed's operations and per-call records."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        record_ttl_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        # Absolute, from the working directory at creation: a relative CONFIG_PATH (the
        # default `config.json`) followed every later os.chdir of the process, and its
        # writes went on to another directory's config.json while its agents read the first.
        # Not normalised (`data/../config.json` through a linked `data` is where it leads).
        self.path = Path(path).absolute()
        # An agent's: it reads its call's record and never writes config.json (every write
        # refused, ConfigWriteError EROFS; no read creates it). Only the server writes it.
        self.read_only = read_only
        # The file writes replace: `path`, or where it leads if it is a symbolic link (a
        # config.json linked into a mounted volume stays a link; its file is rewritten).
        # Resolved once: a link re-pointed later (by anyone who can write its directory)
        # cannot send the server's writes to another file.
        self.target = _link_target(self.path) or self.path
        # The writers' lock, beside the target: processes given the link and the file itself
        # take the same one.
        self.lock_path = self.target.with_name(self.target.name + ".lock")
        self._lock_mode_checked = False  # whether a wider lock file of ours was narrowed
        self.record_ttl_s = record_ttl_s
        self._clock = clock
        # Writers of this process, in turn (see FifoLock).
        self._thread_lock = FifoLock()
        self._failures = Repeats()
        # Writes failing (_fail): said once a write is taken again (_writes_again).
        self._outage = Outage()
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = (
            weakref.WeakKeyDictionary()
        )
        self._read_cache: _ReadCacheEntry | None = None
        # Our last completed write (guarded by the thread lock): its bytes, the document they
        # encode and its records' lines. While the file still holds exactly those bytes, the
        # next write reuses the document instead of parsing the file again.
        self._written: _Written | None = None
        # Calls being placed (`update_async(placing=True)`) until `placed` or
        # `retract_call_async`: the flat document each one's write replaced, whose write that
        # was (a call being placed, or None), and the flat document it wrote.
        self._tops_before: dict[str, _Replaced] = {}
        self._tops_lock = threading.Lock()
        # What each copy set aside holds (set_aside_async), by its name, inode, size and
        # mtime: the reaper asks every pass, and a copy of a large config.json is not read
        # and scanned again while it stays as it was.
        self._set_aside_read: dict[str, tuple[tuple[int, int, int], SetAside]] = {}
        # The call being placed whose write the flat document is, as far as this process
        # knows (None: another write's, or config.json was read anew). Writers only (the
        # thread lock). Values cannot tell: two calls placed alike at once write equal ones.
        self._top_owner: str | None = None
        # Refused calls whose retraction's write failed, until one succeeds (`_tops_lock`).
        self._owed: set[str] = set()
        # Whether the last write of config.json failed (until one succeeds): the readiness
        # probe then tries a write of its own, since config.json itself may refuse what its
        # directory takes (`chattr +i`: every call 503 while /readyz said ready).
        self._write_failed = False
        # Since when another process holds config.json.lock past a write's whole wait (a
        # time.monotonic; None: not known to be held), and its name (None: not known).
        self._locked_since: float | None = None
        self._holder: str | None = None
        # The readiness probe under way (its thread may be held by a stalled disk): the checks
        # that follow wait for it rather than each holding another executor thread.
        self._probe: asyncio.Future[None] | None = None
        _live_stores.add(self)

    # ---------------------------------------------------------------- public API (sync)

    def update(
        self,
        caller_name: str | None = None,
        agent_instructions: str | None = None,
        tts_language: str = DEFAULT_LANGUAGE,
        tts_emotion: str = DEFAULT_EMOTION,
        additional_params: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
        options: CallOptions | None = None,
    ) -> dict[str, Any]:
        """Write one complete config (defaults for what is not given); return what was stored."""
        config = CallConfig.create(
            caller_name,
            agent_instructions,
            tts_language,
            tts_emotion,
            additional_params,
            call_id=call_id,
            options=options,
        )
        result: dict[str, Any] = self._mutate_sync([self._put(config)])[0]
        _log_updated(result)
        return result

    def load(self, *, call_id: str | None = None) -> dict[str, Any]:
        """The flat latest document, or with `call_id` that call's record (or UnknownCallError;
        ValueError for a `call_id` that is no non-empty string, as every function says)."""
        checked_call_id(call_id)
        doc = self._read_sync(call_id)
        if doc is None and self._initialises(call_id) and not self.path.exists():
            try:
                self._mutate_sync([])  # auto-initialise with defaults, as the seed promises
            except ConfigWriteError:  # logged; a read still answers (a read-only directory)
                return self._view(None, call_id)
            doc = self._read_sync(call_id)
        return self._view(doc, call_id)

    def _initialises(self, call_id: str | None) -> bool:
        """Whether a read finding no config.json creates it (the seed's auto-initialisation
        with defaults): a read of the latest config, by a store that may write. Never a read
        of a call's record, which a new file cannot hold: an agent's job reads its call's
        record, and one that found config.json gone (an operator's `rm`, a write replacing
        an unreadable one) wrote a config.json of its own, which an agent must never do."""
        return call_id is None and not self.read_only

    def get(self, key: str, default: Any = None, *, call_id: str | None = None) -> Any:
        """One value of `load`'s answer, `default` when the key is not in it (a call without
        a record is still UnknownCallError: another call's value is never the answer)."""
        return self.load(call_id=call_id).get(key, default)

    def remove_call(self, call_id: str) -> bool:
        """Drop a finished call's record; True if there was one."""
        required_call_id(call_id)
        removed: bool = self._mutate_sync([self._drop(call_id)])[0]
        return removed

    # --------------------------------------------------------------- public API (async)

    async def update_async(
        self,
        caller_name: str | None = None,
        agent_instructions: str | None = None,
        tts_language: str = DEFAULT_LANGUAGE,
        tts_emotion: str = DEFAULT_EMOTION,
        additional_params: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
        options: CallOptions | None = None,
        placing: bool = False,
    ) -> dict[str, Any]:
        """`placing` (with a `call_id`): the call may yet be refused; until `placed(call_id)`,
        `retract_call_async(call_id)` takes its write back whole, flat document included."""
        config = CallConfig.create(
            caller_name,
            agent_instructions,
            tts_language,
            tts_emotion,
            additional_params,
            call_id=call_id,
            options=options,
        )
        try:
            placing_call = config.call_id if placing else None
            result: dict[str, Any] = await self._submit(
                self._put(config, placing=placing), placing_call=placing_call
            )
        except ConfigWriteError as exc:
            if placing and config.call_id is not None and exc.under_way:
                # Its caller is answered that the call was not placed (503), but the write
                # may yet land once the disk lets it through: config.json then kept the
                # refused call's record, and its flat document named the refused call until
                # the next call replaced it. Taken back once it has landed (a retraction
                # owed: after the write under way, or within RETRACT_AGAIN_S).
                self._owe(asyncio.get_running_loop(), [config.call_id])
                logger.warning(
                    "call %s: its config write is under way and may still land; it is"
                    " taken back once it has",
                    config.call_id,
                    extra={"call_id": config.call_id},
                )
            raise
        _log_updated(result)
        return result

    def placed(self, call_id: str) -> None:
        """The call `update_async(placing=True)` wrote for is placed (or nothing of its write
        is left to take back): its write stays. Not a retraction still owed: that one needs
        what the write replaced."""
        with self._tops_lock:
            if call_id not in self._owed:
                self._tops_before.pop(call_id, None)

    async def retract_call_async(self, call_id: str) -> bool:
        """Take back a refused call's write: its record, and the flat document (the seed's
        "latest config") if nothing replaced it since: it is again what that write replaced.
        (It went on naming a call that was refused, 429 or 409, while another was live.)
        True if there was a record. If the write fails, the error is raised and the
        retraction is owed: tried again with the next write, or within RETRACT_AGAIN_S."""
        required_call_id(call_id)
        try:
            removed: bool = await self._submit(self._retract(call_id))
        except OSError:
            self._owe(asyncio.get_running_loop(), [call_id])
            raise
        except asyncio.CancelledError:
            # Its waiter cancelled (the placing request's client gone, the server's stop):
            # queued, the retraction was written regardless, but after the placement's end
            # (`placed`) had dropped what the call's write replaced, and the flat document
            # went on naming the refused call. Owed: that is kept until one is durable.
            self.retract_call_soon(call_id)
            raise
        self._retracted([call_id])
        return removed

    async def load_async(self, *, call_id: str | None = None) -> dict[str, Any]:
        checked_call_id(call_id)
        doc = await self._read_async(call_id)
        if (
            doc is None
            and self._initialises(call_id)
            and not await aiofiles.os.path.exists(self.path)
        ):
            try:
                await self._submit(lambda _doc, _now: None)
            except ConfigWriteError:  # logged; a read still answers (a read-only directory)
                return self._view(None, call_id)
            doc = await self._read_async(call_id)
        return self._view(doc, call_id)

    async def get_async(self, key: str, default: Any = None, *, call_id: str | None = None) -> Any:
        return (await self.load_async(call_id=call_id)).get(key, default)

    async def remove_call_async(self, call_id: str) -> bool:
        required_call_id(call_id)
        removed: bool = await self._submit(self._drop(call_id))
        return removed

    def forget_call_soon(self, call_id: str, within_s: float = FORGET_WITHIN_S) -> None:
        """Drop a finished call's record with the next write, or on its own within `within_s`.

        For a call that ended normally nobody waits for the removal: its agent has read its
        record long ago, and a record left behind by a crash is pruned at start-up. Joining the
        next call's write saves a durable write per call. A failed removal is logged; the
        reaper's next pass prunes the record.
        """
        loop = asyncio.get_running_loop()
        batch = self._batch(loop)
        batch.later.append(call_id)
        if batch.timer is None:
            batch.timer = loop.call_later(within_s, self._flush_later, batch)

    async def flush_async(self) -> None:
        """Write the removals `forget_call_soon` holds back, and the retractions owed, now
        (as the server stops). A write that does not end within WRITE_WAIT_S (a stalled
        disk) is left to it, said with what it leaves: a SIGTERM then never finished the
        server's stop."""
        batch = self._batches.get(asyncio.get_running_loop())
        if batch is None:
            return
        # And the retractions owed (their write failed: a held lock, a full disk), tried
        # once more now rather than by their timer, which the stop never lets fire: the
        # flat document went on naming a refused call across the restart.
        if batch.owed_timer is not None:
            batch.owed_timer.cancel()
            batch.owed_timer = None
        if batch.owed:
            self._start_drain(batch, asyncio.get_running_loop())
        self._flush_later(batch)
        if batch.task is not None and not batch.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(batch.task), WRITE_WAIT_S)
            except TimeoutError:
                logger.error(
                    "✗ %s did not answer in %.0f s as the server stops: stopping without"
                    " it; the write under way (it may still land) and %d more abandoned"
                    " (records of finished calls are pruned at the next start)",
                    self.path,
                    WRITE_WAIT_S,
                    len(batch.later) + len(batch.pending),
                )

    async def remove_calls_async(self, call_ids: Iterable[str]) -> int:
        """Drop several records in one write (none if there is nothing to drop)."""
        ids = list(call_ids)
        if not ids:
            return 0
        removed: int = await self._submit(self._drop_all(ids))
        return removed

    async def erase_latest_of_async(
        self, placed_with: Iterable[Mapping[str, Any]], call_ids: Collection[str] = ()
    ) -> bool:
        """The seed's flat document (the top level, the "latest config") back to the defaults
        if one of `placed_with` wrote it (the configs, as GET /calls/{id} showed them, of
        calls whose personal data is erased on request: `call_ids`): get_config_value(
        "caller_name") went on naming the erased callee until the next call. One another call
        wrote stays, an equal one too when this process knows whose write it is (two people
        of one name placed alike), and so does every call's record. Whether it was erased (no
        write if not)."""
        latest = [flat for config in placed_with if (flat := _latest_of(config)) is not None]
        if not latest:
            return False
        ids = frozenset(call_ids)
        with self._tops_lock:  # what a refused call's retraction would give back, too
            for call_id, replaced in self._tops_before.items():
                if _written_by(replaced.doc, latest) and (
                    replaced.owner is None or replaced.owner in ids
                ):
                    self._tops_before[call_id] = replace(replaced, doc=self._defaults())
        if not _written_by(_top_of(await self.load_async()), latest):
            return False
        erased: bool = await self._submit(self._erase_latest(latest, ids))
        return erased

    async def latest_written_async(self) -> dict[str, Any] | None:
        """The flat document (the top level) as config.json holds it, its `last_updated`
        included; None when it holds none (no file, an empty or unreadable one)."""
        doc = await self._read_async()
        if not doc or isinstance(doc, _Unreadable):
            return None
        return copy.deepcopy(_top_of(doc))

    async def erase_latest_if_async(self, latest: Mapping[str, Any]) -> bool:
        """The flat document back to the defaults if it is still `latest` (as
        latest_written_async read it), and the unreadable copies set aside that hold its name
        or instructions removed: `latest` is a call's whose personal data was erased on
        request through another server (several on one database), whose erasure reached its
        own config.json only, not this one of the server that placed the call. Whether it
        was erased."""
        expected = dict(latest)
        with self._tops_lock:  # what a refused call's retraction would give back, too
            for call_id, replaced in self._tops_before.items():
                if replaced.doc == expected:
                    self._tops_before[call_id] = replace(replaced, doc=self._defaults())
        erased: bool = await self._submit(self._erase_latest_if(expected))
        await self.remove_set_aside_naming_async([expected])
        return erased

    async def remove_set_aside_naming_async(
        self, placed_with: Iterable[Mapping[str, Any]], *, or_raise: bool = False
    ) -> int:
        """Remove the unreadable config.json copies set aside (`config.json.corrupt-<stamp>`)
        that hold the name or the instructions one of `placed_with` (the configs of calls
        whose personal data is erased on request) was placed with: an erasure left them
        there, the newest 10 kept for good. Unreadable, they cannot be edited: the whole copy
        goes, with a WARNING naming it; an unreadable config.json holding them is replaced
        by a fresh one, no copy kept (the next write kept it aside). How many were removed
        or replaced. Each file that may hold them and could not be read, removed or replaced
        is logged; with `or_raise`, an OSError then says so after the others went."""
        needles = set()
        for config in placed_with:
            for key in ("caller_name", "agent_instructions"):
                value = config.get(key)
                if isinstance(value, str) and value and value not in _DEFAULT_TEXTS:
                    # As a JSON string whole (a short name is found in nothing else), written
                    # by this store (UTF-8) or by another (escaped to ASCII).
                    needles.add(json.dumps(value, ensure_ascii=False).encode())
                    needles.add(json.dumps(value).encode())
        if not needles:
            return 0
        return await _in_executor(self._remove_set_aside_holding, frozenset(needles), or_raise)

    def _remove_set_aside_holding(self, needles: frozenset[bytes], or_raise: bool) -> int:
        self._refuse_if_read_only()
        target = self.target
        removed = []
        replaced = 0
        kept: list[OSError] = []  # a file that may hold them, not read, removed or replaced
        # config.json itself unreadable and holding them: the next write kept it aside, the
        # erased data with it, for good. Replaced now, no copy kept.
        try:
            data = _read_bytes(target)
            if (
                data is not None
                and any(needle in data for needle in needles)
                and self._document_in(data) is None
            ):
                self._mutate_sync([], erased=needles)
                replaced = 1
        except OSError as exc:
            kept.append(exc)
            logger.error(
                "✗ %s is unreadable and may hold an erased call's data, but could not be"
                " replaced (%s): the next write keeps a copy of it aside",
                self.path,
                exc.strerror or type(exc).__name__,
            )
        for name in self._set_aside_names(target):
            path = target.parent / name
            try:
                data = path.read_bytes()
                if any(needle in data for needle in needles):
                    os.unlink(path)
                    removed.append(name)
            except FileNotFoundError:  # gone meanwhile (the newest 10 kept, the others pruned)
                continue
            except OSError as exc:
                kept.append(exc)
                logger.error(
                    "✗ %s set aside beside %s could not be read or removed (%s): it may hold"
                    " an erased call's data",
                    name,
                    self.path,
                    exc.strerror or type(exc).__name__,
                )
        if removed:
            logger.warning(
                "removed %d unreadable config file(s) set aside beside %s: they held a call's"
                " data erased on request: %s",
                len(removed),
                self.path,
                ", ".join(removed),
            )
        if kept and or_raise:
            raise OSError(
                kept[0].errno,
                f"{len(kept)} file(s) beside {self.path.name} that may hold it could not be"
                f" read, removed or replaced ({kept[0].strerror or type(kept[0]).__name__});"
                " the server's log names them",
            )
        return len(removed) + replaced

    async def set_aside_async(self) -> list[SetAside]:
        """The unreadable config.json copies set aside (`config.json.corrupt-<stamp>`), newest
        first, with whose data each holds (SetAside); one that cannot be read is left out."""
        return await _in_executor(self._set_aside_sync)

    def _set_aside_sync(self) -> list[SetAside]:
        found, read = [], {}
        for name in self._set_aside_names(self.target):
            path = self.target.parent / name
            with contextlib.suppress(OSError):
                st = os.stat(path, follow_symlinks=False)
                identity = (st.st_ino, st.st_size, st.st_mtime_ns)
                known = self._set_aside_read.get(name)
                held = known[1] if known and known[0] == identity else None
                if held is None:
                    held = _set_aside_of(name, path.read_bytes())
                read[name] = (identity, held)
                found.append(held)
        self._set_aside_read = read  # (the copies gone since are forgotten)
        return found

    async def remove_set_aside_async(self, names: Collection[str], why: str) -> int:
        """Remove the copies set aside `names` (`why`: whose data they held), with a WARNING
        naming them; one that could not be removed is an ERROR. How many were removed."""
        return await _in_executor(self._remove_set_aside_sync, names, why)

    def _remove_set_aside_sync(self, names: Collection[str], why: str) -> int:
        self._refuse_if_read_only()
        removed = []
        for name in names:
            try:
                os.unlink(self.target.parent / name)
                removed.append(name)
            except FileNotFoundError:  # pruned meanwhile
                continue
            except OSError as exc:
                logger.error(
                    "✗ %s set aside beside %s could not be removed (%s): it may hold %s",
                    name,
                    self.path,
                    exc.strerror or type(exc).__name__,
                    why,
                )
        if removed:
            logger.warning(
                "removed %d unreadable config file(s) set aside beside %s: they held %s: %s",
                len(removed),
                self.path,
                why,
                ", ".join(removed),
            )
        return len(removed)

    async def records_written_async(self) -> dict[str, float]:
        """Each call record's call id and written_at (0 where it has none), as on disk now."""
        doc = await self._read_async()
        calls = doc.get(CALLS_KEY) if doc else None
        if not isinstance(calls, dict):
            return {}
        return {str(call_id): written_at_of(rec) or 0.0 for call_id, rec in calls.items()}

    async def probe_writable_async(self, *, rewrite: bool = False) -> None:
        """Raise OSError unless a small file can be written and synced next to config.json.

        What a call's config write needs (directory writable, space on the device), proved
        with a file of its own naming (a probe file that a crash left is removed a minute
        later); with the writers' lock held a moment, the temp files a crashed writer left
        are removed (at start-up among others: they hold callers' names and instructions).
        After a write of config.json failed, and until one succeeds, also a write of
        config.json itself; and with `rewrite` (at start-up), a write of a config.json that
        is there.
        """
        # One at a time: a check that gave up on a stalled probe (its 2 s bound) left its
        # thread held in the fsync, and a probe every second held all 6 threads of the loop's
        # default executor in 6 s, where config.json's writes and aiohttp's DNS lookups (the
        # LiveKit host's) run too. A later check waits for the probe under way instead.
        loop = asyncio.get_running_loop()
        probe = self._probe
        if rewrite or probe is None or probe.done() or probe.get_loop() is not loop:
            # the executor's future itself (as _in_executor runs it), not a task: one still
            # held when the server stops is no "Task was destroyed but it is pending"
            probe = self._probe = loop.run_in_executor(None, self._probe_sync, rewrite)
            probe.add_done_callback(_retrieved)
        await asyncio.shield(probe)  # a check's timeout leaves it to the next check

    def _probe_sync(self, rewrite: bool = False) -> None:
        """What a write does, short of replacing config.json: the writers' lock taken, the
        directory takes a synced file (created if missing, as a write would), and
        config.json, if there, is a regular file this process may replace, and no database
        (which a write refuses to set aside)."""
        self._refuse_if_read_only()
        target = self.target
        self._still_leads_to_target()
        with contextlib.suppress(FileNotFoundError):
            status = os.lstat(target)
            _refuse_unless_regular(status.st_mode)
            _refuse_unless_replaceable(target, status)
            self._refuse_a_database(_head(target), target)
        fd = self._acquire()
        try:
            self._clean_temp_files(target)
        finally:
            self._release(fd)  # not held for the fsync below: writers wait not
        # Not the writers' naming: one of them would take it for a crashed writer's.
        tmp = self._temp_path(target, self._probe_prefix(target))
        try:
            _write_durably(tmp, b"\n" * 4096)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if self._write_failed or (rewrite and os.path.lexists(target)):
            self._write_itself()

    def _write_itself(self) -> None:
        """A write of config.json itself, after a failed one (none while writes succeed) or
        at start-up: a file its directory takes says nothing of config.json made immutable
        (`chattr +i`) or mounted over (a container's file bind mount), which every call's
        write must replace. OSError naming config.json while it fails; after a failure, a
        success makes the server ready again with no call placed (a load balancer sends none
        to a server that is not ready)."""
        try:
            self._mutate_sync([])
        except ConfigWriteError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            reason = cause.strerror or os.strerror(exc.errno or errno.EIO)
            raise OSError(exc.errno, f"a write of it fails: {reason}", str(self.path)) from exc

    # ------------------------------------------------------------------- mutations

    def _put(self, config: CallConfig, *, placing: bool = False) -> Mutation:
        def apply(doc: Document, now: float) -> dict[str, Any]:
            # What may raise comes before `doc` changes: a failed mutation fails its own
            # caller and leaves the document (and the group's other writes) whole.
            flat = config.to_flat(now)
            top = _detached(flat)
            if config.call_id is None:
                _replace_top(doc, top)
                self._top_owner = None
                return flat
            record = config.to_record(now)
            stored = _detached(record)
            if placing:
                with self._tops_lock:
                    self._tops_before[config.call_id] = _Replaced(
                        _top_of(doc), self._top_owner, top
                    )
            _replace_top(doc, top)
            doc[CALLS_KEY][config.call_id] = stored
            self._top_owner = config.call_id if placing else None
            return record

        return apply

    def _retract(self, call_id: str) -> Mutation:
        def apply(doc: Document, _now: float) -> bool:
            with self._tops_lock:
                # Kept until the write is durable (`_retracted`): a write that fails after
                # this (a full disk) leaves it owed, and its retry needs what it replaced.
                taken = self._tops_before.get(call_id)
                # Its write, as far as this process knows; when it cannot tell (config.json
                # was read anew: another write failed, or another process wrote), by value.
                if taken is not None and (
                    self._top_owner == call_id
                    or (self._top_owner is None and _top_of(doc) == taken.written)
                ):
                    _replace_top(doc, taken.doc)
                    self._top_owner = taken.owner
                elif taken is not None:
                    # A later write replaced it; a call being placed whose write replaced
                    # this refused one's document would give that back: it gets this one's.
                    for other, replaced in self._tops_before.items():
                        if replaced.owner == call_id:
                            self._tops_before[other] = replace(
                                replaced, doc=taken.doc, owner=taken.owner
                            )
            return doc.get(CALLS_KEY, {}).pop(call_id, None) is not None

        return apply

    def _erase_latest(self, latest: list[dict[str, Any]], call_ids: frozenset[str]) -> Mutation:
        def apply(doc: Document, now: float) -> bool:
            if not _written_by(_top_of(doc), latest):
                return False
            if self._top_owner is not None and self._top_owner not in call_ids:
                return False  # a later call's, placed alike: not the erased one's
            _replace_top(doc, CallConfig().to_flat(now))
            self._top_owner = None
            return True

        return apply

    def _erase_latest_if(self, expected: dict[str, Any]) -> Mutation:
        def apply(doc: Document, now: float) -> bool:
            if _top_of(doc) != expected:  # another write's since it was read
                return False
            _replace_top(doc, CallConfig().to_flat(now))
            self._top_owner = None
            return True

        return apply

    @staticmethod
    def _drop(call_id: str) -> Mutation:
        def apply(doc: Document, _now: float) -> bool:
            return doc.get(CALLS_KEY, {}).pop(call_id, None) is not None

        return apply

    @staticmethod
    def _drop_all(call_ids: list[str]) -> Mutation:
        def apply(doc: Document, _now: float) -> int:
            calls = doc.get(CALLS_KEY, {})
            return sum(calls.pop(call_id, None) is not None for call_id in call_ids)

        return apply

    def _prune(self, doc: Document, now: float) -> None:
        """Drop records older than the TTL (or malformed). Every write looks at every live
        record: skipping the scan while the oldest record was known to be young bought under
        5% of a call's server CPU when measured with bench.compare, so it went."""
        calls = doc.get(CALLS_KEY)
        if not isinstance(calls, dict):
            doc[CALLS_KEY] = {}
            return
        cutoff = now - self.record_ttl_s
        aged: list[str] = []
        malformed: list[str] = []
        for cid, rec in calls.items():
            if (written_at := written_at_of(rec)) is None:
                malformed.append(cid)
            elif written_at < cutoff:
                aged.append(cid)
        if not (aged or malformed):
            return
        for cid in (*aged, *malformed):
            del calls[cid]
        # What went and why: a malformed record (written by hand, no object or no finite
        # written_at) was said to be "older than 86400 s" too.
        reasons = [f"{len(aged)} older than {self.record_ttl_s:.0f} s"] if aged else []
        if malformed:
            reasons.append(f"{len(malformed)} malformed (no object with a finite written_at)")
        logger.log(
            logging.WARNING if malformed else logging.INFO,
            "pruned %d config record(s): %s",
            len(aged) + len(malformed),
            ", ".join(reasons),
        )

    # ------------------------------------------------------------------- views

    @staticmethod
    def _defaults() -> Document:
        return CallConfig().to_flat(0.0)

    def _view(self, doc: Document | None, call_id: str | None) -> dict[str, Any]:
        if call_id is not None:
            calls = doc.get(CALLS_KEY) if doc else None
            record = calls.get(call_id) if isinstance(calls, dict) else None
            if not isinstance(record, dict):
                problem = doc.problem if isinstance(doc, _Unreadable) else None
                raise UnknownCallError(call_id, problem)
            owner = record.get("call_id")
            if owner is not None and owner != call_id:
                # Records swapped or copied under another call's id by hand (a file merged
                # or restored from two copies): load_dynamic_config(call_id="call-a") gave
                # call-b's name and instructions, which only the agent refused.
                raise UnknownCallError(
                    call_id, f"the record under it in {self.path.name} belongs to call {owner!r}"
                )
            try:  # a record written by hand may lack some fields: the defaults stand in
                return self._defaults() | copy.deepcopy(record)
            except RecursionError:  # written by hand or by an old writer: not a usable record
                logger.error("✗ the record of %s in %s nests too deeply", call_id, self.path)
                raise UnknownCallError(call_id, "its record nests too deeply") from None
        if doc is None:
            return self._defaults()
        try:  # a file written by hand may lack some: the seed's defaults stand in for them
            return self._defaults() | copy.deepcopy(
                {k: v for k, v in doc.items() if k != CALLS_KEY}
            )
        except RecursionError:
            logger.error("✗ %s nests too deeply to read; using defaults", self.path)
            return self._defaults()

    # ------------------------------------------------------------------- reading

    def _parse(self, data: bytes, call_id: str | None = None) -> Document | None:
        """The document (None: empty; `_Unreadable`: logged, read as an empty one). With
        `call_id` (a read of that call's record), the log says that no record can be read:
        the defaults were said to be used in the log of an agent's job, which used its
        dispatch's snapshot.

        The same bytes as the last parse give its document again (no parse). Known by the
        bytes, not by the file's inode, size and times: ext4 and XFS (kernels before 6.13)
        and ext2/3 time a file by the clock tick (1-10 ms), and reuse the inode a replace
        freed, so the version after next of a document of the same length (the seed's
        flat document, names of one length) had the first's key, and a process reading
        load_dynamic_config() for each call got an earlier call's (seen on ext2: 210 of
        500 reads between two writes)."""
        cached = self._read_cache
        if cached is not None and cached.data == data:
            return cached.doc
        doc: Document | None
        if not data.strip():  # empty: no config yet, the defaults (as with no file), no error
            self._read_cache = _ReadCacheEntry(data, None)
            return None
        parsed, problem = _document_and_problem(data)
        if parsed is not None:
            doc = parsed
        else:
            outcome = f"the record of {call_id} is not read" if call_id else "using defaults"
            logger.error("✗ %s %s; %s", self.path, problem, outcome)
            doc = _Unreadable(f"{self.path.name} {problem}")
        self._read_cache = _ReadCacheEntry(data, doc)
        return doc

    def _read_sync(self, call_id: str | None = None) -> Document | None:
        """The document (None: missing or unparseable).

        With `call_id`, when the file is one we wrote, a document holding just that call's
        record, parsed from the record's own line: an agent reading its call's config does
        not parse every other live call's (about 1 ms per 300 live calls).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:  # before open(): a directory's fd is its IsADirectoryError "...: 3", no path
            status = os.fstat(fd)
            _refuse_unless_regular(status.st_mode)  # a FIFO there would block us for good
        except OSError as exc:
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        with open(fd, "rb") as fh:
            data = fh.read()
        if call_id is not None and (record := _record_from_line(data, call_id)) is not None:
            return {CALLS_KEY: {call_id: record}}
        return self._parse(data, call_id)

    async def _read_async(self, call_id: str | None = None) -> Document | None:
        # open, fstat, read and parse in one executor call: each hop costs more than the read.
        doc: Document | None = await _in_executor(self._read_sync, call_id)
        return doc

    # ------------------------------------------------------------------- locking

    def _acquire(self, deadline: float | None = None) -> int:
        """Take the thread lock, then the cross-process lock, both by `deadline` (a
        time.monotonic; default LOCK_WAIT_S from now), else TimeoutError; return the lock
        file's fd."""
        self._refuse_another_user_s_link()
        if deadline is None:
            deadline = time.monotonic() + LOCK_WAIT_S
        if not self._thread_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise self._lock_timeout("a write of this process")
        try:
            while True:
                try:
                    fd = self._open_lock()
                except FileNotFoundError:
                    self._make_directory()
                    fd = self._open_lock()
                try:
                    self._flock_by(fd, deadline)
                    if self._lock_file_problem(fd) is None:
                        return fd
                except BaseException:
                    os.close(fd)
                    raise
                # Removed or replaced while we waited for it: the lock file writers take
                # now is another one (the holder's went with it); take that one instead.
                os.close(fd)
                if time.monotonic() >= deadline:  # it keeps changing: no lock to be had
                    raise TimeoutError(
                        errno.ETIMEDOUT,
                        f"{self.lock_path} keeps being removed or replaced: no lock to take",
                    )
        except BaseException:
            self._thread_lock.release()
            raise

    def _lock_file_problem(self, fd: int) -> str | None:
        """Why the lock taken on `fd` no longer keeps other writers out, or None: the lock
        file was removed (or replaced) since it was opened (an operator's clean-up of a
        "stale" lock file, a tmp cleaner: it is never written to, so it looks old), and the
        next writer of another process takes the one it makes anew at once."""
        held = os.fstat(fd)
        try:
            now = os.stat(self.lock_path)
        except FileNotFoundError:
            return "was removed"
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return "was replaced"
        return None

    def _flock_by(self, fd: int, deadline: float) -> None:
        """The cross-process lock on `fd`, polled until `deadline` (flock has no timeout).

        Once a write waited its whole wait for another process's lock, each write after it
        tries LOCKED_TRY_S only, until one gets it: a script holding config.json.lock (the
        seed's update_config stopped in a debugger, `flock config.json.lock sleep 600`) cost
        every call 5 s before its 503. Said once with who holds it, and once it is free."""
        started = time.monotonic()
        if self._locked_since is not None:
            deadline = min(deadline, started + LOCKED_TRY_S)
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._held_elsewhere(started) from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, LOCK_POLL_MAX_S)
        if self._locked_since is not None:
            logger.warning(
                "%s is free again: config writes go through (held for %.0f s)",
                self.lock_path,
                time.monotonic() - self._locked_since,
            )
            self._locked_since = None
            self._holder = None

    def _held_elsewhere(self, started: float) -> TimeoutError:
        """The failure of a write that found the lock held by another process past its wait:
        the first one looks up who holds it and says so (once, until it is free again)."""
        if self._locked_since is None:
            self._locked_since = started
            holder = lock_holder([self.lock_path])
            self._holder = holder.name if holder is not None else None
            logger.error(
                "%s is held by %s: config writes (and the calls that need one) are refused"
                " (503) until it lets go",
                self.lock_path,
                holder or "another process",
            )
        named = f" ({self._holder})" if self._holder else ""
        return TimeoutError(errno.ETIMEDOUT, f"{self.lock_path} is held by another process{named}")

    def _lock_timeout(self, holder: str) -> TimeoutError:
        return TimeoutError(
            errno.ETIMEDOUT,
            f"{self.lock_path} is held by {holder} (waited {LOCK_WAIT_S:g} s)",
        )

    def _open_lock(self) -> int:
        """The lock file, created if missing. flock needs no write access: a lock file made
        by another user (root running the seed's update_config once) is opened read-only,
        instead of failing every write with EACCES. A directory we may not write, with no
        lock file in it, is that EACCES (not the ENOENT of the read-only try).

        One this process makes is open to the users who may write config.json, and to no
        one else (`lock_file_mode`), whatever its umask, and is config.json's owner's: root
        making it (its write the first since the lock file was removed, an operator's
        clean-up of a "stale" lock file) made it root's 0600 under root's 077, and every
        write of the service after it failed, `could not write config (lock): Permission
        denied`. One of ours made wider (0644, by releases before 2026-12-06) is narrowed
        the first time this store opens it; one closed to us, though we may write
        config.json, is replaced (`_open_lock_read_only`). It holds nothing."""
        try:
            fd = _open_lock_file(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return self._make_lock()
        except PermissionError as denied:
            return self._open_lock_read_only(denied, replace=True)
        if not self._lock_mode_checked:
            self._narrow_lock(fd)
        return fd

    def _make_lock(self) -> int:
        """The lock file, made (`_open_lock`), or opened if another writer made it first."""
        mode, owner = _mode_of(self.target)
        wanted = lock_file_mode(mode)
        try:
            fd = _open_lock_file(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, wanted)
        except FileExistsError:  # made meanwhile by another writer (or a link: refused)
            try:
                return _open_lock_file(self.lock_path, os.O_RDWR | os.O_CREAT, wanted)
            except PermissionError as denied:
                return self._open_lock_read_only(denied, replace=False)
        try:
            os.fchmod(fd, wanted)
            if owner is not None:  # config.json's, as far as this process may give it
                _give_owner_fd(fd, owner, wanted)
        except BaseException:
            os.close(fd)
            raise
        self._lock_mode_checked = True
        return fd

    def _narrow_lock(self, fd: int) -> None:
        """Take from the lock file on `fd`, if it is this user's, the permissions of users
        who may not write config.json (`lock_file_mode`). Once per store: it is made right.
        Not one with other names (a hard link the directory's user made to a file of root's,
        `/etc/passwd`, where fs.protected_hardlinks is 0): root narrowed that file's mode."""
        self._lock_mode_checked = True
        held = os.fstat(fd)
        wanted = lock_file_mode(_mode_of(self.target)[0])
        have = stat.S_IMODE(held.st_mode)
        if held.st_uid == os.geteuid() and held.st_nlink == 1 and have & ~wanted:
            os.fchmod(fd, have & wanted)

    def _open_lock_read_only(self, denied: PermissionError, *, replace: bool) -> int:
        """The lock file another user made, read-only; one closed to us, though this user
        may write config.json (root made both, then an operator gave config.json alone to
        the service: every write failed, the lock file root's 0600), is replaced by one of
        ours (`replace`), said at WARNING: whoever may write config.json may take its lock."""
        try:
            return _open_lock_file(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            raise denied from None
        except PermissionError:
            if not _may_write(self.target):
                # closed to those who may not write config.json: say that, not the lock
                raise PermissionError(
                    errno.EACCES, os.strerror(errno.EACCES), str(self.target)
                ) from None
            if not replace:
                raise denied from None
        try:
            owner = os.lstat(self.lock_path).st_uid
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass  # removed meanwhile (another writer replacing it too): made below
        except PermissionError:
            raise denied from None  # a directory we may not write (a sticky one of others')
        else:
            logger.warning(
                "%s was uid %d's and closed to this user (uid %d), which writes %s: replaced"
                " by a lock file of its own",
                self.lock_path,
                owner,
                os.geteuid(),
                self.path,
            )
        return self._make_lock()

    def _still_leads_to_target(self) -> None:
        """A `path` that was a link at start-up still leads to the file writes replace; else
        OSError (ESTALE) until a restart follows it. A link re-pointed, replaced by an
        editor's or sed's plain file, or a directory link swapped: writing on to the old file
        would split the config, writes going to one file and every reader to another."""
        if self.target != self.path and _link_target(self.path) != self.target:
            raise OSError(
                errno.ESTALE,
                f"{self.path} no longer leads to {self.target} (changed since start-up;"
                " restart to follow it)",
            )

    def _refuse_another_user_s_link(self) -> None:
        """As root, a `path` that is another user's link leading to a file not theirs
        (`/etc/passwd`, or a missing one in a directory not theirs) is not written through:
        OSError (EPERM). Root writes in the service's directory (the seed's update_config
        run as root, as README says it may be), whose user may put a link there: followed,
        the file it led to was replaced by config.json's JSON (its old text kept aside as
        `passwd.corrupt-<time>`), and its lock file made beside it. A link of root's, or
        one of the service's to its own file (config.json in a volume), is followed."""
        if self.target == self.path or os.geteuid() != 0:
            return
        try:
            link_owner = os.lstat(self.path).st_uid
            try:
                owner = os.stat(self.target).st_uid
            except FileNotFoundError:
                owner = os.stat(self.target.parent).st_uid
        except FileNotFoundError:
            return  # gone: the write says so (ESTALE)
        if link_owner in (0, owner):
            return
        raise PermissionError(
            errno.EPERM,
            f"{self.path} is a link of uid {link_owner}'s to {self.target}, which is uid"
            f" {owner}'s: root does not write through it (write as uid {link_owner}, or make"
            " the link root's)",
        )

    def _make_directory(self) -> None:
        """Create the target's directory if missing, as a write does; never through a link:
        a link into a volume not mounted would have its directories made on the root file
        system, and the config written where the volume then hides it."""
        self._still_leads_to_target()
        if self.target != self.path and not self.target.parent.is_dir():
            raise FileNotFoundError(
                errno.ENOENT,
                f"{self.path} links to a file in a missing directory",
                str(self.target),
            )
        make_directories(self.target.parent)

    def _release(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        finally:
            self._thread_lock.release()

    # ------------------------------------------------------------------- writing (shared)

    @staticmethod
    def _temp_prefix(target: Path) -> str:
        return f".{target.name}.tmp-"

    @staticmethod
    def _probe_prefix(target: Path) -> str:
        return f".{target.name}.probe-"

    def _clean_temp_files(self, target: Path) -> None:
        """Remove temp files a crashed writer left behind (we hold the lock: none is live),
        and probe files a crashed probe left (a probe takes seconds at most)."""
        prefix, probe = self._temp_prefix(target), self._probe_prefix(target)
        stale = time.time() - PROBE_FILE_STALE_S
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(target.parent):
                with contextlib.suppress(FileNotFoundError):
                    if entry.name.startswith(prefix):
                        os.unlink(entry.path)
                        logger.warning("removed leftover temp file %s", entry.path)
                    elif entry.name.startswith(probe) and entry.stat().st_mtime < stale:
                        os.unlink(entry.path)

    @staticmethod
    def _document_in(data: bytes) -> Document | None:
        """The document `data` holds, or None if it holds none a write can add a record to:
        unparseable, or no object, or a "calls" that is not an object (a list, null, a
        string)."""
        return _document_and_problem(data)[0]

    def _start_document(
        self, data: bytes | None, target: Path, erased: frozenset[bytes] = frozenset()
    ) -> Document:
        """The document to mutate: the current one, or a fresh one (bad file kept aside,
        unless it holds one of `erased`: data erased on request). An empty file (`touch
        config.json`, `: > config.json`) is none yet, as a missing one: it was logged as
        unreadable and an empty copy of it kept aside."""
        if data is None or not data.strip():
            return self._defaults() | {CALLS_KEY: {}}
        parsed, problem = _document_and_problem(data)
        if parsed is not None:
            return parsed
        self._refuse_a_database(data, target)
        # Not a document we can add a record to, so it is kept aside, not patched.
        if any(needle in data for needle in erased):
            logger.warning(
                "%s was unreadable and held a call's data erased on request: replaced with a"
                " fresh file, no copy kept",
                self.path,
            )
            return self._defaults() | {CALLS_KEY: {}}
        aside = self._keep_aside(data, target)
        # Why, as a read's line says it: a valid JSON file (a seed's config.json whose
        # application kept its own `calls` list in it) was said to be "unreadable", no more.
        logger.error(
            "✗ %s %s, so no call's record can be added to it; kept aside as %s, writing a"
            " fresh file",
            self.path,
            problem,
            aside,
        )
        self._remove_old_set_aside(target)
        return self._defaults() | {CALLS_KEY: {}}

    def _keep_aside(self, data: bytes, target: Path) -> Path:
        """A copy of the unreadable `target` (whose bytes are `data`) kept aside as
        `<name>.corrupt-<stamp>`, `target` itself left in place: the write's atomic replace
        takes it away. It was moved aside first, and until the fresh file was in place
        (the fsync of a write, a disk that stalls; for good if the write failed) config.json
        was missing: the seed's load_dynamic_config() in another process then wrote one
        of its own, and an agent's job could find no file. A hard link (no bytes copied);
        where none can be made (a file system without them, another user's file under
        protected_hardlinks), a copy. One already kept aside (a write that failed after
        keeping it) is not kept again."""
        status = os.lstat(target)
        if status.st_nlink > 1:
            for name in self._set_aside_names(target):
                with contextlib.suppress(OSError):
                    kept = os.lstat(target.parent / name)
                    if (kept.st_dev, kept.st_ino) == (status.st_dev, status.st_ino):
                        return target.parent / name
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{secrets.token_hex(2)}"
        aside = target.with_name(f"{target.name}.corrupt-{stamp}")
        try:
            os.link(target, aside, follow_symlinks=False)
        except OSError:
            _write_durably(aside, data, stat.S_IMODE(status.st_mode))
            # With its ACL: without it, the mode's group bits (the ACL's mask) gave the
            # file's group read access to the callers' data the copy holds.
            _give_xattrs(aside, _xattrs_of(target))
        return aside

    def _remove_old_set_aside(self, target: Path) -> None:
        """Keep the newest KEEP_SET_ASIDE files set aside, remove older ones (see
        _set_aside_names: nothing else in the directory is touched)."""
        removed = []
        for name in self._set_aside_names(target)[KEEP_SET_ASIDE:]:
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)
                removed.append(name)
        if removed:
            logger.warning(
                "removed %d older unreadable config file(s) set aside beside %s, keeping the"
                " newest %d: %s",
                len(removed),
                self.path,
                KEEP_SET_ASIDE,
                ", ".join(removed),
            )

    @staticmethod
    def _set_aside_names(target: Path) -> list[str]:
        """The files set aside beside `target`, newest first: only regular files of the
        set-aside naming (`<name>.corrupt-<UTC stamp>-<4 hex>`)."""
        prefix = f"{target.name}.corrupt-"
        found: list[tuple[str, int, str]] = []
        with contextlib.suppress(OSError):  # never the write's failure
            for entry in os.scandir(target.parent):
                stamp = entry.name.removeprefix(prefix)
                if stamp == entry.name or not _SET_ASIDE_STAMP.fullmatch(stamp):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        # set aside in the same second: ctime is when it was renamed here
                        ctime = entry.stat(follow_symlinks=False).st_ctime_ns
                        found.append((stamp[:15], ctime, entry.name))
        found.sort(reverse=True)
        return [name for _, _, name in found]

    def _refuse_a_database(self, data: bytes, target: Path) -> None:
        """A database where config.json should be (CONFIG_PATH naming calls.db) is never set
        aside and replaced as an unreadable config file would be."""
        if data.startswith(SQLITE_HEADER):
            raise OSError(
                errno.EINVAL, f"{self.path} is an SQLite database, not a config file", str(target)
            )

    def _apply(self, doc: Document, mutations: list[Mutation]) -> list[Any]:
        """Apply the mutations and prune; return their results."""
        now = self._clock()
        results = [m(doc, now) for m in mutations]
        self._prune(doc, now)
        return results

    def _temp_path(self, target: Path, prefix: str | None = None) -> Path:
        """A file of its own beside `target`: a writer's (`prefix` None) or a probe's."""
        name = f"{prefix or self._temp_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}"
        return target.with_name(name)

    def _owner_not_kept(self, owner: tuple[int, int] | None) -> None:
        """Said once a minute: config.json's owner, which this process may not give the
        file it writes (a group its user is not in, an unmapped id), is lost."""
        if (more := self._failures.due(f"owner {owner}")) is not None:
            uid, gid = owner or (-1, -1)
            logger.warning(
                "%s belonged to uid %d and group %d, which this process may not give the file"
                " it writes (a group its user is not in, an id its user namespace does not"
                " map): rewritten, it is this user's, and"
                " agents of other users that read it through group %d lose access (add this"
                " user to that group, or give the file this user's group)%s",
                self.path,
                uid,
                gid,
                gid,
                more,
            )

    def _acl_not_kept(self) -> None:
        """Said once a minute: config.json's ACL could not be given to the file this process
        writes: rewritten, it keeps its mode only, whose group bits (the ACL's mask) now
        give its group what the ACL gave to the users and groups it named."""
        if (more := self._failures.due("acl")) is not None:
            logger.warning(
                "%s had an ACL (setfacl) that this process may not give the file it writes:"
                " rewritten, it has its mode only, and its group bits now give its group what"
                " the ACL gave the users it named (give the access by its group instead:"
                " chgrp and chmod)%s",
                self.path,
                more,
            )

    def _fail(self, exc: OSError, action: str) -> ConfigWriteError:
        # A full disk fails every write: said once a minute, with how many. A lock another
        # process holds is said by `_held_elsewhere`, once.
        if isinstance(exc, TimeoutError) and self._locked_since is not None:
            pass
        elif (more := self._failing(f"{action} {exc.errno}")) is not None:
            # Which file, where the error names none: "[Errno 28] No space left on device",
            # "[Errno 21] not a regular file (...)" said nothing of the config.json it was.
            named = "" if exc.filename or str(self.path) in str(exc) else f" ({self.path})"
            logger.error("✗ Configuration update failed (%s): %s%s%s", action, exc, named, more)
        err = ConfigWriteError(
            exc.errno, f"could not write config ({action}): {exc.strerror}{self.advice(exc)}"
        )
        err.__cause__ = exc
        return err

    def _failing(self, kind: str) -> str | None:
        """A failed write of `kind` noted; `Repeats.due`'s answer for it."""
        self._outage.failed(kind)
        return self._failures.due(kind)

    def _writes_again(self) -> None:
        """A write taken after failed ones: said once, with how long they failed and how many
        were held back since their last line (a disk freed within the minute of the first
        left them uncounted), so the next failure is said at once."""
        if (ended := self._outage.ended(self._failures)) is None:
            return
        logger.warning(
            "✓ %s takes writes again (refused for %.0f s; %d more failure(s) held back since"
            " the last line said one)",
            self.path.name,
            ended.lasted_s,
            ended.held,
        )

    def say_failures_held_back(self) -> None:
        """As the server stops, the failed writes held back since their last line, if writes
        still fail (else `_writes_again` said them)."""
        say_held_back_at_stop(self._outage, self._failures, logger, self.path.name)

    def advice(self, exc: OSError) -> str:
        """What to do about a plain "Permission denied" of a write (or of the server's start-up
        check, which writes as a call does): a write makes files beside config.json (its
        lock, a temp file it renames over it), so the directory must be writable, which the
        seed's advice (`chmod 644 config.json`) does not give; config.json itself need only
        be readable. "" for any other error."""
        if exc.errno != errno.EACCES or exc.strerror != os.strerror(errno.EACCES):
            return ""
        name = self.path.name
        if (
            exc.filename is not None
            and Path(exc.filename) in (self.path, self.target)
            and os.path.lexists(self.target)  # a missing one: its directory took no file
        ):
            readable = os.access(self.target, os.R_OK, effective_ids=True)
            return f" ({name} is not {'writable' if readable else 'readable'} by this user)"
        return (
            f" (this user may not create files in {name}'s directory: a write needs write"
            f" access to the directory, not only to {name})"
        )

    # ------------------------------------------------------------------- writing (sync)

    def _current_document(
        self, target: Path, erased: frozenset[bytes] = frozenset()
    ) -> tuple[Document, _Written | None]:
        """The document on disk, to mutate, and our last write if it is that document."""
        data = _read_bytes(target)
        written, self._written = self._written, None  # re-armed only by a completed write
        if data is not None and written is not None and data == written.data:
            return written.doc, written  # nobody wrote since we did: no need to parse again
        self._top_owner = None  # someone else's document (or a write of ours that failed)
        return self._start_document(data, target, erased), None

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise ConfigWriteError(
                errno.EROFS,
                f"could not write config: this process only reads {self.path.name} (an"
                " agent's); only the server writes it",
            )

    def _mutate_sync(
        self,
        mutations: list[Mutation],
        deadline: float | None = None,
        erased: frozenset[bytes] = frozenset(),
    ) -> list[Any]:
        self._refuse_if_read_only()
        target = self.target
        try:
            fd = self._acquire(deadline)
        except OSError as exc:  # e.g. the directory is not one, or not ours to write
            self._write_failed = True
            raise self._fail(exc, "lock") from exc
        tmp: Path | None = None
        try:
            self._still_leads_to_target()
            self._clean_temp_files(target)
            # Before the read: an unreadable file is set aside by it, and its fresh
            # replacement kept 0600 (probe AO: an agent reading as another user, by the
            # README's chmod 640, lost access). Its owner too: a config.json given to the
            # agents' group (`chgrp`) was the server's group again after the next write, and
            # an agent of another user lost its records from the next call on; one root
            # rewrote once (the seed's update_config run as root in the service's directory)
            # was root's, 0600, and every write of the service failed after it.
            mode, owner = _mode_of(target)
            # And its ACL (`setfacl -m u:agent:r config.json`, for an agent of another user):
            # the file was written anew without it, its mode kept, so the agent lost access
            # and the ACL's mask bits (0640 shown for `u:agent:r` on a 0600 file) gave the
            # file's group read access the ACL had not.
            attrs = _xattrs_of(target)
            doc, last = self._current_document(target, erased)
            results = self._apply(doc, mutations)
            encoded, lines = _encode(doc, last.lines if last else None)
            tmp = self._temp_path(target)
            _write_durably(tmp, encoded, mode)
            if attrs and ACL_XATTR in _give_xattrs(tmp, attrs):
                self._acl_not_kept()
            # (a file of this process's own, the usual case, costs no look at its owner)
            if owner not in (None, (os.geteuid(), os.getegid())) and not _give_owner(
                tmp, owner, mode
            ):
                self._owner_not_kept(owner)
            if (problem := self._lock_file_problem(fd)) is not None:
                # Another process may be writing config.json at the same time, from the
                # document as it was: replacing it now would drop what that one writes.
                raise OSError(
                    errno.ENOLCK,
                    f"{self.lock_path} {problem} while this write held it: another process"
                    " may have written config.json meanwhile, so this write is not made (try"
                    " again); leave the lock file in place",
                )
            os.replace(tmp, target)
            tmp = None
            self._written = _Written(encoded, doc, lines)
            self._write_failed = False
            self._writes_again()
        except OSError as exc:
            self._write_failed = True
            raise self._fail(exc, "write") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._release(fd)
        try:
            _fsync_dir(target.parent)
        except OSError as exc:
            # The new document is in place and every reader sees it: calling the write failed
            # now would be a lie. Only its survival of a power cut is in doubt; say so loudly.
            logger.error("✗ %s written, but its directory could not be synced: %s", target, exc)
        return results

    # ------------------------------------------------------------------- writing (async)

    async def _submit(self, mutation: Mutation, *, placing_call: str | None = None) -> Any:
        """Queue a mutation for this loop's next group write; wait until it is durable.

        `placing_call`: the mutation is that call's placing write, withdrawn if its caller
        is cancelled (`_withdraw`)."""
        loop = asyncio.get_running_loop()
        batch = self._batch(loop)
        future: asyncio.Future[Any] = loop.create_future()
        if not batch.pending:
            batch.since = time.monotonic()
        batch.pending.append((mutation, future))
        self._start_drain(batch, loop)
        # No shield: a cancelled caller only gives up its answer; the batch writes regardless.
        try:
            return await asyncio.wait_for(future, WRITE_WAIT_S)
        except asyncio.CancelledError:
            if placing_call is not None:
                self._withdraw(batch, (mutation, future), placing_call, loop)
            raise
        except TimeoutError:
            # Not taken by a write yet (queued behind the one that stalls): never written.
            # Taken: the write under way holds it, and may still land.
            try:
                batch.pending.remove((mutation, future))
            except ValueError:
                raise self._stalled(under_way=True) from None
            raise self._stalled() from None

    def _withdraw(
        self,
        batch: _Batch,
        item: tuple[Mutation, asyncio.Future[Any] | None],
        call_id: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """A call's placing write whose caller was cancelled (its client gone with
        aiohttp's handler cancellation, the server's stop cancelling what is left): the call
        is never placed. Not taken by a write yet, it never is; taken by the write under
        way, it may land (or has), and is taken back right after it, as a refused call's
        is: config.json kept the record of a call never placed for a minute (the reaper's),
        and the flat document named it until the next call replaced it."""
        try:
            batch.pending.remove(item)
        except ValueError:
            pass
        else:
            return
        self._retract_soon(batch, call_id, loop)
        logger.warning(
            "call %s: its placement was cancelled while its config write was under way;"
            " the write is taken back once it has landed",
            call_id,
            extra={"call_id": call_id},
        )

    def retract_call_soon(self, call_id: str) -> None:
        """`retract_call_async` without waiting for it (as a cancelled placement cannot):
        written right after the write under way, or with the next one."""
        required_call_id(call_id)
        loop = asyncio.get_running_loop()
        self._retract_soon(self._batch(loop), call_id, loop)

    def _retract_soon(self, batch: _Batch, call_id: str, loop: asyncio.AbstractEventLoop) -> None:
        with self._tops_lock:
            self._owed.add(call_id)  # `placed` keeps what its write replaced
        if call_id not in batch.owed:
            batch.owed.append(call_id)
        # Owed retractions join the drain's next write at once while no retry timer runs
        # (one runs only after a retraction's own write failed).
        self._start_drain(batch, loop)

    def _stalled(self, *, under_way: bool = False) -> ConfigWriteError:
        """The failure of a write not durable within WRITE_WAIT_S: its thread runs on (the
        write may yet land once the disk lets it), its caller is answered. Said once a minute,
        with how many."""
        if (more := self._failures.due("stalled")) is not None:
            logger.error(
                "✗ %s did not answer in %.0f s (its disk stalls?): the config writes waiting on"
                " it fail; a write under way may still land%s",
                self.path,
                WRITE_WAIT_S,
                more,
            )
        error = ConfigWriteError(
            errno.ETIMEDOUT,
            f"could not write config: {self.path.name} did not answer in {WRITE_WAIT_S:g} s",
        )
        error.under_way = under_way
        return error

    def _batch(self, loop: asyncio.AbstractEventLoop) -> _Batch:
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch()
        return batch

    def _start_drain(self, batch: _Batch, loop: asyncio.AbstractEventLoop) -> None:
        if batch.task is None or batch.task.done():
            batch.task = loop.create_task(self._drain(batch))

    def _flush_later(self, batch: _Batch) -> None:
        """The held-back removals' own write, unless another write took them meanwhile."""
        batch.timer = None
        if batch.later:
            self._start_drain(batch, asyncio.get_running_loop())

    def _owe(self, loop: asyncio.AbstractEventLoop, call_ids: list[str]) -> None:
        """Retractions whose write failed: tried again with the next write, or on their own
        within RETRACT_AGAIN_S."""
        with self._tops_lock:
            self._owed.update(call_ids)
        batch = self._batch(loop)
        batch.owed.extend(c for c in call_ids if c not in batch.owed)
        if batch.owed_timer is None:
            batch.owed_timer = loop.call_later(RETRACT_AGAIN_S, self._flush_owed, batch)

    def _flush_owed(self, batch: _Batch) -> None:
        batch.owed_timer = None
        if batch.owed:
            self._start_drain(batch, asyncio.get_running_loop())

    def _retracted(self, call_ids: list[str]) -> None:
        """Retractions now durable: nothing of those calls' writes is left to take back."""
        with self._tops_lock:
            for call_id in call_ids:
                self._owed.discard(call_id)
                self._tops_before.pop(call_id, None)

    def _take_later(self, batch: _Batch) -> list[tuple[Mutation, asyncio.Future[Any] | None]]:
        for timer in (batch.timer, batch.owed_timer):
            if timer is not None:
                timer.cancel()
        batch.timer = batch.owed_timer = None
        owed, batch.owed = batch.owed, []
        taken: list[tuple[Mutation, asyncio.Future[Any] | None]] = [
            (self._retract(call_id), None) for call_id in owed
        ]
        if batch.later:
            call_ids, batch.later = batch.later, []
            taken.append((self._drop_all(call_ids), None))
        return taken

    async def _drain(self, batch: _Batch) -> None:
        try:
            await self._write_batch(batch)
        finally:
            # A finished drain lets go of its task, which holds its event loop: the batch is
            # the value of that loop's weak key, so every loop that ever wrote (a script's
            # asyncio.run per update, a thread's own loop) was otherwise kept for good.
            if batch.task is asyncio.current_task():
                batch.task = None

    async def _write_batch(self, batch: _Batch) -> None:
        # Owed retractions alone are written when their timer has fired, not at once again
        # after a failure (`_owe` arms the timer): a full disk would have them spin.
        while batch.pending or batch.later or (batch.owed and batch.owed_timer is None):
            items, batch.pending = batch.pending, []
            # Its writers' wait for the lock counts from when the first of them came: a group
            # queued behind one that waited out the lock would wait as long again.
            since, batch.since = batch.since or time.monotonic(), None
            removing, owed = bool(batch.later), list(batch.owed)
            # Owed retractions first: a call placed since must replace what they give back,
            # not the refused call's document (review AN).
            items = self._take_later(batch) + items
            mutations = [self._guard(m) for m, _ in items]
            try:
                results = await self._mutate_async(mutations, since + LOCK_WAIT_S)
            except BaseException as exc:
                for _, fut in items:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                if owed:
                    self._owe(asyncio.get_running_loop(), owed)
                if not isinstance(exc, Exception):  # cancelled: the thread still writes
                    raise
                # The reaper's prune tries again. Once a minute: each call's end is a write
                # of its own, and one fault (a read-only directory, a full disk) logged a
                # line for every call that ended while it lasted.
                if removing and (more := self._failures.due("removals")) is not None:
                    logger.error("could not remove finished calls' config records: %s%s", exc, more)
                if owed and (more := self._failures.due("owed retractions")) is not None:
                    logger.error(
                        "could not take back the config writes of %d refused call(s) (%s);"
                        " trying again%s",
                        len(owed),
                        exc,
                        more,
                    )
                continue
            if owed:
                self._retracted(owed)
                logger.info("took back the config writes of refused calls %s", ", ".join(owed))
            for (_, fut), result in zip(items, results, strict=True):
                if fut is None or fut.done():
                    continue
                if isinstance(result, _MutationFailed):
                    fut.set_exception(result.exc)
                else:
                    fut.set_result(result)

    @staticmethod
    def _guard(mutation: Mutation) -> Mutation:
        """One bad mutation fails only its own caller, not the whole group."""

        def apply(doc: Document, now: float) -> Any:
            try:
                return mutation(doc, now)
            except Exception as exc:
                return _MutationFailed(exc)

        return apply

    async def _mutate_async(self, mutations: list[Mutation], deadline: float) -> list[Any]:
        """The whole locked write in one executor call (the locks are taken in that thread,
        by `deadline`, a time.monotonic).

        If the caller is cancelled meanwhile, the thread still finishes the write and releases
        the locks itself.
        """
        results: list[Any] = await _in_executor(self._mutate_sync, mutations, deadline)
        return results


@dataclass(frozen=True)
class _MutationFailed:
    exc: Exception
