"""A job offered for another app's room whose name holds a caller's number (LiveKit names an
inbound SIP call's room `<roomPrefix>_<caller>_<random>`; its docs' prefix is "call-") is
refused with the number masked in the agent's WARNING, and in livekit-agents' own lines about
the job (`received job request`, at INFO, the room as a field its formatters print): both
wrote `call-_+14155550188_XyZ12` whole, on every inbound call dispatched to this agent's name.
"""

from __future__ import annotations

import json
import logging

import pytest
from livekit.agents.log import logger as livekit_logger

from common.settings import Settings
from tests.unit.test_agent_job_requests import offer
from tests.unit.test_agent_worker import logged_as_json
from tests.unit.test_agent_worker import settings as settings  # noqa: F401 - a fixture

ROOM = "call-_+14155550188_XyZ12"


async def test_another_apps_inbound_room_is_refused_with_its_number_masked(
    settings: Settings,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = await offer(ROOM, {"call_id": "+14155550188"})
    assert answers.rejected == [False]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "room 'call-_+•••••••0188_XyZ12' is not one of our calls" in warning
    assert "5550188" not in warning


def test_livekits_own_lines_about_the_job_show_its_room_masked() -> None:
    with logged_as_json(livekit_logger, logging.DEBUG) as out:
        # as livekit-agents' worker.py logs each job offered to this agent's name
        extra = {"job_id": "AJ_1", "room": ROOM, "agent_name": "outbound-caller"}
        livekit_logger.info("received job request", extra=extra)
        livekit_logger.debug("received assignment", extra={"room": "call-0123456789ab"})
        request, assignment = (json.loads(line) for line in out.getvalue().splitlines())
    assert request["room"] == "call-_+•••••••0188_XyZ12"
    assert "5550188" not in out.getvalue()
    assert assignment["room"] == "call-0123456789ab"  # our calls' ids stay whole
