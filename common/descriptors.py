"""Whether a failure was this process running out of file descriptors, not its peer's.

Once every descriptor is in use, each new connection fails (`[Errno 24] Too many open
files`, in aiohttp's `ClientConnectorError` or, for a name to look up, its
`ClientConnectorDNSError`): LiveKit, a customer's receiver and its name server are then
blamed for what this server must fix (its open files limit, or what holds them).
"""

from __future__ import annotations

import errno
import os

OUT_OF_DESCRIPTORS = (
    "this server is out of file descriptors (Too many open files); raise its open files"
    " limit (LimitNOFILE=, ulimit -n)"
)
_CODES = frozenset({errno.EMFILE, errno.ENFILE})


class OutOfDescriptors(OSError):
    """What this server had to do (a host name's lookup) failed for want of a file
    descriptor: a 503 to retry, not the client's error."""

    def __init__(self) -> None:
        super().__init__(errno.EMFILE, OUT_OF_DESCRIPTORS)

    def __str__(self) -> str:
        return OUT_OF_DESCRIPTORS


def out_of_descriptors(exc: BaseException) -> bool:
    """True if `exc`, the OSError it wraps (`os_error`) or one it was raised from or during
    is EMFILE (this process's limit) or ENFILE (the system's)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _CODES:
            return True
        wrapped = getattr(current, "os_error", None)
        pending.extend(
            [wrapped if isinstance(wrapped, BaseException) else None]
            + [current.__cause__, current.__context__]
        )
    return False


def descriptors_exhausted() -> bool:
    """Whether this process can open no file now. For failures that do not say why: glibc's
    getaddrinfo that could not open /etc/hosts nor a socket answers "Name or service not
    known" (EAI_NONAME), as for a name that does not exist."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        return exc.errno in _CODES
    os.close(fd)
    return False
