"""Loopback stand-in for a LiveKit server: real Twirp API, simulated calls, signed webhooks."""

from common.contracts import ATTR_SIP_CALL_STATUS_CODE
from sandbox.rooms import SandboxRoom
from sandbox.scenarios import TEST_NUMBERS_MARKDOWN, Scenario, scenario_for_number
from sandbox.server import Fault, RecordedRequest, Sandbox
from sandbox.twirp import TwirpError

__all__ = [
    "ATTR_SIP_CALL_STATUS_CODE",
    "TEST_NUMBERS_MARKDOWN",
    "Fault",
    "RecordedRequest",
    "Sandbox",
    "SandboxRoom",
    "Scenario",
    "TwirpError",
    "scenario_for_number",
]
