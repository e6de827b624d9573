"""Answered calls whose room went with the embedded sandbox (the server killed and started
again, or stopped) end `completed` with no report: their agent, the sandbox's, went with it.
The restarted server settled the 200 calls a SIGKILL left live (`make run`, 200 calls at once)
and said 'the last 5 answered calls all ended with no report from their agents ... check
PUBLIC_BASE_URL': the wrong thing to check, nothing was wrong with where reports go. Such a
call tells nothing either way, as one whose agent died."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from common.calls.events import CALL_ENDED
from common.calls.models import CallEvent
from common.calls.service import SANDBOX_RESTARTED, SANDBOX_STOPPED
from common.calls.unreported import UNREPORTED_RUN_WARN, warn_of_unreported_runs
from common.repeats import Repeats

SAID = "answered calls all ended with no report from their agents"


def ended(number: int, reason: str | None) -> CallEvent:
    """An answered call's end with nothing reported by its agent."""
    call_id = f"call-{number:012x}"
    data: dict[str, Any] = {
        "call_id": call_id,
        "status": "completed",
        "answered_at": "2026-12-07T22:43:33.770Z",
        "reason": reason,
        "amd": None,
        "transcript": [],
    }
    return CallEvent(number, call_id, CALL_ENDED, data, 0.0, "in_progress")


@pytest.mark.parametrize("reason", [SANDBOX_RESTARTED, SANDBOX_STOPPED])
async def test_calls_lost_with_the_sandbox_say_nothing_of_where_reports_go(
    reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    count = warn_of_unreported_runs(Repeats(), "http://127.0.0.1:8016/agent/reports")
    with caplog.at_level(logging.WARNING, logger="common.calls.unreported"):
        for number in range(1, 2 * UNREPORTED_RUN_WARN + 1):
            await count(ended(number, reason))
    assert [r for r in caplog.records if SAID in r.getMessage()] == []


async def test_unreported_calls_still_warn(caplog: pytest.LogCaptureFixture) -> None:
    count = warn_of_unreported_runs(Repeats(), "http://127.0.0.1:8016/agent/reports")
    with caplog.at_level(logging.WARNING, logger="common.calls.unreported"):
        for number in range(1, UNREPORTED_RUN_WARN + 1):
            await count(ended(number, None))
    assert len([r for r in caplog.records if SAID in r.getMessage()]) == 1
