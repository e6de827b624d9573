"""Who holds a lock on a file, from /proc/locks; shared by the calls database (calls.db, its
-shm file) and the config store (config.json.lock), which both refuse writes at once, naming
the holder, once another process has held their lock past a whole wait."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

# Once a write waited its whole wait for a lock another process holds, each write after it
# tries the lock this long only (and is refused, saying who holds it), until one gets it:
# every request queued behind waited the whole wait more than the one before it.
LOCKED_TRY_S = 0.1


@dataclass(frozen=True)
class Holder:
    """A process holding a lock: its id and its name (`comm`; never its command line, which
    may hold secrets), or None where that cannot be read."""

    pid: int
    name: str | None

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.name})" if self.name else f"pid {self.pid}"


def lock_holder(
    paths: Iterable[Path], kind: str = "WRITE", starts: Collection[str] | None = None
) -> Holder | None:
    """Another process holding a `kind` ("WRITE" or "READ") lock on one of `paths` (fcntl,
    flock or OFD), with `starts` only a lock beginning at one of those byte offsets; None
    where none can be told (not Linux, a lock of this process's own)."""
    files = set()
    for path in paths:
        with contextlib.suppress(OSError):
            found = os.stat(path)
            files.add(f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}")
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->" or fields[3] != kind:
            continue
        pid, file, start = fields[4], fields[5], fields[6]
        if starts is not None and start not in starts:
            continue
        if file in files and pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
                    return Holder(int(pid), comm.read().strip() or None)
            except OSError:
                return Holder(int(pid), None)
    return None
