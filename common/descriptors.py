"""Whether a failure was this process running out of file descriptors, not its peer's.

Once every descriptor is in use, each new connection fails (`[Errno 24] Too many open
files`, in aiohttp's `ClientConnectorError` or, for a name to look up, its
`ClientConnectorDNSError`): LiveKit, a customer's receiver and its name server are then
blamed for what this server must fix (its open files limit, or what holds them).
"""

from __future__ import annotations

import errno

OUT_OF_DESCRIPTORS = (
    "this server is out of file descriptors (Too many open files): no connection could be"
    " opened; raise its open files limit (LimitNOFILE=, ulimit -n)"
)
_CODES = frozenset({errno.EMFILE, errno.ENFILE})


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
