"""Test phone numbers for the sandbox, like payment test cards.

The sandbox never dials anything. The number a call is placed to (``sip_call_to``) picks how the
simulated callee behaves, by the number's last four digits (non-digits are ignored):

- ``…0486`` (e.g. +14155550486): rings 2 s, then the callee rejects it with SIP 486 Busy Here;
  the participant leaves with ``USER_REJECTED``. Outcome: busy.
- ``…0480`` (e.g. +14155550480): rings until the ringing timeout (the request's, else 30 s), then
  SIP 480 Temporarily Unavailable; the participant leaves with ``USER_UNAVAILABLE``. Outcome:
  no_answer.
- ``…0503`` (e.g. +14155550503): the trunk fails after 0.5 s with SIP 503 Service Unavailable; the
  participant leaves as LiveKit's SIP service leaves a call it dropped: ``CLIENT_INITIATED``,
  ``sip.callStatus`` still ``dialing``. Outcome: failed.
- ``…0999`` (e.g. +14155550999): answered after 2 s of ringing; 5 s later the room metadata becomes
  ``{"outcome": "voicemail"}`` (what our agent does on reaching a voicemail box) and 1 s after that
  the call hangs up. Outcome: voicemail.
- ``…0666`` (e.g. +14155550666): answered after 2 s of ringing; 3 s later our agent's process
  dies: its participant leaves the room (``SIGNAL_CLOSE``) without ending the call, and sends no
  more reports. The callee stays on the line, in silence, for a minute, unless the room ends
  first (the server ends it 5 s after the agent left). Outcome: completed, with the reason that
  the agent left the call.
- ``…0404`` (e.g. +14155550404): no agent comes to the call (LiveKit found no worker free, or
  none registered under the dispatch's agent name): the room has no agent participant and
  nothing reports. Answered after 2 s of ringing, the callee waits in silence for a minute,
  unless the room ends first (the server ends it once AGENT_JOIN_TIMEOUT_S passed after the
  dial with no agent in the room). Outcome: failed, with the reason that no agent joined.
- ``…77NN`` (e.g. +14155557705): answered after 2 s of ringing; the callee hangs up ``NN`` seconds
  later (``CLIENT_INITIATED``). Outcome: completed.
- any other number (e.g. +34612345678, +441234567890, +1234567890): answered after 2 s of ringing;
  10 s of conversation, then the callee hangs up. Outcome: completed.

Every call starts the same way: the SIP participant joins the room at once with
``sip.callStatus`` = ``dialing`` and starts ringing 1 s later (LiveKit has no webhook for attribute
changes, so ringing and answering only show in the attributes of later events). The request's
``ringing_timeout`` turns any call that is not answered in time into a no-answer, and its
``max_call_duration`` caps the conversation. All times are multiplied by the sandbox's time scale.

This module is pure: no I/O, no clocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from livekit.protocol.models import DisconnectReason

# Time line of every call, in seconds from the moment the SIP participant joins (dialing).
RINGING_AFTER_S: Final = 1.0
ANSWER_AFTER_S: Final = 3.0  # 2 s of ringing
TRUNK_FAILURE_AFTER_S: Final = 0.5
CONVERSATION_S: Final = 10.0
VOICEMAIL_DETECTED_AFTER_S: Final = 5.0  # after answering
VOICEMAIL_HANGUP_AFTER_S: Final = 6.0  # after answering
AGENT_DIES_AFTER_S: Final = 3.0  # after answering
CALLEE_WAITS_IN_SILENCE_S: Final = 60.0  # after answering, once the agent died
DEFAULT_RINGING_TIMEOUT_S: Final = 30.0  # LiveKit's default for outbound calls


@dataclass(frozen=True)
class SipStatus:
    """A SIP final response, e.g. ``486 Busy Here``."""

    code: int
    reason: str


BUSY_HERE: Final = SipStatus(486, "Busy Here")
TEMPORARILY_UNAVAILABLE: Final = SipStatus(480, "Temporarily Unavailable")
SERVICE_UNAVAILABLE: Final = SipStatus(503, "Service Unavailable")
REQUEST_TERMINATED: Final = SipStatus(487, "Request Terminated")


@dataclass(frozen=True)
class Scenario:
    """How the simulated callee behaves.

    ``answer_after_s`` is None when the callee never picks up: the call then ends with
    ``failure`` either after ``fail_after_s`` or, if that is None too, at the ringing timeout.
    """

    name: str
    outcome: str  # the project's call outcome this scenario should end in (for docs and tests)
    answer_after_s: float | None = ANSWER_AFTER_S
    talk_s: float = CONVERSATION_S
    voicemail_after_s: float | None = None
    fail_after_s: float | None = None
    failure: SipStatus | None = None
    failure_reason: DisconnectReason = DisconnectReason.UNKNOWN_REASON
    agent_dies_after_s: float | None = None  # after answering: our agent's process dies
    agent_joins: bool = True  # False: no agent comes to the room (none free, none registered)


COMPLETED: Final = Scenario(name="answered", outcome="completed")
BUSY: Final = Scenario(
    name="busy",
    outcome="busy",
    answer_after_s=None,
    fail_after_s=ANSWER_AFTER_S,
    failure=BUSY_HERE,
    failure_reason=DisconnectReason.USER_REJECTED,
)
NO_ANSWER: Final = Scenario(
    name="no_answer",
    outcome="no_answer",
    answer_after_s=None,
    failure=TEMPORARILY_UNAVAILABLE,
    failure_reason=DisconnectReason.USER_UNAVAILABLE,
)
TRUNK_FAILURE: Final = Scenario(
    name="trunk_failure",
    outcome="failed",
    answer_after_s=None,
    fail_after_s=TRUNK_FAILURE_AFTER_S,
    failure=SERVICE_UNAVAILABLE,
    failure_reason=DisconnectReason.CLIENT_INITIATED,
)
VOICEMAIL: Final = Scenario(
    name="voicemail",
    outcome="voicemail",
    talk_s=VOICEMAIL_HANGUP_AFTER_S,
    voicemail_after_s=VOICEMAIL_DETECTED_AFTER_S,
)
AGENT_DIES: Final = Scenario(
    name="agent_dies",
    outcome="completed",
    talk_s=CALLEE_WAITS_IN_SILENCE_S,
    agent_dies_after_s=AGENT_DIES_AFTER_S,
)

NO_AGENT: Final = Scenario(
    name="no_agent",
    outcome="failed",
    talk_s=CALLEE_WAITS_IN_SILENCE_S,
    agent_joins=False,
)

_BY_SUFFIX: Final[dict[str, Scenario]] = {
    "0486": BUSY,
    "0480": NO_ANSWER,
    "0503": TRUNK_FAILURE,
    "0999": VOICEMAIL,
    "0666": AGENT_DIES,
    "0404": NO_AGENT,
}
_HANGUP_AFTER = re.compile(r"77(\d\d)$")
_NON_DIGITS = re.compile(r"\D")


def hangs_up_after(seconds: int) -> Scenario:
    """Answered, and the callee hangs up ``seconds`` after answering."""
    return Scenario(name=f"hangup_after_{seconds}s", outcome="completed", talk_s=float(seconds))


def scenario_for_number(number: str) -> Scenario:
    """The scenario the sandbox plays for a call to ``number`` (see the module docstring)."""
    digits = _NON_DIGITS.sub("", number)
    if (scenario := _BY_SUFFIX.get(digits[-4:])) is not None:
        return scenario
    if (match := _HANGUP_AFTER.search(digits)) is not None:
        return hangs_up_after(int(match.group(1)))
    return COMPLETED


@dataclass(frozen=True)
class NumberRow:
    """One row of the README's table of test numbers."""

    ending: str
    example: str
    simulates: str
    outcome: str


TEST_NUMBERS: Final = (
    NumberRow("`0486`", "`+14155550486`", "rings 2 s, then SIP 486 Busy Here", "`busy`"),
    NumberRow(
        "`0480`",
        "`+14155550480`",
        "rings until the ringing timeout (30 s unless the request sets one), then SIP 480",
        "`no_answer`",
    ),
    NumberRow("`0503`", "`+14155550503`", "trunk failure after 0.5 s, SIP 503", "`failed`"),
    NumberRow(
        "`0999`",
        "`+14155550999`",
        "answered after 2 s; voicemail detected 5 s later, then hang-up",
        "`voicemail`",
    ),
    NumberRow(
        "`0666`",
        "`+14155550666`",
        "answered after 2 s; the agent's process dies 3 s later, the callee stays on the line;"
        " the server ends the call 5 s after the agent left",
        "`completed`",
    ),
    NumberRow(
        "`0404`",
        "`+14155550404`",
        "no agent comes to the call (no worker free): answered after 2 s, the callee waits in"
        " silence; the server ends the call once `AGENT_JOIN_TIMEOUT_S` passed with no agent"
        " in the room",
        "`failed`",
    ),
    NumberRow(
        "`77NN`",
        "`+14155557705`",
        "answered after 2 s; the callee hangs up `NN` seconds later (here 5 s)",
        "`completed`",
    ),
    NumberRow(
        "anything else",
        "`+34612345678`",
        "answered after 2 s; 10 s conversation, then the callee hangs up",
        "`completed`",
    ),
)


def numbers_markdown_table() -> str:
    """The test-number table as Markdown, for the README."""
    header = ("Number ends in", "Example", "The sandbox simulates", "Outcome")
    rows = [header, *((n.ending, n.example, n.simulates, n.outcome) for n in TEST_NUMBERS)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(r) for r in rows[1:])]) + "\n"


TEST_NUMBERS_MARKDOWN: Final = numbers_markdown_table()
"""The test-number table as Markdown (same content as the module docstring)."""
