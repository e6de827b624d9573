"""Memory a large piece of work freed, given back to the system.

glibc's malloc keeps what Python frees for its next allocations, and gives back only what lies
free at the top of each of its heaps: after a campaign's list was parsed (on a thread, in a
heap of that thread's), the rows' memory stayed the server's, freed but resident, once the
request was over. `give_back` asks glibc to return every free page (malloc_trim); elsewhere
(musl, macOS) there is no such call, and it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def can_give_back() -> bool:
    """This C library returns free memory on request."""
    return _TRIM is not None


def give_back() -> None:
    """Return the free pages of every heap to the system (a blocking call: ctypes releases
    the GIL for it, and it walks the heaps, some milliseconds for a gigabyte)."""
    if _TRIM is not None:
        _TRIM(0)
