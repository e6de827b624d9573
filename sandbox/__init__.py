"""Loopback stand-in for a LiveKit server: real Twirp API, simulated calls, signed webhooks."""

from sandbox.rooms import SandboxRoom
from sandbox.scenarios import TEST_NUMBERS_MARKDOWN, Scenario, scenario_for_number
from sandbox.server import RecordedRequest, Sandbox
from sandbox.simulation import ATTR_SIP_CALL_STATUS_CODE

__all__ = [
    "ATTR_SIP_CALL_STATUS_CODE",
    "TEST_NUMBERS_MARKDOWN",
    "RecordedRequest",
    "Sandbox",
    "SandboxRoom",
    "Scenario",
    "scenario_for_number",
]
