"""A calls.db-wal left without its calls.db, kept aside before SQLite opens the database.

The write-ahead log holds every write since the last checkpoint (on a young database, all
of them). With calls.db deleted or moved away (or left empty) and its -wal still there,
SQLite makes a new database and drops the log as not its own, silently: the calls,
numbers and do-not-call entries in it were gone with no line saying so. Kept aside, the
operator may put it back beside the calls.db it belongs to, or remove it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ORPHAN = ".orphan-"  # calls.db-wal.orphan-<UTC time>


def keep_orphaned_wal(path: Path) -> Path | None:
    """Rename `path`-wal to `path`-wal.orphan-<UTC time> when it holds anything while `path`
    is missing or empty (no database a log could belong to: SQLite writes the header, a
    page, before its first write to a log), with a WARNING naming both; the new name, or
    None when nothing was kept aside."""
    wal = Path(f"{path}-wal")
    try:
        if os.stat(wal).st_size == 0:
            return None
    except OSError:  # none there (or none this process may look at: SQLite will say)
        return None
    try:
        if os.stat(path).st_size > 0:
            return None
        state = "empty"
    except FileNotFoundError:
        state = "missing"
    except OSError:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = Path(f"{wal}{ORPHAN}{stamp}")
    for n in range(2, 100):
        if not os.path.lexists(kept):
            break
        kept = Path(f"{wal}{ORPHAN}{stamp}-{n}")
    size = os.stat(wal).st_size
    os.rename(wal, kept)  # an OSError is the opening's failure, said with its cause
    with contextlib.suppress(FileNotFoundError):  # its index, of no use without it
        os.remove(f"{path}-shm")
    logger.warning(
        "calls database %s is %s, but its write-ahead log %s held %d bytes of writes not in"
        " it (SQLite would have dropped them): kept aside as %s. If the database it belongs"
        " to is found (moved, restored from a copy), stop the server, put the two back as"
        " %s and %s-wal, and start it again; otherwise remove it (it holds callees'"
        " numbers, and may hold transcripts)",
        path,
        state,
        wal,
        size,
        kept,
        path.name,
        path.name,
    )
    return kept
