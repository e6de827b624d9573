"""Domain errors of calls: what went wrong, in terms a caller can act on.

They say nothing about HTTP; handlers/errors.py maps each to a status, message and headers in
one table, and the campaign scheduler reads the same errors to decide what to do with a row.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


class CallError(Exception):
    """Base of the errors a request about calls can meet."""


@dataclass(frozen=True)
class FieldError:
    field: str
    error: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "error": self.error}


class InvalidCall(CallError, ValueError):
    """The request is not a call we can place; every field's problem is listed."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.error}" for e in errors))
        self.errors = errors


def refuse_unknown(doc: Mapping[str, object], known: Collection[str], where: str = "") -> None:
    """InvalidCall listing every key of `doc` that is not `known` ("unknown field"), each
    named after `where` (the place `doc` sits in the request, e.g. "options.")."""
    unknown = [key for key in doc if key not in known]
    if unknown:
        raise InvalidCall([FieldError(f"{where}{key}", "unknown field") for key in unknown])


def request_object(doc: object, known: Collection[str], shape: str = "") -> dict[str, object]:
    """`doc`, a request's decoded body, as the JSON object it must be, with only `known` keys
    (refuse_unknown); anything else is the InvalidCall on `body`, `shape` (`{"numbers":
    [...]}`) saying what to send: a body `[]` was told of the field it then lacked."""
    if not isinstance(doc, dict):
        raise InvalidCall([FieldError("body", f"must be a JSON object{shape and ': '}{shape}")])
    refuse_unknown(doc, known)
    return doc


class TooManyTurns(CallError):
    """The call holds as many transcript turns as a call keeps: a turn report beyond them is
    not stored (sending it again changes nothing)."""

    def __init__(self, call_id: str, limit: int) -> None:
        super().__init__(
            f"call {call_id} already holds {limit:,} transcript turns; no more are kept"
        )
        self.call_id = call_id
        self.limit = limit


class OnDoNotCallList(InvalidCall):
    """The number is on the do-not-call list (POST /dnc, or the callee asked the agent)."""

    def __init__(self) -> None:
        super().__init__([FieldError("phone_number", "on the do-not-call list")])


class TooManyLiveCalls(CallError):
    """CALLS_MAX_ACTIVE calls are live already; nothing was written."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"too many live calls: at most {limit} at once")
        self.limit = limit
        self.retry_after_s = retry_after_s


class RateLimited(CallError):
    """The client placed CALLS_RATE_LIMIT_PER_MIN calls in the last minute already."""

    def __init__(self, per_minute: int, retry_after_s: int) -> None:
        super().__init__(f"rate limit: at most {per_minute} calls per minute")
        self.per_minute = per_minute
        self.retry_after_s = retry_after_s


class KeyReused(CallError):
    """The Idempotency-Key was used before with another request body."""

    def __init__(self) -> None:
        super().__init__(
            "Idempotency-Key was already used with a different request body; use a new key"
        )


class UnknownCall(CallError, LookupError):
    def __init__(self, call_id: str) -> None:
        super().__init__("unknown call")
        self.call_id = call_id


class CallAlreadyOver(CallError):
    def __init__(self, status: str, why: str | None = None) -> None:
        super().__init__(f"call already ending: {why}" if why else f"call already ended ({status})")
        self.status = status


class CallsStillLive(CallError):
    """An erasure asked for while a call it covers is live: its conversation is still coming,
    and nothing was erased."""

    SHOWN = 10  # call ids named in the answer, at most

    def __init__(self, call_ids: Sequence[str]) -> None:
        shown = ", ".join(call_ids[: self.SHOWN])
        more = f" and {len(call_ids) - self.SHOWN} more" if len(call_ids) > self.SHOWN else ""
        super().__init__(
            f"nothing erased: {len(call_ids)} call(s) still live ({shown}{more}); erase once"
            " they have ended (or hang them up first: POST /calls/{call_id}/hangup)"
        )
        self.call_ids = tuple(call_ids)


class CallsJustEnded(CallError):
    """An erasure asked for a moment after a campaign call it covers ended, before its
    campaign recorded its end (its recipient is still `calling`): nothing was erased."""

    RETRY_AFTER_S = 1

    def __init__(self, call_ids: Sequence[str]) -> None:
        shown = ", ".join(call_ids[: CallsStillLive.SHOWN])
        more = f" and {len(call_ids) - CallsStillLive.SHOWN} more"
        more = more if len(call_ids) > CallsStillLive.SHOWN else ""
        super().__init__(
            f"nothing erased: {len(call_ids)} campaign call(s) just ended ({shown}{more}) and"
            " their campaign has not recorded it yet; send the request again in a second"
        )
        self.call_ids = tuple(call_ids)


class CallOnAnotherSandbox(CallError):
    """The call's room is in another server's embedded sandbox: only that server reaches it."""

    def __init__(self, owner: str) -> None:
        super().__init__(
            f"the call's room is in the embedded sandbox of the server at {owner}; hang it up"
            " through that server"
        )
