"""Everything that crosses a process boundary, written once, read and written through here.

- The agent dispatch metadata: what the server sends each agent job (its call id, a snapshot
  of its config, how long the phone rings).
- The room metadata an agent sets to tell how a call ended (voicemail), which the
  `room_finished` webhook carries back to the server.
- The participant attributes LiveKit's SIP service sets on the callee's participant.

The writer and the reader of each message use the same model, so they cannot drift apart.
Readers are lenient: a message that cannot be read counts as absent, never as a crash.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

# Participant attributes LiveKit's SIP service sets (livekit/protocol livekit/attrs.go).
ATTR_SIP_CALL_ID: Final = "sip.callID"
ATTR_SIP_TRUNK_ID: Final = "sip.trunkID"
ATTR_SIP_PHONE_NUMBER: Final = "sip.phoneNumber"
ATTR_SIP_CALL_STATUS: Final = "sip.callStatus"
# Not a LiveKit attribute: the sandbox's way to expose the SIP final response of a failed call.
ATTR_SIP_CALL_STATUS_CODE: Final = "sip.callStatusCode"

SIP_STATUS_DIALING: Final = "dialing"
SIP_STATUS_RINGING: Final = "ringing"
SIP_STATUS_ACTIVE: Final = "active"
SIP_STATUS_HANGUP: Final = "hangup"
# Values of sip.callStatus once the callee has answered.
ANSWERED_SIP_STATUSES: Final = frozenset({SIP_STATUS_ACTIVE, SIP_STATUS_HANGUP})

OUTCOME_VOICEMAIL: Final = "voicemail"


def _json_object(raw: str, what: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # signed or not, metadata may be any text
        logger.debug("%s is not JSON; ignoring it", what)
        return None
    if not isinstance(doc, dict):
        logger.debug("%s is not a JSON object; ignoring it", what)
        return None
    return doc


class DispatchMetadata(BaseModel):
    """What the server puts in each agent dispatch (`ctx.job.metadata` in the agent)."""

    model_config = ConfigDict(frozen=True)

    call_id: str | None = None
    phone_number: str | None = None
    config: dict[str, Any] | None = None
    ringing_timeout_s: int | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def parse(cls, raw: str) -> DispatchMetadata:
        """The job's metadata; anything unreadable counts as absent, field by field."""
        doc = _json_object(raw, "dispatch metadata")
        if doc is None:
            return cls()
        config = doc.get("config")
        return cls(
            call_id=_nonempty_str(doc.get("call_id")),
            phone_number=_nonempty_str(doc.get("phone_number")),
            config=dict(config) if isinstance(config, dict) else None,
            ringing_timeout_s=_positive_int(doc.get("ringing_timeout_s")),
        )


def _nonempty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _positive_int(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


class RoomMetadata(BaseModel):
    """The room metadata an agent writes; `outcome` is read back from `room_finished`."""

    model_config = ConfigDict(frozen=True)

    outcome: str | None = None

    @classmethod
    def parse(cls, raw: str) -> RoomMetadata:
        outcome = (_json_object(raw, "room metadata") or {}).get("outcome")
        return cls(outcome=outcome if isinstance(outcome, str) else None)

    @staticmethod
    def with_outcome(current: str, outcome: str) -> str:
        """The room metadata JSON with `outcome` set, keeping the other keys of an object."""
        doc = _json_object(current, "room metadata") or {}
        doc["outcome"] = outcome
        return json.dumps(doc, separators=(",", ":"))
