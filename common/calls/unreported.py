"""Answered calls ending with no word from their agents: their reports do not reach us.

An agent whose reports cannot reach this server (PUBLIC_BASE_URL wrong, or a proxy or load
balancer in front of `/agent/reports` broken after start-up) still joins each call and talks
to its callee. LiveKit tells the server the answer and the agent joining, so each call ends
`completed`, an INFO status line, with no transcript, no answering-machine verdict and no
analysis, and the server said nothing: the start-up check of PUBLIC_BASE_URL runs once, for
two minutes, and the agents' failed posts are logged on the agents' hosts only.
"""

from __future__ import annotations

import logging
from typing import Any

from common.calls.models import CallEvent
from common.calls.outcomes import Status
from common.calls.runs import Recent, Subscriber, warn_of_runs
from common.calls.service import AGENT_FAILURES, AGENT_GONE, SANDBOX_RESTARTED, SANDBOX_STOPPED
from common.repeats import Repeats

logger = logging.getLogger(__name__)

# This many answered calls in a row ended `completed` with nothing reported by their agents
# (no transcript turn, no answering-machine verdict) is a WARNING. An agent reports the
# answer's verdict and its turns as the call goes (a turn at most 5 s late): a callee who hangs
# up within a second or two may end one such call, not five in a row.
UNREPORTED_RUN_WARN = 5


class ReportsRefused(Recent[str]):
    """Calls whose agents' reports this server refused for a failure of its own (503: the
    calls database): those reports reached it, and come again (an agent retries, then sends
    them from its spool). Settled meanwhile, such calls counted as unreported: a database
    outage that outlasted the agents' retries (a full disk, a PostgreSQL failover) sent the
    operator to check PUBLIC_BASE_URL."""


def _unreported(data: dict[str, Any], refused: ReportsRefused) -> bool | None:
    """Whether an ended call is an answered one its agent said nothing of (None: a call that
    tells nothing either way: unanswered, failed, canceled, or one whose agent died or
    failed, which is why it said nothing: calls whose agent crashed once it joined each ended
    `completed`, their reason saying so, and the WARNING sent the operator to PUBLIC_BASE_URL
    and what forwards it). So is one whose room went with the embedded sandbox (the server
    killed or stopped), and its agent, the sandbox's, with it. One whose reports this server
    refused is not: they reached it."""
    if data.get("answered_at") is None:
        return None
    reason = data.get("reason")
    if isinstance(reason, str) and reason.startswith(
        (AGENT_GONE, *AGENT_FAILURES, SANDBOX_RESTARTED, SANDBOX_STOPPED)
    ):
        return None
    if data.get("call_id") in refused:
        return False
    if data.get("amd") is not None or data.get("transcript"):
        return False
    return True if data.get("status") == Status.COMPLETED.value else None


def warn_of_unreported_runs(
    repeats: Repeats,
    report_url: str,
    refused: ReportsRefused | None = None,
    least: int = UNREPORTED_RUN_WARN,
) -> Subscriber:
    """A WARNING, once a minute (`repeats`), when `least` answered calls in a row ended with
    no report of their agents; an answered call with one in between, or one whose reports
    this server refused (`refused`), starts the count again."""
    refused = ReportsRefused() if refused is None else refused

    def say(run: int, event: CallEvent, more: str) -> None:
        logger.warning(
            "the last %d answered calls all ended with no report from their agents (no"
            " transcript, no answering-machine verdict; the last, call %s): agents post"
            " their reports to %s (PUBLIC_BASE_URL + /agent/reports); if the agents' hosts"
            " do not reach this server there, every call's answer, transcript and analysis"
            " are lost: check PUBLIC_BASE_URL, what forwards it here, and the agents' logs%s",
            run,
            event.call_id,
            report_url,
            more,
            extra={"call_id": event.call_id, "status": event.data.get("status")},
        )

    return warn_of_runs(
        "unreported run", lambda data: _unreported(data, refused), least, repeats, say
    )
