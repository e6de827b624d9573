"""The agent's DEBUG line of a call's name and instructions masks the numbers in them, as the
server's lines of the same name and instructions do (`Caller Name: Zed +•••••••0123`,
`- Instructions: ... +• ••• ••• 0100`): the agent wrote `caller=Zed +14155550123
instructions: Call back on +1 415 555 0100 ...` whole, where the server had masked both."""

from __future__ import annotations

import logging

import pytest

from agent import worker
from agent.config_source import SelectedConfig
from agent.plan import plan_session
from common.config_store.model import CallConfig
from common.settings import Settings

CALL_ID = "call-ab12cd34ef56"


def test_numbers_in_the_name_and_instructions_are_masked_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = CallConfig.create("Zed +14155550123", "Ask them to call back on +1 415 555 0100.")
    plan = plan_session(config, Settings(), call_id=CALL_ID)
    caplog.set_level(logging.DEBUG, logger="agent.worker")
    worker._log_selected(CALL_ID, SelectedConfig("config.json", config, "its record"), plan)
    (debug,) = [r.getMessage() for r in caplog.records if "instructions:" in r.getMessage()]
    assert f"call {CALL_ID}: caller=Zed +•••••••0123 instructions: " in debug, debug
    assert "call back on +• ••• ••• 0100" in debug, debug
    assert "415" not in debug and "5550123" not in debug
