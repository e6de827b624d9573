"""Who holds a lock on a file, from /proc/locks; shared by the calls database (calls.db, its
-shm file) and the config store (config.json.lock), which both refuse writes at once, naming
the holder, once another process has held their lock past a whole wait."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

# Once a write waited its whole wait for a lock another process holds, each write after it
# tries the lock this long only (and is refused, saying who holds it), until one gets it:
# every request queued behind waited the whole wait more than the one before it.
LOCKED_TRY_S = 0.1


class FifoLock:
    """A thread lock taken in the order it was asked for, with threading.Lock's acquire,
    release and locked.

    threading.Lock lets a thread that comes as the lock is let go (the one that let it go,
    writing again) take it before the threads already waiting: under a burst of config.json
    writes from many threads of one process (an application's thread pool calling the seed's
    update_config) some waited out their whole 5 s and failed, "held by a write of this
    process", while writes that came after them went through (128 threads writing 10 times
    each, four runs: 1 and 4 writes failed in two, the longest wait 4.1-5.5 s in three; in
    turn, three runs: none failed, the longest wait 1.4-1.8 s). Here a release hands the
    lock to the longest waiter."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            if not blocking:
                return False
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        try:
            got = waiter.acquire(timeout=timeout)
        except BaseException:  # interrupted (KeyboardInterrupt): never left to a waiter gone
            if not self._withdraw(waiter):
                self.release()  # handed to it meanwhile: passed on
            raise
        # Timed out: still waiting, or handed the lock just now (then it is ours).
        return got or not self._withdraw(waiter)

    def _withdraw(self, waiter: threading.Lock) -> bool:
        """Take `waiter` out of the queue: False if the lock was handed to it already."""
        with self._mutex:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return False
            return True

    def release(self) -> None:
        with self._mutex:
            if not self._held:
                raise RuntimeError("release unlocked lock")
            if self._waiters:
                self._waiters.popleft().release()  # held still, now by the longest waiter
            else:
                self._held = False

    def locked(self) -> bool:
        return self._held


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
